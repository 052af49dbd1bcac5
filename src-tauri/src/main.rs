// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // SAFETY: first thing in main, before any other thread exists.
    #[cfg(target_os = "linux")]
    unsafe {
        natter_desktop::webkit::limit_javascript_compilers();
    }
    natter_desktop::run();
}

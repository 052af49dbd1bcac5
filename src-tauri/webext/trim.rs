//! A WebKitGTK web process extension: WebKit loads this library into
//! Natter's web process (the process that runs the UI's page) and calls
//! `webkit_web_extension_initialize`.
//!
//! Why: rendering and text layout in the web process allocate through
//! glibc's malloc, and what they free stays with the process. Scrolling up
//! through a 1,000-message chat left about 17 MiB free but held
//! (`malloc_trim` gave it back; docs/desktop.md "Start and memory"), and
//! WebKit only trims when the whole machine runs short of memory. So every
//! few seconds this checks how much malloc holds free and, past a few MiB,
//! gives it back to the system.
//!
//! Built by `build.rs` with rustc alone (no crates: it lives in another
//! process) and embedded in the app, which writes it where WebKit looks
//! (`src/webkit.rs`).

use std::ffi::{c_int, c_uint, c_void};

/// How often to look, in seconds. A seconds timer lets GLib fire it
/// together with the process's other such timers, which saves wake-ups
/// (it does not remove them: an idle process wakes for it every 5 s).
const EVERY_SECONDS: c_uint = 5;

/// Free memory malloc may keep before it is given back: trimming costs a
/// walk over the heap, worth it only for a few MiB.
const HELD_ENOUGH: usize = 4 << 20;

/// glibc's `struct mallinfo2` (glibc 2.33 and later).
#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    /// Bytes free in the heap: what a trim could give back.
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
    fn malloc_trim(pad: usize) -> c_int;
}

#[link(name = "glib-2.0")]
unsafe extern "C" {
    fn g_timeout_add_seconds(
        interval: c_uint,
        function: extern "C" fn(*mut c_void) -> c_int,
        data: *mut c_void,
    ) -> c_uint;
}

/// The timer's callback, on the web process's main thread.
extern "C" fn trim_if_worth_it(_data: *mut c_void) -> c_int {
    // SAFETY: plain glibc calls without arguments that could be wrong.
    unsafe {
        if mallinfo2().fordblks >= HELD_ENOUGH {
            malloc_trim(0);
        }
    }
    1 // G_SOURCE_CONTINUE: keep the timer.
}

/// Called by WebKit once, on the web process's main thread, when it loads
/// this library.
#[unsafe(no_mangle)]
pub extern "C" fn webkit_web_extension_initialize(_extension: *mut c_void) {
    // SAFETY: the callback matches GSourceFunc and takes no data.
    unsafe {
        g_timeout_add_seconds(EVERY_SECONDS, trim_if_worth_it, std::ptr::null_mut());
    }
}

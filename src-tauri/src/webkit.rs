//! What Natter sets for WebKitGTK's web process, the process that runs the
//! UI's page (Linux only; the other platforms' webviews take no such
//! settings). Both keep it small (docs/desktop.md "Start and memory"):
//! - JavaScriptCore without its optimizing compilers (DFG and FTL): the
//!   UI's code is small and short-lived, the interpreter and the baseline
//!   JIT run it as smoothly, and the compilers' code and data cost ~11 MiB
//!   (release build);
//! - the web process extension (`webext/trim.rs`, built by `build.rs`),
//!   which gives the memory the web process frees back to the system.
//!   WebKit loads every library in the folder it is told, so the app
//!   writes this one into a folder of its own in its data folder.

use std::path::{Path, PathBuf};

/// JavaScriptCore's options, read from the environment by the web
/// processes the app starts; one the user set already is left as it is.
const JAVASCRIPT_OPTIONS: [(&str, &str); 2] = [("JSC_useDFGJIT", "0"), ("JSC_useFTLJIT", "0")];

/// Sets `JAVASCRIPT_OPTIONS` in the app's environment, which its web
/// processes inherit.
///
/// # Safety
/// Changes the process's environment: call it first thing in `main`, while
/// no other thread exists.
pub unsafe fn limit_javascript_compilers() {
    for (name, value) in JAVASCRIPT_OPTIONS {
        if std::env::var_os(name).is_none() {
            // SAFETY: the caller guarantees no other thread reads the environment.
            unsafe { std::env::set_var(name, value) };
        }
    }
}

/// The compiled extension.
const LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libnatter_webext.so"));

/// Writes the extension into `data/webkit-extensions` (unless it is there
/// already, byte for byte) and returns that folder.
pub fn install_extension(data: &Path) -> std::io::Result<PathBuf> {
    let dir = data.join("webkit-extensions");
    let path = dir.join("libnatter_webext.so");
    // The size first: a different build is most often a different size, and
    // then the file need not be read.
    let same_size = std::fs::metadata(&path).is_ok_and(|file| file.len() == LIBRARY.len() as u64);
    if same_size && std::fs::read(&path).is_ok_and(|present| present == LIBRARY) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    // Written beside it, then renamed: WebKit never sees half a library.
    let partial = dir.join("libnatter_webext.so.partial");
    std::fs::write(&partial, LIBRARY)?;
    std::fs::rename(&partial, &path)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_the_library_once_and_replaces_a_different_one() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = install_extension(data.path()).expect("installed");
        let path = dir.join("libnatter_webext.so");
        assert_eq!(std::fs::read(&path).expect("written"), LIBRARY);
        std::fs::write(&path, b"an older build").expect("overwritten");
        install_extension(data.path()).expect("installed again");
        assert_eq!(std::fs::read(&path).expect("replaced"), LIBRARY);
        // Another build of the same size is replaced too.
        std::fs::write(&path, vec![0u8; LIBRARY.len()]).expect("overwritten");
        install_extension(data.path()).expect("installed again");
        assert_eq!(std::fs::read(&path).expect("replaced"), LIBRARY);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("listed")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            ["libnatter_webext.so"],
            "nothing else for WebKit to load"
        );
    }
}

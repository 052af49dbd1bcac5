//! What Natter sets for WebKitGTK's web process, the process that runs the
//! UI's page (Linux only; the other platforms' webviews take no such
//! settings): the web process extension (`webext/trim.rs`, built by
//! `build.rs`), which gives the memory the web process frees back to the
//! system (docs/desktop.md "Start and memory"). WebKit loads every library
//! in the folder it is told, so the app writes this one into a folder of its
//! own in its data folder.

use std::path::{Path, PathBuf};

/// The compiled extension.
const LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libnatter_webext.so"));

/// Writes the extension into `data/webkit-extensions` (unless it is there
/// already, byte for byte) and returns that folder.
pub fn install_extension(data: &Path) -> std::io::Result<PathBuf> {
    let dir = data.join("webkit-extensions");
    let path = dir.join("libnatter_webext.so");
    if std::fs::read(&path).is_ok_and(|present| present == LIBRARY) {
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

//! One app per data folder. A second copy (started again from the menu
//! while the first sits in the tray) would share the first's session and
//! cache, and each would take part of the other's messages; the engine
//! refuses it (`Files::claim`). Before that, the shell asks the copy that
//! runs to show its window, as a user starting the app expects, and stops.
//!
//! The ask goes through a Unix socket in the folder (`natter.sock`), not a
//! signal: WebKit's JavaScriptCore takes SIGUSR1 for itself.

use std::path::{Path, PathBuf};

use natter_core::CoreError;
use natter_core::session::Files;
use tauri::{AppHandle, Runtime};

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("natter.sock")
}

/// When another copy of the app holds `dir`: asks it to show its window
/// and ends this process. Otherwise returns, the folder free for the engine.
pub fn hand_over_if_running(dir: &Path) {
    let files = Files::new(dir);
    // Claimed and let go at once: the engine claims it for good.
    let Err(CoreError::AlreadyRunning(_)) = files.claim() else {
        return;
    };
    let running = match files.claimant() {
        Some(pid) => format!("already running (process {pid})"),
        None => "already running".to_owned(),
    };
    if ask_to_show(dir) {
        eprintln!("natter-desktop: {running}: showing its window");
    } else {
        eprintln!("natter-desktop: {running}");
    }
    std::process::exit(0);
}

#[cfg(unix)]
fn ask_to_show(dir: &Path) -> bool {
    use std::io::Write;
    std::os::unix::net::UnixStream::connect(socket_path(dir))
        .and_then(|mut stream| stream.write_all(b"show\n"))
        .is_ok()
}

#[cfg(not(unix))]
fn ask_to_show(_dir: &Path) -> bool {
    false
}

/// Shows the window whenever another copy asks (`hand_over_if_running`).
/// Call it once the folder is this process's: a socket file left by a copy
/// that died is replaced.
pub fn listen<R: Runtime>(app: AppHandle<R>, dir: &Path) {
    #[cfg(unix)]
    {
        let path = socket_path(dir);
        let _ = std::fs::remove_file(&path);
        let listener = match std::os::unix::net::UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, path = %path.display(), "listening for other copies of the app");
                return;
            }
        };
        tauri::async_runtime::spawn(async move {
            let listener = match listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(listener))
            {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "listening for other copies of the app");
                    return;
                }
            };
            while let Ok((mut stream, _)) = listener.accept().await {
                // Its line read (a second at most), so that its write does
                // not meet a closed socket.
                let mut line = [0u8; 16];
                let reading = tokio::io::AsyncReadExt::read(&mut stream, &mut line);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reading).await;
                tracing::info!("another copy of the app was started: showing the window");
                crate::tray::show_window(&app);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (app, dir);
}

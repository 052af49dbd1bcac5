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

/// Claims `dir` for this process, for the engine to keep
/// (`Engine::open_claimed`): a second start from now on finds it taken,
/// rather than both starting. When another copy holds it already, hands
/// over (`hand_over`) and does not return; any other failure (a folder we
/// cannot write) is the start's.
pub fn claim_or_hand_over(dir: &Path) -> Result<std::fs::File, CoreError> {
    match Files::new(dir).claim() {
        Err(CoreError::AlreadyRunning(_)) => hand_over(dir),
        claimed => claimed,
    }
}

/// Another copy of the app holds `dir`: asks it to show its window, says
/// so, and ends this process.
fn hand_over(dir: &Path) -> ! {
    let running = match Files::new(dir).claimant() {
        Some(pid) => format!("already running (process {pid})"),
        None => "already running".to_owned(),
    };
    if ask_to_show(dir) {
        eprintln!("natter-desktop: {running}: showing its window");
    } else {
        eprintln!("natter-desktop: {running}");
    }
    end_now()
}

/// Ends the process at once, without the C library's exit handlers and
/// destructors: GTK and WebKit are up by now, with threads of their own,
/// and tearing them down under those threads crashed this process now and
/// then (SIGSEGV after the line above, one start in about thirty in the
/// window test). Nothing of ours is left to flush: stderr is unbuffered,
/// and the log writes whole lines.
#[cfg(unix)]
fn end_now() -> ! {
    // SAFETY: `_exit` ends the process; it touches no memory of ours.
    unsafe { libc::_exit(0) }
}

#[cfg(not(unix))]
fn end_now() -> ! {
    std::process::exit(0)
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

/// Shows the window whenever another copy asks (`hand_over`). Call it once
/// the engine holds the folder: a socket file there is then one a copy
/// that died left behind, and is replaced.
pub fn listen<R: Runtime>(app: AppHandle<R>, dir: &Path) {
    #[cfg(unix)]
    {
        let path = socket_path(dir);
        let _ = std::fs::remove_file(&path);
        let listener = match std::os::unix::net::UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, path = %path.display(), "listening for other copies of the app: a second start will not show this window");
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
            loop {
                let mut stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of file descriptors, say: it passes.
                        tracing::warn!(error = %err, "another copy of the app could not be heard");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
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

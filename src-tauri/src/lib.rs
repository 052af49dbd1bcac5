//! `natter-desktop`: the Tauri shell. All logic lives in `natter-core`; this
//! crate wires it to a window:
//! - `commands`: what the UI can ask for;
//! - `instance`: one app per data folder (a second start shows the first);
//! - `bridge`: the engine's events, forwarded to the UI, the tray and notifications;
//! - `tray`: the tray icon and its menu;
//! - `notify`: native notifications;
//! - `pictures`: the `natter-pic:` scheme that serves avatars from the engine;
//! - `links`: links leave the window for the user's browser;
//! - `webkit` (Linux): settings that keep WebKit's web process small.

pub mod bridge;
pub mod commands;
pub mod instance;
pub mod links;
pub mod notify;
pub mod pictures;
pub mod tray;
#[cfg(target_os = "linux")]
pub mod webkit;

use std::path::{Path, PathBuf};

use natter_core::session::Files;
use natter_core::{Engine, EngineOptions, Trust};
use tauri::{Manager, WindowEvent};

/// The event the UI listens to; its payload is a `natter_core::Event`.
pub const EVENT: &str = "natter://event";
/// Sent when a notification is clicked: the payload is the chat to open.
pub const OPEN_CHAT: &str = "natter://open-chat";

/// Starts the app; returns when the user quits.
pub fn run() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NATTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let result = tauri::Builder::default()
        .register_asynchronous_uri_scheme_protocol("natter-pic", pictures::serve)
        .invoke_handler(tauri::generate_handler![
            commands::startup,
            commands::set_server_url,
            commands::sign_up,
            commands::login,
            commands::logout,
            commands::unsent,
            commands::chats,
            commands::history,
            commands::send,
            commands::discard,
            commands::set_draft,
            commands::drafts,
            commands::set_active_chat,
            commands::typing,
            commands::typists,
            commands::search_users,
            commands::user,
            commands::open_direct,
            commands::create_group,
            commands::rename_group,
            commands::add_member,
            commands::remove_member,
            commands::leave_group,
            commands::delete_chat,
        ])
        .setup(|app| {
            let dir = data_dir(app.handle())?;
            // Claimed before anything else, and handed to the engine.
            let claim = instance::claim_or_hand_over(&dir)?;
            let trust = trust()?;
            // The window first, as Tauri would: a WebDriver session (the
            // end-to-end tests) attaches to the first webview, and must
            // not find none.
            main_window(app, &dir)?;
            tracing::info!(dir = %dir.display(), "opening the app's data");
            let options = EngineOptions {
                trust,
                ..EngineOptions::default()
            };
            let engine = tauri::async_runtime::block_on(Engine::open_claimed(
                Files::new(&dir),
                claim,
                options,
            ))?;
            instance::listen(app.handle().clone(), &dir);
            app.manage(engine.clone());
            let tray = tray::build(app.handle())?;
            bridge::start(app.handle().clone(), engine, tray);
            Ok(())
        })
        .on_window_event(|window, event| match event {
            // Closing the window keeps Natter running in the tray.
            WindowEvent::CloseRequested { api, .. } => {
                api.prevent_close();
                let _ = window.hide();
            }
            WindowEvent::Focused(focused) => {
                // Recorded now, in the events' order; only reading the
                // active chat waits.
                let reading = window.state::<Engine>().set_focused(*focused);
                tauri::async_runtime::spawn(async move {
                    if let Err(err) = reading.await {
                        tracing::warn!(error = %err, "recording window focus");
                    }
                });
            }
            _ => {}
        })
        .run(tauri::generate_context!());
    if let Err(err) = result {
        eprintln!("natter-desktop: {err}");
        std::process::exit(1);
    }
}

/// Opens the window `main` of tauri.conf.json (which Tauri does not create
/// by itself: on Linux it needs the web process extension's folder).
fn main_window(app: &tauri::App, data: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = app
        .config()
        .app
        .windows
        .iter()
        .find(|window| window.label == "main")
        .ok_or("tauri.conf.json has no window labelled main")?
        .clone();
    // While developing (`tauri dev`), the page comes from the dev server.
    let dev_server = app.config().build.dev_url.clone().filter(|_| cfg!(dev));
    let for_new_windows = dev_server.clone();
    let builder = tauri::WebviewWindowBuilder::from_config(app.handle(), &config)?
        .on_navigation(move |url| links::allow(url, dev_server.as_ref()))
        .on_new_window(move |url, _| {
            // A link opened "in a new window" goes to the browser too.
            let _ = links::allow(&url, for_new_windows.as_ref());
            tauri::webview::NewWindowResponse::Deny
        });
    #[cfg(target_os = "linux")]
    let builder = match webkit::install_extension(data) {
        Ok(extensions) => builder.extensions_path(extensions),
        Err(err) => {
            tracing::warn!(error = %err, "installing the web process extension: running without it");
            builder
        }
    };
    #[cfg(not(target_os = "linux"))]
    let _ = data;
    builder.build()?;
    Ok(())
}

/// The system's trusted roots, and the certificates in the PEM file
/// `NATTER_CA_FILE` if set (a self-hosted server whose certificate a CA of
/// its own signed). A file that is not there or holds no certificate stops
/// the start with the reason, rather than every connection failing later.
fn trust() -> Result<Trust, Box<dyn std::error::Error>> {
    let Some(path) = std::env::var_os("NATTER_CA_FILE") else {
        return Ok(Trust::default());
    };
    let pem = std::fs::read(&path)
        .map_err(|err| format!("NATTER_CA_FILE {}: {err}", Path::new(&path).display()))?;
    let trust = Trust::with_pem(&pem)
        .map_err(|err| format!("NATTER_CA_FILE {}: {err}", Path::new(&path).display()))?;
    Ok(trust)
}

/// `NATTER_DESKTOP_DIR`, or the platform's per-user data folder for the app.
fn data_dir(app: &tauri::AppHandle) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os("NATTER_DESKTOP_DIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(app.path().app_data_dir()?)
}

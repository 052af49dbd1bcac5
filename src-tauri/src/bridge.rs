//! Carries the engine's events out: every event to the UI as it is; the
//! unread total to the tray; notifications to the desktop.

use natter_core::{Engine, Event};
use tauri::{AppHandle, Emitter, Runtime};
use tokio::sync::broadcast::error::RecvError;

use crate::tray::{Tray, show_window};
use crate::{EVENT, OPEN_CHAT, notify};

pub fn start<R: Runtime>(app: AppHandle<R>, engine: Engine, tray: Tray<R>) {
    let mut events = engine.subscribe();
    tauri::async_runtime::spawn(async move {
        if let Ok(total) = engine.unread_total().await {
            tray.set_unread(total);
        }
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    // The UI reloads its state on this.
                    tracing::warn!(missed, "the UI fell behind the engine's events");
                    let _ = app.emit("natter://resync", ());
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            match &event {
                Event::Chats { unread_total, .. } => tray.set_unread(*unread_total),
                Event::Notify { notification } => {
                    let app = app.clone();
                    let on_click = Box::new(move |chat_id: String| {
                        show_window(&app);
                        let _ = app.emit(OPEN_CHAT, chat_id);
                    });
                    if let Err(err) = notify::show(notification, on_click) {
                        tracing::warn!(error = %err, "showing a notification");
                    }
                }
                _ => {}
            }
            if let Err(err) = app.emit(EVENT, &event) {
                tracing::warn!(error = %err, "forwarding an event to the UI");
            }
        }
    });
}

//! Carries the engine's events out: every event to the UI as it is; the
//! unread total to the tray (`show_unread`); notifications to the desktop (and the chats
//! read, whose notifications close).

use std::sync::Arc;

use natter_core::{Engine, Event};
use tauri::{AppHandle, Emitter, Runtime};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::notify::Notifier;
use crate::tray::{Tray, show_window};
use crate::{EVENT, OPEN_CHAT};

pub fn start<R: Runtime>(app: AppHandle<R>, engine: Engine, tray: Tray<R>) {
    let mut events = engine.subscribe();
    let unread = show_unread(tray);
    tauri::async_runtime::spawn(async move {
        let clicked = app.clone();
        let opening = engine.clone();
        let notifier = Notifier::start(Arc::new(move |chat_id: String| {
            // The clicked chat is the one on screen before the window takes
            // the focus, which marks the chat on screen read: otherwise the
            // chat open before could be marked read, its news unseen, if the
            // focus came before the UI's opening. (Not focused yet, so this
            // marks nothing read itself.)
            let reading = opening.set_active_chat(Some(chat_id.clone()));
            tauri::async_runtime::spawn(async move {
                if let Err(err) = reading.await {
                    tracing::warn!(error = %err, "marking a clicked chat read");
                }
            });
            show_window(&clicked);
            let _ = clicked.emit(OPEN_CHAT, chat_id);
        }));
        if let Ok(total) = engine.unread_total().await {
            unread.send_replace(Some(total));
        }
        // The tray's count comes from the newest reading of the list, as
        // the UI's does: two readings may be broadcast out of their order.
        let mut tray_version = 0;
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
                Event::Chats(list) if list.version > tray_version => {
                    tray_version = list.version;
                    unread.send_replace(Some(list.unread_total));
                }
                Event::ChatRead { chat_id } => notifier.read(chat_id.clone()),
                Event::Notify { notification } => notifier.show(notification.clone()),
                Event::SignedOut => notifier.close_all(),
                _ => {}
            }
            if let Err(err) = app.emit(EVENT, &event) {
                tracing::warn!(error = %err, "forwarding an event to the UI");
            }
        }
    });
}

/// Shows the newest unread total in the tray (and the window's title), in a
/// task of its own: each change waits for the main thread, which must not
/// hold up the events on their way to the UI. A burst of changes shows the
/// last.
fn show_unread<R: Runtime>(mut tray: Tray<R>) -> watch::Sender<Option<u32>> {
    let (unread, mut total) = watch::channel(None);
    tauri::async_runtime::spawn(async move {
        while total.changed().await.is_ok() {
            let Some(count) = *total.borrow_and_update() else {
                continue;
            };
            let shown = tauri::async_runtime::spawn_blocking(move || {
                tray.set_unread(count);
                tray
            });
            match shown.await {
                Ok(back) => tray = back,
                Err(err) => {
                    tracing::warn!(error = %err, "updating the tray");
                    return;
                }
            }
        }
    });
    unread
}

//! Native notifications through the desktop's notification service
//! (org.freedesktop.Notifications on Linux, the OS's own elsewhere).
//!
//! One on screen per chat, as WhatsApp and Signal do: a newer one replaces
//! its chat's earlier one (the engine already holds a burst back to about
//! one a second per chat, `natter_core::notices`), and reading a chat
//! (`Event::ChatRead`) closes its notification. One task shows them in order and keeps, per chat, the
//! notification on screen and a task that waits for its click.

use std::sync::Arc;
use std::time::Duration;

use natter_core::Notification;
use tokio::sync::mpsc;

/// How long the notification service may take to answer. One that does not
/// answer at all (a hung daemon) costs each notification this long, and the
/// rest still go out in turn.
pub const SERVICE_PATIENCE: Duration = Duration::from_secs(5);

/// What clicking a notification should do, given the chat it is about.
pub type OnClick = Arc<dyn Fn(String) + Send + Sync + 'static>;

enum Command {
    Show(Notification),
    /// The user read this chat.
    Read(String),
    /// The session ended: nothing of it stays on screen.
    CloseAll,
}

/// The handle the app keeps; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    commands: mpsc::UnboundedSender<Command>,
}

impl Notifier {
    /// Starts the notifications' task on the current tokio runtime.
    pub fn start(on_click: OnClick) -> Notifier {
        let (commands, received) = mpsc::unbounded_channel();
        tokio::spawn(run(received, on_click));
        Notifier { commands }
    }

    /// Shows a notification, in place of its chat's earlier one.
    pub fn show(&self, notification: Notification) {
        // Only fails once the task is gone, when the app is closing.
        let _ = self.commands.send(Command::Show(notification));
    }

    /// Closes the notification of a chat the user has read.
    pub fn read(&self, chat_id: String) {
        let _ = self.commands.send(Command::Read(chat_id));
    }

    /// Closes every notification on screen: at logout, the last user's
    /// messages must not stay there for the next (nor open their chats in
    /// the next one's session when clicked).
    pub fn close_all(&self) {
        let _ = self.commands.send(Command::CloseAll);
    }
}

fn native(notification: &Notification) -> notify_rust::Notification {
    let mut native = notify_rust::Notification::new();
    native
        .appname("Natter")
        .summary(&notification.title)
        .body(&notification.body)
        .icon("org.natter.desktop");
    native
}

#[cfg(all(unix, not(target_os = "macos")))]
use freedesktop::run;

#[cfg(all(unix, not(target_os = "macos")))]
mod freedesktop {
    use std::collections::HashMap;
    use std::sync::Arc;

    use notify_rust::{NotificationHandle, NotificationResponse};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::{Command, OnClick, SERVICE_PATIENCE, native};
    use natter_core::Notification;

    /// A chat's notification on screen, and the task waiting for its click
    /// (it ends when the notification is clicked or closed).
    struct Shown {
        handle: Arc<NotificationHandle>,
        waiter: JoinHandle<()>,
    }

    pub(super) async fn run(mut commands: mpsc::UnboundedReceiver<Command>, on_click: OnClick) {
        let mut shown: HashMap<String, Shown> = HashMap::new();
        while let Some(command) = commands.recv().await {
            // Clicked or closed ones are gone from the screen.
            shown.retain(|_, chat| !chat.waiter.is_finished());
            match command {
                Command::Show(notification) => {
                    if let Err(err) = show(&mut shown, &notification, &on_click).await {
                        tracing::warn!(error = %err, "showing a notification");
                    }
                }
                Command::Read(chat_id) => {
                    if let Some(chat) = shown.remove(&chat_id) {
                        close(chat).await;
                    }
                }
                Command::CloseAll => {
                    for (_, chat) in shown.drain() {
                        close(chat).await;
                    }
                }
            }
        }
    }

    /// Takes a notification off the screen; its click is no longer awaited.
    async fn close(chat: Shown) {
        chat.waiter.abort();
        let closing = chat.handle.close_async();
        if tokio::time::timeout(SERVICE_PATIENCE, closing)
            .await
            .is_err()
        {
            tracing::warn!("the notification service did not close one in time");
        }
    }

    async fn show(
        shown: &mut HashMap<String, Shown>,
        notification: &Notification,
        on_click: &OnClick,
    ) -> Result<(), ShowError> {
        let chat_id = &notification.chat_id;
        let mut native = native(notification);
        native.action("default", "Open");
        let earlier = shown.remove(chat_id);
        if let Some(earlier) = &earlier {
            native.id(earlier.handle.id());
        }
        // Asking what the service reads and showing share one patience: a
        // service that answers neither holds a notification that long.
        let showing = async {
            if reads_markup().await {
                native.body(&escape_markup(&notification.body));
            }
            native.show_async().await.map_err(ShowError::from)
        };
        let answer = match tokio::time::timeout(SERVICE_PATIENCE, showing).await {
            Ok(answer) => answer,
            Err(_) => Err(ShowError::NoAnswer),
        };
        let handle = match answer {
            Ok(handle) => Arc::new(handle),
            Err(err) => {
                if let Some(earlier) = earlier {
                    shown.insert(chat_id.clone(), earlier);
                }
                return Err(err);
            }
        };
        // Its click is awaited on the connection that showed it, also when
        // it replaced one in place (the same id): some daemons send a
        // notification's signals to the connection that showed it last
        // alone, and each show has a connection of its own.
        if let Some(earlier) = earlier {
            earlier.waiter.abort();
        }
        let waiter = tokio::spawn(wait_for_click(
            handle.clone(),
            chat_id.clone(),
            on_click.clone(),
        ));
        shown.insert(chat_id.clone(), Shown { handle, waiter });
        Ok(())
    }

    /// Whether the notification service reads a body as markup (the
    /// spec's `body-markup` capability, as GNOME's, KDE's, dunst and mako
    /// do): a message's text must then be escaped, or a sender's
    /// `<a href="…">` becomes a link of any scheme, `<b>` fakes emphasis,
    /// and plain text with `<` or `&` is mangled. A failed question counts
    /// as yes: escaped text shows `&lt;` at worst. (Its time counts toward
    /// the show's patience.)
    async fn reads_markup() -> bool {
        let asked = async {
            let bus = zbus::Connection::session().await?;
            let reply = bus
                .call_method(
                    Some("org.freedesktop.Notifications"),
                    "/org/freedesktop/Notifications",
                    Some("org.freedesktop.Notifications"),
                    "GetCapabilities",
                    &(),
                )
                .await?;
            reply.body().deserialize::<Vec<String>>()
        };
        match asked.await {
            Ok(capabilities) => capabilities.iter().any(|c| c == "body-markup"),
            Err(_) => true,
        }
    }

    /// `text` as markup that shows it as written.
    pub(super) fn escape_markup(text: &str) -> String {
        let mut escaped = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => escaped.push_str("&amp;"),
                '<' => escaped.push_str("&lt;"),
                '>' => escaped.push_str("&gt;"),
                c => escaped.push(c),
            }
        }
        escaped
    }

    #[derive(Debug, thiserror::Error)]
    enum ShowError {
        #[error(transparent)]
        Service(#[from] notify_rust::error::Error),
        #[error("the notification service did not answer within {SERVICE_PATIENCE:?}")]
        NoAnswer,
    }

    async fn wait_for_click(handle: Arc<NotificationHandle>, chat_id: String, on_click: OnClick) {
        handle
            .wait_for_action_async(|response| {
                if matches!(response, NotificationResponse::Default) {
                    on_click(chat_id);
                }
            })
            .await;
    }
}

/// Elsewhere: shown as they come, without replacing or clicks.
#[cfg(not(all(unix, not(target_os = "macos"))))]
async fn run(mut commands: mpsc::UnboundedReceiver<Command>, _on_click: OnClick) {
    while let Some(command) = commands.recv().await {
        if let Command::Show(notification) = command {
            let native = native(&notification);
            let shown = tokio::task::spawn_blocking(move || native.show().map(drop)).await;
            if let Ok(Err(err)) = shown {
                tracing::warn!(error = %err, "showing a notification");
            }
        }
    }
}

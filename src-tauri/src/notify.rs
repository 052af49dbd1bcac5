//! Native notifications through the desktop's notification service
//! (org.freedesktop.Notifications on Linux, the OS's own elsewhere).

use natter_core::Notification;

/// What clicking a notification should do, given the chat it is about.
pub type OnClick = Box<dyn FnOnce(String) + Send + 'static>;

/// Shows a notification; `on_click` runs if the user clicks it (where the
/// platform reports clicks). Waiting for the click happens on a thread of
/// its own, which ends when the notification is closed.
pub fn show(notification: &Notification, on_click: OnClick) -> Result<(), String> {
    let mut native = notify_rust::Notification::new();
    native
        .appname("Natter")
        .summary(&notification.title)
        .body(&notification.body)
        .icon("org.natter.desktop");
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        native.action("default", "Open");
        let handle = native.show().map_err(|err| err.to_string())?;
        let chat_id = notification.chat_id.clone();
        std::thread::spawn(move || {
            handle.wait_for_action(|action| {
                if action == "default" {
                    on_click(chat_id);
                }
            });
        });
    }
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    {
        let _ = on_click;
        native.show().map_err(|err| err.to_string())?;
    }
    Ok(())
}

//! The tray icon: its tooltip and menu show the unread total, as does the
//! window's title ("(3) Natter", which the taskbar and the window switcher
//! show); its menu brings the window back or quits. Closing the window
//! only hides it.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Runtime};

/// What the tray needs to change later.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    unread: MenuItem<R>,
    /// The count shown: most chat lists leave it as it is.
    shown: Option<u32>,
}

pub fn build<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<Tray<R>> {
    let unread = MenuItem::with_id(app, "unread", unread_text(0), false, None::<&str>)?;
    let show = MenuItem::with_id(app, "show", "Show Natter", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let separator = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&unread, &separator, &show, &quit])?;
    let mut builder = TrayIconBuilder::with_id("main")
        .tooltip(tooltip(0))
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(|app, event| match event.id.as_ref() {
            "show" => show_window(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                show_window(tray.app_handle());
            }
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    let icon = builder.build(app)?;
    Ok(Tray {
        icon,
        unread,
        shown: None,
    })
}

impl<R: Runtime> Tray<R> {
    pub fn set_unread(&mut self, count: u32) {
        if self.shown.replace(count) == Some(count) {
            return;
        }
        if let Err(err) = self.unread.set_text(unread_text(count)) {
            tracing::warn!(error = %err, "updating the tray menu");
        }
        if let Err(err) = self.icon.set_tooltip(Some(tooltip(count))) {
            tracing::warn!(error = %err, "updating the tray tooltip");
        }
        if let Some(window) = self.icon.app_handle().get_webview_window("main")
            && let Err(err) = window.set_title(&window_title(count))
        {
            tracing::warn!(error = %err, "updating the window's title");
        }
    }
}

/// Brings the main window back and to the front.
pub fn show_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
}

pub fn unread_text(count: u32) -> String {
    match count {
        0 => "No unread messages".into(),
        1 => "1 unread message".into(),
        n => format!("{n} unread messages"),
    }
}

/// As WhatsApp's and Signal's windows count: first, where a narrow
/// taskbar button still shows it.
pub fn window_title(count: u32) -> String {
    match count {
        0 => "Natter".into(),
        n => format!("({n}) Natter"),
    }
}

pub fn tooltip(count: u32) -> String {
    match count {
        0 => "Natter".into(),
        n => format!("Natter ({n} unread)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unread_total_reads_well() {
        assert_eq!(unread_text(0), "No unread messages");
        assert_eq!(unread_text(1), "1 unread message");
        assert_eq!(tooltip(12), "Natter (12 unread)");
        assert_eq!(window_title(0), "Natter");
        assert_eq!(window_title(3), "(3) Natter");
    }
}

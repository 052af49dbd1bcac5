//! Links in messages open in the user's browser, never in the app's
//! window: the window shows the app's own page and nothing else. Every
//! navigation of the window, and every request for a new window (a link
//! opened "in a new window"), passes through `navigation`; a link is handed
//! to the system's opener (`xdg-open` on Linux) and the window stays where
//! it was.

use tauri::Url;

/// What the window does with a navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Navigation {
    /// The app's own page (or what it loads itself): go ahead.
    Stay,
    /// A web or mail link: to the user's browser or mail app.
    OpenOutside,
    /// Anything else (a `file:` path, a custom scheme): nowhere.
    Refuse,
}

/// Decides a navigation to `url`; `dev_server` is the Vite dev server the
/// page comes from while developing (`tauri dev`), `None` in a build.
pub fn navigation(url: &Url, dev_server: Option<&Url>) -> Navigation {
    match url.scheme() {
        // The bundled page (Linux and macOS), and about:blank.
        "tauri" | "natter-pic" | "about" => Navigation::Stay,
        "http" | "https" if is_app_origin(url, dev_server) => Navigation::Stay,
        "http" | "https" | "mailto" => Navigation::OpenOutside,
        _ => Navigation::Refuse,
    }
}

/// The bundled page on Windows (`http://tauri.localhost`; elsewhere that is
/// an address like any other, which a message may hold, and which would
/// take the window away from the app), or the dev server's own origin (not
/// any other port of localhost).
fn is_app_origin(url: &Url, dev_server: Option<&Url>) -> bool {
    (cfg!(windows) && url.host_str() == Some("tauri.localhost"))
        || dev_server.is_some_and(|dev| dev.origin() == url.origin())
}

/// Hands `url` to the system's opener; the window is not blocked while it
/// starts, and a failure is logged (there is nobody to tell but the log).
pub fn open_outside(url: &Url) {
    if let Err(err) = open::that_detached(url.as_str()) {
        tracing::warn!(error = %err, %url, "opening a link outside the app");
    }
}

/// For the window's navigation handler: whether to let it happen, having
/// opened it outside when that is where it goes.
pub fn allow(url: &Url, dev_server: Option<&Url>) -> bool {
    match navigation(url, dev_server) {
        Navigation::Stay => true,
        Navigation::OpenOutside => {
            open_outside(url);
            false
        }
        Navigation::Refuse => {
            tracing::warn!(%url, "the window was asked to go elsewhere: refused");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(url: &str) -> Navigation {
        navigation(&Url::parse(url).expect("a URL"), None)
    }

    #[test]
    fn the_apps_own_page_stays_and_links_go_outside() {
        assert_eq!(decide("tauri://localhost/"), Navigation::Stay);
        let bundled_on_windows = if cfg!(windows) {
            Navigation::Stay
        } else {
            Navigation::OpenOutside
        };
        assert_eq!(
            decide("http://tauri.localhost/index.html"),
            bundled_on_windows
        );
        assert_eq!(
            decide("natter-pic://localhost/pics/a.png"),
            Navigation::Stay
        );
        assert_eq!(
            decide("https://example.org/menu?day=1"),
            Navigation::OpenOutside
        );
        assert_eq!(
            decide("http://tauri.localhost.example.org/"),
            Navigation::OpenOutside
        );
        assert_eq!(decide("mailto:ann@example.org"), Navigation::OpenOutside);
        assert_eq!(decide("file:///etc/passwd"), Navigation::Refuse);
        assert_eq!(decide("javascript:alert(1)"), Navigation::Refuse);
        assert_eq!(decide("data:text/html,hi"), Navigation::Refuse);
    }

    #[test]
    fn while_developing_only_the_dev_servers_origin_stays() {
        let dev = Url::parse("http://localhost:5173/").expect("a URL");
        let decide = |url: &str| navigation(&Url::parse(url).expect("a URL"), Some(&dev));
        assert_eq!(decide("http://localhost:5173/index.html"), Navigation::Stay);
        assert_eq!(decide("http://localhost:8080/"), Navigation::OpenOutside);
        assert_eq!(decide("http://127.0.0.1:5173/"), Navigation::OpenOutside);
    }
}

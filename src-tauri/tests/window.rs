//! The real app binary starts under a virtual X server (Debian's Xvfb),
//! shows a window titled Natter, and WebKit loads Natter's web process
//! extension (src/webkit.rs) into the process that runs its page, which
//! runs JavaScript without the optimizing compilers. A broken setting
//! stops it at start with the reason.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{Killed, children, poll_until, virtual_display, windows_titled};

/// The app's first start builds WebKit's caches: give it time on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// How often a condition is looked at again.
const EVERY: Duration = Duration::from_millis(100);

/// The app binary on `display` with its data in `data`; its log (stdout)
/// goes nowhere unless the caller says otherwise, its stderr to the test's.
fn app_command(display: &str, data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter-desktop"));
    command
        .env("DISPLAY", display)
        .env("NATTER_DESKTOP_DIR", data)
        // No GPU here: let WebKit draw in software.
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("NO_COLOR", "1")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null());
    command
}

/// Waits until `app` shows a window titled Natter (`shown`) or shows none;
/// fails if it exits first.
fn wait_for_window_shown(app: &mut Killed, display: &str, shown: bool) {
    let what = format!("a window titled Natter to become shown: {shown}");
    poll_until(&what, PATIENCE, EVERY, || {
        if let Some(status) = app.0.try_wait().expect("status") {
            panic!("the app exited before its window was shown: {shown}: {status}");
        }
        (windows_titled(display, "Natter").is_empty() != shown).then_some(())
    });
}

fn wait_for_window(app: &mut Killed, display: &str) {
    wait_for_window_shown(app, display, true);
}

/// Waits for `app` (started with its stderr piped) to stop: its status and
/// what it wrote to stderr.
fn wait_for_exit(app: &mut Killed) -> (ExitStatus, String) {
    let status = poll_until("the app to stop", PATIENCE, EVERY, || {
        app.0.try_wait().expect("status")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut app.0.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr read");
    (status, stderr)
}

#[test]
fn the_app_starts_shows_a_window_titled_natter_and_loads_its_web_extension() {
    let (_xvfb, display) = virtual_display();
    let data = tempfile::tempdir().expect("temp dir");
    let mut app = Killed(
        app_command(&display, data.path())
            .spawn()
            .expect("the app starts"),
    );
    wait_for_window(&mut app, &display);
    assert!(
        app.0.try_wait().expect("status").is_none(),
        "the app keeps running"
    );
    let web_process = poll_until(
        "a web process of the app to load libnatter_webext.so",
        PATIENCE,
        EVERY,
        || {
            children(app.0.id())
                .into_iter()
                .find(|child| maps_library(*child, "libnatter_webext.so"))
        },
    );
    let environment = std::fs::read(format!("/proc/{web_process}/environ")).expect("environ");
    let environment: Vec<&[u8]> = environment.split(|byte| *byte == 0).collect();
    for option in [b"JSC_useDFGJIT=0".as_slice(), b"JSC_useFTLJIT=0"] {
        assert!(
            environment.contains(&option),
            "the web process runs without {}",
            String::from_utf8_lossy(option)
        );
    }
}

/// Whether `pid` has a file named `library` mapped.
fn maps_library(pid: u32, library: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines()
            .any(|line| line.ends_with(&format!("/{library}")))
    })
}

#[test]
fn a_ca_file_without_a_certificate_stops_the_app_with_the_reason() {
    let (_xvfb, display) = virtual_display();
    let data = tempfile::tempdir().expect("temp dir");
    let ca_file = data.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").expect("written");
    let mut app = Killed(
        app_command(&display, data.path())
            .env("NATTER_CA_FILE", &ca_file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("the app starts"),
    );
    let (status, stderr) = wait_for_exit(&mut app);
    assert!(!status.success(), "a failure status: {status}");
    assert!(
        stderr.contains("NATTER_CA_FILE") && stderr.contains("no certificate"),
        "says which setting and why: {stderr}"
    );
}

/// Asks `window` on `display` to close, as a window manager does when its
/// close button is clicked: a `WM_DELETE_WINDOW` message (GTK takes it
/// from any client).
fn ask_to_close(display: &str, window: &str) {
    use x11::xlib;
    let name = std::ffi::CString::new(display).expect("a display name");
    let window: xlib::Window = window.parse().expect("a window id");
    // SAFETY: plain Xlib calls on a connection opened and closed here; the
    // event is zeroed, then its client-message fields set, as Xlib expects.
    unsafe {
        let connection = xlib::XOpenDisplay(name.as_ptr());
        assert!(!connection.is_null(), "the virtual display opens");
        let protocols = xlib::XInternAtom(connection, c"WM_PROTOCOLS".as_ptr(), xlib::False);
        let delete = xlib::XInternAtom(connection, c"WM_DELETE_WINDOW".as_ptr(), xlib::False);
        let mut event: xlib::XEvent = std::mem::zeroed();
        event.client_message.type_ = xlib::ClientMessage;
        event.client_message.window = window;
        event.client_message.message_type = protocols;
        event.client_message.format = 32;
        event.client_message.data.as_longs_mut()[0] = delete as std::ffi::c_long;
        event.client_message.data.as_longs_mut()[1] = xlib::CurrentTime as std::ffi::c_long;
        let sent = xlib::XSendEvent(
            connection,
            window,
            xlib::False,
            xlib::NoEventMask,
            &mut event,
        );
        assert_ne!(sent, 0, "the close request is sent");
        xlib::XFlush(connection);
        xlib::XCloseDisplay(connection);
    }
}

/// The app started again on the same data folder (from the menu, while the
/// first sits in the tray) asks the first to show its window and stops:
/// one window, one app holding the session and cache. Closed to the tray,
/// the first's window comes back on the next start.
#[test]
fn a_second_start_on_the_same_folder_hands_over_to_the_first_and_stops() {
    let (_xvfb, display) = virtual_display();
    let data = tempfile::tempdir().expect("temp dir");
    let mut first = Killed(
        app_command(&display, data.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the app starts"),
    );
    // The first's log, line by line (its tracing goes to stdout).
    let (lines, log) = std::sync::mpsc::channel();
    let stdout = first.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    wait_for_window(&mut first, &display);

    let mut second = Killed(
        app_command(&display, data.path())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the app starts again"),
    );
    let (status, stderr) = wait_for_exit(&mut second);
    assert!(status.success(), "stops without an error: {status}");
    assert!(
        stderr.contains(&format!(
            "already running (process {}): showing its window",
            first.0.id()
        )),
        "says which copy runs: {stderr}"
    );
    // The first heard the request, and still shows its one window.
    let heard = loop {
        match log.recv_timeout(PATIENCE) {
            Ok(line) if line.contains("another copy of the app was started") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(heard, "the first app says it was asked to show its window");
    assert!(
        first.0.try_wait().expect("status").is_none(),
        "the first app keeps running"
    );
    assert_eq!(windows_titled(&display, "Natter").len(), 1);

    // Closing the window hides it (the app stays in the tray); the next
    // start shows it again.
    let window = windows_titled(&display, "Natter").remove(0);
    ask_to_close(&display, &window);
    wait_for_window_shown(&mut first, &display, false);
    let mut third = Killed(
        app_command(&display, data.path())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the app starts a third time"),
    );
    let (status, stderr) = wait_for_exit(&mut third);
    assert!(
        status.success(),
        "stops without an error: {status}: {stderr}"
    );
    wait_for_window(&mut first, &display);
}

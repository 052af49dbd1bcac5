//! A notification really reaches the desktop's notification service: a
//! private D-Bus session bus (Debian's dbus-daemon) with a listener on
//! org.freedesktop.Notifications that records what arrives, and answers a
//! click the way a notification daemon does.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use natter_core::Notification;
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(15);

/// A `dbus-daemon` of this test's own, stopped on drop.
struct PrivateBus {
    daemon: Child,
    address: String,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let mut daemon = Command::new("dbus-daemon")
            .args([
                "--session",
                "--nofork",
                "--print-address=1",
                "--address=unix:tmpdir=/tmp",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon runs (Debian's dbus package; scripts/test installs it)");
        let stdout = daemon.stdout.take().expect("stdout");
        let mut address = String::new();
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("bus address");
        PrivateBus {
            daemon,
            address: address.trim().to_owned(),
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// What a notification daemon received.
#[derive(Debug)]
struct Received {
    app_name: String,
    summary: String,
    body: String,
    actions: Vec<String>,
}

/// Plays the desktop's notification daemon.
struct Recorder {
    received: mpsc::UnboundedSender<Received>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        _hints: HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        let _ = self.received.send(Received {
            app_name,
            summary,
            body,
            actions,
        });
        7
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into(), "actions".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "recorder".into(),
            "natter tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    fn close_notification(&self, _id: u32) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_reaches_the_notification_service_and_a_click_opens_its_chat() {
    let bus = PrivateBus::start();
    // SAFETY: this test binary has this one test, and nothing else reads the
    // environment while it is set; notify-rust finds the bus through it.
    unsafe { std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &bus.address) };

    let (received, mut arrivals) = mpsc::unbounded_channel();
    let daemon = zbus::connection::Builder::address(bus.address.as_str())
        .name("org.freedesktop.Notifications")
        .serve_at("/org/freedesktop/Notifications", Recorder { received })
        .build()
        .await
        .expect("the recorder is on the bus");

    let (clicked, mut clicks) = mpsc::unbounded_channel();
    let notification = Notification {
        chat_id: "chat-1".into(),
        message_id: "m-1".into(),
        title: "Team".into(),
        body: "Bob: lunch?".into(),
    };
    tokio::task::spawn_blocking(move || {
        natter_desktop::notify::show(
            &notification,
            Box::new(move |chat_id| {
                let _ = clicked.send(chat_id);
            }),
        )
    })
    .await
    .expect("joined")
    .expect("shown");

    let got = tokio::time::timeout(PATIENCE, arrivals.recv())
        .await
        .expect("the notification arrived in time")
        .expect("recorded");
    assert_eq!(got.app_name, "Natter");
    assert_eq!(got.summary, "Team");
    assert_eq!(got.body, "Bob: lunch?");
    assert_eq!(got.actions, ["default", "Open"], "clickable");

    // The user clicks it: the daemon says so, and the app opens that chat.
    // The app starts listening for the click right after showing it; until
    // it does, a click signal goes unheard, so the daemon repeats it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let opened = loop {
        daemon
            .emit_signal(
                None::<&str>,
                "/org/freedesktop/Notifications",
                "org.freedesktop.Notifications",
                "ActionInvoked",
                &(7u32, "default"),
            )
            .await
            .expect("signal sent");
        if let Ok(opened) = tokio::time::timeout(Duration::from_millis(200), clicks.recv()).await {
            break opened;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the click was not handled in time"
        );
    };
    assert_eq!(opened.as_deref(), Some("chat-1"));
}

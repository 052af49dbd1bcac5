//! A notification really reaches the desktop's notification service: a
//! private D-Bus session bus (Debian's dbus-daemon) with a listener on
//! org.freedesktop.Notifications that records what arrives and what is
//! closed, and answers a click the way a notification daemon does.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use natter_core::Notification;
use natter_desktop::notify::{Notifier, SERVICE_PATIENCE};
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

/// What a notification daemon saw.
#[derive(Debug)]
enum Seen {
    Shown(Received),
    Closed(u32),
}

#[derive(Debug)]
struct Received {
    id: u32,
    replaces_id: u32,
    app_name: String,
    summary: String,
    body: String,
    actions: Vec<String>,
    /// The bus name of the connection that asked: some daemons send a
    /// notification's signals to it alone.
    sender: String,
}

/// Plays the desktop's notification daemon: numbers notifications from 1,
/// and one that replaces another keeps its number. One titled `STUCK` is
/// never answered, as by a hung daemon.
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    next_id: AtomicU32,
    /// Whether it says it reads a body as markup (`body-markup`).
    markup: Arc<AtomicBool>,
}

const STUCK: &str = "stuck";

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        _hints: HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> u32 {
        let sender = header
            .sender()
            .map(|sender| sender.to_string())
            .unwrap_or_default();
        if summary == STUCK {
            std::future::pending::<()>().await;
        }
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.next_id.fetch_add(1, Ordering::SeqCst) + 1
        };
        let _ = self.seen.send(Seen::Shown(Received {
            id,
            replaces_id,
            app_name,
            summary,
            body,
            actions,
            sender,
        }));
        id
    }

    fn get_capabilities(&self) -> Vec<String> {
        let mut capabilities = vec!["body".into(), "actions".into()];
        if self.markup.load(Ordering::SeqCst) {
            capabilities.push("body-markup".into());
        }
        capabilities
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "recorder".into(),
            "natter tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    fn close_notification(&self, id: u32) {
        let _ = self.seen.send(Seen::Closed(id));
    }
}

fn notification(chat_id: &str, title: &str, body: &str) -> Notification {
    Notification {
        chat_id: chat_id.into(),
        message_id: body.into(),
        title: title.into(),
        body: body.into(),
    }
}

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("the notification service heard from the app in time")
        .expect("recorded")
}

async fn next_shown(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Received {
    match next_seen(seen).await {
        Seen::Shown(received) => received,
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_reach_the_service_replace_open_close_and_outlast_a_hung_service() {
    let bus = PrivateBus::start();
    // SAFETY: this test binary has this one test, and nothing else reads the
    // environment while it is set; notify-rust finds the bus through it.
    unsafe { std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &bus.address) };

    let (seen, mut heard) = mpsc::unbounded_channel();
    let markup = Arc::new(AtomicBool::new(false));
    let daemon = zbus::connection::Builder::address(bus.address.as_str())
        .name("org.freedesktop.Notifications")
        .serve_at(
            "/org/freedesktop/Notifications",
            Recorder {
                seen,
                next_id: AtomicU32::new(0),
                markup: markup.clone(),
            },
        )
        .build()
        .await
        .expect("the recorder is on the bus");

    let (clicked, mut clicks) = mpsc::unbounded_channel();
    let notifier = Notifier::start(Arc::new(move |chat_id| {
        let _ = clicked.send(chat_id);
    }));

    notifier.show(notification("chat-1", "Team", "Bob: lunch?"));
    let first = next_shown(&mut heard).await;
    assert_eq!(first.app_name, "Natter");
    assert_eq!(first.summary, "Team");
    assert_eq!(first.body, "Bob: lunch?");
    assert_eq!(first.actions, ["default", "Open"], "clickable");
    assert_eq!(first.replaces_id, 0, "a new notification");

    // A newer message in the same chat takes the earlier one's place.
    notifier.show(notification(
        "chat-1",
        "Team (2 new messages)",
        "Bob: at noon?",
    ));
    let second = next_shown(&mut heard).await;
    assert_eq!(
        second.replaces_id, first.id,
        "replaces the chat's earlier one"
    );
    assert_eq!(second.summary, "Team (2 new messages)");

    // Another chat has its own.
    notifier.show(notification("chat-2", "Ann", "hi"));
    let third = next_shown(&mut heard).await;
    assert_eq!(third.replaces_id, 0);
    assert_ne!(third.id, first.id);

    // The user clicks chat-1's: the daemon says so, and the app opens that
    // chat. The app listens for the click right after showing it; until it
    // does, a click signal goes unheard, so the daemon repeats it. It tells
    // the connection that showed the notification last, alone (as some
    // daemons do), not every connection on the bus.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let opened = loop {
        daemon
            .emit_signal(
                Some(second.sender.as_str()),
                "/org/freedesktop/Notifications",
                "org.freedesktop.Notifications",
                "ActionInvoked",
                &(first.id, "default"),
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

    // Reading chat-2 (on another device, or in the app) closes its notification.
    notifier.read("chat-9".into());
    notifier.read("chat-2".into());
    match next_seen(&mut heard).await {
        Seen::Closed(id) => assert_eq!(id, third.id),
        other => panic!("expected chat-2's notification closed, got {other:?}"),
    }

    // A service that never answers one holds up that one (for
    // SERVICE_PATIENCE), not the ones after it.
    assert!(SERVICE_PATIENCE < PATIENCE);
    notifier.show(notification("chat-3", STUCK, "no answer"));
    notifier.show(notification("chat-4", "Dee", "still shown"));
    let after = next_shown(&mut heard).await;
    assert_eq!(after.summary, "Dee");

    // Logging out closes what is on screen (chat-1's was clicked, and
    // chat-3's never shown): the next user sees none of it.
    notifier.close_all();
    match next_seen(&mut heard).await {
        Seen::Closed(id) => assert_eq!(id, after.id),
        other => panic!("expected chat-4's notification closed, got {other:?}"),
    }

    // Text shows as written: a service that reads a body as markup gets it
    // escaped (a sender's link or tags stay text), one that does not gets
    // it as it is.
    let text = r#"a<b && <a href="file:///etc">x</a>"#;
    notifier.show(notification("chat-5", "Eve", text));
    assert_eq!(next_shown(&mut heard).await.body, text);
    markup.store(true, Ordering::SeqCst);
    notifier.show(notification("chat-6", "Fay", text));
    assert_eq!(
        next_shown(&mut heard).await.body,
        r#"a&lt;b &amp;&amp; &lt;a href="file:///etc"&gt;x&lt;/a&gt;"#
    );
}

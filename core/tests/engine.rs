//! The engine against a real `natter-server`, started in this process on a
//! free port, stopped and started again to play the server going away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use natter_core::notices::NOTICE_EVERY;
use natter_core::{
    Backoff, ChatSummary, ConnectionState, Delivery, Engine, EngineOptions, Event, MessageView,
    Notification, SignUp, Trust,
};
use natter_server::Application;
use natter_server::config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// How long any wait for a condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);
const SECRET: &str = "engine-tests-secret-0123456789abcdefghij";

/// A real server; its data folder outlives `stop`, so `start` brings the
/// same server back on the same port.
struct Server {
    addr: SocketAddr,
    data: tempfile::TempDir,
    secret: String,
    /// Its settings beyond the tests' defaults, at every start.
    adjust: fn(&mut Config),
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Server {
    async fn spawn() -> Server {
        Self::spawn_with(|_| {}).await
    }

    async fn spawn_with(adjust: fn(&mut Config)) -> Server {
        let mut server = Server {
            // Below the ephemeral range: a restart binds the same port,
            // which an outgoing connection of a test running beside this
            // one could hold meanwhile had the system picked it.
            addr: ([127, 0, 0, 1], natter_test_support::free_port()).into(),
            data: tempfile::tempdir().expect("temp dir"),
            secret: SECRET.into(),
            adjust,
            running: None,
        };
        server.start().await;
        server
    }

    async fn start(&mut self) {
        let mut config = Config::with_data_dir(self.data.path().to_path_buf());
        config.addr = self.addr;
        config.jwt_secret = Some(self.secret.clone());
        (self.adjust)(&mut config);
        let app = Application::build(&config).await.expect("server starts");
        self.addr = app.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.running = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.expect("server stopped cleanly");
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// An engine with its own data folder, pointed at `server`, with short
/// reconnection waits.
struct App {
    engine: Engine,
    events: broadcast::Receiver<Event>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

async fn app(server: &Server) -> App {
    app_at(&server.url(), Trust::default()).await
}

/// An app pointed at `url`, trusting `trust` for https.
async fn app_at(url: &str, trust: Trust) -> App {
    app_waiting(url, trust, SHORT_WAITS).await
}

/// An app pointed at `url` that waits as `backoff` says to try again.
async fn app_waiting(url: &str, trust: Trust, backoff: Backoff) -> App {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    let mut app = open_waiting(&dir, trust, backoff).await;
    app.engine.set_server_url(url).expect("server address");
    app._temp = Some(temp);
    app
}

/// The app started again on the same folder (a restart).
async fn reopen(dir: &Path) -> App {
    open(dir, Trust::default()).await
}

/// The waits of the test apps before they try again (reconnect, resend).
const SHORT_WAITS: Backoff = Backoff {
    min: Duration::from_millis(20),
    max: Duration::from_millis(300),
};

async fn open(dir: &Path, trust: Trust) -> App {
    open_waiting(dir, trust, SHORT_WAITS).await
}

async fn open_waiting(dir: &Path, trust: Trust, backoff: Backoff) -> App {
    let options = EngineOptions {
        backoff,
        trust,
        connect_timeout: Duration::from_secs(2),
    };
    let engine = Engine::open(dir, options).await.expect("engine opens");
    App {
        events: engine.subscribe(),
        engine,
        dir: dir.to_path_buf(),
        _temp: None,
    }
}

/// The app's chat list, from its cache.
async fn listed(app: &App) -> Vec<ChatSummary> {
    app.engine.chats().await.expect("chats").chats
}

/// Who is typing in a chat, by name.
async fn typing_in(app: &App, chat_id: &str) -> Vec<String> {
    let mut typists = app.engine.typists().await.expect("typists");
    typists.remove(chat_id).unwrap_or_default()
}

/// The chats the list shows behind (short of messages the server failed to give).
async fn behind(app: &App) -> Vec<String> {
    listed(app)
        .await
        .into_iter()
        .filter(|chat| chat.behind)
        .map(|chat| chat.id)
        .collect()
}

/// Every test user's password.
const PASSWORD: &str = "correct horse battery";

async fn sign_up(app: &App, name: &str) -> natter_shared::User {
    app.engine
        .sign_up(SignUp {
            name: name.into(),
            email: email_of(name),
            password: PASSWORD.into(),
            pic: None,
            invitation_code: None,
        })
        .await
        .expect("signed up")
}

/// `name` signs up on `app` with the test picture.
async fn sign_up_with_a_picture(app: &App, name: &str) -> natter_shared::User {
    app.engine
        .sign_up(SignUp {
            name: name.into(),
            email: email_of(name),
            password: PASSWORD.into(),
            pic: Some(std::fs::read(fixture("avatar.png")).expect("the fixture")),
            invitation_code: None,
        })
        .await
        .expect("signed up with a picture")
}

/// A code for a server that asks for one (`NATTER_INVITATION_CODE`).
const INVITATION: &str = "a code only the team was given";

/// On a server that asks for an invitation code, a sign-up gives the one
/// typed (spaces around it aside; blank is none), and one without it is
/// told why.
#[tokio::test]
async fn a_sign_up_gives_the_servers_invitation_code() {
    let server =
        Server::spawn_with(|config| config.invitation_code = Some(INVITATION.into())).await;
    let ann_app = app(&server).await;
    let form = |code: &str| SignUp {
        name: "Ann".into(),
        email: email_of("Ann"),
        password: PASSWORD.into(),
        pic: None,
        invitation_code: Some(code.into()),
    };
    let refused = ann_app
        .engine
        .sign_up(form("  "))
        .await
        .expect_err("no code given");
    assert!(
        refused.to_string().contains("asks for an invitation code"),
        "{refused}"
    );
    let ann = ann_app
        .engine
        .sign_up(form(&format!(" {INVITATION}\n")))
        .await
        .expect("signed up with the code");
    assert_eq!(ann.name, "Ann");
}

/// Files in `dir`, none when it is not there.
fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// A picture is kept on disk for offline use, and goes with the session:
/// the next person to log in here finds none of the people it met.
#[tokio::test]
async fn pictures_kept_for_offline_use_go_at_logout() {
    let server = Server::spawn().await;
    let ann_app = app(&server).await;
    let ann = sign_up_with_a_picture(&ann_app, "Ann").await;
    let bob_app = app(&server).await;
    sign_up(&bob_app, "Bob").await;
    let pic = ann.pic.expect("a picture");
    let (_, kind) = bob_app.engine.picture(&pic).await.expect("the picture");
    assert_eq!(kind, "image/png");
    let kept = bob_app.dir.join("pics");
    assert_eq!(files_in(&kept), 1, "kept for offline use");
    bob_app.engine.logout().await.expect("logged out");
    assert!(!kept.exists(), "the pictures went with the session");

    // Left by a session whose logout could not delete them: the next login
    // does.
    std::fs::create_dir_all(&kept).expect("a folder");
    std::fs::write(kept.join("left.png"), b"not anyone's business").expect("a file");
    log_in(&bob_app, "Bob").await;
    assert!(!kept.exists(), "gone at the next login");
}

/// `name`, signed up before (on this app or another), logs in on `app`.
async fn log_in(app: &App, name: &str) {
    app.engine
        .login(&email_of(name), PASSWORD)
        .await
        .expect("logged in");
}

fn email_of(name: &str) -> String {
    format!("{}@example.org", name.to_lowercase())
}

/// Waits until `check` holds, polling; fails the test after `PATIENCE`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event matching `wanted`, skipping others.
/// For `next_event`: a message event with this text.
fn shows(content: &str) -> impl Fn(&Event) -> bool + '_ {
    move |event| matches!(event, Event::Message { message } if message.content == content)
}

async fn next_event(app: &mut App, what: &str, wanted: impl Fn(&Event) -> bool) -> Event {
    next_event_within(app, what, PATIENCE, wanted).await
}

/// `next_event`, waiting at most `patience`.
async fn next_event_within(
    app: &mut App,
    what: &str,
    patience: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(patience, async {
        loop {
            match app.events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("engine gone"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for event: {what}"))
}

/// The next notification that `wanted` accepts (others are skipped).
async fn next_notification(
    app: &mut App,
    what: &str,
    wanted: impl Fn(&Notification) -> bool,
) -> Notification {
    let event = next_event(
        app,
        what,
        |event| matches!(event, Event::Notify { notification } if wanted(notification)),
    )
    .await;
    match event {
        Event::Notify { notification } => notification,
        _ => unreachable!("next_event returned only what was wanted"),
    }
}

/// Why a login that must fail (the server cannot be used as given) failed.
async fn refused_login(app: &App) -> String {
    app.engine
        .login(&email_of("Ann"), PASSWORD)
        .await
        .expect_err("the login is refused")
        .to_string()
}

async fn online(app: &App) {
    eventually("online", || async {
        app.engine.connection_state().await == ConnectionState::Online
    })
    .await;
}

async fn offline(app: &App) {
    eventually("offline", || async {
        app.engine.connection_state().await != ConnectionState::Online
    })
    .await;
}

async fn contents(app: &App, chat_id: &str) -> Vec<(String, Delivery)> {
    app.engine
        .history(chat_id, None)
        .await
        .expect("history")
        .into_iter()
        .map(|message: MessageView| (message.content, message.status))
        .collect()
}

/// The seqs of a chat's newest page, as the app shows it (none while pending).
async fn seqs(app: &App, chat_id: &str) -> Vec<Option<i64>> {
    app.engine
        .history(chat_id, None)
        .await
        .expect("history")
        .iter()
        .map(|message| message.seq)
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/api/fixtures")
        .join(name)
}

#[tokio::test]
async fn two_engines_chat_with_unread_counts_notifications_and_typing() {
    let server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let mut bob_app = app(&server).await;
    let ann = sign_up_with_a_picture(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    online(&ann_app).await;
    online(&bob_app).await;

    // Ann finds Bob and opens a chat; Bob hears of it.
    let found = ann_app.engine.search_users("bo").await.expect("search");
    assert_eq!(
        found.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        [bob.id.as_str()]
    );
    let chat = ann_app
        .engine
        .open_direct(&bob.id)
        .await
        .expect("chat opened");
    assert_eq!(chat.name, "Bob");
    ann_app
        .engine
        .set_active_chat(Some(chat.id.clone()))
        .await
        .expect("active");

    // Spaces and blank lines around the text are left out.
    let pending = ann_app
        .engine
        .send(&chat.id, "  hi Bob\n\n")
        .await
        .expect("sent");
    assert_eq!(pending.status, Delivery::Pending);
    assert_eq!(pending.content, "hi Bob");

    // Bob: a notification (no chat open), one unread, the chat named after Ann.
    let notification = next_notification(&mut bob_app, "notification", |_| true).await;
    assert_eq!(
        (notification.title.as_str(), notification.body.as_str()),
        ("Ann", "hi Bob")
    );
    eventually("bob has one unread", || async {
        bob_app.engine.unread_total().await.expect("unread") == 1
    })
    .await;
    let bob_chats = listed(&bob_app).await;
    assert_eq!(bob_chats[0].name, "Ann");
    assert_eq!(
        bob_chats[0].pic, ann.pic,
        "a 1:1 chat shows the other person's picture"
    );
    let pic = ann.pic.clone().expect("ann has a picture");
    let (bytes, kind) = bob_app.engine.picture(&pic).await.expect("picture");
    assert_eq!(kind, "image/png");
    assert_eq!(
        bytes,
        std::fs::read(fixture("avatar.png")).expect("fixture")
    );

    // Ann's message turned from pending into sent, once.
    eventually("ann's message is acked", || async {
        contents(&ann_app, &chat.id).await == [("hi Bob".to_owned(), Delivery::Sent)]
    })
    .await;

    // Bob opens the chat: read; his reply does not notify Ann, who is looking at it.
    bob_app
        .engine
        .set_active_chat(Some(chat.id.clone()))
        .await
        .expect("active");
    assert_eq!(bob_app.engine.unread_total().await.expect("unread"), 0);
    bob_app.engine.typing(&chat.id, true).await.expect("typing");
    let typing = next_event(
        &mut ann_app,
        "typing",
        |e| matches!(e, Event::Typing { names, .. } if !names.is_empty()),
    )
    .await;
    assert_eq!(
        typing,
        Event::Typing {
            chat_id: chat.id.clone(),
            names: vec!["Bob".into()]
        }
    );
    // A UI that missed the event can read it.
    assert_eq!(
        ann_app.engine.typists().await.expect("typists"),
        HashMap::from([(chat.id.clone(), vec!["Bob".to_owned()])])
    );
    bob_app
        .engine
        .send(&chat.id, "hello Ann")
        .await
        .expect("sent");
    // The message ends Bob's "typing…" on Ann's side.
    next_event(
        &mut ann_app,
        "typing cleared",
        |e| matches!(e, Event::Typing { names, .. } if names.is_empty()),
    )
    .await;
    assert!(ann_app.engine.typists().await.expect("typists").is_empty());
    eventually("ann has the reply", || async {
        contents(&ann_app, &chat.id).await.len() == 2
    })
    .await;
    assert_eq!(ann_app.engine.unread_total().await.expect("unread"), 0);
    // A focused window on another chat, or an unfocused window, counts and notifies.
    ann_app.engine.set_focused(false).await.expect("unfocused");
    bob_app
        .engine
        .send(&chat.id, "are you there?")
        .await
        .expect("sent");
    let notification = next_notification(&mut ann_app, "notification", |_| true).await;
    assert_eq!(notification.body, "are you there?");
    eventually("ann has one unread", || async {
        ann_app.engine.unread_total().await.expect("unread") == 1
    })
    .await;
    ann_app.engine.set_focused(true).await.expect("focused");
    assert_eq!(
        ann_app.engine.unread_total().await.expect("unread"),
        0,
        "looking at it reads it"
    );
    // And says so, for the desktop to close the chat's notification.
    next_event(
        &mut ann_app,
        "the chat read",
        |e| matches!(e, Event::ChatRead { chat_id } if *chat_id == chat.id),
    )
    .await;
}

/// Focus changes count in the order they are made, whatever order their
/// futures run in: the shell spawns one per window event.
#[tokio::test]
async fn focus_changes_count_in_the_order_made() {
    let server = Server::spawn().await;
    let (ann_app, bob_app, _, chat) = ann_and_bob_after_one_message(&server).await;
    bob_app
        .engine
        .set_active_chat(Some(chat.id.clone()))
        .await
        .expect("looking");
    // A quick blur and focus, their futures run in reverse.
    let blur = bob_app.engine.set_focused(false);
    let focus = bob_app.engine.set_focused(true);
    focus.await.expect("focused");
    blur.await.expect("unfocused");
    ann_app
        .engine
        .send(&chat.id, "seen at once")
        .await
        .expect("sent");
    eventually("bob has it", || async {
        contents(&bob_app, &chat.id).await.len() == 2
    })
    .await;
    assert_eq!(
        bob_app.engine.unread_total().await.expect("unread"),
        0,
        "the window has focus, on that chat"
    );
}

/// Opening and closing a chat count in the order made, whatever order
/// their futures run in: the UI's invokes may run as tasks.
#[tokio::test]
async fn chat_openings_count_in_the_order_made() {
    let server = Server::spawn().await;
    let (ann_app, bob_app, _, chat) = ann_and_bob_after_one_message(&server).await;
    // Bob opens the chat and closes it; the two futures run in reverse.
    let open = bob_app.engine.set_active_chat(Some(chat.id.clone()));
    let close = bob_app.engine.set_active_chat(None);
    close.await.expect("closed");
    open.await.expect("opened");
    assert_eq!(
        bob_app.engine.unread_total().await.expect("unread"),
        0,
        "opened: read"
    );
    ann_app
        .engine
        .send(&chat.id, "while closed")
        .await
        .expect("sent");
    eventually("bob has it", || async {
        contents(&bob_app, &chat.id).await.len() == 2
    })
    .await;
    assert_eq!(
        bob_app.engine.unread_total().await.expect("unread"),
        1,
        "no chat is open: the message is unread"
    );
}

/// Ann and Bob, each with an app on `server`, Bob online, and their chat
/// with Ann's first message ("one") in Bob's cache.
async fn ann_and_bob_after_one_message(
    server: &Server,
) -> (App, App, natter_shared::User, ChatSummary) {
    let ann_app = app(server).await;
    let bob_app = app(server).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    online(&bob_app).await;
    let chat = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    ann_app.engine.send(&chat.id, "one").await.expect("sent");
    eventually("bob has the first", || async {
        contents(&bob_app, &chat.id).await.len() == 1
    })
    .await;
    (ann_app, bob_app, bob, chat)
}

#[tokio::test]
async fn an_engine_offline_while_messages_arrive_catches_up_once() {
    let server = Server::spawn().await;
    let (ann_app, bob_app, _, chat) = ann_and_bob_after_one_message(&server).await;

    // Bob's app is closed; Ann writes on.
    let bob_dir = bob_app.dir.clone();
    let bob_temp = bob_app._temp;
    drop(bob_app.engine);
    for text in ["two", "three", "four"] {
        ann_app.engine.send(&chat.id, text).await.expect("sent");
    }
    eventually("ann's messages are acked", || async {
        contents(&ann_app, &chat.id)
            .await
            .iter()
            .all(|(_, d)| *d == Delivery::Sent)
    })
    .await;

    // Bob's app starts again: the cache shows what it had at once, then catch-up adds the rest.
    let mut bob_app = reopen(&bob_dir).await;
    let _keep = bob_temp;
    let expected: Vec<(String, Delivery)> = ["one", "two", "three", "four"]
        .iter()
        .map(|t| (t.to_string(), Delivery::Sent))
        .collect();
    eventually("bob caught up", || async {
        contents(&bob_app, &chat.id).await == expected
    })
    .await;
    let seqs = seqs(&bob_app, &chat.id).await;
    assert_eq!(
        seqs,
        [Some(1), Some(2), Some(3), Some(4)],
        "nothing missed, nothing twice"
    );
    assert_eq!(bob_app.engine.unread_total().await.expect("unread"), 4);
    // What he missed is told once for the chat: its newest message, and how many.
    let notification = next_notification(&mut bob_app, "the missed messages told", |_| true).await;
    assert_eq!(
        (notification.title.as_str(), notification.body.as_str()),
        ("Ann (4 new messages)", "four")
    );
}

/// A live message the cache could not keep would be a hole catch-up never
/// fills (it reads from the newest seq held): the app drops the link
/// instead, and the next one catches up from there.
#[tokio::test]
async fn a_message_the_cache_could_not_keep_comes_back_through_catch_up() {
    let server = Server::spawn().await;
    let (ann_app, bob_app, bob, chat) = ann_and_bob_after_one_message(&server).await;

    let cache = natter_core::session::Files::new(&bob_app.dir).cache(&bob.id);
    let lock = natter_test_support::hold_write_lock(&cache).await;
    ann_app.engine.send(&chat.id, "two").await.expect("sent");
    offline(&bob_app).await;
    drop(lock);
    ann_app.engine.send(&chat.id, "three").await.expect("sent");
    let expected: Vec<(String, Delivery)> = ["one", "two", "three"]
        .iter()
        .map(|t| (t.to_string(), Delivery::Sent))
        .collect();
    eventually("bob has all three", || async {
        contents(&bob_app, &chat.id).await == expected
    })
    .await;
    assert_eq!(seqs(&bob_app, &chat.id).await, [Some(1), Some(2), Some(3)]);
}

/// A live message past a gap in the cache (one the socket never brought:
/// the link dropped as it was sent, and catch-up's chat list did not have
/// it yet) brings the gap from history, notified as a catch-up's would be.
#[tokio::test]
async fn a_live_message_past_a_gap_brings_the_gap() {
    let server = Server::spawn().await;
    let (ann_app, mut bob_app, bob, chat) = ann_and_bob_after_one_message(&server).await;
    ann_app.engine.send(&chat.id, "two").await.expect("sent");
    eventually("bob has two", || async {
        contents(&bob_app, &chat.id).await.len() == 2
    })
    .await;
    // Bob's cache loses "two", as if it had never come.
    lose_from_cache(&bob_app, &bob.id, &chat.id, 2).await;
    bob_app.events = bob_app.engine.subscribe();

    ann_app.engine.send(&chat.id, "three").await.expect("sent");
    eventually("bob has all three", || async {
        seqs(&bob_app, &chat.id).await == [Some(1), Some(2), Some(3)]
    })
    .await;
    // Notified once the gap is read: the newest of what was missed.
    next_notification(&mut bob_app, "the newest", |n| n.body == "three").await;
}

/// `app`'s cache (of `user_id`) loses message `seq` of `chat_id`, as if it
/// had never come.
async fn lose_from_cache(app: &App, user_id: &str, chat_id: &str, seq: i64) {
    let cache = natter_core::session::Files::new(&app.dir).cache(user_id);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", cache.display()))
        .await
        .expect("the cache");
    sqlx::query("DELETE FROM messages WHERE chat_id = ?1 AND seq = ?2")
        .bind(chat_id)
        .bind(seq)
        .execute(&pool)
        .await
        .expect("deleted");
    pool.close().await;
}

/// Ann behind a front with a one-to-one chat from Bob of two messages, the
/// second lost from her cache as if it had never come: the next live
/// message shows a gap.
async fn ann_with_a_gap() -> (AnnBehindAFront, ChatSummary) {
    let setup = ann_behind_a_front().await;
    let (ann_app, bob_app) = (&setup.ann_app, &setup.bob_app);
    let direct = bob_app
        .engine
        .open_direct(&setup.ann.id)
        .await
        .expect("chat");
    for text in ["one", "two"] {
        bob_app.engine.send(&direct.id, text).await.expect("sent");
    }
    eventually("ann has both", || async {
        seqs(ann_app, &direct.id).await == [Some(1), Some(2)]
    })
    .await;
    lose_from_cache(ann_app, &setup.ann.id, &direct.id, 2).await;
    (setup, direct)
}

/// A live message past a gap whose reading is answered with what is not
/// JSON (a proxy's page) is not taken for a frame not understood and
/// skipped, the message lost until the chat's next one: the link goes,
/// and the next one catches up, the gap and the message with it.
#[tokio::test]
async fn a_gap_answered_with_what_is_not_json_is_caught_up_on_the_next_link() {
    let (
        AnnBehindAFront {
            server: _server,
            front,
            ann_app,
            bob_app,
            ..
        },
        direct,
    ) = ann_with_a_gap().await;

    front.set(Cut::Answering(
        format!("GET /api/message/{}?", direct.id).into_bytes(),
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 15\r\nconnection: close\r\n\r\n<html>hi</html>",
    ));
    bob_app
        .engine
        .send(&direct.id, "three")
        .await
        .expect("sent");
    eventually("the gap asked for", || async { front.caught() > 0 }).await;
    front.set(Cut::Nothing);
    eventually("ann has all three", || async {
        seqs(&ann_app, &direct.id).await == [Some(1), Some(2), Some(3)]
    })
    .await;
}

/// The engine went from online to anything else.
fn link_dropped(event: &Event) -> bool {
    matches!(event, Event::Connection { state } if *state != ConnectionState::Online)
}

/// Waits until `app`'s outbox is empty: every send acked (read from its
/// cache, since a message delivered before its ack already shows as sent).
async fn outbox_emptied(app: &App, what: &str) {
    outbox_holds(app, what, &[]).await;
}

/// Waits until `app`'s outbox holds the sends `texts`, in order (read
/// from its cache, opened once for the wait).
async fn outbox_holds(app: &App, what: &str, texts: &[&str]) {
    let me = app.engine.me().await.expect("logged in");
    let cache = natter_core::session::Files::new(&app.dir).cache(&me.id);
    let cache = natter_core::cache::Cache::open(&cache)
        .await
        .expect("the cache");
    eventually(what, || async {
        let outbox = cache.outbox().await.expect("outbox");
        outbox
            .iter()
            .map(|outgoing| outgoing.content.as_str())
            .eq(texts.iter().copied())
    })
    .await;
}

/// Ann sends "two" while the server's database stays locked past the
/// server's patience, and waits for its answer: "try again", shown as the
/// message waiting, with the reason. Returns the lock, still held.
async fn a_send_refused_for_now(
    server: &Server,
    ann_app: &mut App,
    chat: &ChatSummary,
) -> sqlx::SqliteConnection {
    // From here on, a connection going other than online means the link dropped.
    online(ann_app).await;
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = ann_app.events.try_recv() {}
    let lock = natter_test_support::hold_write_lock(&server.data.path().join("natter.db")).await;
    ann_app.engine.send(&chat.id, "two").await.expect("written");
    // The server answers once its patience is over.
    let patience = natter_server::pipeline::SEND_PATIENCE + PATIENCE;
    let answer = next_event_within(ann_app, "the server's answer to the send", patience, |event| {
        matches!(event, Event::Message { message } if message.content == "two" && message.error.is_some())
            || link_dropped(event)
    })
    .await;
    let Event::Message { message } = answer else {
        panic!("the link dropped before the answer: {answer:?}")
    };
    assert_eq!(
        message.status,
        Delivery::Pending,
        "refused for now, not for good: {message:?}"
    );
    lock
}

/// A send the server cannot take for now is not failed: the app shows it
/// waiting with the reason, sends it again after a while on the same link,
/// and it is stored once.
#[tokio::test]
async fn a_send_the_server_cannot_take_for_now_waits_and_goes_again() {
    let server = Server::spawn().await;
    let (mut ann_app, bob_app, _, chat) = ann_and_bob_after_one_message(&server).await;
    let lock = a_send_refused_for_now(&server, &mut ann_app, &chat).await;
    drop(lock);

    let sent: Vec<(String, Delivery)> = ["one", "two"]
        .iter()
        .map(|t| (t.to_string(), Delivery::Sent))
        .collect();
    // Delivered before the refusal, it shows as sent all along; the ack
    // of the resend is what takes it out of the outbox.
    outbox_emptied(&ann_app, "ann's resend is acked").await;
    assert_eq!(contents(&ann_app, &chat.id).await, sent);
    assert_eq!(seqs(&ann_app, &chat.id).await, [Some(1), Some(2)]);
    // Sent again on the same link: it never went offline meanwhile.
    loop {
        match ann_app.events.try_recv() {
            Ok(event) => assert!(!link_dropped(&event), "the link dropped: {event:?}"),
            Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                panic!("{skipped} events went unread: the check cannot tell")
            }
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                break;
            }
        }
    }
    eventually("bob has it once", || async {
        seqs(&bob_app, &chat.id).await == [Some(1), Some(2)]
    })
    .await;
}

/// A message written while an earlier one of its chat waits to be sent
/// again goes after it, though the server could take it first: the chat
/// reads in the order written, for everyone.
#[tokio::test]
async fn a_message_written_while_one_waits_to_go_again_is_stored_after_it() {
    // The server holds one message delivered and not stored: while its
    // database is locked, the next is refused for now before it has a seq.
    let server = Server::spawn_with(|config| config.unstored_limit = 1).await;
    // "two" goes again a second or more after its refusal: sent at once,
    // "three" would be stored first.
    let slow = Backoff {
        min: Duration::from_secs(2),
        max: Duration::from_secs(4),
    };
    let mut ann_app = app_waiting(&server.url(), Trust::default(), slow).await;
    let bob_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    let chat = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    online(&ann_app).await;

    let lock = natter_test_support::hold_write_lock(&server.data.path().join("natter.db")).await;
    ann_app.engine.send(&chat.id, "one").await.expect("written");
    ann_app.engine.send(&chat.id, "two").await.expect("written");
    let refused = next_event(&mut ann_app, "\"two\" refused for now", |event| {
        matches!(event, Event::Message { message } if message.content == "two" && message.error.is_some())
    })
    .await;
    let Event::Message { message } = refused else {
        unreachable!("next_event returned only what was wanted")
    };
    assert_eq!(message.status, Delivery::Pending, "for now: {message:?}");
    // "one" is stored: the server could take another at once.
    drop(lock);
    outbox_holds(&ann_app, "\"one\" acked", &["two"]).await;
    ann_app
        .engine
        .send(&chat.id, "three")
        .await
        .expect("written");

    outbox_emptied(&ann_app, "both sent").await;
    let in_order = ["one", "two", "three"];
    assert_eq!(texts(&ann_app, &chat.id).await, in_order);
    assert_eq!(seqs(&ann_app, &chat.id).await, [Some(1), Some(2), Some(3)]);
    eventually("bob has them in the order written", || async {
        texts(&bob_app, &chat.id).await == in_order
    })
    .await;
}

/// The texts of a chat's newest page, as the app shows them.
async fn texts(app: &App, chat_id: &str) -> Vec<String> {
    let shown = contents(app, chat_id).await;
    shown.into_iter().map(|(content, _)| content).collect()
}

/// A message waiting to be sent again when the link drops is sent on the
/// next link, and shown so: the last server's reason no longer holds.
#[tokio::test]
async fn a_send_waiting_when_the_link_drops_is_shown_sending_on_the_next() {
    let mut server = Server::spawn().await;
    let (mut ann_app, _bob_app, _, chat) = ann_and_bob_after_one_message(&server).await;
    let lock = a_send_refused_for_now(&server, &mut ann_app, &chat).await;

    // The server stops (its sockets close first, then it stores what it
    // sequenced, which waits for the lock) and comes back.
    tokio::join!(server.stop(), async {
        next_event(&mut ann_app, "the link drops", link_dropped).await;
        drop(lock);
    });
    server.start().await;
    let shown = next_event(&mut ann_app, "\"two\" shown on the next link", shows("two")).await;
    let Event::Message { message } = shown else {
        unreachable!("next_event returned only what was wanted")
    };
    assert_eq!(
        (message.status, message.error),
        (Delivery::Pending, None),
        "being sent again, no longer waiting"
    );
    outbox_emptied(&ann_app, "ann's resend is acked").await;
    assert_eq!(seqs(&ann_app, &chat.id).await, [Some(1), Some(2)]);
}

/// What the chat list shows as a chat's last message, from Ann's side:
/// (content, status).
async fn last_listed(app: &App, chat_id: &str) -> Option<(String, Delivery)> {
    listed(app)
        .await
        .into_iter()
        .find(|chat| chat.id == chat_id)
        .and_then(|chat| chat.last_message)
        .map(|message| (message.content, message.status))
}

/// A message written offline is its chat's last message in the list at
/// once, waiting (the list is told, not only the open chat), and the stored
/// one once it is sent; a discarded one leaves the list as it was.
#[tokio::test]
async fn the_chat_list_shows_ones_unsent_message_until_it_is_stored() {
    let mut server = Server::spawn().await;
    let (mut ann_app, _bob_app, _, chat) = ann_and_bob_after_one_message(&server).await;
    eventually("ann's first is stored", || async {
        last_listed(&ann_app, &chat.id).await == Some(("one".to_owned(), Delivery::Sent))
    })
    .await;

    server.stop().await;
    offline(&ann_app).await;
    ann_app.events = ann_app.engine.subscribe();
    let pending = ann_app
        .engine
        .send(&chat.id, "two")
        .await
        .expect("kept in the outbox");
    let last = told_last(
        &mut ann_app,
        "the list with the unsent message",
        "two",
        Delivery::Pending,
    )
    .await;
    assert!(last.mine);
    ann_app
        .engine
        .discard(pending.client_id.as_deref().expect("a client id"))
        .await
        .expect("discarded");
    told_last(&mut ann_app, "the list without it", "one", Delivery::Sent).await;

    ann_app.engine.send(&chat.id, "three").await.expect("kept");
    assert_eq!(
        last_listed(&ann_app, &chat.id).await,
        Some(("three".to_owned(), Delivery::Pending))
    );
    server.start().await;
    told_last(
        &mut ann_app,
        "the list with it stored",
        "three",
        Delivery::Sent,
    )
    .await;
}

/// The next chat list told to `app` whose first chat's last message is
/// `content` with `status`; that message.
async fn told_last(app: &mut App, what: &str, content: &str, status: Delivery) -> MessageView {
    let told = next_event(app, what, |event| {
        matches!(event, Event::Chats(list) if list.chats.first().is_some_and(|listed| {
            listed.last_message.as_ref().is_some_and(|last| {
                last.content == content && last.status == status
            })
        }))
    })
    .await;
    let Event::Chats(list) = told else {
        unreachable!()
    };
    list.chats[0].last_message.clone().expect("a last message")
}

#[tokio::test]
async fn the_outbox_is_delivered_once_when_the_server_is_back_even_across_a_restart() {
    let mut server = Server::spawn().await;
    let ann_app = app(&server).await;
    let bob_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    let chat = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    ann_app.engine.send(&chat.id, "before").await.expect("sent");
    eventually("bob has it", || async {
        contents(&bob_app, &chat.id).await.len() == 1
    })
    .await;

    server.stop().await;
    offline(&ann_app).await;
    ann_app
        .engine
        .send(&chat.id, "written offline")
        .await
        .expect("kept in the outbox");
    assert_eq!(
        contents(&ann_app, &chat.id).await,
        [
            ("before".to_owned(), Delivery::Sent),
            ("written offline".to_owned(), Delivery::Pending)
        ]
    );
    assert_eq!(
        ann_app.engine.unsent().await.expect("counted"),
        1,
        "what a logout would delete"
    );

    // The app restarts while the server is still down: the pending message is still there.
    let ann_dir = ann_app.dir.clone();
    let _ann_temp = ann_app._temp;
    drop(ann_app.engine);
    let ann_app = reopen(&ann_dir).await;
    assert_eq!(
        contents(&ann_app, &chat.id).await,
        [
            ("before".to_owned(), Delivery::Sent),
            ("written offline".to_owned(), Delivery::Pending)
        ],
        "the cache and the outbox serve history with the server down"
    );
    let chats = listed(&ann_app).await;
    assert_eq!(chats.len(), 1);

    server.start().await;
    let sent = vec![
        ("before".to_owned(), Delivery::Sent),
        ("written offline".to_owned(), Delivery::Sent),
    ];
    eventually("the outbox is delivered", || async {
        contents(&ann_app, &chat.id).await == sent
    })
    .await;
    eventually("nothing left unsent", || async {
        ann_app.engine.unsent().await.expect("counted") == 0
    })
    .await;
    eventually("bob got it", || async {
        contents(&bob_app, &chat.id).await == sent
    })
    .await;
    // Exactly once on the server, whatever was retried: a new device of
    // Bob's reads the server's history.
    let device = app(&server).await;
    log_in(&device, "Bob").await;
    eventually("the server's history", || async {
        contents(&device, &chat.id).await == sent
    })
    .await;
    let seqs = seqs(&device, &chat.id).await;
    assert_eq!(seqs, [Some(1), Some(2)]);
}

#[tokio::test]
async fn older_pages_come_from_the_server_when_the_cache_runs_out() {
    let server = Server::spawn().await;
    let ann_app = app(&server).await;
    let bob_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    let chat = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    for n in 1..=120 {
        ann_app
            .engine
            .send(&chat.id, &format!("m{n}"))
            .await
            .expect("sent");
    }
    eventually("all acked", || async {
        let history = ann_app
            .engine
            .history(&chat.id, None)
            .await
            .expect("history");
        history.last().and_then(|m| m.seq) == Some(120)
    })
    .await;

    // A new device: only the newest page is fetched at first.
    let fresh = app(&server).await;
    log_in(&fresh, "Bob").await;
    eventually("the newest page", || async {
        fresh
            .engine
            .history(&chat.id, None)
            .await
            .is_ok_and(|h| h.last().and_then(|m| m.seq) == Some(120))
    })
    .await;
    // Ann types meanwhile: her old messages in the pages do not end it.
    online(&fresh).await;
    ann_app.engine.typing(&chat.id, true).await.expect("typing");
    eventually("bob sees ann typing", || async {
        typing_in(&fresh, &chat.id).await == ["Ann"]
    })
    .await;
    let mut before = fresh.engine.history(&chat.id, None).await.expect("history")[0].seq;
    let mut seen = 50;
    while let Some(seq) = before.filter(|seq| *seq > 1) {
        let page = fresh
            .engine
            .history(&chat.id, Some(seq))
            .await
            .expect("older page");
        assert_eq!(
            typing_in(&fresh, &chat.id).await,
            ["Ann"],
            "old messages end no one's typing"
        );
        let seqs: Vec<i64> = page.iter().filter_map(|m| m.seq).collect();
        let expected: Vec<i64> = ((seq - 50).max(1)..seq).collect();
        assert_eq!(seqs, expected, "the page just before {seq}");
        seen += seqs.len();
        before = page.first().and_then(|m| m.seq);
    }
    assert_eq!(seen, 120);
}

/// Leaving a group, or being removed from it, keeps it readable as it
/// was, as other messengers do: listed as left, its messages there from
/// the cache, nothing to send in it; deleting it takes it off this device
/// (a chat one is in cannot be). Added back, it is one's own again.
#[tokio::test]
async fn leaving_or_being_removed_keeps_the_chat_readable_until_deleted() {
    let server = Server::spawn().await;
    let ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let cid_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    let cid = sign_up(&cid_app, "Cid").await;
    online(&bob_app).await;
    online(&cid_app).await;
    let group = ann_app
        .engine
        .create_group("Team", &[bob.id.clone(), cid.id.clone()])
        .await
        .expect("group");
    assert_eq!(group.admin_id, ann_app.engine.me().await.map(|u| u.id));
    ann_app
        .engine
        .send(&group.id, "hello team")
        .await
        .expect("sent");
    for member in [&bob_app, &cid_app] {
        eventually("the group's message is there", || async {
            contents(member, &group.id).await.len() == 1
        })
        .await;
    }
    let refused = bob_app.engine.remove_member(&group.id, &cid.id).await;
    assert!(refused.is_err_and(|err| err.to_string().contains("admin")));
    let refused = bob_app.engine.delete_chat(&group.id).await;
    assert!(refused.is_err_and(|err| err.to_string().contains("no longer in")));

    ann_app
        .engine
        .remove_member(&group.id, &cid.id)
        .await
        .expect("removed");
    eventually("cid lists it as left", || async {
        listed(&cid_app)
            .await
            .iter()
            .any(|c| c.id == group.id && c.left)
    })
    .await;
    assert_eq!(
        contents(&cid_app, &group.id).await,
        [("hello team".to_owned(), Delivery::Sent)],
        "readable from the cache"
    );
    let refused = cid_app.engine.send(&group.id, "wait").await;
    assert!(refused.is_err_and(|err| err.to_string().contains("no longer in this group")));

    bob_app.engine.leave_group(&group.id).await.expect("left");
    let bobs = listed(&bob_app).await;
    assert!(bobs.iter().all(|c| c.id == group.id && c.left), "{bobs:?}");
    assert_eq!(bobs.len(), 1);
    eventually("ann sees only herself left", || async {
        ann_app
            .engine
            .chat(&group.id)
            .await
            .is_ok_and(|c| c.members.len() == 1 && !c.left)
    })
    .await;

    cid_app
        .engine
        .delete_chat(&group.id)
        .await
        .expect("deleted");
    assert!(listed(&cid_app).await.is_empty());

    // Bob added back: his again, with what was said while he was out,
    // and he can write.
    send_acked(&ann_app, &group.id, "while you were out").await;
    ann_app
        .engine
        .add_member(&group.id, &bob.id)
        .await
        .expect("added");
    eventually("bob lists it as his again", || async {
        listed(&bob_app)
            .await
            .iter()
            .any(|c| c.id == group.id && !c.left)
    })
    .await;
    eventually("bob has what was said while he was out", || async {
        let bobs: Vec<String> = contents(&bob_app, &group.id)
            .await
            .into_iter()
            .map(|(content, _)| content)
            .collect();
        bobs == ["hello team", "while you were out"]
    })
    .await;
    bob_app.engine.send(&group.id, "back").await.expect("sent");
    eventually("ann has bob's", || async {
        contents(&ann_app, &group.id)
            .await
            .iter()
            .any(|(content, _)| content == "back")
    })
    .await;
}

/// What the user was writing in a chat is kept in the cache: there after a
/// restart, the last text asked for a chat is the one kept whatever order
/// the writes run in (the shell spawns each), and it goes with its chat
/// (left) and with the cache at logout. A chat the cache does not hold
/// takes none.
#[tokio::test]
async fn drafts_outlast_a_restart_and_go_with_their_chat() {
    let server = Server::spawn().await;
    let ann_app = app(&server).await;
    let bob_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    let direct = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    let group = ann_app
        .engine
        .create_group("Team", std::slice::from_ref(&bob.id))
        .await
        .expect("group");
    let earlier = ann_app.engine.set_draft(direct.id.clone(), "half".into());
    let later = ann_app
        .engine
        .set_draft(direct.id.clone(), "half a thought".into());
    later.await.expect("kept");
    earlier.await.expect("kept");
    ann_app
        .engine
        .set_draft(group.id.clone(), "for the team".into())
        .await
        .expect("kept");
    let refused = ann_app
        .engine
        .set_draft("no-such-chat".into(), "lost".into())
        .await;
    assert!(refused.is_err_and(|err| err.to_string().contains("no such chat")));

    let ann_dir = ann_app.dir.clone();
    let _ann_temp = ann_app._temp;
    drop(ann_app.engine);
    let ann_app = reopen(&ann_dir).await;
    let drafts = |pairs: &[(&String, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(chat, text)| ((*chat).clone(), (*text).to_owned()))
            .collect()
    };
    assert_eq!(
        ann_app.engine.drafts().await.expect("drafts"),
        drafts(&[(&direct.id, "half a thought"), (&group.id, "for the team")])
    );

    ann_app.engine.leave_group(&group.id).await.expect("left");
    assert_eq!(
        ann_app.engine.drafts().await.expect("drafts"),
        drafts(&[(&direct.id, "half a thought")])
    );
    ann_app
        .engine
        .set_draft(direct.id.clone(), String::new())
        .await
        .expect("emptied");
    assert_eq!(ann_app.engine.drafts().await.expect("drafts"), drafts(&[]));

    ann_app
        .engine
        .set_draft(direct.id.clone(), "before logging out".into())
        .await
        .expect("kept");
    ann_app.engine.logout().await.expect("logged out");
    assert!(
        ann_app.engine.drafts().await.is_err(),
        "no session, no drafts"
    );
    log_in(&ann_app, "Ann").await;
    assert_eq!(ann_app.engine.drafts().await.expect("drafts"), drafts(&[]));
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server_forgets_the_cache_and_a_refused_token_ends_it() {
    let mut server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    online(&ann_app).await;
    let cache = ann_app.dir.join(format!("cache-{}.sqlite", ann.id));
    assert!(cache.exists());
    let bob_app = app(&server).await;
    let bob = sign_up(&bob_app, "Bob").await;
    ann_app.engine.open_direct(&bob.id).await.expect("chat");
    let before = ann_app.engine.chats().await.expect("chats");
    assert_eq!(before.chats.len(), 1);
    // Events from here on: the lists before the chat was opened were empty too.
    ann_app.events = ann_app.engine.subscribe();
    let (token, _) = saved_token(&ann_app);
    ann_app.engine.logout().await.expect("logout");
    // The server hears (told in the background): a copy of the token is
    // worth nothing then.
    eventually("the server to refuse the logged-out token", || async {
        reqwest::Client::new()
            .get(format!("{}/api/chat", server.url()))
            .bearer_auth(&token)
            .send()
            .await
            .is_ok_and(|answer| answer.status() == reqwest::StatusCode::UNAUTHORIZED)
    })
    .await;
    // The emptied list (the only empty one: her session's lists now hold
    // the chat) is numbered after every list of the session: the UI shows
    // the highest number it has seen.
    let Event::Chats(emptied) = next_event(
        &mut ann_app,
        "the emptied list",
        |event| matches!(event, Event::Chats(list) if list.chats.is_empty()),
    )
    .await
    else {
        unreachable!("next_event returns a matching event")
    };
    assert!(emptied.version > before.version);
    assert!(ann_app.engine.me().await.is_none());
    assert!(!cache.exists() && !ann_app.dir.join("session.json").exists());
    // What a restart would resume from (a second engine cannot open the
    // folder while this one runs).
    assert!(
        natter_core::session::Files::new(&ann_app.dir)
            .session()
            .is_none(),
        "a restart does not log back in"
    );

    // Logged in again; the server then changes its signing secret: the
    // session is over, and the app says so and logs out.
    log_in(&ann_app, "Ann").await;
    online(&ann_app).await;
    let relisted = ann_app.engine.chats().await.expect("chats").version;
    assert!(
        relisted > emptied.version,
        "a new login's lists are newer than the last one's"
    );
    server.stop().await;
    ends_the_session(&mut server, &mut ann_app).await;
    assert!(!ann_app.dir.join("session.json").exists());

    // Wrong passwords and a bad address are clear errors.
    let wrong = ann_app
        .engine
        .login(&email_of("Ann"), "not the password")
        .await;
    assert_eq!(
        wrong.err().map(|e| e.to_string()).as_deref(),
        Some("wrong email or password")
    );
    assert!(ann_app.engine.set_server_url("ftp://example.org").is_err());
    ann_app
        .engine
        .set_server_url("127.0.0.1:9")
        .expect("address");
    let unreachable = ann_app.engine.login(&email_of("Ann"), "x").await;
    assert!(matches!(
        unreachable,
        Err(natter_core::CoreError::Unreachable { .. })
    ));
}

/// Starts the stopped `server` again with another signing secret: `app`'s
/// session ends (`SessionEnded`) and it is logged out.
async fn ends_the_session(server: &mut Server, app: &mut App) {
    server.secret = "another-secret-0123456789abcdefghijklmn".into();
    server.start().await;
    next_event(app, "session ended", |e| {
        matches!(e, Event::SessionEnded { .. })
    })
    .await;
    eventually("logged out", || async { app.engine.me().await.is_none() }).await;
}

/// A message written offline outlives a session the server ends before it
/// could go (here the server's signing secret changed while the app was
/// away; a token expired in a closed app is the same): the cache goes with
/// the session, and the message goes at the next login.
#[tokio::test]
async fn an_unsent_message_outlives_a_session_the_server_ended_and_goes_at_the_next_login() {
    unsent_messages_outlive_an_ended_session(SetAside::Works).await;
}

/// When they cannot be set aside in a file of their own (a full disk; here
/// a folder stands in the file's way), the cache stays, with them in its
/// outbox, and they go at the next login all the same.
#[tokio::test]
async fn unsent_messages_that_cannot_be_set_aside_stay_in_the_cache_for_the_next_login() {
    unsent_messages_outlive_an_ended_session(SetAside::Fails).await;
}

/// A cache kept so is not left readable while another user uses the app:
/// their login sets its unsent messages aside (the disk has room again)
/// and deletes it, and the messages go at its own user's next login.
#[tokio::test]
async fn a_cache_kept_for_its_unsent_messages_goes_when_another_user_logs_in() {
    unsent_messages_outlive_an_ended_session(SetAside::FailsThenAnotherLogsIn).await;
}

/// Whether a session's unsent messages can be set aside when the server
/// ends it, and who logs in next.
#[derive(PartialEq)]
enum SetAside {
    Works,
    Fails,
    FailsThenAnotherLogsIn,
}

async fn unsent_messages_outlive_an_ended_session(set_aside: SetAside) {
    let set_aside_fails = set_aside != SetAside::Works;
    let mut server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    let chat = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    online(&ann_app).await;

    server.stop().await;
    offline(&ann_app).await;
    for text in ["written offline", "and another"] {
        ann_app
            .engine
            .send(&chat.id, text)
            .await
            .expect("kept in the outbox");
    }
    if set_aside_fails {
        std::fs::create_dir(ann_app.dir.join(format!("unsent-{}.json", ann.id)))
            .expect("a folder in the way");
    }
    ends_the_session(&mut server, &mut ann_app).await;
    let files = natter_core::session::Files::new(&ann_app.dir);
    let kept_aside = if set_aside_fails { 0 } else { 2 };
    assert_eq!(
        files.unsent(&ann.id).len(),
        kept_aside,
        "kept for the next login"
    );
    // Why, for a login screen that was not listening yet.
    assert!(ann_app.engine.session_ended().is_some());

    if set_aside == SetAside::FailsThenAnotherLogsIn {
        let anns_cache = ann_app.dir.join(format!("cache-{}.sqlite", ann.id));
        assert!(anns_cache.exists(), "kept, with her messages");
        std::fs::remove_dir(ann_app.dir.join(format!("unsent-{}.json", ann.id)))
            .expect("room again");
        log_in(&ann_app, "Bob").await;
        assert!(!anns_cache.exists(), "not left for Bob to read");
        assert_eq!(files.unsent(&ann.id).len(), 2, "set aside for her");
        ann_app.engine.logout().await.expect("Bob logs out");
    }
    log_in(&ann_app, "Ann").await;
    let sent = vec![
        ("written offline".to_owned(), Delivery::Sent),
        ("and another".to_owned(), Delivery::Sent),
    ];
    // Bob's session ended too (the same secret): a device of his logged
    // in now reads the server's history.
    let device = app(&server).await;
    log_in(&device, "Bob").await;
    eventually("the server has both, in order", || async {
        contents(&device, &chat.id).await == sent
    })
    .await;
    eventually("ann shows both sent", || async {
        contents(&ann_app, &chat.id).await == sent
    })
    .await;

    assert!(
        files.unsent(&ann.id).is_empty(),
        "back in the outbox, then sent"
    );
    assert_eq!(ann_app.engine.session_ended(), None, "a new session");
}

/// A saved login whose cache cannot be opened (a folder stands in the
/// cache file's way, as a full disk would fail it) does not keep the app
/// from starting: it opens at the login screen, which says why, and a
/// login works once the way is clear.
#[tokio::test]
async fn a_saved_login_that_cannot_be_resumed_opens_at_the_login_screen_saying_why() {
    let server = Server::spawn().await;
    let ann_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    let (dir, temp) = (ann_app.dir.clone(), ann_app._temp);
    drop(ann_app.engine);
    let cache = dir.join(format!("cache-{}.sqlite", ann.id));
    std::fs::remove_file(&cache).expect("the cache gone");
    std::fs::create_dir(&cache).expect("a folder in its way");

    let ann_app = reopen(&dir).await;
    let _keep = temp;
    assert!(ann_app.engine.me().await.is_none(), "at the login screen");
    let why = ann_app.engine.session_ended().expect("a reason");
    assert!(
        why.starts_with("the saved login could not be resumed"),
        "{why}"
    );

    std::fs::remove_dir(&cache).expect("the way clear");
    log_in(&ann_app, "Ann").await;
    assert_eq!(ann_app.engine.me().await.map(|me| me.id), Some(ann.id));
    assert_eq!(ann_app.engine.session_ended(), None);
}

/// One copy of the app per data folder: a second, started while the first
/// runs (in the tray, say), is refused with the reason, and may start once
/// the first has stopped.
#[tokio::test]
async fn a_second_engine_on_the_same_folder_is_refused_until_the_first_stops() {
    let temp = tempfile::tempdir().expect("temp dir");
    let first = open(temp.path(), Trust::default()).await;
    let second = Engine::open(temp.path(), EngineOptions::default()).await;
    let Err(err) = second else {
        panic!("a second engine opened the same folder")
    };
    assert!(
        err.to_string().starts_with("Natter is already running"),
        "{err}"
    );
    drop(first);
    let again = Engine::open(temp.path(), EngineOptions::default()).await;
    assert!(again.is_ok(), "the folder is free once the first stopped");
}

/// A logout whose files cannot be deleted still ends the session, tells
/// the UI so, and says what is left.
#[tokio::test]
async fn a_logout_that_cannot_delete_the_session_file_ends_the_session_and_says_so() {
    let server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    online(&ann_app).await;
    // A directory where the session file was: deleting it fails (as root too).
    let session = ann_app.dir.join("session.json");
    std::fs::remove_file(&session).expect("session file");
    std::fs::create_dir_all(session.join("in-the-way")).expect("a directory instead");
    ann_app.events = ann_app.engine.subscribe();
    let err = ann_app.engine.logout().await.expect_err("the file stays");
    assert!(!err.to_string().is_empty());
    assert!(ann_app.engine.me().await.is_none(), "the session is over");
    next_event(&mut ann_app, "offline", |event| {
        matches!(
            event,
            Event::Connection {
                state: ConnectionState::Offline
            }
        )
    })
    .await;
    next_event(
        &mut ann_app,
        "the emptied list",
        |event| matches!(event, Event::Chats(list) if list.chats.is_empty()),
    )
    .await;
}

/// A reply from another device of one's own means the chat was read
/// there: live, its unread count clears here and its notifications close;
/// caught up after being away, what came before the reply is no news.
#[tokio::test]
async fn a_reply_from_another_device_reads_the_chat_here_too() {
    let server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    sign_up(&bob_app, "Bob").await;
    let chat = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    online(&ann_app).await;
    let phone = app(&server).await;
    log_in(&phone, "Ann").await;
    eventually("her phone has the chat", || async {
        phone.engine.chat(&chat.id).await.is_ok()
    })
    .await;
    let unread = async |app: &App| app.engine.chat(&chat.id).await.expect("chat").unread;

    bob_app
        .engine
        .send(&chat.id, "are you there?")
        .await
        .expect("sent");
    eventually("counted unread", || async { unread(&ann_app).await == 1 }).await;
    phone
        .engine
        .send(&chat.id, "yes, on my phone")
        .await
        .expect("sent");
    next_event(
        &mut ann_app,
        "the chat read",
        |event| matches!(event, Event::ChatRead { chat_id } if *chat_id == chat.id),
    )
    .await;
    assert_eq!(unread(&ann_app).await, 0);

    // Away while Bob writes and she answers on her phone.
    let (dir, temp) = (ann_app.dir.clone(), ann_app._temp);
    drop(ann_app.engine);
    bob_app
        .engine
        .send(&chat.id, "and now?")
        .await
        .expect("sent");
    phone
        .engine
        .send(&chat.id, "still here")
        .await
        .expect("sent");
    eventually("her phone has both", || async {
        contents(&phone, &chat.id).await.len() == 4
    })
    .await;
    let mut ann_app = reopen(&dir).await;
    let _keep = temp;
    let notified = loop {
        match next_event(&mut ann_app, "caught up", |event| {
            matches!(
                event,
                Event::Notify { .. }
                    | Event::Connection {
                        state: ConnectionState::Online
                    }
            )
        })
        .await
        {
            Event::Notify { notification } if notification.chat_id == chat.id => break true,
            Event::Notify { .. } => {}
            _ => break false,
        }
    };
    assert!(!notified, "what came before her reply is no news");
    assert_eq!(unread(&ann_app).await, 0);
}

/// Removed from a group while away, with a message to it waiting in the
/// outbox: the next catch-up finds the chat gone from the server's list
/// and keeps it as left (as when removed online), and the unsent message
/// is not dropped without a word: a notification says it was not sent.
#[tokio::test]
async fn an_unsent_message_to_a_group_one_was_removed_from_is_reported() {
    let mut server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let carol_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    sign_up(&bob_app, "Bob").await;
    let carol = sign_up(&carol_app, "Carol").await;
    let group = bob_app
        .engine
        .create_group("Crew", &[ann.id.clone(), carol.id.clone()])
        .await
        .expect("group");
    eventually("ann has the group", || async {
        ann_app.engine.chat(&group.id).await.is_ok()
    })
    .await;
    online(&ann_app).await;

    server.stop().await;
    offline(&ann_app).await;
    ann_app
        .engine
        .send(&group.id, "written offline")
        .await
        .expect("kept in the outbox");
    // Bob removes her meanwhile (in the server's store while it is down, so
    // that her app cannot hear of it before it sends).
    {
        let store = natter_server::store::SqliteStore::open(server.data.path())
            .await
            .expect("the server's store");
        natter_server::store::Store::remove_member(&store, &group.id, &ann.id, None)
            .await
            .expect("removed");
    }
    server.start().await;

    // A chat view open on it shows it not sent, and then a notification says so.
    next_event(&mut ann_app, "the message shown as not sent", |event| {
        matches!(event, Event::Message { message }
            if message.content == "written offline" && message.status == Delivery::Failed)
    })
    .await;
    let notification = next_notification(&mut ann_app, "the unsent message reported", |n| {
        n.chat_id == group.id
    })
    .await;
    assert_eq!(notification.title, "Crew");
    assert_eq!(
        notification.body,
        "Not sent, you are no longer in this group: \u{201c}written offline\u{201d}"
    );
    let chats = listed(&ann_app).await;
    assert!(
        chats.iter().any(|chat| chat.id == group.id && chat.left),
        "kept, as left: {chats:?}"
    );
    // And in the chat it shows as not sent, and why, until she discards it.
    let shown = ann_app
        .engine
        .history(&group.id, None)
        .await
        .expect("the chat read");
    let not_sent: Vec<_> = shown
        .iter()
        .filter(|m| m.content == "written offline")
        .map(|m| (m.status, m.error.as_deref()))
        .collect();
    assert_eq!(
        not_sent,
        [(Delivery::Failed, Some("you are no longer in this group"))]
    );
    let bobs = bob_app
        .engine
        .history(&group.id, None)
        .await
        .expect("history");
    assert!(bobs.iter().all(|m| m.content != "written offline"));
}

/// A burst of messages (a busy chat) reaches the UI as every message but far
/// fewer chat lists: the list is sent at most every 50 ms, and the last one
/// counts them all.
#[tokio::test]
async fn a_burst_of_messages_sends_fewer_chat_lists_and_notifications_and_the_last_count_all() {
    const MESSAGES: u32 = 200;
    let server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    sign_up(&bob_app, "Bob").await;
    online(&ann_app).await;
    online(&bob_app).await;
    let chat = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    next_event(
        &mut ann_app,
        "the chat on Ann's list",
        |event| matches!(event, Event::Chats(list) if list.chats.iter().any(|c| c.id == chat.id)),
    )
    .await;

    // Every notification of the burst is emitted between here and the end
    // of the wait below: that span bounds how many the rule allows. (Times
    // taken when this side reads each one would not: a reader running late
    // sees them closer together than they were sent.)
    let burst_started = Instant::now();
    for n in 0..MESSAGES {
        bob_app
            .engine
            .send(&chat.id, &format!("burst {n}"))
            .await
            .expect("sent");
    }
    let last_body = format!("burst {}", MESSAGES - 1);
    let (mut lists, mut messages, mut notified) = (0, 0, Vec::new());
    let (mut all_counted, mut last_notified) = (false, false);
    tokio::time::timeout(PATIENCE, async {
        while !(all_counted && last_notified) {
            match ann_app.events.recv().await.expect("no event missed") {
                Event::Message { message } if message.chat_id == chat.id => messages += 1,
                Event::Chats(list) => {
                    lists += 1;
                    all_counted = list.unread_total == MESSAGES;
                }
                Event::Notify { notification } => {
                    last_notified = notification.body == last_body;
                    notified.push(notification);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("a chat list counting every message, and the last message notified");
    assert_eq!(messages, MESSAGES, "every message told");
    assert!(
        lists < MESSAGES,
        "{lists} chat lists for {MESSAGES} messages"
    );
    // The first at once, then at most one per NOTICE_EVERY.
    let span = burst_started.elapsed();
    let most = 1.0 + span.as_secs_f64() / NOTICE_EVERY.as_secs_f64();
    assert!(
        (notified.len() as f64) <= most && notified.len() < MESSAGES as usize / 2,
        "a burst is a few notifications, not one per message: {} in {span:?}",
        notified.len(),
    );
    let first = notified.first().expect("notified");
    let last = notified.last().expect("notified");
    assert_eq!(first.body, "burst 0", "the first notifies at once");
    assert_eq!(last.title, format!("Bob ({MESSAGES} new messages)"));
    println!(
        "{MESSAGES} messages, {lists} chat lists, {} notifications",
        notified.len()
    );
}

/// A TLS terminator in front of a server, as a reverse proxy is in a
/// deployment: tokio-rustls with a certificate for 127.0.0.1 signed by a CA
/// of this test's own, passing every connection through to the server.
struct TlsFront {
    url: String,
    ca_pem: String,
    /// Handshakes completed: connections that really went over TLS.
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TlsFront {
    async fn start(backend: SocketAddr) -> TlsFront {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Natter test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let url = format!("https://{}", listener.local_addr().expect("address"));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            url,
            ca_pem: ca.pem(),
            handshakes,
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn an_https_server_is_used_over_tls_when_its_ca_is_trusted_and_refused_when_not() {
    let server = Server::spawn().await;
    let front = TlsFront::start(server.addr).await;
    let trust = Trust::with_pem(front.ca_pem.as_bytes()).expect("the test's CA");
    let ann_app = app_at(&front.url, trust.clone()).await;
    let mut bob_app = app_at(&front.url, trust).await;
    sign_up(&ann_app, "Ann").await;
    let bob = sign_up(&bob_app, "Bob").await;
    // Both sockets up: wss through the same front.
    online(&ann_app).await;
    online(&bob_app).await;
    let chat = ann_app.engine.open_direct(&bob.id).await.expect("chat");
    ann_app
        .engine
        .send(&chat.id, "over TLS")
        .await
        .expect("sent");
    next_event(&mut bob_app, "the message, over wss", shows("over TLS")).await;
    let handshakes = front.handshakes.load(Ordering::SeqCst);
    assert!(
        handshakes >= 4,
        "the API and the socket of both apps over TLS: {handshakes} handshakes"
    );

    // The system's roots alone do not know the test's CA.
    let stranger = app_at(&front.url, Trust::default()).await;
    let refused = refused_login(&stranger).await;
    assert!(refused.contains("certificate"), "says why: {refused}");
}

/// An http address whose server sends every request on to https, as a
/// reverse proxy in front of a TLS-only deployment does.
async fn redirecting_to_https() -> (String, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 301 Moved Permanently\r\n\
                     Location: https://chat.example.org/api/login\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_server_address_that_redirects_says_where_to_instead() {
    let (url, redirector) = redirecting_to_https().await;
    let app = app_at(&url, Trust::default()).await;
    let refused = refused_login(&app).await;
    assert!(
        refused.contains("on to https://chat.example.org: enter that"),
        "names the address to use: {refused}"
    );
    redirector.abort();
}

/// A chat started while the app was away, and one that was empty then: what
/// they hold was not seen, so it counts as unread and notifies, as what a
/// known chat missed does. On a new login the same history is the past.
#[tokio::test]
async fn chats_started_or_first_written_while_away_count_as_unread_and_notify() {
    let server = Server::spawn().await;
    let ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    sign_up(&bob_app, "Bob").await;
    online(&ann_app).await;
    let direct = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    eventually("ann lists the empty chat", || async {
        listed(&ann_app)
            .await
            .iter()
            .any(|chat| chat.id == direct.id)
    })
    .await;

    // Ann's app is closed; Bob writes in the empty chat and starts a group.
    let ann_dir = ann_app.dir.clone();
    let _ann_temp = ann_app._temp;
    drop(ann_app.engine);
    bob_app.engine.send(&direct.id, "hi").await.expect("sent");
    let group = bob_app
        .engine
        .create_group("Plans", std::slice::from_ref(&ann.id))
        .await
        .expect("group");
    bob_app
        .engine
        .send(&group.id, "tomorrow?")
        .await
        .expect("sent");
    eventually("bob's messages are acked", || async {
        let mut all = contents(&bob_app, &direct.id).await;
        all.extend(contents(&bob_app, &group.id).await);
        all.len() == 2 && all.iter().all(|(_, d)| *d == Delivery::Sent)
    })
    .await;

    let mut ann_app = reopen(&ann_dir).await;
    let mut told = std::collections::HashMap::new();
    while told.len() < 2 {
        let notification = next_notification(&mut ann_app, "both chats told", |_| true).await;
        told.insert(notification.chat_id, notification.body);
    }
    assert_eq!(told[&direct.id], "hi");
    assert_eq!(told[&group.id], "Bob: tomorrow?");
    assert_eq!(ann_app.engine.unread_total().await.expect("unread"), 2);

    // Ann logs in on another computer: the history is there, all read.
    let elsewhere = app(&server).await;
    log_in(&elsewhere, "Ann").await;
    eventually("the other computer has both chats' messages", || async {
        contents(&elsewhere, &direct.id).await.len() == 1
            && contents(&elsewhere, &group.id).await.len() == 1
    })
    .await;
    online(&elsewhere).await;
    assert_eq!(elsewhere.engine.unread_total().await.expect("unread"), 0);
}

/// Ann (through a `FaultyFront`, online) and Bob, and a group Bob started
/// with Cid and wrote "before you came" in, acked, before he added Ann:
/// she lists it, and holds none of its messages.
struct OldGroup {
    _server: Server,
    front: FaultyFront,
    ann_app: App,
    bob_app: App,
    _cid_app: App,
    ann: natter_shared::User,
    group: ChatSummary,
}

/// Ann's app reaches the server through a front the test can cut
/// (`FaultyFront`), Bob's directly; both signed up, Ann online.
struct AnnBehindAFront {
    server: Server,
    front: FaultyFront,
    ann_app: App,
    bob_app: App,
    ann: natter_shared::User,
}

async fn ann_behind_a_front() -> AnnBehindAFront {
    let server = Server::spawn().await;
    let front = FaultyFront::start(server.addr).await;
    let ann_app = app_at(&front.url, Trust::default()).await;
    let bob_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    sign_up(&bob_app, "Bob").await;
    online(&ann_app).await;
    AnnBehindAFront {
        server,
        front,
        ann_app,
        bob_app,
        ann,
    }
}

/// A chat read while a catch-up ran (opened, then left for another) does
/// not notify what the catch-up found in it: the user has seen it.
#[tokio::test]
async fn a_chat_read_while_a_catch_up_runs_is_not_notified_after_it() {
    let AnnBehindAFront {
        server,
        front,
        mut ann_app,
        bob_app,
        ann,
    } = ann_behind_a_front().await;
    let carol_app = app(&server).await;
    sign_up(&carol_app, "Carol").await;
    let with_bob = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    let with_carol = carol_app.engine.open_direct(&ann.id).await.expect("chat");
    send_acked(&carol_app, &with_carol.id, "hello from carol").await;
    send_acked(&bob_app, &with_bob.id, "hello from bob").await;
    // Both notified (not only cached): none of that is still on its way.
    let mut hellos = Vec::new();
    while hellos.len() < 2 {
        let hello = next_notification(&mut ann_app, "the hellos", |notification| {
            notification.body.starts_with("hello from")
        });
        hellos.push(hello.await.body);
    }
    // Both read: what comes next notifies at once, not a second after.
    ann_app.engine.set_focused(true).await.expect("focused");
    for chat in [&with_bob, &with_carol] {
        let active = ann_app.engine.set_active_chat(Some(chat.id.clone()));
        active.await.expect("active");
    }
    ann_app.engine.set_active_chat(None).await.expect("none");
    front.set(Cut::Everything);
    offline(&ann_app).await;
    // Bob's chat is the most recent: the catch-up reads it first, then
    // Carol's, whose page is held.
    send_acked(&carol_app, &with_carol.id, "news from carol").await;
    send_acked(&bob_app, &with_bob.id, "news from bob").await;
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = ann_app.events.try_recv() {}
    let carols_page = format!("GET /api/message/{}?", with_carol.id);
    front.set(Cut::Holding(carols_page.into_bytes()));
    eventually("bob's news read, carol's page held", || async {
        front.caught() > 0 && contents(&ann_app, &with_bob.id).await.len() == 2
    })
    .await;
    // Ann opens Bob's chat, reads it, and goes on to none.
    ann_app
        .engine
        .set_active_chat(Some(with_bob.id.clone()))
        .await
        .expect("active");
    ann_app.engine.set_active_chat(None).await.expect("none");

    front.set(Cut::Nothing);
    let mut notified = Vec::new();
    loop {
        let event = next_event(&mut ann_app, "the catch-up's end", |event| {
            matches!(event, Event::Notify { .. } | Event::Connection { .. })
        })
        .await;
        match event {
            Event::Notify { notification } => notified.push(notification.body),
            Event::Connection {
                state: ConnectionState::Online,
            } => break,
            _ => {}
        }
    }
    assert_eq!(notified, ["news from carol"], "bob's chat was read");
}

/// A picture answered with what is not an image (a captive portal's page
/// called a PNG, say) is neither shown nor kept; once the real one comes,
/// it is.
#[tokio::test]
async fn a_picture_answered_with_what_is_not_an_image_is_refused_and_not_kept() {
    let AnnBehindAFront {
        server,
        front,
        ann_app,
        ..
    } = ann_behind_a_front().await;
    let carol_app = app(&server).await;
    let carol = sign_up_with_a_picture(&carol_app, "Carol").await;
    let pic = carol.pic.expect("a picture");
    front.set(Cut::Answering(b"GET /api/pic/".to_vec(), PORTAL_PAGE));
    let refused = ann_app.engine.picture(&pic).await;
    assert!(refused.is_err(), "shown: {refused:?}");
    let kept = ann_app.dir.join("pics");
    assert_eq!(files_in(&kept), 0, "nothing kept");

    front.set(Cut::Nothing);
    let (bytes, kind) = ann_app.engine.picture(&pic).await.expect("the picture");
    assert_eq!(kind, "image/png");
    assert_eq!(
        bytes,
        std::fs::read(fixture("avatar.png")).expect("fixture")
    );
    assert_eq!(files_in(&kept), 1);
}

/// A server (or a proxy's cache) that answers a catch-up's page with the
/// same full page again, however far the app has read, does not keep the
/// app asking for it for ever, offline: a page that does not move past the
/// last one ends the chat's catch-up.
#[tokio::test]
async fn a_catch_up_page_that_does_not_move_on_is_not_asked_for_again() {
    let AnnBehindAFront {
        server: _server,
        front,
        ann_app,
        bob_app,
        ann,
    } = ann_behind_a_front().await;
    let chat = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    send_acked(&bob_app, &chat.id, "one").await;
    eventually("ann has it", || async {
        contents(&ann_app, &chat.id).await.len() == 1
    })
    .await;
    front.set(Cut::Everything);
    offline(&ann_app).await;
    send_acked(&bob_app, &chat.id, "two").await;

    // Whatever is asked, a full page (200) from seq 2 on.
    let bob = bob_app.engine.me().await.expect("bob");
    let page: Vec<natter_shared::Message> = (2..202)
        .map(|seq| natter_shared::Message {
            id: format!("page-{seq}"),
            chat_id: chat.id.clone(),
            seq,
            sender: bob.clone(),
            content: format!("page {seq}"),
            client_id: None,
            created_at: chrono::Utc::now(),
        })
        .collect();
    let body = serde_json::to_string(&page).expect("a page");
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let needle = format!("GET /api/message/{}?limit=200&after=", chat.id);
    front.set(Cut::Answering(
        needle.into_bytes(),
        Box::leak(answer.into_boxed_str()).as_bytes(),
    ));
    online(&ann_app).await;
    assert_eq!(front.caught(), 2, "the page, then the same page once");
}

/// Added back to a group whose history then fails to come (its page
/// answered 500): the group is left behind and read once it can be, as a
/// gap that fails is, and the link stays up.
#[tokio::test]
async fn a_group_one_is_added_back_to_whose_history_fails_is_left_behind_with_the_link_up() {
    let AnnBehindAFront {
        server: _server,
        front,
        mut ann_app,
        bob_app,
        ann,
    } = ann_behind_a_front().await;
    online(&bob_app).await;
    let group = bob_app
        .engine
        .create_group("Team", std::slice::from_ref(&ann.id))
        .await
        .expect("group");
    send_acked(&bob_app, &group.id, "before").await;
    eventually("ann has it", || async {
        contents(&ann_app, &group.id).await.len() == 1
    })
    .await;
    ann_app.engine.leave_group(&group.id).await.expect("left");
    send_acked(&bob_app, &group.id, "while you were out").await;

    let mut watching = ann_app.engine.subscribe();
    ann_app.events = ann_app.engine.subscribe();
    front.set(Cut::Breaking(
        format!("GET /api/message/{}?", group.id).into_bytes(),
    ));
    bob_app
        .engine
        .add_member(&group.id, &ann.id)
        .await
        .expect("added back");
    next_event(&mut ann_app, "the list shows the group behind", |event| {
        matches!(event, Event::Chats(list) if list.chats.iter().any(|chat| chat.id == group.id && chat.behind))
    })
    .await;
    front.set(Cut::Nothing);
    eventually("what was said meanwhile, once read", || async {
        contents(&ann_app, &group.id)
            .await
            .iter()
            .any(|(text, _)| text == "while you were out")
    })
    .await;
    eventually("the group no longer shown behind", || async {
        behind(&ann_app).await.is_empty()
    })
    .await;
    while let Ok(event) = watching.try_recv() {
        assert!(!link_dropped(&event), "the link stayed up: {event:?}");
    }
}

async fn ann_added_to_an_old_group() -> OldGroup {
    let AnnBehindAFront {
        server,
        front,
        ann_app,
        bob_app,
        ann,
    } = ann_behind_a_front().await;
    let cid_app = app(&server).await;
    let cid = sign_up(&cid_app, "Cid").await;
    let group = bob_app
        .engine
        .create_group("Old hands", std::slice::from_ref(&cid.id))
        .await
        .expect("group");
    bob_app
        .engine
        .send(&group.id, "before you came")
        .await
        .expect("sent");
    eventually("bob's message is acked", || async {
        contents(&bob_app, &group.id).await == [("before you came".to_owned(), Delivery::Sent)]
    })
    .await;
    bob_app
        .engine
        .add_member(&group.id, &ann.id)
        .await
        .expect("added");
    eventually("ann lists the group", || async {
        listed(&ann_app)
            .await
            .iter()
            .any(|chat| chat.id == group.id)
    })
    .await;
    OldGroup {
        _server: server,
        front,
        ann_app,
        bob_app,
        _cid_app: cid_app,
        ann,
        group,
    }
}

/// Being added to a group while online: its history is not news, also when
/// a later catch-up is the first to read it (nothing of it was cached).
#[tokio::test]
async fn a_group_one_is_added_to_while_online_brings_no_old_messages_as_unread() {
    let OldGroup {
        _server,
        front,
        ann_app,
        group,
        ..
    } = ann_added_to_an_old_group().await;

    // Ann's link drops and comes back: catch-up reads the group's newest page.
    front.set(Cut::Everything);
    offline(&ann_app).await;
    front.set(Cut::Nothing);
    online(&ann_app).await;
    // Online means caught up; the cache, not a history read, has it.
    assert_eq!(ann_app.engine.unread_total().await.expect("unread"), 0);
    assert_eq!(
        contents(&ann_app, &group.id).await,
        [("before you came".to_owned(), Delivery::Sent)]
    );
}

/// What a `FaultyFront` does to the connections through it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    Nothing,
    /// Every connection, open or new: the network is gone.
    Everything,
    /// A connection once the client writes these bytes (a request line):
    /// one request fails while everything else works.
    Asking(Vec<u8>),
    /// Like `Asking`, but the connection is held open and never answered,
    /// as by a proxy that hangs.
    Stalling(Vec<u8>),
    /// Like `Asking`, but answered with 502 Bad Gateway, as by a proxy
    /// whose server is restarting.
    Failing(Vec<u8>),
    /// Like `Asking`, but answered with 403 "not a member", as by a server
    /// that has just removed Ann from the chat.
    Refusing(Vec<u8>),
    /// Like `Asking`, but answered with 500 "internal error", as by a
    /// server that fails on one chat's damaged rows.
    Breaking(Vec<u8>),
    /// Like `Stalling`, but once the cut changes the held requests are
    /// answered 401, as a request that took long is by a server that no
    /// longer takes its token.
    Expiring(Vec<u8>),
    /// Like `Stalling`, but once the cut changes the held requests go on
    /// to the server, as over a slow network.
    Holding(Vec<u8>),
    /// Like `Asking`, but answered with the bytes given, as by a server
    /// (or a proxy's cache) that answers every such request the same.
    Answering(Vec<u8>, &'static [u8]),
}

const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const INTERNAL_ERROR: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 26\r\nconnection: close\r\n\r\n{\"error\":\"internal error\"}";
const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 33\r\nconnection: close\r\n\r\n{\"error\":\"the session is over\"}";
const PORTAL_PAGE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 26\r\nconnection: close\r\n\r\n<html>Sign in first</html>";
const NOT_A_MEMBER: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: 24\r\nconnection: close\r\n\r\n{\"error\":\"not a member\"}";

/// A plain TCP front to a server that plays the network failing, as a
/// flaky link or a proxy would: the server itself stays up and unchanged.
struct FaultyFront {
    url: String,
    cut: tokio::sync::watch::Sender<Cut>,
    /// Requests the cut caught so far: dropped, held unanswered or
    /// answered in the server's place.
    caught: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FaultyFront {
    async fn start(backend: SocketAddr) -> FaultyFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (cut, watching) = tokio::sync::watch::channel(Cut::Nothing);
        let caught = Arc::new(AtomicUsize::new(0));
        let counting = caught.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Self::pass(
                    client,
                    backend,
                    watching.clone(),
                    counting.clone(),
                ));
            }
        });
        FaultyFront {
            url,
            cut,
            caught,
            task,
        }
    }

    fn caught(&self) -> usize {
        self.caught.load(Ordering::SeqCst)
    }

    fn set(&self, cut: Cut) {
        self.cut.send_replace(cut);
    }

    /// Forwards one connection both ways until either side ends it or the
    /// cut says to drop it (dropping both ends resets them).
    async fn pass(
        client: TcpStream,
        backend: SocketAddr,
        mut cut: tokio::sync::watch::Receiver<Cut>,
        caught: Arc<AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if *cut.borrow_and_update() == Cut::Everything {
            return;
        }
        let Ok(server) = TcpStream::connect(backend).await else {
            return;
        };
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let asking = cut.clone();
        // What the request is to be answered with, if not by the server
        // (`Cut::Failing`, `Cut::Refusing`).
        let up = async move {
            let mut buf = vec![0u8; 16 * 1024];
            // The end of the last read too, for a request line split in two.
            let mut seen: Vec<u8> = Vec::new();
            loop {
                let n = from_client.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<Option<&[u8]>, std::io::Error>(None);
                }
                seen.extend_from_slice(&buf[..n]);
                let cut = asking.borrow().clone();
                let holding = matches!(cut, Cut::Holding(_));
                let (needle, stall, answer) = match cut {
                    Cut::Asking(needle) => (Some(needle), false, None),
                    Cut::Stalling(needle) | Cut::Holding(needle) => (Some(needle), true, None),
                    Cut::Failing(needle) => (Some(needle), false, Some(BAD_GATEWAY)),
                    Cut::Refusing(needle) => (Some(needle), false, Some(NOT_A_MEMBER)),
                    Cut::Breaking(needle) => (Some(needle), false, Some(INTERNAL_ERROR)),
                    Cut::Expiring(needle) => (Some(needle), true, Some(UNAUTHORIZED)),
                    Cut::Answering(needle, answer) => (Some(needle), false, Some(answer)),
                    Cut::Nothing | Cut::Everything => (None, false, None),
                };
                if let Some(needle) = needle {
                    if seen
                        .windows(needle.len())
                        .any(|window| window == needle.as_slice())
                    {
                        caught.fetch_add(1, Ordering::SeqCst);
                        if stall {
                            // Held until the cut changes, then answered
                            // (`Expiring`) or passed on (`Holding`); held
                            // for good otherwise.
                            let mut changes = asking.clone();
                            // The cut as it is now counts as seen: a
                            // connection kept from before it was set must
                            // wait for the next change too.
                            changes.borrow_and_update();
                            let changed = changes.changed().await.is_ok();
                            if changed && holding {
                                to_server.write_all(&buf[..n]).await?;
                                seen.clear();
                                continue;
                            }
                            if answer.is_none() || !changed {
                                std::future::pending::<()>().await;
                            }
                        }
                        return Ok(answer);
                    }
                    let keep = seen.len().saturating_sub(needle.len());
                    seen.drain(..keep);
                } else {
                    seen.clear();
                }
                to_server.write_all(&buf[..n]).await?;
            }
        };
        let down = tokio::io::copy(&mut from_server, &mut to_client);
        let gone = async move {
            while cut.changed().await.is_ok() {
                if *cut.borrow() == Cut::Everything {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let answer = tokio::select! {
            answer = up => answer.ok().flatten(),
            _ = down => None,
            () = gone => None,
        };
        if let Some(answer) = answer {
            let _ = to_client.write_all(answer).await;
            let _ = to_client.shutdown().await;
        }
    }
}

impl Drop for FaultyFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opening a chat while the server fails for now (a proxy's 502 as it
/// restarts), or while something in front of it answers instead (a
/// captive portal), shows what the cache has, not only an error; an older
/// page says why it did not come.
#[tokio::test]
async fn opening_a_chat_while_the_server_fails_shows_the_cache() {
    // A group with history from before Ann: her cache starts at what
    // comes after she joins, so opening it asks the server for the rest.
    let OldGroup {
        _server,
        front,
        ann_app,
        bob_app,
        ann,
        group,
        ..
    } = ann_added_to_an_old_group().await;
    for text in ["one", "two"] {
        bob_app.engine.send(&group.id, text).await.expect("sent");
    }
    // Read from her cache: asking the engine would fetch the page before.
    let cache = natter_core::session::Files::new(&ann_app.dir).cache(&ann.id);
    let cache = natter_core::cache::Cache::open(&cache)
        .await
        .expect("ann's cache");
    eventually("ann has both", || async {
        cache.max_seqs().await.expect("seqs").get(&group.id) == Some(&3)
    })
    .await;
    assert_eq!(cache.min_seq(&group.id).await.expect("seq"), Some(2));
    cache.close().await;

    let asking = format!("GET /api/message/{}", group.id).into_bytes();
    // A captive portal's page too, as the 502 of a proxy whose server
    // restarts.
    for cut in [
        Cut::Answering(asking.clone(), PORTAL_PAGE),
        Cut::Failing(asking),
    ] {
        front.set(cut.clone());
        let shown = ann_app
            .engine
            .history(&group.id, None)
            .await
            .unwrap_or_else(|err| panic!("the cache, not the error, with {cut:?}: {err}"));
        let shown: Vec<&str> = shown.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(shown, ["one", "two"]);
    }
    // A refusal is the server's word, said whatever the cache holds.
    front.set(Cut::Answering(
        format!("GET /api/message/{}", group.id).into_bytes(),
        NOT_A_MEMBER,
    ));
    let refused = ann_app.engine.history(&group.id, None).await;
    assert!(
        matches!(
            refused,
            Err(natter_core::CoreError::Server { status: 403, .. })
        ),
        "{refused:?}"
    );
    front.set(Cut::Failing(
        format!("GET /api/message/{}", group.id).into_bytes(),
    ));
    let older = ann_app.engine.history(&group.id, Some(2)).await;
    assert!(
        matches!(
            older,
            Err(natter_core::CoreError::Server { status: 502, .. })
        ),
        "an older page says why it did not come: {older:?}"
    );
}

/// Ann (through a `FaultyFront`) and Bob with a one-to-one chat whose
/// first message ("one") she has; then her link goes, and she is offline.
struct AwayFromBob {
    _server: Server,
    front: FaultyFront,
    ann_app: App,
    bob_app: App,
    ann: natter_shared::User,
    direct: ChatSummary,
}

async fn ann_away_from_bob() -> AwayFromBob {
    let AnnBehindAFront {
        server,
        front,
        ann_app,
        bob_app,
        ann,
    } = ann_behind_a_front().await;
    let direct = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    bob_app.engine.send(&direct.id, "one").await.expect("sent");
    eventually("ann has the first", || async {
        contents(&ann_app, &direct.id).await.len() == 1
    })
    .await;
    front.set(Cut::Everything);
    offline(&ann_app).await;
    AwayFromBob {
        _server: server,
        front,
        ann_app,
        bob_app,
        ann,
        direct,
    }
}

/// While Ann is away, Bob writes her a second message ("two") and starts a
/// group with her ("News", saying "hello"); returns once both are acked.
async fn bob_writes_while_ann_is_away(
    bob_app: &App,
    ann: &natter_shared::User,
    direct: &ChatSummary,
) -> ChatSummary {
    bob_app.engine.send(&direct.id, "two").await.expect("sent");
    let group = bob_app
        .engine
        .create_group("News", std::slice::from_ref(&ann.id))
        .await
        .expect("group");
    bob_app.engine.send(&group.id, "hello").await.expect("sent");
    eventually("bob's are acked", || async {
        all_sent(bob_app, &direct.id).await && all_sent(bob_app, &group.id).await
    })
    .await;
    group
}

/// Whether everything `app` wrote in `chat` is acked.
async fn all_sent(app: &App, chat: &str) -> bool {
    contents(app, chat)
        .await
        .iter()
        .all(|(_, delivery)| *delivery == Delivery::Sent)
}

/// Sends `text` in `chat` and waits until the server has acked it (and
/// every other message of the chat).
async fn send_acked(app: &App, chat: &str, text: &str) {
    app.engine.send(chat, text).await.expect("sent");
    eventually("the send acked", || async { all_sent(app, chat).await }).await;
}

/// A chat the server refuses at catch-up (403 for its history and for the
/// chat: Ann removed since the list was read) does not keep the app
/// offline: catch-up skips it, reads the rest and goes live. History alone
/// refused (a proxy's rule) does keep it offline. A catch-up that can read
/// the chat again brings what it missed, counted unread.
#[tokio::test]
async fn a_chat_refused_at_catch_up_does_not_keep_the_app_offline() {
    let AwayFromBob {
        _server,
        front,
        mut ann_app,
        bob_app,
        ann,
        direct,
    } = ann_away_from_bob().await;
    let group = bob_writes_while_ann_is_away(&bob_app, &ann, &direct).await;

    // The link is back, but the direct chat's history alone is refused:
    // catch-up asks for the chat, which the server gives, and fails (the
    // link drops and is tried again).
    ann_app.events = ann_app.engine.subscribe();
    front.set(Cut::Refusing(
        format!("GET /api/message/{}?", direct.id).into_bytes(),
    ));
    next_event(
        &mut ann_app,
        "the catch-up failing, the link dropped",
        |event| {
            matches!(
                event,
                Event::Connection {
                    state: ConnectionState::Offline
                }
            )
        },
    )
    .await;
    assert_eq!(
        contents(&ann_app, &direct.id).await.len(),
        1,
        "the direct chat not read"
    );
    // Every request naming the chat refused, as to one removed from it.
    front.set(Cut::Refusing(direct.id.clone().into_bytes()));
    online(&ann_app).await;
    eventually("ann has the group's message", || async {
        contents(&ann_app, &group.id).await.len() == 1
    })
    .await;
    assert_eq!(
        contents(&ann_app, &direct.id).await.len(),
        1,
        "the direct chat skipped"
    );

    // A later catch-up reads it: the second, unread with the first.
    front.set(Cut::Everything);
    offline(&ann_app).await;
    front.set(Cut::Nothing);
    online(&ann_app).await;
    eventually("ann has the direct chat whole", || async {
        seqs(&ann_app, &direct.id).await == [Some(1), Some(2)]
    })
    .await;
    let unread = ann_app
        .engine
        .chats()
        .await
        .expect("chats")
        .chats
        .iter()
        .find(|chat| chat.id == direct.id)
        .map(|chat| chat.unread);
    assert_eq!(unread, Some(2));
}

/// A chat whose history the server fails on (500 every time, as for a
/// damaged row) is left behind rather than keeping the app offline: the
/// others are read, the app goes online and sends, and the chat is read
/// again after a wait. Meanwhile its live messages wait, and one's own
/// send in it stays pending; once it can be read, all of it comes, in
/// order, counted unread and told.
#[tokio::test]
async fn a_chat_the_server_fails_on_is_left_behind_and_read_when_it_can_be() {
    let AwayFromBob {
        _server,
        front,
        mut ann_app,
        bob_app,
        ann,
        direct,
    } = ann_away_from_bob().await;
    let group = bob_writes_while_ann_is_away(&bob_app, &ann, &direct).await;

    // The link is back, but the server fails on the direct chat's history.
    front.set(Cut::Breaking(
        format!("GET /api/message/{}?", direct.id).into_bytes(),
    ));
    online(&ann_app).await;
    eventually("ann has the group's message", || async {
        contents(&ann_app, &group.id).await.len() == 1
    })
    .await;
    send_acked(&ann_app, &group.id, "hi all").await;
    // In the chat behind: Ann's send is stored by the server and shows as
    // sent, set aside above the gap, and Bob's live message waits.
    ann_app
        .engine
        .send(&direct.id, "three")
        .await
        .expect("sent");
    bob_app.engine.send(&direct.id, "four").await.expect("sent");
    eventually("bob has both", || async {
        contents(&bob_app, &direct.id).await.len() == 4 && all_sent(&bob_app, &direct.id).await
    })
    .await;
    // Ann's socket brings frames in order: once her later send's ack is
    // handled, so are those of "three" and "four".
    send_acked(&ann_app, &group.id, "still here").await;
    assert_eq!(
        contents(&ann_app, &direct.id).await,
        [
            ("one".to_owned(), Delivery::Sent),
            ("three".to_owned(), Delivery::Sent)
        ],
        "nothing of the chat behind is stored past the gap but her own, set aside"
    );
    assert_eq!(seqs(&ann_app, &direct.id).await, [Some(1), Some(3)]);
    assert_eq!(
        ann_app.engine.connection_state().await,
        ConnectionState::Online
    );
    assert_eq!(
        behind(&ann_app).await,
        std::slice::from_ref(&direct.id),
        "the list says which chat is short"
    );

    // The server can read it again: the next try brings it whole.
    ann_app.events = ann_app.engine.subscribe();
    front.set(Cut::Nothing);
    let notification = next_notification(&mut ann_app, "the chat behind told", |n| {
        n.chat_id == direct.id
    })
    .await;
    assert_eq!(notification.body, "four");
    eventually("ann has the direct chat whole", || async {
        seqs(&ann_app, &direct.id).await == [Some(1), Some(2), Some(3), Some(4)]
    })
    .await;
    assert!(
        all_sent(&ann_app, &direct.id).await,
        "her send stored, not pending"
    );
    eventually("the chat no longer shown behind", || async {
        behind(&ann_app).await.is_empty()
    })
    .await;
    let unread = ann_app
        .engine
        .chats()
        .await
        .expect("chats")
        .chats
        .iter()
        .find(|chat| chat.id == direct.id)
        .map(|chat| chat.unread);
    assert_eq!(unread, Some(3), "one, two and four");
}

/// A send in a group left behind is stored by the server while its ack is
/// held back (it would leave a hole in the cache): it is not sent again on
/// the next link, and it shows as sent; leaving the group does not report
/// it unsent, but keeps it (the group's history is closed to Ann then),
/// and being added back fills the hole under it.
#[tokio::test]
async fn a_send_stored_while_its_chat_is_behind_is_neither_sent_again_nor_reported_unsent() {
    let AwayFromBob {
        _server,
        front,
        mut ann_app,
        bob_app,
        ann,
        direct,
    } = ann_away_from_bob().await;
    let group = bob_app
        .engine
        .create_group("Team", std::slice::from_ref(&ann.id))
        .await
        .expect("group");
    send_acked(&bob_app, &group.id, "hello").await;
    front.set(Cut::Breaking(
        format!("GET /api/message/{}?", group.id).into_bytes(),
    ));
    online(&ann_app).await;
    ann_app
        .engine
        .send(&group.id, "on my way")
        .await
        .expect("sent");
    eventually("bob has it", || async {
        contents(&bob_app, &group.id).await.len() == 2
    })
    .await;
    // Ann's socket brings frames in order: her later send's ack comes
    // after the group one's.
    send_acked(&ann_app, &direct.id, "ok").await;
    let sent = [("on my way".to_owned(), Delivery::Sent)];
    assert_eq!(contents(&ann_app, &group.id).await, sent, "stored: sent");
    assert_eq!(
        last_listed(&ann_app, &group.id).await,
        Some(("on my way".to_owned(), Delivery::Sent)),
        "the list shows it last"
    );

    // A new link: the outbox is sent again, but not the stored one.
    ann_app.events = ann_app.engine.subscribe();
    front.set(Cut::Everything);
    offline(&ann_app).await;
    front.set(Cut::Breaking(
        format!("GET /api/message/{}?", group.id).into_bytes(),
    ));
    online(&ann_app).await;
    ann_app.engine.leave_group(&group.id).await.expect("left");
    while let Ok(event) = ann_app.events.try_recv() {
        match event {
            Event::Message { message } => {
                assert_ne!(message.content, "on my way", "shown as sent again");
            }
            Event::Notify { notification } => {
                assert!(
                    !notification.body.starts_with("Not sent"),
                    "reported unsent: {notification:?}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(contents(&ann_app, &group.id).await, sent, "kept, sent");

    // Added back, Ann reads the group again: the hole under her message
    // fills, and it shows once.
    front.set(Cut::Nothing);
    bob_app
        .engine
        .add_member(&group.id, &ann.id)
        .await
        .expect("added back");
    eventually("ann reads the group again", || async {
        contents(&ann_app, &group.id).await
            == [
                ("hello".to_owned(), Delivery::Sent),
                ("on my way".to_owned(), Delivery::Sent),
            ]
    })
    .await;
}

/// Added back to a group of which nothing was cached (left before anything
/// was said in it), Ann reads what was said meanwhile at once, as history,
/// not when she next opens it or catches up.
#[tokio::test]
async fn a_group_one_is_added_back_to_with_nothing_cached_is_read_at_once() {
    let server = Server::spawn().await;
    let mut ann_app = app(&server).await;
    let bob_app = app(&server).await;
    let ann = sign_up(&ann_app, "Ann").await;
    sign_up(&bob_app, "Bob").await;
    online(&ann_app).await;
    online(&bob_app).await;
    let group = bob_app
        .engine
        .create_group("Team", std::slice::from_ref(&ann.id))
        .await
        .expect("group");
    eventually("ann lists the group", || async {
        listed(&ann_app).await.iter().any(|c| c.id == group.id)
    })
    .await;
    ann_app.engine.leave_group(&group.id).await.expect("left");
    send_acked(&bob_app, &group.id, "while you were out").await;

    ann_app.events = ann_app.engine.subscribe();
    bob_app
        .engine
        .add_member(&group.id, &ann.id)
        .await
        .expect("added back");
    next_event(
        &mut ann_app,
        "what was said meanwhile",
        shows("while you were out"),
    )
    .await;
}

/// A 401 that comes late, to a request of a session logged out since,
/// does not end the login that came after it.
#[tokio::test]
async fn a_late_refusal_to_an_ended_session_does_not_end_the_next_login() {
    let AnnBehindAFront {
        server: _server,
        front,
        mut ann_app,
        ..
    } = ann_behind_a_front().await;
    front.set(Cut::Expiring(b"GET /api/user?search".to_vec()));
    let engine = ann_app.engine.clone();
    let late = tokio::spawn(async move { engine.search_users("bo").await });
    eventually("the search is held", || async { front.caught() > 0 }).await;
    ann_app.engine.logout().await.expect("logged out");
    let cid = sign_up(&ann_app, "Cid").await;
    online(&ann_app).await;
    ann_app.events = ann_app.engine.subscribe();
    assert!(!late.is_finished(), "the search is still on its way");

    front.set(Cut::Nothing);
    let answer = late.await.expect("joined");
    assert!(
        answer.as_ref().is_err_and(|err| err.is_unauthorized()),
        "{answer:?}"
    );
    assert_eq!(ann_app.engine.me().await.map(|me| me.id), Some(cid.id));
    assert_eq!(
        ann_app.engine.connection_state().await,
        ConnectionState::Online
    );
    while let Ok(event) = ann_app.events.try_recv() {
        assert!(
            !matches!(event, Event::SessionEnded { .. } | Event::SignedOut),
            "the new login was told it ended: {event:?}"
        );
    }
}

/// When the server fails on every chat's history (a full disk, say), that
/// is the server's trouble, not a chat's: the app stays offline and tries
/// again, rather than go online with every chat behind; for its first
/// tries only, so that a fault in just those chats does not keep it
/// offline for good.
#[tokio::test]
async fn a_server_failing_on_every_chat_keeps_the_app_offline() {
    let AwayFromBob {
        _server,
        front,
        mut ann_app,
        bob_app,
        ann,
        direct,
    } = ann_away_from_bob().await;
    let group = bob_writes_while_ann_is_away(&bob_app, &ann, &direct).await;

    ann_app.events = ann_app.engine.subscribe();
    front.set(Cut::Breaking(b"GET /api/message/".to_vec()));
    // Two catch-ups, each asking both chats, both refused.
    eventually("a second catch-up failing", || async {
        front.caught() >= 4
    })
    .await;
    while let Ok(event) = ann_app.events.try_recv() {
        assert!(
            !matches!(
                event,
                Event::Connection {
                    state: ConnectionState::Online
                }
            ),
            "went online with every chat failing"
        );
    }
    // Not for good: after its first tries, the app goes online with the
    // chats behind, and reads them once the server can.
    online(&ann_app).await;
    let mut both = vec![direct.id.clone(), group.id.clone()];
    both.sort();
    let mut shown = behind(&ann_app).await;
    shown.sort();
    assert_eq!(shown, both);
    // Offline, which chats are behind is the next catch-up's to say.
    front.set(Cut::Everything);
    offline(&ann_app).await;
    eventually("no chat shown behind", || async {
        behind(&ann_app).await.is_empty()
    })
    .await;
    front.set(Cut::Nothing);
    eventually("ann has both", || async {
        contents(&ann_app, &direct.id).await.len() == 2
            && contents(&ann_app, &group.id).await.len() == 1
    })
    .await;
    assert!(behind(&ann_app).await.is_empty());
}

/// A live message in a chat the cache does not hold (its `chat` frame
/// missed) that cannot be stored drops the link; the catch-up after it
/// reads it as news, counted and notified, though the server listed it as
/// the chat's latest when the app looked the chat up.
#[tokio::test]
async fn a_message_in_a_chat_new_here_that_could_not_be_stored_is_news_when_caught_up() {
    let AnnBehindAFront {
        server: _server,
        front: _front,
        mut ann_app,
        bob_app,
        ann,
    } = ann_behind_a_front().await;
    let direct = bob_app.engine.open_direct(&ann.id).await.expect("chat");
    bob_app.engine.send(&direct.id, "one").await.expect("sent");
    eventually("ann has it", || async {
        seqs(&ann_app, &direct.id).await == [Some(1)]
    })
    .await;
    // Ann's cache loses the chat, and cannot store the next message.
    let cache = natter_core::session::Files::new(&ann_app.dir).cache(&ann.id);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", cache.display()))
        .await
        .expect("ann's cache");
    for statement in [
        "DELETE FROM messages",
        "DELETE FROM chats",
        "CREATE TRIGGER full_disk BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'the disk is full'); END",
    ] {
        sqlx::query(statement).execute(&pool).await.expect("done");
    }
    ann_app.events = ann_app.engine.subscribe();
    bob_app.engine.send(&direct.id, "two").await.expect("sent");
    next_event(&mut ann_app, "the link dropped", link_dropped).await;
    sqlx::query("DROP TRIGGER full_disk")
        .execute(&pool)
        .await
        .expect("dropped");
    pool.close().await;
    next_notification(&mut ann_app, "the message, once caught up", |n| {
        n.body == "two"
    })
    .await;
}

/// A live message past a gap whose reading the server fails (500) leaves
/// its chat behind rather than dropping the link: the app stays online,
/// and the gap and the message come on the next try, notified.
#[tokio::test]
async fn a_gap_the_server_fails_to_give_leaves_its_chat_behind_and_the_link_up() {
    let (
        AnnBehindAFront {
            server: _server,
            front,
            mut ann_app,
            bob_app,
            ..
        },
        direct,
    ) = ann_with_a_gap().await;

    let mut watching = ann_app.engine.subscribe();
    ann_app.events = ann_app.engine.subscribe();
    front.set(Cut::Breaking(
        format!("GET /api/message/{}?", direct.id).into_bytes(),
    ));
    bob_app
        .engine
        .send(&direct.id, "three")
        .await
        .expect("sent");
    next_event(&mut ann_app, "the list shows the chat behind", |event| {
        matches!(event, Event::Chats(list) if list.chats.iter().any(|chat| chat.id == direct.id && chat.behind))
    })
    .await;
    assert_eq!(
        seqs(&ann_app, &direct.id).await,
        [Some(1)],
        "nothing stored past the gap"
    );
    front.set(Cut::Nothing);
    next_notification(&mut ann_app, "the newest, once read", |n| n.body == "three").await;
    eventually("ann has all three", || async {
        seqs(&ann_app, &direct.id).await == [Some(1), Some(2), Some(3)]
    })
    .await;
    eventually("the chat no longer shown behind", || async {
        behind(&ann_app).await.is_empty()
    })
    .await;
    while let Ok(event) = watching.try_recv() {
        assert!(!link_dropped(&event), "the link stayed up: {event:?}");
    }
}

/// The token in the app's session file, and when it expires.
fn saved_token(app: &App) -> (String, i64) {
    use base64::Engine as _;
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.dir.join("session.json")).expect("session file"))
            .expect("json");
    let token = session["token"].as_str().expect("token").to_owned();
    let payload = token.split('.').nth(1).expect("payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("claims");
    let exp = claims["exp"].as_i64().expect("exp");
    (token, exp)
}

/// A session outlives its first token: at half its life the app exchanges
/// it for a new one, which its session file keeps and its open socket is
/// given, so that the socket outlives the first token too (the server
/// would close it a second after that token's end, at its next ping). A
/// socket opened later opens with the new token, still logged in.
#[tokio::test]
async fn the_session_token_is_renewed_before_it_expires() {
    // Renewed at 8 s (the next renewal is 30 s on at the least); the first
    // token ends at 16 s, the renewed one at 24: the restart below, at 19 s,
    // has time to reconnect with it.
    let mut server = Server::spawn_with(|config| {
        config.token_ttl_secs = 16;
        // A socket outliving its token is closed at the next ping.
        config.ws_ping_ms = 200;
    })
    .await;
    let mut ann_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    online(&ann_app).await;
    ann_app.events = ann_app.engine.subscribe();
    let (first, expires) = saved_token(&ann_app);
    eventually("a renewed token saved", || async {
        saved_token(&ann_app).0 != first
    })
    .await;
    // The server would close a socket of the first token by `expires + 1.2`
    // (pings every 0.2 s): past `expires + 2`, with time for its close to
    // be seen, the socket is still the first one.
    eventually("well past the first token's end", || async {
        chrono::Utc::now().timestamp() > expires + 2
    })
    .await;
    ann_app
        .engine
        .search_users("someone")
        .await
        .expect("the server still takes the app's requests");
    loop {
        match ann_app.events.try_recv() {
            Ok(Event::Connection { state }) => {
                panic!("the socket did not outlive the first token: {state:?}")
            }
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                panic!("{n} events missed: a connection change may be among them")
            }
            Err(_) => break,
        }
    }
    assert_eq!(
        ann_app.engine.connection_state().await,
        ConnectionState::Online
    );

    // A new socket (the server restarted) is let in: with the first token
    // the session would have ended instead.
    server.stop().await;
    offline(&ann_app).await;
    server.start().await;
    online(&ann_app).await;
    assert!(ann_app.engine.me().await.is_some(), "still logged in");
    assert!(
        saved_token(&ann_app).1 > expires,
        "the saved token outlives the first"
    );
}

/// A server that turns the socket away because the account has as many
/// open as it may (429) gets the "crowded" state, not "connecting" at every
/// try, and the next try waits as its `Retry-After` says; once the other
/// computer's app closes, this one comes online.
#[tokio::test]
async fn an_account_with_as_many_sockets_as_it_may_says_so_and_waits_as_asked() {
    let server = Server::spawn_with(|config| {
        config.sockets_per_user = 1;
        // A refusal asks for `ws_timeout + ws_ping`: 1.2 s, said as 2.
        config.ws_timeout_ms = 1_000;
        config.ws_ping_ms = 200;
    })
    .await;
    let ann_app = app(&server).await;
    sign_up(&ann_app, "Ann").await;
    online(&ann_app).await;

    let mut other_app = app(&server).await;
    log_in(&other_app, "Ann").await;
    let mut states = Vec::new();
    states_until(&mut other_app, &mut states, ConnectionState::Crowded).await;
    let refused = Instant::now();
    assert_eq!(
        other_app.engine.connection_state().await,
        ConnectionState::Crowded
    );

    ann_app.engine.logout().await.expect("logged out");
    states_until(&mut other_app, &mut states, ConnectionState::Online).await;
    assert_eq!(
        states,
        [
            ConnectionState::Connecting,
            ConnectionState::Crowded,
            ConnectionState::Online
        ],
        "crowded until the link came up"
    );
    // The app's own backoff here is 300 ms at the most.
    assert!(
        refused.elapsed() >= Duration::from_millis(900),
        "the next try waited as the server asked, not {:?}",
        refused.elapsed()
    );
}

/// Adds the connection states `app` tells to `states` until it tells
/// `last`, within `PATIENCE` in all.
async fn states_until(app: &mut App, states: &mut Vec<ConnectionState>, last: ConnectionState) {
    let told = tokio::time::timeout(PATIENCE, async {
        while states.last() != Some(&last) {
            match app.events.recv().await {
                Ok(Event::Connection { state }) => states.push(state),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("engine gone"),
            }
        }
    })
    .await;
    assert!(told.is_ok(), "no {last:?} in time; told {states:?}");
}

/// A socket upgrade that is never answered (a proxy that hangs) counts as
/// a failed attempt after the connect timeout, and the next one is made:
/// the app does not stay "connecting" for good.
#[tokio::test]
async fn an_unanswered_socket_upgrade_is_given_up_and_tried_again() {
    let server = Server::spawn().await;
    let front = FaultyFront::start(server.addr).await;
    let ann_app = app_at(&front.url, Trust::default()).await;
    sign_up(&ann_app, "Ann").await;
    online(&ann_app).await;
    front.set(Cut::Everything);
    offline(&ann_app).await;
    front.set(Cut::Stalling(b"GET /ws".to_vec()));
    eventually("an attempt that hangs", || async { front.caught() > 0 }).await;
    front.set(Cut::Nothing);
    online(&ann_app).await;
}

/// A catch-up that fails halfway has already put the new chat list in the
/// cache and stored some of what was missed: both are told then, not left
/// for a later catch-up that would not tell them again.
#[tokio::test]
async fn a_catch_up_that_fails_halfway_still_tells_the_new_list_and_what_it_read() {
    let AwayFromBob {
        _server,
        front,
        mut ann_app,
        bob_app,
        ann,
        direct,
    } = ann_away_from_bob().await;

    // While Ann is away, Bob writes in their chat, then starts a group with her.
    send_acked(&bob_app, &direct.id, "two").await;
    // The server lists the most recent chat first, to the millisecond: the
    // group must be later than "two" (the server runs on this clock).
    let two_at = bob_app
        .engine
        .chat(&direct.id)
        .await
        .expect("chat")
        .updated_at;
    eventually("a millisecond past the second", || async {
        chrono::Utc::now().timestamp_millis() > two_at.timestamp_millis()
    })
    .await;
    let group = bob_app
        .engine
        .create_group("Late news", std::slice::from_ref(&ann.id))
        .await
        .expect("group");
    bob_app.engine.send(&group.id, "hello").await.expect("sent");
    eventually("bob's hello is acked", || async {
        contents(&bob_app, &group.id).await == [("hello".to_owned(), Delivery::Sent)]
    })
    .await;

    // The link is back, except that reading the direct chat's history fails,
    // every time: catch-up lists the chats, reads the group (listed first),
    // then fails, and starts again.
    front.set(Cut::Asking(
        format!("GET /api/message/{}?", direct.id).into_bytes(),
    ));
    let notification = next_notification(&mut ann_app, "the group's message told", |n| {
        n.chat_id == group.id
    })
    .await;
    assert_eq!(notification.body, "Bob: hello");
    let listed_with_group = next_event(&mut ann_app, "a list with the group", |event| {
        matches!(event, Event::Chats(list) if list.chats.iter().any(|chat| chat.id == group.id))
    })
    .await;
    let Event::Chats(list) = listed_with_group else {
        unreachable!("next_event returned only what was wanted")
    };
    let unread = |id: &str| {
        list.chats
            .iter()
            .find(|chat| chat.id == id)
            .map(|chat| chat.unread)
    };
    assert_eq!(
        unread(&group.id),
        Some(1),
        "the group's message, read before the failure"
    );
    assert_eq!(
        unread(&direct.id),
        Some(1),
        "the first (live) only: the second is not read yet"
    );
    assert_ne!(
        ann_app.engine.connection_state().await,
        ConnectionState::Online,
        "catch-up has not finished"
    );

    // With the link whole, catch-up ends: the rest arrives, nothing twice.
    front.set(Cut::Nothing);
    online(&ann_app).await;
    eventually("ann has the second", || async {
        contents(&ann_app, &direct.id).await.len() == 2
    })
    .await;
    assert_eq!(seqs(&ann_app, &direct.id).await, [Some(1), Some(2)]);
    assert_eq!(ann_app.engine.unread_total().await.expect("unread"), 3);
}

//! The real app, driven as a user would: the natter-desktop binary under
//! Xvfb, controlled through tauri-driver and WebKitWebDriver (Debian's
//! webkit2gtk-driver), against a real natter-server. Ann signs up in the
//! app with a picture; Bob and Carol use the API and the socket. She chats
//! with Bob, sees him type, finds Carol, makes a group, sees both type and
//! removes Carol as the group's admin. Every screen is saved as a PNG in
//! `$NATTER_SCREENSHOTS` (default: target/screenshots); the best of them
//! are in docs/screenshots.
//!
//! `NATTER_E2E_APP` picks the binary (scripts/test passes the release
//! build it bundles); by default it is the one cargo built for this test.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KilledGroup, virtual_display};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use natter_shared::api::AuthResponse;
use natter_shared::socket::{ClientFrame, ServerFrame};
use natter_shared::{Chat, Message, User};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

/// The app's first start builds WebKit's caches: give it time on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A natter-server on a free port with its own data folder; it stops when
/// the sender is used or dropped.
async fn start_server() -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = natter_server::config::Config::with_data_dir(data.path().to_path_buf());
    config.addr = "127.0.0.1:0".parse().expect("addr");
    let app = natter_server::Application::build(&config)
        .await
        .expect("the server starts");
    let addr = app.local_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), data, stop)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// tauri-driver, from `cargo install tauri-driver` (scripts/test installs it).
fn tauri_driver() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .expect("a home folder");
    let installed = home.join("bin").join("tauri-driver");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("tauri-driver")
    }
}

/// The app under test: `NATTER_E2E_APP`, else the binary built with this test.
fn app_binary() -> PathBuf {
    std::env::var_os("NATTER_E2E_APP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_natter-desktop")))
}

/// Polls `check` until it holds; fails the test after `PATIENCE`.
async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the server's side: people using the API and the socket ----

/// Someone using the server directly: their token, and a socket that
/// hears what the server sends them.
struct Person {
    server: String,
    http: reqwest::Client,
    auth: AuthResponse,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Person {
    async fn sign_up(server: &str, name: &str) -> Person {
        let http = reqwest::Client::new();
        let email = format!("{}@example.org", name.to_lowercase());
        let auth: AuthResponse = answer(http.post(format!("{server}/api/user")).json(
            &json!({"name": name, "email": email, "password": format!("{name}'s password")}),
        ))
        .await;
        let url = format!(
            "{}/ws?token={}",
            server.replacen("http", "ws", 1),
            auth.token
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the socket opens");
        // Subscribed once Ready arrives: nothing sent after it is missed.
        loop {
            let frame = next_frame(&mut socket).await;
            if matches!(frame, ServerFrame::Ready { .. }) {
                break;
            }
        }
        Person {
            server: server.to_owned(),
            http,
            auth,
            socket,
        }
    }

    fn id(&self) -> &str {
        &self.auth.user.id
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        answer(
            self.http
                .get(format!("{}{path}", self.server))
                .bearer_auth(&self.auth.token),
        )
        .await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        answer(
            self.http
                .post(format!("{}{path}", self.server))
                .bearer_auth(&self.auth.token)
                .json(&body),
        )
        .await
    }

    async fn write(&self, chat_id: &str, content: &str) -> Message {
        self.post(
            "/api/message",
            json!({"chatId": chat_id, "content": content}),
        )
        .await
    }

    async fn typing(&mut self, chat_id: &str) {
        let frame = ClientFrame::Typing {
            chat_id: chat_id.to_owned(),
            is_typing: true,
        };
        let text = serde_json::to_string(&frame).expect("json");
        self.socket
            .send(tungstenite::Message::text(text))
            .await
            .expect("typing sent");
    }

    /// Waits until the socket hears `user_id` typing in `chat_id`.
    async fn hears_typing(&mut self, chat_id: &str, user_id: &str) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let ServerFrame::Typing {
                    chat_id: chat,
                    user_id: who,
                    is_typing: true,
                } = next_frame(&mut self.socket).await
                    && chat == chat_id
                    && who == user_id
                {
                    return;
                }
            }
        })
        .await
        .expect("the typing frame arrives");
    }
}

async fn next_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> ServerFrame {
    loop {
        let message = socket
            .next()
            .await
            .expect("the socket stays open")
            .expect("a frame");
        if let tungstenite::Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("a server frame");
        }
    }
}

/// Sends `request`, checks it succeeded, reads its JSON answer.
async fn answer<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let body = response.text().await.expect("a body");
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("{err}: {body}"))
}

// ---- the app's side: what Ann sees and does ----

/// The texts of every element matching `css`. textContent, not WebDriver's
/// visible text: WebKitWebDriver reports "" for the chat rows' ellipsised
/// spans although they are laid out and painted (182 px wide).
async fn texts(app: &Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in app.find_all(Locator::Css(css)).await.unwrap_or_default() {
        if let Ok(Some(text)) = element.prop("textContent").await {
            texts.push(text);
        }
    }
    texts
}

async fn wait_for_text(app: &Client, css: &str, text: &str) {
    let started = Instant::now();
    loop {
        let shown = texts(app, css).await;
        if shown.iter().any(|shown| shown.contains(text)) {
            return;
        }
        if started.elapsed() > PATIENCE {
            let page = texts(app, "body").await;
            panic!("{css} never showed {text:?}: it shows {shown:?}; the page: {page:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_count(app: &Client, css: &str, count: usize) {
    wait_until(&format!("{count} of {css}"), async || {
        app.find_all(Locator::Css(css))
            .await
            .is_ok_and(|found| found.len() == count)
    })
    .await;
}

async fn type_into(app: &Client, css: &str, text: &str) {
    let field = app.find(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("cleared");
    field.send_keys(text).await.expect("typed");
}

/// Clicks the element once it is there (search results come after a pause).
async fn click(app: &Client, css: &str) {
    let mut found = None;
    wait_until(css, async || {
        found = app.find(Locator::Css(css)).await.ok();
        found.is_some()
    })
    .await;
    found.expect(css).click().await.expect("clicked");
}

/// Saves what the window shows as `<dir>/<name>.png`.
async fn screenshot(app: &Client, dir: &Path, name: &str) {
    // WebKit takes the snapshot at the page's next paint, and an idle page
    // under Xvfb may never paint again: a dot in a corner, one shade apart,
    // repaints a few times while the command waits.
    app.execute(
        "let dot = document.getElementById('e2e-repaint');
         if (!dot) {
           dot = document.createElement('div');
           dot.id = 'e2e-repaint';
           dot.style.cssText = 'position:fixed;right:0;bottom:0;width:1px;height:1px;pointer-events:none';
           document.body.append(dot);
         }
         let n = 0;
         const tick = setInterval(() => {
           dot.style.background = n % 2 ? 'rgba(0,0,0,0.01)' : 'rgba(0,0,0,0.02)';
           if (++n > 40) clearInterval(tick);
         }, 50);",
        vec![],
    )
    .await
    .expect("the repaint timer starts");
    let png = tokio::time::timeout(Duration::from_secs(20), app.screenshot())
        .await
        .unwrap_or_else(|_| panic!("the {name} screenshot timed out"))
        .expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot saved");
}

fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("NATTER_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/api/fixtures")
        .join(name)
        .canonicalize()
        .expect("the fixture exists")
}

/// The app, started by tauri-driver on a fresh display with its own data.
struct App {
    client: Client,
    _driver: KilledGroup,
    _display: common::Killed,
    _data: tempfile::TempDir,
}

/// `theme`: GTK's theme for the app ("Adwaita:dark" for a dark desktop).
async fn start_app(theme: &str) -> App {
    let (display_process, display) = virtual_display();
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let driver = KilledGroup(
        Command::new(tauri_driver())
            .process_group(0)
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &free_port().to_string(),
            ])
            .env("DISPLAY", &display)
            .env("NATTER_DESKTOP_DIR", data.path())
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env("GTK_THEME", theme)
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tauri-driver runs (cargo install tauri-driver; scripts/test installs it)"),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("tauri:options".into(), json!({"application": app_binary()}));
    let mut session = None;
    wait_until("a WebDriver session with the app", async || {
        session = ClientBuilder::native()
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .ok();
        session.is_some()
    })
    .await;
    App {
        client: session.expect("a session"),
        _driver: driver,
        _display: display_process,
        _data: data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ann_chats_one_to_one_and_in_a_group_she_runs() {
    let (server, _server_data, stop_server) = start_server().await;
    let mut bob = Person::sign_up(&server, "Bob").await;
    let mut carol = Person::sign_up(&server, "Carol").await;
    let shots = screenshot_dir();
    let started = start_app("Adwaita").await;
    let app = &started.client;

    // Sign up in the app, against our server, with a picture.
    wait_for_text(app, "#submit", "Log in").await;
    screenshot(app, &shots, "01-login").await;
    type_into(app, "#server", &server).await;
    click(app, "#toggle").await;
    let picture = fixture("avatar.png");
    app.find(Locator::Css("#pic"))
        .await
        .expect("the picture field")
        .send_keys(&picture.to_string_lossy())
        .await
        .expect("picture chosen");
    wait_for_count(app, "img.preview", 1).await;
    type_into(app, "#name", "Ann").await;
    type_into(app, "#email", "ann@example.org").await;
    type_into(app, "#password", "ann's password").await;
    screenshot(app, &shots, "02-sign-up").await;
    click(app, "#submit").await;
    wait_for_text(app, "aside .me", "Ann").await;
    let ann: Vec<User> = bob.get("/api/user?search=ann").await;
    let ann = ann.first().expect("Ann is found").clone();
    assert!(ann.pic.is_some(), "her picture reached the server");

    // Bob writes to Ann: the chat appears in her list, unread.
    let direct: Chat = bob.post("/api/chat", json!({"userId": ann.id})).await;
    bob.write(&direct.id, "Hi Ann, lunch at one?").await;
    bob.write(&direct.id, "The usual place 🍜").await;
    wait_for_text(app, "ul.chats .preview", "The usual place 🍜").await;
    wait_for_text(app, "ul.chats .badge", "2").await;
    screenshot(app, &shots, "03-chat-list").await;

    // She opens it: the new messages are marked; Bob types, she sees it.
    click(app, &format!("[data-chat='{}']", direct.id)).await;
    wait_for_text(app, ".msg.theirs p", "Hi Ann, lunch at one?").await;
    wait_for_text(app, ".unread-marker", "2 new messages").await;
    bob.typing(&direct.id).await;
    wait_for_text(app, ".typing", "Bob is typing…").await;
    screenshot(app, &shots, "04-chat").await;

    // She answers (Shift+Enter for a second line, Enter sends); Bob sees
    // her typing first, then has her answer.
    type_into(
        app,
        ".composer textarea",
        "Yes! See you there.\u{E008}\u{E007}\u{E008}Bringing Carol?",
    )
    .await;
    bob.hears_typing(&direct.id, &ann.id).await;
    app.find(Locator::Css(".composer textarea"))
        .await
        .expect("composer")
        .send_keys("\u{E007}")
        .await
        .expect("Enter");
    wait_for_text(app, ".msg.mine p", "Bringing Carol?").await;
    wait_until("Bob to have the answer", async || {
        let history: Vec<Message> = bob.get(&format!("/api/message/{}", direct.id)).await;
        history.iter().any(|message| {
            message.content == "Yes! See you there.\nBringing Carol?" && message.sender.id == ann.id
        })
    })
    .await;

    // "New chat": she finds Carol and sees her card.
    click(app, "#new-chat").await;
    type_into(app, ".panel .search-users", "car").await;
    click(app, &format!("[data-user='{}']", carol.id())).await;
    wait_for_text(app, ".card h3", "Carol").await;
    screenshot(app, &shots, "05-search-users").await;
    click(app, "#message-user").await;
    wait_for_text(app, ".chat-view h2", "Carol").await;

    // "New group" with Bob and Carol; she is its admin.
    click(app, "#new-group").await;
    type_into(app, "#group-name", "Lunch crew").await;
    for person in [&bob, &carol] {
        type_into(app, ".panel .search-users", &person.auth.user.name).await;
        click(app, &format!("[data-user='{}']", person.id())).await;
    }
    wait_for_count(app, ".chips li", 2).await;
    screenshot(app, &shots, "06-new-group").await;
    click(app, "#create-group").await;
    wait_for_text(app, ".chat-view h2", "Lunch crew").await;
    let groups: Vec<Chat> = carol.get("/api/chat").await;
    let group = groups
        .into_iter()
        .find(|chat| chat.chat_name == "Lunch crew")
        .expect("Carol is in the group");

    // Everyone writes; Bob and Carol type at once.
    type_into(app, ".composer textarea", "Table for three at one\u{E007}").await;
    // Marked as sending until the server's ack, then sent.
    wait_for_text(
        app,
        ".msg.mine[data-status='sent'] p",
        "Table for three at one",
    )
    .await;
    bob.write(&group.id, "I'll be there").await;
    carol.write(&group.id, "Me too!").await;
    wait_for_text(app, ".msg.theirs .sender", "Carol").await;
    bob.typing(&group.id).await;
    carol.typing(&group.id).await;
    wait_until("both typists shown", async || {
        let line = texts(app, ".typing").await.concat();
        line == "Bob and Carol are typing…" || line == "Carol and Bob are typing…"
    })
    .await;
    screenshot(app, &shots, "07-group-chat").await;

    // Group info: the admin marked; she removes Carol.
    click(app, ".chat-title").await;
    wait_for_count(app, ".members li", 3).await;
    wait_for_text(app, ".members .tag", "admin").await;
    screenshot(app, &shots, "08-group-info").await;
    click(app, "[aria-label='Remove Carol']").await;
    wait_for_count(app, ".members li", 2).await;
    wait_until("Carol to be out of the group", async || {
        let chats: Vec<Chat> = carol.get("/api/chat").await;
        !chats.iter().any(|chat| chat.id == group.id)
    })
    .await;

    // By keyboard: Ctrl+K opens "New chat", Escape closes it.
    click(app, ".composer textarea").await;
    app.active_element()
        .await
        .expect("focus")
        .send_keys("\u{E009}k\u{E009}")
        .await
        .expect("Ctrl+K");
    wait_for_count(app, ".panel[aria-label='New chat']", 1).await;
    app.active_element()
        .await
        .expect("focus")
        .send_keys("\u{E00C}")
        .await
        .expect("Escape");
    wait_for_count(app, ".panel", 0).await;

    // The smallest window: nothing sticks out sideways.
    app.set_window_size(800, 600).await.expect("resized");
    wait_until("the window at 800x600", async || {
        app.execute("return window.innerWidth", vec![])
            .await
            .is_ok_and(|width| width.as_u64().is_some_and(|width| width <= 800))
    })
    .await;
    let overflow = app
        .execute(
            "return [...document.querySelectorAll('body *')]
               .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
                 && !e.closest('[style*=\"contain\"]'))
               .map((e) => e.tagName + '.' + e.className)",
            vec![],
        )
        .await
        .expect("measured");
    assert_eq!(
        overflow,
        json!([]),
        "elements beyond the window's right edge"
    );
    screenshot(app, &shots, "09-800x600").await;

    // The server goes away: a banner says so; the chat stays readable.
    let _ = stop_server.send(());
    wait_for_count(app, ".banner", 1).await;
    wait_for_text(app, ".msg.theirs p", "Me too!").await;
    wait_for_text(
        app,
        ".msg.mine[data-status='sent'] p",
        "Table for three at one",
    )
    .await;
    screenshot(app, &shots, "10-offline").await;
    let _ = app.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_dark_on_a_dark_desktop() {
    let (server, _server_data, _stop) = start_server().await;
    let bob = Person::sign_up(&server, "Bob").await;
    let shots = screenshot_dir();
    let started = start_app("Adwaita:dark").await;
    let app = &started.client;

    wait_for_text(app, "#submit", "Log in").await;
    let dark = app
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await
        .expect("asked");
    assert_eq!(dark, json!(true), "WebKit sees the desktop's dark theme");
    type_into(app, "#server", &server).await;
    click(app, "#toggle").await;
    type_into(app, "#name", "Ann").await;
    type_into(app, "#email", "ann@example.org").await;
    type_into(app, "#password", "ann's password").await;
    click(app, "#submit").await;
    wait_for_text(app, "aside .me", "Ann").await;

    let ann: Vec<User> = bob.get("/api/user?search=ann").await;
    let direct: Chat = bob.post("/api/chat", json!({"userId": ann[0].id})).await;
    bob.write(&direct.id, "Evening! Dark mode suits you 🌙")
        .await;
    click(app, &format!("[data-chat='{}']", direct.id)).await;
    wait_for_text(app, ".msg.theirs p", "Dark mode suits you").await;
    type_into(app, ".composer textarea", "Easier on the eyes\u{E007}").await;
    wait_for_text(app, ".msg.mine[data-status='sent'] p", "Easier on the eyes").await;
    let background = app
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .expect("asked");
    assert_eq!(
        background,
        json!("rgb(11, 20, 26)"),
        "the dark palette is in use"
    );
    screenshot(app, &shots, "11-dark").await;
    let _ = app.clone().close().await;
}

/// Not a test but a measurement (docs/desktop.md "Scrolling"): a chat of
/// 10,000 messages, all loaded page by page by scrolling up, then scrolled
/// from top to bottom one animation frame at a time. Prints frame times
/// and how many rows the page holds. Run it with
/// `cargo test -p natter-desktop --test e2e -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn scrolling_ten_thousand_messages() {
    let messages: usize = std::env::var("NATTER_SCROLL_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let (server, _server_data, _stop) = start_server().await;
    let bob = Person::sign_up(&server, "Bob").await;
    let started = start_app("Adwaita").await;
    let app = &started.client;
    wait_for_text(app, "#submit", "Log in").await;
    type_into(app, "#server", &server).await;
    click(app, "#toggle").await;
    type_into(app, "#name", "Ann").await;
    type_into(app, "#email", "ann@example.org").await;
    type_into(app, "#password", "ann's password").await;
    click(app, "#submit").await;
    wait_for_text(app, "aside .me", "Ann").await;

    let ann: Vec<User> = bob.get("/api/user?search=ann").await;
    let direct: Chat = bob.post("/api/chat", json!({"userId": ann[0].id})).await;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (server, token, chat) = (server.clone(), bob.auth.token.clone(), direct.id.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in (writer..messages).step_by(8) {
                    let long = if n % 7 == 0 {
                        " and a longer line that wraps onto a second one in the bubble"
                    } else {
                        ""
                    };
                    answer::<Message>(
                        http.post(format!("{server}/api/message"))
                            .bearer_auth(&token)
                            .json(
                                &json!({"chatId": chat, "content": format!("message {n}{long}")}),
                            ),
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }

    println!("{messages} messages written");
    click(app, &format!("[data-chat='{}']", direct.id)).await;
    wait_for_text(app, ".msg.theirs p", "message ").await;
    let loading = Instant::now();
    let viewport = "document.querySelector('.messages > div')";
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let top: Value = app
                .execute(
                    &format!("const v = {viewport}; v.scrollTop = 0; return v.scrollHeight"),
                    vec![],
                )
                .await
                .expect("scrolled up");
            let oldest = texts(app, ".msg p").await;
            if oldest
                .iter()
                .any(|text| text.starts_with("message ") && seq_of(text) == Some(0))
            {
                println!(
                    "all pages loaded in {:?} (scroll height {top})",
                    loading.elapsed()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every page loads");

    let figures = app
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 const v = {viewport};
                 const frames = [];
                 let rows = 0;
                 let last = performance.now();
                 v.scrollTop = 0;
                 function step(now) {{
                   frames.push(now - last); last = now;
                   rows = Math.max(rows, document.querySelectorAll('.msg').length);
                   if (v.scrollTop + v.clientHeight >= v.scrollHeight - 1 || frames.length > 2000) {{
                     frames.shift();
                     frames.sort((a, b) => a - b);
                     const at = (p) => frames[Math.min(frames.length - 1, Math.floor(p * frames.length))];
                     done({{ frames: frames.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: frames[frames.length - 1],
                            mostRowsInPage: rows, scrollHeight: v.scrollHeight }});
                     return;
                   }}
                   v.scrollTop += 600;
                   requestAnimationFrame(step);
                 }}
                 requestAnimationFrame(step);"
            ),
            vec![],
        )
        .await
        .expect("measured");
    println!("scrolling {messages} messages, 600 px per frame: {figures}");
    let _ = app.clone().close().await;
}

/// "message 42 ..." -> 42.
fn seq_of(text: &str) -> Option<usize> {
    text.strip_prefix("message ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

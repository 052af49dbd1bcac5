//! The real app, driven as a user would: the natter-desktop binary under
//! Xvfb, controlled through tauri-driver and WebKitWebDriver (Debian's
//! webkit2gtk-driver), against a real natter-server. Ann signs up in the
//! app; Bob, through the API, writes to her; she reads it and answers.
//!
//! Not yet: screenshots. WebKitWebDriver's screenshot command hangs on this
//! Xvfb setup unless the page was just typed into (also with plain curl).
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KilledGroup, virtual_display};
use fantoccini::{Client, ClientBuilder, Locator};
use natter_shared::api::AuthResponse;
use natter_shared::{Chat, Message, User};
use serde_json::json;

/// The app's first start builds WebKit's caches: give it time on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A natter-server on a free port with its own data folder.
async fn start_server() -> (String, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = natter_server::config::Config::with_data_dir(data.path().to_path_buf());
    config.addr = "127.0.0.1:0".parse().expect("addr");
    let app = natter_server::Application::build(&config)
        .await
        .expect("the server starts");
    let addr = app.local_addr().expect("bound");
    tokio::spawn(app.run_until(std::future::pending()));
    (format!("http://{addr}"), data)
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

/// Polls `check` until it holds; fails the test after `PATIENCE`.
async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

async fn type_into(app: &Client, css: &str, text: &str) {
    let field = app.find(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("cleared");
    field.send_keys(text).await.expect("typed");
}

async fn click(app: &Client, css: &str) {
    app.find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect("clicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_up_in_the_app_and_chats_with_another() {
    let (server, _server_data) = start_server().await;
    let http = reqwest::Client::new();
    let bob: AuthResponse = http
        .post(format!("{server}/api/user"))
        .json(&json!({"name": "Bob", "email": "bob@example.org", "password": "bob's password"}))
        .send()
        .await
        .expect("sign-up")
        .json()
        .await
        .expect("Bob");

    let (_xvfb, display) = virtual_display();
    let app_data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _driver = KilledGroup(
        Command::new(tauri_driver())
            .process_group(0)
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &free_port().to_string(),
            ])
            .env("DISPLAY", &display)
            .env("NATTER_DESKTOP_DIR", app_data.path())
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tauri-driver runs (cargo install tauri-driver; scripts/test installs it)"),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "tauri:options".into(),
        json!({"application": env!("CARGO_BIN_EXE_natter-desktop")}),
    );
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
    let app = session.expect("a session");

    // Sign up in the app, against our server.
    wait_for_text(&app, "#submit", "Log in").await;
    type_into(&app, "#server", &server).await;
    click(&app, "#toggle").await;
    type_into(&app, "#name", "Ann").await;
    type_into(&app, "#email", "ann@example.org").await;
    type_into(&app, "#password", "ann's password").await;
    click(&app, "#submit").await;
    wait_for_text(&app, "aside .me", "Ann").await;

    // Bob writes to Ann; the chat appears in her list with the message.
    let found: Vec<User> = http
        .get(format!("{server}/api/user?search=ann"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("users");
    let ann = found.first().expect("Ann is found");
    let chat: Chat = http
        .post(format!("{server}/api/chat"))
        .bearer_auth(&bob.token)
        .json(&json!({"userId": ann.id}))
        .send()
        .await
        .expect("chat")
        .json()
        .await
        .expect("a chat");
    http.post(format!("{server}/api/message"))
        .bearer_auth(&bob.token)
        .json(&json!({"chatId": chat.id, "content": "Hi Ann, lunch at one?"}))
        .send()
        .await
        .expect("sent");
    wait_for_text(&app, "ul.chats .preview", "Hi Ann, lunch at one?").await;

    // Ann opens the chat, reads, and answers with Enter.
    click(&app, "ul.chats button.chat").await;
    wait_for_text(&app, "ol.messages li.theirs p", "Hi Ann, lunch at one?").await;
    type_into(&app, ".chat-view textarea", "Yes! See you there.\u{E007}").await;
    wait_for_text(&app, "ol.messages li.mine p", "Yes! See you there.").await;

    // Bob has her answer, stored by the server.
    wait_until("Bob to have the answer", async || {
        let history: Vec<Message> = http
            .get(format!("{server}/api/message/{}", chat.id))
            .bearer_auth(&bob.token)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("messages");
        history
            .iter()
            .any(|message| message.content == "Yes! See you there." && message.sender.id == ann.id)
    })
    .await;
    let _ = app.close().await;
}

//! Driving the real app: a natter-server in the test's process, people on
//! its API and socket, and the app started by tauri-driver (WebKitWebDriver)
//! on its own Xvfb display, with the helpers the window tests share.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use natter_shared::api::AuthResponse;
use natter_shared::socket::{ClientFrame, ServerFrame};
use natter_shared::{Chat, Message, User};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use super::{Killed, KilledGroup, virtual_display};

pub use natter_test_support::free_port;

/// The app's first start builds WebKit's caches: give it time on a busy machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A natter-server on a free port with its own data folder; it stops when
/// the sender is used or dropped.
pub async fn start_server() -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = natter_server::config::Config::with_data_dir(data.path().to_path_buf());
    config.addr = "127.0.0.1:0".parse().expect("addr");
    // Bob's and Carol's test sockets are read only when a step waits for
    // a frame, and tungstenite answers pings only as it reads: silent for
    // the default minute (the app's steps take that long on a busy
    // machine), they would be dropped, and what they send next lost.
    config.ws_timeout_ms = 30 * 60 * 1000;
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

/// tauri-driver, from `cargo install tauri-driver` (scripts/test installs it).
pub fn tauri_driver() -> PathBuf {
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
pub fn app_binary() -> PathBuf {
    std::env::var_os("NATTER_E2E_APP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_natter-desktop")))
}

/// Polls `check` until it holds; fails the test after `PATIENCE`.
pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the server's side: people using the API and the socket ----

/// Someone using the server directly: their token, and a socket that
/// hears what the server sends them.
pub struct Person {
    pub server: String,
    pub http: reqwest::Client,
    pub auth: AuthResponse,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Person {
    pub async fn sign_up(server: &str, name: &str) -> Person {
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

    pub fn id(&self) -> &str {
        &self.auth.user.id
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        answer(
            self.http
                .get(format!("{}{path}", self.server))
                .bearer_auth(&self.auth.token),
        )
        .await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> T {
        answer(
            self.http
                .request(method, format!("{}{path}", self.server))
                .bearer_auth(&self.auth.token)
                .json(&body),
        )
        .await
    }

    /// Finds the first user whose name or email holds `search`, and opens
    /// the one-to-one chat with them.
    pub async fn direct_chat_with(&self, search: &str) -> (User, Chat) {
        let found: Vec<User> = self.get(&format!("/api/user?search={search}")).await;
        let user = found.into_iter().next().expect("someone found");
        let chat: Chat = self.post("/api/chat", json!({"userId": user.id})).await;
        (user, chat)
    }

    pub async fn write(&self, chat_id: &str, content: &str) -> Message {
        self.post(
            "/api/message",
            json!({"chatId": chat_id, "content": content}),
        )
        .await
    }

    pub async fn typing(&mut self, chat_id: &str) {
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
    pub async fn hears_typing(&mut self, chat_id: &str, user_id: &str) {
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

pub async fn next_frame(
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
pub async fn answer<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
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
pub async fn texts(app: &Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in app.find_all(Locator::Css(css)).await.unwrap_or_default() {
        if let Ok(Some(text)) = element.prop("textContent").await {
            texts.push(text);
        }
    }
    texts
}

pub async fn wait_for_text(app: &Client, css: &str, text: &str) {
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

pub async fn wait_for_count(app: &Client, css: &str, count: usize) {
    wait_until(&format!("{count} of {css}"), async || {
        app.find_all(Locator::Css(css))
            .await
            .is_ok_and(|found| found.len() == count)
    })
    .await;
}

/// Opens the chat `chat_id` as a user would: a click on its row in the list.
pub async fn open_chat(app: &Client, chat_id: &str) {
    click(app, &format!("[data-chat='{chat_id}']")).await;
}

/// A middle click on the first `css`: "open in a new window" for a link.
pub async fn middle_click(app: &Client, css: &str) {
    use fantoccini::actions::{InputSource, MOUSE_BUTTON_MIDDLE, MouseActions, PointerAction};
    let element = app.find(Locator::Css(css)).await.expect(css);
    let click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_MIDDLE,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_MIDDLE,
        });
    app.perform_actions(click).await.expect("middle click");
    // Released, as WebDriver asks. (Typing after a pointer action still
    // lost its capitals in one test: links clicked so have a test of their own.)
    app.release_actions().await.expect("actions released");
}

pub async fn type_into(app: &Client, css: &str, text: &str) {
    let field = app.find(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("cleared");
    field.send_keys(text).await.expect("typed");
}

/// Sends `keys` (WebDriver key codes allowed) to whatever has the focus.
pub async fn press(app: &Client, keys: &str) {
    app.active_element()
        .await
        .expect("a focused element")
        .send_keys(keys)
        .await
        .expect("keys sent");
}

/// Clicks the element once it is there (search results come after a pause).
pub async fn click(app: &Client, css: &str) {
    let mut found = None;
    wait_until(css, async || {
        found = app.find(Locator::Css(css)).await.ok();
        found.is_some()
    })
    .await;
    found.expect(css).click().await.expect("clicked");
}

/// Saves what the window shows as `<dir>/<name>.png`.
pub async fn screenshot(app: &Client, dir: &Path, name: &str) {
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

pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("NATTER_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/api/fixtures")
        .join(name)
        .canonicalize()
        .expect("the fixture exists")
}

/// The links the app opened outside its window, in order (see
/// `links_opener`).
pub fn opened_links(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("opened-links"))
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A `PATH` whose `xdg-open` (the system's opener, which the app hands
/// links to) writes each link it is given to `data/opened-links` instead
/// of starting a browser that is not there.
fn links_opener(data: &Path) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let bin = data.join("bin");
    std::fs::create_dir_all(&bin).expect("a bin folder");
    let opener = bin.join("xdg-open");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
        data.join("opened-links").display()
    );
    std::fs::write(&opener, script).expect("the opener written");
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755))
        .expect("the opener runs");
    let mut path = bin.into_os_string();
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    path
}

/// An Xvfb display with tauri-driver on it: each WebDriver session it
/// opens starts an app process (and ends it when the session closes).
pub struct Host {
    /// The X display its apps' windows are on (":N").
    pub display: String,
    port: u16,
    _driver: KilledGroup,
    _display: Killed,
}

impl Host {
    /// `theme`: GTK's theme ("Adwaita:dark" for a dark desktop); `data`:
    /// the app's folder (`NATTER_DESKTOP_DIR`).
    pub fn start(theme: &str, data: &Path) -> Host {
        let (display_process, display) = virtual_display();
        let path = links_opener(data);
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
                .env("NATTER_DESKTOP_DIR", data)
                .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
                .env("GTK_THEME", theme)
                .env("PATH", path)
                .env_remove("WAYLAND_DISPLAY")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tauri-driver runs (cargo install tauri-driver; scripts/test installs it)"),
        );
        Host {
            display,
            port,
            _driver: driver,
            _display: display_process,
        }
    }

    /// Starts `binary` in a new session.
    pub async fn launch(&self, binary: &Path) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("tauri:options".into(), json!({"application": binary}));
        let mut session = None;
        wait_until("a WebDriver session with the app", async || {
            session = ClientBuilder::native()
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
                .ok();
            session.is_some()
        })
        .await;
        session.expect("a session")
    }
}

/// The app with its own data, on its own display.
pub struct App {
    pub client: Client,
    pub host: Host,
    pub data: tempfile::TempDir,
}

/// `theme`: GTK's theme for the app ("Adwaita:dark" for a dark desktop).
pub async fn start_app(theme: &str) -> App {
    let data = tempfile::tempdir().expect("temp dir");
    let host = Host::start(theme, data.path());
    let client = host.launch(&app_binary()).await;
    App { client, host, data }
}

/// Waits until the app's window is titled `title` (a regular expression).
pub async fn wait_for_window_title(app: &App, title: &str) {
    wait_until(&format!("a window titled {title}"), async || {
        !super::windows_titled(&app.host.display, title).is_empty()
    })
    .await;
}

/// Ends the app's WebDriver session and waits until its process (the one
/// that claimed `data`) is gone, so that the next start on `data` is not
/// handed over to it.
pub async fn close_and_wait(app: Client, data: &Path) {
    let pid = natter_core::session::Files::new(data)
        .claimant()
        .expect("the app claimed its folder");
    let _ = app.close().await;
    wait_until("the app to end", async || !super::alive(pid)).await;
}

/// Where most app tests start: a server, Bob on its API, the app with Ann
/// signed up in it, and their one-to-one chat (Bob opened it).
pub struct AnnWithBob {
    pub app: App,
    pub bob: Person,
    pub direct: Chat,
    pub server: String,
    // Dropped in this order: the server stops, then its folder goes.
    _stop: tokio::sync::oneshot::Sender<()>,
    _server_data: tempfile::TempDir,
}

pub async fn ann_with_bob() -> AnnWithBob {
    let (server, server_data, stop) = start_server().await;
    let bob = Person::sign_up(&server, "Bob").await;
    let app = start_app("Adwaita").await;
    sign_up_in_app(&app.client, &server, "Ann").await;
    let (_, direct) = bob.direct_chat_with("ann").await;
    AnnWithBob {
        app,
        bob,
        direct,
        server,
        _stop: stop,
        _server_data: server_data,
    }
}

/// Signs `name` up in the app's own form, against `server`.
pub async fn sign_up_in_app(app: &Client, server: &str, name: &str) {
    wait_for_text(app, "#submit", "Log in").await;
    type_into(app, "#server", server).await;
    click(app, "#toggle").await;
    type_into(app, "#name", name).await;
    type_into(
        app,
        "#email",
        &format!("{}@example.org", name.to_lowercase()),
    )
    .await;
    type_into(app, "#password", &format!("{name}'s password")).await;
    click(app, "#submit").await;
    wait_for_text(app, "aside .me", name).await;
}

//! Shared by the `api` and `faults` test binaries; each uses part of it.
#![allow(dead_code)]

//! One way to start the server and talk to it, shared by every test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use natter_server::Application;
use natter_server::config::Config;
use natter_shared::{Chat, Message, ServerFrame, User};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use natter_test_support::{free_port, hold_write_lock};

/// What a token says (its payload, not checked).
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

/// `POST /api/user/token` with `token`.
pub async fn renew(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_with(token, "/api/user/token").await
}

/// A renewal of `token` that must work: the new token.
pub async fn renewed(app: &TestApp, token: &str) -> String {
    let response = renew(app, token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["token"].as_str().expect("a token").to_owned()
}

/// Asserts the answer has `status` and a readable JSON error; returns it.
pub async fn assert_error(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    let error = body["error"].as_str().expect("an error field").to_owned();
    assert!(!error.is_empty());
    error
}

/// Waits until the wall clock is past `second` (seconds since the epoch):
/// tokens count whole seconds.
pub async fn until_past(second: i64) {
    while chrono::Utc::now().timestamp() <= second {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long any wait for a condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const TEST_SECRET: &str = "integration-tests-secret-0123456789abcdef";

/// A token with `claims`, signed as the test servers sign theirs: what a
/// server issued long ago, or another server with the same secret.
pub fn signed_token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .expect("token")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    /// Its PostgreSQL database; None on the embedded SQLite (in `data_dir`).
    pub database_url: Option<String>,
    /// Ends the server started here (`stop`); None for one started elsewhere.
    shutdown: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
    _dir: tempfile::TempDir,
}

/// A signed-up user with their session token.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on a free port with a fresh data folder; `adjust` may change
/// the configuration first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    // Server logs in the test output, filtered by NATTER_TEST_LOG (off by default).
    if let Ok(filter) = std::env::var("NATTER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    config.database_url = backend_database().await;
    adjust(&mut config);
    let app = Application::build(&config).await.expect("server starts");
    let addr = app.local_addr().expect("bound");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        data_dir: config
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().to_path_buf()),
        database_url: config.database_url.clone(),
        shutdown: Some((shutdown, running)),
        _dir: dir,
    }
}

/// What every test server starts from: its data folder, any free port, the
/// tests' signing secret.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(data_dir.to_path_buf());
    config.addr = "127.0.0.1:0".parse().expect("addr");
    config.jwt_secret = Some(TEST_SECRET.into());
    config
}

/// The PostgreSQL server tests use: `NATTER_TEST_POSTGRES`, or the local one.
fn postgres_server() -> String {
    std::env::var("NATTER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_owned()
}

/// The RabbitMQ broker tests use: `NATTER_TEST_AMQP`, or the local one.
pub fn amqp_url() -> String {
    std::env::var("NATTER_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// With `NATTER_TEST_BACKEND=postgres`, every test gets a new, empty
/// database and the suite runs on PostgreSQL; otherwise on the embedded
/// SQLite default.
async fn backend_database() -> Option<String> {
    let wanted = std::env::var("NATTER_TEST_BACKEND").is_ok_and(|backend| backend == "postgres");
    if wanted {
        Some(new_postgres_database().await)
    } else {
        None
    }
}

/// A new, empty database on the test PostgreSQL server, as a URL.
pub async fn new_postgres_database() -> String {
    use sqlx::{Connection, Executor};

    let server = postgres_server();
    let name = format!("natter_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("the test PostgreSQL server answers (NATTER_TEST_POSTGRES)");
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("test database created");
    format!("{server}/{name}")
}

/// How long RabbitMQ keeps a test deployment's partition queues once
/// nothing uses them.
pub const TEST_QUEUE_EXPIRY_MS: u64 = 60_000;

/// `n` nodes sharing one new PostgreSQL database and one RabbitMQ exchange
/// of their own: one deployment, as its users see it.
pub async fn spawn_cluster(n: usize) -> Vec<TestApp> {
    spawn_named_cluster(n).await.0
}

/// Like `spawn_cluster`, with the deployment's name (its exchange, which
/// its queues are named after).
pub async fn spawn_named_cluster(n: usize) -> (Vec<TestApp>, String) {
    let deployment = Deployment::new().await;
    let mut nodes = Vec::with_capacity(n);
    for node in 0..n {
        nodes.push(deployment.spawn_node(node, |_| {}).await);
    }
    (nodes, deployment.exchange)
}

/// A deployment of several nodes: a new PostgreSQL database and a RabbitMQ
/// exchange (and queues) of its own.
pub struct Deployment {
    pub database: String,
    pub exchange: String,
}

impl Deployment {
    pub async fn new() -> Self {
        Deployment {
            database: new_postgres_database().await,
            exchange: format!("natter.test.{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Makes `config` that of the deployment's node number `node`.
    pub fn join(&self, config: &mut Config, node: usize) {
        config.database_url = Some(self.database.clone());
        config.amqp_url = Some(amqp_url());
        config.amqp_exchange = self.exchange.clone();
        config.node_id = Some(format!("node-{node}"));
        config.amqp_queue_expiry_ms = Some(TEST_QUEUE_EXPIRY_MS);
    }

    /// Starts node number `node`; `adjust` may change its configuration.
    pub async fn spawn_node(&self, node: usize, adjust: impl FnOnce(&mut Config)) -> TestApp {
        spawn_app_with(|config| {
            self.join(config, node);
            adjust(config);
        })
        .await
    }
}

impl TestApp {
    /// A client of a server that something else started at `addr` (a load
    /// balancer, a node process).
    pub fn at(addr: SocketAddr) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        TestApp {
            addr,
            // Behind a balancer whose node just died, a request must fail
            // in time rather than hang the test.
            http: reqwest::Client::builder()
                .timeout(PATIENCE)
                .build()
                .expect("HTTP client"),
            data_dir: dir.path().to_path_buf(),
            database_url: None,
            shutdown: None,
            _dir: dir,
        }
    }
}

static NEXT_USER: AtomicUsize = AtomicUsize::new(0);

impl TestApp {
    /// Stops the server as SIGTERM would (it stores what it sequenced) and
    /// waits until it has; its data folder stays.
    pub async fn stop(&mut self) {
        let (shutdown, running) = self.shutdown.take().expect("a server started here");
        let _ = shutdown.send(());
        running
            .await
            .expect("the server's task")
            .expect("a clean stop");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signs up a new user named `name` (with a unique email) over JSON.
    pub async fn sign_up(&self, name: &str) -> TestUser {
        let n = NEXT_USER.fetch_add(1, Ordering::Relaxed);
        let email = format!("{}.{n}@example.org", name.to_lowercase());
        let password = format!("password-of-{name}");
        let response = self
            .http
            .post(self.url("/api/user"))
            .json(&json!({"name": name, "email": email, "password": password}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        TestUser {
            id: body["id"].as_str().expect("id").to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
            email,
            password,
        }
    }

    /// `POST /api/user/login` with `email` and `password`, as answered.
    pub async fn try_log_in(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/user/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("request")
    }

    /// Logs `user` in again (a new session, as on another device): its token.
    pub async fn log_in(&self, user: &TestUser) -> String {
        let response = self.try_log_in(&user.email, &user.password).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// `POST /api/user/logout` with `token`.
    pub async fn log_out(&self, token: &str) -> reqwest::Response {
        self.post_with(token, "/api/user/logout").await
    }

    /// `POST path` without a body, with `token` as the bearer.
    pub async fn post_with(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, user: &TestUser, path: &str) -> reqwest::Response {
        self.get_with(&user.token, path).await
    }

    /// `user`'s chat list (`GET /api/chat`), most recent first.
    pub async fn chats(&self, user: &TestUser) -> Vec<Chat> {
        let response = self.get(user, "/api/chat").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("chats")
    }

    /// `GET path` with `token` as the bearer.
    pub async fn get_with(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, user: &TestUser, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&user.token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, user: &TestUser, path: &str, body: Value) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .bearer_auth(&user.token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Ann and Bob, signed up, with their one-to-one chat: where most
    /// tests start.
    pub async fn ann_and_bob(&self) -> (TestUser, TestUser, Chat) {
        let ann = self.sign_up("Ann").await;
        let bob = self.sign_up("Bob").await;
        let chat = self.open_direct(&ann, &bob).await;
        (ann, bob, chat)
    }

    pub async fn open_direct(&self, user: &TestUser, other: &TestUser) -> Chat {
        let response = self
            .post(user, "/api/chat", json!({"userId": other.id}))
            .await;
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("chat")
    }

    pub async fn create_group(&self, admin: &TestUser, name: &str, members: &[&TestUser]) -> Chat {
        let ids: Vec<&str> = members.iter().map(|user| user.id.as_str()).collect();
        let response = self
            .post(
                admin,
                "/api/chat/group",
                json!({"name": name, "users": ids}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("chat")
    }

    pub async fn send(&self, user: &TestUser, chat: &Chat, content: &str) -> Message {
        let response = self
            .post(
                user,
                "/api/message",
                json!({"chatId": chat.id, "content": content}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("message")
    }

    pub async fn history(&self, user: &TestUser, chat: &Chat, query: &str) -> Vec<Message> {
        let response = self
            .get(user, &format!("/api/message/{}{query}", chat.id))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("messages")
    }

    pub async fn user_info(&self, viewer: &TestUser, id: &str) -> User {
        let response = self.get(viewer, &format!("/api/user/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("user")
    }

    /// Opens an authenticated socket for `user`.
    pub async fn socket(&self, user: &TestUser) -> TestSocket {
        let url = format!("ws://{}/ws?token={}", self.addr, user.token);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("socket opens");
        let mut socket = TestSocket { ws };
        // Everything from now on reaches the socket, on any node.
        let ready = socket.next_frame().await;
        assert_eq!(
            ready,
            ServerFrame::Ready {
                user_id: user.id.clone()
            }
        );
        socket
    }

    /// `GET /health`, as JSON.
    pub async fn health(&self) -> Value {
        self.http
            .get(self.url("/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json")
    }

    /// Asserts that no account with `email` was made: a login with the
    /// password `sign_up_with_pic` uses is refused.
    pub async fn assert_no_account(&self, email: &str) {
        let login = self.try_log_in(email, "a long enough password").await;
        assert_eq!(
            login.status(),
            StatusCode::UNAUTHORIZED,
            "an account {email} was made"
        );
    }

    /// A multipart sign-up with `bytes` as the picture.
    pub async fn sign_up_with_pic(&self, email: &str, bytes: &[u8]) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .text("name", "Pic Tester")
            .text("email", email.to_owned())
            .text("password", "a long enough password")
            .part(
                "pic",
                reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("pic.png"),
            );
        self.http
            .post(self.url("/api/user"))
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// Waits until the server reports `n` open sockets.
    pub async fn wait_for_connections(&self, n: u64) {
        wait_until(&format!("{n} open sockets"), PATIENCE, async || {
            self.health().await["connections"].as_u64() == Some(n)
        })
        .await;
    }
}

/// A 429's `Retry-After`, in seconds.
pub fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

/// Polls `ready` until it holds; fails the test after `patience`.
pub async fn wait_until(what: &str, patience: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a query of this test's PostgreSQL database (`conn`'s) waits
/// for a lock.
pub async fn until_a_query_waits_for_a_lock(conn: &mut sqlx::PgConnection, what: &str) {
    wait_until(what, PATIENCE, async || {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE NOT l.granted AND a.datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("asked");
        waiting > 0
    })
    .await;
}

pub struct TestSocket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl TestSocket {
    pub async fn send_json(&mut self, frame: Value) {
        self.ws
            .send(WsMessage::Text(frame.to_string().into()))
            .await
            .expect("frame sent");
    }

    /// The next text frame, as JSON; pings and pongs are skipped.
    pub async fn next_json(&mut self) -> Value {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        return serde_json::from_str::<Value>(text.as_str()).expect("JSON frame");
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    other => panic!("socket ended or sent something else: {other:?}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a frame in time")
    }

    /// The next frame, or None once the socket has closed.
    pub async fn next_frame_or_close(&mut self) -> Option<ServerFrame> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).expect("a server frame"));
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    /// The next frame, typed.
    pub async fn next_frame(&mut self) -> ServerFrame {
        serde_json::from_value(self.next_json().await).expect("a server frame")
    }

    /// Skips frames until one satisfies `wanted`, and returns it.
    pub async fn next_where(&mut self, wanted: impl Fn(&ServerFrame) -> bool) -> ServerFrame {
        loop {
            let frame = self.next_frame().await;
            if wanted(&frame) {
                return frame;
            }
        }
    }

    /// The next new-message frame's message.
    pub async fn next_message(&mut self) -> Message {
        match self
            .next_where(|frame| matches!(frame, ServerFrame::Message { .. }))
            .await
        {
            ServerFrame::Message { message } => message,
            _ => unreachable!(),
        }
    }
}

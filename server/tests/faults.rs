//! Faults in a two-node deployment, with the real pieces: `natter-server`
//! processes sharing PostgreSQL and RabbitMQ, behind HAProxy. These tests
//! kill and restart things, so they run one at a time, in their own binary.

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/relay.rs"]
mod relay;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use helpers::{
    TEST_QUEUE_EXPIRY_MS, TEST_SECRET, TestApp, TestSocket, TestUser, amqp_url, free_port,
    hold_write_lock, new_postgres_database, wait_until,
};
use natter_shared::{Message, ServerFrame};
use reqwest::StatusCode;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// One fault at a time: they share RabbitMQ.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Processes start, die and come back here: waits are longer than elsewhere.
const FAULT_PATIENCE: Duration = Duration::from_secs(30);

/// A `natter-server` process.
struct Node {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

async fn start_node(name: &str, database: &str, exchange: &str) -> Node {
    start_node_with(name, database, exchange, &[]).await
}

/// What the nodes log to the test's output: warnings, unless
/// `NATTER_TEST_LOG` asks for more (as it does for in-process servers), so
/// that a loop hunting a rare failure can keep the nodes' whole story.
fn node_log_filter() -> String {
    std::env::var("NATTER_TEST_LOG").unwrap_or_else(|_| "warn".into())
}

/// The `natter-server` command of one deployment, with its settings.
fn server_command(name: &str, database: &str, exchange: &str, data: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter-server"));
    command
        .env("NATTER_DATA_DIR", data)
        .env("NATTER_DATABASE_URL", database)
        .env("NATTER_AMQP_URL", amqp_url())
        .env("NATTER_AMQP_EXCHANGE", exchange)
        .env("NATTER_JWT_SECRET", TEST_SECRET)
        .env("NATTER_NODE_ID", name)
        .env(
            "NATTER_AMQP_QUEUE_EXPIRY_MS",
            TEST_QUEUE_EXPIRY_MS.to_string(),
        )
        .env("NATTER_LOG", node_log_filter())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// A node with more settings (`NATTER_PERSIST=false` leaves sequencing and
/// storing to others).
async fn start_node_with(
    name: &str,
    database: &str,
    exchange: &str,
    settings: &[(&str, &str)],
) -> Node {
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = server_command(name, database, exchange, data.path())
        .env("NATTER_ADDR", format!("127.0.0.1:{port}"))
        .envs(settings.iter().copied())
        .spawn()
        .expect("node starts");
    wait_healthy(port).await;
    Node {
        child,
        port,
        _data: data,
    }
}

/// Waits until the server on `port` answers its health check.
async fn wait_healthy(port: u16) {
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/health");
    wait_until("a server to be healthy", FAULT_PATIENCE, async || {
        http.get(&health)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
}

/// Stops `node` as an operator would (SIGTERM) and checks that it exits
/// cleanly, in time.
async fn stop_cleanly(node: &mut Node) {
    let pid = node.child.id().expect("the node runs");
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let exit = tokio::time::timeout(FAULT_PATIENCE, node.child.wait())
        .await
        .expect("the node stops in time")
        .expect("exit status");
    assert!(exit.success(), "a clean stop: {exit}");
}

/// HAProxy in front of the nodes, checking their health every 200 ms.
struct Balancer {
    _child: Child,
    addr: SocketAddr,
    _config: tempfile::NamedTempFile,
}

async fn start_balancer(nodes: &[&Node]) -> Balancer {
    let port = free_port();
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| format!("  server node{i} 127.0.0.1:{} check\n", node.port))
        .collect();
    let config_text = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
         timeout tunnel 1h\n  option redispatch\n  retries 3\n\
         frontend natter\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n  option httpchk GET /health\n  \
         default-server inter 200ms fall 1 rise 1\n{servers}"
    );
    let mut config = tempfile::NamedTempFile::new().expect("config file");
    std::io::Write::write_all(&mut config, config_text.as_bytes()).expect("config written");
    let child = Command::new(system_tool("haproxy"))
        .args(["-db", "-f"])
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy is installed (scripts/test installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let http = reqwest::Client::new();
    wait_until("HAProxy to pass requests", FAULT_PATIENCE, async || {
        http.get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
    Balancer {
        _child: child,
        addr,
        _config: config,
    }
}

/// Opens a socket through `app`, retrying while no node can take it.
async fn connect(app: &TestApp, user: &TestUser) -> TestSocket {
    let url = format!("ws://{}/ws?token={}", app.addr, user.token);
    let deadline = tokio::time::Instant::now() + FAULT_PATIENCE;
    loop {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            let mut socket = TestSocket { ws };
            if let Some(ServerFrame::Ready { .. }) = socket.next_frame_or_close().await {
                return socket;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lowest seq not seen yet, counting from 1.
fn next_missing(seen: &BTreeMap<i64, Message>) -> i64 {
    let mut next = 1;
    while seen.contains_key(&next) {
        next += 1;
    }
    next
}

/// A member's app: reads its socket, reconnects when it drops, and fills gaps
/// from history, as the desktop app does.
async fn follow(
    app: Arc<TestApp>,
    user: TestUser,
    chat_id: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (BTreeMap<i64, Message>, usize) {
    let mut seen = BTreeMap::new();
    let mut reconnects = 0;
    let mut socket = connect(&app, &user).await;
    loop {
        tokio::select! {
            frame = socket.next_frame_or_close() => match frame {
                Some(ServerFrame::Message { message }) => {
                    if let Some(earlier) = seen.insert(message.seq, message.clone()) {
                        assert_eq!(earlier, message, "a seq never names two messages");
                    }
                }
                Some(_) => {}
                None => {
                    reconnects += 1;
                    socket = connect(&app, &user).await;
                    catch_up(&app, &user, &chat_id, &mut seen).await;
                }
            },
            // Sees a stop sent while it was busy reconnecting, too.
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
        }
    }
    catch_up(&app, &user, &chat_id, &mut seen).await;
    (seen, reconnects)
}

async fn catch_up(
    app: &TestApp,
    user: &TestUser,
    chat_id: &str,
    seen: &mut BTreeMap<i64, Message>,
) {
    let deadline = tokio::time::Instant::now() + FAULT_PATIENCE;
    loop {
        let after = next_missing(seen) - 1;
        let response = app
            .get(
                user,
                &format!("/api/message/{chat_id}?after={after}&limit=200"),
            )
            .await;
        if !response.status().is_success() {
            // The balancer may still send us to the dead node for a moment.
            assert!(
                tokio::time::Instant::now() < deadline,
                "history never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let page: Vec<Message> = response.json().await.expect("messages");
        if page.is_empty() {
            return;
        }
        for message in page {
            seen.insert(message.seq, message);
        }
    }
}

/// Sends `count` messages as `user`, retrying each with its clientId until it
/// is acked (a real client retries through a dead node the same way).
async fn send_all(
    app: Arc<TestApp>,
    user: TestUser,
    chat_id: String,
    count: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<Message> {
    let mut stored = Vec::with_capacity(count);
    for i in 0..count {
        let body = json!({"chatId": chat_id, "content": format!("{} #{i}", user.email), "clientId": format!("{}-{i}", user.id)});
        let deadline = tokio::time::Instant::now() + FAULT_PATIENCE;
        loop {
            let response = app
                .http
                .post(app.url("/api/message"))
                .bearer_auth(&user.token)
                .json(&body)
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    stored.push(response.json::<Message>().await.expect("message"));
                    acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                _ => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "a send never succeeded"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_mid_burst_loses_no_acked_message_and_its_clients_catch_up() {
    let _serial = SERIAL.lock().await;
    let database = new_postgres_database().await;
    let exchange = format!("natter.test.{}", uuid::Uuid::new_v4().simple());
    let mut node_a = start_node("node-a", &database, &exchange).await;
    let node_b = start_node("node-b", &database, &exchange).await;
    let balancer = start_balancer(&[&node_a, &node_b]).await;
    let app = Arc::new(TestApp::at(balancer.addr));

    let mut users = Vec::new();
    for i in 0..6 {
        users.push(app.sign_up(&format!("Member{i}")).await);
    }
    let others: Vec<&TestUser> = users[1..].iter().collect();
    let group = app.create_group(&users[0], "Burst", &others).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let followers: Vec<_> = users
        .iter()
        .map(|user| {
            tokio::spawn(follow(
                app.clone(),
                user.clone(),
                group.id.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    // Every follower is connected (round robin put half on each node).
    let counts = async || {
        let mut total = 0;
        for port in [node_a.port, node_b.port] {
            let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
                .await
                .expect("health")
                .json()
                .await
                .expect("json");
            total += health["connections"].as_u64().unwrap_or(0);
        }
        total
    };
    wait_until("every follower to connect", FAULT_PATIENCE, async || {
        counts().await == 6
    })
    .await;

    let per_sender = 25;
    let acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = users
        .iter()
        .map(|user| {
            tokio::spawn(send_all(
                app.clone(),
                user.clone(),
                group.id.clone(),
                per_sender,
                acked.clone(),
            ))
        })
        .collect();
    wait_until("a third of the burst", FAULT_PATIENCE, async || {
        acked.load(Ordering::SeqCst) >= per_sender * 6 / 3
    })
    .await;
    node_a.child.start_kill().expect("kill -9 node A");
    node_a.child.wait().await.expect("node A is gone");

    let mut acked_messages = Vec::new();
    for sender in senders {
        acked_messages.extend(sender.await.expect("sender"));
    }
    assert_eq!(acked_messages.len(), per_sender * 6);

    // Stored exactly once each, in gap-free seq order.
    let reader = &users[0];
    let mut history = BTreeMap::new();
    catch_up(&app, reader, &group.id, &mut history).await;
    let seqs: Vec<i64> = history.keys().copied().collect();
    assert_eq!(seqs, (1..=(per_sender * 6) as i64).collect::<Vec<_>>());
    let by_id: HashMap<&str, &Message> = history.values().map(|m| (m.id.as_str(), m)).collect();
    for message in &acked_messages {
        assert_eq!(
            by_id.get(message.id.as_str()),
            Some(&message),
            "acked message stored as acked"
        );
    }

    // Every member's app ends with exactly the stored history; those that
    // were on node A reconnected through the balancer.
    stop.send_replace(true);
    let mut reconnected = 0;
    for follower in followers {
        let (seen, reconnects) = follower.await.expect("follower");
        assert_eq!(seen, history);
        reconnected += usize::from(reconnects > 0);
    }
    assert!(reconnected >= 1, "some members were on the killed node");
}

/// Restarts the local RabbitMQ when dropped, whatever happened in the test.
struct RestartRabbitOnDrop;

impl Drop for RestartRabbitOnDrop {
    fn drop(&mut self) {
        let _ = as_root("rabbitmqctl").arg("start_app").output();
    }
}

/// Two nodes on a new database and exchange, each reached directly; Ann
/// (through node A, started first: the active sequencer of every partition)
/// has written "before" to Bob, whose socket on node B got it.
struct TwoNodes {
    _nodes: [Node; 2],
    /// Node A's id (unique per test: RabbitMQ lists its connections by it).
    a_id: String,
    /// Node B's, likewise.
    b_id: String,
    /// The names of the deployment's RabbitMQ objects start with it.
    exchange: String,
    a: TestApp,
    b: TestApp,
    ann: TestUser,
    bob: TestUser,
    chat: natter_shared::Chat,
    bob_socket: TestSocket,
    before: Message,
}

/// `a_settings`: more settings for node A.
async fn two_nodes(a_settings: &[(&str, &str)]) -> TwoNodes {
    let database = new_postgres_database().await;
    let exchange = format!("natter.test.{}", uuid::Uuid::new_v4().simple());
    let a_id = format!("node-a-{}", uuid::Uuid::new_v4().simple());
    let b_id = format!("node-b-{}", uuid::Uuid::new_v4().simple());
    let node_a = start_node_with(&a_id, &database, &exchange, a_settings).await;
    let node_b = start_node(&b_id, &database, &exchange).await;
    let a = TestApp::at(format!("127.0.0.1:{}", node_a.port).parse().expect("addr"));
    let b = TestApp::at(format!("127.0.0.1:{}", node_b.port).parse().expect("addr"));
    let (ann, bob, chat) = a.ann_and_bob().await;
    let mut bob_socket = connect(&b, &bob).await;
    let before = a.send(&ann, &chat, "before").await;
    assert_eq!(bob_socket.next_message().await, before);
    TwoNodes {
        _nodes: [node_a, node_b],
        a_id,
        b_id,
        exchange,
        a,
        b,
        ann,
        bob,
        chat,
        bob_socket,
        before,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_restart_gives_clear_errors_then_nodes_reconnect_by_themselves() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a,
        b,
        ann,
        bob,
        chat,
        mut bob_socket,
        ..
    } = two_nodes(&[]).await;
    let group = a.create_group(&ann, "Team", &[&bob]).await;
    // Bob hears of the group (the socket's frames are in order from here).
    bob_socket
        .next_where(|frame| matches!(frame, ServerFrame::Chat { .. }))
        .await;

    let _restart = RestartRabbitOnDrop;
    rabbitmqctl(&["stop_app"]);

    // A member is not removed while the chat's sequencer (maybe on another
    // node) cannot hear of it: it would go on with the members it knew.
    let remove = json!({"chatId": group.id, "userId": bob.id});
    wait_until("a refused removal", FAULT_PATIENCE, async || {
        let response = a.put(&ann, "/api/chat/groupremove", remove.clone()).await;
        assert_ne!(response.status(), StatusCode::OK, "not removed unheard");
        response.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let still: natter_shared::Chat = a
        .get(&ann, &format!("/api/chat/{}", group.id))
        .await
        .json()
        .await
        .expect("chat");
    assert!(
        still.users.iter().any(|user| user.id == bob.id),
        "bob is still in"
    );

    // During the outage: a clear error, never a false ack.
    let during = json!({"chatId": chat.id, "content": "during", "clientId": "outage-1"});
    wait_until("a refused send", FAULT_PATIENCE, async || {
        let response = a.post(&ann, "/api/message", during.clone()).await;
        assert_ne!(
            response.status(),
            StatusCode::CREATED,
            "no ack while the broker is down"
        );
        response.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;

    rabbitmqctl(&["start_app"]);

    // The nodes reconnect by themselves: the retried send is acked and reaches Bob on node B.
    let mut retried = None;
    wait_until("the send to go through again", FAULT_PATIENCE, async || {
        let response = a.post(&ann, "/api/message", during.clone()).await;
        if response.status().is_success() {
            retried = Some(response.json::<Message>().await.expect("message"));
        }
        retried.is_some()
    })
    .await;
    let retried = retried.expect("acked");
    assert_eq!(
        retried.seq, 2,
        "the send refused during the outage was stored once"
    );
    // Node B closed Bob's socket when it lost the broker (he could have
    // missed events); he reconnects, and is live again once it is back.
    assert!(
        bob_socket.next_frame_or_close().await.is_none(),
        "bob's socket was closed"
    );
    let mut bob_socket = connect(&b, &bob).await;
    let after = a.send(&ann, &chat, "after").await;
    // Node A's event link may come back after its pipeline's: "during" then
    // reaches B late, and may arrive on the new socket first (at least
    // once; the app drops what it has). Nothing else may come before "after".
    let mut next = bob_socket.next_message().await;
    if next.id == retried.id {
        next = bob_socket.next_message().await;
    }
    assert_eq!(next, after);
    let history: Vec<Message> = a.history(&bob, &chat, "").await;
    assert_eq!(
        history
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["before", "during", "after"]
    );
}

/// A client that waits as long as a fault may take (a send may wait out
/// the server's patience and more). One per test: a client's pool is tied
/// to the runtime it first ran on.
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FAULT_PATIENCE)
        .build()
        .expect("client")
}

/// `user`'s `POST /api/message` of `body` to `node`, through `patient`.
fn send_patiently(
    patient: &reqwest::Client,
    node: &TestApp,
    user: &TestUser,
    body: &serde_json::Value,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    patient
        .post(node.url("/api/message"))
        .bearer_auth(&user.token)
        .json(body)
        .send()
}

/// A command for a tool only root may run (Debian's `rabbitmqctl` and
/// `pg_ctlcluster` refuse other users): through `sudo -n` when the tests do
/// not run as root, as scripts/lib.sh's `as_root` does.
fn as_root(tool: &str) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|id| id.stdout.trim_ascii() == b"0");
    if root {
        std::process::Command::new(system_tool(tool))
    } else {
        let mut command = std::process::Command::new("sudo");
        command.arg("-n").arg(tool);
        command
    }
}

/// A system tool by its path in /usr/sbin when it is there: a user's PATH
/// on Debian leaves that folder out.
fn system_tool(tool: &str) -> std::path::PathBuf {
    let sbin = std::path::Path::new("/usr/sbin").join(tool);
    if sbin.exists() { sbin } else { tool.into() }
}

/// Controls the test PostgreSQL server: `NATTER_TEST_POSTGRES_CTL <action>`
/// when scripts/test started a private one, else Debian's pg_ctlcluster for
/// each cluster it knows. True when it worked.
fn postgres_ctl(action: &str) -> bool {
    let output = match std::env::var("NATTER_TEST_POSTGRES_CTL") {
        Ok(ctl) => std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{ctl} {action}"))
            .output(),
        Err(_) => {
            let versions = std::fs::read_dir("/etc/postgresql").expect("Debian's PostgreSQL");
            let version = versions
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .next()
                .expect("a PostgreSQL cluster");
            as_root("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, "main", action])
                .output()
        }
    };
    match output {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "PostgreSQL {action}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
        Err(err) => {
            eprintln!("PostgreSQL {action}: {err}");
            false
        }
    }
}

/// PostgreSQL stopped; started again when dropped, whatever happened.
struct PostgresOutage {
    over: bool,
}

impl PostgresOutage {
    fn begin() -> Self {
        assert!(postgres_ctl("stop"), "PostgreSQL stops");
        PostgresOutage { over: false }
    }

    fn end(mut self) {
        self.over = true;
        assert!(postgres_ctl("start"), "PostgreSQL starts again");
    }
}

impl Drop for PostgresOutage {
    fn drop(&mut self) {
        if !self.over {
            postgres_ctl("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_stopped_for_ten_seconds_sends_are_acked_and_delivered_then_stored() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a,
        b,
        ann,
        bob,
        chat,
        mut bob_socket,
        before,
        ..
    } = two_nodes(&[]).await;

    // pg_ctlcluster returns once the server is down.
    let outage = PostgresOutage::begin();
    // The balancer keeps the nodes: they still carry messages (the check
    // reports the last pings, so the outage shows within a few seconds).
    wait_until(
        "the health check to see PostgreSQL gone",
        Duration::from_secs(10),
        async || b.health().await["database"] == "unreachable",
    )
    .await;
    assert_eq!(b.health().await["status"], "degraded");
    // Through both nodes, a send every 250 ms for ten seconds, and at
    // least 20 sends however slow each is.
    let sending_from = tokio::time::Instant::now();
    let mut during = Vec::new();
    let mut i = 0;
    while sending_from.elapsed() < Duration::from_secs(10) || during.len() < 20 {
        let node = if i % 2 == 0 { &a } else { &b };
        let body = json!({"chatId": chat.id, "content": format!("during #{i}"), "clientId": format!("pg-outage-{i}")});
        let response = node.post(&ann, "/api/message", body).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "acked without the database"
        );
        let message: Message = response.json().await.expect("message");
        assert_eq!(message.seq, before.seq + 1 + i);
        assert_eq!(
            bob_socket.next_message().await,
            message,
            "delivered at once"
        );
        during.push(message);
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    outage.end();

    // Once it is back, every message is stored, once, in order.
    let mut expected = vec![before];
    expected.extend(during);
    wait_until("the messages to be stored", FAULT_PATIENCE, async || {
        let response = b
            .get(&bob, &format!("/api/message/{}?limit=100", chat.id))
            .await;
        response.status().is_success()
            && response.json::<Vec<Message>>().await.expect("messages") == expected
    })
    .await;
}

/// While PostgreSQL is away, a sequencer holds at most its limit of
/// messages delivered and unstored (`NATTER_UNSTORED_LIMIT`, 3 here): the
/// next send waits in RabbitMQ, its sender is told to try again, and once
/// the database is back it is stored, once, and its retry says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_unstored_limit_sends_wait_in_rabbitmq_until_the_database_is_back() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a,
        ann,
        bob,
        chat,
        mut bob_socket,
        before,
        ..
    } = two_nodes(&[("NATTER_UNSTORED_LIMIT", "3")]).await;
    let patient = patient_client();
    let send = |n: usize| {
        let body = json!({"chatId": chat.id, "content": format!("held {n}"), "clientId": format!("unstored-{n}")});
        send_patiently(&patient, &a, &ann, &body)
    };

    let outage = PostgresOutage::begin();
    for n in 0..3 {
        let answer = send(n).await.expect("an answer");
        assert_eq!(answer.status(), StatusCode::CREATED, "within the limit");
        bob_socket.next_message().await;
    }
    let past = send(3).await.expect("an answer in time");
    assert_eq!(past.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = past.json().await.expect("a JSON error");
    assert_eq!(
        body["error"],
        "the message was not confirmed in time: send it again with the same clientId"
    );
    outage.end();

    wait_until("the retry to be acked", FAULT_PATIENCE, async || {
        send(3)
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
    let history = a
        .history(&bob, &chat, &format!("?after={}", before.seq))
        .await;
    let contents: Vec<_> = history.iter().map(|m| m.content.clone()).collect();
    assert_eq!(
        contents,
        ["held 0", "held 1", "held 2", "held 3"],
        "each stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persist_process_sequences_and_stores_for_nodes_that_do_not() {
    let _serial = SERIAL.lock().await;
    let database = new_postgres_database().await;
    let exchange = format!("natter.test.{}", uuid::Uuid::new_v4().simple());
    let node = start_node_with(
        "serving-only",
        &database,
        &exchange,
        &[("NATTER_PERSIST", "false")],
    )
    .await;
    let app = TestApp::at(format!("127.0.0.1:{}", node.port).parse().expect("addr"));
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut bob_socket = connect(&app, &bob).await;

    // Nobody sequences yet: after waiting its while, the send is not acked,
    // and says so.
    let early = reqwest::Client::new()
        .post(app.url("/api/message"))
        .bearer_auth(&ann.token)
        .json(&json!({"chatId": chat.id, "content": "early", "clientId": "early"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);

    let data = tempfile::tempdir().expect("temp dir");
    let _persister = server_command("persister", &database, &exchange, data.path())
        .arg("persist")
        .spawn()
        .expect("natter-server persist starts");
    // The queue kept the early message; the persister sequences it first.
    // Sent again under its clientId until the persister, still starting,
    // takes it in the server's time.
    let patient = patient_client();
    let body = json!({"chatId": chat.id, "content": "first", "clientId": "first"});
    let mut first = None;
    wait_until(
        "the persister to take a message",
        FAULT_PATIENCE,
        async || {
            let Ok(response) = send_patiently(&patient, &app, &ann, &body).await else {
                return false;
            };
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                return false;
            }
            assert_eq!(response.status(), StatusCode::CREATED);
            first = Some(response.json::<Message>().await.expect("message"));
            true
        },
    )
    .await;
    let first = first.expect("sent");
    assert_eq!(first.seq, 2);
    let mut delivered = vec![
        bob_socket.next_message().await,
        bob_socket.next_message().await,
    ];
    delivered.sort_by_key(|message| message.seq);
    assert_eq!(delivered[1], first);
    let history = app.history(&bob, &chat, "").await;
    assert_eq!(history, delivered, "stored by the persister, in order");
    assert_eq!(history[0].content, "early");
}

/// RabbitMQ closes node A's event link alone (the one to the other nodes)
/// and A takes 3 s to reconnect it, while its message pipeline works on. A
/// message A sequences meanwhile reaches Bob on node B late rather than
/// never: A keeps it for the other nodes until the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sequenced_while_the_event_link_is_away_still_reaches_other_nodes() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a_id,
        a,
        ann,
        chat,
        mut bob_socket,
        ..
    } = two_nodes(&[("NATTER_FANOUT_RETRY_MS", "3000")]).await;

    break_event_link(&a, &a_id).await;
    let during = a.send(&ann, &chat, "during").await;
    assert_eq!(bob_socket.next_message().await, during);
}

/// As above, but node A may keep only 1 KiB of events for the other nodes
/// while its link is away: more is sent, so A drops them and, when the link
/// is back, tells the other nodes so. Node B closes Bob's socket (his app
/// then catches up from history) instead of leaving him without the
/// messages it never got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_while_the_event_link_is_away_close_the_other_nodes_sockets() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a_id,
        a,
        ann,
        bob,
        chat,
        mut bob_socket,
        before,
        ..
    } = two_nodes(&[
        ("NATTER_FANOUT_RETRY_MS", "3000"),
        ("NATTER_FANOUT_BUFFER_KIB", "1"),
    ])
    .await;

    break_event_link(&a, &a_id).await;
    let mut sent = vec![before];
    for n in 0..8 {
        sent.push(
            a.send(&ann, &chat, &format!("during {n} {}", "x".repeat(200)))
                .await,
        );
    }
    let closed = tokio::time::timeout(FAULT_PATIENCE, async {
        while bob_socket.next_frame_or_close().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "node B closes Bob's socket");
    assert_eq!(
        a.history(&bob, &chat, "").await,
        sent,
        "the catch-up has all"
    );
}

/// Node A is stopped (SIGTERM) while a message it sequenced waits for its
/// event link (away for 3 s): A waits for the link and hands the event over
/// before it exits, so Bob on node B still gets the message live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_hands_over_the_events_still_waiting_for_its_link() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes: mut nodes,
        a_id,
        exchange,
        a,
        ann,
        chat,
        mut bob_socket,
        ..
    } = two_nodes(&[("NATTER_FANOUT_RETRY_MS", "3000")]).await;

    break_event_link(&a, &a_id).await;
    let during = a.send(&ann, &chat, "said just before A stops").await;
    // Stored and acked to RabbitMQ: no other sequencer will deliver it again.
    wait_until(
        "RabbitMQ to have no unacked messages for the deployment",
        FAULT_PATIENCE,
        async || unacked_messages(&exchange) == 0,
    )
    .await;
    stop_cleanly(&mut nodes[0]).await;
    assert_eq!(bob_socket.next_message().await, during);
}

/// Node A, the sequencer of every partition, is stopped (SIGTERM) in the
/// middle of a burst Ann sends through node B: A stores what it sequenced,
/// publishes its events and hands its partitions to B, so Bob on B gets
/// every message live and the history has each once, without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_mid_burst_hands_its_partitions_over_and_no_message_is_missed() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes: mut nodes,
        b,
        ann,
        bob,
        chat,
        mut bob_socket,
        ..
    } = two_nodes(&[]).await;
    let b = Arc::new(b);
    let count = 150;
    let acked = Arc::new(AtomicUsize::new(0));
    let burst = tokio::spawn(send_all(
        b.clone(),
        ann.clone(),
        chat.id.clone(),
        count,
        acked.clone(),
    ));
    wait_until("a third of the burst", FAULT_PATIENCE, async || {
        acked.load(Ordering::SeqCst) >= count / 3
    })
    .await;
    stop_cleanly(&mut nodes[0]).await;
    let sent = burst.await.expect("the burst");

    // Live: every message reaches Bob's socket, once: nothing A sequenced
    // is sequenced again by B.
    // (B sequences in queue order: anything sent again comes before this.)
    let last = b.send(&ann, &chat, "after the stop").await;
    let mut live = BTreeMap::new();
    loop {
        let message = bob_socket.next_message().await;
        if message.id == last.id {
            break;
        }
        let seq = message.seq;
        assert!(live.insert(seq, message).is_none(), "seq {seq} came twice");
    }
    let by_seq: BTreeMap<i64, Message> = sent.iter().map(|m| (m.seq, m.clone())).collect();
    assert_eq!(live, by_seq);
    // Stored: after "before" (seq 1), one seq each, no gaps.
    let history = b
        .history(&bob, &chat, &format!("?after=1&limit={count}"))
        .await;
    assert_eq!(history, by_seq.into_values().collect::<Vec<_>>());
    assert_eq!(last.seq, count as i64 + 2, "no seq taken twice or skipped");
}

/// Runs `rabbitmqctl` with `args`; its output.
fn rabbitmqctl(args: &[&str]) -> String {
    let output = as_root("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Puts RabbitMQ's memory high watermark back when dropped, whatever
/// happened in the test: the Erlang term it had (a fraction, or
/// `{absolute,N}`), set as it was read.
struct RestoreWatermark(String);

/// Sets RabbitMQ's memory watermark to 0, so that its memory alarm goes off
/// at once and it blocks publishers; the watermark it had comes back when
/// the guard is dropped.
fn raise_memory_alarm() -> RestoreWatermark {
    let watermark = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
    let restore = RestoreWatermark(watermark.trim().to_owned());
    rabbitmqctl(&["set_vm_memory_high_watermark", "0"]);
    restore
}

impl Drop for RestoreWatermark {
    fn drop(&mut self) {
        let set = format!(
            "vm_memory_monitor:set_vm_memory_high_watermark({}).",
            self.0
        );
        let restored = as_root("rabbitmqctl").args(["eval", &set]).status();
        if !restored.is_ok_and(|status| status.success()) {
            eprintln!("RabbitMQ's memory watermark is still 0: run rabbitmqctl {set:?}");
        }
    }
}

/// RabbitMQ raises its memory alarm, which blocks every publisher: a send
/// gets a clear 503 in time rather than hanging, and once the alarm is over
/// its retry (same clientId) finds the message, stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_rabbitmq_blocks_publishers_a_send_fails_in_time_and_its_retry_is_stored_once() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a,
        ann,
        bob,
        chat,
        ..
    } = two_nodes(&[]).await;
    let restore = raise_memory_alarm();

    let body = json!({"chatId": chat.id, "content": "during the alarm", "clientId": "alarm-1"});
    let patient = patient_client();
    let send = || send_patiently(&patient, &a, &ann, &body);
    let refused = send().await.expect("an answer in time");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = refused.json().await.expect("json");
    let error = error["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("same clientId"), "{error}");

    drop(restore);
    let mut retried = None;
    wait_until(
        "a retry to be acked",
        FAULT_PATIENCE,
        async || match send().await {
            Ok(response) if response.status().is_success() => {
                retried = response.json::<Message>().await.ok();
                retried.is_some()
            }
            _ => false,
        },
    )
    .await;
    let retried = retried.expect("acked");
    let history = a.history(&bob, &chat, "?after=1").await;
    assert_eq!(history, [retried], "stored once");
}

/// While RabbitMQ blocks publishers, a partition's publisher holds at most
/// `NATTER_PUBLISH_BACKLOG` sends: past it a send is refused at once (not
/// after the 10 s wait), and once the alarm is over every send's retry is
/// stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_publish_backlog_a_send_is_refused_at_once_and_retries_are_stored_once() {
    const SENDS: usize = 6;
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        a,
        ann,
        bob,
        chat,
        ..
    } = two_nodes(&[("NATTER_PUBLISH_BACKLOG", "2")]).await;
    let restore = raise_memory_alarm();

    let patient = patient_client();
    let send = |n: usize| {
        let body = json!({"chatId": chat.id, "content": format!("held {n}"), "clientId": format!("held-{n}")});
        send_patiently(&patient, &a, &ann, &body)
    };
    // At most two in the message RabbitMQ holds back and two waiting
    // behind it: of six sends to one chat, at least two are refused.
    let answers = futures_util::future::join_all((0..SENDS).map(send)).await;
    let mut errors = Vec::new();
    for answer in answers {
        let answer = answer.expect("an answer in time");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let error: serde_json::Value = answer.json().await.expect("json");
        errors.push(error["error"].as_str().unwrap_or_default().to_owned());
    }
    let refused = errors
        .iter()
        .filter(|error| error.contains("not keeping up"))
        .count();
    assert!(refused >= 2, "{errors:?}");

    drop(restore);
    for n in 0..SENDS {
        wait_until("a retry to be acked", FAULT_PATIENCE, async || {
            send(n)
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;
    }
    let history = a.history(&bob, &chat, "?after=1").await;
    let mut contents: Vec<_> = history.iter().map(|m| m.content.clone()).collect();
    contents.sort();
    let expected: Vec<_> = (0..SENDS).map(|n| format!("held {n}")).collect();
    assert_eq!(contents, expected, "each stored once");
}

/// RabbitMQ closes node A's event link (its connection for events between
/// nodes) and A notices.
async fn break_event_link(a: &TestApp, a_id: &str) {
    close_connection(&format!("natter-server {a_id}"));
    wait_until(
        "node A to see its event link gone",
        FAULT_PATIENCE,
        async || a.health().await["nodes"] == "unreachable",
    )
    .await;
}

/// Messages delivered and not acked in the partition queues of `exchange`.
fn unacked_messages(exchange: &str) -> u64 {
    let listed = rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_unacknowledged",
    ]);
    listed
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .filter(|(name, _)| name.starts_with(&format!("{exchange}.messages.")))
        .map(|(_, count)| count.trim().parse::<u64>().unwrap_or(u64::MAX))
        .sum()
}

/// Closes the one RabbitMQ connection named `name` (as the broker lists it).
fn close_connection(name: &str) {
    rabbitmqctl(&[
        "close_connection",
        &connection_pid(name),
        "a test closes it",
    ]);
}

/// The broker's process id of the one connection named `name`.
fn connection_pid(name: &str) -> String {
    let listing = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    let quoted = [format!("\"{name}\""), format!("<<\"{name}\">>")];
    let pid = listing
        .lines()
        .find(|line| quoted.iter().any(|q| line.contains(q.as_str())))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {name:?} in:\n{listing}"));
    pid.to_owned()
}

/// The queue the connection `connection_pid` owns (a node's event queue is
/// exclusive to its event link).
fn queue_owned_by(connection_pid: &str) -> String {
    let listed = rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "owner_pid",
    ]);
    listed
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .find(|(_, owner)| owner.trim() == connection_pid)
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| panic!("no queue owned by {connection_pid} in:\n{listed}"))
}

/// Makes RabbitMQ refuse (nack) whatever is published to `queue` while it
/// lives; the policy goes when dropped.
struct RefusePublishes(&'static str);

impl RefusePublishes {
    fn on(queue: &str) -> Self {
        let pattern = format!("^{}$", queue.replace('.', "\\."));
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "natter-test-refuse",
            &pattern,
            r#"{"max-length":0,"overflow":"reject-publish"}"#,
        ]);
        RefusePublishes("natter-test-refuse")
    }
}

impl Drop for RefusePublishes {
    fn drop(&mut self) {
        let _ = as_root("rabbitmqctl")
            .args(["clear_policy", self.0])
            .output();
    }
}

/// RabbitMQ refuses (nacks) node A's batch of events, because node B's
/// queue refuses everything for a while: A keeps the batch and sends it
/// again on a new link, so Bob on B gets the message once RabbitMQ takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_rabbitmq_refuses_are_sent_again_until_it_takes_them() {
    let _serial = SERIAL.lock().await;
    let TwoNodes {
        _nodes,
        b_id,
        a,
        ann,
        chat,
        mut bob_socket,
        ..
    } = two_nodes(&[]).await;
    let b_queue = queue_owned_by(&connection_pid(&format!("natter-server {b_id}")));
    let refusing = RefusePublishes::on(&b_queue);
    let during = a.send(&ann, &chat, "while B's queue refuses").await;
    // A's link is redone after the refusal (its health says so on the way).
    wait_until(
        "node A to redo its event link",
        FAULT_PATIENCE,
        async || a.health().await["nodes"] == "unreachable",
    )
    .await;
    drop(refusing);
    assert_eq!(bob_socket.next_message().await, during);
}

/// A `natter-server` on the embedded default (SQLite in `data`, no
/// RabbitMQ), on `port`.
async fn start_embedded(data: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_natter-server"))
        .env("NATTER_DATA_DIR", data)
        .env("NATTER_ADDR", format!("127.0.0.1:{port}"))
        .env("NATTER_JWT_SECRET", TEST_SECRET)
        .env("NATTER_LOG", node_log_filter())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    wait_healthy(port).await;
    child
}

/// The embedded server is killed (`kill -9`) after delivering a message it
/// had not stored yet. Started again, it gives that seq to no other
/// message (apps hold it), and the message itself is stored when its
/// sender's app resends it (same clientId), under a later seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_killed_before_storing_what_it_delivered_reuses_none_of_its_seqs() {
    let _serial = SERIAL.lock().await;
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut server = start_embedded(data.path(), port).await;
    let app = TestApp::at(SocketAddr::from(([127, 0, 0, 1], port)));
    let (ann, bob, chat) = app.ann_and_bob().await;
    let stored = app.send(&ann, &chat, "stored before").await;
    let mut ann_socket = app.socket(&ann).await;
    let mut bob_socket = app.socket(&bob).await;

    let lock = hold_write_lock(&data.path().join("natter.db")).await;
    ann_socket
        .send_json(json!({"type": "send", "chatId": chat.id, "content": "delivered, not stored", "clientId": "k1"}))
        .await;
    let delivered = bob_socket.next_message().await;
    assert_eq!(delivered.seq, stored.seq + 1);
    server.start_kill().expect("kill -9");
    server.wait().await.expect("the server is gone");
    drop(lock);

    let _server = start_embedded(data.path(), port).await;
    let history = app.history(&bob, &chat, "").await;
    assert_eq!(
        history,
        std::slice::from_ref(&stored),
        "the delivered message was lost"
    );
    let after = app.send(&bob, &chat, "after the restart").await;
    assert!(after.seq > delivered.seq, "seq {} given again", after.seq);
    // Ann's app resends what was never acked.
    let response = app
        .post(
            &ann,
            "/api/message",
            json!({"chatId": chat.id, "content": "delivered, not stored", "clientId": "k1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let resent: Message = response.json().await.expect("message");
    assert!(resent.seq > after.seq, "{resent:?}");
    assert_eq!(
        app.history(&bob, &chat, "").await,
        [stored, after, resent],
        "each once, and no seq the dead server delivered names another message"
    );
}

/// The sessions holding the nodes' lock (its key, 0x6e61_7474_6572, in two
/// halves), not another advisory lock such as the migrations'.
const LOCK_HOLDERS: &str = "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
    WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() \
    AND l.classid = 28257 AND l.objid = 1953785202";

/// A node without RabbitMQ whose lock session stalls (the network to
/// PostgreSQL goes silent, or the database is too busy to answer, while
/// PostgreSQL keeps the session and its lock) takes its place again on a
/// new session: it ends the stalled one, which still holds the lock. It
/// used to take its own lock for a node of the other kind's, and stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lock_session_stalls_ends_it_and_takes_its_place_again() {
    use sqlx::Connection;
    let _serial = SERIAL.lock().await;
    let database = new_postgres_database().await;
    let (relay, through_relay) = relay::FreezingRelay::before(&database).await;
    let exchange = format!("natter.test.{}", uuid::Uuid::new_v4().simple());
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut alone = server_command("alone", &through_relay, &exchange, data.path())
        .env_remove("NATTER_AMQP_URL")
        .env("NATTER_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("the node without RabbitMQ starts");
    wait_healthy(port).await;
    let mut admin = sqlx::PgConnection::connect(&database)
        .await
        .expect("PostgreSQL");
    let (held_by, relayed_from): (i32, i32) =
        sqlx::query_as(&format!("SELECT l.pid, a.client_port {LOCK_HOLDERS}"))
            .fetch_one(&mut admin)
            .await
            .expect("the node holds its place");

    relay.stall(u16::try_from(relayed_from).expect("a port"));
    wait_until(
        "the node to hold its place on a new session",
        FAULT_PATIENCE,
        async || {
            if let Some(exit) = alone.try_wait().expect("the node's state") {
                panic!("the node stopped: {exit}");
            }
            let pids: Vec<(i32,)> = sqlx::query_as(&format!(
                "SELECT l.pid {LOCK_HOLDERS} AND l.mode = 'ExclusiveLock'"
            ))
            .fetch_all(&mut admin)
            .await
            .expect("asked");
            pids.len() == 1 && pids[0].0 != held_by
        },
    )
    .await;
    // Ended by the node: the relay keeps its connection open, so
    // PostgreSQL would have kept it for as long as the relay runs.
    wait_until("the stalled session to end", FAULT_PATIENCE, async || {
        let (left,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                .bind(held_by)
                .fetch_one(&mut admin)
                .await
                .expect("asked");
        left == 0
    })
    .await;
    wait_healthy(port).await;
}

/// A node with RabbitMQ whose session on PostgreSQL ended (a restart does)
/// finds, when it comes to take its place again, that a node without
/// RabbitMQ took the database meanwhile: it stops, with a failure, rather
/// than sequence beside a node that sequences every chat by itself. The
/// node without RabbitMQ goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_place_a_node_of_the_other_kind_took_stops() {
    use sqlx::Connection;
    let _serial = SERIAL.lock().await;
    let database = new_postgres_database().await;
    let exchange = format!("natter.test.{}", uuid::Uuid::new_v4().simple());
    let mut clustered = start_node("clustered", &database, &exchange).await;

    // A node without RabbitMQ waits for the database to be its alone.
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _alone = server_command("alone", &database, &exchange, data.path())
        .env_remove("NATTER_AMQP_URL")
        .env("NATTER_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("the node without RabbitMQ starts");

    // The clustered node's lock session is ended, as often as it takes
    // it again, until the other node has taken the database.
    let mut admin = sqlx::PgConnection::connect(&database)
        .await
        .expect("PostgreSQL");
    let holders = LOCK_HOLDERS;
    wait_until(
        "the node without RabbitMQ to take the database",
        FAULT_PATIENCE,
        async || {
            let _: Vec<(bool,)> = sqlx::query_as(&format!(
                "SELECT pg_terminate_backend(l.pid) {holders} AND l.mode = 'ShareLock'"
            ))
            .fetch_all(&mut admin)
            .await
            .expect("ended");
            let (alone,): (i64,) = sqlx::query_as(&format!(
                "SELECT count(*) {holders} AND l.mode = 'ExclusiveLock'"
            ))
            .fetch_one(&mut admin)
            .await
            .expect("asked");
            alone == 1
        },
    )
    .await;

    let exit = tokio::time::timeout(FAULT_PATIENCE, clustered.child.wait())
        .await
        .expect("the clustered node stops in time")
        .expect("exit status");
    assert_eq!(
        exit.code(),
        Some(natter_server::store::PLACE_TAKEN_EXIT),
        "stopped for that reason: {exit}"
    );
    wait_healthy(port).await;
}

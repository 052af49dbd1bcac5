//! The message pipeline: what the partition queues may do to a message
//! (deliver it twice) never shows in the chat, and a message delivered
//! before it is stored is never missing from a history read.

use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use natter_server::Application;
use natter_server::data_lock::DataLock;
use natter_server::pipeline::{
    Command, DEFAULT_PARTITIONS, Draft, Request, SEND_PATIENCE, inbox_queue, partition_of,
};
use natter_shared::ServerFrame;

use crate::helpers::{
    Deployment, PATIENCE, TestApp, TestUser, amqp_url, hold_write_lock, spawn_app, spawn_app_with,
    spawn_named_cluster, test_config, until_a_query_waits_for_a_lock,
};
use crate::relay::FreezingRelay;

/// A new message from `sender` in `chat`, as a node would queue it.
fn new_draft(chat_id: &str, sender_id: &str, content: &str) -> Draft {
    Draft {
        id: uuid::Uuid::now_v7().to_string(),
        chat_id: chat_id.to_owned(),
        sender_id: sender_id.to_owned(),
        content: content.to_owned(),
        client_id: None,
        first_try: false,
        created_at: Utc::now(),
    }
}

/// Publishes `draft` into its chat's partition queue (of a deployment of
/// `partitions`) `times` times, as a broker redelivering it (or a
/// publisher repeating itself) would.
async fn publish_draft(deployment: &str, partitions: u16, draft: &Draft, times: usize) {
    let payload = serde_json::to_vec(&[Request {
        command: Command::Send {
            draft: draft.clone(),
        },
        correlation: None,
    }])
    .expect("json");
    let queue = chat_queue(deployment, &draft.chat_id, partitions);
    publish_raw(&queue, &payload, times).await;
}

/// The partition queue of a chat in a deployment of `partitions`.
fn chat_queue(deployment: &str, chat_id: &str, partitions: u16) -> String {
    inbox_queue(deployment, partition_of(chat_id, partitions))
}

async fn broker() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers")
}

/// Publishes `payload` into `queue` `times` times.
async fn publish_raw(queue: &str, payload: &[u8], times: usize) {
    let connection = broker().await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    for _ in 0..times {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        assert!(confirm.is_ack());
    }
}

#[tokio::test]
async fn a_message_delivered_twice_by_rabbitmq_is_stored_once_with_one_seq() {
    let (nodes, deployment) = spawn_named_cluster(1).await;
    let app = &nodes[0];
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut bob_socket = app.socket(&bob).await;

    let first = app.send(&ann, &chat, "one").await;
    assert_eq!(bob_socket.next_message().await, first);
    // The stored message comes again, twice.
    let again = Draft {
        id: first.id.clone(),
        chat_id: chat.id.clone(),
        sender_id: ann.id.clone(),
        content: first.content.clone(),
        client_id: None,
        first_try: false,
        created_at: first.created_at,
    };
    publish_draft(&deployment, DEFAULT_PARTITIONS, &again, 2).await;
    // A new message comes twice in a row.
    let twice = new_draft(&chat.id, &ann.id, "two");
    publish_draft(&deployment, DEFAULT_PARTITIONS, &twice, 2).await;
    // The queue is first in, first out: once this is acked, those were handled.
    let third = app.send(&ann, &chat, "three").await;
    assert_eq!(third.seq, 3, "the repeats took no seq");

    let history = app.history(&bob, &chat, "").await;
    let stored: Vec<(i64, &str)> = history
        .iter()
        .map(|message| (message.seq, message.content.as_str()))
        .collect();
    assert_eq!(stored, [(1, "one"), (2, "two"), (3, "three")]);
    assert_eq!(history[1].id, twice.id);
}

#[tokio::test]
async fn a_burst_of_sends_through_rabbitmq_is_acked_in_full_and_in_order() {
    let (nodes, _) = spawn_named_cluster(1).await;
    crate::socket::a_burst_of_sends_keeps_its_order(&nodes[0]).await;
}

#[tokio::test]
async fn a_message_queued_by_a_node_of_the_release_before_batching_is_still_stored() {
    let (nodes, deployment) = spawn_named_cluster(1).await;
    let app = &nodes[0];
    let (ann, bob, chat) = app.ann_and_bob().await;
    // That release put one command in each message, not an array.
    let old = new_draft(&chat.id, &ann.id, "queued before the upgrade");
    let payload = serde_json::to_vec(&Command::Send { draft: old.clone() }).expect("json");
    let queue = chat_queue(&deployment, &chat.id, DEFAULT_PARTITIONS);
    publish_raw(&queue, &payload, 1).await;
    let after = app.send(&ann, &chat, "after the upgrade").await;
    assert_eq!(after.seq, 2, "the old message came first");

    let history = app.history(&bob, &chat, "").await;
    let stored: Vec<(&str, &str)> = history
        .iter()
        .map(|message| (message.id.as_str(), message.content.as_str()))
        .collect();
    assert_eq!(
        stored,
        [
            (old.id.as_str(), "queued before the upgrade"),
            (after.id.as_str(), "after the upgrade")
        ]
    );
}

/// Whether RabbitMQ has a queue of that name.
async fn queue_exists(queue: &str) -> bool {
    let connection = broker().await;
    let channel = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_deployment_keeps_the_partition_count_its_first_node_chose() {
    let deployment = Deployment::new().await;
    let first = deployment
        .spawn_node(0, |config| config.partitions = Some(2))
        .await;
    // A node told nothing takes the recorded count.
    let second = deployment.spawn_node(1, |_| {}).await;
    let (ann, bob, chat) = first.ann_and_bob().await;
    let mut bob_socket = first.socket(&bob).await;
    let sent = second.send(&ann, &chat, "through one of two").await;
    assert_eq!(bob_socket.next_message().await, sent);
    assert!(queue_exists(&inbox_queue(&deployment.exchange, 1)).await);
    assert!(
        !queue_exists(&inbox_queue(&deployment.exchange, 2)).await,
        "two partitions, two queues"
    );
    // What is queued where a count of two puts the chat is sequenced there.
    let queued = new_draft(&chat.id, &ann.id, "queued by hand");
    publish_draft(&deployment.exchange, 2, &queued, 1).await;
    assert_eq!(bob_socket.next_message().await.id, queued.id);

    // A node told another count refuses to start, and says why.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    deployment.join(&mut config, 2);
    config.partitions = Some(3);
    let Err(refusal) = Application::build(&config).await else {
        panic!("a node with another partition count started");
    };
    let refusal = format!("{refusal:#}");
    assert!(
        refusal.contains("NATTER_PARTITIONS is 3") && refusal.contains("over 2 partitions"),
        "{refusal}"
    );
}

/// The embedded pipeline delivers a message before it stores it. A history
/// read (an app catching up) waits until what was delivered is stored: an
/// app that missed it live would otherwise never see it, since catch-up
/// reads on from the newest seq it holds; so does the chat list, from which
/// catch-up picks the chats to read. (SQLite's write lock, held from
/// outside, keeps the commit waiting; a read answered meanwhile would be
/// one that did not wait.)
#[tokio::test]
async fn history_and_chat_list_reads_wait_until_what_was_delivered_is_stored() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut ann_socket = app.socket(&ann).await;
    let mut bob_socket = app.socket(&bob).await;
    let lock = hold_write_lock(&app.data_dir.join("natter.db")).await;
    ann_socket
        .send_json(serde_json::json!({"type": "send", "chatId": chat.id, "content": "delivered first", "clientId": "k1"}))
        .await;
    let delivered = bob_socket.next_message().await;

    let (page, listed) = reads_held_back(&app, &bob, &chat, async move { drop(lock) }).await;
    assert_eq!(listed.as_ref(), Some(&delivered));
    assert_eq!(page, [delivered]);
}

/// Bob's reads of the chat's history and of his chat list, started while
/// the database's commits are held back: neither may answer then (for
/// 500 ms; an answer later than that would let the check pass wrongly,
/// never fail), nor fail once `release` lets them go. The list waits as
/// history does: an app catching up skips a chat whose listed latest
/// message it holds, so a list read from before the commit would make it
/// skip the chat whose newest message it missed live. Returns the page and
/// the chat's latest message as listed.
async fn reads_held_back(
    app: &TestApp,
    reader: &TestUser,
    chat: &natter_shared::Chat,
    release: impl Future<Output = ()>,
) -> (Vec<natter_shared::Message>, Option<natter_shared::Message>) {
    let read = |path: String| {
        tokio::spawn(
            app.http
                .get(app.url(&path))
                .bearer_auth(&reader.token)
                .send(),
        )
    };
    let mut history = read(format!("/api/message/{}", chat.id));
    let mut list = read("/api/chat".to_owned());
    let answered_while_held = tokio::time::timeout(Duration::from_millis(500), async {
        tokio::select! { _ = &mut history => "history", _ = &mut list => "the chat list" }
    })
    .await;
    release.await;
    assert!(
        answered_while_held.is_err(),
        "{:?} did not wait for the commit",
        answered_while_held
    );
    let answer = async |read: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>| {
        let response = read.await.expect("the read's task").expect("an answer");
        assert!(response.status().is_success(), "{}", response.status());
        response
    };
    let page = answer(history).await.json().await.expect("messages");
    let chats: Vec<natter_shared::Chat> = answer(list).await.json().await.expect("chats");
    assert_eq!(chats.len(), 1);
    (page, chats[0].latest_message.clone())
}

/// Through RabbitMQ the sender is acked before the commit (the queue holds
/// the message): a history read and a chat list right after still wait
/// until the commit, here held back by a lock on PostgreSQL's messages
/// table, and then have it.
#[tokio::test]
async fn through_rabbitmq_history_and_chat_list_reads_wait_for_the_commit_of_what_was_acked() {
    use sqlx::{Connection, Executor};

    let (nodes, _) = spawn_named_cluster(1).await;
    let app = &nodes[0];
    let (ann, bob, chat) = app.ann_and_bob().await;
    let url = app.database_url.clone().expect("a PostgreSQL deployment");
    let mut lock = sqlx::PgConnection::connect(&url)
        .await
        .expect("PostgreSQL answers");
    lock.execute("BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE")
        .await
        .expect("the messages table locked");
    let acked = app.send(&ann, &chat, "acked before stored").await;

    let release = async move { lock.close().await.expect("the lock let go") };
    let (page, listed) = reads_held_back(app, &bob, &chat, release).await;
    assert_eq!(listed.as_ref(), Some(&acked));
    assert_eq!(page, [acked]);
}

/// A send the database cannot store within the server's patience is
/// refused for now (`retry`), not for good: nothing was wrong with it. Sent
/// again with its clientId once the database is back, it is acked as the
/// message that was delivered before, stored once.
#[tokio::test]
async fn a_send_not_stored_in_time_is_refused_for_now_and_its_resend_is_acked() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut ann_socket = app.socket(&ann).await;
    let mut bob_socket = app.socket(&bob).await;
    let lock = hold_write_lock(&app.data_dir.join("natter.db")).await;
    let send =
        serde_json::json!({"type": "send", "chatId": chat.id, "content": "slow", "clientId": "k1"});
    ann_socket.send_json(send.clone()).await;
    let delivered = bob_socket.next_message().await;

    // Her own copy of the message comes first, then the refusal, once the
    // server has waited its patience.
    let refused = tokio::time::timeout(SEND_PATIENCE + PATIENCE, async {
        loop {
            match ann_socket.next_frame_or_close().await {
                Some(ServerFrame::Message { .. }) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("an answer in time");
    drop(lock);
    let Some(ServerFrame::Error {
        error,
        client_id,
        retry,
    }) = refused
    else {
        panic!("the send is refused: {refused:?}")
    };
    assert_eq!(client_id.as_deref(), Some("k1"));
    assert!(retry, "refused for now, not for good: {error}");

    ann_socket.send_json(send).await;
    let ServerFrame::Ack { message, .. } = ann_socket
        .next_where(|frame| matches!(frame, ServerFrame::Ack { .. }))
        .await
    else {
        unreachable!("next_where returned only what was wanted")
    };
    assert_eq!(message, delivered);
    let history = app.get(&bob, &format!("/api/message/{}", chat.id)).await;
    let page: Vec<natter_shared::Message> = history.json().await.expect("messages");
    assert_eq!(page, [delivered]);
}

/// Without RabbitMQ, past `NATTER_UNSTORED_LIMIT` messages delivered and
/// not yet stored (one here, its commit held back by SQLite's write lock),
/// a send is refused for now at once, before it has a seq; sent again once
/// the commit went through, it is stored after the first.
#[tokio::test]
async fn past_the_unstored_limit_a_send_is_refused_for_now_at_once() {
    let app = spawn_app_with(|config| config.unstored_limit = 1).await;
    let (ann, _bob, chat) = app.ann_and_bob().await;
    let mut ann_socket = app.socket(&ann).await;
    let lock = hold_write_lock(&app.data_dir.join("natter.db")).await;
    let send = |content: &str, client_id: &str| serde_json::json!({"type": "send", "chatId": chat.id, "content": content, "clientId": client_id});
    ann_socket.send_json(send("held", "k1")).await;
    ann_socket.send_json(send("one too many", "k2")).await;
    // Answered before the server's patience is up.
    let refused = tokio::time::timeout(SEND_PATIENCE / 2, async {
        ann_socket
            .next_where(|frame| matches!(frame, ServerFrame::Error { .. }))
            .await
    })
    .await
    .expect("refused at once");
    let ServerFrame::Error {
        error,
        client_id,
        retry,
    } = refused
    else {
        unreachable!("next_where returned only what was wanted")
    };
    assert_eq!(client_id.as_deref(), Some("k2"));
    assert!(retry, "refused for now, not for good: {error}");
    assert!(error.contains("not keeping up"), "{error}");

    drop(lock);
    let acked = |wanted: &'static str| move |frame: &ServerFrame| matches!(frame, ServerFrame::Ack { client_id, .. } if client_id == wanted);
    ann_socket.next_where(acked("k1")).await;
    ann_socket.send_json(send("one too many", "k2")).await;
    let ServerFrame::Ack { message, .. } = ann_socket.next_where(acked("k2")).await else {
        unreachable!("next_where returned only what was wanted")
    };
    assert_eq!((message.seq, message.content.as_str()), (2, "one too many"));
}

/// A second server started by mistake on the first one's port and data
/// stops at the port, before it touches the database: had it started its
/// pipeline, it would have taken the first one's running mark for a crash
/// and moved every chat's seqs ahead.
#[tokio::test]
async fn a_second_server_on_a_taken_port_leaves_the_database_alone() {
    let mut app = spawn_app().await;
    let (ann, _, chat) = app.ann_and_bob().await;
    assert_eq!(app.send(&ann, &chat, "one").await.seq, 1);
    let mut config = test_config(&app.data_dir);
    config.addr = app.addr;
    config.database_url = app.database_url.clone();
    let second = Application::build(&config).await;
    assert!(second.is_err(), "the port is taken");

    app.stop().await;
    let (data_dir, database_url) = (app.data_dir.clone(), app.database_url.clone());
    let again = spawn_app_with(|config| {
        config.data_dir = Some(data_dir);
        config.database_url = database_url;
    })
    .await;
    assert_eq!(again.send(&ann, &chat, "two").await.seq, 2);
}

/// A second embedded server on another port but the first one's data folder
/// waits for the folder instead of opening its database: it starts once
/// the first has stopped (and stored everything), and goes on from the
/// first's last seq. Had it opened the database while the first ran, it
/// would have taken the first's running mark for a crash (seqs 100,000
/// ahead), and both would have sequenced the same chats.
#[tokio::test]
async fn a_second_server_on_the_same_data_folder_waits_until_the_first_has_stopped() {
    let mut app = spawn_app().await;
    let (ann, _, chat) = app.ann_and_bob().await;
    assert_eq!(app.send(&ann, &chat, "one").await.seq, 1);
    let refused = DataLock::acquire(&app.data_dir, Duration::from_millis(100)).await;
    assert!(refused.is_err(), "the running server holds its data folder");

    let mut config = test_config(&app.data_dir);
    config.database_url = app.database_url.clone();
    let second = Application::build(&config);
    tokio::pin!(second);
    let started_meanwhile = tokio::time::timeout(Duration::from_millis(500), &mut second)
        .await
        .is_ok();
    app.stop().await;
    assert!(!started_meanwhile, "the second server did not wait");
    let second = second.await.expect("it starts once the folder is free");
    let addr = second.local_addr().expect("bound");
    let serving = tokio::spawn(second.run_until(std::future::pending()));
    let again = TestApp::at(addr);
    assert_eq!(again.send(&ann, &chat, "two").await.seq, 2);
    serving.abort();
}

/// The database stops answering (its machine is gone): a send that needs
/// it (to a chat the sequencer has not learned) is refused for now after a
/// few seconds, and the sends behind it in its partition, to chats the
/// sequencer knows, are still acked (they wait for nothing but memory),
/// rather than the partition waiting for TCP to give up. A typing signal
/// before them, whose members lookup waits for the database, is dropped
/// after 2 s rather than stall the socket's reading.
#[tokio::test]
async fn a_database_that_stops_answering_holds_up_only_the_sends_that_need_it() {
    let deployment = Deployment::new().await;
    let (relay, through_relay) = FreezingRelay::before(&deployment.database).await;
    let app = deployment
        .spawn_node(0, |config| {
            config.database_url = Some(through_relay);
            config.partitions = Some(1);
        })
        .await;
    let (ann, _, known) = app.ann_and_bob().await;
    let cid = app.sign_up("Cid").await;
    let unknown = app.open_direct(&ann, &cid).await;
    app.send(&ann, &known, "the sequencer learns this chat")
        .await;
    let mut ann_socket = app.socket(&ann).await;

    relay.freeze();
    // A typing signal first: its lookup of the members waits for the
    // database too, and must not keep the socket from reading on.
    ann_socket
        .send_json(serde_json::json!({"type": "typing", "chatId": known.id, "isTyping": true}))
        .await;
    // In this order, into the one partition: the first needs the database.
    for (chat, client_id) in [(&unknown, "needs-db"), (&known, "from-memory")] {
        ann_socket
            .send_json(serde_json::json!({"type": "send", "chatId": chat.id, "content": client_id, "clientId": client_id}))
            .await;
    }
    let mut answers = std::collections::HashMap::new();
    let waited = tokio::time::timeout(SEND_PATIENCE, async {
        while answers.len() < 2 {
            match ann_socket.next_frame().await {
                ServerFrame::Ack { client_id, .. } => {
                    answers.insert(client_id, "acked".to_owned());
                }
                ServerFrame::Error {
                    client_id: Some(client_id),
                    retry,
                    ..
                } => {
                    answers.insert(client_id, format!("refused, retry {retry}"));
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "both answered within a sender's patience: {answers:?}"
    );
    assert_eq!(answers["from-memory"], "acked");
    assert_eq!(answers["needs-db"], "refused, retry true");
}

/// A stopping server waits for requests still running only so long
/// (`NATTER_SHUTDOWN_GRACE_MS`), then cuts them off with a 503: a read
/// whose query the database never answers would otherwise keep it from
/// stopping, and from storing what it sequenced, until TCP gives up (many
/// minutes).
#[tokio::test]
async fn a_request_the_database_never_answers_does_not_keep_the_server_from_stopping() {
    let deployment = Deployment::new().await;
    let (relay, through_relay) = FreezingRelay::before(&deployment.database).await;
    let mut app = deployment
        .spawn_node(0, |config| {
            config.database_url = Some(through_relay);
            config.shutdown_grace_ms = 200;
        })
        .await;
    let (ann, _, chat) = app.ann_and_bob().await;

    relay.freeze_at(&chat.id);
    let reading = tokio::spawn(
        reqwest::Client::new()
            .get(app.url(&format!("/api/message/{}", chat.id)))
            .bearer_auth(&ann.token)
            .send(),
    );
    // The read's query, bound to the chat, waits on the database.
    relay.until_held(&chat.id).await;

    let stopped = tokio::time::timeout(Duration::from_secs(30), app.stop()).await;
    assert!(
        stopped.is_ok(),
        "the server stopped with the read still waiting"
    );
    // And the read was cut off, letting go of what it held.
    let answered = tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the read answered")
        .expect("the read's task")
        .expect("an answer");
    assert_eq!(answered.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
}

/// A change whose client hung up runs on to its end (`Unfinished`), and a
/// stopping server waits for it, within its grace, before it stops: a
/// process that ended under it would leave it unmade, or made and never
/// told (the sequencer and the members hear of it last).
#[tokio::test]
async fn a_stopping_server_waits_for_a_change_whose_client_hung_up() {
    use sqlx::{Connection, Executor};
    let deployment = Deployment::new().await;
    let mut app = deployment
        .spawn_node(0, |config| {
            // Sequenced in the process: its stop takes no RabbitMQ hand-over.
            config.amqp_url = None;
            config.shutdown_grace_ms = 60_000;
        })
        .await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let group = app.create_group(&ann, "Before", &[&bob]).await;

    // Another session holds the group's row: the rename waits for it.
    let mut other = sqlx::PgConnection::connect(&deployment.database)
        .await
        .expect("connected");
    other.execute("BEGIN").await.expect("began");
    sqlx::query("SELECT 1 FROM chats WHERE id = $1 FOR UPDATE")
        .bind(&group.id)
        .execute(&mut other)
        .await
        .expect("the row held");
    let renaming = tokio::spawn(
        app.http
            .put(app.url("/api/chat/rename"))
            .bearer_auth(&ann.token)
            .json(&serde_json::json!({"chatId": group.id, "chatName": "After"}))
            .send(),
    );
    until_a_query_waits_for_a_lock(&mut other, "the rename to wait for the row").await;
    // Its client hangs up: no request runs any more.
    renaming.abort();

    let stopping = app.stop();
    tokio::pin!(stopping);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut stopping)
            .await
            .is_err(),
        "the stop did not end with the rename still waiting"
    );
    other.execute("COMMIT").await.expect("let go");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("stopped once the rename was made");
    let (name,): (String,) = sqlx::query_as("SELECT name FROM chats WHERE id = $1")
        .bind(&group.id)
        .fetch_one(&mut other)
        .await
        .expect("read");
    assert_eq!(name, "After");
}

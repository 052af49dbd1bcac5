//! The server's hot paths, measured alone: what every message costs before
//! the network and the kernel take over. `cargo bench -p natter-server`;
//! figures in docs/benchmarks.md.
//!
//! - encoding a message frame (once per message, whatever the recipients),
//! - the hub handing an encoded frame to every socket of a chat's members,
//! - the embedded pipeline: sequence, deliver and store 100 messages sent at
//!   once (one SQLite transaction per batch),
//! - reading what arrives per message: a socket's `send` frame, a partition
//!   queue's batch of commands and a batch of replies.

use std::hint::black_box;
use std::sync::Arc;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use natter_server::pipeline::{Command, Draft, Pipeline, Reply};
use natter_server::realtime::{Events, Hub, encode};
use natter_server::store::{NewUser, SqliteStore, Store};
use natter_shared::{ClientFrame, Message, ServerFrame, User};

fn frame() -> ServerFrame {
    ServerFrame::Message {
        message: Message {
            id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d10".into(),
            chat_id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d11".into(),
            seq: 12_345,
            sender: User {
                id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d12".into(),
                name: "Ann Example".into(),
                email: "ann@example.org".into(),
                pic: Some("/api/pic/0194f0c2.png".into()),
            },
            content: "See you at the standup in ten minutes — bring the numbers 📈".into(),
            client_id: Some("0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d13".into()),
            created_at: Utc::now(),
        },
    }
}

fn encoding(c: &mut Criterion) {
    let frame = frame();
    c.bench_function("encode a message frame", |b| {
        b.iter(|| encode(black_box(&frame)))
    });
}

fn draft() -> Draft {
    Draft {
        id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d10".into(),
        chat_id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d11".into(),
        sender_id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d12".into(),
        content: "See you at the standup in ten minutes — bring the numbers 📈".into(),
        client_id: Some("0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d13".into()),
        first_try: true,
        created_at: Utc::now(),
    }
}

/// Reading JSON per message: each is read as a socket frame, as a command
/// out of its partition queue, and (on a node other than the sequencer's)
/// as a reply.
fn reading(c: &mut Criterion) {
    let send = serde_json::to_string(&ClientFrame::Send {
        chat_id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d11".into(),
        content: "See you at the standup in ten minutes — bring the numbers 📈".into(),
        client_id: "0194f0c2-7d1e-7c3a-9a55-4e2b1f0a9d13".into(),
        first_try: true,
    })
    .expect("serializes");
    c.bench_function("read a send frame", |b| {
        b.iter(|| serde_json::from_str::<ClientFrame>(black_box(&send)).expect("reads"))
    });
    let mut group = c.benchmark_group("read a batch");
    let commands =
        serde_json::to_vec(&vec![Command::Send { draft: draft() }; 500]).expect("serializes");
    group.throughput(Throughput::Elements(500));
    group.bench_function("500 send commands", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Command>>(black_box(&commands)).expect("reads"))
    });
    let ServerFrame::Message { message } = frame() else {
        unreachable!("frame() is a message")
    };
    let replies = serde_json::to_vec(&vec![
        Reply::Sent {
            message: message.into(),
            duplicate: false
        };
        64
    ])
    .expect("serializes");
    group.throughput(Throughput::Elements(64));
    group.bench_function("64 sent replies", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Reply>>(black_box(&replies)).expect("reads"))
    });
    group.finish();
}

fn delivering(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub delivers one frame to a chat");
    let text = encode(&frame());
    for members in [2usize, 10, 100] {
        let hub = Hub::new();
        let users: Vec<String> = (0..members).map(|i| format!("user-{i}")).collect();
        let mut sockets: Vec<_> = users
            .iter()
            .map(|user| hub.register(user, None, usize::MAX).expect("room"))
            .collect();
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                hub.deliver_text(users.iter().map(String::as_str), &text);
                // What the sockets' writers would do.
                for socket in &mut sockets {
                    while socket.frames.try_recv().is_ok() {}
                }
            })
        });
    }
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (pipeline, chat_id, sender_id) = runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.expect("SQLite"));
        let mut ids = Vec::new();
        for i in 0..10 {
            let user = store
                .create_user(NewUser {
                    id: format!("user-{i}"),
                    name: format!("User {i}"),
                    email: format!("user{i}@example.org"),
                    password_hash: "not used".into(),
                    pic: None,
                })
                .await
                .expect("a user");
            ids.push(user.id);
        }
        let chat = store
            .create_group("chat", "Bench", &ids[0], &ids[1..])
            .await
            .expect("a group");
        let hub = Arc::new(Hub::new());
        let events = Arc::new(Events::local(hub));
        let pipeline = Pipeline::local(
            store,
            events,
            natter_server::pipeline::MOST_UNSTORED as usize,
        )
        .await
        .expect("started");
        (pipeline, chat.id, ids[0].clone())
    });
    let mut group = c.benchmark_group("embedded pipeline");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100 messages sent at once into a group of 10", |b| {
        b.to_async(&runtime).iter(|| async {
            let sends = (0..100).map(|_| {
                pipeline.send(Draft {
                    id: uuid::Uuid::now_v7().to_string(),
                    chat_id: chat_id.clone(),
                    sender_id: sender_id.clone(),
                    content: "hello".into(),
                    client_id: None,
                    first_try: false,
                    created_at: Utc::now(),
                })
            });
            for sent in futures_util::future::join_all(sends).await {
                sent.expect("sent");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encoding, reading, delivering, pipeline);
criterion_main!(benches);

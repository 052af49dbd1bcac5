//! The store's batch write, on both databases: PostgreSQL writes a batch as
//! one array per column, SQLite as rows of parameters, and both must keep
//! `Store::store_messages`'s promises.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use natter_server::store::{BatchStored, NewUser, Page, PgStore, SqliteStore, Store, StoreError};
use natter_shared::{Message, User};

use crate::helpers::{new_postgres_database, until_a_query_waits_for_a_lock};

/// More than one statement's worth (1,000 messages each).
const BATCH: i64 = 2_500;
/// Messages of a second chat in the same batch.
const GROUP: i64 = 40;

async fn user(store: &dyn Store, name: &str) -> User {
    store
        .create_user(NewUser {
            id: format!("u-{name}"),
            name: name.into(),
            email: format!("{name}@example.org"),
            password_hash: "not used here".into(),
            pic: None,
        })
        .await
        .expect("user created")
}

fn at(seq: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(4_000_000_000_000 + seq).expect("a time")
}

/// Message `seq` of `chat_id` by `sender`: every other one with a client
/// id, and text that needs escaping in any encoding.
fn message(chat_id: &str, sender: &User, seq: i64) -> Arc<Message> {
    Arc::new(Message {
        id: format!("{chat_id}-m{seq:05}"),
        chat_id: chat_id.into(),
        seq,
        sender: sender.clone(),
        content: format!("n°{seq} \"quoted\" 'single' \\ back\nslash ✓"),
        client_id: (seq % 2 == 0).then(|| format!("k-{seq}")),
        created_at: at(seq),
    })
}

/// Everything stored in `chat_id`, oldest first.
async fn history(store: &dyn Store, chat_id: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let seq = all.last().map_or(0, |message: &Message| message.seq);
        let page = store
            .messages(chat_id, Page::After { seq, limit: 200 })
            .await
            .expect("a page");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

async fn a_batch_is_stored_once_whatever_its_size(store: &dyn Store) {
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let (chat, _) = store
        .open_direct_chat("c-1", &ann.id, &bob.id)
        .await
        .expect("chat");

    let group = store
        .create_group("g-1", "Group", &ann.id, std::slice::from_ref(&bob.id))
        .await
        .expect("group");

    // One batch for both chats, their messages interleaved.
    let batch: Vec<_> = (1..=BATCH)
        .map(|seq| message(&chat.id, &ann, seq))
        .collect();
    let mut both = batch.clone();
    for (i, seq) in (1..=GROUP).enumerate() {
        both.insert(i * 7, message(&group.id, &bob, seq));
    }
    assert_eq!(
        store.store_messages(&both).await.expect("stored"),
        BatchStored {
            new: (BATCH + GROUP) as u64,
            seq_taken: Vec::new()
        }
    );

    // A broker's redelivery: old messages (one twice in the same batch)
    // beside ten new ones, the newest first.
    let mut again: Vec<_> = batch[..100].to_vec();
    again.push(batch[7].clone());
    again.extend(
        (BATCH + 1..=BATCH + 10)
            .rev()
            .map(|seq| message(&chat.id, &bob, seq)),
    );
    assert_eq!(
        store.store_messages(&again).await.expect("stored"),
        BatchStored {
            new: 10,
            seq_taken: Vec::new()
        },
        "a redelivery is not a taken seq"
    );

    // A message under a seq its chat gave to another one is not stored, and
    // is named, not dropped unseen; the rest of its batch is stored.
    let mut taken = message(&chat.id, &bob, 5).as_ref().clone();
    taken.id = "elsewhere".into();
    let after = message(&chat.id, &bob, BATCH + 11);
    let stored = store
        .store_messages(&[Arc::new(taken.clone()), Arc::new(taken), after.clone()])
        .await
        .expect("stored");
    assert_eq!(
        stored,
        BatchStored {
            new: 1,
            seq_taken: vec!["elsewhere".to_owned()]
        }
    );

    let wanted: Vec<Message> = (1..=BATCH + 11)
        .map(|seq| {
            message(&chat.id, if seq > BATCH { &bob } else { &ann }, seq)
                .as_ref()
                .clone()
        })
        .collect();
    assert_eq!(history(store, &chat.id).await, wanted);
    // The chat moved to its newest message, and a later batch of older
    // messages does not move it back.
    store
        .store_messages(&batch[..1])
        .await
        .expect("stored again");
    assert_eq!(
        store.last_seq(&chat.id).await.expect("read"),
        Some(BATCH + 11)
    );
    let chat = store.chat(&chat.id).await.expect("read").expect("a chat");
    assert_eq!(chat.updated_at, at(BATCH + 11));
    assert_eq!(chat.latest_message.map(|m| m.seq), Some(BATCH + 11));

    // The other chat moved to its own newest, and both show theirs in a
    // member's chat list.
    assert_eq!(store.last_seq(&group.id).await.expect("read"), Some(GROUP));
    let listed: Vec<(String, Option<i64>)> = store
        .chats_of(&bob.id)
        .await
        .expect("chats")
        .into_iter()
        .map(|chat| (chat.id, chat.latest_message.map(|m| m.seq)))
        .collect();
    assert_eq!(
        listed,
        [
            (chat.id.clone(), Some(BATCH + 11)),
            (group.id.clone(), Some(GROUP))
        ]
    );
}

#[tokio::test]
async fn postgres_stores_a_batch_once_whatever_its_size() {
    let url = new_postgres_database().await;
    let store = PgStore::connect(&url, 4).await.expect("PostgreSQL");
    a_batch_is_stored_once_whatever_its_size(&store).await;
}

#[tokio::test]
async fn sqlite_stores_a_batch_once_whatever_its_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).await.expect("SQLite");
    a_batch_is_stored_once_whatever_its_size(&store).await;
}

/// A message holding NUL, queued before the edge refused them, is acked and
/// delivered already: PostgreSQL, which cannot hold NUL, stores it with
/// U+FFFD in its place rather than fail its batch (and every batch after
/// it) for good.
#[tokio::test]
async fn postgres_stores_a_queued_message_holding_nul_with_a_replacement() {
    let url = new_postgres_database().await;
    let store = PgStore::connect(&url, 4).await.expect("PostgreSQL");
    let ann = user(&store, "ann").await;
    let bob = user(&store, "bob").await;
    let (chat, _) = store
        .open_direct_chat("c-1", &ann.id, &bob.id)
        .await
        .expect("chat");
    let mut held = message(&chat.id, &ann, 1).as_ref().clone();
    held.content = "a\u{0}b".into();
    let batch = [Arc::new(held), message(&chat.id, &bob, 2)];
    assert_eq!(store.store_messages(&batch).await.expect("stored").new, 2);
    let stored: Vec<String> = history(&store, &chat.id)
        .await
        .into_iter()
        .map(|message| message.content)
        .collect();
    assert_eq!(stored, ["a\u{FFFD}b".to_owned(), batch[1].content.clone()]);
}

/// Two members added at once to a group one short of the limit: one is,
/// the other refused (counted outside the transaction, both passed).
async fn a_group_never_grows_past_its_limit(store: &dyn Store) {
    use natter_shared::limits::GROUP_MAX_MEMBERS;
    let mut ids = Vec::new();
    for n in 0..=GROUP_MAX_MEMBERS {
        ids.push(user(store, &format!("member{n}")).await.id);
    }
    let (admin, others) = ids.split_first().expect("users");
    let (two, first) = others.split_at(2);
    let first = &first[..GROUP_MAX_MEMBERS - 2];
    let group = store
        .create_group("crowd", "Crowd", admin, first)
        .await
        .expect("a group one short of the limit");
    assert_eq!(group.users.len(), GROUP_MAX_MEMBERS - 1);
    let (a, b) = tokio::join!(
        store.add_member(&group.id, &two[0], Some(admin)),
        store.add_member(&group.id, &two[1], Some(admin))
    );
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "one added, one refused: {a:?} {b:?}"
    );
    assert_eq!(
        store.members(&group.id).await.expect("members").len(),
        GROUP_MAX_MEMBERS
    );
}

#[tokio::test]
async fn postgres_keeps_a_group_within_its_limit() {
    let url = new_postgres_database().await;
    let store = PgStore::connect(&url, 4).await.expect("PostgreSQL");
    a_group_never_grows_past_its_limit(&store).await;
}

#[tokio::test]
async fn sqlite_keeps_a_group_within_its_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).await.expect("SQLite");
    a_group_never_grows_past_its_limit(&store).await;
}

/// A group change made for its admin is made only while they are its
/// admin, decided by the store in the change's transaction.
async fn changes_are_made_only_while_their_admin_is_admin(store: &dyn Store) {
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let cid = user(store, "cid").await;
    let dan = user(store, "dan").await;
    let group = store
        .create_group(
            "g-admin",
            "Group",
            &ann.id,
            &[bob.id.clone(), cid.id.clone()],
        )
        .await
        .expect("a group");
    // Ann leaves (through another node, say): Bob is admin now.
    let left = store
        .remove_member(&group.id, &ann.id, None)
        .await
        .expect("Ann left");
    assert_eq!(left.group_admin.map(|admin| admin.id), Some(bob.id.clone()));

    let not_admin = |result: Result<_, StoreError>| matches!(result, Err(StoreError::NotAdmin));
    assert!(not_admin(
        store.rename_chat(&group.id, "Hers", Some(&ann.id)).await
    ));
    assert!(not_admin(
        store.add_member(&group.id, &dan.id, Some(&ann.id)).await
    ));
    assert!(not_admin(
        store.remove_member(&group.id, &cid.id, Some(&ann.id)).await
    ));
    assert_eq!(
        store.members(&group.id).await.expect("members"),
        [bob.id.clone(), cid.id.clone()]
    );
    let renamed = store
        .rename_chat(&group.id, "His", Some(&bob.id))
        .await
        .expect("renamed by its admin");
    assert_eq!(renamed.chat_name, "His");
}

/// A change to a chat marks it changed now, unless a message stored
/// meanwhile is later (stored while the change waited for the chat's row,
/// or by a node whose clock runs ahead): a chat's time never goes back, so
/// the list never sorts it below chats quieter than it.
async fn a_change_never_moves_a_chat_back_in_time(store: &dyn Store) {
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let cid = user(store, "cid").await;
    let group = store
        .create_group("g-time", "Group", &ann.id, std::slice::from_ref(&bob.id))
        .await
        .expect("a group");
    // Written at a time ahead of this clock.
    let later = message(&group.id, &bob, 1);
    store
        .store_messages(std::slice::from_ref(&later))
        .await
        .expect("stored");
    let listed = async || store.chats_of(&ann.id).await.expect("chats")[0].updated_at;
    assert_eq!(listed().await, later.created_at);

    store
        .rename_chat(&group.id, "Renamed", Some(&ann.id))
        .await
        .expect("renamed");
    store
        .add_member(&group.id, &cid.id, Some(&ann.id))
        .await
        .expect("added");
    store
        .remove_member(&group.id, &cid.id, Some(&ann.id))
        .await
        .expect("removed");
    assert_eq!(listed().await, later.created_at);
}

#[tokio::test]
async fn postgres_never_moves_a_chat_back_in_time() {
    let url = new_postgres_database().await;
    let store = PgStore::connect(&url, 4).await.expect("PostgreSQL");
    a_change_never_moves_a_chat_back_in_time(&store).await;
}

#[tokio::test]
async fn sqlite_never_moves_a_chat_back_in_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).await.expect("SQLite");
    a_change_never_moves_a_chat_back_in_time(&store).await;
}

#[tokio::test]
async fn postgres_makes_group_changes_only_while_their_admin_is_admin() {
    let url = new_postgres_database().await;
    let store = PgStore::connect(&url, 4).await.expect("PostgreSQL");
    changes_are_made_only_while_their_admin_is_admin(&store).await;
}

#[tokio::test]
async fn sqlite_makes_group_changes_only_while_their_admin_is_admin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).await.expect("SQLite");
    changes_are_made_only_while_their_admin_is_admin(&store).await;
}

/// `user` leaves `chat`, written on `conn` (another node, say).
async fn leave(conn: &mut sqlx::PgConnection, chat: &str, user: &str) {
    sqlx::query("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .bind(chat)
        .bind(user)
        .execute(conn)
        .await
        .expect("left");
}

/// The admin check is made on the chat's row as the change takes it: a
/// change that waited for another (the admin leaving, committed through
/// another node) sees its outcome, not the row as it was when it began.
#[tokio::test]
async fn postgres_checks_the_admin_on_the_row_a_change_waited_for() {
    use sqlx::{Connection, Executor};
    let url = new_postgres_database().await;
    let store = Arc::new(PgStore::connect(&url, 4).await.expect("PostgreSQL"));
    let ann = user(store.as_ref(), "ann").await;
    let bob = user(store.as_ref(), "bob").await;
    let cid = user(store.as_ref(), "cid").await;
    let group = store
        .create_group(
            "g-race",
            "Group",
            &ann.id,
            &[bob.id.clone(), cid.id.clone()],
        )
        .await
        .expect("a group");
    let mut other = sqlx::PgConnection::connect(&url).await.expect("PostgreSQL");
    other.execute("BEGIN").await.expect("begun");
    sqlx::query("SELECT id FROM chats WHERE id = $1 FOR UPDATE")
        .bind(&group.id)
        .fetch_one(&mut other)
        .await
        .expect("the chat's row taken");

    let removing = tokio::spawn({
        let (store, group, cid, ann) = (
            store.clone(),
            group.id.clone(),
            cid.id.clone(),
            ann.id.clone(),
        );
        async move { store.remove_member(&group, &cid, Some(&ann)).await }
    });
    until_a_query_waits_for_a_lock(&mut other, "the removal to wait for the row").await;
    // Meanwhile Ann leaves: Bob is admin.
    leave(&mut other, &group.id, &ann.id).await;
    sqlx::query("UPDATE chats SET admin_id = $1 WHERE id = $2")
        .bind(&bob.id)
        .bind(&group.id)
        .execute(&mut other)
        .await
        .expect("Bob is admin");
    other.execute("COMMIT").await.expect("committed");

    let removed = removing.await.expect("the removal's task");
    assert!(matches!(removed, Err(StoreError::NotAdmin)), "{removed:?}");
    assert_eq!(
        store.members(&group.id).await.expect("members"),
        [bob.id, cid.id]
    );
}

/// A chat list is read in one snapshot: a member leaving between its reads
/// of the chats and of their members does not list the chat without them.
/// (SQLite's transactions read one snapshot as they are.)
#[tokio::test]
async fn postgres_reads_a_chat_list_in_one_snapshot() {
    use sqlx::{Connection, Executor};
    let url = new_postgres_database().await;
    let store = Arc::new(PgStore::connect(&url, 4).await.expect("PostgreSQL"));
    let ann = user(store.as_ref(), "ann").await;
    let bob = user(store.as_ref(), "bob").await;
    let group = store
        .create_group("g-snap", "Group", &ann.id, std::slice::from_ref(&bob.id))
        .await
        .expect("a group");
    // The list's read of the members (which joins `users`) waits here,
    // after its read of the chats.
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("PostgreSQL");
    holder.execute("BEGIN").await.expect("begun");
    holder
        .execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("users locked");
    let listing = tokio::spawn({
        let (store, bob) = (store.clone(), bob.id.clone());
        async move { store.chats_of(&bob).await }
    });
    let mut other = sqlx::PgConnection::connect(&url).await.expect("PostgreSQL");
    until_a_query_waits_for_a_lock(&mut other, "the list to wait for users").await;
    // Meanwhile Bob leaves.
    leave(&mut other, &group.id, &bob.id).await;
    holder.execute("COMMIT").await.expect("users free");

    let listed = listing.await.expect("the list's task").expect("a list");
    assert!(
        listed.iter().any(|chat| chat.id == group.id),
        "the chats were read before Bob left: {listed:?}"
    );
    for chat in &listed {
        assert!(
            chat.users.iter().any(|member| member.id == bob.id),
            "listed without Bob: {chat:?}"
        );
    }
}

/// A node without RabbitMQ sequences every chat itself, so it has its
/// PostgreSQL database alone: a second such node, or one with RabbitMQ,
/// is refused; nodes with RabbitMQ share it. A node's place goes with it.
#[tokio::test]
async fn a_database_takes_one_node_without_rabbitmq_or_any_number_with_it() {
    use natter_server::store::DeploymentLock;
    use natter_server::store::Sequencing::{Broker, InProcess};
    let url = new_postgres_database().await;
    let take = async |sequencing, patience| {
        DeploymentLock::take(&url, sequencing, patience)
            .await
            .expect("asked")
    };
    let alone = take(InProcess, NOW).await;
    assert!(alone.is_some());
    assert!(take(InProcess, NOW).await.is_none());
    assert!(take(Broker, NOW).await.is_none());

    drop(alone);
    let clustered = take(Broker, PATIENCE).await;
    assert!(clustered.is_some(), "free once the node is gone");
    assert!(take(Broker, NOW).await.is_some(), "shared");
    assert!(take(InProcess, NOW).await.is_none());
}

/// A node whose session PostgreSQL ended (a restart does) takes its place
/// again: a second node without RabbitMQ is still refused afterwards.
#[tokio::test]
async fn a_node_takes_its_place_again_when_its_session_is_lost() {
    use natter_server::store::DeploymentLock;
    use natter_server::store::Sequencing::InProcess;
    use sqlx::Connection;
    let url = new_postgres_database().await;
    let _alone = DeploymentLock::take(&url, InProcess, NOW)
        .await
        .expect("asked")
        .expect("taken");
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("PostgreSQL");
    let ended: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'natter-server (node)'",
    )
    .fetch_all(&mut admin)
    .await
    .expect("ended");
    let [(ended_pid, true)] = ended[..] else {
        panic!("one session ended, not {ended:?}");
    };
    // Ending a session only asks it to end: until it has, it still shows
    // holding the lock. Held again means held by another session.
    let held_again = async {
        loop {
            let (held,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() \
                 AND a.application_name = 'natter-server (node)' AND a.pid <> $1",
            )
            .bind(ended_pid)
            .fetch_one(&mut admin)
            .await
            .expect("asked");
            if held == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE * 3, held_again)
        .await
        .expect("the place taken again");
    let second = DeploymentLock::take(&url, InProcess, NOW)
        .await
        .expect("asked");
    assert!(second.is_none(), "still refused");
}

const NOW: std::time::Duration = std::time::Duration::ZERO;
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

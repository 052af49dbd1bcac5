//! PostgreSQL, for deployments that outgrow one machine: several server nodes
//! share one database, with RabbitMQ between them (one sequencer per
//! partition). Reads and writes use one pool. A node without RabbitMQ
//! sequences every chat by itself, so it must have the database alone
//! (`deployment_lock`).

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use natter_shared::Message;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::StoreResult;
use super::deployment_lock::{DeploymentLock, Sequencing};
use super::sql::{INSERT_CHUNK, MESSAGE_COLS, sql_store};

pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
    /// The session that holds this node's share of the database
    /// (`DeploymentLock`), for as long as the store lives.
    _place: Option<DeploymentLock>,
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let store = Self::open_pool(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to `url` as a server node: takes the node's place first
    /// (`DeploymentLock`), then migrates, so that a node refused never
    /// changed the schema under the one in its way. `None` when refused.
    pub async fn connect_node(
        url: &str,
        max_connections: u32,
        sequencing: Sequencing,
        patience: Duration,
    ) -> StoreResult<Option<Self>> {
        let Some(place) = DeploymentLock::take(url, sequencing, patience).await? else {
            return Ok(None);
        };
        let mut store = Self::open_pool(url, max_connections).await?;
        store._place = Some(place);
        store.migrate().await?;
        Ok(Some(store))
    }

    async fn open_pool(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("natter-server");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(PgStore {
            writer: pool.clone(),
            reader: pool,
            _place: None,
        })
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.writer)
            .await?;
        Ok(())
    }
}

/// How a batch of messages is written (`Store::store_messages`): one array
/// per column, unnested, so the statement's text is the same whatever the
/// batch's size and each connection prepares it once; rows of parameters
/// were a new statement for most batches, prepared and planned each time
/// (in isolation 26-30 against 28-35 µs of PostgreSQL's time per row; in
/// the whole pipeline ~3%, within the spread of runs: docs/benchmarks.md,
/// sixteenth round). And how each chat's latest message is found, and
/// how text compares.
impl PgStore {
    /// Compares text byte by byte, as SQLite does: a database's own
    /// collation would order (and, past a page, pick) search results
    /// differently from SQLite's.
    const BYTEWISE: &'static str = " COLLATE \"C\"";

    /// Inserts `batch`, skipping ids stored already; returns how many were
    /// new. A thousand at a time: a batch held back while the database was
    /// away can grow to many thousands of messages, and one statement must
    /// stay far below PostgreSQL's limit of 1 GB per message.
    async fn insert_messages(
        conn: &mut PgConnection,
        batch: &[Arc<Message>],
    ) -> Result<u64, sqlx::Error> {
        let mut inserted = 0;
        for chunk in batch.chunks(INSERT_CHUNK) {
            let mut ids = Vec::with_capacity(chunk.len());
            let mut chats = Vec::with_capacity(chunk.len());
            let mut seqs = Vec::with_capacity(chunk.len());
            let mut senders = Vec::with_capacity(chunk.len());
            let mut contents: Vec<Cow<'_, str>> = Vec::with_capacity(chunk.len());
            let mut clients = Vec::with_capacity(chunk.len());
            let mut times = Vec::with_capacity(chunk.len());
            for message in chunk {
                ids.push(message.id.as_str());
                chats.push(message.chat_id.as_str());
                seqs.push(message.seq);
                senders.push(message.sender.id.as_str());
                contents.push(storable(&message.content));
                clients.push(message.client_id.as_deref());
                times.push(message.created_at.timestamp_millis());
            }
            // A message delivered twice by the broker is stored once.
            let done = sqlx::query(
                "INSERT INTO messages (id, chat_id, seq, sender_id, content, client_id, created_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(ids)
            .bind(chats)
            .bind(seqs)
            .bind(senders)
            .bind(contents)
            .bind(clients)
            .bind(times)
            .execute(&mut *conn)
            .await?;
            inserted += done.rows_affected();
        }
        Ok(inserted)
    }

    /// Makes the transaction on `conn` read one snapshot: PostgreSQL's
    /// default gives each statement its own.
    async fn one_snapshot(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(conn)
            .await
            .map(drop)
    }

    /// The latest message of each chat that `condition` (on `c.id`) picks,
    /// as `MESSAGE_COLS`. One index probe per chat, ordered by seq and
    /// limited to one, whatever the statistics say: PostgreSQL caches a
    /// prepared statement's plan, and a plan made while `messages` was
    /// nearly empty joined all of a chat's messages against their maximum
    /// (30-65 ms a chat once the table had grown, until an ANALYZE).
    fn latest_messages_sql(condition: &str) -> String {
        format!(
            "SELECT {MESSAGE_COLS} FROM chats c \
             CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.chat_id = c.id ORDER BY m.seq DESC LIMIT 1) msg \
             JOIN users u ON u.id = msg.sender_id WHERE {condition}"
        )
    }

    /// Moves each chat's last seq and activity time forward to
    /// `(chat, seq, at)`, never back, in one statement.
    async fn advance_chats(
        conn: &mut PgConnection,
        latest: &[(&str, i64, i64)],
    ) -> Result<(), sqlx::Error> {
        let chats: Vec<&str> = latest.iter().map(|(chat, _, _)| *chat).collect();
        let seqs: Vec<i64> = latest.iter().map(|(_, seq, _)| *seq).collect();
        let times: Vec<i64> = latest.iter().map(|(_, _, at)| *at).collect();
        sqlx::query(
            "UPDATE chats SET \
             last_seq = GREATEST(last_seq, v.seq), updated_at = GREATEST(updated_at, v.at) \
             FROM UNNEST($1::text[], $2::int8[], $3::int8[]) AS v(id, seq, at) \
             WHERE chats.id = v.id",
        )
        .bind(chats)
        .bind(seqs)
        .bind(times)
        .execute(conn)
        .await?;
        Ok(())
    }
}

sql_store!(PgStore, sqlx::Postgres);

/// `text` as PostgreSQL can hold it: NUL, which it refuses (and the edge
/// refuses since it was found), replaced by U+FFFD. A message holding one
/// that was queued before is acked and delivered already; refusing it here
/// would fail its batch, and every batch after it, for good.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        tracing::warn!("a queued message held NUL: stored with U+FFFD in its place");
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

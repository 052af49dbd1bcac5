//! PostgreSQL, for deployments that outgrow one machine: several server nodes
//! share one database. Reads and writes use one pool; PostgreSQL's row locks
//! keep per-chat seqs consecutive across nodes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use natter_shared::Message;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::StoreResult;
use super::sql::sql_store;

pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("natter-server");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            writer: pool.clone(),
            reader: pool,
        })
    }
}

/// How a batch of messages is written (`Store::store_messages`): one array
/// per column, unnested, so the statement's text is the same whatever the
/// batch's size. PostgreSQL parses and plans it once per connection; rows
/// of parameters were a new statement for most batches, prepared and
/// planned each time (in isolation 10-20% less of PostgreSQL's time per row;
/// in the whole pipeline ~3%, within the spread of runs: docs/benchmarks.md,
/// sixteenth round).
impl PgStore {
    /// Inserts `batch`, skipping ids stored already; returns how many were new.
    async fn insert_messages(
        conn: &mut PgConnection,
        batch: &[Arc<Message>],
    ) -> Result<u64, sqlx::Error> {
        let mut ids = Vec::with_capacity(batch.len());
        let mut chats = Vec::with_capacity(batch.len());
        let mut seqs = Vec::with_capacity(batch.len());
        let mut senders = Vec::with_capacity(batch.len());
        let mut contents = Vec::with_capacity(batch.len());
        let mut clients = Vec::with_capacity(batch.len());
        let mut times = Vec::with_capacity(batch.len());
        for message in batch {
            ids.push(message.id.as_str());
            chats.push(message.chat_id.as_str());
            seqs.push(message.seq);
            senders.push(message.sender.id.as_str());
            contents.push(message.content.as_str());
            clients.push(message.client_id.as_deref());
            times.push(message.created_at.timestamp_millis());
        }
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
        .execute(conn)
        .await?;
        // A message delivered twice by the broker is stored once.
        Ok(done.rows_affected())
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

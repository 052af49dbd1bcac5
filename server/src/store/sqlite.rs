//! The embedded default: one SQLite file in the data folder, nothing to install.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection (they queue in-process instead of failing with SQLITE_BUSY)
//! while reads use a separate pool and run in parallel thanks to WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use natter_shared::Message;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

use super::StoreResult;
use super::sql::{INSERT_CHUNK, LOOKUP_CHUNK, MESSAGE_COLS, sql_store};
use crate::data_lock::DataLock;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The data folder's lock, when a server opened it (`holding`).
    _lock: Option<DataLock>,
}

impl SqliteStore {
    /// Opens (creating when missing) `natter.db` in `dir` and migrates it.
    pub async fn open(dir: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(dir.join("natter.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            _lock: None,
        })
    }

    /// Keeps `lock` for as long as the store lives: the folder stays this
    /// server's until the last writer (a pipeline still storing at
    /// shutdown, say) lets go of the store.
    pub fn holding(mut self, lock: DataLock) -> Self {
        self._lock = Some(lock);
        self
    }
}

/// How a batch of messages is written (`Store::store_messages`): SQLite
/// has no arrays to bind, so a batch goes as rows of parameters. And how
/// each chat's latest message is found, and how text compares.
impl SqliteStore {
    /// Compares text byte by byte (SQLite's default), as `PgStore` does.
    const BYTEWISE: &'static str = "";

    /// Inserts `batch`, skipping ids stored already; returns how many were new.
    async fn insert_messages(
        conn: &mut SqliteConnection,
        batch: &[Arc<Message>],
    ) -> Result<u64, sqlx::Error> {
        let mut inserted = 0;
        for chunk in batch.chunks(INSERT_CHUNK) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO messages (id, chat_id, seq, sender_id, content, client_id, created_at) ",
            );
            insert.push_values(chunk, |mut row, message| {
                row.push_bind(&message.id)
                    .push_bind(&message.chat_id)
                    .push_bind(message.seq)
                    .push_bind(&message.sender.id)
                    .push_bind(&message.content)
                    .push_bind(&message.client_id)
                    .push_bind(message.created_at.timestamp_millis());
            });
            // A message delivered twice by the broker is stored once.
            insert.push(" ON CONFLICT DO NOTHING");
            inserted += insert.build().execute(&mut *conn).await?.rows_affected();
        }
        Ok(inserted)
    }

    /// A transaction reads one snapshot already, from its first read (the
    /// database is in WAL mode).
    async fn one_snapshot(_conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// The latest message of each chat that `condition` (on `c.id`) picks,
    /// as `MESSAGE_COLS` (SQLite has no LATERAL; its planner probes the
    /// `(chat_id, seq)` index for the maximum).
    fn latest_messages_sql(condition: &str) -> String {
        format!(
            "SELECT {MESSAGE_COLS} FROM chats c \
             JOIN messages msg ON msg.chat_id = c.id \
             AND msg.seq = (SELECT MAX(seq) FROM messages WHERE chat_id = c.id) \
             JOIN users u ON u.id = msg.sender_id WHERE {condition}"
        )
    }

    /// Moves each chat's last seq and activity time forward to
    /// `(chat, seq, at)`, never back, one statement per 500 chats
    /// (VALUES names its columns column1..).
    async fn advance_chats(
        conn: &mut SqliteConnection,
        latest: &[(&str, i64, i64)],
    ) -> Result<(), sqlx::Error> {
        for chunk in latest.chunks(LOOKUP_CHUNK) {
            let mut update = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "UPDATE chats SET \
                 last_seq = CASE WHEN last_seq < v.column2 THEN v.column2 ELSE last_seq END, \
                 updated_at = CASE WHEN updated_at < v.column3 THEN v.column3 ELSE updated_at END \
                 FROM (",
            );
            update.push_values(chunk, |mut row, (chat_id, seq, at)| {
                row.push_bind(*chat_id).push_bind(*seq).push_bind(*at);
            });
            update.push(") AS v WHERE chats.id = v.column1");
            update.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::Executor;
    use sqlx::migrate::Migrator;

    use super::*;
    use crate::store::Store;

    /// A database as a release before the settings table left it, with a
    /// message in it.
    async fn database_from_before_settings(dir: &Path) {
        let old = dir.join("old-migrations");
        std::fs::create_dir_all(&old).expect("folder");
        let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for name in ["0001_init.sql", "0002_pipeline.sql"] {
            std::fs::copy(all.join(name), old.join(name)).expect("copied");
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .expect("options")
            .filename(dir.join("natter.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("opened");
        let migrator = Migrator::new(old.as_path()).await.expect("old migrations");
        migrator.run(&pool).await.expect("migrated");
        pool.execute(
            "INSERT INTO users VALUES ('u', 'Ann', 'ann@example.com', 'h', NULL, 'ann', 0);
             INSERT INTO chats VALUES ('c', 'Ann', 0, NULL, 'u:u', 1, 0, 0);
             INSERT INTO messages VALUES ('m', 'c', 1, 'u', 'hi', NULL, 0);",
        )
        .await
        .expect("a message stored");
        pool.close().await;
    }

    #[tokio::test]
    async fn the_first_value_proposed_for_a_setting_is_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).await.expect("opened");
        let first = store
            .agree_setting("partitions", "2")
            .await
            .expect("agreed");
        let later = store
            .agree_setting("partitions", "5")
            .await
            .expect("agreed");
        assert_eq!((first.as_str(), later.as_str()), ("2", "2"));
    }

    #[tokio::test]
    async fn a_database_with_messages_from_before_settings_keeps_eight_partitions() {
        let dir = tempfile::tempdir().expect("temp dir");
        database_from_before_settings(dir.path()).await;
        let store = SqliteStore::open(dir.path()).await.expect("upgraded");
        let partitions = store
            .agree_setting("partitions", "2")
            .await
            .expect("agreed");
        assert_eq!(partitions, "8");
    }
}

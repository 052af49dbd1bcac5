//! The local SQLite cache of one session: users, chats, messages and the
//! outbox. What the app shows comes from here; the connection keeps it in
//! step with the server.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use natter_shared::{Chat, Message, User};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::error::{CoreError, CoreResult};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A chat the user is no longer in (left, or removed), with what was
/// still to be sent in it: marked failed, and to be told.
#[derive(Debug, Clone)]
pub struct Left {
    pub chat: Chat,
    pub unsent: Vec<Outgoing>,
}

/// A message written here that the server has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outgoing {
    pub client_id: String,
    pub chat_id: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
    /// Why the server refused it for good; `None` while it is still to be sent.
    pub error: Option<String>,
}

/// What storing a message from the server did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// First time we see it.
    New,
    /// Already cached (a retry's announcement, a catch-up overlap).
    Known,
    /// It replaced a copy of the same send that a server delivered and
    /// died before storing: the user has seen it already.
    Replaced,
}

/// What the server said of a message it sent us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Delivered as it happened: the server may not have stored it yet, so
    /// our own stays in the outbox, to be sent again should the server die
    /// before storing it.
    Delivered,
    /// Stored: an ack, or read from history.
    Stored,
}

/// SQLite's primary result codes for a damaged file and for one that is
/// not a database; the extended codes (779, SQLITE_CORRUPT_INDEX, say)
/// hold them in their low byte.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_NOTADB: i32 = 26;

/// What SQLite keeps beside a database file: `<file>-wal` and `<file>-shm`.
pub const SQLITE_SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];

/// Appended to a cache file's name (before SQLite's suffixes) when it is
/// set aside, so that it opens as a database of its own.
pub const SET_ASIDE: &str = ".unreadable";

/// Whether opening failed because of what the file holds (not because of
/// the disk, or another process holding it), so a new cache would do.
fn is_unreadable(err: &CoreError) -> bool {
    use sqlx::migrate::MigrateError;
    let damaged = |err: &sqlx::Error| match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_CORRUPT | SQLITE_NOTADB)),
        _ => false,
    };
    match err {
        CoreError::Cache(err) => damaged(err),
        CoreError::Migrate(
            MigrateError::VersionMissing(_)
            | MigrateError::VersionMismatch(_)
            | MigrateError::Dirty(_),
        ) => true,
        CoreError::Migrate(MigrateError::Execute(err) | MigrateError::ExecuteMigration(err, _)) => {
            damaged(err)
        }
        _ => false,
    }
}

/// Renames the cache's file and SQLite's files beside it to
/// `<file>.unreadable`, `<file>.unreadable-wal`, ..., replacing any set
/// aside before.
fn set_aside(path: &Path) -> CoreResult<()> {
    for suffix in SQLITE_SUFFIXES {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = path.as_os_str().to_owned();
        to.push(SET_ASIDE);
        to.push(suffix);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// What the cache holds of a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatHeld {
    /// Not cached: its `chat` frame was missed, or it was forgotten.
    Unknown,
    /// Cached, with messages up to `highest_seq` (none yet: `None`).
    Known { highest_seq: Option<i64> },
}

#[derive(Clone)]
pub struct Cache {
    pool: SqlitePool,
}

impl Cache {
    pub async fn open(path: &Path) -> CoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A crash may lose the last moments of cache, never corrupt it;
            // the outbox is written with FULL below.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        if let Err(err) = MIGRATIONS.run(&pool).await {
            pool.close().await;
            return Err(err.into());
        }
        Ok(Cache { pool })
    }

    /// Opens the cache at `path`. One that cannot be read as this release's
    /// cache (damaged, or written by a newer release before a downgrade)
    /// is set aside (`<file>.unreadable`) and a new one started: it is a
    /// cache, and the app must start. What it held comes back from the
    /// server, except what was still in its outbox, which stays in the
    /// file set aside. Any other failure (a full disk, say) is an error.
    pub async fn open_or_start_over(path: &Path) -> CoreResult<Self> {
        match Self::open(path).await {
            Err(err) if is_unreadable(&err) => {
                tracing::warn!(
                    error = %err,
                    path = %path.display(),
                    "the local cache cannot be read: setting it aside and starting a new one"
                );
                set_aside(path)?;
                Self::open(path).await
            }
            opened => opened,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- facts about the cache ----

    /// Whether a catch-up has completed with this cache (migration 0003).
    pub async fn has_caught_up(&self) -> CoreResult<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT value FROM facts WHERE name = 'caught_up'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Records that a catch-up has completed.
    pub async fn set_caught_up(&self) -> CoreResult<()> {
        sqlx::query(
            "INSERT INTO facts (name, value) VALUES ('caught_up', 'yes') \
             ON CONFLICT (name) DO NOTHING",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- users ----

    pub async fn put_users(&self, users: &[User]) -> CoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for user in users {
            sqlx::query("INSERT INTO users (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = ?2")
                .bind(&user.id)
                .bind(serde_json::to_string(user)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user(&self, id: &str) -> CoreResult<Option<User>> {
        let row = sqlx::query("SELECT body FROM users WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(serde_json::from_str(row.get::<&str, _>(0))?))
            .transpose()
    }

    // ---- chats ----

    /// Stores a chat as the server described it, keeping its unread count.
    /// A chat new to the cache came in while the app was in touch (a live
    /// event, the user's own action): its history so far was not news.
    pub async fn put_chat(&self, chat: &Chat) -> CoreResult<()> {
        let latest = chat.latest_message.as_ref().map(|message| message.seq);
        self.put_chat_seen_through(chat, latest).await
    }

    /// `put_chat`, with `seen_through` for a chat new to the cache (a chat
    /// already cached keeps its own, and its last message when that is
    /// newer than the server's: one delivered before the server stored it).
    pub async fn put_chat_seen_through(
        &self,
        chat: &Chat,
        seen_through: Option<i64>,
    ) -> CoreResult<()> {
        self.put_users(&chat.users).await?;
        // Reads before it writes, as `put_message` does.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let cached: Option<String> = sqlx::query_scalar("SELECT body FROM chats WHERE id = ?1")
            .bind(&chat.id)
            .fetch_optional(&mut *tx)
            .await?;
        let mut chat = chat.clone();
        if let Some(cached) = cached {
            keep_newer_latest(&mut chat, serde_json::from_str(&cached)?);
        }
        sqlx::query(
            "INSERT INTO chats (id, body, updated_at, seen_through) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET body = ?2, updated_at = ?3",
        )
        .bind(&chat.id)
        .bind(serde_json::to_string(&chat)?)
        .bind(chat.updated_at.timestamp_millis())
        .bind(seen_through)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the cached chat list the server's, as `list` (the request for
    /// it) answers: a chat not in it that `me` was in, they left or were
    /// removed from meanwhile (`leave_chat`). Returns the list and the chats
    /// left. With
    /// `new_are_unseen` (a catch-up after being away), a chat new to the
    /// cache was started, or joined, meanwhile: nothing in it was seen.
    ///
    /// A chat that entered the cache or changed in it while the list was
    /// on its way (the user started, left or renamed it; a live frame
    /// told of a change) is newer than the list, which cannot speak for
    /// it: it stays as it is. So the cache is read here before `list` runs,
    /// and again after.
    pub async fn replace_chats(
        &self,
        list: impl Future<Output = CoreResult<Vec<Chat>>>,
        new_are_unseen: bool,
        me: &str,
    ) -> CoreResult<(Vec<Chat>, Vec<Left>)> {
        let cached_before = self.chat_bodies().await?;
        let chats = list.await?;
        let cached_now = self.chat_bodies().await?;
        let changed_meanwhile = |id: &str| cached_before.get(id) != cached_now.get(id);
        for chat in &chats {
            if changed_meanwhile(&chat.id) {
                continue;
            }
            if new_are_unseen {
                self.put_chat_seen_through(chat, None).await?;
            } else {
                self.put_chat(chat).await?;
            }
        }
        let listed: Vec<&str> = chats.iter().map(|chat| chat.id.as_str()).collect();
        let mut left = Vec::new();
        for id in cached_before.keys() {
            if listed.contains(&id.as_str()) || changed_meanwhile(id) {
                continue;
            }
            // Each chat left on its own: one that fails stays as it was,
            // for the next list, and those left before it are still told
            // (their unsent messages are marked failed already).
            match self.leave_unlisted(id, me).await {
                Ok(gone) => left.extend(gone),
                Err(err) => {
                    tracing::warn!(chat_id = %id, error = %err, "leaving a chat the list lacks; trying at the next list")
                }
            }
        }
        Ok((chats, left))
    }

    /// Leaves a cached chat the server no longer lists for `me`, unless
    /// it was left before (no longer among its members): then as it was.
    async fn leave_unlisted(&self, id: &str, me: &str) -> CoreResult<Option<Left>> {
        match self.chat(id).await? {
            Some((mut chat, _)) if chat.has_member(me) => {
                chat.users.retain(|user| user.id != me);
                self.leave_chat(&chat).await
            }
            _ => Ok(None),
        }
    }

    /// Keeps a chat the user is no longer in (left, or removed) readable
    /// as it was, as other messengers do: `chat` is the server's last word
    /// on it, without the user among its members, which is what marks it
    /// left. Its draft goes; what was unsent stays, marked failed
    /// (`fail_unsent`), and is returned with it, to be told. What the
    /// server stored and the cache set aside stays as it was
    /// (`outgoing_stored`). `None` when the chat is not cached.
    pub async fn leave_chat(&self, chat: &Chat) -> CoreResult<Option<Left>> {
        let mut tx = self.pool.begin().await?;
        let unsent = fail_unsent(&mut tx, &chat.id).await?;
        sqlx::query("DELETE FROM drafts WHERE chat_id = ?1")
            .bind(&chat.id)
            .execute(&mut *tx)
            .await?;
        let kept = sqlx::query("UPDATE chats SET body = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(&chat.id)
            .bind(serde_json::to_string(chat)?)
            .bind(chat.updated_at.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((kept.rows_affected() > 0).then(|| Left {
            chat: chat.clone(),
            unsent,
        }))
    }

    /// Per chat, how far its history was not news when it entered the
    /// cache (migration 0003); `None` for all of it being news.
    pub async fn seen_through(&self) -> CoreResult<HashMap<String, Option<i64>>> {
        let rows = sqlx::query("SELECT id, seen_through FROM chats")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Keeps `text` as the chat's draft; an empty text removes it. False
    /// when the chat is not cached (a draft is never kept without its chat).
    pub async fn set_draft(&self, chat_id: &str, text: &str) -> CoreResult<bool> {
        if text.is_empty() {
            sqlx::query("DELETE FROM drafts WHERE chat_id = ?1")
                .bind(chat_id)
                .execute(&self.pool)
                .await?;
            return Ok(true);
        }
        // One statement: a chat forgotten meanwhile cannot be left a draft.
        let kept = sqlx::query(
            "INSERT INTO drafts (chat_id, text) \
             SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM chats WHERE id = ?1) \
             ON CONFLICT (chat_id) DO UPDATE SET text = excluded.text",
        )
        .bind(chat_id)
        .bind(text)
        .execute(&self.pool)
        .await?;
        Ok(kept.rows_affected() > 0)
    }

    /// Every chat's draft, by chat id.
    pub async fn drafts(&self) -> CoreResult<HashMap<String, String>> {
        let rows = sqlx::query("SELECT chat_id, text FROM drafts")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Deletes a chat with its messages, outbox and draft; returns what it
    /// was, with what was unsent, if it was cached.
    pub async fn forget_chat(&self, chat_id: &str) -> CoreResult<Option<Left>> {
        let mut tx = self.pool.begin().await?;
        let unsent = take_unsent(&mut tx, chat_id).await?;
        // What the server stored and the cache set aside goes too.
        sqlx::query("DELETE FROM outbox WHERE chat_id = ?1")
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM messages WHERE chat_id = ?1")
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM drafts WHERE chat_id = ?1")
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        let chat_row_gone = sqlx::query("DELETE FROM chats WHERE id = ?1 RETURNING body, unread")
            .bind(chat_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let chat = chat_row_gone.as_ref().map(chat_row).transpose()?;
        Ok(chat.map(|(chat, _)| Left { chat, unsent }))
    }

    /// Every chat's stored body, by id: what `replace_chats` compares.
    async fn chat_bodies(&self) -> CoreResult<HashMap<String, String>> {
        let rows = sqlx::query("SELECT id, body FROM chats")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub async fn chat(&self, chat_id: &str) -> CoreResult<Option<(Chat, u32)>> {
        let row = sqlx::query("SELECT body, unread FROM chats WHERE id = ?1")
            .bind(chat_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| chat_row(&row)).transpose()
    }

    /// Every chat with its unread count, most recent activity first.
    pub async fn chats(&self) -> CoreResult<Vec<(Chat, u32)>> {
        let rows = sqlx::query("SELECT body, unread FROM chats ORDER BY updated_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(chat_row).collect()
    }

    /// Marks a chat read; true when it had unread messages.
    pub async fn mark_read(&self, chat_id: &str) -> CoreResult<bool> {
        let done = sqlx::query("UPDATE chats SET unread = 0 WHERE id = ?1 AND unread > 0")
            .bind(chat_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn unread_total(&self) -> CoreResult<u32> {
        let total: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(unread), 0) FROM chats")
            .fetch_one(&self.pool)
            .await?;
        Ok(u32::try_from(total).unwrap_or(u32::MAX))
    }

    // ---- messages ----

    /// Stores a message from the server once (by id), makes it its chat's
    /// latest when it is, and, once the server says it is stored
    /// (`Source::Stored`), removes the matching outbox entry of ours in the
    /// same transaction: a message is never both pending and sent.
    ///
    /// The server's newest word wins over what a server that died had said
    /// before storing it: another message at the same seq goes, and so does
    /// an earlier copy of the same send (same chat, sender and clientId) at a
    /// lower seq (`Stored::Replaced`); a copy at a lower seq than the one
    /// held is not kept (`Stored::Known`).
    pub async fn put_message(
        &self,
        message: &Message,
        me: &str,
        source: Source,
    ) -> CoreResult<Stored> {
        Ok(self
            .put_message_counting(message, me, source, || false)
            .await?
            .0)
    }

    /// `put_message`; a message new here (not a replaced copy, which was
    /// counted as that copy) that `unseen` says the user has not seen
    /// (asked once it is written, just before the commit: what the user
    /// looks at then) also counts one more unread in its chat, in the same
    /// transaction: stored apart, a crash or a failed count between would
    /// leave it stored and never counted (it is known when it comes
    /// again). Returns the chat's unread count when it was counted.
    pub async fn put_message_counting(
        &self,
        message: &Message,
        me: &str,
        source: Source,
        unseen: impl FnOnce() -> bool,
    ) -> CoreResult<(Stored, Option<u32>)> {
        // It reads before it writes: a deferred transaction would fail to
        // upgrade (SQLITE_BUSY) once another connection wrote after its read.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // A chat no longer cached (deleted while this was on its way: an
        // ack, a page) keeps no messages: one kept would stand alone, and
        // if the chat came back, catch-up and older pages would read around
        // it and leave a gap.
        let cached: Option<i64> = sqlx::query_scalar("SELECT 1 FROM chats WHERE id = ?1")
            .bind(&message.chat_id)
            .fetch_optional(&mut *tx)
            .await?;
        if cached.is_none() {
            forget_sent_outgoing(&mut tx, message, me, source).await?;
            tx.commit().await?;
            return Ok((Stored::Known, None));
        }
        let mut replaced = false;
        if let Some(client_id) = &message.client_id {
            let copies: Vec<(String, i64)> = sqlx::query_as(
                "SELECT id, seq FROM messages \
                 WHERE sender_id = ?1 AND client_id = ?2 AND chat_id = ?3 AND id <> ?4",
            )
            .bind(&message.sender.id)
            .bind(client_id)
            .bind(&message.chat_id)
            .bind(&message.id)
            .fetch_all(&mut *tx)
            .await?;
            if copies.iter().any(|(_, seq)| *seq > message.seq) {
                forget_sent_outgoing(&mut tx, message, me, source).await?;
                tx.commit().await?;
                return Ok((Stored::Known, None));
            }
            for (id, _) in &copies {
                sqlx::query("DELETE FROM messages WHERE id = ?1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            replaced = !copies.is_empty();
        }
        sqlx::query("DELETE FROM messages WHERE chat_id = ?1 AND seq = ?2 AND id <> ?3")
            .bind(&message.chat_id)
            .bind(message.seq)
            .bind(&message.id)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO messages (id, chat_id, seq, body, sender_id, client_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&message.id)
        .bind(&message.chat_id)
        .bind(message.seq)
        .bind(serde_json::to_string(message)?)
        .bind(&message.sender.id)
        .bind(&message.client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        forget_sent_outgoing(&mut tx, message, me, source).await?;
        if inserted {
            let row = sqlx::query("SELECT body FROM chats WHERE id = ?1")
                .bind(&message.chat_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                let mut chat: Chat = serde_json::from_str(row.get::<&str, _>(0))?;
                // At the same seq, this one replaced the latest.
                let newer = chat
                    .latest_message
                    .as_ref()
                    .is_none_or(|latest| latest.seq <= message.seq);
                if newer {
                    chat.latest_message = Some(message.clone());
                    chat.updated_at = chat.updated_at.max(message.created_at);
                    sqlx::query("UPDATE chats SET body = ?1, updated_at = ?2 WHERE id = ?3")
                        .bind(serde_json::to_string(&chat)?)
                        .bind(chat.updated_at.timestamp_millis())
                        .bind(&chat.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let stored = match (inserted, replaced) {
            (false, _) => Stored::Known,
            (true, false) => Stored::New,
            (true, true) => Stored::Replaced,
        };
        let mut unread = None;
        if stored == Stored::New && unseen() {
            let counted: Option<i64> = sqlx::query_scalar(
                "UPDATE chats SET unread = unread + 1 WHERE id = ?1 RETURNING unread",
            )
            .bind(&message.chat_id)
            .fetch_optional(&mut *tx)
            .await?;
            unread = Some(counted.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)));
        }
        tx.commit().await?;
        Ok((stored, unread))
    }

    /// The highest seq cached for each chat that has messages.
    pub async fn max_seqs(&self) -> CoreResult<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT chat_id, MAX(seq) FROM messages GROUP BY chat_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Whether a chat is cached and, if so, the highest seq cached for it:
    /// what a live message is checked against, in one query.
    pub async fn chat_held(&self, chat_id: &str) -> CoreResult<ChatHeld> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT (SELECT MAX(seq) FROM messages WHERE chat_id = ?1) FROM chats WHERE id = ?1",
        )
        .bind(chat_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => ChatHeld::Unknown,
            Some((highest_seq,)) => ChatHeld::Known { highest_seq },
        })
    }

    /// The lowest seq cached for a chat.
    pub async fn min_seq(&self, chat_id: &str) -> CoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(seq) FROM messages WHERE chat_id = ?1")
                .bind(chat_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Up to `limit` messages before `before` (or the newest), oldest first.
    pub async fn messages(
        &self,
        chat_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> CoreResult<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT body FROM (SELECT body, seq FROM messages WHERE chat_id = ?1 AND seq < ?2 \
             ORDER BY seq DESC LIMIT ?3) ORDER BY seq",
        )
        .bind(chat_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(serde_json::from_str(row.get::<&str, _>(0))?))
            .collect()
    }

    // ---- outbox ----

    /// Keeps a message to send, durably: it survives a crash or a restart.
    pub async fn push_outgoing(&self, outgoing: &Outgoing) -> CoreResult<()> {
        self.insert_outgoing("INSERT", outgoing).await
    }

    /// `push_outgoing` for a message kept from an ended session, unless
    /// the outbox has its client id already (kept twice, or put back before).
    pub async fn restore_outgoing(&self, outgoing: &Outgoing) -> CoreResult<()> {
        self.insert_outgoing("INSERT OR IGNORE", outgoing).await
    }

    async fn insert_outgoing(&self, insert: &str, outgoing: &Outgoing) -> CoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        let result = sqlx::query(&format!(
            "{insert} INTO outbox (client_id, chat_id, content, created_at) VALUES (?1, ?2, ?3, ?4)"
        ))
        .bind(&outgoing.client_id)
        .bind(&outgoing.chat_id)
        .bind(&outgoing.content)
        .bind(outgoing.created_at.timestamp_millis())
        .execute(&mut *conn)
        .await;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        result?;
        Ok(())
    }

    /// Everything waiting to be sent, in the order it was written (not by
    /// its time: a clock set back between two sends would send the second
    /// first, and give it the lower seq for good): not what the server is
    /// known to have stored.
    pub async fn outbox(&self) -> CoreResult<Vec<Outgoing>> {
        self.outbox_where("stored_seq IS NULL").await
    }

    /// The outbox's messages still to be sent, oldest first: not those the
    /// server refused for good (`error`), which wait to be discarded.
    pub async fn to_send(&self) -> CoreResult<Vec<Outgoing>> {
        self.outbox_where("stored_seq IS NULL AND error IS NULL")
            .await
    }

    /// The outbox's rows matching `condition` (SQL written here, never
    /// input), in the order they were written.
    async fn outbox_where(&self, condition: &str) -> CoreResult<Vec<Outgoing>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE {condition} ORDER BY rowid"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(outgoing_row).collect())
    }

    /// `chat_id`'s oldest message still to be sent (not stored, nor
    /// refused for good), written after `after`'s when that is still in
    /// the outbox.
    pub async fn next_to_send(
        &self,
        chat_id: &str,
        after: Option<&str>,
    ) -> CoreResult<Option<Outgoing>> {
        let row = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE chat_id = ?1 AND stored_seq IS NULL \
             AND error IS NULL \
             AND rowid > COALESCE((SELECT rowid FROM outbox WHERE client_id = ?2), 0) \
             ORDER BY rowid LIMIT 1"
        ))
        .bind(chat_id)
        .bind(after)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(outgoing_row))
    }

    /// A chat's outbox as the user sees it: without the messages the
    /// server delivered already (they show as sent) while their ack is on
    /// its way, unless a resend was refused since.
    pub async fn unsent(&self, chat_id: &str, me: &str) -> CoreResult<Vec<Outgoing>> {
        self.unsent_in(Some(chat_id), me).await
    }

    /// `unsent` of every chat, in the order written.
    pub async fn all_unsent(&self, me: &str) -> CoreResult<Vec<Outgoing>> {
        self.unsent_in(None, me).await
    }

    /// One marked failed as its chat was left (`fail_unsent`) but cached
    /// since, delivered (a node told of the leave before the message), was
    /// sent after all: it shows as sent, not twice.
    async fn unsent_in(&self, chat_id: Option<&str>, me: &str) -> CoreResult<Vec<Outgoing>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox o WHERE (?1 IS NULL OR chat_id = ?1) \
             AND stored_message IS NULL AND (error IS NOT NULL AND error <> ?3 OR NOT EXISTS \
             (SELECT 1 FROM messages m WHERE m.sender_id = ?2 AND m.client_id = o.client_id)) \
             ORDER BY rowid"
        ))
        .bind(chat_id)
        .bind(me)
        .bind(NO_LONGER_A_MEMBER)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(outgoing_row).collect())
    }

    /// The server stored `client_id` as `message`, but the message cannot
    /// be cached yet (its ack was held back: it would leave a hole): it
    /// stays in the outbox, set aside (`stored_aside`: shown as sent,
    /// neither sent again nor reported unsent), until history brings it.
    /// Leaving the chat keeps it so: history is closed to one who left,
    /// and is read again from the cache's top if they are added back.
    pub async fn outgoing_stored(&self, client_id: &str, message: &Message) -> CoreResult<()> {
        sqlx::query("UPDATE outbox SET stored_seq = ?1, stored_message = ?2 WHERE client_id = ?3")
            .bind(message.seq)
            .bind(serde_json::to_string(message)?)
            .bind(client_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A chat's messages of ours that the server stored but the cache
    /// cannot hold yet (`outgoing_stored`), by seq: above every cached one.
    pub async fn stored_aside(&self, chat_id: &str, me: &str) -> CoreResult<Vec<Message>> {
        self.stored_aside_in(Some(chat_id), me).await
    }

    /// `stored_aside` of every chat, by seq within each.
    pub async fn all_stored_aside(&self, me: &str) -> CoreResult<Vec<Message>> {
        self.stored_aside_in(None, me).await
    }

    async fn stored_aside_in(&self, chat_id: Option<&str>, me: &str) -> CoreResult<Vec<Message>> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT stored_message FROM outbox o WHERE (?1 IS NULL OR chat_id = ?1) \
             AND stored_message IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM messages m WHERE m.sender_id = ?2 AND m.client_id = o.client_id) \
             ORDER BY chat_id, stored_seq",
        )
        .bind(chat_id)
        .bind(me)
        .fetch_all(&self.pool)
        .await?;
        bodies
            .iter()
            .map(|body| Ok(serde_json::from_str(body)?))
            .collect()
    }

    /// A message still to be sent or refused, by its client id: not one the
    /// server stored and the cache set aside (an answer to another copy of
    /// it, late, must not show it as waiting or failed again).
    pub async fn outgoing(&self, client_id: &str) -> CoreResult<Option<Outgoing>> {
        let row = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE client_id = ?1 AND stored_message IS NULL"
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(outgoing_row))
    }

    /// Whether a message with this client id is in the outbox (written
    /// here, not stored yet, or stored and set aside).
    pub async fn in_outbox(&self, client_id: &str) -> CoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM outbox WHERE client_id = ?1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The server refused a message for good: keep it, marked, for the user to see.
    pub async fn fail_outgoing(&self, client_id: &str, error: &str) -> CoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET error = ?1 WHERE client_id = ?2 AND stored_message IS NULL",
        )
        .bind(error)
        .bind(client_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn drop_outgoing(&self, client_id: &str) -> CoreResult<()> {
        sqlx::query("DELETE FROM outbox WHERE client_id = ?1")
            .bind(client_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

const OUTBOX_COLS: &str = "client_id, chat_id, content, created_at, error";

/// The server's copy of a chat can be older than the cache's last message
/// (delivered live before the server stored it): that message, and its
/// time, stay the chat's last, or the list would step back until the next.
fn keep_newer_latest(chat: &mut Chat, cached: Chat) {
    let seq = |chat: &Chat| chat.latest_message.as_ref().map(|message| message.seq);
    if seq(&cached) > seq(chat) {
        chat.updated_at = chat.updated_at.max(cached.updated_at);
        chat.latest_message = cached.latest_message;
    }
}

/// Why a message left unsent in a chat the user is no longer in was not
/// sent: what it shows with, marked failed (`fail_unsent`).
pub const NO_LONGER_A_MEMBER: &str = "you are no longer in this group";

/// Marks a chat's unsent messages failed, in `tx` (`NO_LONGER_A_MEMBER`),
/// but for what the server stored and the cache set aside
/// (`Cache::outgoing_stored`): returns those it marked, in the order
/// written. Marked in the transaction that leaves the chat, they stay in
/// the outbox, shown as not sent until the user discards them: a notice
/// alone would be lost to a crash before it was shown. One refused for
/// good before was told then, and keeps its reason.
async fn fail_unsent(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    chat_id: &str,
) -> CoreResult<Vec<Outgoing>> {
    drop_delivered(tx, chat_id).await?;
    let rows = sqlx::query(&format!(
        "UPDATE outbox SET error = ?2 \
         WHERE chat_id = ?1 AND stored_message IS NULL AND error IS NULL \
         RETURNING {OUTBOX_COLS}, rowid"
    ))
    .bind(chat_id)
    .bind(NO_LONGER_A_MEMBER)
    .fetch_all(&mut **tx)
    .await?;
    Ok(in_order_written(&rows))
}

/// Takes a chat's outbox out, in `tx`, but for what the server stored and
/// the cache set aside (`Cache::outgoing_stored`): returns what was
/// unsent, in the order written.
async fn take_unsent(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    chat_id: &str,
) -> CoreResult<Vec<Outgoing>> {
    drop_delivered(tx, chat_id).await?;
    let rows = sqlx::query(&format!(
        "DELETE FROM outbox WHERE chat_id = ?1 AND stored_message IS NULL \
         RETURNING {OUTBOX_COLS}, rowid"
    ))
    .bind(chat_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(in_order_written(&rows))
}

/// Takes out of a chat's outbox, in `tx`, what is not unsent though its
/// ack never came: delivered already, or stored (its ack held back) by a
/// release that did not keep the message. One stored and set aside stays
/// (`outgoing_stored`).
async fn drop_delivered(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    chat_id: &str,
) -> CoreResult<()> {
    sqlx::query(
        "DELETE FROM outbox WHERE chat_id = ?1 AND error IS NULL AND stored_message IS NULL \
         AND (stored_seq IS NOT NULL \
         OR EXISTS (SELECT 1 FROM messages m WHERE m.chat_id = ?1 AND m.client_id = outbox.client_id))",
    )
    .bind(chat_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Outbox rows (`OUTBOX_COLS` and rowid) a statement's RETURNING gave, in
/// the order written: RETURNING gives no order. What a caller reports is
/// what its statement changed, so a message queued meanwhile is either
/// reported or was never queued, never lost unseen.
fn in_order_written(rows: &[sqlx::sqlite::SqliteRow]) -> Vec<Outgoing> {
    let mut unsent: Vec<(i64, Outgoing)> = rows
        .iter()
        .map(|row| (row.get(5), outgoing_row(row)))
        .collect();
    unsent.sort_by_key(|(rowid, _)| *rowid);
    unsent.into_iter().map(|(_, outgoing)| outgoing).collect()
}

fn outgoing_row(row: &sqlx::sqlite::SqliteRow) -> Outgoing {
    Outgoing {
        client_id: row.get(0),
        chat_id: row.get(1),
        content: row.get(2),
        created_at: millis(row.get(3)),
        error: row.get(4),
    }
}

fn chat_row(row: &sqlx::sqlite::SqliteRow) -> CoreResult<(Chat, u32)> {
    let chat = serde_json::from_str(row.get::<&str, _>(0))?;
    let unread: i64 = row.get(1);
    Ok((chat, u32::try_from(unread).unwrap_or(0)))
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Removes our own message from the outbox once the server stored it.
async fn forget_sent_outgoing(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    message: &Message,
    me: &str,
    source: Source,
) -> CoreResult<()> {
    if source == Source::Stored
        && message.sender.id == me
        && let Some(client_id) = &message.client_id
    {
        sqlx::query("DELETE FROM outbox WHERE client_id = ?1")
            .bind(client_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(id: &str) -> Chat {
        Chat {
            id: id.into(),
            chat_name: id.into(),
            is_group_chat: true,
            users: Vec::new(),
            group_admin: None,
            latest_message: None,
            updated_at: Utc::now(),
        }
    }

    fn outgoing(client_id: &str, chat_id: &str, at: DateTime<Utc>) -> Outgoing {
        Outgoing {
            client_id: client_id.into(),
            chat_id: chat_id.into(),
            content: client_id.into(),
            created_at: at,
            error: None,
        }
    }

    #[tokio::test]
    async fn a_cache_that_cannot_be_read_is_set_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache.db");
        std::fs::write(
            &path,
            b"not a database, but long enough to be read as one".repeat(100),
        )
        .expect("written");
        assert!(Cache::open(&path).await.is_err());
        let cache = Cache::open_or_start_over(&path).await.expect("a new cache");
        cache.put_chat(&chat("c")).await.expect("usable");
        assert!(dir.path().join("cache.db.unreadable").is_file());
    }

    #[tokio::test]
    async fn a_cache_from_a_newer_release_is_set_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache.db");
        let cache = Cache::open(&path).await.expect("open");
        cache.put_chat(&chat("c")).await.expect("chat");
        // What a later release's migration leaves in the ledger.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, X'00', 0)",
        )
        .execute(&cache.pool)
        .await
        .expect("recorded");
        cache.close().await;

        let err = Cache::open(&path).await.err().expect("refused as it is");
        assert!(is_unreadable(&err), "{err}");
        let cache = Cache::open_or_start_over(&path).await.expect("a new cache");
        assert!(cache.chats().await.expect("chats").is_empty());
        // What was set aside opens as a database, with what it held.
        let aside = Cache::open(&dir.path().join("cache.db.unreadable")).await;
        let err = aside.err().expect("still from the future");
        assert!(is_unreadable(&err), "{err}");
        let pool = SqlitePool::connect_with(
            SqliteConnectOptions::new().filename(dir.path().join("cache.db.unreadable")),
        )
        .await
        .expect("opens");
        let chats: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chats")
            .fetch_one(&pool)
            .await
            .expect("readable");
        assert_eq!(chats, 1);
    }

    #[tokio::test]
    async fn a_cache_that_opens_is_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache.db");
        let cache = Cache::open(&path).await.expect("open");
        cache.put_chat(&chat("c")).await.expect("chat");
        cache.close().await;
        let cache = Cache::open_or_start_over(&path).await.expect("open");
        assert_eq!(cache.chats().await.expect("chats").len(), 1);
        assert!(!dir.path().join("cache.db.unreadable").exists());
    }

    /// `chat(id)` with `members`.
    fn chat_of(id: &str, members: &[&str]) -> Chat {
        Chat {
            users: members.iter().map(|member| user(member)).collect(),
            ..chat(id)
        }
    }

    fn members(chat: &Chat) -> Vec<&str> {
        chat.users.iter().map(|user| user.id.as_str()).collect()
    }

    /// A catch-up's list makes the cache the server's: a chat the user was
    /// in and the list lacks is left (kept, without them among its
    /// members), one left before stays so; but one that came in or
    /// changed while the list was on its way (started, left, added back)
    /// stays as it is: the list is older.
    #[tokio::test]
    async fn replacing_the_chats_leaves_those_not_listed_but_not_those_changed_meanwhile() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::open(&dir.path().join("cache.db"))
            .await
            .expect("open");
        let put = async |id: &str, members: &[&str]| cache.put_chat(&chat_of(id, members)).await;
        for (id, members) in [
            ("kept", ["me", "bob"].as_slice()),
            ("gone", &["me", "bob"]),
            ("left-before", &["bob"]),
            ("left-meanwhile", &["me", "bob"]),
            ("back-meanwhile", &["bob"]),
        ] {
            put(id, members).await.expect("chat");
        }

        let list = async {
            put("new", &["me"]).await?;
            put("left-meanwhile", &["bob"]).await?;
            put("back-meanwhile", &["me", "bob"]).await?;
            // Read by the server before those changes.
            Ok(vec![
                chat_of("kept", &["me", "bob"]),
                chat_of("new", &[]),
                chat_of("left-meanwhile", &["me", "bob"]),
            ])
        };
        let (listed, left) = cache
            .replace_chats(list, false, "me")
            .await
            .expect("replaced");
        assert_eq!(listed.len(), 3);

        let left: Vec<_> = left.iter().map(|left| left.chat.id.as_str()).collect();
        assert_eq!(left, ["gone"]);
        let mut ids: Vec<_> = cache
            .chat_bodies()
            .await
            .expect("ids")
            .into_keys()
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "back-meanwhile",
                "gone",
                "kept",
                "left-before",
                "left-meanwhile",
                "new"
            ]
        );
        for (id, now) in [
            ("gone", ["bob"].as_slice()),
            ("new", &["me"]),
            ("left-meanwhile", &["bob"]),
            ("back-meanwhile", &["me", "bob"]),
        ] {
            let (chat, _) = cache.chat(id).await.expect("chat").expect("kept");
            assert_eq!(members(&chat), now, "{id}");
        }
    }

    /// A message seen for the first time and unseen counts one unread in
    /// the same write: when the count fails, the message is not stored
    /// either, so that it comes again as new and is counted then (stored
    /// alone, it would come again as known, and never be counted). Known
    /// and replaced copies count nothing.
    #[tokio::test]
    async fn an_unseen_message_is_stored_and_counted_together_or_not_at_all() {
        use sqlx::Executor;
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        let first = message("m1", 1, "bob", Some("k1"));
        cache
            .pool
            .execute(
                "CREATE TRIGGER no_counting BEFORE UPDATE OF unread ON chats \
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END",
            )
            .await
            .expect("a trigger");
        let failed = cache
            .put_message_counting(&first, "me", Source::Delivered, || true)
            .await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(cached(&cache).await, []);

        cache
            .pool
            .execute("DROP TRIGGER no_counting")
            .await
            .expect("dropped");
        let put = cache
            .put_message_counting(&first, "me", Source::Delivered, || true)
            .await
            .expect("put");
        assert_eq!(put, (Stored::New, Some(1)));
        let again = cache
            .put_message_counting(&first, "me", Source::Stored, || true)
            .await
            .expect("put");
        assert_eq!(again, (Stored::Known, None));
        // The same send again under another id and a later seq (a server
        // that died before storing the first): shown already, not counted.
        let copy = Message {
            id: "m1-again".into(),
            seq: 2,
            ..first.clone()
        };
        let replaced = cache
            .put_message_counting(&copy, "me", Source::Stored, || true)
            .await
            .expect("put");
        assert_eq!(replaced, (Stored::Replaced, None));
        let (_, unread) = cache.chat("c").await.expect("chat").expect("cached");
        assert_eq!(unread, 1);
    }

    /// A catch-up leaving several chats at once tells the unsent messages
    /// of each it left, also when leaving another fails: that one stays as
    /// it was, and is left (and told) at the next list.
    #[tokio::test]
    async fn chats_left_by_a_list_are_told_even_when_leaving_another_fails() {
        use sqlx::Executor;
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::open(&dir.path().join("cache.db"))
            .await
            .expect("open");
        for id in ["a", "b"] {
            cache
                .put_chat(&chat_of(id, &["me", "bob"]))
                .await
                .expect("chat");
            cache
                .push_outgoing(&outgoing(&format!("k-{id}"), id, millis(1_700_000_000_000)))
                .await
                .expect("queued");
        }
        // The second chat's change fails, whichever comes second (the
        // failure rolls its count back).
        cache
            .pool
            .execute(
                "CREATE TABLE changes (n INTEGER); INSERT INTO changes VALUES (0); \
                 CREATE TRIGGER second_fails BEFORE UPDATE OF body ON chats BEGIN \
                 UPDATE changes SET n = n + 1; \
                 SELECT RAISE(ABORT, 'the disk is full') WHERE (SELECT n FROM changes) >= 2; END",
            )
            .await
            .expect("a trigger");
        let unsent_told = |left: &[Left]| -> Vec<String> {
            left.iter()
                .flat_map(|left| left.unsent.iter().map(|o| o.client_id.clone()))
                .collect()
        };
        let (_, left) = cache
            .replace_chats(async { Ok(Vec::new()) }, false, "me")
            .await
            .expect("the list is taken");
        let mut told = unsent_told(&left);
        assert_eq!(told.len(), 1, "{told:?}");

        cache
            .pool
            .execute("DROP TRIGGER second_fails")
            .await
            .expect("dropped");
        let (_, left) = cache
            .replace_chats(async { Ok(Vec::new()) }, false, "me")
            .await
            .expect("the list is taken");
        told.extend(unsent_told(&left));
        told.sort();
        assert_eq!(told, ["k-a", "k-b"]);
    }

    /// A chat from the server older than the cache's last message (one
    /// delivered before the server stored it) keeps that message as its
    /// last; a newer one takes its place.
    #[tokio::test]
    async fn a_chat_from_the_server_keeps_a_newer_last_message_of_the_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        let latest = async || {
            let (chat, _) = cache.chat("c").await.expect("chat").expect("cached");
            chat.latest_message.map(|message| message.seq)
        };
        let delivered = message("m2", 2, "bob", None);
        cache
            .put_message(&delivered, "me", Source::Delivered)
            .await
            .expect("put");
        let older = Chat {
            latest_message: Some(message("m1", 1, "bob", None)),
            chat_name: "renamed".into(),
            ..chat("c")
        };
        cache.put_chat(&older).await.expect("put");
        assert_eq!(latest().await, Some(2));
        let (renamed, _) = cache.chat("c").await.expect("chat").expect("cached");
        assert_eq!(renamed.chat_name, "renamed", "the rest is the server's");

        let newer = Chat {
            latest_message: Some(message("m3", 3, "bob", None)),
            ..chat("c")
        };
        cache.put_chat(&newer).await.expect("put");
        assert_eq!(latest().await, Some(3));
    }

    /// A chat's next to send is its oldest still to send, not another
    /// chat's, nor one stored or refused; after one still in the outbox,
    /// the one written after it; after one gone, the oldest again.
    #[tokio::test]
    async fn the_next_to_send_is_the_oldest_after_the_one_answered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::open(&dir.path().join("cache.db"))
            .await
            .expect("open");
        for (i, (client_id, chat_id)) in [("k1", "c"), ("other", "d"), ("k2", "c"), ("k3", "c")]
            .into_iter()
            .enumerate()
        {
            let at = millis(1_700_000_000_000 + i as i64);
            cache
                .push_outgoing(&outgoing(client_id, chat_id, at))
                .await
                .expect("push");
        }
        let next = async |after: Option<&str>| {
            let next = cache.next_to_send("c", after).await.expect("next");
            next.map(|outgoing| outgoing.client_id)
        };
        assert_eq!(next(None).await.as_deref(), Some("k1"));
        assert_eq!(next(Some("k1")).await.as_deref(), Some("k2"), "k1 stayed");
        assert!(cache.fail_outgoing("k2", "refused").await.expect("failed"));
        assert_eq!(next(Some("k1")).await.as_deref(), Some("k3"), "k2 refused");
        cache.drop_outgoing("k1").await.expect("dropped");
        assert_eq!(next(Some("k1")).await.as_deref(), Some("k3"), "k1 gone");
        assert_eq!(next(Some("k3")).await, None);
    }

    /// Leaving keeps the chat's messages readable; its outbox goes,
    /// reported, and so does its draft. Ours that the server stored while
    /// the chat was behind stays set aside, shown as sent, until history
    /// brings it (the user added back) or the chat is deleted.
    #[tokio::test]
    async fn leaving_a_chat_keeps_its_messages_marks_its_unsent_failed_and_takes_its_draft() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::open(&dir.path().join("cache.db"))
            .await
            .expect("open");
        cache
            .put_chat(&chat_of("c", &["me", "bob"]))
            .await
            .expect("chat");
        cache
            .put_message(&message("m1", 1, "bob", None), "me", Source::Stored)
            .await
            .expect("put");
        cache
            .push_outgoing(&outgoing("k1", "c", millis(1_700_000_000_000)))
            .await
            .expect("push");
        assert!(cache.set_draft("c", "half a thought").await.expect("draft"));
        cache
            .push_outgoing(&outgoing("k2", "c", millis(1_700_000_000_001)))
            .await
            .expect("push");
        let stored = message("m3", 3, "me", Some("k2"));
        cache
            .outgoing_stored("k2", &stored)
            .await
            .expect("set aside");
        let aside = || async { cache.stored_aside("c", "me").await.expect("aside") };
        assert_eq!(aside().await, std::slice::from_ref(&stored));
        // A late answer to another copy of it changes nothing.
        assert!(cache.outgoing("k2").await.expect("outgoing").is_none());
        assert!(!cache.fail_outgoing("k2", "refused").await.expect("asked"));
        assert_eq!(
            cache.all_stored_aside("me").await.expect("aside"),
            std::slice::from_ref(&stored)
        );

        let left = cache
            .leave_chat(&chat_of("c", &["bob"]))
            .await
            .expect("left")
            .expect("was cached");
        let unsent: Vec<_> = left.unsent.iter().map(|o| o.client_id.as_str()).collect();
        assert_eq!(unsent, ["k1"]);
        assert_eq!(cached(&cache).await, [("m1".to_owned(), 1)]);
        // Marked failed in the same write: shown as not sent, whether or
        // not the notice of it is ever shown, and not sent again.
        let failed = Outgoing {
            error: Some(NO_LONGER_A_MEMBER.to_owned()),
            ..outgoing("k1", "c", millis(1_700_000_000_000))
        };
        assert_eq!(
            cache.unsent("c", "me").await.expect("unsent"),
            std::slice::from_ref(&failed)
        );
        assert_eq!(
            cache.outbox().await.expect("outbox"),
            std::slice::from_ref(&failed)
        );
        let again = cache
            .leave_chat(&chat_of("c", &["bob"]))
            .await
            .expect("left again")
            .expect("was cached");
        assert!(again.unsent.is_empty(), "told once");
        assert_eq!(aside().await, std::slice::from_ref(&stored), "kept aside");
        assert!(cache.drafts().await.expect("drafts").is_empty());
        let (chat, _) = cache.chat("c").await.expect("chat").expect("kept");
        assert_eq!(members(&chat), ["bob"]);
        assert!(
            cache
                .leave_chat(&chat_of("never", &[]))
                .await
                .expect("nothing to leave")
                .is_none()
        );

        // History brings it: cached, no longer aside.
        cache
            .put_message(&stored, "me", Source::Stored)
            .await
            .expect("put");
        assert!(aside().await.is_empty());
        assert!(cache.outgoing("k2").await.expect("outgoing").is_none());

        // The one marked failed comes after all (delivered: a node told of
        // the leave before it): shown as sent, not also as not sent.
        cache
            .put_message(&message("m4", 4, "me", Some("k1")), "me", Source::Delivered)
            .await
            .expect("put");
        assert!(cache.unsent("c", "me").await.expect("unsent").is_empty());
    }

    /// Deleting a chat takes what was set aside in it too.
    #[tokio::test]
    async fn forgetting_a_chat_takes_what_was_set_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        cache
            .push_outgoing(&outgoing("k", "c", millis(1_700_000_000_000)))
            .await
            .expect("push");
        let stored = message("m3", 3, "me", Some("k"));
        cache.outgoing_stored("k", &stored).await.expect("aside");
        let left = cache
            .forget_chat("c")
            .await
            .expect("forgot")
            .expect("was cached");
        assert!(left.unsent.is_empty(), "stored, so not unsent");
        assert!(
            cache
                .stored_aside("c", "me")
                .await
                .expect("aside")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn forgetting_a_chat_reports_its_whole_outbox_in_order_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::open(&dir.path().join("cache.db"))
            .await
            .expect("open");
        cache.put_chat(&chat("gone")).await.expect("chat");
        cache.put_chat(&chat("kept")).await.expect("chat");
        let at = millis(1_700_000_000_000);
        // Written in this order while the clock was set back a minute, then
        // stood still: the order written decides, not the times.
        let written = [
            ("c", at),
            ("a", at - chrono::Duration::minutes(1)),
            ("b", at),
        ];
        for (id, at) in written {
            cache
                .push_outgoing(&outgoing(id, "gone", at))
                .await
                .expect("push");
        }
        cache
            .push_outgoing(&outgoing("other", "kept", at))
            .await
            .expect("push");
        let waiting: Vec<_> = cache.outbox().await.expect("outbox");
        let waiting: Vec<_> = waiting.iter().map(|o| o.client_id.as_str()).collect();
        assert_eq!(
            waiting,
            ["c", "a", "b", "other"],
            "sent in the order written"
        );
        let shown: Vec<_> = cache.all_unsent("me").await.expect("unsent");
        let shown: Vec<_> = shown.iter().map(|o| o.client_id.as_str()).collect();
        assert_eq!(shown, ["c", "a", "b", "other"]);

        let forgotten = cache
            .forget_chat("gone")
            .await
            .expect("forget")
            .expect("was cached");

        assert_eq!(forgotten.chat.id, "gone");
        let unsent: Vec<_> = forgotten
            .unsent
            .iter()
            .map(|o| o.client_id.as_str())
            .collect();
        assert_eq!(unsent, ["c", "a", "b"]);
        assert!(cache.chat("gone").await.expect("chat").is_none());
        let left: Vec<_> = cache.outbox().await.expect("outbox");
        let left: Vec<_> = left.iter().map(|o| o.chat_id.as_str()).collect();
        assert_eq!(left, ["kept"]);
        assert!(cache.forget_chat("gone").await.expect("again").is_none());
    }

    fn user(id: &str) -> natter_shared::User {
        natter_shared::User {
            id: id.into(),
            name: id.into(),
            email: format!("{id}@example.org"),
            pic: None,
        }
    }

    fn message(id: &str, seq: i64, sender: &str, client_id: Option<&str>) -> Message {
        Message {
            id: id.into(),
            chat_id: "c".into(),
            seq,
            sender: user(sender),
            content: format!("message {id}"),
            client_id: client_id.map(Into::into),
            created_at: millis(1_700_000_000_000 + seq),
        }
    }

    async fn cache_with_a_chat(dir: &Path) -> Cache {
        let cache = Cache::open(&dir.join("cache.db")).await.expect("open");
        cache.put_chat(&chat("c")).await.expect("chat");
        cache
    }

    async fn cached(cache: &Cache) -> Vec<(String, i64)> {
        let messages = cache.messages("c", None, 100).await.expect("messages");
        messages.into_iter().map(|m| (m.id, m.seq)).collect()
    }

    /// A message delivered live may not be stored yet (the server may die
    /// first): ours stays in the outbox, to be sent again, until the ack or
    /// history says it is stored. Meanwhile it shows once, as sent.
    #[tokio::test]
    async fn our_message_leaves_the_outbox_once_stored_not_once_delivered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        cache
            .push_outgoing(&outgoing("k1", "c", millis(1_700_000_000_000)))
            .await
            .expect("push");
        let mine = message("m1", 1, "me", Some("k1"));

        let delivered = cache.put_message(&mine, "me", Source::Delivered).await;
        assert_eq!(delivered.expect("put"), Stored::New);
        assert_eq!(cache.outbox().await.expect("outbox").len(), 1);
        assert!(cache.unsent("c", "me").await.expect("unsent").is_empty());

        let acked = cache.put_message(&mine, "me", Source::Stored).await;
        assert_eq!(acked.expect("put"), Stored::Known);
        assert!(cache.outbox().await.expect("outbox").is_empty());
    }

    /// What is still to be sent, oldest first, leaves out a message the
    /// server refused for good (it waits to be discarded).
    #[tokio::test]
    async fn a_message_refused_for_good_is_not_to_send() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        for (key, at) in [
            ("k1", 1_700_000_000_000),
            ("k2", 1_700_000_000_001),
            ("k3", 1_700_000_000_002),
        ] {
            cache
                .push_outgoing(&outgoing(key, "c", millis(at)))
                .await
                .expect("push");
        }
        assert!(cache.fail_outgoing("k2", "too long").await.expect("failed"));
        let to_send = cache.to_send().await.expect("to send");
        let keys: Vec<&str> = to_send.iter().map(|o| o.client_id.as_str()).collect();
        assert_eq!(keys, ["k1", "k3"]);
        assert_eq!(cache.outbox().await.expect("outbox").len(), 3);
    }

    /// A delivered message whose ack has not come is not "unsent" when the
    /// chat goes; one whose resend was refused shows, with its error.
    #[tokio::test]
    async fn a_delivered_message_awaiting_its_ack_is_neither_unsent_nor_hidden_once_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        let at = millis(1_700_000_000_000);
        for client_id in ["k1", "k2", "k3"] {
            let outgoing = outgoing(client_id, "c", at);
            cache.push_outgoing(&outgoing).await.expect("push");
        }
        for (id, seq, client_id) in [("m1", 1, "k1"), ("m2", 2, "k2")] {
            let delivered = message(id, seq, "me", Some(client_id));
            let put = cache.put_message(&delivered, "me", Source::Delivered).await;
            assert_eq!(put.expect("put"), Stored::New);
        }
        cache.fail_outgoing("k2", "refused").await.expect("failed");
        let shown: Vec<_> = cache.unsent("c", "me").await.expect("unsent");
        let shown: Vec<_> = shown.iter().map(|o| o.client_id.as_str()).collect();
        assert_eq!(shown, ["k2", "k3"]);

        let forgotten = cache
            .forget_chat("c")
            .await
            .expect("forget")
            .expect("cached");
        let unsent: Vec<_> = forgotten
            .unsent
            .iter()
            .map(|o| o.client_id.as_str())
            .collect();
        assert_eq!(unsent, ["k2", "k3"]);
        assert!(cache.outbox().await.expect("outbox").is_empty());
    }

    /// A server that died before storing what it delivered stores it when
    /// its sender resends it: another id, a later seq. The cache keeps that
    /// copy only, and a copy at a lower seq arriving later is not kept.
    #[tokio::test]
    async fn a_send_stored_again_under_a_later_seq_replaces_the_copy_delivered_before() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        let delivered = message("lost", 3, "bob", Some("k"));
        let put = cache.put_message(&delivered, "me", Source::Delivered).await;
        assert_eq!(put.expect("put"), Stored::New);

        let again = message("stored", 100_003, "bob", Some("k"));
        let put = cache.put_message(&again, "me", Source::Delivered).await;
        assert_eq!(put.expect("put"), Stored::Replaced);
        assert_eq!(cached(&cache).await, [("stored".to_owned(), 100_003)]);
        let (held, _) = cache.chat("c").await.expect("read").expect("the chat");
        assert_eq!(held.latest_message.expect("latest").id, "stored");

        let older = message("older", 2, "bob", Some("k"));
        let put = cache.put_message(&older, "me", Source::Stored).await;
        assert_eq!(put.expect("put"), Stored::Known);
        // Another sender's clientId is another send.
        let other = message("other", 4, "zoe", Some("k"));
        let put = cache.put_message(&other, "me", Source::Stored).await;
        assert_eq!(put.expect("put"), Stored::New);
        assert_eq!(
            cached(&cache).await,
            [("other".to_owned(), 4), ("stored".to_owned(), 100_003)]
        );
        // And the same clientId in another chat is another send too.
        let elsewhere = Message {
            chat_id: "d".into(),
            ..message("elsewhere", 200_000, "bob", Some("k"))
        };
        cache.put_chat(&chat("d")).await.expect("chat");
        let put = cache.put_message(&elsewhere, "me", Source::Stored).await;
        assert_eq!(put.expect("put"), Stored::New);
        assert_eq!(cached(&cache).await.len(), 2);
    }

    /// A message for a chat no longer cached (an ack, or a page, that was
    /// on its way when the user left the group) is not kept: it would stand
    /// alone, and catch-up and older pages would read around it if the chat
    /// came back.
    #[tokio::test]
    async fn a_message_for_a_chat_no_longer_cached_is_not_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        cache.forget_chat("c").await.expect("forget");
        let acked = message("m1", 7, "me", Some("k1"));
        let put = cache.put_message(&acked, "me", Source::Stored).await;
        assert_eq!(put.expect("put"), Stored::Known);
        assert!(cache.max_seqs().await.expect("seqs").is_empty());
    }

    /// A live message is checked against what the cache knows of its chat:
    /// unknown, known with no messages, or known up to a seq.
    #[tokio::test]
    async fn a_chat_is_known_with_its_highest_seq_in_one_look() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        let held = |highest_seq| ChatHeld::Known { highest_seq };
        let unknown = cache.chat_held("nowhere").await.expect("read");
        assert_eq!(unknown, ChatHeld::Unknown);
        assert_eq!(cache.chat_held("c").await.expect("read"), held(None));
        for seq in [3, 9, 4] {
            let put = message(&format!("m{seq}"), seq, "bob", None);
            let put = cache.put_message(&put, "me", Source::Stored).await;
            assert_eq!(put.expect("put"), Stored::New);
        }
        assert_eq!(cache.chat_held("c").await.expect("read"), held(Some(9)));
    }

    /// A seq names one message on the server: a message at a seq the cache
    /// holds under another id (one delivered by a server that died before
    /// storing it) replaces that one rather than being dropped.
    #[tokio::test]
    async fn a_message_at_a_seq_held_under_another_id_replaces_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache_with_a_chat(dir.path()).await;
        let put = cache
            .put_message(&message("lost", 5, "bob", None), "me", Source::Delivered)
            .await;
        assert_eq!(put.expect("put"), Stored::New);
        let put = cache
            .put_message(&message("real", 5, "zoe", None), "me", Source::Stored)
            .await;
        assert_eq!(put.expect("put"), Stored::New);
        assert_eq!(cached(&cache).await, [("real".to_owned(), 5)]);
        let (chat, _) = cache.chat("c").await.expect("read").expect("the chat");
        assert_eq!(chat.latest_message.expect("latest").id, "real");
    }

    /// A cache written before the clientId column had one: the upgrade
    /// reads sender and clientId from the bodies of what it holds.
    #[tokio::test]
    async fn a_cache_from_before_the_client_id_column_recognises_copies_of_what_it_held() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = dir.path().join("old-migrations");
        std::fs::create_dir_all(&old).expect("folder");
        let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        std::fs::copy(all.join("0001_cache.sql"), old.join("0001_cache.sql")).expect("copied");
        let options = SqliteConnectOptions::from_str("sqlite:")
            .expect("options")
            .filename(dir.path().join("cache.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("opened");
        let migrator = sqlx::migrate::Migrator::new(old.as_path())
            .await
            .expect("old");
        migrator.run(&pool).await.expect("migrated");
        let held = message("lost", 3, "bob", Some("k"));
        sqlx::query("INSERT INTO messages (id, chat_id, seq, body) VALUES (?1, 'c', 3, ?2)")
            .bind(&held.id)
            .bind(serde_json::to_string(&held).expect("json"))
            .execute(&pool)
            .await
            .expect("a message cached");
        pool.close().await;

        let cache = cache_with_a_chat(dir.path()).await;
        let again = message("stored", 100_003, "bob", Some("k"));
        let put = cache.put_message(&again, "me", Source::Stored).await;
        assert_eq!(put.expect("put"), Stored::Replaced);
        assert_eq!(cached(&cache).await, [("stored".to_owned(), 100_003)]);
    }
}

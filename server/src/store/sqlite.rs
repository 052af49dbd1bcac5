//! The embedded default: one SQLite file in the data folder, nothing to install.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection (they queue in-process instead of failing with SQLITE_BUSY)
//! while reads use a separate pool and run in parallel thanks to WAL mode.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use natter_shared::{Chat, Message, User};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::{NewMessage, NewUser, Page, Store, StoreError, StoreResult, Stored, UserRecord};
use crate::blobs::pic_url;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

const USER_COLS: &str = "u.id, u.name, u.email, u.pic";
const MESSAGE_COLS: &str = "msg.id, msg.chat_id, msg.seq, msg.content, msg.client_id, msg.created_at, u.id, u.name, u.email, u.pic";

/// Which chats to load.
#[derive(Clone, Copy)]
enum Chats<'a> {
    One(&'a str),
    Of(&'a str),
}

impl<'a> Chats<'a> {
    /// A condition on a column holding chat ids, with one `?` to bind `self.key()`.
    fn condition(self, column: &str) -> String {
        match self {
            Chats::One(_) => format!("{column} = ?"),
            Chats::Of(_) => {
                format!("{column} IN (SELECT chat_id FROM chat_members WHERE user_id = ?)")
            }
        }
    }

    fn key(self) -> &'a str {
        match self {
            Chats::One(key) | Chats::Of(key) => key,
        }
    }
}

impl SqliteStore {
    /// Opens (creating when missing) `natter.db` in `dir` and migrates it.
    pub async fn open(dir: &Path) -> StoreResult<Self> {
        let path = dir.join("natter.db");
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
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
        Ok(SqliteStore { writer, reader })
    }

    async fn load_chats(&self, which: Chats<'_>) -> StoreResult<Vec<Chat>> {
        let order = match which {
            Chats::One(_) => "",
            Chats::Of(_) => " ORDER BY c.updated_at DESC, c.id DESC",
        };
        let rows = sqlx::query(&format!(
            "SELECT c.id, c.name, c.is_group, c.admin_id, c.updated_at FROM chats c WHERE {}{order}",
            which.condition("c.id")
        ))
        .bind(which.key())
        .fetch_all(&self.reader)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }

        let mut members: HashMap<String, Vec<User>> = HashMap::new();
        let member_rows = sqlx::query(&format!(
            "SELECT m.chat_id, {USER_COLS} FROM chat_members m JOIN users u ON u.id = m.user_id \
             WHERE {} ORDER BY m.id",
            which.condition("m.chat_id")
        ))
        .bind(which.key())
        .fetch_all(&self.reader)
        .await?;
        for row in &member_rows {
            members
                .entry(row.try_get(0)?)
                .or_default()
                .push(user_at(row, 1)?);
        }

        let mut latest: HashMap<String, Message> = HashMap::new();
        let latest_rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLS} FROM chats c \
             JOIN messages msg ON msg.chat_id = c.id AND msg.seq = c.last_seq \
             JOIN users u ON u.id = msg.sender_id WHERE {}",
            which.condition("c.id")
        ))
        .bind(which.key())
        .fetch_all(&self.reader)
        .await?;
        for row in &latest_rows {
            let message = message_from(row)?;
            latest.insert(message.chat_id.clone(), message);
        }

        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                let admin_id: Option<String> = row.try_get(3)?;
                let users = members.remove(&id).unwrap_or_default();
                let group_admin =
                    admin_id.and_then(|admin| users.iter().find(|user| user.id == admin).cloned());
                Ok(Chat {
                    latest_message: latest.remove(&id),
                    chat_name: row.try_get(1)?,
                    is_group_chat: row.try_get(2)?,
                    updated_at: time_from(row.try_get(4)?),
                    id,
                    users,
                    group_admin,
                })
            })
            .collect()
    }

    async fn one_chat(&self, id: &str) -> StoreResult<Chat> {
        self.load_chats(Chats::One(id))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound("no chat with that id".into()))
    }
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn time_from(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

fn user_at(row: &SqliteRow, at: usize) -> Result<User, sqlx::Error> {
    let pic: Option<String> = row.try_get(at + 3)?;
    Ok(User {
        id: row.try_get(at)?,
        name: row.try_get(at + 1)?,
        email: row.try_get(at + 2)?,
        pic: pic.as_deref().map(pic_url),
    })
}

fn message_from(row: &SqliteRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: row.try_get(0)?,
        chat_id: row.try_get(1)?,
        seq: row.try_get(2)?,
        content: row.try_get(3)?,
        client_id: row.try_get(4)?,
        created_at: time_from(row.try_get(5)?),
        sender: user_at(row, 6)?,
    })
}

/// Lower-cased text that user search looks in.
pub(crate) fn search_key(name: &str, email: &str) -> String {
    format!("{}\n{}", name.to_lowercase(), email.to_lowercase())
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        let result = sqlx::query(
            "INSERT INTO users (id, name, email, password_hash, pic, search_key, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.pic)
        .bind(search_key(&user.name, &user.email))
        .bind(now_millis())
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(User {
                pic: user.pic.as_deref().map(pic_url),
                id: user.id,
                name: user.name,
                email: user.email,
            }),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(
                "an account with this email already exists".into(),
            )),
            Err(err) => Err(err.into()),
        }
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.email = ?"
        ))
        .bind(email)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(UserRecord {
                user: user_at(&row, 0)?,
                password_hash: row.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users u WHERE u.id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|row| user_at(&row, 0)).transpose()?)
    }

    async fn search_users(&self, query: &str, exclude: &str, limit: u32) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users u WHERE instr(u.search_key, ?) > 0 AND u.id <> ? \
             ORDER BY u.name, u.id LIMIT ?"
        ))
        .bind(query.to_lowercase())
        .bind(exclude)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|row| user_at(row, 0))
            .collect::<Result<_, _>>()?)
    }

    async fn open_direct_chat(&self, id: &str, a: &str, b: &str) -> StoreResult<(Chat, bool)> {
        let key = if a < b {
            format!("{a}:{b}")
        } else {
            format!("{b}:{a}")
        };
        let mut tx = self.writer.begin().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM chats WHERE direct_key = ?")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            tx.commit().await?;
            return Ok((self.one_chat(&existing).await?, false));
        }
        let now = now_millis();
        sqlx::query(
            "INSERT INTO chats (id, name, is_group, admin_id, direct_key, updated_at, created_at) \
             VALUES (?, '', 0, NULL, ?, ?, ?)",
        )
        .bind(id)
        .bind(&key)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for member in [a, b] {
            sqlx::query("INSERT INTO chat_members (chat_id, user_id, joined_at) VALUES (?, ?, ?)")
                .bind(id)
                .bind(member)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((self.one_chat(id).await?, true))
    }

    async fn create_group(
        &self,
        id: &str,
        name: &str,
        admin: &str,
        members: &[String],
    ) -> StoreResult<Chat> {
        let now = now_millis();
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO chats (id, name, is_group, admin_id, direct_key, updated_at, created_at) \
             VALUES (?, ?, 1, ?, NULL, ?, ?)",
        )
        .bind(id)
        .bind(name)
        .bind(admin)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for member in std::iter::once(admin).chain(members.iter().map(String::as_str)) {
            sqlx::query(
                "INSERT INTO chat_members (chat_id, user_id, joined_at) VALUES (?, ?, ?) \
                 ON CONFLICT (chat_id, user_id) DO NOTHING",
            )
            .bind(id)
            .bind(member)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.one_chat(id).await
    }

    async fn chat(&self, id: &str) -> StoreResult<Option<Chat>> {
        Ok(self.load_chats(Chats::One(id)).await?.pop())
    }

    async fn members(&self, chat_id: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = ? ORDER BY id")
                .bind(chat_id)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn chats_of(&self, user_id: &str) -> StoreResult<Vec<Chat>> {
        self.load_chats(Chats::Of(user_id)).await
    }

    async fn rename_chat(&self, chat_id: &str, name: &str) -> StoreResult<Chat> {
        sqlx::query("UPDATE chats SET name = ?, updated_at = ? WHERE id = ?")
            .bind(name)
            .bind(now_millis())
            .bind(chat_id)
            .execute(&self.writer)
            .await?;
        self.one_chat(chat_id).await
    }

    async fn add_member(&self, chat_id: &str, user_id: &str) -> StoreResult<Chat> {
        let now = now_millis();
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO chat_members (chat_id, user_id, joined_at) VALUES (?, ?, ?) \
             ON CONFLICT (chat_id, user_id) DO NOTHING",
        )
        .bind(chat_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict("that user is already a member".into()));
        }
        sqlx::query("UPDATE chats SET updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.one_chat(chat_id).await
    }

    async fn remove_member(&self, chat_id: &str, user_id: &str) -> StoreResult<Chat> {
        let mut tx = self.writer.begin().await?;
        let removed = sqlx::query("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?")
            .bind(chat_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound(
                "that user is not a member of this chat".into(),
            ));
        }
        sqlx::query(
            "UPDATE chats SET updated_at = ?, admin_id = CASE WHEN admin_id = ? THEN \
             (SELECT user_id FROM chat_members WHERE chat_id = chats.id ORDER BY id LIMIT 1) \
             ELSE admin_id END WHERE id = ?",
        )
        .bind(now_millis())
        .bind(user_id)
        .bind(chat_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.one_chat(chat_id).await
    }

    async fn insert_message(&self, message: NewMessage) -> StoreResult<Stored> {
        let mut tx = self.writer.begin().await?;
        if let Some(client_id) = &message.client_id {
            let row = sqlx::query(&format!(
                "SELECT {MESSAGE_COLS} FROM messages msg JOIN users u ON u.id = msg.sender_id \
                 WHERE msg.sender_id = ? AND msg.client_id = ?"
            ))
            .bind(&message.sender_id)
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let stored = message_from(&row)?;
                if stored.chat_id != message.chat_id {
                    return Err(StoreError::Conflict(
                        "this clientId was already used for a message in another chat".into(),
                    ));
                }
                return Ok(Stored::Duplicate(stored));
            }
        }
        let created_at = message.created_at.timestamp_millis();
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE chats SET last_seq = last_seq + 1, updated_at = ? WHERE id = ? AND EXISTS \
             (SELECT 1 FROM chat_members m WHERE m.chat_id = chats.id AND m.user_id = ?) \
             RETURNING last_seq",
        )
        .bind(created_at)
        .bind(&message.chat_id)
        .bind(&message.sender_id)
        .fetch_optional(&mut *tx)
        .await?;
        let seq = seq.ok_or(StoreError::NotMember)?;
        sqlx::query(
            "INSERT INTO messages (id, chat_id, seq, sender_id, content, client_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&message.id)
        .bind(&message.chat_id)
        .bind(seq)
        .bind(&message.sender_id)
        .bind(&message.content)
        .bind(&message.client_id)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        let sender = sqlx::query(&format!("SELECT {USER_COLS} FROM users u WHERE u.id = ?"))
            .bind(&message.sender_id)
            .fetch_one(&mut *tx)
            .await?;
        let sender = user_at(&sender, 0)?;
        tx.commit().await?;
        Ok(Stored::New(Message {
            id: message.id,
            chat_id: message.chat_id,
            seq,
            sender,
            content: message.content,
            client_id: message.client_id,
            created_at: time_from(created_at),
        }))
    }

    async fn messages(&self, chat_id: &str, page: Page) -> StoreResult<Vec<Message>> {
        let base = format!(
            "SELECT {MESSAGE_COLS} FROM messages msg JOIN users u ON u.id = msg.sender_id WHERE msg.chat_id = ?"
        );
        let (sql, cursor, limit, newest_first) = match page {
            Page::Latest { limit } => (
                format!("{base} ORDER BY msg.seq DESC LIMIT ?"),
                None,
                limit,
                true,
            ),
            Page::After { seq, limit } => (
                format!("{base} AND msg.seq > ? ORDER BY msg.seq ASC LIMIT ?"),
                Some(seq),
                limit,
                false,
            ),
            Page::Before { seq, limit } => (
                format!("{base} AND msg.seq < ? ORDER BY msg.seq DESC LIMIT ?"),
                Some(seq),
                limit,
                true,
            ),
        };
        let mut query = sqlx::query(&sql).bind(chat_id);
        if let Some(cursor) = cursor {
            query = query.bind(cursor);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.reader).await?;
        let mut messages = rows
            .iter()
            .map(message_from)
            .collect::<Result<Vec<_>, _>>()?;
        if newest_first {
            messages.reverse();
        }
        Ok(messages)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}

//! The SQL behind both databases, written once.
//!
//! SQLite and PostgreSQL accept the same statements here (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`, `LIKE ... ESCAPE`), so `sql_store!` expands one
//! body of queries for each concrete sqlx database. A macro rather than
//! generics: sqlx's generic executor bounds would hide the SQL under a page of
//! `where` clauses, while the macro keeps it plain. What really differs (pools,
//! schema, connection settings, how a batch of messages is written, how a
//! chat's latest message is found) lives in `sqlite.rs` and `postgres.rs`.

use chrono::{DateTime, Utc};

pub(super) const USER_COLS: &str = "u.id, u.name, u.email, u.pic";
pub(super) const MESSAGE_COLS: &str = "msg.id, msg.chat_id, msg.seq, msg.content, msg.client_id, msg.created_at, \
     u.id, u.name, u.email, u.pic";

/// The setting present while an embedded pipeline runs (its value: when it
/// started); left behind by a process that died (`Store::begin_local_run`).
pub(super) const LOCAL_RUN: &str = "local pipeline running since";

/// Which chats to load.
#[derive(Clone, Copy)]
pub(super) enum Chats<'a> {
    One(&'a str),
    Of(&'a str),
}

impl<'a> Chats<'a> {
    /// A condition on a column holding chat ids, with `$1` to bind `self.key()`.
    pub(super) fn condition(self, column: &str) -> String {
        match self {
            Chats::One(_) => format!("{column} = $1"),
            Chats::Of(_) => {
                format!("{column} IN (SELECT chat_id FROM chat_members WHERE user_id = $1)")
            }
        }
    }

    pub(super) fn key(self) -> &'a str {
        match self {
            Chats::One(key) | Chats::Of(key) => key,
        }
    }

    pub(super) fn order(self) -> &'static str {
        match self {
            Chats::One(_) => "",
            Chats::Of(_) => " ORDER BY c.updated_at DESC, c.id DESC",
        }
    }
}

/// Messages per INSERT statement: in SQLite 7 parameters each stays far
/// below its limit on parameters per statement, in PostgreSQL a statement
/// of arrays far below its limit on a message's size.
pub(super) const INSERT_CHUNK: usize = 1000;

/// Keys per lookup or update statement (3 parameters each at most).
pub(super) const LOOKUP_CHUNK: usize = 500;

pub(super) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub(super) fn time_from(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// Lower-cased text that user search looks in: name and email.
pub(super) fn search_key(name: &str, email: &str) -> String {
    format!("{}\n{}", name.to_lowercase(), email.to_lowercase())
}

/// A `LIKE` pattern matching `query` anywhere, with `\` escaping wildcards.
pub(super) fn contains_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The key that makes a pair's direct chat unique, whoever opens it.
pub(super) fn direct_key(a: &str, b: &str) -> String {
    if a < b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Implements `Store` for `$store`, a struct with `writer` and `reader` pools
/// of database `$db`.
macro_rules! sql_store {
    ($store:ident, $db:ty) => {
        mod queries {
            use std::collections::{HashMap, HashSet};

            use async_trait::async_trait;
            use natter_shared::{Chat, Message, User};
            use sqlx::{Database, Row};

            use super::$store;
            use crate::blobs::pic_url;
            use crate::store::sql::{
                Chats, LOCAL_RUN, LOOKUP_CHUNK, MESSAGE_COLS, USER_COLS, contains_pattern, direct_key,
                is_unique_violation, now_millis, search_key, time_from,
            };
            use crate::store::{
                BatchStored, ChatToSequence, NewUser, Page, Store, StoreError, StoreResult, UserRecord,
            };

            type DbRow = <$db as Database>::Row;
            type Tx = sqlx::Transaction<'static, $db>;
            type Conn = <$db as Database>::Connection;

            fn user_at(row: &DbRow, at: usize) -> Result<User, sqlx::Error> {
                let pic: Option<String> = row.try_get(at + 3)?;
                Ok(User {
                    id: row.try_get(at)?,
                    name: row.try_get(at + 1)?,
                    email: row.try_get(at + 2)?,
                    pic: pic.as_deref().map(pic_url),
                })
            }

            fn message_from(row: &DbRow) -> Result<Message, sqlx::Error> {
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

            impl $store {
                /// Chats in one snapshot: their three reads apart could
                /// list a chat the user just left without them among its
                /// members.
                async fn load_chats(&self, which: Chats<'_>) -> StoreResult<Vec<Chat>> {
                    let mut tx = self.reader.begin().await?;
                    $store::one_snapshot(&mut tx).await?;
                    let chats = Self::load_chats_on(&mut tx, which).await?;
                    tx.commit().await?;
                    Ok(chats)
                }

                /// Chats as `conn` sees them: a change reads the chat it
                /// returns inside its own transaction, so that an error
                /// after the change is never returned for a change that
                /// was made (the caller would not tell the sequencer and
                /// the members of it).
                async fn load_chats_on(conn: &mut Conn, which: Chats<'_>) -> StoreResult<Vec<Chat>> {
                    let rows = sqlx::query(&format!(
                        "SELECT c.id, c.name, c.is_group, c.admin_id, c.updated_at FROM chats c WHERE {}{}",
                        which.condition("c.id"),
                        which.order()
                    ))
                    .bind(which.key())
                    .fetch_all(&mut *conn)
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
                    .fetch_all(&mut *conn)
                    .await?;
                    for row in &member_rows {
                        members.entry(row.try_get(0)?).or_default().push(user_at(row, 1)?);
                    }

                    let mut latest: HashMap<String, Message> = HashMap::new();
                    let latest_rows = sqlx::query(&$store::latest_messages_sql(&which.condition("c.id")))
                    .bind(which.key())
                    .fetch_all(&mut *conn)
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
                            let group_admin = admin_id
                                .and_then(|admin| users.iter().find(|user| user.id == admin).cloned());
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

                async fn one_chat_on(conn: &mut Conn, id: &str) -> StoreResult<Chat> {
                    Self::load_chats_on(conn, Chats::One(id))
                        .await?
                        .pop()
                        .ok_or_else(|| StoreError::NotFound("no chat with that id".into()))
                }

                /// Takes the chat's row for a change (later changes of it
                /// wait for this one's commit), marking it changed `now`
                /// unless a message stored meanwhile (while this waited for
                /// the row, or by a node whose clock runs ahead) is later:
                /// the chat's time never goes back;
                /// with `admin`, only while that user is its admin: checked
                /// on the row taken, so no change of admin slips in between.
                async fn take_for_change(tx: &mut Tx, chat_id: &str, admin: Option<&str>, now: i64) -> StoreResult<()> {
                    let taken = match admin {
                        Some(admin) => {
                            sqlx::query(
                                "UPDATE chats SET updated_at = CASE WHEN updated_at < $1 THEN $1 ELSE updated_at END \
                                 WHERE id = $2 AND admin_id = $3",
                            )
                                .bind(now)
                                .bind(chat_id)
                                .bind(admin)
                                .execute(&mut **tx)
                                .await?
                        }
                        None => {
                            sqlx::query(
                                "UPDATE chats SET updated_at = CASE WHEN updated_at < $1 THEN $1 ELSE updated_at END \
                                 WHERE id = $2",
                            )
                                .bind(now)
                                .bind(chat_id)
                                .execute(&mut **tx)
                                .await?
                        }
                    };
                    if admin.is_some() && taken.rows_affected() == 0 {
                        return Err(StoreError::NotAdmin);
                    }
                    Ok(())
                }

                async fn insert_members(tx: &mut Tx, chat_id: &str, users: &[&str], now: i64) -> StoreResult<u64> {
                    let mut inserted = 0;
                    for user in users {
                        inserted += sqlx::query(
                            "INSERT INTO chat_members (chat_id, user_id, joined_at) VALUES ($1, $2, $3) \
                             ON CONFLICT (chat_id, user_id) DO NOTHING",
                        )
                        .bind(chat_id)
                        .bind(*user)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    }
                    Ok(inserted)
                }

                /// The ids in `batch` that are not stored, after inserting it
                /// skipped some: a message skipped for its id is stored
                /// already (a redelivery), one skipped for its chat's seq is
                /// not, and never will be.
                async fn seq_taken(tx: &mut Tx, batch: &[std::sync::Arc<Message>]) -> StoreResult<Vec<String>> {
                    let mut stored = HashSet::new();
                    for chunk in batch.chunks(LOOKUP_CHUNK) {
                        let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id FROM messages WHERE id IN (");
                        let mut ids = query.separated(", ");
                        for message in chunk {
                            ids.push_bind(message.id.as_str());
                        }
                        query.push(")");
                        let found: Vec<String> = query.build_query_scalar().fetch_all(&mut **tx).await?;
                        stored.extend(found);
                    }
                    let mut taken = Vec::new();
                    for message in batch {
                        if !stored.contains(&message.id) && !taken.contains(&message.id) {
                            taken.push(message.id.clone());
                        }
                    }
                    Ok(taken)
                }
            }

            #[async_trait]
            impl Store for $store {
                async fn create_user(&self, user: NewUser) -> StoreResult<User> {
                    let result = sqlx::query(
                        "INSERT INTO users (id, name, email, password_hash, pic, search_key, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
                        "SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.email = $1"
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
                    let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users u WHERE u.id = $1"))
                        .bind(id)
                        .fetch_optional(&self.reader)
                        .await?;
                    Ok(row.map(|row| user_at(&row, 0)).transpose()?)
                }

                async fn search_users(&self, query: &str, exclude: &str, limit: u32) -> StoreResult<Vec<User>> {
                    // By name ignoring case (the key is lower-cased in Rust),
                    // then email, compared byte by byte on both databases:
                    // the same page of results from either.
                    let rows = sqlx::query(&format!(
                        "SELECT {USER_COLS} FROM users u WHERE u.search_key LIKE $1 ESCAPE '\\' \
                         AND u.id <> $2 ORDER BY u.search_key{}, u.id LIMIT $3",
                        $store::BYTEWISE
                    ))
                    .bind(contains_pattern(query))
                    .bind(exclude)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await?;
                    Ok(rows.iter().map(|row| user_at(row, 0)).collect::<Result<_, _>>()?)
                }

                async fn open_direct_chat(&self, id: &str, a: &str, b: &str) -> StoreResult<(Chat, bool)> {
                    let key = direct_key(a, b);
                    let now = now_millis();
                    let mut tx = self.writer.begin().await?;
                    // The unique direct_key decides a race between the two sides.
                    let created = sqlx::query(
                        "INSERT INTO chats (id, name, is_group, admin_id, direct_key, updated_at, created_at) \
                         VALUES ($1, '', $2, NULL, $3, $4, $5) ON CONFLICT (direct_key) DO NOTHING",
                    )
                    .bind(id)
                    .bind(false)
                    .bind(&key)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if created {
                        Self::insert_members(&mut tx, id, &[a, b], now).await?;
                    }
                    let chat_id: String = sqlx::query_scalar("SELECT id FROM chats WHERE direct_key = $1")
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                    let chat = Self::one_chat_on(&mut tx, &chat_id).await?;
                    tx.commit().await?;
                    Ok((chat, created))
                }

                async fn create_group(&self, id: &str, name: &str, admin: &str, members: &[String]) -> StoreResult<Chat> {
                    let now = now_millis();
                    let mut tx = self.writer.begin().await?;
                    sqlx::query(
                        "INSERT INTO chats (id, name, is_group, admin_id, direct_key, updated_at, created_at) \
                         VALUES ($1, $2, $3, $4, NULL, $5, $6)",
                    )
                    .bind(id)
                    .bind(name)
                    .bind(true)
                    .bind(admin)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let everyone: Vec<&str> = std::iter::once(admin)
                        .chain(members.iter().map(String::as_str))
                        .collect();
                    Self::insert_members(&mut tx, id, &everyone, now).await?;
                    let chat = Self::one_chat_on(&mut tx, id).await?;
                    tx.commit().await?;
                    Ok(chat)
                }

                async fn chat(&self, id: &str) -> StoreResult<Option<Chat>> {
                    Ok(self.load_chats(Chats::One(id)).await?.pop())
                }

                async fn members(&self, chat_id: &str) -> StoreResult<Vec<String>> {
                    Ok(
                        sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = $1 ORDER BY id")
                            .bind(chat_id)
                            .fetch_all(&self.reader)
                            .await?,
                    )
                }

                async fn chats_of(&self, user_id: &str) -> StoreResult<Vec<Chat>> {
                    self.load_chats(Chats::Of(user_id)).await
                }

                async fn rename_chat(&self, chat_id: &str, name: &str, admin: Option<&str>) -> StoreResult<Chat> {
                    let mut tx = self.writer.begin().await?;
                    Self::take_for_change(&mut tx, chat_id, admin, now_millis()).await?;
                    sqlx::query("UPDATE chats SET name = $1 WHERE id = $2")
                        .bind(name)
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                    let chat = Self::one_chat_on(&mut tx, chat_id).await?;
                    tx.commit().await?;
                    Ok(chat)
                }

                async fn add_member(&self, chat_id: &str, user_id: &str, admin: Option<&str>) -> StoreResult<Chat> {
                    let now = now_millis();
                    let mut tx = self.writer.begin().await?;
                    // The chat's row first: additions at once run one after
                    // the other, so each counts the members the others left
                    // (two at 255 members would both pass a count made
                    // outside, and make 257).
                    Self::take_for_change(&mut tx, chat_id, admin, now).await?;
                    if Self::insert_members(&mut tx, chat_id, &[user_id], now).await? == 0 {
                        return Err(StoreError::Conflict("that user is already a member".into()));
                    }
                    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chat_members WHERE chat_id = $1")
                        .bind(chat_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let most = natter_shared::limits::GROUP_MAX_MEMBERS;
                    if usize::try_from(members).unwrap_or(usize::MAX) > most {
                        return Err(StoreError::Invalid(format!("a group can have at most {most} members")));
                    }
                    let chat = Self::one_chat_on(&mut tx, chat_id).await?;
                    tx.commit().await?;
                    Ok(chat)
                }

                async fn remove_member(&self, chat_id: &str, user_id: &str, admin: Option<&str>) -> StoreResult<Chat> {
                    let now = now_millis();
                    let mut tx = self.writer.begin().await?;
                    // The chat's row first: two removals at once then run
                    // one after the other. Otherwise, on PostgreSQL, each
                    // would pick the next admin from a view taken before
                    // the other's removal, and could pick the other leaver.
                    Self::take_for_change(&mut tx, chat_id, admin, now).await?;
                    let removed = sqlx::query("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2")
                        .bind(chat_id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    if removed.rows_affected() == 0 {
                        return Err(StoreError::NotFound("that user is not a member of this chat".into()));
                    }
                    sqlx::query(
                        "UPDATE chats SET admin_id = CASE WHEN admin_id = $1 THEN \
                         (SELECT user_id FROM chat_members WHERE chat_id = chats.id ORDER BY id LIMIT 1) \
                         ELSE admin_id END WHERE id = $2",
                    )
                    .bind(user_id)
                    .bind(chat_id)
                    .execute(&mut *tx)
                    .await?;
                    let chat = Self::one_chat_on(&mut tx, chat_id).await?;
                    tx.commit().await?;
                    Ok(chat)
                }

                async fn last_seq(&self, chat_id: &str) -> StoreResult<Option<i64>> {
                    Ok(sqlx::query_scalar("SELECT last_seq FROM chats WHERE id = $1")
                        .bind(chat_id)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn message(&self, id: &str) -> StoreResult<Option<Message>> {
                    let row = sqlx::query(&format!(
                        "SELECT {MESSAGE_COLS} FROM messages msg JOIN users u ON u.id = msg.sender_id \
                         WHERE msg.id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?;
                    Ok(row.as_ref().map(message_from).transpose()?)
                }

                async fn chats_to_sequence(&self, chat_ids: &[&str]) -> StoreResult<Vec<ChatToSequence>> {
                    let mut chats: Vec<ChatToSequence> = Vec::new();
                    for chunk in chat_ids.chunks(LOOKUP_CHUNK) {
                        let mut query = sqlx::QueryBuilder::<$db>::new(
                            "SELECT c.id, c.last_seq, m.user_id FROM chats c \
                             LEFT JOIN chat_members m ON m.chat_id = c.id WHERE c.id IN (",
                        );
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(") ORDER BY c.id, m.id");
                        for row in query.build().fetch_all(&self.reader).await? {
                            let id: String = row.try_get(0)?;
                            let member: Option<String> = row.try_get(2)?;
                            if chats.last().is_none_or(|chat| chat.id != id) {
                                chats.push(ChatToSequence { id, last_seq: row.try_get(1)?, members: Vec::new() });
                            }
                            if let (Some(chat), Some(member)) = (chats.last_mut(), member) {
                                chat.members.push(member);
                            }
                        }
                    }
                    Ok(chats)
                }

                async fn users(&self, ids: &[&str]) -> StoreResult<Vec<User>> {
                    let mut users = Vec::new();
                    for chunk in ids.chunks(LOOKUP_CHUNK) {
                        let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                            "SELECT {USER_COLS} FROM users u WHERE u.id IN ("
                        ));
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(")");
                        for row in query.build().fetch_all(&self.reader).await? {
                            users.push(user_at(&row, 0)?);
                        }
                    }
                    Ok(users)
                }

                async fn messages_sent_before(
                    &self,
                    ids: &[&str],
                    clients: &[(&str, &str)],
                ) -> StoreResult<Vec<Message>> {
                    let mut found = Vec::new();
                    for chunk in ids.chunks(LOOKUP_CHUNK) {
                        let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                            "SELECT {MESSAGE_COLS} FROM messages msg JOIN users u ON u.id = msg.sender_id \
                             WHERE msg.id IN ("
                        ));
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(")");
                        let rows = query.build().fetch_all(&self.reader).await?;
                        for row in &rows {
                            found.push(message_from(row)?);
                        }
                    }
                    // Row values on the left of IN need a subquery on the
                    // right in SQLite: VALUES is one in both databases.
                    for chunk in clients.chunks(LOOKUP_CHUNK) {
                        let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                            "SELECT {MESSAGE_COLS} FROM messages msg JOIN users u ON u.id = msg.sender_id \
                             WHERE msg.client_id IS NOT NULL AND (msg.sender_id, msg.client_id) IN ("
                        ));
                        query.push_values(chunk, |mut row, (sender, client_id)| {
                            row.push_bind(*sender).push_bind(*client_id);
                        });
                        query.push(") ORDER BY msg.seq");
                        let rows = query.build().fetch_all(&self.reader).await?;
                        for row in &rows {
                            found.push(message_from(row)?);
                        }
                    }
                    Ok(found)
                }

                async fn store_messages(&self, batch: &[std::sync::Arc<Message>]) -> StoreResult<BatchStored> {
                    let mut tx = self.writer.begin().await?;
                    let inserted = $store::insert_messages(&mut tx, batch).await?;
                    let seq_taken = if inserted < batch.len() as u64 {
                        Self::seq_taken(&mut tx, batch).await?
                    } else {
                        Vec::new()
                    };
                    let mut latest: HashMap<&str, (i64, i64)> = HashMap::new();
                    for message in batch {
                        let entry = latest.entry(message.chat_id.as_str()).or_insert((0, 0));
                        entry.0 = entry.0.max(message.seq);
                        entry.1 = entry.1.max(message.created_at.timestamp_millis());
                    }
                    let latest: Vec<_> = latest.into_iter().map(|(chat, (seq, at))| (chat, seq, at)).collect();
                    $store::advance_chats(&mut tx, &latest).await?;
                    tx.commit().await?;
                    Ok(BatchStored { new: inserted, seq_taken })
                }

                async fn messages(&self, chat_id: &str, page: Page) -> StoreResult<Vec<Message>> {
                    let base = format!(
                        "SELECT {MESSAGE_COLS} FROM messages msg JOIN users u ON u.id = msg.sender_id \
                         WHERE msg.chat_id = $1"
                    );
                    let (sql, cursor, limit, newest_first) = match page {
                        Page::Latest { limit } => {
                            (format!("{base} ORDER BY msg.seq DESC LIMIT $2"), None, limit, true)
                        }
                        Page::After { seq, limit } => (
                            format!("{base} AND msg.seq > $2 ORDER BY msg.seq ASC LIMIT $3"),
                            Some(seq),
                            limit,
                            false,
                        ),
                        Page::Before { seq, limit } => (
                            format!("{base} AND msg.seq < $2 ORDER BY msg.seq DESC LIMIT $3"),
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
                    let mut messages = rows.iter().map(message_from).collect::<Result<Vec<_>, _>>()?;
                    if newest_first {
                        messages.reverse();
                    }
                    Ok(messages)
                }

                async fn agree_setting(&self, name: &str, proposed: &str) -> StoreResult<String> {
                    sqlx::query(
                        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(proposed)
                    .execute(&self.writer)
                    .await?;
                    let recorded: String =
                        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                            .bind(name)
                            .fetch_one(&self.writer)
                            .await?;
                    Ok(recorded)
                }

                async fn begin_local_run(&self, skip: i64) -> StoreResult<bool> {
                    // Two steps: a process that dies between them has
                    // delivered nothing, so its next start need not skip.
                    let skipped = self.end_unfinished_local_run(skip).await?;
                    sqlx::query(
                        "INSERT INTO settings (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = $2",
                    )
                    .bind(LOCAL_RUN)
                    .bind(chrono::Utc::now().to_rfc3339())
                    .execute(&self.writer)
                    .await?;
                    Ok(skipped)
                }

                async fn end_unfinished_local_run(&self, skip: i64) -> StoreResult<bool> {
                    let mut tx = self.writer.begin().await?;
                    let unfinished = sqlx::query("DELETE FROM settings WHERE name = $1")
                        .bind(LOCAL_RUN)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        > 0;
                    if unfinished {
                        sqlx::query("UPDATE chats SET last_seq = last_seq + $1")
                            .bind(skip)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(unfinished)
                }

                async fn end_local_run(&self) -> StoreResult<()> {
                    sqlx::query("DELETE FROM settings WHERE name = $1")
                        .bind(LOCAL_RUN)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn end_session(&self, sid: &str, ended_at: i64, until: i64) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO ended_sessions (id, ended_at, good_until) VALUES ($1, $2, $3) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(sid)
                    .bind(ended_at)
                    .bind(until)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn ended_sessions(&self, since: i64, now: i64) -> StoreResult<Vec<(String, i64)>> {
                    let rows = sqlx::query(
                        "SELECT id, good_until FROM ended_sessions WHERE ended_at >= $1 AND good_until >= $2",
                    )
                    .bind(since)
                    .bind(now)
                    .fetch_all(&self.reader)
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(StoreError::from)
                }

                async fn forget_ended_sessions(&self, now: i64) -> StoreResult<()> {
                    sqlx::query("DELETE FROM ended_sessions WHERE good_until < $1")
                        .bind(now)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn ping(&self) -> StoreResult<()> {
                    sqlx::query("SELECT 1").execute(&self.reader).await?;
                    Ok(())
                }
            }
        }
    };
}

pub(super) use sql_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("Ann"), "%ann%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn a_pair_has_one_key_whoever_asks() {
        assert_eq!(direct_key("b", "a"), direct_key("a", "b"));
    }
}

//! Persistent state behind one interface. Handlers and the realtime gateway
//! talk to `dyn Store` and never know which database is underneath; the
//! embedded default is SQLite (`sqlite`); deployments use PostgreSQL
//! (`postgres`). Both run the same SQL (`sql`).

mod deployment_lock;
mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use natter_shared::{Chat, Message, User};

pub use deployment_lock::{DeploymentLock, PLACE_TAKEN_EXIT, Sequencing};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is taken (an email, say). The text is shown to users.
    #[error("{0}")]
    Conflict(String),
    /// The thing asked for does not exist. The text is shown to users.
    #[error("{0}")]
    NotFound(String),
    /// The caller is not (or no longer) a member of the chat.
    #[error("not a member of this chat")]
    NotMember,
    /// The caller is not (or no longer) the group's admin.
    #[error("not the group's admin")]
    NotAdmin,
    /// Text the database cannot hold (PostgreSQL refuses the NUL
    /// character), in an id or a field no domain type checked. The text is
    /// shown to users.
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The database did not answer within our patience (a machine gone
    /// without closing its connections answers nothing for many minutes).
    #[error("the database did not answer in time")]
    TimedOut,
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// PostgreSQL's SQLSTATE for a character its encoding cannot hold: NUL in
/// any text, which SQLite stores. Such input is the client's error, not
/// the database's, and asking again cannot succeed.
const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some(CHARACTER_NOT_IN_REPERTOIRE) =>
            {
                StoreError::Invalid("text must not contain the NUL character (\\u0000)".into())
            }
            _ => StoreError::Database(err),
        }
    }
}

impl StoreError {
    /// The database could not answer for now (down, restarting, out of
    /// connections, or busy past our patience): the same request may
    /// succeed later as it is.
    pub fn is_temporary(&self) -> bool {
        let err = match self {
            StoreError::Database(err) => err,
            StoreError::TimedOut => return true,
            _ => return false,
        };
        match err {
            // Not TLS: a certificate refused stays refused.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
                db.code()
                    .is_some_and(|code| is_temporary_code(&code, sqlite))
            }
            _ => false,
        }
    }
}

/// SQLite's busy and locked (extended codes keep the primary one in the
/// low byte); PostgreSQL's connection exceptions (class 08), shutdowns and
/// start-ups (57P01-57P03), too many connections, transactions rolled back
/// to be run again (serialization failure, deadlock), and a read-only
/// server (a standby, as a failover moves the address).
fn is_temporary_code(code: &str, sqlite: bool) -> bool {
    if sqlite {
        return code
            .parse::<i32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6));
    }
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "25006"
        )
}

/// A user as stored, with what only the server may see.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
}

/// A new account, already validated and hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    /// Blob key of the profile picture.
    pub pic: Option<String>,
}

/// Which page of a chat's history to read. Pages are always returned oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest `limit` messages.
    Latest { limit: u32 },
    /// Up to `limit` messages right after `seq` (catching up).
    After { seq: i64, limit: u32 },
    /// Up to `limit` messages right before `seq` (scrolling back).
    Before { seq: i64, limit: u32 },
}

/// A chat as its sequencer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatToSequence {
    pub id: String,
    pub last_seq: i64,
    pub members: Vec<String>,
}

/// What `Store::store_messages` did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchStored {
    /// How many of its messages were new (the rest were stored before).
    pub new: u64,
    /// Messages not stored because their chat holds another message at
    /// their seq. Nothing should give a seq out twice; if something does,
    /// the message was delivered but will never be in history, and the
    /// caller says so loudly rather than the batch failing for good.
    pub seq_taken: Vec<String>,
}

/// What happened to a message handed to the pipeline.
#[derive(Debug, Clone)]
pub enum Stored {
    /// It is new and now has its seq.
    New(Message),
    /// The sender had already sent this `client_id`: the message sent then.
    Duplicate(Message),
}

impl Stored {
    pub fn into_message(self) -> Message {
        match self {
            Stored::New(message) | Stored::Duplicate(message) => message,
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; `Conflict` when the email is taken.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// Users whose name or email contains `query`, ignoring case, except `exclude`.
    async fn search_users(&self, query: &str, exclude: &str, limit: u32) -> StoreResult<Vec<User>>;

    /// The one direct chat between `a` and `b`, created when there is none;
    /// the flag says whether it was created by this call.
    async fn open_direct_chat(&self, id: &str, a: &str, b: &str) -> StoreResult<(Chat, bool)>;
    async fn create_group(
        &self,
        id: &str,
        name: &str,
        admin: &str,
        members: &[String],
    ) -> StoreResult<Chat>;
    async fn chat(&self, id: &str) -> StoreResult<Option<Chat>>;
    /// Ids of the chat's current members.
    async fn members(&self, chat_id: &str) -> StoreResult<Vec<String>>;
    /// The user's chats, most recent activity first.
    async fn chats_of(&self, user_id: &str) -> StoreResult<Vec<Chat>>;
    /// Renames a group; with `admin`, only while that user is its admin
    /// (`NotAdmin` otherwise), checked in the change's own transaction: a
    /// check before it could be outdated by then (the admin left through
    /// another node meanwhile).
    async fn rename_chat(
        &self,
        chat_id: &str,
        name: &str,
        admin: Option<&str>,
    ) -> StoreResult<Chat>;
    /// Adds a member; `admin` as for `rename_chat`.
    async fn add_member(
        &self,
        chat_id: &str,
        user_id: &str,
        admin: Option<&str>,
    ) -> StoreResult<Chat>;
    /// Removes a member; when it was the admin, the longest-standing remaining
    /// member becomes admin, so a group with members always has one (the
    /// last member leaving leaves a group of none, which no one can reach).
    /// `admin` as for `rename_chat` (None for a member who leaves).
    async fn remove_member(
        &self,
        chat_id: &str,
        user_id: &str,
        admin: Option<&str>,
    ) -> StoreResult<Chat>;

    /// The highest seq stored in a chat (0 when empty); None when there is no such chat.
    async fn last_seq(&self, chat_id: &str) -> StoreResult<Option<i64>>;
    async fn message(&self, id: &str) -> StoreResult<Option<Message>>;
    /// What a sequencer needs of chats it has not seen yet, for a batch of
    /// them in one round trip: each chat's last seq and its members (in the
    /// order they joined). Chats that do not exist are left out.
    async fn chats_to_sequence(&self, chat_ids: &[&str]) -> StoreResult<Vec<ChatToSequence>>;
    /// Users by id, in one round trip; ids of no user are left out.
    async fn users(&self, ids: &[&str]) -> StoreResult<Vec<User>>;
    /// What a batch of drafts may have become before: the messages stored
    /// under any of `ids`, and those a sender sent under a clientId, for
    /// each (sender, clientId) in `clients` (a clientId's first message
    /// comes first). A query for the ids and one for the pairs (per 500
    /// keys), rather than one per draft.
    async fn messages_sent_before(
        &self,
        ids: &[&str],
        clients: &[(&str, &str)],
    ) -> StoreResult<Vec<Message>>;
    /// Stores messages that already have their seq, all or none, and moves
    /// each chat's last seq and activity time forward. A message whose id is
    /// already stored is skipped (a redelivery), so this can be repeated.
    async fn store_messages(&self, batch: &[Arc<Message>]) -> StoreResult<BatchStored>;
    async fn messages(&self, chat_id: &str, page: Page) -> StoreResult<Vec<Message>>;

    /// A setting every node of a deployment must share: the value recorded,
    /// or `proposed` when none is, which is then recorded (the first node to
    /// start decides, even when several start at once).
    async fn agree_setting(&self, name: &str, proposed: &str) -> StoreResult<String>;

    /// Called as the embedded pipeline starts. It delivers a message before
    /// storing it, so a process that died (a crash, `kill -9`) may have
    /// delivered messages that were never stored, under seqs apps now hold.
    /// When the run before never called `end_local_run`, every chat's seqs
    /// first move `skip` ahead, so that none of those seqs is given to
    /// another message; then this run is marked as running. Returns whether
    /// the seqs moved.
    async fn begin_local_run(&self, skip: i64) -> StoreResult<bool>;
    /// The embedded pipeline stopped with everything it delivered stored.
    async fn end_local_run(&self) -> StoreResult<()>;
    /// Called as a deployment on RabbitMQ starts: when an embedded run on
    /// this database never called `end_local_run` (a crash, or a node
    /// without RabbitMQ stopped because these took its place), every chat's
    /// seqs move `skip` ahead, as `begin_local_run` would, and the mark
    /// goes. Returns whether the seqs moved.
    async fn end_unfinished_local_run(&self, skip: i64) -> StoreResult<bool>;

    /// Records a session logged out (`sessions`): its tokens are refused
    /// until `until`. `ended_at`: now, by which other nodes find it.
    async fn end_session(&self, sid: &str, ended_at: i64, until: i64) -> StoreResult<()>;
    /// Sessions logged out at or after `since` whose tokens could still be
    /// good at `now`: (sid, until).
    async fn ended_sessions(&self, since: i64, now: i64) -> StoreResult<Vec<(String, i64)>>;
    /// Forgets the logouts whose tokens have all expired by `now`.
    async fn forget_ended_sessions(&self, now: i64) -> StoreResult<()>;

    /// Cheap round trip for the health endpoint.
    async fn ping(&self) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::is_temporary_code;

    #[test]
    fn busy_and_connection_codes_are_temporary_and_others_not() {
        // SQLite: busy, busy (snapshot), locked; a constraint and a corrupt file.
        assert!(is_temporary_code("5", true));
        assert!(is_temporary_code("517", true));
        assert!(is_temporary_code("6", true));
        assert!(!is_temporary_code("2067", true));
        assert!(!is_temporary_code("11", true));
        // PostgreSQL: a lost connection, shutting down, too many clients; a
        // unique violation and a NUL (all-digit codes are not SQLite's).
        assert!(is_temporary_code("08006", false));
        assert!(is_temporary_code("57P01", false));
        assert!(is_temporary_code("53300", false));
        assert!(is_temporary_code("25006", false));
        assert!(!is_temporary_code("23505", false));
        assert!(!is_temporary_code("22021", false));
    }
}

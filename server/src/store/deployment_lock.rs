//! One PostgreSQL database, one way of sequencing. A node without RabbitMQ
//! gives every chat its seqs itself, so it must have the database alone; nodes
//! with RabbitMQ share it (one sequencer per partition among them). Two that
//! sequence by themselves would give two messages one seq, and each take the
//! other's running mark for a crash.
//!
//! Each node takes an advisory lock on a session of its own: exclusive
//! without RabbitMQ, shared with it. The session is watched: a PostgreSQL
//! restart ends it (and the lock with it), and the node takes its place
//! again; a node that finds it taken meanwhile by a node of the other kind
//! stops (`PLACE_TAKEN_EXIT`, as a crash would: what it sequenced and did not store comes back
//! from its senders' outboxes), rather than sequence beside it. The
//! session's TCP keepalive is short on the server's side, so that a node
//! whose machine died without closing its connections lets go within about
//! a minute, not the two hours of the kernel's default, and its
//! replacement can start.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::StoreResult;

/// How a node sequences messages, as far as sharing its database goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequencing {
    /// In-process: this node gives every chat its seqs, and must be the
    /// database's only node.
    InProcess,
    /// Through RabbitMQ: one sequencer per partition across the nodes,
    /// which share the database with each other.
    Broker,
}

/// The lock's key ("natter" in ASCII).
const KEY: i64 = 0x6e61_7474_6572;

/// How often the lock is tried while waiting for it.
const TRY_EVERY: Duration = Duration::from_millis(50);

/// How often the held session is checked, and taken again once lost.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The exit status of a node that stops because a node of the other kind
/// took its place (any other fatal error gives 1).
pub const PLACE_TAKEN_EXIT: i32 = 3;

/// This node's place on the database, held (and watched) by a task of its
/// own until dropped.
pub struct DeploymentLock {
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for DeploymentLock {
    fn drop(&mut self) {
        // The task owns the session: aborted, it closes it, and PostgreSQL
        // lets go of the lock.
        self.watch.abort();
    }
}

impl DeploymentLock {
    /// Takes this node's place on `url`'s database, waiting at most
    /// `patience` for a node in the way to stop (a restart whose
    /// predecessor is still storing). `None` if it does not.
    pub async fn take(
        url: &str,
        sequencing: Sequencing,
        patience: Duration,
    ) -> StoreResult<Option<DeploymentLock>> {
        let options = session_options(url)?;
        let deadline = tokio::time::Instant::now() + patience;
        let mut session = connect(&options).await?;
        loop {
            if try_lock(&mut session, sequencing).await? {
                let identity = identity(&mut session).await.ok();
                let watch = tokio::spawn(keep(session, identity, options, sequencing));
                return Ok(Some(DeploymentLock { watch }));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = session.close().await;
                return Ok(None);
            }
            tokio::time::sleep(TRY_EVERY).await;
        }
    }
}

fn session_options(url: &str) -> StoreResult<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?.application_name("natter-server (node)"))
}

/// A session for the lock. Its keepalive is set after connecting rather
/// than as startup options, which a pooler in front (PgBouncer) refuses;
/// one that will not take them keeps the defaults.
async fn connect(options: &PgConnectOptions) -> StoreResult<PgConnection> {
    let mut session = PgConnection::connect_with(options).await?;
    for setting in [
        "SET tcp_keepalives_idle = 30",
        "SET tcp_keepalives_interval = 10",
        "SET tcp_keepalives_count = 3",
    ] {
        if let Err(err) = sqlx::query(setting).execute(&mut session).await {
            tracing::debug!(error = %err, setting, "the lock's session keeps the default keepalive");
        }
    }
    Ok(session)
}

async fn try_lock(session: &mut PgConnection, sequencing: Sequencing) -> StoreResult<bool> {
    let take = match sequencing {
        Sequencing::InProcess => "SELECT pg_try_advisory_lock($1)",
        Sequencing::Broker => "SELECT pg_try_advisory_lock_shared($1)",
    };
    let (held,): (bool,) = sqlx::query_as(take).bind(KEY).fetch_one(session).await?;
    Ok(held)
}

/// The lock's key in the halves `pg_locks` shows it in.
const KEY_HIGH: i64 = KEY >> 32;
const KEY_LOW: i64 = KEY & 0xffff_ffff;

/// A session as PostgreSQL knows it: its process and when that started
/// (a process id alone may name another session after a restart). The
/// start is hidden from other roles: None for another role's session.
type Identity = (i32, Option<String>);

async fn identity(session: &mut PgConnection) -> StoreResult<Identity> {
    Ok(sqlx::query_as(
        "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    )
    .fetch_one(session)
    .await?)
}

/// The sessions holding the lock on this database, in either mode.
async fn holders(session: &mut PgConnection) -> StoreResult<Vec<Identity>> {
    Ok(sqlx::query_as(
        "SELECT a.pid, a.backend_start::text FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.datname = current_database() AND l.locktype = 'advisory' AND l.granted \
         AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1",
    )
    .bind(KEY_HIGH)
    .bind(KEY_LOW)
    .fetch_all(session)
    .await?)
}

/// Holds the place on `session` (`identity`); when the
/// session is lost (PostgreSQL restarted, the network cut or stalled),
/// takes it again on a new one, saying so loudly when another node took
/// it meanwhile.
async fn keep(
    mut session: PgConnection,
    mut identity: Option<Identity>,
    options: PgConnectOptions,
    sequencing: Sequencing,
) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        // A network that drops packets without a word would hold a ping
        // for as long as the kernel retransmits (many minutes).
        if let Ok(Ok(())) = tokio::time::timeout(CHECK_EVERY, session.ping()).await {
            continue;
        }
        tracing::warn!(
            "this node's session on PostgreSQL was lost (a restart?): taking its place again"
        );
        drop(session);
        session = retake(&options, sequencing, identity.as_ref()).await;
        identity = self::identity(&mut session).await.ok();
        tracing::info!("this node holds its place on PostgreSQL again");
    }
}

/// A new session that holds the place again, tried until PostgreSQL answers.
async fn retake(
    options: &PgConnectOptions,
    sequencing: Sequencing,
    lost: Option<&Identity>,
) -> PgConnection {
    loop {
        match connect(options).await {
            Ok(mut new) => match hold_again(&mut new, sequencing, lost).await {
                Ok(()) => return new,
                Err(err) => {
                    tracing::warn!(error = %err, "taking this node's place on PostgreSQL again")
                }
            },
            Err(err) => tracing::warn!(error = %err, "PostgreSQL is not answering; trying again"),
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// Takes the lock on `session`. A session that stopped answering (a stall
/// rather than a restart) may still hold it, PostgreSQL not knowing yet
/// that it is gone: the place is still this node's then, so the lost
/// session (`lost`) is ended and the lock taken once it lets go. Held by
/// any other session, it was taken by a node of the other kind: this node
/// stops (`PLACE_TAKEN_EXIT`), as a crash would.
async fn hold_again(
    session: &mut PgConnection,
    sequencing: Sequencing,
    lost: Option<&Identity>,
) -> StoreResult<()> {
    let mut ending = false;
    loop {
        if try_lock(session, sequencing).await? {
            return Ok(());
        }
        let holders = holders(session).await?;
        match lost {
            Some(lost) if holders.iter().all(|holder| holder == lost) => {
                if !ending && !holders.is_empty() {
                    tracing::warn!(
                        pid = lost.0,
                        "this node's lost session on PostgreSQL still holds its place: ending it"
                    );
                    sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(lost.0)
                        .execute(&mut *session)
                        .await?;
                    ending = true;
                }
                tokio::time::sleep(TRY_EVERY).await;
            }
            _ => {
                tracing::error!(
                    ?sequencing,
                    "a node of the other kind took this database while this one's session was lost: nodes that share one need RabbitMQ, every one of them; stopping this node"
                );
                std::process::exit(PLACE_TAKEN_EXIT);
            }
        }
    }
}

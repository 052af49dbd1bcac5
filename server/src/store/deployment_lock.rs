//! One PostgreSQL database, one way of sequencing. A node without RabbitMQ
//! gives every chat its seqs itself, so it must have the database alone; nodes
//! with RabbitMQ share it (one sequencer per partition among them). Two that
//! sequence by themselves would give two messages one seq, and each take the
//! other's running mark for a crash.
//!
//! Each node takes an advisory lock on a session of its own: exclusive
//! without RabbitMQ, shared with it. The session is watched: a PostgreSQL
//! restart ends it (and the lock with it), and the node takes its place
//! again. Its TCP keepalive is short, so that a node whose machine died
//! without closing its connections lets go within about a minute, not the
//! two hours of the kernel's default, and its replacement can start.

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
        let mut session = PgConnection::connect_with(&options).await?;
        loop {
            if try_lock(&mut session, sequencing).await? {
                let watch = tokio::spawn(keep(session, options, sequencing));
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
    Ok(PgConnectOptions::from_str(url)?
        .application_name("natter-server (node)")
        .options([
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
        ]))
}

async fn try_lock(session: &mut PgConnection, sequencing: Sequencing) -> StoreResult<bool> {
    let take = match sequencing {
        Sequencing::InProcess => "SELECT pg_try_advisory_lock($1)",
        Sequencing::Broker => "SELECT pg_try_advisory_lock_shared($1)",
    };
    let (held,): (bool,) = sqlx::query_as(take).bind(KEY).fetch_one(session).await?;
    Ok(held)
}

/// Holds the place on `session`; when the session is lost (PostgreSQL
/// restarted, the network cut), takes it again on a new one, saying so
/// loudly when another node took it meanwhile.
async fn keep(mut session: PgConnection, options: PgConnectOptions, sequencing: Sequencing) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if session.ping().await.is_ok() {
            continue;
        }
        tracing::warn!(
            "this node's session on PostgreSQL was lost (a restart?): taking its place again"
        );
        session = loop {
            match PgConnection::connect_with(&options).await {
                Ok(mut new) => match try_lock(&mut new, sequencing).await {
                    Ok(true) => break new,
                    Ok(false) => tracing::error!(
                        ?sequencing,
                        "another node took this database meanwhile: nodes that share one need RabbitMQ, every one of them; stop one"
                    ),
                    Err(err) => {
                        tracing::warn!(error = %err, "taking this node's place on PostgreSQL again")
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, "PostgreSQL is not answering; trying again")
                }
            }
            tokio::time::sleep(CHECK_EVERY).await;
        };
        tracing::info!("this node holds its place on PostgreSQL again");
    }
}

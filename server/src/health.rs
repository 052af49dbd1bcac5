//! Whether the database and the picture store answer, as the health check
//! (`GET /health`) reports it: their last answers to a ping, asked again in
//! the background, so that the check itself answers at once.
//!
//! Why not ping on each check: a load balancer gives a check little time
//! (HAProxy's `inter`, 200 ms in docs/deploy.md), and a database or store
//! that does not answer takes longer than that to fail a ping (a refused
//! PostgreSQL connection is retried until the pool gives up). Every node's
//! checks would then fail together, during exactly the outages the nodes
//! are meant to ride out (PostgreSQL away: "degraded", still carrying
//! messages).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::blobs::BlobStore;
use crate::store::Store;

/// How long a ping may take before its service counts as unreachable: the
/// S3 client alone would retry for minutes.
pub const PING_PATIENCE: Duration = Duration::from_secs(2);

/// How often the database and the picture store are pinged.
pub const PING_EVERY: Duration = Duration::from_millis(500);

/// The last answers. Both count as up until a ping says otherwise: the
/// database answered moments before, when the server opened it.
pub struct Health {
    database: AtomicBool,
    pictures: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Health {
            database: AtomicBool::new(true),
            pictures: AtomicBool::new(true),
        }
    }

    pub fn database_up(&self) -> bool {
        self.database.load(Ordering::Relaxed)
    }

    pub fn pictures_up(&self) -> bool {
        self.pictures.load(Ordering::Relaxed)
    }

    /// Pings each `PING_EVERY` after its last answer, apart (a store that
    /// hangs must not hold up the database's pings), for as long as the
    /// task runs (the server stops it when it stops serving); logs each
    /// change.
    pub async fn watch(self: Arc<Self>, store: Arc<dyn Store>, blobs: Arc<dyn BlobStore>) {
        tokio::join!(
            keep_asking(&self.database, "database", || store.ping()),
            keep_asking(&self.pictures, "picture store", || blobs.ping()),
        );
    }
}

/// Pings with `ping` every `PING_EVERY` after its last answer, for ever,
/// noting each answer in `up`.
async fn keep_asking<E, F, P>(up: &AtomicBool, what: &str, ping: P)
where
    E: std::fmt::Display,
    F: Future<Output = Result<(), E>>,
    P: Fn() -> F,
{
    loop {
        note(up, what, within_patience(ping()).await);
        tokio::time::sleep(PING_EVERY).await;
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// Records a ping's answer; says so when it differs from the last.
fn note(up: &AtomicBool, what: &str, answer: Result<(), String>) {
    let was_up = up.swap(answer.is_ok(), Ordering::Relaxed);
    match answer {
        Err(err) if was_up => {
            tracing::warn!(error = %err, "health check: the {what} is unreachable")
        }
        Ok(()) if !was_up => tracing::info!("health check: the {what} answers again"),
        _ => {}
    }
}

/// `ping`'s answer, or "no answer in time" after `PING_PATIENCE`.
async fn within_patience<E: std::fmt::Display>(
    ping: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PING_PATIENCE, ping).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(_) => Err("no answer in time".to_owned()),
    }
}

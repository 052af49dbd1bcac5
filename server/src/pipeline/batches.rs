//! Storing what a sequencer sequenced: one transaction at a time, in the
//! background, while the sequencer goes on delivering. Both pipelines use
//! it; what waits for a batch (answers, a delivery tag) travels with it as
//! `T`. A batch that fails to store comes back to its owner, which gives it
//! to the sequencer again, and the next try waits a growing pause.

use std::sync::Arc;
use std::time::Duration;

use natter_shared::Message;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sequencer::{Sequencer, store_batch};
use crate::store::StoreError;

/// How long a commit may take before it counts as failed and is tried
/// again: a database machine gone without closing its connections would
/// hold it, and every ack and history read waiting on it, for as long as
/// TCP takes to give up (about 15 minutes). Far above what the largest
/// batch takes on a database that answers (100,000 messages held back by
/// an outage: seconds), since a retry of a commit cut short while its
/// database still works on it waits for that work, and grows: a short
/// patience could keep a slow database from ever catching up. A commit
/// that did go through is harmless to repeat: stored ids are skipped.
const COMMIT_PATIENCE: Duration = Duration::from_secs(300);
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// How a commit ended.
pub enum Committed<T> {
    /// Stored; the sequencer should hear `stored()`.
    Stored(T),
    /// Not stored (the database failed, or the commit's task did): give
    /// the batch back with `restore_batch`.
    Failed(Vec<Arc<Message>>, T),
}

type Commit = JoinHandle<Result<(), StoreError>>;

/// A commit under way: its task, a copy of its batch (for a task that dies:
/// a batch gone with it would leave the sequencer answering retries of its
/// messages as stored), and whoever waits for it.
struct InFlight<T> {
    task: Commit,
    batch: Vec<Arc<Message>>,
    token: T,
}

pub struct Batches<T> {
    in_flight: Option<InFlight<T>>,
    retry_at: Option<Instant>,
    pause: Duration,
}

impl<T> Batches<T> {
    pub fn new() -> Self {
        Batches {
            in_flight: None,
            retry_at: None,
            pause: FIRST_PAUSE,
        }
    }

    /// Whether a commit may start: none in flight, no failed one pausing.
    pub fn ready(&self) -> bool {
        self.in_flight.is_none() && self.retry_at.is_none()
    }

    /// Whether a commit is in flight or a failed one will be tried again.
    pub fn busy(&self) -> bool {
        !self.ready()
    }

    /// Stores everything `sequencer` sequenced since the last commit (an
    /// empty batch completes at once), with `token` for whoever waits.
    pub fn start(&mut self, sequencer: &mut Sequencer, token: T) {
        let batch = sequencer.take_batch();
        let store = sequencer.store();
        let stored = batch.clone();
        let task = tokio::spawn(async move {
            if stored.is_empty() {
                return Ok(());
            }
            tokio::time::timeout(COMMIT_PATIENCE, store_batch(store.as_ref(), &stored))
                .await
                .unwrap_or(Err(StoreError::TimedOut))
        });
        self.in_flight = Some(InFlight { task, batch, token });
    }

    /// Completes when the commit in flight ends, or (with `None`) when a
    /// failed one may be tried again; never while there is neither.
    pub async fn next(&mut self) -> Option<Committed<T>> {
        if let Some(in_flight) = &mut self.in_flight {
            let done = (&mut in_flight.task).await;
            let InFlight { batch, token, .. } = self.in_flight.take()?;
            match done {
                Ok(Ok(())) => {
                    self.pause = FIRST_PAUSE;
                    return Some(Committed::Stored(token));
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, messages = batch.len(), "storing a batch failed; trying again");
                }
                Err(err) => {
                    tracing::error!(error = %err, messages = batch.len(), "a commit task failed; trying again");
                }
            }
            self.retry_at = Some(Instant::now() + self.pause);
            self.pause = (self.pause * 2).min(LONGEST_PAUSE);
            return Some(Committed::Failed(batch, token));
        }
        match self.retry_at {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
                None
            }
            None => std::future::pending().await,
        }
    }
}

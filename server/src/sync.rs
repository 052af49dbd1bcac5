//! Locks over plain bookkeeping, shared by tasks, and work that must end
//! once begun.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// Work begun for requests that must not stop halfway, counted so that a
/// stopping server waits for it (`finish`) before it stops the pipeline and
/// the events that tell of it.
#[derive(Clone, Default)]
pub struct Unfinished(TaskTracker);

impl Unfinished {
    /// Runs `work` to its end in a task of its own, for a request whose
    /// work must not stop halfway: a request future is dropped when its
    /// client goes or a proxy times out, and work cut between two writes (a
    /// picture and its account, a chat's change and the telling of it)
    /// leaves them disagreeing. The caller waits for it all the same, so
    /// that its answer comes after.
    pub(crate) async fn to_the_end<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.0
            .spawn(tracing::Instrument::in_current_span(work))
            .await
            .unwrap_or_else(|err| Err(ApiError::Internal(anyhow::anyhow!("a task failed: {err}"))))
    }

    /// Waits until the work begun has ended, or until `deadline`; says how
    /// much had not. Called once no request runs any more: work whose
    /// request was dropped (its client gone) or cut off at the stop may
    /// still be running, and a process that ended under it would leave a
    /// change written and never told, or half written.
    pub async fn finish(&self, deadline: tokio::time::Instant) -> usize {
        self.0.close();
        if tokio::time::timeout_at(deadline, self.0.wait())
            .await
            .is_ok()
        {
            0
        } else {
            self.0.len()
        }
    }
}

/// Locks `mutex`, poisoned or not. A poisoned lock means a thread panicked
/// while holding it; what these locks guard (queues, maps, a link) stays
/// usable, and refusing every later caller would turn one bug into an
/// outage.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `lock` for reading an `RwLock`.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `lock` for writing an `RwLock`.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

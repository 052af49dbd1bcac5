//! One embedded server per data folder. Two servers on one SQLite database
//! would both sequence its chats (one seq for two messages) and each take
//! the other's running mark for a crash (moving every chat's seqs ahead).
//! The port check stops a second server on the same port; this stops one
//! on another port: the first holds an OS lock on `natter.lock` in the
//! folder for as long as its database is open (its `SqliteStore`, until the
//! pipeline's last commit at shutdown), and a second waits a while for it (a restart
//! whose predecessor is still storing what it sequenced) and then refuses
//! to start, saying why. The OS lets go of the lock with the process, so a
//! crash never leaves it behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a start waits for another server to let go of the folder: a
/// clean stop takes up to 10 s for requests still running (the default
/// `NATTER_SHUTDOWN_GRACE_MS`), 10 s to store what was sequenced and 10 s
/// more to hand events over.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(35);

/// How often the lock is tried while waiting.
const TRY_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum DataLockError {
    #[error(
        "the data folder {} is in use by another natter-server (it holds {}); stop that one first, or give this one its own NATTER_DATA_DIR",
        .folder.display(), .lock.display()
    )]
    InUse { folder: PathBuf, lock: PathBuf },
    #[error("locking {}: {source}", .lock.display())]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The folder is ours while this lives.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock on `folder`, waiting at most `patience` for a server
    /// that holds it to stop.
    pub async fn acquire(folder: &Path, patience: Duration) -> Result<DataLock, DataLockError> {
        let lock = folder.join("natter.lock");
        let io = |source| DataLockError::Io {
            lock: lock.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io)?;
        let deadline = tokio::time::Instant::now() + patience;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DataLock { _file: file }),
                Err(TryLockError::Error(err)) => return Err(io(err)),
                Err(TryLockError::WouldBlock) if tokio::time::Instant::now() >= deadline => {
                    return Err(DataLockError::InUse {
                        folder: folder.to_path_buf(),
                        lock,
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    if !told {
                        tracing::warn!(
                            lock = %lock.display(),
                            "another natter-server holds the data folder; waiting for it to stop"
                        );
                        told = true;
                    }
                    tokio::time::sleep(TRY_EVERY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_second_holder_is_refused_with_the_folder_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = DataLock::acquire(dir.path(), SHORT).await.expect("free");
        let refused = DataLock::acquire(dir.path(), SHORT)
            .await
            .expect_err("held by the first");
        assert!(matches!(refused, DataLockError::InUse { .. }));
        let said = refused.to_string();
        assert!(
            said.contains(&dir.path().display().to_string()) && said.contains("NATTER_DATA_DIR"),
            "{said}"
        );
        drop(first);
        DataLock::acquire(dir.path(), SHORT)
            .await
            .expect("free again once the first is gone");
    }

    /// On tokio's paused clock: the first lets go a (virtual) second in.
    #[tokio::test(start_paused = true)]
    async fn a_start_waits_for_a_holder_that_stops_within_the_patience() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = DataLock::acquire(dir.path(), SHORT).await.expect("free");
        let started = tokio::time::Instant::now();
        let (second, ()) = tokio::join!(
            DataLock::acquire(dir.path(), Duration::from_secs(30)),
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(first);
            }
        );
        second.expect("taken once the first let go");
        assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    }
}

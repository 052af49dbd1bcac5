use std::path::PathBuf;

use async_trait::async_trait;
use tokio_util::io::ReaderStream;

use super::{Blob, BlobError, BlobStore, parse_key};

/// Pictures as files in one folder. A file is written under a temporary name
/// and renamed into place, so a reader never sees half a picture; the file
/// and the rename reach the disk before `put` returns, since the account
/// naming the picture is committed next (after a power loss, an account
/// whose picture was empty or missing would stay so).
pub struct LocalBlobs {
    dir: PathBuf,
}

impl LocalBlobs {
    pub fn open(dir: PathBuf) -> Result<Self, BlobError> {
        std::fs::create_dir_all(&dir)?;
        Ok(LocalBlobs { dir })
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let dir = self.dir.clone();
        let partial = self.dir.join(format!(".{key}.partial"));
        let target = self.dir.join(key);
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let write = || {
                let mut file = std::fs::File::create(&partial)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                std::fs::rename(&partial, &target)
            };
            if let Err(err) = write() {
                // A full disk, say: what was written of it goes too.
                let _ = std::fs::remove_file(&partial);
                return Err(err);
            }
            // The rename is the folder's change: it lasts once the folder does.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?;
        Ok(written?)
    }

    async fn get(&self, key: &str) -> Result<Option<Blob>, BlobError> {
        let Some(kind) = parse_key(key) else {
            return Ok(None);
        };
        let file = match tokio::fs::File::open(self.dir.join(key)).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        // Written whole then renamed into place: the size is the picture's.
        let len = file.metadata().await?.len();
        Ok(Some(Blob {
            kind,
            len,
            // Each read of a file is a hop to the blocking pool: in 64 KiB
            // chunks, not the default 4 KiB.
            body: Box::pin(ReaderStream::with_capacity(file, 64 * 1024)),
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        if parse_key(key).is_none() {
            return Ok(());
        }
        match tokio::fs::remove_file(self.dir.join(key)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(&self.dir).await?;
        Ok(())
    }
}

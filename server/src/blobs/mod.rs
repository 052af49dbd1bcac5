//! Profile pictures: checked by their content (`image`), kept under a
//! server-chosen key in a blob store: a local folder by default (`local`), or
//! any S3-compatible store (`s3`).

mod image;
mod local;
mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use image::{ImageError, ImageKind, inspect};
pub use local::LocalBlobs;
pub use s3::{S3Blobs, S3Settings};

/// Where the server serves the picture stored under `key`.
pub fn pic_url(key: &str) -> String {
    format!("/api/pic/{key}")
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The store took the request and did not answer in time.
    #[error("the picture store did not answer in time")]
    Unanswered,
    #[error("{0}")]
    Config(String),
}

/// A stored picture as it is read: what it is, its size, and its bytes as
/// they come. Streamed, not read whole: an answer to a client that reads
/// slowly, or not at all, holds a buffer, not a picture of up to 5 MiB
/// (thousands of such requests would otherwise hold gigabytes).
pub struct Blob {
    pub kind: ImageKind,
    pub len: u64,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// A new, random, unguessable key for a picture of this kind.
pub fn new_key(kind: ImageKind) -> String {
    format!("{}.{}", uuid::Uuid::new_v4().simple(), kind.extension())
}

/// The image kind a key names, when the key is one `new_key` could have made.
/// Anything else (path separators, dots, unknown endings) is not a key.
pub fn parse_key(key: &str) -> Option<ImageKind> {
    let (stem, extension) = key.split_once('.')?;
    let stem_ok = stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit());
    stem_ok.then_some(())?;
    ImageKind::from_extension(extension)
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError>;
    async fn get(&self, key: &str) -> Result<Option<Blob>, BlobError>;
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Cheap check that the store answers, for the health endpoint.
    async fn ping(&self) -> Result<(), BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_nothing_else_parses() {
        let key = new_key(ImageKind::Png);
        assert_eq!(parse_key(&key), Some(ImageKind::Png));
        for bad in [
            "../etc/passwd",
            "x.png",
            "0123456789abcdef0123456789abcdef.exe",
            "0123456789abcdef0123456789abcdef.png.png",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}

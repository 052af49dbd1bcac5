//! Pictures in any S3-compatible store (AWS S3, MinIO, Garage, R2, ...),
//! through the `object_store` crate.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStoreExt, PutPayload, RetryConfig};

use super::{Blob, BlobError, BlobStore, parse_key};

/// Where and how to reach the store. Anything left unset comes from the
/// usual `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// How long a request to the store is tried again before it fails (each
/// try may take object_store's own timeout, 30 s, when the store takes the
/// connection and never answers).
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a picture read from the store may take to begin: the store's
/// own patience for any request.
const HEAD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a picture read from the store may take, its body streamed to a
/// client as fast as the client reads: 5 MiB at 100 kbit/s.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(7 * 60);

pub struct S3Blobs {
    store: AmazonS3,
    /// The same store for reading pictures out: a picture streams to its
    /// client as fast as the client takes it, and the S3 client's timeout
    /// covers the whole body, so it is long here (`READ_PATIENCE`).
    reads: AmazonS3,
    prefix: String,
}

impl S3Blobs {
    pub fn connect(settings: &S3Settings) -> Result<Self, BlobError> {
        let rest = settings.url.strip_prefix("s3://").ok_or_else(|| {
            BlobError::Config("NATTER_BLOB_URL must look like s3://bucket[/prefix]".into())
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobError::Config("NATTER_BLOB_URL names no bucket".into()));
        }
        // A store that is away fails a request within seconds, not after
        // object_store's 10 retries over up to 3 minutes: the request
        // holding a sign-up's picture meanwhile is answered 503 instead.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: STORE_PATIENCE,
        };
        // Client settings from the environment (`AWS_ALLOW_HTTP`, a proxy,
        // timeouts) are kept: set one by one, never replaced whole.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // Self-hosted stores address buckets by path, not by host name.
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let settings_error =
            |err: object_store::Error| BlobError::Config(format!("S3 settings: {err}"));
        let reads = builder
            .clone()
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}s", READ_PATIENCE.as_secs()),
            )
            .build()
            .map_err(settings_error)?;
        let store = builder.build().map_err(settings_error)?;
        Ok(S3Blobs {
            store,
            reads,
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Blob>, BlobError> {
        let Some(kind) = parse_key(key) else {
            return Ok(None);
        };
        // The answer's head within the store's usual patience (the long
        // timeout is for its body): one that never answers is told as away.
        let path = self.path(key);
        let asked = tokio::time::timeout(HEAD_PATIENCE, self.reads.get(&path));
        let Ok(answer) = asked.await else {
            return Err(BlobError::Unanswered);
        };
        match answer {
            Ok(found) => Ok(Some(Blob {
                kind,
                len: found.meta.size,
                body: Box::pin(found.into_stream().map_err(std::io::Error::other)),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        if parse_key(key).is_none() {
            return Ok(());
        }
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        // Reading a key that is never written: "not found" proves the bucket answers.
        match self.store.head(&self.path(".natter-health")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

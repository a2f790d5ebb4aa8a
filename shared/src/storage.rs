//! The object store: immutable chunk, snapshot and checkpoint objects.
//!
//! One URL picks the backend: a local directory for standalone (`./data`,
//! `file:///var/lib/ebb`), any S3-compatible service
//! (`s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1`), with
//! credentials from the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`,
//! and, for files sources only, Google Cloud Storage (`gs://bucket/prefix`,
//! credentials as Google's clients find them).
//! Objects are only ever created (`PutMode::Create`), never overwritten: which
//! object is current is decided by pointer rows in the state DB.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store URL {url:?}: {reason}")]
    Config { url: String, reason: String },
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists (objects are immutable)")]
    AlreadyExists { key: String },
    #[error("object store: {0}")]
    Io(String),
}

impl StorageError {
    /// Transient store faults are worth retrying; a missing object is not.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StorageError::Io(_))
    }
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Storage {
    /// Ebb's own object store: a directory (created if missing) or S3.
    pub fn from_url(url: &str) -> Result<Storage, StorageError> {
        if url.starts_with("gs://") {
            // Ebb's objects are created only if absent (`PutMode::Create`);
            // no local GCS emulator checks that precondition, so it is not
            // offered untested.
            return Err(StorageError::Config {
                url: crate::redact::redact_url(url),
                reason:
                    "Ebb's own object store is a directory or s3://bucket/prefix; gs:// is read by files sources only"
                        .into(),
            });
        }
        Storage::build(url, true)
    }

    /// A store to read from (a files source): a local directory that exists
    /// already (nothing is created for a source), S3 or Google Cloud Storage.
    pub fn open_existing(url: &str) -> Result<Storage, StorageError> {
        Storage::build(url, false)
    }

    fn build(url: &str, create_local: bool) -> Result<Storage, StorageError> {
        let config_error = |reason: String| StorageError::Config {
            url: crate::redact::redact_url(url),
            reason,
        };
        if url.starts_with("s3://") || url.starts_with("gs://") {
            let parsed = url::Url::parse(url).map_err(|e| config_error(e.to_string()))?;
            let scheme = parsed.scheme();
            let bucket = parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| config_error(format!("name the bucket: {scheme}://BUCKET/prefix")))?;
            let store: Arc<dyn ObjectStore> = if scheme == "s3" {
                Arc::new(s3_store(bucket, &parsed).map_err(config_error)?)
            } else {
                Arc::new(gcs_store(bucket, &parsed).map_err(config_error)?)
            };
            let prefix = parsed.path().trim_matches('/').to_string();
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                store
            } else {
                Arc::new(PrefixStore::new(store, prefix))
            };
            return Ok(Storage {
                store,
                description: format!("{scheme}://{bucket}{}", parsed.path()),
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.contains("://") {
            return Err(config_error(
                "use a directory path, file:///dir, s3://bucket/prefix or gs://bucket/prefix".into(),
            ));
        }
        if create_local {
            std::fs::create_dir_all(dir).map_err(|e| config_error(format!("cannot create directory: {e}")))?;
        } else if !std::path::Path::new(dir).is_dir() {
            return Err(config_error("no such directory".into()));
        }
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| config_error(e.to_string()))?;
        Ok(Storage {
            store: Arc::new(store),
            description: format!("file://{dir}"),
        })
    }

    /// Writes a new object; fails if the key exists.
    pub async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&ObjectPath::from(key), PutPayload::from(bytes), options)
            .await
            .map(|_| ())
            .map_err(|e| classify(e, key))
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let result = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| classify(e, key))?;
        result.bytes().await.map_err(|e| classify(e, key))
    }

    /// An object's bytes as they arrive, never held whole.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        use futures::StreamExt;
        let result = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| classify(e, key))?;
        let key = key.to_string();
        Ok(result
            .into_stream()
            .map(move |piece| piece.map_err(|e| classify(e, &key)))
            .boxed())
    }

    /// An object's size in bytes.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        self.store
            .head(&ObjectPath::from(key))
            .await
            .map(|meta| meta.size)
            .map_err(|e| classify(e, key))
    }

    /// Bytes `range` of an object.
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, StorageError> {
        self.store
            .get_range(&ObjectPath::from(key), range)
            .await
            .map_err(|e| classify(e, key))
    }

    /// Keys below `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix = ObjectPath::from(prefix);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| classify(e, prefix.as_ref()))?;
        keys.sort();
        Ok(keys)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e, key)),
        }
    }
}

/// An S3 bucket, or an S3-compatible service's (`endpoint=`); credentials
/// from the `AWS_*` variables or the instance's role.
fn s3_store(bucket: &str, url: &url::Url) -> Result<object_store::aws::AmazonS3, String> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(store_retries());
    for (key, value) in url.query_pairs() {
        builder = match key.as_ref() {
            "endpoint" => builder
                .with_endpoint(value.to_string())
                .with_allow_http(value.starts_with("http://"))
                .with_virtual_hosted_style_request(false),
            "region" => builder.with_region(value.to_string()),
            other => return Err(format!("unknown parameter {other:?} (known: endpoint, region)")),
        };
    }
    builder.build().map_err(|e| e.to_string())
}

/// A Google Cloud Storage bucket. Credentials as Google's own clients find
/// them: `GOOGLE_SERVICE_ACCOUNT` (a key file) or `GOOGLE_SERVICE_ACCOUNT_KEY`
/// (its JSON), `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server
/// (GKE Workload Identity). `endpoint=` points at an emulator instead, which
/// is called unauthenticated, as Google's clients do with
/// `STORAGE_EMULATOR_HOST`.
fn gcs_store(bucket: &str, url: &url::Url) -> Result<object_store::gcp::GoogleCloudStorage, String> {
    let mut endpoint = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "endpoint" => endpoint = Some(url::Url::parse(&value).map_err(|e| format!("endpoint {value:?}: {e}"))?),
            other => return Err(format!("unknown parameter {other:?} (known: endpoint)")),
        }
    }
    let builder = match endpoint {
        None => GoogleCloudStorageBuilder::from_env(),
        Some(endpoint) => {
            // The crate takes an emulator's address only inside a service
            // account key, with OAuth turned off; no `GOOGLE_*` variable
            // is read, so no real credential goes to an emulator.
            let emulator = serde_json::json!({
                "private_key": "",
                "private_key_id": "",
                "client_email": "",
                "gcs_base_url": endpoint.as_str().trim_end_matches('/'),
                "disable_oauth": true,
            });
            GoogleCloudStorageBuilder::new()
                .with_service_account_key(emulator.to_string())
                .with_client_options(object_store::ClientOptions::new().with_allow_http(endpoint.scheme() == "http"))
        }
    };
    builder
        .with_bucket_name(bucket)
        .with_retry(store_retries())
        .build()
        .map_err(|e| e.to_string())
}

/// How one object-store call rides out an outage: refused connections, 5xx
/// and timeouts are retried with backoff (100 ms doubling to 10 s) for up to
/// three minutes. The defaults give up after ten quick retries, about two
/// seconds of refused connections, which made a one-minute outage fail runs.
/// A task whose store calls still fail goes back to the queue on top of this.
fn store_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 25,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

fn classify(error: object_store::Error, key: &str) -> StorageError {
    match error {
        object_store::Error::NotFound { .. } => StorageError::NotFound { key: key.to_string() },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StorageError::AlreadyExists { key: key.to_string() }
        }
        other => StorageError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_objects_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_url(dir.path().to_str().unwrap()).unwrap();
        storage.create("a/b.ebb", b"one".to_vec()).await.unwrap();
        let err = storage.create("a/b.ebb", b"two".to_vec()).await.unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
        assert_eq!(&storage.get("a/b.ebb").await.unwrap()[..], b"one");
        assert_eq!(storage.list("a").await.unwrap(), vec!["a/b.ebb".to_string()]);
        assert!(matches!(
            storage.get("a/c").await.unwrap_err(),
            StorageError::NotFound { .. }
        ));
    }

    #[test]
    fn bad_urls_are_named() {
        let err = Storage::from_url("s3://bucket/p?endpoit=x").unwrap_err();
        assert!(err.to_string().contains("endpoit"), "{err}");
        let err = Storage::open_existing("gs://bucket/p?region=x").unwrap_err();
        assert!(err.to_string().contains("known: endpoint"), "{err}");
        let err = Storage::from_url("gs://bucket/p").unwrap_err();
        assert!(err.to_string().contains("files sources only"), "{err}");
        let err = Storage::open_existing("azure://bucket").unwrap_err();
        assert!(err.to_string().contains("gs://bucket/prefix"), "{err}");
    }
}

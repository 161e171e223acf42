//! Snapshots in S3-compatible object storage (AWS S3, MinIO, Ceph, moto): streaming upload with
//! a running sha256, verified download, delete.
//!
//! Memory stays bounded on save: the snapshot is encoded on a blocking thread into parts of
//! [`PART_SIZE`] that are uploaded while the next one is compressed (multipart above one part,
//! a single PUT below), so at most a few parts exist at once besides the snapshot itself.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::mpsc;

use super::snapshot::{self, Snapshot, SnapshotError};

/// Size of one uploaded part (S3 wants at least 5 MiB for all but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts encoded ahead of the upload.
const PARTS_AHEAD: usize = 2;
/// The object's file name suffix.
pub const OBJECT_SUFFIX: &str = ".json.zst";

/// Where snapshots go unless a Checkpoint says otherwise, and how to reach the storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// A custom endpoint (MinIO, Ceph, a test server); `None` is AWS S3.
    pub endpoint: Option<String>,
    /// The region to sign requests for.
    pub region: String,
    /// The default bucket.
    pub bucket: String,
    /// The default key prefix, e.g. `prod/`.
    pub prefix: String,
    /// Address buckets as `<endpoint>/<bucket>` rather than `<bucket>.<endpoint>` (most
    /// S3-compatible servers need this).
    pub force_path_style: bool,
}

/// One object: a bucket and a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// The bucket.
    pub bucket: String,
    /// The key inside it.
    pub key: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl ObjectRef {
    /// Parses `s3://<bucket>/<key>`.
    pub fn parse(location: &str) -> Option<Self> {
        let rest = location.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (!bucket.is_empty() && !key.is_empty()).then(|| Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// What a save stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// Size of the stored object in bytes.
    pub size: u64,
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
}

/// Why a storage operation failed. [`StoreError::reason`] is the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist")]
    BucketNotFound {
        /// The bucket.
        bucket: String,
    },
    /// The credentials were refused or lack permission.
    #[error("access to bucket {bucket} denied ({code}); check the operator's S3 credentials")]
    AccessDenied {
        /// The bucket.
        bucket: String,
        /// The storage's error code.
        code: String,
    },
    /// The object does not exist.
    #[error("{location} does not exist")]
    ObjectNotFound {
        /// The object.
        location: String,
    },
    /// The object's sha256 is not the one recorded: it was changed or damaged.
    #[error("{location} has sha256 {actual}, not the {expected} recorded when it was saved")]
    Corrupt {
        /// The object.
        location: String,
        /// The recorded sha256.
        expected: String,
        /// The object's sha256.
        actual: String,
    },
    /// The object is not a snapshot this operator can read.
    #[error("{location}: {source}")]
    Unreadable {
        /// The object.
        location: String,
        /// Why.
        source: SnapshotError,
    },
    /// A request failed for another reason (network, server error) after the SDK's retries.
    #[error("{op} {location} failed: {detail}")]
    Request {
        /// What was being done.
        op: &'static str,
        /// The object.
        location: String,
        /// The SDK's description.
        detail: String,
    },
}

impl StoreError {
    /// A CamelCase reason for a condition.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::BucketNotFound { .. } => "BucketNotFound",
            StoreError::AccessDenied { .. } => "AccessDenied",
            StoreError::ObjectNotFound { .. } => "ObjectNotFound",
            StoreError::Corrupt { .. } => "CheckpointCorrupt",
            StoreError::Unreadable { .. } => "CheckpointUnreadable",
            StoreError::Request { op: "upload", .. } => "UploadFailed",
            StoreError::Request { op: "download", .. } => "DownloadFailed",
            StoreError::Request { .. } => "StorageError",
        }
    }

    /// Whether trying again later can help (a network or server failure, not a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Request { .. })
    }
}

/// Sorts an SDK error into a [`StoreError`].
fn classify<E>(op: &'static str, object: &ObjectRef, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = match &err {
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
        _ => None,
    };
    let code = err.code().map(str::to_owned);
    match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => StoreError::BucketNotFound {
            bucket: object.bucket.clone(),
        },
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => StoreError::ObjectNotFound {
            location: object.to_string(),
        },
        (
            Some(
                code @ ("AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken"
                | "AllAccessDisabled"),
            ),
            _,
        ) => StoreError::AccessDenied {
            bucket: object.bucket.clone(),
            code: code.to_owned(),
        },
        (None, Some(403)) => StoreError::AccessDenied {
            bucket: object.bucket.clone(),
            code: "403 Forbidden".to_owned(),
        },
        _ => StoreError::Request {
            op,
            location: object.to_string(),
            detail: DisplayErrorContext(&err).to_string(),
        },
    }
}

/// Snapshots in one S3-compatible storage.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    config: StoreConfig,
}

impl Store {
    /// A store for `config`, with credentials from the standard AWS chain (environment
    /// variables, profile, web identity, container or instance metadata).
    pub async fn new(config: StoreConfig) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .load()
            .await;
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        // Checksums only where S3 requires them: several S3-compatible servers reject the
        // SDK's newer default trailing checksums, and the object's sha256 is verified anyway.
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(builder.build()),
            config,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The object of checkpoint `checkpoint` of Task `namespace/task`:
    /// `<prefix><namespace>/<task>/<checkpoint>.json.zst`, with `bucket`/`prefix` when given.
    pub fn object_for(
        &self,
        bucket: Option<&str>,
        prefix: Option<&str>,
        namespace: &str,
        task: &str,
        checkpoint: &str,
    ) -> ObjectRef {
        ObjectRef {
            bucket: bucket.unwrap_or(&self.config.bucket).to_owned(),
            key: format!(
                "{}{namespace}/{task}/{checkpoint}{OBJECT_SUFFIX}",
                prefix.unwrap_or(&self.config.prefix)
            ),
        }
    }

    /// Encodes `snapshot` and stores it as `object`, overwriting what was there.
    pub async fn save(&self, object: &ObjectRef, snapshot: Snapshot) -> Result<Saved, StoreError> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PARTS_AHEAD);
        let encoder = tokio::task::spawn_blocking(move || {
            let writer = PartWriter::new(tx);
            snapshot::encode(&snapshot, writer)?.finish()
        });
        let uploaded = self.upload(object, &mut rx).await;
        // Dropping the receiver makes a still-running encoder stop at its next part.
        drop(rx);
        let encoded = encoder.await.map_err(|e| StoreError::Request {
            op: "upload",
            location: object.to_string(),
            detail: format!("the encoder stopped: {e}"),
        })?;
        match (uploaded, encoded) {
            (Ok(()), Ok(saved)) => Ok(saved),
            (Err(err), _) => Err(err),
            (Ok(()), Err(err)) => Err(StoreError::Request {
                op: "upload",
                location: object.to_string(),
                detail: format!("encoding the snapshot failed: {err}"),
            }),
        }
    }

    async fn upload(
        &self,
        object: &ObjectRef,
        parts: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let first = parts.recv().await.unwrap_or_default();
        let Some(second) = parts.recv().await else {
            self.client
                .put_object()
                .bucket(&object.bucket)
                .key(&object.key)
                .content_type("application/zstd")
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| classify("upload", object, e))?;
            return Ok(());
        };
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&object.bucket)
            .key(&object.key)
            .content_type("application/zstd")
            .send()
            .await
            .map_err(|e| classify("upload", object, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Request {
                op: "upload",
                location: object.to_string(),
                detail: "the storage returned no upload id".to_owned(),
            })?
            .to_owned();
        let result = self
            .upload_parts(object, &upload_id, [first, second], parts)
            .await;
        if result.is_err() {
            // Best effort: a failed abort leaves parts a bucket lifecycle rule removes.
            if let Err(err) = self
                .client
                .abort_multipart_upload()
                .bucket(&object.bucket)
                .key(&object.key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(location = %object, error = %DisplayErrorContext(&err), "aborting a multipart upload failed");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        object: &ObjectRef,
        upload_id: &str,
        first_two: [Vec<u8>; 2],
        rest: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut completed = Vec::new();
        let mut pending = first_two
            .into_iter()
            .collect::<std::collections::VecDeque<_>>();
        let mut number = 0;
        loop {
            let part = match pending.pop_front() {
                Some(part) => part,
                None => match rest.recv().await {
                    Some(part) => part,
                    None => break,
                },
            };
            number += 1;
            let done = self
                .client
                .upload_part()
                .bucket(&object.bucket)
                .key(&object.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| classify("upload", object, e))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&object.bucket)
            .key(&object.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("upload", object, e))?;
        Ok(())
    }

    /// Downloads `object`, checks that its sha256 is `expected`, and decodes it. Nothing is
    /// decoded from an object whose hash differs.
    pub async fn load(&self, object: &ObjectRef, expected: &str) -> Result<Snapshot, StoreError> {
        let bytes = self.fetch(object).await?;
        let actual = hex_sha256(&bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(StoreError::Corrupt {
                location: object.to_string(),
                expected: expected.to_owned(),
                actual,
            });
        }
        let location = object.to_string();
        tokio::task::spawn_blocking(move || snapshot::decode(&bytes[..]))
            .await
            .map_err(|e| StoreError::Request {
                op: "download",
                location: location.clone(),
                detail: format!("the decoder stopped: {e}"),
            })?
            .map_err(|source| StoreError::Unreadable { location, source })
    }

    /// The stored bytes of `object` (as the SDK collected them: no second copy).
    pub async fn fetch(&self, object: &ObjectRef) -> Result<bytes::Bytes, StoreError> {
        let response = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await
            .map_err(|e| classify("download", object, e))?;
        let body = response
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Request {
                op: "download",
                location: object.to_string(),
                detail: e.to_string(),
            })?;
        Ok(body.into_bytes())
    }

    /// Deletes `object`; an object (or bucket) that is already gone counts as deleted.
    pub async fn delete(&self, object: &ObjectRef) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await
            .map_err(|e| classify("delete", object, e))
        {
            Ok(_) | Err(StoreError::BucketNotFound { .. } | StoreError::ObjectNotFound { .. }) => {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Cuts the encoded stream into parts, hashing and counting it on the way.
struct PartWriter {
    parts: mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
    hash: digest::Context,
    size: u64,
}

impl PartWriter {
    fn new(parts: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            parts,
            buffer: Vec::with_capacity(PART_SIZE),
            hash: digest::Context::new(&digest::SHA256),
            size: 0,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_SIZE));
        self.parts
            .blocking_send(part)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }

    /// Sends the last part and returns what was written.
    fn finish(mut self) -> Result<Saved, SnapshotError> {
        if !self.buffer.is_empty() || self.size == 0 {
            self.send()?;
        }
        Ok(Saved {
            size: self.size,
            sha256: hex(self.hash.finish().as_ref()),
        })
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = PART_SIZE - self.buffer.len();
        let taken = data.len().min(room);
        self.buffer.extend_from_slice(&data[..taken]);
        self.hash.update(&data[..taken]);
        self.size += taken as u64;
        if self.buffer.len() == PART_SIZE {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print_the_same() {
        let object = ObjectRef::parse("s3://maos-checkpoints/prod/ns/t/c.json.zst").unwrap();
        assert_eq!(object.bucket, "maos-checkpoints");
        assert_eq!(object.key, "prod/ns/t/c.json.zst");
        assert_eq!(
            object.to_string(),
            "s3://maos-checkpoints/prod/ns/t/c.json.zst"
        );
        assert_eq!(ObjectRef::parse("s3://bucket-only"), None);
        assert_eq!(ObjectRef::parse("https://x/y"), None);
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_part_writer_cuts_full_parts_and_hashes_everything() {
        let (tx, mut rx) = mpsc::channel(8);
        let data = vec![7u8; PART_SIZE + 10];
        let handle = std::thread::spawn(move || {
            let mut writer = PartWriter::new(tx);
            std::io::Write::write_all(&mut writer, &data).unwrap();
            writer.finish().unwrap()
        });
        let saved = handle.join().unwrap();
        let mut sizes = Vec::new();
        while let Ok(part) = rx.try_recv() {
            sizes.push(part.len());
        }
        assert_eq!(sizes, vec![PART_SIZE, 10]);
        assert_eq!(saved.size, (PART_SIZE + 10) as u64);
        assert_eq!(saved.sha256, hex_sha256(&vec![7u8; PART_SIZE + 10]));
    }
}

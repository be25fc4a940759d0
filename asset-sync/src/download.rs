//! Fetching one object: GET with `If-Match` on the listed ETag, stream into a
//! staging file on the target's filesystem, verify, fsync, rename into place.
//!
//! Readers of the target never see a partial file: the only thing that ever
//! appears under a published name is a complete, verified file, by `rename`.
//! A staging file is removed when its download fails or is cancelled; one
//! left by a SIGKILL is removed at the start of the next pass.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use aws_sdk_s3::Client;
use base64::Engine;
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::fsio;
use crate::limiter::RateLimiter;
use crate::s3::{describe, plain_md5, Remote, SseCustomerKey};

/// How a download was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verified {
    /// Against the ETag, which is the content's MD5.
    Md5,
    /// Against the object's full-object SHA-256 checksum.
    Sha256,
    /// Against a CRC checksum, checked by the SDK while streaming.
    Crc,
    /// No usable checksum (multipart without one, a composite CRC, or an
    /// encrypted object whose ETag is not an MD5): size only.
    SizeOnly,
}

impl Verified {
    /// The metric label and the manifest's spelling.
    pub fn label(self) -> &'static str {
        match self {
            Verified::Md5 => "md5",
            Verified::Sha256 => "sha256",
            Verified::Crc => "crc",
            Verified::SizeOnly => "size_only",
        }
    }
}

/// What one download's bytes hashed to, and what the response said about
/// how they can be checked.
struct Hashed {
    size: u64,
    /// Computed only when something checks it (the ETag is an MD5).
    md5: Option<[u8; 16]>,
    /// Computed only when the object has a full-object SHA-256.
    sha256: Option<[u8; 32]>,
    /// From the object's checksums (SHA-256, CRC) or size only.
    verified: Verified,
    /// The object is stored with SSE-KMS, DSSE-KMS or SSE-C: its ETag is
    /// not the MD5 of the content even when it looks like one.
    encrypted: bool,
    /// A small object's bytes, not yet in the staging file: the publish
    /// step writes them on the blocking pool just before its fsync.
    unwritten: Vec<u8>,
}

impl Hashed {
    /// Checks the bytes' SHA-256 against the object's full-object checksum,
    /// when it has one.
    fn checked(
        (size, md5, sha256): Digests,
        full_sha: Option<Vec<u8>>,
        has_crc: bool,
        encrypted: bool,
    ) -> Result<Self, FetchError> {
        Ok(Hashed {
            size,
            md5,
            verified: check_sha(full_sha, sha256.as_ref(), has_crc)?,
            sha256,
            encrypted,
            unwritten: Vec::new(),
        })
    }
}

/// Which digests a download needs: hashing is the CPU cost of a large
/// object (MD5 and SHA-256 of 1 GB take seconds on this class of machine),
/// so a digest nothing will check is not computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub md5: bool,
    pub sha256: bool,
}

impl Want {
    /// What verifying `etag` (of an object `encrypted` or not, with or
    /// without a full-object SHA-256) needs.
    pub fn for_object(etag: &str, encrypted: bool, full_sha: bool) -> Want {
        Want {
            md5: etag_md5(etag, encrypted).is_some(),
            sha256: full_sha,
        }
    }

    fn any(self) -> bool {
        self.md5 || self.sha256
    }
}

/// MD5 and SHA-256, each only when wanted.
struct Digester {
    md5: Option<Md5>,
    sha: Option<Sha256>,
    size: u64,
}

impl Digester {
    fn new(want: Want) -> Self {
        Digester {
            md5: want.md5.then(Md5::new),
            sha: want.sha256.then(Sha256::new),
            size: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.sha {
            h.update(bytes);
        }
        self.size += bytes.len() as u64;
    }

    fn finish(self) -> Digests {
        (
            self.size,
            self.md5.map(|h| h.finalize().into()),
            self.sha.map(|h| h.finalize().into()),
        )
    }
}

/// Objects up to this size are kept in memory until the publish step, so
/// most assets cost no extra trip to the blocking pool; hashing this much
/// inline takes well under a millisecond.
const INLINE_MAX: u64 = 64 << 10;

/// The MD5 an ETag stands for, if it stands for one: a plain 32-hex ETag of
/// an object that is not encrypted with KMS or a customer key (AWS: "objects
/// encrypted by SSE-C or SSE-KMS have ETags that are not an MD5 digest";
/// SSE-S3's `AES256` keeps the MD5).
pub fn etag_md5(etag: &str, encrypted: bool) -> Option<[u8; 16]> {
    if encrypted {
        None
    } else {
        plain_md5(etag)
    }
}

/// Whether the response's server-side encryption makes the ETag opaque:
/// `x-amz-server-side-encryption: aws:kms` or `aws:kms:dsse`, or any
/// `x-amz-server-side-encryption-customer-algorithm` (SSE-C).
pub fn etag_opaque(sse: Option<&str>, customer_algorithm: Option<&str>) -> bool {
    customer_algorithm.is_some() || sse.is_some_and(|s| s.starts_with("aws:kms"))
}

/// Whether a CRC the SDK checked while streaming covers the whole object.
/// A composite checksum (multipart: a checksum of the parts' checksums,
/// written `…-N`, or `x-amz-checksum-type: COMPOSITE`) is not checked by the
/// SDK and proves nothing about the bytes: that is size-only.
pub fn crc_covers_object(values: &[Option<&str>], composite: bool) -> bool {
    !composite && values.iter().flatten().any(|v| !v.contains('-'))
}

#[derive(Debug)]
pub struct Fetched {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub verified: Verified,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "object changed since it was listed (ETag no longer matches); next pass takes the new one"
    )]
    Changed,
    #[error("object disappeared since it was listed")]
    Gone,
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("S3: {0}")]
    S3(String),
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

impl FetchError {
    fn retryable(&self) -> bool {
        matches!(self, FetchError::S3(_) | FetchError::Verify(_))
    }

    pub fn is_disk_full(&self) -> bool {
        matches!(self, FetchError::Local { source, .. } if source.raw_os_error() == Some(28))
    }

    fn local(path: &Path, source: std::io::Error) -> Self {
        FetchError::Local {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Everything a download needs, shared by all downloads of a pass.
pub struct Fetcher {
    pub client: Client,
    pub bucket: String,
    pub target: PathBuf,
    pub staging: PathBuf,
    pub permits: Arc<Semaphore>,
    /// Bounds range requests of large objects (see `sync.range_concurrency`).
    pub range_permits: Arc<Semaphore>,
    pub limiter: Option<Arc<RateLimiter>>,
    pub ranged_threshold: u64,
    pub range_size: u64,
    pub attempts: u32,
    pub cancel: CancellationToken,
    pub retries: AtomicU64,
    /// Sent with every GET and HEAD when the objects are SSE-C encrypted.
    pub sse_customer_key: Option<crate::s3::SseCustomerKey>,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes and hashes one download's chunks on the blocking pool: a
/// page-cache write can stall for as long as the disk takes (writeback
/// pressure, a slow or failing device), and hashing is CPU work; neither
/// may hold an async worker that the admin server and the other downloads
/// share.
struct Sink {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    task: tokio::task::JoinHandle<std::io::Result<Digests>>,
}

/// Size, and the MD5 and SHA-256 of what was written when wanted.
pub type Digests = (u64, Option<[u8; 16]>, Option<[u8; 32]>);

impl Sink {
    fn start(file: std::fs::File, want: Want) -> Sink {
        // A few chunks in flight keep the network and the disk both busy.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = std::io::BufWriter::with_capacity(256 << 10, file);
            let mut digest = Digester::new(want);
            while let Some(chunk) = rx.blocking_recv() {
                digest.update(&chunk);
                writer.write_all(&chunk)?;
            }
            writer.flush()?;
            Ok(digest.finish())
        });
        Sink { tx, task }
    }

    /// Hands a chunk to the writer; `false` once it has stopped (on an
    /// error, which [`Sink::finish`] returns).
    async fn send(&self, chunk: bytes::Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Waits for every chunk to be written: the size and hashes, or the
    /// write error.
    async fn finish(self) -> std::io::Result<Digests> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| std::io::Error::other(format!("writer task failed: {e}")))?
    }
}

/// Removes the staging file unless it was published.
struct Staging {
    path: PathBuf,
    published: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Fetcher {
    /// Downloads `remote` to `<target>/<rel>`, retrying transient failures
    /// with exponential backoff and jitter.
    pub async fn fetch(&self, remote: &Remote, rel: &Path) -> Result<Fetched, FetchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                _ = self.cancel.cancelled() => Err(FetchError::Cancelled),
                r = self.attempt(remote, rel) => r,
            };
            match result {
                Err(e) if e.retryable() && attempt < self.attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let backoff = backoff(attempt);
                    tracing::debug!(key = %remote.key, attempt, ?backoff, error = %e, "retrying");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(FetchError::Cancelled),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, remote: &Remote, rel: &Path) -> Result<Fetched, FetchError> {
        let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut staging = Staging {
            path: self
                .staging
                .join(format!("{}-{seq}.part", std::process::id())),
            published: false,
        };
        let file = std::fs::File::create(&staging.path)
            .map_err(|e| FetchError::local(&staging.path, e))?;

        let Hashed {
            size,
            md5,
            sha256,
            verified,
            encrypted,
            unwritten,
        } = if remote.size >= self.ranged_threshold {
            self.ranged(remote, &file, &staging.path).await?
        } else {
            self.streamed(remote, &file, &staging.path).await?
        };
        if size != remote.size {
            return Err(FetchError::Verify(format!(
                "got {size} bytes, listing said {}",
                remote.size
            )));
        }
        let verified = match (etag_md5(&remote.etag, encrypted), verified) {
            (Some(expected), _) => {
                // Wanted whenever the ETag is an MD5 (`Want::for_object`).
                let Some(md5) = md5 else {
                    return Err(FetchError::Verify("MD5 was not computed".into()));
                };
                if md5 != expected {
                    return Err(FetchError::Verify(format!(
                        "MD5 {} does not match ETag {}",
                        hex::encode(md5),
                        remote.etag
                    )));
                }
                Verified::Md5
            }
            (None, v) => v,
        };
        // Durable, then visible: fsync the data, then rename. The parent
        // directory's fsync is batched per pass (before the manifest save).
        let dest = self.target.join(rel);
        let staged = staging.path.clone();
        let target = self.target.clone();
        let rel = rel.to_path_buf();
        let mtime_ns = tokio::task::spawn_blocking(move || -> Result<i128, FetchError> {
            if !unwritten.is_empty() {
                (&file)
                    .write_all(&unwritten)
                    .map_err(|e| FetchError::local(&staged, e))?;
            }
            file.sync_all().map_err(|e| FetchError::local(&staged, e))?;
            drop(file);
            ensure_parents(&target, &rel)?;
            std::fs::rename(&staged, &dest).map_err(|e| FetchError::local(&dest, e))?;
            let meta = std::fs::metadata(&dest).map_err(|e| FetchError::local(&dest, e))?;
            Ok(fsio::mtime_ns(&meta))
        })
        .await
        .map_err(|e| FetchError::S3(format!("publish task failed: {e}")))??;
        staging.published = true;
        Ok(Fetched {
            sha256: sha256.map(hex::encode).unwrap_or_default(),
            size,
            mtime_ns,
            verified,
        })
    }

    /// The body's next chunk, once the rate limit allows it.
    async fn next_chunk(
        &self,
        body: &mut aws_sdk_s3::primitives::ByteStream,
    ) -> Result<Option<bytes::Bytes>, FetchError> {
        let chunk = body
            .try_next()
            .await
            .map_err(|e| FetchError::S3(format!("reading body: {}", describe(&e))))?;
        if let (Some(c), Some(l)) = (&chunk, &self.limiter) {
            l.take(c.len() as u64).await;
        }
        Ok(chunk)
    }

    /// One GET, hashed while it streams to the staging file.
    async fn streamed(
        &self,
        remote: &Remote,
        file: &std::fs::File,
        path: &Path,
    ) -> Result<Hashed, FetchError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| FetchError::Cancelled)?;
        let (alg, key, key_md5) = SseCustomerKey::headers(self.sse_customer_key.as_ref());
        let resp = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&remote.key)
            .if_match(format!("\"{}\"", remote.etag))
            .checksum_mode(ChecksumMode::Enabled)
            .set_sse_customer_algorithm(alg)
            .set_sse_customer_key(key)
            .set_sse_customer_key_md5(key_md5)
            .send()
            .await
            .map_err(map_sdk)?;
        let full_sha = full_object_sha256(resp.checksum_sha256());
        let has_crc = crc_covers_object(
            &[
                resp.checksum_crc32(),
                resp.checksum_crc32_c(),
                resp.checksum_crc64_nvme(),
            ],
            resp.checksum_type() == Some(&ChecksumType::Composite),
        );
        let encrypted = etag_opaque(
            resp.server_side_encryption().map(|s| s.as_str()),
            resp.sse_customer_algorithm(),
        );
        let want = Want::for_object(&remote.etag, encrypted, full_sha.is_some());
        let mut body = resp.body;
        if remote.size <= INLINE_MAX {
            let mut buf = Vec::with_capacity(remote.size as usize);
            while let Some(chunk) = self.next_chunk(&mut body).await? {
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > remote.size {
                    return Err(FetchError::Verify(format!(
                        "more than the {} bytes listed",
                        remote.size
                    )));
                }
            }
            let mut digest = Digester::new(want);
            digest.update(&buf);
            let mut h = Hashed::checked(digest.finish(), full_sha, has_crc, encrypted)?;
            h.unwritten = buf;
            return Ok(h);
        }
        let sink = Sink::start(
            file.try_clone().map_err(|e| FetchError::local(path, e))?,
            want,
        );
        while let Some(chunk) = self.next_chunk(&mut body).await? {
            if !sink.send(chunk).await {
                break; // the writer stopped; `finish` says why
            }
        }
        let digests = sink
            .finish()
            .await
            .map_err(|e| FetchError::local(path, e))?;
        Hashed::checked(digests, full_sha, has_crc, encrypted)
    }

    /// Parallel byte ranges written at their offsets, then one read-back pass
    /// to hash the whole file (page cache; cheap beside the network).
    async fn ranged(
        &self,
        remote: &Remote,
        file: &std::fs::File,
        path: &Path,
    ) -> Result<Hashed, FetchError> {
        file.set_len(remote.size)
            .map_err(|e| FetchError::local(path, e))?;
        let file = Arc::new(file.try_clone().map_err(|e| FetchError::local(path, e))?);
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < remote.size {
            let end = (start + self.range_size).min(remote.size) - 1;
            ranges.push((start, end));
            start = end + 1;
        }
        let mut set = tokio::task::JoinSet::new();
        for (start, end) in ranges {
            let client = self.client.clone();
            let bucket = self.bucket.clone();
            let key = remote.key.clone();
            let etag = remote.etag.clone();
            let permits = self.range_permits.clone();
            let limiter = self.limiter.clone();
            let file = file.clone();
            let path = path.to_path_buf();
            let (alg, sse_key, key_md5) = SseCustomerKey::headers(self.sse_customer_key.as_ref());
            set.spawn(async move {
                let _permit = permits.acquire().await.map_err(|_| FetchError::Cancelled)?;
                let resp = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .if_match(format!("\"{etag}\""))
                    .range(format!("bytes={start}-{end}"))
                    .set_sse_customer_algorithm(alg)
                    .set_sse_customer_key(sse_key)
                    .set_sse_customer_key_md5(key_md5)
                    .send()
                    .await
                    .map_err(map_sdk)?;
                let mut body = resp.body;
                let mut offset = start;
                while let Some(chunk) = body
                    .try_next()
                    .await
                    .map_err(|e| FetchError::S3(format!("reading range: {}", describe(&e))))?
                {
                    if offset + chunk.len() as u64 > end + 1 {
                        return Err(FetchError::Verify("range answer longer than asked".into()));
                    }
                    if let Some(l) = &limiter {
                        l.take(chunk.len() as u64).await;
                    }
                    // On the blocking pool: a write can stall on the disk.
                    let (f, len) = (file.clone(), chunk.len() as u64);
                    tokio::task::spawn_blocking(move || f.write_all_at(&chunk, offset))
                        .await
                        .map_err(|e| FetchError::S3(format!("write task failed: {e}")))?
                        .map_err(|e| FetchError::local(&path, e))?;
                    offset += len;
                }
                if offset != end + 1 {
                    return Err(FetchError::Verify(format!(
                        "range {start}-{end} ended at {offset}"
                    )));
                }
                Ok::<(), FetchError>(())
            });
        }
        while let Some(joined) = set.join_next().await {
            joined.map_err(|e| FetchError::S3(format!("range task failed: {e}")))??;
        }

        // Whole-object checksum, if the object has one (ranges do not carry it).
        let (alg, key, key_md5) = SseCustomerKey::headers(self.sse_customer_key.as_ref());
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&remote.key)
            .if_match(format!("\"{}\"", remote.etag))
            .checksum_mode(ChecksumMode::Enabled)
            .set_sse_customer_algorithm(alg)
            .set_sse_customer_key(key)
            .set_sse_customer_key_md5(key_md5)
            .send()
            .await
            .map_err(map_sdk)?;
        let full_sha = full_object_sha256(head.checksum_sha256());
        let encrypted = etag_opaque(
            head.server_side_encryption().map(|s| s.as_str()),
            head.sse_customer_algorithm(),
        );
        // The read-back pass runs only when a digest will be checked: a
        // multipart object without a full-object checksum is verified by
        // each range's length and the total size, and is not read again.
        let want = Want::for_object(&remote.etag, encrypted, full_sha.is_some());
        let digests = if want.any() {
            let hashed_path = path.to_path_buf();
            tokio::task::spawn_blocking(move || hash_file(&hashed_path, want))
                .await
                .map_err(|e| FetchError::S3(format!("hash task failed: {e}")))?
                .map_err(|e| FetchError::local(path, e))?
        } else {
            // Every range arrived whole (checked above) into a file of
            // exactly the listed size.
            (remote.size, None, None)
        };
        // CRCs are not re-checked for ranged downloads; the ETag (MD5) or
        // SHA-256 covers single-part objects, size covers the rest.
        Hashed::checked(digests, full_sha, false, encrypted)
    }
}

/// A full-object SHA-256 (base64, no `-N` composite suffix), decoded.
fn full_object_sha256(checksum: Option<&str>) -> Option<Vec<u8>> {
    let c = checksum?;
    if c.contains('-') {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(c).ok()
}

fn check_sha(
    expected: Option<Vec<u8>>,
    got: Option<&[u8; 32]>,
    has_crc: bool,
) -> Result<Verified, FetchError> {
    match (expected, got) {
        (Some(e), Some(got)) if e.as_slice() == got => Ok(Verified::Sha256),
        (Some(e), Some(got)) => Err(FetchError::Verify(format!(
            "SHA-256 {} does not match the object's checksum {}",
            hex::encode(got),
            hex::encode(e)
        ))),
        // Wanted whenever there is a checksum (`Want::for_object`).
        (Some(_), None) => Err(FetchError::Verify("SHA-256 was not computed".into())),
        (None, _) if has_crc => Ok(Verified::Crc),
        (None, _) => Ok(Verified::SizeOnly),
    }
}

/// The wanted digests of a file, and its length.
pub fn hash_file(path: &Path, want: Want) -> std::io::Result<Digests> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut digest = Digester::new(want);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(digest.finish())
}

/// Creates the directories leading to `rel` under `target`, refusing to pass
/// through anything that is not a real directory (a symlink planted in the
/// cache must not redirect a write outside it).
fn ensure_parents(target: &Path, rel: &Path) -> Result<(), FetchError> {
    let mut dir = target.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(FetchError::local(
                    &dir,
                    std::io::Error::other("exists and is not a directory; not writing through it"),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                // Another download created it a moment ago: fine if it is
                // a real directory (checked again, not assumed).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let is_dir = std::fs::symlink_metadata(&dir)
                        .map(|m| m.is_dir())
                        .unwrap_or(false);
                    if !is_dir {
                        return Err(FetchError::local(&dir, e));
                    }
                }
                Err(e) => return Err(FetchError::local(&dir, e)),
            },
            Err(e) => return Err(FetchError::local(&dir, e)),
        }
    }
    Ok(())
}

fn map_sdk<E, R>(e: SdkError<E, R>) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus + Send + Sync + 'static,
{
    if let SdkError::ServiceError(se) = &e {
        match se.raw().status() {
            412 => return FetchError::Changed,
            404 => return FetchError::Gone,
            _ => {}
        }
    }
    FetchError::S3(describe(&e))
}

/// The HTTP status of a raw SDK response.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// 200 ms, 400 ms, … up to 10 s, each with up to 50% random jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(6)).min(10_000);
    let jitter = crate::random_u64() % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many downloads creating the same new directories at once: the losers
    /// of each `mkdir` race must carry on, not fail with EEXIST.
    #[test]
    fn concurrent_parent_creation() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().to_path_buf();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let target = target.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        ensure_parents(&target, Path::new(&format!("a/b/c/d/{i}.png")))
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }

    /// The multipart integration test cannot corrupt bytes in flight; the
    /// decisions themselves are checked here.
    #[test]
    fn verification_decisions() {
        use sha2::Digest;
        let body = b"asset bytes";
        let sha: [u8; 32] = Sha256::digest(body).into();
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
        // A matching full-object SHA-256 verifies; a different one is refused.
        assert_eq!(
            check_sha(full_object_sha256(Some(&b64)), Some(&sha), false).unwrap(),
            Verified::Sha256
        );
        let other: [u8; 32] = Sha256::digest(b"tampered").into();
        assert!(matches!(
            check_sha(full_object_sha256(Some(&b64)), Some(&other), false),
            Err(FetchError::Verify(_))
        ));
        // Composite (multipart) checksums are not whole-object ones.
        assert!(full_object_sha256(Some(&format!("{b64}-3"))).is_none());
        assert_eq!(check_sha(None, Some(&sha), true).unwrap(), Verified::Crc);
        assert_eq!(
            check_sha(None, Some(&sha), false).unwrap(),
            Verified::SizeOnly
        );
        assert_eq!(check_sha(None, None, false).unwrap(), Verified::SizeOnly);
        // A checksum the download did not hash for is a failure, not a pass.
        assert!(matches!(
            check_sha(full_object_sha256(Some(&b64)), None, false),
            Err(FetchError::Verify(_))
        ));
        // What is hashed follows what will be checked.
        let etag = hex::encode(<[u8; 16]>::from(Md5::digest(body)));
        assert_eq!(
            Want::for_object(&etag, false, false),
            Want {
                md5: true,
                sha256: false
            }
        );
        assert_eq!(
            Want::for_object(&etag, true, true),
            Want {
                md5: false,
                sha256: true
            }
        );
        assert!(!Want::for_object("d41d8cd98f00b204e9800998ecf8427e-2", false, false).any());
        // Only a 32-hex ETag is an MD5.
        let md5: [u8; 16] = Md5::digest(body).into();
        assert_eq!(crate::s3::plain_md5(&hex::encode(md5)), Some(md5));
        assert_eq!(
            crate::s3::plain_md5("d41d8cd98f00b204e9800998ecf8427e-2"),
            None
        );
    }

    /// Server-side encryption with KMS or a customer key makes the ETag
    /// opaque even when it is 32 hex digits: taken for an MD5, every
    /// download of such an object failed verification five times.
    #[test]
    fn encrypted_objects_are_not_checked_against_their_etag() {
        let md5: [u8; 16] = Md5::digest(b"asset bytes").into();
        let etag = hex::encode(md5);
        assert_eq!(etag_md5(&etag, etag_opaque(None, None)), Some(md5));
        // SSE-S3 keeps the MD5.
        assert_eq!(
            etag_md5(&etag, etag_opaque(Some("AES256"), None)),
            Some(md5)
        );
        for (sse, customer) in [
            (Some("aws:kms"), None),
            (Some("aws:kms:dsse"), None),
            (None, Some("AES256")),
            (Some("AES256"), Some("AES256")),
        ] {
            assert!(etag_opaque(sse, customer), "{sse:?} {customer:?}");
            assert_eq!(etag_md5(&etag, etag_opaque(sse, customer)), None);
        }
        // Multipart ETags were never MD5s.
        assert_eq!(etag_md5(&format!("{etag}-2"), false), None);
    }

    #[test]
    fn composite_crcs_are_size_only() {
        assert!(crc_covers_object(&[Some("AAAAAA=="), None, None], false));
        assert!(crc_covers_object(
            &[None, None, Some("AAAAAAAAAAA=")],
            false
        ));
        // `…-N`: a checksum of the parts' checksums.
        assert!(!crc_covers_object(&[Some("AAAAAA==-3"), None, None], false));
        // Declared composite by x-amz-checksum-type.
        assert!(!crc_covers_object(&[Some("AAAAAA=="), None, None], true));
        assert!(!crc_covers_object(&[None, None, None], false));
        assert_eq!(
            check_sha(None, None, crc_covers_object(&[Some("AAAAAA==-3")], false)).unwrap(),
            Verified::SizeOnly
        );
    }

    #[test]
    fn parents_never_pass_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("img")).unwrap();
        assert!(ensure_parents(dir.path(), Path::new("img/x/a.png")).is_err());
        assert!(!outside.path().join("x").exists());
    }
}

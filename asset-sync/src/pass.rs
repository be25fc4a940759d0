//! One sync pass: list, plan, download what differs, delete what is gone
//! (guarded), save the manifest.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::download::{hash_file, FetchError, Fetcher, Verified, Want};
use crate::fsio;
use crate::keys::{self, Rejection};
use crate::limiter::RateLimiter;
use crate::manifest::{self, Entry, Manifest};
use crate::s3::{self, plain_md5, Remote};

/// At most this many error lines are kept in a report.
const MAX_ERRORS: usize = 20;

/// What one pass did: the HTTP contract's type, which `POST /sync`,
/// `GET /status` and `--once` serve as they are.
pub use aurora_api::assets::PassReport;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    List(#[from] s3::ListError),
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PassOptions {
    /// Delete even when the deletion guard would hold back.
    pub force_delete: bool,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub planned: AtomicU64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
}

/// What stays the same from pass to pass.
pub struct Syncer {
    pub config: Config,
    /// The origins in the order they are tried (endpoint, client).
    pub origins: Vec<(String, aws_sdk_s3::Client)>,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    limiter: Option<Arc<RateLimiter>>,
    /// `s3.sse_customer_key`, decoded (validated with the config).
    sse_customer_key: Option<s3::SseCustomerKey>,
}

fn globs(patterns: &[String]) -> Option<GlobSet> {
    if patterns.is_empty() {
        return None;
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // Validated with the config.
        if let Ok(g) = Glob::new(p) {
            b.add(g);
        }
    }
    b.build().ok()
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PassError {
    let context = context.into();
    move |source| PassError::Local { context, source }
}

impl Syncer {
    pub async fn new(mut config: Config) -> Self {
        // A prefix is a directory: `img` means `img/`, never `img2/…`.
        if !config.s3.prefix.is_empty() && !config.s3.prefix.ends_with('/') {
            config.s3.prefix.push('/');
        }
        let origins = s3::origins(&config.s3).await;
        let limiter = (config.sync.bandwidth_limit_bytes > 0)
            .then(|| Arc::new(RateLimiter::new(config.sync.bandwidth_limit_bytes)));
        let sse_customer_key = config
            .s3
            .sse_customer_key
            .as_ref()
            .and_then(|k| s3::SseCustomerKey::parse(k.expose()).ok());
        Self {
            sse_customer_key,
            include: globs(&config.sync.include),
            exclude: globs(&config.sync.exclude),
            limiter,
            origins,
            config,
        }
    }

    /// Lists the bucket from the first origin that answers. A pass then
    /// downloads from that same origin, so what it publishes matches what it
    /// listed. Only when every origin fails is the pass an error (the last
    /// origin's, naming the others').
    async fn list_from_first_origin(
        &self,
    ) -> Result<(&str, &aws_sdk_s3::Client, Vec<Remote>), PassError> {
        let mut failures: Vec<String> = vec![];
        let mut last = None;
        for (endpoint, client) in &self.origins {
            match s3::list_all(client, endpoint, &self.config.s3).await {
                Ok(listing) => {
                    if !failures.is_empty() {
                        tracing::warn!(origin = %endpoint, skipped = ?failures, "listing from a fallback origin");
                    }
                    return Ok((endpoint, client, listing));
                }
                Err(e) => {
                    failures.push(e.to_string());
                    last = Some(e);
                }
            }
        }
        match last {
            Some(mut e) => {
                if failures.len() > 1 {
                    e.reason = format!(
                        "{} (every origin failed: {})",
                        e.reason,
                        failures[..failures.len() - 1].join("; ")
                    );
                }
                Err(e.into())
            }
            None => Err(PassError::Local {
                context: "no S3 origin configured".into(),
                source: std::io::Error::other("s3.endpoint"),
            }),
        }
    }

    /// Runs one pass. A listing failure is an `Err` and changes nothing
    /// locally; per-object failures are counted in the report.
    pub async fn pass(
        &self,
        opts: PassOptions,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<PassReport, PassError> {
        let started = Instant::now();
        let sync = &self.config.sync;
        let target = sync.target_dir.clone();
        let state = sync.state_dir();
        let staging = state.join("staging");
        std::fs::create_dir_all(&staging)
            .map_err(io_err(format!("creating {}", staging.display())))?;
        std::fs::create_dir_all(&target)
            .map_err(io_err(format!("creating {}", target.display())))?;
        clean_staging(&staging).map_err(io_err("cleaning staging leftovers"))?;

        let mut manifest = Manifest::load(&state);
        let (origin, client, listing) = self.list_from_first_origin().await?;
        let listed_at = chrono::Utc::now();
        manifest.listed_at = Some(listed_at);
        let mut report = PassReport {
            listed: listing.len() as u64,
            listed_at: Some(listed_at),
            origin: origin.to_string(),
            ..Default::default()
        };

        let (wanted, keep) = self.plan(&listing, &mut report);
        // Before the downloads, so that a file never blocks a directory a
        // new key needs.
        let mut touched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
        if sync.delete && !cancel.is_cancelled() {
            self.delete_gone(
                &keep,
                listing.is_empty(),
                opts,
                &mut manifest,
                &mut report,
                &mut touched_dirs,
            );
        }
        let (mut to_fetch, to_verify) = diff(wanted, &manifest, &target, &mut report);
        to_fetch.extend(
            adopt(
                to_verify,
                &target,
                sync.concurrency,
                &mut manifest,
                &mut report,
            )
            .await,
        );
        let fetcher = Fetcher {
            client: client.clone(),
            bucket: self.config.s3.bucket.clone(),
            target: target.clone(),
            staging: staging.clone(),
            permits: Arc::new(Semaphore::new(sync.concurrency)),
            range_permits: Arc::new(Semaphore::new(sync.range_concurrency)),
            limiter: self.limiter.clone(),
            ranged_threshold: sync.ranged_threshold_bytes,
            range_size: sync.range_size_bytes,
            attempts: sync.attempts,
            cancel: cancel.clone(),
            retries: AtomicU64::new(0),
            sse_customer_key: self.sse_customer_key.clone(),
        };
        download(
            &fetcher,
            to_fetch,
            sync.concurrency,
            progress,
            &mut manifest,
            &mut report,
            &mut touched_dirs,
        )
        .await;
        make_durable(&touched_dirs, &target);
        manifest.save(&state).map_err(io_err(format!(
            "saving the manifest in {}",
            state.display()
        )))?;

        report.local_files = manifest.entries.len() as u64;
        report.local_bytes = manifest.entries.values().map(|e| e.size).sum();
        report.ok = report.failed == 0 && report.deletion_guard.is_none();
        report.duration_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl Syncer {
    /// Deletes one mirrored file and its manifest entry (kept when the file
    /// cannot be deleted, so the next pass tries again).
    fn delete_local(
        &self,
        target: &Path,
        rel: &str,
        manifest: &mut Manifest,
        report: &mut PassReport,
        touched_dirs: &mut BTreeSet<PathBuf>,
    ) {
        let Ok(path) = keys::relative_path(rel) else {
            manifest.entries.remove(rel);
            return;
        };
        let local = target.join(&path);
        // Never through a symlink or file planted where a directory was: the
        // unlink would land outside the target.
        let mut dir = target.to_path_buf();
        for c in path.parent().into_iter().flat_map(Path::components) {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                _ => {
                    report.failed += 1;
                    report.errors.push(format!(
                        "not deleting {}: {} is not a real directory",
                        local.display(),
                        dir.display()
                    ));
                    return;
                }
            }
        }
        match std::fs::remove_file(&local) {
            Ok(()) => report.deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                report.failed += 1;
                report
                    .errors
                    .push(format!("deleting {}: {e}", local.display()));
                return;
            }
        }
        manifest.entries.remove(rel);
        remove_empty_parents(target, &local, touched_dirs);
    }
}

/// A listed key to mirror: the object, its key relative to the prefix,
/// its path under the target.
type Wanted = (Remote, String, PathBuf);

impl Syncer {
    /// Safe keys only, filters applied, conflicts resolved: what to mirror,
    /// and every listed key whose local file, if mirrored before, stays
    /// (every key but a rejected one; a filtered key is left alone, as it
    /// was). No I/O.
    fn plan<'l>(
        &self,
        listing: &'l [Remote],
        report: &mut PassReport,
    ) -> (Vec<Wanted>, HashSet<&'l str>) {
        let prefix = &self.config.s3.prefix;
        let mut candidates: Vec<(&Remote, &str, PathBuf)> = Vec::new();
        let mut keep: HashSet<&str> = HashSet::new();
        for remote in listing {
            let rel = remote
                .key
                .strip_prefix(prefix.as_str())
                .unwrap_or(&remote.key);
            match keys::relative_path(rel) {
                Ok(path) => {
                    keep.insert(rel);
                    let included = self.include.as_ref().is_none_or(|g| g.is_match(rel));
                    let excluded = self.exclude.as_ref().is_some_and(|g| g.is_match(rel));
                    if included && !excluded {
                        candidates.push((remote, rel, path));
                    } else {
                        report.filtered += 1;
                    }
                }
                Err(rule) => reject(report, &remote.key, rule),
            }
        }
        // A key that is also the directory of a mirrored key: the directory
        // wins; the file is rejected and a stale copy of it deleted. Only
        // keys that would be mirrored count, so a hostile or filtered key
        // never freezes a good one.
        let conflicts = keys::file_prefix_conflicts(candidates.iter().map(|(_, k, _)| *k));
        let mut wanted = Vec::new();
        for (remote, rel, path) in candidates {
            if conflicts.contains(rel) {
                keep.remove(rel);
                reject(report, &remote.key, Rejection::FileAndPrefix);
            } else {
                wanted.push((remote.clone(), rel.to_string(), path));
            }
        }
        (wanted, keep)
    }

    /// Deletes what the bucket no longer has (or what a directory now
    /// displaces): only after a complete listing, only within the guard,
    /// which compares with what was mirrored before this pass.
    fn delete_gone(
        &self,
        keep: &HashSet<&str>,
        listing_empty: bool,
        opts: PassOptions,
        manifest: &mut Manifest,
        report: &mut PassReport,
        touched_dirs: &mut BTreeSet<PathBuf>,
    ) {
        let sync = &self.config.sync;
        let gone: Vec<String> = manifest
            .entries
            .keys()
            .filter(|k| !keep.contains(k.as_str()))
            .cloned()
            .collect();
        match deletion_guard(
            gone.len(),
            manifest.entries.len(),
            listing_empty,
            sync.max_delete_percent,
        ) {
            Some(reason) if !opts.force_delete => {
                tracing::warn!("{reason}");
                report.deletion_guard = Some(reason);
            }
            _ => {
                for rel in gone {
                    self.delete_local(&sync.target_dir, &rel, manifest, report, touched_dirs);
                }
            }
        }
    }
}

/// What differs from the manifest (or from the disk, if tampered): to
/// download, and to check first (same size, and an MD5 to check against).
fn diff(
    wanted: Vec<Wanted>,
    manifest: &Manifest,
    target: &Path,
    report: &mut PassReport,
) -> (Vec<Wanted>, Vec<Wanted>) {
    let mut to_fetch = Vec::new();
    let mut to_verify = Vec::new();
    for (remote, rel, path) in wanted {
        let local = target.join(&path);
        match manifest.entries.get(&rel) {
            Some(e)
                if e.etag == remote.etag
                    && e.size == remote.size
                    && manifest::local_matches(e, &local) =>
            {
                report.unchanged += 1;
            }
            _ => {
                let same_size = std::fs::symlink_metadata(&local)
                    .map(|m| m.is_file() && m.len() == remote.size)
                    .unwrap_or(false);
                if same_size && plain_md5(&remote.etag).is_some() {
                    to_verify.push((remote, rel, path));
                } else {
                    to_fetch.push((remote, rel, path));
                }
            }
        }
    }
    (to_fetch, to_verify)
}

/// A file already present with the right MD5 (lost manifest, or a cache
/// seeded by hand) is adopted, not downloaded again; the rest is returned
/// to download.
async fn adopt(
    to_verify: Vec<Wanted>,
    target: &Path,
    concurrency: usize,
    manifest: &mut Manifest,
    report: &mut PassReport,
) -> Vec<Wanted> {
    let verified: Vec<_> = futures::stream::iter(to_verify)
        .map(|(remote, rel, path)| {
            let local = target.join(&path);
            async move {
                let hashed = tokio::task::spawn_blocking(move || {
                    let h = hash_file(
                        &local,
                        Want {
                            md5: true,
                            sha256: false,
                        },
                    );
                    let meta = std::fs::metadata(&local).map(|m| fsio::mtime_ns(&m));
                    (h, meta)
                })
                .await;
                (remote, rel, path, hashed)
            }
        })
        .buffer_unordered(concurrency.min(8))
        .collect()
        .await;
    let mut to_fetch = Vec::new();
    for (remote, rel, path, hashed) in verified {
        match hashed {
            Ok((Ok((size, Some(md5), _)), Ok(mtime_ns)))
                if Some(md5) == plain_md5(&remote.etag) && size == remote.size =>
            {
                report.adopted += 1;
                manifest.entries.insert(
                    rel,
                    Entry {
                        etag: remote.etag.clone(),
                        size,
                        last_modified: remote.last_modified.clone(),
                        sha256: String::new(),
                        mtime_ns,
                        verified: Some(Verified::Md5),
                    },
                );
            }
            _ => to_fetch.push((remote, rel, path)),
        }
    }
    to_fetch
}

/// Downloads `to_fetch`, `concurrency` objects at a time, recording each
/// in the manifest and the report as it lands.
async fn download(
    fetcher: &Fetcher,
    to_fetch: Vec<Wanted>,
    concurrency: usize,
    progress: &Progress,
    manifest: &mut Manifest,
    report: &mut PassReport,
    touched_dirs: &mut BTreeSet<PathBuf>,
) {
    let target = &fetcher.target;
    progress
        .planned
        .store(to_fetch.len() as u64, Ordering::Relaxed);
    let mut results = futures::stream::iter(to_fetch)
        .map(|(remote, rel, path)| async move {
            let r = fetcher.fetch(&remote, &path).await;
            (remote, rel, path, r)
        })
        // Ranged downloads take several permits' worth of requests; the
        // semaphore bounds requests, this bounds objects in flight.
        .buffer_unordered(concurrency);
    let mut disk_full = false;
    while let Some((remote, rel, path, result)) = results.next().await {
        progress.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(fetched) => {
                progress.bytes.fetch_add(fetched.size, Ordering::Relaxed);
                report.downloaded += 1;
                report.bytes_downloaded += fetched.size;
                if fetched.verified == Verified::SizeOnly {
                    report.verified_size_only += 1;
                }
                *report
                    .verified_by
                    .entry(fetched.verified.label().to_string())
                    .or_default() += 1;
                // The file's directory and every directory above it up to
                // the target: a directory created for this file is itself a
                // new entry in its parent.
                let mut dir = target.join(&path);
                while dir.pop() && dir.starts_with(target) {
                    if !touched_dirs.insert(dir.clone()) {
                        break;
                    }
                }
                manifest.entries.insert(
                    rel,
                    Entry {
                        etag: remote.etag.clone(),
                        size: fetched.size,
                        last_modified: remote.last_modified.clone(),
                        sha256: fetched.sha256,
                        mtime_ns: fetched.mtime_ns,
                        verified: Some(fetched.verified),
                    },
                );
            }
            Err(FetchError::Changed) => report.changed_during_pass += 1,
            Err(FetchError::Gone) => report.changed_during_pass += 1,
            Err(FetchError::Cancelled) => report.failed += 1,
            Err(e) => {
                disk_full |= e.is_disk_full();
                report.failed += 1;
                if report.errors.len() < MAX_ERRORS {
                    report.errors.push(format!("{}: {e}", remote.key));
                }
                tracing::warn!(key = ?remote.key, error = %e, "download failed");
            }
        }
    }
    drop(results);
    report.retries = fetcher.retries.load(Ordering::Relaxed);
    if disk_full {
        report
            .errors
            .insert(0, "the target filesystem is full".into());
    }
}

/// Makes the renames and unlinks durable before the manifest says so.
fn make_durable(touched_dirs: &BTreeSet<PathBuf>, target: &Path) {
    for dir in touched_dirs {
        if let Err(e) = fsio::sync_dir(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "fsync failed");
            }
        }
    }
    if let Some(parent) = target.parent() {
        let _ = fsio::sync_dir(parent);
    }
}

/// Counts a key not mirrored because it is unsafe, by rule.
fn reject(report: &mut PassReport, key: &str, rule: Rejection) {
    if rule != Rejection::DirectoryMarker {
        tracing::warn!(key = ?key, rule = rule.as_str(), "unsafe key skipped");
    }
    report.rejected += 1;
    *report
        .rejections
        .entry(rule.as_str().to_string())
        .or_default() += 1;
}

/// Why deleting `gone` of the `published` files mirrored before this pass
/// is refused, if it is: an empty listing never empties the mirror, and no
/// pass deletes more than `max_percent` of what was published. Downloads
/// of this pass do not count: replacing every key is 100 %, not 50 %.
pub fn deletion_guard(
    gone: usize,
    published: usize,
    listing_empty: bool,
    max_percent: u8,
) -> Option<String> {
    if gone == 0 {
        None
    } else if listing_empty {
        Some(format!(
            "the listing came back empty while {published} files are mirrored; deleting nothing"
        ))
    } else if gone * 100 > published * usize::from(max_percent) {
        Some(format!(
            "{gone} of {published} mirrored files would be deleted, over max_delete_percent = {max_percent}; deleting nothing"
        ))
    } else {
        None
    }
}

/// Removes staging files left by a killed process.
fn clean_staging(staging: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(staging)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// After a delete, removes directories it left empty, up to the target.
fn remove_empty_parents(target: &Path, file: &Path, touched: &mut BTreeSet<PathBuf>) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == target || !d.starts_with(target) {
            touched.insert(d.to_path_buf());
            break;
        }
        if std::fs::remove_dir(d).is_err() {
            touched.insert(d.to_path_buf());
            break;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::deletion_guard;

    #[test]
    fn the_guard_compares_with_what_was_published_before() {
        assert_eq!(deletion_guard(0, 0, true, 50), None);
        assert_eq!(deletion_guard(5, 10, false, 50), None);
        let r = deletion_guard(6, 10, false, 50).unwrap();
        assert!(r.starts_with("6 of 10 mirrored files"), "{r}");
        assert!(deletion_guard(1, 10, true, 100).unwrap().contains("empty"));
        assert!(deletion_guard(40, 40, false, 50).is_some());
        assert_eq!(deletion_guard(40, 40, false, 100), None);
    }
}

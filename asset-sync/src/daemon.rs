//! `asset-sync run`: periodic passes, `POST /sync`, health and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_api::assets::{self as wire, AssetStatus, PassOutcome, SyncTriggered};
use hyper::{Method, StatusCode};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminResponse, Routed};
use sidecar_kit::{HealthReport, HealthStatus, Lifecycle, Metrics};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::keys::Rejection;
use crate::pass::{PassOptions, PassReport, Progress, Syncer};

/// How long `POST /sync` waits for its pass before answering 202.
const SYNC_WAIT: Duration = Duration::from_secs(600);

pub struct SyncMetrics {
    passes: IntCounterVec,
    downloaded: IntCounter,
    bytes: IntCounter,
    deleted: IntCounter,
    unchanged: IntCounter,
    rejected: IntCounterVec,
    failures: IntCounter,
    retries: IntCounter,
    size_only: IntCounter,
    verified_by: IntCounterVec,
    last_success: prometheus::Gauge,
    duration: Histogram,
    local_files: IntGauge,
    local_bytes: IntGauge,
}

impl SyncMetrics {
    pub fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        let rejected = m.counter_vec(
            "keys_rejected_total",
            "Object keys not mirrored because they are unsafe, by rule.",
            &["rule"],
        )?;
        for r in Rejection::ALL {
            rejected.with_label_values(&[r.as_str()]);
        }
        let passes = m.counter_vec("passes_total", "Sync passes by outcome.", &["outcome"])?;
        for o in ["success", "partial", "failed"] {
            passes.with_label_values(&[o]);
        }
        Ok(Self {
            passes,
            downloaded: m.counter(
                "objects_downloaded_total",
                "Objects downloaded and published.",
            )?,
            bytes: m.counter("downloaded_bytes_total", "Bytes downloaded and published.")?,
            deleted: m.counter(
                "objects_deleted_total",
                "Local files deleted because their objects are gone.",
            )?,
            unchanged: m.counter(
                "objects_skipped_total",
                "Objects skipped because the local copy is current.",
            )?,
            rejected,
            failures: m.counter(
                "download_failures_total",
                "Objects that failed every attempt in a pass.",
            )?,
            retries: m.counter("download_retries_total", "Download attempts retried.")?,
            size_only: m.counter(
                "objects_verified_size_only_total",
                "Downloads verified by size only (no usable checksum: multipart without one, a composite CRC, an encrypted object's opaque ETag).",
            )?,
            verified_by: m.counter_vec(
                "objects_verified_total",
                "Downloads by how they were verified: md5 (ETag), sha256, crc, size_only.",
                &["by"],
            )?,
            last_success: m.float_gauge(
                "last_success_timestamp_seconds",
                "Unix time of the last successful pass.",
            )?,
            duration: m.histogram(
                "pass_duration_seconds",
                "Duration of sync passes.",
                vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0],
            )?,
            local_files: m.gauge("local_files", "Files in the local mirror.")?,
            local_bytes: m.gauge("local_bytes", "Bytes in the local mirror.")?,
        })
    }

    fn record(&self, r: &PassReport) {
        self.passes
            .with_label_values(&[if r.ok { "success" } else { "partial" }])
            .inc();
        self.downloaded.inc_by(r.downloaded);
        self.bytes.inc_by(r.bytes_downloaded);
        self.deleted.inc_by(r.deleted);
        self.unchanged.inc_by(r.unchanged + r.adopted);
        self.failures.inc_by(r.failed);
        self.retries.inc_by(r.retries);
        self.size_only.inc_by(r.verified_size_only);
        for (by, n) in &r.verified_by {
            self.verified_by.with_label_values(&[by]).inc_by(*n);
        }
        for (rule, n) in &r.rejections {
            self.rejected.with_label_values(&[rule]).inc_by(*n);
        }
        self.duration.observe(r.duration_secs);
        self.local_files.set(r.local_files as i64);
        self.local_bytes.set(r.local_bytes as i64);
        if r.ok {
            self.last_success.set(sidecar_kit::telemetry::unix_now());
        }
    }
}

/// The result of a pass.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seq: u64,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub report: Option<PassReport>,
    pub error: Option<String>,
}

impl Outcome {
    /// As the admin API serves it.
    pub fn wire(&self) -> PassOutcome {
        PassOutcome {
            seq: self.seq,
            finished_at: Some(self.finished_at),
            report: self.report.clone(),
            error: self.error.clone(),
        }
    }
}

pub struct Daemon {
    config: Config,
    started: AtomicU64,
    trigger: Notify,
    completed: watch::Sender<Option<Outcome>>,
    last_success: Mutex<Option<Instant>>,
    /// When the bucket was last listed completely, by this run or (from the
    /// manifest) an earlier one: the age of what is served.
    mirror_listed_at: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    progress: Progress,
}

impl Daemon {
    fn last(&self) -> Option<Outcome> {
        self.completed.borrow().clone()
    }
}

impl AdminApi for Daemon {
    fn health(&self) -> HealthReport {
        let age = self
            .last_success
            .lock()
            .ok()
            .and_then(|g| g.map(|t| t.elapsed().as_secs()));
        let mut h = HealthReport::ok().detail("last_success_age_secs", age);
        match self.last() {
            Some(Outcome { error: Some(e), .. }) => h.problem(
                HealthStatus::Degraded,
                format!("last pass failed: {e}; serving the cache as of the last success"),
            ),
            Some(Outcome {
                report: Some(r), ..
            }) if !r.ok => {
                if let Some(g) = &r.deletion_guard {
                    h.problem(HealthStatus::Degraded, g.clone());
                }
                if r.failed > 0 {
                    h.problem(
                        HealthStatus::Degraded,
                        format!("{} objects failed in the last pass", r.failed),
                    );
                }
            }
            _ => {}
        }
        h
    }

    fn status(&self) -> serde_json::Value {
        let last = self.last();
        let status = AssetStatus {
            bucket: self.config.s3.bucket.clone(),
            prefix: self.config.s3.prefix.clone(),
            target_dir: self.config.sync.target_dir.display().to_string(),
            interval_secs: self.config.sync.interval_secs,
            running_pass: self.started.load(Ordering::SeqCst)
                > last.as_ref().map(|o| o.seq).unwrap_or(0),
            progress: wire::Progress {
                planned: self.progress.planned.load(Ordering::Relaxed),
                done: self.progress.done.load(Ordering::Relaxed),
                bytes: self.progress.bytes.load(Ordering::Relaxed),
            },
            last_pass: last.as_ref().map(Outcome::wire),
            mirror_listed_at: self.mirror_listed_at.lock().ok().and_then(|g| *g),
        };
        serde_json::to_value(status).unwrap_or_default()
    }

    async fn handle(&self, req: AdminRequest) -> Routed {
        if req.path != "/sync" {
            return Routed::NotFound;
        }
        if req.method != Method::POST {
            return Routed::MethodNotAllowed("POST");
        }
        let wait = !matches!(req.query("wait"), Some("false") | Some("0"));
        let before = self.started.load(Ordering::SeqCst);
        let mut rx = self.completed.subscribe();
        self.trigger.notify_one();
        if !wait {
            let accepted = SyncTriggered {
                triggered: true,
                note: None,
            };
            return AdminResponse::json(StatusCode::ACCEPTED, &accepted).into();
        }
        // Wait for a pass that *started* after this request.
        let waited = tokio::time::timeout(SYNC_WAIT, async {
            loop {
                if let Some(o) = rx.borrow_and_update().clone() {
                    if o.seq > before {
                        return Some(o);
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(o)) if o.error.is_none() && o.report.as_ref().is_some_and(|r| r.ok) => {
                AdminResponse::ok(&o.wire()).into()
            }
            Ok(Some(o)) => AdminResponse::json(StatusCode::BAD_GATEWAY, &o.wire()).into(),
            Ok(None) => {
                AdminResponse::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into()
            }
            Err(_) => AdminResponse::json(
                StatusCode::ACCEPTED,
                &SyncTriggered {
                    triggered: true,
                    note: Some("pass still running; see GET /status".into()),
                },
            )
            .into(),
        }
    }
}

/// Runs the daemon until `lifecycle` shuts down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    let metrics = Metrics::new("asset-sync")?;
    let sync_metrics = SyncMetrics::new(&metrics)?;
    let syncer = Syncer::new(config.clone()).await;
    let daemon = Arc::new(Daemon {
        config: config.clone(),
        started: AtomicU64::new(0),
        trigger: Notify::new(),
        completed: watch::channel(None).0,
        last_success: Mutex::new(None),
        mirror_listed_at: Mutex::new(None),
        progress: Progress::default(),
    });
    // Works offline: a mirror an earlier run listed completely is served at
    // once, before (and whether or not) the first pass reaches S3.
    let earlier = crate::manifest::Manifest::load(&config.sync.state_dir()).listed_at;
    if let Some(at) = earlier {
        tracing::info!(listed_at = %at, "serving the mirror an earlier run listed until a pass succeeds");
        if let Ok(mut g) = daemon.mirror_listed_at.lock() {
            *g = Some(at);
        }
        lifecycle.set_ready(true);
    }
    let work = {
        let daemon = daemon.clone();
        let lifecycle = lifecycle.clone();
        let config = config.clone();
        async move {
            let mut failures = 0u32;
            loop {
                let seq = daemon.started.fetch_add(1, Ordering::SeqCst) + 1;
                let token = lifecycle.token();
                let result = syncer
                    .pass(PassOptions::default(), &token, &daemon.progress)
                    .await;
                let outcome = match result {
                    Ok(report) => {
                        sync_metrics.record(&report);
                        tracing::info!(
                            downloaded = report.downloaded,
                            deleted = report.deleted,
                            unchanged = report.unchanged,
                            failed = report.failed,
                            secs = report.duration_secs,
                            "pass done"
                        );
                        if report.ok {
                            if let Ok(mut g) = daemon.last_success.lock() {
                                *g = Some(Instant::now());
                            }
                        }
                        // The cache is complete enough to serve once a listing
                        // succeeded; per-object failures are retried next pass.
                        if let Ok(mut g) = daemon.mirror_listed_at.lock() {
                            *g = report.listed_at;
                        }
                        lifecycle.set_ready(true);
                        failures = if report.ok { 0 } else { failures + 1 };
                        Outcome {
                            seq,
                            finished_at: chrono::Utc::now(),
                            report: Some(report),
                            error: None,
                        }
                    }
                    Err(e) => {
                        sync_metrics.passes.with_label_values(&["failed"]).inc();
                        tracing::warn!(error = %e, "pass failed; the cache keeps serving");
                        failures += 1;
                        Outcome {
                            seq,
                            finished_at: chrono::Utc::now(),
                            report: None,
                            error: Some(e.to_string()),
                        }
                    }
                };
                daemon.completed.send_replace(Some(outcome));
                if lifecycle.is_shutting_down() {
                    return Ok(());
                }
                let wait = next_wait(&config, failures);
                tokio::select! {
                    _ = lifecycle.cancelled() => return Ok(()),
                    _ = daemon.trigger.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    sidecar_kit::sidecar::serve(&config.admin, daemon, metrics, lifecycle, work).await
}

/// The regular interval plus jitter; after failures, an exponential backoff
/// (5 s, 10 s, 20 s, …) capped at the interval.
fn next_wait(config: &Config, failures: u32) -> Duration {
    let interval = config.sync.interval_secs;
    let base = if failures == 0 {
        interval
    } else {
        (5u64 << failures.min(10)).min(interval)
    };
    let jitter = match config.sync.jitter_secs.min(base / 2 + 1) {
        0 => 0,
        j => crate::random_u64() % j,
    };
    Duration::from_secs(base + jitter)
}

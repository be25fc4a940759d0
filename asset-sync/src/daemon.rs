//! `asset-sync run`: periodic passes, `POST /sync`, health and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sidecar_kit::{Lifecycle, Metrics};
use tokio::sync::{watch, Notify};

use crate::api::{Daemon, Outcome};
use crate::config::Config;
use crate::metrics::SyncMetrics;
use crate::pass::{PassOptions, Progress, Syncer};

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

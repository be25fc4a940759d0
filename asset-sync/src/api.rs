//! The admin API: `/status`, `POST /sync` (a pass now, waiting for it
//! unless `?wait=false`), `/health`; and the state it shares with the loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aurora_api::assets::{self as wire, AssetStatus, PassOutcome, SyncTriggered};
use hyper::{Method, StatusCode};
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminResponse, Routed};
use sidecar_kit::{HealthReport, HealthStatus};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::pass::{PassReport, Progress};

/// How long `POST /sync` waits for its pass before answering 202.
const SYNC_WAIT: Duration = Duration::from_secs(600);

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
    pub(crate) config: Config,
    pub(crate) started: AtomicU64,
    pub(crate) trigger: Notify,
    pub(crate) completed: watch::Sender<Option<Outcome>>,
    pub(crate) last_success: Mutex<Option<Instant>>,
    /// When the bucket was last listed completely, by this run or (from the
    /// manifest) an earlier one: the age of what is served.
    pub(crate) mirror_listed_at: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    pub(crate) progress: Progress,
}

impl Daemon {
    pub(crate) fn last(&self) -> Option<Outcome> {
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

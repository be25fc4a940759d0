//! health-monitor: checks this node, registers and reports it to the fleet
//! (through the primary), and serves the fleet's view from the local
//! database so every node answers the same question the same way.
//!
//! Registration (with the GPU inventory), checks, reports and down marks,
//! `/cluster` and `/cluster/health`, alerts, the WireGuard peer file and
//! metrics; docs/health-monitor.md has the whole contract.

pub mod alerts;
pub mod checks;
pub mod config;
pub mod db;
pub mod fleet;
pub mod gpu;
pub mod prometheus_sd;
mod round;
pub mod wireguard;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_db::{NodeName, NodeRegistration};
use hyper::{Method, StatusCode};
use prometheus::{IntCounterVec, IntGaugeVec};
use serde_json::json;
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminResponse, Routed};
use sidecar_kit::{HealthReport, HealthStatus as Liveness, Lifecycle, Metrics};

use aurora_api::monitor::{FleetHealth, MonitorStatus};
use checks::CheckResult;
pub use config::Config;

/// What the admin API shows, shared with the check loop.
#[derive(Default)]
struct State {
    last_checks: Mutex<Vec<CheckResult>>,
    last_report: Mutex<Option<Instant>>,
    report_error: Mutex<Option<String>>,
    registered: Mutex<bool>,
}

struct Api {
    config: Config,
    state: Arc<State>,
    fleet: FleetCache,
    dbs: Arc<db::Databases>,
}

/// How long one read of the fleet answers `/cluster` requests.
const FLEET_CACHE_FOR: Duration = Duration::from_secs(1);

/// Coalesces fleet reads: each one queries the local database and the
/// primary, so an uptime monitor polling `/cluster/health` hard (or many at
/// once) costs at most one read per second, not a query storm on the
/// primary. Concurrent requests wait for the one
/// read in flight. Errors are kept as briefly, so a dead database is not
/// asked again by every request either.
#[derive(Default)]
struct FleetCache {
    last: tokio::sync::Mutex<Option<(Instant, FleetRead)>>,
}

/// One read of the fleet, or why it failed.
type FleetRead = Result<Arc<fleet::FleetView>, String>;

impl FleetCache {
    async fn get(&self, config: &Config, dbs: &db::Databases) -> FleetRead {
        let mut last = self.last.lock().await;
        if let Some((at, view)) = last.as_ref() {
            if at.elapsed() < FLEET_CACHE_FOR {
                return view.clone();
            }
        }
        let view = fleet::view(config, dbs)
            .await
            .map(Arc::new)
            .map_err(|e| e.to_string());
        *last = Some((Instant::now(), view.clone()));
        view
    }
}

impl AdminApi for Api {
    fn health(&self) -> HealthReport {
        let age = self
            .state
            .last_report
            .lock()
            .ok()
            .and_then(|g| g.map(|t| t.elapsed().as_secs()));
        let mut h = HealthReport::ok().detail("last_report_age_secs", age);
        if let Some(e) = self.state.report_error.lock().ok().and_then(|g| g.clone()) {
            h.problem(
                Liveness::Degraded,
                format!("cannot report to the primary ({e}); the latest report is kept and sent when it returns"),
            );
        }
        h
    }

    fn status(&self) -> serde_json::Value {
        let checks = self
            .state
            .last_checks
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        let status = MonitorStatus {
            node: self.config.node.name.to_string(),
            role: self.config.node.role.into(),
            status: checks::overall(&checks).into(),
            registered: self.state.registered.lock().map(|g| *g).unwrap_or(false),
            checks: checks.iter().map(checks::CheckResult::wire).collect(),
            report_error: self.state.report_error.lock().ok().and_then(|g| g.clone()),
        };
        serde_json::to_value(status).unwrap_or_default()
    }

    async fn handle(&self, req: AdminRequest) -> Routed {
        let path = req.path.as_str();
        if !matches!(path, "/cluster" | "/cluster/health") {
            return Routed::NotFound;
        }
        if req.method != Method::GET {
            return Routed::MethodNotAllowed("GET, HEAD, OPTIONS");
        }
        let view = match self.fleet.get(&self.config, &self.dbs).await {
            Ok(v) => v,
            Err(e) => {
                return AdminResponse::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the fleet from the local database: {e}"),
                )
                .into()
            }
        };
        if path == "/cluster" {
            return AdminResponse::ok(&*view).into();
        }
        let reasons = fleet::problems(&view);
        let status = if reasons.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        AdminResponse::json(
            status,
            &FleetHealth {
                healthy: reasons.is_empty(),
                reasons,
            },
        )
        .into()
    }
}

struct HmMetrics {
    alerts: IntCounterVec,
    fleet: IntGaugeVec,
    check_status: IntGaugeVec,
    check_seconds: prometheus::GaugeVec,
    reports: IntCounterVec,
    report_age: prometheus::Gauge,
    db_connects: IntCounterVec,
}

impl HmMetrics {
    fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        let reports = m.counter_vec(
            "reports_total",
            "Reports sent to the primary, by outcome.",
            &["outcome"],
        )?;
        for o in ["sent", "failed"] {
            reports.with_label_values(&[o]);
        }
        let alerts = m.counter_vec(
            "alerts_total",
            "Alert deliveries, by outcome.",
            &["outcome"],
        )?;
        for o in ["sent", "failed"] {
            alerts.with_label_values(&[o]);
        }
        Ok(Self {
            alerts,
            fleet: m.gauge_vec(
                "fleet_nodes",
                "Nodes of the fleet by status, as this node sees it.",
                &["status"],
            )?,
            check_status: m.gauge_vec(
                "check_status",
                "Each check's status: 0 passing, 1 warning, 2 critical.",
                &["check"],
            )?,
            check_seconds: m.float_gauge_vec(
                "check_duration_seconds",
                "How long each check took.",
                &["check"],
            )?,
            db_connects: {
                let c = m.counter_vec(
                    "db_connects_total",
                    "Database connections opened, by use (local, report, primary); each is kept between intervals.",
                    &["target"],
                )?;
                for t in ["local", "report", "primary"] {
                    c.with_label_values(&[t]);
                }
                c
            },
            reports,
            report_age: m.float_gauge(
                "last_report_timestamp_seconds",
                "Unix time of the last report the primary accepted.",
            )?,
        })
    }
}

fn registration(config: &Config, gpus: Vec<serde_json::Value>) -> anyhow::Result<NodeRegistration> {
    let n = &config.node;
    let mut versions = serde_json::Map::new();
    versions.insert(
        "aurora".into(),
        json!(sidecar_kit::telemetry::long_version()),
    );
    Ok(NodeRegistration {
        name: NodeName::parse(&n.name)?,
        role: n.role,
        vpn_ip: n
            .vpn_ip
            .ok_or_else(|| anyhow::anyhow!("node.vpn_ip is required"))?,
        wg_public_key: n.wg_public_key.clone(),
        wg_endpoint: n.wg_endpoint.clone(),
        labels: n
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
        gpus,
        versions,
    })
}

/// `work`, or an error naming `what` once `limit` has passed.
async fn deadline<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "{what}: no answer within {} s",
            limit.as_secs()
        )),
    }
}

/// Runs health-monitor until `lifecycle` shuts down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    let metrics = Metrics::new("health-monitor")?;
    let m = HmMetrics::new(&metrics)?;
    let state = Arc::new(State::default());
    let dbs = Arc::new(db::Databases::new(&config, m.db_connects.clone()));
    let api = Arc::new(Api {
        config: config.clone(),
        state: state.clone(),
        fleet: FleetCache::default(),
        dbs: dbs.clone(),
    });
    let gpus = if config.checks.gpu_inventory {
        gpu::inventory().await
    } else {
        Vec::new()
    };
    let reg = registration(&config, gpus)?;
    let admin = config.admin.clone();
    let work = {
        let lifecycle = lifecycle.clone();
        async move {
            let mut rounds = round::Rounds::new(config, dbs, state, m, reg)?;
            let mut interval = tokio::time::interval(rounds.interval());
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = lifecycle.cancelled() => return Ok(()),
                    _ = interval.tick() => {}
                }
                if rounds.once().await? {
                    lifecycle.set_ready(true);
                }
            }
        }
    };
    sidecar_kit::sidecar::serve(&admin, api, metrics, lifecycle, work).await
}

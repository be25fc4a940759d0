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
pub mod wireguard;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_db::{queries, NodeName, NodeRegistration};
use hyper::{Method, StatusCode};
use prometheus::{IntCounterVec, IntGaugeVec};
use serde_json::json;
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminResponse, Routed};
use sidecar_kit::http_client::HttpClient;
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
            let http = HttpClient::new(Duration::from_secs(config.checks.timeout_secs));
            // Each step's database work is bounded by the kept connections;
            // this is the bound on a whole step, whatever else it does.
            let db_deadline = dbs.bound() + Duration::from_secs(1);
            let mut alerter = alerts::Alerter::new(config.alerts.clone(), m.alerts.clone())?;
            let mut registered = false;
            let mut interval =
                tokio::time::interval(Duration::from_secs(config.checks.interval_secs));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = lifecycle.cancelled() => return Ok(()),
                    _ = interval.tick() => {}
                }
                let results = checks::run_all(&config, &http, &dbs).await;
                for r in &results {
                    let v = match r.status {
                        cluster_db::HealthStatus::Passing => 0,
                        cluster_db::HealthStatus::Warning => 1,
                        cluster_db::HealthStatus::Critical => 2,
                    };
                    m.check_status.with_label_values(&[&r.name]).set(v);
                    m.check_seconds
                        .with_label_values(&[&r.name])
                        .set(r.duration_ms as f64 / 1000.0);
                }
                let status = checks::overall(&results);
                let report = serde_json::to_value(&results).unwrap_or(json!([]));
                if let Ok(mut g) = state.last_checks.lock() {
                    *g = results;
                }

                // Only the latest report matters: it replaces whatever could
                // not be sent, so nothing queues up while the primary is away.
                // Every database round has a deadline: a primary whose host
                // vanished (no RST) must cost one failed report, not the
                // kernel's retransmission timeout with nothing checked.
                let outcome: Result<(), anyhow::Error> =
                    deadline(db_deadline, "reporting to the primary", async {
                        let first = !registered;
                        let (reg, report) = (&reg, &report);
                        let marked = dbs
                            .report
                            .with(|c| async move {
                                if first {
                                    queries::upsert_node(&*c, reg).await?;
                                }
                                queries::upsert_health(&*c, &reg.name, status, report).await?;
                                // Record in the database which nodes went silent,
                                // so what DNS serves moves its serial (every
                                // monitor does it; the first to see a stale
                                // report wins, the rest update nothing). A
                                // failure here is logged, not a failed report:
                                // this node's own report is in.
                                let after = 3.0 * config.checks.interval_secs as f64;
                                Ok(queries::mark_down(&*c, after).await)
                            })
                            .await?;
                        if first {
                            registered = true;
                            if let Ok(mut g) = state.registered.lock() {
                                *g = true;
                            }
                            tracing::info!(node = %reg.name, ip = %reg.vpn_ip, "registered");
                        }
                        match marked {
                            Ok(marked) => {
                                for node in marked {
                                    tracing::warn!(%node, "marked down: no report");
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "stale nodes not marked down"),
                        }
                        Ok(())
                    })
                    .await;
                // Files rendered from the registry: the WireGuard peers and
                // Prometheus' discovery of every node.
                let wg = deadline(db_deadline, "reading the registry", async {
                    let wg_path = config.wireguard.config_path.as_ref();
                    let sd_dir = config.prometheus.sd_dir.as_ref();
                    if wg_path.is_none() && sd_dir.is_none() {
                        return Ok(());
                    }
                    let listing = dbs
                        .local
                        .with(|c| async move { queries::list_nodes(&*c).await })
                        .await?;
                    if let Some(dir) = sd_dir {
                        match prometheus_sd::apply(&config.prometheus, dir, &listing.nodes) {
                            Ok(true) => tracing::info!(dir = %dir.display(), "Prometheus discovery files updated"),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "Prometheus discovery files not written"),
                        }
                    }
                    let Some(path) = wg_path else {
                        return Ok(());
                    };
                    let key = match &config.wireguard.private_key_file {
                        Some(f) => Some(std::fs::read_to_string(f).map_err(|e| {
                            anyhow::anyhow!("wireguard.private_key_file {}: {e}", f.display())
                        })?),
                        None => None,
                    };
                    let text = wireguard::render(
                        &config.node.name,
                        &listing.nodes,
                        &config.wireguard,
                        key.as_deref(),
                    );
                    let applied = wireguard::apply(&config.wireguard, path, &text).await?;
                    if applied != wireguard::Applied::Unchanged {
                        tracing::info!(path = %path.display(), ?applied, "WireGuard peers updated");
                    }
                    Ok::<(), anyhow::Error>(())
                })
                .await;
                if let Err(e) = wg {
                    tracing::warn!(error = %e, "WireGuard peers not updated");
                }
                // The fleet as the local database sees it: metrics, and
                // alerts from the primary's monitor only.
                let view = deadline(db_deadline, "reading the fleet", async {
                    Ok(fleet::view(&config, &dbs).await?)
                })
                .await;
                if let Ok(view) = view {
                    for s in ["passing", "warning", "critical", "down", "unknown"] {
                        let n = view.nodes.iter().filter(|v| v.status == s).count();
                        m.fleet.with_label_values(&[s]).set(n as i64);
                    }
                    let is_sender = alerts::sender(&view) == Some(config.node.name.as_str());
                    for t in alerter.observe(&view, is_sender) {
                        tracing::info!(node = %t.node, from = %t.from, to = %t.to, "alert");
                    }
                }
                match outcome {
                    Ok(()) => {
                        m.reports.with_label_values(&["sent"]).inc();
                        m.report_age.set(sidecar_kit::telemetry::unix_now());
                        if let Ok(mut g) = state.last_report.lock() {
                            *g = Some(Instant::now());
                        }
                        if let Ok(mut g) = state.report_error.lock() {
                            *g = None;
                        }
                        lifecycle.set_ready(true);
                    }
                    Err(e) => {
                        m.reports.with_label_values(&["failed"]).inc();
                        let conflict = matches!(
                            e.downcast_ref::<cluster_db::DbError>(),
                            Some(cluster_db::DbError::Conflict(_))
                        );
                        if conflict && !registered {
                            // Another node holds our address: running on
                            // would publish a lie to DNS and the VPN mesh.
                            return Err(e.context("registration refused"));
                        }
                        tracing::warn!(error = %e, "report not sent; keeping the latest for the next round");
                        if let Ok(mut g) = state.report_error.lock() {
                            *g = Some(e.to_string());
                        }
                    }
                }
            }
        }
    };
    sidecar_kit::sidecar::serve(&admin, api, metrics, lifecycle, work).await
}

//! The monitoring loop, one round per `checks.interval_secs`, in the phases
//! it always runs: check this node; report to the primary (registering the
//! first time, marking silent nodes down); render the files that follow the
//! registry (WireGuard peers, Prometheus discovery); read the fleet for
//! metrics and alerts; settle what the report's outcome means.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_db::{queries, HealthStatus, NodeRegistration};
use serde_json::json;
use sidecar_kit::http_client::HttpClient;

use crate::api::State;
use crate::checks::{self, CheckResult};
use crate::config::Config;
use crate::db::Databases;
use crate::metrics::HmMetrics;
use crate::{alerts, deadline, fleet, prometheus_sd, wireguard};

pub(crate) struct Rounds {
    config: Config,
    dbs: Arc<Databases>,
    state: Arc<State>,
    m: HmMetrics,
    reg: NodeRegistration,
    http: HttpClient,
    /// Each phase's database work is bounded by the kept connections; this
    /// bounds a whole phase, whatever else it does.
    db_deadline: Duration,
    alerter: alerts::Alerter,
    registered: bool,
}

impl Rounds {
    pub(crate) fn new(
        config: Config,
        dbs: Arc<Databases>,
        state: Arc<State>,
        m: HmMetrics,
        reg: NodeRegistration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: HttpClient::new(Duration::from_secs(config.checks.timeout_secs)),
            db_deadline: dbs.bound() + Duration::from_secs(1),
            alerter: alerts::Alerter::new(config.alerts.clone(), m.alerts.clone())?,
            registered: false,
            config,
            dbs,
            state,
            m,
            reg,
        })
    }

    pub(crate) fn interval(&self) -> Duration {
        Duration::from_secs(self.config.checks.interval_secs)
    }

    /// One round. `Ok(true)` when the report went in (the node is ready);
    /// an error only when running on would be wrong (another node holds
    /// this node's address).
    pub(crate) async fn once(&mut self) -> anyhow::Result<bool> {
        let results = checks::run_all(&self.config, &self.http, &self.dbs).await;
        let (status, report) = self.record_checks(results);
        let outcome = self.report(status, &report).await;
        self.render_files().await;
        self.observe_fleet().await;
        self.settle(outcome)
    }

    /// Metrics and the admin API's view of this round's checks; the worst
    /// status and the report to send.
    fn record_checks(&self, results: Vec<CheckResult>) -> (HealthStatus, serde_json::Value) {
        for r in &results {
            let v = match r.status {
                HealthStatus::Passing => 0,
                HealthStatus::Warning => 1,
                HealthStatus::Critical => 2,
            };
            self.m.check_status.with_label_values(&[&r.name]).set(v);
            self.m
                .check_seconds
                .with_label_values(&[&r.name])
                .set(r.duration_ms as f64 / 1000.0);
        }
        let status = checks::overall(&results);
        let report = serde_json::to_value(&results).unwrap_or(json!([]));
        if let Ok(mut g) = self.state.last_checks.lock() {
            *g = results;
        }
        (status, report)
    }

    /// Only the latest report matters: it replaces whatever could not be
    /// sent, so nothing queues up while the primary is away. The round has
    /// a deadline: a primary whose host vanished (no RST) must cost one
    /// failed report, not the kernel's retransmission timeout with nothing
    /// checked.
    async fn report(
        &mut self,
        status: HealthStatus,
        report: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let first = !self.registered;
        let (config, reg, dbs) = (&self.config, &self.reg, &self.dbs);
        let marked = deadline(self.db_deadline, "reporting to the primary", async {
            Ok(dbs
                .report
                .with(|c| async move {
                    if first {
                        queries::upsert_node(&*c, reg).await?;
                    }
                    queries::upsert_health(&*c, &reg.name, status, report).await?;
                    // Record in the database which nodes went silent, so
                    // what DNS serves moves its serial (every monitor does
                    // it; the first to see a stale report wins, the rest
                    // update nothing). A failure here is logged, not a
                    // failed report: this node's own report is in.
                    let after = 3.0 * config.checks.interval_secs as f64;
                    Ok(queries::mark_down(&*c, after).await)
                })
                .await?)
        })
        .await?;
        if first {
            self.registered = true;
            if let Ok(mut g) = self.state.registered.lock() {
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
    }

    /// Files rendered from the registry: the WireGuard peers and
    /// Prometheus' discovery of every node. A failure is logged and tried
    /// again next round.
    async fn render_files(&self) {
        let config = &self.config;
        let dbs = &self.dbs;
        let done = deadline(self.db_deadline, "reading the registry", async {
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
        if let Err(e) = done {
            tracing::warn!(error = %e, "WireGuard peers not updated");
        }
    }

    /// The fleet as the local database sees it: metrics, and alerts from
    /// the primary's monitor only.
    async fn observe_fleet(&mut self) {
        let (config, dbs) = (&self.config, &self.dbs);
        let view = deadline(self.db_deadline, "reading the fleet", async {
            Ok(fleet::view(config, dbs).await?)
        })
        .await;
        let Ok(view) = view else { return };
        for s in ["passing", "warning", "critical", "down", "unknown"] {
            let n = view.nodes.iter().filter(|v| v.status == s).count();
            self.m.fleet.with_label_values(&[s]).set(n as i64);
        }
        let is_sender = alerts::sender(&view) == Some(self.config.node.name.as_str());
        for t in self.alerter.observe(&view, is_sender) {
            tracing::info!(node = %t.node, from = %t.from, to = %t.to, "alert");
        }
    }

    /// What the report's outcome means: metrics, the admin API's state,
    /// and whether to go on.
    fn settle(&mut self, outcome: anyhow::Result<()>) -> anyhow::Result<bool> {
        match outcome {
            Ok(()) => {
                self.m.reports.with_label_values(&["sent"]).inc();
                self.m.report_age.set(sidecar_kit::telemetry::unix_now());
                if let Ok(mut g) = self.state.last_report.lock() {
                    *g = Some(Instant::now());
                }
                if let Ok(mut g) = self.state.report_error.lock() {
                    *g = None;
                }
                Ok(true)
            }
            Err(e) => {
                self.m.reports.with_label_values(&["failed"]).inc();
                let conflict = matches!(
                    e.downcast_ref::<cluster_db::DbError>(),
                    Some(cluster_db::DbError::Conflict(_))
                );
                if conflict && !self.registered {
                    // Another node holds our address: running on would
                    // publish a lie to DNS and the VPN mesh.
                    return Err(e.context("registration refused"));
                }
                tracing::warn!(error = %e, "report not sent; keeping the latest for the next round");
                if let Ok(mut g) = self.state.report_error.lock() {
                    *g = Some(e.to_string());
                }
                Ok(false)
            }
        }
    }
}

//! health-monitor: checks this node, registers and reports it to the fleet
//! (through the primary), and serves the fleet's view from the local
//! database so every node answers the same question the same way.
//!
//! Registration (with the GPU inventory), checks, reports and down marks,
//! `/cluster` and `/cluster/health`, alerts, the WireGuard peer file and
//! metrics; docs/health-monitor.md has the whole contract.

pub mod alerts;
mod api;
pub mod checks;
pub mod config;
pub mod db;
pub mod fleet;
pub mod gpu;
pub mod join;
mod metrics;
pub mod prometheus_sd;
mod round;
pub mod wireguard;

use std::sync::Arc;
use std::time::Duration;

use cluster_db::{NodeName, NodeRegistration};
use serde_json::json;
use sidecar_kit::{Lifecycle, Metrics};

use api::{Api, FleetCache, State};
pub use config::Config;
use metrics::HmMetrics;

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
    // The join endpoint, when this node serves it: its certificate and
    // listener are ready before anything else starts, so a bad file or a
    // taken port stops the sidecar at once.
    let join = match config.join.listen {
        Some(addr) => {
            let certificate = join::JoinCertificate::load_or_create(&config.join)?;
            let listener = join::bind(addr).await?;
            let endpoint = match &config.join.public_endpoint {
                Some(ep) => ep.clone(),
                None => listener.local_addr()?.to_string(),
            };
            let service = Arc::new(join::JoinService::new(
                config.clone(),
                certificate,
                m.join_requests.clone(),
            ));
            Some((listener, service, endpoint))
        }
        None => None,
    };
    let api = Arc::new(Api {
        config: config.clone(),
        state: state.clone(),
        fleet: FleetCache::default(),
        dbs: dbs.clone(),
        join: join.as_ref().map(|(_, service, endpoint)| api::JoinInfo {
            fingerprint: service.fingerprint(),
            endpoint: endpoint.clone(),
        }),
    });
    if let Some((listener, service, _)) = join {
        let stop = lifecycle.token();
        tokio::spawn(async move {
            if let Err(e) = join::serve(listener, service, stop).await {
                tracing::error!(error = %e, "join endpoint stopped");
            }
        });
    }
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

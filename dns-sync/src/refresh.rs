//! Keeping the zone current: poll the change counter every `refresh_secs`
//! (LISTEN/NOTIFY does not reach a hot standby), rebuild on a change, swap
//! the whole zone. Every few seconds the zone is rebuilt anyway, because a
//! node turns `down` by the passage of time, not by a write.
//!
//! When the database is unreachable the last good zone keeps being served;
//! before the first successful load nothing is served (SERVFAIL) and the
//! sidecar is not ready: an empty zone would deny names that exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_db::queries;
use cluster_db::{DbError, DbTarget};
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use sidecar_kit::{Lifecycle, Metrics};
use tokio_postgres::{Client, IsolationLevel};

use crate::config::Config;
use crate::zone::{Zone, ZoneData};
use crate::State;

/// Rebuild at least this often, to notice nodes going stale.
const FULL_REBUILD_EVERY: Duration = Duration::from_secs(5);

pub struct RefreshMetrics {
    serial: IntGauge,
    records: IntGauge,
    last_refresh: prometheus::Gauge,
    errors: IntCounter,
    skipped: IntCounterVec,
    swaps: IntCounter,
}

impl RefreshMetrics {
    pub fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        let skipped = m.counter_vec(
            "registry_rows_skipped_total",
            "Registry rows (or parts) not served because they are invalid, by reason (counted per zone build).",
            &["reason"],
        )?;
        for r in ["invalid_row", "ip_outside_vpn"] {
            skipped.with_label_values(&[r]);
        }
        Ok(Self {
            serial: m.gauge("zone_serial", "SOA serial of the zone being served.")?,
            records: m.gauge("zone_records", "Records in the zone being served.")?,
            last_refresh: m.float_gauge(
                "last_refresh_timestamp_seconds",
                "Unix time of the last successful read of the database.",
            )?,
            errors: m.counter("refresh_errors_total", "Failed reads of the database.")?,
            skipped,
            swaps: m.counter(
                "zone_swaps_total",
                "Times a new zone replaced the served one.",
            )?,
        })
    }
}

/// Reads everything a zone needs in one consistent snapshot.
pub async fn load(client: &mut Client) -> Result<ZoneData, DbError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let data = ZoneData {
        version: queries::change_version(&tx).await?,
        listing: queries::list_nodes(&tx).await?,
        health: queries::list_health(&tx).await?,
        cluster: queries::cluster_state(&tx).await?,
    };
    tx.commit().await?;
    Ok(data)
}

pub async fn refresh_loop(
    config: &Config,
    state: &Arc<State>,
    m: &RefreshMetrics,
    lifecycle: &Lifecycle,
) {
    let target = match DbTarget::parse(config.database.dsn.expose()) {
        Ok(t) => t,
        Err(e) => {
            // Validated with the config; unreachable in practice.
            tracing::error!(error = %e, "database.dsn");
            return;
        }
    };
    let timeout = Duration::from_secs(config.database.connect_timeout_secs);
    let mut client: Option<Client> = None;
    let mut seen_version: Option<i64> = None;
    let mut last_build: Option<Instant> = None;
    let mut interval = tokio::time::interval(Duration::from_secs(config.dns.refresh_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = lifecycle.cancelled() => return,
            _ = interval.tick() => {}
        }
        let result = async {
            if client.as_ref().is_none_or(Client::is_closed) {
                client = Some(cluster_db::connect(&target, timeout).await?);
            }
            let Some(c) = client.as_mut() else {
                return Ok::<bool, DbError>(false);
            };
            let version = queries::change_version(c).await?;
            if Some(version) == seen_version
                && last_build.is_some_and(|t| t.elapsed() < FULL_REBUILD_EVERY)
            {
                return Ok(false);
            }
            let data = load(c).await?;
            let zone = Zone::build(&config.dns, &data).map_err(|e| DbError::Invalid {
                what: "zone",
                reason: e,
            })?;
            for s in &zone.skipped {
                m.skipped.with_label_values(&[s.reason]).inc();
                if Some(data.version) != seen_version {
                    tracing::warn!(node = %s.node, reason = s.reason, detail = %s.detail, "registry row not served");
                }
            }
            seen_version = Some(data.version);
            last_build = Some(Instant::now());
            m.serial.set(i64::from(zone.serial));
            m.records.set(zone.len() as i64);
            let was_frozen = state.zone.get().is_some_and(|old| old.health_frozen);
            if zone.health_frozen != was_frozen {
                if zone.health_frozen {
                    tracing::warn!(down = ?zone.down, "no node has reported within down_after_secs (no writable primary?); the down set is frozen");
                } else {
                    tracing::info!("reports are fresh again; the down set follows them");
                }
            }
            let changed = state.zone.get().is_none_or(|old| {
                old.serial != zone.serial
                    || old.down != zone.down
                    || old.len() != zone.len()
                    || old.health_frozen != zone.health_frozen
            });
            if changed {
                tracing::info!(serial = zone.serial, records = zone.len(), down = ?zone.down, "zone loaded");
                state.zone.set(Arc::new(zone));
                m.swaps.inc();
            }
            Ok(true)
        }
        .await;
        match result {
            Ok(_) => {
                if let Ok(mut g) = state.last_refresh.lock() {
                    *g = Some(Instant::now());
                }
                if let Ok(mut g) = state.last_error.lock() {
                    if let Some(old) = g.take() {
                        tracing::info!(previous = %old, "database reachable again");
                    }
                }
                m.last_refresh.set(sidecar_kit::telemetry::unix_now());
                if state.zone.get().is_some() {
                    lifecycle.set_ready(true);
                }
            }
            Err(e) => {
                m.errors.inc();
                if e.is_connection_lost() {
                    client = None;
                }
                let msg = e.to_string();
                if let Ok(mut g) = state.last_error.lock() {
                    if g.as_deref() != Some(&msg) {
                        tracing::warn!(error = %msg, "zone refresh failed; serving the last good zone");
                    }
                    *g = Some(msg);
                }
            }
        }
    }
}

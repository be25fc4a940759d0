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
use sidecar_kit::Lifecycle;
use tokio_postgres::{Client, IsolationLevel};

use crate::config::Config;
use crate::metrics::RefreshMetrics;
use crate::zone::{Zone, ZoneData};
use crate::State;

/// Rebuild at least this often, to notice nodes going stale.
const FULL_REBUILD_EVERY: Duration = Duration::from_secs(5);

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

/// One place the zone is read from, with its open connection.
struct Source {
    name: &'static str,
    target: DbTarget,
    client: Option<Client>,
}

impl Source {
    /// The zone data if it changed since `seen` (or a full rebuild is due).
    async fn read(
        &mut self,
        connect_timeout: Duration,
        seen: Option<i64>,
        rebuild_due: bool,
    ) -> Result<Option<ZoneData>, DbError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(cluster_db::connect(&self.target, connect_timeout).await?);
        }
        let Some(c) = self.client.as_mut() else {
            return Ok(None);
        };
        let version = queries::change_version(c).await?;
        if Some(version) == seen && !rebuild_due {
            return Ok(None);
        }
        Ok(Some(load(c).await?))
    }
}

pub async fn refresh_loop(
    config: &Config,
    state: &Arc<State>,
    m: &RefreshMetrics,
    lifecycle: &Lifecycle,
) {
    let mut sources: Vec<Source> = [
        ("local", Some(&config.database.dsn)),
        ("fallback", config.database.fallback_dsn.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, dsn)| {
        Some(Source {
            name,
            target: dsn?.target().clone(),
            client: None,
        })
    })
    .collect();
    let timeout = Duration::from_secs(config.database.connect_timeout_secs);
    // A round with a source ends within this, answer or not: a blackholed
    // host must not hold the zone (and the next source) for minutes.
    let deadline = timeout + Duration::from_secs(5);
    // (source, change version) of the zone being served.
    let mut seen: Option<(&'static str, i64)> = None;
    let mut last_build: Option<Instant> = None;
    let mut interval = tokio::time::interval(Duration::from_secs(config.dns.refresh_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = lifecycle.cancelled() => return,
            _ = interval.tick() => {}
        }
        let rebuild_due = last_build.is_none_or(|t| t.elapsed() >= FULL_REBUILD_EVERY);
        // The local database first; the fallback only when it fails.
        let mut errors: Vec<String> = Vec::new();
        let mut read: Option<(&'static str, Option<ZoneData>)> = None;
        for src in &mut sources {
            let seen_here = seen.filter(|(n, _)| *n == src.name).map(|(_, v)| v);
            let attempt = tokio::time::timeout(
                deadline,
                src.read(timeout, seen_here, rebuild_due || seen_here.is_none()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(DbError::ConnectTimeout {
                    target: src.target.label.clone(),
                    secs: deadline.as_secs(),
                })
            });
            match attempt {
                Ok(data) => {
                    read = Some((src.name, data));
                    break;
                }
                Err(e) => {
                    if e.is_connection_lost() || matches!(e, DbError::ConnectTimeout { .. }) {
                        src.client = None;
                    }
                    errors.push(format!("{}: {e}", src.name));
                }
            }
        }
        let source = read.as_ref().map(|(n, _)| *n);
        let result = match read {
            None => Err(errors.join("; ")),
            Some((_, None)) => Ok(()),
            Some((name, Some(data))) => {
                let before = seen.map(|(_, v)| v);
                apply(config, state, m, (name, before), data).map(|version| {
                    seen = Some((name, version));
                    last_build = Some(Instant::now());
                })
            }
        };
        if let Ok(mut g) = state.source.lock() {
            if source.is_some() && *g != source {
                match source {
                    Some("local") => tracing::info!("the zone comes from the local database"),
                    _ => {
                        tracing::warn!(failed = %errors.join("; "), "the zone comes from database.fallback_dsn")
                    }
                }
            }
            *g = source;
        }
        match result {
            Ok(()) => {
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
            Err(msg) => {
                m.errors.inc();
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

/// Builds the zone from `data` and swaps it in when it differs from the
/// served one; returns the data's change version.
fn apply(
    config: &Config,
    state: &Arc<State>,
    m: &RefreshMetrics,
    (source, seen): (&'static str, Option<i64>),
    data: ZoneData,
) -> Result<i64, String> {
    let zone = Zone::build(&config.dns, &data).map_err(|e| format!("{source}: zone: {e}"))?;
    for s in &zone.skipped {
        m.skipped.with_label_values(&[s.reason]).inc();
        if Some(data.version) != seen {
            tracing::warn!(node = %s.node, reason = s.reason, detail = %s.detail, "registry row not served");
        }
    }
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
            || old.primary_ip != zone.primary_ip
    });
    if changed {
        tracing::info!(serial = zone.serial, records = zone.len(), down = ?zone.down, source, "zone loaded");
        state.zone.set(Arc::new(zone));
        m.swaps.inc();
    }
    Ok(data.version)
}

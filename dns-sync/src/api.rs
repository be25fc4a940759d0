//! The admin API (`/status`, `/health`) and the state it shares with the
//! refresh loop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_api::dns::{DnsStatus, Skipped};
use sidecar_kit::{AdminApi, HealthReport, HealthStatus};

use crate::server::ZoneCell;

/// What the admin API reports, shared with the refresh loop.
#[derive(Default)]
pub struct State {
    pub zone: Arc<ZoneCell>,
    /// Where the last refresh read the zone: `local` or `fallback`.
    pub source: Mutex<Option<&'static str>>,
    pub last_refresh: Mutex<Option<Instant>>,
    pub last_error: Mutex<Option<String>>,
    pub dns_addr: Mutex<Option<SocketAddr>>,
}

pub(crate) struct Api {
    pub(crate) state: Arc<State>,
    pub(crate) zone_name: String,
    /// A zone not refreshed for longer than this is reported stale, even
    /// when no refresh has failed (a loop that stopped making progress).
    pub(crate) stale_after: Duration,
}

impl AdminApi for Api {
    fn health(&self) -> HealthReport {
        let age = self
            .state
            .last_refresh
            .lock()
            .ok()
            .and_then(|g| g.map(|t| t.elapsed().as_secs()));
        let mut h = HealthReport::ok().detail("zone_age_secs", age);
        let error = self.state.last_error.lock().ok().and_then(|g| g.clone());
        match (self.state.zone.get(), error) {
            (None, Some(e)) => {
                h.problem(HealthStatus::Degraded, format!("no zone loaded yet: {e}"))
            }
            (None, None) => h.problem(HealthStatus::Degraded, "no zone loaded yet"),
            (Some(_), Some(e)) => h.problem(
                HealthStatus::Degraded,
                format!("database unreachable ({e}); serving the last good zone"),
            ),
            (Some(_), None) => {}
        }
        if let Some(a) = age.filter(|a| *a > self.stale_after.as_secs()) {
            h.problem(
                HealthStatus::Degraded,
                format!("the zone was last refreshed {a} s ago"),
            );
        }
        if self.state.source.lock().ok().and_then(|g| *g) == Some("fallback") {
            h.problem(
                HealthStatus::Degraded,
                "the local database does not answer; the zone comes from database.fallback_dsn",
            );
        }
        if self.state.zone.get().is_some_and(|z| z.health_frozen) {
            h.problem(
                HealthStatus::Degraded,
                "no node has reported within down_after_secs (no writable primary?): the down set is frozen",
            );
        }
        h
    }

    fn status(&self) -> serde_json::Value {
        let zone = self.state.zone.get();
        let status = DnsStatus {
            zone: self.zone_name.clone(),
            dns: self
                .state
                .dns_addr
                .lock()
                .ok()
                .and_then(|g| *g)
                .map(|a| a.to_string()),
            serial: zone.as_ref().map(|z| z.serial),
            records: zone.as_ref().map(|z| z.len()),
            down: zone.as_ref().map(|z| z.down.clone()),
            // No report written anywhere within down_after_secs (the primary
            // is gone): the down set is frozen, not grown.
            health_frozen: zone.as_ref().map(|z| z.health_frozen),
            skipped: zone.as_ref().map(|z| {
                z.skipped
                    .iter()
                    .map(|s| Skipped {
                        node: s.node.clone(),
                        reason: s.reason.to_string(),
                        detail: s.detail.clone(),
                    })
                    .collect()
            }),
            last_refresh_age_secs: self
                .state
                .last_refresh
                .lock()
                .ok()
                .and_then(|g| g.map(|t| t.elapsed().as_secs_f64())),
            last_error: self.state.last_error.lock().ok().and_then(|g| g.clone()),
            source: self
                .state
                .source
                .lock()
                .ok()
                .and_then(|g| *g)
                .map(str::to_string),
        };
        serde_json::to_value(status).unwrap_or_default()
    }
}

//! dns-sync's metrics: the zone's refreshes and the queries answered.

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use sidecar_kit::Metrics;

/// The refresh loop's.
pub struct RefreshMetrics {
    pub(crate) serial: IntGauge,
    pub(crate) records: IntGauge,
    pub(crate) last_refresh: prometheus::Gauge,
    pub(crate) errors: IntCounter,
    pub(crate) skipped: IntCounterVec,
    pub(crate) swaps: IntCounter,
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

/// The DNS servers'.
pub struct ServeMetrics {
    pub(crate) queries: IntCounterVec,
    pub(crate) cache_hits: IntCounter,
}

impl ServeMetrics {
    pub fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        Ok(Self {
            queries: m.counter_vec(
                "queries_total",
                "DNS queries answered, by query type and response code.",
                &["qtype", "rcode"],
            )?,
            cache_hits: m.counter(
                "udp_answer_cache_hits_total",
                "UDP queries answered from a socket's answer cache (counted in queries_total as well).",
            )?,
        })
    }
}

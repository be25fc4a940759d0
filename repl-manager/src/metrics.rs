//! repl-manager's Prometheus metrics (`aurora_repl_manager_*`).

use prometheus::{Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec};
use sidecar_kit::Metrics;

#[derive(Clone)]
pub struct ReplMetrics {
    /// 1 when this node's server is the writable primary.
    pub is_primary: IntGauge,
    /// 1 when PostgreSQL is running and answering.
    pub postgres_up: IntGauge,
    pub timeline: IntGauge,
    pub epoch: IntGauge,
    /// Per replica (on the primary) and for this node (on a standby).
    pub lag_bytes: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub slot_retained_bytes: IntGaugeVec,
    /// 1 for the current state of each standby (`streaming`, `catchup`...).
    pub replication_state: IntGaugeVec,
    /// 0 async, 1 sync, 2 blocked.
    pub sync_mode: IntGauge,
    pub operations: IntCounterVec,
    pub repairs: IntCounterVec,
    pub last_switchover_seconds: Gauge,
    pub reconcile_errors: IntCounterVec,
    pub aside_dirs: IntGauge,
    pub paused: IntGauge,
    /// 1 while this primary may not acknowledge writes (no lease).
    pub fenced: IntGauge,
    /// Epochs the committed leader key does not back (`source`: a lease
    /// answer to a primary whose renewal just committed, this node's own
    /// record).
    pub uncommitted_epochs: IntCounterVec,
    /// Patroni's own series (`patroni_*`), for its dashboards and alerts.
    pub patroni: crate::patroni::PatroniMetrics,
}

/// The `scope` label of the `patroni_*` series (Patroni's cluster name):
/// one fleet per Prometheus job, told apart by `job` and `instance`.
pub const PATRONI_SCOPE: &str = "aurora";

impl ReplMetrics {
    /// `member`: this node's name, the `name` label of the `patroni_*`
    /// series.
    pub fn new(m: &Metrics, member: &str) -> Result<Self, prometheus::Error> {
        Ok(Self {
            patroni: crate::patroni::PatroniMetrics::register(m.registry(), PATRONI_SCOPE, member)?,
            is_primary: m.gauge("is_primary", "1 when this node is the writable primary.")?,
            postgres_up: m.gauge("postgres_up", "1 when the local PostgreSQL answers.")?,
            timeline: m.gauge("timeline", "The local server's timeline.")?,
            epoch: m.gauge("epoch", "The highest cluster epoch this node knows.")?,
            lag_bytes: m.gauge_vec(
                "replication_lag_bytes",
                "Bytes between the primary's current WAL position and a replica's replay position.",
                &["replica"],
            )?,
            lag_seconds: m.float_gauge_vec(
                "replication_lag_seconds",
                "Replay lag of a replica in seconds.",
                &["replica"],
            )?,
            slot_retained_bytes: m.gauge_vec(
                "slot_retained_wal_bytes",
                "WAL held back by a replication slot.",
                &["slot"],
            )?,
            replication_state: m.gauge_vec(
                "replication_state",
                "1 for the walsender state of each standby.",
                &["replica", "state"],
            )?,
            sync_mode: m.gauge(
                "sync_mode",
                "Synchronous replication: 0 async (degraded), 1 sync, 2 blocked (strict, no standby).",
            )?,
            operations: m.counter_vec(
                "operations_total",
                "Promotions, demotions and switchovers by result.",
                &["operation", "result"],
            )?,
            repairs: m.counter_vec(
                "repairs_total",
                "Replica repairs: clone, rewind, reclone.",
                &["kind", "result"],
            )?,
            last_switchover_seconds: m.float_gauge(
                "last_switchover_seconds",
                "Request to new primary accepting writes, in the last switchover.",
            )?,
            reconcile_errors: m.counter_vec(
                "reconcile_errors_total",
                "Reconciliation passes that failed, by step.",
                &["step"],
            )?,
            aside_dirs: m.gauge(
                "aside_data_dirs",
                "Data directories moved aside by repairs and not yet removed by an operator.",
            )?,
            paused: m.gauge(
                "paused",
                "1 in maintenance mode: no automatic failover, fencing or repair.",
            )?,
            fenced: m.gauge(
                "fenced",
                "1 while this primary holds no lease from a majority and acknowledges no write.",
            )?,
            uncommitted_epochs: m.counter_vec(
                "uncommitted_epochs_ignored_total",
                "Epoch claims not backed by the committed leader key, ignored or replaced, by source.",
                &["source"],
            )?,
        })
    }
}

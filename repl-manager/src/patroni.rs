//! The series Patroni's own `/metrics` exports, with the same names, types,
//! labels (`scope`, `name`) and meanings, so the Patroni dashboards and
//! alerts people already run work on this fleet unchanged. Built from one
//! snapshot per status refresh, read at scrape time.
//!
//! Where the meaning cannot carry over it is said here and in
//! `docs/repl-manager.md`: `patroni_version` is this repl-manager's version
//! (semver without periods, as Patroni's); `patroni_standby_leader`,
//! `patroni_quorum_standby` and `patroni_postgres_in_archive_recovery` are
//! always 0 (no standby clusters, no quorum commit, no archive recovery);
//! `patroni_dcs_last_seen` is the last time this member heard from the
//! repl-managers' Raft group (0 without it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use aurora_api::repl::{NodeState, NodeStatus};

/// What the series say, as of the last status refresh.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub postgres_running: bool,
    pub postmaster_start_time: f64,
    pub primary: bool,
    pub xlog_location: u64,
    pub replica: bool,
    pub sync_standby: bool,
    pub xlog_received_location: u64,
    pub xlog_replayed_location: u64,
    pub xlog_replayed_timestamp: f64,
    pub xlog_paused: bool,
    pub postgres_streaming: bool,
    pub server_version: i32,
    pub cluster_unlocked: bool,
    pub failsafe_mode_is_active: bool,
    pub timeline: u32,
    pub dcs_last_seen: f64,
    pub pending_restart: bool,
    pub is_paused: bool,
    pub postgres_state: i64,
}

/// What the status alone does not say.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fleet {
    /// Nobody holds the leader key (Patroni: "the cluster is unlocked").
    pub unlocked: bool,
    /// This member is the standby the sync key names.
    pub sync_standby: bool,
    /// A primary writing on without a committed renewal, by the rule for
    /// fleets without automatic failover (Patroni's failsafe mode).
    pub failsafe: bool,
    pub last_contact: Option<f64>,
    pub paused: bool,
}

/// Patroni's `postgres_state` numbers (fixed by Patroni, never renumbered).
fn postgres_state(st: &NodeStatus) -> i64 {
    let creating = st
        .activity
        .as_deref()
        .is_some_and(|a| a.contains("clon") || a.contains("basebackup"));
    match st.state {
        NodeState::Primary | NodeState::Replica => 5,
        _ if creating => 4,
        NodeState::Unreachable => 6,
        _ => 12,
    }
}

impl Snapshot {
    pub fn of(st: &NodeStatus, fleet: Fleet) -> Snapshot {
        let pg = st.postgres.as_ref();
        let running = matches!(st.state, NodeState::Primary | NodeState::Replica);
        let primary = st.state == NodeState::Primary;
        let replica = st.state == NodeState::Replica;
        let lsn = |l: Option<crate::lsn::Lsn>| l.map(|l| l.0).unwrap_or(0);
        Snapshot {
            postgres_running: running,
            postmaster_start_time: pg.and_then(|p| p.postmaster_start_time).unwrap_or(0.0),
            primary,
            xlog_location: if primary {
                lsn(pg.and_then(|p| p.current_lsn))
            } else {
                0
            },
            replica,
            sync_standby: replica && fleet.sync_standby,
            xlog_received_location: if replica {
                lsn(pg.and_then(|p| p.receive_lsn))
            } else {
                0
            },
            xlog_replayed_location: if replica {
                lsn(pg.and_then(|p| p.replay_lsn))
            } else {
                0
            },
            xlog_replayed_timestamp: if replica {
                pg.and_then(|p| p.last_replay_at).unwrap_or(0.0)
            } else {
                0.0
            },
            xlog_paused: replica && pg.is_some_and(|p| p.replay_paused),
            postgres_streaming: replica && st.streaming(),
            server_version: if running {
                pg.and_then(|p| p.server_version_num).unwrap_or(0)
            } else {
                0
            },
            cluster_unlocked: fleet.unlocked,
            failsafe_mode_is_active: primary && fleet.failsafe,
            timeline: if running {
                pg.map(|p| p.timeline).unwrap_or(0)
            } else {
                0
            },
            dcs_last_seen: fleet.last_contact.unwrap_or(0.0).floor(),
            pending_restart: pg.is_some_and(|p| !p.pending_restart.is_empty()),
            is_paused: fleet.paused,
            postgres_state: postgres_state(st),
        }
    }

    /// Every series: name, help, counter or gauge, value.
    fn series(&self) -> Vec<(&'static str, &'static str, bool, f64)> {
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        vec![
            ("patroni_version", "Patroni semver without periods.", false, version()),
            ("patroni_postgres_running", "Value is 1 if Postgres is running, 0 otherwise.", false, b(self.postgres_running)),
            ("patroni_postmaster_start_time", "Epoch seconds since Postgres started.", false, self.postmaster_start_time),
            ("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", false, b(self.primary)),
            ("patroni_xlog_location", "Current location of the Postgres transaction log, 0 if this node is not the leader.", true, self.xlog_location as f64),
            ("patroni_standby_leader", "Value is 1 if this node is the standby_leader, 0 otherwise.", false, 0.0),
            ("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.", false, b(self.replica)),
            ("patroni_sync_standby", "Value is 1 if this node is a sync standby replica, 0 otherwise.", false, b(self.sync_standby)),
            ("patroni_quorum_standby", "Value is 1 if this node is a quorum standby replica, 0 otherwise.", false, 0.0),
            ("patroni_xlog_received_location", "Current location of the received Postgres transaction log, 0 if this node is not a replica.", true, self.xlog_received_location as f64),
            ("patroni_xlog_replayed_location", "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.", true, self.xlog_replayed_location as f64),
            ("patroni_xlog_replayed_timestamp", "Current timestamp of the replayed Postgres transaction log, 0 if null.", false, self.xlog_replayed_timestamp),
            ("patroni_xlog_paused", "Value is 1 if the Postgres xlog is paused, 0 otherwise.", false, b(self.xlog_paused)),
            ("patroni_postgres_streaming", "Value is 1 if Postgres is streaming, 0 otherwise.", false, b(self.postgres_streaming)),
            ("patroni_postgres_in_archive_recovery", "Value is 1 if Postgres is replicating from archive, 0 otherwise.", false, 0.0),
            ("patroni_postgres_server_version", "Version of Postgres (if running), 0 otherwise.", false, f64::from(self.server_version)),
            ("patroni_cluster_unlocked", "Value is 1 if the cluster is unlocked, 0 if locked.", false, b(self.cluster_unlocked)),
            ("patroni_failsafe_mode_is_active", "Value is 1 if failsafe mode is active, 0 if inactive.", false, b(self.failsafe_mode_is_active)),
            ("patroni_postgres_timeline", "Postgres timeline of this node (if running), 0 otherwise.", true, f64::from(self.timeline)),
            ("patroni_dcs_last_seen", "Epoch timestamp when DCS was last contacted successfully by Patroni.", false, self.dcs_last_seen),
            ("patroni_pending_restart", "Value is 1 if the node needs a restart, 0 otherwise.", false, b(self.pending_restart)),
            ("patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.", false, b(self.is_paused)),
            ("patroni_postgres_state", "Numeric representation of Postgres state.", false, self.postgres_state as f64),
        ]
    }
}

/// This repl-manager's version as Patroni writes its own: 1.2.3 → 10203.
fn version() -> f64 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b, c) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    f64::from(a * 10_000 + b * 100 + c)
}

/// The collector behind the series; [`PatroniMetrics::set`] after each
/// status refresh.
#[derive(Clone)]
pub struct PatroniMetrics {
    labels: Vec<LabelPair>,
    snapshot: Arc<Mutex<Snapshot>>,
    descs: Vec<Desc>,
}

impl PatroniMetrics {
    /// Registers the series on `registry`, labelled `scope` (the fleet)
    /// and `name` (this member), as Patroni labels them.
    pub fn register(
        registry: &prometheus::Registry,
        scope: &str,
        name: &str,
    ) -> Result<PatroniMetrics, prometheus::Error> {
        let const_labels: HashMap<String, String> = [
            ("scope".to_string(), scope.to_string()),
            ("name".to_string(), name.to_string()),
        ]
        .into();
        let descs = Snapshot::default()
            .series()
            .into_iter()
            .map(|(n, help, _, _)| {
                Desc::new(n.into(), help.into(), Vec::new(), const_labels.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let labels = ["scope", "name"]
            .iter()
            .zip([scope, name])
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_string());
                l.set_value(v.to_string());
                l
            })
            .collect();
        let m = PatroniMetrics {
            labels,
            snapshot: Arc::new(Mutex::new(Snapshot::default())),
            descs,
        };
        registry.register(Box::new(m.clone()))?;
        Ok(m)
    }

    pub fn set(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

impl Collector for PatroniMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        snap.series()
            .into_iter()
            .map(|(name, help, counter, value)| {
                let mut m = proto::Metric::default();
                m.set_label(self.labels.clone());
                let mut f = MetricFamily::default();
                if counter {
                    let mut c = proto::Counter::default();
                    c.set_value(value);
                    m.set_counter(c);
                    f.set_field_type(MetricType::COUNTER);
                } else {
                    let mut g = proto::Gauge::default();
                    g.set_value(value);
                    m.set_gauge(g);
                    f.set_field_type(MetricType::GAUGE);
                }
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_metric(vec![m]);
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aurora_api::repl::{Receiver, ServerState};

    fn replica() -> NodeStatus {
        NodeStatus {
            node: "backup".into(),
            state: NodeState::Replica,
            postgres: Some(ServerState {
                in_recovery: true,
                timeline: 3,
                receive_lsn: Some("0/3000060".parse().unwrap()),
                replay_lsn: Some("0/3000000".parse().unwrap()),
                server_version_num: Some(150_004),
                postmaster_start_time: Some(1_700_000_000.5),
                ..Default::default()
            }),
            receiver: Some(Receiver {
                status: "streaming".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_replica_reads_as_patroni_would_show_it() {
        let fleet = Fleet {
            sync_standby: true,
            last_contact: Some(1_700_000_100.7),
            ..Default::default()
        };
        let s = Snapshot::of(&replica(), fleet);
        assert!(s.replica && !s.primary && s.sync_standby && s.postgres_streaming);
        assert_eq!(s.xlog_location, 0);
        assert_eq!(s.xlog_received_location, 0x300_0060);
        assert_eq!(s.xlog_replayed_location, 0x300_0000);
        assert_eq!(
            (s.timeline, s.server_version, s.postgres_state),
            (3, 150_004, 5)
        );
        assert_eq!(s.dcs_last_seen, 1_700_000_100.0);
    }

    #[test]
    fn a_stopped_server_reports_zeroes_and_the_stopped_state() {
        let mut st = replica();
        st.state = NodeState::Stopped;
        let s = Snapshot::of(&st, Fleet::default());
        assert!(!s.postgres_running && !s.replica && !s.sync_standby);
        assert_eq!((s.timeline, s.server_version, s.postgres_state), (0, 0, 12));
        st.activity = Some("cloning from lead".into());
        assert_eq!(Snapshot::of(&st, Fleet::default()).postgres_state, 4);
    }

    #[test]
    fn the_exposition_has_patronis_names_types_and_labels() {
        let registry = prometheus::Registry::new();
        let m = PatroniMetrics::register(&registry, "aurora", "backup").unwrap();
        m.set(Snapshot::of(&replica(), Fleet::default()));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("# TYPE patroni_xlog_received_location counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE patroni_replica gauge"), "{text}");
        assert!(
            text.contains("patroni_replica{scope=\"aurora\",name=\"backup\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("patroni_postgres_timeline{scope=\"aurora\",name=\"backup\"} 3"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE patroni_").count(), 23);
    }
}

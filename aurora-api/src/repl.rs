//! repl-manager's answers: `GET /status` (and Patroni's check paths, which
//! answer the same document), `GET /cluster`, and the operations
//! (`POST /switchover`, `/promote`, `/demote`, `/pause`).
//!
//! Every struct a reader receives has `#[serde(default)]`: a field a newer
//! sidecar dropped from an optional section reads as empty, and a field it
//! added is ignored (see the crate's version rule).

use serde::{Deserialize, Serialize};

use crate::{wire_enum, Lsn, Role};

wire_enum! {
    /// What a node's PostgreSQL is now.
    #[derive(Default)]
    pub enum NodeState {
        Primary => "primary",
        Replica => "replica",
        /// Installed but not running.
        Stopped => "stopped",
        /// Running, but repl-manager cannot query it.
        Unreachable => "unreachable",
        /// No data directory yet.
        Uninitialized => "uninitialized",
        /// repl-manager has not looked yet.
        #[default]
        Starting => "starting",
    }
}

wire_enum! {
    /// The primary's synchronous replication, as it stands.
    #[derive(Default)]
    pub enum SyncMode {
        /// A synchronous standby confirms every commit.
        Sync => "sync",
        /// Commits are acknowledged by the primary alone.
        #[default]
        Async => "async",
        /// Strict mode without a standby: commits wait.
        Blocked => "blocked",
    }
}

/// What a node says about itself (`GET /status`); also how peers' answers
/// are read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub node: String,
    /// Configured role.
    pub role: Role,
    pub state: NodeState,
    pub epoch: i64,
    /// The primary this node follows (itself when primary).
    pub primary: String,
    pub postgres: Option<ServerState>,
    pub receiver: Option<Receiver>,
    /// Standby: bytes and seconds behind the primary's current position.
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// Why lag is unknown, when it is.
    pub lag_error: Option<String>,
    pub replicas: Vec<StandbyConn>,
    pub slots: Vec<Slot>,
    pub sync: Option<SyncView>,
    pub failover: Option<FailoverView>,
    pub aside_dirs: Vec<String>,
    pub activity: Option<String>,
    pub last_error: Option<String>,
    /// Set on the health-check paths' 503 answers: why the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl NodeStatus {
    pub fn is_primary(&self) -> bool {
        self.state == NodeState::Primary
    }

    pub fn is_replica(&self) -> bool {
        self.state == NodeState::Replica
    }

    pub fn replay_lsn(&self) -> Option<Lsn> {
        self.postgres.as_ref().and_then(|p| p.replay_lsn)
    }

    /// A primary's synchronous standby: `sync` mode with a standby and,
    /// where the leader key is kept on Raft, the committed sync key names
    /// it (from then on it may take over automatically).
    pub fn synchronous_standby(&self) -> Option<&str> {
        let sync = self.sync.as_ref().filter(|s| s.mode == SyncMode::Sync)?;
        let standby = sync.standby.as_deref()?;
        match self.failover.as_ref() {
            Some(f) if f.leader_key.is_some() && f.automatic => {
                (f.sync_key.as_deref() == Some(standby)).then_some(standby)
            }
            _ => Some(standby),
        }
    }

    /// A standby whose WAL receiver streams.
    pub fn streaming(&self) -> bool {
        self.receiver
            .as_ref()
            .is_some_and(|r| r.status == "streaming")
    }

    /// Fenced: a primary that acknowledges no write (no lease).
    pub fn fenced(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.fenced)
    }
}

/// The primary's synchronous replication (`/status` `sync`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncView {
    pub mode: SyncMode,
    /// The standby that confirms commits, when there is one.
    pub standby: Option<String>,
    pub strict: bool,
    /// Unix seconds since commits stopped being copied, while they are not.
    pub degraded_since: Option<f64>,
}

/// The failover section of `/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverView {
    pub automatic: bool,
    pub paused: bool,
    pub lease_remaining_secs: Option<f64>,
    pub fenced: bool,
    pub primary_seen_ago_secs: Option<f64>,
    pub report: Option<ReportView>,
    pub last_attempt: Option<String>,
    /// The leader key as this member has applied it (a fleet with
    /// automatic failover keeps it on the repl-managers' Raft group).
    pub leader_key: Option<LeaderKeyView>,
    /// The Raft leader this member knows of.
    pub raft_leader: Option<String>,
    /// Primary: why the last renewal of the leader key did not commit.
    pub key_trouble: Option<String>,
    /// The standby the committed sync key names: the one member that may
    /// take the leader key automatically.
    pub sync_key: Option<String>,
}

/// The leader key: who may be primary, at which epoch, and the log index
/// of its last renewal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaderKeyView {
    pub member: String,
    pub epoch: i64,
    pub revision: u64,
    /// The TTL (s) its holder counts its lease with at that renewal; no
    /// candidate takes the key sooner after it. 0: not recorded.
    pub ttl_secs: f64,
}

/// The primary's last lease request as a member remembers it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportView {
    pub epoch: i64,
    pub lsn: Option<Lsn>,
    pub sync_mode: SyncMode,
    pub sync_standby: Option<String>,
    pub age_secs: f64,
}

/// The server's own state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerState {
    pub in_recovery: bool,
    pub system_identifier: String,
    pub timeline: u32,
    /// The primary's insert position (primary only).
    pub current_lsn: Option<Lsn>,
    /// Standby only: WAL received and replayed.
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// Unix seconds of the last replayed transaction.
    pub last_replay_at: Option<f64>,
    pub synchronous_standby_names: String,
    /// Settings changed in the files that need a restart to apply.
    pub pending_restart: Vec<String>,
    /// Unix seconds the postmaster started.
    pub postmaster_start_time: Option<f64>,
    /// `server_version_num` (150004 for 15.4).
    pub server_version_num: Option<i32>,
    /// Standby: WAL replay paused (`pg_wal_replay_pause()`).
    pub replay_paused: bool,
}

/// A standby's WAL receiver (`pg_stat_wal_receiver`; `status` is
/// PostgreSQL's word).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Receiver {
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<i32>,
    pub slot_name: Option<String>,
    pub timeline: Option<i32>,
}

/// One standby connected to this primary (`pg_stat_replication`; `state`
/// and `sync_state` are PostgreSQL's words).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StandbyConn {
    /// The standby's `application_name`: its node name.
    pub name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sent_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// Bytes between the primary's current position and the standby's
    /// replay position.
    pub lag_bytes: Option<i64>,
    pub replay_lag_secs: Option<f64>,
    /// Seconds since the standby last replied. A standby replies every
    /// `wal_receiver_status_interval` (1 s) even when idle; a cut-off one
    /// stays listed as `streaming` until `wal_sender_timeout`, so this is
    /// how a dead one is told apart early.
    pub reply_age_secs: Option<f64>,
}

impl StandbyConn {
    pub fn is_streaming(&self) -> bool {
        self.state == "streaming"
    }

    /// Streaming, and heard from within the last 3 s.
    pub fn is_live(&self) -> bool {
        self.is_streaming() && self.reply_age_secs.is_some_and(|a| a < 3.0)
    }

    /// Confirms commits (`sync`, or `quorum` under ANY).
    pub fn is_synchronous(&self) -> bool {
        matches!(self.sync_state.as_str(), "sync" | "quorum")
    }
}

/// A replication slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Slot {
    pub name: String,
    pub slot_type: String,
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// WAL this slot holds back, in bytes.
    pub retained_bytes: Option<i64>,
}

/// `GET /liveness`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Liveness {
    pub alive: bool,
    pub last_pass_age_secs: f64,
}

/// `GET /cluster`: every member as the answering node sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterView {
    pub epoch: i64,
    pub primary: String,
    /// Unix seconds when this epoch began: the last bootstrap, switchover
    /// or failover (added in version 1; absent from older sidecars).
    pub epoch_changed_at: Option<f64>,
    pub members: Vec<ClusterMember>,
}

impl ClusterView {
    pub fn member(&self, name: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.status.node == name)
    }

    /// The member this view names as primary.
    pub fn primary_member(&self) -> Option<&ClusterMember> {
        self.member(&self.primary)
    }
}

/// `GET /history`: every change of hands of the leader key, as committed
/// on the fleet's Raft group and applied by the answering member, oldest
/// first (the last 100). Added in version 1; empty with `kept: false` where
/// the key is not kept on Raft (`failover.leader_key_on_raft = false`, or no
/// automatic failover).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    pub kept: bool,
    pub entries: Vec<HistoryEntry>,
    /// The answering node's PostgreSQL timeline history, oldest first:
    /// where each timeline ended (a promotion), from its `.history` file.
    pub timelines: Vec<TimelineSwitch>,
}

/// Timeline `timeline` ended at `switch_lsn`; the next one began there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimelineSwitch {
    pub timeline: u32,
    pub switch_lsn: Lsn,
    /// PostgreSQL's words (`no recovery target specified` for a promotion).
    pub reason: String,
}

/// One change of hands: from this epoch on, `primary` holds the key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryEntry {
    pub epoch: i64,
    pub primary: String,
    /// The holder before (none: an empty key, or the fleet's first).
    pub from: Option<String>,
    /// `acquired` (a failover, or the first key) or `handover` (a
    /// switchover); a value this build does not know is kept as it came.
    pub how: String,
    /// The Raft log index of the change.
    pub index: u64,
}

/// One member of [`ClusterView`]: its status, or why it did not answer
/// (`state` is then `unreachable` and `error` says why), and its admin
/// URL, so a client can reach the primary without a member list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterMember {
    #[serde(flatten)]
    pub status: NodeStatus,
    pub api_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /switchover`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The new primary; default: the synchronous standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub force: bool,
}

/// `POST /promote`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    #[serde(default)]
    pub force: bool,
    /// Set by a primary running a switchover: the epoch to promote at, the
    /// old primary, and its shutdown checkpoint, which must be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_lsn: Option<Lsn>,
}

/// `POST /demote`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoteRequest {
    /// The primary to follow.
    pub to: String,
}

/// What `/switchover`, `/promote` and `/demote` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpReport {
    pub operation: String,
    pub from: String,
    pub to: String,
    pub epoch: i64,
    /// Request to the new primary accepting writes.
    pub seconds_to_writable: Option<f64>,
    pub seconds_total: f64,
    pub checkpoint_lsn: Option<Lsn>,
    pub steps: Vec<String>,
    /// Each other standby and whether it streams from the new primary.
    pub followers: Vec<(String, bool)>,
}

/// `POST /failover` (Patroni's): make `candidate` the primary. While the
/// primary answers it is a switchover run by the primary; without one, a
/// promotion of the candidate, which needs `force` unless the candidate is
/// the synchronous standby the fleet committed, and says what it loses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    pub candidate: String,
    /// When given, the primary it must replace (Patroni's `leader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default)]
    pub force: bool,
}

/// `POST /restart` (Patroni's): restart this node's PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// Only when a changed setting waits for a restart.
    #[serde(default)]
    pub restart_pending: bool,
    /// Only when this node is `primary` or `replica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `POST /reinitialize` (Patroni's): a standby moves its data directory
/// aside and clones a fresh one from the primary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReinitializeRequest {
    /// Also while the standby streams within the lag limit (a healthy
    /// standby is refused without it: nothing to repair).
    #[serde(default)]
    pub force: bool,
}

/// What `/restart`, `/reload` and `/reinitialize` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaintenanceReport {
    pub operation: String,
    pub node: String,
    pub seconds: f64,
    /// What was done, in order.
    pub steps: Vec<String>,
    /// Settings still waiting for a restart afterwards.
    pub pending_restart: Vec<String>,
}

/// `POST /pause {"paused": true}`: maintenance mode, on every member
/// unless `local`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub paused: bool,
    #[serde(default)]
    pub local: bool,
}

/// What `/pause` answers: this node first, then each other member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PauseReport {
    pub paused: bool,
    /// The fleet's pause (or resume) committed to the Raft group: every
    /// member applies it, also one the request could not reach.
    pub committed: bool,
    pub members: Vec<PauseMember>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PauseMember {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_sidecars_status_is_read_its_additions_ignored() {
        // A state and a field this build does not know, and a section
        // (`receiver`) left out.
        let body = r#"{"node":"b","role":"backup","state":"rewinding","epoch":3,
            "primary":"a","brand_new":{"x":1},"sync":{"mode":"quorum","strict":false}}"#;
        let st: NodeStatus = serde_json::from_str(body).unwrap();
        assert_eq!(st.state, NodeState::Other("rewinding".into()));
        assert_eq!(st.state.to_string(), "rewinding");
        assert_eq!(st.role, Role::Backup);
        assert_eq!(st.sync.unwrap().mode.as_str(), "quorum");
        assert!(st.receiver.is_none());
    }

    #[test]
    fn a_cluster_member_that_did_not_answer_reads_with_its_error() {
        let body = r#"{"epoch":2,"primary":"a","members":[
            {"node":"a","role":"lead","state":"primary","api_url":"http://a"},
            {"node":"c","role":"compute","state":"unreachable","error":"timed out","api_url":"http://c"}]}"#;
        let c: ClusterView = serde_json::from_str(body).unwrap();
        assert!(c.primary_member().unwrap().status.is_primary());
        let m = c.member("c").unwrap();
        assert_eq!(m.error.as_deref(), Some("timed out"));
        assert_eq!(m.status.state, NodeState::Unreachable);
        // And written back the same way.
        let again: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(again["members"][1]["error"], "timed out");
        assert_eq!(again["members"][1]["node"], "c");
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let e = serde_json::from_str::<PromoteRequest>(r#"{"forse":true}"#).unwrap_err();
        assert!(e.to_string().contains("forse"), "{e}");
    }
}

/// `GET /config` (and the answer to `PATCH /config`): the timing and sync
/// policy every member of the fleet uses, as Patroni's `/config`. Added in
/// version 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetConfig {
    /// `fleet`: committed in the fleet's Raft group, the same on every
    /// member; `file`: this member's config file (a fleet without a Raft
    /// group, or none committed yet).
    pub source: String,
    /// The log index of the config's last change (0: none committed): pass
    /// it back in a `PATCH` to refuse a change made meanwhile.
    pub revision: u64,
    /// The fleet is paused (maintenance mode).
    pub pause: bool,
    pub failover: FailoverTiming,
    pub replication: ReplicationPolicy,
    /// Keys whose value in the answering member's config file differs
    /// from the one in force (the file's value is only the seed).
    pub file_differs: Vec<String>,
}

/// The failover timing in [`FleetConfig`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverTiming {
    pub timeout_secs: f64,
    pub probe_interval_secs: f64,
}

/// The replication policy in [`FleetConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationPolicy {
    pub loop_interval_secs: u64,
    pub sync_degrade_after_secs: u64,
    pub synchronous_strict: bool,
    pub max_lag_on_failover_bytes: u64,
}

/// `PATCH /config`: the keys to change (a JSON merge patch of
/// [`FleetConfig`]); the others keep their value. Unknown keys are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// Applies only if the config is still at this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverTimingPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationPolicyPatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverTimingPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_secs: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationPolicyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_degrade_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_strict: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_on_failover_bytes: Option<u64>,
}

impl ConfigPatch {
    /// Sets one key given as `section.key=value` (`aurora-cli config set`);
    /// the error names the key and what was wrong.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?}: expected KEY=VALUE"))?;
        let (key, value) = (key.trim(), value.trim());
        fn num<T: std::str::FromStr>(key: &str, v: &str, what: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("{key}: {v:?} is not {what}"))
        }
        let f = || FailoverTimingPatch::default();
        let r = || ReplicationPolicyPatch::default();
        match key {
            "pause" => self.pause = Some(num(key, value, "true or false")?),
            "failover.timeout_secs" => {
                self.failover.get_or_insert_with(f).timeout_secs =
                    Some(num(key, value, "a number of seconds")?)
            }
            "failover.probe_interval_secs" => {
                self.failover.get_or_insert_with(f).probe_interval_secs =
                    Some(num(key, value, "a number of seconds")?)
            }
            "replication.loop_interval_secs" => {
                self.replication.get_or_insert_with(r).loop_interval_secs =
                    Some(num(key, value, "a whole number of seconds")?)
            }
            "replication.sync_degrade_after_secs" => {
                self.replication
                    .get_or_insert_with(r)
                    .sync_degrade_after_secs = Some(num(key, value, "a whole number of seconds")?)
            }
            "replication.synchronous_strict" => {
                self.replication.get_or_insert_with(r).synchronous_strict =
                    Some(num(key, value, "true or false")?)
            }
            "replication.max_lag_on_failover_bytes" => {
                self.replication
                    .get_or_insert_with(r)
                    .max_lag_on_failover_bytes = Some(num(key, value, "a number of bytes")?)
            }
            other => {
                return Err(format!(
                    "{other:?} is not a fleet config key (one of: {})",
                    CONFIG_KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.pause.is_none() && self.failover.is_none() && self.replication.is_none()
    }
}

impl FleetConfig {
    /// Every key of [`CONFIG_KEYS`] with its value, as `config set` takes
    /// it.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let (f, r) = (&self.failover, &self.replication);
        vec![
            ("pause", self.pause.to_string()),
            ("failover.timeout_secs", f.timeout_secs.to_string()),
            (
                "failover.probe_interval_secs",
                f.probe_interval_secs.to_string(),
            ),
            (
                "replication.loop_interval_secs",
                r.loop_interval_secs.to_string(),
            ),
            (
                "replication.sync_degrade_after_secs",
                r.sync_degrade_after_secs.to_string(),
            ),
            (
                "replication.synchronous_strict",
                r.synchronous_strict.to_string(),
            ),
            (
                "replication.max_lag_on_failover_bytes",
                r.max_lag_on_failover_bytes.to_string(),
            ),
        ]
    }

    /// The text `aurora-cli config edit` opens: a comment, then one
    /// `key = value` line per key.
    pub fn editable(&self) -> String {
        let mut text = format!(
            "# The fleet's config (revision {}). Change values and save; lines you\n\
             # delete keep their value. The change is refused, with the reason, if it\n\
             # would break the failover timing.\n",
            self.revision
        );
        for (k, v) in self.values() {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    }
}

impl ConfigPatch {
    /// The keys whose value `text` (an edited [`FleetConfig::editable`])
    /// changes from `current`'s; the error names the line.
    pub fn from_edit(current: &FleetConfig, text: &str) -> Result<ConfigPatch, String> {
        let before = current.values();
        let mut patch = ConfigPatch::default();
        let mut seen = std::collections::BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| at(format!("{line:?}: expected KEY = VALUE")))?;
            let (key, value) = (key.trim(), value.trim());
            if !seen.insert(key.to_string()) {
                return Err(at(format!("{key} is given twice")));
            }
            let unchanged = before.iter().any(|(k, v)| *k == key && v == value);
            if !unchanged {
                patch.set(&format!("{key}={value}")).map_err(at)?;
            }
        }
        Ok(patch)
    }
}

/// The keys `PATCH /config` and `aurora-cli config set` take.
pub const CONFIG_KEYS: [&str; 7] = [
    "pause",
    "failover.timeout_secs",
    "failover.probe_interval_secs",
    "replication.loop_interval_secs",
    "replication.sync_degrade_after_secs",
    "replication.synchronous_strict",
    "replication.max_lag_on_failover_bytes",
];

#[cfg(test)]
mod config_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn current() -> FleetConfig {
        FleetConfig {
            source: "fleet".into(),
            revision: 7,
            pause: false,
            failover: FailoverTiming {
                timeout_secs: 5.0,
                probe_interval_secs: 1.0,
            },
            replication: ReplicationPolicy {
                loop_interval_secs: 5,
                sync_degrade_after_secs: 10,
                synchronous_strict: false,
                max_lag_on_failover_bytes: 16 << 20,
            },
            file_differs: vec![],
        }
    }

    #[test]
    fn an_edit_left_alone_changes_nothing_and_every_key_is_offered() {
        let c = current();
        let text = c.editable();
        for k in CONFIG_KEYS {
            assert!(text.contains(&format!("\n{k} = ")), "{k}: {text}");
        }
        assert!(ConfigPatch::from_edit(&c, &text).unwrap().is_empty());
        // Deleted lines keep their value.
        assert!(ConfigPatch::from_edit(&c, "").unwrap().is_empty());
    }

    #[test]
    fn an_edit_patches_only_what_changed() {
        let c = current();
        let text = c
            .editable()
            .replace("failover.timeout_secs = 5", "failover.timeout_secs = 8")
            .replace("synchronous_strict = false", "synchronous_strict = true");
        let p = ConfigPatch::from_edit(&c, &text).unwrap();
        assert_eq!(p.failover.unwrap().timeout_secs, Some(8.0));
        let r = p.replication.unwrap();
        assert_eq!(r.synchronous_strict, Some(true));
        assert_eq!(r.loop_interval_secs, None);
        assert_eq!(p.pause, None);
    }

    #[test]
    fn a_bad_edit_names_its_line() {
        let c = current();
        for (text, want) in [
            (
                "pause = maybe",
                "line 1: pause: \"maybe\" is not true or false",
            ),
            (
                "# x\nfailover.ttl = 3",
                "line 2: \"failover.ttl\" is not a fleet config key",
            ),
            ("pause", "line 1: \"pause\": expected KEY = VALUE"),
            (
                "pause = true\npause = false",
                "line 2: pause is given twice",
            ),
        ] {
            let e = ConfigPatch::from_edit(&c, text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}

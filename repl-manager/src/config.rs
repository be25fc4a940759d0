//! repl-manager's configuration: this node, its PostgreSQL, the replication
//! policy and the members of the fleet.

use std::path::PathBuf;

use cluster_db::{NodeName, Role};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sidecar_kit::{AdminConfig, ConfigError, LogConfig, Secret, Validate};

use crate::member::Member;

/// Default admin port of `repl-manager` (Patroni's, so HAProxy checks
/// written for Patroni work unchanged).
pub const DEFAULT_ADMIN_PORT: u16 = 8008;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub node: NodeConfig,
    pub postgres: PostgresConfig,
    pub replication: ReplicationConfig,
    pub failover: FailoverConfig,
    /// Every member of the fleet, this node included. In TOML an array of
    /// tables; in the environment (`AURORA_MEMBERS`) a comma-separated list
    /// of `name role host:port api-url`.
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name; must be one of `members`.
    pub name: String,
    /// Where the epoch and the primary this node last knew are kept
    /// (fsynced). Outside the data directory, which may be moved aside.
    pub state_file: PathBuf,
}

/// Who runs the PostgreSQL server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Supervision {
    /// repl-manager starts and stops the server with `pg_ctl` (tests, the
    /// sandbox, a bare-metal install).
    Process,
    /// Another process (the `postgres` container) runs the server on a
    /// shared data volume. repl-manager stops it by creating `hold_file` and
    /// lets it start again by removing it; see docs/repl-manager.md.
    External,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The data directory. In a container, a subdirectory of the volume, so
    /// it can be moved aside (a mount point cannot be renamed).
    pub data_dir: PathBuf,
    /// PostgreSQL's programs (`pg_ctl`, `pg_basebackup`, `pg_rewind`,
    /// `pg_controldata`). Empty: found next to `pg_config` or under
    /// `/usr/lib/postgresql/<version>/bin`.
    pub bin_dir: Option<PathBuf>,
    /// Where this node's server is reached by repl-manager itself.
    pub host: String,
    pub port: u16,
    /// `listen_addresses` written into the managed settings.
    pub listen_addresses: String,
    pub superuser: String,
    pub superuser_password: Option<Secret>,
    pub replication_user: String,
    pub replication_password: Secret,
    pub supervision: Supervision,
    /// `external` supervision: the file whose presence tells the postgres
    /// container to stop the server and keep it stopped.
    pub hold_file: PathBuf,
    /// When repl-manager runs as root, PostgreSQL's programs run as this OS
    /// user (PostgreSQL refuses to run as root).
    pub os_user: String,
    /// Server log (`process` supervision).
    pub log_file: Option<PathBuf>,
    /// Initialise the data directory (`initdb`) when this node is the lead
    /// of a fleet that never had a primary: no promotion recorded in the
    /// state file, an empty data directory, and no other member answering
    /// with a cluster of its own. Needs `superuser_password`. Off by
    /// default: a lead that lost its volume must be restored or cloned, not
    /// handed a new, empty cluster.
    pub initdb: bool,
    pub connect_timeout_secs: u64,
    /// How long a start or stop may take.
    pub start_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// `true`: without the synchronous standby, writes block. `false`
    /// (default, Patroni's non-strict mode): after `sync_degrade_after_secs`
    /// the primary degrades to asynchronous and the standby counts as out
    /// of sync until it has caught up.
    pub synchronous_strict: bool,
    pub sync_degrade_after_secs: u64,
    /// A replica further behind than this is not promoted (switchover,
    /// manual promote) unless forced.
    pub max_lag_on_failover_bytes: u64,
    /// Caps the WAL a replication slot may hold back, so a dead replica can
    /// never fill the primary's disk; its slot is invalidated instead and
    /// the replica re-clones.
    pub max_slot_wal_keep_size_bytes: u64,
    /// WAL kept regardless of slots: bridges the moment after a promotion
    /// when the new primary's slots are fresh.
    pub wal_keep_size_bytes: u64,
    /// Networks replicas connect from (`pg_hba` entries). Empty: each
    /// member's PostgreSQL address.
    #[serde(default)]
    pub allowed_networks: Vec<IpNet>,
    /// Networks any role may connect from with its password (scram), for
    /// every database: the VPN, and in the compose stack the container
    /// bridge that the host's published port arrives through. Empty: only
    /// what `initdb` allowed (loopback).
    #[serde(default)]
    pub client_networks: Vec<IpNet>,
    /// Seconds between reconciliations.
    pub loop_interval_secs: u64,
    /// A replica that has not streamed for this long repairs itself
    /// (rewind, then re-clone).
    pub repair_after_secs: u64,
    /// Limit for every step of a switchover.
    pub switchover_timeout_secs: u64,
    /// Timeout of calls to peers' repl-managers.
    pub peer_timeout_secs: u64,
}

/// Automatic failover (docs/repl-manager.md, "Failover").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Automatic failover and the primary's self-fencing. Off: only
    /// operator actions promote.
    pub enabled: bool,
    /// How often every node probes the primary, and the primary its
    /// members.
    pub probe_interval_secs: f64,
    /// The primary must have been unreachable this long (to the candidate
    /// and to a majority of members) before a promotion. The primary stops
    /// accepting writes `2 × probe_interval_secs` earlier when it cannot
    /// reach a majority.
    pub timeout_secs: f64,
    /// Members besides the backup that may be promoted automatically.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// A fleet of two (lead and backup) has no majority without both, so it
    /// never fails over automatically unless this is set. Set, the backup
    /// promotes when it loses the lead, and the lead does not fence itself:
    /// a network partition between the two then makes two primaries.
    pub allow_two_node: bool,
    /// Every epoch change through a leader key on the repl-managers' Raft
    /// group (docs/repl-manager.md, "The leader key"): closes #15's
    /// forgotten-promotion finding. On by default; off, the lease/vote
    /// protocol alone decides (as before the key). Ignored in a two-node
    /// fleet. All members must agree on it.
    #[serde(default = "default_leader_key_on_raft")]
    pub leader_key_on_raft: bool,
    /// Fault injection for the test suite: the process aborts at this step
    /// of a failover it runs as the candidate, or of a switchover it runs
    /// as the old primary or the target, once (a marker file beside
    /// `node.state_file` keeps it from aborting again after its restart).
    /// Never set in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_at: Option<CrashPoint>,
    /// Fault injection for the test suite: the operation waits at this
    /// step, every time, for three probe intervals and a loop interval, so
    /// every other round of this member and its peers sees what the step
    /// committed before the operation goes on (a slow link or a busy peer,
    /// made certain). Never set in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_at: Option<CrashPoint>,
}

/// A step of a promotion where `failover.crash_at` aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPoint {
    /// A majority voted; the leader key is not claimed yet.
    VotesGranted,
    /// The leader key is committed to this node; its epoch is not stored.
    KeyTaken,
    /// The epoch is stored; the server is not promoted yet.
    EpochStored,
    /// The server is promoted; no lease round or primary duty has run.
    Promoted,
    /// Switchover, on the old primary: its server stopped, the target
    /// caught up, the key handed to the target; the target not yet asked to
    /// promote.
    HandedOver,
    /// Switchover, on the target: the handed key seen; the epoch not stored.
    TargetKeySeen,
    /// Switchover, on the target: the server promoted; no lease round or
    /// primary duty has run.
    TargetPromoted,
}

impl CrashPoint {
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::VotesGranted => "votes_granted",
            CrashPoint::KeyTaken => "key_taken",
            CrashPoint::EpochStored => "epoch_stored",
            CrashPoint::Promoted => "promoted",
            CrashPoint::HandedOver => "handed_over",
            CrashPoint::TargetKeySeen => "target_key_seen",
            CrashPoint::TargetPromoted => "target_promoted",
        }
    }
}

fn default_leader_key_on_raft() -> bool {
    true
}

impl FailoverConfig {
    pub fn probe_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.probe_interval_secs)
    }
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_secs)
    }
    /// How long a primary keeps accepting writes after it last heard a
    /// majority promise not to vote: shorter than `timeout` by two probe
    /// intervals, so it has stopped before any vote can be granted.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_secs - 2.0 * self.probe_interval_secs)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: AdminConfig::on_port(DEFAULT_ADMIN_PORT),
            log: LogConfig::default(),
            node: NodeConfig {
                name: String::new(),
                state_file: PathBuf::from("/var/lib/aurora/repl-manager/state.json"),
            },
            postgres: PostgresConfig {
                data_dir: PathBuf::from("/var/lib/postgresql/data/pgdata"),
                bin_dir: None,
                host: "127.0.0.1".into(),
                port: 5432,
                listen_addresses: "*".into(),
                superuser: "postgres".into(),
                superuser_password: None,
                replication_user: "replicator".into(),
                replication_password: Secret::new(""),
                supervision: Supervision::Process,
                hold_file: PathBuf::from("/var/lib/postgresql/data/aurora.hold"),
                os_user: "postgres".into(),
                initdb: false,
                log_file: None,
                connect_timeout_secs: 3,
                start_timeout_secs: 120,
            },
            replication: ReplicationConfig {
                synchronous_strict: false,
                sync_degrade_after_secs: 10,
                max_lag_on_failover_bytes: 16 << 20,
                max_slot_wal_keep_size_bytes: 4 << 30,
                wal_keep_size_bytes: 256 << 20,
                allowed_networks: Vec::new(),
                client_networks: Vec::new(),
                loop_interval_secs: 1,
                repair_after_secs: 20,
                switchover_timeout_secs: 60,
                peer_timeout_secs: 2,
            },
            failover: FailoverConfig {
                enabled: true,
                probe_interval_secs: 1.0,
                timeout_secs: 5.0,
                candidates: Vec::new(),
                allow_two_node: false,
                leader_key_on_raft: default_leader_key_on_raft(),
                crash_at: None,
                stall_at: None,
            },
            members: Vec::new(),
        }
    }
}

fn is_sql_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && s.len() <= 63
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.admin.validate()?;
        self.log.validate()?;
        if self.node.name.is_empty() {
            return Err(ConfigError::new("node.name", "is required"));
        }
        NodeName::parse(&self.node.name)
            .map_err(|e| ConfigError::new("node.name", e.to_string()))?;
        if self.members.is_empty() {
            return Err(ConfigError::new(
                "members",
                "is required: every member of the fleet, this node included",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.members {
            if !seen.insert(m.name.as_str()) {
                return Err(ConfigError::new(
                    "members",
                    format!("{} is listed twice", m.name),
                ));
            }
        }
        if !self
            .members
            .iter()
            .any(|m| m.name.as_str() == self.node.name)
        {
            return Err(ConfigError::new(
                "node.name",
                format!("{:?} is not one of members", self.node.name),
            ));
        }
        let leads = self.members.iter().filter(|m| m.role == Role::Lead).count();
        if leads != 1 {
            return Err(ConfigError::new(
                "members",
                format!("exactly one member must have role lead (found {leads})"),
            ));
        }
        if self
            .members
            .iter()
            .filter(|m| m.role == Role::Backup)
            .count()
            > 1
        {
            return Err(ConfigError::new(
                "members",
                "at most one member may have role backup (the synchronous standby)",
            ));
        }
        let pg = &self.postgres;
        if !pg.data_dir.is_absolute() {
            return Err(ConfigError::new(
                "postgres.data_dir",
                "must be an absolute path",
            ));
        }
        if !self.node.state_file.is_absolute() {
            return Err(ConfigError::new(
                "node.state_file",
                "must be an absolute path",
            ));
        }
        if self.node.state_file.starts_with(&pg.data_dir) {
            return Err(ConfigError::new(
                "node.state_file",
                "must live outside postgres.data_dir (the data directory may be moved aside)",
            ));
        }
        for (key, user) in [
            ("postgres.superuser", &pg.superuser),
            ("postgres.replication_user", &pg.replication_user),
        ] {
            if !is_sql_identifier(user) {
                return Err(ConfigError::new(
                    key,
                    format!("{user:?} must be a plain SQL identifier (a-z, 0-9, _)"),
                ));
            }
        }
        if pg.replication_password.is_empty() {
            return Err(ConfigError::new(
                "postgres.replication_password",
                "is required (replicas authenticate with it)",
            ));
        }
        if pg.initdb && pg.superuser_password.as_ref().is_none_or(|p| p.is_empty()) {
            return Err(ConfigError::new(
                "postgres.initdb",
                "needs postgres.superuser_password (the new cluster's superuser authenticates with it)",
            ));
        }
        if pg.port == 0 {
            return Err(ConfigError::new("postgres.port", "must not be 0"));
        }
        if pg.listen_addresses.contains('\'') || pg.listen_addresses.contains('\n') {
            return Err(ConfigError::new(
                "postgres.listen_addresses",
                "may not contain quotes or newlines",
            ));
        }
        let r = &self.replication;
        for (key, v) in [
            ("replication.loop_interval_secs", r.loop_interval_secs),
            ("replication.repair_after_secs", r.repair_after_secs),
            (
                "replication.switchover_timeout_secs",
                r.switchover_timeout_secs,
            ),
            ("replication.peer_timeout_secs", r.peer_timeout_secs),
            ("postgres.connect_timeout_secs", pg.connect_timeout_secs),
            ("postgres.start_timeout_secs", pg.start_timeout_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        let f = &self.failover;
        for (key, v) in [
            ("failover.probe_interval_secs", f.probe_interval_secs),
            ("failover.timeout_secs", f.timeout_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::new(key, "must be a number of seconds"));
            }
        }
        // The timing and sync policy: the same rules as a change to the
        // fleet's committed config (tuning.rs), so a file that passes here
        // is a valid seed. #15 finding 4 (the degrade must come after the
        // TTL) matters only where a primary can be failed over
        // automatically.
        crate::tuning::from_file(self)
            .check_rules(self.automatic_failover() && self.members.len() >= 3)
            .map_err(|r| ConfigError::new(r.key, r.reason))?;
        for c in &f.candidates {
            if !self.members.iter().any(|m| m.name.as_str() == c) {
                return Err(ConfigError::new(
                    "failover.candidates",
                    format!("{c:?} is not one of members"),
                ));
            }
        }
        if r.max_slot_wal_keep_size_bytes < (64 << 20) {
            return Err(ConfigError::new(
                "replication.max_slot_wal_keep_size_bytes",
                "must be at least 64 MiB (a few WAL segments)",
            ));
        }
        Ok(())
    }

    fn env_list_keys() -> &'static [&'static str] {
        &[
            "members",
            "replication.allowed_networks",
            "replication.client_networks",
            "failover.candidates",
        ]
    }
}

sidecar_kit::sidecar_config!(Config);

impl Config {
    pub fn me(&self) -> &Member {
        // validate() guarantees the node is a member.
        self.members
            .iter()
            .find(|m| m.name.as_str() == self.node.name)
            .unwrap_or(&self.members[0])
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name.as_str() == name)
    }

    /// Every member but this node.
    pub fn others(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(move |m| m.name.as_str() != self.node.name)
    }

    /// May `m` be promoted automatically?
    pub fn promotable(&self, m: &Member) -> bool {
        !m.nofailover
            && (m.role == Role::Backup
                || self
                    .failover
                    .candidates
                    .iter()
                    .any(|c| c == m.name.as_str()))
    }

    /// Votes needed for a promotion (and for the primary's lease): a
    /// majority of all members, or 1 in an opted-in two-node fleet.
    pub fn majority(&self) -> usize {
        if self.members.len() == 2 && self.failover.allow_two_node {
            1
        } else {
            self.members.len() / 2 + 1
        }
    }

    /// Automatic failover and fencing are on: enabled, and a majority can
    /// exist without the primary.
    pub fn automatic_failover(&self) -> bool {
        self.failover.enabled && (self.members.len() >= 3 || self.failover.allow_two_node)
    }

    /// The member the fleet starts with as primary.
    pub fn lead(&self) -> &Member {
        self.members
            .iter()
            .find(|m| m.role == Role::Lead)
            .unwrap_or(&self.members[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_sql_identifier("replicator"));
        assert!(is_sql_identifier("_x1"));
        assert!(!is_sql_identifier("Repl"));
        assert!(!is_sql_identifier("a-b"));
        assert!(!is_sql_identifier("x'; drop"));
        assert!(!is_sql_identifier(""));
    }
}

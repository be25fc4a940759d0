//! health-monitor's answers: `GET /status` (this node's checks),
//! `GET /cluster` (the fleet as the local database sees it) and
//! `GET /cluster/health` (200 or 503 with the reasons). Also the body of
//! every sidecar's `GET /health`, which health-monitor reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{wire_enum, Role};

wire_enum! {
    /// A check's outcome (Consul's vocabulary).
    #[derive(Default)]
    pub enum CheckStatus {
        Passing => "passing",
        Warning => "warning",
        #[default]
        Critical => "critical",
    }
}

wire_enum! {
    /// A node of the fleet as this node sees it: its last report's status,
    /// `down` (marked, or its report is too old) or `unknown` (never
    /// reported).
    #[derive(Default)]
    pub enum FleetNodeStatus {
        Passing => "passing",
        Warning => "warning",
        Critical => "critical",
        Down => "down",
        #[default]
        Unknown => "unknown",
    }
}

/// `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorStatus {
    pub node: String,
    pub role: Role,
    /// The worst of the checks.
    pub status: CheckStatus,
    /// This node's row is in the registry.
    pub registered: bool,
    pub checks: Vec<CheckResult>,
    /// Why the last report to the primary failed, if it did.
    pub report_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckResult {
    pub name: String,
    pub status: CheckStatus,
    pub message: String,
    pub duration_ms: u64,
}

/// `GET /cluster`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetView {
    pub primary: Option<String>,
    pub epoch: i64,
    pub nodes: Vec<FleetNode>,
    /// Registry rows that failed validation.
    pub rejected: Vec<RejectedRow>,
    /// The writable primary and its standbys, asked directly.
    pub replication: PrimaryView,
}

impl FleetView {
    pub fn node(&self, name: &str) -> Option<&FleetNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetNode {
    pub name: String,
    pub role: Role,
    pub vpn_ip: String,
    pub status: FleetNodeStatus,
    pub report_age_secs: Option<f64>,
}

/// A registry row that was not trusted, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RejectedRow {
    /// The raw name as stored (may itself be the problem).
    pub name: String,
    pub reason: String,
}

/// The writable primary as health-monitor reached it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrimaryView {
    /// A writable primary answered through the read-write connection string.
    pub reachable: bool,
    pub error: Option<String>,
    pub standbys: Vec<StandbyView>,
}

/// One standby as the primary's `pg_stat_replication` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StandbyView {
    pub name: String,
    pub state: String,
    pub sync_state: String,
}

/// `GET /cluster/health`: 200 when `healthy`, 503 with the reasons.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetHealth {
    pub healthy: bool,
    pub reasons: Vec<String>,
}

wire_enum! {
    /// A sidecar's own state (`GET /health`).
    #[derive(Default)]
    pub enum SidecarHealth {
        #[default]
        Ok => "ok",
        /// Alive and serving, but something needs attention (answers 200).
        Degraded => "degraded",
        /// Not able to do its job (answers 503).
        Unhealthy => "unhealthy",
    }
}

/// Every sidecar's `GET /health`: a status, its reasons, and details of the
/// sidecar's own (ages, counters).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthBody {
    pub status: SidecarHealth,
    pub reasons: Vec<String>,
    #[serde(flatten)]
    pub details: BTreeMap<String, serde_json::Value>,
}

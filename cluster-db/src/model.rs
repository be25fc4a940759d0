//! Row types of schema `aurora`, with the validation every writer and
//! reader applies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DbError;

/// A node name: one DNS label (RFC 1123: 1–63 of `a-z0-9-`, no leading or
/// trailing dash), lowercase only so `Star` and `star` cannot both exist.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(name: &str) -> Result<Self, DbError> {
        validate_label(name)
            .map_err(|r| DbError::invalid("node name", format!("{name:?}: {r}")))?;
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks one DNS label; returns the rule it broke.
pub fn validate_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("may not start or end with '-'");
    }
    Ok(())
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeName {
    type Error = DbError;
    fn try_from(s: String) -> Result<Self, DbError> {
        NodeName::parse(&s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl FromStr for NodeName {
    type Err = DbError;
    fn from_str(s: &str) -> Result<Self, DbError> {
        NodeName::parse(s)
    }
}

/// Read from text through `FromStr`, so a bad value says what a role is
/// (`"leed" (expected lead, backup or compute)`), in a config or a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Role {
    Lead,
    Backup,
    Compute,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lead => "lead",
            Role::Backup => "backup",
            Role::Compute => "compute",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Role {
    type Error = DbError;
    fn try_from(s: String) -> Result<Self, DbError> {
        s.parse()
    }
}

impl FromStr for Role {
    type Err = DbError;
    fn from_str(s: &str) -> Result<Self, DbError> {
        match s {
            "lead" => Ok(Role::Lead),
            "backup" => Ok(Role::Backup),
            "compute" => Ok(Role::Compute),
            other => Err(DbError::invalid(
                "role",
                format!("{other:?} (expected lead, backup or compute)"),
            )),
        }
    }
}

/// A health status as health-monitor reports it (Consul's vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Passing,
    Warning,
    Critical,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }
}

impl FromStr for HealthStatus {
    type Err = DbError;
    fn from_str(s: &str) -> Result<Self, DbError> {
        match s {
            "passing" => Ok(HealthStatus::Passing),
            "warning" => Ok(HealthStatus::Warning),
            "critical" => Ok(HealthStatus::Critical),
            other => Err(DbError::invalid("health status", format!("{other:?}"))),
        }
    }
}

/// What a node says about itself when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub name: NodeName,
    pub role: Role,
    pub vpn_ip: IpAddr,
    pub wg_public_key: Option<String>,
    pub wg_endpoint: Option<String>,
    #[serde(default)]
    pub labels: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub gpus: Vec<serde_json::Value>,
    #[serde(default)]
    pub versions: serde_json::Map<String, serde_json::Value>,
}

impl NodeRegistration {
    /// The checks a writer applies before sending the row (the database
    /// applies the same ones as constraints).
    pub fn validate(&self) -> Result<(), DbError> {
        if let Some(key) = &self.wg_public_key {
            validate_wg_key(key)?;
        }
        if let Some(ep) = &self.wg_endpoint {
            validate_endpoint(ep)?;
        }
        if self.vpn_ip.is_unspecified() || self.vpn_ip.is_multicast() {
            return Err(DbError::invalid(
                "VPN IP",
                format!("{} is not a host address", self.vpn_ip),
            ));
        }
        Ok(())
    }
}

/// A WireGuard public key: 32 bytes, base64 (44 characters ending in `=`).
pub fn validate_wg_key(key: &str) -> Result<(), DbError> {
    let b = key.as_bytes();
    let ok = b.len() == 44
        && b[43] == b'='
        && b[..43]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        // The 43rd character encodes only 4 meaningful bits.
        && b"AEIMQUYcgkosw048".contains(&b[42]);
    if ok {
        Ok(())
    } else {
        Err(DbError::invalid(
            "WireGuard public key",
            "expected 44 characters of base64 (wg pubkey output)",
        ))
    }
}

/// A WireGuard endpoint: `host:port` with a sane host.
pub fn validate_endpoint(ep: &str) -> Result<(), DbError> {
    let bad = |r: &str| DbError::invalid("WireGuard endpoint", format!("{ep:?}: {r}"));
    if ep.len() > 255 {
        return Err(bad("too long"));
    }
    let (host, port) = ep
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("port must be 1-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("host must be an IP address or a DNS name"));
    }
    Ok(())
}

/// A registry row as read back, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: NodeName,
    pub role: Role,
    pub vpn_ip: IpAddr,
    pub wg_public_key: Option<String>,
    pub wg_endpoint: Option<String>,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub gpus: Vec<serde_json::Value>,
    pub versions: serde_json::Map<String, serde_json::Value>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Node> for NodeRegistration {
    /// What registering this node again would write (its row as it is).
    fn from(n: Node) -> Self {
        NodeRegistration {
            name: n.name,
            role: n.role,
            vpn_ip: n.vpn_ip,
            wg_public_key: n.wg_public_key,
            wg_endpoint: n.wg_endpoint,
            labels: n.labels,
            gpus: n.gpus,
            versions: n.versions,
        }
    }
}

/// A registry row that failed validation on read: reported, never served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The raw name as stored (may itself be the problem).
    pub name: String,
    pub reason: String,
}

/// The registry, split into rows that can be trusted and rows that cannot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeListing {
    pub nodes: Vec<Node>,
    pub rejected: Vec<RejectedRow>,
}

/// A node's latest health report, with its age measured by the server that
/// answered (so one clock decides staleness).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthRow {
    pub node: NodeName,
    pub status: HealthStatus,
    pub checks: serde_json::Value,
    pub reported_at: DateTime<Utc>,
    pub age_secs: f64,
    /// Set by a health-monitor when the report went stale (see
    /// `queries::mark_down`); cleared by the node's next report.
    #[serde(default)]
    pub down_since: Option<DateTime<Utc>>,
}

/// How the fleet decides that a node stopped reporting: its report is more
/// than `limit` seconds older than the freshest report of all — measured
/// from the freshest, not from now. When no report can be written (the
/// primary is gone and not yet replaced), every report ages together, and
/// that says nothing about the nodes; `frozen` says so. dns-sync and
/// health-monitor both judge with this one rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Staleness {
    freshest: f64,
    limit: f64,
}

impl Staleness {
    /// Over the ages (seconds) of every report in the registry.
    pub fn new(ages: impl IntoIterator<Item = f64>, limit: f64) -> Self {
        let freshest = ages.into_iter().fold(f64::INFINITY, f64::min);
        Self { freshest, limit }
    }

    /// The report of this age came more than `limit` before the freshest.
    pub fn is_stale(&self, age_secs: f64) -> bool {
        age_secs - self.freshest > self.limit
    }

    /// No report at all within `limit`: reports cannot be written.
    pub fn frozen(&self) -> bool {
        self.freshest.is_finite() && self.freshest > self.limit
    }
}

/// The single row of `aurora.cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub epoch: i64,
    pub primary: Option<NodeName>,
    pub changed_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub node: String,
    pub kind: String,
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_measured_from_the_freshest_report() {
        let s = Staleness::new([2.0, 40.0, 5.0], 30.0);
        assert!(s.is_stale(40.0) && !s.is_stale(5.0) && !s.frozen());
        // Everyone stopped 45 s ago: nobody is stale, the view is frozen.
        let s = Staleness::new([47.0, 85.0, 50.0], 30.0);
        assert!(s.is_stale(85.0) && !s.is_stale(50.0) && s.frozen());
        let none = Staleness::new([], 30.0);
        assert!(!none.frozen());
    }

    #[test]
    fn labels() {
        for ok in ["aurora", "star", "node-1", "a", "0"] {
            assert!(NodeName::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "-a",
            "a-",
            "Star",
            "a.b",
            "a_b",
            "ä",
            long.as_str(),
            "a b",
        ] {
            assert!(NodeName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wg_keys() {
        assert!(validate_wg_key("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").is_ok());
        assert!(validate_wg_key("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh=").is_err());
        assert!(validate_wg_key("short=").is_err());
        assert!(validate_wg_key("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZq\n8Dg=").is_err());
    }

    #[test]
    fn endpoints() {
        assert!(validate_endpoint("203.0.113.7:51820").is_ok());
        assert!(validate_endpoint("[2001:db8::1]:51820").is_ok());
        assert!(validate_endpoint("vpn.example.com:51820").is_ok());
        assert!(validate_endpoint("vpn.example.com").is_err());
        assert!(validate_endpoint("a;rm -rf:1").is_err());
        assert!(validate_endpoint("host:0").is_err());
    }
}

/// How the primary replicates to its synchronous standby right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Commits wait for the synchronous standby.
    Sync,
    /// Degraded: commits do not wait (the standby was away too long).
    Async,
    /// Strict mode without a standby: commits wait for one to come back.
    Blocked,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Sync => "sync",
            SyncMode::Async => "async",
            SyncMode::Blocked => "blocked",
        }
    }
}

impl FromStr for SyncMode {
    type Err = DbError;
    fn from_str(s: &str) -> Result<Self, DbError> {
        match s {
            "sync" => Ok(SyncMode::Sync),
            "async" => Ok(SyncMode::Async),
            "blocked" => Ok(SyncMode::Blocked),
            other => Err(DbError::invalid(
                "sync mode",
                format!("{other:?} (expected sync, async or blocked)"),
            )),
        }
    }
}

/// What the primary's repl-manager publishes in `aurora.replication`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationState {
    pub primary: NodeName,
    pub epoch: i64,
    pub sync_standby: Option<NodeName>,
    pub sync_mode: SyncMode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedReplication {
    #[serde(flatten)]
    pub state: ReplicationState,
    pub degraded_since: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

// The database's strict vocabulary as the HTTP contract writes it
// (`aurora_api` keeps values it does not know; the database refuses them).

impl From<Role> for aurora_api::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Lead => aurora_api::Role::Lead,
            Role::Backup => aurora_api::Role::Backup,
            Role::Compute => aurora_api::Role::Compute,
        }
    }
}

impl From<SyncMode> for aurora_api::repl::SyncMode {
    fn from(m: SyncMode) -> Self {
        match m {
            SyncMode::Sync => aurora_api::repl::SyncMode::Sync,
            SyncMode::Async => aurora_api::repl::SyncMode::Async,
            SyncMode::Blocked => aurora_api::repl::SyncMode::Blocked,
        }
    }
}

impl From<HealthStatus> for aurora_api::monitor::CheckStatus {
    fn from(s: HealthStatus) -> Self {
        match s {
            HealthStatus::Passing => aurora_api::monitor::CheckStatus::Passing,
            HealthStatus::Warning => aurora_api::monitor::CheckStatus::Warning,
            HealthStatus::Critical => aurora_api::monitor::CheckStatus::Critical,
        }
    }
}

impl From<RejectedRow> for aurora_api::monitor::RejectedRow {
    fn from(r: RejectedRow) -> Self {
        aurora_api::monitor::RejectedRow {
            name: r.name,
            reason: r.reason,
        }
    }
}

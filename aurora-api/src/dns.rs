//! dns-sync's answer: `GET /status`.

use serde::{Deserialize, Serialize};

/// `GET /status`. The zone's fields are empty until the first zone is
/// built.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsStatus {
    /// The zone, e.g. `aurora.internal`.
    pub zone: String,
    /// Where the DNS server listens.
    pub dns: Option<String>,
    /// The SOA serial of the zone being served.
    pub serial: Option<u32>,
    /// Owner names in the zone.
    pub records: Option<usize>,
    /// Nodes served as down (left out of the round-robin names).
    pub down: Option<Vec<String>>,
    /// No node has reported within `down_after_secs`: the down set is
    /// frozen, not grown.
    pub health_frozen: Option<bool>,
    /// Registry rows (or parts) not served, and why.
    pub skipped: Option<Vec<Skipped>>,
    pub last_refresh_age_secs: Option<f64>,
    pub last_error: Option<String>,
    /// Which database the zone came from: `local` or `fallback`.
    pub source: Option<String>,
}

/// A registry row (or part of one) that was not served, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
    pub detail: String,
}

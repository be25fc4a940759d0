//! asset-sync's answers: `GET /status` and `POST /sync`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AssetStatus {
    pub bucket: String,
    pub prefix: String,
    pub target_dir: String,
    pub interval_secs: u64,
    /// A pass is running now.
    pub running_pass: bool,
    pub progress: Progress,
    pub last_pass: Option<PassOutcome>,
    /// When the bucket was last listed completely, by this run or an
    /// earlier one: the age of what is served.
    pub mirror_listed_at: Option<DateTime<Utc>>,
}

/// The running pass so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub planned: u64,
    pub done: u64,
    pub bytes: u64,
}

/// A finished pass: its report, or why it failed (`POST /sync` answers
/// this too).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassOutcome {
    pub seq: u64,
    pub finished_at: Option<DateTime<Utc>>,
    pub report: Option<PassReport>,
    pub error: Option<String>,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassReport {
    pub ok: bool,
    /// The origin this pass listed and downloaded from.
    pub origin: String,
    /// When the listing this pass worked from was complete.
    pub listed_at: Option<DateTime<Utc>>,
    pub listed: u64,
    pub downloaded: u64,
    pub bytes_downloaded: u64,
    /// Local files that already matched (after a lost manifest), kept.
    pub adopted: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Keys not mirrored: unsafe (`rejected`) or filtered out (`filtered`).
    pub rejected: u64,
    pub filtered: u64,
    pub failed: u64,
    /// Objects overwritten between listing and download (fetched next pass).
    pub changed_during_pass: u64,
    pub verified_size_only: u64,
    /// Downloads by how they were verified.
    pub verified_by: BTreeMap<String, u64>,
    pub retries: u64,
    /// Rejected keys by reason.
    pub rejections: BTreeMap<String, u64>,
    /// Set when deletions were held back, with the reason.
    pub deletion_guard: Option<String>,
    pub local_files: u64,
    pub local_bytes: u64,
    pub duration_secs: f64,
    /// The first failures, each naming its key.
    pub errors: Vec<String>,
}

/// `POST /sync?wait=false`, or a pass that outlasted the wait: accepted,
/// see `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncTriggered {
    pub triggered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

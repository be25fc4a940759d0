//! asset-sync: a fast, atomic, checksum-true mirror of an S3 bucket.
//!
//! - [`pass`]: one pass (list → plan → download → guarded delete → manifest);
//! - [`download`]: `If-Match` GETs, verification, staging + rename;
//! - [`keys`]: which object keys may become local paths;
//! - [`manifest`]: what was published, for change detection without re-hashing;
//! - [`daemon`]: periodic passes, `POST /sync`, health and metrics;
//! - [`lock`]: one process per mirror;
//! - [`state`]: the state directory outside the target, checked at start.

mod api;
pub mod config;
pub mod daemon;
pub mod download;
pub mod fsio;
pub mod keys;
pub mod limiter;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod once;
pub mod pass;
pub mod s3;
pub mod state;

pub use config::Config;
pub use daemon::run;
pub use pass::{PassOptions, PassReport, Progress, Syncer};

pub(crate) use sidecar_kit::telemetry::random_u64;

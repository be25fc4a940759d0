//! What every Aurora sidecar shares, written once.
//!
//! - [`config`]: defaults → TOML file → `AURORA_*` environment, strict, with
//!   [`config::Secret`] for values that must never be printed;
//! - [`telemetry`]: tracing setup and a Prometheus registry with
//!   `aurora_build_info` and process metrics;
//! - [`admin`]: the admin HTTP server (`/health`, `/ready`, `/metrics`,
//!   `/status`, token-protected mutations);
//! - [`lifecycle`]: readiness and graceful shutdown on SIGTERM/SIGINT;
//! - [`cli`]: the `main` plumbing (`--config`, `--check-config`, exit codes);
//! - [`http_client`]: sidecar-to-sidecar HTTP calls;
//! - [`sidecar`]: the usual shape of a sidecar's `run`;
//! - [`proc`]: other processes on this host, by pid.

pub mod admin;
pub mod cli;
pub mod config;
pub mod http_client;
pub mod lifecycle;
pub mod proc;
pub mod sidecar;
pub mod telemetry;

pub use admin::{
    AdminApi, AdminRequest, AdminResponse, AdminServer, HealthReport, HealthStatus, Routed,
};
pub use config::{AdminConfig, ConfigError, LogConfig, Secret, SidecarConfig, Validate};
pub use lifecycle::Lifecycle;
pub use telemetry::Metrics;

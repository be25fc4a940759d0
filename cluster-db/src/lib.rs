//! The database contract between Aurora sidecars.
//!
//! Schema `aurora` lives in the fleet's PostgreSQL and reaches every node by
//! streaming replication. This crate owns it: the versioned migrations
//! ([`migrate`]), the row types with their validation ([`model`]) and the
//! typed queries ([`queries`]). Writes go to the current primary through a
//! multi-host connection string with `target_session_attrs=read-write`
//! ([`connect::write_target`]); reads use the local server.
//!
//! Rows read back are validated again: the registry is written by every node
//! and served as DNS and WireGuard config, so a bad row is reported and
//! skipped, never trusted.

pub mod connect;
pub mod dsn;
pub mod error;
pub mod join;
pub mod migrate;
pub mod model;
pub mod queries;

pub use connect::{connect, DbTarget};
pub use dsn::Dsn;
pub use error::DbError;
pub use migrate::{migrate, MigrationReport, MIGRATIONS};
pub use model::{
    ClusterState, Event, HealthRow, HealthStatus, Node, NodeListing, NodeName, NodeRegistration,
    PublishedReplication, RejectedRow, ReplicationState, Role, Staleness, SyncMode,
};

//! aurora-cli's integration tests, through the binary: the compose commands
//! (`compose`) and whole sandbox fleets (`sandbox`).
//!
//! One binary for the crate: one link, and shared helpers compiled once.

mod asset_origin;
mod compose;
mod sandbox;

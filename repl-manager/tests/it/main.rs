//! repl-manager's integration tests: fleets of real PostgreSQL servers, each
//! under an in-process repl-manager (`support`), and in network namespaces
//! for the fault tests (`support::ns`).
//!
//! One binary for the crate: one link, and shared helpers compiled once.

mod external;
mod failover;
mod fleet;
mod recovery;
mod refusals;
mod repair;
mod simulation;
mod support;

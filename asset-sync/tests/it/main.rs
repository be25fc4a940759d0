//! asset-sync's integration tests, against a real Garage: the sync passes
//! in-process (`sync`) and the binary as a process (`process`).
//!
//! One binary for the crate: one link, and shared helpers compiled once.

mod process;
mod sync;

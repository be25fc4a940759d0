//! The cross-binary tests: every binary's command line and config handling
//! (`binaries`), the installer's bats suite (`bootstrap`), the
//! operator docs' commands (`docs`), the compose stack's files (`compose_static`), the test
//! harness itself (`harness`), and the stack in real containers (`stack`).
//!
//! One binary for the crate: one link, and shared helpers compiled once.

mod binaries;
mod bootstrap;
mod compose_static;
mod docs;
mod harness;
mod stack;

//! fleet-state's tests: its store against openraft's own storage suite,
//! and whole groups of members in one process over a transport that can
//! cut links one way or both, black-hole them (no answer, no RST), and
//! crash and restart members from their stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

mod cluster;
mod http;
mod simulation;
mod storage;
mod support;

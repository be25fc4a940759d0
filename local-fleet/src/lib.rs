//! A fleet's parts as local processes, for `aurora-cli sandbox` (a whole
//! fleet on one machine) and, through `testbed`, for the tests and
//! benchmarks: PostgreSQL clusters started with `initdb` on free ports, a
//! Garage S3 server, the sidecar binaries as child processes, network
//! namespaces that give nodes their own addresses, and where the programs
//! they need are found. Never in-process fakes.
//!
//! Everything started here is torn down when its handle drops (also while a
//! panicking test unwinds), unless the handle was `detach`ed for the sandbox.
//! A component whose software is missing fails with [`Error::Missing`],
//! naming the command that installs it: nothing is skipped silently.

pub mod error;
pub mod garage;
pub mod netns;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod tools;

pub use error::Error;
pub use garage::Garage;
pub use ports::free_port;
pub use postgres::{PgCluster, PgOptions, StopMode};
pub use process::{SidecarProcess, SidecarSpec};

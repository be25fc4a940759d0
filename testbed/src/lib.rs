//! Real components for tests, benchmarks and `aurora-cli sandbox`: PostgreSQL
//! clusters started with `initdb` on free ports, a Garage S3 server, and the
//! sidecar binaries as child processes. Never in-process fakes.
//!
//! Everything started here is torn down when its handle drops (also while a
//! panicking test unwinds), unless the handle was `detach`ed for the sandbox.
//! A component whose software is missing fails with [`TestbedError::Missing`],
//! naming the command that installs it: a test never skips silently.

pub mod blackhole;
pub mod contract;
pub mod error;
pub mod garage;
pub mod netns;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod tmpfs;
pub mod tools;

pub use blackhole::Blackhole;
pub use error::TestbedError;
pub use garage::Garage;
pub use ports::free_port;
pub use postgres::{PgCluster, PgOptions, StopMode};
pub use process::{SidecarProcess, SidecarSpec};
pub use tmpfs::Tmpfs;

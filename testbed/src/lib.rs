//! The test harness. Real components come from `local-fleet` (re-exported
//! here whole, so a test names one crate); what only tests need lives here:
//! [`Blackhole`] (a host that vanished without a RST), [`Tmpfs`] (a full
//! disk, another mount), [`LoopFs`] (a disk that stalls) and [`contract`] (an endpoint read against the HTTP
//! contract). The operator's tools never depend on this crate.

pub mod blackhole;
pub mod contract;
pub mod loopfs;
pub mod tmpfs;

pub use local_fleet::{error, garage, netns, ports, postgres, process, tools};
pub use local_fleet::{
    free_port, Error as TestbedError, Garage, PgCluster, PgOptions, SidecarProcess, SidecarSpec,
    StopMode,
};

pub use blackhole::Blackhole;
pub use loopfs::LoopFs;
pub use tmpfs::Tmpfs;

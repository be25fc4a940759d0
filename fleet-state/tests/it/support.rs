//! The in-process group lives in `fleet_state::testkit` (the repl-manager
//! simulation uses it too).

pub use fleet_state::testkit::{name, peer, Group};

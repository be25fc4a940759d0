//! One module per group of commands.

pub mod asset_origin;
pub mod assets;
pub mod backup;
pub mod compose;
pub mod join;
pub mod replication;
pub mod status;

//! The operator's one tool for an Aurora fleet.
//!
//! Exit status: 0 on success, 1 on a failed operation, 2 on a usage or
//! config error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "aurora-cli",
    version = sidecar_kit::telemetry::long_version(),
    about = "The operator's one tool for an Aurora fleet.",
    after_help = "Example:\n  aurora-cli version"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version and the commit it was built from.
    ///
    /// Example: aurora-cli version
    Version,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("aurora-cli {}", sidecar_kit::telemetry::long_version());
            ExitCode::SUCCESS
        }
    }
}

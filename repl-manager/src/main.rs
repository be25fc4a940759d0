//! `repl-manager`: Sets up and keeps PostgreSQL streaming replication, switchover and failover.
//! All logic lives in the library so tests can run it in-process.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "repl-manager", version = sidecar_kit::telemetry::long_version(), about = "Sets up and keeps PostgreSQL streaming replication, switchover and failover.")]
struct Cli {
    #[command(flatten)]
    config: sidecar_kit::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<sidecar_kit::cli::DaemonCommand>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(sidecar_kit::cli::DaemonCommand::Run) {
        sidecar_kit::cli::DaemonCommand::Run => {
            sidecar_kit::cli::main_with("repl-manager", &cli.config, repl_manager::run)
        }
        sidecar_kit::cli::DaemonCommand::Healthcheck => {
            sidecar_kit::cli::healthcheck::<repl_manager::Config>("repl-manager", &cli.config)
        }
    }
}

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
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    #[command(flatten)]
    Daemon(sidecar_kit::cli::DaemonCommand),
    /// After the members holding the majority of the fleet's Raft group are
    /// gone for good, and `members` lists only the survivors: move this
    /// member's Raft store aside so the next start forms a new group
    /// (docs/runbooks/lost-majority.md). With repl-manager stopped.
    ResetFleetState,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli
        .command
        .unwrap_or(Command::Daemon(sidecar_kit::cli::DaemonCommand::Run))
    {
        Command::Daemon(sidecar_kit::cli::DaemonCommand::Run) => {
            sidecar_kit::cli::main_with("repl-manager", &cli.config, repl_manager::run)
        }
        Command::Daemon(sidecar_kit::cli::DaemonCommand::Healthcheck) => {
            sidecar_kit::cli::healthcheck::<repl_manager::Config>("repl-manager", &cli.config)
        }
        Command::ResetFleetState => repl_manager::reset_fleet_state(&cli.config),
    }
}

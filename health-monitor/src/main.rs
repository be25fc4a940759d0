//! `health-monitor`: Checks this node, reports it to the fleet registry and serves the fleet's health.
//! All logic lives in the library so tests can run it in-process.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "health-monitor", version = sidecar_kit::telemetry::long_version(), about = "Checks this node, reports it to the fleet registry and serves the fleet's health.")]
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
            sidecar_kit::cli::main_with("health-monitor", &cli.config, health_monitor::run)
        }
        sidecar_kit::cli::DaemonCommand::Healthcheck => {
            sidecar_kit::cli::healthcheck::<health_monitor::Config>("health-monitor", &cli.config)
        }
    }
}

//! `dns-sync`: Authoritative DNS for the cluster zone, built from the database.
//! All logic lives in the library so tests can run it in-process.

use std::process::ExitCode;

use clap::Parser;

/// Every answer allocates a little (the request, the response buffer);
/// under load glibc malloc's arena locks were ~10% of the profile.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "dns-sync", version = sidecar_kit::telemetry::long_version(), about = "Authoritative DNS for the cluster zone, built from the database.")]
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
            sidecar_kit::cli::main_with("dns-sync", &cli.config, dns_sync::run)
        }
        sidecar_kit::cli::DaemonCommand::Healthcheck => {
            sidecar_kit::cli::healthcheck::<dns_sync::Config>("dns-sync", &cli.config)
        }
    }
}

//! `asset-sync`: mirrors the asset bucket into the local cache. All logic
//! lives in the library so tests can run it in-process.

use std::process::ExitCode;

use asset_sync::{Config, PassOptions};
use clap::{Parser, Subcommand};
use sidecar_kit::cli::{self, ConfigArgs};

#[derive(Parser, Debug)]
#[command(
    name = "asset-sync",
    version = sidecar_kit::telemetry::long_version(),
    about = "Mirrors the asset bucket (S3/MinIO) into the local /assets cache.",
    after_help = "Examples:\n  AURORA_S3__BUCKET=assets AURORA_SYNC__TARGET_DIR=/assets asset-sync once\n  asset-sync --config /etc/aurora/asset-sync.toml run"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The daemon: a pass every interval, `POST /sync` for one now (default).
    Run,
    /// One pass, then exit: 0 on success, 1 if the pass failed.
    Once {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Delete even if the deletion guard holds back.
        #[arg(long)]
        force_delete: bool,
    },
    /// Ask the running daemon whether it is healthy (`GET /health` on the
    /// configured admin address): exit 0 on 200, 1 otherwise. The image's
    /// health check, which needs no shell.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Healthcheck = command {
        return cli::healthcheck::<Config>("asset-sync", &cli.config);
    }
    let config: Config = match cli::load_config("asset-sync", &cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.config.check_config {
        return cli::print_config("asset-sync", &config);
    }
    // Held until the process exits.
    let _lock = match asset_sync::once::claim_state(&config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match command {
        Command::Once { json, force_delete } => {
            sidecar_kit::telemetry::init_tracing(&config.log);
            asset_sync::once::run(config, json, PassOptions { force_delete })
        }
        Command::Run | Command::Healthcheck => {
            cli::run_daemon("asset-sync", config, asset_sync::run)
        }
    }
}

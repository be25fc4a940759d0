//! `asset-sync`: Mirrors the asset bucket (S3/MinIO) into the local /assets cache.
//! All logic lives in the library so tests can run it in-process.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "asset-sync", version = sidecar_kit::telemetry::long_version(), about = "Mirrors the asset bucket (S3/MinIO) into the local /assets cache.")]
struct Cli {
    #[command(flatten)]
    config: sidecar_kit::cli::ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sidecar_kit::cli::main_with("asset-sync", &cli.config, asset_sync::run)
}

//! `asset-sync`: mirrors the asset bucket into the local cache. All logic
//! lives in the library so tests can run it in-process.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use asset_sync::{Config, PassOptions, Progress, Syncer};
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
    let _lock = match lock(&config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = prepare_state(&config) {
        return code;
    }
    match command {
        Command::Once { json, force_delete } => {
            sidecar_kit::telemetry::init_tracing(&config.log);
            once(config, json, PassOptions { force_delete })
        }
        Command::Run | Command::Healthcheck => {
            cli::run_daemon("asset-sync", config, asset_sync::run)
        }
    }
}

/// One process per mirror: a second one exits 2, naming the holder.
fn lock(config: &Config) -> Result<asset_sync::lock::StateLock, ExitCode> {
    asset_sync::lock::StateLock::acquire(&config.sync.state_dir()).map_err(|e| {
        eprintln!("asset-sync: {e}");
        match e {
            asset_sync::lock::LockError::Held { .. } => ExitCode::from(cli::EXIT_CONFIG),
            asset_sync::lock::LockError::Io { .. } => ExitCode::from(cli::EXIT_FAILURE),
        }
    })
}

/// The state directory outside the target, checked before anything runs:
/// a target it cannot rename into is a configuration error (exit 2).
fn prepare_state(config: &Config) -> Result<(), ExitCode> {
    match asset_sync::state::prepare(&config.sync) {
        Ok(done) => {
            if done.removed_legacy {
                eprintln!(
                    "asset-sync: moved the state of an older version out of {} into {}",
                    config.sync.target_dir.display(),
                    config.sync.state_dir().display()
                );
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("asset-sync: {e}");
            Err(ExitCode::from(if e.is_config() {
                cli::EXIT_CONFIG
            } else {
                cli::EXIT_FAILURE
            }))
        }
    }
}

fn once(config: Config, json: bool, opts: PassOptions) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("asset-sync: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        let lifecycle = sidecar_kit::Lifecycle::new();
        let _ = sidecar_kit::lifecycle::install_signal_handlers(lifecycle.clone());
        let syncer = Syncer::new(config).await;
        let progress = Arc::new(Progress::default());
        let ticker = std::io::stderr().is_terminal().then(|| {
            let p = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    eprint!(
                        "\r{}/{} objects, {:.1} MiB",
                        p.done.load(Ordering::Relaxed),
                        p.planned.load(Ordering::Relaxed),
                        p.bytes.load(Ordering::Relaxed) as f64 / 1048576.0
                    );
                }
            })
        });
        let result = syncer.pass(opts, &lifecycle.token(), &progress).await;
        if let Some(t) = ticker {
            t.abort();
            eprint!("\r\x1b[K");
        }
        match result {
            Ok(report) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                } else {
                    println!(
                        "listed {} | downloaded {} ({:.1} MiB) | unchanged {} | adopted {} | deleted {} | rejected {} | filtered {} | failed {} | {:.2} s",
                        report.listed,
                        report.downloaded,
                        report.bytes_downloaded as f64 / 1048576.0,
                        report.unchanged,
                        report.adopted,
                        report.deleted,
                        report.rejected,
                        report.filtered,
                        report.failed,
                        report.duration_secs
                    );
                    for e in &report.errors {
                        eprintln!("asset-sync: {e}");
                    }
                    if let Some(g) = &report.deletion_guard {
                        eprintln!("asset-sync: {g} (re-run with --force-delete if this is intended)");
                    }
                }
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(cli::EXIT_FAILURE)
                }
            }
            Err(e) => {
                eprintln!("asset-sync: pass failed: {e}");
                ExitCode::from(cli::EXIT_FAILURE)
            }
        }
    })
}

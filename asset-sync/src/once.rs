//! `asset-sync once`, and what every start checks first: one process per
//! mirror, and a state directory the target can be renamed into.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sidecar_kit::cli;

use crate::{Config, PassOptions, Progress, Syncer};

/// Claims the mirror (held until the returned lock drops) and prepares the
/// state directory; an exit code when it cannot (2 for configuration).
pub fn claim_state(config: &Config) -> Result<crate::lock::StateLock, ExitCode> {
    let held = lock(config)?;
    prepare_state(config)?;
    Ok(held)
}

/// One process per mirror: a second one exits 2, naming the holder.
fn lock(config: &Config) -> Result<crate::lock::StateLock, ExitCode> {
    crate::lock::StateLock::acquire(&config.sync.state_dir()).map_err(|e| {
        eprintln!("asset-sync: {e}");
        match e {
            crate::lock::LockError::Held { .. } => ExitCode::from(cli::EXIT_CONFIG),
            crate::lock::LockError::Io { .. } => ExitCode::from(cli::EXIT_FAILURE),
        }
    })
}

/// The state directory outside the target, checked before anything runs:
/// a target it cannot rename into is a configuration error (exit 2).
fn prepare_state(config: &Config) -> Result<(), ExitCode> {
    match crate::state::prepare(&config.sync) {
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

/// `asset-sync once`: one pass, its report, exit 0 when it succeeded.
pub fn run(config: Config, json: bool, opts: PassOptions) -> ExitCode {
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

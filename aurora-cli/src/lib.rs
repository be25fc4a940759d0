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
    after_help = "Examples:\n  aurora-cli version\n  aurora-cli migrate --dsn 'host=10.0.0.1 user=aurora dbname=aurora'"
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
    /// Apply the `aurora` schema migrations on the primary (idempotent).
    ///
    /// repl-manager will do this on every start and promotion; until then,
    /// run it once against the lead before starting dns-sync or
    /// health-monitor.
    ///
    /// Example: aurora-cli migrate --dsn 'host=10.0.0.1 user=aurora dbname=aurora'
    Migrate {
        /// libpq connection string of the primary (or set AURORA_DSN).
        #[arg(long, env = "AURORA_DSN", hide_env_values = true)]
        dsn: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("aurora-cli {}", sidecar_kit::telemetry::long_version());
            ExitCode::SUCCESS
        }
        Command::Migrate { dsn } => migrate(&dsn),
    }
}

fn migrate(dsn: &str) -> ExitCode {
    let target = match cluster_db::DbTarget::parse(dsn) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("aurora-cli: --dsn: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aurora-cli: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let result = async {
            let mut client =
                cluster_db::connect(&target, std::time::Duration::from_secs(10)).await?;
            cluster_db::migrate(&mut client).await
        }
        .await;
        match result {
            Ok(r) if r.applied.is_empty() => {
                println!(
                    "schema aurora is current (version {}) on {}",
                    r.version, target.label
                );
                ExitCode::SUCCESS
            }
            Ok(r) => {
                println!(
                    "applied migrations {:?}; schema aurora is at version {} on {}",
                    r.applied, r.version, target.label
                );
                ExitCode::SUCCESS
            }
            Err(cluster_db::DbError::NotPrimary) => {
                eprintln!(
                    "aurora-cli: {} is a standby; run migrate against the primary (the lead)",
                    target.label
                );
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("aurora-cli: migrate failed: {e}");
                ExitCode::from(1)
            }
        }
    })
}

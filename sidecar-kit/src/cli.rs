//! The `main` plumbing every sidecar shares: the common flags, config
//! loading with exit status 2 on a bad config, and a daemon runner that turns
//! SIGTERM into a bounded graceful shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, SidecarConfig};
use crate::lifecycle::{install_signal_handlers, Lifecycle};
use crate::telemetry;

/// Exit status for a usage or config error (clap uses 2 as well).
pub const EXIT_CONFIG: u8 = 2;
/// Exit status for a failed operation.
pub const EXIT_FAILURE: u8 = 1;

/// Flags every binary takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Config file (TOML). Defaults to $AURORA_CONFIG; without either, built-in
    /// defaults and AURORA_* environment variables are used.
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the config, print the effective config (secrets redacted) and exit
    /// (0 when valid, 2 when not).
    #[arg(long, global = true)]
    pub check_config: bool,
}

/// What a daemon binary with no subcommands of its own can be asked to do.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonCommand {
    /// Run the daemon (the default).
    Run,
    /// Ask this node's running daemon whether it is healthy: `GET /health`
    /// on the admin address of the same config; exit 0 when it answers 200,
    /// 1 otherwise. For container health checks in images with no shell.
    Healthcheck,
}

/// `healthcheck`: the container health check of an image without a shell or
/// curl. It reads the same config as the daemon (file and environment) and
/// asks the daemon's `/health`; an unspecified listen address (`0.0.0.0`,
/// `::`) is asked on loopback.
pub fn healthcheck<C: SidecarConfig>(binary: &str, args: &ConfigArgs) -> ExitCode {
    let config: C = match load_config(binary, args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = health_url(config.admin().listen);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let client = crate::http_client::HttpClient::new(Duration::from_secs(3));
    match runtime.block_on(client.get(&url)) {
        Ok(resp) if resp.status.is_success() => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!("{binary}: {url} answered {}: {}", resp.status, resp.text());
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("{binary}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The URL of the health endpoint of a daemon listening on `listen`.
pub fn health_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!(
        "http://{}/health",
        std::net::SocketAddr::new(ip, listen.port())
    )
}

/// Looks an executable up on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    which_in(std::env::var_os("PATH").as_deref(), name)
}

/// Looks an executable up in `path` (a `PATH`-style list), for callers
/// that take the search path as an argument (and tests that give one).
pub fn which_in(path: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The directory of the newest PostgreSQL under `root` (Debian's
/// `/usr/lib/postgresql/<major>/bin`) that has `program`, runnable.
pub fn newest_pg_bin(root: &std::path::Path, program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            let runnable = bin
                .join(program)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            runnable.then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Loads and validates the config, or prints one line naming the bad key and
/// returns the exit code to use. Nothing has been bound or started yet.
pub fn load_config<C: SidecarConfig>(binary: &str, args: &ConfigArgs) -> Result<C, ExitCode> {
    let path = config::config_path(args.config.as_deref());
    config::load::<C>(path.as_deref()).map_err(|e| {
        eprintln!("{binary}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `--check-config`: print the effective config, secrets redacted.
pub fn print_config<C: SidecarConfig>(binary: &str, config: &C) -> ExitCode {
    match config::render(config) {
        Ok(text) => {
            println!(
                "# {binary} {}: effective config (secrets redacted)",
                telemetry::long_version()
            );
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{binary}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The whole `main` of a daemon: config (exit 2 on error), `--check-config`,
/// logging, a runtime, signal handling, then `run(config, lifecycle)`.
///
/// After the first SIGTERM/SIGINT, `run` has `admin.shutdown_timeout_secs` to
/// return; if it does not, the process exits 1 rather than hang a container
/// stop until Docker's SIGKILL.
pub fn main_with<C, F, Fut>(binary: &'static str, args: &ConfigArgs, run: F) -> ExitCode
where
    C: SidecarConfig,
    F: FnOnce(C, Lifecycle) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let config: C = match load_config(binary, args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.check_config {
        return print_config(binary, &config);
    }
    run_daemon(binary, config, run)
}

/// Runs an already-loaded config as a daemon (see [`main_with`]).
pub fn run_daemon<C, F, Fut>(binary: &'static str, config: C, run: F) -> ExitCode
where
    C: SidecarConfig,
    F: FnOnce(C, Lifecycle) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    telemetry::init_tracing(config.log());
    let grace = Duration::from_secs(config.admin().shutdown_timeout_secs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(binary)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async move {
        let lifecycle = Lifecycle::new();
        if let Err(e) = install_signal_handlers(lifecycle.clone()) {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(EXIT_FAILURE);
        }
        tracing::info!(version = telemetry::long_version(), "{binary} starting");
        let mut task = tokio::spawn(run(config, lifecycle.clone()));
        let outcome = tokio::select! {
            outcome = &mut task => outcome,
            _ = lifecycle.cancelled() => match tokio::time::timeout(grace, &mut task).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::error!(?grace, "in-flight work did not finish within admin.shutdown_timeout_secs; exiting anyway");
                    return ExitCode::from(EXIT_FAILURE);
                }
            },
        };
        match outcome {
            Ok(Ok(())) => {
                tracing::info!("{binary} stopped");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                tracing::error!("{binary} failed: {e:#}");
                ExitCode::from(EXIT_FAILURE)
            }
            Err(e) => {
                tracing::error!("{binary} crashed: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_url_asks_loopback_for_unspecified_addresses() {
        let url = |s: &str| health_url(s.parse().expect("address"));
        assert_eq!(url("0.0.0.0:8010"), "http://127.0.0.1:8010/health");
        assert_eq!(url("[::]:8010"), "http://[::1]:8010/health");
        assert_eq!(url("10.0.0.3:8011"), "http://10.0.0.3:8011/health");
    }
}

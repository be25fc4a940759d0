//! Starting, stopping and killing one sandbox node's processes: its
//! sidecars (detached, with pid files under `run/`) and the PostgreSQL that
//! its repl-manager runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use local_fleet::process::{cmdline_contains, pid_alive};
use local_fleet::{SidecarProcess, SidecarSpec, StopMode};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::state::NodeEntry;
use crate::error::{CliError, CliResult};

fn pid_file(node: &NodeEntry, sidecar: &str) -> PathBuf {
    node.run_dir().join(format!("{sidecar}.pid"))
}

/// The pid of `sidecar` on `node` when it is running.
pub fn sidecar_pid(node: &NodeEntry, sidecar: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(node, sidecar))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (pid_alive(pid) && cmdline_contains(pid, sidecar)).then_some(pid)
}

/// The postmaster's pid when PostgreSQL runs on `node`.
pub fn postmaster_pid(node: &NodeEntry) -> Option<u32> {
    local_fleet::postgres::postmaster_of(&node.postgres.data_dir)
}

fn admin_addr(url: &str) -> CliResult<SocketAddr> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| CliError::failed(format!("bad admin URL {url} in sandbox.json: {e}")))
}

/// Starts every sidecar of `node` that is not running, repl-manager first
/// (it starts PostgreSQL, which the others read) and health-monitor last
/// (its first report checks the others: started beside them, it reported
/// the node critical for one interval), and waits until each is ready.
/// Processes are detached: they outlive this command.
pub async fn start_node(node: &NodeEntry, timeout: Duration) -> CliResult<Vec<String>> {
    let mut started = start_sidecars(node, &["repl-manager"], timeout).await?;
    let middle: Vec<&str> = node
        .sidecars()
        .into_iter()
        .filter(|s| !matches!(*s, "repl-manager" | "health-monitor"))
        .collect();
    started.extend(start_sidecars(node, &middle, timeout).await?);
    started.extend(start_sidecars(node, &["health-monitor"], timeout).await?);
    Ok(started)
}

/// Starts those of `which` that are deployed on `node` and not running,
/// from the configs written at `up`, and waits until each is ready.
pub async fn start_sidecars(
    node: &NodeEntry,
    which: &[&str],
    timeout: Duration,
) -> CliResult<Vec<String>> {
    std::fs::create_dir_all(node.run_dir())
        .map_err(|e| CliError::failed(format!("creating {}: {e}", node.run_dir().display())))?;
    let mut started = Vec::new();
    let mut handles = Vec::new();
    for sidecar in node.sidecars() {
        if !which.contains(&sidecar) || sidecar_pid(node, sidecar).is_some() {
            continue;
        }
        let config_path = node.config_dir().join(format!("{sidecar}.toml"));
        let config_toml = std::fs::read_to_string(&config_path)
            .map_err(|e| CliError::failed(format!("reading {}: {e}", config_path.display())))?;
        let url = node.admin_url(sidecar).unwrap_or_default();
        let mut spec = SidecarSpec::new(sidecar, &node.config_dir(), admin_addr(url)?, config_toml);
        spec.log_dir = Some(node.logs());
        spec.netns = node.netns.clone();
        let p = SidecarProcess::spawn(spec)?;
        if let Some(pid) = p.pid() {
            std::fs::write(pid_file(node, sidecar), format!("{pid}\n"))
                .map_err(|e| CliError::failed(format!("writing the pid file of {sidecar}: {e}")))?;
        }
        handles.push(p);
        started.push(sidecar.to_string());
    }
    let mut first_error = None;
    for mut p in handles {
        let r = p.wait_ready(timeout).await;
        let _ = p.detach();
        if let (Err(e), None) = (r, &first_error) {
            first_error = Some(CliError::failed(format!("{}: {e}", node.name)));
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(started),
    }
}

/// SIGKILL to every process of the node, PostgreSQL's whole process group
/// included: what a power cut looks like to the rest of the fleet.
pub fn kill_node(node: &NodeEntry) -> Vec<String> {
    let mut killed = Vec::new();
    for sidecar in node.sidecars() {
        if let Some(pid) = sidecar_pid(node, sidecar) {
            if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                killed.push(sidecar.to_string());
            }
        }
    }
    if let Some(pid) = postmaster_pid(node) {
        let pid = Pid::from_raw(pid as i32);
        // repl-manager gives PostgreSQL its own process group; killing the
        // group takes the backends with the postmaster. Never our own group.
        let own = nix::unistd::getpgrp();
        match nix::unistd::getpgid(Some(pid)) {
            Ok(pgid) if pgid != own && pgid.as_raw() > 1 => {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            _ => {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        killed.push("postgres".into());
    }
    killed
}

/// SIGTERM to every sidecar (each finishes what it is doing), then a fast
/// shutdown of PostgreSQL.
pub async fn stop_node(node: &NodeEntry, timeout: Duration) -> CliResult<Vec<String>> {
    let mut stopped = Vec::new();
    let mut waiting = Vec::new();
    for sidecar in node.sidecars() {
        if let Some(pid) = sidecar_pid(node, sidecar) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            waiting.push((sidecar, pid));
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (sidecar, pid) in waiting {
        while pid_alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pid_alive(pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        stopped.push(sidecar.to_string());
    }
    if postmaster_pid(node).is_some() {
        let r = local_fleet::postgres::stop_data_dir(&node.postgres.data_dir, StopMode::Fast).await;
        // It may have exited on its own meanwhile (a lost lease stops it).
        if postmaster_pid(node).is_some() {
            r?;
        }
        stopped.push("postgres".into());
    }
    Ok(stopped)
}

/// SIGTERM, then SIGKILL after 10 s, to a process we started (`what` must
/// be in its command line: the pid may have been reused).
pub async fn stop_pid(pid: u32, what: &str) {
    let p = Pid::from_raw(pid as i32);
    if !pid_alive(pid) || !cmdline_contains(pid, what) {
        return;
    }
    let _ = kill(p, Signal::SIGTERM);
    for _ in 0..200 {
        if !pid_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = kill(p, Signal::SIGKILL);
}

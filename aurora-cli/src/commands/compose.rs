//! The commands that wrap `docker compose` in the node's compose project:
//! `logs`, `restart`, `ssh`, and `update` (a rolling update with rollback,
//! which is this project's own logic).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};

/// `docker` on `PATH`, run in the compose project directory.
pub struct Docker {
    bin: PathBuf,
    project_dir: PathBuf,
}

impl Docker {
    pub fn new(config: &NodeConfig) -> CliResult<Self> {
        let bin = sidecar_kit::cli::which("docker").ok_or_else(|| {
            CliError::usage(
                "`docker` is not on PATH; these commands drive the node's compose stack",
            )
        })?;
        let project_dir = config.compose.project_dir.clone();
        if !project_dir.is_dir() {
            return Err(CliError::usage(format!(
                "compose.project_dir {} is not a directory (set it in the node config)",
                project_dir.display()
            )));
        }
        const FILES: [&str; 4] = [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yaml",
            "docker-compose.yml",
        ];
        if !FILES.iter().any(|f| project_dir.join(f).is_file()) {
            return Err(CliError::usage(format!(
                "no compose file in {} (compose.project_dir): this node does not run the compose stack \
                 (a sandbox node runs its processes directly; see `aurora-cli sandbox status`)",
                project_dir.display()
            )));
        }
        Ok(Self { bin, project_dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).current_dir(&self.project_dir);
        c
    }

    /// Runs `docker <args>` and returns its trimmed stdout; a failure names
    /// the command and carries docker's own message.
    pub fn output(&self, args: &[&str]) -> CliResult<String> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| CliError::failed(format!("running docker: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(CliError::failed(format!(
                "`docker {}` failed ({}): {}",
                args.join(" "),
                out.status,
                err.lines().last().unwrap_or("").trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `docker <args>` attached to this terminal (logs -f, exec).
    pub fn attach(&self, args: &[&str]) -> CliResult {
        let status = self
            .command(args)
            .status()
            .map_err(|e| CliError::failed(format!("running docker: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(CliError::failed(format!(
                "`docker {}` exited with {status}",
                args.join(" ")
            )))
        }
    }

    /// The project's services, in the compose file's order.
    pub fn services(&self) -> CliResult<Vec<String>> {
        Ok(self
            .output(&["compose", "config", "--services"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Checks `service` against the project's services (exit 2 if unknown).
    pub fn known_service(&self, service: &str) -> CliResult {
        let services = self.services()?;
        if services.iter().any(|s| s == service) {
            Ok(())
        } else {
            Err(CliError::usage(format!(
                "unknown service `{service}` (services: {})",
                services.join(", ")
            )))
        }
    }

    fn container(&self, service: &str) -> CliResult<Option<String>> {
        let id = self.output(&["compose", "ps", "-q", service])?;
        Ok(id
            .lines()
            .next()
            .map(str::to_string)
            .filter(|s| !s.is_empty()))
    }

    /// `running healthy`, `running` (no health check), `exited`, …
    fn state(&self, container: &str) -> CliResult<String> {
        self.output(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            container,
        ])
    }
}

pub fn logs(
    config: &NodeConfig,
    service: Option<&str>,
    follow: bool,
    tail: Option<u32>,
) -> CliResult {
    let d = Docker::new(config)?;
    if let Some(s) = service {
        d.known_service(s)?;
    }
    let tail = tail.map(|t| t.to_string());
    let mut args = vec!["compose", "logs"];
    if follow {
        args.push("--follow");
    }
    if let Some(t) = &tail {
        args.extend(["--tail", t]);
    }
    args.extend(service);
    d.attach(&args)
}

pub fn restart(config: &NodeConfig, service: Option<&str>) -> CliResult {
    let d = Docker::new(config)?;
    if let Some(s) = service {
        d.known_service(s)?;
    }
    let started = Instant::now();
    let mut args = vec!["compose", "restart"];
    args.extend(service);
    d.output(&args)?;
    let timeout = Duration::from_secs(config.compose.health_timeout_secs);
    let targets = match service {
        Some(s) => vec![s.to_string()],
        None => d.services()?,
    };
    for s in &targets {
        if let Some(c) = d.container(s)? {
            wait_healthy(&d, s, &c, timeout)?;
        }
    }
    outln!(
        "restarted {} in {:.1} s",
        service.unwrap_or("every service"),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn ssh(config: &NodeConfig, service: &str) -> CliResult {
    let d = Docker::new(config)?;
    d.known_service(service)?;
    // bash where the image has it, else sh.
    d.attach(&[
        "compose",
        "exec",
        service,
        "sh",
        "-c",
        "command -v bash >/dev/null 2>&1 && exec bash || exec sh",
    ])
}

/// Waits until `container` is healthy (or running, when its image has no
/// health check and it stayed up for a few seconds).
fn wait_healthy(d: &Docker, service: &str, container: &str, timeout: Duration) -> CliResult {
    let deadline = Instant::now() + timeout;
    let mut running_since: Option<Instant> = None;
    loop {
        let state = d.state(container)?;
        let mut parts = state.split_whitespace();
        let status = parts.next().unwrap_or("");
        let health = parts.next();
        match (status, health) {
            ("running", Some("healthy")) => return Ok(()),
            ("running", Some("unhealthy")) => {
                return Err(CliError::failed(format!("{service} is unhealthy")))
            }
            ("running", None) => {
                let since = *running_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(5) {
                    return Ok(());
                }
            }
            ("running", Some(_)) | ("created", _) | ("restarting", _) => {}
            (other, _) => return Err(CliError::failed(format!("{service} is {other}"))),
        }
        if Instant::now() >= deadline {
            return Err(CliError::failed(format!(
                "{service} not healthy after {} s (state: {state})",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A service as it ran before the update: the image reference its
/// container was created from and the image id that reference named.
struct Before {
    service: String,
    image_ref: String,
    image_id: String,
}

/// `update`: pull, then recreate each service whose image changed, one at
/// a time, each waiting for its health check. If one fails, every service
/// recreated so far (and the failing one) goes back to its previous image,
/// newest first, and the command exits 1.
pub fn update(config: &NodeConfig, as_json: bool) -> CliResult {
    let d = Docker::new(config)?;
    let timeout = Duration::from_secs(config.compose.health_timeout_secs);
    let started = Instant::now();
    // Progress goes to stderr under --json, so stdout stays one document.
    let say = |line: String| {
        if as_json {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
    };
    let mut before = Vec::new();
    for service in d.services()? {
        let Some(c) = d.container(&service)? else {
            continue; // not running here: nothing to roll back to
        };
        let image_ref = d.output(&["inspect", "--format", "{{.Config.Image}}", &c])?;
        let image_id = d.output(&["inspect", "--format", "{{.Image}}", &c])?;
        before.push(Before {
            service,
            image_ref,
            image_id,
        });
    }
    say(format!("pulling images for {} services", before.len()));
    d.output(&["compose", "pull", "--quiet"])?;

    let mut updated: Vec<&Before> = Vec::new();
    let mut unchanged = Vec::new();
    let mut failure = None;
    for b in &before {
        let new_id = d.output(&["image", "inspect", "--format", "{{.Id}}", &b.image_ref])?;
        if new_id == b.image_id {
            unchanged.push(b.service.clone());
            continue;
        }
        say(format!(
            "updating {} ({} -> {})",
            b.service,
            short(&b.image_id),
            short(&new_id)
        ));
        updated.push(b);
        let result = d
            .output(&["compose", "up", "-d", "--no-deps", &b.service])
            .and_then(|_| {
                let c = d.container(&b.service)?.ok_or_else(|| {
                    CliError::failed(format!("{} has no container after `up`", b.service))
                })?;
                wait_healthy(&d, &b.service, &c, timeout)
            });
        if let Err(e) = result {
            failure = Some((b.service.clone(), e));
            break;
        }
        say(format!("  {} healthy", b.service));
    }

    let Some((failed, why)) = failure else {
        let names: Vec<&str> = updated.iter().map(|b| b.service.as_str()).collect();
        if as_json {
            crate::output::print_json(&serde_json::json!({
                "updated": names, "unchanged": unchanged, "rolled_back": [],
                "seconds": started.elapsed().as_secs_f64(),
            }));
        } else {
            outln!(
                "updated {} service(s) ({}), {} unchanged, in {:.1} s",
                names.len(),
                names.join(", "),
                unchanged.len(),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    };

    eprintln!("aurora-cli: {why}; rolling back");
    let mut rollback_errors = Vec::new();
    let mut rolled_back = Vec::new();
    for b in updated.iter().rev() {
        let r = d
            .output(&["tag", &b.image_id, &b.image_ref])
            .and_then(|_| d.output(&["compose", "up", "-d", "--no-deps", &b.service]))
            .and_then(|_| match d.container(&b.service)? {
                Some(c) => wait_healthy(&d, &b.service, &c, timeout),
                None => Ok(()),
            });
        match r {
            Ok(()) => {
                say(format!("  {} back on {}", b.service, short(&b.image_id)));
                rolled_back.push(b.service.clone());
            }
            Err(e) => rollback_errors.push(format!("{}: {e}", b.service)),
        }
    }
    if as_json {
        crate::output::print_json(&serde_json::json!({
            "updated": [], "failed": failed, "error": why.to_string(),
            "rolled_back": rolled_back, "rollback_errors": rollback_errors,
        }));
    }
    if rollback_errors.is_empty() {
        Err(CliError::failed(format!(
            "update failed at {failed} ({why}); rolled back {} to the previous images",
            rolled_back.join(", ")
        )))
    } else {
        Err(CliError::failed(format!(
            "update failed at {failed} ({why}) and rollback failed too: {}",
            rollback_errors.join("; ")
        )))
    }
}

/// `sha256:0123456789ab…` → `0123456789ab`.
fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

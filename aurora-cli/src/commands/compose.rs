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
    env_file: Option<PathBuf>,
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
        let env_file = match &config.compose.env_file {
            Some(f) if !f.is_file() => {
                return Err(CliError::usage(format!(
                    "compose.env_file {} does not exist",
                    f.display()
                )))
            }
            Some(f) => Some(f.clone()),
            None => Some(project_dir.join("node.env")).filter(|f| f.is_file()),
        };
        Ok(Self {
            bin,
            project_dir,
            env_file,
        })
    }

    /// `docker <args>`; `docker compose …` reads the node's env file.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        match (args.split_first(), &self.env_file) {
            (Some((&"compose", rest)), Some(env)) => {
                c.arg("compose").arg("--env-file").arg(env).args(rest);
            }
            _ => {
                c.args(args);
            }
        }
        c.current_dir(&self.project_dir);
        c
    }

    /// `program` in `service`'s running container (`docker compose exec -T`).
    pub fn exec_in(&self, service: &str, program: &str) -> crate::garage::GarageCli {
        let mut prefix = vec!["compose".to_string()];
        if let Some(env) = &self.env_file {
            prefix.push("--env-file".into());
            prefix.push(env.display().to_string());
        }
        prefix.extend(["exec", "-T", service, program].map(String::from));
        crate::garage::GarageCli::new(self.bin.clone(), prefix, Some(self.project_dir.clone()))
    }

    /// Runs `docker <args>` and returns its trimmed stdout; a failure names
    /// the command and carries docker's own message.
    pub fn output(&self, args: &[&str]) -> CliResult<String> {
        self.output_with(args, &[])
    }

    /// [`Docker::output`] with extra environment variables (compose reads
    /// them before its env file).
    pub fn output_with(&self, args: &[&str], env: &[(String, String)]) -> CliResult<String> {
        let out = self
            .command(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
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

    /// How often the container has been restarted, and its last exit code.
    fn restarts(&self, container: &str) -> CliResult<(u64, i64)> {
        let out = self.output(&[
            "inspect",
            "--format",
            "{{.RestartCount}} {{.State.ExitCode}}",
            container,
        ])?;
        let mut parts = out.split_whitespace();
        let count = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let code = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok((count, code))
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

pub fn restart(config: &NodeConfig, service: Option<&str>, json: bool) -> CliResult {
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
    let secs = started.elapsed().as_secs_f64();
    if json {
        crate::output::print_json(&serde_json::json!({ "restarted": targets, "seconds": secs }));
    } else {
        outln!(
            "restarted {} in {secs:.1} s",
            service.unwrap_or("every service")
        );
    }
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
        // A new container that already restarted is crash-looping: no
        // point waiting out the timeout.
        let (restarts, code) = d.restarts(container)?;
        if restarts > 0 {
            return Err(CliError::failed(format!(
                "{service} keeps exiting (status {code}, restarted {restarts} times)"
            )));
        }
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

/// What `update` was asked to do.
#[derive(Debug, Default)]
pub struct UpdateRequest {
    /// Only this service.
    pub service: Option<String>,
    /// Move `service` to this image (sets its `AURORA_IMAGE_*` variable).
    pub image: Option<String>,
    /// Pull first (not with `image`: it may exist only on this node).
    pub pull: bool,
}

/// The variable compose.yaml takes a service's image from:
/// `asset-sync` → `AURORA_IMAGE_ASSET_SYNC`.
pub fn image_var(service: &str) -> String {
    format!(
        "AURORA_IMAGE_{}",
        service.to_ascii_uppercase().replace('-', "_")
    )
}

impl Docker {
    /// Each enabled service's image reference as compose resolves it now
    /// (env file, then `env` on top).
    fn configured_images(
        &self,
        env: &[(String, String)],
    ) -> CliResult<std::collections::BTreeMap<String, String>> {
        let text = self.output_with(&["compose", "config", "--format", "json"], env)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError::failed(format!("`docker compose config` is not JSON: {e}")))?;
        let mut out = std::collections::BTreeMap::new();
        if let Some(services) = v["services"].as_object() {
            for (name, svc) in services {
                if let Some(image) = svc["image"].as_str() {
                    out.insert(name.clone(), image.to_string());
                }
            }
        }
        Ok(out)
    }

    fn image_id(&self, image_ref: &str) -> CliResult<Option<String>> {
        Ok(self
            .output(&["image", "inspect", "--format", "{{.Id}}", image_ref])
            .ok()
            .filter(|s| !s.is_empty()))
    }
}

/// Sets `key=value` in an env file (replacing the line, or appending it),
/// atomically and keeping the file's mode (it holds secrets).
pub fn set_env_var(path: &std::path::Path, key: &str, value: &str) -> CliResult {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| CliError::failed(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    let line = format!("{key}={value}");
    let mut found = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
                found = true;
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        lines.push(line);
    }
    let tmp = path.with_extension("aurora-tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n").map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// `update`: recreate each service whose configured image differs from the
/// image its container runs, one at a time, each waiting for its health
/// check. What a service should run is what compose resolves now (its
/// `AURORA_IMAGE_*` variable, after a pull) — not the container's old
/// reference, so a new tag is seen as the change it is. If one fails, every
/// service recreated so far (and the failing one) goes back to its previous
/// image, newest first, and the command exits 1. With `--image`, only that
/// service moves, and its variable is written to the env file once it is
/// healthy.
pub fn update(config: &NodeConfig, req: &UpdateRequest, as_json: bool) -> CliResult {
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
    if let Some(service) = &req.service {
        d.known_service(service)?;
    }
    let mut overrides: Vec<(String, String)> = vec![];
    if let (Some(service), Some(image)) = (&req.service, &req.image) {
        let var = image_var(service);
        overrides.push((var.clone(), image.clone()));
        let resolved = d.configured_images(&overrides)?;
        if resolved.get(service) != Some(image) {
            return Err(CliError::usage(format!(
                "compose.yaml does not take {service}'s image from {var}, so --image cannot set it"
            )));
        }
        if d.image_id(image)?.is_none() {
            say(format!("{image} is not on this node: pulling it"));
            d.output(&["pull", "--quiet", image]).map_err(|e| {
                CliError::failed(format!(
                    "image {image} is neither on this node nor pullable ({e}); `docker load` it first"
                ))
            })?;
        }
    }
    let mut before = Vec::new();
    for service in d.services()? {
        if req.service.as_ref().is_some_and(|s| *s != service) {
            continue;
        }
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
    if req.pull && req.image.is_none() {
        say(format!("pulling images for {} services", before.len()));
        let mut args = vec!["compose", "pull", "--quiet"];
        if let Some(s) = &req.service {
            args.push(s);
        }
        d.output(&args)?;
    }
    let targets = d.configured_images(&overrides)?;

    let mut updated: Vec<&Before> = Vec::new();
    let mut unchanged = Vec::new();
    let mut failure = None;
    for b in &before {
        let Some(target) = targets.get(&b.service) else {
            continue;
        };
        let new_id = d.image_id(target)?.ok_or_else(|| {
            CliError::failed(format!(
                "{}: image {target} is not on this node (pull it, or `docker load` it)",
                b.service
            ))
        })?;
        if new_id == b.image_id {
            unchanged.push(b.service.clone());
            continue;
        }
        say(format!(
            "updating {} ({} {} -> {} {})",
            b.service,
            b.image_ref,
            short(&b.image_id),
            target,
            short(&new_id)
        ));
        updated.push(b);
        let result = d
            .output_with(
                &["compose", "up", "-d", "--no-deps", &b.service],
                &overrides,
            )
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
        if let (Some((var, image)), false) = (overrides.first(), updated.is_empty()) {
            match &d.env_file {
                Some(f) => {
                    set_env_var(f, var, image)?;
                    say(format!("  {var}={image} recorded in {}", f.display()));
                }
                None => say(format!(
                    "  no env file: set {var}={image} where compose reads it, or the next `up` goes back"
                )),
            }
        }
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
        // The env file was not changed: compose resolves the old reference
        // again; re-tagging makes sure it still names the old image.
        let r = d
            .output(&["tag", &b.image_id, &b.image_ref])
            .and_then(|_| {
                d.output_with(
                    &["compose", "up", "-d", "--no-deps", &b.service],
                    &[(image_var(&b.service), b.image_ref.clone())],
                )
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_variables_follow_the_service_name() {
        assert_eq!(image_var("asset-sync"), "AURORA_IMAGE_ASSET_SYNC");
        assert_eq!(image_var("postgres"), "AURORA_IMAGE_POSTGRES");
    }

    #[test]
    fn env_file_lines_are_replaced_or_appended_keeping_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.env");
        std::fs::write(&f, "A=1\nAURORA_IMAGE_ASSET_SYNC=old:1\nB=x=y\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        set_env_var(&f, "AURORA_IMAGE_ASSET_SYNC", "new:2").unwrap();
        set_env_var(&f, "C", "3").unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "A=1\nAURORA_IMAGE_ASSET_SYNC=new:2\nB=x=y\nC=3\n"
        );
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

//! The local PostgreSQL server: its data directory and its programs, and
//! how it is started and stopped under either supervision.
//!
//! `process`: repl-manager runs `pg_ctl` itself.
//! `external`: another process (the `postgres` container) owns the server.
//! The contract with it is one file, `hold_file`: while it exists the
//! server must be stopped (it holds the shutdown mode, `fast` or
//! `immediate`) and must not be started; when it is removed the server may
//! start. repl-manager never signals a process it does not own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use sidecar_kit::Secret;

use crate::config::{PostgresConfig, Supervision};
use crate::lsn::Lsn;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Other(String),
}

impl ServerError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ServerError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How to stop the server (`pg_ctl -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint; on a primary, every WAL record is
    /// sent to the connected standbys before the server exits.
    Fast,
    /// No checkpoint; crash recovery on the next start.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// What `pg_controldata` says about a (stopped) data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    pub state: String,
    pub checkpoint_lsn: Lsn,
    pub timeline: u32,
    pub system_identifier: String,
}

#[derive(Clone)]
pub struct LocalServer {
    cfg: PostgresConfig,
    bindir: PathBuf,
    /// uid/gid PostgreSQL's programs run as (when we are root).
    owner: Option<(u32, u32)>,
}

impl LocalServer {
    pub fn new(cfg: &PostgresConfig) -> Result<Self, ServerError> {
        let bindir = match &cfg.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bindir().ok_or_else(|| {
                ServerError::Other(
                    "PostgreSQL's programs (pg_ctl, pg_basebackup, pg_rewind) were not found; \
                     set postgres.bin_dir"
                        .into(),
                )
            })?,
        };
        for program in ["pg_ctl", "pg_basebackup", "pg_rewind", "pg_controldata"] {
            if !bindir.join(program).exists() {
                return Err(ServerError::Other(format!(
                    "{} is missing from postgres.bin_dir {}",
                    program,
                    bindir.display()
                )));
            }
        }
        let owner = if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name(&cfg.os_user)
                .map_err(|e| ServerError::Other(format!("looking up {}: {e}", cfg.os_user)))?
                .ok_or_else(|| {
                    ServerError::Other(format!(
                        "postgres.os_user {:?} does not exist (PostgreSQL will not run as root)",
                        cfg.os_user
                    ))
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            bindir,
            owner,
        })
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.cfg
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// `true` once the data directory holds a cluster.
    pub fn has_data(&self) -> bool {
        self.cfg.data_dir.join("PG_VERSION").exists()
    }

    fn pid_file(&self) -> PathBuf {
        self.cfg.data_dir.join("postmaster.pid")
    }

    /// `true` when a postmaster runs on this data directory.
    pub async fn is_running(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(self.pid_file()) else {
            return false;
        };
        match self.cfg.supervision {
            Supervision::Process => text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok())
                .map(sidecar_kit::proc::pid_alive)
                .unwrap_or(false),
            // Another container's PID is meaningless here: ask the port.
            Supervision::External => self.port_open().await,
        }
    }

    async fn port_open(&self) -> bool {
        let addr = format!("{}:{}", self.cfg.host, self.cfg.port);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await,
            Ok(Ok(_))
        )
    }

    /// A command for one of PostgreSQL's programs, run as the data
    /// directory's owner.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.env("LC_ALL", "C")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(parent) = self.cfg.data_dir.parent() {
            cmd.current_dir(parent);
        }
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Runs a command to completion; returns its stdout, or an error with
    /// its output.
    pub async fn run(&self, cmd: Command, label: &str) -> Result<String, ServerError> {
        let (stdout, _) = self.output(cmd, label).await?;
        Ok(stdout)
    }

    /// Like [`LocalServer::run`], returning stdout and stderr together
    /// (pg_rewind reports what it did on stderr).
    pub async fn run_logged(&self, cmd: Command, label: &str) -> Result<String, ServerError> {
        let (stdout, stderr) = self.output(cmd, label).await?;
        Ok(last_lines(format!("{stdout}{stderr}").trim(), 6))
    }

    async fn output(&self, mut cmd: Command, label: &str) -> Result<(String, String), ServerError> {
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| ServerError::io(format!("running {label}"), e))?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() {
            return Ok((stdout, stderr));
        }
        Err(ServerError::Command {
            command: label.to_string(),
            status: out.status.to_string(),
            output: last_lines(format!("{stdout}{stderr}").trim(), 6),
        })
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self) -> Result<(), ServerError> {
        match self.cfg.supervision {
            Supervision::Process => {
                let log = self.log_file();
                if !log.exists() {
                    std::fs::write(&log, b"")
                        .map_err(|e| ServerError::io(format!("creating {}", log.display()), e))?;
                    self.chown(&log)?;
                }
                let mut cmd = self.command("pg_ctl");
                cmd.arg("-D")
                    .arg(&self.cfg.data_dir)
                    .arg("-l")
                    .arg(&log)
                    .args([
                        "-w",
                        "-t",
                        &self.cfg.start_timeout_secs.to_string(),
                        "start",
                    ])
                    // Its own process group: a signal meant for repl-manager's
                    // group (a supervisor stopping the sidecar) must not reach
                    // the postmaster. PostgreSQL outlives repl-manager.
                    .process_group(0);
                if let Err(e) = self.run(cmd, "pg_ctl start").await {
                    return Err(ServerError::Other(format!(
                        "{e}; server log {}:\n{}",
                        log.display(),
                        last_lines(&std::fs::read_to_string(&log).unwrap_or_default(), 8)
                    )));
                }
                Ok(())
            }
            Supervision::External => {
                match std::fs::remove_file(&self.cfg.hold_file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ServerError::io("removing the hold file", e)),
                }
                self.wait(true).await
            }
        }
    }

    /// Stops the server and waits until it is gone.
    pub async fn stop(&self, mode: StopMode) -> Result<(), ServerError> {
        match self.cfg.supervision {
            Supervision::Process => {
                if !self.is_running().await {
                    return Ok(());
                }
                let mut cmd = self.command("pg_ctl");
                cmd.arg("-D").arg(&self.cfg.data_dir).args([
                    "-w",
                    "-t",
                    &self.cfg.start_timeout_secs.to_string(),
                    "-m",
                    mode.as_str(),
                    "stop",
                ]);
                self.run(cmd, "pg_ctl stop").await.map(|_| ())
            }
            Supervision::External => {
                self.hold(mode)?;
                self.wait(false).await
            }
        }
    }

    /// `external`: asks the supervisor to stop the server and keep it
    /// stopped. The hold file is written atomically so the supervisor never
    /// reads half a mode.
    fn hold(&self, mode: StopMode) -> Result<(), ServerError> {
        let tmp = self.cfg.hold_file.with_extension("tmp");
        std::fs::write(&tmp, mode.as_str())
            .and_then(|()| std::fs::rename(&tmp, &self.cfg.hold_file))
            .map_err(|e| ServerError::io(format!("writing {}", self.cfg.hold_file.display()), e))
    }

    /// `external`: makes sure the supervisor will not start the server
    /// (before repl-manager rewrites or replaces the data directory).
    pub fn hold_if_external(&self) -> Result<(), ServerError> {
        if self.cfg.supervision == Supervision::External {
            self.hold(StopMode::Fast)?;
        }
        Ok(())
    }

    async fn wait(&self, up: bool) -> Result<(), ServerError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.cfg.start_timeout_secs);
        loop {
            let running = if up {
                self.is_running().await
            } else {
                self.pid_file().exists()
            };
            if running == up {
                return Ok(());
            }
            // A start whose hold file came back meanwhile will not happen:
            // another step (a fence, in the failover loop) stopped the
            // server again. Waiting out the timeout for it left a rejoining
            // old primary down for 120 s at a time (seen in CI: a fence
            // racing a standby start). Say so; the next pass starts it.
            if up && self.cfg.supervision == Supervision::External && self.cfg.hold_file.exists() {
                return Err(ServerError::Other(format!(
                    "the start was called off: {} is back (another step stopped the server meanwhile)",
                    self.cfg.hold_file.display()
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::Other(format!(
                    "PostgreSQL did not {} within {} s (supervision external)",
                    if up { "start" } else { "stop" },
                    self.cfg.start_timeout_secs
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_file(&self) -> PathBuf {
        self.cfg.log_file.clone().unwrap_or_else(|| {
            self.cfg
                .data_dir
                .parent()
                .unwrap_or(Path::new("/tmp"))
                .join("postgresql.log")
        })
    }

    /// `pg_controldata` of the (stopped) data directory.
    pub async fn control_data(&self) -> Result<ControlData, ServerError> {
        let mut cmd = self.command("pg_controldata");
        cmd.arg("-D").arg(&self.cfg.data_dir);
        let out = self.run(cmd, "pg_controldata").await?;
        parse_control_data(&out)
    }

    /// Hands `path` to the server's OS user (when we are root).
    pub fn chown(&self, path: &Path) -> Result<(), ServerError> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| ServerError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Writes a file inside the data directory atomically, owned by the
    /// server's user, mode 0600.
    pub fn write_file(&self, path: &Path, contents: &str) -> Result<(), ServerError> {
        let tmp = path.with_extension("aurora-tmp");
        std::fs::write(&tmp, contents)
            .map_err(|e| ServerError::io(format!("writing {}", tmp.display()), e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ServerError::io(format!("chmod {}", tmp.display()), e))?;
        self.chown(&tmp)?;
        std::fs::rename(&tmp, path)
            .map_err(|e| ServerError::io(format!("renaming to {}", path.display()), e))
    }

    /// Moves the data directory aside (never deletes it) and leaves an
    /// empty one in its place. Returns where the old one went.
    pub fn move_aside(&self) -> Result<Option<PathBuf>, ServerError> {
        let data = &self.cfg.data_dir;
        let mut moved = None;
        if data.exists()
            && std::fs::read_dir(data)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let name = format!(
                "{}.aside-{stamp}",
                data.file_name().and_then(|n| n.to_str()).unwrap_or("data")
            );
            let target = data.with_file_name(name);
            std::fs::rename(data, &target)
                .map_err(|e| ServerError::io(format!("moving {} aside", data.display()), e))?;
            moved = Some(target);
        }
        self.ensure_empty_data_dir()?;
        Ok(moved)
    }

    /// Creates the data directory (mode 0700, owned by the server's user)
    /// when it does not exist.
    pub fn ensure_empty_data_dir(&self) -> Result<(), ServerError> {
        let data = &self.cfg.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| ServerError::io(format!("creating {}", data.display()), e))?;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ServerError::io(format!("chmod {}", data.display()), e))?;
        self.chown(data)
    }

    /// Creates a new cluster in the (empty) data directory: data checksums,
    /// UTF-8, the superuser authenticating with `password` over TCP and by
    /// peer over the local socket. Under external supervision the hold file
    /// is in place first, so the postgres container does not start a
    /// half-written cluster.
    pub async fn initdb(&self, superuser: &str, password: &Secret) -> Result<(), ServerError> {
        self.hold_if_external()?;
        self.ensure_empty_data_dir()?;
        let parent = self.cfg.data_dir.parent().unwrap_or(Path::new("/tmp"));
        let pwfile = parent.join(".aurora-initdb-pw");
        self.write_file(&pwfile, password.expose())?;
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.cfg.data_dir)
            .arg("--username")
            .arg(superuser)
            .arg("--pwfile")
            .arg(&pwfile)
            .args([
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--data-checksums",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]);
        let result = self.run(cmd, "initdb").await;
        let _ = std::fs::remove_file(&pwfile);
        result.map(|_| ())
    }

    /// Data directories moved aside by earlier repairs (kept for the
    /// operator; reported so they are not forgotten).
    pub fn aside_dirs(&self) -> Vec<PathBuf> {
        let data = &self.cfg.data_dir;
        let (Some(parent), Some(name)) = (data.parent(), data.file_name().and_then(|n| n.to_str()))
        else {
            return Vec::new();
        };
        let prefix = format!("{name}.aside-");
        let mut out: Vec<PathBuf> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }
}

fn find_bindir() -> Option<PathBuf> {
    if let Some(bin) = sidecar_kit::cli::newest_pg_bin(Path::new("/usr/lib/postgresql"), "pg_ctl") {
        return Some(bin);
    }
    let found = sidecar_kit::cli::which("pg_ctl")?;
    let resolved = std::fs::canonicalize(&found).unwrap_or(found);
    resolved.parent().map(Path::to_path_buf)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

pub fn parse_control_data(out: &str) -> Result<ControlData, ServerError> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim_start_matches(':').trim())
            })
            .ok_or_else(|| ServerError::Other(format!("pg_controldata printed no {name:?}")))
    };
    let checkpoint_lsn = field("Latest checkpoint location")?
        .parse()
        .map_err(ServerError::Other)?;
    let timeline = field("Latest checkpoint's TimeLineID")?
        .parse()
        .map_err(|_| ServerError::Other("pg_controldata: bad TimeLineID".into()))?;
    Ok(ControlData {
        state: field("Database cluster state")?.to_string(),
        checkpoint_lsn,
        timeline,
        system_identifier: field("Database system identifier")?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under external supervision a start removes the hold file and waits
    /// for the server; when another step (a fence) writes the hold file
    /// back meanwhile, the supervisor will not start it, and the start must
    /// say so at once instead of waiting out `start_timeout_secs` (which
    /// left a rejoining old primary down for two minutes in CI). No
    /// supervisor runs here: nothing starts, as with the hold file back.
    #[tokio::test]
    async fn an_external_start_whose_hold_file_comes_back_is_called_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::default().postgres;
        cfg.supervision = Supervision::External;
        cfg.hold_file = dir.path().join("aurora.hold");
        cfg.data_dir = dir.path().join("data");
        cfg.bin_dir = Some(testbed::tools::pg_bindir().unwrap());
        cfg.host = "127.0.0.1".into();
        cfg.port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        cfg.start_timeout_secs = 30;
        let server = LocalServer::new(&cfg).unwrap();
        std::fs::write(&cfg.hold_file, "fast").unwrap();
        let hold = cfg.hold_file.clone();
        let fence = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::fs::write(hold, "immediate").unwrap();
        });
        let e = server.start().await.unwrap_err().to_string();
        fence.await.unwrap();
        assert!(e.contains("called off"), "{e}");
    }

    #[test]
    fn reads_pg_controldata() {
        let out = "pg_control version number:            1300\n\
                   Database system identifier:           7441234567890123456\n\
                   Database cluster state:               shut down\n\
                   Latest checkpoint location:           0/3000028\n\
                   Latest checkpoint's REDO location:    0/3000028\n\
                   Latest checkpoint's TimeLineID:       2\n";
        let c = parse_control_data(out).unwrap();
        assert_eq!(c.state, "shut down");
        assert_eq!(c.checkpoint_lsn.to_string(), "0/3000028");
        assert_eq!(c.timeline, 2);
        assert_eq!(c.system_identifier, "7441234567890123456");
        assert!(parse_control_data("nothing").is_err());
    }
}

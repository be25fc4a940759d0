//! Sidecar binaries as child processes: a generated config file, a log file,
//! readiness by polling `/ready`, and SIGTERM/SIGKILL on demand or on drop.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sidecar_kit::http_client::HttpClient;

use crate::error::{log_tail, Error};
use crate::tools::workspace_bin;

/// What to start.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    /// Binary name in this workspace (`dns-sync`).
    pub binary: String,
    /// Arguments before `--config` (a subcommand such as `run`).
    pub args: Vec<String>,
    /// The config file's contents (TOML); written next to the log.
    pub config_toml: String,
    /// Extra environment (`AURORA_*` overrides, `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// The admin address in the config, for the readiness poll.
    pub admin_addr: SocketAddr,
    /// Directory for `<binary>.toml` (and `<binary>.log` unless `log_dir`).
    pub dir: PathBuf,
    /// Directory for `<binary>.log` when it is not `dir` (the sandbox keeps
    /// logs apart from configs, which hold secrets).
    pub log_dir: Option<PathBuf>,
    /// Run inside this network namespace (`ip netns exec`), root only.
    pub netns: Option<String>,
}

impl SidecarSpec {
    pub fn new(binary: &str, dir: &Path, admin_addr: SocketAddr, config_toml: String) -> Self {
        Self {
            binary: binary.to_string(),
            args: Vec::new(),
            config_toml,
            env: Vec::new(),
            admin_addr,
            dir: dir.to_path_buf(),
            log_dir: None,
            netns: None,
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

pub struct SidecarProcess {
    name: String,
    child: Option<Child>,
    admin_addr: SocketAddr,
    log_path: PathBuf,
    config_path: PathBuf,
    detached: bool,
}

impl SidecarProcess {
    /// Writes the config and starts the binary. Does not wait for readiness.
    pub fn spawn(spec: SidecarSpec) -> Result<Self, Error> {
        let bin = workspace_bin(&spec.binary)?;
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| Error::io(format!("creating {}", spec.dir.display()), e))?;
        let config_path = spec.dir.join(format!("{}.toml", spec.binary));
        write_private(&config_path, &spec.config_toml)?;
        let log_dir = spec.log_dir.as_ref().unwrap_or(&spec.dir);
        std::fs::create_dir_all(log_dir)
            .map_err(|e| Error::io(format!("creating {}", log_dir.display()), e))?;
        let log_path = log_dir.join(format!("{}.log", spec.binary));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io("cloning a log handle", e))?;

        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => std::process::Command::new(&bin),
        };
        // The written config (and `spec.env`) is the whole config: no
        // `AURORA_*` variable of the calling shell (a token exported for
        // aurora-cli, `AURORA_SANDBOX_DIR`, a stray override) reaches it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AURORA_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(&spec.args)
            .arg("--config")
            .arg(&config_path)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a Ctrl-C aimed at the test runner or the
            // CLI does not reach it; we decide when it stops.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        Ok(Self {
            name: spec.binary,
            child: Some(child),
            admin_addr: spec.admin_addr,
            log_path,
            config_path,
            detached: false,
        })
    }

    /// [`SidecarProcess::spawn`], then wait for `/ready` (up to `timeout`).
    pub async fn start(spec: SidecarSpec, timeout: Duration) -> Result<Self, Error> {
        let mut p = Self::spawn(spec)?;
        p.wait_ready(timeout).await?;
        Ok(p)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Polls `/ready` until it answers 200; fails early, with the log's tail,
    /// if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let client = HttpClient::new(Duration::from_secs(2));
        let url = format!("{}/ready", self.admin_url());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(Error::Exited {
                    what: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_path.clone(),
                    tail: log_tail(&self.log_path, 30),
                });
            }
            if let Ok(resp) = client.get(&url).await {
                if resp.status.is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} ({url})", self.name),
                    secs: timeout.as_secs(),
                    log: Some((self.log_path.clone(), log_tail(&self.log_path, 30))),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exit status if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        match self.child.as_mut() {
            Some(c) => c
                .try_wait()
                .map_err(|e| Error::io(format!("checking {}", self.name), e)),
            None => Ok(None),
        }
    }

    /// Sends a signal (SIGTERM for a graceful stop, SIGKILL for a crash).
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Other(format!("{} is not running", self.name)))?;
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| Error::Other(format!("signalling {}: {e}", self.name)))
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to exit", self.name),
                    secs: timeout.as_secs(),
                    log: Some((self.log_path.clone(), log_tail(&self.log_path, 20))),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(timeout).await
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Leaves the process running when this handle drops (the sandbox).
    pub fn detach(mut self) -> Option<u32> {
        self.detached = true;
        self.child.take().map(|c| c.id())
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        if !self.detached {
            self.kill();
        }
    }
}

/// Writes a file only its owner can read (configs hold tokens and passwords).
pub fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// `/proc/<pid>/cmdline` contains `needle`: the pid still names the process
/// we mean, not a stranger that reused the number.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

pub use sidecar_kit::proc::pid_alive;

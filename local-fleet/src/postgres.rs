//! PostgreSQL clusters made with `initdb`, each on its own port and in its own
//! directory, so a test can run a primary and several replicas side by side.
//!
//! PostgreSQL refuses to run as root. When the testbed runs as root (CI does),
//! every PostgreSQL program runs as the `postgres` OS user and the cluster's
//! directory is handed to that user.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

use crate::error::{log_tail, Error};
use crate::ports::free_port_on;
use crate::tools::pg_bindir;

/// The OS user PostgreSQL programs run as when we are root.
pub const PG_OS_USER: &str = "postgres";

/// How to stop a server (`pg_ctl -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients, checkpoint.
    Smart,
    /// Disconnect clients, checkpoint.
    Fast,
    /// Crash-like: no checkpoint, crash recovery on the next start.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A label for logs and directory names (`aurora`, `star`).
    pub name: String,
    /// The address PostgreSQL listens on.
    pub listen: IpAddr,
    /// A fixed port, or `None` for a free one.
    pub port: Option<u16>,
    /// Extra `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
    /// Keep the cluster under this directory instead of a temporary one
    /// (the sandbox); `None` means a temp dir removed on drop.
    pub dir: Option<PathBuf>,
}

impl PgOptions {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            settings: Vec::new(),
            dir: None,
        }
    }

    pub fn setting(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }
}

/// Who owns the cluster's files and runs its programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: Uid,
    pub gid: Gid,
}

impl Owner {
    /// `None` when we are not root (programs run as ourselves); the
    /// `postgres` user when we are.
    pub fn for_postgres() -> Result<Option<Owner>, Error> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let user = User::from_name(PG_OS_USER)
            .map_err(|e| Error::Other(format!("looking up user {PG_OS_USER}: {e}")))?
            .ok_or_else(|| Error::Missing {
                what: format!("the `{PG_OS_USER}` OS user (PostgreSQL will not run as root)"),
                install: "apt-get install -y postgresql".into(),
            })?;
        Ok(Some(Owner {
            uid: user.uid,
            gid: user.gid,
        }))
    }

    /// Hands `path` (not recursively) to this owner.
    pub fn chown(&self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .map_err(|e| Error::io(format!("chown {}", path.display()), e))
    }
}

enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

/// One PostgreSQL cluster (a data directory and, when started, its server).
pub struct PgCluster {
    name: String,
    root: Root,
    data_dir: PathBuf,
    log_path: PathBuf,
    listen: IpAddr,
    port: u16,
    bindir: PathBuf,
    owner: Option<Owner>,
    detached: bool,
}

impl PgCluster {
    /// Creates the cluster's directory and runs `initdb` (data checksums on,
    /// trust auth on the local address, superuser `postgres`). Not started.
    pub async fn init(opts: PgOptions) -> Result<Self, Error> {
        let mut cluster = Self::empty(opts.clone())?;
        cluster.initdb().await?;
        cluster.write_settings(&opts.settings)?;
        Ok(cluster)
    }

    /// [`PgCluster::init`] and start.
    pub async fn start_new(opts: PgOptions) -> Result<Self, Error> {
        let mut cluster = Self::init(opts).await?;
        cluster.start().await?;
        Ok(cluster)
    }

    /// A cluster directory with an empty data directory (for a replica that
    /// will be cloned with `pg_basebackup`). Nothing runs yet.
    pub fn empty(opts: PgOptions) -> Result<Self, Error> {
        let bindir = pg_bindir()?;
        let owner = Owner::for_postgres()?;
        let root = match &opts.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                Root::Kept(dir.clone())
            }
            None => Root::Temp(
                tempfile::Builder::new()
                    .prefix(&format!("aurora-pg-{}-", opts.name))
                    .tempdir()
                    .map_err(|e| Error::io("creating a temp dir", e))?,
            ),
        };
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
        set_mode(&data_dir, 0o700)?;
        if let Some(owner) = owner {
            owner.chown(root.path())?;
            owner.chown(&data_dir)?;
        }
        let port = match opts.port {
            Some(p) => p,
            None => free_port_on(opts.listen)?,
        };
        Ok(Self {
            log_path: root.path().join("postgres.log"),
            name: opts.name,
            root,
            data_dir,
            listen: opts.listen,
            port,
            bindir,
            owner,
            detached: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn host(&self) -> IpAddr {
        self.listen
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }

    /// A libpq connection string for the superuser.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname} connect_timeout=5",
            self.listen, self.port
        )
    }

    /// Connects as the superuser to `dbname`.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, Error> {
        let (client, conn) = tokio_postgres::connect(&self.dsn(dbname), tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::Other(format!("connecting to {}: {e}", self.name)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// A command for one of PostgreSQL's programs, run as the cluster's owner.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(self.root.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(o) = self.owner {
            cmd.uid(o.uid.as_raw()).gid(o.gid.as_raw());
        }
        cmd
    }

    async fn initdb(&mut self) -> Result<(), Error> {
        let data = self.data_dir.display().to_string();
        let mut cmd = self.command("initdb");
        cmd.args([
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--data-checksums",
            "--no-instructions",
            "--no-sync",
        ]);
        run(cmd, "initdb").await
    }

    fn write_settings(&self, extra: &[(String, String)]) -> Result<(), Error> {
        use std::io::Write;
        let conf = self.data_dir.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| Error::io(format!("opening {}", conf.display()), e))?;
        // No Unix socket: every client (tests, pg_basebackup, pg_rewind)
        // connects over TCP, exactly as nodes of a fleet do.
        let mut text = format!(
            "\n# testbed\nlisten_addresses = '{}'\nport = {}\nunix_socket_directories = ''\n\
             max_connections = 50\nshared_buffers = 32MB\nlogging_collector = off\n",
            self.listen, self.port
        );
        for (k, v) in extra {
            text.push_str(&format!("{k} = {v}\n"));
        }
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(format!("writing {}", conf.display()), e))
    }

    /// Starts the server and waits until it accepts connections. The port and
    /// address are passed on the command line so they win over a
    /// `postgresql.conf` cloned from another node.
    pub async fn start(&mut self) -> Result<(), Error> {
        // The log file must be writable by the server's user.
        if !self.log_path.exists() {
            std::fs::write(&self.log_path, b"")
                .map_err(|e| Error::io("creating the postgres log", e))?;
            if let Some(o) = self.owner {
                o.chown(&self.log_path)?;
            }
        }
        let data = self.data_dir.display().to_string();
        let log = self.log_path.display().to_string();
        let opts = format!(
            "-p {} -c listen_addresses={} -c unix_socket_directories=",
            self.port, self.listen
        );
        let mut cmd = self.command("pg_ctl");
        cmd.args([
            "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
        ]);
        // pg_ctl's server must outlive this handle's process group on
        // `detach`; it daemonizes itself, so no extra care is needed here.
        if let Err(e) = run(cmd, "pg_ctl start").await {
            return Err(Error::Other(format!(
                "{e}\nlast lines of {}:\n{}",
                self.log_path.display(),
                log_tail(&self.log_path, 15)
            )));
        }
        Ok(())
    }

    /// Stops the server.
    pub async fn stop(&mut self, mode: StopMode) -> Result<(), Error> {
        stop_data_dir(&self.data_dir, mode).await
    }

    /// The postmaster's PID, from `postmaster.pid`, if the file exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// `true` when the postmaster of this data directory is alive.
    pub fn is_running(&self) -> bool {
        postmaster_of(&self.data_dir).is_some()
    }

    /// SIGKILLs the postmaster (a crash). Its children notice the dead
    /// postmaster and exit on their own within a moment.
    pub fn kill(&self) -> Result<(), Error> {
        let pid = self
            .postmaster_pid()
            .ok_or_else(|| Error::Other(format!("{} is not running", self.name)))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| Error::Other(format!("killing {}: {e}", self.name)))
    }

    /// A hot standby of `primary`: cloned with `pg_basebackup` (fast
    /// checkpoint, WAL streamed, standby settings written), then started.
    /// Tests use it for "a replica"; repl-manager does its own cloning.
    pub async fn standby_of(primary: &PgCluster, opts: PgOptions) -> Result<Self, Error> {
        let mut standby = Self::empty(opts)?;
        let data = standby.data_dir.display().to_string();
        let mut cmd = standby.command("pg_basebackup");
        cmd.args([
            "-h",
            &primary.listen.to_string(),
            "-p",
            &primary.port.to_string(),
        ])
        .args([
            "-U", "postgres", "-D", &data, "-R", "-X", "stream", "-c", "fast",
        ]);
        run(cmd, "pg_basebackup").await?;
        standby.start().await?;
        Ok(standby)
    }

    /// Leaves the server running and its files in place when this handle
    /// drops (the sandbox).
    pub fn detach(mut self) -> PathBuf {
        self.detached = true;
        self.root.path().to_path_buf()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.detached {
            if let Root::Temp(t) = std::mem::replace(&mut self.root, Root::Kept(PathBuf::new())) {
                let _ = t.keep();
            }
            return;
        }
        if self.is_running() {
            let mut cmd = std::process::Command::new(self.bindir.join("pg_ctl"));
            cmd.args(["-D"])
                .arg(&self.data_dir)
                .args(["-w", "-t", "20", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(o) = self.owner {
                use std::os::unix::process::CommandExt;
                cmd.uid(o.uid.as_raw()).gid(o.gid.as_raw());
            }
            let stopped = cmd.status().map(|s| s.success()).unwrap_or(false);
            if !stopped {
                let _ = self.kill();
            }
        }
        // A temp root is removed by its own Drop; a kept directory belongs
        // to its caller (the sandbox removes it on `down`).
    }
}

/// The live postmaster of `data_dir`: the PID in its `postmaster.pid`,
/// alive and still a `postgres` process (not a stranger that reused it).
pub fn postmaster_of(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    (crate::process::pid_alive(pid) && crate::process::cmdline_contains(pid, "postgres"))
        .then_some(pid)
}

/// `pg_ctl stop` on a data directory, as the `postgres` user when we are
/// root: for servers started by someone else (the sandbox's, which
/// repl-manager runs).
pub async fn stop_data_dir(data_dir: &Path, mode: StopMode) -> Result<(), Error> {
    let mut cmd = Command::new(pg_bindir()?.join("pg_ctl"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-w", "-t", "60", "-m", mode.as_arg(), "stop"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(o) = Owner::for_postgres()? {
        cmd.uid(o.uid.as_raw()).gid(o.gid.as_raw());
    }
    run(cmd, "pg_ctl stop").await
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// Runs a command to completion; a failure carries its output.
pub(crate) async fn run(mut cmd: Command, label: &str) -> Result<(), Error> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| Error::io(format!("running {label}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: label.to_string(),
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string(),
    })
}

/// Waits until `check` passes or `timeout` runs out.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

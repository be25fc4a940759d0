//! A single-node Garage S3 server on free ports, configured with its own CLI
//! (layout, key, bucket) exactly as an operator would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::error::{log_tail, Error};
use crate::ports::free_port_on;
use crate::process::write_private;
use crate::tools::garage_bin;

/// Region name the testbed's Garage answers to.
pub const REGION: &str = "garage";

pub struct Garage {
    root: Option<tempfile::TempDir>,
    dir: PathBuf,
    bin: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    listen: IpAddr,
    pub s3_port: u16,
    pub rpc_port: u16,
    pub admin_port: u16,
    pub key_id: String,
    pub secret_key: String,
    detached: bool,
}

impl Garage {
    /// Starts Garage in a temporary directory on 127.0.0.1.
    pub async fn start() -> Result<Self, Error> {
        Self::start_in(None, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts Garage with its files under `dir` (or a temp dir), listening on
    /// `listen`, and gives it a layout and an access key with full rights.
    pub async fn start_in(dir: Option<PathBuf>, listen: IpAddr) -> Result<Self, Error> {
        let mut garage = Self::launch(dir, listen, 1, &random_hex(32))?;
        garage.configure().await?;
        Ok(garage)
    }

    /// One node of a Garage cluster as a fresh install leaves it: running,
    /// with no layout, key or bucket. Every node of one cluster shares
    /// `replication_factor` and `rpc_secret` (64 hex digits).
    pub async fn start_unconfigured(
        listen: IpAddr,
        replication_factor: u8,
        rpc_secret: &str,
    ) -> Result<Self, Error> {
        let mut garage = Self::launch(None, listen, replication_factor, rpc_secret)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        garage.wait_port(garage.rpc_port, deadline).await?;
        Ok(garage)
    }

    fn launch(
        dir: Option<PathBuf>,
        listen: IpAddr,
        replication_factor: u8,
        rpc_secret: &str,
    ) -> Result<Self, Error> {
        let bin = garage_bin()?;
        let (root, dir) = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d)
                    .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
                (None, d)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("aurora-garage-")
                    .tempdir()
                    .map_err(|e| Error::io("creating a temp dir", e))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let s3_port = free_port_on(listen)?;
        let rpc_port = free_port_on(listen)?;
        let admin_port = free_port_on(listen)?;
        let key_id = format!("GK{}", &random_hex(12)[..24]);
        let secret_key = random_hex(32);
        let config_path = dir.join("garage.toml");
        let config = format!(
            "metadata_dir = \"{meta}\"\n\
             data_dir = \"{data}\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = {replication_factor}\n\
             rpc_bind_addr = \"{ip}:{rpc_port}\"\n\
             rpc_public_addr = \"{ip}:{rpc_port}\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"{ip}:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\n\
             api_bind_addr = \"{ip}:{admin_port}\"\n\
             admin_token = \"{admin_token}\"\n",
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
            ip = listen,
            admin_token = random_hex(16),
        );
        write_private(&config_path, &config)?;
        let log_path = dir.join("garage.log");
        let mut garage = Self {
            root,
            dir,
            bin,
            config_path,
            log_path,
            child: None,
            listen,
            s3_port,
            rpc_port,
            admin_port,
            key_id,
            secret_key,
            detached: false,
        };
        garage.spawn()?;
        Ok(garage)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let log = std::fs::File::create(&self.log_path)
            .map_err(|e| Error::io("creating the garage log", e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io("cloning the garage log", e))?;
        let child = std::process::Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config_path)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("starting garage", e))?;
        self.child = Some(child);
        Ok(())
    }

    async fn configure(&mut self) -> Result<(), Error> {
        // `garage node id` answers from the key file before the server is up,
        // so wait for the RPC port itself, then retry the first RPC call
        // until the server takes it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        self.wait_port(self.rpc_port, deadline).await?;
        let node_id = self.cli(&["node", "id", "-q"]).await?;
        let node_id = node_id.trim().split('@').next().unwrap_or("").to_string();
        loop {
            match self
                .cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id])
                .await
            {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    self.check_alive()?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.cli(&["layout", "apply", "--version", "1"]).await?;
        let (key_id, secret) = (self.key_id.clone(), self.secret_key.clone());
        self.cli(&["key", "import", "--yes", "-n", "testbed", &key_id, &secret])
            .await?;
        // The S3 API answers only once the layout is live.
        self.wait_port(self.s3_port, deadline).await
    }

    async fn wait_port(&mut self, port: u16, deadline: tokio::time::Instant) -> Result<(), Error> {
        let addr = SocketAddr::new(self.listen, port);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            self.check_alive()?;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("garage on port {port}"),
                    secs: 30,
                    log: Some((self.log_path.clone(), log_tail(&self.log_path, 20))),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    what: "garage".into(),
                    status: status.to_string(),
                    log: self.log_path.clone(),
                    tail: log_tail(&self.log_path, 20),
                });
            }
        }
        Ok(())
    }

    /// Runs `garage -c <config> <args>` and returns its stdout.
    pub async fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::io("running garage", e))?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("garage {}", args.join(" ")),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a bucket the testbed's key may read, write and own.
    pub async fn create_bucket(&self, name: &str) -> Result<(), Error> {
        self.cli(&["bucket", "create", name]).await?;
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", "testbed",
        ])
        .await?;
        Ok(())
    }

    /// `http://<ip>:<port>` of the S3 API.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.listen, self.s3_port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config file (`garage -c <it> …` reaches this node).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The `garage` binary this node runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An `aws-sdk-s3` client for this server (path-style, static key).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        self.s3_client_with(&self.key_id, &self.secret_key)
    }

    /// An `aws-sdk-s3` client for this server with another key.
    pub fn s3_client_with(&self, key_id: &str, secret_key: &str) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(key_id, secret_key, None, None, "testbed");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again after [`Garage::stop`] (same ports, same data).
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        self.wait_port(self.s3_port, deadline).await
    }

    /// Leaves Garage running and its files in place when this handle drops.
    pub fn detach(mut self) -> (PathBuf, Option<u32>) {
        self.detached = true;
        if let Some(t) = self.root.take() {
            let _ = t.keep();
        }
        (self.dir.clone(), self.child.take().map(|c| c.id()))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

/// `n` random bytes as hex, from the kernel's CSPRNG.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !filled {
        // /dev/urandom always exists on Linux; this is a test harness.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

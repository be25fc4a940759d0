//! A fleet on one machine: one real PostgreSQL data directory and one
//! in-process repl-manager per node, each on its own ports.

#![allow(clippy::unwrap_used, dead_code)] // test helpers may panic: a panic is a test failure

pub mod ns;

use std::path::PathBuf;
use std::time::Duration;

use cluster_db::Role;
use hyper::Method;
use repl_manager::config::Config;
use repl_manager::manager::NodeStatus;
use repl_manager::member::Member;
use serde_json::Value;
use sidecar_kit::http_client::{HttpClient, HttpResponse};
use sidecar_kit::{Lifecycle, Secret};
use testbed::{PgCluster, PgOptions};

/// Makes `cmd` (a shell, possibly behind a namespace or user switch) run
/// the postgres container's supervisor (`postgres-supervisor.sh`) for `pg`,
/// watching `hold`, as the container would; it ends with its handle.
pub fn supervisor(cmd: &mut tokio::process::Command, pg: &PgCluster, hold: &std::path::Path) {
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("postgres-supervisor.sh"))
        .env("PGDATA", pg.data_dir())
        .env("AURORA_HOLD_FILE", hold)
        .env("POSTGRES_BIN", pg.bindir().join("postgres"))
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
}

pub const TOKEN: &str = "fleet-token-0123456789abcdef";
/// A quote and a backslash: the password must survive every quoting layer.
pub const REPL_PASSWORD: &str = "r3pl'pa\\ss";

pub struct Node {
    pub name: String,
    pub pg: PgCluster,
    pub cfg: Config,
    lifecycle: Option<Lifecycle>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    pub fn api(&self) -> String {
        self.cfg.me().api_url.clone()
    }

    pub fn is_running(&self) -> bool {
        self.lifecycle.is_some()
    }
}

pub struct Fleet {
    pub nodes: Vec<Node>,
    pub http: HttpClient,
}

pub struct FleetSpec {
    pub nodes: Vec<(&'static str, Role)>,
    /// Members listed in config that never come up (an unreachable peer).
    pub ghosts: Vec<&'static str>,
    pub tweak: fn(&mut Config),
    pub pg_settings: Vec<(String, String)>,
    /// The lead starts with an empty data directory too (repl-manager's
    /// own `initdb`, when the tweak turns it on).
    pub lead_empty: bool,
}

impl FleetSpec {
    pub fn new(nodes: &[(&'static str, Role)]) -> Self {
        Self {
            nodes: nodes.to_vec(),
            ghosts: Vec::new(),
            tweak: |_| {},
            pg_settings: Vec::new(),
            lead_empty: false,
        }
    }
}

impl Fleet {
    /// Creates every node's directory (the lead's initialized with initdb,
    /// the others empty) and starts every repl-manager.
    pub async fn start(spec: FleetSpec) -> Fleet {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "repl_manager=info".into()),
            )
            .with_test_writer()
            .try_init();
        let mut clusters = Vec::new();
        for (name, role) in &spec.nodes {
            let mut opts = PgOptions::named(name);
            for (k, v) in &spec.pg_settings {
                opts = opts.setting(k, v);
            }
            let pg = if *role == Role::Lead && !spec.lead_empty {
                PgCluster::init(opts).await.unwrap()
            } else {
                PgCluster::empty(opts).unwrap()
            };
            clusters.push((name.to_string(), *role, pg, testbed::free_port().unwrap()));
        }
        let mut members: Vec<Member> = clusters
            .iter()
            .map(|(name, role, pg, api_port)| Member {
                name: name.parse().unwrap(),
                role: *role,
                host: "127.0.0.1".into(),
                port: pg.port(),
                api_url: format!("http://127.0.0.1:{api_port}"),
                nofailover: false,
            })
            .collect();
        for ghost in &spec.ghosts {
            members.push(Member {
                name: ghost.parse().unwrap(),
                role: Role::Compute,
                host: "127.0.0.1".into(),
                port: testbed::free_port().unwrap(),
                api_url: format!("http://127.0.0.1:{}", testbed::free_port().unwrap()),
                nofailover: false,
            });
        }
        let mut nodes = Vec::new();
        for (name, _role, pg, api_port) in clusters {
            let mut cfg = Config::default();
            cfg.admin.listen = format!("127.0.0.1:{api_port}").parse().unwrap();
            cfg.admin.token = Some(Secret::new(TOKEN));
            cfg.node.name = name.clone();
            cfg.node.state_file = pg.dir().join("repl-state.json");
            cfg.postgres.data_dir = pg.data_dir().to_path_buf();
            cfg.postgres.bin_dir = Some(pg.bindir().to_path_buf());
            cfg.postgres.host = "127.0.0.1".into();
            cfg.postgres.port = pg.port();
            cfg.postgres.listen_addresses = "127.0.0.1".into();
            cfg.postgres.replication_password = Secret::new(REPL_PASSWORD);
            cfg.postgres.log_file = Some(pg.log_path().to_path_buf());
            cfg.postgres.start_timeout_secs = 60;
            cfg.replication.repair_after_secs = 5;
            // Longer than failover.timeout_secs (5 s), as validation
            // requires (#15 finding 4); short enough that a fleet starting
            // without its standby does not wait long.
            cfg.replication.sync_degrade_after_secs = 6;
            cfg.replication.switchover_timeout_secs = 30;
            cfg.members = members.clone();
            (spec.tweak)(&mut cfg);
            sidecar_kit::Validate::validate(&cfg).unwrap();
            nodes.push(Node {
                name,
                pg,
                cfg,
                lifecycle: None,
                task: None,
            });
        }
        let mut fleet = Fleet {
            nodes,
            http: HttpClient::new(Duration::from_secs(120)),
        };
        for i in 0..fleet.nodes.len() {
            fleet.start_manager(i);
        }
        fleet
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn start_manager(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let lifecycle = Lifecycle::new();
        let cfg = node.cfg.clone();
        let lc = lifecycle.clone();
        node.task = Some(tokio::spawn(
            async move { repl_manager::run(cfg, lc).await },
        ));
        node.lifecycle = Some(lifecycle);
    }

    /// Starts a stopped node's repl-manager again.
    pub async fn start_node(&mut self, name: &str) {
        let i = self.index(name);
        self.start_manager(i);
    }

    /// Stops a node's repl-manager (its PostgreSQL keeps running).
    pub async fn stop_manager(&mut self, name: &str) {
        let i = self.index(name);
        let node = &mut self.nodes[i];
        if let Some(lc) = node.lifecycle.take() {
            lc.shutdown();
        }
        if let Some(task) = node.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
    }

    /// Waits until `primary` reports every name in `standbys` streaming.
    pub async fn wait_streaming(&self, primary: &str, standbys: &[&str], timeout: Duration) {
        self.wait_status(primary, timeout, "all standbys streaming", |s| {
            s.is_primary()
                && standbys.iter().all(|n| {
                    s.replicas
                        .iter()
                        .any(|r| r.name == *n && r.state == "streaming")
                })
        })
        .await;
    }

    pub async fn connect(&self, name: &str) -> tokio_postgres::Client {
        self.node(name).pg.connect("postgres").await.unwrap()
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.node(name).pg.data_dir().to_path_buf()
    }

    pub async fn shutdown(mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.stop_manager(&n).await;
        }
    }
}

/// Waits until `query` returns at least one row on `client`.
pub async fn wait_row(client: &tokio_postgres::Client, query: &str, timeout: Duration) -> bool {
    testbed::postgres::wait_until(timeout, || async {
        matches!(client.query(query, &[]).await, Ok(rows) if !rows.is_empty())
    })
    .await
}

impl Members for Fleet {
    fn api(&self, name: &str) -> String {
        self.node(name).api()
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn http(&self) -> &HttpClient {
        &self.http
    }
}

/// What every fleet of these tests answers the same way: its members'
/// repl-managers over HTTP. `Fleet` (in-process, loopback) and
/// `ns::NsFleet` (processes in network namespaces) differ in how nodes run
/// and fail, not in how they are asked.
#[allow(async_fn_in_trait)] // test-only, single-threaded callers
pub trait Members {
    /// The admin URL of `name`'s repl-manager.
    fn api(&self, name: &str) -> String;
    fn http(&self) -> &HttpClient;
    /// Added to a wait that timed out (a log tail, where there is one).
    fn context(&self, _name: &str) -> String {
        String::new()
    }

    /// Every member's name, for [`Members::describe`].
    fn names(&self) -> Vec<String>;

    /// One line per member: what its repl-manager says of it (state,
    /// primary, epoch, streaming, what it is doing, its last repair), for
    /// a failure message.
    async fn describe(&self) -> String {
        let mut out = String::new();
        for name in self.names() {
            let line = match self.status(&name).await {
                Some(s) => format!(
                    "{name}: state {} primary {} epoch {} streaming {} receiver {:?} activity {:?} error {:?}",
                    s.state,
                    s.primary,
                    s.epoch,
                    s.streaming(),
                    s.activity,
                    s.receiver.as_ref().map(|r| &r.status),
                    s.last_error
                ),
                None => format!("{name}: no answer"),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    async fn status(&self, name: &str) -> Option<NodeStatus> {
        let url = format!("{}/status", self.api(name));
        self.http().get_json(&url).await.ok()
    }

    async fn get(&self, name: &str, path: &str) -> HttpResponse {
        let url = format!("{}{path}", self.api(name));
        self.http().get(&url).await.unwrap()
    }

    /// `GET path` on `name`, read as the contract type `T`, whole (see
    /// `aurora_api::conforms`); with the answer's status.
    async fn conform<T>(&self, name: &str, path: &str) -> (hyper::StatusCode, T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let r = self.get(name, path).await;
        (
            r.status,
            testbed::contract::read(&r, &format!("{name} GET {path}")),
        )
    }

    /// `POST path` with `token` (operations wait for their steps: up to
    /// two minutes).
    async fn post(&self, name: &str, path: &str, body: Value, token: Option<&str>) -> HttpResponse {
        self.send(Method::POST, name, path, body, token).await
    }

    async fn send(
        &self,
        method: Method,
        name: &str,
        path: &str,
        body: Value,
        token: Option<&str>,
    ) -> HttpResponse {
        let url = format!("{}{path}", self.api(name));
        let secret = token.map(Secret::new);
        HttpClient::new(Duration::from_secs(120))
            .send(method, &url, secret.as_ref(), Some(&body))
            .await
            .unwrap()
    }

    /// `POST path`, asked again every 500 ms for up to `within` while the
    /// answer is a 409 whose reason contains one of `transient` (a moment
    /// that passes by itself, as an operator who reads the reason asks again).
    async fn post_until_settled(
        &self,
        name: &str,
        path: &str,
        body: Value,
        token: &str,
        transient: &[&str],
        within: Duration,
    ) -> HttpResponse {
        let deadline = std::time::Instant::now() + within;
        loop {
            let resp = self.post(name, path, body.clone(), Some(token)).await;
            let passing = resp.status == hyper::StatusCode::CONFLICT
                && transient.iter().any(|t| resp.text().contains(t));
            if !passing || std::time::Instant::now() >= deadline {
                return resp;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until `check` holds for the named node's status.
    async fn wait_status(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&NodeStatus) -> bool,
    ) -> NodeStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.status(name).await {
                if check(&s) {
                    return s;
                }
                last = Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{name}: {what} did not happen within {timeout:?}; last status: {}\n{}\nevery member:\n{}",
                    serde_json::to_string_pretty(&last).unwrap(),
                    self.context(name),
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

//! The node stack in real containers: `compose/compose.yaml` brought up as a
//! lead on this machine's Docker Engine, from images built by
//! `compose/images/build.sh` (Debian bases, the suite's own binaries), then
//! checked the way an operator would: every service healthy, pgvector,
//! Redis's password, every Prometheus target up and rule loaded, every
//! Grafana panel query answered by this Prometheus, the asset mirror, DNS,
//! and `aurora-cli status`.
//!
//! Grafana and cAdvisor cannot be built here (no registry, no Debian
//! package): they stay in the production file and are not started; their
//! configuration is checked statically (`compose_static.rs`'s checks and the
//! dashboard queries below, run against the real Prometheus).
//!
//! On failure the compose logs and every sidecar's `/status` are saved and
//! their path printed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use aurora_tests::repo;

/// The services this machine can run (everything but Grafana and cAdvisor).
const SERVICES: &[&str] = &[
    "wireguard",
    "postgres",
    "repl-manager",
    "redis",
    "asset-sync",
    "health-monitor",
    "dns-sync",
    "garage",
    "prometheus",
    "alertmanager",
    "node-exporter",
    "postgres-exporter",
    "redis-exporter",
];

/// Each host port a node's project publishes, by what it serves, and the
/// node.env variable that sets it.
const PORT_VARS: &[(&str, &str)] = &[
    ("postgres", "AURORA_PORT_POSTGRES"),
    ("redis", "AURORA_PORT_REDIS"),
    ("repl-manager", "AURORA_PORT_REPL_MANAGER"),
    ("asset-sync", "AURORA_PORT_ASSET_SYNC"),
    ("health-monitor", "AURORA_PORT_HEALTH_MONITOR"),
    ("dns-sync", "AURORA_PORT_DNS_SYNC"),
    ("dns", "AURORA_PORT_DNS"),
    ("prometheus", "AURORA_PORT_PROMETHEUS"),
    ("alertmanager", "AURORA_PORT_ALERTMANAGER"),
    ("grafana", "AURORA_PORT_GRAFANA"),
    ("node-exporter", "AURORA_PORT_NODE_EXPORTER"),
    ("cadvisor", "AURORA_PORT_CADVISOR"),
    ("garage", "AURORA_PORT_GARAGE_S3"),
    ("wireguard", "AURORA_WG_PORT"),
    ("join", "AURORA_PORT_JOIN"),
];

async fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    testbed::ports::free_port().unwrap()
}

/// What a node of a test fleet is.
struct NodeSpec<'a> {
    name: &'static str,
    role: &'static str,
    vpn_ip: &'static str,
    /// `--members` (the whole fleet); empty: this node alone.
    members: &'a str,
    /// The lead's `secrets/fleet.env`, for a joining node.
    fleet_env: Option<&'a Path>,
    /// The shared network standing in for the internet, and this node's
    /// WireGuard address on it.
    wan: Option<(&'a str, String)>,
}

/// One node's compose project; `down -v` on drop, logs kept on failure.
struct Node {
    name: &'static str,
    state: tempfile::TempDir,
    env: BTreeMap<String, String>,
    ports: BTreeMap<&'static str, u16>,
    secrets: BTreeMap<String, String>,
    passed: bool,
}

impl Node {
    /// `docker compose` for this node: the files, the project name and
    /// every variable come from its env file (COMPOSE_FILE, AURORA_PROJECT),
    /// exactly as `aurora-cli` runs it.
    fn compose(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("compose")
            .arg("--env-file")
            .arg(self.state.path().join("node.env"));
        c
    }

    fn project(&self) -> &str {
        &self.env["AURORA_PROJECT"]
    }

    fn url(&self, service: &'static str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[service])
    }

    /// `node.toml` for aurora-cli on the host, pointing at this node.
    fn cli_config(&self) -> PathBuf {
        let path = self.state.path().join("node.toml");
        let role = &self.env["COMPOSE_PROFILES"];
        let dns = if role == "compute" {
            String::new()
        } else {
            self.url("dns-sync", "")
        };
        std::fs::write(
            &path,
            format!(
                "[node]\nname = \"{}\"\nrole = \"{role}\"\n\n[admin]\ntoken = \"{}\"\n\n\
                 [sidecars]\nrepl_manager = \"{}\"\nhealth_monitor = \"{}\"\nasset_sync = \"{}\"\ndns_sync = \"{dns}\"\n\n\
                 [compose]\nproject_dir = \"{}\"\nenv_file = \"{}\"\nhealth_timeout_secs = 90\n",
                self.name,
                self.secrets["ADMIN_TOKEN"],
                self.url("repl-manager", ""),
                self.url("health-monitor", ""),
                self.url("asset-sync", ""),
                repo().join("compose").display(),
                self.state.path().join("node.env").display(),
            ),
        )
        .unwrap();
        path
    }

    /// `aurora-cli --config <this node> ARGS`: its stdout, or its whole
    /// output as the error.
    async fn cli(&self, args: &[&str]) -> Result<String, String> {
        let cli = testbed::tools::workspace_bin("aurora-cli").unwrap();
        let out = Command::new(cli)
            .arg("--config")
            .arg(self.cli_config())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "aurora-cli {} exited {}:\n{stdout}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    async fn status(&self, sidecar: &'static str) -> Result<Value, String> {
        HttpClient::new(Duration::from_secs(5))
            .get_json::<Value>(&self.url(sidecar, "/status"))
            .await
            .map_err(|e| e.to_string())
    }

    async fn save_diagnostics(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{}-diagnostics", self.project()));
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(out) = self.compose().args(["logs", "--no-color"]).output().await {
            let _ = std::fs::write(dir.join("compose.log"), &out.stdout);
        }
        if let Ok(out) = self.compose().args(["ps", "-a"]).output().await {
            let _ = std::fs::write(dir.join("ps.txt"), &out.stdout);
        }
        for s in ["repl-manager", "asset-sync", "health-monitor", "dns-sync"] {
            let body = match self.status(s).await {
                Ok(v) => v.to_string(),
                Err(e) => e,
            };
            let _ = std::fs::write(dir.join(format!("{s}.status.json")), body);
        }
        dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let keep = std::env::var_os("STACK_TEST_KEEP").is_some();
        if !self.passed {
            // Drop runs inside the test's runtime: gather on a thread of
            // its own with its own runtime.
            let dir = std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map(|rt| rt.block_on(self.save_diagnostics()))
                        .ok()
                })
                .join()
                .ok()
                .flatten()
            });
            if let Some(dir) = dir {
                eprintln!(
                    "stack test failed: {}'s compose logs and /status saved in {}",
                    self.name,
                    dir.display()
                );
            }
        }
        if !keep {
            let _ = std::process::Command::new("docker")
                .arg("compose")
                .arg("--env-file")
                .arg(self.state.path().join("node.env"))
                .args(["down", "-v", "--remove-orphans", "--timeout", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Builds the test images (cached bases; the suite's own binaries).
async fn build_images() -> BTreeMap<String, String> {
    let bin = testbed::tools::workspace_bin("repl-manager").unwrap();
    let bin_dir = bin.parent().unwrap();
    let out = run(
        Command::new(repo().join("compose/images/build.sh"))
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--tag", "test", "--print-env"]),
        "compose/images/build.sh",
    )
    .await;
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Renders a node's state directory with compose/node-init.sh: its own
/// host ports, the test images, and (in a fleet) the shared network.
async fn init_node(spec: &NodeSpec<'_>, images: &BTreeMap<String, String>) -> Node {
    let state = tempfile::Builder::new()
        .prefix(&format!("aurora-stack-{}-", spec.name))
        .tempdir()
        .unwrap();
    let project = format!(
        "aurora-test-{}",
        state
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace(['_', '.'], "-")
    );
    let mut ports = BTreeMap::new();
    for &(name, var) in PORT_VARS {
        ports.insert(name, (var, free_port()));
    }
    let mut files = vec![repo().join("compose/compose.yaml")];
    if let Some((network, ip)) = &spec.wan {
        // The stand-in for the internet: WireGuard's container joins it.
        let wan = state.path().join("wan.yaml");
        std::fs::write(
            &wan,
            format!(
                "services:\n  wireguard:\n    networks:\n      default: {{}}\n      wan:\n        ipv4_address: {ip}\n\
                 networks:\n  wan:\n    external: true\n    name: {network}\n"
            ),
        )
        .unwrap();
        files.push(wan);
    }
    let compose_file = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let members = if spec.members.is_empty() {
        format!("{} {} {}", spec.name, spec.role, spec.vpn_ip)
    } else {
        spec.members.to_string()
    };
    let mut cmd = Command::new(repo().join("compose/node-init.sh"));
    cmd.arg("--state-dir")
        .arg(state.path())
        .args([
            "--name",
            spec.name,
            "--role",
            spec.role,
            "--vpn-ip",
            spec.vpn_ip,
        ])
        .args(["--members", &members])
        .arg("--set")
        .arg(format!("COMPOSE_FILE={compose_file}"))
        .arg("--set")
        .arg(format!("AURORA_PROJECT={project}"))
        .args(["--set", "AURORA_WG_BIND=127.0.0.1"])
        .args(["--set", "AURORA_JOIN_BIND=127.0.0.1"])
        // This machine's / is not a shared mount (no systemd), and Docker
        // binds / only as rslave: node-exporter sees the state directory
        // as its root filesystem instead.
        .arg("--set")
        .arg(format!("AURORA_HOST_ROOT={}", state.path().display()))
        .args(["--set", "AURORA_HOST_ROOT_PROPAGATION=rprivate"]);
    if let Some(f) = spec.fleet_env {
        cmd.arg("--fleet-env").arg(f);
    }
    if let Some((_, ip)) = &spec.wan {
        cmd.args(["--wg-endpoint", &format!("{ip}:51820")]);
    }
    for (var, port) in ports.values() {
        cmd.arg("--set").arg(format!("{var}={port}"));
    }
    for (k, v) in images {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    run(&mut cmd, "compose/node-init.sh").await;
    let env = read_env(&state.path().join("node.env"));
    let mut secrets = read_env(&state.path().join("secrets/fleet.env"));
    secrets.extend(read_env(&state.path().join("secrets/node.env")));
    Node {
        name: spec.name,
        env,
        ports: ports.into_iter().map(|(k, (_, p))| (k, p)).collect(),
        state,
        secrets,
        passed: false,
    }
}

/// The asset origin laid out as the installer lays it out: `aurora-cli
/// asset-origin setup` on the first node (alone it is ready with one copy,
/// or staged until the next), then on each other node with the first as
/// its peer, through `docker compose exec` into the Garage containers.
async fn garage_setup(nodes: &[&Node]) {
    let mut first: Option<String> = None;
    let mut last = Value::Null;
    for n in nodes {
        let mut args = vec!["asset-origin", "setup", "--json", "--wait-secs", "120"];
        if let Some(p) = &first {
            args.extend(["--peer", p.as_str()]);
        }
        let out = n
            .cli(&args)
            .await
            .unwrap_or_else(|e| panic!("aurora-cli asset-origin setup on {}: {e}", n.name));
        last = serde_json::from_str(&out).unwrap();
        first.get_or_insert_with(|| last["node"].as_str().unwrap().to_string());
    }
    assert_eq!(last["ready"], true, "the asset origin: {last}");
    assert_eq!(
        last["layout"].as_array().unwrap().len(),
        nodes.len(),
        "every node in the layout: {last}"
    );
}

impl Node {
    fn env_vpn_ip(&self) -> String {
        let wg = read_env(&self.state.path().join("env/wireguard.env"));
        wg["WG_ADDRESS"].split('/').next().unwrap().to_string()
    }
}

/// Asks the node's asset-sync for a pass, then reads `rel` from the host
/// directory whatever serves the assets mounts (`$AURORA_ASSETS_DIR/mirror`),
/// which must hold the mirrored files and nothing of asset-sync's own.
async fn synced_file(node: &Node, rel: &str, want: &str) -> Result<(), String> {
    let token = Secret::new(node.secrets["ADMIN_TOKEN"].clone());
    HttpClient::new(Duration::from_secs(30))
        .send(
            hyper::Method::POST,
            &node.url("asset-sync", "/sync"),
            Some(&token),
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    let assets = node.state.path().join("assets");
    let got = std::fs::read_to_string(assets.join("mirror").join(rel)).unwrap_or_default();
    if !got.contains(want) {
        return Err(format!("{rel} not mirrored yet"));
    }
    let served: Vec<String> = std::fs::read_dir(assets.join("mirror"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !served
            .iter()
            .any(|n| n.starts_with(".asset-sync") || n == "manifest.json"),
        "asset-sync's state is in the served directory: {served:?}"
    );
    assert!(
        assets.join("state/manifest.json").is_file(),
        "no manifest in {}",
        assets.join("state").display()
    );
    Ok(())
}

fn s3(node: &Node) -> aws_sdk_s3::Client {
    s3_at(
        node.ports["garage"],
        &node.secrets["S3_ACCESS_KEY_ID"],
        &node.secrets["S3_SECRET_ACCESS_KEY"],
    )
}

/// The fleet's asset key against the Garage S3 port published on loopback.
fn s3_at(port: u16, key_id: &str, secret: &str) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(key_id, secret, None, None, "stack-test");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("garage"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn eventually<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => {
                panic!("{what}: not within {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn prometheus(node: &Node, path: &str) -> Result<Value, String> {
    let http = HttpClient::new(Duration::from_secs(10));
    let url = node.url("prometheus", path);
    let v: Value = http.get_json(&url).await.map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{url}: {v}"));
    }
    Ok(v["data"].clone())
}

async fn redis_roundtrip(port: u16, lines: &[&str]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = String::new();
    for l in lines {
        s.write_all(format!("{l}\r\n").as_bytes()).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

/// Every PromQL expression of every provisioned Grafana dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = repo().join("compose/config/grafana/dashboards");
    let mut out = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    format!("{} / {}", d["title"], p["title"]),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn one_lead_node_comes_up_healthy_and_monitored() {
    let images = build_images().await;
    let mut node = init_node(
        &NodeSpec {
            name: "aurora",
            role: "lead",
            vpn_ip: "10.0.0.1",
            members: "",
            fleet_env: None,
            wan: None,
        },
        &images,
    )
    .await;
    assert_eq!(node.env["COMPOSE_PROFILES"], "lead");

    let started = Instant::now();
    run(
        node.compose()
            .args(["up", "-d", "--wait", "--wait-timeout", "300"])
            .args(SERVICES),
        "docker compose up --wait",
    )
    .await;
    eprintln!(
        "stack: {} services healthy in {:.1} s",
        SERVICES.len(),
        started.elapsed().as_secs_f64()
    );

    // PostgreSQL: the lead's cluster was made by repl-manager; pgvector works.
    let pg_password = node.secrets["POSTGRES_PASSWORD"].clone();
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres password={pg_password}",
        node.ports["postgres"]
    );
    let db = cluster_db::connect(
        &cluster_db::DbTarget::parse(&dsn).unwrap(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS vector;
         CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));
         INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[3,2,1]'), (3, '[1,1,1]');
         CREATE INDEX ON items USING hnsw (embedding vector_l2_ops);",
    )
    .await
    .unwrap();
    let nearest: i32 = db
        .query_one(
            "SELECT id FROM items ORDER BY embedding <-> '[3,2,1.1]' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nearest, 2);

    // Redis: nothing without the password, everything with it.
    let port = node.ports["redis"];
    let anonymous = redis_roundtrip(port, &["PING"]).await;
    assert!(anonymous.starts_with("-NOAUTH"), "{anonymous}");
    let password = node.secrets["REDIS_PASSWORD"].clone();
    let authed = redis_roundtrip(
        port,
        &[
            &format!("AUTH {password}"),
            "PING",
            "CONFIG GET maxmemory-policy",
        ],
    )
    .await;
    assert!(
        authed.contains("+OK") && authed.contains("+PONG"),
        "{authed}"
    );
    assert!(authed.contains("allkeys-lru"), "{authed}");

    // The asset origin, then a mirror pass on demand.
    garage_setup(&[&node]).await;
    s3(&node)
        .put_object()
        .bucket("assets")
        .key("img/logo.txt")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"aurora asset\n",
        ))
        .send()
        .await
        .unwrap();
    eventually(
        "asset-sync mirrors the bucket",
        Duration::from_secs(60),
        || synced_file(&node, "img/logo.txt", "aurora asset"),
    )
    .await;

    // DNS: db.<zone> is the lead's VPN address.
    let dns_port = node.ports["dns"].to_string();
    let answer = eventually(
        "dns-sync answers db.aurora.internal",
        Duration::from_secs(60),
        || async {
            let out = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &dns_port,
                    "+short",
                    "+time=2",
                    "+tries=1",
                ])
                .arg("db.aurora.internal")
                .output()
                .await
                .map_err(|e| e.to_string())?;
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if s == "10.0.0.1" {
                Ok(s)
            } else {
                Err(format!("dig said {s:?}"))
            }
        },
    )
    .await;
    assert_eq!(answer, "10.0.0.1");

    // Prometheus: every target up, every rule file loaded.
    eventually(
        "every Prometheus target up",
        Duration::from_secs(90),
        || async {
            let data = prometheus(&node, "/api/v1/targets").await?;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let down: Vec<String> = targets
                .iter()
                .filter(|t| t["health"] != "up")
                .map(|t| format!("{} {}: {}", t["labels"]["job"], t["health"], t["lastError"]))
                .collect();
            // cAdvisor and Grafana are production-only (not startable
            // here): their targets are expected down; every other is up.
            let down: Vec<String> = down
                .into_iter()
                .filter(|d| !d.starts_with("\"cadvisor\"") && !d.starts_with("\"grafana\""))
                .collect();
            if targets.len() >= 12 && down.is_empty() {
                Ok(())
            } else {
                Err(format!("{} targets, down: {down:?}", targets.len()))
            }
        },
    )
    .await;
    let rules = prometheus(&node, "/api/v1/rules").await.unwrap();
    let groups = rules["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"aurora-alerts") && names.contains(&"aurora-recording"),
        "{names:?}"
    );
    for g in groups {
        for r in g["rules"].as_array().unwrap() {
            assert_ne!(
                r["health"], "err",
                "rule {} failed: {}",
                r["name"], r["lastError"]
            );
        }
    }

    // Every Grafana panel's query returns data from this Prometheus (so
    // every metric a dashboard names is exported by the stack).
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{} panel queries", queries.len());
    eventually(
        "every dashboard query returns data",
        Duration::from_secs(120),
        || async {
            let mut empty = vec![];
            for (panel, expr) in &queries {
                let q = format!("/api/v1/query?query={}", percent(expr));
                let data = prometheus(&node, &q).await?;
                if data["result"].as_array().is_none_or(|r| r.is_empty()) {
                    empty.push(format!("{panel}: {expr}"));
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("no data for {} queries: {empty:#?}", empty.len()))
            }
        },
    )
    .await;

    // aurora-cli on the host sees a healthy node.
    eventually(
        "aurora-cli status shows a healthy node",
        Duration::from_secs(60),
        || node.cli(&["status"]),
    )
    .await;
    node.passed = true;
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Docker network standing in for the internet between the nodes'
/// WireGuard endpoints (nothing else of a node is on it); removed on drop,
/// after the nodes (declare it first).
struct Wan {
    name: String,
    hosts: Vec<std::net::Ipv4Addr>,
}

impl Wan {
    async fn create() -> Wan {
        // Fixed container addresses need a subnet given at creation: a
        // random /24 of 172.28.0.0/14, another one if Docker has it already.
        for _ in 0..16 {
            let r = sidecar_kit::telemetry::random_u64();
            let name = format!("aurora-test-wan-{:08x}", r as u32);
            let subnet = format!("172.{}.{}.0/24", 28 + (r >> 32) % 4, (r >> 40) % 256);
            let out = Command::new("docker")
                .args([
                    "network", "create", "--driver", "bridge", "--subnet", &subnet, &name,
                ])
                .output()
                .await
                .unwrap();
            if out.status.success() {
                let net: ipnet::Ipv4Net = subnet.parse().unwrap();
                return Wan {
                    name,
                    hosts: net.hosts().collect(),
                };
            }
        }
        panic!("no free /24 in 172.28.0.0/14 for the test's stand-in internet");
    }

    /// An address well clear of the gateway and of Docker's own picks.
    fn ip(&self, i: usize) -> String {
        self.hosts[100 + i].to_string()
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The services a role runs here (Grafana and cAdvisor cannot).
fn services_of(role: &str) -> Vec<&'static str> {
    SERVICES
        .iter()
        .copied()
        .filter(|s| role != "compute" || !matches!(*s, "dns-sync" | "garage" | "alertmanager"))
        .collect()
}

/// `up -d`, then every service healthy within 5 minutes. A transient
/// `unhealthy` is tolerated (not `up --wait`, which gives up at the first
/// one): a joining replica's repl-manager reports itself unhealthy while it
/// waits for a primary it can clone from, which can take a while when the
/// first packets through a new tunnel were dropped (seen in CI: TCP's SYN
/// backoff held one connection attempt for about two minutes).
async fn up(node: &Node) {
    let started = Instant::now();
    let role = node.env["COMPOSE_PROFILES"].clone();
    let services = services_of(&role);
    run(
        node.compose().args(["up", "-d"]).args(&services),
        &format!("docker compose up ({})", node.name),
    )
    .await;
    eventually(
        &format!("every service of {} healthy", node.name),
        Duration::from_secs(300),
        || async {
            let out = node
                .compose()
                .args(["ps", "--format", "{{.Service}} {{.Health}}"])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let healthy = text
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("healthy"))
                .count();
            if healthy == services.len() {
                Ok(())
            } else {
                Err(format!("{healthy}/{} healthy:\n{text}", services.len()))
            }
        },
    )
    .await;
    eprintln!(
        "stack: {} ({role}) healthy in {:.1} s",
        node.name,
        started.elapsed().as_secs_f64()
    );
}

async fn pg(node: &Node) -> Result<tokio_postgres::Client, String> {
    pg_at(node.ports["postgres"], &node.secrets["POSTGRES_PASSWORD"]).await
}

/// The superuser's connection to a node's published PostgreSQL port.
async fn pg_at(port: u16, password: &str) -> Result<tokio_postgres::Client, String> {
    let dsn =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres password={password}");
    let target = cluster_db::DbTarget::parse(&dsn).map_err(|e| e.to_string())?;
    cluster_db::connect(&target, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())
}

async fn dig(node: &Node, name: &str) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &node.ports["dns"].to_string()])
        .args(["+short", "+time=2", "+tries=1", name])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Each container of the node: (service, container id, started at).
async fn containers(node: &Node) -> BTreeMap<String, (String, String)> {
    let ids = run(node.compose().args(["ps", "-q"]), "docker compose ps").await;
    let mut out = BTreeMap::new();
    for id in ids.lines().filter(|l| !l.is_empty()) {
        let info = run(
            Command::new("docker").args([
                "inspect",
                "--format",
                "{{index .Config.Labels \"com.docker.compose.service\"}} {{.State.StartedAt}} {{.Image}}",
                id,
            ]),
            "docker inspect",
        )
        .await;
        let mut parts = info.split_whitespace();
        let service = parts.next().unwrap().to_string();
        let started = parts.next().unwrap().to_string();
        let image = parts.next().unwrap().to_string();
        out.insert(service, (format!("{id} {image}"), started));
    }
    out
}

/// An image derived from `base` with one more Dockerfile line.
async fn derived_image(base: &str, tag: &str, line: &str) {
    let mut child = Command::new("docker")
        .args(["build", "--quiet", "--tag", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dockerfile = format!("FROM {base}\n{line}\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills every container of `primary`; `next` must promote, `follower`
/// follow it, and `db.<zone>` (asked of `next`'s DNS) move to it. Writes
/// row `row` on the new primary.
async fn fail_over(primary: &Node, next: &Node, follower: &Node, row: i32) {
    let next_ip = next.env_vpn_ip();
    assert_eq!(dig(next, "db.aurora.internal").await, primary.env_vpn_ip());
    let killed = Instant::now();
    run(primary.compose().args(["kill"]), "docker compose kill").await;
    eventually("the standby promotes", Duration::from_secs(90), || async {
        let s = next.status("repl-manager").await?;
        (s["state"] == "primary")
            .then_some(())
            .ok_or_else(|| format!("{}: {} {}", next.name, s["state"], s["last_error"]))
    })
    .await;
    eprintln!(
        "stack: {} primary {:.1} s after {} was killed",
        next.name,
        killed.elapsed().as_secs_f64(),
        primary.name
    );
    let c = pg(next).await.unwrap();
    c.execute(
        "INSERT INTO fleet_probe VALUES ($1, $2)",
        &[&row, &format!("written on {}", next.name)],
    )
    .await
    .unwrap();
    eventually(
        "the compute node follows the new primary",
        Duration::from_secs(90),
        || async {
            let c = pg(follower).await?;
            let rows = c
                .query("SELECT who FROM fleet_probe WHERE id = $1", &[&row])
                .await
                .map_err(|e| e.to_string())?;
            (rows.len() == 1)
                .then_some(())
                .ok_or_else(|| format!("row {row} not on {} yet", follower.name))
        },
    )
    .await;
    eventually(
        "db.<zone> follows the primary",
        Duration::from_secs(60),
        || async {
            let a = dig(next, "db.aurora.internal").await;
            (a == next_ip)
                .then_some(())
                .ok_or_else(|| format!("db answers {a:?}"))
        },
    )
    .await;
}

/// Starts the killed node's containers again: it must come back as a
/// streaming standby of `primary`, with every row written so far.
async fn rejoin(node: &Node, primary: &Node, rows: i64) {
    run(node.compose().arg("start"), "docker compose start").await;
    eventually(
        "the old primary rejoins as a standby",
        Duration::from_secs(180),
        || async {
            let s = node.status("repl-manager").await?;
            let streaming = s["receiver"]["status"] == "streaming";
            (s["state"] == "replica" && s["primary"] == primary.name && streaming)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "{}: {} primary {} receiver {} error {}",
                        node.name, s["state"], s["primary"], s["receiver"], s["last_error"]
                    )
                })
        },
    )
    .await;
    // Streaming is not caught up: the last write may still be in flight.
    // A lost write never arrives, a diverged one never goes away.
    eventually(
        "the rejoined node holds exactly the primary's rows",
        Duration::from_secs(30),
        || async {
            let n: i64 = pg(node)
                .await?
                .query_one("SELECT count(*) FROM fleet_probe", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            (n == rows).then_some(()).ok_or_else(|| {
                format!(
                    "{n} rows, not {rows}: the rejoined node lost a write or kept a diverged one"
                )
            })
        },
    )
    .await;
}

const FLEET: &str = "aurora lead 10.0.0.1,star backup 10.0.0.2,vengeance compute 10.0.0.3";

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_over_wireguard_fail_over_rejoin_and_swap_a_sidecar() {
    let images = build_images().await;
    let wan = Wan::create().await;
    let spec = |name, role, vpn_ip, fleet_env, i| NodeSpec {
        name,
        role,
        vpn_ip,
        members: FLEET,
        fleet_env,
        wan: Some((wan.name.as_str(), wan.ip(i))),
    };
    let mut lead = init_node(&spec("aurora", "lead", "10.0.0.1", None, 1), &images).await;
    let fleet_env = lead.state.path().join("secrets/fleet.env");
    let joining = Some(fleet_env.as_path());
    let mut star = init_node(&spec("star", "backup", "10.0.0.2", joining, 2), &images).await;
    let mut vengeance = init_node(
        &spec("vengeance", "compute", "10.0.0.3", joining, 3),
        &images,
    )
    .await;
    // What joining gives a node: every other node's key and endpoint. (From
    // then on health-monitor keeps the peers from the registry.)
    let all = [(&lead, 1), (&star, 2), (&vengeance, 3)];
    for (me, _) in &all {
        let mut peers = String::new();
        for (other, i) in &all {
            if other.name == me.name {
                continue;
            }
            let key =
                std::fs::read_to_string(other.state.path().join("secrets/wireguard/public.key"))
                    .unwrap();
            peers.push_str(&format!(
                "[Peer]\nPublicKey = {}\nAllowedIPs = {}/32\nEndpoint = {}:51820\nPersistentKeepalive = 5\n\n",
                key.trim(),
                other.env_vpn_ip(),
                wan.ip(*i)
            ));
        }
        std::fs::write(
            me.state.path().join("secrets/wireguard/peers.static.conf"),
            peers,
        )
        .unwrap();
    }

    // The lead first (it initialises the cluster), then the backup (cloned
    // through the tunnel), the asset origin across both, then the compute.
    up(&lead).await;
    up(&star).await;
    garage_setup(&[&lead, &star]).await;
    up(&vengeance).await;

    // Replication streams through the tunnel, the backup synchronous.
    let status = eventually(
        "the backup is the synchronous standby, the compute streams",
        Duration::from_secs(120),
        || async {
            let s = lead.status("repl-manager").await?;
            let replicas = s["replicas"].as_array().cloned().unwrap_or_default();
            let find = |n: &str| replicas.iter().find(|r| r["name"] == n).cloned();
            match (find("star"), find("vengeance")) {
                (Some(b), Some(c))
                    if b["state"] == "streaming"
                        && b["sync_state"] == "sync"
                        && c["state"] == "streaming" =>
                {
                    Ok(s)
                }
                _ => Err(format!("replicas: {replicas:?}")),
            }
        },
    )
    .await;
    let replicas = status["replicas"].as_array().unwrap();
    for (name, ip) in [("star", "10.0.0.2"), ("vengeance", "10.0.0.3")] {
        let r = replicas.iter().find(|r| r["name"] == name).unwrap();
        let addr = r["client_addr"].as_str().unwrap_or("");
        assert_eq!(
            addr.trim_end_matches("/32"),
            ip,
            "{name} does not stream through the VPN: {r}"
        );
    }
    let lc = pg(&lead).await.unwrap();
    lc.batch_execute("CREATE TABLE fleet_probe (id int PRIMARY KEY, who text); INSERT INTO fleet_probe VALUES (1, 'written on the lead')")
        .await
        .unwrap();
    eventually(
        "a row written on the lead is read on the compute node",
        Duration::from_secs(30),
        || async {
            let c = pg(&vengeance).await?;
            let rows = c
                .query("SELECT who FROM fleet_probe WHERE id = 1", &[])
                .await
                .map_err(|e| e.to_string())?;
            (rows.len() == 1)
                .then_some(())
                .ok_or_else(|| "not there yet".to_string())
        },
    )
    .await;
    eventually(
        "aurora-cli status shows a healthy fleet",
        Duration::from_secs(90),
        || lead.cli(&["status"]),
    )
    .await;

    // The lead's Prometheus federates the other nodes, found in the registry.
    eventually(
        "the lead federates star and vengeance",
        Duration::from_secs(120),
        || async {
            let data = prometheus(&lead, "/api/v1/targets").await?;
            let up: Vec<String> = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|t| t["labels"]["job"] == "federate" && t["health"] == "up")
                .map(|t| t["labels"]["node"].as_str().unwrap_or("").to_string())
                .collect();
            (up.contains(&"star".to_string()) && up.contains(&"vengeance".to_string()))
                .then_some(())
                .ok_or_else(|| format!("federation targets up: {up:?}"))
        },
    )
    .await;

    // Alertmanager on lead and backup is one cluster (gossip over the VPN),
    // so an alert is sent once and the lead's death is still paged.
    eventually(
        "the Alertmanagers of lead and backup form one cluster",
        Duration::from_secs(90),
        || async {
            let v: Value = HttpClient::new(Duration::from_secs(5))
                .get_json(&lead.url("alertmanager", "/api/v2/status"))
                .await
                .map_err(|e| e.to_string())?;
            let peers = v["cluster"]["peers"].as_array().map(Vec::len).unwrap_or(0);
            (v["cluster"]["status"] == "ready" && peers == 2)
                .then_some(())
                .ok_or_else(|| format!("cluster: {}", v["cluster"]))
        },
    )
    .await;

    // Star is the asset mirror: an object already replicated reaches the
    // compute node with the lead's origin stopped.
    s3(&lead)
        .put_object()
        .bucket("assets")
        .key("mirror/only-copy-left.txt")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"served by star\n",
        ))
        .send()
        .await
        .unwrap();
    run(
        lead.compose().args(["stop", "garage"]),
        "stop the lead's garage",
    )
    .await;
    eventually(
        "the compute node mirrors from the backup's origin",
        Duration::from_secs(60),
        || synced_file(&vengeance, "mirror/only-copy-left.txt", "served by star"),
    )
    .await;
    run(
        lead.compose().args(["start", "garage"]),
        "start the lead's garage",
    )
    .await;

    // Failover: every container of the lead killed; then it comes back as
    // a standby of star.
    fail_over(&lead, &star, &vengeance, 2).await;
    rejoin(&lead, &star, 2).await;

    // Swap one sidecar on the compute node: only its container is recreated.
    let base = &images["AURORA_IMAGE_ASSET_SYNC"];
    let v2 = "aurora-local/asset-sync:test-v2";
    derived_image(base, v2, "LABEL org.aurora-node.test=v2").await;
    let before = containers(&vengeance).await;
    let out = vengeance
        .cli(&["update", "asset-sync", "--image", v2])
        .await
        .unwrap();
    assert!(out.contains("updated 1 service(s) (asset-sync)"), "{out}");
    let after = containers(&vengeance).await;
    for (service, (id, started)) in &before {
        let (new_id, new_started) = &after[service];
        if service == "asset-sync" {
            assert_ne!(id, new_id, "asset-sync was not recreated");
        } else {
            assert_eq!(
                (id, started),
                (new_id, new_started),
                "{service} was touched by the swap"
            );
        }
    }
    let env = std::fs::read_to_string(vengeance.state.path().join("node.env")).unwrap();
    assert!(
        env.contains(&format!("AURORA_IMAGE_ASSET_SYNC={v2}")),
        "{env}"
    );

    // A new image that never turns healthy is rolled back.
    let broken = "aurora-local/asset-sync:test-broken";
    derived_image(base, broken, "ENV AURORA_ADMIN__LISTEN=not-an-address").await;
    let err = vengeance
        .cli(&["update", "asset-sync", "--image", broken])
        .await
        .unwrap_err();
    assert!(err.contains("rolled back asset-sync"), "{err}");
    let rolled = containers(&vengeance).await;
    let v2_id = run(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", v2]),
        "docker image inspect",
    )
    .await;
    assert!(
        rolled["asset-sync"].0.ends_with(v2_id.trim()),
        "asset-sync runs {}",
        rolled["asset-sync"].0
    );
    let env = std::fs::read_to_string(vengeance.state.path().join("node.env")).unwrap();
    assert!(
        env.contains(&format!("AURORA_IMAGE_ASSET_SYNC={v2}")),
        "{env}"
    );
    eventually(
        "asset-sync healthy again after the rollback",
        Duration::from_secs(60),
        || synced_file(&vengeance, "mirror/only-copy-left.txt", "served by star"),
    )
    .await;

    // The long tier: the same the other way round (star killed, the lead
    // takes over again, star rejoins).
    if std::env::var("TEST_TIER").as_deref() == Ok("long") {
        fail_over(&star, &lead, &vengeance, 3).await;
        rejoin(&star, &lead, 3).await;
    }

    for n in [&mut lead, &mut star, &mut vengeance] {
        n.passed = true;
    }
    for tag in [v2, broken] {
        let _ = Command::new("docker")
            .args(["rmi", "-f", tag])
            .output()
            .await;
    }
}

/// One node installed by `bootstrap/bootstrap.sh` under a directory of its
/// own (prefix, config, the aurora-cli link); `uninstall.sh --purge` on
/// drop, logs kept on failure.
struct Installed {
    name: &'static str,
    vpn_ip: &'static str,
    wan_ip: String,
    base: tempfile::TempDir,
    ports: BTreeMap<&'static str, u16>,
    args: Vec<String>,
    passed: bool,
}

impl Installed {
    fn prefix(&self) -> PathBuf {
        self.base.path().join("opt/aurora")
    }

    fn state(&self) -> PathBuf {
        self.prefix().join("state")
    }

    fn secret(&self, key: &str) -> String {
        let mut env = read_env(&self.state().join("secrets/fleet.env"));
        env.extend(read_env(&self.state().join("secrets/node.env")));
        env.remove(key).unwrap()
    }

    fn peer(&self) -> String {
        let key =
            std::fs::read_to_string(self.state().join("secrets/wireguard/public.key")).unwrap();
        format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = {}/32\nEndpoint = {}:51820\nPersistentKeepalive = 5\n\n",
            key.trim(),
            self.vpn_ip,
            self.wan_ip
        )
    }

    /// bootstrap.sh with this node's answers and `extra`; its output, or
    /// a panic with it.
    async fn bootstrap(&self, extra: &[&str]) -> String {
        run(
            Command::new("bash")
                .arg(repo().join("bootstrap/bootstrap.sh"))
                .args(&self.args)
                .args(extra),
            &format!("bootstrap.sh for {}", self.name),
        )
        .await
    }

    async fn pg(&self) -> Result<tokio_postgres::Client, String> {
        pg_at(self.ports["postgres"], &self.secret("POSTGRES_PASSWORD")).await
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let env = self.state().join("node.env");
        if !self.passed && env.exists() {
            let dir =
                std::env::temp_dir().join(format!("aurora-install-{}-diagnostics", self.name));
            let _ = std::fs::create_dir_all(&dir);
            if let Ok(out) = std::process::Command::new("docker")
                .arg("compose")
                .arg("--env-file")
                .arg(&env)
                .args(["logs", "--no-color"])
                .output()
            {
                let _ = std::fs::write(dir.join("compose.log"), &out.stdout);
                eprintln!(
                    "install test failed: {}'s compose logs in {}",
                    self.name,
                    dir.display()
                );
            }
        }
        if std::env::var_os("STACK_TEST_KEEP").is_none() && env.exists() {
            let _ = std::process::Command::new("bash")
                .arg(repo().join("bootstrap/uninstall.sh"))
                .arg("--prefix")
                .arg(self.prefix())
                .args(["--purge", "--yes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The installer end to end on the Docker Engine (the long tier): a lead,
/// then a backup and a compute node joined by hand (the fleet's secrets
/// copied, each new node's WireGuard peer added to the others'
/// peers.static.conf between an `--no-start` install and the real one), each
/// its own compose project with its own network namespace, pre-staged
/// images and no Docker install. Then the fleet as an operator sees it:
/// `aurora-cli status` through the installed link, the backup synchronous, a
/// row written on the lead read on the compute node through the tunnel; and
/// `uninstall.sh --purge` leaves no container behind.
#[tokio::test(flavor = "multi_thread")]
async fn the_installer_brings_up_a_fleet_joined_by_hand_and_by_token_long_tier() {
    let images = build_images().await;
    let scratch = tempfile::tempdir().unwrap();
    let image_env = scratch.path().join("images.env");
    std::fs::write(
        &image_env,
        images
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>(),
    )
    .unwrap();
    // The release as the installer unpacks it.
    let bundle = scratch.path().join("bundle");
    std::fs::create_dir_all(bundle.join("bin")).unwrap();
    for d in ["compose", "bootstrap"] {
        std::os::unix::fs::symlink(repo().join(d), bundle.join(d)).unwrap();
    }
    std::fs::copy(
        testbed::tools::workspace_bin("aurora-cli").unwrap(),
        bundle.join("bin/aurora-cli"),
    )
    .unwrap();
    let wan = Wan::create().await;
    let node = |name: &'static str, role: &'static str, vpn_ip: &'static str, i: usize| {
        let base = tempfile::Builder::new()
            .prefix(&format!("aurora-install-{name}-"))
            .tempdir()
            .unwrap();
        let project = format!(
            "aurora-test-install-{}",
            base.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_lowercase()
                .replace(['_', '.'], "-")
        );
        let prefix = base.path().join("opt/aurora");
        let wan_yaml = base.path().join("wan.yaml");
        std::fs::write(
            &wan_yaml,
            format!(
                "services:\n  wireguard:\n    networks:\n      default: {{}}\n      wan:\n        ipv4_address: {}\n\
                 networks:\n  wan:\n    external: true\n    name: {}\n",
                wan.ip(i),
                wan.name
            ),
        )
        .unwrap();
        let mut ports = BTreeMap::new();
        let mut args: Vec<String> = vec![
            "--non-interactive".into(),
            "--skip-install".into(),
            "--name".into(),
            name.into(),
            "--role".into(),
            role.into(),
            "--vpn-ip".into(),
            vpn_ip.into(),
            "--members".into(),
            FLEET.into(),
            "--prefix".into(),
            prefix.display().to_string(),
            "--etc-dir".into(),
            base.path().join("etc").display().to_string(),
            "--bin-dir".into(),
            base.path().join("bin").display().to_string(),
            "--bundle".into(),
            bundle.display().to_string(),
            "--image-env".into(),
            image_env.display().to_string(),
            "--wg-endpoint".into(),
            format!("{}:51820", wan.ip(i)),
            // What this machine can run of the role's services.
            "--services".into(),
            services_of(role).join(" "),
        ];
        let mut set = |kv: String| {
            args.push("--set".into());
            args.push(kv);
        };
        set(format!(
            "COMPOSE_FILE={}:{}",
            prefix.join("compose/compose.yaml").display(),
            wan_yaml.display()
        ));
        set(format!("AURORA_PROJECT={project}"));
        set("AURORA_WG_BIND=127.0.0.1".into());
        set("AURORA_JOIN_BIND=127.0.0.1".into());
        // As in init_node: this machine's / is not a shared mount.
        set(format!("AURORA_HOST_ROOT={}", base.path().display()));
        set("AURORA_HOST_ROOT_PROPAGATION=rprivate".into());
        for &(service, var) in PORT_VARS {
            let port = free_port();
            ports.insert(service, port);
            set(format!("{var}={port}"));
        }
        Installed {
            name,
            vpn_ip,
            wan_ip: wan.ip(i),
            base,
            ports,
            args,
            passed: false,
        }
    };
    let mut lead = node("aurora", "lead", "10.0.0.1", 1);
    let mut star = node("star", "backup", "10.0.0.2", 2);
    let mut vengeance = node("vengeance", "compute", "10.0.0.3", 3);

    // The operator's view, through what the installer set up.
    let cli = |n: &Installed, args: &[&str]| {
        let mut c = Command::new(n.base.path().join("bin/aurora-cli"));
        c.arg("--config")
            .arg(n.base.path().join("etc/node.toml"))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("AURORA_CONFIG");
        c
    };
    let started = Instant::now();
    lead.bootstrap(&[]).await;
    let lead_secs = started.elapsed().as_secs_f64();
    let fleet_env = scratch.path().join("fleet.env");
    std::fs::copy(lead.state().join("secrets/fleet.env"), &fleet_env).unwrap();
    // Each joining node: installed without starting (its key exists then),
    // its peer added on the nodes already up, then installed for real.
    // The lead's install laid out its Garage as far as it can alone: staged,
    // waiting for the backup's copy. Asked again, it says the same, changes
    // nothing, and names itself for the backup's --garage-peer.
    let out = cli(&lead, &["asset-origin", "setup", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let origin: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(origin["ready"], false, "{origin}");
    assert!(
        origin["changes"].as_array().unwrap().is_empty(),
        "the install staged the lead already: {origin}"
    );
    let garage_peer = origin["node"].as_str().unwrap().to_string();
    assert!(
        garage_peer.starts_with("aurora=") && garage_peer.ends_with("@10.0.0.1:3901"),
        "{garage_peer}"
    );
    let mut up: Vec<&Installed> = vec![&lead];
    let mut join_secs = vec![];
    for joining in [&star] {
        let t = Instant::now();
        let peers = scratch.path().join(format!("{}-peers.conf", joining.name));
        std::fs::write(&peers, up.iter().map(|n| n.peer()).collect::<String>()).unwrap();
        let fe = fleet_env.display().to_string();
        let pe = peers.display().to_string();
        let printed = joining
            .bootstrap(&["--fleet-env", &fe, "--wg-peers", &pe, "--no-start"])
            .await;
        assert!(
            printed.is_empty(),
            "bootstrap prints to stderr only: {printed}"
        );
        for other in &up {
            let file = other.state().join("secrets/wireguard/peers.static.conf");
            let mut text = std::fs::read_to_string(&file).unwrap();
            text.push_str(&joining.peer());
            std::fs::write(&file, text).unwrap();
        }
        joining
            .bootstrap(&[
                "--fleet-env",
                &fe,
                "--wg-peers",
                &pe,
                "--garage-peer",
                &garage_peer,
            ])
            .await;
        join_secs.push(t.elapsed().as_secs_f64());
        up.push(joining);
    }
    // The compute node joins with a token: it asks the fleet for its
    // address, members, peers and secrets (none is given), and the lead's
    // and the backup's health-monitors add its peer from the registry. A
    // lone lead of a planned fleet is fenced (read-only) until a member
    // streams, so tokens work once the backup is up; the lead's install
    // said so instead of printing one.
    let t = Instant::now();
    let token = eventually(
        "a join token from the lead, writable now that the backup streams",
        Duration::from_secs(120),
        || async {
            let out = cli(
                &lead,
                &["join-token", "create", "--ttl", "10m", "--role", "compute"],
            )
            .output()
            .await
            .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await;
    assert!(
        token.ends_with(&format!(".{}:{}", lead.wan_ip, lead.ports["join"])),
        "the token names the lead's public address and join port: {token}"
    );
    for flag in ["--members", "--vpn-ip"] {
        let i = vengeance.args.iter().position(|a| a == flag).unwrap();
        vengeance.args.drain(i..i + 2);
    }
    // The lead's join port is published on this host's loopback here.
    let join_url = format!("127.0.0.1:{}", lead.ports["join"]);
    vengeance
        .bootstrap(&["--token", &token, "--join", &join_url])
        .await;
    join_secs.push(t.elapsed().as_secs_f64());
    let env = read_env(&vengeance.state().join("node.env"));
    assert_eq!(
        env["AURORA_VPN_IP"], vengeance.vpn_ip,
        "the address the fleet picked"
    );
    let total = started.elapsed().as_secs_f64();
    eprintln!(
        "installer: a fleet of three installed and healthy in {total:.0} s \
         (lead {lead_secs:.0} s, backup by hand {:.0} s, compute by token {:.0} s; images pre-staged)",
        join_secs[0], join_secs[1]
    );

    let status = eventually(
        "aurora-cli status on the lead: the backup synchronous, the compute streaming",
        Duration::from_secs(180),
        || async {
            let out = cli(&lead, &["sync-db", "--json"])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
            let text = v.to_string();
            let primary = v["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["node"] == v["primary"]).cloned())
                .unwrap_or_default();
            if primary["node"] != "aurora" {
                return Err(format!("the primary is not the lead: {text}"));
            }
            let replicas = primary["replicas"].as_array().cloned().unwrap_or_default();
            let find = |n: &str| replicas.iter().find(|r| r["name"] == n).cloned();
            match (find("star"), find("vengeance")) {
                (Some(b), Some(c)) if b["sync_state"] == "sync" && c["state"] == "streaming" => {
                    Ok(text)
                }
                _ => Err(text),
            }
        },
    )
    .await;
    assert!(status.contains("aurora"), "{status}");
    let out = cli(&lead, &["status"]).output().await.unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aurora-cli status: {screen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["aurora", "star", "vengeance"] {
        assert!(
            screen.contains(name),
            "{name} missing from aurora-cli status:\n{screen}"
        );
    }

    // A row written on the lead arrives on the compute node through the tunnel.
    let lc = lead.pg().await.unwrap();
    lc.batch_execute(
        "CREATE TABLE installed (v text); INSERT INTO installed VALUES ('through the tunnel')",
    )
    .await
    .unwrap();
    eventually(
        "the row reaches the compute node",
        Duration::from_secs(60),
        || async {
            let c = vengeance.pg().await?;
            let rows = c
                .query("SELECT v FROM installed", &[])
                .await
                .map_err(|e| e.to_string())?;
            match rows.first() {
                Some(r) if r.get::<_, String>(0) == "through the tunnel" => Ok(()),
                _ => Err(format!("{} rows", rows.len())),
            }
        },
    )
    .await;
    // The asset origin the installers laid out: an object uploaded to the
    // lead's Garage is mirrored on the compute node, which runs no Garage.
    let s3 = s3_at(
        lead.ports["garage"],
        &lead.secret("S3_ACCESS_KEY_ID"),
        &lead.secret("S3_SECRET_ACCESS_KEY"),
    );
    s3.put_object()
        .bucket("assets")
        .key("installed/logo.txt")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"laid out by the installers\n",
        ))
        .send()
        .await
        .unwrap();
    let mirror = std::path::PathBuf::from(
        &read_env(&vengeance.state().join("node.env"))["AURORA_ASSETS_DIR"],
    )
    .join("mirror/installed/logo.txt");
    eventually(
        "the compute node mirrors the lead's upload",
        Duration::from_secs(120),
        || async {
            let _ = cli(&vengeance, &["sync-assets", "--json"]).output().await;
            match std::fs::read_to_string(&mirror) {
                Ok(t) if t.contains("laid out by the installers") => Ok(()),
                other => Err(format!("{}: {other:?}", mirror.display())),
            }
        },
    )
    .await;

    // The credentials file holds what the operator logs in with.
    let creds = std::fs::read_to_string(lead.prefix().join(".credentials")).unwrap();
    assert!(creds.contains(&lead.secret("GRAFANA_ADMIN_PASSWORD")));

    // Uninstalled, nothing is left running.
    for n in [&mut vengeance, &mut star, &mut lead] {
        let project = read_env(&n.state().join("node.env"))["AURORA_PROJECT"].clone();
        run(
            Command::new("bash")
                .arg(repo().join("bootstrap/uninstall.sh"))
                .arg("--prefix")
                .arg(n.prefix())
                .args(["--purge", "--yes"]),
            &format!("uninstall.sh for {}", n.name),
        )
        .await;
        for (what, list) in [("containers", ["ps", "-a"]), ("volumes", ["volume", "ls"])] {
            let left = run(
                Command::new("docker").args(list).args([
                    "-q",
                    "--filter",
                    &format!("label=com.docker.compose.project={project}"),
                ]),
                "docker",
            )
            .await;
            assert!(
                left.trim().is_empty(),
                "{}'s {what} survived uninstall --purge: {left}",
                n.name
            );
        }
        assert!(!n.prefix().exists());
        n.passed = true;
    }
}

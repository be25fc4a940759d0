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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

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

/// One node's compose project; `down -v` on drop, logs kept on failure.
struct Node {
    project: String,
    state: tempfile::TempDir,
    env: BTreeMap<String, String>,
    ports: BTreeMap<&'static str, u16>,
    secrets: BTreeMap<String, String>,
    passed: bool,
}

impl Node {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("compose")
            .arg("-f")
            .arg(repo().join("compose/compose.yaml"))
            .arg("--env-file")
            .arg(self.state.path().join("node.env"))
            .arg("-p")
            .arg(&self.project);
        c
    }

    fn url(&self, service: &'static str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[service])
    }

    async fn save_diagnostics(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{}-diagnostics", self.project));
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(out) = self.compose().args(["logs", "--no-color"]).output().await {
            let _ = std::fs::write(dir.join("compose.log"), &out.stdout);
        }
        if let Ok(out) = self.compose().args(["ps", "-a"]).output().await {
            let _ = std::fs::write(dir.join("ps.txt"), &out.stdout);
        }
        let http = HttpClient::new(Duration::from_secs(3));
        for s in ["repl-manager", "asset-sync", "health-monitor", "dns-sync"] {
            let body = match http.get(&self.url(s, "/status")).await {
                Ok(r) => r.text(),
                Err(e) => e.to_string(),
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
                    "stack test failed: compose logs and /status saved in {}",
                    dir.display()
                );
            }
        }
        if !keep {
            let _ = std::process::Command::new("docker")
                .arg("compose")
                .arg("-f")
                .arg(repo().join("compose/compose.yaml"))
                .arg("--env-file")
                .arg(self.state.path().join("node.env"))
                .arg("-p")
                .arg(&self.project)
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

async fn init_lead(images: &BTreeMap<String, String>) -> Node {
    let state = tempfile::Builder::new()
        .prefix("aurora-stack-")
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
    for (name, var) in [
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
    ] {
        ports.insert(name, (var, free_port()));
    }
    let mut cmd = Command::new(repo().join("compose/node-init.sh"));
    cmd.arg("--state-dir")
        .arg(state.path())
        .args(["--name", "aurora", "--role", "lead", "--vpn-ip", "10.0.0.1"])
        .args(["--set", "AURORA_WG_BIND=127.0.0.1"])
        // This machine's / is not a shared mount (no systemd), and Docker
        // binds / only as rslave: node-exporter sees the state directory
        // as its root filesystem instead.
        .arg("--set")
        .arg(format!("AURORA_HOST_ROOT={}", state.path().display()))
        .args(["--set", "AURORA_HOST_ROOT_PROPAGATION=rprivate"]);
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
        project,
        env,
        ports: ports.into_iter().map(|(k, (_, p))| (k, p)).collect(),
        state,
        secrets,
        passed: false,
    }
}

/// Garage's first start: one node holding every partition, the fleet's key
/// imported, the bucket created (what the installer does on a lead).
async fn garage_setup(node: &Node) {
    let exec = |args: &[&str]| {
        let mut c = node.compose();
        c.args(["exec", "-T", "garage", "/garage"]).args(args);
        c
    };
    let status = run(&mut exec(&["node", "id", "-q"]), "garage node id").await;
    let id = status.trim().split('@').next().unwrap().to_string();
    run(
        &mut exec(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]),
        "garage layout assign",
    )
    .await;
    run(
        &mut exec(&["layout", "apply", "--version", "1"]),
        "garage layout apply",
    )
    .await;
    let key = &node.secrets["S3_ACCESS_KEY_ID"];
    let secret = &node.secrets["S3_SECRET_ACCESS_KEY"];
    run(
        &mut exec(&["key", "import", "--yes", "-n", "assets", key, secret]),
        "garage key import",
    )
    .await;
    run(
        &mut exec(&["bucket", "create", "assets"]),
        "garage bucket create",
    )
    .await;
    run(
        &mut exec(&[
            "bucket", "allow", "--read", "--write", "assets", "--key", key,
        ]),
        "garage bucket allow",
    )
    .await;
}

fn s3(node: &Node) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(
        &node.secrets["S3_ACCESS_KEY_ID"],
        &node.secrets["S3_SECRET_ACCESS_KEY"],
        None,
        None,
        "stack-test",
    );
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("garage"))
        .endpoint_url(node.url("garage", ""))
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
    let mut node = init_lead(&images).await;
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
    garage_setup(&node).await;
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
    let http = HttpClient::new(Duration::from_secs(30));
    let token = Secret::new(node.secrets["ADMIN_TOKEN"].clone());
    eventually(
        "asset-sync mirrors the bucket",
        Duration::from_secs(60),
        || async {
            http.send(
                hyper::Method::POST,
                &node.url("asset-sync", "/sync"),
                Some(&token),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
            let out = Command::new("docker")
                .args(["compose", "-f"])
                .arg(repo().join("compose/compose.yaml"))
                .arg("--env-file")
                .arg(node.state.path().join("node.env"))
                .args([
                    "-p",
                    &node.project,
                    "cp",
                    "asset-sync:/assets/img/logo.txt",
                    "-",
                ])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("aurora asset") {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).to_string())
            }
        },
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
            // cAdvisor is production-only (not startable here): its target is
            // expected down; every other must be up.
            let down: Vec<String> = down
                .into_iter()
                .filter(|d| !d.starts_with("\"cadvisor\""))
                .collect();
            if targets.len() >= 8 && down.is_empty() {
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
    let cli_config = node.state.path().join("node.toml");
    std::fs::write(
        &cli_config,
        format!(
            "[node]\nname = \"aurora\"\nrole = \"lead\"\n\n[admin]\ntoken = \"{}\"\n\n[sidecars]\nrepl_manager = \"{}\"\nhealth_monitor = \"{}\"\nasset_sync = \"{}\"\ndns_sync = \"{}\"\n",
            node.secrets["ADMIN_TOKEN"],
            node.url("repl-manager", ""),
            node.url("health-monitor", ""),
            node.url("asset-sync", ""),
            node.url("dns-sync", ""),
        ),
    )
    .unwrap();
    let cli = testbed::tools::workspace_bin("aurora-cli").unwrap();
    eventually(
        "aurora-cli status shows a healthy node",
        Duration::from_secs(60),
        || async {
            let out = Command::new(&cli)
                .arg("--config")
                .arg(&cli_config)
                .arg("status")
                .env("NO_COLOR", "1")
                .output()
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() {
                Ok(text)
            } else {
                Err(format!(
                    "{}\n{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        },
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

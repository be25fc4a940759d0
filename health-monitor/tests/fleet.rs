//! health-monitor against a real PostgreSQL primary and replica and the
//! machine's real Redis.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::time::Duration;

use aurora_api::monitor::{CheckStatus, FleetHealth, FleetNodeStatus, FleetView, MonitorStatus};
use cluster_db::Dsn;
use health_monitor::config::HttpCheck;
use health_monitor::Config;
use serde_json::Value;
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::{Lifecycle, Secret};
use testbed::postgres::wait_until;
use testbed::{PgCluster, PgOptions, StopMode};

#[path = "fleet/join.rs"]
mod join;

async fn primary() -> PgCluster {
    let pg = PgCluster::start_new(PgOptions::named("hm")).await.unwrap();
    let mut c = pg.connect("postgres").await.unwrap();
    cluster_db::migrate(&mut c).await.unwrap();
    cluster_db::queries::record_primary(&c, 1, &cluster_db::NodeName::parse("aurora").unwrap())
        .await
        .unwrap();
    pg
}

/// A streaming replica whose application name is `name` (repl-manager names
/// every standby after its node the same way).
async fn replica_of(primary: &PgCluster, name: &str) -> PgCluster {
    let r = PgCluster::standby_of(primary, PgOptions::named("hm-replica"))
        .await
        .unwrap();
    let c = r.connect("postgres").await.unwrap();
    let conninfo: String = c
        .query_one("SHOW primary_conninfo", &[])
        .await
        .unwrap()
        .get(0);
    let conninfo = format!("{conninfo} application_name={name}").replace('\'', "''");
    c.batch_execute(&format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"))
        .await
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    r
}

fn config(name: &str, role: &str, ip: &str, local: &PgCluster, primary: &PgCluster) -> Config {
    let mut c = Config::default();
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.node.name = name.into();
    c.node.role = role.parse().unwrap();
    c.node.vpn_ip = Some(ip.parse().unwrap());
    c.database.local_dsn = Dsn::parse(&local.dsn("postgres")).unwrap();
    // Two candidates, the replica first: the write target must skip it.
    c.database.write_dsn = Dsn::parse(&format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres target_session_attrs=read-write",
        local.port(),
        primary.port()
    ))
    .unwrap();
    c.database.connect_timeout_secs = 1;
    c.checks.interval_secs = 1;
    c.checks.timeout_secs = 1;
    c.checks.disks = vec![std::env::temp_dir()];
    // How full the machine's disk is, is not under test either (CI machines
    // have run at over 90 %); the thresholds are unit-tested in checks.rs.
    c.checks.disk_warning_percent = 99;
    c.checks.disk_critical_percent = 100;
    c.checks.redis = Some("127.0.0.1:6379".into());
    // The machine running the suite is busy; its load is not under test.
    c.checks.load_warning_per_core = 1000.0;
    c
}

struct Running {
    lifecycle: Lifecycle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    url: String,
}

async fn start(c: Config) -> Running {
    let lifecycle = Lifecycle::new();
    let task = tokio::spawn(health_monitor::run(c, lifecycle.clone()));
    let url = format!("http://{}", lifecycle.admin_addr().await.unwrap());
    Running {
        lifecycle,
        task,
        url,
    }
}

impl Running {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = HttpClient::new(Duration::from_secs(5))
            .get(&format!("{}{path}", self.url))
            .await
            .unwrap();
        (
            r.status.as_u16(),
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// `GET path` read as the contract type `T`, whole (see
    /// `aurora_api::conforms`); with the answer's status.
    async fn conform<T>(&self, path: &str) -> (u16, T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let http = HttpClient::new(Duration::from_secs(5));
        let (code, t) = testbed::contract::get(&http, &format!("{}{path}", self.url)).await;
        (code.as_u16(), t)
    }

    async fn status_of(&self, node: &str) -> String {
        let (_, v) = self.get("/cluster").await;
        v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == node))
            .map(|n| n["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| "absent".into())
    }

    async fn stop(self) {
        self.lifecycle.shutdown();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_reports_and_the_fleet_view() {
    let p = primary().await;
    let mut r = replica_of(&p, "star").await;
    // The primary waits for `star`, as repl-manager sets it up (only now:
    // before the standby exists, every commit would wait for it).
    let admin = p.connect("postgres").await.unwrap();
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (star)'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let wg_dir = tempfile::tempdir().unwrap();
    let wg_file = wg_dir.path().join("wg0.conf");
    let mut lead_cfg = config("aurora", "lead", "10.0.0.1", &p, &p);
    lead_cfg.wireguard.config_path = Some(wg_file.clone());
    let lead = start(lead_cfg).await;
    // The backup reads its replica and writes through it to the primary.
    let mut star_cfg = config("star", "backup", "10.0.0.2", &r, &p);
    star_cfg.node.wg_public_key = Some("TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=".into());
    star_cfg.node.wg_endpoint = Some("star.example.net:51820".into());
    let backup = start(star_cfg).await;

    for (hm, other) in [(&lead, "star"), (&backup, "aurora")] {
        let seen = wait_until(Duration::from_secs(10), || async {
            hm.status_of(other).await == "passing"
        })
        .await;
        assert!(
            seen,
            "{other} never passing: {:?} {:?}",
            hm.get("/cluster").await,
            hm.get("/status").await
        );
    }
    let (code, v) = lead.get("/status").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in ["postgres", "memory", "load", "redis"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("disk:")));
    let (code, v) = lead.get("/cluster/health").await;
    assert_eq!(code, 200, "{v}");
    // Every answer is the contract's type, whole, in this build's vocabulary.
    let (_, st): (_, MonitorStatus) = lead.conform("/status").await;
    assert!(st.registered && st.role == aurora_api::Role::Lead, "{st:?}");
    assert!(st
        .checks
        .iter()
        .all(|c| CheckStatus::KNOWN.contains(&c.status.as_str())));
    let (_, fleet): (_, FleetView) = lead.conform("/cluster").await;
    assert_eq!(fleet.nodes.len(), 2, "{fleet:?}");
    assert!(fleet
        .nodes
        .iter()
        .all(|n| FleetNodeStatus::KNOWN.contains(&n.status.as_str())));
    let (code, health): (_, FleetHealth) = lead.conform("/cluster/health").await;
    assert_eq!((code, health.healthy), (200, true));
    // The new node reaches the lead's WireGuard peer file within an interval.
    let peered = wait_until(Duration::from_secs(5), || async {
        std::fs::read_to_string(&wg_file)
            .map(|t| {
                t.contains("# star (backup)") && t.contains("Endpoint = star.example.net:51820")
            })
            .unwrap_or(false)
    })
    .await;
    assert!(peered, "{:?}", std::fs::read_to_string(&wg_file));

    // The backup's PostgreSQL stops streaming: the fleet is not healthy
    // (commits are not protected), and is again once it streams.
    r.stop(StopMode::Fast).await.unwrap();
    let flipped = wait_until(Duration::from_secs(10), || async {
        let (code, v) = lead.get("/cluster/health").await;
        code == 503
            && v["reasons"]
                .to_string()
                .contains("no synchronous standby is streaming")
    })
    .await;
    assert!(flipped, "{:?}", lead.get("/cluster/health").await);
    r.start().await.unwrap();
    let back = wait_until(Duration::from_secs(15), || async {
        lead.get("/cluster/health").await.0 == 200
    })
    .await;
    assert!(back, "{:?}", lead.get("/cluster/health").await);
    let (_, v) = lead.get("/cluster").await;
    assert_eq!(v["replication"]["standbys"][0]["name"], "star", "{v}");
    assert_eq!(v["replication"]["standbys"][0]["sync_state"], "sync", "{v}");

    // A node that stops reporting turns down after three intervals...
    backup.stop().await;
    assert!(
        wait_until(Duration::from_secs(8), || async {
            lead.status_of("star").await == "down"
        })
        .await
    );
    let (code, health): (_, FleetHealth) = lead.conform("/cluster/health").await;
    assert_eq!((code, health.healthy), (503, false));
    assert!(
        health.reasons.iter().any(|r| r.contains("star is down")),
        "{health:?}"
    );
    // ...recorded in the database (so DNS's serial moves with it)...
    let marked =
        "SELECT count(*) FROM aurora.health WHERE node = 'star' AND down_since IS NOT NULL";
    let count = |sql: &'static str| {
        let admin = &admin;
        async move { admin.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert!(
        wait_until(Duration::from_secs(3), || async {
            count(marked).await == 1
        })
        .await,
        "the lead's monitor did not mark star down"
    );
    // ...and comes back when it returns, the mark cleared by its report.
    let backup = start(config("star", "backup", "10.0.0.2", &r, &p)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            lead.status_of("star").await == "passing"
        })
        .await
    );
    assert_eq!(count(marked).await, 0);
    backup.stop().await;
    lead.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_custom_check_is_critical() {
    let p = primary().await;
    let mut c = config("aurora", "lead", "10.0.0.1", &p, &p);
    let dead = testbed::free_port().unwrap();
    c.checks.http = vec![HttpCheck {
        name: "api".into(),
        url: format!("http://127.0.0.1:{dead}/health"),
    }];
    let hm = start(c).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            hm.status_of("aurora").await == "critical"
        })
        .await
    );
    let (_, v) = hm.get("/status").await;
    let api = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "http:api")
        .unwrap()
        .clone();
    assert_eq!(api["status"], "critical");
    assert!(api["message"].as_str().unwrap().contains(&dead.to_string()));
    let (code, v) = hm.get("/cluster/health").await;
    assert_eq!(code, 503);
    assert!(v["reasons"].to_string().contains("critical"));
    hm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_address_is_refused() {
    let p = primary().await;
    let first = start(config("aurora", "lead", "10.0.0.1", &p, &p)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            first.status_of("aurora").await == "passing"
        })
        .await
    );
    let lifecycle = Lifecycle::new();
    let err = health_monitor::run(config("impostor", "compute", "10.0.0.1", &p, &p), lifecycle)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("already registered to node aurora"), "{msg}");
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_away_and_back() {
    let mut p = primary().await;
    let hm = start(config("aurora", "lead", "10.0.0.1", &p, &p)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            hm.status_of("aurora").await == "passing"
        })
        .await
    );
    p.stop(StopMode::Immediate).await.unwrap();
    let degraded = wait_until(Duration::from_secs(8), || async {
        hm.get("/health").await.1["status"] == "degraded"
    })
    .await;
    assert!(degraded, "{:?}", hm.get("/health").await);
    // (Within the second one fleet read is reused for.)
    let unavailable = wait_until(Duration::from_secs(3), || async {
        hm.get("/cluster").await.0 == 503
    })
    .await;
    assert!(unavailable, "no local database, no fleet view");

    p.start().await.unwrap();
    let healed = wait_until(Duration::from_secs(10), || async {
        hm.get("/health").await.1["status"] == "ok"
    })
    .await;
    assert!(healed);
    // (The fleet view may still be the failed read of up to a second ago.)
    assert!(
        wait_until(Duration::from_secs(3), || async {
            hm.status_of("aurora").await == "passing"
        })
        .await
    );
    hm.stop().await;
}

/// The primary's host vanishes without a RST while this node's own
/// database is fine: the monitor must notice within a few intervals —
/// reports counted as failed, `/health` degraded — and keep checking,
/// not hang in a write for the kernel's ~15 min retransmission timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_primary_stalls_nothing() {
    let p = primary().await;
    let r = replica_of(&p, "vengeance").await;
    let hm = start(config("vengeance", "compute", "10.0.0.3", &r, &p)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            hm.status_of("vengeance").await == "passing"
        })
        .await
    );
    let failed = |m: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with("aurora_health_monitor_reports_total{outcome=\"failed\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        let r = HttpClient::new(Duration::from_secs(5))
            .get(&format!("{}/metrics", hm.url))
            .await
            .unwrap();
        String::from_utf8_lossy(&r.body).to_string()
    };
    let before = failed(&metrics().await);
    let hole = testbed::Blackhole::new(p.port()).unwrap();
    let degraded = wait_until(Duration::from_secs(15), || async {
        hm.get("/health").await.1["status"] == "degraded"
    })
    .await;
    assert!(degraded, "{:?}", hm.get("/health").await);
    // Rounds go on: more than one failed report, each within its deadline.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            failed(&metrics().await) >= before + 2.0
        })
        .await,
        "{}",
        metrics().await
    );
    drop(hole);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            hm.get("/health").await.1["status"] == "ok"
        })
        .await,
        "{:?}",
        hm.get("/health").await
    );
    hm.stop().await;
}

/// One kept connection per target: the checks, the report, the registry
/// read and the fleet view share them, so a healthy fleet opens no new
/// backends on the primary interval after interval (it opened four or five
/// per interval per node). Counted by PostgreSQL itself: `sessions` in
/// `pg_stat_database` counts every backend ever started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_reuse_one_connection_per_target() {
    let p = primary().await;
    let r = replica_of(&p, "vengeance").await;
    // local = the replica, write = the primary (after trying the replica).
    let hm = start(config("vengeance", "compute", "10.0.0.3", &r, &p)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            hm.status_of("vengeance").await == "passing"
        })
        .await
    );
    // One session of our own, kept, for every sample.
    let watch_p = p.connect("postgres").await.unwrap();
    let watch_r = r.connect("postgres").await.unwrap();
    async fn sessions(c: &tokio_postgres::Client) -> i64 {
        c.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        c.query_one("SELECT sum(sessions)::int8 FROM pg_stat_database", &[])
            .await
            .unwrap()
            .get(0)
    }
    // Let the first round's connections settle into the counters.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (p0, r0) = (sessions(&watch_p).await, sessions(&watch_r).await);
    // Five intervals, and the fleet view read through the API as well.
    for _ in 0..5 {
        assert_eq!(hm.get("/cluster").await.0, 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (p1, r1) = (sessions(&watch_p).await, sessions(&watch_r).await);
    // Every connect to the write target tries the replica first (it is
    // listed first and is not read-write): both servers count it.
    assert!(
        p1 - p0 <= 2 && r1 - r0 <= 3,
        "new backends over five intervals: primary {}, replica {}",
        p1 - p0,
        r1 - r0
    );
    hm.stop().await;
}

/// The primary's node dies and nothing fails over (a two-node fleet, or
/// failover paused): its monitor, the one that usually sends, died with it.
/// The backup's monitor, which still reads the fleet from its own replica,
/// must see the primary down and page, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_without_a_failover_is_paged_by_a_survivor() {
    let p = primary().await;
    let r = replica_of(&p, "star").await;
    let (receiver, server) = webhook_receiver().await;
    let hook = loopback_hook(&server);
    let mut lead_cfg = config("aurora", "lead", "10.0.0.1", &p, &p);
    lead_cfg.alerts.webhooks = vec![hook.clone()];
    let mut star_cfg = config("star", "backup", "10.0.0.2", &r, &p);
    star_cfg.alerts.webhooks = vec![hook];
    let lead = start(lead_cfg).await;
    let star = start(star_cfg).await;
    for n in ["aurora", "star"] {
        assert!(
            wait_until(Duration::from_secs(15), || async {
                star.status_of(n).await == "passing"
            })
            .await,
            "{n} never passing in star's view"
        );
    }
    let count = || receiver.seen.lock().unwrap().len();
    assert_eq!(count(), 0);

    // The lead's host dies: its monitor is gone and its PostgreSQL stops
    // answering without a RST.
    lead.stop().await;
    let hole = testbed::Blackhole::new(p.port()).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async { count() >= 1 }).await,
        "nobody paged: star sees aurora as {}",
        star.status_of("aurora").await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "exactly one alert: {seen:?}");
        assert_eq!(seen[0]["node"], "aurora", "{seen:?}");
        assert_eq!(seen[0]["to"], "down", "{seen:?}");
    }
    drop(hole);
    star.stop().await;
}

/// A webhook receiver: sidecar-kit's own admin server, recording POSTs.
struct Receiver {
    seen: std::sync::Mutex<Vec<Value>>,
}

impl sidecar_kit::AdminApi for Receiver {
    async fn handle(&self, req: sidecar_kit::AdminRequest) -> sidecar_kit::Routed {
        if req.path == "/hook" {
            self.seen
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&req.body).unwrap());
            return sidecar_kit::AdminResponse::ok(&serde_json::json!({})).into();
        }
        sidecar_kit::Routed::NotFound
    }
}

/// A local webhook receiver (the admin server's plumbing, with `/hook`).
async fn webhook_receiver() -> (std::sync::Arc<Receiver>, sidecar_kit::AdminServer) {
    let receiver = std::sync::Arc::new(Receiver {
        seen: Default::default(),
    });
    let mut admin = sidecar_kit::AdminConfig::on_port(0);
    admin.listen = "127.0.0.1:0".parse().unwrap();
    admin.token = Some(Secret::new("hook-token-0123456789"));
    let server = sidecar_kit::AdminServer::start(
        &admin,
        receiver.clone(),
        sidecar_kit::Metrics::new("receiver").unwrap(),
        Lifecycle::new(),
    )
    .await
    .unwrap();
    (receiver, server)
}

/// A generic webhook to the local receiver, with its bearer token (allowed
/// over plain http: the receiver is on loopback).
fn loopback_hook(server: &sidecar_kit::AdminServer) -> health_monitor::config::Webhook {
    health_monitor::config::Webhook {
        url: Secret::new(format!("http://{}/hook", server.local_addr())),
        kind: health_monitor::config::WebhookKind::Generic,
        token: Some(Secret::new("hook-token-0123456789")),
        allow_token_over_http: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_once_per_transition_from_the_primary_only() {
    let p = primary().await;
    let (receiver, server) = webhook_receiver().await;
    let hook = loopback_hook(&server);
    // aurora holds the primary and sends; star has the same webhook but must not.
    let mut lead_cfg = config("aurora", "lead", "10.0.0.1", &p, &p);
    lead_cfg.alerts.webhooks = vec![hook.clone()];
    let mut star_cfg = config("star", "backup", "10.0.0.2", &p, &p);
    star_cfg.alerts.webhooks = vec![hook.clone()];
    let mut compute_cfg = config("vengeance", "compute", "10.0.0.3", &p, &p);
    compute_cfg.alerts.webhooks = vec![hook];
    let lead = start(lead_cfg).await;
    let star = start(star_cfg).await;
    let compute = start(compute_cfg.clone()).await;
    for n in ["star", "vengeance"] {
        assert!(
            wait_until(Duration::from_secs(10), || async {
                lead.status_of(n).await == "passing"
            })
            .await
        );
    }
    let count = || receiver.seen.lock().unwrap().len();
    assert_eq!(count(), 0);

    compute.stop().await;
    assert!(
        wait_until(Duration::from_secs(10), || async { count() >= 1 }).await,
        "no alert"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            1,
            "exactly one alert, from the primary's monitor: {seen:?}"
        );
        assert_eq!(seen[0]["node"], "vengeance");
        assert_eq!(seen[0]["to"], "down");
    }
    let compute = start(compute_cfg).await;
    assert!(
        wait_until(Duration::from_secs(10), || async { count() >= 2 }).await,
        "no recovery alert"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1]["to"], "passing");
    }
    compute.stop().await;
    star.stop().await;
    lead.stop().await;
}

/// A sidecar whose `/health` does not answer is a critical check naming its
/// URL; the node registers the GPUs `nvidia-smi` lists. There is no GPU on
/// the test machine, so `nvidia-smi` is a stand-in script on PATH printing
/// what the real one prints for `--query-gpu=... --format=csv,noheader,nounits`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_checks_and_gpu_inventory() {
    let bin = tempfile::tempdir().unwrap();
    let smi = bin.path().join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n\
         echo '0, NVIDIA L4, GPU-1b2c3d4e-0000-0000-0000-000000000001, 23034, 550.54.15'\n\
         echo '1, NVIDIA L4, GPU-1b2c3d4e-0000-0000-0000-000000000002, 23034, 550.54.15'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    // nextest runs each test in its own process: this PATH is this test's.
    std::env::set_var(
        "PATH",
        format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap()
        ),
    );

    let p = primary().await;
    let mut c = config("gpu1", "compute", "10.0.0.7", &p, &p);
    let dead = testbed::free_port().unwrap();
    c.checks
        .sidecars
        .insert("dns-sync".into(), format!("http://127.0.0.1:{dead}"));
    let hm = start(c).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            hm.status_of("gpu1").await == "critical"
        })
        .await
    );
    let (_, v) = hm.get("/status").await;
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidecar:dns-sync")
        .unwrap()
        .clone();
    assert_eq!(check["status"], "critical");
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string()),
        "{check}"
    );

    let db = p.connect("postgres").await.unwrap();
    let row = db
        .query_one("SELECT gpus FROM aurora.nodes WHERE name = 'gpu1'", &[])
        .await
        .unwrap();
    let gpus: Value = row.get(0);
    assert_eq!(gpus.as_array().unwrap().len(), 2, "{gpus}");
    assert_eq!(gpus[1]["name"], "NVIDIA L4");
    assert_eq!(gpus[1]["memory_mib"], 23034);
    let args = std::fs::read_to_string(bin.path().join("args")).unwrap();
    assert!(args.contains("--format=csv,noheader,nounits"), "{args}");
    hm.stop().await;
}

/// A TLS front for a plain receiver, with a self-signed certificate for
/// `localhost`: stands for Slack's HTTPS endpoint, which a test cannot reach.
async fn tls_front(plain: std::net::SocketAddr, pem_out: &std::path::Path) -> u16 {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(pem_out, cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(plain).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_an_https_webhook() {
    let p = primary().await;
    let (receiver, server) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("hook-ca.pem");
    let port = tls_front(server.local_addr(), &ca).await;

    let mut lead_cfg = config("aurora", "lead", "10.0.0.1", &p, &p);
    lead_cfg.alerts.webhooks = vec![health_monitor::config::Webhook {
        url: Secret::new(format!("https://localhost:{port}/hook")),
        kind: health_monitor::config::WebhookKind::Slack,
        token: Some(Secret::new("hook-token-0123456789")),
        allow_token_over_http: false,
    }];
    lead_cfg.alerts.ca_file = Some(ca.clone());
    sidecar_kit::Validate::validate(&lead_cfg).unwrap();
    let lead = start(lead_cfg.clone()).await;
    let compute = start(config("vengeance", "compute", "10.0.0.3", &p, &p)).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            lead.status_of("vengeance").await == "passing"
        })
        .await
    );
    compute.stop().await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            !receiver.seen.lock().unwrap().is_empty()
        })
        .await,
        "no alert over HTTPS"
    );
    let first = receiver.seen.lock().unwrap()[0].clone();
    assert!(
        first["text"].as_str().unwrap().contains("vengeance"),
        "a Slack body: {first}"
    );
    lead.stop().await;

    // A CA file that is not a certificate stops the sidecar before it starts.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let err = sidecar_kit::Validate::validate(&lead_cfg).unwrap_err();
    assert_eq!(err.key, "alerts.ca_file", "{err}");
}

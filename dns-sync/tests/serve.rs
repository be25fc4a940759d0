//! dns-sync against a real PostgreSQL, queried with `dig` (a real client).
//!
//! dns-sync runs in-process; `dig` is a blocking child process, so every
//! test uses a multi-threaded runtime to keep the server answering.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use aurora_api::dns::DnsStatus;
use cluster_db::queries::*;
use cluster_db::{HealthStatus, NodeName, NodeRegistration, Role};
use dns_sync::Config;
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::Lifecycle;
use testbed::postgres::wait_until;
use testbed::{free_port, PgCluster, PgOptions, StopMode};

const ZONE: &str = "aurora.internal";

fn reg(name: &str, role: Role, ip: &str) -> NodeRegistration {
    NodeRegistration {
        name: NodeName::parse(name).unwrap(),
        role,
        vpn_ip: ip.parse().unwrap(),
        wg_public_key: None,
        wg_endpoint: None,
        labels: Default::default(),
        gpus: vec![],
        versions: Default::default(),
    }
}

async fn database() -> (PgCluster, tokio_postgres::Client) {
    let pg = PgCluster::start_new(PgOptions::named("dns")).await.unwrap();
    let mut c = pg.connect("postgres").await.unwrap();
    cluster_db::migrate(&mut c).await.unwrap();
    for (n, r, ip) in [
        ("aurora", Role::Lead, "10.0.0.1"),
        ("star", Role::Backup, "10.0.0.2"),
        ("vengeance", Role::Compute, "10.0.0.3"),
    ] {
        upsert_node(&c, &reg(n, r, ip)).await.unwrap();
    }
    record_primary(&c, 1, &NodeName::parse("aurora").unwrap())
        .await
        .unwrap();
    (pg, c)
}

struct Dns {
    lifecycle: Lifecycle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    port: u16,
    admin: String,
}

impl Dns {
    async fn start(pg: &PgCluster, tweak: impl FnOnce(&mut Config)) -> Dns {
        let port = free_port().unwrap();
        let mut c = Config::default();
        c.admin.listen = "127.0.0.1:0".parse().unwrap();
        c.dns.listen = SocketAddr::from(([127, 0, 0, 1], port));
        c.dns.axfr_allow = vec!["127.0.0.1/32".parse().unwrap()];
        c.database.dsn = cluster_db::Dsn::parse(&pg.dsn("postgres")).unwrap();
        c.database.connect_timeout_secs = 1;
        tweak(&mut c);
        let lifecycle = Lifecycle::new();
        let task = tokio::spawn(dns_sync::run(c, lifecycle.clone()));
        let admin = format!("http://{}", lifecycle.admin_addr().await.unwrap());
        Dns {
            lifecycle,
            task,
            port,
            admin,
        }
    }

    async fn wait_ready(&self) {
        let http = HttpClient::new(Duration::from_secs(2));
        let url = format!("{}/ready", self.admin);
        let ok = wait_until(Duration::from_secs(10), || async {
            http.get(&url)
                .await
                .map(|r| r.status == 200)
                .unwrap_or(false)
        })
        .await;
        assert!(ok, "dns-sync never became ready");
    }

    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .args(["-p", &self.port.to_string(), "+time=2", "+tries=1"])
            .args(args)
            .output()
            .expect("dig is missing: install it with `apt-get install -y dnsutils` (./scripts/test does)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dig +short`, sorted.
    fn short(&self, name: &str, qtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig(&["+short", name, qtype])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect();
        v.sort();
        v
    }

    fn status(&self, name: &str, qtype: &str) -> String {
        let out = self.dig(&[name, qtype]);
        out.lines()
            .find_map(|l| l.split("status: ").nth(1))
            .map(|s| s.split(',').next().unwrap_or("").to_string())
            .unwrap_or_else(|| format!("no answer: {out}"))
    }

    fn serial(&self) -> u64 {
        let soa = self.short(ZONE, "SOA");
        soa.first()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    async fn stop(self) {
        self.lifecycle.shutdown();
        self.task.await.unwrap().unwrap();
    }
}

fn name(n: &str) -> String {
    format!("{n}.{ZONE}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_kind_and_live_updates() {
    let (pg, c) = database().await;
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;

    assert_eq!(dns.short(ZONE, "A"), ["10.0.0.1"]);
    assert_eq!(dns.short(&name("star"), "A"), ["10.0.0.2"]);
    assert_eq!(dns.short(&name("lead"), "A"), ["10.0.0.1"]);
    assert_eq!(dns.short(&name("backup"), "A"), ["10.0.0.2"]);
    assert_eq!(dns.short(&name("db"), "A"), ["10.0.0.1"]);
    assert_eq!(dns.short(&name("db-ro"), "A"), ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(dns.short(&name("replica"), "A"), ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(dns.short(&name("grafana"), "A"), ["10.0.0.1"]);
    assert_eq!(
        dns.short(ZONE, "NS"),
        [format!("aurora.{ZONE}."), format!("star.{ZONE}.")]
    );
    let srv = dns.short(&name("_repl-manager._tcp"), "SRV");
    assert_eq!(srv.len(), 3, "{srv:?}");
    assert!(srv[0].starts_with("10 10 8008 "));
    // The db name has its own short TTL.
    let full = dns.dig(&["+noall", "+answer", &name("db"), "A"]);
    assert!(full.contains("\t5\tIN\tA\t10.0.0.1"), "{full}");

    // Negative answers carry the SOA; foreign names are refused.
    assert_eq!(dns.status(&name("nope"), "A"), "NXDOMAIN");
    let nx = dns.dig(&[&name("nope"), "A"]);
    assert!(nx.contains("AUTHORITY: 1"), "{nx}");
    assert_eq!(dns.status(ZONE, "MX"), "NOERROR");
    assert!(dns.short(ZONE, "MX").is_empty());
    assert_eq!(dns.status("example.com", "A"), "REFUSED");
    // EDNS beyond version 0 is BADVERS (RFC 6891), with our version in the
    // answer so the client can fall back; without EDNS there is no OPT.
    let bad = dns.dig(&["+edns=1", "+noednsneg", &name("db"), "A"]);
    assert!(
        bad.contains("status: BADVERS") && bad.contains("EDNS: version: 0"),
        "{bad}"
    );
    let plain = dns.dig(&["+noedns", &name("db"), "A"]);
    assert!(
        plain.contains("status: NOERROR") && !plain.contains("OPT PSEUDOSECTION"),
        "{plain}"
    );

    // A node added, changed, removed: visible within 2 s.
    let serial0 = dns.serial();
    upsert_node(&c, &reg("iceland", Role::Compute, "10.0.0.4"))
        .await
        .unwrap();
    let seen = wait_until(Duration::from_secs(2), || async {
        dns.short(&name("iceland"), "A") == ["10.0.0.4"]
    })
    .await;
    assert!(seen, "new node not served within 2 s");
    assert!(dns.serial() > serial0);
    upsert_node(&c, &reg("iceland", Role::Compute, "10.0.0.14"))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || async {
            dns.short(&name("iceland"), "A") == ["10.0.0.14"]
        })
        .await
    );
    remove_node(&c, &NodeName::parse("iceland").unwrap())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || async {
            dns.status(&name("iceland"), "A") == "NXDOMAIN"
        })
        .await
    );

    // A failover: db follows the cluster state, with a new serial.
    let serial1 = dns.serial();
    record_primary(&c, 2, &NodeName::parse("star").unwrap())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || async {
            dns.short(&name("db"), "A") == ["10.0.0.2"]
        })
        .await,
        "db did not follow the primary"
    );
    assert!(dns.serial() > serial1);
    assert_eq!(dns.short(&name("db-ro"), "A"), ["10.0.0.1", "10.0.0.3"]);

    // A node whose reports stopped: a health-monitor marks it down, which
    // moves the serial (a secondary mirroring by serial sees it), and it
    // leaves the multi-record names; its next report brings it back, again
    // under a new serial.
    let v = NodeName::parse("vengeance").unwrap();
    upsert_health(&c, &v, HealthStatus::Passing, &serde_json::json!([]))
        .await
        .unwrap();
    c.execute(
        "UPDATE aurora.health SET reported_at = now() - interval '10 minutes'",
        &[],
    )
    .await
    .unwrap();
    let version = change_version(&c).await.unwrap() as u64;
    assert!(wait_until(Duration::from_secs(3), || async { dns.serial() == version }).await);
    assert_eq!(mark_down(&c, 30.0).await.unwrap(), ["vengeance"]);
    assert!(
        wait_until(Duration::from_secs(2), || async {
            dns.short(&name("db-ro"), "A") == ["10.0.0.1"] && dns.serial() > version
        })
        .await,
        "a node marked down must leave db-ro under a new serial"
    );
    assert_eq!(
        dns.short(&name("vengeance"), "A"),
        ["10.0.0.3"],
        "own name always served"
    );
    let marked = dns.serial();
    upsert_health(&c, &v, HealthStatus::Passing, &serde_json::json!([]))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || async {
            dns.short(&name("db-ro"), "A") == ["10.0.0.1", "10.0.0.3"] && dns.serial() > marked
        })
        .await,
        "a node that reports again must come back under a new serial"
    );

    let metrics = HttpClient::new(Duration::from_secs(2))
        .get(&format!("{}/metrics", dns.admin))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("aurora_dns_sync_queries_total{qtype=\"A\",rcode=\"NOERROR\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("aurora_dns_sync_zone_serial"));
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rows_are_skipped_and_counted() {
    let (pg, c) = database().await;
    // Written around the typed API: a bad label and an address outside the VPN.
    c.batch_execute(
        "ALTER TABLE aurora.nodes DROP CONSTRAINT nodes_name_check;
         INSERT INTO aurora.nodes (name, role, vpn_ip) VALUES ('Bad_Name', 'compute', '10.0.0.66');
         INSERT INTO aurora.nodes (name, role, vpn_ip) VALUES ('outsider', 'compute', '192.168.7.7');",
    )
    .await
    .unwrap();
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    assert_eq!(dns.status(&name("outsider"), "A"), "NXDOMAIN");
    assert_eq!(dns.short(&name("replica"), "A"), ["10.0.0.2", "10.0.0.3"]);
    let metrics = HttpClient::new(Duration::from_secs(2))
        .get(&format!("{}/metrics", dns.admin))
        .await
        .unwrap()
        .text();
    assert!(metrics.contains("registry_rows_skipped_total{reason=\"ip_outside_vpn\"}"));
    assert!(
        !metrics.contains("registry_rows_skipped_total{reason=\"ip_outside_vpn\"} 0"),
        "{metrics}"
    );
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_transfer_follows_the_allow_list() {
    let (pg, _c) = database().await;
    let allowed = Dns::start(&pg, |_| {}).await;
    allowed.wait_ready().await;
    let axfr = allowed.dig(&["AXFR", ZONE]);
    let soas = axfr.lines().filter(|l| l.contains("\tSOA\t")).count();
    assert_eq!(soas, 2, "AXFR starts and ends with the SOA: {axfr}");
    assert!(axfr.contains(&format!("db.{ZONE}.")), "{axfr}");

    let denied = Dns::start(&pg, |c| {
        c.dns.axfr_allow = vec!["10.9.9.9/32".parse().unwrap()]
    })
    .await;
    denied.wait_ready().await;
    let out = denied.dig(&["AXFR", ZONE]);
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );
    allowed.stop().await;
    denied.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_and_backup_serve_the_same_serial() {
    let (primary, c) = database().await;
    let standby = PgCluster::standby_of(&primary, PgOptions::named("dns-standby"))
        .await
        .unwrap();

    let lead = Dns::start(&primary, |_| {}).await;
    let backup = Dns::start(&standby, |_| {}).await;
    lead.wait_ready().await;
    backup.wait_ready().await;
    upsert_node(&c, &reg("iceland", Role::Compute, "10.0.0.4"))
        .await
        .unwrap();
    let same = wait_until(Duration::from_secs(3), || async {
        backup.short(&name("iceland"), "A") == ["10.0.0.4"] && lead.serial() == backup.serial()
    })
    .await;
    assert!(same, "lead {} backup {}", lead.serial(), backup.serial());
    lead.stop().await;
    backup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_keeps_the_last_zone() {
    let (mut pg, _c) = database().await;
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    pg.stop(StopMode::Immediate).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dns.short(&name("db"), "A"), ["10.0.0.1"]);
    let h: serde_json::Value = HttpClient::new(Duration::from_secs(2))
        .get_json(&format!("{}/health", dns.admin))
        .await
        .unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["reasons"][0].as_str().unwrap().contains("last good zone"),
        "{h}"
    );
    // And it recovers when the database returns.
    pg.start().await.unwrap();
    let healed = wait_until(Duration::from_secs(10), || async {
        HttpClient::new(Duration::from_secs(2))
            .get_json::<serde_json::Value>(&format!("{}/health", dns.admin))
            .await
            .map(|h| h["status"] == "ok")
            .unwrap_or(false)
    })
    .await;
    assert!(healed);
    dns.stop().await;
}

/// Every report stopped at once (the primary died and nobody can write):
/// the names keep answering, and /health and /status say the view froze.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_stop_everywhere_freeze_the_view_and_say_so() {
    let (pg, c) = database().await;
    for n in ["aurora", "star", "vengeance"] {
        upsert_health(
            &c,
            &NodeName::parse(n).unwrap(),
            HealthStatus::Passing,
            &serde_json::json!([]),
        )
        .await
        .unwrap();
    }
    // As if written a minute ago and nothing since.
    c.batch_execute("UPDATE aurora.health SET reported_at = now() - interval '60 seconds'")
        .await
        .unwrap();
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    assert_eq!(dns.short(&name("replica"), "A"), ["10.0.0.2", "10.0.0.3"]);
    let http = HttpClient::new(Duration::from_secs(2));
    let h: serde_json::Value = http
        .get_json(&format!("{}/health", dns.admin))
        .await
        .unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"].to_string().contains("frozen"), "{h}");
    let (_, st): (_, DnsStatus) =
        testbed::contract::get(&http, &format!("{}/status", dns.admin)).await;
    assert_eq!(st.health_frozen, Some(true), "{st:?}");
    dns.stop().await;
}

/// A dns-sync reading `local` (whose zone has aurora as the primary) with
/// a fallback whose zone has star: the old lead after a failover. (Two
/// independent clusters stand for "the local replica" and "the new
/// primary"; only where the zone comes from is under test.)
async fn local_and_fallback() -> (PgCluster, PgCluster, Dns) {
    let (local, _c) = database().await;
    let (primary, c) = database().await;
    record_primary(&c, 2, &NodeName::parse("star").unwrap())
        .await
        .unwrap();
    let fallback = primary.dsn("postgres");
    let dns = Dns::start(&local, |c| {
        c.database.fallback_dsn = Some(cluster_db::Dsn::parse(&fallback).unwrap());
    })
    .await;
    dns.wait_ready().await;
    assert_eq!(dns.short(&name("db"), "A"), ["10.0.0.1"], "local first");
    (local, primary, dns)
}

/// Waits (up to `within`) until `db` answers the fallback's primary, and
/// checks `/status` says where the zone comes from.
async fn served_from_fallback(dns: &Dns, within: Duration) {
    let moved = wait_until(within, || async {
        dns.short(&name("db"), "A") == ["10.0.0.2"]
    })
    .await;
    assert!(moved, "db still answers {:?}", dns.short(&name("db"), "A"));
    let http = HttpClient::new(Duration::from_secs(2));
    let (_, st): (_, DnsStatus) =
        testbed::contract::get(&http, &format!("{}/status", dns.admin)).await;
    assert_eq!(st.source.as_deref(), Some("fallback"), "{st:?}");
    assert!(
        st.serial.is_some() && st.records.is_some_and(|r| r > 0),
        "{st:?}"
    );
}

/// The old lead's own PostgreSQL is down and a failover moved the primary:
/// its dns-sync reads the zone from the fallback (the candidates' read-write
/// target) and `db` follows, instead of answering the old primary forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_follows_the_fallback_while_the_local_database_is_down() {
    let (mut local, _primary, dns) = local_and_fallback().await;
    local.stop(StopMode::Immediate).await.unwrap();
    served_from_fallback(&dns, Duration::from_secs(5)).await;
    let h: serde_json::Value = HttpClient::new(Duration::from_secs(2))
        .get_json(&format!("{}/health", dns.admin))
        .await
        .unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"].to_string().contains("fallback"), "{h}");
    dns.stop().await;
}

/// The local database's host vanishes without a RST (a dead WireGuard peer)
/// while dns-sync holds a connection to it: a read there would hang for the
/// kernel's retransmission timeout (about 15 min). Each read has a deadline
/// and the connection dead-peer timeouts, so the zone comes from the
/// fallback within seconds and `/status` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_local_database_hangs_no_refresh() {
    let (local, _primary, dns) = local_and_fallback().await;
    let hole = testbed::Blackhole::new(local.port()).unwrap();
    // The read deadline here is connect timeout (1 s) + 5 s; a minute is
    // far below a hung socket's quarter of an hour.
    served_from_fallback(&dns, Duration::from_secs(60)).await;
    // And back once the host answers again.
    drop(hole);
    let back = wait_until(Duration::from_secs(60), || async {
        dns.short(&name("db"), "A") == ["10.0.0.1"]
    })
    .await;
    assert!(
        back,
        "db stays on the fallback: {:?}",
        dns.short(&name("db"), "A")
    );
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_servfail_until_the_first_load() {
    let (mut pg, _c) = database().await;
    pg.stop(StopMode::Fast).await.unwrap();
    let dns = Dns::start(&pg, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = HttpClient::new(Duration::from_secs(2));
    assert_eq!(
        http.get(&format!("{}/ready", dns.admin))
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(dns.status(&name("db"), "A"), "SERVFAIL");
    pg.start().await.unwrap();
    dns.wait_ready().await;
    assert_eq!(dns.short(&name("db"), "A"), ["10.0.0.1"]);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let (pg, c) = database().await;
    for i in 10..110 {
        upsert_node(
            &c,
            &reg(&format!("node{i}"), Role::Compute, &format!("10.0.0.{i}")),
        )
        .await
        .unwrap();
    }
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    let udp = dns.dig(&["+ignore", "+noedns", &name("replica"), "A"]);
    assert!(udp.contains(" tc"), "no TC bit over UDP: {udp}");
    // A client offering 4096 bytes still gets at most the server's own 1232
    // (RFC 9715's safe size, no IP fragmentation), which the reply advertises;
    // the DO bit is echoed (RFC 3225).
    let big = dns.dig(&["+ignore", "+bufsize=4096", "+dnssec", &name("replica"), "A"]);
    assert!(
        big.contains(" tc"),
        "an answer over 1232 bytes sent whole: {big}"
    );
    assert!(big.contains("udp: 1232"), "{big}");
    assert!(big.contains("flags: do"), "{big}");
    let small = dns.dig(&["+bufsize=1232", &name("db"), "A"]);
    assert!(
        small.contains("udp: 1232") && !small.contains("flags: do"),
        "{small}"
    );
    let tcp = dns.short(&name("replica"), "A");
    assert_eq!(tcp.len(), 102, "dig retries over TCP and gets everything");
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_packets_do_not_stop_the_server() {
    let (pg, _c) = database().await;
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), dns.port);
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x12],
        vec![0; 11], // truncated header
        vec![
            0x12, 0x34, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // huge counts
        // One question whose name is a compression pointer to itself.
        vec![
            0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ],
        // A label longer than the packet.
        vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', b'b'],
    ];
    // Pseudo-random bytes, deterministic.
    let mut x: u32 = 0x1234_5678;
    for len in [5usize, 40, 300, 1200] {
        packets.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
    }
    for p in &packets {
        for _ in 0..20 {
            sock.send_to(p, target).unwrap();
        }
    }
    // Garbage over TCP too.
    if let Ok(mut s) = std::net::TcpStream::connect(target) {
        use std::io::Write;
        let _ = s.write_all(&[0xff, 0xff, 1, 2, 3]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dns.short(&name("db"), "A"), ["10.0.0.1"]);
    assert_eq!(
        dns.dig(&["+tcp", "+short", &name("star"), "A"]).trim(),
        "10.0.0.2"
    );
    dns.stop().await;
}

/// A DNS query in wire format: `id`, RD set, one question `name` A IN.
fn raw_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The last four bytes of the answer: the A record's address.
fn answered_ip(resp: &[u8]) -> [u8; 4] {
    let n = resp.len();
    [resp[n - 4], resp[n - 3], resp[n - 2], resp[n - 1]]
}

/// The value of the first `/metrics` series whose line contains `series`.
async fn sample(admin: &str, series: &str) -> f64 {
    let text = HttpClient::new(Duration::from_secs(2))
        .get(&format!("{admin}/metrics"))
        .await
        .unwrap()
        .text();
    text.lines()
        .find(|l| !l.starts_with('#') && l.contains(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Repeated queries come from the UDP loop's answer cache: each carries its
/// own ID, is counted, and a new zone (a failover) empties the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_keep_their_ids_and_follow_zone_changes() {
    let (pg, c) = database().await;
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let target = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), dns.port);
    let ask = |id: u16| {
        sock.send_to(&raw_query(id, &name("db")), target).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let admin = dns.admin.clone();
    let metric = || sample(&admin, "queries_total{qtype=\"A\",rcode=\"NOERROR\"}");
    let hits = || sample(&admin, "udp_answer_cache_hits_total");
    let before = metric().await;
    let hits_before = hits().await;
    let first = ask(0x1111);
    for id in [0x2222u16, 0x3333, 0xfffe] {
        let again = ask(id);
        assert_eq!(
            again[..2],
            id.to_be_bytes(),
            "the answer carries the query's ID"
        );
        assert_eq!(again[2..], first[2..], "the same answer otherwise");
    }
    assert_eq!(answered_ip(&first), [10, 0, 0, 1]);
    assert_eq!(
        metric().await - before,
        4.0,
        "cached answers are counted too"
    );
    // The first one built the answer; the three repeats came from the cache
    // (this fails with the cache removed: the answers alone cannot tell).
    assert_eq!(hits().await - hits_before, 3.0, "answered from the cache");

    // A failover swaps the zone; the cached answer must not outlive it.
    record_primary(&c, 2, &NodeName::parse("star").unwrap())
        .await
        .unwrap();
    let moved = wait_until(Duration::from_secs(2), || async {
        answered_ip(&ask(0x4444)) == [10, 0, 0, 2]
    })
    .await;
    assert!(moved, "db still answers the old primary from the cache");
    dns.stop().await;
}

/// How many generated cases a property test runs: a bounded number in the
/// default tier, more in the long one (`./scripts/test --long`).
fn property_cases() -> u32 {
    if std::env::var("TEST_TIER").as_deref() == Ok("long") {
        4096
    } else {
        384
    }
}

/// Hostile datagrams, generated: valid queries with bytes overwritten, cut
/// short or padded, with and without an OPT record, and plain noise. The
/// server never answers an answer (reflection), every reply is a
/// well-formed response to a query that was sent, and it keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_packets_get_well_formed_answers_or_none() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PropConfig, TestRunner};

    let (pg, _c) = database().await;
    let dns = Dns::start(&pg, |_| {}).await;
    dns.wait_ready().await;
    let target = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), dns.port);
    let cases = property_cases();
    let result = tokio::task::spawn_blocking(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(30)))
            .unwrap();
        let names = [
            "db.aurora.internal",
            "nope.aurora.internal",
            "example.com",
            "_tcp.aurora.internal",
        ];
        let packet = (
            0usize..names.len(),
            any::<u16>(),
            any::<bool>(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            proptest::option::of(0usize..64),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(n, id, edns, flips, cut, tail)| {
                let mut q = raw_query(id, names[n]);
                if edns {
                    q[11] = 1; // ARCOUNT
                    q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
                }
                for (i, b) in flips {
                    let len = q.len();
                    q[i % len] = b;
                }
                if let Some(c) = cut {
                    q.truncate(q.len().saturating_sub(c));
                }
                q.extend(tail);
                q
            });
        let noise = proptest::collection::vec(any::<u8>(), 0..600);
        let mut runner = TestRunner::new(PropConfig {
            cases,
            failure_persistence: None,
            ..PropConfig::default()
        });
        // IDs of packets sent as queries (QR clear): only those may be
        // answered.
        let query_ids = std::cell::RefCell::new(std::collections::HashSet::new());
        runner.run(&prop_oneof![3 => packet, 1 => noise], |p| {
            sock.send_to(&p, target).unwrap();
            let id = (p.len() >= 2).then(|| [p[0], p[1]]);
            let is_answer = p.len() >= 3 && p[2] & 0x80 != 0;
            let fresh_id = id.is_some_and(|i| !query_ids.borrow().contains(&i));
            if let (Some(i), false) = (id, is_answer) {
                query_ids.borrow_mut().insert(i);
            }
            let mut buf = [0u8; 65535];
            while let Ok(n) = sock.recv(&mut buf) {
                let reply = &buf[..n];
                prop_assert!(n >= 12, "a {n}-byte reply");
                prop_assert!(reply[2] & 0x80 != 0, "a reply without QR");
                prop_assert!(
                    query_ids.borrow().contains(&[reply[0], reply[1]]),
                    "a reply to a packet that was not a query: {p:02x?}"
                );
                prop_assert!(
                    !(is_answer && fresh_id && Some([reply[0], reply[1]]) == id),
                    "an answer was answered (reflection): {p:02x?}"
                );
                prop_assert!(n <= 1232, "a {n}-byte UDP reply");
                prop_assert!(
                    hickory_proto::op::Message::from_vec(reply).is_ok(),
                    "an unparsable reply to {p:02x?}"
                );
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    assert!(result.is_ok(), "{result:?}");
    // Still serving, over UDP and TCP.
    assert_eq!(dns.short(&name("db"), "A"), ["10.0.0.1"]);
    assert_eq!(
        dns.dig(&["+tcp", "+short", &name("star"), "A"]).trim(),
        "10.0.0.2"
    );
    dns.stop().await;
}

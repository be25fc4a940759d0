//! Every binary, run the way an operator runs it: as a process, with a
//! config file and environment, stopped with SIGTERM.
//!
//! Needs the binaries built (`cargo build --workspace --bins`; the test
//! command does it).

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sidecar_kit::http_client::HttpClient;
use testbed::tools::workspace_bin;
use testbed::{free_port, Garage, PgCluster, PgOptions, SidecarProcess, SidecarSpec};

const SIDECARS: [&str; 4] = ["repl-manager", "asset-sync", "health-monitor", "dns-sync"];
const BINARIES: [&str; 5] = [
    "repl-manager",
    "asset-sync",
    "health-monitor",
    "dns-sync",
    "aurora-cli",
];
const SECRET: &str = "s3cr3t-never-printed-42";

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let path = workspace_bin(bin).expect("binary built");
    Command::new(path)
        .args(args)
        .env_remove("AURORA_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

#[test]
fn every_binary_answers_help_and_version() {
    for bin in BINARIES {
        let help = run(bin, &["--help"], &[]);
        assert!(help.status.success(), "{bin} --help");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage"),
            "{bin}"
        );
        let version = run(bin, &["--version"], &[]);
        assert!(version.status.success(), "{bin} --version");
        let v = String::from_utf8_lossy(&version.stdout);
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{bin}: {v}");
    }
}

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key() {
    for bin in SIDECARS {
        let out = run(
            bin,
            &["--check-config"],
            &[("AURORA_ADMIN__LISTEN", "not-an-address")],
        );
        assert_eq!(out.status.code(), Some(2), "{bin}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{bin}: {err}");
        assert!(err.contains("admin.listen"), "{bin}: {err}");

        // Without --check-config the sidecar must not start either.
        let out = run(bin, &[], &[("AURORA_ADMIN__LISTEN", "not-an-address")]);
        assert_eq!(out.status.code(), Some(2), "{bin} starts on a bad config");

        let out = run(bin, &["--check-config"], &[("AURORA_NO_SUCH__KEY", "1")]);
        assert_eq!(out.status.code(), Some(2), "{bin} accepts an unknown key");

        let out = run(bin, &["--config", "/nonexistent/aurora.toml"], &[]);
        assert_eq!(out.status.code(), Some(2), "{bin} accepts a missing file");
    }
}

/// Domain values are parsed when the config loads, into their types: a bad
/// one is one line naming the key and what a good one looks like, before
/// anything starts; a DSN's password never shows.
#[test]
fn domain_values_are_parsed_on_load() {
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "health-monitor",
            "AURORA_NODE__ROLE",
            "leed",
            "expected lead, backup or compute",
        ),
        (
            "health-monitor",
            "AURORA_DATABASE__WRITE_DSN",
            "host=a port=x password=hunter2",
            "database.write_dsn",
        ),
        (
            "dns-sync",
            "AURORA_DATABASE__FALLBACK_DSN",
            "host=a port=x password=hunter2",
            "database.fallback_dsn",
        ),
        (
            "dns-sync",
            "AURORA_DNS__ZONE",
            "Aurora_Internal",
            "dns.zone",
        ),
        (
            "dns-sync",
            "AURORA_DNS__ALIASES__GRAFANA",
            "primary",
            "expected lead, backup or compute",
        ),
    ];
    for (bin, key, value, says) in cases {
        let mut env = minimal_env(bin);
        env.push((key, value));
        let out = run(bin, &["--check-config"], &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {key}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{bin} {key}: {err}");
        assert!(
            err.contains(says) && err.contains(key),
            "{bin} {key}: {err}"
        );
        assert!(!err.contains("hunter2"), "{bin} {key}: {err}");
    }
}

/// The least each sidecar needs to pass validation.
fn minimal_env(bin: &str) -> Vec<(&'static str, &'static str)> {
    match bin {
        "asset-sync" => vec![("AURORA_S3__BUCKET", "assets")],
        "health-monitor" => vec![
            ("AURORA_NODE__NAME", "aurora"),
            ("AURORA_NODE__VPN_IP", "10.0.0.1"),
        ],
        "repl-manager" => vec![
            ("AURORA_NODE__NAME", "solo"),
            (
                "AURORA_MEMBERS",
                "solo lead 127.0.0.1:5432 http://127.0.0.1:8008",
            ),
            ("AURORA_POSTGRES__REPLICATION_PASSWORD", "repl-password"),
        ],
        _ => vec![],
    }
}

#[test]
fn check_config_redacts_secrets() {
    for bin in SIDECARS {
        let mut env = minimal_env(bin);
        env.push(("AURORA_ADMIN__TOKEN", SECRET));
        if bin == "asset-sync" {
            env.push(("AURORA_S3__ACCESS_KEY_ID", "GK0123456789abcdef01234567"));
            env.push(("AURORA_S3__SECRET_ACCESS_KEY", SECRET));
        }
        if bin == "repl-manager" {
            env.push(("AURORA_POSTGRES__REPLICATION_PASSWORD", SECRET));
        }
        let out = run(bin, &["--check-config"], &env);
        assert!(
            out.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(SECRET), "{bin} printed the secret");
        assert!(all.contains("[redacted]"), "{bin}: {all}");
    }
}

/// `aurora-cli --check-config` does for `node.toml` what the sidecars' flag
/// does for theirs: 0 and the effective config with the token redacted, or
/// 2 and one line naming the key (or the missing file).
#[test]
fn aurora_cli_checks_its_node_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!("[node]\nname = \"aurora\"\nrole = \"lead\"\n\n[admin]\ntoken = \"{SECRET}\"\n"),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = run("aurora-cli", &["--check-config", "--config", path], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[redacted]") && stdout.contains("name = \"aurora\""),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET), "{stdout}");

    let out = run(
        "aurora-cli",
        &["--check-config", "--config", path],
        &[("AURORA_ADMIN__TIMEOUT_SECS", "soon")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("admin.timeout_secs"), "{err}");

    let out = run(
        "aurora-cli",
        &["--check-config", "--config", "/nonexistent/node.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/node.toml"));

    // Neither a command nor --check-config: a usage error, not a panic.
    let out = run("aurora-cli", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// A webhook URL is a credential (Slack's is its own secret): never
/// printed, not even in the error about a bad one, and a bearer token is not
/// sent over plain http:// unless the operator says so.
#[test]
fn a_webhook_url_is_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let hm = |hook: &str| {
        let file = dir.path().join("hm.toml");
        std::fs::write(
            &file,
            format!("[[alerts.webhooks]]\nkind = \"slack\"\n{hook}\n"),
        )
        .unwrap();
        let out = run(
            "health-monitor",
            &["--config", file.to_str().unwrap(), "--check-config"],
            &minimal_env("health-monitor"),
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(SECRET), "printed the webhook URL: {all}");
        (out.status.code(), all)
    };
    let (code, all) = hm(&format!(
        "url = \"https://hooks.example/services/{SECRET}\""
    ));
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("[redacted]"), "{all}");
    let (code, all) = hm(&format!("url = \"ftp://hooks.example/{SECRET}\""));
    assert_eq!(code, Some(2), "{all}");
    assert!(all.contains("alerts.webhooks[0].url"), "{all}");
    let plain = format!("url = \"http://relay.example/{SECRET}\"\ntoken = \"{SECRET}x\"");
    let (code, all) = hm(&plain);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        all.contains("alerts.webhooks[0].token") && all.contains("http://"),
        "{all}"
    );
    let (code, all) = hm(&format!("{plain}\nallow_token_over_http = true"));
    assert_eq!(code, Some(0), "{all}");
}

/// Real dependencies for the sidecars that have them: a migrated PostgreSQL
/// (dns-sync) and a Garage bucket (asset-sync).
struct Deps {
    pg: PgCluster,
    garage: Garage,
}

async fn deps() -> Deps {
    let (pg, garage) = tokio::join!(
        PgCluster::start_new(PgOptions::named("bins")),
        Garage::start()
    );
    let (pg, garage) = (pg.unwrap(), garage.unwrap());
    let mut c = pg.connect("postgres").await.unwrap();
    cluster_db::migrate(&mut c).await.unwrap();
    garage.create_bucket("assets").await.unwrap();
    Deps { pg, garage }
}

/// A minimal valid config for `bin`, admin server on `addr`.
fn minimal_config(bin: &str, addr: SocketAddr, deps: &Deps, dir: &Path) -> String {
    let common =
        format!("[admin]\nlisten = \"{addr}\"\n[log]\nformat = \"json\"\nfilter = \"debug\"\n");
    match bin {
        "asset-sync" => format!(
            "{common}[s3]\nendpoint = \"{}\"\nregion = \"garage\"\nbucket = \"assets\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n[sync]\ntarget_dir = \"{}\"\n",
            deps.garage.endpoint(),
            deps.garage.key_id,
            deps.garage.secret_key,
            dir.join("assets").display()
        ),
        "health-monitor" => format!(
            "{common}[node]\nname = \"aurora\"\nrole = \"lead\"\nvpn_ip = \"10.0.0.1\"\n\
             [database]\nlocal_dsn = \"{dsn}\"\nwrite_dsn = \"{dsn}\"\n[checks]\ninterval_secs = 1\ntimeout_secs = 1\n",
            dsn = deps.pg.dsn("postgres")
        ),
        "dns-sync" => format!(
            "{common}[dns]\nlisten = \"127.0.0.1:{}\"\n[database]\ndsn = \"{}\"\n",
            free_port().unwrap(),
            deps.pg.dsn("postgres")
        ),
        "repl-manager" => format!(
            "{common}{}",
            repl_manager_config(addr, dir, Some(&deps.pg))
        ),
        _ => common,
    }
}

/// repl-manager as the only member of a fleet: managing `pg` when given,
/// else an empty data directory it cannot do anything with (it still
/// serves its admin API and reports the problem).
fn repl_manager_config(addr: SocketAddr, dir: &Path, pg: Option<&PgCluster>) -> String {
    let (data, bin, port) = match pg {
        Some(pg) => (
            pg.data_dir().to_path_buf(),
            pg.bindir().to_path_buf(),
            pg.port(),
        ),
        None => (
            dir.join("pgdata"),
            testbed::tools::pg_bindir().unwrap(),
            free_port().unwrap(),
        ),
    };
    format!(
        "[[members]]\nname = \"solo\"\nrole = \"lead\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         api_url = \"http://{addr}\"\n\
         [node]\nname = \"solo\"\nstate_file = \"{}\"\n\
         [postgres]\ndata_dir = \"{}\"\nbin_dir = \"{}\"\nport = {port}\n\
         listen_addresses = \"127.0.0.1\"\nreplication_password = \"repl-pw\"\n",
        dir.join("repl-state.json").display(),
        data.display(),
        bin.display(),
    )
}

#[tokio::test]
async fn every_sidecar_serves_admin_endpoints_and_stops_on_sigterm() {
    let deps = deps().await;
    let dir = tempfile::tempdir().unwrap();
    let http = HttpClient::new(Duration::from_secs(5));
    for bin in SIDECARS {
        let port = free_port().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = minimal_config(bin, addr, &deps, dir.path());
        let spec =
            SidecarSpec::new(bin, dir.path(), addr, config).env("AURORA_ADMIN__TOKEN", SECRET);
        let mut p = SidecarProcess::start(spec, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        let url = p.admin_url();

        for path in ["/health", "/ready", "/status"] {
            let r = http.get(&format!("{url}{path}")).await.unwrap();
            assert_eq!(r.status, 200, "{bin} {path}: {}", r.text());
        }
        let metrics = http.get(&format!("{url}/metrics")).await.unwrap().text();
        assert!(metrics.contains("aurora_build_info{"), "{bin}: {metrics}");
        assert!(metrics.contains("process_resident_memory_bytes"), "{bin}");

        let r = http
            .send(hyper::Method::POST, &format!("{url}/sync"), None, None)
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{bin} POST without token");

        let started = Instant::now();
        let status = p.terminate(Duration::from_secs(5)).await.unwrap();
        assert!(status.success(), "{bin} exit status {status}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let log = p.log();
        assert!(!log.contains(SECRET), "{bin} logged the secret");
        assert!(
            !log.contains(&deps.garage.secret_key),
            "{bin} logged the S3 secret"
        );
        assert!(log.contains("\"level\""), "{bin} json logs: {log}");
        if bin == "repl-manager" {
            // It managed the shared server; stopping the sidecar leaves
            // PostgreSQL running (the other sidecars use it next).
            let up = testbed::postgres::wait_until(Duration::from_secs(10), || async {
                deps.pg.connect("postgres").await.is_ok()
            })
            .await;
            assert!(up, "PostgreSQL is down after repl-manager stopped: {log}");
        }
    }
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = format!(
        "[admin]\nlisten = \"{addr}\"\n{}",
        repl_manager_config(addr, dir.path(), None)
    );
    let mut p = SidecarProcess::start(
        SidecarSpec::new("repl-manager", dir.path(), addr, config),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    p.signal(Signal::SIGTERM).unwrap();
    p.signal(Signal::SIGINT).unwrap();
    let status = p.wait_exit(Duration::from_secs(5)).await.unwrap();
    // Either the first signal already finished the drain (0) or the second
    // cut it short (130); both are prompt.
    assert!(matches!(status.code(), Some(0) | Some(130)), "{status}");
}

#[tokio::test]
async fn a_port_in_use_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = format!(
        "[admin]\nlisten = \"{addr}\"\n{}",
        repl_manager_config(addr, dir.path(), None)
    );
    let mut p =
        SidecarProcess::spawn(SidecarSpec::new("repl-manager", dir.path(), addr, config)).unwrap();
    let status = p.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(p.log().contains("cannot bind admin server"), "{}", p.log());
}

#[tokio::test]
async fn aurora_cli_migrates_the_primary() {
    let pg = PgCluster::start_new(PgOptions::named("cli")).await.unwrap();
    let dsn = pg.dsn("postgres");
    let out = run("aurora-cli", &["migrate", "--dsn", &dsn], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied migrations [1, 2, 3, 4]"));
    let out = run("aurora-cli", &["migrate"], &[("AURORA_DSN", &dsn)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is current"));
    let out = run("aurora-cli", &["migrate", "--dsn", "port=notanumber"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let dead = free_port().unwrap();
    let out = run(
        "aurora-cli",
        &[
            "migrate",
            "--dsn",
            &format!("host=127.0.0.1 port={dead} user=postgres connect_timeout=2"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dead.to_string()));
}

/// #15 finding 4: a primary cut off from every member must lose its lease
/// (and stop) before it degrades to asynchronous commits; otherwise it
/// acknowledges writes the backup never gets, and the backup then
/// promotes. A config where the degrade comes first is refused at load,
/// naming the key and why; the same timing is fine where no automatic
/// failover can follow (strict mode never degrades; failover off).
#[test]
fn failover_timing_that_can_lose_writes_is_refused_at_load() {
    let base = [
        ("AURORA_NODE__NAME", "aurora"),
        (
            "AURORA_MEMBERS",
            "aurora lead 10.0.0.1:5432 http://10.0.0.1:8008,star backup 10.0.0.2:5432 http://10.0.0.2:8008,vengeance compute 10.0.0.3:5432 http://10.0.0.3:8008",
        ),
        ("AURORA_POSTGRES__REPLICATION_PASSWORD", "repl-password"),
    ];
    let check = |extra: &[(&'static str, &'static str)]| {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        let out = run("repl-manager", &["--check-config"], &env);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The defaults (F = 5 s, degrade after 10 s) are safe.
    let (code, err) = check(&[]);
    assert_eq!(code, Some(0), "{err}");
    // The finding's setting: F = 30 s, degrade after 10 s.
    let unsafe_timing = [
        ("AURORA_FAILOVER__TIMEOUT_SECS", "30"),
        ("AURORA_REPLICATION__SYNC_DEGRADE_AFTER_SECS", "10"),
    ];
    let (code, err) = check(&unsafe_timing);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("replication.sync_degrade_after_secs")
            && err.contains("failover.timeout_secs"),
        "{err}"
    );
    // Equal is not enough either: the lease may run to F - 2P, the degrade
    // can start at once when the standby's connection resets.
    let (code, err) = check(&[
        ("AURORA_FAILOVER__TIMEOUT_SECS", "10"),
        ("AURORA_REPLICATION__SYNC_DEGRADE_AFTER_SECS", "10"),
    ]);
    assert_eq!(code, Some(2), "{err}");
    for safe in [
        ("AURORA_REPLICATION__SYNCHRONOUS_STRICT", "true"),
        ("AURORA_FAILOVER__ENABLED", "false"),
    ] {
        let mut env = unsafe_timing.to_vec();
        env.push(safe);
        let (code, err) = check(&env);
        assert_eq!(code, Some(0), "{safe:?}: {err}");
    }
}

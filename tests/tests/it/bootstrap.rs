//! The installer (`bootstrap/bootstrap.sh`, `bootstrap/uninstall.sh`): its
//! bats suite, run against a stand-in `docker` with the real aurora-cli
//! build (the file layout, the questions, truncated downloads, reruns,
//! rotation, uninstall). The install on the Docker Engine end to end is a
//! long-tier stack test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

use std::process::Command;

use aurora_tests::repo;

#[test]
fn the_installer_passes_its_bats_suite() {
    let bats = sidecar_kit::cli::which("bats").unwrap_or_else(|| {
        panic!("`bats` is not installed: run scripts/lib/deps.sh (./scripts/test does)")
    });
    let cli = testbed::tools::workspace_bin("aurora-cli").unwrap();
    let out = Command::new(bats)
        .arg("--tap")
        .arg(repo().join("bootstrap/tests"))
        .env("BATS_AURORA_CLI", cli)
        .env_remove("AURORA_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bats failed:\n{text}");
    // The suite ran whole: a plan line and no test skipped.
    assert!(text.starts_with("1.."), "{text}");
    assert!(!text.contains("# skip"), "{text}");
}

/// A lead's health-monitor serving joins, against a real primary.
struct JoinServer {
    _pg: testbed::PgCluster,
    _dir: tempfile::TempDir,
    lifecycle: sidecar_kit::Lifecycle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    admin: String,
    fleet_env: String,
}

const JOIN_ADMIN: &str = "join-admin-token-for-the-installer-test";

async fn join_server() -> JoinServer {
    use testbed::{PgCluster, PgOptions};
    let pg = PgCluster::start_new(PgOptions::named("join"))
        .await
        .unwrap();
    let mut c = pg.connect("postgres").await.unwrap();
    cluster_db::migrate(&mut c).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fleet_env = "ADMIN_TOKEN=a0\nREPLICATION_PASSWORD=r0\nPOSTGRES_PASSWORD=p0\nGARAGE_RPC_SECRET=g0\nGARAGE_ADMIN_TOKEN=t0\nS3_ACCESS_KEY_ID=GK0\nS3_SECRET_ACCESS_KEY=s0\nGARAGE_REPLICATION_FACTOR=1\n";
    std::fs::write(dir.path().join("fleet.env"), fleet_env).unwrap();
    let mut cfg = health_monitor::Config::default();
    cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin.token = Some(sidecar_kit::Secret::new(JOIN_ADMIN));
    cfg.node.name = "aurora".into();
    cfg.node.role = "lead".parse().unwrap();
    cfg.node.vpn_ip = Some("10.0.0.1".parse().unwrap());
    cfg.database.local_dsn = cluster_db::Dsn::parse(&pg.dsn("postgres")).unwrap();
    cfg.database.write_dsn = cluster_db::Dsn::parse(&pg.dsn("postgres")).unwrap();
    cfg.checks.interval_secs = 1;
    cfg.checks.timeout_secs = 1;
    cfg.checks.gpu_inventory = false;
    cfg.checks.disk_warning_percent = 99;
    cfg.checks.disk_critical_percent = 100;
    cfg.checks.load_warning_per_core = 1000.0;
    cfg.join.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.join.cert_file = dir.path().join("join.crt");
    cfg.join.key_file = dir.path().join("join.key");
    cfg.join.secrets_file = Some(dir.path().join("fleet.env"));
    cfg.join.zone = "fleet.test".into();
    sidecar_kit::Validate::validate(&cfg).unwrap();
    let lifecycle = sidecar_kit::Lifecycle::new();
    let task = tokio::spawn(health_monitor::run(cfg, lifecycle.clone()));
    let admin = format!("http://{}", lifecycle.admin_addr().await.unwrap());
    JoinServer {
        _pg: pg,
        _dir: dir,
        lifecycle,
        task,
        admin,
        fleet_env: fleet_env.into(),
    }
}

/// aurora-cli with a node config pointing at the server, as an operator
/// runs it on the lead.
fn lead_cli(server: &JoinServer, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("node.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"aurora\"\nrole = \"lead\"\n\n[admin]\ntoken = \"{JOIN_ADMIN}\"\n\n[sidecars]\nhealth_monitor = \"{}\"\n",
            server.admin
        ),
    )
    .unwrap();
    Command::new(testbed::tools::workspace_bin("aurora-cli").unwrap())
        .arg("--config")
        .arg(&conf)
        .args(args)
        .env_remove("AURORA_CONFIG")
        .output()
        .unwrap()
}

/// `aurora-cli join-token create`.
fn create_token(server: &JoinServer, extra: &[&str]) -> String {
    let mut args = vec!["join-token", "create"];
    args.extend_from_slice(extra);
    let out = lead_cli(server, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The installer as an operator runs it on a new node, against a stand-in
/// `docker` (nothing is started: --no-start), with the real aurora-cli
/// doing the join.
fn install(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    let bundle = root.join("bundle");
    if !bundle.exists() {
        std::fs::create_dir_all(bundle.join("bin")).unwrap();
        let status = Command::new("cp")
            .arg("-R")
            .arg(repo().join("compose"))
            .arg(bundle.join("compose"))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::copy(
            testbed::tools::workspace_bin("aurora-cli").unwrap(),
            bundle.join("bin/aurora-cli"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("stub")).unwrap();
        let stub = root.join("stub/docker");
        std::fs::write(
            &stub,
            "#!/usr/bin/env bash\ncase \"$1 ${2:-}\" in\n  \"compose version\") echo \"Docker Compose version v2.26.1\" ;;\nesac\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        root.join("stub").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(repo().join("bootstrap/bootstrap.sh"))
        .args(["--non-interactive", "--no-start", "--skip-install"])
        .arg("--prefix")
        .arg(root.join("opt"))
        .arg("--etc-dir")
        .arg(root.join("etc"))
        .arg("--bin-dir")
        .arg(root.join("bin"))
        .arg("--bundle")
        .arg(&bundle)
        .args(args)
        .env("PATH", path)
        .env_remove("AURORA_CONFIG")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_with_a_token_through_the_installer() {
    let server = join_server().await;
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };

    // A backup: the fleet picks .2, sends every secret the backup runs
    // with and the join certificate it serves with.
    let token = create_token(&server, &["--role", "backup"]);
    let backup = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        install(
            backup.path(),
            &[
                "--token",
                &token,
                "--name",
                "star",
                "--role",
                "backup",
                "--wg-endpoint",
                "star.example.net:51820",
            ],
        )
    });
    assert!(out.status.success(), "{}", text(&out));
    let state = backup.path().join("opt/state");
    let fleet: std::collections::BTreeMap<String, String> = read(state.join("secrets/fleet.env"))
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let want: std::collections::BTreeMap<String, String> = server
        .fleet_env
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(
        fleet, want,
        "the backup holds the fleet's secrets, none made anew"
    );
    assert!(read(state.join("node.env")).contains("AURORA_VPN_IP=10.0.0.2"));
    // The fleet's lead keeps one copy of each asset: so does the backup's
    // Garage, though its members plan a backup (two would shut the lead's
    // Garage down).
    assert!(
        read(state.join("config/garage.toml")).contains("replication_factor = 1\n"),
        "{}",
        read(state.join("config/garage.toml"))
    );
    assert!(
        state.join("secrets/join/join.key").is_file(),
        "the backup serves joins too"
    );
    assert!(read(state.join("config/health-monitor.toml"))
        .contains("public_endpoint = \"star.example.net:8443\""));
    use std::os::unix::fs::PermissionsExt as _;
    for f in [
        "secrets/fleet.env",
        "secrets/join/join.key",
        "join/fleet.env",
    ] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // The token never reached argv or the install's files.
    assert!(
        !text(&out).contains(token.split('.').nth(3).unwrap()),
        "the secret was printed"
    );

    // A compute node: the next free address from .3, no Garage secret,
    // the fleet's members in repl-manager's list, the backup as a peer.
    let token = create_token(&server, &[]);
    let compute = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        install(
            compute.path(),
            &[
                "--token",
                &token,
                "--name",
                "vengeance",
                "--role",
                "compute",
            ],
        )
    });
    assert!(out.status.success(), "{}", text(&out));
    let state = compute.path().join("opt/state");
    let fleet = read(state.join("secrets/fleet.env"));
    assert!(
        fleet.contains("REPLICATION_PASSWORD=r0") && !fleet.contains("GARAGE"),
        "{fleet}"
    );
    assert!(read(state.join("node.env")).contains("AURORA_VPN_IP=10.0.0.3"));
    assert!(!state.join("config/garage.toml").exists());
    let members = read(state.join("join/members"));
    assert!(
        members.contains("star backup 10.0.0.2") && members.contains("vengeance compute 10.0.0.3"),
        "{members}"
    );
    let peers = read(state.join("secrets/wireguard/peers.static.conf"));
    assert!(
        peers.contains("Endpoint = star.example.net:51820"),
        "{peers}"
    );

    // The registry holds each node's own key: the private key stayed home.
    let c = server._pg.connect("postgres").await.unwrap();
    let key: String = c
        .query_one(
            "SELECT wg_public_key FROM aurora.nodes WHERE name = 'vengeance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, read(state.join("secrets/wireguard/public.key")).trim());

    // The same token again, on another machine: refused, nothing written.
    let again = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        install(
            again.path(),
            &["--token", &token, "--name", "nova", "--role", "compute"],
        )
    });
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("already used (by vengeance)"), "{msg}");
    assert!(!again.path().join("opt/state/node.env").exists());

    // Bad token flags exit 2 before anything is written.
    for (args, want) in [
        (
            vec![
                "--token",
                "K10abc::server:pass",
                "--name",
                "x1",
                "--role",
                "compute",
            ],
            "not a whole Aurora join token",
        ),
        (
            vec!["--token", &token, "--name", "x1", "--role", "lead"],
            "a lead creates its fleet",
        ),
        (
            vec!["--join", "lead:8443", "--name", "x1", "--role", "compute"],
            "--join needs --token",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::task::block_in_place(|| install(dir.path(), &args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
        assert!(!dir.path().join("opt").exists(), "{args:?} wrote files");
    }

    // The operator takes a node out again: a stopped one goes, with the
    // event logged; a name not in the registry is the operator's mistake.
    let out = lead_cli(&server, &["remove-node", "vengeance", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = lead_cli(&server, &["remove-node", "vengeance", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not in the registry"), "{}", text(&out));
    let gone: i64 = c
        .query_one(
            "SELECT count(*) FROM aurora.nodes WHERE name = 'vengeance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);

    server.lifecycle.shutdown();
    server.task.await.unwrap().unwrap();
}

/// `aurora-cli join` asks again while the fleet answers "not yet" (503: the
/// serving node has not registered itself yet), and a node whose answer
/// was lost asks again with the same token and gets the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_cli_join_asks_again_while_the_fleet_says_not_yet() {
    let server = join_server().await;
    let c = server._pg.connect("postgres").await.unwrap();
    let listed = || async {
        cluster_db::queries::list_nodes(&c)
            .await
            .unwrap()
            .nodes
            .into_iter()
            .find(|n| n.name.as_str() == "aurora")
    };
    assert!(
        testbed::postgres::wait_until(std::time::Duration::from_secs(10), || async {
            listed().await.is_some()
        })
        .await
    );
    let own = listed().await.unwrap();
    c.execute("DELETE FROM aurora.nodes WHERE name = 'aurora'", &[])
        .await
        .unwrap();
    let token = tokio::task::block_in_place(|| create_token(&server, &[]));
    let out = tempfile::tempdir().unwrap();
    let join = {
        let (token, out) = (token.clone(), out.path().to_path_buf());
        move || {
            Command::new(testbed::tools::workspace_bin("aurora-cli").unwrap())
                .args(["join", "--json", "--name", "c1", "--role", "compute"])
                .args([
                    "--wg-public-key",
                    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
                ])
                .args(["--wait", "30", "--token", &token, "--out"])
                .arg(&out)
                .env_remove("AURORA_CONFIG")
                .output()
                .unwrap()
        }
    };
    let started = std::time::Instant::now();
    let first = tokio::task::spawn_blocking(join.clone());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!first.is_finished(), "the join did not wait for the lead");
    let reg = cluster_db::NodeRegistration::from(own);
    cluster_db::queries::upsert_node(&c, &reg).await.unwrap();
    let first = first.await.unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let answer: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(answer["vpn_ip"], "10.0.0.3", "{answer}");
    assert!(answer["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "aurora"));

    // The answer lost on the way: the same node asks again.
    let again = tokio::task::spawn_blocking(join).await.unwrap();
    assert!(again.status.success(), "{}", text(&again));
    let answer: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(answer["vpn_ip"], "10.0.0.3", "{answer}");
    server.lifecycle.shutdown();
    let _ = server.task.await;
}

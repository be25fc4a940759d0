//! `aurora-cli asset-origin setup` against real Garage servers on loopback,
//! each started as a fresh install leaves it (no layout, key or bucket):
//! the lead's run, the backup's run with the lead as its peer, reruns, and
//! the inputs it must refuse. The same command through `docker compose
//! exec` into the stack's Garage containers runs in `tests/tests/it/stack.rs`.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::sandbox::{cli, run_command, Run};
use testbed::garage::{random_hex, Garage};

struct Node {
    name: &'static str,
    garage: Garage,
    config: PathBuf,
}

struct Fleet {
    _dir: tempfile::TempDir,
    fleet_env: PathBuf,
    key_id: String,
    secret: String,
}

fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let key_id = format!("GK{}", random_hex(12));
    let secret = random_hex(32);
    let fleet_env = dir.path().join("fleet.env");
    std::fs::write(
        &fleet_env,
        format!("ADMIN_TOKEN=x\nS3_ACCESS_KEY_ID={key_id}\nS3_SECRET_ACCESS_KEY={secret}\n"),
    )
    .unwrap();
    Fleet {
        _dir: dir,
        fleet_env,
        key_id,
        secret,
    }
}

async fn node(name: &'static str, role: &str, rf: u8, rpc_secret: &str) -> Node {
    let garage = Garage::start_unconfigured(IpAddr::V4(Ipv4Addr::LOCALHOST), rf, rpc_secret)
        .await
        .unwrap();
    let config = garage.dir().join("node.toml");
    std::fs::write(
        &config,
        format!("[node]\nname = \"{name}\"\nrole = \"{role}\"\n"),
    )
    .unwrap();
    Node {
        name,
        garage,
        config,
    }
}

fn setup(n: &Node, f: &Fleet, extra: &[&str]) -> Run {
    setup_with(n, &f.fleet_env, extra)
}

fn setup_with(n: &Node, fleet_env: &Path, extra: &[&str]) -> Run {
    let mut c = cli();
    c.arg("--config")
        .arg(&n.config)
        .args(["asset-origin", "setup", "--fleet-env"])
        .arg(fleet_env)
        .args(if extra.contains(&"--wait-secs") {
            &[][..]
        } else {
            &["--wait-secs", "30"][..]
        })
        .arg("--garage-bin")
        .arg(n.garage.bin())
        .arg("--garage-config")
        .arg(n.garage.config_path())
        .args(extra);
    run_command(c)
}

/// `name zone` of each node in the layout `setup --json` reported, sorted.
fn layout_of(v: &Value) -> Vec<String> {
    let mut l: Vec<String> = v["layout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    l.sort();
    l
}

/// Fails if `n`'s Garage has any staged layout change.
async fn layout_untouched(n: &Node, what: &str) {
    let out = n
        .garage
        .cli(&["json-api", "GetClusterLayout"])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["stagedRoleChanges"].as_array().unwrap().len(),
        0,
        "{what} staged something: {v}"
    );
}

fn changes(v: &Value) -> Vec<String> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

async fn put_then_get(from: &Garage, to: &Garage, f: &Fleet, key: &str, body: &'static [u8]) {
    from.s3_client_with(&f.key_id, &f.secret)
        .put_object()
        .bucket("assets")
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(body))
        .send()
        .await
        .unwrap();
    let got = to
        .s3_client_with(&f.key_id, &f.secret)
        .get_object()
        .bucket("assets")
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&got[..], body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_stages_the_backup_applies_and_a_rerun_changes_nothing() {
    let f = fleet();
    let rpc = random_hex(32);
    let lead = node("aurora", "lead", 2, &rpc).await;
    let mut star = node("star", "backup", 2, &rpc).await;

    // The lead alone: two copies need two nodes, so Garage says wait; that
    // is the expected state of a lead whose backup is not installed yet.
    let first = setup(&lead, &f, &["--json", "--capacity", "1G"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let v = first.json();
    assert_eq!(v["ready"], false, "{v}");
    assert!(
        v["pending"]
            .as_str()
            .unwrap()
            .contains("replication factor"),
        "Garage's own reason: {v}"
    );
    assert_eq!(changes(&v), ["staged aurora in zone dc-aurora"]);
    let lead_peer = v["node"].as_str().unwrap().to_string();
    assert!(
        lead_peer.starts_with("aurora=")
            && lead_peer.ends_with(&format!(":{}", lead.garage.rpc_port)),
        "{lead_peer}"
    );
    // Said in words too, with the command for the backup.
    let plain = setup(&lead, &f, &["--capacity", "1G"]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(
        plain
            .stdout
            .contains(&format!("aurora-cli asset-origin setup --peer {lead_peer}")),
        "{}",
        plain.stdout
    );

    // The backup with the lead as its peer: both in the layout, each in its
    // own zone, sized by its data partition; the key and the bucket made.
    let second = setup(&star, &f, &["--json", "--peer", &lead_peer]);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    let v = second.json();
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["layout_version"], 1, "{v}");
    assert_eq!(layout_of(&v), ["aurora dc-aurora", "star dc-star"]);
    let made = changes(&v);
    for want in [
        "applied layout version 1".to_string(),
        format!("imported key {}", f.key_id),
        "created bucket assets".into(),
        format!("allowed key {} to read and write assets", f.key_id),
    ] {
        assert!(made.contains(&want), "{want} missing from {made:?}");
    }

    // Written through one node, read through the other.
    put_then_get(
        &star.garage,
        &lead.garage,
        &f,
        "img/logo.txt",
        b"aurora asset\n",
    )
    .await;
    put_then_get(&lead.garage, &star.garage, &f, "img/two.txt", b"second\n").await;

    // Reruns on either node change nothing and report the origin ready.
    for (n, extra) in [
        (&star, vec!["--json", "--peer", lead_peer.as_str()]),
        (&lead, vec!["--json"]),
    ] {
        let again = setup(n, &f, &extra);
        assert_eq!(
            again.code, 0,
            "{}: {}{}",
            n.name, again.stdout, again.stderr
        );
        let v = again.json();
        assert!(changes(&v).is_empty(), "{}: a rerun changed {v}", n.name);
        assert_eq!(v["ready"], true, "{v}");
        assert_eq!(v["layout_version"], 1, "{v}");
    }

    // The backup dies for good; a new one replaces it (the runbook's
    // steps): the operator stages the dead node's removal, and the new
    // node's setup applies it with its own role. The data follows.
    let star_id = node_id(&star).await;
    star.garage.stop();
    lead.garage
        .cli(&["layout", "remove", &star_id])
        .await
        .unwrap();
    let nova = node("nova", "backup", 2, &rpc).await;
    let third = setup(&nova, &f, &["--json", "--peer", &lead_peer]);
    assert_eq!(third.code, 0, "{}{}", third.stdout, third.stderr);
    let v = third.json();
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["layout_version"], 2, "{v}");
    assert_eq!(layout_of(&v), ["aurora dc-aurora", "nova dc-nova"]);
    let mut got = None;
    for _ in 0..60 {
        let r = nova
            .garage
            .s3_client_with(&f.key_id, &f.secret)
            .get_object()
            .bucket("assets")
            .key("img/logo.txt")
            .send()
            .await;
        if let Ok(o) = r {
            got = Some(o.body.collect().await.unwrap().into_bytes());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(
        got.as_deref(),
        Some(&b"aurora asset\n"[..]),
        "the new backup serves the old data"
    );
}

/// `n`'s Garage node ID, as `garage node id` prints it.
async fn node_id(n: &Node) -> String {
    let out = n.garage.cli(&["node", "id", "-q"]).await.unwrap();
    out.trim().split('@').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_planned_alone_is_ready_after_its_own_run() {
    let f = fleet();
    let lead = node("aurora", "lead", 1, &random_hex(32)).await;
    let run = setup(&lead, &f, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "asset origin ready: layout version 1 (aurora dc-aurora; one copy of each object)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("this node's Garage: aurora="),
        "{}",
        run.stderr
    );
    put_then_get(&lead.garage, &lead.garage, &f, "a.txt", b"one copy\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_changes_and_a_dead_peer_is_named() {
    let f = fleet();
    let rpc = random_hex(32);
    let lead = node("aurora", "lead", 2, &rpc).await;
    let id = "ab".repeat(32);

    // Usage errors: exit 2, one line naming what was wrong.
    let no_key = lead.garage.dir().join("partial.env");
    std::fs::write(&no_key, format!("S3_ACCESS_KEY_ID={}\n", f.key_id)).unwrap();
    let missing = lead.garage.dir().join("missing.env");
    let fleet_text = std::fs::read_to_string(&f.fleet_env).unwrap();
    let one_copy = lead.garage.dir().join("one-copy.env");
    std::fs::write(
        &one_copy,
        format!("{fleet_text}GARAGE_REPLICATION_FACTOR=1\n"),
    )
    .unwrap();
    let bad_copies = lead.garage.dir().join("bad-copies.env");
    std::fs::write(
        &bad_copies,
        format!("{fleet_text}GARAGE_REPLICATION_FACTOR=7\n"),
    )
    .unwrap();
    for (run, says) in [
        (setup_with(&lead, &no_key, &[]), "no S3_SECRET_ACCESS_KEY"),
        (setup_with(&lead, &missing, &[]), "missing.env"),
        (
            setup_with(&lead, &one_copy, &[]),
            "keeps 2 copies of each object but the fleet's Garage keeps 1",
        ),
        (setup_with(&lead, &bad_copies, &[]), "is not 1, 2 or 3"),
        (
            setup(&lead, &f, &["--peer", &format!("star={id}")]),
            "HOST:PORT",
        ),
        (
            setup(&lead, &f, &["--peer", "star=abc@127.0.0.1:1"]),
            "64 hex digits",
        ),
        (
            setup(&lead, &f, &["--peer", &format!("aurora={id}@127.0.0.1:1")]),
            "this node's own name",
        ),
        (setup(&lead, &f, &["--capacity", "12X"]), "unknown unit"),
        (
            setup(&lead, &f, &["--bucket", "Bad_Name"]),
            "is not a bucket name",
        ),
    ] {
        assert_eq!(run.code, 2, "{says}: {}{}", run.stdout, run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(says),
            "{says} not in the first line: {}",
            run.stderr
        );
        layout_untouched(&lead, says).await;
    }

    // A compute node runs no Garage: refused at once, not after a wait.
    let compute = node("vengeance", "compute", 2, &rpc).await;
    let run = setup(&compute, &f, &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("vengeance is a compute node: it runs no Garage"),
        "{}",
        run.stderr
    );

    // A peer that is not there (nothing listens on its port): the run names
    // it after its wait, exit 1, and stages nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let run = setup(
        &lead,
        &f,
        &[
            "--wait-secs",
            "3",
            "--peer",
            &format!("star={id}@127.0.0.1:{port}"),
        ],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("connecting to star's Garage"),
        "{}",
        run.stderr
    );
    layout_untouched(&lead, "a dead peer").await;

    // A peer behind a link that drops every packet (no RST, as a dead
    // WireGuard peer): the run keeps to its --wait-secs (3 s; one call gets
    // at least 5 s) instead of Garage's own connect timeout (10 s here:
    // measured 10.1 s without the bound, 5.0 s with it).
    let silent = node("star", "backup", 2, &rpc).await;
    let silent_id = node_id(&silent).await;
    let hole = testbed::Blackhole::new(silent.garage.rpc_port).unwrap();
    let started = std::time::Instant::now();
    let run = setup(
        &lead,
        &f,
        &[
            "--wait-secs",
            "3",
            "--peer",
            &format!("star={silent_id}@127.0.0.1:{}", silent.garage.rpc_port),
        ],
    );
    let took = started.elapsed();
    eprintln!("a silent peer: the run ended after {took:?}");
    drop(hole);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("connecting to star's Garage"),
        "{}",
        run.stderr
    );
    assert!(
        took < std::time::Duration::from_secs(9),
        "a silent peer held the run for {took:?}, past its wait"
    );
    layout_untouched(&lead, "a silent peer").await;

    // A peer whose ID is not the node at that address: Garage's handshake
    // refuses it (the ID is the node's public key).
    let other = node("star", "backup", 2, &rpc).await;
    let run = setup(
        &lead,
        &f,
        &[
            "--wait-secs",
            "3",
            "--peer",
            &format!("star={id}@127.0.0.1:{}", other.garage.rpc_port),
        ],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("star's Garage"), "{}", run.stderr);
    layout_untouched(&lead, "a wrong peer ID").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_stopped_after_any_step_is_finished_by_the_next() {
    let f = fleet();
    let lead = node("aurora", "lead", 1, &random_hex(32)).await;
    let id = node_id(&lead).await;

    // Stopped after the apply (the layout is there, no key, no bucket).
    lead.garage
        .cli(&["layout", "assign", "-z", "dc-aurora", "-c", "1G", &id])
        .await
        .unwrap();
    lead.garage
        .cli(&["layout", "apply", "--version", "1"])
        .await
        .unwrap();
    let run = setup(&lead, &f, &["--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(
        changes(&v),
        [
            format!("imported key {}", f.key_id),
            "created bucket assets".into(),
            format!("allowed key {} to read and write assets", f.key_id),
        ],
        "the layout was left as it was: {v}"
    );
    assert_eq!(v["layout_version"], 1, "{v}");

    // Stopped before the key was allowed on the bucket.
    lead.garage
        .cli(&[
            "bucket", "deny", "--read", "--write", "assets", "--key", &f.key_id,
        ])
        .await
        .unwrap();
    let v = setup(&lead, &f, &["--json"]).json();
    assert_eq!(
        changes(&v),
        [format!("allowed key {} to read and write assets", f.key_id)],
        "{v}"
    );
    put_then_get(&lead.garage, &lead.garage, &f, "after.txt", b"resumed\n").await;
}

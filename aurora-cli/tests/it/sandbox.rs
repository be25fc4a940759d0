//! `aurora-cli` against a running sandbox, run the way an operator runs it:
//! the real binary, the real sidecars as processes, real PostgreSQL and
//! Garage. Needs the workspace binaries built (the test command does it).

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{PgCluster, PgOptions};

/// The CLI as an operator's shell runs it: `AURORA_SANDBOX_DIR` exported
/// (as `scripts/sandbox` does; here a directory that does not exist, so only
/// commands given `--dir`, which wins, touch a sandbox), which every config
/// load must tolerate.
pub(crate) fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aurora-cli"));
    c.env_remove("AURORA_CONFIG")
        .env("AURORA_SANDBOX_DIR", "/tmp/aurora-sandbox-env-not-used")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

fn run(args: &[&str]) -> Run {
    let mut c = cli();
    c.args(args);
    run_command(c)
}

pub(crate) fn run_command(mut c: Command) -> Run {
    let out: Output = c.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `aurora-cli --config <node.toml> <args>`.
fn on(sb: &Sandbox, node: &str, args: &[&str]) -> Run {
    let config = sb.config(node);
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

/// What the shell's completion offers for the last of `words` (`aurora-cli`
/// first), as bash asks it (`COMPLETE=bash`), with `env` set.
fn complete(words: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut c = cli();
    c.env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_IFS", "\n")
        .envs(env.iter().copied())
        .arg("--")
        .args(words);
    let r = ok(run_command(c), "completion");
    r.stdout.lines().map(str::to_string).collect()
}

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(
        r.code, 0,
        "{what}: stdout {}\nstderr {}",
        r.stdout, r.stderr
    );
    r
}

/// A sandbox directory that is taken down (and removed) even when the test
/// fails half-way.
struct Sandbox {
    dir: PathBuf,
    /// The directory above `dir`: a tmpfs when `on_tmpfs`.
    root: PathBuf,
    json: Value,
    on_tmpfs: bool,
}

impl Sandbox {
    /// A directory for a sandbox, not started: taken down and removed on
    /// drop like one that was.
    fn room() -> Sandbox {
        // Under /tmp: the postgres user must be able to reach the data.
        let root = PathBuf::from(format!(
            "/tmp/aurora-cli-test-{}-{}",
            std::process::id(),
            testbed::garage::random_hex(4)
        ));
        // Each node's health-monitor watches the sandbox directory's disk.
        // How full this machine's disk is, is not under test (CI machines
        // have run at over 90 %, which is rightly critical): as root the
        // sandbox lives in a file system of its own, whose fill is its own
        // (one level down: `sandbox down` removes its directory, and a mount
        // point cannot be removed).
        let on_tmpfs = nix::unistd::Uid::effective().is_root();
        std::fs::create_dir_all(&root).unwrap();
        if on_tmpfs {
            let m = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4g,mode=0755", "aurora-cli-test"])
                .arg(&root)
                .status()
                .unwrap();
            assert!(m.success(), "mount a tmpfs on {}", root.display());
        }
        Sandbox {
            json: Value::Null,
            dir: root.join("sandbox"),
            root,
            on_tmpfs,
        }
    }

    fn up(extra: &[&str]) -> Sandbox {
        Sandbox::up_with(extra, &[])
    }

    /// `sandbox up` with `env` set for it.
    fn up_with(extra: &[&str], env: &[(&str, &str)]) -> Sandbox {
        let mut sb = Sandbox::room();
        let dir = sb.dir.clone();
        // The directory from the environment, as `scripts/sandbox` passes
        // it, and a stray override in the operator's shell that must not
        // reach the sandbox's sidecars (their config files are the config).
        let mut args = vec!["sandbox", "up"];
        args.extend_from_slice(extra);
        let mut c = cli();
        c.args(&args)
            .env("AURORA_SANDBOX_DIR", &dir)
            .env("AURORA_ADMIN__TOKEN", "a-token-from-another-shell");
        c.envs(env.iter().copied());
        let r = run_command(c);
        sb.json = serde_json::from_str(
            &std::fs::read_to_string(dir.join("sandbox.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        assert_eq!(r.code, 0, "sandbox up: {}\n{}", r.stdout, r.stderr);
        // No terminal: no progress lines, no escape codes.
        assert!(
            !r.stderr.contains('\u{1b}') && !r.stderr.contains("initialising"),
            "{}",
            r.stderr
        );
        sb
    }

    fn dir_arg(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn node(&self, name: &str) -> &Value {
        self.json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
    }

    fn config(&self, name: &str) -> PathBuf {
        PathBuf::from(self.node(name)["config"].as_str().unwrap())
    }

    fn sandbox(&self, args: &[&str]) -> Run {
        let mut all = vec!["sandbox"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", self.dir_arg()]);
        run(&all)
    }

    /// `sandbox status --json`'s entry for `node`.
    fn sandbox_status_of(&self, node: &str) -> Value {
        let st = ok(self.sandbox(&["status", "--json"]), "sandbox status").json();
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap()
            .clone()
    }

    /// Waits until `check` holds for `aurora-cli --config <node> <args> --json`.
    fn wait_json(
        &self,
        node: &str,
        args: &[&str],
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut a = args.to_vec();
            a.push("--json");
            let r = on(self, node, &a);
            if let Ok(v) = serde_json::from_str::<Value>(&r.stdout) {
                if check(&v) {
                    return v;
                }
            }
            if Instant::now() > deadline {
                panic!("{what} did not happen; last: {}{}", r.stdout, r.stderr);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.dir.join("sandbox.json").exists() {
            let _ = run(&["sandbox", "down", "--dir", self.dir.to_str().unwrap_or("")]);
        }
        if self.on_tmpfs {
            let _ = std::process::Command::new("umount")
                .arg("--lazy")
                .arg(&self.root)
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn primary_of(v: &Value) -> String {
    v["primary"].as_str().unwrap_or("").to_string()
}

async fn query_one(dsn: &str, sql: &str) -> Option<String> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let row = client.query_one(sql, &[]).await.ok()?;
    row.try_get::<_, String>(0).ok()
}

async fn exec(dsn: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
}

/// The README's sandbox tour, run as a reader types it: every `sh` block of
/// "Run it" from `./scripts/sandbox` on, in order, in one shell, so the
/// README cannot drift from the product. The only change is the directory:
/// the test's own instead of /tmp/aurora-sandbox. (The compose block above
/// it is the stack test's, which needs the images built.)
#[test]
fn the_readme_tour_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Run it\n")
        .and_then(|(_, rest)| rest.split_once("\n### By hand\n"))
        .map(|(run_it, _)| run_it)
        .expect("README has a `## Run it` section followed by `### By hand`");
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .skip_while(|b| !b.contains("./scripts/sandbox"))
        .collect();
    assert!(
        blocks.len() >= 3,
        "the tour's blocks (from ./scripts/sandbox on): {blocks:?}"
    );
    let sb = Sandbox::room();
    let dir = sb.dir.to_str().unwrap();
    let script = format!(
        "set -euo pipefail\n{}",
        blocks.join("\n").replace("/tmp/aurora-sandbox", dir)
    );
    let mut bash = Command::new("bash");
    // The shell of a reader, not of a test: what cargo sets for this test
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...) is watched by build
    // scripts (ring's), so `./scripts/sandbox`'s cargo build saw a changed
    // environment and rebuilt them (3.5 min), and the next build outside a
    // test rebuilt them again.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_BIN_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            bash.env_remove(&*k);
        }
    }
    let out = bash
        .args(["-c", &script])
        .current_dir(repo)
        .env("AURORA_SANDBOX_DIR", dir)
        .env("NO_COLOR", "1")
        .env_remove("AURORA_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the tour failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // What the tour promises, in the order it promises it.
    let promises = [
        "sandbox up in",
        "fleet: healthy",
        "switchover: aurora -> star",
        "confirms star's commits",
        "switchover: star -> aurora",
        "confirms aurora's commits",
        "aurora: killed",
        "primary: star",
        "aurora: started",
        "removed",
    ];
    let mut at = 0;
    for p in promises {
        match stdout[at..].find(p) {
            Some(i) => at += i + p.len(),
            None => panic!(
                "the tour's output lacks {p:?} after byte {at}:\n{stdout}\nstderr:\n{stderr}"
            ),
        }
    }
    assert!(!sb.dir.exists(), "`sandbox down` removes the directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_sandbox_fleet() {
    let sb = Sandbox::up(&[]);

    // sandbox.json: the shape scripts rely on.
    assert_eq!(sb.json["zone"], "aurora.internal");
    assert_eq!(sb.json["s3"]["region"], "garage");
    assert_eq!(sb.json["s3"]["bucket"], "assets");
    assert!(sb.json["s3"]["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let names: Vec<&str> = sb.json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aurora", "star", "vengeance"]);
    for (name, role, dns) in [
        ("aurora", "lead", true),
        ("star", "backup", true),
        ("vengeance", "compute", false),
    ] {
        let n = sb.node(name);
        assert_eq!(n["role"], role);
        assert!(n["vpn_ip"].as_str().unwrap().starts_with("10.0.0."));
        assert!(n["postgres"]["port"].as_u64().unwrap() > 0);
        assert!(n["postgres"]["dsn"]
            .as_str()
            .unwrap()
            .contains("host=127.0.0.1"));
        for s in ["repl-manager", "health-monitor", "asset-sync"] {
            assert!(
                n["admin"][s]
                    .as_str()
                    .unwrap()
                    .starts_with("http://127.0.0.1:"),
                "{name} {s}"
            );
        }
        assert_eq!(n["admin"]["dns-sync"].is_string(), dns, "{name}");
        assert_eq!(n["dns"].is_string(), dns, "{name}");
        assert!(Path::new(n["config"].as_str().unwrap()).is_file());
        assert!(sb
            .dir
            .join("nodes")
            .join(name)
            .join("logs")
            .join("repl-manager.log")
            .is_file());
    }

    // status: the table and the JSON, once every node has reported.
    let st = sb.wait_json("aurora", &["status"], "a healthy fleet", |v| {
        v["healthy"] == true
    });
    assert_eq!(primary_of(&st), "aurora");
    assert_eq!(st["nodes"].as_array().unwrap().len(), 3);
    assert!(st["dns"]["serial"].as_u64().unwrap() > 0);
    assert!(st["assets"].is_object());
    let table = ok(on(&sb, "aurora", &["status"]), "status").stdout;
    assert!(table.contains("primary: aurora"), "{table}");
    for col in ["NODE", "ROLE", "HEALTH", "POSTGRES", "LAG"] {
        assert!(table.contains(col), "{table}");
    }
    assert!(
        table.contains("vengeance") && table.contains("replica"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "colour on a pipe: {table}");

    assert!(
        table.contains("sync: star confirms every commit"),
        "{table}"
    );
    assert!(table.contains("epoch: 1 (for "), "{table}");

    // --watch: a document per refresh until interrupted, then exit 0.
    let config = sb.config("aurora");
    let watch = cli()
        .args(["--config", config.to_str().unwrap()])
        .args(["status", "--watch", "--json", "--interval", "0.3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(docs.len() >= 2, "{text}");
    assert!(docs.iter().all(|d| d["primary"] == "aurora"), "{text}");
    let bad = run(&["status", "--interval", "0.01", "--watch"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    // Completion knows the fleet: members from this node's repl-manager,
    // nodes from the sandbox's state.
    let config = sb.config("vengeance");
    let env = [("AURORA_CONFIG", config.to_str().unwrap())];
    let offered = complete(&["aurora-cli", "switchover", "--to", ""], &env);
    for n in ["aurora", "star", "vengeance"] {
        assert!(offered.contains(&n.to_string()), "{n}: {offered:?}");
    }
    let env = [("AURORA_SANDBOX_DIR", sb.dir.to_str().unwrap())];
    let offered = complete(&["aurora-cli", "sandbox", "kill", "v"], &env);
    assert_eq!(offered, ["vengeance"]);

    // health: every check of this node.
    let h = ok(on(&sb, "star", &["health", "--json"]), "health").json();
    let checks: Vec<&str> = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in [
        "postgres",
        "replication",
        "sidecar:repl-manager",
        "sidecar:dns-sync",
        "sidecar:asset-sync",
    ] {
        assert!(checks.contains(&c), "{checks:?}");
    }
    let message = |h: &Value, check: &str| -> String {
        h["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check)
            .map(|c| format!("{} {}", c["status"], c["message"]))
            .unwrap_or_default()
    };
    let repl = message(&h, "replication");
    assert!(
        repl.contains("passing") && repl.contains("replica of aurora"),
        "{repl}"
    );
    let lead = ok(on(&sb, "aurora", &["health", "--json"]), "lead health").json();
    let repl = message(&lead, "replication");
    assert!(repl.contains("synchronous standby star"), "{repl}");
    let t = ok(on(&sb, "star", &["health"]), "health table").stdout;
    assert!(t.contains("CHECK") && t.contains("replication"), "{t}");

    // sync-db: roles, timeline, epoch, lag, slots.
    let db = ok(on(&sb, "vengeance", &["sync-db", "--json"]), "sync-db").json();
    assert_eq!(primary_of(&db), "aurora");
    assert_eq!(db["members"].as_array().unwrap().len(), 3);
    let t = ok(on(&sb, "vengeance", &["sync-db"]), "sync-db table").stdout;
    assert!(
        t.contains("streaming (sync)")
            && t.contains("replica_star")
            && t.contains("failover: automatic\n"),
        "{t}"
    );

    // sync-assets: the demo set reaches every node.
    let r = ok(on(&sb, "vengeance", &["sync-assets"]), "sync-assets");
    assert!(r.stdout.contains("listed 4"), "{}", r.stdout);
    for name in ["aurora", "star", "vengeance"] {
        let f = sb
            .dir
            .join("nodes")
            .join(name)
            .join("assets/models/demo-weights.bin");
        assert_eq!(
            std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0),
            256 * 1024,
            "{name}"
        );
    }
    let r = ok(
        on(&sb, "aurora", &["sync-assets", "--no-wait"]),
        "sync-assets --no-wait",
    );
    assert!(r.stdout.contains("triggered"), "{}", r.stdout);

    // A row to find again after switchovers and in the restored backup.
    let lead_dsn = sb.node("aurora")["postgres"]["dsn"]
        .as_str()
        .unwrap()
        .to_string();
    exec(&lead_dsn, "CREATE TABLE ledger (id int PRIMARY KEY, note text); INSERT INTO ledger VALUES (1, 'kept');").await;

    // Operations: confirmation, switchover, promote, refusals.
    let r = on(&sb, "aurora", &["switchover", "--to", "star"]);
    assert_eq!(
        r.code, 2,
        "no --yes on a pipe must not proceed: {}",
        r.stderr
    );
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    let r = ok(
        on(&sb, "vengeance", &["switchover", "--to", "star", "--yes"]),
        "switchover",
    );
    assert!(r.stdout.contains("aurora -> star"), "{}", r.stdout);
    assert!(r.stdout.contains("done in"), "{}", r.stdout);
    let st = ok(on(&sb, "aurora", &["sync-db", "--json"]), "sync-db").json();
    assert_eq!(primary_of(&st), "star");
    // promote on the lead (now a standby): a switchover back to it.
    let r = ok(
        on(&sb, "aurora", &["promote", "--yes", "--json"]),
        "promote",
    );
    assert_eq!(r.json()["to"], "aurora");
    let st = sb.wait_json("star", &["sync-db"], "everyone following aurora", |v| {
        primary_of(v) == "aurora"
            && v["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["state"] == "primary" || m["receiver"]["status"] == "streaming")
    });
    assert_eq!(primary_of(&st), "aurora");
    let r = on(&sb, "star", &["promote", "--yes", "--force"]);
    assert_eq!(
        r.code, 0,
        "promote on the backup forwards to a switchover: {}",
        r.stderr
    );
    let r = on(&sb, "star", &["switchover", "--to", "star", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("already the primary"), "{}", r.stderr);
    let r = on(&sb, "star", &["switchover", "--to", "nosuchnode", "--yes"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`nosuchnode` is not in the fleet"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    let r = on(&sb, "star", &["demote", "--yes"]);
    assert_eq!(r.code, 2, "demote with no other primary: {}", r.stderr);
    assert!(r.stderr.contains("no other primary"), "{}", r.stderr);
    let r = on(&sb, "vengeance", &["demote", "--to", "star", "--yes"]);
    assert_eq!(r.code, 1, "demote of a standby is refused: {}", r.stderr);
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    // Back to aurora for the rest.
    ok(
        on(&sb, "aurora", &["switchover", "--to", "aurora", "--yes"]).pipe_ok_or_already(),
        "back to aurora",
    );
    // The history the fleet committed: the first key, then a handover per
    // switchover, epochs rising, aurora last; and the timelines they made.
    let h = sb.wait_json(
        "vengeance",
        &["history"],
        "the last switchover in the history",
        |v| {
            v["entries"]
                .as_array()
                .and_then(|e| e.last())
                .is_some_and(|e| e["primary"] == "aurora" && e["how"] == "handover")
        },
    );
    let entries = h["entries"].as_array().unwrap();
    let epochs: Vec<i64> = entries
        .iter()
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{h}");
    assert!(
        entries.iter().filter(|e| e["how"] == "handover").count() >= 3,
        "{h}"
    );
    assert_eq!(entries[0]["how"], "acquired", "{h}");
    let timelines = sb.wait_json("aurora", &["history"], "aurora's timelines", |v| {
        v["timelines"].as_array().is_some_and(|t| t.len() >= 3)
    });
    assert_eq!(
        timelines["entries"], h["entries"],
        "aurora and vengeance disagree"
    );
    let r = ok(on(&sb, "aurora", &["history"]), "history");
    assert!(
        r.stdout.contains("EPOCH")
            && r.stdout.contains("handover")
            && r.stdout.contains("ENDED AT"),
        "{}",
        r.stdout
    );
    // pause / resume from any node: every member is told, and says so.
    let paused = |v: &Value| -> Vec<bool> {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["failover"]["paused"].as_bool().unwrap_or(false))
            .collect()
    };
    let r = ok(on(&sb, "vengeance", &["pause", "--json"]), "pause").json();
    let told: Vec<(String, bool)> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["node"].as_str().unwrap().to_string(), m["paused"] == true))
        .collect();
    assert_eq!(told.len(), 3, "{r}");
    assert!(told.iter().all(|(_, p)| *p), "{r}");
    // Three members: the pause went through the fleet's Raft group.
    assert_eq!(r["committed"], true, "{r}");
    let db = ok(on(&sb, "aurora", &["sync-db", "--json"]), "sync-db").json();
    assert_eq!(paused(&db), vec![true; 3], "{db}");
    let r = ok(on(&sb, "star", &["resume"]), "resume");
    assert!(r.stdout.contains("aurora: running"), "{}", r.stdout);
    let db = ok(on(&sb, "aurora", &["sync-db", "--json"]), "sync-db").json();
    assert_eq!(paused(&db), vec![false; 3], "{db}");

    // The fleet's config: one for every member, changed from any node, an
    // unsafe change refused with the reason and nothing changed.
    let before = ok(
        on(&sb, "aurora", &["config", "show", "--json"]),
        "config show",
    )
    .json();
    assert_eq!(before["source"], "fleet", "{before}");
    let ttl = before["failover"]["timeout_secs"].as_f64().unwrap();
    let degrade = before["replication"]["sync_degrade_after_secs"]
        .as_u64()
        .unwrap();
    let unsafe_ttl = format!("failover.timeout_secs={}", degrade + 20);
    let r = on(&sb, "star", &["config", "set", &unsafe_ttl]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "replication.sync_degrade_after_secs: must be longer than failover.timeout_secs"
        ),
        "{}",
        r.stderr
    );
    let r = on(&sb, "star", &["config", "set", "failover.ttl=3"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not a fleet config key"), "{}", r.stderr);
    let r = ok(
        on(
            &sb,
            "star",
            &[
                "config",
                "set",
                "replication.max_lag_on_failover_bytes=1048576",
            ],
        ),
        "config set",
    );
    assert!(
        r.stdout.contains("replication.max_lag_on_failover_bytes"),
        "{}",
        r.stdout
    );
    let after = ok(
        on(&sb, "vengeance", &["config", "show", "--json"]),
        "config show",
    )
    .json();
    assert_eq!(
        after["replication"]["max_lag_on_failover_bytes"], 1048576,
        "{after}"
    );
    assert_eq!(
        after["failover"]["timeout_secs"].as_f64(),
        Some(ttl),
        "{after}"
    );
    assert!(
        after["revision"].as_u64() > before["revision"].as_u64(),
        "{after}"
    );
    let r = ok(on(&sb, "aurora", &["config", "show"]), "config show");
    assert!(
        r.stdout.contains("(this node's file differs)"),
        "{}",
        r.stdout
    );
    // config edit (Patroni's edit-config), with an editor that changes one
    // line; one that changes nothing; one that writes a key that is not.
    let edit = |editor: &str| {
        let config = sb.config("star");
        let mut c = cli();
        c.env("EDITOR", editor).env_remove("VISUAL").args([
            "--config",
            config.to_str().unwrap(),
            "config",
            "edit",
            "--yes",
        ]);
        run_command(c)
    };
    let r = ok(
        edit("sed -i 's/^replication.max_lag_on_failover_bytes = .*/replication.max_lag_on_failover_bytes = 2097152/'"),
        "config edit",
    );
    assert!(
        r.stdout
            .contains("replication.max_lag_on_failover_bytes: 1048576 -> 2097152"),
        "{}",
        r.stdout
    );
    let edited = ok(
        on(&sb, "aurora", &["config", "show", "--json"]),
        "config show",
    )
    .json();
    assert_eq!(
        edited["replication"]["max_lag_on_failover_bytes"], 2097152,
        "{edited}"
    );
    let r = ok(edit("true"), "config edit, no change");
    assert!(r.stdout.contains("no change"), "{}", r.stdout);
    let r = edit("sh -c 'echo failover.ttl = 3 >> \"$0\"'");
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("is not a fleet config key"),
        "{}",
        r.stderr
    );
    let r = edit("false");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("nothing changed"), "{}", r.stderr);
    assert_eq!(
        ok(
            on(&sb, "aurora", &["config", "show", "--json"]),
            "config show"
        )
        .json()["revision"],
        edited["revision"]
    );
    assert_eq!(
        query_one(&lead_dsn, "SELECT note FROM ledger WHERE id = 1")
            .await
            .as_deref(),
        Some("kept")
    );

    // backup, then restore into a fresh cluster with the data intact.
    let dest = sb.dir.join("backups-test");
    let r = ok(
        on(
            &sb,
            "aurora",
            &["backup", "--dest", dest.to_str().unwrap(), "--json"],
        ),
        "backup",
    );
    let b = r.json();
    assert!(
        !r.stderr.contains("kB ("),
        "progress in a pipe: {}",
        r.stderr
    );
    // On a terminal, pg_basebackup's own progress shows.
    let shown = {
        let config = sb.config("aurora");
        let cmd = format!(
            "{} --config {} backup --dest {}",
            env!("CARGO_BIN_EXE_aurora-cli"),
            config.display(),
            dest.join("on-a-terminal").display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).env("NO_COLOR", "1");
        ok(run_command(c), "backup on a terminal").stdout
    };
    assert!(
        shown.contains("kB (100%)") && shown.contains("verifying"),
        "{shown}"
    );
    let path = PathBuf::from(b["path"].as_str().unwrap());
    for f in [
        "postgres.tar.gz",
        "assets.tar.gz",
        "config.tar.gz",
        "manifest.json",
        "SHA256SUMS",
    ] {
        assert!(path.join(f).is_file(), "{f}");
    }
    let sums = Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&path)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let fresh = PgCluster::empty(PgOptions::named("restored")).unwrap();
    let restore_assets = sb.dir.join("restored-assets");
    let r = ok(
        run(&[
            "restore",
            "--from",
            path.to_str().unwrap(),
            "--data-dir",
            fresh.data_dir().to_str().unwrap(),
            "--assets-dir",
            restore_assets.to_str().unwrap(),
        ]),
        "restore",
    );
    assert!(r.stdout.contains("verified"), "{}", r.stdout);
    assert!(restore_assets.join("models/demo-weights.bin").is_file());
    // Restored as a standalone server: no standby to wait for.
    std::fs::write(fresh.data_dir().join("aurora.conf"), "").unwrap();
    let mut fresh = fresh;
    fresh.start().await.unwrap();
    assert_eq!(
        query_one(
            &fresh.dsn("postgres"),
            "SELECT note FROM ledger WHERE id = 1"
        )
        .await
        .as_deref(),
        Some("kept")
    );
    // Restore never overwrites, and a damaged backup is refused.
    let r = run(&[
        "restore",
        "--from",
        path.to_str().unwrap(),
        "--data-dir",
        fresh.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    drop(fresh);
    let assets = path.join("assets.tar.gz");
    let mut bytes = std::fs::read(&assets).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&assets, bytes).unwrap();
    let target = sb.dir.join("never-restored");
    let r = run(&[
        "restore",
        "--from",
        path.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("assets.tar.gz does not match its checksum"),
        "{}",
        r.stderr
    );

    // Bad input: each a one-line message naming what failed.
    let r = run(&["status", "--config", "/nonexistent/node.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/node.toml"), "{}", r.stderr);
    let broken = sb.dir.join("broken.toml");
    let text = std::fs::read_to_string(sb.config("vengeance")).unwrap();
    let dead = testbed::free_port().unwrap();
    let hm = sb.node("vengeance")["admin"]["health-monitor"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        &broken,
        text.replace(&hm, &format!("http://127.0.0.1:{dead}")),
    )
    .unwrap();
    let r = run(&["--config", broken.to_str().unwrap(), "health"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{dead}")),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    std::fs::write(
        &broken,
        text.replace("role = \"compute\"", "role = \"captain\""),
    )
    .unwrap();
    let r = run(&["--config", broken.to_str().unwrap(), "status"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("node.role"), "{}", r.stderr);
    let r = on(&sb, "vengeance", &["sync-db", "--no-such-flag"]);
    assert_eq!(r.code, 2);
    let r = on(&sb, "vengeance", &["logs", "postgres"]);
    assert_eq!(
        r.code, 2,
        "no docker / no compose project in the sandbox: {}",
        r.stderr
    );

    // The sandbox's own commands: a crash of the lead, then its return.
    let r = ok(sb.sandbox(&["kill", "aurora"]), "kill");
    assert!(r.stdout.contains("postgres"), "{}", r.stdout);
    sb.wait_json(
        "star",
        &["sync-db"],
        "star promoted after the lead's crash",
        |v| primary_of(v) == "star",
    );
    let aurora = sb.sandbox_status_of("aurora");
    assert!(aurora["processes"]["repl-manager"].is_null(), "{aurora}");
    // `start` returns once the node is back: asked at once, as a reader
    // of the README's tour does, the fleet answers with it streaming (it
    // used to return while the node's PostgreSQL was still starting, and
    // `status` failed). The compute node has no dns-sync, whose readiness
    // would have waited for the database.
    for node in ["aurora", "vengeance"] {
        if node == "vengeance" {
            ok(sb.sandbox(&["kill", node]), "kill");
        }
        ok(sb.sandbox(&["start", node]), "start");
        ok(
            on(&sb, node, &["status"]),
            "status on the node just started",
        );
        let st = ok(on(&sb, "star", &["sync-db", "--json"]), "sync-db").json();
        assert!(
            st["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["node"] == node && m["receiver"]["status"] == "streaming"),
            "{node}: {st}"
        );
    }
    let r = ok(sb.sandbox(&["stop", "vengeance"]), "stop");
    assert!(r.stdout.contains("repl-manager"), "{}", r.stdout);
    let r = ok(sb.sandbox(&["status"]), "sandbox status table");
    assert!(
        r.stdout.contains("vengeance") && r.stdout.contains("dead"),
        "{}",
        r.stdout
    );
    let r = sb.sandbox(&["partition", "vengeance"]);
    assert_eq!(r.code, 2, "no --netns: {}", r.stderr);
    let r = sb.sandbox(&["kill", "nosuch"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`nosuch` is not in the sandbox"),
        "{}",
        r.stderr
    );
    let r = run(&["sandbox", "up", "--dir", sb.dir_arg()]);
    assert_eq!(r.code, 2, "a second sandbox in the same dir: {}", r.stderr);

    let r = ok(sb.sandbox(&["down"]), "down");
    assert!(r.stdout.contains("removed"), "{}", r.stdout);
    assert!(!sb.dir.exists());
}

trait OkOrAlready {
    fn pipe_ok_or_already(self) -> Run;
}

impl OkOrAlready for Run {
    /// A switchover to the node that already is primary is a no-op here.
    fn pipe_ok_or_already(self) -> Run {
        if self.code == 2 && self.stderr.contains("already the primary") {
            Run { code: 0, ..self }
        } else {
            self
        }
    }
}

/// `--netns`: every node in its own namespace, so a partition is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netns_sandbox_partitions_and_heals_a_node() {
    let sb = Sandbox::up(&["--netns", "--nodes", "3"]);
    let aurora = sb.node("aurora");
    let ns = aurora["netns"].as_str().unwrap().to_string();
    let ip = aurora["host"].as_str().unwrap().to_string();
    assert!(!ip.starts_with("127."), "{aurora}");
    assert!(aurora["dns"].as_str().unwrap().starts_with(&ip));
    // `sandbox up` returned once the fleet can fail over: the committed
    // sync key names the backup (only the member it names may take over
    // automatically). CI once partitioned the lead before it did, and
    // nobody took over.
    let v = on(&sb, "aurora", &["sync-db", "--json"]).json();
    let lead = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == "aurora")
        .unwrap();
    assert_eq!(lead["failover"]["sync_key"], "star", "{v}");
    // And the standbys know the lead's reports (the second line).
    sb.wait_json(
        "star",
        &["sync-db"],
        "the lead's sync report reaching star",
        |v| {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["node"] == "star" && m["failover"]["report"]["sync_standby"] == "star")
        },
    );

    ok(sb.sandbox(&["partition", "aurora"]), "partition");
    // Cut off, the lead loses its lease and stops; the backup takes over.
    sb.wait_json("star", &["sync-db"], "star promoted", |v| {
        primary_of(v) == "star"
    });
    let a = sb.sandbox_status_of("aurora");
    assert_eq!(a["partitioned"], true, "{a}");
    let t = ok(sb.sandbox(&["status"]), "status table").stdout;
    assert!(t.contains("partitioned"), "{t}");

    ok(sb.sandbox(&["heal", "aurora"]), "heal");
    sb.wait_json(
        "star",
        &["sync-db"],
        "aurora back as a standby of star",
        |v| {
            primary_of(v) == "star"
                && v["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["node"] == "aurora" && m["receiver"]["status"] == "streaming")
        },
    );

    ok(sb.sandbox(&["down"]), "down");
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&ns),
        "namespace {ns} left behind"
    );
}

/// A sandbox that came up while Garage was still being built (as
/// `./scripts/sandbox` brings one up on a fresh machine) gets its asset
/// origin later: `sandbox assets` starts Garage with the demo set, and
/// asset-sync mirrors it on every node.
#[test]
fn assets_join_a_sandbox_that_came_up_without_them() {
    // No Garage to be found: not on PATH, not in $HOME/.cargo/bin.
    let sb = Sandbox::up_with(
        &["--nodes", "2"],
        &[
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOME", "/nonexistent"),
            ("GARAGE_BIN", "/nonexistent/garage"),
        ],
    );
    assert!(sb.json["s3"].is_null(), "{}", sb.json);
    assert!(sb.node("aurora")["admin"]["asset-sync"].is_null());
    let r = ok(sb.sandbox(&["assets"]), "sandbox assets");
    assert!(r.stdout.contains("4 demo objects"), "{}", r.stdout);
    let r = sb.sandbox(&["assets"]);
    assert_eq!(r.code, 2, "twice: {}", r.stderr);
    assert!(
        r.stderr.contains("already has its asset origin"),
        "{}",
        r.stderr
    );

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.dir.join("sandbox.json")).unwrap())
            .unwrap();
    assert!(json["s3"]["endpoint"].is_string(), "{json}");
    for node in ["aurora", "star"] {
        let n = json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap();
        let st = sb.sandbox_status_of(node);
        assert!(st["processes"]["asset-sync"].is_number(), "{st}");
        // The demo set, mirrored by this node's own asset-sync.
        let logo = PathBuf::from(n["dir"].as_str().unwrap()).join("assets/img/logo.svg");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !logo.is_file() {
            assert!(
                Instant::now() < deadline,
                "{} never arrived",
                logo.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The CLI and health-monitor know of it: `status` reports the
        // mirror, and health checks it.
        let health = ok(on(&sb, node, &["health", "--json"]), "health").json();
        assert!(
            health["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "sidecar:asset-sync"),
            "{health}"
        );
        let st = ok(on(&sb, node, &["status", "--json"]), "status").json();
        assert!(st["assets"].is_object(), "{st}");
    }
}

/// On a terminal, `sandbox up` shows each step as it finishes (the test
/// gives it one through `script`, util-linux's pty runner).
#[test]
fn progress_is_shown_on_a_terminal() {
    let sb = Sandbox::room();
    let cmd = format!(
        "{} sandbox up --nodes 1 --dir {}",
        env!("CARGO_BIN_EXE_aurora-cli"),
        sb.dir_arg()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env_remove("AURORA_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    let r = ok(run_command(c), "sandbox up on a terminal");
    for step in [
        "aurora: PostgreSQL initialised",
        "repl-manager running on every node",
        "aurora: up",
        "sandbox up in",
    ] {
        assert!(r.stdout.contains(step), "{step}: {}", r.stdout);
    }
}

#[test]
fn completions_version_and_help() {
    // The scripts call aurora-cli back (COMPLETE=<shell>) for candidates.
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = ok(run(&["completions", shell]), shell);
        assert!(
            r.stdout.contains("COMPLETE") && r.stdout.contains("aurora-cli"),
            "{shell}: {}",
            r.stdout
        );
    }
    assert_eq!(complete(&["aurora-cli", "swi"], &[]), ["switchover"]);
    let flags = complete(&["aurora-cli", "switchover", "--"], &[]);
    assert!(flags.contains(&"--to".to_string()), "{flags:?}");
    // Nothing to read (no config): nothing offered, no error, no hang.
    assert!(complete(&["aurora-cli", "demote", "--to", ""], &[]).is_empty());
    let r = ok(run(&["version"]), "version");
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")));
    let v = ok(run(&["version", "--json"]), "version --json").json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["api"], 1);
    // `aurora-cli completions bash | head -0`: the pipe's reader is closed
    // before the tool starts, so its first write fails with EPIPE; it ends
    // quietly, not with a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cli()
        .args(["completions", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for cmd in ["status", "switchover", "backup", "sandbox"] {
        let r = ok(run(&[cmd, "--help"]), cmd);
        assert!(r.stdout.contains("Example"), "{cmd}: {}", r.stdout);
    }
    let r = run(&[
        "sandbox",
        "up",
        "--zone",
        "bad_zone!",
        "--dir",
        "/tmp/aurora-never-created",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--zone"), "{}", r.stderr);
    assert!(!Path::new("/tmp/aurora-never-created").exists());
    let r = run(&["sandbox", "status", "--dir", "/tmp/aurora-no-sandbox-here"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no sandbox"), "{}", r.stderr);
}

/// `status --watch` ends on Ctrl-C even when the signal arrives while a
/// refresh is still being gathered. The sidecars here are dead peers (a
/// listener that accepts and never answers, as a host gone without a RST
/// looks), so each refresh waits out `admin.timeout_secs`; the signal is
/// sent in the middle of the second one.
#[test]
fn watch_ends_on_ctrl_c_sent_during_a_refresh() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"aurora\"\n[admin]\ntimeout_secs = 2\n[sidecars]\n\
             repl_manager = \"http://127.0.0.1:{port}\"\nhealth_monitor = \"http://127.0.0.1:{port}\"\n\
             asset_sync = \"\"\ndns_sync = \"\"\n"
        ),
    )
    .unwrap();
    let mut child = cli()
        .args(["--config", config.to_str().unwrap()])
        .args(["status", "--watch", "--json", "--interval", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // First refresh: about 2 s; the second runs from about 2.2 s to 4.2 s.
    std::thread::sleep(std::time::Duration::from_millis(3200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the watch did not end on Ctrl-C: {text}"
    );
    assert!(text.lines().count() >= 2, "{text}");
    drop(silent);
}

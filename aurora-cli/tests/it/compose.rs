//! The commands that wrap `docker compose`, against a stand-in `docker` on
//! PATH that records its arguments and keeps images and containers as
//! files: the order of a multi-service rolling update and its newest-first
//! rollback, checked call by call in a fraction of a second. The same
//! command against real containers (one service swapped, a broken image
//! rolled back) is in `tests/tests/it/stack.rs`; moving these cases there too
//! is the way to retire this stand-in.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::Command;

const STANDIN: &str = r#"#!/usr/bin/env python3
# Stand-in for `docker`: records every call, answers from files in $STATE.
import os, sys
S = os.environ["DOCKER_STANDIN_STATE"]
a = sys.argv[1:]
open(os.path.join(S, "calls.log"), "a").write(" ".join(a) + "\n")
def rd(n, d=None):
    p = os.path.join(S, n)
    return open(p).read().strip() if os.path.exists(p) else d
def wr(n, v): open(os.path.join(S, n), "w").write(v)
def svc_of(ref): return ref.split("/")[-1].split(":")[0]
if a[:3] == ["compose", "config", "--services"]:
    print(rd("services"))
elif a[:4] == ["compose", "config", "--format", "json"]:
    import json
    print(json.dumps({"services": {s: {"image": "registry.example/%s:stable" % s}
                                   for s in rd("services").split()}}))
elif a[:3] == ["compose", "ps", "-q"]:
    if rd("running-" + a[3]): print("cid-" + a[3])
elif a[0] == "inspect":
    fmt, cid = a[2], a[3]
    svc = cid[len("cid-"):]
    if ".Config.Image" in fmt: print("registry.example/%s:stable" % svc)
    elif ".RestartCount" in fmt: print("0 0")
    elif fmt == "{{.Image}}": print(rd("running-" + svc))
    elif ".State.Status" in fmt:
        bad = (rd("bad-ids", "") or "").split()
        print("running unhealthy" if rd("running-" + svc) in bad else "running healthy")
elif a[:2] == ["image", "inspect"]:
    print(rd("tag-" + svc_of(a[-1])))
elif a[:2] == ["compose", "pull"]:
    for line in (rd("pull", "") or "").splitlines():
        svc, new = line.split()
        wr("tag-" + svc, new)
elif a[:2] == ["compose", "up"]:
    svc = a[-1]
    wr("running-" + svc, rd("tag-" + svc))
elif a[0] == "tag":
    wr("tag-" + svc_of(a[2]), a[1])
elif a[:2] in (["compose", "logs"], ["compose", "restart"], ["compose", "exec"]):
    print("ok")
else:
    sys.stderr.write("stand-in: unexpected docker call: %s\n" % " ".join(a))
    sys.exit(1)
"#;

struct Stage {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    state: PathBuf,
    config: PathBuf,
}

const SERVICES: [&str; 4] = ["postgres", "redis", "repl-manager", "dns-sync"];

fn stage() -> Stage {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let state = tmp.path().join("state");
    let project = tmp.path().join("project");
    for d in [&bin, &state, &project] {
        std::fs::create_dir_all(d).unwrap();
    }
    let docker = bin.join("docker");
    std::fs::write(&docker, STANDIN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(project.join("compose.yaml"), "services: {}\n").unwrap();
    std::fs::write(state.join("services"), SERVICES.join("\n")).unwrap();
    for s in SERVICES {
        std::fs::write(
            state.join(format!("running-{s}")),
            format!("sha256:old-{s}"),
        )
        .unwrap();
        std::fs::write(state.join(format!("tag-{s}")), format!("sha256:old-{s}")).unwrap();
    }
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"aurora\"\nrole = \"lead\"\n[compose]\nproject_dir = \"{}\"\nhealth_timeout_secs = 5\n",
            project.display()
        ),
    )
    .unwrap();
    Stage {
        _tmp: tmp,
        bin,
        state,
        config,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Stage {
    fn run(&self, args: &[&str]) -> Run {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_aurora-cli"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("PATH", path)
            .env("DOCKER_STANDIN_STATE", &self.state)
            .env("NO_COLOR", "1")
            .env_remove("AURORA_CONFIG")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn running(&self, svc: &str) -> String {
        read(&self.state.join(format!("running-{svc}")))
    }

    fn set(&self, file: &str, text: &str) {
        std::fs::write(self.state.join(file), text).unwrap();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn logs_restart_and_ssh_wrap_compose() {
    let s = stage();
    let r = s.run(&["logs", "repl-manager", "-f", "--tail", "10"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s
        .calls()
        .contains(&"compose logs --follow --tail 10 repl-manager".to_string()));
    let r = s.run(&["restart", "dns-sync"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("restarted dns-sync"), "{}", r.stdout);
    assert!(s.calls().contains(&"compose restart dns-sync".to_string()));
    let r = s.run(&["ssh", "postgres"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s
        .calls()
        .iter()
        .any(|c| c.starts_with("compose exec postgres sh -c")));

    // An unknown service: exit 2, one line listing the real ones, and
    // nothing run against it.
    let before = s.calls().len();
    for cmd in [
        ["logs", "postgress"],
        ["restart", "postgress"],
        ["ssh", "postgress"],
    ] {
        let r = s.run(&cmd);
        assert_eq!(r.code, 2, "{cmd:?}");
        assert!(
            r.stderr.contains("unknown service `postgress`") && r.stderr.contains("repl-manager"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1);
    }
    assert!(s.calls()[before..]
        .iter()
        .all(|c| c == "compose config --services"));
}

#[test]
fn update_recreates_only_changed_services_one_at_a_time() {
    let s = stage();
    s.set(
        "pull",
        "repl-manager sha256:new-repl-manager\ndns-sync sha256:new-dns-sync\n",
    );
    let r = s.run(&["update"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("updated 2 service(s)"), "{}", r.stdout);
    assert_eq!(s.running("repl-manager"), "sha256:new-repl-manager");
    assert_eq!(s.running("dns-sync"), "sha256:new-dns-sync");
    assert_eq!(s.running("postgres"), "sha256:old-postgres");
    let calls = s.calls();
    let ups: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("compose up"))
        .collect();
    assert_eq!(
        ups,
        [
            "compose up -d --no-deps repl-manager",
            "compose up -d --no-deps dns-sync"
        ]
    );
    // Each recreated service is health-checked before the next one starts.
    let first_up = calls
        .iter()
        .position(|c| c.ends_with("--no-deps repl-manager"))
        .unwrap();
    let second_up = calls
        .iter()
        .position(|c| c.ends_with("--no-deps dns-sync"))
        .unwrap();
    assert!(calls[first_up..second_up]
        .iter()
        .any(|c| c.starts_with("inspect --format {{.State.Status}}")
            && c.ends_with("cid-repl-manager")));
}

#[test]
fn update_rolls_back_when_a_service_fails_its_health_check() {
    let s = stage();
    s.set(
        "pull",
        "redis sha256:new-redis\nrepl-manager sha256:new-repl-manager\ndns-sync sha256:new-dns-sync\n",
    );
    s.set("bad-ids", "sha256:new-repl-manager");
    let r = s.run(&["update", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("update failed at repl-manager"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    // Everything recreated so far is back on its previous image; what came
    // after the failure was never touched.
    assert_eq!(s.running("redis"), "sha256:old-redis");
    assert_eq!(s.running("repl-manager"), "sha256:old-repl-manager");
    assert_eq!(s.running("dns-sync"), "sha256:old-dns-sync");
    let calls = s.calls();
    assert!(!calls
        .iter()
        .any(|c| c == "compose up -d --no-deps dns-sync"));
    let tags: Vec<&String> = calls.iter().filter(|c| c.starts_with("tag ")).collect();
    assert_eq!(
        tags,
        [
            "tag sha256:old-repl-manager registry.example/repl-manager:stable",
            "tag sha256:old-redis registry.example/redis:stable",
        ],
        "newest first"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(doc["failed"], "repl-manager");
    assert_eq!(
        doc["rolled_back"],
        serde_json::json!(["repl-manager", "redis"])
    );
}

#[test]
fn docker_commands_need_docker_and_a_compose_project() {
    let s = stage();
    let out = Command::new(env!("CARGO_BIN_EXE_aurora-cli"))
        .arg("--config")
        .arg(&s.config)
        .args(["logs"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`docker` is not on PATH"));
}

//! The node stack's files checked without starting it: the compose file for
//! every role, its JSON schema, the Dockerfiles (hadolint), every script
//! (shellcheck), Prometheus' config, rules and rule unit tests (promtool),
//! Alertmanager's config (amtool), every Grafana dashboard and each PromQL
//! expression in it, and the sidecars' own config parsers over what
//! `compose/node-init.sh` renders. The tools come from `scripts/lib/deps.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aurora_tests::repo;

fn tool(name: &str) -> PathBuf {
    sidecar_kit::cli::which(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed: run scripts/lib/deps.sh (./scripts/test does)")
    })
}

fn check(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn run(cmd: &mut Command, what: &str) -> String {
    check(cmd.output().unwrap_or_else(|e| panic!("{what}: {e}")), what)
}

const FLEET: &str = "aurora lead 10.0.0.1,star backup 10.0.0.2,vengeance compute 10.0.0.3";

/// Renders a node's state directory (the lead's secrets, shared).
fn render(dir: &Path, name: &str, role: &str, ip: &str, fleet_env: Option<&Path>) {
    render_with(dir, name, role, ip, FLEET, fleet_env);
}

struct Fleet {
    _tmp: tempfile::TempDir,
    nodes: Vec<(&'static str, PathBuf)>,
}

fn fleet() -> Fleet {
    let tmp = tempfile::tempdir().unwrap();
    let lead = tmp.path().join("aurora");
    render(&lead, "aurora", "lead", "10.0.0.1", None);
    let secrets = lead.join("secrets/fleet.env");
    let star = tmp.path().join("star");
    render(&star, "star", "backup", "10.0.0.2", Some(&secrets));
    let vengeance = tmp.path().join("vengeance");
    render(
        &vengeance,
        "vengeance",
        "compute",
        "10.0.0.3",
        Some(&secrets),
    );
    Fleet {
        _tmp: tmp,
        nodes: vec![("lead", lead), ("backup", star), ("compute", vengeance)],
    }
}

fn compose(state: &Path) -> Command {
    let mut c = Command::new("docker");
    c.arg("compose")
        .arg("-f")
        .arg(repo().join("compose/compose.yaml"))
        .arg("--env-file")
        .arg(state.join("node.env"));
    c
}

#[test]
fn compose_file_is_valid_for_every_role_and_the_role_picks_the_services() {
    let f = fleet();
    for (role, state) in &f.nodes {
        run(
            compose(state).args(["config", "-q"]),
            "docker compose config",
        );
        let services = run(
            compose(state).args(["config", "--services"]),
            "docker compose config --services",
        );
        let services: Vec<&str> = services.lines().collect();
        for always in [
            "wireguard",
            "postgres",
            "repl-manager",
            "redis",
            "asset-sync",
            "health-monitor",
            "prometheus",
            "grafana",
            "node-exporter",
            "postgres-exporter",
            "redis-exporter",
            "cadvisor",
        ] {
            assert!(
                services.contains(&always),
                "{role}: no {always} in {services:?}"
            );
        }
        for lead_and_backup in ["dns-sync", "garage", "alertmanager"] {
            assert_eq!(
                services.contains(&lead_and_backup),
                *role != "compute",
                "{role}: {lead_and_backup} in {services:?}"
            );
        }
        // No secret is interpolated into the effective file: they reach
        // the containers only through `environment` (from the env files).
        let effective: serde_json::Value = serde_json::from_str(&run(
            compose(state).args(["config", "--format", "json"]),
            "docker compose config --format json",
        ))
        .unwrap();
        let secrets = std::fs::read_to_string(state.join("secrets/fleet.env")).unwrap()
            + &std::fs::read_to_string(state.join("secrets/node.env")).unwrap();
        let values: Vec<(String, String)> = secrets
            .lines()
            .filter_map(|l| l.split_once('='))
            // The access key id names the key; it is not the secret. The
            // number of Garage copies is a setting that travels with them.
            .filter(|(k, _)| !matches!(*k, "S3_ACCESS_KEY_ID" | "GARAGE_REPLICATION_FACTOR"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut leaks = vec![];
        outside_environment(&effective, &mut vec![], &mut |path, text| {
            for (k, v) in &values {
                if text.contains(v.as_str()) {
                    leaks.push(format!("{k} at {}", path.join(".")));
                }
            }
        });
        assert!(
            leaks.is_empty(),
            "{role}: secrets in the effective compose file: {leaks:?}"
        );
    }
}

/// Calls `f` with every string of `v` that is not a value of a service's
/// `environment`, with its path.
fn outside_environment(
    v: &serde_json::Value,
    path: &mut Vec<String>,
    f: &mut dyn FnMut(&[String], &str),
) {
    match v {
        serde_json::Value::String(s) => {
            let in_env = path.len() >= 2 && path[path.len() - 2] == "environment";
            if !in_env {
                f(path, s);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                outside_environment(item, path, f);
                path.pop();
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                path.push(k.clone());
                outside_environment(item, path, f);
                path.pop();
            }
        }
        _ => {}
    }
}

#[test]
fn compose_files_match_the_compose_specification_schema() {
    run(
        Command::new(tool("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(repo().join("compose/compose.yaml"))
            .arg(repo().join("compose/compose.gpu.yaml")),
        "check-jsonschema (compose spec)",
    );
}

/// The pipeline's workflows against GitHub's workflow schema (vendored in
/// check-jsonschema; actionlint is in neither Debian's archive nor PyPI as a
/// prebuilt binary, so it is not run here), and what they must do: run the
/// suite before anything is built, deploy only after the images, read the
/// registry and every credential from the repository's settings.
#[test]
fn the_pipeline_workflows_are_valid_and_take_secrets_from_the_repository() {
    let dir = repo().join(".github/workflows");
    let files: Vec<PathBuf> = ["ci.yml", "deploy-standard-node.yml", "release.yml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    run(
        Command::new(tool("check-jsonschema"))
            .args(["--builtin-schema", "vendor.github-workflows"])
            .args(&files),
        "check-jsonschema (GitHub workflows)",
    );
    let deploy = std::fs::read_to_string(&files[1]).unwrap();
    for want in [
        "workflow_dispatch:",
        "target_node:",
        "node_role:",
        "branches: [main]",
        "needs: test",
        "needs: repl-manager-image",
        "scripts/deploy-fleet.sh",
        "${{ github.sha }}",
    ] {
        assert!(
            deploy.contains(want),
            "deploy-standard-node.yml lacks {want}"
        );
    }
    // A version tag publishes the archive the installer downloads, after the
    // suite and on images of the same tag.
    let release = std::fs::read_to_string(&files[2]).unwrap();
    for want in [
        "tags: [\"v*\"]",
        "needs: test",
        "needs: repl-manager-image",
        "scripts/release-archive.sh",
        "--image-prefix \"$REGISTRY/aurora-node\" --tag \"$GITHUB_REF_NAME\"",
        "gh release create",
    ] {
        assert!(release.contains(want), "release.yml lacks {want}");
    }
    let ci = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        ci.contains("pull_request:") && ci.contains(".ci/run"),
        "{ci}"
    );
    // No credential or registry is written into a workflow: every
    // environment entry that holds one comes from the repository's secrets
    // or variables.
    for (file, text) in files.iter().zip([&ci, &deploy, &release]) {
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(": ") else {
                continue;
            };
            let sensitive = [
                "PASSWORD", "TOKEN", "KEY", "USER", "CONFIG", "REGISTRY", "NODES",
            ]
            .iter()
            .any(|w| key.contains(w));
            if sensitive && key.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    value.starts_with("${{ secrets.") || value.starts_with("${{ vars."),
                    "{}: {key} is not from the repository's settings: {line}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn a_gpu_node_reserves_its_devices_for_health_monitor() {
    let f = fleet();
    let (_, state) = &f.nodes[2];
    let text = run(
        compose(state)
            .arg("-f")
            .arg(repo().join("compose/compose.gpu.yaml"))
            .args(["config", "--format", "json"]),
        "docker compose config (gpu)",
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hm = &v["services"]["health-monitor"];
    let devices = &hm["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(devices["driver"], "nvidia", "{hm}");
    assert_eq!(
        hm["environment"]["AURORA_CHECKS__GPU_INVENTORY"], "true",
        "{hm}"
    );
}

#[test]
fn dockerfiles_pass_hadolint() {
    let dir = repo().join("compose/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    run(
        Command::new(tool("hadolint"))
            .args(["--failure-threshold", "warning", "--no-color"])
            .args(&files),
        "hadolint",
    );
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let root = repo();
    let mut files = vec![];
    for dir in [
        "compose",
        "compose/images",
        "scripts",
        "scripts/lib",
        "repl-manager",
        "bench",
        "bootstrap",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if !p.is_file() {
                continue;
            }
            let head = std::fs::read(&p).unwrap();
            let is_shell = head.starts_with(b"#!/bin/sh")
                || head.starts_with(b"#!/usr/bin/env bash")
                || head.starts_with(b"#!/bin/bash")
                || p.extension().is_some_and(|x| x == "sh");
            if is_shell {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    run(
        Command::new(tool("shellcheck"))
            .args(["-x", "-P", "SCRIPTDIR", "--severity=warning"])
            .args(&files),
        "shellcheck",
    );
}

/// scripts/test's free-space check: too little room is one line naming
/// the filesystem and the shortfall, and exit 1; enough room says nothing.
#[test]
fn the_test_command_refuses_to_start_without_disk_room() {
    let check = |mb: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                ". scripts/lib/room.sh; need_room /tmp {mb} 'the build'; echo fits"
            ))
            .current_dir(repo())
            .output()
            .unwrap()
    };
    let out = check("999999999");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not enough disk for the build") && stderr.contains("999999999 MB needed"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "went on after refusing");
    let out = check("1");
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fits");
}

#[test]
fn prometheus_config_rules_and_rule_tests() {
    let f = fleet();
    let promtool = tool("promtool");
    for (role, state) in &f.nodes {
        let text = run(
            Command::new(&promtool)
                .args(["check", "config", "--syntax-only"])
                .arg(state.join("config/prometheus.yml")),
            "promtool check config",
        );
        assert!(text.contains("SUCCESS"), "{role}: {text}");
        let config = std::fs::read_to_string(state.join("config/prometheus.yml")).unwrap();
        assert_eq!(
            config.contains("job_name: federate"),
            *role != "compute",
            "{role}"
        );
        assert_eq!(
            config.contains("job_name: dns-sync"),
            *role != "compute",
            "{role}"
        );
    }
    let rules = repo().join("compose/config/prometheus/rules/aurora.yml");
    run(
        Command::new(&promtool).args(["check", "rules"]).arg(&rules),
        "promtool check rules",
    );
    // Every alert the rules define has a unit test that fires it.
    let tests = repo().join("compose/config/prometheus/tests/aurora.test.yml");
    let out = run(
        Command::new(&promtool).args(["test", "rules"]).arg(&tests),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let tests_text = std::fs::read_to_string(&tests).unwrap();
    for line in rules_text.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests_text.contains(&format!("alertname: {name}")),
                "alert {name} has no promtool unit test"
            );
        }
    }
}

#[test]
fn alertmanager_config_is_valid_on_lead_and_backup() {
    let f = fleet();
    for (role, state) in f.nodes.iter().filter(|(r, _)| *r != "compute") {
        let out = run(
            Command::new(tool("amtool"))
                .arg("check-config")
                .arg(state.join("config/alertmanager.yml")),
            "amtool check-config",
        );
        assert!(out.contains("SUCCESS"), "{role}: {out}");
    }
}

/// Every dashboard parses, and every PromQL expression in it parses (as a
/// recording rule, which promtool checks offline). That each one returns
/// data from the running stack is the stack test's job.
#[test]
fn grafana_dashboards_and_their_queries_parse() {
    let dir = repo().join("compose/config/grafana/dashboards");
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let mut n = 0;
    let mut titles = vec![];
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        titles.push(d["title"].as_str().unwrap().to_string());
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{}",
            p.display()
        );
        for panel in d["panels"].as_array().unwrap() {
            assert_eq!(
                panel["datasource"]["uid"],
                "aurora-prometheus",
                "{}",
                p.display()
            );
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                n += 1;
                rules.push_str(&format!(
                    "      - record: dashboard:query_{n}\n        expr: {}\n",
                    serde_json::to_string(expr).unwrap()
                ));
            }
        }
    }
    titles.sort();
    for want in ["fleet", "replication", "assets", "DNS", "node resources"] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no {want} dashboard in {titles:?}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("queries.yml");
    std::fs::write(&file, rules).unwrap();
    run(
        Command::new(tool("promtool"))
            .args(["check", "rules"])
            .arg(&file),
        "promtool check rules (dashboard queries)",
    );
    assert!(n >= 25, "{n} queries");
    let ds = std::fs::read_to_string(
        repo().join("compose/config/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(ds.contains("uid: aurora-prometheus"), "{ds}");
}

/// What node-init renders is accepted by each sidecar's own config parser
/// (`--check-config`): every key known, every value valid.
#[test]
fn rendered_sidecar_configs_pass_the_sidecars_own_checks() {
    let f = fleet();
    for (role, state) in &f.nodes {
        let mut sidecars = vec!["repl-manager", "asset-sync", "health-monitor"];
        if *role != "compute" {
            sidecars.push("dns-sync");
        }
        for s in sidecars {
            let bin = testbed::tools::workspace_bin(s).unwrap();
            let env = std::fs::read_to_string(state.join(format!("env/{s}.env"))).unwrap();
            let mut c = Command::new(bin);
            c.arg("--check-config").env_clear();
            for line in env.lines() {
                let (k, v) = line.split_once('=').unwrap();
                if k == "AURORA_CONFIG" {
                    // The container's path, here on the host.
                    c.env(k, state.join(format!("config/{s}.toml")));
                } else {
                    c.env(k, v);
                }
            }
            let out = run(&mut c, &format!("{s} --check-config ({role})"));
            assert!(
                out.contains("[redacted]"),
                "{s}: secrets must print redacted:\n{out}"
            );
        }
    }
}

/// An operator's shell that sourced a node's `node.env` (the variables
/// compose interpolates) and exported `AURORA_DSN` for `aurora-cli migrate`
/// still runs every sidecar: those are the tools' own variables, never
/// config keys. Every `AURORA_` variable the compose files interpolate or
/// node-init writes into `node.env` must be reserved in sidecar-kit, or a
/// sidecar started from such a shell exits 2 on an "unknown field".
#[test]
fn a_shell_holding_the_stacks_variables_still_runs_every_sidecar() {
    let f = fleet();
    let mut stack_vars = std::collections::BTreeSet::new();
    for file in ["compose/compose.yaml", "compose/compose.gpu.yaml"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for part in text.split("${").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.starts_with("AURORA_") {
                stack_vars.insert(name);
            }
        }
    }
    let mut shell: Vec<(String, String)> = Vec::new();
    for (_, state) in &f.nodes {
        for line in std::fs::read_to_string(state.join("node.env"))
            .unwrap()
            .lines()
        {
            if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("AURORA_") {
                    stack_vars.insert(k.to_string());
                    shell.push((k.to_string(), v.to_string()));
                }
            }
        }
    }
    assert!(stack_vars.contains("AURORA_STATE_DIR"), "{stack_vars:?}");
    let unreserved: Vec<_> = stack_vars
        .iter()
        .filter(|v| !sidecar_kit::config::is_tool_variable(v))
        .collect();
    assert!(
        unreserved.is_empty(),
        "not reserved in sidecar_kit::config::TOOL_VARIABLES: {unreserved:?}"
    );
    shell.extend(
        [
            ("AURORA_DSN", "host=10.0.0.1 user=postgres"),
            ("AURORA_BIN_DIR", "/usr/local/bin"),
            ("AURORA_BUILD_COMMIT", "0123abc"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let (_, lead) = &f.nodes[0];
    for s in ["repl-manager", "asset-sync", "health-monitor", "dns-sync"] {
        let mut c = Command::new(testbed::tools::workspace_bin(s).unwrap());
        c.arg("--check-config").env_clear();
        // The sidecar's own env file (its secrets), as compose passes it...
        for line in std::fs::read_to_string(lead.join(format!("env/{s}.env")))
            .unwrap()
            .lines()
        {
            if let Some((k, v)) = line.split_once('=') {
                c.env(k, v);
            }
        }
        // ...plus the operator's shell.
        c.env("AURORA_CONFIG", lead.join(format!("config/{s}.toml")))
            .envs(shell.iter().map(|(k, v)| (k, v)));
        run(
            &mut c,
            &format!("{s} --check-config from a shell holding node.env"),
        );
    }
}

/// asset-sync's origins, in order: its own node's Garage where it runs
/// one, then the lead's, then the backup's mirror.
#[test]
fn asset_origins_are_ordered_own_then_lead_then_backup() {
    let f = fleet();
    let want = [
        (
            "lead",
            "\"http://127.0.0.1:3900\"",
            "[\"http://10.0.0.2:3900\"]",
        ),
        (
            "backup",
            "\"http://127.0.0.1:3900\"",
            "[\"http://10.0.0.1:3900\"]",
        ),
        (
            "compute",
            "\"http://10.0.0.1:3900\"",
            "[\"http://10.0.0.2:3900\"]",
        ),
    ];
    for ((role, state), (want_role, endpoint, fallbacks)) in f.nodes.iter().zip(want) {
        assert_eq!(*role, want_role);
        let text = std::fs::read_to_string(state.join("config/asset-sync.toml")).unwrap();
        assert!(
            text.contains(&format!("endpoint = {endpoint}")),
            "{role}: {text}"
        );
        assert!(
            text.contains(&format!("fallback_endpoints = {fallbacks}")),
            "{role}: {text}"
        );
    }
}

/// The state directory keeps secrets private and a rerun changes nothing.
/// `node-init.sh` with its own `--members`.
fn render_with(
    dir: &Path,
    name: &str,
    role: &str,
    ip: &str,
    members: &str,
    fleet_env: Option<&Path>,
) {
    let mut c = Command::new(repo().join("compose/node-init.sh"));
    c.arg("--state-dir").arg(dir).args([
        "--name",
        name,
        "--role",
        role,
        "--vpn-ip",
        ip,
        "--members",
        members,
    ]);
    if let Some(f) = fleet_env {
        c.arg("--fleet-env").arg(f);
    }
    run(&mut c, "compose/node-init.sh");
}

fn garage_copies(state: &Path) -> String {
    let toml = std::fs::read_to_string(state.join("config/garage.toml")).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("replication_factor = "))
        .unwrap()
        .to_string()
}

#[test]
fn every_garage_of_a_fleet_keeps_the_number_of_copies_the_lead_began_with() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = "aurora lead 10.0.0.1";
    let with_backup = "aurora lead 10.0.0.1,star backup 10.0.0.2";

    // Planned with a backup: two copies, recorded for the fleet.
    let lead = tmp.path().join("planned");
    render_with(&lead, "aurora", "lead", "10.0.0.1", with_backup, None);
    assert_eq!(garage_copies(&lead), "2");
    let fleet = std::fs::read_to_string(lead.join("secrets/fleet.env")).unwrap();
    assert!(fleet.contains("GARAGE_REPLICATION_FACTOR=2\n"), "{fleet}");

    // Installed alone: one copy, and it stays one when the lead's rerun
    // adds a backup to its members (Garage refuses to start on a laid-out
    // cluster whose factor changed), and the backup joining it keeps one
    // too (a node with more copies than its peer shuts the peer down).
    let lead = tmp.path().join("alone");
    render_with(&lead, "aurora", "lead", "10.0.0.1", alone, None);
    assert_eq!(garage_copies(&lead), "1");
    render_with(&lead, "aurora", "lead", "10.0.0.1", with_backup, None);
    assert_eq!(
        garage_copies(&lead),
        "1",
        "a rerun changed the lead's copies"
    );
    let star = tmp.path().join("star");
    let secrets = lead.join("secrets/fleet.env");
    render_with(
        &star,
        "star",
        "backup",
        "10.0.0.2",
        with_backup,
        Some(&secrets),
    );
    assert_eq!(
        garage_copies(&star),
        "1",
        "the backup disagrees with the lead"
    );

    // A fleet from before the factor was recorded: the lead keeps what its
    // Garage runs with and records it for the nodes that join later.
    let old = tmp.path().join("old");
    render_with(&old, "aurora", "lead", "10.0.0.1", alone, None);
    let env = old.join("secrets/fleet.env");
    let without: String = std::fs::read_to_string(&env)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("GARAGE_REPLICATION_FACTOR="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env, without).unwrap();
    render_with(&old, "aurora", "lead", "10.0.0.1", with_backup, None);
    assert_eq!(garage_copies(&old), "1");
    let fleet = std::fs::read_to_string(&env).unwrap();
    assert_eq!(
        fleet.matches("GARAGE_REPLICATION_FACTOR=1").count(),
        1,
        "{fleet}"
    );
    render_with(&old, "aurora", "lead", "10.0.0.1", with_backup, None);
    let again = std::fs::read_to_string(&env).unwrap();
    assert_eq!(again, fleet, "a second rerun changed fleet.env");
}

#[test]
fn node_init_keeps_secrets_private_and_is_idempotent() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aurora");
    render(&dir, "aurora", "lead", "10.0.0.1", None);
    let snapshot = |d: &Path| -> Vec<(PathBuf, Vec<u8>, u32)> {
        let mut out = vec![];
        let mut stack = vec![d.to_path_buf()];
        while let Some(x) = stack.pop() {
            for e in std::fs::read_dir(&x).unwrap() {
                let p = e.unwrap().path();
                let meta = std::fs::metadata(&p).unwrap();
                if meta.is_dir() {
                    stack.push(p);
                } else {
                    out.push((
                        p.clone(),
                        std::fs::read(&p).unwrap(),
                        meta.permissions().mode() & 0o777,
                    ));
                }
            }
        }
        out.sort();
        out
    };
    let first = snapshot(&dir);
    for (path, content, mode) in &first {
        let rel = path
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let secret = rel.starts_with("env/")
            || rel.starts_with("secrets/") && !rel.ends_with("public.key")
            || rel == "node.env"
            || rel == "config/garage.toml";
        if secret {
            assert_eq!(*mode, 0o600, "{rel} is {mode:o}");
        }
        if rel == "secrets/fleet.env" || rel == "secrets/node.env" {
            let text = String::from_utf8_lossy(content);
            for line in text.lines() {
                let (k, v) = line.split_once('=').unwrap();
                if k != "S3_ACCESS_KEY_ID" && k != "GARAGE_REPLICATION_FACTOR" {
                    assert!(v.len() >= 32, "{k} is only {} characters", v.len());
                }
            }
        }
    }
    render(&dir, "aurora", "lead", "10.0.0.1", None);
    assert_eq!(first, snapshot(&dir), "a rerun changed the state directory");

    // Bad answers are refused with the reason, before anything is written.
    for (args, want) in [
        (
            vec![
                "--name", "Bad_Name", "--role", "lead", "--vpn-ip", "10.0.0.9",
            ],
            "DNS label",
        ),
        (
            vec!["--name", "x", "--role", "boss", "--vpn-ip", "10.0.0.9"],
            "lead, backup or compute",
        ),
        (
            vec!["--name", "x", "--role", "compute", "--vpn-ip", "10.0.0.9"],
            "--fleet-env",
        ),
        (
            vec!["--name", "x", "--role", "lead", "--vpn-ip", "ten"],
            "IPv4",
        ),
    ] {
        let fresh = tmp.path().join("fresh");
        let out = Command::new(repo().join("compose/node-init.sh"))
            .arg("--state-dir")
            .arg(&fresh)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !fresh.join("secrets/fleet.env").exists(),
            "{args:?} wrote secrets"
        );
    }
}

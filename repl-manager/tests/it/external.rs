//! `supervision = "external"`: PostgreSQL is run by another process (the
//! postgres container's `postgres-supervisor.sh`), and repl-manager controls
//! it only through the hold file on the shared volume. Here the supervisor
//! script runs as a plain process as the `postgres` user, exactly as the
//! container would run it (Docker itself cannot run on this machine).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{supervisor, wait_row, Fleet, FleetSpec, Members, TOKEN};
use cluster_db::Role;
use hyper::StatusCode;
use repl_manager::config::Supervision;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

fn hold_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.parent().unwrap().join("aurora.hold")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_supervision_clones_and_switches_over_through_the_hold_file() {
    let mut spec = FleetSpec::new(&[("lead", Role::Lead), ("backup", Role::Backup)]);
    spec.tweak = |cfg| {
        cfg.postgres.supervision = Supervision::External;
        cfg.postgres.hold_file = hold_file(&cfg.postgres.data_dir);
    };
    let fleet = Fleet::start(spec).await;

    // One supervisor per node, as the postgres containers would run.
    let mut supervisors = Vec::new();
    for node in &fleet.nodes {
        let pg = &node.pg;
        let mut cmd = tokio::process::Command::new("sh");
        supervisor(&mut cmd, pg, &hold_file(pg.data_dir()));
        if let Some(owner) = pg.owner() {
            cmd.uid(owner.uid.as_raw()).gid(owner.gid.as_raw());
        }
        supervisors.push(cmd.spawn().unwrap());
    }

    fleet.wait_streaming("lead", &["backup"], T).await;
    let lc = fleet.connect("lead").await;
    lc.batch_execute("CREATE TABLE x (id int); INSERT INTO x VALUES (1)")
        .await
        .unwrap();
    let bc = fleet.connect("backup").await;
    assert!(wait_row(&bc, "SELECT 1 FROM x WHERE id = 1", T).await);
    drop(bc);
    drop(lc);

    fleet
        .wait_status("lead", T, "sync mode", |s| {
            s.synchronous_standby().is_some()
        })
        .await;
    // Sync can be reached just before the primary restarts once to apply a
    // restart-only setting (wal_log_hints); the switchover then correctly
    // refuses a standby that is reconnecting (409, not streaming). That
    // moment passes: ask again while that is the answer (seen in CI).
    let resp = fleet
        .post_until_settled(
            "lead",
            "/switchover",
            json!({ "to": "backup" }),
            TOKEN,
            &["not streaming"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    fleet.wait_streaming("backup", &["lead"], T).await;
    for node in &fleet.nodes {
        assert!(
            !hold_file(node.pg.data_dir()).exists(),
            "{}: the hold file outlived the operation",
            node.name
        );
    }
    let bc = fleet.connect("backup").await;
    bc.execute("INSERT INTO x VALUES (2)", &[]).await.unwrap();
    let lc = fleet.connect("lead").await;
    assert!(wait_row(&lc, "SELECT 1 FROM x WHERE id = 2", T).await);

    // The supervisors stop PostgreSQL when their container stops.
    for s in &supervisors {
        if let Some(pid) = s.id() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        }
    }
    for mut s in supervisors {
        let status = tokio::time::timeout(Duration::from_secs(30), s.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "supervisor exit: {status}");
    }
    fleet.shutdown().await;
}

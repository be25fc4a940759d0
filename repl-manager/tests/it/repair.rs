//! Replicas that repair themselves: a deleted data directory, a slot
//! invalidated while the replica was away, and a former primary whose
//! history diverged.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::{wait_row, Fleet, FleetSpec, Members, TOKEN};
use cluster_db::Role;
use hyper::StatusCode;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// Waits for `query` to return a row on `node`'s server, connecting again
/// after any error: a standby may restart once more after it rejoined (a
/// restart-only setting, a second repair), and a session opened before
/// that stays broken (a CI run waited 90 s on one, with the row long
/// there). On timeout, panics with `what`, the last error and every
/// node's replication state, so a failure in CI says which node was where.
async fn expect_row(fleet: &Fleet, node: &str, query: &str, what: &str) {
    let last = std::sync::Mutex::new(String::from("no attempt"));
    let found = testbed::postgres::wait_until(T, || async {
        match fleet.node(node).pg.connect("postgres").await {
            Ok(c) => match c.query(query, &[]).await {
                Ok(rows) => !rows.is_empty(),
                Err(e) => {
                    *last.lock().unwrap() = e.to_string();
                    false
                }
            },
            Err(e) => {
                *last.lock().unwrap() = e.to_string();
                false
            }
        }
    })
    .await;
    if !found {
        let last = last.lock().unwrap().clone();
        panic!(
            "{what}: not within {T:?} (last error: {last})\n{}",
            fleet.describe().await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_reclone_recover_lost_slots_and_rewind_diverged_primaries() {
    let mut spec = FleetSpec::new(&[
        ("lead", Role::Lead),
        ("backup", Role::Backup),
        ("c1", Role::Compute),
        ("c2", Role::Compute),
    ]);
    spec.tweak = |cfg| {
        // Small enough to invalidate a slot with a few seconds of writes.
        cfg.replication.max_slot_wal_keep_size_bytes = 64 << 20;
        cfg.replication.wal_keep_size_bytes = 0;
    };
    spec.pg_settings = vec![("max_wal_size".into(), "'64MB'".into())];
    let mut fleet = Fleet::start(spec).await;
    fleet
        .wait_streaming("lead", &["backup", "c1", "c2"], T)
        .await;
    let lc = fleet.connect("lead").await;
    lc.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'before')",
    )
    .await
    .unwrap();

    // 1. c1 loses its data directory: it clones itself again.
    fleet.node("c1").pg.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = fleet.data_dir("c1");
    for entry in std::fs::read_dir(&data).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    lc.execute("INSERT INTO t VALUES (2, 'while c1 was gone')", &[])
        .await
        .unwrap();
    fleet.wait_streaming("lead", &["c1"], T).await;
    expect_row(
        &fleet,
        "c1",
        "SELECT 1 FROM t WHERE id = 2",
        "c1 re-cloned has row 2",
    )
    .await;

    // 2. c2 is away (repl-manager and server stopped) while the primary
    //    writes more WAL than max_slot_wal_keep_size: its slot is
    //    invalidated. Back, it recovers by itself.
    fleet.stop_manager("c2").await;
    let mut c2pg_stop = fleet.node("c2").pg.command("pg_ctl");
    c2pg_stop
        .arg("-D")
        .arg(fleet.data_dir("c2"))
        .args(["-m", "fast", "-w", "stop"]);
    assert!(c2pg_stop.status().await.unwrap().success());
    lc.batch_execute("CREATE TABLE filler (b text)")
        .await
        .unwrap();
    let lost = testbed::postgres::wait_until(T, || async {
        lc.batch_execute(
            "INSERT INTO filler SELECT repeat(md5(g::text), 64) FROM generate_series(1, 20000) g;
             CHECKPOINT; SELECT pg_switch_wal();",
        )
        .await
        .unwrap();
        // Missing counts too: the lead's repl-manager drops a lost slot
        // before it recreates it.
        let row = lc
            .query_opt(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'replica_c2'",
                &[],
            )
            .await
            .unwrap();
        row.is_none_or(|r| r.get::<_, Option<String>>(0).as_deref() == Some("lost"))
    })
    .await;
    // The lead's repl-manager may already have recreated it; either way
    // the slot that was there is gone.
    let events = lc
        .query_one(
            "SELECT count(*) FROM aurora.events WHERE kind = 'slot_recreated'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(lost || events > 0, "slot replica_c2 was never invalidated");
    lc.execute("INSERT INTO t VALUES (3, 'while c2 was away')", &[])
        .await
        .unwrap();
    fleet.start_node("c2").await;
    fleet.wait_streaming("lead", &["c2"], T).await;
    expect_row(
        &fleet,
        "c2",
        "SELECT 1 FROM t WHERE id = 3",
        "c2 back has row 3",
    )
    .await;
    // (The event follows the slot, which c2 may already stream through.)
    let recreated = wait_row(
        &lc,
        "SELECT 1 FROM aurora.events WHERE kind = 'slot_recreated'",
        T,
    )
    .await;
    assert!(recreated, "the lost slot was not recreated");
    let c2s = fleet.status("c2").await.unwrap();
    assert!(
        !c2s.aside_dirs.is_empty(),
        "a re-clone moves the old data directory aside: {c2s:?}"
    );

    // 3. Divergence: the lead's repl-manager is down; the operator forces
    //    the backup to promote while the lead's server still runs and
    //    takes a write the backup never sees.
    fleet.stop_manager("lead").await;
    // A checkpoint just before the fork keeps the WAL pg_rewind reads (back
    // to the last common checkpoint) on the lead; the heavy writes above
    // recycled everything older.
    lc.batch_execute("CHECKPOINT").await.unwrap();
    let resp = fleet
        .post("backup", "/promote", json!({}), Some(TOKEN))
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text());
    assert!(resp.text().contains("force=true"), "{}", resp.text());
    let resp = fleet
        .post("backup", "/promote", json!({ "force": true }), Some(TOKEN))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let bc = fleet.connect("backup").await;
    bc.execute("INSERT INTO t VALUES (4, 'on the new primary')", &[])
        .await
        .unwrap();
    // Committed locally on the old lead only: its synchronous standby is
    // gone, so only a local commit returns.
    lc.batch_execute(
        "SET synchronous_commit = local; INSERT INTO t VALUES (99, 'diverged'); SELECT pg_switch_wal();",
    )
    .await
    .unwrap();
    drop(lc);
    // The lead's repl-manager comes back, learns epoch 2 from its peers,
    // and rewinds onto the new primary's timeline.
    fleet.start_node("lead").await;
    let s = fleet
        .wait_status("lead", T, "rejoined as a standby", |s| {
            s.state == "replica" && s.primary == "backup" && s.streaming()
        })
        .await;
    assert_eq!(s.epoch, 2);
    expect_row(
        &fleet,
        "lead",
        "SELECT 1 FROM t WHERE id = 4",
        "the rejoined lead has row 4",
    )
    .await;
    let lc = fleet.connect("lead").await;
    let diverged = lc
        .query("SELECT 1 FROM t WHERE id = 99", &[])
        .await
        .unwrap();
    assert!(
        diverged.is_empty(),
        "the diverged write survived the rewind"
    );
    // Compute replicas that had followed the old lead's history repair too.
    fleet
        .wait_streaming("backup", &["lead", "c1", "c2"], T)
        .await;
    for n in ["c1", "c2"] {
        expect_row(
            &fleet,
            n,
            "SELECT 1 FROM t WHERE id = 4",
            &format!("{n} has row 4"),
        )
        .await;
        let c = fleet.connect(n).await;
        assert!(c
            .query("SELECT 1 FROM t WHERE id = 99", &[])
            .await
            .unwrap()
            .is_empty());
    }
    // Either path rewinds: demoted while running, or (when its failover
    // round fenced it first) repaired as a stopped standby. The event is
    // written after the server is back, so the lead may stream before it
    // lands: wait for it, then check there was exactly one.
    let rewinds = "SELECT 1 FROM aurora.events
                    WHERE node = 'lead' AND ((kind = 'demoted' AND details->>'outcome' = 'rewound')
                                          OR (kind = 'rewound' AND details->>'ok' = 'true'))";
    let recorded = wait_row(&bc, rewinds, T).await;
    let events: Vec<String> = bc
        .query(
            "SELECT node || ': ' || kind || ' ' || details::text FROM aurora.events
              WHERE kind NOT IN ('sync_degraded', 'sync_restored') ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        recorded,
        "the lead's rewind was not recorded: {events:#?}\n{}",
        fleet.describe().await
    );
    let n = bc.query(rewinds, &[]).await.unwrap().len();
    assert_eq!(n, 1, "one rewind expected: {events:#?}");
    fleet.shutdown().await;
}

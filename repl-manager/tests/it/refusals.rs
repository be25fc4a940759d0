//! Every operation that must not happen is refused with a reason, and a
//! node whose PostgreSQL is down says so.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::{Fleet, FleetSpec, Members, TOKEN};
use cluster_db::Role;
use hyper::StatusCode;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

fn assert_refused(resp: &sidecar_kit::http_client::HttpResponse, status: StatusCode, needle: &str) {
    let text = resp.text();
    assert_eq!(resp.status, status, "{text}");
    assert!(text.contains(needle), "expected {needle:?} in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_have_reasons_and_a_dead_postgres_is_reported() {
    let mut spec = FleetSpec::new(&[
        ("lead", Role::Lead),
        ("backup", Role::Backup),
        ("c1", Role::Compute),
    ]);
    spec.ghosts = vec!["ghost"];
    spec.tweak = |cfg| cfg.replication.max_lag_on_failover_bytes = 64 << 10;
    let fleet = Fleet::start(spec).await;
    fleet.wait_streaming("lead", &["backup", "c1"], T).await;

    // Tokens: missing and wrong are 401, before anything else happens.
    let r = fleet.post("lead", "/switchover", json!({}), None).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Authorization");
    let r = fleet
        .post(
            "lead",
            "/switchover",
            json!({}),
            Some("not-the-token-at-all"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Malformed requests.
    let r = fleet
        .post(
            "lead",
            "/switchover",
            json!({ "too": "backup" }),
            Some(TOKEN),
        )
        .await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "too");
    let r = fleet.post("lead", "/demote", json!({}), Some(TOKEN)).await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "to");
    let r = fleet.get("lead", "/switchover").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // The switchover-internal promotion (with an epoch) is refused unless
    // it is one: it names the old primary, the next epoch, the old
    // primary's checkpoint, and that primary has stopped. (#15's finding 3:
    // `{"epoch": 99}` alone promoted an asynchronous compute node.)
    let lsn = fleet
        .status("lead")
        .await
        .unwrap()
        .postgres
        .unwrap()
        .current_lsn
        .unwrap()
        .to_string();
    for (body, needle) in [
        (json!({ "epoch": 99 }), "names the old primary"),
        (
            json!({ "epoch": 99, "from": "lead", "checkpoint_lsn": "0/0" }),
            "not the next one",
        ),
        (json!({ "epoch": 2, "from": "lead" }), "checkpoint"),
        (
            json!({ "epoch": 2, "from": "lead", "checkpoint_lsn": "0/0", "force": true }),
            "still runs as a primary",
        ),
        (
            json!({ "epoch": 2, "from": "lead", "checkpoint_lsn": lsn }),
            "still runs as a primary",
        ),
        (
            json!({ "epoch": 2, "from": "c1", "checkpoint_lsn": "0/0" }),
            "cannot promote itself",
        ),
    ] {
        let r = fleet
            .post("c1", "/promote", body.clone(), Some(TOKEN))
            .await;
        assert_refused(&r, StatusCode::CONFLICT, needle);
    }
    // An old primary that answers nothing (its host gone without a RST, or
    // cut off) is not a stopped one: a switchover's primary stopped, and
    // says so by refusing connections. Unknown is refused.
    {
        let _gone = testbed::Blackhole::new(fleet.node("lead").pg.port()).unwrap();
        let body = json!({ "epoch": 2, "from": "lead", "checkpoint_lsn": "0/0", "force": true });
        let r = fleet.post("c1", "/promote", body, Some(TOKEN)).await;
        assert_refused(
            &r,
            StatusCode::CONFLICT,
            "cannot tell whether the old primary lead stopped",
        );
    }
    let c1 = fleet.status("c1").await.unwrap();
    assert_eq!((c1.state.as_str(), c1.epoch), ("replica", 1), "{c1:?}");
    let lead = fleet.status("lead").await.unwrap();
    assert_eq!(
        (lead.state.as_str(), lead.epoch),
        ("primary", 1),
        "{lead:?}"
    );

    // Promote the primary: already primary. Also at its own epoch, as a
    // switchover's target that finished early is answered: the fleet's
    // history shows no handover to it, so this one is refused.
    let r = fleet.post("lead", "/promote", json!({}), Some(TOKEN)).await;
    assert_refused(&r, StatusCode::CONFLICT, "already the primary");
    let body = json!({ "epoch": 1, "from": "backup", "checkpoint_lsn": "0/0" });
    let r = fleet.post("lead", "/promote", body, Some(TOKEN)).await;
    assert_refused(&r, StatusCode::CONFLICT, "already the primary");
    // Switchover sent to a standby: not the primary.
    let r = fleet
        .post("backup", "/switchover", json!({}), Some(TOKEN))
        .await;
    assert_refused(&r, StatusCode::CONFLICT, "not the primary");
    // Demote with no other primary.
    let r = fleet
        .post("lead", "/demote", json!({ "to": "backup" }), Some(TOKEN))
        .await;
    assert_refused(&r, StatusCode::CONFLICT, "no primary");
    // Demote a standby.
    let r = fleet
        .post("backup", "/demote", json!({ "to": "lead" }), Some(TOKEN))
        .await;
    assert_refused(&r, StatusCode::CONFLICT, "not a primary");
    // Unknown and unreachable targets.
    let r = fleet
        .post(
            "lead",
            "/switchover",
            json!({ "to": "nobody" }),
            Some(TOKEN),
        )
        .await;
    assert_refused(&r, StatusCode::CONFLICT, "not a member");
    let r = fleet
        .post("lead", "/switchover", json!({ "to": "ghost" }), Some(TOKEN))
        .await;
    assert_refused(&r, StatusCode::CONFLICT, "ghost does not answer");

    // A lagging replica is not promoted unless forced.
    let c1 = fleet.connect("c1").await;
    c1.execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    let lc = fleet.connect("lead").await;
    lc.batch_execute(
        "CREATE TABLE pad AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 2000)",
    )
    .await
    .unwrap();
    fleet
        .wait_status("c1", T, "lag over the limit", |s| {
            s.lag_bytes.unwrap_or(0) > 64 << 10
        })
        .await;
    let r = fleet
        .post("lead", "/switchover", json!({ "to": "c1" }), Some(TOKEN))
        .await;
    assert_refused(&r, StatusCode::CONFLICT, "bytes behind");
    // Asked on the replica itself, the request goes to the primary, which
    // refuses for the same reason.
    let r = fleet.post("c1", "/promote", json!({}), Some(TOKEN)).await;
    assert_refused(&r, StatusCode::CONFLICT, "bytes behind");
    c1.execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();

    // #15: a replica that does not stream serves no reads. Its primary
    // refuses its replication connection: /replica is 503 and says why
    // (before, it answered 200 from whatever the replica last replayed, a
    // rejoining former primary's diverged data included), and 200 again
    // once it streams.
    lc.batch_execute(
        "ALTER ROLE replicator NOLOGIN;
         SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'c1'",
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        let r = fleet.get("c1", "/replica").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.text().contains("not streaming"), "{}", r.text());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "c1's /replica answered {} while it could not stream",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lc.batch_execute("ALTER ROLE replicator LOGIN")
        .await
        .unwrap();
    fleet.wait_streaming("lead", &["c1"], T).await;
    fleet
        .wait_status("c1", T, "streaming again", |s| s.streaming())
        .await;
    assert_eq!(fleet.get("c1", "/replica").await.status, StatusCode::OK);

    // Nothing changed through all of this.
    let lead = fleet.status("lead").await.unwrap();
    assert_eq!((lead.state.as_str(), lead.epoch), ("primary", 1));

    // The fleet view names the unreachable peer.
    let r = fleet.get("lead", "/cluster").await;
    assert_eq!(r.status, StatusCode::OK);
    let view: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let ghost = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == "ghost")
        .unwrap();
    assert_eq!(ghost["state"], "unreachable");
    assert!(ghost["error"]
        .as_str()
        .unwrap()
        .contains("http://127.0.0.1:"));
    assert_eq!(view["members"].as_array().unwrap().len(), 4);

    // c1's PostgreSQL dies and cannot start again (a broken setting):
    // /health is 503 and says why, the Patroni checks fail, nothing else.
    let auto = fleet.data_dir("c1").join("postgresql.auto.conf");
    std::fs::write(&auto, "shared_buffers = 'lots'\n").unwrap();
    drop(c1);
    fleet.node("c1").pg.kill().unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = fleet.get("c1", "/health").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.text().contains("PostgreSQL is stopped"), "{}", r.text());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "c1 /health never went 503"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = fleet.get("c1", "/replica").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = fleet.get("c1", "/readiness").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // The failed start, with PostgreSQL's own words, is in /status.
    fleet
        .wait_status("c1", T, "the start failure is reported", |s| {
            s.state == "stopped"
                && s.last_error.as_deref().is_some_and(|e| {
                    e.contains("pg_ctl start failed") && e.contains("shared_buffers")
                })
        })
        .await;
    // Fixed by the operator, it comes back by itself.
    std::fs::write(&auto, "").unwrap();
    fleet.wait_streaming("lead", &["c1"], T).await;
    fleet.shutdown().await;
}

fn initdb_on(cfg: &mut repl_manager::Config) {
    cfg.postgres.initdb = true;
    cfg.postgres.superuser_password = Some(sidecar_kit::Secret::new("superuser-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_lead_initialises_the_first_cluster_and_the_backup_clones_it() {
    let mut spec = FleetSpec::new(&[("lead", Role::Lead), ("backup", Role::Backup)]);
    spec.lead_empty = true;
    spec.tweak = initdb_on;
    let fleet = Fleet::start(spec).await;
    fleet.wait_streaming("lead", &["backup"], T).await;

    // The superuser needs its password over TCP; checksums are on (pg_rewind).
    let pg = &fleet.node("lead").pg;
    let without = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port()
        ),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(
        without.is_err(),
        "connected without the superuser's password"
    );
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres password=superuser-secret",
            pg.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let checksums: String = client
        .query_one("SHOW data_checksums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(checksums, "on");
    fleet.shutdown().await;
}

/// A lead whose state file records a promotion had a cluster once: an empty
/// data directory now means a lost volume, to be cloned or restored, never
/// a new empty cluster that would later be taken for the fleet's data.
fn initdb_on_with_a_past(cfg: &mut repl_manager::Config) {
    initdb_on(cfg);
    if cfg.node.name == "lead" {
        std::fs::write(
            &cfg.node.state_file,
            r#"{"epoch": 2, "primary": "lead", "changed_at": 0.0}"#,
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lead_that_knew_an_epoch_never_initialises_an_empty_data_directory() {
    let mut spec = FleetSpec::new(&[("lead", Role::Lead), ("backup", Role::Backup)]);
    spec.lead_empty = true;
    spec.tweak = initdb_on_with_a_past;
    let fleet = Fleet::start(spec).await;
    let status = fleet
        .wait_status(
            "lead",
            Duration::from_secs(30),
            "the empty data directory reported",
            |s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("holds no cluster"))
            },
        )
        .await;
    assert_eq!(status.epoch, 2, "{status:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !fleet.data_dir("lead").join("PG_VERSION").exists(),
        "an empty cluster was initialised on a lead that had one"
    );
    fleet.shutdown().await;
}

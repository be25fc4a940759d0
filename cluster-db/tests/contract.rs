//! The cluster contract against a real PostgreSQL primary and standby.

#![allow(clippy::unwrap_used)] // test helpers may panic: a panic is a test failure

use std::net::IpAddr;
use std::time::Duration;

use cluster_db::queries::*;
use cluster_db::{migrate, DbError, HealthStatus, NodeName, NodeRegistration, Role};
use testbed::{PgCluster, PgOptions};

async fn primary() -> (PgCluster, tokio_postgres::Client) {
    let pg = PgCluster::start_new(PgOptions::named("contract"))
        .await
        .unwrap();
    let mut client = pg.connect("postgres").await.unwrap();
    migrate(&mut client).await.unwrap();
    (pg, client)
}

fn reg(name: &str, role: Role, ip: &str) -> NodeRegistration {
    NodeRegistration {
        name: NodeName::parse(name).unwrap(),
        role,
        vpn_ip: ip.parse().unwrap(),
        wg_public_key: Some("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into()),
        wg_endpoint: Some("203.0.113.7:51820".into()),
        labels: Default::default(),
        gpus: vec![],
        versions: Default::default(),
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_checked() {
    let pg = PgCluster::start_new(PgOptions::named("migrate"))
        .await
        .unwrap();
    let mut c = pg.connect("postgres").await.unwrap();
    let first = migrate(&mut c).await.unwrap();
    let all: Vec<i32> = cluster_db::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(first.applied, all);
    let again = migrate(&mut c).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(
        cluster_db::migrate::schema_version(&c).await.unwrap(),
        *all.last().unwrap()
    );

    // An edited migration is detected, not silently re-run.
    c.execute(
        "UPDATE aurora.schema_migrations SET checksum = 'edited' WHERE version = 1",
        &[],
    )
    .await
    .unwrap();
    assert!(matches!(
        migrate(&mut c).await,
        Err(DbError::MigrationChanged { version: 1, .. })
    ));
    // A schema from a newer build is left alone.
    c.execute(
        "UPDATE aurora.schema_migrations SET checksum = $1 WHERE version = 1",
        &[&cluster_db::migrate::checksum(
            cluster_db::MIGRATIONS[0].sql,
        )],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO aurora.schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')",
        &[],
    )
    .await
    .unwrap();
    assert!(matches!(
        migrate(&mut c).await,
        Err(DbError::SchemaTooNew { found: 99, .. })
    ));
}

#[tokio::test]
async fn concurrent_migrators_do_not_collide() {
    let pg = PgCluster::start_new(PgOptions::named("race"))
        .await
        .unwrap();
    let mut a = pg.connect("postgres").await.unwrap();
    let mut b = pg.connect("postgres").await.unwrap();
    let (ra, rb) = tokio::join!(migrate(&mut a), migrate(&mut b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // One of them applied everything, the other found nothing to do.
    assert_ne!(
        ra.applied.is_empty(),
        rb.applied.is_empty(),
        "{ra:?} {rb:?}"
    );
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        cluster_db::MIGRATIONS.len()
    );
}

#[tokio::test]
async fn migrations_refuse_a_standby() {
    let (primary, _c) = primary().await;
    let standby = PgCluster::standby_of(&primary, PgOptions::named("standby"))
        .await
        .unwrap();
    let mut sc = standby.connect("postgres").await.unwrap();
    assert!(matches!(migrate(&mut sc).await, Err(DbError::NotPrimary)));
    // Reads work on the standby: the schema arrived by replication.
    assert_eq!(cluster_state(&sc).await.unwrap().epoch, 0);
}

#[tokio::test]
async fn registry_rules() {
    let (_pg, c) = primary().await;
    let v0 = change_version(&c).await.unwrap();
    let star = upsert_node(&c, &reg("star", Role::Backup, "10.0.0.2"))
        .await
        .unwrap();
    assert_eq!(star.role, Role::Backup);
    let v1 = change_version(&c).await.unwrap();
    assert!(v1 > v0, "registration moves the change counter");

    // Re-registering updates in place.
    let mut again = reg("star", Role::Backup, "10.0.0.12");
    again.labels.insert("zone".into(), "eu".into());
    let star = upsert_node(&c, &again).await.unwrap();
    assert_eq!(star.vpn_ip, "10.0.0.12".parse::<IpAddr>().unwrap());

    // Another node may not take that address.
    let err = upsert_node(&c, &reg("iceland", Role::Compute, "10.0.0.12"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbError::Conflict(ref m) if m.contains("star")),
        "{err}"
    );

    // Bad keys and endpoints are refused before they reach the database.
    let mut bad = reg("iceland", Role::Compute, "10.0.0.4");
    bad.wg_endpoint = Some("no-port".into());
    assert!(upsert_node(&c, &bad).await.is_err());

    // A row written around the typed API is reported, not served.
    c.execute(
        "ALTER TABLE aurora.nodes DROP CONSTRAINT nodes_name_check",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO aurora.nodes (name, role, vpn_ip) VALUES ('Evil.Name', 'compute', '10.0.0.66')",
        &[],
    )
    .await
    .unwrap();
    let listing = list_nodes(&c).await.unwrap();
    assert_eq!(listing.nodes.len(), 1);
    assert_eq!(listing.rejected.len(), 1);
    assert_eq!(listing.rejected[0].name, "Evil.Name");

    assert!(remove_node(&c, &NodeName::parse("star").unwrap())
        .await
        .unwrap());
}

#[tokio::test]
async fn health_reports() {
    let (_pg, c) = primary().await;
    let name = NodeName::parse("vengeance").unwrap();
    let err = upsert_health(&c, &name, HealthStatus::Passing, &serde_json::json!([]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not registered"));
    upsert_node(&c, &reg("vengeance", Role::Compute, "10.0.0.3"))
        .await
        .unwrap();

    upsert_health(
        &c,
        &name,
        HealthStatus::Passing,
        &serde_json::json!([{"name": "disk"}]),
    )
    .await
    .unwrap();
    let v1 = change_version(&c).await.unwrap();
    // Same status again: a routine report does not move the counter.
    upsert_health(&c, &name, HealthStatus::Passing, &serde_json::json!([]))
        .await
        .unwrap();
    assert_eq!(change_version(&c).await.unwrap(), v1);
    upsert_health(&c, &name, HealthStatus::Critical, &serde_json::json!([]))
        .await
        .unwrap();
    assert!(change_version(&c).await.unwrap() > v1);

    let rows = list_health(&c).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, HealthStatus::Critical);
    assert!(rows[0].age_secs < 5.0);
    assert_eq!(rows[0].down_since, None);

    // Going silent: a fresh report is not marked, a stale one is, once,
    // and each edge moves the counter DNS follows.
    assert!(mark_down(&c, 60.0).await.unwrap().is_empty());
    assert!(mark_down(&c, 0.0).await.is_err());
    assert!(mark_down(&c, f64::NAN).await.is_err());
    c.execute(
        "UPDATE aurora.health SET reported_at = now() - interval '5 minutes'",
        &[],
    )
    .await
    .unwrap();
    let v2 = change_version(&c).await.unwrap();
    assert_eq!(mark_down(&c, 60.0).await.unwrap(), ["vengeance"]);
    let v3 = change_version(&c).await.unwrap();
    assert!(v3 > v2);
    assert!(mark_down(&c, 60.0).await.unwrap().is_empty());
    assert_eq!(change_version(&c).await.unwrap(), v3);
    let rows = list_health(&c).await.unwrap();
    assert!(rows[0].down_since.is_some());
    // Its next report clears the mark.
    upsert_health(&c, &name, HealthStatus::Critical, &serde_json::json!([]))
        .await
        .unwrap();
    assert!(change_version(&c).await.unwrap() > v3);
    assert_eq!(list_health(&c).await.unwrap()[0].down_since, None);
}

#[tokio::test]
async fn the_epoch_only_moves_forward() {
    let (_pg, c) = primary().await;
    let aurora = NodeName::parse("aurora").unwrap();
    let star = NodeName::parse("star").unwrap();
    let s = record_primary(&c, 1, &aurora).await.unwrap();
    assert_eq!((s.epoch, s.primary.clone()), (1, Some(aurora.clone())));
    // Re-asserting the same state is a no-op, not an error.
    let again = record_primary(&c, 1, &aurora).await.unwrap();
    assert_eq!(again.changed_at, s.changed_at);
    record_primary(&c, 2, &star).await.unwrap();
    assert!(matches!(
        record_primary(&c, 1, &aurora).await,
        Err(DbError::StaleEpoch {
            offered: 1,
            current: 2
        })
    ));
    // Even raw SQL cannot move it backwards.
    assert!(c
        .execute("UPDATE aurora.cluster SET epoch = 0", &[])
        .await
        .is_err());
    assert_eq!(cluster_state(&c).await.unwrap().primary, Some(star));
}

#[tokio::test]
async fn events_are_append_only() {
    let (_pg, c) = primary().await;
    let id = append_event(
        &c,
        "star",
        "promotion",
        &serde_json::json!({"took_ms": 4100}),
    )
    .await
    .unwrap();
    append_event(&c, "aurora", "rejoin", &serde_json::json!({}))
        .await
        .unwrap();
    c.execute("DELETE FROM aurora.events", &[]).await.unwrap();
    c.execute("UPDATE aurora.events SET kind = 'x'", &[])
        .await
        .unwrap();
    let events = recent_events(&c, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].id, id);
    assert_eq!(events[1].kind, "promotion");
    assert!(append_event(&c, "x", "Not A Kind", &serde_json::json!({}))
        .await
        .is_err());
}

#[tokio::test]
async fn multi_host_writes_find_the_primary() {
    let (pg, _c) = primary().await;
    // A dead address first, the primary second: the write target skips it.
    let dead = testbed::free_port().unwrap();
    let target = cluster_db::connect::write_target(
        &[("127.0.0.1".into(), dead), ("127.0.0.1".into(), pg.port())],
        "postgres",
        None,
        "postgres",
        Duration::from_secs(2),
    );
    assert!(!target.label.contains("password"));
    let c = cluster_db::connect(&target, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(cluster_db::connect::is_primary(&c).await.unwrap());

    let nowhere = cluster_db::connect::write_target(
        &[("127.0.0.1".into(), dead)],
        "postgres",
        Some("pw-never-shown"),
        "postgres",
        Duration::from_secs(1),
    );
    let err = cluster_db::connect(&nowhere, Duration::from_secs(3))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&dead.to_string()), "{msg}");
    assert!(!msg.contains("pw-never-shown"));
    assert!(err.is_connection_lost());
}

//! Typed queries over schema `aurora`. Each takes any client (a plain
//! connection or a transaction). Writers must hold a connection to the
//! primary; readers may use a standby.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use crate::error::DbError;
use crate::model::{
    ClusterState, Event, HealthRow, HealthStatus, Node, NodeListing, NodeName, NodeRegistration,
    PublishedReplication, RejectedRow, ReplicationState, Role,
};

/// Registers a node or updates its registration. A VPN IP held by another
/// node is refused with [`DbError::Conflict`] naming that node.
pub async fn upsert_node<C: GenericClient>(
    client: &C,
    reg: &NodeRegistration,
) -> Result<Node, DbError> {
    reg.validate()?;
    if let Some(holder) = ip_holder(client, reg.vpn_ip).await? {
        if holder != reg.name.as_str() {
            return Err(ip_conflict(reg, &holder));
        }
    }
    let result = client
        .query_one(
            "INSERT INTO aurora.nodes (name, role, vpn_ip, wg_public_key, wg_endpoint, labels, gpus, versions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET
                 role = EXCLUDED.role, vpn_ip = EXCLUDED.vpn_ip,
                 wg_public_key = EXCLUDED.wg_public_key, wg_endpoint = EXCLUDED.wg_endpoint,
                 labels = EXCLUDED.labels, gpus = EXCLUDED.gpus, versions = EXCLUDED.versions,
                 updated_at = now()
             RETURNING name, role, vpn_ip, wg_public_key, wg_endpoint, labels, gpus, versions,
                       registered_at, updated_at",
            &[
                &reg.name.as_str(),
                &reg.role.as_str(),
                &reg.vpn_ip,
                &reg.wg_public_key,
                &reg.wg_endpoint,
                &serde_json::Value::Object(reg.labels.clone()),
                &serde_json::Value::Array(reg.gpus.clone()),
                &serde_json::Value::Object(reg.versions.clone()),
            ],
        )
        .await;
    match result {
        Ok(row) => node_from_row(&row).map_err(|r| DbError::invalid("registry row", r.reason)),
        // Lost a race with another node registering the same address.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            let holder = ip_holder(client, reg.vpn_ip)
                .await?
                .unwrap_or_else(|| "another node".to_string());
            Err(ip_conflict(reg, &holder))
        }
        Err(e) => Err(e.into()),
    }
}

fn ip_conflict(reg: &NodeRegistration, holder: &str) -> DbError {
    DbError::Conflict(format!(
        "VPN IP {} is already registered to node {holder}; pick another address for {}",
        reg.vpn_ip, reg.name
    ))
}

async fn ip_holder<C: GenericClient>(client: &C, ip: IpAddr) -> Result<Option<String>, DbError> {
    let row = client
        .query_opt("SELECT name FROM aurora.nodes WHERE vpn_ip = $1", &[&ip])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Removes a node (and, by cascade, its health report).
pub async fn remove_node<C: GenericClient>(client: &C, name: &NodeName) -> Result<bool, DbError> {
    let n = client
        .execute(
            "DELETE FROM aurora.nodes WHERE name = $1",
            &[&name.as_str()],
        )
        .await?;
    Ok(n > 0)
}

/// Removes a node from the registry and logs who did it, in one statement
/// (the row and the event go together or not at all). `false` when there
/// was no such node.
pub async fn retire_node<C: GenericClient>(
    client: &C,
    name: &NodeName,
    by: &str,
    details: &serde_json::Value,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "WITH gone AS (DELETE FROM aurora.nodes WHERE name = $1 RETURNING name)
             INSERT INTO aurora.events (node, kind, details)
             SELECT $2, 'node_removed', $3 || jsonb_build_object('removed', gone.name) FROM gone
             RETURNING id",
            &[&name.as_str(), &by, details],
        )
        .await?;
    Ok(row.is_some())
}

/// The whole registry. Rows that fail validation (possible when written by
/// hand or by a buggy older version) come back in `rejected`.
pub async fn list_nodes<C: GenericClient>(client: &C) -> Result<NodeListing, DbError> {
    let rows = client
        .query(
            "SELECT name, role, vpn_ip, wg_public_key, wg_endpoint, labels, gpus, versions,
                    registered_at, updated_at
             FROM aurora.nodes ORDER BY name",
            &[],
        )
        .await?;
    let mut listing = NodeListing::default();
    for row in &rows {
        match node_from_row(row) {
            Ok(node) => listing.nodes.push(node),
            Err(rejected) => listing.rejected.push(rejected),
        }
    }
    Ok(listing)
}

fn node_from_row(row: &tokio_postgres::Row) -> Result<Node, RejectedRow> {
    let raw_name: String = row.try_get(0).unwrap_or_default();
    let reject = |reason: String| RejectedRow {
        name: raw_name.clone(),
        reason,
    };
    let name = NodeName::parse(&raw_name).map_err(|e| reject(e.to_string()))?;
    let role: String = row.try_get(1).map_err(|e| reject(e.to_string()))?;
    let role: Role = role.parse().map_err(|e: DbError| reject(e.to_string()))?;
    let vpn_ip: IpAddr = row.try_get(2).map_err(|e| reject(format!("vpn_ip: {e}")))?;
    let get_json = |i: usize, what: &str| -> Result<serde_json::Value, RejectedRow> {
        row.try_get(i).map_err(|e| reject(format!("{what}: {e}")))
    };
    let object = |v: serde_json::Value, what: &str| match v {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(reject(format!("{what} is not a JSON object"))),
    };
    let reg = NodeRegistration {
        name,
        role,
        vpn_ip,
        wg_public_key: row.try_get(3).map_err(|e| reject(e.to_string()))?,
        wg_endpoint: row.try_get(4).map_err(|e| reject(e.to_string()))?,
        labels: object(get_json(5, "labels")?, "labels")?,
        gpus: match get_json(6, "gpus")? {
            serde_json::Value::Array(a) => a,
            _ => return Err(reject("gpus is not a JSON array".into())),
        },
        versions: object(get_json(7, "versions")?, "versions")?,
    };
    reg.validate().map_err(|e| reject(e.to_string()))?;
    Ok(Node {
        name: reg.name,
        role: reg.role,
        vpn_ip: reg.vpn_ip,
        wg_public_key: reg.wg_public_key,
        wg_endpoint: reg.wg_endpoint,
        labels: reg.labels,
        gpus: reg.gpus,
        versions: reg.versions,
        registered_at: row.try_get(8).map_err(|e| reject(e.to_string()))?,
        updated_at: row.try_get(9).map_err(|e| reject(e.to_string()))?,
    })
}

/// Stores a node's latest health report (the node must be registered).
pub async fn upsert_health<C: GenericClient>(
    client: &C,
    node: &NodeName,
    status: HealthStatus,
    checks: &serde_json::Value,
) -> Result<(), DbError> {
    if !checks.is_array() {
        return Err(DbError::invalid("health checks", "must be a JSON array"));
    }
    let result = client
        .execute(
            "INSERT INTO aurora.health (node, status, checks, reported_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (node) DO UPDATE SET
                 status = EXCLUDED.status, checks = EXCLUDED.checks, reported_at = now(),
                 down_since = NULL",
            &[&node.as_str(), &status.as_str(), checks],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Err(DbError::Conflict(
            format!("node {node} is not registered; register it before reporting health"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Marks down every node whose latest report is older than `after_secs`
/// (by the primary's clock) and returns the nodes newly marked. Idempotent:
/// a node already marked keeps its `down_since`, so running this from every
/// monitor each interval costs a no-op UPDATE almost always. The node's own
/// next report clears the mark ([`upsert_health`]).
pub async fn mark_down<C: GenericClient>(
    client: &C,
    after_secs: f64,
) -> Result<Vec<String>, DbError> {
    if !after_secs.is_finite() || after_secs <= 0.0 {
        return Err(DbError::invalid(
            "down threshold",
            format!("{after_secs} s: must be a positive number of seconds"),
        ));
    }
    let rows = client
        .query(
            "UPDATE aurora.health SET down_since = now()
              WHERE down_since IS NULL
                AND reported_at < now() - make_interval(secs => $1)
             RETURNING node",
            &[&after_secs],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every node's latest report, with its age by the answering server's clock.
pub async fn list_health<C: GenericClient>(client: &C) -> Result<Vec<HealthRow>, DbError> {
    let rows = client
        .query(
            "SELECT node, status, checks, reported_at,
                    extract(epoch FROM (now() - reported_at))::float8, down_since
             FROM aurora.health ORDER BY node",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.get(0);
        let status: String = row.get(1);
        // Constraints make these parses infallible unless the schema was
        // tampered with; skip such rows rather than fail the fleet view.
        let (Ok(node), Ok(status)) = (NodeName::parse(&name), status.parse::<HealthStatus>())
        else {
            tracing::warn!(node = %name, "skipping invalid health row");
            continue;
        };
        out.push(HealthRow {
            node,
            status,
            checks: row.get(2),
            reported_at: row.get(3),
            age_secs: row.get::<_, f64>(4).max(0.0),
            down_since: row.get(5),
        });
    }
    Ok(out)
}

/// The cluster's epoch and primary.
pub async fn cluster_state<C: GenericClient>(client: &C) -> Result<ClusterState, DbError> {
    let row = client
        .query_one(
            "SELECT epoch, primary_node, changed_at FROM aurora.cluster",
            &[],
        )
        .await?;
    let primary: Option<String> = row.get(1);
    Ok(ClusterState {
        epoch: row.get(0),
        primary: primary.map(|p| NodeName::parse(&p)).transpose()?,
        changed_at: row.get(2),
    })
}

/// Records `primary` as the primary at `epoch`. The epoch may stay the same
/// (re-asserting after a restart) or grow, never shrink: an older epoch is
/// refused with [`DbError::StaleEpoch`].
pub async fn record_primary<C: GenericClient>(
    client: &C,
    epoch: i64,
    primary: &NodeName,
) -> Result<ClusterState, DbError> {
    let row = client
        .query_opt(
            "UPDATE aurora.cluster SET epoch = $1, primary_node = $2, changed_at = now()
             WHERE epoch <= $1
               AND (epoch < $1 OR primary_node IS DISTINCT FROM $2)
             RETURNING epoch, primary_node, changed_at",
            &[&epoch, &primary.as_str()],
        )
        .await?;
    match row {
        Some(row) => {
            let p: Option<String> = row.get(1);
            Ok(ClusterState {
                epoch: row.get(0),
                primary: p.map(|p| NodeName::parse(&p)).transpose()?,
                changed_at: row.get(2),
            })
        }
        None => {
            let current = cluster_state(client).await?;
            if current.epoch > epoch {
                Err(DbError::StaleEpoch {
                    offered: epoch,
                    current: current.epoch,
                })
            } else {
                // Same epoch, same primary: nothing to change.
                Ok(current)
            }
        }
    }
}

/// Appends to the event log; returns the event's id.
pub async fn append_event<C: GenericClient>(
    client: &C,
    node: &str,
    kind: &str,
    details: &serde_json::Value,
) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "INSERT INTO aurora.events (node, kind, details) VALUES ($1, $2, $3) RETURNING id",
            &[&node, &kind, details],
        )
        .await?;
    Ok(row.get(0))
}

/// The latest `limit` events, newest first.
pub async fn recent_events<C: GenericClient>(
    client: &C,
    limit: i64,
) -> Result<Vec<Event>, DbError> {
    let rows = client
        .query(
            "SELECT id, at, node, kind, details FROM aurora.events ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            id: r.get(0),
            at: r.get::<_, DateTime<Utc>>(1),
            node: r.get(2),
            kind: r.get(3),
            details: r.get(4),
        })
        .collect())
}

/// The change counter: moves whenever the registry, the cluster row or a
/// node's health status changes. One tiny row, cheap to poll on a standby.
pub async fn change_version<C: GenericClient>(client: &C) -> Result<i64, DbError> {
    let row = client
        .query_one("SELECT version FROM aurora.changes", &[])
        .await?;
    Ok(row.get(0))
}

/// Publishes the primary's synchronous-replication state (migration 2).
/// `degraded_since` is kept while the mode stays degraded, so readers can
/// tell how long the backup has been out of sync.
pub async fn record_replication<C: GenericClient>(
    client: &C,
    state: &ReplicationState,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE aurora.replication
                SET primary_node = $1, epoch = $2, sync_standby = $3, sync_mode = $4,
                    degraded_since = CASE WHEN $4 = 'sync' THEN NULL
                                          ELSE coalesce(degraded_since, now()) END,
                    updated_at = now()
              WHERE primary_node IS DISTINCT FROM $1 OR epoch IS DISTINCT FROM $2
                 OR sync_standby IS DISTINCT FROM $3 OR sync_mode IS DISTINCT FROM $4",
            &[
                &state.primary.as_str(),
                &state.epoch,
                &state.sync_standby.as_ref().map(NodeName::as_str),
                &state.sync_mode.as_str(),
            ],
        )
        .await?;
    Ok(())
}

/// The published replication state.
pub async fn replication_state<C: GenericClient>(
    client: &C,
) -> Result<Option<PublishedReplication>, DbError> {
    let row = client
        .query_one(
            "SELECT primary_node, epoch, sync_standby, sync_mode, degraded_since, updated_at
               FROM aurora.replication",
            &[],
        )
        .await?;
    let primary: Option<String> = row.get(0);
    let Some(primary) = primary else {
        return Ok(None);
    };
    let standby: Option<String> = row.get(2);
    let mode: String = row.get(3);
    Ok(Some(PublishedReplication {
        state: ReplicationState {
            primary: NodeName::parse(&primary)?,
            epoch: row.get(1),
            sync_standby: standby.map(|s| NodeName::parse(&s)).transpose()?,
            sync_mode: mode.parse()?,
        },
        degraded_since: row.get(4),
        updated_at: row.get(5),
    }))
}

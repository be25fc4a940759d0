//! The fleet as this node's local database sees it (a replica on most
//! nodes): every node, its status and the age of its last report.

use cluster_db::{queries, DbError};

use crate::config::Config;
use crate::db::Databases;

pub use aurora_api::monitor::{
    FleetNode as NodeView, FleetNodeStatus, FleetView, PrimaryView, StandbyView,
};

/// A synchronous standby streams from the primary.
fn sync_streaming(p: &PrimaryView) -> bool {
    p.standbys
        .iter()
        .any(|s| s.state == "streaming" && matches!(s.sync_state.as_str(), "sync" | "quorum"))
}

/// Asks the primary itself (not the replicated registry) whether it is
/// writable and who streams from it.
pub async fn primary_view(dbs: &Databases) -> PrimaryView {
    let result = dbs
        .primary
        .with(|client| async move {
            if !cluster_db::connect::is_primary(&client).await? {
                return Err(DbError::NotPrimary);
            }
            let rows = client
                .query(
                    "SELECT application_name, coalesce(state, ''), coalesce(sync_state, '') \
                     FROM pg_stat_replication ORDER BY application_name",
                    &[],
                )
                .await?;
            Ok::<_, DbError>(
                rows.iter()
                    .map(|r| StandbyView {
                        name: r.get(0),
                        state: r.get(1),
                        sync_state: r.get(2),
                    })
                    .collect(),
            )
        })
        .await;
    match result {
        Ok(standbys) => PrimaryView {
            reachable: true,
            error: None,
            standbys,
        },
        Err(e) => PrimaryView {
            reachable: false,
            error: Some(e.to_string()),
            standbys: Vec::new(),
        },
    }
}

/// Why the fleet is not healthy; empty when it is.
pub fn problems(view: &FleetView) -> Vec<String> {
    let mut out = Vec::new();
    match &view.primary {
        None => out.push("no primary recorded in aurora.cluster".to_string()),
        Some(p) => match view.node(p) {
            Some(n) if n.status == FleetNodeStatus::Down => {
                out.push(format!("the primary {p} is down"))
            }
            None => out.push(format!("the primary {p} is not registered")),
            _ => {}
        },
    }
    if !view.replication.reachable {
        out.push(format!(
            "no writable primary answers: {}",
            view.replication.error.as_deref().unwrap_or("unknown error")
        ));
    }
    let backup = aurora_api::Role::Backup;
    let has_backup = view.nodes.iter().any(|n| n.role == backup);
    if !view
        .nodes
        .iter()
        .any(|n| n.role == backup && n.status != FleetNodeStatus::Down)
    {
        out.push("no backup node is up".to_string());
    }
    if has_backup && view.replication.reachable && !sync_streaming(&view.replication) {
        let seen: Vec<String> = view
            .replication
            .standbys
            .iter()
            .map(|s| format!("{} {} ({})", s.name, s.state, s.sync_state))
            .collect();
        out.push(format!(
            "no synchronous standby is streaming from the primary (standbys: {}); commits are not protected",
            if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
        ));
    }
    for n in &view.nodes {
        match n.status {
            FleetNodeStatus::Down => out.push(format!(
                "{} is down (last report {:.0} s ago)",
                n.name,
                n.report_age_secs.unwrap_or(0.0)
            )),
            FleetNodeStatus::Critical => out.push(format!("{} reports critical", n.name)),
            _ => {}
        }
    }
    out
}

pub async fn view(config: &Config, dbs: &Databases) -> Result<FleetView, DbError> {
    let (listing, health, cluster) = dbs
        .local
        .with(|client| async move {
            Ok((
                queries::list_nodes(&*client).await?,
                queries::list_health(&*client).await?,
                queries::cluster_state(&*client).await?,
            ))
        })
        .await?;
    let down_after = 3.0 * config.checks.interval_secs as f64;
    let primary = cluster.primary.map(|p| p.to_string());
    let replication = primary_view(dbs).await;
    let reports: Vec<Report> = listing
        .nodes
        .iter()
        .map(|n| {
            let h = health.iter().find(|h| h.node == n.name);
            Report {
                name: n.name.to_string(),
                status: h.map(|h| h.status.as_str()),
                age_secs: h.map(|h| h.age_secs),
                marked_down: h.is_some_and(|h| h.down_since.is_some()),
            }
        })
        .collect();
    let statuses = statuses(
        &reports,
        down_after,
        primary.as_deref(),
        replication.reachable,
    );
    let nodes = listing
        .nodes
        .iter()
        .zip(reports)
        .zip(statuses)
        .map(|((n, r), status)| NodeView {
            name: n.name.to_string(),
            role: n.role.into(),
            vpn_ip: n.vpn_ip.to_string(),
            status: FleetNodeStatus::from(status.as_str()),
            report_age_secs: r.age_secs,
        })
        .collect();
    Ok(FleetView {
        primary,
        epoch: cluster.epoch,
        nodes,
        rejected: listing.rejected.into_iter().map(Into::into).collect(),
        replication,
    })
}

/// One node's last report as the registry holds it.
pub struct Report {
    pub name: String,
    pub status: Option<&'static str>,
    pub age_secs: Option<f64>,
    pub marked_down: bool,
}

/// Each node's status. A node is down when a monitor marked it, or when its
/// report is `down_after` older than the fleet's freshest one — measured
/// from the freshest, not from now: when reports cannot be written at all
/// (the primary is gone), every report ages together and that says nothing
/// about the nodes. The recorded primary is down when no writable primary
/// answers and none has taken a report for `down_after`: its node may be
/// up, but the fleet has lost it.
pub fn statuses(
    reports: &[Report],
    down_after: f64,
    primary: Option<&str>,
    primary_answers: bool,
) -> Vec<String> {
    let staleness =
        cluster_db::Staleness::new(reports.iter().filter_map(|r| r.age_secs), down_after);
    reports
        .iter()
        .map(|r| {
            let stale = r.age_secs.is_some_and(|a| staleness.is_stale(a));
            // Lost: no writable primary answers now, and none has taken a
            // report for `down_after` (one slow connect is not an outage).
            let lost = !primary_answers
                && primary == Some(r.name.as_str())
                && r.age_secs.is_none_or(|a| a > down_after);
            if r.marked_down || stale || lost {
                "down".to_string()
            } else {
                r.status.unwrap_or("unknown").to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, age: f64) -> Report {
        Report {
            name: name.into(),
            status: Some("passing"),
            age_secs: Some(age),
            marked_down: false,
        }
    }

    /// The primary's host died and no failover happened: nobody can write
    /// a report, so all of them age. The survivors are not down; the primary
    /// is, because no writable primary answers.
    #[test]
    fn a_dead_primary_is_down_and_the_survivors_are_not() {
        let r = [
            report("aurora", 40.0),
            report("star", 41.0),
            report("vengeance", 39.0),
        ];
        assert_eq!(
            statuses(&r, 15.0, Some("aurora"), false),
            ["down", "passing", "passing"]
        );
        assert_eq!(
            statuses(&r, 15.0, Some("aurora"), true),
            ["passing", "passing", "passing"]
        );
        // One failed connect while reports are fresh is not an outage.
        let fresh = [report("aurora", 2.0), report("star", 1.0)];
        assert_eq!(
            statuses(&fresh, 15.0, Some("aurora"), false),
            ["passing", "passing"]
        );
        // One that stopped long before the others is down.
        let r = [report("aurora", 1.0), report("star", 40.0)];
        assert_eq!(
            statuses(&r, 15.0, Some("aurora"), true),
            ["passing", "down"]
        );
        let unknown = Report {
            status: None,
            age_secs: None,
            ..report("new", 0.0)
        };
        assert_eq!(statuses(&[unknown], 15.0, None, true), ["unknown"]);
    }
}

//! The fleet as this node's local database sees it (a replica on most
//! nodes): every node, its status and the age of its last report.

use std::time::Duration;

use cluster_db::{queries, DbError, DbTarget, Role};
use serde::Serialize;

use crate::config::Config;

#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub name: String,
    pub role: Role,
    pub vpn_ip: String,
    /// `passing`, `warning`, `critical`, `down` (report older than three
    /// intervals) or `unknown` (never reported).
    pub status: String,
    pub report_age_secs: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FleetView {
    pub primary: Option<String>,
    pub epoch: i64,
    pub nodes: Vec<NodeView>,
    /// Registry rows that failed validation.
    pub rejected: Vec<cluster_db::RejectedRow>,
    /// The writable primary and its standbys, asked directly.
    pub replication: PrimaryView,
}

/// One standby as the primary's `pg_stat_replication` shows it (its
/// application name is the node name repl-manager gives it).
#[derive(Clone, Debug, Serialize)]
pub struct StandbyView {
    pub name: String,
    pub state: String,
    pub sync_state: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PrimaryView {
    /// A writable primary answered through the read-write connection string.
    pub reachable: bool,
    pub error: Option<String>,
    pub standbys: Vec<StandbyView>,
}

impl PrimaryView {
    fn sync_streaming(&self) -> bool {
        self.standbys
            .iter()
            .any(|s| s.state == "streaming" && matches!(s.sync_state.as_str(), "sync" | "quorum"))
    }
}

/// Asks the primary itself (not the replicated registry) whether it is
/// writable and who streams from it.
pub async fn primary_view(config: &Config) -> PrimaryView {
    let result = async {
        let target = DbTarget::parse(config.database.write_dsn.expose())?;
        let hosts = target.config.get_hosts().len().max(1) as u32;
        let client = cluster_db::connect(
            &target,
            Duration::from_secs(config.database.connect_timeout_secs) * hosts,
        )
        .await?;
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
    }
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

impl FleetView {
    /// Why the fleet is not healthy; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.primary {
            None => out.push("no primary recorded in aurora.cluster".to_string()),
            Some(p) => match self.nodes.iter().find(|n| &n.name == p) {
                Some(n) if n.status == "down" => out.push(format!("the primary {p} is down")),
                None => out.push(format!("the primary {p} is not registered")),
                _ => {}
            },
        }
        if !self.replication.reachable {
            out.push(format!(
                "no writable primary answers: {}",
                self.replication.error.as_deref().unwrap_or("unknown error")
            ));
        }
        let has_backup = self.nodes.iter().any(|n| n.role == Role::Backup);
        if !self
            .nodes
            .iter()
            .any(|n| n.role == Role::Backup && n.status != "down")
        {
            out.push("no backup node is up".to_string());
        }
        if has_backup && self.replication.reachable && !self.replication.sync_streaming() {
            let seen: Vec<String> = self
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
        for n in &self.nodes {
            match n.status.as_str() {
                "down" => out.push(format!(
                    "{} is down (last report {:.0} s ago)",
                    n.name,
                    n.report_age_secs.unwrap_or(0.0)
                )),
                "critical" => out.push(format!("{} reports critical", n.name)),
                _ => {}
            }
        }
        out
    }
}

pub async fn view(config: &Config) -> Result<FleetView, DbError> {
    let target = DbTarget::parse(config.database.local_dsn.expose())?;
    let client = cluster_db::connect(
        &target,
        Duration::from_secs(config.database.connect_timeout_secs),
    )
    .await?;
    let listing = queries::list_nodes(&client).await?;
    let health = queries::list_health(&client).await?;
    let cluster = queries::cluster_state(&client).await?;
    let down_after = 3.0 * config.checks.interval_secs as f64;
    let nodes = listing
        .nodes
        .iter()
        .map(|n| {
            let h = health.iter().find(|h| h.node == n.name);
            let status = match h {
                None => "unknown".to_string(),
                Some(h) if h.down_since.is_some() || h.age_secs > down_after => "down".to_string(),
                Some(h) => h.status.as_str().to_string(),
            };
            NodeView {
                name: n.name.to_string(),
                role: n.role,
                vpn_ip: n.vpn_ip.to_string(),
                status,
                report_age_secs: h.map(|h| h.age_secs),
            }
        })
        .collect();
    Ok(FleetView {
        primary: cluster.primary.map(|p| p.to_string()),
        epoch: cluster.epoch,
        nodes,
        rejected: listing.rejected,
        replication: primary_view(config).await,
    })
}

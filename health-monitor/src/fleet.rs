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
        if !self
            .nodes
            .iter()
            .any(|n| n.role == Role::Backup && n.status != "down")
        {
            out.push("no backup node is up".to_string());
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
                Some(h) if h.age_secs > down_after => "down".to_string(),
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
    })
}

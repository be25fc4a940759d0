//! `status` (this node and the fleet at a glance) and `health` (every check
//! of this node).

use aurora_api::assets::{AssetStatus, PassOutcome};
use aurora_api::dns::DnsStatus;
use aurora_api::monitor::{CheckStatus, FleetHealth, FleetView, MonitorStatus};
use std::io::IsTerminal;
use std::time::Duration;

use aurora_api::repl::{ClusterView, SyncMode, SyncView};
use serde::Serialize;

use crate::api::{Api, Sidecar};
use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// Everything `status` shows, gathered concurrently; a sidecar that does not
/// answer (or answers what this build cannot read) leaves its part empty
/// and is listed in `errors`.
struct Gathered {
    fleet: Option<FleetView>,
    fleet_health: Option<FleetHealth>,
    repl: Option<ClusterView>,
    assets: Option<AssetStatus>,
    dns: Option<DnsStatus>,
    errors: Vec<String>,
}

async fn gather(api: &Api<'_>, config: &NodeConfig) -> Gathered {
    let (fleet, fleet_health, repl, assets, dns) = tokio::join!(
        api.read::<FleetView>(Sidecar::HealthMonitor, "/cluster"),
        // 200 or 503, both with the reasons.
        api.get_any(Sidecar::HealthMonitor, "/cluster/health"),
        api.read::<ClusterView>(Sidecar::ReplManager, "/cluster"),
        // A sidecar that is not deployed on this node is simply not asked.
        async {
            match config.sidecar_url(Sidecar::AssetSync) {
                Some(_) => api.read(Sidecar::AssetSync, "/status").await.map(Some),
                None => Ok(None),
            }
        },
        async {
            match config.sidecar_url(Sidecar::DnsSync) {
                Some(_) => api.read(Sidecar::DnsSync, "/status").await.map(Some),
                None => Ok(None),
            }
        },
    );
    let mut errors = Vec::new();
    let fleet = keep(&mut errors, fleet.map(Some));
    let repl = keep(&mut errors, repl.map(Some));
    let assets = keep(&mut errors, assets);
    let dns = keep(&mut errors, dns);
    // Same sidecar as `fleet`: its failure is already reported.
    let fleet_health = fleet_health
        .ok()
        .and_then(|a| a.read::<FleetHealth>("/cluster/health").ok());
    Gathered {
        fleet,
        fleet_health,
        repl,
        assets,
        dns,
        errors,
    }
}

fn keep<T>(errors: &mut Vec<String>, r: CliResult<Option<T>>) -> Option<T> {
    match r {
        Ok(v) => v,
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    }
}

/// `aurora-cli status --json`.
#[derive(Debug, Serialize)]
struct StatusDoc {
    node: String,
    primary: Option<String>,
    epoch: Option<i64>,
    /// Seconds since the epoch began (the last switchover or failover).
    epoch_age_secs: Option<f64>,
    /// The primary's synchronous replication.
    sync: Option<SyncView>,
    healthy: Option<bool>,
    reasons: Option<Vec<String>>,
    nodes: Vec<NodeRow>,
    assets: Option<AssetsRow>,
    dns: Option<DnsRow>,
    errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct NodeRow {
    name: String,
    role: String,
    vpn_ip: Option<String>,
    /// The registry's status, or `unregistered`.
    health: String,
    report_age_secs: Option<f64>,
    /// repl-manager's state, or `unknown`.
    postgres: String,
    timeline: Option<u32>,
    lag_bytes: Option<f64>,
    lag_seconds: Option<f64>,
    this_node: bool,
}

#[derive(Debug, Serialize)]
struct AssetsRow {
    last_sync_age_secs: Option<f64>,
    last_pass: Option<PassOutcome>,
}

#[derive(Debug, Serialize)]
struct DnsRow {
    serial: Option<u32>,
    zone: String,
    records: Option<usize>,
}

fn document(g: &Gathered, config: &NodeConfig) -> StatusDoc {
    let asset_age = g
        .assets
        .as_ref()
        .and_then(|a| a.last_pass.as_ref())
        .and_then(|p| p.finished_at)
        .map(|t| (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0);
    let members = g.repl.as_ref().map(|r| r.members.as_slice()).unwrap_or(&[]);
    let primary = members.iter().find(|m| m.status.is_primary());

    // One row per node: the registry's nodes, plus members only
    // repl-manager knows (registered later or never).
    let mut names: Vec<String> = Vec::new();
    if let Some(f) = &g.fleet {
        names.extend(f.nodes.iter().map(|n| n.name.clone()));
    }
    for m in members {
        if !names.contains(&m.status.node) {
            names.push(m.status.node.clone());
        }
    }
    let nodes = names
        .iter()
        .map(|name| {
            let registry = g.fleet.as_ref().and_then(|f| f.node(name));
            let m = members.iter().find(|m| &m.status.node == name);
            // Lag as the primary sees it.
            let conn = primary.and_then(|p| p.status.replicas.iter().find(|r| &r.name == name));
            NodeRow {
                name: name.clone(),
                role: registry
                    .map(|r| r.role.to_string())
                    .or(m.map(|m| m.status.role.to_string()))
                    .unwrap_or_default(),
                vpn_ip: registry.map(|r| r.vpn_ip.clone()),
                health: registry
                    .map(|r| r.status.to_string())
                    .unwrap_or_else(|| "unregistered".into()),
                report_age_secs: registry.and_then(|r| r.report_age_secs),
                postgres: m
                    .map(|m| m.status.state.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                timeline: m
                    .and_then(|m| m.status.postgres.as_ref())
                    .map(|p| p.timeline),
                lag_bytes: conn.and_then(|r| r.lag_bytes).map(|b| b as f64),
                lag_seconds: conn
                    .filter(|r| r.lag_bytes.is_some())
                    .and_then(|r| r.replay_lag_secs),
                this_node: name == &config.node.name,
            }
        })
        .collect();
    let now = sidecar_kit::telemetry::unix_now();
    StatusDoc {
        node: config.node.name.clone(),
        primary: g.repl.as_ref().map(|r| r.primary.clone()),
        epoch: g.repl.as_ref().map(|r| r.epoch),
        epoch_age_secs: g
            .repl
            .as_ref()
            .and_then(|r| r.epoch_changed_at)
            .map(|t| (now - t).max(0.0)),
        sync: primary.and_then(|p| p.status.sync.clone()),
        healthy: g.fleet_health.as_ref().map(|h| h.healthy),
        reasons: g.fleet_health.as_ref().map(|h| h.reasons.clone()),
        nodes,
        assets: g.assets.as_ref().map(|a| AssetsRow {
            last_sync_age_secs: asset_age,
            last_pass: a.last_pass.clone(),
        }),
        dns: g.dns.as_ref().map(|d| DnsRow {
            serial: d.serial,
            zone: d.zone.clone(),
            records: d.records,
        }),
        errors: g.errors.clone(),
    }
}

pub async fn status(config: &NodeConfig, as_json: bool, watch: Option<Duration>) -> CliResult {
    let api = Api::new(config);
    let Some(every) = watch else {
        let g = gather(&api, config).await;
        let doc = document(&g, config);
        if as_json {
            output::print_json(&doc);
        } else {
            out!("{}", render(&doc));
        }
        return match g.errors.split_first() {
            None => Ok(()),
            Some((first, rest)) => {
                for e in rest {
                    eprintln!("aurora-cli: {e}");
                }
                Err(CliError::failed(first.clone()))
            }
        };
    };
    // Until interrupted: on a terminal the screen is redrawn in place; in a
    // pipe each refresh follows the last (with --json, one document per
    // line). A sidecar that stops answering shows in the screen, it does
    // not end the watch.
    let redraw = std::io::stdout().is_terminal() && !as_json;
    // One listener for the whole watch: a Ctrl-C pressed while a refresh
    // is being gathered is kept for the next wait, not lost.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::failed(format!("cannot listen for Ctrl-C: {e}")))?;
    loop {
        let g = gather(&api, config).await;
        let doc = document(&g, config);
        if as_json {
            match serde_json::to_string(&doc) {
                Ok(line) => outln!("{line}"),
                Err(e) => eprintln!("aurora-cli: {e}"),
            }
        } else {
            if redraw {
                out!("\x1b[H\x1b[2J");
            }
            outln!(
                "every {} · {} · Ctrl-C to stop",
                output::duration_secs(every.as_secs_f64()),
                chrono::Local::now().format("%H:%M:%S")
            );
            out!("{}", render(&doc));
            for e in &doc.errors {
                outln!("! {e}");
            }
            if !redraw {
                outln!();
            }
        }
        output::flush_stdout();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// The one screen: fleet health and why not, the primary and how long it
/// has been, synchronous replication, every node, assets and DNS. Fits 80
/// columns.
fn render(doc: &StatusDoc) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let healthy = match doc.healthy {
        Some(true) => output::paint("healthy"),
        Some(false) => output::paint("unhealthy"),
        None => "unknown".into(),
    };
    let _ = write!(
        s,
        "fleet: {healthy}   primary: {}   epoch: {}",
        doc.primary.as_deref().unwrap_or("unknown"),
        doc.epoch
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into())
    );
    if let Some(age) = doc.epoch_age_secs {
        let _ = write!(s, " (for {})", output::duration_secs(age));
    }
    s.push('\n');
    for r in doc.reasons.iter().flatten() {
        for line in wrap(r, "  - ", "    ", 80) {
            let _ = writeln!(s, "{line}");
        }
    }
    match &doc.sync {
        Some(SyncView {
            mode: SyncMode::Sync,
            standby: Some(standby),
            ..
        }) => {
            let _ = writeln!(s, "sync: {standby} confirms every commit");
        }
        Some(v) => {
            let since = v
                .degraded_since
                .map(|t| {
                    let age = (sidecar_kit::telemetry::unix_now() - t).max(0.0);
                    format!(" for {}", output::duration_secs(age))
                })
                .unwrap_or_default();
            let what = match v.mode {
                SyncMode::Blocked => "commits wait for a standby (strict)",
                _ => "commits are not copied to a standby",
            };
            let _ = writeln!(
                s,
                "sync: {} ({what}){since}",
                output::paint(v.mode.as_str())
            );
        }
        None => {}
    }
    s.push('\n');
    let mut t = Table::new(&["NODE", "ROLE", "HEALTH", "REPORTED", "POSTGRES", "LAG"]);
    for r in &doc.nodes {
        let mut name = r.name.clone();
        if r.this_node {
            name.push_str(" *");
        }
        let reported = r
            .report_age_secs
            .map(|a| format!("{} ago", output::duration_secs(a)))
            .unwrap_or_else(|| "-".into());
        let lag = match (r.lag_bytes, r.lag_seconds) {
            (Some(b), Some(secs)) => {
                format!("{} / {}", output::bytes(b), output::duration_secs(secs))
            }
            (Some(b), None) => output::bytes(b),
            _ => "-".into(),
        };
        t.row(vec![
            name,
            r.role.clone(),
            r.health.clone(),
            reported,
            r.postgres.clone(),
            lag,
        ]);
    }
    s.push_str(&t.render());
    s.push('\n');
    match &doc.assets {
        Some(AssetsRow {
            last_sync_age_secs: Some(age),
            ..
        }) => {
            let _ = writeln!(s, "assets: last sync {} ago", output::duration_secs(*age));
        }
        Some(_) => s.push_str("assets: no completed sync yet\n"),
        None => {}
    }
    if let Some(d) = &doc.dns {
        if let Some(serial) = d.serial {
            let _ = writeln!(s, "dns: {} serial {serial}", d.zone.trim_end_matches('.'));
        }
    }
    s
}

/// `text` in lines of at most `width` columns (a word longer than that gets
/// a line of its own): the first line after `first`, the rest after `rest`.
fn wrap(text: &str, first: &str, rest: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

pub async fn health(config: &NodeConfig, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let st: MonitorStatus = api.read(Sidecar::HealthMonitor, "/status").await?;
    if as_json {
        output::print_json(&st);
    } else {
        outln!("{}: {}", st.node, output::paint(st.status.as_str()));
        let mut t = Table::new(&["CHECK", "STATUS", "TIME", "MESSAGE"]);
        for c in &st.checks {
            t.row(vec![
                c.name.clone(),
                c.status.to_string(),
                format!("{} ms", c.duration_ms),
                c.message.clone(),
            ]);
        }
        if t.is_empty() {
            outln!("no checks have run yet");
        } else {
            out!("{}", t.render());
        }
    }
    let critical: Vec<&str> = st
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Critical)
        .map(|c| c.name.as_str())
        .collect();
    if critical.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "critical: {}",
            critical.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn reasons_fit_80_columns() {
        let reason = "no synchronous standby is streaming from the primary (standbys: vengeance streaming (async)); commits are not protected";
        let lines = wrap(reason, "  - ", "    ", 80);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{lines:?}");
        assert!(lines[0].starts_with("  - no ") && lines[1].starts_with("    "));
        let joined: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(joined[1..].join(" "), reason);
        assert_eq!(wrap("short", "  - ", "    ", 80), ["  - short"]);
    }
}

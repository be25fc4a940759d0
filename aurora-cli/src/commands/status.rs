//! `status` (this node and the fleet at a glance) and `health` (every check
//! of this node).

use serde_json::{json, Value};

use crate::api::{Api, Sidecar};
use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

fn f64_at(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn str_at<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Everything `status` shows, gathered concurrently; a sidecar that does not
/// answer leaves its part empty and is listed in `errors`.
struct Gathered {
    fleet: Option<Value>,
    fleet_health: Option<Value>,
    repl: Option<Value>,
    assets: Option<Value>,
    dns: Option<Value>,
    errors: Vec<String>,
}

async fn gather(api: &Api<'_>, config: &NodeConfig) -> Gathered {
    // A sidecar that is not deployed on this node is simply not asked.
    let deployed = |sidecar: Sidecar| async move {
        match config.sidecar_url(sidecar) {
            Some(_) => api.get(sidecar, "/status").await.map(Some),
            None => Ok(None),
        }
    };
    let (fleet, fleet_health, repl, assets, dns) = tokio::join!(
        api.get(Sidecar::HealthMonitor, "/cluster"),
        api.get_any(Sidecar::HealthMonitor, "/cluster/health"),
        api.get(Sidecar::ReplManager, "/cluster"),
        deployed(Sidecar::AssetSync),
        deployed(Sidecar::DnsSync),
    );
    let mut errors = Vec::new();
    let mut keep = |r: CliResult<Option<Value>>| match r {
        Ok(v) => v,
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let fleet = keep(fleet.map(Some));
    let repl = keep(repl.map(Some));
    let assets = keep(assets);
    let dns = keep(dns);
    // Same sidecar as `fleet`: its failure is already reported.
    let fleet_health = fleet_health.ok().map(|a| a.body);
    Gathered {
        fleet,
        fleet_health,
        repl,
        assets,
        dns,
        errors,
    }
}

/// The member entry for `name` in repl-manager's `/cluster`.
fn member<'v>(repl: Option<&'v Value>, name: &str) -> Option<&'v Value> {
    repl?
        .get("members")?
        .as_array()?
        .iter()
        .find(|m| str_at(m, "node") == name)
}

/// Lag of `name` as the primary sees it (bytes, seconds).
fn lag_of(repl: Option<&Value>, name: &str) -> Option<(f64, Option<f64>)> {
    let members = repl?.get("members")?.as_array()?;
    let primary = members.iter().find(|m| str_at(m, "state") == "primary")?;
    let r = primary
        .get("replicas")?
        .as_array()?
        .iter()
        .find(|r| str_at(r, "name") == name)?;
    Some((f64_at(r, "lag_bytes")?, f64_at(r, "replay_lag_secs")))
}

pub async fn status(config: &NodeConfig, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let g = gather(&api, config).await;
    let asset_age = g
        .assets
        .as_ref()
        .and_then(|a| a.get("last_pass"))
        .and_then(|p| p.get("finished_at"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0
        });
    let serial = g.dns.as_ref().and_then(|d| d.get("serial")).cloned();

    // One row per node: the registry's nodes, plus members only
    // repl-manager knows (registered later or never).
    let mut names: Vec<String> = Vec::new();
    if let Some(nodes) = g
        .fleet
        .as_ref()
        .and_then(|f| f.get("nodes"))
        .and_then(Value::as_array)
    {
        names.extend(nodes.iter().map(|n| str_at(n, "name").to_string()));
    }
    if let Some(members) = g
        .repl
        .as_ref()
        .and_then(|r| r.get("members"))
        .and_then(Value::as_array)
    {
        for m in members {
            let n = str_at(m, "node").to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut rows = Vec::new();
    for name in &names {
        let registry = g
            .fleet
            .as_ref()
            .and_then(|f| f.get("nodes"))
            .and_then(Value::as_array)
            .and_then(|ns| ns.iter().find(|n| str_at(n, "name") == name));
        let m = member(g.repl.as_ref(), name);
        let lag = lag_of(g.repl.as_ref(), name);
        rows.push(json!({
            "name": name,
            "role": registry.map(|r| str_at(r, "role")).or(m.map(|m| str_at(m, "role"))).unwrap_or(""),
            "vpn_ip": registry.map(|r| str_at(r, "vpn_ip")),
            "health": registry.map(|r| str_at(r, "status")).unwrap_or("unregistered"),
            "report_age_secs": registry.and_then(|r| f64_at(r, "report_age_secs")),
            "postgres": m.map(|m| str_at(m, "state")).unwrap_or("unknown"),
            "timeline": m.and_then(|m| m.get("postgres")).and_then(|p| p.get("timeline")).cloned(),
            "lag_bytes": lag.map(|l| l.0),
            "lag_seconds": lag.and_then(|l| l.1),
            "this_node": name == &config.node.name,
        }));
    }
    let doc = json!({
        "node": config.node.name,
        "primary": g.repl.as_ref().map(|r| r["primary"].clone()),
        "epoch": g.repl.as_ref().map(|r| r["epoch"].clone()),
        "healthy": g.fleet_health.as_ref().and_then(|h| h.get("healthy")).cloned(),
        "reasons": g.fleet_health.as_ref().and_then(|h| h.get("reasons")).cloned(),
        "nodes": rows,
        "assets": g.assets.as_ref().map(|a| json!({
            "last_sync_age_secs": asset_age,
            "last_pass": a.get("last_pass"),
        })),
        "dns": g.dns.as_ref().map(|d| json!({"serial": serial, "zone": d.get("zone"), "records": d.get("records")})),
        "errors": g.errors,
    });

    if as_json {
        output::print_json(&doc);
    } else {
        let primary = doc["primary"].as_str().unwrap_or("unknown");
        let healthy = match doc["healthy"].as_bool() {
            Some(true) => output::paint("healthy"),
            Some(false) => output::paint("unhealthy"),
            None => "unknown".into(),
        };
        outln!(
            "fleet: {healthy}   primary: {primary}   epoch: {}",
            doc["epoch"]
                .as_i64()
                .map(|e| e.to_string())
                .unwrap_or("?".into())
        );
        if let Some(reasons) = doc["reasons"].as_array() {
            for r in reasons.iter().filter_map(Value::as_str) {
                outln!("  - {r}");
            }
        }
        outln!();
        let mut t = Table::new(&["NODE", "ROLE", "HEALTH", "REPORTED", "POSTGRES", "LAG"]);
        for r in doc["nodes"].as_array().into_iter().flatten() {
            let mut name = str_at(r, "name").to_string();
            if r["this_node"].as_bool() == Some(true) {
                name.push_str(" *");
            }
            let reported = f64_at(r, "report_age_secs")
                .map(|a| format!("{} ago", output::duration_secs(a)))
                .unwrap_or_else(|| "-".into());
            let lag = match (f64_at(r, "lag_bytes"), f64_at(r, "lag_seconds")) {
                (Some(b), Some(s)) => {
                    format!("{} / {}", output::bytes(b), output::duration_secs(s))
                }
                (Some(b), None) => output::bytes(b),
                _ => "-".into(),
            };
            t.row(vec![
                name,
                str_at(r, "role").to_string(),
                str_at(r, "health").to_string(),
                reported,
                str_at(r, "postgres").to_string(),
                lag,
            ]);
        }
        out!("{}", t.render());
        outln!();
        match (&g.assets, asset_age) {
            (Some(_), Some(age)) => {
                outln!("assets: last sync {} ago", output::duration_secs(age))
            }
            (Some(_), None) => outln!("assets: no completed sync yet"),
            (None, _) => {}
        }
        if let Some(s) = &serial {
            outln!("dns: serial {s}");
        }
    }
    if g.errors.is_empty() {
        Ok(())
    } else {
        for e in &g.errors[1..] {
            eprintln!("aurora-cli: {e}");
        }
        Err(CliError::failed(g.errors[0].clone()))
    }
}

pub async fn health(config: &NodeConfig, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let st = api.get(Sidecar::HealthMonitor, "/status").await?;
    let checks = st
        .get("checks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if as_json {
        output::print_json(&st);
    } else {
        outln!(
            "{}: {}",
            str_at(&st, "node"),
            output::paint(str_at(&st, "status"))
        );
        let mut t = Table::new(&["CHECK", "STATUS", "TIME", "MESSAGE"]);
        for c in &checks {
            t.row(vec![
                str_at(c, "name").to_string(),
                str_at(c, "status").to_string(),
                format!(
                    "{} ms",
                    c.get("duration_ms").and_then(Value::as_u64).unwrap_or(0)
                ),
                str_at(c, "message").to_string(),
            ]);
        }
        if t.is_empty() {
            outln!("no checks have run yet");
        } else {
            out!("{}", t.render());
        }
    }
    let critical: Vec<&str> = checks
        .iter()
        .filter(|c| str_at(c, "status") == "critical")
        .map(|c| str_at(c, "name"))
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

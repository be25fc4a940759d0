//! What `sandbox up` writes for each node: addresses, ports, and the config
//! of every sidecar and of `aurora-cli` itself. Configs are built as TOML
//! tables (not string templates), so paths and passwords are quoted right.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{CliError, CliResult};

/// Default node names: the seed document's fleet, then numbered computes.
pub fn node_name(i: usize) -> String {
    match i {
        0 => "aurora".into(),
        1 => "star".into(),
        2 => "vengeance".into(),
        n => format!("compute{}", n + 1),
    }
}

pub fn node_role(i: usize) -> &'static str {
    match i {
        0 => "lead",
        1 => "backup",
        _ => "compute",
    }
}

/// One node's addresses and ports.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub name: String,
    pub role: &'static str,
    /// Where its services listen (127.0.0.1, or its namespace's address).
    pub host: String,
    pub vpn_ip: String,
    pub netns: Option<String>,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub repl_port: u16,
    pub health_port: u16,
    pub assets_port: Option<u16>,
    /// dns-sync's admin port and DNS port (lead and backup only).
    pub dns: Option<(u16, u16)>,
}

impl NodePlan {
    pub fn url(&self, port: u16) -> String {
        format!("http://{}:{port}", self.host)
    }

    pub fn local_dsn(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.host, self.pg_port
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("postgres").join("data")
    }

    pub fn assets_dir(&self) -> PathBuf {
        self.dir.join("assets")
    }
}

/// The S3 side, when Garage runs.
pub struct S3Plan {
    pub endpoint: String,
    pub key_id: String,
    pub secret_key: String,
}

/// Everything shared by the nodes' configs.
pub struct FleetPlan {
    pub dir: PathBuf,
    pub zone: String,
    pub vpn_network: String,
    pub token: String,
    pub replication_password: String,
    pub pg_bindir: PathBuf,
    pub nodes: Vec<NodePlan>,
    pub s3: Option<S3Plan>,
    pub redis: Option<String>,
}

/// asset-sync's config for a node whose services listen on `host`.
pub fn asset_sync_toml(
    host: &str,
    port: u16,
    token: &str,
    s3: &S3Plan,
    assets_dir: &Path,
) -> CliResult<String> {
    to_toml(&merge(
        common(format!("{host}:{port}"), token),
        json!({
            "s3": {"endpoint": s3.endpoint, "region": local_fleet::garage::REGION, "bucket": "assets",
                   "access_key_id": s3.key_id, "secret_access_key": s3.secret_key},
            "sync": {"target_dir": path(assets_dir), "interval_secs": 30},
        }),
    ))
}

/// Sets `keys` (a path of table names) in the TOML file at `file` to
/// `value`, keeping the rest.
pub fn set_in_toml(file: &Path, keys: &[&str], value: &str) -> CliResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::failed(format!("reading {}: {e}", file.display())))?;
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?;
    let Some((last, tables)) = keys.split_last() else {
        return Ok(());
    };
    let mut t = &mut doc;
    for k in tables {
        t = t
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| CliError::failed(format!("{}: `{k}` is not a table", file.display())))?;
    }
    t.insert(last.to_string(), toml::Value::String(value.to_string()));
    let text = toml::to_string_pretty(&doc)
        .map_err(|e| CliError::failed(format!("rendering {}: {e}", file.display())))?;
    Ok(local_fleet::process::write_private(file, &text)?)
}

pub fn to_toml(v: &Value) -> CliResult<String> {
    let t = toml::Value::try_from(v)
        .map_err(|e| CliError::failed(format!("rendering a config: {e}")))?;
    toml::to_string_pretty(&t).map_err(|e| CliError::failed(format!("rendering a config: {e}")))
}

fn common(listen: String, token: &str) -> Value {
    json!({
        "admin": {"listen": listen, "token": token},
        "log": {"format": "json", "filter": "info"},
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl FleetPlan {
    /// The primary, wherever it is: every node's address, read-write only.
    fn write_dsn(&self) -> String {
        let hosts: Vec<&str> = self.nodes.iter().map(|n| n.host.as_str()).collect();
        let ports: Vec<String> = self.nodes.iter().map(|n| n.pg_port.to_string()).collect();
        format!(
            "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write",
            hosts.join(","),
            ports.join(",")
        )
    }

    pub fn repl_manager(&self, n: &NodePlan) -> CliResult<String> {
        let members: Vec<Value> = self
            .nodes
            .iter()
            .map(|m| {
                json!({"name": m.name, "role": m.role, "host": m.host, "port": m.pg_port,
                       "api_url": m.url(m.repl_port)})
            })
            .collect();
        to_toml(&merge(
            common(format!("{}:{}", n.host, n.repl_port), &self.token),
            json!({
                "node": {"name": n.name, "state_file": path(&n.dir.join("repl-manager.state.json"))},
                "postgres": {
                    "data_dir": path(&n.data_dir()),
                    "bin_dir": path(&self.pg_bindir),
                    "host": n.host,
                    "port": n.pg_port,
                    "listen_addresses": n.host,
                    "replication_password": self.replication_password,
                    "log_file": path(&n.dir.join("logs").join("postgres.log")),
                },
                "replication": {"repair_after_secs": 10},
                "members": members,
            }),
        ))
    }

    pub fn health_monitor(&self, n: &NodePlan) -> CliResult<String> {
        let mut sidecars = serde_json::Map::new();
        sidecars.insert("repl-manager".into(), json!(n.url(n.repl_port)));
        if let Some(p) = n.assets_port {
            sidecars.insert("asset-sync".into(), json!(n.url(p)));
        }
        if let Some((admin, _)) = n.dns {
            sidecars.insert("dns-sync".into(), json!(n.url(admin)));
        }
        let mut checks = json!({
            "interval_secs": 5,
            "timeout_secs": 3,
            "disks": [path(&self.dir)],
            "repl_manager": n.url(n.repl_port),
            "sidecars": sidecars,
        });
        if let Some(r) = &self.redis {
            checks["redis"] = json!(r);
        }
        to_toml(&merge(
            common(format!("{}:{}", n.host, n.health_port), &self.token),
            json!({
                "node": {"name": n.name, "role": n.role, "vpn_ip": n.vpn_ip,
                         "vpn_network": self.vpn_network,
                         "labels": {"sandbox": "true"}},
                "database": {"local_dsn": n.local_dsn(), "write_dsn": self.write_dsn()},
                "checks": checks,
            }),
        ))
    }

    pub fn asset_sync(&self, n: &NodePlan, port: u16) -> CliResult<String> {
        let s3 = self
            .s3
            .as_ref()
            .ok_or_else(|| CliError::failed("asset-sync planned without Garage"))?;
        asset_sync_toml(&n.host, port, &self.token, s3, &n.assets_dir())
    }

    pub fn dns_sync(&self, n: &NodePlan, admin: u16, dns: u16) -> CliResult<String> {
        to_toml(&merge(
            common(format!("{}:{admin}", n.host), &self.token),
            json!({
                "dns": {"listen": format!("{}:{dns}", n.host), "zone": self.zone,
                        "vpn_network": self.vpn_network,
                        "axfr_allow": ["127.0.0.0/8", self.vpn_network]},
                "database": {"dsn": n.local_dsn(), "fallback_dsn": self.write_dsn()},
            }),
        ))
    }

    /// `node.toml`, the config `aurora-cli --config` reads for this node.
    pub fn node_toml(&self, n: &NodePlan) -> CliResult<String> {
        to_toml(&json!({
            "node": {"name": n.name, "role": n.role},
            "admin": {"token": self.token},
            "sidecars": {
                "repl_manager": n.url(n.repl_port),
                "health_monitor": n.url(n.health_port),
                "asset_sync": n.assets_port.map(|p| n.url(p)).unwrap_or_default(),
                "dns_sync": n.dns.map(|(p, _)| n.url(p)).unwrap_or_default(),
            },
            // No compose stack in the sandbox: the docker commands say so.
            "compose": {"project_dir": path(&n.dir)},
            "backup": {
                "dest": path(&self.dir.join("backups")),
                "dsn": n.local_dsn(),
                "bin_dir": path(&self.pg_bindir),
                "assets_dir": path(&n.assets_dir()),
                "config_dir": path(&n.dir.join("config")),
            },
        }))
    }
}

/// DNS zone names: dot-separated labels of letters, digits and hyphens.
pub fn validate_zone(zone: &str) -> CliResult {
    let ok = !zone.is_empty()
        && zone.len() <= 253
        && zone.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "--zone `{zone}` is not a DNS name (labels of letters, digits and hyphens, separated by dots)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        assert!(validate_zone("aurora.internal").is_ok());
        assert!(validate_zone("a-b.c").is_ok());
        for bad in ["", "a..b", "-a.b", "a_b.c", "a b"] {
            assert!(validate_zone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_values_are_quoted_not_interpolated() {
        let v = json!({"postgres": {"replication_password": "a\"b\\c'\n"}});
        let text = to_toml(&v).unwrap();
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            back["postgres"]["replication_password"].as_str(),
            Some("a\"b\\c'\n")
        );
    }
}

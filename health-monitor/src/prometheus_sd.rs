//! Prometheus file-based service discovery from the node registry: the
//! lead's Prometheus federates every registered node's Prometheus, and a
//! node that dies stays a target (so `up == 0` fires for it), which DNS,
//! listing only live nodes, would hide. Also the fleet's Alertmanagers
//! (lead and backup), for every node's Prometheus.
//!
//! Written atomically and only when the content changes; Prometheus
//! re-reads the file by itself.

use std::path::Path;

use cluster_db::{Node, Role};
use serde_json::json;

use crate::config::PrometheusSdConfig;

/// `nodes.json`: one target group per node, its Prometheus on its VPN
/// address, labelled with its name and role. Sorted by name, so the text
/// only changes when the registry does.
pub fn render_nodes(nodes: &[Node], cfg: &PrometheusSdConfig) -> String {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    let groups: Vec<serde_json::Value> = sorted
        .iter()
        .map(|n| {
            json!({
                "targets": [target(n, cfg.prometheus_port)],
                "labels": {"node": n.name.as_str(), "role": n.role.to_string()},
            })
        })
        .collect();
    pretty(&groups)
}

/// `alertmanagers.json`: the Alertmanagers of the lead and the backup.
pub fn render_alertmanagers(nodes: &[Node], cfg: &PrometheusSdConfig) -> String {
    let mut targets: Vec<String> = nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Lead | Role::Backup))
        .map(|n| target(n, cfg.alertmanager_port))
        .collect();
    targets.sort();
    pretty(&[json!({"targets": targets})])
}

fn target(n: &Node, port: u16) -> String {
    std::net::SocketAddr::new(n.vpn_ip, port).to_string()
}

fn pretty(v: &[serde_json::Value]) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// Writes both files into `cfg.dir` when their content changed. Returns
/// whether anything was written.
pub fn apply(cfg: &PrometheusSdConfig, dir: &Path, nodes: &[Node]) -> std::io::Result<bool> {
    let mut wrote = false;
    for (name, text) in [
        ("nodes.json", render_nodes(nodes, cfg)),
        ("alertmanagers.json", render_alertmanagers(nodes, cfg)),
    ] {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        write_atomically(&path, &text)?;
        wrote = true;
    }
    Ok(wrote)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role, ip: &str) -> Node {
        crate::wireguard::tests::node(name, role, ip, None, None)
    }

    fn fleet() -> Vec<Node> {
        vec![
            node("vengeance", Role::Compute, "10.0.0.3"),
            node("aurora", Role::Lead, "10.0.0.1"),
            node("star", Role::Backup, "10.0.0.2"),
        ]
    }

    #[test]
    fn every_registered_node_is_a_target_labelled_by_name_and_role() {
        let v: serde_json::Value =
            serde_json::from_str(&render_nodes(&fleet(), &PrometheusSdConfig::default())).unwrap();
        assert_eq!(
            v,
            json!([
                {"targets": ["10.0.0.1:9090"], "labels": {"node": "aurora", "role": "lead"}},
                {"targets": ["10.0.0.2:9090"], "labels": {"node": "star", "role": "backup"}},
                {"targets": ["10.0.0.3:9090"], "labels": {"node": "vengeance", "role": "compute"}},
            ])
        );
    }

    #[test]
    fn alertmanagers_are_the_lead_and_the_backup() {
        let v: serde_json::Value = serde_json::from_str(&render_alertmanagers(
            &fleet(),
            &PrometheusSdConfig::default(),
        ))
        .unwrap();
        assert_eq!(v, json!([{"targets": ["10.0.0.1:9093", "10.0.0.2:9093"]}]));
    }

    #[test]
    fn written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PrometheusSdConfig::default();
        assert!(apply(&cfg, dir.path(), &fleet()).unwrap());
        assert!(!apply(&cfg, dir.path(), &fleet()).unwrap());
        let mut more = fleet();
        more.push(node("iceland", Role::Compute, "10.0.0.4"));
        assert!(apply(&cfg, dir.path(), &more).unwrap());
        let text = std::fs::read_to_string(dir.path().join("nodes.json")).unwrap();
        assert!(text.contains("10.0.0.4:9090"), "{text}");
        assert!(!dir.path().join("nodes.tmp").exists());
    }
}

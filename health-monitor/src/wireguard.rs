//! The VPN mesh: this node's WireGuard peer list, rendered from the
//! registry and applied with `wg syncconf`, so a node added to the registry
//! is reachable from every node within one interval, with no restart.
//!
//! Peers come only from rows `cluster-db` validated (DNS-label names, host
//! addresses, well-formed keys and endpoints); a node without a public key
//! is not a peer. The file is rewritten only when its content changes.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;

use cluster_db::Node;

use crate::config::WireguardConfig;

/// The config file for `wg syncconf`: `[Interface]` (private key and port
/// when configured) and one `[Peer]` per other node with a public key.
pub fn render(
    own_name: &str,
    nodes: &[Node],
    cfg: &WireguardConfig,
    private_key: Option<&str>,
) -> String {
    let mut out = String::from(
        "# Written by health-monitor from aurora.nodes; local edits are overwritten.\n[Interface]\n",
    );
    if let Some(k) = private_key {
        let _ = writeln!(out, "PrivateKey = {}", k.trim());
    }
    let _ = writeln!(out, "ListenPort = {}", cfg.listen_port);
    let mut peers: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.name.as_str() != own_name && n.wg_public_key.is_some())
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    for n in peers {
        let prefix = if n.vpn_ip.is_ipv4() { 32 } else { 128 };
        let _ = write!(
            out,
            "\n# {} ({})\n[Peer]\nPublicKey = {}\nAllowedIPs = {}/{prefix}\n",
            n.name,
            n.role,
            n.wg_public_key.as_deref().unwrap_or_default(),
            n.vpn_ip
        );
        if let Some(ep) = &n.wg_endpoint {
            let _ = writeln!(out, "Endpoint = {ep}");
        }
        if cfg.keepalive_secs > 0 {
            let _ = writeln!(out, "PersistentKeepalive = {}", cfg.keepalive_secs);
        }
    }
    out
}

/// What [`apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Written,
    WrittenAndSynced,
}

/// Writes the file if it changed (0600, atomically) and, when an interface
/// is configured and `wg` exists, loads it with `wg syncconf`.
pub async fn apply(cfg: &WireguardConfig, path: &Path, text: &str) -> std::io::Result<Applied> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(Applied::Unchanged);
    }
    write_private(path, text)?;
    let Some(iface) = &cfg.interface else {
        return Ok(Applied::Written);
    };
    if sidecar_kit::cli::which("wg").is_none() {
        tracing::info!(interface = %iface, "`wg` not installed; peer file written, not applied");
        return Ok(Applied::Written);
    }
    let out = tokio::process::Command::new("wg")
        .arg("syncconf")
        .arg(iface)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await?;
    if out.status.success() {
        Ok(Applied::WrittenAndSynced)
    } else {
        Err(std::io::Error::other(format!(
            "wg syncconf {iface}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes `text` to `path` atomically, mode 600 from the first byte, fsynced
/// (the peer file; the join certificate's key).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use cluster_db::{NodeName, Role};

    /// A registry row for unit tests.
    pub(crate) fn node(
        name: &str,
        role: Role,
        ip: &str,
        key: Option<&str>,
        ep: Option<&str>,
    ) -> Node {
        Node {
            name: NodeName::parse(name).unwrap(),
            role,
            vpn_ip: ip.parse().unwrap(),
            wg_public_key: key.map(str::to_string),
            wg_endpoint: ep.map(str::to_string),
            labels: Default::default(),
            gpus: vec![],
            versions: Default::default(),
            registered_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn three_node_registry() {
        let nodes = vec![
            node(
                "vengeance",
                Role::Compute,
                "10.0.0.3",
                Some("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="),
                None,
            ),
            node(
                "aurora",
                Role::Lead,
                "10.0.0.1",
                Some("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="),
                Some("203.0.113.1:51820"),
            ),
            node(
                "star",
                Role::Backup,
                "10.0.0.2",
                Some("TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="),
                Some("star.example.net:51820"),
            ),
            node("nokey", Role::Compute, "10.0.0.9", None, None),
        ];
        let cfg = WireguardConfig::default();
        let got = render(
            "vengeance",
            &nodes,
            &cfg,
            Some("cHJpdmF0ZS1rZXktZm9yLXRlc3RzLW9ubHktMDAwMDA=\n"),
        );
        let expected = "\
# Written by health-monitor from aurora.nodes; local edits are overwritten.
[Interface]
PrivateKey = cHJpdmF0ZS1rZXktZm9yLXRlc3RzLW9ubHktMDAwMDA=
ListenPort = 51820

# aurora (lead)
[Peer]
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
AllowedIPs = 10.0.0.1/32
Endpoint = 203.0.113.1:51820
PersistentKeepalive = 25

# star (backup)
[Peer]
PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
AllowedIPs = 10.0.0.2/32
Endpoint = star.example.net:51820
PersistentKeepalive = 25
";
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");
        let cfg = WireguardConfig::default();
        assert_eq!(apply(&cfg, &path, "a\n").await.unwrap(), Applied::Written);
        assert_eq!(apply(&cfg, &path, "a\n").await.unwrap(), Applied::Unchanged);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

//! health-monitor's configuration.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use cluster_db::{Dsn, Role};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sidecar_kit::{AdminConfig, ConfigError, LogConfig, Secret, Validate};

/// Default admin port of `health-monitor`.
pub const DEFAULT_ADMIN_PORT: u16 = 8011;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub node: NodeConfig,
    pub database: DatabaseConfig,
    pub checks: ChecksConfig,
    pub wireguard: WireguardConfig,
    pub prometheus: PrometheusSdConfig,
    pub alerts: AlertsConfig,
    pub join: JoinConfig,
}

/// The join endpoint (see `join`), on the lead and the backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    /// Where the TLS join endpoint listens (the node's public address: a
    /// joining node is not in the VPN yet); unset = not served.
    pub listen: Option<SocketAddr>,
    /// `host:port` new nodes reach it at, written into every token.
    pub public_endpoint: Option<String>,
    /// The fleet's join certificate and key (PEM). Made, self-signed, when
    /// both are missing (the lead's first start); a backup receives the
    /// lead's when it joins, so a token works against either.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The fleet secrets (`fleet.env`) handed to joining nodes, each the
    /// subset its role needs.
    pub secrets_file: Option<PathBuf>,
    /// The cluster zone, told to joining nodes.
    pub zone: String,
    /// Join attempts one source address may make per minute.
    pub attempts_per_minute: u32,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            listen: None,
            public_endpoint: None,
            cert_file: PathBuf::from("/var/lib/aurora/join/join.crt"),
            key_file: PathBuf::from("/var/lib/aurora/join/join.key"),
            secrets_file: None,
            zone: "aurora.internal".into(),
            attempts_per_minute: 10,
        }
    }
}

/// Prometheus file-based discovery from the registry (see `prometheus_sd`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSdConfig {
    /// Directory for `nodes.json` (every node's Prometheus, for the lead's
    /// federation) and `alertmanagers.json`; unset = write nothing.
    pub sd_dir: Option<PathBuf>,
    /// Port of every node's Prometheus on its VPN address.
    pub prometheus_port: u16,
    /// Port of the Alertmanagers on the lead and the backup.
    pub alertmanager_port: u16,
}

impl Default for PrometheusSdConfig {
    fn default() -> Self {
        Self {
            sd_dir: None,
            prometheus_port: 9090,
            alertmanager_port: 9093,
        }
    }
}

/// Where status transitions are announced (see `alerts`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// The window in which a node that changes state more than once is
    /// announced as flapping (with the count). No change is suppressed.
    pub cooldown_secs: u64,
    /// Delivery attempts per webhook, with backoff.
    pub attempts: u32,
    pub timeout_secs: u64,
    /// PEM certificates trusted for `https://` webhooks besides the
    /// system's roots (a private CA, a self-signed relay).
    pub ca_file: Option<PathBuf>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: vec![],
            cooldown_secs: 300,
            attempts: 3,
            timeout_secs: 5,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://…` or `http://…`. A credential (a Slack incoming-webhook
    /// URL is its own secret): redacted by `--check-config`, and logged
    /// only as its scheme and host.
    pub url: Secret,
    /// `slack` (incoming-webhook `{"text": …}`) or `generic` (the transition as JSON).
    pub kind: WebhookKind,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<Secret>,
    /// Send `token` over plain `http://` (a relay on the same host or the
    /// VPN); refused otherwise, since anyone on the path would read it.
    #[serde(default)]
    pub allow_token_over_http: bool,
}

/// A webhook URL as it may be logged: scheme and host, never the path or
/// query (where Slack and others keep the secret) nor userinfo.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("?", ""));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    format!("{scheme}://{host}/…")
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    Slack,
    Generic,
}

/// The VPN mesh file (see `wireguard`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireguardConfig {
    /// Where to write the peer list; unset = do not manage WireGuard.
    pub config_path: Option<PathBuf>,
    /// Interface to load it into with `wg syncconf` (e.g. `wg0`); unset =
    /// only write the file.
    pub interface: Option<String>,
    /// File holding this node's private key (never logged); copied into
    /// `[Interface]` so `wg syncconf` keeps the interface's key.
    pub private_key_file: Option<PathBuf>,
    pub listen_port: u16,
    /// `PersistentKeepalive` for every peer (0 = off); keeps NAT mappings open.
    pub keepalive_secs: u16,
}

impl Default for WireguardConfig {
    fn default() -> Self {
        Self {
            config_path: None,
            interface: None,
            private_key_file: None,
            listen_port: 51820,
            keepalive_secs: 25,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name: a DNS label (required).
    pub name: String,
    /// `lead`, `backup` or `compute`.
    pub role: Role,
    /// This node's VPN address (required), inside `vpn_network`.
    pub vpn_ip: Option<IpAddr>,
    pub vpn_network: IpNet,
    pub wg_public_key: Option<String>,
    pub wg_endpoint: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The local PostgreSQL (reads: the fleet view).
    pub local_dsn: Dsn,
    /// The primary, wherever it is: a multi-host DSN with
    /// `target_session_attrs=read-write` (writes: registration, reports).
    pub write_dsn: Dsn,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    /// Seconds between rounds of checks (and reports). A node whose report
    /// is older than three intervals is `down`.
    pub interval_secs: u64,
    /// Each check's own time limit.
    pub timeout_secs: u64,
    /// Volumes whose free space is checked.
    #[serde(default)]
    pub disks: Vec<PathBuf>,
    pub disk_warning_percent: u8,
    pub disk_critical_percent: u8,
    pub memory_warning_percent: u8,
    pub memory_critical_percent: u8,
    /// 1-minute load per core above which the node is `warning`.
    pub load_warning_per_core: f64,
    /// Clock offset against the primary above which the node is `warning`.
    pub clock_warning_ms: u64,
    /// `host:port` of the local Redis, if any.
    pub redis: Option<String>,
    pub redis_password: Option<Secret>,
    /// Extra HTTP checks (every sidecar's `/health` goes here too).
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    /// Extra TCP checks: the address must accept a connection.
    #[serde(default)]
    pub tcp: Vec<TcpCheck>,
    /// repl-manager's admin URL on this node: the replication check reads
    /// role, lag and the synchronous state from its `/status`.
    pub repl_manager: Option<String>,
    /// A standby further behind than this is `warning`, and `critical`
    /// past the second limit.
    pub lag_warning_bytes: u64,
    pub lag_critical_bytes: u64,
    /// This node's sidecars (name → admin URL): each one's `/health` is a
    /// check.
    #[serde(default)]
    pub sidecars: BTreeMap<String, String>,
    /// GPU inventory at registration: `nvidia-smi` when it is on PATH.
    pub gpu_inventory: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub name: String,
    /// `http://…`; 2xx is passing, anything else critical.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub name: String,
    pub address: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: AdminConfig::on_port(DEFAULT_ADMIN_PORT),
            log: LogConfig::default(),
            node: NodeConfig {
                name: String::new(),
                role: Role::Compute,
                vpn_ip: None,
                vpn_network: IpNet::V4(
                    ipnet::Ipv4Net::new([10, 0, 0, 0].into(), 24).unwrap_or_default(),
                ),
                wg_public_key: None,
                wg_endpoint: None,
                labels: BTreeMap::new(),
            },
            database: DatabaseConfig {
                local_dsn: Dsn::local_default(false),
                write_dsn: Dsn::local_default(true),
                connect_timeout_secs: 3,
            },
            checks: ChecksConfig {
                interval_secs: 10,
                timeout_secs: 3,
                disks: vec![],
                disk_warning_percent: 80,
                disk_critical_percent: 90,
                memory_warning_percent: 90,
                memory_critical_percent: 97,
                load_warning_per_core: 2.0,
                clock_warning_ms: 500,
                redis: None,
                redis_password: None,
                http: vec![],
                tcp: vec![],
                repl_manager: None,
                lag_warning_bytes: 16 << 20,
                lag_critical_bytes: 256 << 20,
                sidecars: BTreeMap::new(),
                gpu_inventory: true,
            },
            wireguard: WireguardConfig::default(),
            prometheus: PrometheusSdConfig::default(),
            alerts: AlertsConfig::default(),
            join: JoinConfig::default(),
        }
    }
}

impl Validate for Config {
    fn env_list_keys() -> &'static [&'static str] {
        &["checks.disks"]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.admin.validate()?;
        self.log.validate()?;
        let n = &self.node;
        if n.name.is_empty() {
            return Err(ConfigError::new("node.name", "is required"));
        }
        cluster_db::NodeName::parse(&n.name)
            .map_err(|e| ConfigError::new("node.name", e.to_string()))?;
        let ip = n
            .vpn_ip
            .ok_or_else(|| ConfigError::new("node.vpn_ip", "is required"))?;
        if !n.vpn_network.contains(&ip) {
            return Err(ConfigError::new(
                "node.vpn_ip",
                format!("{ip} is outside node.vpn_network {}", n.vpn_network),
            ));
        }
        if let Some(k) = &n.wg_public_key {
            cluster_db::model::validate_wg_key(k)
                .map_err(|e| ConfigError::new("node.wg_public_key", e.to_string()))?;
        }
        if let Some(ep) = &n.wg_endpoint {
            cluster_db::model::validate_endpoint(ep)
                .map_err(|e| ConfigError::new("node.wg_endpoint", e.to_string()))?;
        }
        let c = &self.checks;
        if c.interval_secs == 0 || c.timeout_secs == 0 || c.timeout_secs > c.interval_secs {
            return Err(ConfigError::new(
                "checks.timeout_secs",
                "interval and timeout must be at least 1, and timeout at most the interval",
            ));
        }
        if c.disk_warning_percent >= c.disk_critical_percent || c.disk_critical_percent > 100 {
            return Err(ConfigError::new(
                "checks.disk_critical_percent",
                "must be above disk_warning_percent and at most 100",
            ));
        }
        if c.memory_warning_percent >= c.memory_critical_percent || c.memory_critical_percent > 100
        {
            return Err(ConfigError::new(
                "checks.memory_critical_percent",
                "must be above memory_warning_percent and at most 100",
            ));
        }
        for (i, h) in c.http.iter().enumerate() {
            if !h.url.starts_with("http://") || h.name.is_empty() {
                return Err(ConfigError::new(
                    format!("checks.http[{i}]"),
                    "needs a name and an http:// URL",
                ));
            }
        }
        if let Some(iface) = &self.wireguard.interface {
            let ok = !iface.is_empty()
                && iface.len() <= 15
                && iface
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(ConfigError::new(
                    "wireguard.interface",
                    format!("{iface:?} is not an interface name"),
                ));
            }
            if self.wireguard.config_path.is_none() {
                return Err(ConfigError::new(
                    "wireguard.config_path",
                    "is required when wireguard.interface is set",
                ));
            }
        }
        for (i, w) in self.alerts.webhooks.iter().enumerate() {
            // The URL is a credential: errors name the key, never the value.
            let url = w.url.expose();
            let plain = url.strip_prefix("http://");
            let rest = url.strip_prefix("https://").or(plain);
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err(ConfigError::new(
                    format!("alerts.webhooks[{i}].url"),
                    "is not an http:// or https:// URL with a host (value not shown: it is a credential)",
                ));
            }
            if plain.is_some() && w.token.is_some() && !w.allow_token_over_http {
                return Err(ConfigError::new(
                    format!("alerts.webhooks[{i}].token"),
                    "would be sent over plain http://; use https://, or set allow_token_over_http = true for a relay on a trusted path",
                ));
            }
        }
        if let Some(ca) = &self.alerts.ca_file {
            // Read now, so a bad file stops the sidecar before it starts.
            sidecar_kit::http_client::HttpClient::with_tls(
                std::time::Duration::from_secs(1),
                Some(ca),
            )
            .map_err(|e| ConfigError::new("alerts.ca_file", e.to_string()))?;
        }
        if self.alerts.timeout_secs == 0 {
            return Err(ConfigError::new(
                "alerts.timeout_secs",
                "must be at least 1",
            ));
        }
        let j = &self.join;
        if j.listen.is_some() {
            if j.secrets_file.is_none() {
                return Err(ConfigError::new(
                    "join.secrets_file",
                    "is required when join.listen is set (joining nodes receive the fleet secrets from it)",
                ));
            }
            if j.attempts_per_minute == 0 {
                return Err(ConfigError::new(
                    "join.attempts_per_minute",
                    "must be at least 1",
                ));
            }
        }
        if let Some(ep) = &j.public_endpoint {
            cluster_db::model::validate_endpoint(ep)
                .map_err(|e| ConfigError::new("join.public_endpoint", e.to_string()))?;
        }
        if j.zone.is_empty()
            || j.zone.len() > 253
            || j.zone
                .split('.')
                .any(|l| cluster_db::model::validate_label(l).is_err())
        {
            return Err(ConfigError::new(
                "join.zone",
                format!("{:?} is not a DNS name", j.zone),
            ));
        }
        if let Some(u) = &c.repl_manager {
            if !u.starts_with("http://") {
                return Err(ConfigError::new(
                    "checks.repl_manager",
                    format!("`{u}` is not an http:// URL"),
                ));
            }
        }
        for (name, u) in &c.sidecars {
            if !u.starts_with("http://") || name.is_empty() {
                return Err(ConfigError::new(
                    format!("checks.sidecars.{name}"),
                    format!("`{u}` is not an http:// URL"),
                ));
            }
        }
        if c.lag_warning_bytes >= c.lag_critical_bytes {
            return Err(ConfigError::new(
                "checks.lag_critical_bytes",
                "must be above checks.lag_warning_bytes",
            ));
        }
        for (i, t) in c.tcp.iter().enumerate() {
            if t.name.is_empty() || t.address.rsplit_once(':').is_none() {
                return Err(ConfigError::new(
                    format!("checks.tcp[{i}]"),
                    "needs a name and a host:port address",
                ));
            }
        }
        Ok(())
    }
}

sidecar_kit::sidecar_config!(Config);

//! dns-sync's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cluster_db::{Dsn, Role};

pub use crate::names::{ExtraRecord, ZoneName};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sidecar_kit::{AdminConfig, ConfigError, LogConfig, Validate};

/// Default admin port of `dns-sync`.
pub const DEFAULT_ADMIN_PORT: u16 = 8012;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub dns: DnsConfig,
    pub database: DatabaseConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP address the server answers on.
    pub listen: SocketAddr,
    /// The zone. `aurora.internal` by default; `.local` works but is
    /// reserved for mDNS (RFC 6762), so hosts with nss-mdns never ask us.
    pub zone: ZoneName,
    /// The VPN network: node addresses outside it are never served.
    pub vpn_network: IpNet,
    /// TTL of ordinary records.
    pub ttl_secs: u32,
    /// TTL of `db.<zone>`, short so clients follow a failover quickly.
    pub db_ttl_secs: u32,
    /// SOA minimum: how long resolvers cache a negative answer.
    pub negative_ttl_secs: u32,
    /// A node whose last health report is older than this is `down` and is
    /// left out of the multi-record names (`db-ro`, `replica`, `gpu`, SRV).
    /// Three health-monitor intervals by default.
    pub down_after_secs: u64,
    /// Addresses (CIDRs) allowed to transfer the zone (AXFR, over TCP).
    #[serde(default)]
    pub axfr_allow: Vec<IpNet>,
    /// Service names → the role whose nodes they point at.
    #[serde(default)]
    pub aliases: BTreeMap<String, Role>,
    /// SRV records `_<service>._tcp.<zone>` → port on every live node.
    #[serde(default)]
    pub srv: BTreeMap<String, u16>,
    /// Static records added to the zone.
    #[serde(default)]
    pub extra_records: Vec<ExtraRecord>,
    /// Seconds between polls of the database's change counter.
    pub refresh_secs: u64,
    /// Idle TCP connections are closed after this long.
    pub tcp_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The local PostgreSQL (a replica on the backup): libpq key/value or URL.
    pub dsn: Dsn,
    /// Read when the local database does not answer: typically every
    /// candidate primary with `target_session_attrs=read-write`, so that
    /// `db.<zone>` follows a failover even while this node's own PostgreSQL
    /// is down (the old lead's). Unset: the last good zone is served.
    #[serde(default)]
    pub fallback_dsn: Option<Dsn>,
    pub connect_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        let aliases = ["grafana", "prometheus", "assets"]
            .into_iter()
            .map(|a| (a.to_string(), Role::Lead))
            .collect();
        let srv = [
            ("repl-manager", 8008),
            ("asset-sync", 8010),
            ("health-monitor", 8011),
        ]
        .into_iter()
        .map(|(s, p)| (s.to_string(), p))
        .collect();
        Self {
            admin: AdminConfig::on_port(DEFAULT_ADMIN_PORT),
            log: LogConfig::default(),
            dns: DnsConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], 53)),
                zone: ZoneName::default_zone(),
                vpn_network: IpNet::V4(
                    ipnet::Ipv4Net::new([10, 0, 0, 0].into(), 24).unwrap_or_default(),
                ),
                ttl_secs: 30,
                db_ttl_secs: 5,
                negative_ttl_secs: 30,
                down_after_secs: 30,
                axfr_allow: vec![],
                aliases,
                srv,
                extra_records: vec![],
                refresh_secs: 1,
                tcp_timeout_secs: 10,
            },
            database: DatabaseConfig {
                dsn: Dsn::local_default(false),
                fallback_dsn: None,
                connect_timeout_secs: 3,
            },
        }
    }
}

impl Validate for Config {
    fn env_list_keys() -> &'static [&'static str] {
        &["dns.axfr_allow"]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.admin.validate()?;
        self.log.validate()?;
        let d = &self.dns;
        if d.refresh_secs == 0 || d.tcp_timeout_secs == 0 {
            return Err(ConfigError::new("dns.refresh_secs", "must be at least 1"));
        }
        for alias in d.aliases.keys() {
            cluster_db::model::validate_label(alias)
                .map_err(|e| ConfigError::new("dns.aliases", format!("{alias:?}: {e}")))?;
        }
        for service in d.srv.keys() {
            cluster_db::model::validate_label(service)
                .map_err(|e| ConfigError::new("dns.srv", format!("{service:?}: {e}")))?;
        }
        for (i, r) in d.extra_records.iter().enumerate() {
            crate::names::extra_record(d.zone.name(), r, d.ttl_secs)
                .map_err(|e| ConfigError::new(format!("dns.extra_records[{i}]"), e))?;
        }
        Ok(())
    }
}

sidecar_kit::sidecar_config!(Config);

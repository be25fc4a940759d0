//! The node config `aurora-cli` reads (`--config`, `$AURORA_CONFIG`, else
//! `/etc/aurora/node.toml`): who this node is, where its sidecars answer,
//! the admin token, the compose project, and what `backup` copies.
//!
//! Loaded with the same layered loader as the sidecars (defaults, file,
//! `AURORA_*` variables), so `AURORA_ADMIN__TOKEN` works here too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sidecar_kit::{ConfigError, Secret, Validate};

use crate::error::CliError;

pub const DEFAULT_PATH: &str = "/etc/aurora/node.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: Node,
    pub admin: Admin,
    pub sidecars: Sidecars,
    pub compose: Compose,
    pub backup: Backup,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The sidecars' shared admin token (mutating endpoints need it).
    pub token: Option<Secret>,
    /// How long to wait for a sidecar's answer to a read.
    pub timeout_secs: u64,
}

/// Admin URLs of this node's sidecars; an empty string means "not deployed
/// on this node" (dns-sync runs on the lead and the backup only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecars {
    pub repl_manager: String,
    pub health_monitor: String,
    pub asset_sync: String,
    pub dns_sync: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// The directory holding the node's `compose.yaml` (`docker compose`
    /// runs there).
    pub project_dir: PathBuf,
    /// The env file `docker compose` reads (`--env-file`): the node's
    /// variables, its image references among them. Unset: `node.env` in
    /// `project_dir` when it exists, else compose's own `.env`.
    pub env_file: Option<PathBuf>,
    /// How long `update` waits for a recreated service to turn healthy.
    pub health_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Where backups go unless `--dest` says otherwise.
    pub dest: PathBuf,
    /// libpq connection string `pg_basebackup` uses (a replication-capable
    /// role).
    pub dsn: Secret,
    /// PostgreSQL client binaries (`pg_basebackup`, `pg_verifybackup`);
    /// empty: on `PATH`, else the newest `/usr/lib/postgresql/<v>/bin`.
    pub bin_dir: Option<PathBuf>,
    /// The assets volume.
    pub assets_dir: PathBuf,
    /// The node's config and credentials directory.
    pub config_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node: Node {
                name: String::new(),
                role: "compute".into(),
            },
            admin: Admin {
                token: None,
                timeout_secs: 10,
            },
            sidecars: Sidecars {
                repl_manager: "http://127.0.0.1:8008".into(),
                health_monitor: "http://127.0.0.1:8011".into(),
                asset_sync: "http://127.0.0.1:8010".into(),
                dns_sync: String::new(),
            },
            compose: Compose {
                project_dir: PathBuf::from("/opt/aurora"),
                env_file: None,
                health_timeout_secs: 120,
            },
            backup: Backup {
                dest: PathBuf::from("/var/backups/aurora"),
                dsn: Secret::new("host=127.0.0.1 port=5432 user=postgres"),
                bin_dir: None,
                assets_dir: PathBuf::from("/assets"),
                config_dir: PathBuf::from("/etc/aurora"),
            },
        }
    }
}

impl Validate for NodeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.node.name.is_empty() {
            return Err(ConfigError::new("node.name", "is required"));
        }
        cluster_db::NodeName::parse(&self.node.name)
            .map_err(|e| ConfigError::new("node.name", e.to_string()))?;
        self.node
            .role
            .parse::<cluster_db::Role>()
            .map_err(|e| ConfigError::new("node.role", e.to_string()))?;
        if self.admin.timeout_secs == 0 {
            return Err(ConfigError::new("admin.timeout_secs", "must be at least 1"));
        }
        for (key, url, required) in [
            ("sidecars.repl_manager", &self.sidecars.repl_manager, true),
            (
                "sidecars.health_monitor",
                &self.sidecars.health_monitor,
                true,
            ),
            ("sidecars.asset_sync", &self.sidecars.asset_sync, false),
            ("sidecars.dns_sync", &self.sidecars.dns_sync, false),
        ] {
            if url.is_empty() && !required {
                continue;
            }
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(ConfigError::new(
                    key,
                    format!("`{url}` is not an http:// URL"),
                ));
            }
        }
        if self.compose.health_timeout_secs == 0 {
            return Err(ConfigError::new(
                "compose.health_timeout_secs",
                "must be at least 1",
            ));
        }
        cluster_db::DbTarget::parse(self.backup.dsn.expose())
            .map_err(|e| ConfigError::new("backup.dsn", e.to_string()))?;
        Ok(())
    }
}

impl NodeConfig {
    /// Loads the config from `flag`, `$AURORA_CONFIG` or the default path.
    /// Every problem is a usage error (exit 2) naming the file or key.
    pub fn load(flag: Option<&Path>) -> Result<Self, CliError> {
        let path =
            sidecar_kit::config::config_path(flag).unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        if !path.is_file() {
            return Err(CliError::usage(format!(
                "no node config at {}: pass --config PATH or set AURORA_CONFIG \
                 (`aurora-cli sandbox up` writes one per node)",
                path.display()
            )));
        }
        sidecar_kit::config::load::<NodeConfig>(Some(&path))
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
    }

    /// The admin URL of `sidecar` on this node, or `None` when not deployed.
    pub fn sidecar_url(&self, sidecar: crate::api::Sidecar) -> Option<&str> {
        use crate::api::Sidecar::*;
        let url = match sidecar {
            ReplManager => &self.sidecars.repl_manager,
            HealthMonitor => &self.sidecars.health_monitor,
            AssetSync => &self.sidecars.asset_sync,
            DnsSync => &self.sidecars.dns_sync,
        };
        (!url.is_empty()).then_some(url.trim_end_matches('/'))
    }
}

//! `DIR/sandbox.json`: the interface scripts rely on (zone, s3, and per node
//! its role, PostgreSQL, admin URLs and DNS address), plus what the sandbox
//! itself needs to stop, kill and restart what it started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use local_fleet::netns::NetworkState;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

pub const FILE: &str = "sandbox.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sandbox {
    pub zone: String,
    pub s3: Option<S3>,
    pub nodes: Vec<NodeEntry>,
    /// The sandbox directory (everything it wrote is under it).
    pub dir: PathBuf,
    pub created_at: String,
    /// The Garage server, when there is one.
    pub garage: Option<GarageEntry>,
    /// `--netns`: the namespaces and bridge.
    pub network: Option<NetworkState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct S3 {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GarageEntry {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub role: String,
    pub vpn_ip: String,
    /// The node config for `aurora-cli --config`.
    pub config: PathBuf,
    pub postgres: Postgres,
    /// Admin URL per sidecar; `null` where it is not deployed.
    pub admin: BTreeMap<String, Option<String>>,
    /// `ip:port` of dns-sync, or `null`.
    pub dns: Option<String>,
    /// The address the node's services listen on.
    pub host: String,
    /// `DIR/nodes/<name>`.
    pub dir: PathBuf,
    /// Its network namespace (`--netns`).
    pub netns: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Postgres {
    pub port: u16,
    pub dsn: String,
    pub data_dir: PathBuf,
}

impl NodeEntry {
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The sidecars deployed on this node, in start order (repl-manager
    /// first: it starts PostgreSQL).
    pub fn sidecars(&self) -> Vec<&'static str> {
        ["repl-manager", "health-monitor", "asset-sync", "dns-sync"]
            .into_iter()
            .filter(|s| self.admin.get(*s).is_some_and(Option::is_some))
            .collect()
    }

    pub fn admin_url(&self, sidecar: &str) -> Option<&str> {
        self.admin.get(sidecar).and_then(|u| u.as_deref())
    }
}

impl Sandbox {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    pub fn load(dir: &Path) -> CliResult<Self> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            CliError::usage(format!(
                "no sandbox in {} (no {FILE}); start one with `aurora-cli sandbox up --dir {}`",
                dir.display(),
                dir.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| CliError::failed(format!("{} is damaged: {e}", path.display())))
    }

    /// Writes the file atomically (a script may be reading it).
    pub fn save(&self) -> CliResult {
        let path = Self::path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CliError::failed(format!("encoding {FILE}: {e}")))?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| CliError::failed(format!("writing {}: {e}", path.display())))
    }

    pub fn node(&self, name: &str) -> CliResult<(usize, &NodeEntry)> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                CliError::usage(format!(
                    "node `{name}` is not in the sandbox (nodes: {})",
                    names.join(", ")
                ))
            })
    }
}

//! Garage's administration API, reached through its own CLI
//! (`garage json-api <Endpoint> <json>`): the node's Garage answers over its
//! RPC socket, so nothing listens for this on the host and no admin token is
//! needed; only what may run `garage` in its container may call it.
//!
//! The types hold only the fields this crate reads (Garage's v2 admin API,
//! camelCase); unknown fields are ignored so a newer Garage still parses.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How to run Garage's CLI: a program and the arguments before the
/// subcommand (`docker compose … exec -T garage /garage`, or
/// `garage -c /etc/garage.toml`).
#[derive(Clone, Debug)]
pub struct GarageCli {
    program: PathBuf,
    prefix: Vec<String>,
    /// Runs `docker compose` in this directory.
    dir: Option<PathBuf>,
}

/// One call that did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`garage {call}` gave no answer within {secs} s")]
    Timeout { call: String, secs: u64 },
    /// Garage refused or failed the call; `status` is the HTTP status the
    /// admin API would have answered, when Garage said it.
    #[error("`garage {call}`: {message}")]
    Refused {
        call: String,
        status: Option<u16>,
        message: String,
    },
    #[error("`garage {call}` answered something unexpected: {why}")]
    Decode { call: String, why: String },
}

impl GarageError {
    /// Garage answered "no such key/bucket".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                status: Some(404),
                ..
            }
        )
    }
}

/// A Garage node as the fleet names it: `NAME=ID@HOST:PORT` (what
/// `aurora-cli asset-origin setup` prints for the node it ran on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GaragePeer {
    pub name: String,
    pub id: String,
    pub addr: String,
}

impl GaragePeer {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (name, rest) = raw
            .split_once('=')
            .ok_or_else(|| format!("{raw:?} is not NAME=ID@HOST:PORT"))?;
        cluster_db::NodeName::parse(name).map_err(|e| format!("{name:?}: {e}"))?;
        let (id, addr) = rest
            .split_once('@')
            .ok_or_else(|| format!("{raw:?} is not NAME=ID@HOST:PORT"))?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{id:?} is not a Garage node ID (64 hex digits, from `garage node id`)"
            ));
        }
        let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(format!("{addr:?} is not HOST:PORT"));
        }
        Ok(Self {
            name: name.to_string(),
            id: id.to_ascii_lowercase(),
            addr: addr.to_string(),
        })
    }

    /// `ID@HOST:PORT`, as Garage connects to it.
    pub fn connect_string(&self) -> String {
        format!("{}@{}", self.id, self.addr)
    }
}

impl fmt::Display for GaragePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}@{}", self.name, self.id, self.addr)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub layout_version: u64,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    #[serde(default)]
    pub addr: Option<String>,
    pub is_up: bool,
    #[serde(default)]
    pub data_partition: Option<Space>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Space {
    pub total: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    pub version: u64,
    pub roles: Vec<LayoutRole>,
    #[serde(default)]
    pub staged_role_changes: Vec<StagedChange>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutRole {
    pub id: String,
    pub zone: String,
    #[serde(default)]
    pub capacity: Option<u64>,
}

/// A staged change: an assignment carries a zone; a removal carries
/// `remove: true`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedChange {
    pub id: String,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub remove: bool,
}

/// A role to stage: this node stores data in `zone`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub id: String,
    pub zone: String,
    pub tags: Vec<String>,
    pub capacity: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub access_key_id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketInfo {
    pub id: String,
    pub keys: Vec<BucketKey>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketKey {
    pub access_key_id: String,
    pub permissions: Permissions,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Permissions {
    #[serde(default)]
    pub read: bool,
    #[serde(default)]
    pub write: bool,
    #[serde(default)]
    pub owner: bool,
}

/// What `PreviewClusterLayoutChanges` says of the staged changes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Preview {
    Refused { error: String },
    Computed { message: Vec<String> },
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl GarageCli {
    /// `program prefix… <subcommand>`; `dir` is the working directory.
    pub fn new(program: PathBuf, prefix: Vec<String>, dir: Option<PathBuf>) -> Self {
        Self {
            program,
            prefix,
            dir,
        }
    }

    /// Runs `garage <args>` and returns its stdout.
    pub async fn run(&self, args: &[&str]) -> Result<String, GarageError> {
        let call = args.join(" ");
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.prefix)
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        let out = tokio::time::timeout(CALL_TIMEOUT, c.output())
            .await
            .map_err(|_| GarageError::Timeout {
                call: call.clone(),
                secs: CALL_TIMEOUT.as_secs(),
            })?
            .map_err(|source| GarageError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message =
            last_error_line(&stderr).unwrap_or_else(|| format!("exited with {}", out.status));
        Err(GarageError::Refused {
            call,
            status: http_status(&message),
            message,
        })
    }

    /// `garage json-api <endpoint> [<payload>]`, decoded.
    pub async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        payload: Option<Value>,
    ) -> Result<T, GarageError> {
        let body = payload.map(|p| p.to_string());
        let mut args = vec!["json-api", endpoint];
        if let Some(b) = &body {
            args.push(b);
        }
        let out = self.run(&args).await?;
        serde_json::from_str(&out).map_err(|e| GarageError::Decode {
            call: format!("json-api {endpoint}"),
            why: format!("{e}: {}", out.chars().take(200).collect::<String>()),
        })
    }

    /// This node's `ID@HOST:PORT` (from its key; answers before the server
    /// takes calls).
    pub async fn node_id(&self) -> Result<(String, String), GarageError> {
        let out = self.run(&["node", "id", "-q"]).await?;
        let line = out.trim();
        match line.split_once('@') {
            Some((id, addr)) if id.len() == 64 => Ok((id.to_string(), addr.to_string())),
            _ => Err(GarageError::Decode {
                call: "node id -q".into(),
                why: format!("{line:?} is not ID@HOST:PORT"),
            }),
        }
    }

    pub async fn connect(&self, peer: &GaragePeer) -> Result<(), GarageError> {
        #[derive(Deserialize)]
        struct Connected {
            success: bool,
            #[serde(default)]
            error: Option<String>,
        }
        let answers: Vec<Connected> = self
            .call("ConnectClusterNodes", Some(json!([peer.connect_string()])))
            .await?;
        match answers.first() {
            Some(a) if a.success => Ok(()),
            other => Err(GarageError::Refused {
                call: format!("node connect {}", peer.connect_string()),
                status: None,
                message: other
                    .and_then(|a| a.error.clone())
                    .unwrap_or_else(|| "not connected".into()),
            }),
        }
    }

    pub async fn status(&self) -> Result<ClusterStatus, GarageError> {
        self.call("GetClusterStatus", None).await
    }

    pub async fn layout(&self) -> Result<Layout, GarageError> {
        self.call("GetClusterLayout", None).await
    }

    pub async fn stage(&self, roles: &[Assignment]) -> Result<Layout, GarageError> {
        self.call("UpdateClusterLayout", Some(json!({ "roles": roles })))
            .await
    }

    pub async fn preview(&self) -> Result<Preview, GarageError> {
        self.call("PreviewClusterLayoutChanges", None).await
    }

    pub async fn apply(&self, version: u64) -> Result<Layout, GarageError> {
        #[derive(Deserialize)]
        struct Applied {
            layout: Layout,
        }
        let a: Applied = self
            .call("ApplyClusterLayout", Some(json!({ "version": version })))
            .await?;
        Ok(a.layout)
    }

    /// The key, or `None` when Garage has no such key.
    pub async fn key(&self, id: &str) -> Result<Option<KeyInfo>, GarageError> {
        match self.call("GetKeyInfo", Some(json!({ "id": id }))).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn import_key(
        &self,
        id: &str,
        secret: &str,
        name: &str,
    ) -> Result<KeyInfo, GarageError> {
        self.call(
            "ImportKey",
            Some(json!({ "accessKeyId": id, "secretAccessKey": secret, "name": name })),
        )
        .await
    }

    /// The bucket with this global alias, or `None`.
    pub async fn bucket(&self, alias: &str) -> Result<Option<BucketInfo>, GarageError> {
        match self
            .call("GetBucketInfo", Some(json!({ "globalAlias": alias })))
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_bucket(&self, alias: &str) -> Result<BucketInfo, GarageError> {
        self.call("CreateBucket", Some(json!({ "globalAlias": alias })))
            .await
    }

    pub async fn allow(
        &self,
        bucket_id: &str,
        key_id: &str,
        permissions: Permissions,
    ) -> Result<BucketInfo, GarageError> {
        self.call(
            "AllowBucketKey",
            Some(json!({
                "bucketId": bucket_id,
                "accessKeyId": key_id,
                "permissions": permissions,
            })),
        )
        .await
    }
}

/// Garage's CLI ends a failure with `Error: <what>`; docker's own failures
/// (no such service, daemon down) are one line too.
fn last_error_line(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .or(lines.last())?;
    Some(line.trim_start_matches("Error:").trim().to_string())
}

/// `NoSuchKey (404): …` → 404.
fn http_status(message: &str) -> Option<u16> {
    let open = message.find(" (")?;
    let rest = &message[open + 2..];
    let close = rest.find("):")?;
    rest[..close].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_parses_and_prints_back() {
        let id = "ab".repeat(32);
        let p = GaragePeer::parse(&format!("aurora={id}@10.0.0.1:3901")).unwrap();
        assert_eq!(p.name, "aurora");
        assert_eq!(p.addr, "10.0.0.1:3901");
        assert_eq!(p.to_string(), format!("aurora={id}@10.0.0.1:3901"));
        assert_eq!(p.connect_string(), format!("{id}@10.0.0.1:3901"));
    }

    #[test]
    fn a_bad_peer_names_what_is_wrong() {
        let id = "ab".repeat(32);
        for (raw, says) in [
            (format!("{id}@10.0.0.1:3901"), "NAME=ID@HOST:PORT"),
            (format!("Bad_Name={id}@10.0.0.1:3901"), "Bad_Name"),
            ("aurora=abc@10.0.0.1:3901".to_string(), "64 hex digits"),
            (format!("aurora={id}"), "NAME=ID@HOST:PORT"),
            (format!("aurora={id}@10.0.0.1"), "HOST:PORT"),
            (format!("aurora={id}@10.0.0.1:0"), "HOST:PORT"),
            (format!("aurora={}@10.0.0.1:3901", "g".repeat(64)), "64 hex"),
        ] {
            let e = GaragePeer::parse(&raw).unwrap_err();
            assert!(e.contains(says), "{raw}: {e}");
        }
    }

    #[test]
    fn garage_errors_keep_their_status() {
        let stderr = "2026-11-30T00:00:00Z  INFO garage_net: Connected\nError: NoSuchKey (404): Key not found: GK123\n";
        let m = last_error_line(stderr).unwrap();
        assert_eq!(m, "NoSuchKey (404): Key not found: GK123");
        assert_eq!(http_status(&m), Some(404));
        assert_eq!(http_status("Internal error: timeout"), None);
        assert_eq!(last_error_line(""), None);
    }

    #[test]
    fn both_answers_of_a_preview_parse() {
        let refused: Preview = serde_json::from_str(r#"{"error":"not enough nodes"}"#).unwrap();
        assert!(matches!(refused, Preview::Refused { .. }));
        let ok: Preview =
            serde_json::from_str(r#"{"message":["ok"],"newLayout":{"version":1}}"#).unwrap();
        assert!(matches!(ok, Preview::Computed { .. }));
    }
}

//! Talking to this node's sidecars over their admin APIs. Every failure
//! names the sidecar and the URL, and says what to try next.

use std::fmt;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sidecar_kit::http_client::{HttpClient, HttpError, HttpResponse};

use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sidecar {
    ReplManager,
    HealthMonitor,
    AssetSync,
    DnsSync,
}

impl Sidecar {
    pub const ALL: [Sidecar; 4] = [
        Sidecar::ReplManager,
        Sidecar::HealthMonitor,
        Sidecar::AssetSync,
        Sidecar::DnsSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sidecar::ReplManager => "repl-manager",
            Sidecar::HealthMonitor => "health-monitor",
            Sidecar::AssetSync => "asset-sync",
            Sidecar::DnsSync => "dns-sync",
        }
    }

    /// The key in `[sidecars]` that holds its URL.
    pub fn config_key(self) -> &'static str {
        match self {
            Sidecar::ReplManager => "sidecars.repl_manager",
            Sidecar::HealthMonitor => "sidecars.health_monitor",
            Sidecar::AssetSync => "sidecars.asset_sync",
            Sidecar::DnsSync => "sidecars.dns_sync",
        }
    }
}

impl fmt::Display for Sidecar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A JSON answer and its HTTP status (operations answer 409 with a reason,
/// which the caller turns into its own message).
pub struct Answer {
    pub sidecar: Sidecar,
    pub url: String,
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The answer when its status is a success, else a failure naming the
    /// URL, the status and the reason the sidecar gave.
    pub fn success(self) -> CliResult<Answer> {
        if self.status.is_success() {
            return Ok(self);
        }
        Err(CliError::failed(format!(
            "{} at {} answered {}: {}",
            self.sidecar,
            self.url,
            self.status,
            reason(&self.body)
        )))
    }

    /// The body as the contract type `T`; a body this build cannot read is
    /// a failure naming the field, not a silent default.
    pub fn read<T: DeserializeOwned>(&self, what: &str) -> CliResult<T> {
        serde_path_to_error::deserialize(&self.body).map_err(|e| {
            CliError::failed(format!(
                "{} at {} answered {what} with a document this aurora-cli cannot read: {e}",
                self.sidecar, self.url
            ))
        })
    }
}

pub struct Api<'a> {
    config: &'a NodeConfig,
    reads: HttpClient,
}

impl<'a> Api<'a> {
    pub fn new(config: &'a NodeConfig) -> Self {
        Self {
            config,
            reads: HttpClient::new(Duration::from_secs(config.admin.timeout_secs)),
        }
    }

    pub fn url(&self, sidecar: Sidecar) -> CliResult<&str> {
        self.config.sidecar_url(sidecar).ok_or_else(|| {
            CliError::usage(format!(
                "{sidecar} is not deployed on {} ({} is empty in the node config)",
                self.config.node.name,
                sidecar.config_key()
            ))
        })
    }

    /// `GET` a document of the HTTP contract: any non-2xx answer, or one
    /// this build cannot read, is a failure naming the URL.
    pub async fn read<T: DeserializeOwned>(&self, sidecar: Sidecar, path: &str) -> CliResult<T> {
        let base = self.url(sidecar)?.to_string();
        self.read_at(sidecar, &base, path).await
    }

    /// `GET` a JSON document whatever the status (`/cluster/health`
    /// answers 503 with its reasons).
    pub async fn get_any(&self, sidecar: Sidecar, path: &str) -> CliResult<Answer> {
        let base = self.url(sidecar)?.to_string();
        self.get_any_at(sidecar, &base, path).await
    }

    /// [`Api::read`] from `sidecar` on another node, at `base`.
    pub async fn read_at<T: DeserializeOwned>(
        &self,
        sidecar: Sidecar,
        base: &str,
        path: &str,
    ) -> CliResult<T> {
        self.get_any_at(sidecar, base, path)
            .await?
            .success()?
            .read(path)
    }

    async fn get_any_at(&self, sidecar: Sidecar, base: &str, path: &str) -> CliResult<Answer> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let resp = self
            .reads
            .get(&url)
            .await
            .map_err(|e| unreachable(sidecar, &e, self.config))?;
        versioned(sidecar, &url, &resp)?;
        let body = serde_json::from_slice(&resp.body)
            .unwrap_or_else(|_| Value::String(resp.text().trim().to_string()));
        Ok(Answer {
            sidecar,
            url,
            status: resp.status,
            body,
        })
    }

    /// `POST` with the admin token. Operations can take a while (a
    /// switchover waits for every member), so `timeout` is the caller's.
    pub async fn post(
        &self,
        sidecar: Sidecar,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> CliResult<Answer> {
        let base = self.url(sidecar)?.to_string();
        self.post_to(sidecar, &base, path, body, timeout).await
    }

    /// [`Api::post`] to `sidecar` on another node, at `base`.
    pub async fn post_to(
        &self,
        sidecar: Sidecar,
        base: &str,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> CliResult<Answer> {
        self.send_json(Method::POST, sidecar, base, path, body, timeout)
            .await
    }

    async fn send_json(
        &self,
        method: Method,
        sidecar: Sidecar,
        base: &str,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> CliResult<Answer> {
        let body = serde_json::to_value(body)
            .map_err(|e| CliError::failed(format!("cannot write the request to {path}: {e}")))?;
        self.send_to(method, sidecar, base, path, Some(&body), timeout)
            .await
    }

    /// `PATCH` with the admin token.
    pub async fn patch(
        &self,
        sidecar: Sidecar,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> CliResult<Answer> {
        let base = self.url(sidecar)?.to_string();
        self.send_json(Method::PATCH, sidecar, &base, path, body, timeout)
            .await
    }

    /// `DELETE` with the admin token.
    pub async fn delete(
        &self,
        sidecar: Sidecar,
        path: &str,
        timeout: Duration,
    ) -> CliResult<Answer> {
        let base = self.url(sidecar)?.to_string();
        self.send_to(Method::DELETE, sidecar, &base, path, None, timeout)
            .await
    }

    async fn send_to(
        &self,
        method: Method,
        sidecar: Sidecar,
        base: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> CliResult<Answer> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let token = self.config.admin.token.as_ref().ok_or_else(|| {
            CliError::usage(
                "admin.token is not set in the node config (or AURORA_ADMIN__TOKEN); \
                 operations need the sidecars' admin token",
            )
        })?;
        let client = HttpClient::new(timeout);
        let resp = client
            .send(method, &url, Some(token), body)
            .await
            .map_err(|e| unreachable(sidecar, &e, self.config))?;
        versioned(sidecar, &url, &resp)?;
        let body = serde_json::from_slice(&resp.body)
            .unwrap_or_else(|_| Value::String(resp.text().trim().to_string()));
        if resp.status == StatusCode::UNAUTHORIZED {
            return Err(CliError::usage(format!(
                "{sidecar} at {url} refused the admin token ({}); check admin.token in the node config",
                reason(&body)
            )));
        }
        Ok(Answer {
            sidecar,
            url,
            status: resp.status,
            body,
        })
    }
}

/// Refuses an answer written in a contract version newer than this build
/// reads, saying which side to upgrade (`aurora_api`'s version rule).
fn versioned(sidecar: Sidecar, url: &str, resp: &HttpResponse) -> CliResult {
    resp.api_version(url).map(drop).map_err(|e| {
        CliError::failed(format!(
            "{sidecar} is newer than this aurora-cli ({}): {e}",
            env!("CARGO_PKG_VERSION")
        ))
    })
}

fn unreachable(sidecar: Sidecar, e: &HttpError, config: &NodeConfig) -> CliError {
    CliError::failed(format!(
        "{sidecar} did not answer: {e} (is it running? {})",
        logs_hint(config, sidecar)
    ))
}

/// Where to look when `sidecar` does not answer, as this node runs it: a
/// compose stack has `aurora-cli logs`; a sandbox node runs processes that
/// log to `<node dir>/logs/<sidecar>.log`. A hint never names a command
/// that cannot work here.
pub fn logs_hint(config: &NodeConfig, sidecar: Sidecar) -> String {
    let dir = &config.compose.project_dir;
    let compose = [
        "compose.yaml",
        "compose.yml",
        "docker-compose.yaml",
        "docker-compose.yml",
    ]
    .iter()
    .any(|f| dir.join(f).is_file());
    if compose {
        return format!("`aurora-cli logs {sidecar}`");
    }
    let log = dir.join("logs").join(format!("{sidecar}.log"));
    if log.is_file() {
        return format!("its log is {}", log.display());
    }
    format!("this node runs no compose stack; check the process or service that runs {sidecar}")
}

/// The human reason in an error body (`{"error": "..."}`), or the body.
pub fn reason(body: &Value) -> String {
    body.get("error")
        .or_else(|| body.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn the_logs_hint_fits_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::default();
        config.compose.project_dir = dir.path().to_path_buf();
        // Neither a compose file nor a sandbox log: no command suggested.
        let h = logs_hint(&config, Sidecar::ReplManager);
        assert!(!h.contains("aurora-cli logs"), "{h}");
        // A sandbox node: its log file.
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("logs/repl-manager.log"), b"").unwrap();
        let h = logs_hint(&config, Sidecar::ReplManager);
        assert!(
            h.contains("logs/repl-manager.log") && !h.contains("aurora-cli logs"),
            "{h}"
        );
        // A compose node: the command.
        std::fs::write(dir.path().join("compose.yaml"), b"services: {}\n").unwrap();
        assert_eq!(
            logs_hint(&config, Sidecar::ReplManager),
            "`aurora-cli logs repl-manager`"
        );
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;
    use aurora_api::repl::{ClusterView, NodeState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in for a sidecar of another release (none exists yet to run):
    /// answers every request with `version` in the contract header and
    /// `body`.
    async fn sidecar_of_another_release(version: &str, body: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{}: {version}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            aurora_api::API_HEADER,
            body.len()
        );
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    /// `/cluster` read from a sidecar answering `version` and `body`.
    async fn cluster_from(version: &str, body: &str) -> CliResult<ClusterView> {
        let mut config = NodeConfig::default();
        config.sidecars.repl_manager = sidecar_of_another_release(version, body).await;
        Api::new(&config)
            .read(Sidecar::ReplManager, "/cluster")
            .await
    }

    #[tokio::test]
    async fn a_newer_compatible_sidecar_is_read_and_its_additions_ignored() {
        let body = r#"{"epoch":4,"primary":"a","since":"2030-01-01","members":[
            {"node":"a","role":"lead","state":"primary","api_url":"http://a","lease":{"v":2}},
            {"node":"b","role":"witness","state":"catching-up","api_url":"http://b"}]}"#;
        let c = cluster_from("1", body).await.unwrap();
        assert_eq!(c.epoch, 4);
        let b = c.member("b").unwrap();
        assert_eq!(b.status.state, NodeState::Other("catching-up".into()));
        assert_eq!(b.status.role.to_string(), "witness");
    }

    #[tokio::test]
    async fn an_incompatible_sidecar_is_refused_saying_what_to_upgrade() {
        let e = cluster_from("2", r#"{"cluster":{}}"#)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("repl-manager is newer than this aurora-cli")
                && e.contains("API version 2")
                && e.contains("upgrade"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[tokio::test]
    async fn an_answer_that_breaks_the_contract_names_the_field() {
        let e = cluster_from("1", r#"{"epoch":"four","members":[]}"#)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("epoch"), "{e}");
    }
}

//! A small HTTP/1.1 client for sidecar-to-sidecar calls (`/status`, votes,
//! `/sync`), the CLI and the test harness. Plain HTTP only: inter-node
//! traffic runs inside the WireGuard VPN.
//!
//! Every error names the URL that failed, since "connection refused" alone
//! does not tell an operator which of five sidecars is down.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: invalid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: answer is not the expected JSON: {reason}")]
    Decode { url: String, reason: String },
}

/// A response: status and the whole (small) body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { inner, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and returns whatever status came back.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        token: Option<&Secret>,
        json_body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse, HttpError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") {
            return Err(HttpError::InvalidUrl {
                url: url.to_string(),
                reason: "only http:// URLs are supported".into(),
            });
        }
        let body = match json_body {
            Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Bytes::new(),
        };
        let mut req = Request::builder().method(method).uri(uri);
        if json_body.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(token) = token {
            let value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    HttpError::InvalidUrl {
                        url: url.to_string(),
                        reason: "admin token contains characters not allowed in a header".into(),
                    }
                })?;
            req = req.header(AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;

        let call = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.to_string(),
                    reason: describe(&e),
                })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(HttpResponse { status, body })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            })?
    }

    pub async fn get(&self, url: &str) -> Result<HttpResponse, HttpError> {
        self.send(Method::GET, url, None, None).await
    }

    /// GETs `url` and decodes a 2xx JSON answer; anything else is an error.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, HttpError> {
        let resp = self.get(url).await?;
        ok_or_status(url, &resp)?;
        resp.json(url)
    }
}

/// Turns a non-2xx answer into [`HttpError::Status`], keeping the body's
/// `error` field when there is one.
pub fn ok_or_status(url: &str, resp: &HttpResponse) -> Result<(), HttpError> {
    if resp.status.is_success() {
        return Ok(());
    }
    let body = serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| resp.text().chars().take(200).collect());
    Err(HttpError::Status {
        url: url.to_string(),
        status: resp.status,
        body,
    })
}

/// hyper's client errors hide the useful part ("connection refused") in the
/// source chain.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

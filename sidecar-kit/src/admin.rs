//! The admin HTTP server every sidecar runs (hyper 1, HTTP/1.1).
//!
//! Built-in endpoints:
//! - `GET /health`  liveness: 200 (ok or degraded) or 503 (unhealthy), with reasons as JSON;
//! - `GET /ready`   readiness: 503 until the sidecar did its first real unit of work, and while draining;
//! - `GET /metrics` Prometheus text format;
//! - `GET /status`  sidecar-specific JSON.
//!
//! Rules that hold for every path, built-in or the sidecar's own:
//! - `HEAD` and `OPTIONS` answer exactly like `GET` without a body (HAProxy
//!   health checks written for Patroni use `OPTIONS`);
//! - every mutating method needs `Authorization: Bearer <admin.token>`,
//!   compared in constant time, checked *before* routing so an unauthenticated
//!   caller learns nothing and changes nothing (401);
//! - unknown paths are 404, a known path with the wrong method is 405 with `Allow`;
//! - errors are JSON: `{"error": "...", "detail": ...}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminConfig, Secret};
use crate::lifecycle::Lifecycle;
use crate::telemetry::Metrics;

/// Largest request body the admin server reads; admin calls are small JSON.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Overall state reported by `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    /// Alive and serving, but something needs attention (answers 200).
    Degraded,
    /// Not able to do its job (answers 503).
    Unhealthy,
}

/// The body of `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub reasons: Vec<String>,
    /// Extra sidecar-specific fields (ages, counters) merged into the body.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl HealthReport {
    pub fn ok() -> Self {
        Self {
            status: HealthStatus::Ok,
            reasons: Vec::new(),
            details: Default::default(),
        }
    }

    /// Records a problem; the report's status becomes the worse of the two.
    pub fn problem(&mut self, status: HealthStatus, reason: impl Into<String>) {
        self.status = self.status.max(status);
        self.reasons.push(reason.into());
    }

    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
        self
    }
}

/// A request as a sidecar's own handler sees it: body already read (bounded).
#[derive(Debug)]
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl AdminRequest {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Parses the body as JSON; an empty body is `{}` so optional-argument
    /// endpoints can be called with a bare `POST`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, AdminResponse> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| {
            AdminResponse::error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
        })
    }
}

/// A response from the admin server.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl AdminResponse {
    pub fn json(status: StatusCode, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|e| {
            format!("{{\"error\":\"response did not serialize: {e}\"}}").into_bytes()
        });
        Self {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: Bytes::from(body),
        }
    }

    pub fn ok(value: &impl Serialize) -> Self {
        Self::json(StatusCode::OK, value)
    }

    /// `{"error": message}` with the given status.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(
            status,
            &aurora_api::ErrorBody {
                error: message.into(),
                detail: None,
            },
        )
    }

    /// `{"error": message, "detail": detail}`.
    pub fn error_with(
        status: StatusCode,
        message: impl Into<String>,
        detail: impl Serialize,
    ) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": message.into(), "detail": detail }),
        )
    }

    pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// What a sidecar's own handler made of a request.
#[derive(Debug)]
pub enum Routed {
    Response(AdminResponse),
    NotFound,
    /// The path exists; these methods are allowed on it (for `Allow`).
    MethodNotAllowed(&'static str),
}

impl From<AdminResponse> for Routed {
    fn from(r: AdminResponse) -> Self {
        Routed::Response(r)
    }
}

/// What a sidecar plugs into the admin server.
pub trait AdminApi: Send + Sync + 'static {
    /// Liveness, with reasons. Called on every `GET /health`.
    fn health(&self) -> HealthReport {
        HealthReport::ok()
    }

    /// The sidecar's `GET /status` body. A sidecar that must do I/O to
    /// answer (repl-manager measures lag live) answers `/status` in
    /// [`AdminApi::handle`] instead; this is the fallback.
    fn status(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    /// The sidecar's own endpoints. Mutating requests reach this only after
    /// the token was checked; `HEAD`/`OPTIONS` arrive as `GET`.
    fn handle(&self, req: AdminRequest) -> impl Future<Output = Routed> + Send {
        let _ = req;
        async { Routed::NotFound }
    }

    /// Adds headers every answer carries (repl-manager puts the epoch here).
    fn decorate(&self, response: &mut AdminResponse) {
        let _ = response;
    }
}

/// An `AdminApi` with nothing of its own, for sidecars that only serve the
/// built-in endpoints.
pub struct BasicApi;
impl AdminApi for BasicApi {}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `config.listen` and starts serving. The bound address is also
    /// published on `lifecycle` (tests bind port 0).
    pub async fn start<A: AdminApi>(
        config: &AdminConfig,
        api: Arc<A>,
        metrics: Metrics,
        lifecycle: Lifecycle,
    ) -> Result<Self, std::io::Error> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind admin server to {}: {e}", config.listen),
            )
        })?;
        let addr = listener.local_addr()?;
        if config.token.is_none() {
            tracing::warn!("admin.token is not set: every mutating admin endpoint answers 401");
        }
        let shared = Arc::new(Shared {
            api,
            metrics,
            lifecycle: lifecycle.clone(),
            token: config.token.clone(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared, stop.clone()));
        lifecycle.set_admin_addr(addr);
        tracing::info!(%addr, "admin server listening");
        Ok(Self { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (at most `grace`),
    /// then closes.
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!("admin server connections did not close in time");
        }
    }
}

struct Shared<A> {
    api: Arc<A>,
    metrics: Metrics,
    lifecycle: Lifecycle,
    token: Option<Secret>,
}

async fn accept_loop<A: AdminApi>(
    listener: TcpListener,
    shared: Arc<Shared<A>>,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(serve(req, &shared).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn serve<A: AdminApi>(req: Request<Incoming>, shared: &Shared<A>) -> Response<Full<Bytes>> {
    let original = req.method().clone();
    let bodiless = original == Method::HEAD || original == Method::OPTIONS;
    let mut response = route(req, shared).await;
    shared.api.decorate(&mut response);
    // Every answer says which contract version it is written in, so a
    // client of another release can tell whether it can read it.
    response.headers.push((
        HeaderName::from_static(aurora_api::API_HEADER),
        HeaderValue::from(aurora_api::API_VERSION),
    ));

    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    let body = if bodiless {
        Bytes::new()
    } else {
        response.body
    };
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn route<A: AdminApi>(req: Request<Incoming>, shared: &Shared<A>) -> AdminResponse {
    let (parts, body) = req.into_parts();
    let method = match parts.method {
        Method::HEAD | Method::OPTIONS => Method::GET,
        m => m,
    };
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());

    if is_mutating(&method) {
        if let Err(denied) = authorize(&parts.headers, shared.token.as_ref()) {
            return denied;
        }
    }

    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                AdminResponse::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {MAX_BODY_BYTES} bytes"),
                )
            } else {
                AdminResponse::error(StatusCode::BAD_REQUEST, format!("unreadable body: {e}"))
            };
        }
    };

    if let Some(response) = builtin(&method, &path, shared) {
        return response;
    }

    let request = AdminRequest {
        method,
        path,
        query,
        headers: parts.headers,
        body,
    };
    let is_status = path_is_status(&request.path);
    match shared.api.handle(request).await {
        Routed::Response(r) => r,
        // A sidecar whose status needs I/O answers `/status` in `handle`;
        // the others get the synchronous `status()`.
        Routed::NotFound if is_status => AdminResponse::ok(&shared.api.status()),
        Routed::NotFound => AdminResponse::error(StatusCode::NOT_FOUND, "no such endpoint"),
        Routed::MethodNotAllowed(allow) => method_not_allowed(allow),
    }
}

fn method_not_allowed(allow: &'static str) -> AdminResponse {
    AdminResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; allowed: {allow}"),
    )
    .with_header(ALLOW, HeaderValue::from_static(allow))
}

fn builtin<A: AdminApi>(method: &Method, path: &str, shared: &Shared<A>) -> Option<AdminResponse> {
    let known = matches!(path, "/health" | "/ready" | "/metrics" | "/status");
    if !known {
        return None;
    }
    if path == "/status" && method == Method::GET {
        // Served after the sidecar's own handler had its chance.
        return None;
    }
    if method != Method::GET {
        return Some(method_not_allowed("GET, HEAD, OPTIONS"));
    }
    Some(match path {
        "/health" => {
            let report = shared.api.health();
            let status = if report.status == HealthStatus::Unhealthy {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            AdminResponse::json(status, &report)
        }
        "/ready" => match shared.lifecycle.not_ready_reason() {
            None => AdminResponse::ok(&serde_json::json!({ "ready": true })),
            Some(reason) => AdminResponse::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "ready": false, "reason": reason }),
            ),
        },
        "/metrics" => match shared.metrics.encode() {
            Ok(text) => AdminResponse::text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ),
            Err(e) => AdminResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("metrics did not encode: {e}"),
            ),
        },
        _ => AdminResponse::ok(&shared.api.status()),
    })
}

fn path_is_status(path: &str) -> bool {
    path == "/status"
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks `Authorization: Bearer <token>` in constant time (for equal-length
/// inputs; the length of the configured token is not a secret worth hiding).
fn authorize(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), AdminResponse> {
    let unauthorized = |msg: &str| {
        AdminResponse::error(StatusCode::UNAUTHORIZED, msg)
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    };
    let Some(expected) = token else {
        return Err(unauthorized(
            "admin token not configured on this sidecar; mutating endpoints are disabled",
        ));
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => Err(unauthorized(
            "missing `Authorization: Bearer <admin token>`",
        )),
        Some(p) if bool::from(p.as_bytes().ct_eq(expected.expose().as_bytes())) => Ok(()),
        Some(_) => Err(unauthorized("wrong admin token")),
    }
}

/// Splits `a=1&b=two` into a map; percent-decoding covers what callers send
/// (`lag=10MB`, `lag=1s`, node names).
fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match (bytes[i], decoded) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some("lag=10MB&node=star%2Dx&flag&sp=a+b&bad=%zz&end=%4"));
        assert_eq!(q["lag"], "10MB");
        assert_eq!(q["node"], "star-x");
        assert_eq!(q["flag"], "");
        assert_eq!(q["sp"], "a b");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["end"], "%4");
    }

    #[test]
    fn auth_rules() {
        let token = Secret::new("0123456789abcdef0123");
        let mut h = HeaderMap::new();
        assert!(authorize(&h, Some(&token)).is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert!(authorize(&h, Some(&token)).is_err());
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef0123"),
        );
        assert!(authorize(&h, Some(&token)).is_ok());
        assert!(authorize(&h, None).is_err());
    }
}

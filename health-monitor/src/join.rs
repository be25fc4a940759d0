//! The join endpoint: a new node's first contact with the fleet.
//!
//! Served on its own TLS listener (`join.listen`) by the lead's and the
//! backup's health-monitor, with the fleet's join certificate, whose
//! SHA-256 every join token carries, so the new node refuses any other
//! server before it sends its token. `POST /v1/join` with
//! `Authorization: Bearer <id>.<secret>` checks the one-use token, picks
//! the node's VPN address and registers it in one transaction on the
//! primary (`cluster_db::join`), and answers with the mesh, the zone and
//! the fleet secrets the node's role needs. Every health-monitor's peer
//! file follows the registry, so the existing nodes add the new peer
//! within one interval.
//!
//! Hostile input is bounded and counted: attempts per source address and
//! minute (`join.attempts_per_minute`), handshakes and headers by time,
//! bodies by size; every refusal is a 4xx naming what was wrong and is
//! counted in `aurora_health_monitor_join_requests_total{outcome}`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_api::join::{JoinAnswer, JoinPeer, JoinRequest, JOIN_PATH};
use bytes::Bytes;
use cluster_db::join::{Claim, Refusal};
use cluster_db::{NodeName, Role};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounterVec;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, JoinConfig};

/// The largest join request read.
const MAX_BODY: usize = 16 * 1024;
/// A TLS handshake or a request's headers that take longer are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The admission transaction (its commit waits for the synchronous standby).
const ADMIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Join connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Source addresses remembered by the rate limiter at most.
const MAX_TRACKED: usize = 4096;

/// Fleet secrets every joining node receives.
const SECRETS_ALL: &[&str] = &[
    "ADMIN_TOKEN",
    "REPLICATION_PASSWORD",
    "POSTGRES_PASSWORD",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
];
/// And the backup, which runs the second Garage node and serves joins.
const SECRETS_BACKUP: &[&str] = &["GARAGE_RPC_SECRET", "GARAGE_ADMIN_TOKEN"];
/// And, where the fleet records it, the number of copies the lead's Garage
/// keeps: the backup's must keep the same (Garage shuts a node down when a
/// peer has a higher factor). Fleets installed before it was recorded lack it.
const SETTINGS_BACKUP: &[&str] = &["GARAGE_REPLICATION_FACTOR"];

#[derive(Debug, thiserror::Error)]
pub enum JoinSetupError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("join certificate: {0}")]
    Certificate(String),
    #[error("cannot bind the join endpoint to {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> JoinSetupError {
    JoinSetupError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The join certificate: loaded, or created (self-signed) when neither file
/// exists yet, as on a lead's first start.
pub struct JoinCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
    pub fingerprint: [u8; 32],
    der: CertificateDer<'static>,
}

impl JoinCertificate {
    pub fn load_or_create(cfg: &JoinConfig) -> Result<Self, JoinSetupError> {
        let (cert, key) = (&cfg.cert_file, &cfg.key_file);
        match (cert.exists(), key.exists()) {
            (false, false) => {
                let made = rcgen::generate_simple_self_signed(vec!["aurora-join".to_string()])
                    .map_err(|e| JoinSetupError::Certificate(e.to_string()))?;
                write_private(key, &made.key_pair.serialize_pem())?;
                write_private(cert, &made.cert.pem())?;
                tracing::info!(cert = %cert.display(), "created the fleet's join certificate");
            }
            (true, true) => {}
            _ => {
                return Err(JoinSetupError::Certificate(format!(
                    "{} and {} must both exist or both be missing (then a new pair is made): restore the missing one from the lead, or, on a lead that has issued no token yet, delete the other",
                    cert.display(),
                    key.display()
                )))
            }
        }
        let certificate_pem = std::fs::read_to_string(cert).map_err(|e| file_error(cert, e))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| file_error(key, e))?;
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| file_error(cert, format!("not a PEM certificate: {e}")))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| file_error(key, format!("not a PEM private key: {e}")))?;
        let loaded = Self {
            fingerprint: sidecar_kit::http_client::certificate_fingerprint(&der),
            certificate_pem,
            key_pem,
            der,
        };
        // A key that does not match the certificate fails here, at start.
        loaded.server_config()?;
        Ok(loaded)
    }

    fn server_config(&self) -> Result<rustls::ServerConfig, JoinSetupError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| JoinSetupError::Certificate(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| JoinSetupError::Certificate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .map_err(|e| {
                JoinSetupError::Certificate(format!("certificate and key do not match: {e}"))
            })
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), JoinSetupError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    crate::wireguard::write_private(path, text).map_err(|e| file_error(path, e))
}

/// At most `limit` attempts per source address in any one-minute window.
/// Pure over the time it is given.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            seen: HashMap::new(),
        }
    }

    /// `Ok` when `from` may make an attempt at `now`; else how long until
    /// it may.
    pub fn check(&mut self, from: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.seen.len() >= MAX_TRACKED {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.seen.len() >= MAX_TRACKED {
                // A flood from many addresses: everyone waits a window.
                return Err(self.window);
            }
        }
        let entry = self.seen.entry(from).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// The fleet secrets a `role` node receives, from the lines of `fleet.env`.
pub fn secrets_for(role: Role, fleet_env: &str) -> Result<BTreeMap<String, String>, String> {
    let all: BTreeMap<&str, &str> = fleet_env
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let wanted = SECRETS_ALL.iter().chain(if role == Role::Backup {
        SECRETS_BACKUP
    } else {
        &[]
    });
    let mut out = BTreeMap::new();
    for key in wanted {
        let value = all
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{key} is missing from the fleet secrets file"))?;
        out.insert((*key).to_string(), (*value).to_string());
    }
    if role == Role::Backup {
        for key in SETTINGS_BACKUP {
            if let Some(value) = all.get(key).filter(|v| !v.is_empty()) {
                out.insert((*key).to_string(), (*value).to_string());
            }
        }
    }
    Ok(out)
}

/// What the endpoint needs, shared by every connection.
pub struct JoinService {
    config: Config,
    certificate: JoinCertificate,
    limiter: Mutex<RateLimiter>,
    requests: IntCounterVec,
}

/// Every outcome label, registered up front so dashboards see zeros.
pub const OUTCOMES: &[&str] = &[
    "joined",
    "answered_again",
    "rate_limited",
    "bad_request",
    "token_missing",
    "token_invalid",
    "token_expired",
    "token_used",
    "role_not_allowed",
    "lead_role",
    "backup_exists",
    "name_taken",
    "address_taken",
    "address_outside_network",
    "network_full",
    "unavailable",
    "tls_failed",
];

impl JoinService {
    pub fn new(config: Config, certificate: JoinCertificate, requests: IntCounterVec) -> Self {
        let limit = config.join.attempts_per_minute;
        Self {
            config,
            certificate,
            limiter: Mutex::new(RateLimiter::new(limit, Duration::from_secs(60))),
            requests,
        }
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        self.certificate.fingerprint
    }

    fn count(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let (outcome, status, body, retry) = match self.admit(req, peer).await {
            Ok((answer, again)) => (
                if again { "answered_again" } else { "joined" },
                StatusCode::OK,
                serde_json::to_vec(&answer),
                None,
            ),
            Err(r) => (
                r.outcome,
                r.status,
                serde_json::to_vec(&aurora_api::ErrorBody {
                    error: r.message.clone(),
                    detail: None,
                }),
                r.retry_after,
            ),
        };
        self.count(outcome);
        let mut response = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .header(aurora_api::API_HEADER, aurora_api::API_VERSION);
        if let Some(secs) = retry {
            response = response.header(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    async fn admit(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<(JoinAnswer, bool), Rejected> {
        if req.uri().path() != JOIN_PATH {
            return Err(Rejected::new(
                "bad_request",
                StatusCode::NOT_FOUND,
                format!("no such endpoint; joins go to POST {JOIN_PATH}"),
            ));
        }
        if req.method() != Method::POST {
            return Err(Rejected::new(
                "bad_request",
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{JOIN_PATH} takes POST"),
            ));
        }
        let limited = self
            .limiter
            .lock()
            .map_err(|_| Rejected::unavailable("rate limiter poisoned".into()))?
            .check(peer.ip(), Instant::now());
        if let Err(wait) = limited {
            tracing::warn!(from = %peer.ip(), "join attempts over the limit");
            let mut r = Rejected::new(
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "more than {} join attempts from {} in a minute; retry in {} s",
                    self.config.join.attempts_per_minute,
                    peer.ip(),
                    wait.as_secs().max(1)
                ),
            );
            r.retry_after = Some(wait.as_secs());
            return Err(r);
        }
        let bearer = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let Some((token_id, secret)) = aurora_api::join::parse_bearer(bearer) else {
            return Err(Rejected::new(
                "token_missing",
                StatusCode::UNAUTHORIZED,
                "missing or malformed join token (Authorization: Bearer <id>.<secret>)".into(),
            ));
        };
        let (token_id, secret_sha256) = (
            token_id.to_string(),
            aurora_api::join::to_hex(&sha2::Sha256::digest(secret.as_bytes())),
        );
        // A client that trickles its body is cut off like one that
        // trickles its headers.
        let body = Limited::new(req.into_body(), MAX_BODY).collect();
        let body = match tokio::time::timeout(HANDSHAKE_TIMEOUT, body).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                return Err(Rejected::new(
                    "bad_request",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the join request is unreadable or over {MAX_BODY} bytes"),
                ))
            }
        };
        let request: JoinRequest = {
            let de = &mut serde_json::Deserializer::from_slice(&body);
            serde_path_to_error::deserialize(de)
                .map_err(|e| Rejected::bad(format!("invalid join request: {e}")))?
        };
        let claim = claim(&request, token_id, secret_sha256, peer).map_err(Rejected::bad)?;

        let network = self.config.node.vpn_network;
        let admitted = tokio::time::timeout(ADMIT_TIMEOUT, async {
            let mut client = cluster_db::connect(
                self.config.database.write_dsn.target(),
                Duration::from_secs(self.config.database.connect_timeout_secs.max(1)),
            )
            .await?;
            // The answer's mesh must hold this node: a join served before
            // its own first registration would leave the new node without
            // a peer to reach the fleet through. Ask again shortly.
            let own = &self.config.node;
            let registered = cluster_db::queries::list_nodes(&client)
                .await?
                .nodes
                .iter()
                .any(|n| {
                    n.name.as_str() == own.name
                        && (own.wg_public_key.is_none() || n.wg_public_key == own.wg_public_key)
                });
            if !registered {
                return Ok(None);
            }
            let outcome = cluster_db::join::admit(&mut client, &network, &claim).await?;
            let members = match &outcome {
                Ok(_) => cluster_db::queries::list_nodes(&client).await?.nodes,
                Err(_) => Vec::new(),
            };
            Ok::<_, cluster_db::DbError>(Some((outcome, members)))
        })
        .await;
        let (admission, members) = match admitted {
            Err(_) => {
                return Err(Rejected::unavailable(format!(
                    "the primary did not admit the node within {} s",
                    ADMIT_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => {
                return Err(Rejected::unavailable(format!(
                    "cannot reach the primary: {e}"
                )))
            }
            Ok(Ok(None)) => {
                return Err(Rejected::unavailable(format!(
                    "{} has not registered itself in the fleet yet; retry in a few seconds",
                    self.config.node.name
                )))
            }
            Ok(Ok(Some((Err(refusal), _)))) => {
                tracing::warn!(from = %peer.ip(), node = %claim.name, reason = refusal.kind(), "join refused");
                return Err(Rejected::refused(&refusal));
            }
            Ok(Ok(Some((Ok(admission), members)))) => (admission, members),
        };
        let node = admission.node;
        if admission.again {
            tracing::info!(from = %peer.ip(), node = %node.name, "join answered again (same node, same key)");
        } else {
            tracing::info!(from = %peer.ip(), node = %node.name, role = %node.role, vpn_ip = %node.vpn_ip, "node joined");
        }
        Ok((self.answer(node, members)?, admission.again))
    }

    fn answer(
        &self,
        node: cluster_db::Node,
        members: Vec<cluster_db::Node>,
    ) -> Result<JoinAnswer, Rejected> {
        let j = &self.config.join;
        let secrets = match &j.secrets_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Rejected::unavailable(format!(
                        "cannot read the fleet secrets {}: {e}",
                        path.display()
                    ))
                })?;
                secrets_for(node.role, &text).map_err(Rejected::unavailable)?
            }
            None => BTreeMap::new(),
        };
        let backup = node.role == Role::Backup;
        Ok(JoinAnswer {
            name: node.name.to_string(),
            role: node.role.as_str().into(),
            vpn_ip: node.vpn_ip,
            vpn_network: self.config.node.vpn_network.to_string(),
            zone: j.zone.clone(),
            members: members
                .into_iter()
                .map(|n| JoinPeer {
                    name: n.name.to_string(),
                    role: n.role.as_str().into(),
                    vpn_ip: n.vpn_ip,
                    wg_public_key: n.wg_public_key,
                    wg_endpoint: n.wg_endpoint,
                })
                .collect(),
            secrets,
            join_certificate: backup.then(|| self.certificate.certificate_pem.clone()),
            join_key: backup.then(|| self.certificate.key_pem.clone()),
        })
    }
}

/// The request, checked for shape: every field a one-line reason.
fn claim(
    r: &JoinRequest,
    token_id: String,
    secret_sha256: String,
    peer: SocketAddr,
) -> Result<Claim, String> {
    let name = NodeName::parse(&r.name).map_err(|e| format!("name: {e}"))?;
    let role: Role = r.role.as_str().parse().map_err(|e| format!("role: {e}"))?;
    cluster_db::model::validate_wg_key(&r.wg_public_key)
        .map_err(|e| format!("wg_public_key: {e}"))?;
    if let Some(ep) = &r.wg_endpoint {
        cluster_db::model::validate_endpoint(ep).map_err(|e| format!("wg_endpoint: {e}"))?;
    }
    Ok(Claim {
        token_id,
        secret_sha256,
        name,
        role,
        wg_public_key: r.wg_public_key.clone(),
        wg_endpoint: r.wg_endpoint.clone(),
        vpn_ip: r.vpn_ip,
        from: peer.ip().to_string(),
    })
}

/// A refused request: its metric label, status and one-line reason.
struct Rejected {
    outcome: &'static str,
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl Rejected {
    fn new(outcome: &'static str, status: StatusCode, message: String) -> Self {
        Self {
            outcome,
            status,
            message,
            retry_after: None,
        }
    }

    fn bad(message: String) -> Self {
        Self::new("bad_request", StatusCode::BAD_REQUEST, message)
    }

    fn unavailable(message: String) -> Self {
        let mut r = Self::new("unavailable", StatusCode::SERVICE_UNAVAILABLE, message);
        r.retry_after = Some(5);
        r
    }

    fn refused(refusal: &Refusal) -> Self {
        let status = match refusal {
            _ if refusal.is_token() => StatusCode::UNAUTHORIZED,
            Refusal::RoleNotAllowed { .. } | Refusal::LeadRole => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        };
        Self::new(refusal.kind(), status, refusal.to_string())
    }
}

/// The join listener, bound by the caller (tests bind port 0).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, JoinSetupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| JoinSetupError::Bind {
            addr,
            reason: e.to_string(),
        })
}

/// Serves joins on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    service: Arc<JoinService>,
    stop: CancellationToken,
) -> Result<(), JoinSetupError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(service.certificate.server_config()?));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, fingerprint = %aurora_api::join::to_hex(&service.fingerprint()), "join endpoint listening");
    }
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Joins are rare: a bounded number of connections at once, so a flood
    // of half-open ones cannot take the sidecar's memory or descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "join accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(from = %peer, error = %e, "join TLS handshake failed");
                    service.count("tls_failed");
                    return;
                }
                Err(_) => {
                    service.count("tls_failed");
                    return;
                }
            };
            let svc = service.clone();
            let handler = hyper::service::service_fn(move |req| {
                let svc = svc.clone();
                async move { Ok::<_, Infallible>(svc.handle(req, peer).await) }
            });
            // One request per connection: an idle keep-alive would hold a
            // slot for nothing.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), handler);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(from = %peer, error = %e, "join connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_budget_per_window() {
        let mut l = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a, t0).is_ok());
        }
        let wait = l.check(a, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(l.check(b, t0).is_ok(), "another address is not limited");
        assert!(
            l.check(a, t0 + Duration::from_secs(60)).is_ok(),
            "a new window"
        );
    }

    #[test]
    fn a_flood_from_many_addresses_is_bounded_in_memory() {
        let mut l = RateLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            assert!(l.check(IpAddr::V4(i.into()), t0).is_ok());
        }
        assert!(l.check("198.51.100.1".parse().unwrap(), t0).is_err());
        assert!(l.seen.len() <= MAX_TRACKED);
        // Once the window passed, the old entries go.
        assert!(l
            .check(
                "198.51.100.1".parse().unwrap(),
                t0 + Duration::from_secs(61)
            )
            .is_ok());
        assert_eq!(l.seen.len(), 1);
    }

    #[test]
    fn each_role_gets_only_the_secrets_it_needs() {
        let env = "# fleet\nADMIN_TOKEN=a\nREPLICATION_PASSWORD=r\nPOSTGRES_PASSWORD=p\nGARAGE_RPC_SECRET=g\nGARAGE_ADMIN_TOKEN=t\nS3_ACCESS_KEY_ID=GK1\nS3_SECRET_ACCESS_KEY=s\n";
        let compute = secrets_for(Role::Compute, env).unwrap();
        assert_eq!(compute.len(), 5);
        assert!(!compute.contains_key("GARAGE_RPC_SECRET"));
        let backup = secrets_for(Role::Backup, env).unwrap();
        assert_eq!(backup.len(), 7);
        assert_eq!(backup["GARAGE_ADMIN_TOKEN"], "t");
        let e = secrets_for(Role::Compute, "ADMIN_TOKEN=a\n").unwrap_err();
        assert!(e.contains("REPLICATION_PASSWORD"), "{e}");
    }

    #[test]
    fn a_backup_gets_the_fleets_garage_copies_where_it_is_recorded() {
        let env = "ADMIN_TOKEN=a\nREPLICATION_PASSWORD=r\nPOSTGRES_PASSWORD=p\nGARAGE_RPC_SECRET=g\nGARAGE_ADMIN_TOKEN=t\nS3_ACCESS_KEY_ID=GK1\nS3_SECRET_ACCESS_KEY=s\nGARAGE_REPLICATION_FACTOR=1\n";
        let backup = secrets_for(Role::Backup, env).unwrap();
        assert_eq!(backup["GARAGE_REPLICATION_FACTOR"], "1");
        let compute = secrets_for(Role::Compute, env).unwrap();
        assert!(!compute.contains_key("GARAGE_REPLICATION_FACTOR"));
    }
}

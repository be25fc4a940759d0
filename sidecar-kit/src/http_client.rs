//! A small HTTP/1.1 client for sidecar-to-sidecar calls (`/status`, votes,
//! `/sync`), the CLI and the test harness. Plain HTTP: inter-node traffic
//! runs inside the WireGuard VPN. [`HttpClient::with_tls`] adds HTTPS for
//! the one place that leaves the VPN, alert webhooks (Slack and the like).
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
    /// The answer is written in a newer contract version than this build
    /// reads (see `aurora_api`'s version rule).
    #[error("{url}: {source}")]
    Version {
        url: String,
        source: aurora_api::VersionError,
    },
}

/// A response: status and the whole (small) body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The contract version the answer is written in, when this build can
    /// read it.
    pub fn api_version(&self, url: &str) -> Result<u32, HttpError> {
        let header = self
            .headers
            .get(aurora_api::API_HEADER)
            .map(|v| v.to_str().unwrap_or("(not text)"));
        aurora_api::check_version(header).map_err(|source| HttpError::Version {
            url: url.to_string(),
            source,
        })
    }

    /// The body as `T`, after checking the contract version; a decoding
    /// error names the field (`members[1].epoch: invalid type ...`).
    pub fn json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, HttpError> {
        self.api_version(url)?;
        let de = &mut serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(de).map_err(|e| HttpError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
enum Inner {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
    timeout: Duration,
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of a certificate's DER encoding: what [`HttpClient::pinned`]
/// compares.
pub fn certificate_fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

/// The verifier behind [`HttpClient::pinned`].
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = certificate_fingerprint(end_entity);
        if got == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate (SHA-256 {}) is not the pinned one ({}): refusing to talk to it",
                aurora_api::join::to_hex(&got),
                aurora_api::join::to_hex(&self.fingerprint)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why an HTTPS client could not be built (a bad CA file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

fn http_connector(timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    connector
}

impl HttpClient {
    /// A plain-HTTP client: `https://` URLs are refused.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = http_connector(timeout);
        connector.enforce_http(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner: Inner::Plain(inner),
            timeout,
        }
    }

    /// A client for `http://` and `https://` URLs. Servers are verified
    /// against the system's root certificates plus, when given, the PEM
    /// certificates in `extra_ca` (a private CA or a self-signed receiver).
    pub fn with_tls(
        timeout: Duration,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, TlsSetupError> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates leave the store short, not broken:
        // a request to a server we cannot verify fails with its own error.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            let mut added = 0;
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsSetupError(format!("{}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| TlsSetupError(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsSetupError(format!("{}: {e}", path.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(TlsSetupError(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::over_tls(timeout, tls))
    }

    /// A client that accepts exactly one server certificate, the one whose
    /// DER encoding hashes (SHA-256) to `fingerprint`, whatever its name or
    /// issuer: a join token pins the fleet's join certificate this way. Any
    /// other certificate fails the handshake, before a byte of the request
    /// is sent. The server must still prove it holds the certificate's key
    /// (the handshake signature is verified as usual).
    pub fn pinned(timeout: Duration, fingerprint: [u8; 32]) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let verifier = Pinned {
            fingerprint,
            algorithms: provider.signature_verification_algorithms,
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self::over_tls(timeout, tls))
    }

    fn over_tls(timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut http = http_connector(timeout);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Self {
            inner: Inner::Tls(inner),
            timeout,
        }
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
        match (uri.scheme_str(), &self.inner) {
            (Some("http"), _) | (Some("https"), Inner::Tls(_)) => {}
            (Some("https"), Inner::Plain(_)) => {
                return Err(HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: "https:// is not supported here (plain HTTP inside the VPN)".into(),
                })
            }
            _ => {
                return Err(HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: "only http:// and https:// URLs are supported".into(),
                })
            }
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
            let sent = match &self.inner {
                Inner::Plain(c) => c.request(req).await,
                Inner::Tls(c) => c.request(req).await,
            };
            let resp = sent.map_err(|e| HttpError::Transport {
                url: url.to_string(),
                reason: describe(&e),
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
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

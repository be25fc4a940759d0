//! The S3 side: a client for MinIO, Garage or AWS, and a complete listing.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::Client;

use crate::config::S3Config;

/// An SSE-C key (`s3.sse_customer_key`): sent with every GET and HEAD of
/// an object, as S3 requires to decrypt it. Parsed once, at config time.
#[derive(Clone)]
pub struct SseCustomerKey {
    key_b64: String,
    md5_b64: String,
}

impl std::fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseCustomerKey([redacted])")
    }
}

impl SseCustomerKey {
    /// The key as S3 takes it: 32 bytes (AES-256), base64.
    pub fn parse(b64: &str) -> Result<Self, String> {
        use base64::Engine as _;
        use md5::Digest as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let bytes = engine
            .decode(b64.trim())
            .map_err(|_| "is not base64 (an AES-256 key: 32 bytes, base64-encoded)".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "is {} bytes once decoded; an AES-256 key is 32",
                bytes.len()
            ));
        }
        Ok(Self {
            key_b64: engine.encode(&bytes),
            md5_b64: engine.encode(md5::Md5::digest(&bytes)),
        })
    }

    /// `(algorithm, key, key MD5)`, for the request builders' setters.
    pub fn headers(key: Option<&Self>) -> (Option<String>, Option<String>, Option<String>) {
        match key {
            Some(k) => (
                Some("AES256".into()),
                Some(k.key_b64.clone()),
                Some(k.md5_b64.clone()),
            ),
            None => (None, None, None),
        }
    }
}

/// One listed object.
#[derive(Clone, Debug)]
pub struct Remote {
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: Option<String>,
}

/// One client per origin, in the order they are tried: `s3.endpoint`, then
/// each of `s3.fallback_endpoints` (same bucket, credentials and settings).
pub async fn origins(cfg: &S3Config) -> Vec<(String, Client)> {
    let mut out = vec![(
        cfg.endpoint.clone().unwrap_or_else(|| "AWS".into()),
        client(cfg).await,
    )];
    for ep in &cfg.fallback_endpoints {
        let one = S3Config {
            endpoint: Some(ep.clone()),
            ..cfg.clone()
        };
        out.push((ep.clone(), client(&one).await));
    }
    out
}

/// Builds the client. Static credentials when configured, else the AWS
/// default chain.
pub async fn client(cfg: &S3Config) -> Client {
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
        .read_timeout(Duration::from_secs(cfg.read_timeout_secs))
        .build();
    // asset-sync retries objects itself (with its own backoff and counters);
    // the SDK's layer adds a couple of quick retries for listing calls.
    let retry = aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(2);
    let mut builder = match (&cfg.access_key_id, &cfg.secret_access_key) {
        (Some(id), Some(secret)) => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "asset-sync-config",
            )),
        _ => {
            let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
            aws_sdk_s3::config::Builder::from(&shared)
        }
    };
    builder = builder
        .region(Region::new(cfg.region.clone()))
        .force_path_style(cfg.force_path_style)
        .timeout_config(timeouts)
        .retry_config(retry);
    if let Some(ep) = &cfg.endpoint {
        builder = builder.endpoint_url(ep);
    }
    Client::from_conf(builder.build())
}

#[derive(Debug, thiserror::Error)]
#[error("listing s3://{bucket}/{prefix} at {endpoint}: {reason}")]
pub struct ListError {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: String,
    pub reason: String,
}

/// Lists every object under the prefix, following continuation tokens. Any
/// page failing fails the whole listing: a partial listing must never drive
/// deletions.
pub async fn list_all(
    client: &Client,
    endpoint: &str,
    cfg: &S3Config,
) -> Result<Vec<Remote>, ListError> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(&cfg.bucket)
        .prefix(&cfg.prefix)
        .max_keys(1000)
        // Keys come back percent-encoded: a key holding a control character
        // would otherwise make the XML unparsable and fail the whole listing
        // (one hostile object must not stop the mirror).
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ListError {
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            endpoint: endpoint.to_string(),
            reason: describe(&e),
        })?;
        for obj in page.contents() {
            let (Some(key), Some(etag)) = (obj.key(), obj.e_tag()) else {
                continue;
            };
            let Some(key) = url_decode(key) else {
                tracing::warn!(
                    key,
                    "listed key is not valid percent-encoded UTF-8; skipped"
                );
                continue;
            };
            out.push(Remote {
                key,
                etag: etag.trim_matches('"').to_string(),
                size: obj.size().unwrap_or(0).max(0) as u64,
                last_modified: obj.last_modified().map(|t| t.to_string()),
            });
        }
    }
    Ok(out)
}

/// The SDK's `Display` says little ("dispatch failure", "service error");
/// the useful part is in the source chain.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A plain (single-part) ETag is the hex MD5 of the content.
pub fn plain_md5(etag: &str) -> Option<[u8; 16]> {
    if etag.len() != 32 {
        return None;
    }
    let bytes = hex::decode(etag).ok()?;
    bytes.try_into().ok()
}

/// Decodes a key listed with `encoding-type=url` (`+` is a space, `%XX` a
/// byte). `None` when the bytes are not UTF-8.
pub fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())?;
                out.push(byte);
                i += 3;
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_decoding() {
        assert_eq!(super::url_decode("a+b%2Bc%2F%01").unwrap(), "a b+c/\u{1}");
        assert_eq!(super::url_decode("%E5%90%8D").unwrap(), "名");
        assert!(super::url_decode("%zz").is_none());
        assert!(super::url_decode("%ff").is_none());
    }
}

#[cfg(test)]
mod sse_tests {
    use super::*;

    #[test]
    fn an_sse_c_key_is_32_bytes_of_base64() {
        use base64::Engine as _;
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let k = SseCustomerKey::parse(&good).unwrap();
        let (alg, key, md5) = SseCustomerKey::headers(Some(&k));
        assert_eq!(alg.as_deref(), Some("AES256"));
        assert_eq!(key.as_deref(), Some(good.as_str()));
        assert_eq!(md5.unwrap().len(), 24);
        assert!(!format!("{k:?}").contains(&good));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(SseCustomerKey::parse(&short)
            .unwrap_err()
            .contains("16 bytes"));
        assert!(SseCustomerKey::parse("not base64!")
            .unwrap_err()
            .contains("base64"));
        assert_eq!(SseCustomerKey::headers(None), (None, None, None));
    }
}

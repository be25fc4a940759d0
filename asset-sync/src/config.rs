//! asset-sync's configuration. Key names are part of the contract (scripts
//! and the compose file set them): `[s3] endpoint, region, bucket, prefix,
//! access_key_id, secret_access_key, force_path_style` and `[sync]
//! target_dir, state_dir, interval_secs, concurrency, delete,
//! max_delete_percent`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sidecar_kit::{AdminConfig, ConfigError, LogConfig, Secret, Validate};

/// Default admin port of `asset-sync`.
pub const DEFAULT_ADMIN_PORT: u16 = 8010;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub s3: S3Config,
    pub sync: SyncConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `http://minio:9000`; unset means AWS's own endpoint for `region`.
    pub endpoint: Option<String>,
    /// Further origins serving the same bucket, tried in order when the
    /// ones before cannot list it (the fleet's Garage on the lead, then its
    /// replica on the backup). A pass lists and downloads from one origin.
    #[serde(default)]
    pub fallback_endpoints: Vec<String>,
    pub region: String,
    /// Required.
    pub bucket: String,
    /// Only keys under this prefix are mirrored; the prefix is stripped from
    /// local paths (`prefix = "img/"`: `img/a.png` → `<target>/a.png`). A
    /// prefix is a directory: `img` means `img/`, and never matches `img2/`.
    pub prefix: String,
    /// Static credentials; unset means the AWS default chain (env, profile,
    /// instance role).
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// The SSE-C key (32 bytes, base64) the bucket's objects were uploaded
    /// with: sent with every GET and HEAD, as S3 requires to decrypt them.
    /// Every mirrored object must use it; a plaintext one then fails with
    /// the server's reason (counted, never published, nothing deleted).
    pub sse_customer_key: Option<Secret>,
    /// Path-style URLs (`endpoint/bucket/key`), which MinIO and Garage need.
    pub force_path_style: bool,
    /// Connect timeout for S3 requests.
    pub connect_timeout_secs: u64,
    /// A request that sends no bytes for this long is retried.
    pub read_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The local mirror. Apps read it; asset-sync alone writes it, and
    /// only complete, verified files ever appear in it.
    pub target_dir: PathBuf,
    /// Where asset-sync keeps its manifest, lock and staging files: outside
    /// the target, so a web server on the target never serves a `.part`
    /// file or the manifest, and on the same filesystem *and mount*, so a
    /// staged file is renamed into place atomically (checked at start).
    /// Unset: `.<name>.asset-sync` beside the target
    /// (`/srv/assets` → `/srv/.assets.asset-sync`).
    pub state_dir: Option<PathBuf>,
    /// Seconds between passes.
    pub interval_secs: u64,
    /// Up to this many seconds are added at random to each interval, so a
    /// fleet does not hit the bucket in lockstep.
    pub jitter_secs: u64,
    /// Concurrent GET requests. Small objects are latency-bound, not
    /// bandwidth-bound: on a 2-core machine one local Garage served 10,000
    /// 4 KiB objects in 7.2 s at 64 and 6.0 s at 128 (256 was slower).
    pub concurrency: usize,
    /// Delete local files whose objects are gone from the bucket.
    pub delete: bool,
    /// A pass deletes at most this share of the mirrored files; more means
    /// something is wrong upstream and nothing is deleted (`--force-delete`
    /// overrides once).
    pub max_delete_percent: u8,
    /// Glob patterns (`*.png`, `img/**`) of keys to mirror; empty = all.
    // `default`: the config crate drops empty arrays from the defaults layer.
    #[serde(default)]
    pub include: Vec<String>,
    /// Glob patterns of keys to leave out (applied after `include`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Cap on download bandwidth in bytes per second; 0 = no cap.
    pub bandwidth_limit_bytes: u64,
    /// Objects at least this large are fetched as parallel byte ranges.
    pub ranged_threshold_bytes: u64,
    /// Size of each range of a ranged download.
    pub range_size_bytes: u64,
    /// Range requests in flight across all large objects. Large objects are
    /// bandwidth-bound: a few ranges fill the link, and each in-flight body
    /// costs buffer memory (128 of them pushed peak RSS to ~100 MiB).
    pub range_concurrency: usize,
    /// Attempts per object (with exponential backoff and jitter) before the
    /// object counts as failed for this pass.
    pub attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: AdminConfig::on_port(DEFAULT_ADMIN_PORT),
            log: LogConfig::default(),
            s3: S3Config {
                endpoint: None,
                fallback_endpoints: vec![],
                region: "us-east-1".into(),
                bucket: String::new(),
                prefix: String::new(),
                access_key_id: None,
                secret_access_key: None,
                sse_customer_key: None,
                force_path_style: true,
                connect_timeout_secs: 5,
                read_timeout_secs: 30,
            },
            sync: SyncConfig {
                target_dir: PathBuf::from("/assets"),
                state_dir: None,
                interval_secs: 300,
                jitter_secs: 30,
                concurrency: 128,
                delete: true,
                max_delete_percent: 50,
                include: Vec::new(),
                exclude: Vec::new(),
                bandwidth_limit_bytes: 0,
                ranged_threshold_bytes: 32 << 20,
                range_size_bytes: 8 << 20,
                range_concurrency: 16,
                attempts: 5,
            },
        }
    }
}

impl Validate for Config {
    fn env_list_keys() -> &'static [&'static str] {
        &["sync.include", "sync.exclude", "s3.fallback_endpoints"]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.admin.validate()?;
        self.log.validate()?;
        let s3 = &self.s3;
        if s3.bucket.is_empty() {
            return Err(ConfigError::new("s3.bucket", "is required"));
        }
        if !valid_bucket(&s3.bucket) {
            return Err(ConfigError::new(
                "s3.bucket",
                format!(
                    "{:?} is not a valid bucket name (3-63 of a-z 0-9 . -)",
                    s3.bucket
                ),
            ));
        }
        let endpoints = s3.endpoint.iter().map(|e| ("s3.endpoint", e)).chain(
            s3.fallback_endpoints
                .iter()
                .map(|e| ("s3.fallback_endpoints", e)),
        );
        for (key, ep) in endpoints {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) || ep.len() < 10 {
                return Err(ConfigError::new(
                    key,
                    format!("{ep:?} must be an http:// or https:// URL"),
                ));
            }
        }
        if !s3.fallback_endpoints.is_empty() && s3.endpoint.is_none() {
            return Err(ConfigError::new(
                "s3.fallback_endpoints",
                "needs s3.endpoint (the first origin to try)",
            ));
        }
        if s3.region.is_empty() {
            return Err(ConfigError::new("s3.region", "must not be empty"));
        }
        if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
            return Err(ConfigError::new(
                "s3.secret_access_key",
                "access_key_id and secret_access_key must be set together",
            ));
        }
        if let Some(k) = &s3.sse_customer_key {
            crate::s3::SseCustomerKey::parse(k.expose())
                .map_err(|e| ConfigError::new("s3.sse_customer_key", e))?;
        }
        if s3.prefix.starts_with('/') {
            return Err(ConfigError::new("s3.prefix", "must not start with '/'"));
        }
        if s3.connect_timeout_secs == 0 || s3.read_timeout_secs == 0 {
            return Err(ConfigError::new(
                "s3.read_timeout_secs",
                "timeouts must be at least 1",
            ));
        }
        let sync = &self.sync;
        if !sync.target_dir.is_absolute() {
            return Err(ConfigError::new(
                "sync.target_dir",
                format!("{} must be an absolute path", sync.target_dir.display()),
            ));
        }
        if sync.target_dir.parent().is_none() {
            return Err(ConfigError::new("sync.target_dir", "may not be /"));
        }
        if let Some(state) = &sync.state_dir {
            if !state.is_absolute() {
                return Err(ConfigError::new(
                    "sync.state_dir",
                    format!("{} must be an absolute path", state.display()),
                ));
            }
        }
        let state = sync.state_dir();
        if state.starts_with(&sync.target_dir) {
            return Err(ConfigError::new(
                "sync.state_dir",
                format!(
                    "{} is inside sync.target_dir {}: whoever serves the mirror would serve half-written files and the manifest",
                    state.display(),
                    sync.target_dir.display()
                ),
            ));
        }
        if sync.target_dir.starts_with(&state) {
            return Err(ConfigError::new(
                "sync.state_dir",
                format!(
                    "{} contains sync.target_dir {}: they must be separate directories",
                    state.display(),
                    sync.target_dir.display()
                ),
            ));
        }
        if sync.interval_secs == 0 {
            return Err(ConfigError::new("sync.interval_secs", "must be at least 1"));
        }
        if sync.concurrency == 0 || sync.concurrency > 1024 {
            return Err(ConfigError::new("sync.concurrency", "must be 1-1024"));
        }
        if sync.range_concurrency == 0 || sync.range_concurrency > 1024 {
            return Err(ConfigError::new("sync.range_concurrency", "must be 1-1024"));
        }
        if sync.max_delete_percent > 100 {
            return Err(ConfigError::new("sync.max_delete_percent", "must be 0-100"));
        }
        if sync.range_size_bytes < (1 << 20) {
            return Err(ConfigError::new(
                "sync.range_size_bytes",
                "must be at least 1 MiB",
            ));
        }
        if sync.attempts == 0 {
            return Err(ConfigError::new("sync.attempts", "must be at least 1"));
        }
        for (key, patterns) in [
            ("sync.include", &sync.include),
            ("sync.exclude", &sync.exclude),
        ] {
            for p in patterns {
                globset::Glob::new(p).map_err(|e| ConfigError::new(key, format!("{p:?}: {e}")))?;
            }
        }
        Ok(())
    }
}

sidecar_kit::sidecar_config!(Config);

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && !b.starts_with(['.', '-'])
        && !b.ends_with(['.', '-'])
}

impl SyncConfig {
    /// Where asset-sync keeps its manifest, lock and staging files:
    /// `sync.state_dir`, or `.<name>.asset-sync` beside the target.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let name = self
            .target_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "assets".into());
        self.target_dir
            .parent()
            .unwrap_or(&self.target_dir)
            .join(format!(".{name}.asset-sync"))
    }

    /// Where versions before 0.1.1 kept their state: inside the target.
    /// `state::prepare` moves its manifest out and removes it.
    pub fn legacy_state_dir(&self) -> PathBuf {
        self.target_dir.join(crate::keys::STATE_DIR_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(target: &str, state: Option<&str>) -> Config {
        let mut c = Config::default();
        c.s3.bucket = "assets".into();
        c.sync.target_dir = target.into();
        c.sync.state_dir = state.map(PathBuf::from);
        c
    }

    #[test]
    fn state_lives_beside_the_target_by_default() {
        let c = with("/srv/assets", None);
        assert_eq!(c.sync.state_dir(), PathBuf::from("/srv/.assets.asset-sync"));
        c.validate().unwrap();
    }

    #[test]
    fn state_inside_or_around_the_target_is_refused() {
        for (target, state) in [
            ("/srv/assets", "/srv/assets/.state"),
            ("/srv/assets", "/srv/assets"),
            ("/srv/data/assets", "/srv/data"),
        ] {
            let err = with(target, Some(state)).validate().unwrap_err();
            assert_eq!(err.key, "sync.state_dir", "{target} {state}: {err}");
        }
        let err = with("/srv/assets", Some("state")).validate().unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        with("/var/lib/a/mirror", Some("/var/lib/a/state"))
            .validate()
            .unwrap();
        // A shared name prefix is not containment.
        with("/srv/assets", Some("/srv/assets-state"))
            .validate()
            .unwrap();
    }
}

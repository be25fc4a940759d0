//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `AURORA_`-prefixed environment variables (`__` separates sections, so
//! `AURORA_S3__ENDPOINT` sets `s3.endpoint`).
//!
//! Every sidecar describes its configuration as one typed struct. The loader
//! deserializes into it strictly (unknown keys are errors, because a typo that
//! is silently ignored is how a production node ends up on a default) and then
//! runs the struct's own [`Validate`] checks. Whatever goes wrong comes back as
//! a single [`ConfigError`] that names the key, so an operator reading one line
//! knows what to fix.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The environment variable naming a config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "AURORA_CONFIG";
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "AURORA_";
/// `AURORA_` variables that belong to the tools and the stack, never config
/// keys, reserved here and nowhere else. An operator's shell may hold any
/// of them when a command reads its config (`AURORA_DSN` for `aurora-cli
/// migrate`, a sourced `node.env`), and that must not make every
/// config-reading command exit 2. Any other `AURORA_` variable must name a
/// key, so a typo is still an error. `tests/tests/it/compose_static.rs` checks
/// that every variable the compose stack interpolates is reserved.
pub const TOOL_VARIABLES: &[&str] = &[
    // The config file's path.
    CONFIG_PATH_ENV,
    // aurora-cli: the sandbox's directory, `migrate`'s connection string.
    "AURORA_SANDBOX_DIR",
    "AURORA_DSN",
    // aurora-cli join's token (a secret better kept out of argv).
    "AURORA_JOIN_TOKEN",
    // Where the sandbox and the tests find this workspace's binaries, and
    // the commit a build reports (read by sidecar-kit's build script).
    "AURORA_BIN_DIR",
    "AURORA_BUILD_COMMIT",
    // The compose stack's `node.env` (compose.yaml interpolates them).
    "AURORA_STATE_DIR",
    "AURORA_ASSETS_DIR",
    "AURORA_VPN_IP",
    "AURORA_PROJECT",
    "AURORA_WG_BIND",
    "AURORA_JOIN_BIND",
    "AURORA_WG_PORT",
    "AURORA_HOST_ROOT",
    "AURORA_HOST_ROOT_PROPAGATION",
    "AURORA_ALERTMANAGER_PEER",
    "AURORA_PROMETHEUS_RETENTION",
    "AURORA_POSTGRES_CPUS",
    "AURORA_POSTGRES_MEMORY",
];

/// Families of the stack's variables: `AURORA_IMAGE_<SERVICE>` (which image
/// each service runs) and `AURORA_PORT_<SERVICE>` (its port on the host).
pub const TOOL_VARIABLE_PREFIXES: &[&str] = &["AURORA_IMAGE_", "AURORA_PORT_"];

/// Whether `name` is one of the tools' or the stack's own variables.
pub fn is_tool_variable(name: &str) -> bool {
    TOOL_VARIABLES.contains(&name) || TOOL_VARIABLE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A configuration problem, always tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key path (`admin.listen`), or `<file>` for file-level problems.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        // One line, always: serde messages occasionally embed newlines.
        let message = message.into().replace('\n', " ");
        Self {
            key: key.into(),
            message,
        }
    }

    /// The environment variable that sets this key, when there is one.
    pub fn env_var(&self) -> Option<String> {
        if self.key.is_empty() || self.key.starts_with('<') || self.key.contains('[') {
            return None;
        }
        Some(format!(
            "{ENV_PREFIX}{}",
            self.key.to_ascii_uppercase().replace('.', "__")
        ))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {}: {}", self.key, self.message)?;
        if let Some(var) = self.env_var() {
            write!(f, " (set by `{}` in the file or {var})", self.key)?;
        }
        Ok(())
    }
}

/// Semantic checks a config struct runs after it deserialized.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;

    /// Keys (`dns.axfr_allow`) whose environment variable holds a
    /// comma-separated list. Environment values are strings; only these are
    /// split, so a secret with a comma in it stays whole. (It lives here
    /// because every config implements `Validate`.)
    fn env_list_keys() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }
}

/// A value that must never be printed or logged: passwords, tokens, keys.
///
/// `Debug`, `Display` and `Serialize` all print `[redacted]`; the only way to
/// the value is [`Secret::expose`], which makes every use easy to audit.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const REDACTED: &'static str = "[redacted]";

    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

thread_local! {
    /// Set only while the loader turns built-in defaults into the first
    /// config layer, so a default secret (a DSN, say) survives the round
    /// trip. Everything else that serializes a config sees `[redacted]`.
    static EXPOSE_SECRETS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn with_secrets_exposed<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            EXPOSE_SECRETS.with(|e| e.set(false));
        }
    }
    EXPOSE_SECRETS.with(|e| e.set(true));
    let _reset = Reset;
    f()
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if EXPOSE_SECRETS.with(|e| e.get()) {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str(Self::REDACTED)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        if value == Self::REDACTED {
            // Someone pasted `--check-config` output back into a file.
            return Err(serde::de::Error::custom(
                "is the redaction placeholder, not a real secret",
            ));
        }
        Ok(Self(value))
    }
}

/// Log output settings, the `[log]` section of every binary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter (`info`, `info,dns_sync=debug`). The
    /// `RUST_LOG` environment variable, when set, takes precedence.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_string(),
        }
    }
}

impl Validate for LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map(|_| ())
            .map_err(|e| ConfigError::new("log.filter", format!("not a valid filter: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The `[admin]` section: where the admin HTTP server listens and who may
/// call its mutating endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin server (`/health`, `/ready`, `/metrics`, `/status`).
    pub listen: SocketAddr,
    /// Bearer token every `POST` must carry. Without one, mutating endpoints
    /// refuse every request (401): a sidecar never runs with open controls.
    pub token: Option<Secret>,
    /// How long in-flight work may take to finish after SIGTERM.
    pub shutdown_timeout_secs: u64,
}

impl AdminConfig {
    /// Defaults for a sidecar whose admin server listens on `port` on all
    /// interfaces (inside a container, the port mapping decides exposure).
    pub fn on_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
            token: None,
            shutdown_timeout_secs: 10,
        }
    }
}

impl Validate for AdminConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            if token.expose().len() < 16 {
                return Err(ConfigError::new(
                    "admin.token",
                    "must be at least 16 characters (generate one with `openssl rand -hex 24`)",
                ));
            }
        }
        if self.shutdown_timeout_secs == 0 || self.shutdown_timeout_secs > 600 {
            return Err(ConfigError::new(
                "admin.shutdown_timeout_secs",
                "must be between 1 and 600",
            ));
        }
        Ok(())
    }
}

/// What the shared `main` plumbing needs from every sidecar's config.
///
/// Gotcha: the defaults layer goes through the `config` crate, which drops
/// empty arrays; give every `Vec` field `#[serde(default)]`.
pub trait SidecarConfig:
    DeserializeOwned + Serialize + Default + Validate + Send + Sync + 'static
{
    fn admin(&self) -> &AdminConfig;
    fn log(&self) -> &LogConfig;
}

/// Implements [`SidecarConfig`] for a config struct with `admin` and `log`
/// fields, which is every sidecar's.
#[macro_export]
macro_rules! sidecar_config {
    ($config:ty) => {
        impl $crate::config::SidecarConfig for $config {
            fn admin(&self) -> &$crate::config::AdminConfig {
                &self.admin
            }
            fn log(&self) -> &$crate::config::LogConfig {
                &self.log
            }
        }
    };
}

/// Where the config file comes from: `--config`, else `$AURORA_CONFIG`, else none.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(CONFIG_PATH_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Loads `C` from its defaults, the optional file and the process environment,
/// then validates it.
pub fn load<C>(file: Option<&Path>) -> Result<C, ConfigError>
where
    C: DeserializeOwned + Serialize + Default + Validate,
{
    let env: HashMap<String, String> = std::env::vars().collect();
    load_from(file, &env)
}

/// [`load`] with an explicit environment, so tests need not mutate the
/// process's own.
pub fn load_from<C>(file: Option<&Path>, env: &HashMap<String, String>) -> Result<C, ConfigError>
where
    C: DeserializeOwned + Serialize + Default + Validate,
{
    let defaults = with_secrets_exposed(|| config::Config::try_from(&C::default()))
        .map_err(|e| ConfigError::new("<defaults>", e.to_string()))?;
    let mut builder = config::Config::builder().add_source(defaults);

    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::new(
                "<file>",
                format!("{}: no such file", path.display()),
            ));
        }
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }

    // Only `AURORA_<KEY>` variables are config keys (not the tools' own,
    // [`TOOL_VARIABLES`]). Values stay strings (no `try_parsing`): a token
    // "0123" must not turn into the number 123. Typed fields parse the
    // string themselves.
    let mut overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !is_tool_variable(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for key in C::env_list_keys() {
        let var = format!(
            "{ENV_PREFIX}{}",
            key.to_ascii_uppercase().replace('.', "__")
        );
        if let Some(value) = overrides.remove(&var) {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            builder = builder
                .set_override(*key, items)
                .map_err(|e| ConfigError::new(*key, e.to_string()))?;
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix("AURORA")
            .prefix_separator("_")
            .separator("__")
            .source(Some(overrides)),
    );

    let merged = builder.build().map_err(|e| file_error(file, e))?;
    let parsed: C = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." {
            "<root>".to_string()
        } else {
            key
        };
        ConfigError::new(key, strip_key_suffix(&e.into_inner().to_string()))
    })?;
    parsed.validate()?;
    Ok(parsed)
}

fn file_error(file: Option<&Path>, e: config::ConfigError) -> ConfigError {
    let key = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<file>".to_string());
    ConfigError::new(key, e.to_string())
}

/// The `config` crate appends " for key `x`" to some messages; we already
/// name the key in front, so drop the repetition.
fn strip_key_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Renders the effective config as TOML, secrets redacted, for `--check-config`.
pub fn render<C: Serialize>(config: &C) -> Result<String, ConfigError> {
    toml::to_string_pretty(config).map_err(|e| ConfigError::new("<render>", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        admin: AdminConfig,
        log: LogConfig,
        s3: S3,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct S3 {
        endpoint: String,
        secret_access_key: Option<Secret>,
        concurrency: u32,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                admin: AdminConfig::on_port(9000),
                log: LogConfig::default(),
                s3: S3 {
                    endpoint: "http://127.0.0.1:3900".into(),
                    secret_access_key: None,
                    concurrency: 8,
                },
            }
        }
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), ConfigError> {
            self.admin.validate()?;
            self.log.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[s3]\nendpoint = \"http://file:1\"\nconcurrency = 3\n",
        )
        .unwrap();
        let c: Demo = load_from(
            Some(&file),
            &env(&[("AURORA_S3__CONCURRENCY", "5"), ("AURORA_CONFIG", "x")]),
        )
        .unwrap();
        assert_eq!(c.s3.endpoint, "http://file:1");
        assert_eq!(c.s3.concurrency, 5);
        assert_eq!(c.admin.listen.port(), 9000);
    }

    #[test]
    fn bad_address_names_the_key_and_its_variable() {
        let err = load_from::<Demo>(None, &env(&[("AURORA_ADMIN__LISTEN", "not-an-address")]))
            .unwrap_err();
        assert_eq!(err.key, "admin.listen");
        let line = err.to_string();
        assert!(line.contains("AURORA_ADMIN__LISTEN"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = load_from::<Demo>(None, &env(&[("AURORA_S3__ENDPIONT", "x")])).unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
        assert_eq!(err.key, "s3.endpiont");
    }

    #[test]
    fn the_tools_own_variables_are_not_keys() {
        // `export AURORA_SANDBOX_DIR=...` then `aurora-cli status` (or a
        // sidecar started from that shell) must still load its config.
        let c: Demo = load_from(
            None,
            &env(&[("AURORA_SANDBOX_DIR", "/tmp/fleet"), ("AURORA_CONFIG", "x")]),
        )
        .unwrap();
        assert_eq!(c.admin.listen.port(), 9000);
        // Every reserved name at once, as a shell that sourced node.env and
        // exported AURORA_DSN for `aurora-cli migrate` holds them.
        let mut all: Vec<(&str, &str)> = TOOL_VARIABLES.iter().map(|v| (*v, "x")).collect();
        all.extend([
            (
                "AURORA_IMAGE_REPL_MANAGER",
                "aurora-node/repl-manager:0.1.0",
            ),
            ("AURORA_PORT_GARAGE_S3", "3900"),
        ]);
        let c: Demo = load_from(None, &env(&all)).unwrap();
        assert_eq!(c.admin.listen.port(), 9000);
        // Next to a real override, which still applies.
        all.push(("AURORA_ADMIN__LISTEN", "127.0.0.1:9100"));
        let c: Demo = load_from(None, &env(&all)).unwrap();
        assert_eq!(c.admin.listen.port(), 9100);
        let err = load_from::<Demo>(None, &env(&[("AURORA_SANDBOX", "x")])).unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = load_from::<Demo>(None, &env(&[("AURORA_S3__CONCURRENCY", "many")])).unwrap_err();
        assert_eq!(err.key, "s3.concurrency");
    }

    #[test]
    fn numeric_looking_secrets_stay_strings_and_never_render() {
        let c: Demo = load_from(
            None,
            &env(&[("AURORA_S3__SECRET_ACCESS_KEY", "000123456789000123")]),
        )
        .unwrap();
        assert_eq!(
            c.s3.secret_access_key.as_ref().unwrap().expose(),
            "000123456789000123"
        );
        let shown = render(&c).unwrap();
        assert!(!shown.contains("000123456789000123"));
        assert!(shown.contains(Secret::REDACTED));
        assert!(!format!("{c:?}").contains("000123456789000123"));
    }

    #[test]
    fn default_secrets_survive_the_defaults_layer() {
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WithDsn {
            dsn: Secret,
        }
        impl Default for WithDsn {
            fn default() -> Self {
                Self {
                    dsn: Secret::new("host=db password=default-pw"),
                }
            }
        }
        impl Validate for WithDsn {
            fn validate(&self) -> Result<(), ConfigError> {
                Ok(())
            }
        }
        let c: WithDsn = load_from(None, &env(&[])).unwrap();
        assert_eq!(c.dsn.expose(), "host=db password=default-pw");
        assert!(!render(&c).unwrap().contains("default-pw"));
    }

    #[test]
    fn list_keys_split_on_commas() {
        #[derive(Debug, Serialize, Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct WithList {
            #[serde(default)]
            allow: Vec<String>,
            token: Option<Secret>,
        }
        impl Validate for WithList {
            fn validate(&self) -> Result<(), ConfigError> {
                Ok(())
            }
            fn env_list_keys() -> &'static [&'static str] {
                &["allow"]
            }
        }
        let c: WithList = load_from(
            None,
            &env(&[
                ("AURORA_ALLOW", "10.0.0.0/24, 127.0.0.1/32"),
                ("AURORA_TOKEN", "a,b"),
            ]),
        )
        .unwrap();
        assert_eq!(c.allow, vec!["10.0.0.0/24", "127.0.0.1/32"]);
        assert_eq!(c.token.unwrap().expose(), "a,b");
    }

    #[test]
    fn redaction_placeholder_is_refused() {
        let err =
            load_from::<Demo>(None, &env(&[("AURORA_ADMIN__TOKEN", "[redacted]")])).unwrap_err();
        assert_eq!(err.key, "admin.token");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_from::<Demo>(Some(Path::new("/nonexistent/x.toml")), &env(&[])).unwrap_err();
        assert!(err.message.contains("no such file"));
    }

    #[test]
    fn validation_runs() {
        let err = load_from::<Demo>(None, &env(&[("AURORA_ADMIN__TOKEN", "short")])).unwrap_err();
        assert_eq!(err.key, "admin.token");
        let err = load_from::<Demo>(None, &env(&[("AURORA_LOG__FILTER", "info,=[")])).unwrap_err();
        assert_eq!(err.key, "log.filter");
    }
}

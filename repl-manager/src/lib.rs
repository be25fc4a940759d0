//! Sets up and keeps PostgreSQL streaming replication, switchover and failover.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sidecar_kit::admin::BasicApi;
use sidecar_kit::{AdminConfig, ConfigError, Lifecycle, LogConfig, Metrics, Validate};

/// Default admin port of `repl-manager`.
pub const DEFAULT_ADMIN_PORT: u16 = 8008;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: AdminConfig::on_port(DEFAULT_ADMIN_PORT),
            log: LogConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.admin.validate()?;
        self.log.validate()
    }
}

sidecar_kit::sidecar_config!(Config);

/// Runs `repl-manager` until `lifecycle` is shut down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    let metrics = Metrics::new("repl-manager")?;
    let work = {
        let lifecycle = lifecycle.clone();
        async move {
            lifecycle.set_ready(true);
            lifecycle.cancelled().await;
            Ok(())
        }
    };
    sidecar_kit::sidecar::serve(&config.admin, Arc::new(BasicApi), metrics, lifecycle, work).await
}

//! The usual shape of a sidecar's `run`: start the admin server, do the work
//! until shutdown is requested, let the work wind down, stop the admin server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{AdminApi, AdminServer};
use crate::config::AdminConfig;
use crate::lifecycle::Lifecycle;
use crate::telemetry::Metrics;

/// Serves the admin API while `work` runs. `work` must return once
/// `lifecycle.cancelled()` completes; the admin server keeps answering
/// (`/ready` = 503, draining) until it has, so orchestrators see the drain.
pub async fn serve<A, W>(
    admin: &AdminConfig,
    api: Arc<A>,
    metrics: Metrics,
    lifecycle: Lifecycle,
    work: W,
) -> anyhow::Result<()>
where
    A: AdminApi,
    W: Future<Output = anyhow::Result<()>>,
{
    let server = AdminServer::start(admin, api, metrics, lifecycle.clone()).await?;
    let result = work.await;
    if result.is_err() {
        // A failed work loop ends the sidecar; make readiness say so while
        // the admin server closes.
        lifecycle.shutdown();
    }
    server.stop(Duration::from_secs(2)).await;
    result
}

//! `sync-assets`: trigger an asset-sync pass now and wait for its result.

use std::time::{Duration, Instant};

use aurora_api::assets::{AssetStatus, PassOutcome, SyncTriggered};
use hyper::StatusCode;
use serde_json::json;

use crate::api::{reason, Api, Sidecar};
use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output;

/// asset-sync waits up to 10 minutes for the pass it started; a little more
/// here so its own answer arrives first.
const WAIT: Duration = Duration::from_secs(630);

pub async fn sync_assets(config: &NodeConfig, no_wait: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let path = if no_wait { "/sync?wait=false" } else { "/sync" };
    let started = Instant::now();
    // On a terminal, the running pass's counters while it runs.
    let mut progress = output::Progress::new(as_json || no_wait);
    let answer = output::with_progress(
        &mut progress,
        Duration::from_millis(500),
        api.post(Sidecar::AssetSync, path, &json!({}), WAIT),
        || async {
            let st: AssetStatus = api.read(Sidecar::AssetSync, "/status").await.ok()?;
            let p = st.progress;
            st.running_pass.then(|| {
                format!(
                    "syncing: {} of {} objects, {} ({})",
                    p.done,
                    p.planned,
                    output::bytes(p.bytes as f64),
                    output::duration_secs(started.elapsed().as_secs_f64())
                )
            })
        },
    )
    .await?;
    drop(progress);
    match answer.status {
        StatusCode::ACCEPTED => {
            let t: SyncTriggered = answer.read("/sync")?;
            if as_json {
                output::print_json(&t);
            }
            if no_wait {
                if !as_json {
                    outln!("sync triggered; follow it with `aurora-cli status` or GET /status");
                }
                Ok(())
            } else {
                Err(CliError::failed(
                    "the pass is still running after 10 minutes; follow it with `aurora-cli status`",
                ))
            }
        }
        st if st.is_success() || st == StatusCode::BAD_GATEWAY => {
            let outcome: PassOutcome = answer.read("/sync")?;
            if as_json {
                output::print_json(&outcome);
            }
            if let (false, Some(r)) = (as_json, &outcome.report) {
                outln!(
                    "listed {}, downloaded {} ({}), unchanged {}, deleted {}, rejected {}, failed {} in {}",
                    r.listed,
                    r.downloaded,
                    output::bytes(r.bytes_downloaded as f64),
                    r.unchanged,
                    r.deleted,
                    r.rejected,
                    r.failed,
                    output::duration_secs(started.elapsed().as_secs_f64())
                );
                if let Some(g) = &r.deletion_guard {
                    outln!("deletions held back: {g}");
                }
            }
            if st.is_success() {
                return Ok(());
            }
            let why = outcome
                .error
                .clone()
                .or_else(|| {
                    outcome
                        .report
                        .as_ref()
                        .and_then(|r| r.errors.first().cloned())
                })
                .unwrap_or_else(|| {
                    let failed = outcome.report.as_ref().map_or(0, |r| r.failed);
                    format!("{failed} objects failed")
                });
            Err(CliError::failed(format!("asset sync failed: {why}")))
        }
        st => Err(CliError::failed(format!(
            "asset-sync answered {st}: {}",
            reason(&answer.body)
        ))),
    }
}

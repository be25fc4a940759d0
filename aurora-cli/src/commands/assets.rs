//! `sync-assets`: trigger an asset-sync pass now and wait for its result.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::api::{reason, Api, Sidecar};
use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output;

/// asset-sync waits up to 10 minutes for the pass it started; a little more
/// here so its own answer arrives first.
const WAIT: Duration = Duration::from_secs(630);

fn n(r: &Value, key: &str) -> u64 {
    r.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub async fn sync_assets(config: &NodeConfig, no_wait: bool, as_json: bool) -> CliResult {
    let api = Api::new(config);
    let path = if no_wait { "/sync?wait=false" } else { "/sync" };
    let started = Instant::now();
    let answer = api.post(Sidecar::AssetSync, path, &json!({}), WAIT).await?;
    let b = &answer.body;
    if as_json {
        output::print_json(b);
    }
    match answer.status {
        StatusCode::ACCEPTED if no_wait => {
            if !as_json {
                outln!("sync triggered; follow it with `aurora-cli status` or GET /status");
            }
            Ok(())
        }
        StatusCode::ACCEPTED => Err(CliError::failed(
            "the pass is still running after 10 minutes; follow it with `aurora-cli status`",
        )),
        st if st.is_success() || st == StatusCode::BAD_GATEWAY => {
            let r = b.get("report").cloned().unwrap_or(Value::Null);
            if !as_json && !r.is_null() {
                outln!(
                    "listed {}, downloaded {} ({}), unchanged {}, deleted {}, rejected {}, failed {} in {}",
                    n(&r, "listed"),
                    n(&r, "downloaded"),
                    output::bytes(n(&r, "bytes_downloaded") as f64),
                    n(&r, "unchanged"),
                    n(&r, "deleted"),
                    n(&r, "rejected"),
                    n(&r, "failed"),
                    output::duration_secs(started.elapsed().as_secs_f64())
                );
                if let Some(g) = r.get("deletion_guard").and_then(Value::as_str) {
                    outln!("deletions held back: {g}");
                }
            }
            if st.is_success() {
                Ok(())
            } else {
                let why = b
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| {
                        r.get("errors")
                            .and_then(Value::as_array)
                            .and_then(|e| e.first())
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| format!("{} objects failed", n(&r, "failed")));
                Err(CliError::failed(format!("asset sync failed: {why}")))
            }
        }
        st => Err(CliError::failed(format!(
            "asset-sync answered {st}: {}",
            reason(b)
        ))),
    }
}

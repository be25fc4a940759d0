//! The admin API: `/status` (this node's checks), `/cluster` and
//! `/cluster/health` (the fleet from the local database), `/health`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_api::monitor::{FleetHealth, MonitorStatus};
use hyper::{Method, StatusCode};
use sidecar_kit::admin::{AdminApi, AdminRequest, AdminResponse, Routed};
use sidecar_kit::{HealthReport, HealthStatus as Liveness};

use crate::checks::{self, CheckResult};
use crate::config::Config;
use crate::{db, fleet};

/// What the admin API shows, shared with the check loop.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) last_checks: Mutex<Vec<CheckResult>>,
    pub(crate) last_report: Mutex<Option<Instant>>,
    pub(crate) report_error: Mutex<Option<String>>,
    pub(crate) registered: Mutex<bool>,
}

pub(crate) struct Api {
    pub(crate) config: Config,
    pub(crate) state: Arc<State>,
    pub(crate) fleet: FleetCache,
    pub(crate) dbs: Arc<db::Databases>,
    /// Set when this node serves the join endpoint.
    pub(crate) join: Option<JoinInfo>,
}

/// What a token carries about the join endpoint.
pub(crate) struct JoinInfo {
    pub(crate) fingerprint: [u8; 32],
    pub(crate) endpoint: String,
}

/// Default lifetime of a join token.
const TOKEN_TTL_SECS: u64 = 3600;

/// How long one read of the fleet answers `/cluster` requests.
const FLEET_CACHE_FOR: Duration = Duration::from_secs(1);

/// Coalesces fleet reads: each one queries the local database and the
/// primary, so an uptime monitor polling `/cluster/health` hard (or many at
/// once) costs at most one read per second, not a query storm on the
/// primary. Concurrent requests wait for the one
/// read in flight. Errors are kept as briefly, so a dead database is not
/// asked again by every request either.
#[derive(Default)]
pub(crate) struct FleetCache {
    pub(crate) last: tokio::sync::Mutex<Option<(Instant, FleetRead)>>,
}

/// One read of the fleet, or why it failed.
type FleetRead = Result<Arc<fleet::FleetView>, String>;

impl FleetCache {
    pub(crate) async fn get(&self, config: &Config, dbs: &db::Databases) -> FleetRead {
        let mut last = self.last.lock().await;
        if let Some((at, view)) = last.as_ref() {
            if at.elapsed() < FLEET_CACHE_FOR {
                return view.clone();
            }
        }
        let view = fleet::view(config, dbs)
            .await
            .map(Arc::new)
            .map_err(|e| e.to_string());
        *last = Some((Instant::now(), view.clone()));
        view
    }
}

impl AdminApi for Api {
    fn health(&self) -> HealthReport {
        let age = self
            .state
            .last_report
            .lock()
            .ok()
            .and_then(|g| g.map(|t| t.elapsed().as_secs()));
        let mut h = HealthReport::ok().detail("last_report_age_secs", age);
        if let Some(e) = self.state.report_error.lock().ok().and_then(|g| g.clone()) {
            h.problem(
                Liveness::Degraded,
                format!("cannot report to the primary ({e}); the latest report is kept and sent when it returns"),
            );
        }
        h
    }

    fn status(&self) -> serde_json::Value {
        let checks = self
            .state
            .last_checks
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        let status = MonitorStatus {
            node: self.config.node.name.to_string(),
            role: self.config.node.role.into(),
            status: checks::overall(&checks).into(),
            registered: self.state.registered.lock().map(|g| *g).unwrap_or(false),
            checks: checks.iter().map(checks::CheckResult::wire).collect(),
            report_error: self.state.report_error.lock().ok().and_then(|g| g.clone()),
        };
        serde_json::to_value(status).unwrap_or_default()
    }

    async fn handle(&self, req: AdminRequest) -> Routed {
        let path = req.path.as_str();
        if path == aurora_api::join::TOKENS_PATH {
            if req.method != Method::POST {
                return Routed::MethodNotAllowed("POST");
            }
            return self.issue_token(&req).await.into();
        }
        if let Some(name) = path.strip_prefix("/nodes/") {
            if req.method != Method::DELETE {
                return Routed::MethodNotAllowed("DELETE");
            }
            let force = matches!(req.query("force"), Some("true" | "1" | ""));
            return self.remove_node(name, force).await.into();
        }
        if !matches!(path, "/cluster" | "/cluster/health") {
            return Routed::NotFound;
        }
        if req.method != Method::GET {
            return Routed::MethodNotAllowed("GET, HEAD, OPTIONS");
        }
        let view = match self.fleet.get(&self.config, &self.dbs).await {
            Ok(v) => v,
            Err(e) => {
                return AdminResponse::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the fleet from the local database: {e}"),
                )
                .into()
            }
        };
        if path == "/cluster" {
            return AdminResponse::ok(&*view).into();
        }
        let reasons = fleet::problems(&view);
        let status = if reasons.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        AdminResponse::json(
            status,
            &FleetHealth {
                healthy: reasons.is_empty(),
                reasons,
            },
        )
        .into()
    }
}

impl Api {
    /// `POST /join/tokens` (the admin token was checked): a new one-use
    /// join token. Only its id and the SHA-256 of its secret are stored.
    async fn issue_token(&self, req: &AdminRequest) -> AdminResponse {
        use aurora_api::join::{IssuedToken, JoinToken, TokenRequest};
        let Some(join) = &self.join else {
            return AdminResponse::error(
                StatusCode::CONFLICT,
                "this node does not serve the join endpoint (join.listen is unset); create tokens on the lead or the backup",
            );
        };
        let asked: TokenRequest = match req.json() {
            Ok(t) => t,
            Err(e) => return e,
        };
        let ttl = asked.ttl_secs.unwrap_or(TOKEN_TTL_SECS);
        let role = match &asked.role {
            None => None,
            Some(r) => match r.as_str().parse::<cluster_db::Role>() {
                Ok(role) => Some(role),
                Err(e) => {
                    return AdminResponse::error(StatusCode::BAD_REQUEST, format!("role: {e}"))
                }
            },
        };
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut id).and_then(|()| getrandom::fill(&mut secret)) {
            return AdminResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no randomness from the kernel: {e}"),
            );
        }
        let token = JoinToken {
            fingerprint: join.fingerprint,
            id: aurora_api::join::to_hex(&id),
            secret: aurora_api::join::to_hex(&secret),
            endpoint: join.endpoint.clone(),
        };
        let hash = {
            use sha2::Digest;
            aurora_api::join::to_hex(&sha2::Sha256::digest(token.secret.as_bytes()))
        };
        let id = token.id.clone();
        let stored = self
            .dbs
            .report
            .with(
                |c| async move { cluster_db::join::create_token(&c, &id, &hash, role, ttl).await },
            )
            .await;
        match stored {
            Ok(expires_at) => {
                tracing::info!(token = %token.id, ttl, role = ?role, "join token issued");
                AdminResponse::ok(&IssuedToken {
                    token: token.expose(),
                    id: token.id.clone(),
                    expires_at,
                    endpoint: token.endpoint.clone(),
                    fingerprint: aurora_api::join::to_hex(&token.fingerprint),
                    role: role.map(|r| r.as_str().into()),
                })
            }
            Err(e @ cluster_db::DbError::Invalid { .. }) => {
                AdminResponse::error(StatusCode::BAD_REQUEST, e.to_string())
            }
            Err(e) => AdminResponse::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot store the token on the primary: {e}"),
            ),
        }
    }
}

/// Why a node may not be taken out of the registry now; `None`: it may.
/// The primary never (switch over first); a node that still reports
/// (within `alive_secs`) only with `force`, since its health-monitor would
/// register it again at its next start.
pub(crate) fn removal_refusal(
    name: &str,
    primary: Option<&str>,
    report_age_secs: Option<f64>,
    alive_secs: f64,
    force: bool,
) -> Option<String> {
    if primary == Some(name) {
        return Some(format!(
            "{name} is the primary: switch over to another node first (aurora-cli switchover --to NODE)"
        ));
    }
    match report_age_secs {
        Some(age) if age < alive_secs && !force => Some(format!(
            "{name} reported {age:.0} s ago and is still running: stop its stack first (bootstrap/uninstall.sh on it), or remove it anyway with force (its health-monitor registers it again when it starts)"
        )),
        _ => None,
    }
}

impl Api {
    /// `DELETE /nodes/<name>` (the admin token was checked): takes a node
    /// out of the registry, so every node's WireGuard peers, DNS and
    /// Prometheus targets drop it within one interval.
    async fn remove_node(&self, raw: &str, force: bool) -> AdminResponse {
        let name = match cluster_db::NodeName::parse(raw) {
            Ok(n) => n,
            Err(e) => {
                return AdminResponse::error(StatusCode::BAD_REQUEST, format!("node name: {e}"))
            }
        };
        let alive_secs = 3.0 * self.config.checks.interval_secs as f64;
        let by = self.config.node.name.clone();
        let outcome = self
            .dbs
            .report
            .with(|c| async move {
                let state = cluster_db::queries::cluster_state(&*c).await?;
                let age = cluster_db::queries::list_health(&*c)
                    .await?
                    .into_iter()
                    .find(|h| h.node == name && h.down_since.is_none())
                    .map(|h| h.age_secs);
                if let Some(why) = removal_refusal(
                    name.as_str(),
                    state.primary.as_ref().map(cluster_db::NodeName::as_str),
                    age,
                    alive_secs,
                    force,
                ) {
                    return Ok(Err(why));
                }
                let details = serde_json::json!({ "forced": force, "last_report_age_secs": age });
                cluster_db::queries::retire_node(&*c, &name, &by, &details)
                    .await
                    .map(|found| Ok((name, found)))
            })
            .await;
        match outcome {
            Ok(Err(why)) => AdminResponse::error(StatusCode::CONFLICT, why),
            Ok(Ok((name, false))) => AdminResponse::error(
                StatusCode::NOT_FOUND,
                format!("{name} is not in the registry"),
            ),
            Ok(Ok((name, true))) => {
                tracing::warn!(node = %name, force, "node removed from the registry");
                AdminResponse::ok(&serde_json::json!({ "removed": name.as_str(), "forced": force }))
            }
            Err(e) => AdminResponse::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach the primary to remove the node: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::removal_refusal;

    #[test]
    fn the_primary_never_and_a_running_node_only_with_force() {
        assert!(removal_refusal("aurora", Some("aurora"), None, 30.0, true)
            .unwrap()
            .contains("switch over"));
        assert!(
            removal_refusal("star", Some("aurora"), Some(4.0), 30.0, false)
                .unwrap()
                .contains("still running")
        );
        assert_eq!(
            removal_refusal("star", Some("aurora"), Some(4.0), 30.0, true),
            None
        );
        assert_eq!(
            removal_refusal("star", Some("aurora"), Some(45.0), 30.0, false),
            None
        );
        assert_eq!(removal_refusal("star", None, None, 30.0, false), None);
    }
}

//! The HTTP contract: Patroni's health-check paths (so HAProxy checks
//! written for Patroni work unchanged), `/status`, `/cluster`, and the
//! operations. Every answer carries the epoch in `X-Aurora-Epoch`.

use std::sync::Arc;

use aurora_api::repl::{
    ClusterMember, ClusterView, ConfigPatch, FleetConfig, Liveness, NodeState, PauseMember,
    PauseReport, PauseRequest,
};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use sidecar_kit::admin::{
    AdminApi, AdminRequest, AdminResponse, HealthReport, HealthStatus, Routed,
};

use crate::consensus::ConfigWrite;
use crate::lsn::LagLimit;
use crate::manager::{lock, Manager, NodeStatus};
use crate::ops::OpError;
use crate::tuning::{self, Tuning};

pub struct Api {
    pub mgr: Arc<Manager>,
}

/// 200 with the node's status when `ok`, 503 with it (and why) otherwise.
fn check(ok: bool, status: NodeStatus, why: Option<String>) -> AdminResponse {
    let mut body = status;
    let code = if ok {
        StatusCode::OK
    } else {
        body.reason = why;
        StatusCode::SERVICE_UNAVAILABLE
    };
    AdminResponse::json(code, &body)
}

fn op_answer<T: serde::Serialize>(r: Result<T, OpError>) -> AdminResponse {
    match r {
        Ok(report) => AdminResponse::ok(&report),
        Err(OpError::Refused(why)) => AdminResponse::error(StatusCode::CONFLICT, why),
        Err(OpError::Failed(why)) => AdminResponse::error(StatusCode::INTERNAL_SERVER_ERROR, why),
    }
}

impl Api {
    fn config_answer(&self, t: &Tuning) -> FleetConfig {
        t.describe(&tuning::from_file(&self.mgr.cfg), self.mgr.paused())
    }

    /// `PATCH /config`: the timing and sync policy through the fleet's
    /// Raft group (every member applies the same values), checked against
    /// the timing argument before anything is proposed; `pause` as
    /// `POST /pause`.
    async fn patch_config(&self, patch: ConfigPatch) -> AdminResponse {
        if patch.is_empty() {
            return AdminResponse::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the patch names no key to change (one of: {})",
                    aurora_api::repl::CONFIG_KEYS.join(", ")
                ),
            );
        }
        let mut t = self.mgr.tuning();
        let at = t.revision.unwrap_or(0);
        if let Some(r) = patch.revision.filter(|r| *r != at) {
            return AdminResponse::error(
                StatusCode::CONFLICT,
                format!(
                    "the fleet's config is at revision {at}, not {r}: read it again (GET /config)"
                ),
            );
        }
        if patch.failover.is_some() || patch.replication.is_some() {
            let Some(c) = self.mgr.consensus() else {
                return AdminResponse::error(
                    StatusCode::CONFLICT,
                    "this fleet keeps no replicated config (no Raft group: two members, automatic \
                     failover off, or failover.leader_key_on_raft = false): each member's timing \
                     comes from its own config file",
                );
            };
            let next = match tuning::patched(&t.values, &patch) {
                Ok(next) => next,
                Err(r) => return AdminResponse::error(StatusCode::BAD_REQUEST, r.to_string()),
            };
            if next != t.values || t.revision.is_none() {
                match c.set_config(at, next.clone()).await {
                    Ok(revision) => {
                        let before = self.config_answer(&t);
                        t = Tuning {
                            values: next,
                            revision: Some(revision),
                        };
                        let after = self.config_answer(&t);
                        self.mgr
                            .event(
                                "config_changed",
                                serde_json::json!({
                                    "revision": revision,
                                    "failover": [before.failover, after.failover],
                                    "replication": [before.replication, after.replication],
                                }),
                            )
                            .await;
                    }
                    Err(ConfigWrite::Moved(now)) => {
                        return AdminResponse::error(
                            StatusCode::CONFLICT,
                            format!(
                                "the fleet's config changed meanwhile (now revision {now}): read \
                                 it again; nothing changed"
                            ),
                        )
                    }
                    Err(ConfigWrite::Refused(r)) => {
                        return AdminResponse::error(StatusCode::BAD_REQUEST, r.to_string())
                    }
                    Err(ConfigWrite::Uncommitted(e)) => {
                        return AdminResponse::error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                            "the fleet's Raft group did not apply the change: {e}; nothing changed"
                        ),
                        )
                    }
                    Err(ConfigWrite::Unconfirmed(e)) => {
                        return AdminResponse::error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "the fleet's Raft group did not confirm the change ({e}): if a \
                                 majority of members got it, it still takes effect; GET /config \
                                 shows the committed revision before you try again"
                            ),
                        )
                    }
                }
            }
        }
        if let Some(paused) = patch.pause.filter(|p| *p != self.mgr.paused()) {
            let r = self
                .pause(PauseRequest {
                    paused,
                    local: false,
                })
                .await;
            if !r.status.is_success() {
                return r;
            }
        }
        AdminResponse::ok(&self.config_answer(&t))
    }

    async fn pause(&self, r: PauseRequest) -> AdminResponse {
        // The whole fleet: through the replicated state first, so that a
        // member that is down now still finds it when it comes back, and
        // no automatic takeover can commit meanwhile. Not confirmed: it
        // may still commit (`local` pauses one node without the group).
        let mut committed = false;
        if !r.local {
            if let Some(c) = self.mgr.consensus() {
                if let Err(e) = c.set_pause(r.paused).await {
                    return AdminResponse::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the fleet's Raft group did not confirm the {} ({e}): if a majority \
                             of members got it, it still takes effect (GET /config shows \
                             `pause`); `local: true` on each node pauses it alone",
                            if r.paused { "pause" } else { "resume" }
                        ),
                    );
                }
                committed = true;
            }
        }
        if let Err(e) = self.mgr.set_paused(r.paused) {
            return AdminResponse::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        let mut members = vec![PauseMember {
            node: self.mgr.name().to_string(),
            paused: Some(r.paused),
            error: None,
        }];
        if !r.local {
            let body = serde_json::to_value(PauseRequest {
                paused: r.paused,
                local: true,
            })
            .unwrap_or_default();
            for m in self.mgr.cfg.others() {
                let url = m.url("/pause");
                let result = self
                    .mgr
                    .http
                    .send(Method::POST, &url, self.mgr.token(), Some(&body))
                    .await;
                let (paused, error) = match result {
                    Ok(resp) if resp.status.is_success() => (Some(r.paused), None),
                    Ok(resp) => (None, Some(format!("{}: {}", resp.status, resp.text()))),
                    Err(e) => (None, Some(e.to_string())),
                };
                members.push(PauseMember {
                    node: m.name.to_string(),
                    paused,
                    error,
                });
            }
        }
        AdminResponse::ok(&PauseReport {
            paused: r.paused,
            committed,
            members,
        })
    }

    async fn replica_check(&self, req: &AdminRequest) -> AdminResponse {
        let limit = match req.query("lag").map(str::parse::<LagLimit>) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => return AdminResponse::error(StatusCode::BAD_REQUEST, e),
        };
        let st = self.mgr.status().await;
        if !st.is_replica() {
            let why = format!("this node is {}", st.state);
            return check(false, st, Some(why));
        }
        // Only a replica that streams serves reads: one that does not may
        // be a former primary not yet rewound (its data diverged), or cut
        // off for longer than any lag limit can say (#15).
        if !st.streaming() {
            let why = match st.receiver.as_ref() {
                Some(r) => format!("not streaming from the primary (WAL receiver {})", r.status),
                None => "not streaming from the primary (no WAL receiver)".to_string(),
            };
            return check(false, st, Some(why));
        }
        let Some(limit) = limit else {
            return check(true, st, None);
        };
        let (ok, why) = match (limit, st.lag_bytes, st.lag_seconds) {
            (LagLimit::Bytes(max), Some(b), _) => {
                (b <= max, format!("{b} bytes behind (limit {max})"))
            }
            (LagLimit::Seconds(max), _, Some(s)) => {
                (s <= max, format!("{s:.3} s behind (limit {max})"))
            }
            _ => (
                false,
                format!(
                    "lag unknown: {}",
                    st.lag_error
                        .clone()
                        .unwrap_or_else(|| "no primary to compare with".into())
                ),
            ),
        };
        check(ok, st, Some(why))
    }

    async fn sync_check(&self, want_sync: bool) -> AdminResponse {
        let st = self.mgr.status().await;
        if !st.is_replica() {
            let why = format!("this node is {}", st.state);
            return check(false, st, Some(why));
        }
        // Ask the primary how it sees us: sync_state is the primary's call.
        let sync = match self.mgr.live_upstream().await {
            Ok(c) => tokio::time::timeout(
                std::time::Duration::from_secs(2),
                c.query_opt(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                    &[&self.mgr.name()],
                ),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .map(|r| r.get::<_, String>(0)),
            Err(_) => None,
        };
        let is_sync = matches!(sync.as_deref(), Some("sync" | "quorum"));
        let ok = is_sync == want_sync && (want_sync || st.streaming() || sync.is_some());
        check(
            ok,
            st,
            Some(format!(
                "the primary reports this standby as {}",
                sync.unwrap_or_else(|| "not connected".into())
            )),
        )
    }

    async fn cluster(&self) -> AdminResponse {
        let me = self.mgr.status().await;
        let peers = self.mgr.peers().await;
        // Each entry carries the member's admin URL, so a client (the CLI)
        // can send an operation to the primary without its own member list.
        let mut members = vec![ClusterMember {
            status: me,
            api_url: self.mgr.me().api_url.clone(),
            error: None,
        }];
        for (m, view) in peers {
            members.push(match view {
                Ok(status) => ClusterMember {
                    status,
                    api_url: m.api_url.clone(),
                    error: None,
                },
                Err(e) => ClusterMember {
                    status: NodeStatus {
                        node: m.name.to_string(),
                        role: m.role.into(),
                        state: NodeState::Unreachable,
                        ..Default::default()
                    },
                    api_url: m.api_url.clone(),
                    error: Some(e),
                },
            });
        }
        let known = self.mgr.known();
        AdminResponse::ok(&ClusterView {
            epoch: known.epoch,
            primary: known.primary,
            epoch_changed_at: Some(known.changed_at),
            members,
        })
    }
}

impl AdminApi for Api {
    /// Patroni's `/health`: 200 while PostgreSQL runs.
    fn health(&self) -> HealthReport {
        let state = lock(&self.mgr.last_state).clone();
        let mut report = HealthReport::ok().detail("postgres", &state);
        match &state {
            NodeState::Primary | NodeState::Replica => {}
            NodeState::Starting => report.problem(HealthStatus::Degraded, "not checked yet"),
            other => report.problem(HealthStatus::Unhealthy, format!("PostgreSQL is {other}")),
        }
        if let Some(e) = lock(&self.mgr.last_error).clone() {
            report.problem(HealthStatus::Degraded, e);
        }
        report
    }

    async fn handle(&self, req: AdminRequest) -> Routed {
        let path = req.path.as_str();
        let get_only = |r: AdminResponse| -> Routed {
            if req.method == Method::GET {
                Routed::Response(r)
            } else {
                Routed::MethodNotAllowed("GET, HEAD, OPTIONS")
            }
        };
        match path {
            "/" | "/status" | "/primary" | "/read-write" | "/leader" | "/master" | "/replica"
            | "/read-only" | "/sync" | "/synchronous" | "/async" | "/asynchronous"
            | "/liveness" | "/readiness" | "/cluster" | "/history"
                if req.method != Method::GET =>
            {
                Routed::MethodNotAllowed("GET, HEAD, OPTIONS")
            }
            "/status" => Routed::Response(AdminResponse::ok(&self.mgr.status().await)),
            // `/` too: HAProxy's default httpchk asks `/` (as Patroni).
            "/" | "/primary" | "/read-write" | "/leader" | "/master" => {
                let st = self.mgr.status().await;
                // A fenced primary (no lease) acknowledges no write: a load
                // balancer must not send writes to it (Patroni answers 503
                // without the leader lock, likewise).
                let fenced = st.fenced();
                let ok = st.is_primary() && st.primary == self.mgr.name() && !fenced;
                let why = format!(
                    "this node is {} (primary: {}){}",
                    st.state,
                    st.primary,
                    if fenced {
                        "; fenced: no lease from a majority"
                    } else {
                        ""
                    }
                );
                get_only(check(ok, st, Some(why)))
            }
            "/replica" => Routed::Response(self.replica_check(&req).await),
            "/read-only" => {
                let st = self.mgr.status().await;
                let ok = st.is_primary() || st.is_replica();
                let why = format!("this node is {}", st.state);
                Routed::Response(check(ok, st, Some(why)))
            }
            "/sync" | "/synchronous" => Routed::Response(self.sync_check(true).await),
            "/async" | "/asynchronous" => Routed::Response(self.sync_check(false).await),
            "/liveness" => {
                let age = sidecar_kit::telemetry::unix_now() - *lock(&self.mgr.last_tick);
                // A clone or rewind holds the loop for minutes; that is
                // alive, not hung.
                let busy = lock(&self.mgr.activity).is_some();
                let limit = 10.0 * self.mgr.tuning().values.loop_interval_secs as f64 + 30.0;
                let ok = busy || age < limit;
                let code = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Routed::Response(AdminResponse::json(
                    code,
                    &Liveness {
                        alive: ok,
                        last_pass_age_secs: age,
                    },
                ))
            }
            "/readiness" => {
                let st = self.mgr.status().await;
                let ok = st.is_primary() || (st.is_replica() && st.streaming());
                let why = format!("this node is {}; streaming: {}", st.state, st.streaming());
                Routed::Response(check(ok, st, Some(why)))
            }
            "/cluster" => Routed::Response(self.cluster().await),
            "/history" => Routed::Response(AdminResponse::ok(&self.mgr.history().await)),
            "/config" if req.method == Method::GET => {
                Routed::Response(AdminResponse::ok(&self.config_answer(&self.mgr.tuning())))
            }
            "/config" if req.method == Method::PATCH => Routed::Response(match req.json() {
                Ok(patch) => self.patch_config(patch).await,
                Err(resp) => resp,
            }),
            "/config" => Routed::MethodNotAllowed("GET, PATCH, HEAD, OPTIONS"),
            "/switchover" | "/promote" | "/demote" | "/lease" | "/vote" | "/pause"
            | "/fleet/raft" | "/failover" | "/restart" | "/reload" | "/reinitialize"
                if req.method != Method::POST =>
            {
                Routed::MethodNotAllowed("POST")
            }
            "/lease" => Routed::Response(match req.json() {
                Ok(r) => match self.mgr.grant_lease(r).await {
                    Ok(a) => AdminResponse::ok(&a),
                    Err(e) => {
                        AdminResponse::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    }
                },
                Err(resp) => resp,
            }),
            "/fleet/raft" => Routed::Response(match self.mgr.consensus() {
                Some(c) => c.handle_http(&req).await,
                None => AdminResponse::error(
                    StatusCode::NOT_FOUND,
                    "this node is in no Raft group (automatic failover is off)",
                ),
            }),
            "/vote" => Routed::Response(match req.json() {
                Ok(r) => AdminResponse::ok(&self.mgr.grant_vote(r)),
                Err(resp) => resp,
            }),
            "/pause" => Routed::Response(match req.json::<PauseRequest>() {
                Ok(r) => self.pause(r).await,
                Err(resp) => resp,
            }),
            "/switchover" => Routed::Response(match req.json() {
                Ok(r) => op_answer(self.mgr.operator().switchover(r).await),
                Err(resp) => resp,
            }),
            "/promote" => Routed::Response(match req.json() {
                Ok(r) => op_answer(self.mgr.operator().promote(r).await),
                Err(resp) => resp,
            }),
            "/demote" => Routed::Response(match req.json() {
                Ok(r) => op_answer(self.mgr.operator().demote(r).await),
                Err(resp) => resp,
            }),
            "/failover" => Routed::Response(match req.json() {
                Ok(r) => op_answer(self.mgr.operator().failover_to(r).await),
                Err(resp) => resp,
            }),
            "/restart" => Routed::Response(match req.json() {
                Ok(r) => op_answer(self.mgr.operator().restart_postgres(r).await),
                Err(resp) => resp,
            }),
            "/reload" => Routed::Response(op_answer(self.mgr.operator().reload_postgres().await)),
            "/reinitialize" => Routed::Response(match req.json() {
                Ok(r) => op_answer(self.mgr.operator().reinitialize(r).await),
                Err(resp) => resp,
            }),
            _ => Routed::NotFound,
        }
    }

    fn decorate(&self, response: &mut AdminResponse) {
        if let Ok(v) = HeaderValue::from_str(&self.mgr.epoch().to_string()) {
            response
                .headers
                .push((HeaderName::from_static("x-aurora-epoch"), v));
        }
    }
}

//! Operator operations: switchover, promote, demote.
//!
//! A switchover is run by the current primary:
//! 1. check the target (a streaming standby, within `max_lag_on_failover_bytes`
//!    unless forced);
//! 2. stop the primary with a fast shutdown: PostgreSQL sends every WAL
//!    record, up to and including the shutdown checkpoint, to the connected
//!    standbys before it exits, so nothing acknowledged can be missing;
//! 3. wait until the target has replayed past that checkpoint;
//! 4. ask the target to promote itself at epoch + 1 (it stores the epoch
//!    before promoting);
//! 5. store the new epoch here and start this server as a standby of the
//!    target (rewinding if it must);
//! 6. wait for the other standbys to stream from the new primary.
//!
//! If the target refuses or never catches up, this server starts again as
//! the primary: nothing was promoted, nothing was lost.

use std::time::{Duration, Instant};

pub use aurora_api::repl::{DemoteRequest, OpReport, PromoteRequest, SwitchoverRequest};
use hyper::Method;
use sidecar_kit::http_client::ok_or_status;

use crate::config::CrashPoint;
use crate::manager::{Failure, Manager, NodeStatus};
use crate::member::Member;
use crate::probe;
use crate::server::StopMode;
use crate::settings;
use crate::state::EpochRecord;

/// Why an operation did not run (409) or failed (500).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<crate::server::ServerError> for OpError {
    fn from(e: crate::server::ServerError) -> Self {
        OpError::Failed(e.to_string())
    }
}

impl From<Failure> for OpError {
    fn from(e: Failure) -> Self {
        OpError::Failed(e.to_string())
    }
}

/// Operator operations (switchover, promote, demote, and maintenance.rs's
/// failover to a candidate, restart, reload, reinitialize): each under the
/// operation lock, so none races a reconcile pass. Borrowed from the
/// manager for one request (`Manager::operator`); they keep no state of
/// their own.
pub struct Operator<'a> {
    pub(crate) m: &'a Manager,
}

impl Manager {
    pub fn operator(&self) -> Operator<'_> {
        Operator { m: self }
    }
}

impl Operator<'_> {
    pub(crate) async fn busy_lock(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, OpError> {
        match tokio::time::timeout(Duration::from_secs(10), self.m.op_lock.lock()).await {
            Ok(g) => Ok(g),
            Err(_) => Err(OpError::Refused(format!(
                "busy: {}",
                crate::manager::lock(&self.m.activity)
                    .clone()
                    .unwrap_or_else(|| "another operation is running".into())
            ))),
        }
    }

    pub(crate) async fn local_is_primary(&self) -> Result<bool, OpError> {
        let client =
            self.m.local().await.map_err(|e| {
                OpError::Refused(format!("the local PostgreSQL does not answer: {e}"))
            })?;
        let st = probe::server_state(&client)
            .await
            .map_err(|e| OpError::Failed(e.to_string()))?;
        Ok(!st.in_recovery)
    }

    async fn peer_status(&self, m: &Member) -> Result<NodeStatus, OpError> {
        self.m
            .http
            .get_json::<NodeStatus>(&m.url("/status"))
            .await
            .map_err(|e| OpError::Refused(format!("{} does not answer: {e}", m.name)))
    }

    pub(crate) fn member_or_refuse(&self, name: &str) -> Result<Member, OpError> {
        self.m
            .cfg
            .member(name)
            .cloned()
            .ok_or_else(|| OpError::Refused(format!("{name} is not a member of this fleet")))
    }

    /// `POST /switchover` on the primary.
    pub async fn switchover(&self, req: SwitchoverRequest) -> Result<OpReport, OpError> {
        let _guard = self.busy_lock().await?;
        let result = self.switchover_locked(req).await;
        self.m.set_activity(None);
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.m
            .metrics
            .operations
            .with_label_values(&["switchover", label])
            .inc();
        result
    }

    async fn switchover_locked(&self, req: SwitchoverRequest) -> Result<OpReport, OpError> {
        let started = Instant::now();
        let timeout = Duration::from_secs(self.m.cfg.replication.switchover_timeout_secs);
        if !self.local_is_primary().await? {
            return Err(OpError::Refused(format!(
                "{} is not the primary (the primary is {}); send the switchover there",
                self.m.name(),
                self.m.known().primary
            )));
        }
        let target = match &req.to {
            Some(name) => self.member_or_refuse(name)?,
            None => self
                .m
                .primary()
                .sync_candidates()
                .first()
                .map(|m| (*m).clone())
                .ok_or_else(|| {
                    OpError::Refused("no standby to switch over to; name one with \"to\"".into())
                })?,
        };
        if target.name.as_str() == self.m.name() {
            return Err(OpError::Refused(format!(
                "{} is already the primary",
                target.name
            )));
        }
        let ts = self.peer_status(&target).await?;
        if ts.state != "replica" {
            return Err(OpError::Refused(format!(
                "{} is not a standby (it is {})",
                target.name, ts.state
            )));
        }
        if !ts.streaming() {
            return Err(OpError::Refused(format!(
                "{} is not streaming from this primary",
                target.name
            )));
        }
        let lag = ts.lag_bytes.unwrap_or(u64::MAX);
        if lag > self.m.tuning().max_lag_bytes() && !req.force {
            return Err(OpError::Refused(format!(
                "{} is {lag} bytes behind (max_lag_on_failover_bytes is {}); pass force=true to switch anyway",
                target.name, self.m.tuning().max_lag_bytes()
            )));
        }

        let mut report = OpReport {
            operation: "switchover".into(),
            from: self.m.name().to_string(),
            to: target.name.to_string(),
            ..Default::default()
        };
        // From here on the primary is going down.
        self.m.set_activity(Some("switchover: stopping writes"));
        self.m.server.stop(StopMode::Fast).await?;
        self.m.drop_local().await;
        let control = self.m.server.control_data().await?;
        report.checkpoint_lsn = Some(control.checkpoint_lsn);
        report.steps.push(format!(
            "stopped {} (fast shutdown); final checkpoint {}",
            self.m.name(),
            control.checkpoint_lsn
        ));

        // Wait for the target to replay the shutdown checkpoint.
        self.m
            .set_activity(Some("switchover: waiting for the target to catch up"));
        let caught_up = wait_for(timeout, || async {
            match self.peer_status(&target).await {
                Ok(s) => s.replay_lsn().is_some_and(|l| l > control.checkpoint_lsn),
                Err(_) => false,
            }
        })
        .await;
        if !caught_up {
            self.restart_as_primary().await?;
            return Err(OpError::Failed(format!(
                "{} did not replay past {} within {} s; {} is primary again, nothing changed",
                target.name,
                control.checkpoint_lsn,
                timeout.as_secs(),
                self.m.name()
            )));
        }
        report
            .steps
            .push(format!("{} replayed past the checkpoint", target.name));

        // Promote the target at the next epoch: with the leader key on the
        // Raft group, the key is handed to the target first (committed by a
        // majority), and the target promotes only once it sees that.
        let (epoch, handed_at) = match self.m.consensus() {
            Some(c) => match c.handover(target.name.as_str()).await {
                Ok((epoch, revision)) => (epoch, Some(revision)),
                Err(e) => {
                    self.restart_as_primary().await?;
                    return Err(OpError::Failed(format!(
                        "the leader key could not be handed to {}: {e}; {} runs as primary again \
                         (were the handover to commit after all, {} takes over from the committed \
                         key and this node steps down: GET /history shows it)",
                        target.name,
                        self.m.name(),
                        target.name
                    )));
                }
            },
            None => (self.m.epoch() + 1, None),
        };
        if handed_at.is_some() {
            self.m.fault_point(CrashPoint::HandedOver).await;
        }
        self.m
            .set_activity(Some("switchover: promoting the target"));
        let body = serde_json::to_value(PromoteRequest {
            epoch: Some(epoch),
            from: Some(self.m.name().to_string()),
            checkpoint_lsn: Some(control.checkpoint_lsn),
            force: req.force,
        })
        .unwrap_or_default();
        let url = target.url("/promote");
        let answer = self
            .http_long(timeout)
            .send(Method::POST, &url, self.m.token(), Some(&body))
            .await;
        let promoted = match answer {
            Ok(resp) if resp.status.is_success() => true,
            Ok(resp) if resp.status.is_client_error() => {
                // Refused: the target did nothing.
                let reason = ok_or_status(&url, &resp)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                if let (Some(c), Some(revision)) = (self.m.consensus(), handed_at) {
                    // Take the key back, unless the target renewed it.
                    if let Err(e) = c.take_back(revision, epoch + 1).await {
                        return Err(OpError::Failed(format!(
                            "{} refused to promote ({reason}), and the leader key could not be taken back ({e}); \
                             {} stays stopped until the key settles",
                            target.name,
                            self.m.name()
                        )));
                    }
                    let taken = c.view().leader.map(|k| k.epoch).unwrap_or_default();
                    self.m.adopt(&EpochRecord {
                        epoch: i64::try_from(taken).unwrap_or(i64::MAX),
                        primary: self.m.name().to_string(),
                        changed_at: sidecar_kit::telemetry::unix_now(),
                    })?;
                }
                self.restart_as_primary().await?;
                return Err(OpError::Failed(format!(
                    "{} refused to promote ({reason}); {} is primary again, nothing changed",
                    target.name,
                    self.m.name()
                )));
            }
            _ => {
                // Unknown outcome: ask the target what it is now.
                matches!(self.peer_status(&target).await, Ok(s) if s.is_primary() && s.epoch >= epoch)
            }
        };
        if !promoted {
            // The target may still promote itself (it stored the epoch
            // first); starting here as primary could make two. Stay down
            // and let reconciliation follow whoever holds the epoch.
            return Err(OpError::Failed(format!(
                "the promotion of {} has an unknown outcome; {} stays stopped until the epoch settles",
                target.name,
                self.m.name()
            )));
        }
        report.seconds_to_writable = Some(started.elapsed().as_secs_f64());
        report.epoch = epoch;
        report
            .steps
            .push(format!("{} promoted at epoch {epoch}", target.name));

        // Follow the new primary.
        self.m.adopt(&EpochRecord {
            epoch,
            primary: target.name.to_string(),
            changed_at: sidecar_kit::telemetry::unix_now(),
        })?;
        self.m
            .set_activity(Some("switchover: rejoining as a standby"));
        settings::apply(&self.m.server, &self.m.cfg, &self.m.standby().desired())?;
        self.m.server.start().await?;
        self.m.drop_local().await;
        self.m.drop_upstream().await;
        report
            .steps
            .push(format!("{} started as a standby", self.m.name()));

        // Wait (bounded) for every other member to stream from the target.
        self.m
            .set_activity(Some("switchover: waiting for standbys to follow"));
        let others: Vec<String> = self
            .m
            .cfg
            .others()
            .filter(|m| m.name != target.name)
            .map(|m| m.name.to_string())
            .chain(std::iter::once(self.m.name().to_string()))
            .collect();
        let deadline = Instant::now() + timeout;
        let followers = loop {
            let followers: Vec<(String, bool)> = match self.peer_status(&target).await {
                Ok(s) => others
                    .iter()
                    .map(|n| {
                        let ok = s
                            .replicas
                            .iter()
                            .any(|r| &r.name == n && r.state == "streaming");
                        (n.clone(), ok)
                    })
                    .collect(),
                Err(_) => others.iter().map(|n| (n.clone(), false)).collect(),
            };
            if followers.iter().all(|(_, ok)| *ok) || Instant::now() >= deadline {
                break followers;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        report.followers = followers;
        report.seconds_total = started.elapsed().as_secs_f64();
        if let Some(s) = report.seconds_to_writable {
            self.m.metrics.last_switchover_seconds.set(s);
        }
        self.m
            .event(
                "switchover",
                serde_json::to_value(&report).unwrap_or_default(),
            )
            .await;
        Ok(report)
    }

    fn http_long(&self, timeout: Duration) -> sidecar_kit::http_client::HttpClient {
        sidecar_kit::http_client::HttpClient::new(timeout)
    }

    /// An operation run by another member: its report, or its refusal
    /// (4xx: 409 here) or failure with its reason.
    pub(crate) async fn forward_op(
        &self,
        m: &Member,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<OpReport, OpError> {
        let url = m.url(path);
        let timeout = Duration::from_secs(self.m.cfg.replication.switchover_timeout_secs * 3);
        let resp = self
            .http_long(timeout)
            .send(Method::POST, &url, self.m.token(), Some(body))
            .await
            .map_err(|e| OpError::Failed(format!("{} does not answer: {e}", m.name)))?;
        if resp.status.is_success() {
            return resp.json(&url).map_err(|e| OpError::Failed(e.to_string()));
        }
        let reason = ok_or_status(&url, &resp)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        if resp.status.is_client_error() {
            Err(OpError::Refused(reason))
        } else {
            Err(OpError::Failed(reason))
        }
    }

    /// Undo of a switchover that did not happen: start again as primary.
    async fn restart_as_primary(&self) -> Result<(), OpError> {
        settings::apply(&self.m.server, &self.m.cfg, &self.m.primary().desired())?;
        self.m.server.start().await?;
        self.m.drop_local().await;
        Ok(())
    }

    /// `POST /promote`.
    pub async fn promote(&self, req: PromoteRequest) -> Result<OpReport, OpError> {
        if req.epoch.is_none() {
            return self.promote_requested_by_operator(req).await;
        }
        let _guard = self.busy_lock().await?;
        let result = self.promote_for_switchover(req).await;
        self.m.set_activity(None);
        self.m
            .metrics
            .operations
            .with_label_values(&["promote", if result.is_ok() { "ok" } else { "failed" }])
            .inc();
        result
    }

    /// The operator asked this standby to become primary. While the
    /// primary is healthy that is a switchover run by the primary; without
    /// one it is a manual failover, only with `force`.
    async fn promote_requested_by_operator(
        &self,
        req: PromoteRequest,
    ) -> Result<OpReport, OpError> {
        if self.local_is_primary().await? {
            return Err(OpError::Refused(format!(
                "{} is already the primary",
                self.m.name()
            )));
        }
        let known = self.m.known();
        // A primary no longer in `members` was taken out by the operator
        // (a lost majority's runbook shrinks `members` before this forced
        // promotion): it is not available, whatever it may be.
        let answer = match self.m.cfg.member(&known.primary) {
            Some(p) => self.peer_status(p).await.map(|s| (p.clone(), s)),
            None => Err(OpError::Failed(format!(
                "{} is not in members any more",
                known.primary
            ))),
        };
        match answer {
            Ok((primary, s)) if s.is_primary() => {
                let body = serde_json::to_value(SwitchoverRequest {
                    to: Some(self.m.name().to_string()),
                    force: req.force,
                })
                .unwrap_or_default();
                self.forward_op(&primary, "/switchover", &body).await
            }
            other => {
                let why = match other {
                    Ok((p, s)) => format!("{} answers but is {}", p.name, s.state),
                    Err(e) => e.to_string(),
                };
                let estimate = self.m.loss_estimate().await;
                let loss = match estimate["would_lose_bytes"].as_u64() {
                    Some(b) => format!(
                        "the primary last reported position {}, this node has {}: promoting now loses up to {b} bytes of WAL{}",
                        estimate["primary_last_reported_lsn"].as_str().unwrap_or("?"),
                        estimate["this_node_lsn"].as_str().unwrap_or("?"),
                        match estimate["primary_reported_async_to"].as_array() {
                            Some(a) if !a.is_empty() => format!(
                                ", and the primary had degraded to asynchronous replication (reported to {})",
                                a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                            _ => String::new(),
                        }
                    ),
                    None => "how much would be lost is unknown (no member has a report from the primary)".into(),
                };
                // The standby the committed sync key names has every write
                // the primary acknowledged (Patroni's manual failover to the
                // sync standby): no force needed, and the claim is checked
                // against the sync key again when it commits.
                // Only if the primary's server is gone too: one that still
                // answers as a primary (its repl-manager down) is still
                // writable, and nobody fences it; that takes force.
                let server_up = match self.m.cfg.member(&known.primary) {
                    Some(p) => self.m.primary_answer(p).await == Some(true),
                    None => false,
                };
                let why = if server_up {
                    format!("{why}, but its PostgreSQL still answers as a primary")
                } else {
                    why
                };
                let as_sync_standby = !server_up
                    && self
                        .m
                        .consensus()
                        .is_some_and(|c| c.view().is_sync_standby(self.m.name()));
                let loss = if as_sync_standby {
                    "the committed sync key names this node: it has every write the primary acknowledged".to_string()
                } else {
                    loss
                };
                if !req.force && !as_sync_standby {
                    return Err(OpError::Refused(format!(
                        "the primary {} is not available ({why}); {loss}; pass force=true to promote anyway",
                        known.primary
                    )));
                }
                let _guard = self.busy_lock().await?;
                let started = Instant::now();
                let record = match self.m.consensus() {
                    Some(c) => {
                        let epoch = c.take_now(self.m.epoch() + 1, as_sync_standby && !req.force).await.map_err(|e| {
                            OpError::Failed(format!(
                                "the leader key: {e} (a forced promotion still needs a majority of members)"
                            ))
                        })?;
                        self.m.adopt(&EpochRecord {
                            epoch,
                            primary: self.m.name().to_string(),
                            changed_at: sidecar_kit::telemetry::unix_now(),
                        })?;
                        self.m.known()
                    }
                    None => self.m.bump_epoch(self.m.name())?,
                };
                self.m.primary().promote_server().await?;
                self.m.primary().failover_round(&self.m.known()).await;
                self.m.primary().act().await?;
                self.m.set_activity(None);
                self.m
                    .metrics
                    .operations
                    .with_label_values(&["promote", if req.force { "forced" } else { "ok" }])
                    .inc();
                let report = OpReport {
                    operation: "promote".into(),
                    from: known.primary.clone(),
                    to: self.m.name().to_string(),
                    epoch: record.epoch,
                    seconds_to_writable: Some(started.elapsed().as_secs_f64()),
                    seconds_total: started.elapsed().as_secs_f64(),
                    steps: vec![format!(
                        "{} promotion: {why}; {loss}",
                        if req.force { "forced" } else { "manual" }
                    )],
                    ..Default::default()
                };
                self.m
                    .event(
                        "promoted",
                        serde_json::to_value(&report).unwrap_or_default(),
                    )
                    .await;
                Ok(report)
            }
        }
    }

    /// Step 4 of a switchover, on the target.
    async fn promote_for_switchover(&self, req: PromoteRequest) -> Result<OpReport, OpError> {
        let started = Instant::now();
        let epoch = req.epoch.unwrap_or_default();
        // Only a switchover promotes at a given epoch, and only once its
        // primary has stopped: the request names that primary, the next
        // epoch and its shutdown checkpoint, and the primary's server must
        // not be running as a primary. An admin token alone must never
        // make a second primary (#15).
        let from = req.from.as_deref().ok_or_else(|| {
            OpError::Refused(
                "a promotion at an epoch is a switchover's and names the old primary (`from`); \
                 to promote by hand, leave `epoch` out"
                    .into(),
            )
        })?;
        let old = self.member_or_refuse(from)?;
        if old.name.as_str() == self.m.name() {
            return Err(OpError::Refused(format!(
                "{from} cannot promote itself in a switchover"
            )));
        }
        // The handed key is committed before this request is sent, and this
        // node's own rounds may see it first: its failover round then
        // stores the epoch (it holds the key), and its next reconcile pass
        // promotes the server. The request (well formed, above) is then
        // answered for what this node already did, not refused: a refusal
        // made the old primary take the key back and the switchover fail
        // (or, once the server was promoted, report an unknown outcome)
        // while nothing was wrong.
        let known = self.m.known();
        let resumed = epoch > 0 && known.epoch == epoch && known.primary == self.m.name();
        if self.local_is_primary().await? {
            if resumed && self.handed_to_me(from, epoch).await {
                return Ok(self
                    .promote_report(&req, epoch, started, "already promoted")
                    .await);
            }
            return Err(OpError::Refused(format!(
                "{} is already the primary",
                self.m.name()
            )));
        }
        let next = self.m.epoch() + 1;
        if epoch != next && !resumed {
            return Err(OpError::Refused(format!(
                "epoch {epoch} is not the next one ({next}, after this node's {})",
                self.m.epoch()
            )));
        }
        if req.checkpoint_lsn.is_none() {
            return Err(OpError::Refused(
                "a switchover names the old primary's shutdown checkpoint (`checkpoint_lsn`)"
                    .into(),
            ));
        }
        self.old_primary_stopped(&old).await?;
        let client = self.m.local().await?;
        let st = probe::server_state(&client)
            .await
            .map_err(|e| OpError::Failed(e.to_string()))?;
        if let Some(ckpt) = req.checkpoint_lsn {
            let replayed = st.replay_lsn.unwrap_or_default();
            if replayed <= ckpt && !req.force {
                return Err(OpError::Refused(format!(
                    "replayed only up to {replayed}, not past the old primary's checkpoint {ckpt}"
                )));
            }
        }
        if let Some(c) = self.m.consensus() {
            // The key was handed to this node first, at this epoch.
            if !c
                .wait_for_key(self.m.name(), epoch, self.m.tuning().probe_interval() * 3)
                .await
            {
                return Err(OpError::Refused(format!(
                    "the leader key committed here does not name {} at epoch {epoch}",
                    self.m.name()
                )));
            }
            self.m.fault_point(CrashPoint::TargetKeySeen).await;
        }
        // Durable first: if this node dies mid-way it still knows, on
        // restart, that it was made primary at this epoch.
        self.m.adopt(&EpochRecord {
            epoch,
            primary: self.m.name().to_string(),
            changed_at: sidecar_kit::telemetry::unix_now(),
        })?;
        self.m.set_activity(Some("promoting"));
        self.m.primary().promote_server().await?;
        self.m.fault_point(CrashPoint::TargetPromoted).await;
        // A lease at once (writes are acknowledged only under one), then
        // slots for every other member before they reconnect, the cluster
        // record, the synchronous standby policy.
        self.m.primary().failover_round(&self.m.known()).await;
        self.m.primary().act().await?;
        Ok(self.promote_report(&req, epoch, started, "promoted").await)
    }

    /// Whether the committed key names this node at `epoch`, handed over
    /// by `from` (the fleet's history says so): the switchover this request
    /// belongs to happened. Without a Raft group nothing finishes a
    /// promotion before the request, so never.
    async fn handed_to_me(&self, from: &str, epoch: i64) -> bool {
        let Some(c) = self.m.consensus() else {
            return false;
        };
        c.wait_for_key(self.m.name(), epoch, self.m.tuning().probe_interval())
            .await
            && c.view().history.iter().any(|s| {
                i64::try_from(s.epoch) == Ok(epoch)
                    && s.member == self.m.name()
                    && s.from.as_deref() == Some(from)
                    && s.how == "handover"
            })
    }

    /// The answer to a switchover's promote request, and its event.
    async fn promote_report(
        &self,
        req: &PromoteRequest,
        epoch: i64,
        started: Instant,
        what: &str,
    ) -> OpReport {
        let report = OpReport {
            operation: "promote".into(),
            from: req.from.clone().unwrap_or_default(),
            to: self.m.name().to_string(),
            epoch,
            seconds_to_writable: Some(started.elapsed().as_secs_f64()),
            seconds_total: started.elapsed().as_secs_f64(),
            checkpoint_lsn: req.checkpoint_lsn,
            steps: vec![format!("{what} at epoch {epoch}")],
            followers: Vec::new(),
        };
        self.m
            .event(
                "promoted",
                serde_json::to_value(&report).unwrap_or_default(),
            )
            .await;
        report
    }

    /// A switchover's old primary has stopped: nothing listens on its port
    /// (the kernel refused the connection), or what answers is not a
    /// primary (in recovery, shutting down, or a port proxy with nothing
    /// behind it). A running primary is refused, and so is no answer at
    /// all: a host cut off, or gone without a RST, may still be a primary.
    async fn old_primary_stopped(&self, m: &Member) -> Result<(), OpError> {
        let within = self.m.tuning().probe_interval();
        let addr = format!("{}:{}", m.host, m.port);
        let unknown = |why: String| {
            OpError::Refused(format!(
                "cannot tell whether the old primary {} stopped ({addr}: {why}); not promoting",
                m.name
            ))
        };
        match tokio::time::timeout(within, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            Ok(Err(e)) => return Err(unknown(e.to_string())),
            Err(_) => return Err(unknown(format!("no answer within {within:?}"))),
            Ok(Ok(_)) => {}
        }
        match self.m.primary_answer(m).await {
            Some(true) => Err(OpError::Refused(format!(
                "the old primary {} still runs as a primary; a switchover promotes only after it stopped",
                m.name
            ))),
            Some(false) | None => Ok(()),
        }
    }

    /// `POST /demote`: this primary follows `to`, which must already be a
    /// primary at an epoch at least this node's.
    pub async fn demote(&self, req: DemoteRequest) -> Result<OpReport, OpError> {
        let started = Instant::now();
        let target = self.member_or_refuse(&req.to)?;
        if target.name.as_str() == self.m.name() {
            return Err(OpError::Refused("a node cannot follow itself".into()));
        }
        let _guard = self.busy_lock().await?;
        if !self.local_is_primary().await? {
            return Err(OpError::Refused(format!(
                "{} is not a primary; nothing to demote",
                self.m.name()
            )));
        }
        let ts = self.peer_status(&target).await?;
        if !ts.is_primary() || ts.epoch < self.m.epoch() {
            return Err(OpError::Refused(format!(
                "{} is not a primary at epoch {} or later (it is {} at epoch {}); \
                 demoting would leave no primary: use /switchover to hand over",
                target.name,
                self.m.epoch(),
                ts.state,
                ts.epoch
            )));
        }
        let epoch = ts.epoch.max(self.m.epoch());
        let holds_key = self
            .m
            .consensus()
            .is_some_and(|c| c.view().leader_member() == Some(self.m.name()));
        if let (true, Some(c)) = (holds_key, self.m.consensus()) {
            // The operator picked the survivor: the key goes with it.
            let (epoch, _) = c.handover(target.name.as_str()).await.map_err(|e| {
                OpError::Failed(format!(
                    "the leader key could not be handed to {}: {e}",
                    target.name
                ))
            })?;
            self.m.adopt(&EpochRecord {
                epoch,
                primary: target.name.to_string(),
                changed_at: sidecar_kit::telemetry::unix_now(),
            })?;
        } else if ts.epoch > self.m.epoch() {
            self.m.adopt(&EpochRecord {
                epoch,
                primary: target.name.to_string(),
                changed_at: sidecar_kit::telemetry::unix_now(),
            })?;
        } else {
            // Same epoch, two writable servers: the operator picked the
            // survivor; record it at a new epoch so the choice is durable.
            self.m.adopt(&EpochRecord {
                epoch: epoch + 1,
                primary: target.name.to_string(),
                changed_at: sidecar_kit::telemetry::unix_now(),
            })?;
        }
        self.m.drop_upstream().await;
        let result = self.m.standby().demote_to_standby("operator demote").await;
        self.m.set_activity(None);
        result?;
        Ok(OpReport {
            operation: "demote".into(),
            from: self.m.name().to_string(),
            to: target.name.to_string(),
            epoch: self.m.epoch(),
            seconds_to_writable: None,
            seconds_total: started.elapsed().as_secs_f64(),
            steps: vec![format!(
                "rewound and rejoined as a standby of {}",
                target.name
            )],
            ..Default::default()
        })
    }
}

async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! Patroni's other operator endpoints: `POST /failover` (to a named
//! candidate), `/restart`, `/reload` and `/reinitialize`. Each runs under
//! the operation lock the reconcile pass also takes, so none races a pass.

use std::time::{Duration, Instant};

pub use aurora_api::repl::{
    FailoverRequest, MaintenanceReport, OpReport, PromoteRequest, ReinitializeRequest,
    RestartRequest,
};

use crate::ops::{OpError, Operator};
use crate::probe;
use crate::server::StopMode;

/// What a Patroni-style role filter (`"role": "primary"`) means here.
fn role_matches(wanted: &str, primary: bool) -> Result<bool, OpError> {
    match wanted {
        "primary" | "master" | "leader" => Ok(primary),
        "replica" | "standby" => Ok(!primary),
        other => Err(OpError::Refused(format!(
            "role {other:?}: expected primary or replica"
        ))),
    }
}

impl Operator<'_> {
    /// `POST /failover {"candidate": "backup"}` on any member: asks the
    /// candidate to promote itself. The candidate hands it to the primary
    /// as a switchover while the primary answers; otherwise it promotes,
    /// without `force` only as the synchronous standby the fleet committed.
    pub async fn failover_to(&self, req: FailoverRequest) -> Result<OpReport, OpError> {
        let candidate = self.member_or_refuse(&req.candidate)?;
        let known = self.m.known();
        if let Some(leader) = &req.leader {
            if leader != &known.primary {
                return Err(OpError::Refused(format!(
                    "{leader} is not the primary: {} is, at epoch {}",
                    known.primary, known.epoch
                )));
            }
        }
        if candidate.name.as_str() == known.primary {
            return Err(OpError::Refused(format!(
                "{} is already the primary",
                candidate.name
            )));
        }
        let promote = PromoteRequest {
            force: req.force,
            ..Default::default()
        };
        if candidate.name.as_str() == self.m.name() {
            return self.promote(promote).await;
        }
        let body = serde_json::to_value(&promote).unwrap_or_default();
        self.forward_op(&candidate, "/promote", &body).await
    }

    /// `POST /restart`: a fast shutdown and a start of this node's
    /// PostgreSQL. A primary starts again through its duties (the leader
    /// key confirmed first), a standby as the standby it was.
    pub async fn restart_postgres(
        &self,
        req: RestartRequest,
    ) -> Result<MaintenanceReport, OpError> {
        let started = Instant::now();
        let _guard = self.busy_lock().await?;
        let client = self.m.local().await.map_err(|e| {
            OpError::Refused(format!(
                "PostgreSQL is not running here ({e}); repl-manager starts it by itself"
            ))
        })?;
        let st = probe::server_state(&client)
            .await
            .map_err(|e| OpError::Failed(e.to_string()))?;
        drop(client);
        let primary = !st.in_recovery;
        if let Some(role) = &req.role {
            if !role_matches(role, primary)? {
                return Err(OpError::Refused(format!(
                    "this node is a {}, not a {role}: not restarted",
                    if primary { "primary" } else { "replica" }
                )));
            }
        }
        if req.restart_pending && st.pending_restart.is_empty() {
            return Err(OpError::Refused(
                "no setting waits for a restart (restart_pending): not restarted".into(),
            ));
        }
        if primary && self.m.hard_fenced() {
            return Err(OpError::Refused(
                "this primary is fenced (it lost its majority): a restart would not bring writes back"
                    .into(),
            ));
        }
        let mut steps = Vec::new();
        self.m
            .set_activity(Some("restarting PostgreSQL (operator)"));
        self.m.server.hold_if_external()?;
        self.m.server.stop(StopMode::Fast).await?;
        self.m.drop_local().await;
        steps.push("stopped (fast shutdown)".to_string());
        let result = if primary {
            self.m.primary().act().await.map_err(OpError::from)
        } else {
            self.m.server.start().await.map_err(OpError::from)
        };
        self.m.set_activity(None);
        result?;
        steps.push(format!(
            "started as {}",
            if primary { "the primary" } else { "a standby" }
        ));
        let pending = self.pending_restart().await;
        self.m
            .event(
                "restarted",
                serde_json::json!({ "reason": "operator", "primary": primary }),
            )
            .await;
        Ok(MaintenanceReport {
            operation: "restart".into(),
            node: self.m.name().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            steps,
            pending_restart: pending,
        })
    }

    /// `POST /reload`: PostgreSQL re-reads its configuration files.
    /// repl-manager's own file is parsed once, at start: restart the
    /// sidecar to change it.
    pub async fn reload_postgres(&self) -> Result<MaintenanceReport, OpError> {
        let started = Instant::now();
        let client = self
            .m
            .local()
            .await
            .map_err(|e| OpError::Refused(format!("PostgreSQL is not running here: {e}")))?;
        client
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .map_err(|e| OpError::Failed(e.to_string()))?;
        drop(client);
        // The postmaster applies a reload asynchronously; a moment later the
        // pending settings read true.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(MaintenanceReport {
            operation: "reload".into(),
            node: self.m.name().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            steps: vec![
                "pg_reload_conf()".into(),
                "repl-manager's own configuration is read at start: restart the sidecar to change it"
                    .into(),
            ],
            pending_restart: self.pending_restart().await,
        })
    }

    /// `POST /reinitialize`: this standby moves its data directory aside
    /// (kept, never deleted) and clones a fresh one from the primary. A
    /// primary is refused; so is a healthy standby, without `force`.
    pub async fn reinitialize(
        &self,
        req: ReinitializeRequest,
    ) -> Result<MaintenanceReport, OpError> {
        let started = Instant::now();
        let _guard = self.busy_lock().await?;
        let known = self.m.known();
        if known.primary == self.m.name() {
            return Err(OpError::Refused(format!(
                "{} is the primary at epoch {}: only a standby is reinitialized \
                 (switch over first)",
                self.m.name(),
                known.epoch
            )));
        }
        if self.local_is_primary().await.unwrap_or(false) {
            return Err(OpError::Refused(
                "the local server runs as a primary: it rejoins as a standby by itself (rewind or re-clone)"
                    .into(),
            ));
        }
        let status = self.m.status().await;
        if !req.force && status.is_replica() && status.streaming() {
            return Err(OpError::Refused(format!(
                "{} streams from the primary ({} bytes behind): nothing to repair; \
                 pass force=true to re-clone anyway",
                self.m.name(),
                status
                    .lag_bytes
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "?".into())
            )));
        }
        // The clone needs the primary: say so before anything is moved.
        self.m.live_upstream().await.map_err(|e| {
            OpError::Refused(format!(
                "the primary {} cannot be reached to clone from: {e}",
                known.primary
            ))
        })?;
        let result = self.m.standby().reclone("operator reinitialize").await;
        self.m.set_activity(None);
        result?;
        Ok(MaintenanceReport {
            operation: "reinitialize".into(),
            node: self.m.name().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            steps: vec![
                "moved the data directory aside (kept; see aside_dirs in /status)".into(),
                format!("cloned from {} and streaming", known.primary),
            ],
            pending_restart: Vec::new(),
        })
    }

    async fn pending_restart(&self) -> Vec<String> {
        match self.m.local().await {
            Ok(c) => probe::server_state(&c)
                .await
                .map(|s| s.pending_restart)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn patroni_role_names_are_understood_and_others_refused() {
        assert!(role_matches("primary", true).unwrap());
        assert!(role_matches("master", true).unwrap());
        assert!(!role_matches("replica", true).unwrap());
        assert!(role_matches("replica", false).unwrap());
        let e = role_matches("boss", true).unwrap_err().to_string();
        assert!(
            e.contains("boss") && e.contains("primary or replica"),
            "{e}"
        );
    }
}

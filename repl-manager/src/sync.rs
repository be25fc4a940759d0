//! The primary's synchronous-replication policy.
//!
//! Candidates are the lead and the backup other than the primary itself:
//! normally the backup; after a switchover, the former lead.
//!
//! - `sync`: `synchronous_standby_names = FIRST 1 (candidates)`; a commit
//!   is acknowledged only once a candidate has flushed it.
//! - Non-strict (default, as Patroni's non-strict synchronous mode): when
//!   no candidate has streamed for `sync_degrade_after_secs`, the primary
//!   degrades to `async` (empty names) so writes keep flowing. From then on
//!   the candidate is out of sync: the mode is published (database,
//!   `/status`) and automatic failover refuses to promote it. Once a
//!   candidate streams again (the walsender reports `streaming` only after
//!   catch-up) the names are set again and the mode returns to `sync`.
//! - Strict: the names are always set; without a candidate, commits wait
//!   (`blocked`) rather than be acknowledged by the primary alone.
//!
//! A fresh primary (bootstrap, promotion) starts `async` unless strict: it
//! has no synchronous standby yet, and blocking every write until one
//! connects would make a switchover stall.
//!
//! A degrade takes effect at once and reaches the members with the next
//! lease request (within a probe interval). A promotion in that window is
//! refused by the candidate's lost-sight rule (see `failover.rs`: it lost
//! the primary `sync_degrade_after_secs` before the voters did), and the
//! voters' witness files keep what they heard across a restart. Patroni
//! orders it the other way (the `/sync` key is updated before
//! `synchronous_standby_names` is emptied); with the Raft-backed sync key of
//! #15 this will too.

use std::time::{Duration, Instant};

use cluster_db::SyncMode;
use sidecar_kit::telemetry::unix_now;

use crate::manager::SyncView;
use crate::probe::StandbyConn;
use crate::settings::sync_names;

#[derive(Debug)]
pub struct SyncTracker {
    strict: bool,
    pub mode: SyncMode,
    pub standby: Option<String>,
    missing_since: Option<Instant>,
    degraded_since: Option<f64>,
}

/// What the primary should set now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDecision {
    pub names: String,
    pub mode: SyncMode,
    pub standby: Option<String>,
    /// `Some(event kind)` when the mode changed.
    pub transition: Option<&'static str>,
}

impl SyncTracker {
    pub fn new(strict: bool) -> Self {
        Self {
            strict,
            mode: if strict {
                SyncMode::Blocked
            } else {
                SyncMode::Async
            },
            standby: None,
            missing_since: None,
            degraded_since: Some(unix_now()),
        }
    }

    /// Starts over (a new primary): takes the running server's setting as
    /// the truth so a restart of repl-manager does not flap the mode.
    pub fn reset(&mut self, current_names: &str) {
        let fresh = Self::new(self.strict);
        *self = fresh;
        if !current_names.trim().is_empty() && !self.strict {
            self.mode = SyncMode::Sync;
            self.degraded_since = None;
        }
    }

    pub fn view(&self) -> SyncView {
        SyncView {
            mode: self.mode.into(),
            standby: self.standby.clone(),
            strict: self.strict,
            degraded_since: self.degraded_since,
        }
    }

    pub fn decide(
        &mut self,
        candidates: &[&str],
        standbys: &[StandbyConn],
        degrade_after: Duration,
    ) -> SyncDecision {
        let streaming = candidates
            .iter()
            .find(|c| standbys.iter().any(|s| s.name == **c && s.is_live()))
            .map(|c| c.to_string());
        let full = sync_names(candidates);
        let before = self.mode;
        let names = if self.strict {
            self.mode = if streaming.is_some() {
                SyncMode::Sync
            } else {
                SyncMode::Blocked
            };
            full
        } else {
            match (self.mode, &streaming) {
                (_, Some(_)) => {
                    self.missing_since = None;
                    self.mode = SyncMode::Sync;
                    full
                }
                (SyncMode::Sync, None) => {
                    let since = *self.missing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= degrade_after {
                        self.mode = SyncMode::Async;
                        String::new()
                    } else {
                        // Commits wait for the standby a little longer.
                        full
                    }
                }
                (_, None) => {
                    self.mode = SyncMode::Async;
                    String::new()
                }
            }
        };
        if candidates.is_empty() && !self.strict {
            self.mode = SyncMode::Async;
        }
        self.standby = match self.mode {
            SyncMode::Sync => streaming,
            _ => None,
        };
        let transition = if before == self.mode {
            None
        } else {
            Some(match self.mode {
                SyncMode::Sync => {
                    self.degraded_since = None;
                    "sync_restored"
                }
                SyncMode::Async => {
                    self.degraded_since = Some(unix_now());
                    "sync_degraded"
                }
                SyncMode::Blocked => {
                    self.degraded_since = Some(unix_now());
                    "sync_blocked"
                }
            })
        };
        SyncDecision {
            names: if candidates.is_empty() {
                String::new()
            } else {
                names
            },
            mode: self.mode,
            standby: self.standby.clone(),
            transition,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, state: &str) -> StandbyConn {
        StandbyConn {
            name: name.into(),
            client_addr: None,
            state: state.into(),
            sync_state: "async".into(),
            sent_lsn: None,
            flush_lsn: None,
            replay_lsn: None,
            lag_bytes: None,
            replay_lag_secs: None,
            reply_age_secs: Some(0.5),
        }
    }

    #[test]
    fn degrades_only_after_the_grace_period_and_recovers_on_streaming() {
        let mut t = SyncTracker::new(false);
        let cands = ["backup"];
        let long = Duration::from_secs(3600);
        // Fresh primary, no standby: async.
        let d = t.decide(&cands, &[], long);
        assert_eq!((d.mode, d.names.as_str()), (SyncMode::Async, ""));
        // A catching-up standby does not count.
        let d = t.decide(&cands, &[conn("backup", "catchup")], long);
        assert_eq!(d.mode, SyncMode::Async);
        let d = t.decide(&cands, &[conn("backup", "streaming")], long);
        assert_eq!(d.mode, SyncMode::Sync);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
        assert_eq!(d.transition, Some("sync_restored"));
        assert_eq!(d.standby.as_deref(), Some("backup"));
        // The standby goes away: still sync (writes wait) within the grace period.
        let d = t.decide(&cands, &[], long);
        assert_eq!((d.mode, d.transition), (SyncMode::Sync, None));
        assert!(!d.names.is_empty());
        // After it: degraded.
        let d = t.decide(&cands, &[], Duration::ZERO);
        assert_eq!((d.mode, d.names.as_str()), (SyncMode::Async, ""));
        assert_eq!(d.transition, Some("sync_degraded"));
        assert!(t.view().degraded_since.is_some());
    }

    #[test]
    fn strict_mode_never_drops_the_names() {
        let mut t = SyncTracker::new(true);
        let d = t.decide(&["backup"], &[], Duration::ZERO);
        assert_eq!(d.mode, SyncMode::Blocked);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
        let d = t.decide(&["backup"], &[conn("backup", "streaming")], Duration::ZERO);
        assert_eq!(d.mode, SyncMode::Sync);
    }

    #[test]
    fn restart_keeps_a_running_sync_setting() {
        let mut t = SyncTracker::new(false);
        t.reset("FIRST 1 (\"backup\")");
        // The standby is briefly not listed: still within the grace period.
        let d = t.decide(&["backup"], &[], Duration::from_secs(60));
        assert_eq!(d.mode, SyncMode::Sync);
    }
}

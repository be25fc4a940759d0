//! The primary's synchronous-replication policy.
//!
//! Candidates are the lead and the backup other than the primary itself:
//! normally the backup; after a switchover, the former lead.
//!
//! - `sync`: `synchronous_standby_names = FIRST 1 ("one candidate")`; a
//!   commit is acknowledged only once that candidate has flushed it.
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
//! Where failover is automatic, the sync key on the fleet's Raft group
//! follows the names in Patroni's order (`primary.rs`): a standby leaves
//! the key before the names stop naming it and enters it only once it is
//! named, reports `sync` and has caught up. Only the member the key names
//! takes over automatically. The names name one standby so the key can say
//! exactly who that is.

use std::time::{Duration, Instant};

use crate::manager::SyncView;
use crate::now::Now;
use crate::probe::StandbyConn;
use crate::settings::sync_names;
use cluster_db::SyncMode;

#[derive(Debug, Clone)]
pub struct SyncTracker {
    strict: bool,
    pub mode: SyncMode,
    pub standby: Option<String>,
    /// The one standby `synchronous_standby_names` names (`None`: empty).
    pub named: Option<String>,
    /// The standby entering the sync key, and the primary's position once
    /// the names named it and it reported `sync`: it enters when it has
    /// flushed that far.
    pub entering: Option<(String, crate::lsn::Lsn)>,
    missing_since: Option<Instant>,
    degraded_since: Option<f64>,
}

/// What the primary should set now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDecision {
    pub names: String,
    pub mode: SyncMode,
    pub standby: Option<String>,
    /// The standby the names name.
    pub named: Option<String>,
    /// `Some(event kind)` when the mode changed.
    pub transition: Option<&'static str>,
}

impl SyncTracker {
    pub fn new(strict: bool, now: Now) -> Self {
        Self {
            strict,
            mode: if strict {
                SyncMode::Blocked
            } else {
                SyncMode::Async
            },
            standby: None,
            named: None,
            entering: None,
            missing_since: None,
            degraded_since: Some(now.unix),
        }
    }

    /// Follows the fleet's `synchronous_strict` (dynamic config). Leaving
    /// strict mode while commits wait for a standby keeps them waiting for
    /// it: the degrade to asynchronous commits comes
    /// `sync_degrade_after_secs` later, as after any loss of the standby.
    pub fn set_strict(&mut self, strict: bool) {
        if strict == self.strict {
            return;
        }
        self.strict = strict;
        if !strict && self.mode == SyncMode::Blocked {
            self.mode = SyncMode::Sync;
            self.missing_since = None;
        }
    }

    /// Starts over (a new primary): takes the running server's setting as
    /// the truth so a restart of repl-manager does not flap the mode.
    pub fn reset(&mut self, current_names: &str, now: Now) {
        let fresh = Self::new(self.strict, now);
        *self = fresh;
        self.named = first_named(current_names);
        if self.named.is_some() && !self.strict {
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

    /// The names for the standby named now; before any decision, every
    /// candidate in strict mode (a strict primary never starts
    /// acknowledging alone).
    pub fn names(&self, candidates: &[&str]) -> String {
        match (&self.named, self.mode) {
            (_, SyncMode::Async) => String::new(),
            (Some(n), _) => sync_names(&[n.as_str()]),
            (None, _) => sync_names(candidates),
        }
    }

    /// What is set now, unchanged (a round that keeps the names).
    pub fn hold(&self, candidates: &[&str]) -> SyncDecision {
        SyncDecision {
            names: self.names(candidates),
            mode: self.mode,
            standby: self.standby.clone(),
            named: self.named.clone(),
            transition: None,
        }
    }

    /// The names name one standby, so the sync key (see `primary.rs`) can
    /// say exactly who could have acknowledged a commit: the one already
    /// named while it streams, else the first candidate that streams. A
    /// pure function of the tracker, its arguments and `now`.
    pub fn decide(
        &mut self,
        candidates: &[&str],
        standbys: &[StandbyConn],
        degrade_after: Duration,
        now: Now,
    ) -> SyncDecision {
        let live = |c: &str| standbys.iter().any(|s| s.name == c && s.is_live());
        let named_now = self
            .named
            .clone()
            .filter(|n| candidates.contains(&n.as_str()));
        let streaming = named_now
            .clone()
            .filter(|n| live(n))
            .or_else(|| candidates.iter().find(|c| live(c)).map(|c| c.to_string()));
        let waiting_for = named_now
            .clone()
            .or_else(|| candidates.first().map(|c| c.to_string()));
        let before = self.mode;
        let named = if self.strict {
            self.mode = if streaming.is_some() {
                SyncMode::Sync
            } else {
                SyncMode::Blocked
            };
            streaming.clone().or(waiting_for)
        } else {
            match (self.mode, &streaming) {
                (_, Some(s)) => {
                    self.missing_since = None;
                    self.mode = SyncMode::Sync;
                    Some(s.clone())
                }
                (SyncMode::Sync, None) => {
                    let since = *self.missing_since.get_or_insert(now.mono);
                    if now.mono.saturating_duration_since(since) >= degrade_after {
                        self.mode = SyncMode::Async;
                        None
                    } else {
                        // Commits wait for the standby a little longer.
                        waiting_for
                    }
                }
                (_, None) => {
                    self.mode = SyncMode::Async;
                    None
                }
            }
        };
        if candidates.is_empty() && !self.strict {
            self.mode = SyncMode::Async;
        }
        self.named = if candidates.is_empty() { None } else { named };
        if self.entering.as_ref().map(|(n, _)| n) != self.named.as_ref() {
            self.entering = None;
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
                    self.degraded_since = Some(now.unix);
                    "sync_degraded"
                }
                SyncMode::Blocked => {
                    self.degraded_since = Some(now.unix);
                    "sync_blocked"
                }
            })
        };
        SyncDecision {
            names: self.names(candidates),
            mode: self.mode,
            standby: self.standby.clone(),
            named: self.named.clone(),
            transition,
        }
    }
}

/// The first standby a `synchronous_standby_names` value names (ours are
/// `FIRST 1 ("name", ...)`; a bare list or `ANY` reads the same way).
pub fn first_named(names: &str) -> Option<String> {
    let inner = match (names.find('('), names.rfind(')')) {
        (Some(a), Some(b)) if a < b => &names[a + 1..b],
        _ => names,
    };
    inner
        .split(',')
        .map(|n| n.trim().trim_matches('"').trim())
        .find(|n| !n.is_empty() && *n != "*")
        .map(str::to_string)
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

    /// A clock the tests move by hand.
    fn t0() -> Now {
        Now {
            mono: Instant::now(),
            unix: 1_800_000_000.0,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn degrades_only_after_the_grace_period_and_recovers_on_streaming() {
        let now = t0();
        let mut t = SyncTracker::new(false, now);
        let cands = ["backup"];
        let grace = secs(10.0);
        // Fresh primary, no standby: async.
        let d = t.decide(&cands, &[], grace, now);
        assert_eq!((d.mode, d.names.as_str()), (SyncMode::Async, ""));
        // A catching-up standby does not count.
        let d = t.decide(&cands, &[conn("backup", "catchup")], grace, now);
        assert_eq!(d.mode, SyncMode::Async);
        let d = t.decide(&cands, &[conn("backup", "streaming")], grace, now);
        assert_eq!(d.mode, SyncMode::Sync);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
        assert_eq!(d.transition, Some("sync_restored"));
        assert_eq!(d.standby.as_deref(), Some("backup"));
        assert_eq!(t.view().degraded_since, None);
        // The standby goes away at 1 s: commits wait for it until 11 s.
        let gone = now.after(secs(1.0));
        for at in [0.0, 5.0, 9.999] {
            let d = t.decide(&cands, &[], grace, gone.after(secs(at)));
            assert_eq!((d.mode, d.transition), (SyncMode::Sync, None), "{at} s");
            assert_eq!(d.names, "FIRST 1 (\"backup\")");
        }
        // The grace period counts from the first round that missed it,
        // whatever the rounds in between saw.
        let d = t.decide(&cands, &[], grace, gone.after(grace));
        assert_eq!((d.mode, d.names.as_str()), (SyncMode::Async, ""));
        assert_eq!(d.transition, Some("sync_degraded"));
        assert_eq!(t.view().degraded_since, Some(gone.after(grace).unix));
        // Back: sync at once, and a later loss waits a whole grace again.
        let back = gone.after(secs(30.0));
        let d = t.decide(&cands, &[conn("backup", "streaming")], grace, back);
        assert_eq!(
            (d.mode, d.transition),
            (SyncMode::Sync, Some("sync_restored"))
        );
        let d = t.decide(&cands, &[], grace, back.after(secs(1.0)));
        assert_eq!(d.mode, SyncMode::Sync);
        let d = t.decide(&cands, &[], grace, back.after(secs(10.999)));
        assert_eq!(d.mode, SyncMode::Sync);
        let d = t.decide(&cands, &[], grace, back.after(secs(11.0)));
        assert_eq!(d.mode, SyncMode::Async);
    }

    #[test]
    fn a_standby_that_comes_back_within_the_grace_restarts_it() {
        let now = t0();
        let mut t = SyncTracker::new(false, now);
        let grace = secs(10.0);
        t.decide(&["backup"], &[conn("backup", "streaming")], grace, now);
        t.decide(&["backup"], &[], grace, now.after(secs(1.0)));
        // Streams again at 9 s, lost again at 10 s: the grace starts over.
        let d = t.decide(
            &["backup"],
            &[conn("backup", "streaming")],
            grace,
            now.after(secs(9.0)),
        );
        assert_eq!(d.mode, SyncMode::Sync);
        let d = t.decide(&["backup"], &[], grace, now.after(secs(10.0)));
        assert_eq!(d.mode, SyncMode::Sync);
        let d = t.decide(&["backup"], &[], grace, now.after(secs(19.9)));
        assert_eq!(
            d.mode,
            SyncMode::Sync,
            "the grace counts from 10 s, not 1 s"
        );
        let d = t.decide(&["backup"], &[], grace, now.after(secs(20.0)));
        assert_eq!(d.mode, SyncMode::Async);
    }

    #[test]
    fn leaving_strict_mode_waits_the_degrade_delay_before_going_async() {
        let now = t0();
        let grace = secs(60.0);
        let mut t = SyncTracker::new(true, now);
        let d = t.decide(&["backup"], &[], grace, now);
        assert_eq!(d.mode, SyncMode::Blocked);
        assert_eq!(d.transition, None);
        t.set_strict(false);
        // Commits still wait for the standby: the degrade delay starts now.
        let left = now.after(secs(5.0));
        let d = t.decide(&["backup"], &[], grace, left);
        assert_eq!(d.mode, SyncMode::Sync);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
        let d = t.decide(&["backup"], &[], grace, left.after(secs(59.9)));
        assert_eq!(d.mode, SyncMode::Sync);
        let d = t.decide(&["backup"], &[], grace, left.after(grace));
        assert_eq!(d.mode, SyncMode::Async);
        // And back: strict never drops the names.
        t.set_strict(true);
        let d = t.decide(&["backup"], &[], grace, left.after(secs(61.0)));
        assert_eq!(d.mode, SyncMode::Blocked);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
    }

    #[test]
    fn strict_mode_never_drops_the_names() {
        let now = t0();
        let mut t = SyncTracker::new(true, now);
        let d = t.decide(&["backup"], &[], Duration::ZERO, now.after(secs(3600.0)));
        assert_eq!(d.mode, SyncMode::Blocked);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
        let d = t.decide(
            &["backup"],
            &[conn("backup", "streaming")],
            Duration::ZERO,
            now,
        );
        assert_eq!(d.mode, SyncMode::Sync);
    }

    #[test]
    fn the_names_name_one_standby_and_keep_it_while_it_streams() {
        let now = t0();
        let mut t = SyncTracker::new(false, now);
        let cands = ["backup", "lead"];
        let long = secs(3600.0);
        let d = t.decide(&cands, &[conn("lead", "streaming")], long, now);
        assert_eq!(d.names, "FIRST 1 (\"lead\")");
        // The backup streams too: the lead stays named (no churn).
        let both = [conn("backup", "streaming"), conn("lead", "streaming")];
        let d = t.decide(&cands, &both, long, now);
        assert_eq!(d.named.as_deref(), Some("lead"));
        // The lead goes: the backup, which streams, is named at once.
        let d = t.decide(&cands, &[conn("backup", "streaming")], long, now);
        assert_eq!(d.names, "FIRST 1 (\"backup\")");
        assert_eq!((d.mode, d.transition), (SyncMode::Sync, None));
        // Strict, nobody streams: the names keep the last one named.
        let mut s = SyncTracker::new(true, now);
        let d = s.decide(&cands, &[conn("lead", "streaming")], long, now);
        assert_eq!(d.names, "FIRST 1 (\"lead\")");
        let d = s.decide(&cands, &[], Duration::ZERO, now);
        assert_eq!(
            (d.mode, d.names.as_str()),
            (SyncMode::Blocked, "FIRST 1 (\"lead\")")
        );
    }

    #[test]
    fn the_first_named_standby_is_read_back_from_the_setting() {
        assert_eq!(
            first_named("FIRST 1 (\"backup\", \"lead\")").as_deref(),
            Some("backup")
        );
        assert_eq!(first_named("\"c1\"").as_deref(), Some("c1"));
        assert_eq!(first_named("ANY 1 (a, b)").as_deref(), Some("a"));
        assert_eq!(first_named(""), None);
        assert_eq!(first_named("*"), None);
    }

    #[test]
    fn restart_keeps_a_running_sync_setting() {
        let now = t0();
        let mut t = SyncTracker::new(false, now);
        t.reset("FIRST 1 (\"backup\")", now);
        // The standby is briefly not listed: still within the grace period,
        // which starts at the first round that misses it.
        let d = t.decide(&["backup"], &[], secs(60.0), now.after(secs(1.0)));
        assert_eq!((d.mode, d.transition), (SyncMode::Sync, None));
        let d = t.decide(&["backup"], &[], secs(60.0), now.after(secs(61.0)));
        assert_eq!(
            (d.mode, d.transition),
            (SyncMode::Async, Some("sync_degraded"))
        );
    }
}

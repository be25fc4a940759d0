//! The failover rules, as pure functions over explicit state and an
//! explicit `now`: the primary's lease and fence, what the committed
//! leader key asks of each member, and when a standby may claim the key.
//!
//! repl-manager's rounds (`failover.rs`) gather the inputs (the committed
//! view of the fleet, the epoch record, the monotonic clock) and carry out
//! what these decide; the simulation (`tests/it/simulation.rs`) runs the
//! same functions under its faults, so what it checks is this code, not a
//! restatement of it. The watch on the key's revision
//! ([`crate::consensus::KeyWatch`]) and the sync policy
//! ([`crate::sync::SyncTracker`]) are pure in the same way.

use std::time::{Duration, Instant};

use fleet_state::{FleetView, LeaderKey};

use crate::consensus::{may_take, not_in_sync_key};
use crate::state::EpochRecord;

/// The primary's lease on writes: a renewal of the leader key that
/// committed holds it until `sent + lease` (counted from before the
/// proposal, so it ends before any member's count of the key's TTL).
///
/// `fenced` is set once the lease ran out and the server was stopped; it
/// stays set until a renewal commits again, and a fence whose stop failed
/// is retried every round while it is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub until: Option<Instant>,
    pub fenced: bool,
}

impl Lease {
    /// Whether writes are covered at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// How long the lease still holds at `now` (zero without one).
    pub fn left(&self, now: Instant) -> Duration {
        self.until
            .map(|u| u.saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// A renewal proposed at `sent` committed: the lease holds until
    /// `sent + lease`, and no longer, even when an earlier renewal's ran
    /// further. Each renewal writes its TTL into the key, and a candidate
    /// waits only the TTL the key carries now: after the fleet lowered its
    /// TTL, keeping the longer end of the earlier lease would leave this
    /// primary writable after a candidate may take over. (Renewals are
    /// sequential: one per round, its answer awaited.) Returns whether
    /// this lifts a fence (the server is to serve writes again).
    pub fn renewed(&mut self, sent: Instant, lease: Duration) -> bool {
        self.until = Some(sent + lease);
        std::mem::replace(&mut self.fenced, false)
    }

    /// Whether the primary must stop its server now: it had a lease, the
    /// lease ran out, and it has not fenced yet. Never while paused (an
    /// operator's maintenance mode, or automatic failover off): then
    /// nobody else takes over either, and fencing would only cost
    /// availability (Patroni's `failsafe_mode` rule for a lost DCS).
    ///
    /// A primary that never held a lease in this process (bootstrap, a
    /// restart, a promotion it resumed) has nothing to fence: its server
    /// acknowledges no write until a renewal commits (see
    /// [`Lease::valid`]).
    pub fn fence_due(&self, now: Instant, paused: bool) -> bool {
        !paused && !self.fenced && self.until.is_some_and(|u| now >= u)
    }

    /// Marks the fence; `false` when it already was (the stop is then
    /// retried by the round, not started again).
    pub fn fence(&mut self) -> bool {
        !std::mem::replace(&mut self.fenced, true)
    }

    /// The committed state names another primary: no lease any more.
    pub fn lose(&mut self) {
        self.until = None;
    }
}

/// What the committed leader key asks of a member this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyDuty {
    /// Nothing to change.
    Nothing,
    /// The key names this member at an epoch its record does not show: it
    /// won a promotion (or was handed the key) and stopped before storing
    /// the epoch. It stores the epoch and finishes the promotion.
    Resume { epoch: i64 },
    /// Another member holds the key at a newer epoch than this member
    /// knows: adopt it, and stop being writable at once if this member was
    /// the primary, whether or not the new primary is reachable.
    StepDown { holder: String, epoch: i64 },
    /// This member's record names it primary at an epoch the key, held by
    /// another member at the same or an older epoch, does not back (a
    /// restored or edited state file). Confirmed through the Raft log
    /// before the record is replaced: this member's copy may lag.
    Confirm { holder: String },
}

/// What the committed `key` asks of member `me`, whose epoch record is
/// `known`. `is_member` tells the configured members: a key naming anyone
/// else is not followed (a member removed meanwhile).
pub fn key_duty(
    key: Option<&LeaderKey>,
    me: &str,
    known: &EpochRecord,
    is_member: impl Fn(&str) -> bool,
) -> KeyDuty {
    let Some(k) = key else {
        return KeyDuty::Nothing;
    };
    let epoch = i64::try_from(k.epoch).unwrap_or(i64::MAX);
    if k.member == me {
        let behind = epoch > known.epoch || (epoch == known.epoch && known.primary != me);
        return if behind {
            KeyDuty::Resume { epoch }
        } else {
            KeyDuty::Nothing
        };
    }
    if !is_member(&k.member) {
        return KeyDuty::Nothing;
    }
    if epoch > known.epoch {
        return KeyDuty::StepDown {
            holder: k.member.clone(),
            epoch,
        };
    }
    if known.primary == me {
        return KeyDuty::Confirm {
            holder: k.member.clone(),
        };
    }
    KeyDuty::Nothing
}

/// Why a standby may not claim the leader key automatically now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoClaim {
    /// It holds the key already.
    Holds,
    /// The fleet is paused (maintenance mode): nobody takes over.
    Paused,
    /// Only the standby the committed sync key names takes over by itself
    /// (the reason names who, if anyone, may).
    NotSyncStandby(String),
    /// The key's revision has not stood the TTL on this member's clock
    /// yet; `left` to go.
    TooSoon { left: Duration },
}

impl std::fmt::Display for NoClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Holds => f.write_str("this node holds the leader key"),
            Self::Paused => f.write_str(
                "the fleet is paused (maintenance mode): no member takes over by itself",
            ),
            Self::NotSyncStandby(why) => f.write_str(why),
            Self::TooSoon { left } => write!(
                f,
                "the leader key must stand {:.1} s more before it may be taken",
                left.as_secs_f64()
            ),
        }
    }
}

/// Whether standby `me` may claim the leader key in `view` automatically,
/// having watched its revision stand for `stood` on its own monotonic
/// clock, with `ttl` the fleet's TTL. The claim itself is a
/// compare-and-set that checks the sync key and the pause again, in log
/// order: this only keeps a member from asking when the answer is known.
pub fn may_claim(
    view: &FleetView,
    me: &str,
    stood: Duration,
    ttl: Duration,
) -> Result<(), NoClaim> {
    if view.leader.as_ref().is_some_and(|k| k.member == me) {
        return Err(NoClaim::Holds);
    }
    if view.paused {
        return Err(NoClaim::Paused);
    }
    if !view.is_sync_standby(me) {
        return Err(NoClaim::NotSyncStandby(not_in_sync_key(view)));
    }
    may_take(view.leader.as_ref(), stood, ttl).map_err(|left| NoClaim::TooSoon { left })
}

/// Whether a standby that cannot see the primary has waited long enough
/// to try a failover: it has not seen the primary for `timeout`, and no
/// promise it made with a lease grant (the protocol without Raft) holds.
pub fn time_to_act(seen_ago: Duration, timeout: Duration, promised: bool) -> bool {
    seen_ago >= timeout && !promised
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn a_lease_counts_from_the_proposal_and_fences_once_when_it_runs_out() {
        let t0 = Instant::now();
        let three = Duration::from_secs(3);
        let mut l = Lease::default();
        // Never held: nothing to fence, no writes.
        assert!(!l.valid(t0));
        assert!(!l.fence_due(at(t0, 100.0), false));
        // Proposed at 1.0, committed later: held until 4.0, not 4.0 + delay.
        assert!(!l.renewed(at(t0, 1.0), three));
        assert!(l.valid(at(t0, 3.99)));
        assert!(!l.valid(at(t0, 4.0)));
        assert_eq!(l.left(at(t0, 2.5)), Duration::from_millis(1500));
        assert!(!l.fence_due(at(t0, 3.99), false));
        assert!(l.fence_due(at(t0, 4.0), false));
        // Paused (maintenance, or no automatic failover): never.
        assert!(!l.fence_due(at(t0, 60.0), true));
        // Once fenced, the fence is not due again; a second mark says so.
        assert!(l.fence());
        assert!(!l.fence_due(at(t0, 5.0), false));
        assert!(!l.fence());
        // A committed renewal lifts it.
        assert!(l.renewed(at(t0, 6.0), three));
        assert!(!l.fenced);
        assert!(l.valid(at(t0, 8.0)));
    }

    #[test]
    fn a_renewal_under_a_lowered_ttl_ends_the_lease_sooner() {
        let t0 = Instant::now();
        let mut l = Lease::default();
        // Renewed under a TTL of 30 s (a lease of 28 s with P = 1 s)...
        l.renewed(at(t0, 0.0), Duration::from_secs(28));
        // ... then under the fleet's lowered 5 s: the key now says 5 s,
        // and a candidate that saw this revision at 1.0 may take it at
        // 6.0. The lease must end before then, not at 28.0.
        l.renewed(at(t0, 1.0), Duration::from_secs(3));
        assert_eq!(l.until, Some(at(t0, 4.0)));
        assert!(!l.valid(at(t0, 6.0)));
        l.lose();
        assert!(!l.valid(at(t0, 5.0)));
        assert!(!l.fence_due(at(t0, 9.0), false));
    }

    fn key(member: &str, epoch: u64) -> LeaderKey {
        LeaderKey {
            member: member.into(),
            epoch,
            revision: 7,
            ttl_ms: 5_000,
        }
    }

    fn record(epoch: i64, primary: &str) -> EpochRecord {
        EpochRecord {
            epoch,
            primary: primary.into(),
            changed_at: 0.0,
        }
    }

    #[test]
    fn the_committed_key_outranks_the_record() {
        let members = |m: &str| ["lead", "backup", "c1"].contains(&m);
        let duty =
            |k: Option<LeaderKey>, me: &str, r: EpochRecord| key_duty(k.as_ref(), me, &r, members);
        // No key yet: the record stands.
        assert_eq!(duty(None, "lead", record(1, "lead")), KeyDuty::Nothing);
        // In agreement.
        assert_eq!(
            duty(Some(key("lead", 1)), "lead", record(1, "lead")),
            KeyDuty::Nothing
        );
        assert_eq!(
            duty(Some(key("lead", 1)), "backup", record(1, "lead")),
            KeyDuty::Nothing
        );
        // Sequence 2: an old primary learns of a newer holder; it steps
        // down whether or not that holder answers it.
        assert_eq!(
            duty(Some(key("backup", 2)), "lead", record(1, "lead")),
            KeyDuty::StepDown {
                holder: "backup".into(),
                epoch: 2
            }
        );
        // A standby follows the newer primary the same way.
        assert_eq!(
            duty(Some(key("backup", 2)), "c1", record(1, "lead")),
            KeyDuty::StepDown {
                holder: "backup".into(),
                epoch: 2
            }
        );
        // Won (or handed) the key, stopped before storing the epoch.
        assert_eq!(
            duty(Some(key("backup", 2)), "backup", record(1, "lead")),
            KeyDuty::Resume { epoch: 2 }
        );
        assert_eq!(
            duty(Some(key("backup", 2)), "backup", record(2, "lead")),
            KeyDuty::Resume { epoch: 2 }
        );
        // A record naming this member at an epoch the key does not back.
        assert_eq!(
            duty(Some(key("backup", 2)), "lead", record(2, "lead")),
            KeyDuty::Confirm {
                holder: "backup".into()
            }
        );
        assert_eq!(
            duty(Some(key("backup", 2)), "lead", record(5, "lead")),
            KeyDuty::Confirm {
                holder: "backup".into()
            }
        );
        // Never because a peer says so: an epoch only from the key. And a
        // key naming a member no longer configured is not followed.
        assert_eq!(
            duty(Some(key("gone", 9)), "lead", record(1, "lead")),
            KeyDuty::Nothing
        );
    }

    fn view(leader: Option<LeaderKey>, sync: Option<&str>, paused: bool) -> FleetView {
        let epoch = leader.as_ref().map_or(0, |k| k.epoch);
        FleetView {
            leader,
            epoch,
            sync_standby: sync.map(str::to_string),
            sync_epoch: epoch,
            paused,
            ..FleetView::default()
        }
    }

    #[test]
    fn only_the_sync_standby_claims_and_only_after_the_ttl() {
        let ttl = Duration::from_secs(5);
        let v = view(Some(key("lead", 1)), Some("backup"), false);
        assert_eq!(may_claim(&v, "backup", ttl, ttl), Ok(()));
        assert_eq!(
            may_claim(&v, "backup", Duration::from_secs(4), ttl),
            Err(NoClaim::TooSoon {
                left: Duration::from_secs(1)
            })
        );
        // Sequence 5: a standby the sync key does not name never does,
        // however long it waited.
        let e = may_claim(&v, "c1", Duration::from_secs(600), ttl).unwrap_err();
        assert!(
            matches!(&e, NoClaim::NotSyncStandby(w) if w.contains("names backup")),
            "{e}"
        );
        // A primary that degraded (the sync key names nobody): nobody.
        let v = view(Some(key("lead", 1)), None, false);
        let e = may_claim(&v, "backup", ttl, ttl).unwrap_err();
        assert!(
            matches!(&e, NoClaim::NotSyncStandby(w) if w.contains("names no standby")),
            "{e}"
        );
        // Paused, or its own key: no.
        let v = view(Some(key("lead", 1)), Some("backup"), true);
        assert_eq!(may_claim(&v, "backup", ttl, ttl), Err(NoClaim::Paused));
        let v = view(Some(key("backup", 2)), Some("lead"), false);
        assert_eq!(may_claim(&v, "backup", ttl, ttl), Err(NoClaim::Holds));
    }

    #[test]
    fn a_standby_acts_only_after_the_timeout_and_outside_a_promise() {
        let t = Duration::from_secs(6);
        assert!(!time_to_act(Duration::from_secs(5), t, false));
        assert!(time_to_act(t, t, false));
        assert!(!time_to_act(Duration::from_secs(60), t, true));
    }
}

//! What the fleet agrees on, and the rules for changing it: a pure state
//! machine over committed commands, unit-tested without Raft.
//!
//! The **leader key** is Patroni's: `{member, epoch}` plus the revision
//! (the log index) of the write that last set or renewed it. The primary
//! renews it by compare-and-set on the revision it holds; a candidate takes
//! it only by compare-and-set on a revision it has watched stay unchanged
//! for the TTL on its own monotonic clock (that watching is the caller's:
//! nothing here reads a clock, so no two machines' clocks are ever
//! compared). The **sync key** names the one standby the primary may
//! acknowledge commits through; only the key's holder writes it, and a
//! candidate that is not the named standby must not take the key after a
//! synchronous primary (the caller's rule, with this state as its input).

use serde::{Deserialize, Serialize};

use crate::dynamic::DynamicConfig;

/// The leader key as committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderKey {
    pub member: String,
    /// Grows by one each time the key changes hands: the primary's epoch.
    pub epoch: u64,
    /// The log index of the write that last set or renewed the key.
    pub revision: u64,
    /// The TTL (ms) its holder counted its lease with at that write: a
    /// candidate waits at least this long after seeing the revision, also
    /// when the fleet's TTL was lowered meanwhile (Patroni's key carries its
    /// TTL the same way). 0: written before it was kept.
    #[serde(default)]
    pub ttl_ms: u64,
}

/// A change to the fleet's state, proposed by a member and applied in log
/// order on every member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Take the leader key: applies only when the key's revision is still
    /// `seen` (`None`: the key is empty). Taking it from another member
    /// starts a new epoch; the sync key is cleared (the new primary names
    /// its own standby). The new epoch is at least `at_least`: a fleet
    /// that counted epochs before it had a leader key keeps counting up.
    /// With `require_sync` (an automatic failover), it applies only when
    /// the sync key names `member` at the current epoch: only the standby
    /// the primary could have acknowledged commits through may take over
    /// without an operator. Checked here, in log order, so no write of the
    /// sync key can slip between a candidate's check and its claim. An
    /// `automatic` claim also needs the fleet not paused.
    Acquire {
        member: String,
        seen: Option<u64>,
        #[serde(default)]
        at_least: u64,
        #[serde(default)]
        require_sync: bool,
        /// A member's own takeover (not an operator's promotion): refused
        /// while the fleet is paused.
        #[serde(default)]
        automatic: bool,
        /// The TTL (ms) the new holder counts its lease with.
        #[serde(default)]
        ttl_ms: u64,
    },
    /// The holder keeps the key: applies only when `member` holds it at
    /// `revision`.
    Renew {
        member: String,
        revision: u64,
        /// The TTL (ms) the holder counts this renewal's lease with.
        #[serde(default)]
        ttl_ms: u64,
    },
    /// The holder hands the key to `to` (a switchover): a new epoch.
    Handover {
        member: String,
        revision: u64,
        to: String,
        /// The TTL (ms) the handed key stands for.
        #[serde(default)]
        ttl_ms: u64,
    },
    /// The holder gives the key up (it stops being primary).
    Release { member: String, revision: u64 },
    /// The holder names its synchronous standby (`None`: none, commits are
    /// asynchronous), at the epoch it holds.
    SetSync {
        member: String,
        epoch: u64,
        standby: Option<String>,
    },
    /// Maintenance mode for the whole fleet (Patroni's `pause`), set by
    /// any member on an operator's word. While it is on, no automatic
    /// claim (`Acquire` with `automatic`) applies: a member that missed
    /// the operator's request, or believes it is not paused, still cannot
    /// take over by itself.
    SetPause { member: String, paused: bool },
    /// The fleet's dynamic config (Patroni's `PATCH /config`): applies only
    /// when the config is still at revision `seen` (0: none committed yet,
    /// so of two members seeding it only the first wins) and when `config`
    /// keeps the timing argument ([`DynamicConfig::check`]).
    SetConfig {
        member: String,
        seen: u64,
        config: DynamicConfig,
    },
}

impl Command {
    /// Who proposed it.
    pub fn member(&self) -> &str {
        match self {
            Command::Acquire { member, .. }
            | Command::Renew { member, .. }
            | Command::Handover { member, .. }
            | Command::Release { member, .. }
            | Command::SetSync { member, .. }
            | Command::SetPause { member, .. }
            | Command::SetConfig { member, .. } => member,
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It applied; the state after it.
    Applied { view: FleetView },
    /// Its condition did not hold; nothing changed. The state it met.
    Conflict { view: FleetView },
    /// A log entry that carries no command (a new Raft leader's blank
    /// entry, a membership change).
    #[default]
    None,
}

impl Outcome {
    pub fn applied(&self) -> bool {
        matches!(self, Outcome::Applied { .. })
    }

    pub fn view(&self) -> Option<&FleetView> {
        match self {
            Outcome::Applied { view } | Outcome::Conflict { view } => Some(view),
            Outcome::None => None,
        }
    }
}

/// The replicated state: every member holds the same value at the same log
/// index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FleetView {
    pub leader: Option<LeaderKey>,
    /// The last epoch the key was held at (kept when the key is released,
    /// so the next holder's epoch is always greater).
    pub epoch: u64,
    /// The synchronous standby the holder named, and the epoch it named it
    /// at (a sync key from an older epoch means nothing).
    pub sync_standby: Option<String>,
    pub sync_epoch: u64,
    /// The index of the last entry applied.
    pub applied: u64,
    /// Every change of hands of the key, oldest first, the last
    /// [`HISTORY_LEN`] of them (`/history`). Absent in state written
    /// before it was kept.
    #[serde(default)]
    pub history: Vec<Succession>,
    /// The fleet is paused (maintenance mode): no automatic takeover
    /// applies. Absent in state written before it was kept.
    #[serde(default)]
    pub paused: bool,
    /// The fleet's dynamic config; `None` until a primary seeds it from its
    /// config file. Absent in state written before it was kept.
    #[serde(default)]
    pub config: Option<DynamicConfig>,
    /// The log index of the config's last change (0: none).
    #[serde(default)]
    pub config_revision: u64,
}

/// How many changes of hands [`FleetView::history`] keeps.
pub const HISTORY_LEN: usize = 100;

/// One change of hands of the leader key, as committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    pub epoch: u64,
    /// Who holds the key from this epoch on.
    pub member: String,
    /// Who held it before (`None`: nobody, or a fleet's first key).
    pub from: Option<String>,
    /// `acquired` (taken after the holder's revision stood still, or an
    /// empty key) or `handover` (given by the holder: a switchover).
    pub how: String,
    /// The log index of the change.
    pub index: u64,
}

impl FleetView {
    /// Applies `cmd`, committed at log `index`. Pure: the same commands in
    /// the same order give the same state on every member.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Outcome {
        self.applied = index;
        let ok = match cmd {
            Command::Acquire {
                member,
                seen,
                at_least,
                require_sync,
                automatic,
                ttl_ms,
            } => {
                let current = self.leader.as_ref().map(|k| k.revision);
                let refused =
                    (*require_sync && !self.is_sync_standby(member)) || (*automatic && self.paused);
                if current != *seen || refused {
                    false
                } else {
                    let same = self.leader.as_ref().is_some_and(|k| &k.member == member);
                    if !same || *at_least > self.epoch {
                        self.epoch = (self.epoch + 1).max(*at_least);
                        self.sync_standby = None;
                        self.sync_epoch = self.epoch;
                        let from = self.leader.as_ref().map(|k| k.member.clone());
                        self.record(member, from, "acquired", index);
                    }
                    self.leader = Some(LeaderKey {
                        member: member.clone(),
                        epoch: self.epoch,
                        revision: index,
                        ttl_ms: *ttl_ms,
                    });
                    true
                }
            }
            Command::Renew {
                member,
                revision,
                ttl_ms,
            } => match &mut self.leader {
                Some(k) if &k.member == member && k.revision == *revision => {
                    k.revision = index;
                    k.ttl_ms = *ttl_ms;
                    true
                }
                _ => false,
            },
            Command::Handover {
                member,
                revision,
                to,
                ttl_ms,
            } => match &self.leader {
                Some(k) if &k.member == member && k.revision == *revision && to != member => {
                    self.epoch += 1;
                    self.sync_standby = None;
                    self.sync_epoch = self.epoch;
                    self.record(to, Some(member.clone()), "handover", index);
                    self.leader = Some(LeaderKey {
                        member: to.clone(),
                        epoch: self.epoch,
                        revision: index,
                        ttl_ms: *ttl_ms,
                    });
                    true
                }
                _ => false,
            },
            Command::Release { member, revision } => match &self.leader {
                Some(k) if &k.member == member && k.revision == *revision => {
                    self.leader = None;
                    true
                }
                _ => false,
            },
            Command::SetSync {
                member,
                epoch,
                standby,
            } => match &self.leader {
                Some(k) if &k.member == member && k.epoch == *epoch => {
                    self.sync_standby = standby.clone();
                    self.sync_epoch = *epoch;
                    true
                }
                _ => false,
            },
            Command::SetPause { paused, .. } => {
                self.paused = *paused;
                true
            }
            Command::SetConfig { seen, config, .. } => {
                if *seen != self.config_revision || config.check().is_err() {
                    false
                } else {
                    self.config = Some(config.clone());
                    self.config_revision = index;
                    true
                }
            }
        };
        let view = self.clone();
        if ok {
            Outcome::Applied { view }
        } else {
            Outcome::Conflict { view }
        }
    }

    /// Appends a change of hands at the current epoch, keeping the last
    /// [`HISTORY_LEN`].
    fn record(&mut self, member: &str, from: Option<String>, how: &str, index: u64) {
        self.history.push(Succession {
            epoch: self.epoch,
            member: member.to_string(),
            from,
            how: how.to_string(),
            index,
        });
        if self.history.len() > HISTORY_LEN {
            let extra = self.history.len() - HISTORY_LEN;
            self.history.drain(..extra);
        }
    }

    /// The holder of the leader key, if any.
    pub fn leader_member(&self) -> Option<&str> {
        self.leader.as_ref().map(|k| k.member.as_str())
    }

    /// Whether the sync key names `member` at the current epoch: the one
    /// member that may take the key automatically. A released key keeps
    /// its sync key (the holder that released it named that standby);
    /// taking or handing over the key clears it.
    pub fn is_sync_standby(&self, member: &str) -> bool {
        self.sync_epoch == self.epoch && self.sync_standby.as_deref() == Some(member)
    }

    /// The synchronous standby named at the current epoch.
    pub fn current_sync_standby(&self) -> Option<&str> {
        match &self.leader {
            Some(k) if self.sync_epoch == k.epoch => self.sync_standby.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn acquire(m: &str, seen: Option<u64>) -> Command {
        Command::Acquire {
            member: m.into(),
            seen,
            at_least: 0,
            require_sync: false,
            automatic: false,
            ttl_ms: 0,
        }
    }

    fn take_over(m: &str, seen: Option<u64>) -> Command {
        Command::Acquire {
            member: m.into(),
            seen,
            at_least: 0,
            require_sync: true,
            automatic: true,
            ttl_ms: 0,
        }
    }

    fn renew(m: &str, revision: u64) -> Command {
        Command::Renew {
            member: m.into(),
            revision,
            ttl_ms: 0,
        }
    }

    fn set_sync(m: &str, epoch: u64, standby: Option<&str>) -> Command {
        Command::SetSync {
            member: m.into(),
            epoch,
            standby: standby.map(Into::into),
        }
    }

    #[test]
    fn only_the_member_in_the_sync_key_takes_over_automatically() {
        let mut v = FleetView::default();
        assert!(v.apply(1, &acquire("lead", None)).applied());
        // No sync key yet (the primary runs asynchronously): nobody may
        // take over without an operator, however long the key stood.
        assert!(!v.apply(2, &take_over("backup", Some(1))).applied());
        assert!(!v.apply(3, &take_over("c1", Some(1))).applied());
        // The primary names the backup: the backup may, c1 still may not.
        assert!(v.apply(4, &set_sync("lead", 1, Some("backup"))).applied());
        assert!(!v.apply(5, &take_over("c1", Some(1))).applied());
        // The primary degrades: the key leaves first, and with it the
        // backup's right to take over.
        assert!(v.apply(6, &set_sync("lead", 1, None)).applied());
        assert!(!v.apply(7, &take_over("backup", Some(1))).applied());
        assert!(v.apply(8, &set_sync("lead", 1, Some("backup"))).applied());
        let out = v.apply(9, &take_over("backup", Some(1)));
        assert!(out.applied());
        assert_eq!(v.leader.clone().unwrap().member, "backup");
        // The new primary has named nobody yet.
        assert_eq!(v.current_sync_standby(), None);
        assert!(!v.apply(10, &take_over("lead", Some(9))).applied());
        // An operator's forced promotion does not need the sync key.
        assert!(v.apply(11, &acquire("c1", Some(9))).applied());
    }

    #[test]
    fn a_paused_fleet_takes_no_automatic_claim_and_an_operator_still_may() {
        let pause = |paused| Command::SetPause {
            member: "c1".into(),
            paused,
        };
        let mut v = FleetView::default();
        assert!(v.apply(1, &acquire("lead", None)).applied());
        assert!(v.apply(2, &set_sync("lead", 1, Some("backup"))).applied());
        // Any member records the operator's pause; it is in every copy.
        assert!(v.apply(3, &pause(true)).applied());
        assert!(v.paused);
        // The sync standby may not take over by itself while paused...
        assert!(!v.apply(4, &take_over("backup", Some(1))).applied());
        // ...nor after a restart that lost its own idea of the pause: the
        // check is here, in log order. The primary still renews.
        assert!(v.apply(5, &renew("lead", 1)).applied());
        // Unpaused, it may.
        assert!(v.apply(6, &pause(false)).applied());
        assert!(v.apply(7, &take_over("backup", Some(5))).applied());
        // An operator's promotion is not paused: of the sync standby
        // without force (the sync key still required), or forced.
        assert!(v.apply(8, &set_sync("backup", 2, Some("lead"))).applied());
        assert!(v.apply(9, &pause(true)).applied());
        let manual = Command::Acquire {
            member: "lead".into(),
            seen: Some(7),
            at_least: 0,
            require_sync: true,
            automatic: false,
            ttl_ms: 0,
        };
        assert!(v.apply(10, &manual).applied());
        assert!(v.apply(11, &acquire("c1", Some(10))).applied());
        assert_eq!(v.leader_member(), Some("c1"));
    }

    #[test]
    fn a_released_key_keeps_its_sync_standby() {
        let mut v = FleetView::default();
        assert!(v.apply(1, &acquire("lead", None)).applied());
        assert!(v.apply(2, &set_sync("lead", 1, Some("backup"))).applied());
        assert!(v
            .apply(
                3,
                &Command::Release {
                    member: "lead".into(),
                    revision: 1
                }
            )
            .applied());
        assert!(!v.apply(4, &take_over("c1", None)).applied());
        assert!(v.apply(5, &take_over("backup", None)).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 2);
    }

    #[test]
    fn every_change_of_hands_is_in_the_history_and_renewals_are_not() {
        let mut v = FleetView::default();
        assert!(v.apply(1, &acquire("lead", None)).applied());
        let renew = |revision| Command::Renew {
            member: "lead".into(),
            revision,
            ttl_ms: 0,
        };
        assert!(v.apply(2, &renew(1)).applied());
        assert!(v.apply(3, &acquire("backup", Some(2))).applied());
        assert!(v
            .apply(
                4,
                &Command::Handover {
                    member: "backup".into(),
                    revision: 3,
                    to: "lead".into(),
                    ttl_ms: 0,
                }
            )
            .applied());
        // Refused commands leave no trace.
        assert!(!v.apply(5, &acquire("c1", Some(3))).applied());
        let got: Vec<_> = v
            .history
            .iter()
            .map(|h| {
                (
                    h.epoch,
                    h.member.as_str(),
                    h.from.as_deref(),
                    h.how.as_str(),
                    h.index,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "lead", None, "acquired", 1),
                (2, "backup", Some("lead"), "acquired", 3),
                (3, "lead", Some("backup"), "handover", 4),
            ]
        );
        // Bounded: the oldest go first.
        for i in 0..(HISTORY_LEN as u64 + 10) {
            let rev = v.leader.clone().unwrap().revision;
            let to = if i % 2 == 0 { "backup" } else { "lead" };
            let from = if i % 2 == 0 { "lead" } else { "backup" };
            assert!(v
                .apply(
                    10 + i,
                    &Command::Handover {
                        member: from.into(),
                        revision: rev,
                        to: to.into(),
                        ttl_ms: 0,
                    }
                )
                .applied());
        }
        assert_eq!(v.history.len(), HISTORY_LEN);
        assert_eq!(v.history.last().unwrap().epoch, v.epoch);
        // State written before the history was kept still reads.
        let old: FleetView = serde_json::from_str(
            r#"{"leader":null,"epoch":4,"sync_standby":null,"sync_epoch":4,"applied":9}"#,
        )
        .unwrap();
        assert!(old.history.is_empty());
    }

    #[test]
    fn the_key_is_taken_only_against_the_revision_seen() {
        let mut v = FleetView::default();
        assert!(v.apply(1, &acquire("lead", None)).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 1);
        // Someone who saw an empty key is too late.
        assert!(!v.apply(2, &acquire("backup", None)).applied());
        assert_eq!(v.leader_member(), Some("lead"));
        // The holder renews: the revision moves on.
        assert!(v
            .apply(
                3,
                &Command::Renew {
                    member: "lead".into(),
                    revision: 1,
                    ttl_ms: 0,
                }
            )
            .applied());
        // A candidate that watched revision 1 has watched a stale key.
        assert!(!v.apply(4, &acquire("backup", Some(1))).applied());
        // One that watched 3 unchanged for the TTL takes it: a new epoch.
        assert!(v.apply(5, &acquire("backup", Some(3))).applied());
        let k = v.leader.clone().unwrap();
        assert_eq!((k.member.as_str(), k.epoch, k.revision), ("backup", 2, 5));
        // The old holder's renewal fails: it learns it lost the key.
        let out = v.apply(
            6,
            &Command::Renew {
                member: "lead".into(),
                revision: 3,
                ttl_ms: 0,
            },
        );
        assert!(!out.applied());
        assert_eq!(out.view().unwrap().leader_member(), Some("backup"));
    }

    #[test]
    fn handover_release_and_the_sync_key_follow_the_holder() {
        let mut v = FleetView::default();
        v.apply(1, &acquire("lead", None));
        let set = |m: &str, e: u64, s: Option<&str>| Command::SetSync {
            member: m.into(),
            epoch: e,
            standby: s.map(Into::into),
        };
        assert!(v.apply(2, &set("lead", 1, Some("backup"))).applied());
        assert_eq!(v.current_sync_standby(), Some("backup"));
        // Only the holder names the standby.
        assert!(!v.apply(3, &set("backup", 1, Some("c1"))).applied());
        // A handover starts an epoch and forgets the old standby.
        let h = Command::Handover {
            member: "lead".into(),
            revision: 1,
            to: "backup".into(),
            ttl_ms: 0,
        };
        assert!(v.apply(4, &h).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 2);
        assert_eq!(v.current_sync_standby(), None);
        // The old holder's late sync write is refused.
        assert!(!v.apply(5, &set("lead", 1, Some("c1"))).applied());
        // Release keeps the epoch counter: the next holder's epoch is 3.
        let r = Command::Release {
            member: "backup".into(),
            revision: 4,
        };
        assert!(v.apply(6, &r).applied());
        assert_eq!(v.leader, None);
        assert!(v.apply(7, &acquire("lead", None)).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 3);
    }

    #[test]
    fn re_acquiring_ones_own_key_keeps_the_epoch_and_the_standby() {
        let mut v = FleetView::default();
        v.apply(1, &acquire("lead", None));
        v.apply(
            2,
            &Command::SetSync {
                member: "lead".into(),
                epoch: 1,
                standby: Some("backup".into()),
            },
        );
        assert!(v.apply(3, &acquire("lead", Some(1))).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 1);
        assert_eq!(v.current_sync_standby(), Some("backup"));
    }

    #[test]
    fn a_fleet_that_counted_epochs_before_the_key_keeps_counting_up() {
        let mut v = FleetView::default();
        let at = |m: &str, seen: Option<u64>, at_least: u64| Command::Acquire {
            member: m.into(),
            seen,
            at_least,
            require_sync: false,
            automatic: false,
            ttl_ms: 0,
        };
        // The primary of epoch 7 claims the empty key: epoch 7, not 1.
        assert!(v.apply(1, &at("lead", None, 7)).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 7);
        // A candidate that knew only epoch 3 still gets the next one.
        assert!(v.apply(2, &at("backup", Some(1), 4)).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 8);
        // The holder re-claiming at a higher count moves the epoch on.
        assert!(v.apply(3, &at("backup", Some(2), 10)).applied());
        assert_eq!(v.leader.clone().unwrap().epoch, 10);
    }

    fn config(ttl_ms: u64, degrade_secs: u64) -> DynamicConfig {
        DynamicConfig {
            ttl_ms,
            probe_interval_ms: 1000,
            loop_interval_secs: 5,
            sync_degrade_after_secs: degrade_secs,
            synchronous_strict: false,
            max_lag_on_failover_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_config_changes_only_from_the_revision_seen_and_only_to_a_safe_one() {
        let mut v = FleetView::default();
        let set = |seen, config| Command::SetConfig {
            member: "lead".into(),
            seen,
            config,
        };
        // Two members seed it: only the first applies.
        assert!(v.apply(1, &set(0, config(5000, 10))).applied());
        assert!(!v.apply(2, &set(0, config(6000, 10))).applied());
        assert_eq!(
            (v.config.clone().unwrap().ttl_ms, v.config_revision),
            (5000, 1)
        );
        // A change against the revision read applies; a stale one does not.
        assert!(v.apply(3, &set(1, config(3000, 10))).applied());
        assert!(!v.apply(4, &set(1, config(4000, 10))).applied());
        assert_eq!(
            (v.config.clone().unwrap().ttl_ms, v.config_revision),
            (3000, 3)
        );
        // A degrade before the TTL would lose acknowledged writes: refused
        // even at the right revision, and nothing changes.
        let out = v.apply(5, &set(3, config(30_000, 10)));
        assert!(!out.applied());
        assert_eq!(
            (v.config.clone().unwrap().ttl_ms, v.config_revision),
            (3000, 3)
        );
    }

    #[test]
    fn the_key_carries_the_ttl_its_holder_counted_with() {
        let mut v = FleetView::default();
        let mut a = acquire("lead", None);
        if let Command::Acquire { ttl_ms, .. } = &mut a {
            *ttl_ms = 30_000;
        }
        assert!(v.apply(1, &a).applied());
        assert_eq!(v.leader.clone().unwrap().ttl_ms, 30_000);
        // The fleet's TTL lowered meanwhile: the key still says 30 s until
        // the holder renews with the new one.
        assert!(v
            .apply(
                2,
                &Command::SetConfig {
                    member: "c1".into(),
                    seen: 0,
                    config: config(5000, 10)
                }
            )
            .applied());
        assert_eq!(v.leader.clone().unwrap().ttl_ms, 30_000);
        assert!(v
            .apply(
                3,
                &Command::Renew {
                    member: "lead".into(),
                    revision: 1,
                    ttl_ms: 5000
                }
            )
            .applied());
        assert_eq!(v.leader.clone().unwrap().ttl_ms, 5000);
    }

    proptest::proptest! {
        /// Whatever is proposed, in whatever order: the epoch never goes
        /// down, each epoch has one holder, a conflict changes nothing but
        /// the applied index, an automatic takeover needs the sync key and
        /// a fleet that is not paused.
        #[test]
        fn epochs_only_grow_and_each_has_one_holder(
            ops in proptest::collection::vec((0u8..7, 0usize..3, 0u64..12, 0usize..3), 1..60)
        ) {
            let names = ["lead", "backup", "c1"];
            let mut v = FleetView::default();
            let mut holders: std::collections::BTreeMap<u64, String> = Default::default();
            for (i, (op, m, rev, to)) in ops.into_iter().enumerate() {
                let member = names[m].to_string();
                let cmd = match op {
                    0 => Command::Acquire { member, seen: (rev > 0).then_some(rev), at_least: to as u64 * 3, require_sync: rev % 2 == 0, automatic: rev % 4 == 0, ttl_ms: rev },
                    1 => Command::Renew { member, revision: rev, ttl_ms: rev },
                    2 => Command::Handover { member, revision: rev, to: names[to].into(), ttl_ms: 0 },
                    3 => Command::Release { member, revision: rev },
                    4 => Command::SetSync { member, epoch: rev, standby: (rev != 5).then(|| names[to].into()) },
                    5 => Command::SetPause { member, paused: rev % 2 == 0 },
                    _ => Command::SetConfig { member, seen: rev, config: config(rev * 1000, 1 + to as u64) },
                };
                let before = v.clone();
                let out = v.apply(i as u64 + 1, &cmd);
                proptest::prop_assert!(v.epoch >= before.epoch);
                if let Command::Acquire { member, require_sync: true, .. } = &cmd {
                    // An automatic takeover only by the standby the sync key named.
                    proptest::prop_assert!(!out.applied() || before.is_sync_standby(member));
                }
                if let Command::Acquire { automatic: true, .. } = &cmd {
                    // No member takes over by itself while the fleet is paused.
                    proptest::prop_assert!(!out.applied() || !before.paused);
                }
                if let Command::SetConfig { config, .. } = &cmd {
                    // No committed config breaks the timing argument.
                    proptest::prop_assert!(!out.applied() || config.check().is_ok());
                }
                if let Some(c) = &v.config {
                    proptest::prop_assert!(c.check().is_ok());
                }
                if !out.applied() {
                    let mut b = before;
                    b.applied = i as u64 + 1;
                    proptest::prop_assert_eq!(&b, &v);
                }
                if let Some(k) = &v.leader {
                    proptest::prop_assert_eq!(k.epoch, v.epoch);
                    let h = holders.entry(k.epoch).or_insert_with(|| k.member.clone());
                    proptest::prop_assert_eq!(h, &k.member);
                }
            }
        }
    }
}

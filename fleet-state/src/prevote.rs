//! Pre-Vote (Raft thesis §9.6) in front of openraft 0.9's elections.
//!
//! openraft 0.9 has no Pre-Vote. A member cut off from the group keeps
//! standing for election, each time at a higher term; when its link heals,
//! its answer to the leader's next heartbeat carries that term, and the
//! leader steps down. A working group loses its leader, and the primary
//! its renewals, because one member was away (clean-clone CI showed it:
//! a compute node rejoining after a partition made the Raft leader step
//! down, and the primary's key renewal missed its lease).
//!
//! The gate uses openraft's own election switch (`runtime_config().elect`).
//! A voter that has heard no leader for `election_min` asks the other
//! voters whether they would take part in an election. A voter says yes
//! only if it has not heard a leader within `election_min` either, and is
//! not a leader a quorum acknowledged within `election_max`. Elections are
//! switched on only while a majority of the voters, this one included,
//! said yes, and switched off again as soon as a leader is heard.
//!
//! The gate decides only *when* a member may stand. Whether it wins, and
//! everything that makes Raft safe, is still openraft's vote: a gate that
//! is wrong can delay an election, never make two leaders. It opens well
//! before openraft's own timer would fire (a follower with a leader stands
//! only `election_max` plus a random election timeout after it last heard
//! one), so a failover is not slower for it.
//!
//! The voter that holds the leader key (the primary's repl-manager) may
//! stand as soon as the group is quiet; the others wait until openraft's
//! own timer would have let it stand (`quiet_for`). A Raft leader on the
//! primary's node commits the renewals in one round trip and loses
//! nothing when a standby dies; a Raft leader on a standby that dies costs
//! the primary an election inside its lease.
//!
//! Not covered: the log comparison of a real Pre-Vote (a member whose log
//! is behind is still let stand and loses the vote, at a term one higher);
//! members of an older version answer the question with an error, which
//! counts as a no (see docs/repl-manager.md).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};

use crate::net::{Message, Reply, Transport};
use crate::store::StateMachine;
use crate::{NodeId, Peer, TypeConfig};

/// When this member last heard a leader it accepted (an append that was
/// not refused for its term).
#[derive(Clone, Default)]
pub(crate) struct Heard(Arc<Mutex<Option<Instant>>>);

impl Heard {
    pub(crate) fn now(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn ago(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }
}

/// What a member knows of its leader, for a pre-vote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Standing {
    /// The leader; a quorum last acknowledged it this long ago.
    Leader { acked: Option<Duration> },
    /// Not the leader; a leader was last heard this long ago.
    Other { heard: Option<Duration> },
}

/// The gate's timing: `quiet` (no leader heard for this long: an election
/// may be needed), `lease` (a leader acknowledged this recently is alive)
/// and `defer` (how long a voter that does not hold the leader key waits,
/// when a voter that does might stand: openraft's own timer lets any
/// follower stand by then).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub quiet: Duration,
    pub lease: Duration,
    pub defer: Duration,
}

/// How long without a leader before member `id` asks to stand.
///
/// The primary's repl-manager (the holder of the leader key) stands first:
/// a Raft group led from the primary's node commits the primary's renewals
/// in one round trip, and loses nothing when any standby dies. The other
/// voters wait `defer` more, each a different fraction of `quiet` longer
/// (from its id), so that they do not all stand at once when the holder is
/// the one that died.
pub(crate) fn quiet_for(id: NodeId, holder: Option<NodeId>, t: Timing) -> Duration {
    match holder {
        Some(h) if h != id => {
            let spread = t.quiet.mul_f64((id % 1000) as f64 / 1000.0);
            t.defer + spread
        }
        _ => t.quiet,
    }
}

/// Would a member in `standing` take part in an election now?
pub(crate) fn grants(standing: Standing, t: Timing) -> bool {
    match standing {
        Standing::Leader { acked } => acked.is_none_or(|a| a >= t.lease),
        Standing::Other { heard } => heard.is_none_or(|h| h >= t.quiet),
    }
}

/// May a voter stand, with `yes` of `voters` (itself included) agreeing?
pub(crate) fn may_stand(yes: usize, voters: usize) -> bool {
    voters > 0 && yes > voters / 2
}

pub(crate) fn standing(raft: &Raft<TypeConfig>, heard: &Heard) -> Standing {
    let m = raft.metrics().borrow().clone();
    if m.state == ServerState::Leader {
        Standing::Leader {
            acked: m.millis_since_quorum_ack.map(Duration::from_millis),
        }
    } else {
        Standing::Other { heard: heard.ago() }
    }
}

/// The gate's loop: every heartbeat interval, until the task is aborted.
pub(crate) async fn run(
    id: NodeId,
    raft: Raft<TypeConfig>,
    transport: Arc<dyn Transport>,
    heard: Heard,
    holder_of: StateMachine,
    timing: Timing,
    every: Duration,
) {
    let mut open = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let voters: BTreeMap<NodeId, Peer> = {
            let m = raft.metrics().borrow().membership_config.clone();
            let ids: Vec<NodeId> = m.membership().voter_ids().collect();
            m.membership()
                .nodes()
                .filter(|(n, _)| ids.contains(n))
                .map(|(n, p)| (*n, p.clone()))
                .collect()
        };
        if !voters.contains_key(&id) {
            continue;
        }
        let me = standing(&raft, &heard);
        let holder = holder_of.view().leader.and_then(|k| {
            voters
                .iter()
                .find(|(_, p)| p.name == k.member)
                .map(|(n, _)| *n)
        });
        let mine = Timing {
            quiet: quiet_for(id, holder, timing),
            ..timing
        };
        let want = match me {
            // A leader does not stand; its switch is left as it is.
            Standing::Leader { .. } => continue,
            Standing::Other { .. } if !grants(me, mine) => false,
            Standing::Other { .. } => {
                let yes = 1 + ask(id, &voters, &transport, timing.quiet / 2).await;
                may_stand(yes, voters.len())
            }
        };
        if want != open {
            if want {
                tracing::info!("no Raft leader heard, and a majority agrees: elections on");
            } else if grants(me, timing) {
                tracing::info!("no Raft leader heard, but no majority agrees: elections held back");
            } else {
                tracing::debug!("a Raft leader is heard: elections off");
            }
            raft.runtime_config().elect(want);
            open = want;
        }
    }
}

/// Asks every other voter, concurrently and bounded by `within`; returns
/// how many said yes. No answer is a no.
async fn ask(
    id: NodeId,
    voters: &BTreeMap<NodeId, Peer>,
    transport: &Arc<dyn Transport>,
    within: Duration,
) -> usize {
    let mut calls = tokio::task::JoinSet::new();
    for (to, peer) in voters.iter().filter(|(n, _)| **n != id) {
        let transport = transport.clone();
        let (to, peer) = (*to, peer.clone());
        calls.spawn(async move {
            let r = tokio::time::timeout(
                within,
                transport.call(to, &peer, Message::PreVote { from: id }),
            )
            .await;
            matches!(r, Ok(Ok(Reply::PreVote { granted: true })))
        });
    }
    let mut yes = 0;
    while let Some(r) = calls.join_next().await {
        if matches!(r, Ok(true)) {
            yes += 1;
        }
    }
    yes
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        quiet: Duration::from_millis(300),
        lease: Duration::from_millis(600),
        defer: Duration::from_millis(1200),
    };

    #[test]
    fn the_key_holder_stands_first_and_the_others_one_after_another() {
        // Nobody holds the key, or this member does: the usual quiet.
        assert_eq!(quiet_for(7, None, T), T.quiet);
        assert_eq!(quiet_for(7, Some(7), T), T.quiet);
        // Another voter holds it: past openraft's own timer (by when the
        // holder has stood), each member a different while longer.
        let a = quiet_for(1_234, Some(7), T);
        let b = quiet_for(1_789, Some(7), T);
        assert!(a >= T.defer && b >= T.defer);
        assert!(a < T.defer + T.quiet && b < T.defer + T.quiet);
        assert_ne!(a, b);
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_member_that_hears_a_leader_refuses() {
        assert!(!grants(Standing::Other { heard: ms(100) }, T));
        assert!(grants(Standing::Other { heard: ms(300) }, T));
        // Never heard one (a fresh start): yes.
        assert!(grants(Standing::Other { heard: None }, T));
    }

    #[test]
    fn a_leader_refuses_while_a_quorum_acknowledges_it() {
        assert!(!grants(Standing::Leader { acked: ms(100) }, T));
        // A leader cut off from its quorum does not hold elections back.
        assert!(grants(Standing::Leader { acked: ms(600) }, T));
        assert!(grants(Standing::Leader { acked: None }, T));
    }

    #[test]
    fn standing_needs_a_majority_of_the_voters() {
        assert!(may_stand(1, 1));
        assert!(!may_stand(1, 2));
        assert!(may_stand(2, 2));
        assert!(!may_stand(1, 3));
        assert!(may_stand(2, 3));
        assert!(!may_stand(2, 4));
        assert!(may_stand(3, 5));
        assert!(!may_stand(0, 0));
    }
}

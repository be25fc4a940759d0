//! Random fault schedules against a five-member group (three voters, two
//! learners): partitions both ways and one way, black holes, crashes and
//! restarts from the store, while members propose what a repl-manager
//! would from what they see. After each step and at the end: every epoch
//! has had exactly one holder on every member, and once healed all members
//! converge on one state. Seeds are printed; `TEST_TIER=long` runs more.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleet_state::{Command, FleetView};

use fleet_state::testkit::Rng;

use crate::support::{name, Group};

/// What a member would propose, given what it sees.
fn proposal(rng: &mut Rng, me: &str, v: &FleetView) -> Command {
    let member = me.to_string();
    match (&v.leader, rng.below(4)) {
        (None, _) => Command::Acquire {
            member,
            seen: None,
            at_least: 0,
            require_sync: false,
            automatic: false,
            ttl_ms: 0,
        },
        (Some(k), 0) if k.member != me => Command::Acquire {
            member,
            seen: Some(k.revision),
            at_least: 0,
            require_sync: rng.below(2) == 0,
            automatic: false,
            ttl_ms: 0,
        },
        (Some(k), 1) => Command::Handover {
            member,
            revision: k.revision,
            to: name(1 + rng.below(5)),
            ttl_ms: 0,
        },
        (Some(k), 2) => Command::SetSync {
            member,
            epoch: k.epoch,
            standby: Some(name(1 + rng.below(5))),
        },
        (Some(k), _) if rng.below(8) == 0 => Command::Release {
            member,
            revision: k.revision,
        },
        (Some(k), _) => Command::Renew {
            member,
            revision: k.revision,
            ttl_ms: 0,
        },
    }
}

/// Every (epoch, holder) any member has shown: one holder per epoch.
fn record(holders: &mut BTreeMap<u64, String>, seed: u64, v: &FleetView) {
    if let Some(k) = &v.leader {
        let h = holders.entry(k.epoch).or_insert_with(|| k.member.clone());
        assert_eq!(
            h, &k.member,
            "seed {seed}: epoch {} held by both {h} and {}",
            k.epoch, k.member
        );
    }
}

async fn run(seed: u64, steps: usize) {
    let g = Group::start(5).await;
    let mut rng = Rng(seed);
    let mut holders = BTreeMap::new();
    let mut down: BTreeSet<u64> = BTreeSet::new();
    for _ in 0..steps {
        let id = 1 + rng.below(5);
        match rng.below(10) {
            0 => g.isolate(id),
            1 => g.cut(id, 1 + rng.below(5)),
            2 => g.black_hole(id, 1 + rng.below(5)),
            3 => g.heal(),
            4 if !down.contains(&id) && down.len() < 2 => {
                g.crash(id).await;
                down.insert(id);
            }
            5 if down.contains(&id) => {
                g.open(id).await;
                down.remove(&id);
            }
            _ if !down.contains(&id) => {
                let node = g.node(id);
                let cmd = proposal(&mut rng, &name(id), &node.view());
                if let Ok(Ok(out)) =
                    tokio::time::timeout(Duration::from_millis(800), node.propose(cmd)).await
                {
                    if let Some(v) = out.view() {
                        record(&mut holders, seed, v);
                    }
                }
            }
            _ => {}
        }
        for l in g.live() {
            record(&mut holders, seed, &g.node(l).view());
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(60))).await;
    }
    // Healed and whole again, the group converges and still takes commands.
    g.heal();
    for id in down {
        g.open(id).await;
    }
    // A leader may still change once right after the heal (a member whose
    // election timer fired just before the healed links carried a
    // heartbeat): Raft then refuses the command with "another leader was
    // elected", and the check asks the new one, for up to 20 s. (CI once
    // saw that refusal end the test.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = g.wait_leader(Duration::from_secs(20)).await;
        let probe = proposal(&mut rng, &name(leader), &g.node(leader).view());
        match g.node(leader).propose(probe).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("seed {seed}: {e}; asking the leader again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("seed {seed}: the healed group takes no command: {e}"),
        }
    }
    let v = g.wait_converged(Duration::from_secs(20)).await;
    record(&mut holders, seed, &v);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_faults_never_give_an_epoch_two_holders() {
    let long = std::env::var("TEST_TIER").as_deref() == Ok("long");
    let (seeds, steps) = if long { (24, 80) } else { (4, 40) };
    let base: u64 = std::env::var("FLEET_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00A0_0001);
    for i in 0..seeds {
        let seed = base + i;
        eprintln!("simulation seed {seed} ({steps} steps)");
        run(seed, steps).await;
    }
}

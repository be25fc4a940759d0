//! A fleet whose Raft group lost its majority for good
//! (docs/runbooks/lost-majority.md): the group refuses to start where it
//! could never elect a leader, `reset-fleet-state` refuses where nothing
//! needs resetting or the member runs, and after it the survivors form a
//! new group.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use cluster_db::{NodeName, Role};
use repl_manager::consensus::{self, Consensus, ConsensusError};
use repl_manager::member::Member;
use repl_manager::Config;

fn config(dir: &Path, me: &str, members: &[(&str, Role)]) -> Config {
    let mut c = Config::default();
    c.node.name = me.to_string();
    c.node.state_file = dir.join("state.json");
    // Nothing listens on these ports: every peer is refused at once.
    c.members = members
        .iter()
        .enumerate()
        .map(|(i, (name, role))| Member {
            name: NodeName::parse(name).unwrap(),
            role: *role,
            host: "127.0.0.1".into(),
            port: 5432,
            api_url: format!("http://127.0.0.1:{}", 9 + i),
            nofailover: false,
        })
        .collect();
    c
}

/// Runs `f` again while a member just shut down still lets go of its
/// store (openraft's workers finish after shutdown returns; a real restart
/// is a new process and never meets this).
async fn unlocked<T, Fut>(f: impl Fn() -> Fut) -> Result<T, ConsensusError>
where
    Fut: std::future::Future<Output = Result<T, ConsensusError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match f().await {
            Err(e) if e.to_string().contains("already open") => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn open(cfg: &Config) -> Result<Consensus, ConsensusError> {
    unlocked(|| Consensus::open(cfg)).await
}

async fn reset(cfg: &Config) -> Result<Option<consensus::Reset>, ConsensusError> {
    unlocked(|| consensus::reset(cfg)).await
}

async fn voters(cfg: &Config) -> Vec<String> {
    let dir = consensus::store_dir(cfg);
    let stored = unlocked(|| async { Ok(fleet_state::inspect(&dir).await?) })
        .await
        .unwrap()
        .unwrap();
    stored.voters.values().map(|p| p.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_lost_its_majority_is_reset_by_the_survivor_and_not_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = [
        ("lead", Role::Lead),
        ("backup", Role::Backup),
        ("c1", Role::Compute),
    ];
    let before = config(dir.path(), "c1", &fleet);
    // Nothing to reset before there is a store.
    assert!(reset(&before).await.unwrap().is_none());

    let c = open(&before).await.unwrap();
    // While the member runs, its store is locked: refused, nothing moved.
    let running = consensus::reset(&config(dir.path(), "c1", &[("c1", Role::Compute)])).await;
    assert!(
        running
            .as_ref()
            .is_err_and(|e| e.to_string().contains("already open")),
        "{running:?}"
    );
    c.shutdown().await;
    drop(c);
    let mut names = voters(&before).await;
    names.sort();
    assert_eq!(names, ["backup", "c1", "lead"]);

    // The members are all still configured: the group recovers by itself.
    let kept = reset(&before).await;
    assert!(
        matches!(kept, Err(ConsensusError::MajorityKept { kept: 3, .. })),
        "{kept:?}"
    );

    // lead and backup are gone for good, and two new members configured:
    // the old group could never elect a leader, and starting on it is
    // refused with the way out.
    let after = config(
        dir.path(),
        "c1",
        &[
            ("c1", Role::Lead),
            ("c2", Role::Backup),
            ("c3", Role::Compute),
        ],
    );
    let refused = open(&after)
        .await
        .err()
        .expect("opened a group that lost its majority");
    assert!(
        matches!(refused, ConsensusError::MajorityLost { kept: 1, .. }),
        "{refused}"
    );
    let why = refused.to_string();
    assert!(
        why.contains("reset-fleet-state") && why.contains("lead"),
        "{why}"
    );

    // The runbook's step: the old store is kept aside, renamed.
    let r = reset(&after).await.unwrap().expect("a store to reset");
    assert!(r.voters.contains("lead"), "{r:?}");
    assert!(r.moved_to.join("raft.redb").exists(), "{r:?}");
    assert!(!consensus::store_dir(&after).exists());

    // The next start forms a new group of the configured members.
    let c = open(&after).await.unwrap();
    c.shutdown().await;
    drop(c);
    let mut names = voters(&after).await;
    names.sort();
    assert_eq!(names, ["c1", "c2", "c3"]);
    // And it is not reset again.
    assert!(matches!(
        reset(&after).await,
        Err(ConsensusError::MajorityKept { .. })
    ));
}

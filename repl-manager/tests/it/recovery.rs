//! A fleet whose Raft group lost its majority for good
//! (docs/runbooks/lost-majority.md): the group refuses to start where it
//! could never elect a leader, `reset-fleet-state` refuses where nothing
//! needs resetting or the member runs, and after it the survivors form a
//! new group.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

use cluster_db::{NodeName, Role};
use serde_json::json;

use crate::support::ns::{NsFleet, TOKEN};
use crate::support::{wait_row, Members};
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
        matches!(
            running,
            Err(ConsensusError::FleetState(
                fleet_state::FleetStateError::InUse { .. }
            ))
        ),
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

/// The runbook end to end, as an operator runs it, on a fleet of three that
/// lost the lead and the backup for good: the forced promotion of the
/// survivor is refused (the leader key needs a commit the group cannot
/// make), the reset is refused while repl-manager runs and while `members`
/// still names the lost nodes, and after shrinking `members`, resetting and
/// starting again, the forced promotion makes the survivor a writable
/// primary with the data it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lost_majority_runbook_brings_back_a_writable_primary() {
    let nodes = [
        ("lead", Role::Lead),
        ("backup", Role::Backup),
        ("c1", Role::Compute),
    ];
    let mut fleet = NsFleet::start(&nodes, "").await;
    fleet.wait_healthy("lead", &["backup", "c1"], T).await;
    let lead = fleet.connect("lead").await;
    lead.batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    let c1 = fleet.connect("c1").await;
    assert!(wait_row(&c1, "SELECT 1 FROM kept WHERE id = 1", T).await);
    drop((lead, c1));

    fleet.kill("lead").await;
    fleet.kill("backup").await;
    let r = fleet
        .post("c1", "/promote", json!({ "force": true }), Some(TOKEN))
        .await;
    assert!(!r.status.is_success(), "{}", r.text());
    assert!(r.text().contains("leader key"), "{}", r.text());

    let config = fleet.node("c1").config.clone();
    let reset = |config: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_repl-manager"))
            .arg("--config")
            .arg(config)
            .arg("reset-fleet-state")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = reset(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stop it first"), "{err}");

    // repl-manager stopped (the host's PostgreSQL with it, as a container
    // restart would); `members` still lists the lost nodes: refused.
    fleet.kill("c1").await;
    let (code, _, err) = reset(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("still has a majority"), "{err}");

    // Step 2: only the survivor is left in `members`, as the lead.
    let text = std::fs::read_to_string(&config).unwrap();
    let (head, members) = text.split_at(text.find("[[members]]").unwrap());
    let mine = members
        .split("[[members]]")
        .find(|m| m.contains("name = \"c1\""))
        .unwrap()
        .replace("role = \"compute\"", "role = \"lead\"");
    std::fs::write(&config, format!("{head}[[members]]{mine}")).unwrap();
    // Step 3.
    let (code, out, err) = reset(&config);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("lead") && out.contains("kept at"), "{out}");
    fleet.restart("c1");
    fleet
        .wait_status("c1", T, "answering as a standby", |s| {
            s.state.as_str() == "replica"
        })
        .await;
    // Step 4.
    let r = fleet
        .post("c1", "/promote", json!({ "force": true }), Some(TOKEN))
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    fleet
        .wait_status("c1", T, "primary", |s| s.is_primary())
        .await;
    let c1 = fleet.connect("c1").await;
    c1.batch_execute("INSERT INTO kept VALUES (2)")
        .await
        .unwrap();
    let n: i64 = c1
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

//! The measurement behind `bench/failover`: a program, not a test (it
//! prints figures; it asserts nothing about speed). Each round takes the
//! current primary's host away under a write load and measures the time
//! from the fault to the first write acknowledged by the new primary; then
//! the host comes back and rejoins before the next round. `FAULT=kill`:
//! SIGKILL of PostgreSQL and repl-manager (the host died). `FAULT=blackhole`:
//! the host's link goes down, packets vanish with no RST (the host is
//! alive and cut off, and must fence itself).
//!
//!   ROUNDS=5 PROBE=1 TIMEOUT=5 KEY=1 FAULT=kill cargo run --release \
//!     -p repl-manager --example failover_bench
//!
//! The client gives up on a write after `WRITE_TIMEOUT` seconds (1) and
//! reconnects (`connect_timeout=1` per host).
//!
//! `KEY=0` runs without the leader key on the Raft group (the lease/vote
//! protocol alone), to measure what the key costs.
//!
//! `FAULT=switchover`: no fault; `POST /switchover` to the other node. It
//! measures the client-visible write gap: the longest time between two
//! consecutive acknowledged writes around the switchover, reconnects
//! included.

#![allow(clippy::unwrap_used)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cluster_db::Role;
use support::ns::{lost_writes, now, Ledger, NsFleet};
use support::Members;

const T: Duration = Duration::from_secs(120);

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let rounds = env_f64("ROUNDS", 5.0) as usize;
    let probe = env_f64("PROBE", 1.0);
    let timeout = env_f64("TIMEOUT", 5.0);
    let key = env_f64("KEY", 1.0) != 0.0;
    let blackhole = std::env::var("FAULT").is_ok_and(|f| f == "blackhole");
    let switchover = std::env::var("FAULT").is_ok_and(|f| f == "switchover");
    let mut gaps = Vec::new();
    let nodes = vec![
        ("lead", Role::Lead),
        ("backup", Role::Backup),
        ("c1", Role::Compute),
    ];
    // The lead may take over back, so every round kills the current primary.
    let settings = format!(
        "[replication]\nrepair_after_secs = 5\n\
         [failover]\nprobe_interval_secs = {probe}\ntimeout_secs = {timeout}\ncandidates = [\"lead\"]\n\
         leader_key_on_raft = {key}\n"
    );
    let mut fleet = NsFleet::start(&nodes, &settings).await;
    fleet.wait_healthy("lead", &["backup", "c1"], T).await;
    // The client gives up on a write after WRITE_TIMEOUT seconds (1) and
    // reconnects, as a client with a statement or TCP user timeout does:
    // under a black hole (no RST) its wait, not the failover, would
    // otherwise be what is measured.
    let write_timeout = Duration::from_secs_f64(env_f64("WRITE_TIMEOUT", 1.0));
    let ledger = Ledger::start_with(fleet.dsn(&["lead", "backup"]), write_timeout).await;
    let mut primary = "lead";
    let mut times = Vec::new();
    for round in 1..=rounds {
        let other = if primary == "lead" { "backup" } else { "lead" };
        fleet
            .wait_status(primary, T, "in sync", |s| {
                s.synchronous_standby().is_some() && s.failover.as_ref().is_some_and(|f| !f.fenced)
            })
            .await;
        // Every member must have heard the primary's sync report.
        tokio::time::sleep(Duration::from_millis((probe * 2500.0) as u64)).await;
        let killed = now();
        let started = Instant::now();
        if switchover {
            let body = serde_json::json!({ "to": other });
            let r = fleet
                .post(primary, "/switchover", body, Some(support::ns::TOKEN))
                .await;
            assert!(r.status.is_success(), "round {round}: {}", r.text());
        } else if blackhole {
            fleet.cut(primary);
        } else {
            fleet.kill(primary).await;
        }
        let other_ip = fleet.node(other).ip.to_string();
        let first = loop {
            if let Some(t) = ledger.first_ack_by(&other_ip, killed) {
                break t - killed;
            }
            assert!(
                started.elapsed() < T,
                "round {round}: no write on {other} after {T:?}:\n{}",
                fleet.log_tail(other, 20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        times.push(first);
        eprintln!(
            "round {round}: {primary} {}, {other} took writes after {first:.2} s",
            if switchover {
                "switched over"
            } else if blackhole {
                "black-holed"
            } else {
                "killed"
            }
        );
        if switchover {
            // Writes settle on the new primary; the longest wait between
            // two acknowledgements from just before the request on.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut ts: Vec<f64> = ledger
                .acked
                .lock()
                .unwrap()
                .iter()
                .map(|(_, t, _)| *t)
                .filter(|t| *t >= killed - 0.5)
                .collect();
            ts.sort_by(f64::total_cmp);
            let gap = ts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            eprintln!("round {round}: longest write gap {gap:.3} s");
            gaps.push(gap);
        } else if blackhole {
            fleet.heal(primary);
        } else {
            fleet.restart(primary);
        }
        fleet.wait_healthy(other, &[primary, "c1"], T).await;
        primary = other;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, _attempts) = ledger.stop().await;
    let pc = fleet.connect(primary).await;
    let lost = lost_writes(&pc, &acked).await;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    if switchover {
        gaps.sort_by(f64::total_cmp);
        println!(
            "switchover (probe {probe} s, timeout {timeout} s, leader key {}), {rounds} under write load: \
             client-visible write gap min {:.3} s, median {:.3} s, max {:.3} s; request -> first write on the \
             new primary median {median:.2} s; {} writes acknowledged, {} lost",
            if key { "on" } else { "off" },
            gaps[0],
            gaps[gaps.len() / 2],
            gaps[gaps.len() - 1],
            acked.len(),
            lost.len()
        );
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        return;
    }
    println!(
        "failover (probe {probe} s, timeout {timeout} s, leader key {}), {rounds} {} under write load: \
         fault -> first acknowledged write on the new primary min {:.2} s, median {median:.2} s, max {:.2} s; \
         {} writes acknowledged, {} lost",
        if key { "on" } else { "off" },
        if blackhole { "black-holed primaries" } else { "killed primaries" },
        sorted[0],
        sorted[sorted.len() - 1],
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

//! `repl-manager`: sets up and keeps PostgreSQL streaming replication on
//! one node of the fleet, and runs switchovers.
//!
//! Every `replication.loop_interval_secs` the node reconciles: it learns the
//! highest epoch among itself and its peers (asked over HTTP), and then acts
//! as what that epoch makes it — the primary (settings, replication role,
//! slots, synchronous standby, the cluster record) or a standby of the
//! primary (clone, stream, repair). Operations (`/switchover`, `/promote`,
//! `/demote`) take the same lock, so only one thing at a time touches the
//! server. See docs/repl-manager.md.

pub mod api;
pub mod commit;
pub mod config;
pub mod consensus;
pub mod failover;
pub mod lsn;
pub mod maintenance;
pub mod manager;
pub mod member;
pub mod metrics;
pub mod now;
pub mod ops;
pub mod patroni;
mod primary;
pub mod probe;
pub mod rules;
pub mod server;
pub mod settings;
mod standby;
pub mod state;
pub mod sync;
pub mod tuning;

use std::sync::Arc;
use std::time::Duration;

use sidecar_kit::telemetry::unix_now;
use sidecar_kit::{Lifecycle, Metrics};

pub use config::{Config, DEFAULT_ADMIN_PORT};
pub use manager::Manager;

use manager::lock;

/// `repl-manager reset-fleet-state`: the recovery step of
/// docs/runbooks/lost-majority.md. Exit 0 when the store was moved aside
/// (or there was none), 1 when refused or failed, 2 on a bad config.
pub fn reset_fleet_state(args: &sidecar_kit::cli::ConfigArgs) -> std::process::ExitCode {
    use sidecar_kit::cli::EXIT_FAILURE;
    use std::process::ExitCode;
    let cfg: Config = match sidecar_kit::cli::load_config("repl-manager", args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("repl-manager: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let dir = consensus::store_dir(&cfg);
    match runtime.block_on(consensus::reset(&cfg)) {
        Ok(None) => {
            println!("no Raft store at {}: nothing to reset", dir.display());
            ExitCode::SUCCESS
        }
        Ok(Some(r)) => {
            println!(
                "the fleet's Raft group (voters {}) is left behind; its store is kept at {}",
                r.voters,
                r.moved_to.display()
            );
            if let Some(k) = r.last_key {
                println!(
                    "its leader key, as this member last applied it: {} at epoch {}",
                    k.member, k.epoch
                );
            }
            println!(
                "start repl-manager on every surviving member: they form a new group of the \
                 configured members (epochs go on from each member's own)"
            );
            ExitCode::SUCCESS
        }
        Err(consensus::ConsensusError::FleetState(
            e @ fleet_state::FleetStateError::InUse { .. },
        )) => {
            eprintln!("repl-manager: {e}: repl-manager is running on this node; stop it first");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("repl-manager: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Runs `repl-manager` until `lifecycle` is shut down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    let metrics = Metrics::new("repl-manager")?;
    let repl_metrics = metrics::ReplMetrics::new(&metrics, &config.node.name)?;
    let admin = config.admin.clone();
    let mgr = Arc::new(Manager::new(config, repl_metrics)?);
    mgr.load_witness()?;
    if mgr.cfg.automatic_failover()
        && mgr.cfg.failover.leader_key_on_raft
        && !mgr.cfg.failover.allow_two_node
    {
        let c = consensus::Consensus::open(&mgr.cfg)
            .await
            .map_err(|e| anyhow::anyhow!("the fleet's Raft group: {e}"))?;
        let _ = mgr.consensus.set(c);
    }
    let api = Arc::new(api::Api { mgr: mgr.clone() });
    let work = {
        let lifecycle = lifecycle.clone();
        let mgr = mgr.clone();
        async move {
            // Ready from the start: the admin server is what peers and
            // operators need to see while PostgreSQL is being set up.
            lifecycle.set_ready(true);
            mgr.metrics.paused.set(i64::from(mgr.paused()));
            if mgr.cfg.members.len() == 2 && mgr.cfg.failover.allow_two_node {
                tracing::warn!(
                    "failover.allow_two_node: the backup promotes itself when it loses the lead, and \
                     the lead never fences itself; a partition between them makes two primaries"
                );
            } else if mgr.cfg.members.len() == 2 {
                tracing::info!("two members: no majority without both, so no automatic failover");
            }
            // One failover round first: a primary learns whether it holds a
            // lease before its settings are written.
            mgr.failover_round().await;
            tokio::join!(
                reconcile_loop(&mgr, &lifecycle),
                failover_loop(&mgr, &lifecycle)
            );
            Ok(())
        }
    };
    let served = sidecar_kit::sidecar::serve(&admin, api, metrics, lifecycle, work).await;
    if let Some(c) = mgr.consensus() {
        c.shutdown().await;
    }
    served
}

async fn reconcile_loop(mgr: &Manager, lifecycle: &Lifecycle) {
    loop {
        // Shutdown does not cut a pass short at once: stopping between "stop
        // the server" and "start it again" would leave PostgreSQL down. The
        // pass gets most of admin.shutdown_timeout_secs to finish; only one
        // stuck longer (a clone, a server that will not start) is dropped,
        // and pg_basebackup cleans up after itself.
        let grace =
            Duration::from_secs(mgr.cfg.admin.shutdown_timeout_secs.saturating_sub(2).max(1));
        let pass = reconcile_once(mgr);
        tokio::pin!(pass);
        let result = tokio::select! {
            result = &mut pass => result,
            _ = async { lifecycle.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown: a reconciliation pass did not finish in time and was abandoned");
                break;
            }
        };
        *lock(&mgr.last_tick) = unix_now();
        match result {
            Ok(()) => *lock(&mgr.last_error) = None,
            Err(e) => {
                let msg = e.to_string();
                let repeated = lock(&mgr.last_error).as_deref() == Some(msg.as_str());
                if !repeated {
                    tracing::warn!(error = %msg, "reconciliation failed");
                }
                mgr.metrics
                    .reconcile_errors
                    .with_label_values(&["pass"])
                    .inc();
                *lock(&mgr.last_error) = Some(msg);
            }
        }
        // The fleet's loop interval, read afresh: a committed change
        // applies from the next pass.
        let interval = mgr.tuning().loop_interval();
        tokio::select! {
            _ = lifecycle.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    // PostgreSQL keeps running when repl-manager stops: a restart of the
    // sidecar must never take the database down.
    tracing::info!("reconciliation stopped; PostgreSQL is left running");
}

async fn failover_loop(mgr: &Manager, lifecycle: &Lifecycle) {
    loop {
        // Like a reconcile pass, a round (a promotion, a fence) is never
        // cut short by shutdown.
        let sleep = mgr.failover_round().await;
        if lifecycle.is_shutting_down() {
            break;
        }
        tokio::select! {
            _ = lifecycle.cancelled() => break,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One reconciliation pass.
pub async fn reconcile_once(mgr: &Manager) -> Result<(), manager::Failure> {
    // Peers are asked before taking the lock: a partitioned peer costs a
    // timeout, and a failover attempt must not wait behind it.
    let peers = mgr.peers().await;
    let _guard = mgr.op_lock.lock().await;
    let known = mgr.learn(&peers)?;
    if mgr.paused() {
        // Maintenance: observe and report, change nothing.
        let _ = mgr.status().await;
        return Ok(());
    }
    let result = if known.primary == mgr.name() {
        mgr.primary().act().await
    } else {
        mgr.standby().act(&peers).await
    };
    mgr.set_activity(None);
    drop(_guard);
    // Refresh the observation behind /health and the metrics.
    let _ = mgr.status().await;
    result
}

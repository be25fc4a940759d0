//! Duties of a node that follows another: clone when empty, stream from the
//! writable upstream, and repair itself when it cannot (rewind first,
//! re-clone second; the old data directory is moved aside, never deleted).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::lsn::Lsn;
use crate::manager::{lock, Failure, Manager, PeerView};
use crate::member::Member;
use crate::probe;
use crate::server::StopMode;
use crate::settings::{self, Desired};

/// How long this standby has not been streaming, and what was tried.
#[derive(Debug, Default)]
pub struct RepairTracker {
    pub not_streaming_since: Option<Instant>,
    /// Since when it has not been streaming while its primary answered
    /// without a break: the repair clock.
    pub unexplained_since: Option<Instant>,
    /// Repairs tried since it last streamed.
    pub attempts: u32,
    pub last: Option<String>,
}

/// What one look at a standby's streaming says about repairing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairVerdict {
    Streaming,
    /// Not streaming, not for long enough to act.
    NotYet,
    /// Not streaming for the whole delay, but the primary does not answer
    /// either: failover's business, not a repair's.
    PrimaryGone,
    /// Not streaming for the whole delay while the primary answered.
    Due,
}

impl RepairTracker {
    /// Records one look and says whether a repair is due. Only time spent
    /// not streaming *while the primary answers* counts: a standby cut off
    /// from its primary reconnects by itself once the link heals
    /// (`wal_retrieve_retry_interval`), and repairing it at that moment
    /// (stopping PostgreSQL to rewind) would take a healthy standby down
    /// just as it was catching up.
    pub fn observe(
        &mut self,
        streaming: bool,
        primary_answers: bool,
        now: Instant,
        delay: Duration,
    ) -> RepairVerdict {
        if streaming {
            *self = RepairTracker::default();
            return RepairVerdict::Streaming;
        }
        let since = *self.not_streaming_since.get_or_insert(now);
        if !primary_answers {
            self.unexplained_since = None;
            return if now.duration_since(since) >= delay {
                RepairVerdict::PrimaryGone
            } else {
                RepairVerdict::NotYet
            };
        }
        let clock = *self.unexplained_since.get_or_insert(now);
        if now.duration_since(clock) >= delay {
            RepairVerdict::Due
        } else {
            RepairVerdict::NotYet
        }
    }

    /// A repair was tried now: the next one waits a whole delay again.
    pub fn tried(&mut self, kind: &str, now: Instant) {
        self.attempts += 1;
        self.not_streaming_since = Some(now);
        self.unexplained_since = Some(now);
        self.last = Some(kind.to_string());
    }
}

/// Start failures that a rewind or a re-clone can fix.
fn history_problem(error: &str) -> bool {
    const SIGNS: &[&str] = &[
        "timeline",
        "checkpoint record",
        "WAL segment",
        "requested WAL",
        "invalid record",
        "backup_label",
    ];
    SIGNS.iter().any(|s| error.contains(s))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    Rewind,
    Reclone,
}

/// What only the standby's duties keep between passes.
#[derive(Default)]
pub struct StandbyState {
    repair: Mutex<RepairTracker>,
}

/// The duties of a node that follows another: clone, stream, rejoin after
/// a newer epoch, and repair (rewind, re-clone). Borrowed from the manager
/// for one call (`Manager::standby`); what it keeps between calls is
/// `StandbyState`.
pub struct Standby<'a> {
    pub(crate) m: &'a Manager,
}

impl Manager {
    pub(crate) fn standby(&self) -> Standby<'_> {
        Standby { m: self }
    }
}

impl Standby<'_> {
    pub fn desired(&self) -> Desired {
        Desired::Standby {
            upstreams: self.m.upstreams(),
            slot: self.m.me().slot_name(),
        }
    }

    /// The member this node should stream from (the known primary).
    fn primary_member(&self) -> Result<Member, Failure> {
        let known = self.m.known();
        self.m
            .cfg
            .member(&known.primary)
            .cloned()
            .ok_or_else(|| Failure::Failed(format!("primary {} is not a member", known.primary)))
    }

    /// One pass as a standby.
    pub async fn act(&self, peers: &[PeerView]) -> Result<(), Failure> {
        if !self.m.server.has_data() {
            return self.clone_from_primary("empty data directory").await;
        }
        let running = self.m.server.is_running().await;
        if running {
            let client = self.m.local().await?;
            let st = probe::server_state(&client).await?;
            if !st.in_recovery {
                return self.rejoin_if_superseded(peers).await;
            }
        }
        let changed = settings::apply(&self.m.server, &self.m.cfg, &self.desired())?;
        if !running {
            self.m
                .set_activity(Some("starting PostgreSQL as a standby"));
            self.m.drop_local().await;
            if let Err(e) = self.m.server.start().await {
                // A standby that cannot start because of its history (its
                // timeline is not the primary's, its WAL is gone) is
                // repaired like one that cannot stream. Any other failure
                // (a bad setting, a full disk) is the operator's: a re-clone
                // would not fix it and would hide it.
                if history_problem(&e.to_string()) && self.repair_due(false) {
                    tracing::warn!(error = %e, "the standby does not start; repairing");
                    return self.repair(None).await;
                }
                return Err(e.into());
            }
        } else if changed {
            let client = self.m.local().await?;
            client.execute("SELECT pg_reload_conf()", &[]).await?;
        }
        let client = self.m.local().await?;
        let receiver = probe::receiver(&client).await?;
        let streaming = receiver.as_ref().is_some_and(|r| r.status == "streaming");
        if self.repair_due(streaming) {
            let mine = probe::server_state(&client)
                .await
                .ok()
                .and_then(|s| s.receive_lsn.or(s.replay_lsn));
            return self.repair(mine).await;
        }
        Ok(())
    }

    /// This node runs a writable server but its durable epoch names another
    /// primary. When that primary confirms it is one, rewind onto it and
    /// follow. When it does not answer, stop the server at once all the
    /// same: another node holds the epoch, so every write this one still
    /// acknowledged would be lost at the rewind. (It used to wait, writable,
    /// for the new primary to answer: forever, behind a partition.) The next
    /// pass starts it as a read-only standby; it is rewound once the new
    /// primary answers. Paused (maintenance), the operator decides.
    async fn rejoin_if_superseded(&self, peers: &[PeerView]) -> Result<(), Failure> {
        let known = self.m.known();
        let confirmed = peers.iter().any(|(m, v)| {
            m.name.as_str() == known.primary
                && matches!(v, Ok(s) if s.is_primary() && s.epoch >= known.epoch)
        });
        if !confirmed {
            if self.m.paused() {
                return Err(Failure::Failed(format!(
                    "this server is writable but {} is primary at epoch {}; paused, so it keeps running",
                    known.primary, known.epoch
                )));
            }
            tracing::error!(primary = %known.primary, epoch = known.epoch,
                "this server is writable but another node holds the epoch: stopping it");
            self.m.set_activity(Some("superseded: stopping"));
            self.m.server.stop(StopMode::Immediate).await?;
            self.m.drop_local().await;
            self.m.primary_state.forget_setup();
            self.m
                .metrics
                .operations
                .with_label_values(&["fence", "ok"])
                .inc();
            self.m.event(
                "fenced",
                json!({ "reason": "superseded", "primary": known.primary, "epoch": known.epoch }),
            )
            .await;
            return Err(Failure::Failed(format!(
                "this server was writable but {} is primary at epoch {}: stopped it; \
                 it starts again as a standby and is rewound once {} answers",
                known.primary, known.epoch, known.primary
            )));
        }
        tracing::warn!(primary = %known.primary, epoch = known.epoch, "a newer primary exists: demoting and rejoining");
        self.demote_to_standby("superseded by a newer epoch").await
    }

    /// Stops this server, rewinds it onto the primary's timeline and starts
    /// it as a standby (re-cloning when the rewind fails).
    pub async fn demote_to_standby(&self, reason: &str) -> Result<(), Failure> {
        let started = Instant::now();
        self.m.set_activity(Some("demoting"));
        self.m.server.stop(StopMode::Fast).await?;
        self.m.drop_local().await;
        self.m.primary_state.forget_setup();
        let result = self.rewind_and_start().await;
        let outcome = match &result {
            Ok(()) => "rewound",
            Err(_) => "rewind failed",
        };
        self.m
            .metrics
            .operations
            .with_label_values(&["demote", if result.is_ok() { "ok" } else { "failed" }])
            .inc();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "rewind failed; re-cloning");
            self.reclone(reason).await?;
        }
        self.m
            .event(
                "demoted",
                json!({ "reason": reason, "outcome": outcome, "primary": self.m.known().primary,
                    "seconds": started.elapsed().as_secs_f64() }),
            )
            .await;
        Ok(())
    }

    /// Tracks streaming; `true` when the standby has gone without it for
    /// `repair_after_secs` (see [`RepairTracker::observe`]; when the primary
    /// does not answer, [`Manager::repair`] says so and waits).
    fn repair_due(&self, streaming: bool) -> bool {
        let answers = self.m.primary_recently_seen();
        let delay = Duration::from_secs(self.m.cfg.replication.repair_after_secs);
        let mut r = lock(&self.m.standby_state.repair);
        let attempts = r.attempts;
        let verdict = r.observe(streaming, answers, Instant::now(), delay);
        if verdict == RepairVerdict::Streaming && attempts > 0 {
            tracing::info!(attempts, "streaming again after repair");
        }
        matches!(verdict, RepairVerdict::Due | RepairVerdict::PrimaryGone)
    }

    /// Repairs a standby that does not stream: `pg_rewind` when the
    /// histories may have diverged, a re-clone when the rewind fails or the
    /// primary no longer has the WAL this standby needs. `mine` is how far
    /// it got (from the running server, else from its control file).
    async fn repair(&self, mine: Option<Lsn>) -> Result<(), Failure> {
        // Only repair against a primary that answers: a dead or partitioned
        // primary is failover's business, and re-cloning from nobody helps
        // nobody. (The failover probe runs every probe interval.)
        if !self.m.primary_recently_seen() {
            return Err(Failure::Failed(format!(
                "not streaming, and the primary {} does not answer either: waiting",
                self.m.known().primary
            )));
        }
        let upstream = self.m.live_upstream().await.map_err(|e| {
            Failure::Failed(format!(
                "not streaming, and no writable upstream to repair from: {e}"
            ))
        })?;
        let mine = match mine {
            Some(l) => Some(l),
            None => self
                .m
                .server
                .control_data()
                .await
                .ok()
                .map(|c| c.checkpoint_lsn),
        };
        let limit = Duration::from_secs(self.m.cfg.postgres.connect_timeout_secs);
        let kind = tokio::time::timeout(limit, self.choose_repair(&upstream, mine))
            .await
            .unwrap_or(Repair::Rewind);
        {
            lock(&self.m.standby_state.repair).tried(&format!("{kind:?}"), Instant::now());
        }
        match kind {
            Repair::Rewind => {
                self.m.set_activity(Some("rewinding"));
                self.m.server.stop(StopMode::Fast).await?;
                self.m.drop_local().await;
                let result = self.rewind_and_start().await;
                self.m
                    .metrics
                    .repairs
                    .with_label_values(&["rewind", if result.is_ok() { "ok" } else { "failed" }])
                    .inc();
                match result {
                    Ok(()) => {
                        self.m.event("rewound", json!({ "ok": true })).await;
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rewind failed; re-cloning");
                        self.m
                            .event("rewound", json!({ "ok": false, "error": e.to_string() }))
                            .await;
                        self.reclone("pg_rewind failed").await
                    }
                }
            }
            Repair::Reclone => {
                self.reclone("not streaming; rewind did not help or WAL is gone")
                    .await
            }
        }
    }

    /// Rewind when the histories may have diverged; re-clone when the
    /// primary no longer has the WAL this standby needs (its slot was
    /// invalidated, or its oldest WAL file starts after our position), or
    /// when a rewind was already tried.
    async fn choose_repair(&self, upstream: &tokio_postgres::Client, mine: Option<Lsn>) -> Repair {
        if lock(&self.m.standby_state.repair).attempts > 0 {
            return Repair::Reclone;
        }
        let Some(mine) = mine else {
            return Repair::Rewind;
        };
        let slot = self.m.me().slot_name();
        let row = upstream
            .query_one(
                "SELECT (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1),
                        (SELECT (('x' || substr(min(name), 9, 8))::bit(32)::int8 * 4294967296
                               + ('x' || substr(min(name), 17, 8))::bit(32)::int8
                                 * (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'))::text
                           FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$')",
                &[&slot],
            )
            .await;
        match row {
            Ok(row) => {
                let status: Option<String> = row.get(0);
                let oldest: Option<u64> =
                    row.get::<_, Option<String>>(1).and_then(|s| s.parse().ok());
                if status.as_deref() == Some("lost") || oldest.is_some_and(|o| o > mine.0) {
                    tracing::warn!(%slot, ?status, ?oldest, %mine, "the primary no longer has the WAL this standby needs");
                    Repair::Reclone
                } else {
                    Repair::Rewind
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not ask the primary about its WAL");
                Repair::Rewind
            }
        }
    }

    /// `pg_rewind` from the primary, then the standby settings, then start.
    async fn rewind_and_start(&self) -> Result<(), Failure> {
        let primary = self.primary_member()?;
        self.m.server.hold_if_external()?;
        // pg_rewind reads the source's timeline from its control file, which
        // a fresh primary updates only at its first checkpoint; without one
        // it wrongly reports "no rewind required".
        if let Ok(up) = self.m.live_upstream().await {
            match tokio::time::timeout(Duration::from_secs(30), up.batch_execute("CHECKPOINT"))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "CHECKPOINT on the source failed"),
                Err(_) => tracing::debug!("CHECKPOINT on the source timed out"),
            }
        }
        let source = format!(
            "host={} port={} user={} dbname=postgres connect_timeout=5",
            primary.host, primary.port, self.m.cfg.postgres.replication_user
        );
        let mut cmd = self.m.server.command("pg_rewind");
        cmd.arg("-D")
            .arg(self.m.server.data_dir())
            .arg(format!("--source-server={source}"))
            .env(
                "PGPASSWORD",
                self.m.cfg.postgres.replication_password.expose(),
            );
        let out = self.m.server.run_logged(cmd, "pg_rewind").await?;
        tracing::info!(source = %primary.name, output = %out.trim(), "pg_rewind finished");
        settings::apply(&self.m.server, &self.m.cfg, &self.desired())?;
        self.m.server.start().await?;
        self.m.drop_local().await;
        Ok(())
    }

    /// Moves the data directory aside and clones a fresh one.
    pub(crate) async fn reclone(&self, reason: &str) -> Result<(), Failure> {
        self.m.set_activity(Some("re-cloning"));
        self.m.server.hold_if_external()?;
        if self.m.server.is_running().await {
            self.m.server.stop(StopMode::Fast).await?;
        }
        self.m.drop_local().await;
        let moved = self.m.server.move_aside()?;
        tracing::warn!(?moved, reason, "data directory moved aside for a re-clone");
        let result = self.clone_from_primary(reason).await;
        self.m
            .metrics
            .repairs
            .with_label_values(&["reclone", if result.is_ok() { "ok" } else { "failed" }])
            .inc();
        self.m.event(
            "recloned",
            json!({ "reason": reason, "moved_aside": moved.map(|p| p.display().to_string()), "ok": result.is_ok() }),
        )
        .await;
        result
    }

    /// `pg_basebackup` from the primary through this node's slot (created
    /// by the primary ahead of time, or here when it does not exist yet),
    /// then the standby settings, then start and wait to stream.
    pub async fn clone_from_primary(&self, reason: &str) -> Result<(), Failure> {
        let started = Instant::now();
        let primary = self.primary_member()?;
        self.m.set_activity(Some("cloning"));
        self.m.server.hold_if_external()?;
        self.m.server.ensure_empty_data_dir()?;
        let slot = self.m.me().slot_name();
        // Does our slot exist? Ask the primary; if it cannot be asked the
        // clone cannot work either.
        let upstream = self.m.live_upstream().await?;
        let limit = Duration::from_secs(self.m.cfg.postgres.connect_timeout_secs);
        let has_slot = tokio::time::timeout(
            limit,
            upstream.query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            ),
        )
        .await
        .map_err(|_| Failure::Failed("the primary did not answer in time".into()))?
        .map_err(Failure::from)?
        .is_some();
        // No application_name: pg_basebackup's own WAL stream must not look
        // like this node's standby connection (the primary would count it
        // as a streaming synchronous standby).
        let conninfo = format!(
            "host={} port={} user={} connect_timeout=5",
            primary.host, primary.port, self.m.cfg.postgres.replication_user,
        );
        let mut cmd = self.m.server.command("pg_basebackup");
        cmd.arg("-d")
            .arg(conninfo)
            .arg("-D")
            .arg(self.m.server.data_dir())
            .args(["-X", "stream", "-c", "fast", "--no-password", "-S", &slot])
            .env(
                "PGPASSWORD",
                self.m.cfg.postgres.replication_password.expose(),
            );
        if !has_slot {
            cmd.arg("-C");
        }
        tracing::info!(source = %primary.name, %slot, reason, "cloning with pg_basebackup");
        let result = self.m.server.run(cmd, "pg_basebackup").await;
        self.m
            .metrics
            .repairs
            .with_label_values(&["clone", if result.is_ok() { "ok" } else { "failed" }])
            .inc();
        result?;
        settings::apply(&self.m.server, &self.m.cfg, &self.desired())?;
        self.m.server.start().await?;
        self.m.drop_local().await;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(secs, "clone started as a standby");
        self.m
            .event(
                "cloned",
                json!({ "source": primary.name, "reason": reason, "seconds": secs }),
            )
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(5);

    #[test]
    fn a_standby_cut_off_from_its_primary_is_not_repaired_the_moment_the_link_heals() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = RepairTracker::default();
        assert_eq!(
            r.observe(true, true, at(0), DELAY),
            RepairVerdict::Streaming
        );
        // Cut off: neither streaming nor hearing from the primary.
        assert_eq!(r.observe(false, false, at(1), DELAY), RepairVerdict::NotYet);
        assert_eq!(
            r.observe(false, false, at(20), DELAY),
            RepairVerdict::PrimaryGone
        );
        // The link heals: the primary answers before the WAL receiver has
        // reconnected. Twenty seconds without streaming, none of them
        // unexplained: give the receiver its chance.
        assert_eq!(r.observe(false, true, at(21), DELAY), RepairVerdict::NotYet);
        assert_eq!(r.observe(false, true, at(25), DELAY), RepairVerdict::NotYet);
        // Still not streaming a whole delay after the primary came back.
        assert_eq!(r.observe(false, true, at(26), DELAY), RepairVerdict::Due);
        // It streams again: everything is forgotten.
        assert_eq!(
            r.observe(true, true, at(27), DELAY),
            RepairVerdict::Streaming
        );
        assert_eq!(r.observe(false, true, at(28), DELAY), RepairVerdict::NotYet);
    }

    #[test]
    fn a_flapping_primary_restarts_the_clock_and_a_repair_waits_a_whole_delay() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = RepairTracker::default();
        assert_eq!(r.observe(false, true, at(0), DELAY), RepairVerdict::NotYet);
        assert_eq!(r.observe(false, false, at(4), DELAY), RepairVerdict::NotYet);
        assert_eq!(r.observe(false, true, at(6), DELAY), RepairVerdict::NotYet);
        assert_eq!(r.observe(false, true, at(11), DELAY), RepairVerdict::Due);
        r.tried("Rewind", at(11));
        assert_eq!(r.attempts, 1);
        assert_eq!(r.observe(false, true, at(15), DELAY), RepairVerdict::NotYet);
        assert_eq!(r.observe(false, true, at(16), DELAY), RepairVerdict::Due);
    }
}

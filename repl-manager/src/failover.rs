//! Automatic failover without a coordinator: leases, votes and fencing over
//! the repl-managers' HTTP endpoints.
//!
//! Every `probe_interval` each node runs one round:
//!
//! - **The primary** asks every member for a lease (`POST /lease`). A member
//!   that grants it *promises not to vote for a new primary for `timeout`*
//!   (F) from the moment it answers. The primary holds the lease until
//!   `sent + L`, where `L = F - 2 × probe_interval`, counting from when it
//!   *sent* the request, so the lease always ends before the promises do.
//!   It asks only while its own server answers, so a primary whose
//!   PostgreSQL is dead stops renewing.
//! - **Everyone else** probes the primary's PostgreSQL and remembers when it
//!   last answered as a writable primary.
//! - **A candidate** (the backup, or a configured member) that has not seen
//!   the primary for F asks every member for a vote (`POST /vote`) for the
//!   next epoch. A member grants it only if it also has not seen the primary for F,
//!   its last lease promise has expired, and it has not voted for another
//!   candidate; granting, it refuses leases at older epochs for F.
//!
//! **Why there are never two writable primaries.** A promotion needs a
//! majority of votes; a lease needs a majority of grants; any two majorities
//! of the same members share one, X. X voted at time `v` only if its last
//! grant to the old primary was at `g <= v - F`; that grant was an answer to
//! a request the primary sent at `s <= g`, so the primary's lease ended at
//! `s + L < g + F <= v`, before the promotion. When the lease ends the
//! primary stops its server at once (the failover round wakes at the
//! deadline); the `2 × probe_interval` margin covers that stop and timer
//! slack. A primary that starts without a lease (bootstrap, restart) serves
//! reads and replication but acknowledges no write: its settings make every
//! session read-only by default and every commit wait for a standby that
//! does not exist, until a majority grants it a lease — at which point it
//! has also learned of any newer epoch, since that majority includes a voter
//! of every promotion.
//!
//! **Why no acknowledged write is lost.** The backup is a synchronous
//! standby: while the primary is in `sync` mode every acknowledged commit is
//! on it. The primary reports its mode and position in every lease request,
//! so members know if it degraded to `async`; and since a degraded primary
//! may have acknowledged writes the backup lacks, the backup refuses to
//! promote when a voter says the primary was last seen `async`, or when it
//! lost sight of the primary noticeably earlier (by more than
//! `sync_degrade_after_secs - 2 × probe_interval`) than the member who saw
//! it last — durations measured by each node's monotonic clock, never wall
//! clocks — or when it is further behind the primary's last reported
//! position than `max_lag_on_failover_bytes`.

use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::commit::Commits;
use crate::config::CrashPoint;
use crate::consensus::Claim;
use sidecar_kit::telemetry::unix_now;

pub use aurora_api::repl::{FailoverView, ReportView, SyncMode};

use crate::lsn::Lsn;
use crate::manager::{lock, Failure, Manager};
use crate::member::Member;
use crate::primary::Primary;
use crate::probe;
use crate::rules::{key_duty, KeyDuty, Lease};
use crate::standby::Standby;
use crate::state::EpochRecord;

/// What the primary says about itself in a lease request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LeaseRequest {
    pub epoch: i64,
    pub primary: String,
    pub lsn: Option<Lsn>,
    pub sync_mode: String,
    pub sync_standby: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LeaseAnswer {
    pub granted: bool,
    pub node: String,
    pub epoch: i64,
    pub primary: String,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VoteRequest {
    pub candidate: String,
    pub epoch: i64,
}

/// What this member last heard from the primary (a lease request it
/// granted) and when, on this node's own wall clock. Stored before the
/// grant, loaded at start: a member that restarts still tells candidates
/// what the primary said last (a promotion that could lose acknowledged
/// writes is refused on that evidence).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Witness {
    pub report: LeaseRequest,
    pub heard_at_unix: f64,
}

impl Witness {
    /// Seconds since it was heard (never negative: a clock set back does
    /// not make old news fresh beyond "just now").
    fn age_secs(&self) -> f64 {
        (unix_now() - self.heard_at_unix).max(0.0)
    }
}

/// A member's vote, with its view: how long since it last saw the primary
/// (a duration on its own clock) and what the primary last told it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VoteAnswer {
    pub granted: bool,
    pub voter: String,
    pub epoch: i64,
    pub primary: String,
    pub primary_seen_ago_secs: Option<f64>,
    pub report: Option<ReportView>,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct FailoverState {
    pub started: Instant,
    /// When this node last saw the primary's server answer as a writable
    /// primary (members), or its own server (primary).
    pub primary_seen: Option<Instant>,
    /// Promise made with the last lease grant: no vote before this.
    pub no_vote_until: Option<Instant>,
    /// A vote granted: (epoch, candidate, no lease for older epochs until).
    pub vote: Option<(i64, String, Instant)>,
    /// The primary's last lease request and when it came.
    pub report: Option<(LeaseRequest, Instant)>,
    /// The last one heard before this process started (from the witness
    /// file), while nothing newer has come.
    pub remembered: Option<Witness>,
    /// Primary: writes are safe until the lease's end; fenced (the
    /// server stopped) once it ran out.
    pub lease: Lease,
    /// Why the last failover attempt did not promote (candidates).
    pub last_attempt: Option<String>,
    /// Why the last renewal of the leader key did not commit, if it did not.
    pub key_trouble: Option<String>,
    /// Primary: the commit probe's last finding (None: commits work;
    /// Some(false): stalling; Some(true): hung past the failover timeout).
    pub commits_hung: Option<bool>,
    /// Reported once per distinct reason, not every round.
    last_event_reason: Option<String>,
}

impl Default for FailoverState {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            primary_seen: None,
            no_vote_until: None,
            vote: None,
            report: None,
            remembered: None,
            lease: Lease::default(),
            last_attempt: None,
            key_trouble: None,
            commits_hung: None,
            last_event_reason: None,
        }
    }
}

impl FailoverState {
    pub fn lease_valid(&self) -> bool {
        self.lease.valid(Instant::now())
    }

    /// What the primary said last: heard by this process, else remembered
    /// from before it started.
    fn report_view(&self) -> Option<ReportView> {
        let view = |r: &LeaseRequest, age_secs: f64| ReportView {
            epoch: r.epoch,
            lsn: r.lsn,
            sync_mode: SyncMode::from(r.sync_mode.as_str()),
            sync_standby: r.sync_standby.clone(),
            age_secs,
        };
        match (&self.report, &self.remembered) {
            (Some((r, at)), _) => Some(view(r, at.elapsed().as_secs_f64())),
            (None, Some(w)) => Some(view(&w.report, w.age_secs())),
            (None, None) => None,
        }
    }

    /// How long since this node last saw the primary, for a candidate
    /// comparing its own sight with the voters'. After a restart that
    /// knows only the witness file, the time of the last report.
    fn primary_seen_ago_secs(&self) -> Option<f64> {
        secs_since(self.primary_seen).or_else(|| {
            self.remembered
                .as_ref()
                .filter(|_| self.report.is_none())
                .map(Witness::age_secs)
        })
    }
}

fn secs_since(t: Option<Instant>) -> Option<f64> {
    t.map(|t| t.elapsed().as_secs_f64())
}

impl Manager {
    /// Paused on this node (`/pause` with `local`), or the whole fleet
    /// paused in the replicated state (which a member that was down when
    /// the operator paused learns from the log).
    pub fn paused(&self) -> bool {
        let p = self.pause_file().exists() || self.consensus().is_some_and(|c| c.fleet_paused());
        self.metrics.paused.set(i64::from(p));
        p
    }

    fn pause_file(&self) -> std::path::PathBuf {
        self.cfg.node.state_file.with_extension("paused")
    }

    /// Maintenance mode on this node: no automatic action (no failover,
    /// no fencing, no repair). Stored next to the epoch file.
    pub fn set_paused(&self, paused: bool) -> Result<(), Failure> {
        let path = self.pause_file();
        let r = if paused {
            std::fs::write(&path, b"paused by an operator\n")
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        };
        r.map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?;
        self.metrics.paused.set(i64::from(paused));
        Ok(())
    }

    pub fn failover_view(&self) -> FailoverView {
        let f = lock(&self.failover);
        FailoverView {
            automatic: self.cfg.automatic_failover(),
            paused: self.paused(),
            lease_remaining_secs: f
                .lease
                .until
                .map(|u| u.saturating_duration_since(Instant::now()).as_secs_f64()),
            fenced: f.lease.fenced || (self.cfg.automatic_failover() && !f.lease_valid()),
            primary_seen_ago_secs: secs_since(f.primary_seen),
            report: f.report_view(),
            last_attempt: f.last_attempt.clone(),
            leader_key: self.consensus().and_then(|c| {
                c.view().leader.map(|k| aurora_api::repl::LeaderKeyView {
                    member: k.member,
                    epoch: i64::try_from(k.epoch).unwrap_or(i64::MAX),
                    revision: k.revision,
                    ttl_secs: k.ttl_ms as f64 / 1000.0,
                })
            }),
            raft_leader: self.consensus().and_then(|c| c.raft_leader()),
            key_trouble: f.key_trouble.clone(),
            sync_key: self.consensus().and_then(|c| c.sync_key()),
        }
    }

    /// Primary: may the server accept writes now? Always, without
    /// automatic failover; otherwise only under a lease.
    pub fn writes_allowed(&self) -> bool {
        !self.cfg.automatic_failover() || self.paused() || lock(&self.failover).lease_valid()
    }

    /// Has this node's failover probe seen the primary answer lately?
    pub fn primary_recently_seen(&self) -> bool {
        let limit = self.tuning().probe_interval() * 3;
        lock(&self.failover)
            .primary_seen
            .is_some_and(|t| t.elapsed() < limit)
    }

    pub fn hard_fenced(&self) -> bool {
        lock(&self.failover).lease.fenced
    }

    fn witness_file(&self) -> std::path::PathBuf {
        self.cfg.node.state_file.with_extension("witness")
    }

    /// Loads what this member heard from the primary before it started.
    /// A report about an older epoch's primary says nothing about the
    /// current one and is dropped; a file that does not parse stops the
    /// start (as the epoch file does): silently forgetting is the bug it
    /// prevents.
    pub fn load_witness(&self) -> Result<(), Failure> {
        let w: Option<Witness> = crate::state::load_json(&self.witness_file())?;
        let known = self.known();
        let w = w.filter(|w| w.report.epoch == known.epoch && w.report.primary == known.primary);
        if let Some(w) = &w {
            tracing::info!(
                sync_mode = %w.report.sync_mode,
                age_secs = w.age_secs(),
                "remembered the primary's last report from before this start"
            );
        }
        lock(&self.failover).remembered = w;
        Ok(())
    }

    /// Forget leases and promises tied to an epoch this node just left or
    /// entered.
    pub fn reset_failover_roles(&self) {
        let mut f = lock(&self.failover);
        f.lease = Lease::default();
        f.primary_seen = None;
    }

    // ---- the member side -------------------------------------------------

    /// `POST /lease`: the primary asks for a lease.
    pub async fn grant_lease(&self, req: LeaseRequest) -> Result<LeaseAnswer, Failure> {
        let known = self.known();
        let answer = |granted: bool, reason: Option<String>| {
            let k = self.known();
            LeaseAnswer {
                granted,
                node: self.name().to_string(),
                epoch: k.epoch,
                primary: k.primary,
                reason,
            }
        };
        if self.cfg.member(&req.primary).is_none() {
            return Ok(answer(
                false,
                Some(format!("{} is not a member", req.primary)),
            ));
        }
        // With the leader key on the Raft group, a lease goes only to the
        // key's committed holder at the key's epoch: a primary the fleet
        // has replaced (its promotion stored by a majority, whether or not
        // this member heard of it from the new primary) gets none. A
        // holder just announced may be a few heartbeats ahead of this
        // member's log: wait for it briefly.
        if let Some(c) = self.consensus() {
            let within = self.tuning().probe_interval() / 2;
            if !c.wait_for_key(&req.primary, req.epoch, within).await {
                let holder = c
                    .view()
                    .leader
                    .map(|k| format!("{} at epoch {}", k.member, k.epoch))
                    .unwrap_or_else(|| "nobody".into());
                return Ok(answer(
                    false,
                    Some(format!(
                        "the leader key committed here names {holder}, not {} at epoch {}",
                        req.primary, req.epoch
                    )),
                ));
            }
        }
        if req.epoch < known.epoch {
            return Ok(answer(
                false,
                Some(format!(
                    "epoch {} is stale: {} is primary at epoch {}",
                    req.epoch, known.primary, known.epoch
                )),
            ));
        }
        if req.epoch == known.epoch && req.primary != known.primary && known.epoch > 0 {
            return Ok(answer(
                false,
                Some(format!(
                    "{} is primary at epoch {}, not {}",
                    known.primary, known.epoch, req.primary
                )),
            ));
        }
        {
            let f = lock(&self.failover);
            if let Some((epoch, candidate, until)) = &f.vote {
                if *epoch > req.epoch && Instant::now() < *until {
                    return Ok(answer(
                        false,
                        Some(format!("voted for {candidate} at epoch {epoch}")),
                    ));
                }
            }
        }
        if req.epoch > known.epoch {
            // A newly promoted primary announces itself.
            self.adopt(&EpochRecord {
                epoch: req.epoch,
                primary: req.primary.clone(),
                changed_at: unix_now(),
            })?;
        }
        // Durable before granted: a grant is a promise, and what the primary
        // said with it is evidence this member must still give after a
        // restart. A member that cannot write it does not grant.
        let witness = Witness {
            report: req.clone(),
            heard_at_unix: unix_now(),
        };
        let stored = {
            let _writing = lock(&self.witness_writing);
            crate::state::store_json(&self.witness_file(), &witness)
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot record the primary's report: refusing the lease");
            return Ok(answer(
                false,
                Some(format!("cannot record the primary's report: {e}")),
            ));
        }
        let now = Instant::now();
        let mut f = lock(&self.failover);
        f.no_vote_until = Some(now + self.tuning().timeout());
        f.primary_seen = Some(now);
        f.report = Some((req, now));
        f.remembered = None;
        drop(f);
        Ok(answer(true, None))
    }

    /// `POST /vote`: a candidate asks for this member's vote.
    pub fn grant_vote(&self, req: VoteRequest) -> VoteAnswer {
        let known = self.known();
        let mut f = lock(&self.failover);
        let mut answer = VoteAnswer {
            granted: false,
            voter: self.name().to_string(),
            epoch: known.epoch,
            primary: known.primary.clone(),
            primary_seen_ago_secs: f.primary_seen_ago_secs(),
            report: f.report_view(),
            reason: None,
        };
        let timeout = self.tuning().timeout();
        let now = Instant::now();
        let refusal = if self.paused() {
            Some("paused (maintenance mode)".to_string())
        } else if !self.cfg.automatic_failover() {
            Some("automatic failover is off on this node".into())
        } else if req.epoch != known.epoch + 1 {
            Some(format!(
                "epoch {} is not the next one (this node knows {})",
                req.epoch, known.epoch
            ))
        } else if !self
            .cfg
            .member(&req.candidate)
            .is_some_and(|m| self.cfg.promotable(m))
        {
            Some(format!(
                "{} may not be promoted automatically",
                req.candidate
            ))
        } else if known.primary == self.name() {
            Some("this node is the primary".into())
        } else if f.started.elapsed() < timeout {
            Some("this node started too recently to judge".into())
        } else if f.no_vote_until.is_some_and(|u| now < u) {
            Some(format!(
                "promised the primary {} a lease {:.1} s ago",
                known.primary,
                (timeout - f.no_vote_until.map(|u| u - now).unwrap_or_default()).as_secs_f64()
            ))
        } else if f.primary_seen.is_some_and(|s| s.elapsed() < timeout) {
            Some(format!(
                "this node saw the primary {:.1} s ago",
                f.primary_seen
                    .map(|s| s.elapsed().as_secs_f64())
                    .unwrap_or_default()
            ))
        } else if let Some((epoch, candidate, until)) = &f.vote {
            if *epoch >= req.epoch && candidate != &req.candidate && now < *until {
                Some(format!("already voted for {candidate} at epoch {epoch}"))
            } else {
                None
            }
        } else {
            None
        };
        match refusal {
            Some(r) => answer.reason = Some(r),
            None => {
                f.vote = Some((req.epoch, req.candidate.clone(), now + timeout));
                answer.granted = true;
            }
        }
        answer
    }

    // ---- the rounds -------------------------------------------------------

    /// One round; returns how long to sleep before the next.
    pub async fn failover_round(&self) -> Duration {
        let interval = self.tuning().probe_interval();
        self.follow_key().await;
        if let Some(c) = self.consensus() {
            c.keep_members(&self.cfg).await;
            c.keep_timing_hint();
        }
        let known = self.known();
        if known.primary == self.name() {
            self.primary().failover_round(&known).await;
            // Wake at the lease deadline, not a probe interval after it.
            let until = lock(&self.failover).lease.until;
            match until {
                Some(u) if u > Instant::now() => interval
                    .min(u.saturating_duration_since(Instant::now()) + Duration::from_millis(1)),
                _ => interval,
            }
        } else {
            self.standby().failover_round(&known).await;
            interval
        }
    }

    /// Committed state outranks anything a peer says: a newer epoch in the
    /// leader key is adopted at once, and a primary that does not hold the
    /// key stops being writable at once, whether or not the new primary is
    /// reachable (#15 finding 2).
    async fn follow_key(&self) {
        let Some(c) = self.consensus() else { return };
        let key = c.view().leader;
        let known = self.known();
        match key_duty(key.as_ref(), self.name(), &known, |m| {
            self.cfg.member(m).is_some()
        }) {
            KeyDuty::Nothing => return,
            KeyDuty::Resume { epoch } => {
                self.resume_promotion(epoch, &known).await;
                return;
            }
            KeyDuty::StepDown { holder, epoch } => {
                self.step_down(&holder, epoch, "the committed leader key")
                    .await;
                return;
            }
            KeyDuty::Confirm { .. } => {}
        }
        // This node's record names it primary at an epoch the committed
        // key does not back (another member holds the key at the same or
        // an older epoch): a restored or edited state file, never an
        // epoch a majority chose. Confirmed through the log first (this
        // member's copy may lag), then replaced by the committed key.
        match c.committed_key(self.tuning().probe_interval()).await {
            Ok(Some(k)) if k.member != self.name() && self.cfg.member(&k.member).is_some() => {
                let epoch = i64::try_from(k.epoch).unwrap_or(i64::MAX);
                if epoch > known.epoch {
                    self.step_down(&k.member, epoch, "the committed leader key")
                        .await;
                    return;
                }
                let record = EpochRecord {
                    epoch,
                    primary: k.member.clone(),
                    changed_at: unix_now(),
                };
                if let Err(e) = self.replace_with_committed(&record) {
                    tracing::error!(error = %e, "cannot replace this node's epoch record");
                    return;
                }
                self.event(
                    "record_replaced",
                    json!({
                        "record": { "epoch": known.epoch, "primary": known.primary },
                        "committed": { "epoch": epoch, "primary": k.member },
                    }),
                )
                .await;
                // Still writable? Then it stops now, as for any primary the
                // committed key has replaced.
                lock(&self.failover).lease.lose();
                if let Ok(_idle) = self.op_lock.try_lock() {
                    if self.local_writable().await {
                        self.primary()
                            .fence_now(&format!(
                                "{} holds the committed leader key at epoch {epoch}",
                                k.member
                            ))
                            .await;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not confirm the committed leader key"),
        }
    }

    /// The committed key names this node at an epoch its record does not
    /// show: it won a promotion (or was handed the key) and stopped before
    /// storing the epoch, a crash between the two. The fleet chose it by a
    /// committed write, and nobody else can take the key from a holder
    /// that has not named a sync standby yet, so it finishes: the record
    /// first, then the primary's duties promote the server (after
    /// confirming the key through the log).
    async fn resume_promotion(&self, epoch: i64, known: &EpochRecord) {
        let behind = epoch > known.epoch || (epoch == known.epoch && known.primary != self.name());
        if !behind {
            return;
        }
        let record = EpochRecord {
            epoch,
            primary: self.name().to_string(),
            changed_at: unix_now(),
        };
        let stored = if epoch > known.epoch {
            self.adopt(&record).map(|_| ())
        } else {
            self.replace_with_committed(&record)
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot store the epoch of the key this node holds");
            return;
        }
        tracing::warn!(
            epoch,
            record = known.epoch,
            "the committed leader key names this node: finishing its promotion"
        );
        self.event(
            "promotion_resumed",
            json!({ "epoch": epoch, "record": { "epoch": known.epoch, "primary": known.primary } }),
        )
        .await;
    }

    /// Whether the local server answers as a writable primary now.
    async fn local_writable(&self) -> bool {
        let Ok(Ok(st)) = tokio::time::timeout(self.tuning().probe_interval(), async {
            let c = self.local().await?;
            Ok::<_, Failure>(probe::server_state(&c).await?)
        })
        .await
        else {
            return false;
        };
        !st.in_recovery
    }

    /// `holder` was made primary at `epoch` (committed): adopt it, and if
    /// this node is still the primary, stop being writable at once. The
    /// stop is left to the reconcile pass when an operation of this node's
    /// own holds the server (a switchover away from it has stopped the
    /// server already; a reconcile pass that started it as a standby must
    /// not see it stopped again): the lease is gone meanwhile, so the
    /// server is read-only, and the pass rejoins a superseded server.
    async fn step_down(&self, holder: &str, epoch: i64, source: &str) {
        let was_primary = self.known().primary == self.name();
        if self.cfg.member(holder).is_some() {
            if let Err(e) = self.adopt(&EpochRecord {
                epoch,
                primary: holder.to_string(),
                changed_at: unix_now(),
            }) {
                tracing::error!(error = %e, "cannot adopt the committed leader key");
            }
        }
        if !was_primary {
            return;
        }
        lock(&self.failover).lease.lose();
        let Ok(_idle) = self.op_lock.try_lock() else {
            return;
        };
        self.primary()
            .fence_now(&format!("{holder} is primary at epoch {epoch} ({source})"))
            .await;
    }

    /// Is the primary's server up and running as a primary, seen from
    /// here? Bounded by the probe interval; no answer is `false`.
    pub(crate) async fn probe_primary(&self, primary: &Member) -> bool {
        self.primary_answer(primary).await == Some(true)
    }

    /// What `m`'s server says: `Some(true)` running as a primary,
    /// `Some(false)` in recovery, `None` no answer within the probe
    /// interval (or no session).
    pub(crate) async fn primary_answer(&self, m: &Member) -> Option<bool> {
        let pg = &self.cfg.postgres;
        let mut c = tokio_postgres::Config::new();
        c.host(&m.host)
            .port(m.port)
            .user(&pg.replication_user)
            .password(pg.replication_password.expose())
            .dbname("postgres")
            .application_name("repl-manager-probe")
            .connect_timeout(self.tuning().probe_interval());
        let attempt = async {
            let client = cluster_db::connect(
                &cluster_db::DbTarget::from_config(c),
                self.tuning().probe_interval(),
            )
            .await
            .ok()?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?;
            Some(!row.get::<_, bool>(0))
        };
        tokio::time::timeout(self.tuning().probe_interval(), attempt)
            .await
            .ok()
            .flatten()
    }

    /// A step of a promotion or switchover where the test suite injects a
    /// fault (`failover.stall_at`, then `failover.crash_at`).
    pub(crate) async fn fault_point(&self, at: CrashPoint) {
        if self.cfg.failover.stall_at == Some(at) {
            let t = self.tuning();
            let stall = t.probe_interval() * 3 + t.loop_interval();
            tracing::warn!(
                step = at.name(),
                secs = stall.as_secs_f64(),
                "failover.stall_at: waiting at this step (fault injection)"
            );
            tokio::time::sleep(stall).await;
        }
        self.crash_point(at);
    }

    /// `failover.crash_at`: aborts here, once, as a host that dies at this
    /// step would stop (the test suite's crash-at-every-step faults).
    fn crash_point(&self, at: CrashPoint) {
        if self.cfg.failover.crash_at != Some(at) {
            return;
        }
        let marker = self
            .cfg
            .node
            .state_file
            .with_extension(format!("crashed-{}", at.name()));
        if marker.exists() {
            return;
        }
        if let Err(e) = std::fs::write(&marker, b"") {
            tracing::error!(error = %e, marker = %marker.display(), "failover.crash_at: no marker, not aborting");
            return;
        }
        tracing::error!(
            step = at.name(),
            "failover.crash_at: aborting at this step (fault injection)"
        );
        std::process::abort();
    }

    /// Refuses a promotion that could lose an acknowledged write (the
    /// decision is [`data_safety`]).
    pub fn check_data_safety(
        &self,
        mine: Lsn,
        seen_ago: Duration,
        answers: &[VoteAnswer],
    ) -> Result<(), Failure> {
        let own = lock(&self.failover).report_view();
        let reports: Vec<(String, ReportView)> = answers
            .iter()
            .filter_map(|a| a.report.clone().map(|r| (a.voter.clone(), r)))
            .chain(own.map(|r| (self.name().to_string(), r)))
            .collect();
        let known = self.known();
        // Who the primary could have made its synchronous standby: the
        // backup and the lead, but never itself.
        let candidates = self
            .cfg
            .members
            .iter()
            .filter(|m| {
                m.name.as_str() != known.primary
                    && matches!(m.role, cluster_db::Role::Backup | cluster_db::Role::Lead)
            })
            .count();
        let others_seen: Vec<f64> = answers
            .iter()
            .filter_map(|a| a.primary_seen_ago_secs)
            .collect();
        let t = self.tuning();
        data_safety(&SafetyInputs {
            me: self.name(),
            strict: t.strict(),
            candidates,
            mine,
            seen_ago,
            reports: &reports,
            others_seen: &others_seen,
            window_secs: t.values.sync_degrade_after_secs as f64 - 2.0 * t.probe_interval_secs(),
            max_lag_bytes: t.max_lag_bytes(),
        })
        .map_err(Failure::Failed)
    }

    /// What promoting this node now would lose, from the peers' reports.
    pub async fn loss_estimate(&self) -> serde_json::Value {
        let local = match self.local().await {
            Ok(c) => probe::server_state(&c).await.ok(),
            Err(_) => None,
        };
        let mine = local.and_then(|s| s.receive_lsn.or(s.replay_lsn));
        let peers = self.peers().await;
        let mut reports: Vec<(String, ReportView)> = peers
            .iter()
            .filter_map(|(m, v)| {
                v.as_ref()
                    .ok()
                    .and_then(|s| s.failover.as_ref())
                    .and_then(|f| f.report.clone())
                    .map(|r| (m.name.to_string(), r))
            })
            .collect();
        let own = lock(&self.failover).report_view();
        if let Some(r) = own {
            reports.push((self.name().to_string(), r));
        }
        let last = reports.iter().filter_map(|(_, r)| r.lsn).max();
        let degraded: Vec<String> = reports
            .iter()
            .filter(|(_, r)| r.sync_mode == "async")
            .map(|(n, r)| format!("{n} ({:.0} s ago)", r.age_secs))
            .collect();
        json!({
            "this_node_lsn": mine,
            "primary_last_reported_lsn": last,
            "would_lose_bytes": match (mine, last) {
                (Some(m), Some(l)) => Some(m.bytes_until(l)),
                _ => None,
            },
            "primary_reported_async_to": degraded,
        })
    }
}

/// The primary's side of failover: renewing the leader key, fencing.
impl Primary<'_> {
    /// Renews the leader key (and, without one, the lease by a majority
    /// of `/lease` answers) while the local server works and can commit;
    /// fences once the lease ran out; steps down for a newer holder.
    pub(crate) async fn failover_round(&self, known: &EpochRecord) {
        if !self.m.cfg.automatic_failover() {
            return;
        }
        // One reading of the timing for the whole round: the TTL written
        // into the key is the one the lease below is counted with.
        let t = self.m.tuning();
        let sent = Instant::now();
        let hard_fenced = self.m.hard_fenced();
        if hard_fenced {
            self.hold_fence().await;
        }
        // Renew only while our own server works (or is stopped on purpose):
        // a dead primary must let its lease lapse.
        let mut lsn = None;
        if !hard_fenced {
            let ok = tokio::time::timeout(t.probe_interval(), async {
                let c = self.m.local().await?;
                let st = probe::server_state(&c).await?;
                Ok::<_, Failure>(st)
            })
            .await;
            match ok {
                Ok(Ok(st)) if !st.in_recovery => lsn = st.current_lsn,
                _ => {
                    self.fence_if_expired().await;
                    return;
                }
            }
            // Reads answer; can it also commit? A stalled disk answers
            // reads from the cache and would keep the lease for good.
            let commits = self
                .m
                .primary()
                .check_commits(t.probe_interval(), t.timeout())
                .await;
            let hung = matches!(commits, Commits::Hung { .. });
            self.commit_trouble(commits).await;
            if hung {
                self.fence_if_expired().await;
                return;
            }
        }
        // The leader key first: a lease is extended only by a renewal that
        // committed (counted from `sent`, before it was proposed).
        if let Some(c) = self.m.consensus() {
            // Tried until the lease runs out: a Raft leader lost meanwhile is
            // replaced inside it (consensus::settings), and the renewal then
            // commits through the new one instead of a round later.
            let left = lock(&self.m.failover).lease.left(Instant::now());
            match c.renew(known.epoch, left, t.timeout()).await {
                Claim::Held { epoch } => {
                    self.key_trouble(None);
                    c.seed_config().await;
                    if epoch > known.epoch {
                        let _ = self.m.adopt(&EpochRecord {
                            epoch,
                            primary: self.m.name().to_string(),
                            changed_at: unix_now(),
                        });
                    }
                }
                Claim::Lost { holder, epoch } => {
                    tracing::warn!(%holder, epoch, "the leader key is held by another member");
                    self.m
                        .step_down(&holder, epoch, "the committed leader key")
                        .await;
                    return;
                }
                Claim::Unknown(why) => {
                    self.key_trouble(Some(why));
                    self.fence_if_expired().await;
                    return;
                }
            }
        }
        let known = &self.m.known();
        let sync = lock(&self.m.sync).view();
        let req = LeaseRequest {
            epoch: known.epoch,
            primary: self.m.name().to_string(),
            lsn,
            sync_mode: sync.mode.to_string(),
            sync_standby: sync.standby,
        };
        let body = serde_json::to_value(&req).unwrap_or_default();
        let http = sidecar_kit::http_client::HttpClient::new(t.probe_interval());
        let calls = self.m.cfg.others().map(|m| {
            let http = http.clone();
            let body = body.clone();
            let url = m.url("/lease");
            async move {
                let r = http
                    .send(Method::POST, &url, self.m.token(), Some(&body))
                    .await
                    .ok()
                    .filter(|r| r.status.is_success())
                    .and_then(|r| serde_json::from_slice::<LeaseAnswer>(&r.body).ok());
                r
            }
        });
        // Renew the moment a majority has granted, not when the slowest
        // member answers: with one member unreachable, waiting out its
        // timeout every round left the lease (which counts from `sent`)
        // lapsing for a moment before the renewal landed, and a reconcile
        // pass in that moment made the primary read-only and ended its
        // clients' sessions. The other answers are still collected (bounded
        // by the request timeout) to notice a newer epoch.
        let mut pending: futures::stream::FuturesUnordered<_> = calls.collect();
        let mut answers: Vec<LeaseAnswer> = Vec::new();
        let mut granted = 1;
        // (An opted-in two-node fleet needs only this node's own grant.)
        let mut renewed = granted >= self.m.cfg.majority();
        if renewed {
            self.renew_lease(sent, granted, t.lease()).await;
        }
        while let Some(answer) = futures::StreamExt::next(&mut pending).await {
            let Some(a) = answer else { continue };
            if a.granted {
                granted += 1;
            }
            answers.push(a);
            if !renewed && granted >= self.m.cfg.majority() {
                renewed = true;
                self.renew_lease(sent, granted, t.lease()).await;
            }
        }
        // A member that knows a newer epoch: this node is no longer primary.
        // Where the key is on Raft, this round's renewal committed: a
        // member's word to the contrary is not backed, and is ignored.
        if self.m.consensus().is_some() {
            if answers.iter().any(|a| a.epoch > known.epoch) {
                self.m
                    .metrics
                    .uncommitted_epochs
                    .with_label_values(&["lease_answer"])
                    .inc();
                tracing::warn!("a member answers with an epoch the committed leader key does not back: ignored");
            }
        } else if let Some(newer) = answers
            .iter()
            .filter(|a| a.epoch > known.epoch && self.m.cfg.member(&a.primary).is_some())
            .max_by_key(|a| a.epoch)
        {
            tracing::warn!(epoch = newer.epoch, primary = %newer.primary, "a member knows a newer primary");
            // The same step down as for the committed key: not while an
            // operation of this node's own (a switchover away from it)
            // holds the server.
            self.m
                .step_down(
                    &newer.primary,
                    newer.epoch,
                    "a member knows a newer primary",
                )
                .await;
            return;
        }
        if !renewed {
            self.fence_if_expired().await;
        }
    }

    /// A majority granted the lease requested at `sent`: it holds until
    /// `sent + lease` (counted from the request, so it ends before any
    /// member's promise does).
    async fn renew_lease(&self, sent: Instant, granted: usize, lease: Duration) {
        let was_fenced = {
            let mut f = lock(&self.m.failover);
            f.primary_seen = Some(sent);
            f.lease.renewed(sent, lease)
        };
        if was_fenced {
            tracing::warn!(granted, "a majority answers again: lifting the fence");
            self.m
                .event("unfenced", json!({ "granted": granted }))
                .await;
        }
    }

    async fn fence_if_expired(&self) {
        let paused = self.m.paused();
        if lock(&self.m.failover)
            .lease
            .fence_due(Instant::now(), paused)
        {
            self.fence_now("no majority of members answered within the lease")
                .await;
        }
    }

    /// Stops the server at once: a primary without a majority must not
    /// acknowledge another write. (Immediate shutdown: nothing is waited
    /// for; crash recovery runs on the next start.)
    async fn fence_now(&self, why: &str) {
        if !lock(&self.m.failover).lease.fence() {
            return;
        }
        tracing::error!(reason = why, "fencing: stopping PostgreSQL");
        let stopped = self.m.server.stop(crate::server::StopMode::Immediate).await;
        self.m.drop_local().await;
        let error = stopped.as_ref().err().map(ToString::to_string);
        if let Some(e) = &error {
            tracing::error!(error = %e, "fencing stop failed; it is tried again every round, and the server is kept read-only meanwhile");
        }
        self.m
            .metrics
            .operations
            .with_label_values(&["fence", if error.is_none() { "ok" } else { "failed" }])
            .inc();
        self.m
            .event(
                "fenced",
                json!({ "reason": why, "stopped": error.is_none(), "error": error }),
            )
            .await;
    }

    /// A fence holds only once the server is down. A stop that failed (the
    /// hold file's disk full, a supervisor that did not answer, `pg_ctl`
    /// timing out) is tried again every round until it holds; meanwhile the
    /// reconcile pass keeps the running server read-only with commits
    /// waiting for a standby that does not exist. (It used to be tried
    /// once: the fence flag stayed set and the server kept running.)
    async fn hold_fence(&self) {
        if self.m.paused() || !self.m.server.is_running().await {
            return;
        }
        tracing::error!("fenced, but PostgreSQL still runs: stopping it again");
        let stopped = self.m.server.stop(crate::server::StopMode::Immediate).await;
        self.m.drop_local().await;
        self.m
            .metrics
            .operations
            .with_label_values(&["fence", if stopped.is_ok() { "ok" } else { "failed" }])
            .inc();
        match stopped {
            Ok(()) => {
                tracing::warn!("the fence holds: PostgreSQL stopped");
                self.m.event("fence_held", json!({})).await;
            }
            Err(e) => tracing::error!(error = %e, "fencing stop failed again"),
        }
    }

    /// Logs (and, when they hang, records as an event) what the commit
    /// probe found, once per change.
    async fn commit_trouble(&self, commits: Commits) {
        let changed = {
            let mut f = lock(&self.m.failover);
            let now = match &commits {
                Commits::Work => None,
                Commits::Stalled { .. } => Some(false),
                Commits::Hung { .. } => Some(true),
            };
            std::mem::replace(&mut f.commits_hung, now) != now
        };
        if !changed {
            return;
        }
        match commits {
            // check_commits says so, with how long it took.
            Commits::Work => {}
            Commits::Stalled { for_secs, why } => {
                tracing::warn!(for_secs, reason = %why, "the local server's commits stall")
            }
            Commits::Hung { for_secs, why } => {
                tracing::error!(
                    for_secs,
                    reason = %why,
                    "the local server cannot commit: the lease is no longer renewed"
                );
                self.m
                    .event(
                        "commits_hung",
                        json!({ "for_secs": for_secs, "reason": why }),
                    )
                    .await;
            }
        }
    }

    /// Logs why the leader key could not be renewed, once per reason.
    fn key_trouble(&self, why: Option<String>) {
        let mut f = lock(&self.m.failover);
        if f.key_trouble != why {
            match &why {
                Some(w) => tracing::warn!(reason = %w, "the leader key was not renewed"),
                None if f.key_trouble.is_some() => {
                    tracing::info!("the leader key is renewed again")
                }
                None => {}
            }
            f.key_trouble = why;
        }
    }
}

/// The standby's side of failover: watching the primary, taking over.
impl Standby<'_> {
    /// Watches the primary's server; once it has been gone for the
    /// failover timeout (and this member may take over), tries to.
    async fn failover_round(&self, known: &EpochRecord) {
        if let Some(c) = self.m.consensus() {
            c.observe();
        }
        let Some(primary) = self.m.cfg.member(&known.primary).cloned() else {
            return;
        };
        if self.m.probe_primary(&primary).await {
            lock(&self.m.failover).primary_seen = Some(Instant::now());
            return;
        }
        if !self.m.cfg.automatic_failover()
            || self.m.paused()
            || !self.m.cfg.promotable(self.m.me())
        {
            return;
        }
        let timeout = self.m.tuning().timeout();
        let (seen_ago, promised) = {
            let f = lock(&self.m.failover);
            let seen_ago = f
                .primary_seen
                .map(|s| s.elapsed())
                .unwrap_or_else(|| f.started.elapsed());
            (
                seen_ago,
                f.no_vote_until.is_some_and(|u| Instant::now() < u),
            )
        };
        if !crate::rules::time_to_act(seen_ago, timeout, promised) {
            tracing::debug!(
                ?seen_ago,
                promised,
                "primary unreachable; not yet time to act"
            );
            return;
        }
        // Only one attempt at a time; reconciliation keeps off the server.
        let Ok(_guard) =
            tokio::time::timeout(self.m.tuning().probe_interval(), self.m.op_lock.lock()).await
        else {
            tracing::debug!("failover attempt deferred: another operation holds the lock");
            return;
        };
        let outcome = self.try_failover(known, &primary, seen_ago).await;
        let reason = match &outcome {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        let report = {
            let mut f = lock(&self.m.failover);
            f.last_attempt = reason.clone();
            let new = reason.is_some() && f.last_event_reason != reason;
            if new {
                f.last_event_reason = reason.clone();
            }
            new
        };
        if let (true, Some(r)) = (report, reason) {
            tracing::warn!(reason = %r, "not promoting");
        }
        self.m.set_activity(None);
    }

    async fn try_failover(
        &self,
        known: &EpochRecord,
        primary: &Member,
        seen_ago: Duration,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let epoch = known.epoch + 1;
        // This node must be a running standby to be promoted.
        let local = self.m.local().await?;
        let st = probe::server_state(&local).await?;
        if !st.in_recovery {
            return Err(Failure::Failed("this node is not a standby".into()));
        }
        let mine = st.receive_lsn.or(st.replay_lsn).unwrap_or_default();
        // Only the standby the committed sync key names takes over
        // automatically (the key's compare-and-set checks it again, in
        // log order): said here before any vote is asked.
        if let Some(view) = self.m.consensus().map(|c| c.view()) {
            if !view.is_sync_standby(self.m.name()) {
                return Err(Failure::Failed(crate::consensus::not_in_sync_key(&view)));
            }
        }

        // Ask for votes.
        let body = serde_json::to_value(VoteRequest {
            candidate: self.m.name().to_string(),
            epoch,
        })
        .unwrap_or_default();
        let http = sidecar_kit::http_client::HttpClient::new(self.m.tuning().probe_interval());
        let calls = self.m.cfg.others().map(|m| {
            let http = http.clone();
            let body = body.clone();
            let url = m.url("/vote");
            async move {
                http.send(Method::POST, &url, self.m.token(), Some(&body))
                    .await
                    .ok()
                    .filter(|r| r.status.is_success())
                    .and_then(|r| serde_json::from_slice::<VoteAnswer>(&r.body).ok())
            }
        });
        let answers: Vec<VoteAnswer> = futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        let yes = 1 + answers.iter().filter(|a| a.granted).count();
        if yes < self.m.cfg.majority() {
            let why: Vec<String> = answers
                .iter()
                .filter(|a| !a.granted)
                .map(|a| format!("{}: {}", a.voter, a.reason.clone().unwrap_or_default()))
                .collect();
            return Err(Failure::Failed(format!(
                "{yes} of {} members agree the primary {} is gone (need {}); {}",
                self.m.cfg.members.len(),
                primary.name,
                self.m.cfg.majority(),
                why.join("; ")
            )));
        }
        self.m.check_data_safety(mine, seen_ago, &answers)?;
        self.m.fault_point(CrashPoint::VotesGranted).await;

        // The leader key, by compare-and-set on a revision that stood for
        // the whole failover timeout: committed by a majority before
        // anything is promoted, so no later majority can forget it.
        let epoch = match self.m.consensus() {
            Some(c) => c
                .acquire(epoch, self.m.tuning().timeout())
                .await
                .map_err(|e| Failure::Failed(format!("the leader key: {e}")))?,
            None => epoch,
        };
        self.m.fault_point(CrashPoint::KeyTaken).await;

        // Promote: durable epoch first, then the server.
        self.m.set_activity(Some("failover: promoting"));
        self.m.adopt(&EpochRecord {
            epoch,
            primary: self.m.name().to_string(),
            changed_at: unix_now(),
        })?;
        self.m.fault_point(CrashPoint::EpochStored).await;
        self.m.reset_failover_roles();
        self.m.primary().promote_server().await?;
        self.m.fault_point(CrashPoint::Promoted).await;
        // A lease at once, then the primary's duties (slots for everyone).
        self.m.primary().failover_round(&self.m.known()).await;
        if let Err(e) = self.m.primary().act().await {
            tracing::warn!(error = %e, "after promotion");
        }
        self.m
            .metrics
            .operations
            .with_label_values(&["failover", "ok"])
            .inc();
        let voters: Vec<&str> = answers
            .iter()
            .filter(|a| a.granted)
            .map(|a| a.voter.as_str())
            .collect();
        self.m
            .event(
                "failover",
                json!({
                    "from": primary.name, "to": self.m.name(), "epoch": epoch,
                    "primary_lost_secs": seen_ago.as_secs_f64() + started.elapsed().as_secs_f64(),
                    "promote_secs": started.elapsed().as_secs_f64(),
                    "voters": voters, "position": mine,
                }),
            )
            .await;
        tracing::warn!(epoch, from = %primary.name, "failover: this node is the primary");
        Ok(())
    }
}

/// What a candidate knows when it decides whether promoting itself could
/// lose an acknowledged write.
#[derive(Debug)]
pub struct SafetyInputs<'a> {
    /// The candidate.
    pub me: &'a str,
    /// `replication.synchronous_strict`: the primary never degrades.
    pub strict: bool,
    /// How many members the primary could make its synchronous standby.
    pub candidates: usize,
    /// The candidate's own WAL position.
    pub mine: Lsn,
    /// How long ago the candidate last heard the primary.
    pub seen_ago: Duration,
    /// The primary's last reports, each with the member that heard it.
    pub reports: &'a [(String, ReportView)],
    /// How long ago each voter last heard the primary, in seconds.
    pub others_seen: &'a [f64],
    /// `sync_degrade_after_secs - 2 × probe_interval`.
    pub window_secs: f64,
    /// `max_lag_on_failover_bytes`.
    pub max_lag_bytes: u64,
}

/// Refuses (with the reason) a promotion that could lose an acknowledged
/// write:
/// 1. the freshest report anyone has of the primary says anything but
///    "sync with this node as the standby" (or "blocked": nothing was
///    acknowledged) — in strict mode too, where the primary cannot degrade
///    but can name another candidate its standby (a compute node promoted
///    by hand has the backup and the lead);
/// 2. this node lost the primary long enough before the last member to see
///    it for the primary to have degraded (or, strict with more than one
///    candidate, moved its standby) unheard;
/// 3. this node is further behind the primary's last reported position
///    than `max_lag_bytes`.
pub fn data_safety(i: &SafetyInputs<'_>) -> Result<(), String> {
    let freshest = i
        .reports
        .iter()
        .min_by(|a, b| a.1.age_secs.total_cmp(&b.1.age_secs));
    if let Some((who, r)) = freshest {
        let in_sync = r.sync_mode == SyncMode::Blocked
            || (r.sync_mode == SyncMode::Sync && r.sync_standby.as_deref() == Some(i.me));
        if !in_sync {
            return Err(format!(
                "the primary last reported (to {who}, {:.1} s ago) synchronous mode {:?} with standby {:?}: \
                 it may have acknowledged writes this node lacks; promote by hand with force=true if you accept that",
                r.age_secs,
                r.sync_mode.as_str(),
                r.sync_standby
            ));
        }
    }
    // In strict mode with one candidate the primary could acknowledge
    // nothing without this node: losing sight of it early loses nothing.
    if !i.strict || i.candidates > 1 {
        let last_seen_by_others = i.others_seen.iter().copied().fold(f64::INFINITY, f64::min);
        let gap = i.seen_ago.as_secs_f64() - last_seen_by_others;
        if last_seen_by_others.is_finite() && gap > i.window_secs.max(0.0) {
            return Err(format!(
                "this node lost the primary {gap:.1} s before the last member to see it: \
                 long enough for the primary to degrade to asynchronous replication (or name another \
                 synchronous standby) and acknowledge writes this node lacks; promote by hand with \
                 force=true if you accept that"
            ));
        }
    }
    let last_lsn = i.reports.iter().filter_map(|(_, r)| r.lsn).max();
    if let Some(last) = last_lsn {
        let behind = i.mine.bytes_until(last);
        if behind > i.max_lag_bytes {
            return Err(format!(
                "this node is {behind} bytes behind the primary's last reported position {last} \
                 (max_lag_on_failover_bytes {})",
                i.max_lag_bytes
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(mode: SyncMode, standby: Option<&str>, age: f64) -> ReportView {
        ReportView {
            epoch: 1,
            lsn: Some(Lsn(100)),
            sync_mode: mode,
            sync_standby: standby.map(str::to_string),
            age_secs: age,
        }
    }

    fn inputs<'a>(
        strict: bool,
        candidates: usize,
        reports: &'a [(String, ReportView)],
        others_seen: &'a [f64],
        seen_ago: f64,
    ) -> SafetyInputs<'a> {
        SafetyInputs {
            me: "backup",
            strict,
            candidates,
            mine: Lsn(100),
            seen_ago: Duration::from_secs_f64(seen_ago),
            reports,
            others_seen,
            window_secs: 4.0,
            max_lag_bytes: 0,
        }
    }

    #[test]
    fn the_freshest_report_must_name_this_node_in_either_mode() {
        let stale_mine = (
            "backup".to_string(),
            report(SyncMode::Sync, Some("backup"), 9.0),
        );
        // A compute primary (promoted by hand) made the lead its standby;
        // c2 heard that last. Strict mode used to skip this check.
        let fresher = ("c2".to_string(), report(SyncMode::Sync, Some("lead"), 1.0));
        let reports = [stale_mine.clone(), fresher];
        for strict in [false, true] {
            let e = data_safety(&inputs(strict, 2, &reports, &[1.0], 1.5)).unwrap_err();
            assert!(e.contains("standby Some(\"lead\")"), "{e}");
        }
        let degraded = [
            stale_mine.clone(),
            ("c2".into(), report(SyncMode::Async, None, 1.0)),
        ];
        assert!(data_safety(&inputs(false, 1, &degraded, &[1.0], 1.5)).is_err());
        let blocked = [
            stale_mine,
            ("c2".into(), report(SyncMode::Blocked, None, 1.0)),
        ];
        assert!(data_safety(&inputs(true, 1, &blocked, &[1.0], 1.5)).is_ok());
    }

    #[test]
    fn losing_sight_early_matters_unless_strict_with_one_candidate() {
        let reports = [(
            "backup".to_string(),
            report(SyncMode::Sync, Some("backup"), 9.0),
        )];
        // This node lost the primary 9 s before the last voter did.
        let e = data_safety(&inputs(false, 1, &reports, &[1.0], 10.0)).unwrap_err();
        assert!(e.contains("lost the primary"), "{e}");
        // Strict, with the backup the only candidate: the primary could
        // acknowledge nothing without it.
        assert!(data_safety(&inputs(true, 1, &reports, &[1.0], 10.0)).is_ok());
        // Strict, with another candidate it could have moved to.
        assert!(data_safety(&inputs(true, 2, &reports, &[1.0], 10.0)).is_err());
        // Within the window, either way.
        assert!(data_safety(&inputs(false, 1, &reports, &[7.0], 10.0)).is_ok());
    }

    #[test]
    fn a_node_behind_the_last_reported_position_is_refused() {
        let mut r = report(SyncMode::Sync, Some("backup"), 0.5);
        r.lsn = Some(Lsn(200));
        let reports = [("c1".to_string(), r)];
        let e = data_safety(&inputs(false, 1, &reports, &[0.5], 0.5)).unwrap_err();
        assert!(e.contains("100 bytes behind"), "{e}");
    }
}

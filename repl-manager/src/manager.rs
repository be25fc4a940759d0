//! The manager: what this node knows (epoch, primary), its connections, and
//! the observation of the local server that every decision starts from.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_db::DbTarget;
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::telemetry::unix_now;
use sidecar_kit::Secret;
use tokio_postgres::Client;

use crate::config::Config;
use crate::member::Member;
use crate::metrics::ReplMetrics;
use crate::probe::{self, ServerState};
use crate::server::LocalServer;
use crate::state::{EpochRecord, StateFile};
use crate::sync::SyncTracker;

pub use aurora_api::repl::{NodeState, NodeStatus, SyncView};

/// A peer's answer, or why there was none.
pub type PeerView = (Member, Result<NodeStatus, String>);

pub struct Manager {
    pub cfg: Config,
    pub server: LocalServer,
    pub state_file: StateFile,
    pub http: HttpClient,
    pub metrics: ReplMetrics,
    /// Serialises reconciliation and operator operations: only one thing
    /// at a time touches the server.
    pub op_lock: tokio::sync::Mutex<()>,
    local: tokio::sync::Mutex<Option<Arc<Client>>>,
    upstream: tokio::sync::Mutex<Option<Arc<Client>>>,
    known: Mutex<EpochRecord>,
    epoch: AtomicI64,
    pub sync: Mutex<SyncTracker>,
    pub failover: Mutex<crate::failover::FailoverState>,
    /// One writer of the witness file at a time (lease grants can overlap).
    pub witness_writing: Mutex<()>,
    /// What the primary's and the standby's duties keep between passes
    /// (primary.rs, standby.rs).
    pub primary_state: crate::primary::PrimaryState,
    pub standby_state: crate::standby::StandbyState,
    pub last_error: Mutex<Option<String>>,
    pub activity: Mutex<Option<String>>,
    /// Unix time of the last completed reconciliation (liveness).
    pub last_tick: Mutex<f64>,
    /// The last observation, for the synchronous `/health`.
    pub last_state: Mutex<NodeState>,
    /// The leader key on the fleet's Raft group: set at start in a fleet
    /// with automatic failover.
    pub consensus: std::sync::OnceLock<crate::consensus::Consensus>,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Failed(String),
}

impl From<crate::server::ServerError> for Failure {
    fn from(e: crate::server::ServerError) -> Self {
        Failure::Failed(e.to_string())
    }
}
impl From<crate::probe::ProbeError> for Failure {
    fn from(e: crate::probe::ProbeError) -> Self {
        Failure::Failed(format!("querying the local server: {e}"))
    }
}
impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Failed(format!("PostgreSQL: {}", db_error_text(&e)))
    }
}
impl From<cluster_db::DbError> for Failure {
    fn from(e: cluster_db::DbError) -> Self {
        Failure::Failed(e.to_string())
    }
}
impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        Failure::Failed(e.to_string())
    }
}

/// The server's message for a database error (tokio-postgres' Display
/// says only "db error").
pub fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

impl Manager {
    pub fn new(cfg: Config, metrics: ReplMetrics) -> anyhow::Result<Self> {
        let server = LocalServer::new(&cfg.postgres)?;
        let state_file = StateFile::new(&cfg.node.state_file);
        // A node that never knew an epoch starts from the configured
        // topology: the lead is primary at epoch 0.
        let known = state_file.load()?.unwrap_or_else(|| EpochRecord {
            epoch: 0,
            primary: cfg.lead().name.to_string(),
            changed_at: 0.0,
        });
        metrics.epoch.set(known.epoch);
        let http = HttpClient::new(Duration::from_secs(cfg.replication.peer_timeout_secs));
        let strict = cfg.replication.synchronous_strict;
        Ok(Self {
            epoch: AtomicI64::new(known.epoch),
            known: Mutex::new(known),
            server,
            state_file,
            http,
            metrics,
            op_lock: tokio::sync::Mutex::new(()),
            local: tokio::sync::Mutex::new(None),
            upstream: tokio::sync::Mutex::new(None),
            sync: Mutex::new(SyncTracker::new(strict, crate::now::Now::read())),
            failover: Mutex::new(Default::default()),
            witness_writing: Mutex::new(()),
            primary_state: Default::default(),
            standby_state: Default::default(),
            last_error: Mutex::new(None),
            activity: Mutex::new(None),
            last_tick: Mutex::new(unix_now()),
            last_state: Mutex::new(NodeState::Starting),
            consensus: std::sync::OnceLock::new(),
            cfg,
        })
    }

    /// `GET /history`: the key's changes of hands from the fleet's Raft
    /// group (where the key is kept), and the local server's timelines.
    pub async fn history(&self) -> aurora_api::repl::History {
        let mut h = self
            .consensus()
            .map(crate::consensus::Consensus::history)
            .unwrap_or_default();
        let timelines = tokio::time::timeout(Duration::from_secs(5), async {
            let c = self.local().await?;
            Ok::<_, Failure>(probe::timeline_history(&c).await?)
        })
        .await;
        match timelines {
            Ok(Ok(t)) => h.timelines = t,
            Ok(Err(e)) => tracing::debug!(error = %e, "no timeline history for /history"),
            Err(_) => tracing::debug!(
                "no timeline history for /history: the server did not answer in 5 s"
            ),
        }
        h
    }

    /// The leader key's Raft group, in a fleet with automatic failover.
    pub fn consensus(&self) -> Option<&crate::consensus::Consensus> {
        self.consensus.get()
    }

    /// The timing and sync policy in force on this member: the fleet's
    /// committed config, else this member's file (tuning.rs). Read afresh
    /// by every round, so a committed change applies from the next one.
    pub fn tuning(&self) -> crate::tuning::Tuning {
        match self.consensus() {
            Some(c) => c.tuning(),
            None => crate::tuning::Tuning::file(&self.cfg),
        }
    }

    pub fn me(&self) -> &Member {
        self.cfg.me()
    }

    pub fn name(&self) -> &str {
        &self.cfg.node.name
    }

    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn known(&self) -> EpochRecord {
        lock(&self.known).clone()
    }

    /// Adopts `record` when its epoch is higher than what this node knows
    /// (or equal with a different primary only if `force`), storing it
    /// durably first.
    pub fn adopt(&self, record: &EpochRecord) -> Result<bool, Failure> {
        let current = self.known();
        if record.epoch < current.epoch
            || (record.epoch == current.epoch && record.primary == current.primary)
        {
            return Ok(false);
        }
        if record.epoch == current.epoch && current.epoch > 0 {
            // Two primaries claimed at one epoch: never pick one silently.
            return Err(Failure::Failed(format!(
                "epoch {} names both {} and {} as primary; refusing to choose",
                record.epoch, current.primary, record.primary
            )));
        }
        self.state_file.store(record)?;
        let primary_changed = current.primary != record.primary;
        *lock(&self.known) = record.clone();
        if primary_changed {
            // Leases and sightings belong to the old primary.
            self.reset_failover_roles();
        }
        self.epoch.store(record.epoch, Ordering::SeqCst);
        self.metrics.epoch.set(record.epoch);
        tracing::info!(epoch = record.epoch, primary = %record.primary, "adopted cluster epoch");
        Ok(true)
    }

    /// Replaces this node's epoch record with what the fleet committed,
    /// even when that is an older epoch: the record named an epoch no
    /// majority ever committed (a restored or edited state file).
    pub fn replace_with_committed(&self, record: &EpochRecord) -> Result<(), Failure> {
        let current = self.known();
        tracing::error!(
            record_epoch = current.epoch,
            record_primary = %current.primary,
            committed_epoch = record.epoch,
            committed_primary = %record.primary,
            "this node's epoch record is not what the fleet committed: following the committed leader key"
        );
        self.state_file.replace(record)?;
        *lock(&self.known) = record.clone();
        self.reset_failover_roles();
        self.epoch.store(record.epoch, Ordering::SeqCst);
        self.metrics.epoch.set(record.epoch);
        self.metrics
            .uncommitted_epochs
            .with_label_values(&["own_record"])
            .inc();
        Ok(())
    }

    /// A new epoch with this node or another as primary, stored durably
    /// before anything acts on it.
    pub fn bump_epoch(&self, primary: &str) -> Result<EpochRecord, Failure> {
        let record = EpochRecord {
            epoch: self.epoch() + 1,
            primary: primary.to_string(),
            changed_at: unix_now(),
        };
        self.adopt(&record)?;
        Ok(record)
    }

    pub fn set_activity(&self, what: Option<&str>) {
        *lock(&self.activity) = what.map(str::to_string);
    }

    /// The local server, as its superuser. Every statement repl-manager
    /// runs commits locally (`synchronous_commit = local`): its bookkeeping
    /// must not block on a missing standby in strict mode.
    pub async fn local(&self) -> Result<Arc<Client>, Failure> {
        let mut slot = self.local.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let client = Arc::new(self.superuser_session("repl-manager").await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// A new connection to the local server as its superuser. Our own
    /// statements commit locally (bookkeeping must not block on a missing
    /// synchronous standby in strict mode) and are read-write even while
    /// the server is fenced (read-only by default for clients).
    pub async fn superuser_session(&self, application: &str) -> Result<Client, Failure> {
        let pg = &self.cfg.postgres;
        let timeout = Duration::from_secs(pg.connect_timeout_secs);
        let mut c = tokio_postgres::Config::new();
        c.host(&pg.host)
            .port(pg.port)
            .user(&pg.superuser)
            .dbname("postgres")
            .application_name(application)
            .connect_timeout(timeout);
        if let Some(p) = &pg.superuser_password {
            c.password(p.expose());
        }
        let client = cluster_db::connect(&DbTarget::from_config(c), timeout).await?;
        client
            .batch_execute(
                "SET synchronous_commit = local; SET default_transaction_read_only = off",
            )
            .await?;
        Ok(client)
    }

    pub async fn drop_local(&self) {
        *self.local.lock().await = None;
    }

    /// A connection to the writable primary as the replication user,
    /// trying the known primary first.
    pub async fn upstream(&self) -> Result<Arc<Client>, Failure> {
        let mut slot = self.upstream.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let hosts: Vec<(String, u16)> = self
            .upstreams()
            .iter()
            .map(|m| (m.host.clone(), m.port))
            .collect();
        if hosts.is_empty() {
            return Err(Failure::Failed("no upstream members configured".into()));
        }
        let pg = &self.cfg.postgres;
        let timeout = Duration::from_secs(pg.connect_timeout_secs);
        let target = cluster_db::connect::write_target(
            &hosts,
            &pg.replication_user,
            Some(pg.replication_password.expose()),
            "postgres",
            timeout,
        );
        let client = cluster_db::connect(&target, timeout * hosts.len() as u32).await?;
        // Bookkeeping through the primary (events) must never wait for a
        // synchronous standby that is gone, or for the fence's.
        client
            .batch_execute("SET synchronous_commit = local")
            .await?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    pub async fn drop_upstream(&self) {
        *self.upstream.lock().await = None;
    }

    /// The upstream connection, checked with a round trip bounded by
    /// `postgres.connect_timeout_secs`. A cached connection to a primary
    /// that vanished behind a partition would otherwise hang a query until
    /// TCP gives up (minutes); every remote step goes through this.
    pub async fn live_upstream(&self) -> Result<Arc<Client>, Failure> {
        let limit = Duration::from_secs(self.cfg.postgres.connect_timeout_secs);
        let client = match tokio::time::timeout(limit * 3, self.upstream()).await {
            Ok(c) => c?,
            Err(_) => return Err(Failure::Failed("the primary did not answer in time".into())),
        };
        match tokio::time::timeout(limit, client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(e)) => {
                self.drop_upstream().await;
                Err(e.into())
            }
            Err(_) => {
                self.drop_upstream().await;
                Err(Failure::Failed(format!(
                    "the primary did not answer within {} s",
                    limit.as_secs()
                )))
            }
        }
    }

    /// Where a standby streams from, in order: the known primary, then the
    /// lead and the backup (whichever accepts writes wins), then the other
    /// promotable members. Never this node.
    pub fn upstreams(&self) -> Vec<Member> {
        let known = self.known();
        let mut out: Vec<Member> = Vec::new();
        let mut push = |m: &Member| {
            if m.name.as_str() != self.name() && !out.iter().any(|o| o.name == m.name) {
                out.push(m.clone());
            }
        };
        if let Some(p) = self.cfg.member(&known.primary) {
            push(p);
        }
        for role in [cluster_db::Role::Lead, cluster_db::Role::Backup] {
            for m in self.cfg.members.iter().filter(|m| m.role == role) {
                push(m);
            }
        }
        out
    }

    /// Asks every other member's repl-manager for its status, concurrently.
    pub async fn peers(&self) -> Vec<PeerView> {
        let calls = self.cfg.others().map(|m| {
            let http = self.http.clone();
            let m = m.clone();
            async move {
                let url = m.url("/status");
                let r = http
                    .get_json::<NodeStatus>(&url)
                    .await
                    .map_err(|e| e.to_string());
                (m, r)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Learns the highest epoch among this node and its peers. Where the
    /// leader key is kept on the fleet's Raft group, epochs come from the
    /// committed key alone (the failover round follows it): a peer's word
    /// is never adopted. (A peer ahead of this member's copy of the log is
    /// normal for a heartbeat after every failover, so it is not counted.)
    pub fn learn(&self, peers: &[PeerView]) -> Result<EpochRecord, Failure> {
        if let Some(c) = self.consensus() {
            let committed = c.view().leader.map(|k| k.epoch).unwrap_or(0);
            for (m, view) in peers {
                let Ok(s) = view else { continue };
                if s.epoch > self.epoch() && u64::try_from(s.epoch).unwrap_or(0) > committed {
                    tracing::debug!(peer = %m.name, epoch = s.epoch, primary = %s.primary, committed,
                        "a peer reports an epoch this member's copy of the key does not show: not adopted");
                }
            }
            return Ok(self.known());
        }
        let mut best = self.known();
        for (m, view) in peers {
            let Ok(s) = view else { continue };
            if s.epoch > best.epoch && self.cfg.member(&s.primary).is_some() {
                best = EpochRecord {
                    epoch: s.epoch,
                    primary: s.primary.clone(),
                    changed_at: unix_now(),
                };
                tracing::info!(peer = %m.name, epoch = s.epoch, primary = %s.primary, "a peer knows a newer epoch");
            }
        }
        self.adopt(&best)?;
        Ok(self.known())
    }

    /// This node's status, measured now. Lag is computed against the
    /// primary's current position, asked of the primary itself.
    pub async fn status(&self) -> NodeStatus {
        let known = self.known();
        let mut st = NodeStatus {
            node: self.name().to_string(),
            role: self.me().role.into(),
            epoch: known.epoch,
            primary: known.primary.clone(),
            aside_dirs: self
                .server
                .aside_dirs()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            activity: lock(&self.activity).clone(),
            last_error: lock(&self.last_error).clone(),
            sync: None,
            failover: Some(self.failover_view()),
            ..Default::default()
        };
        self.metrics.aside_dirs.set(st.aside_dirs.len() as i64);
        if !self.server.has_data() {
            st.state = NodeState::Uninitialized;
            return self.finish_status(st);
        }
        let client = match self.local().await {
            Ok(c) => c,
            Err(e) => {
                st.state = if self.server.is_running().await {
                    NodeState::Unreachable
                } else {
                    NodeState::Stopped
                };
                st.last_error.get_or_insert(e.to_string());
                return self.finish_status(st);
            }
        };
        let server = match probe::server_state(&client).await {
            Ok(s) => s,
            Err(e) => {
                self.drop_local().await;
                st.state = NodeState::Unreachable;
                st.last_error = Some(e.to_string());
                return self.finish_status(st);
            }
        };
        st.state = if server.in_recovery {
            NodeState::Replica
        } else {
            NodeState::Primary
        };
        st.slots = probe::slots(&client).await.unwrap_or_default();
        if server.in_recovery {
            st.receiver = probe::receiver(&client).await.ok().flatten();
            // Bounded: a status answer must not wait for an unreachable
            // primary (callers time out; /status must stay useful).
            match tokio::time::timeout(Duration::from_secs(1), self.lag(&server)).await {
                Ok(Ok((bytes, secs))) => {
                    st.lag_bytes = Some(bytes);
                    st.lag_seconds = Some(secs);
                }
                Ok(Err(e)) => st.lag_error = Some(e.to_string()),
                Err(_) => st.lag_error = Some("the primary did not answer within 1 s".into()),
            }
        } else {
            st.replicas = probe::standbys(&client).await.unwrap_or_default();
            st.sync = Some(lock(&self.sync).view());
        }
        st.postgres = Some(server);
        self.finish_status(st)
    }

    fn finish_status(&self, st: NodeStatus) -> NodeStatus {
        let m = &self.metrics;
        m.postgres_up.set(i64::from(matches!(
            st.state.as_str(),
            "primary" | "replica"
        )));
        m.is_primary.set(i64::from(st.is_primary()));
        m.fenced.set(i64::from(
            st.is_primary() && st.failover.as_ref().is_some_and(|f| f.fenced),
        ));
        if let Some(p) = &st.postgres {
            m.timeline.set(i64::from(p.timeline));
        }
        if let (Some(b), Some(s)) = (st.lag_bytes, st.lag_seconds) {
            m.lag_bytes.with_label_values(&[self.name()]).set(b as i64);
            m.lag_seconds.with_label_values(&[self.name()]).set(s);
        }
        if st.is_primary() {
            m.replication_state.reset();
            for r in &st.replicas {
                m.replication_state
                    .with_label_values(&[r.name.as_str(), r.state.as_str()])
                    .set(1);
                if let Some(b) = r.lag_bytes {
                    m.lag_bytes.with_label_values(&[r.name.as_str()]).set(b);
                }
                m.lag_seconds
                    .with_label_values(&[r.name.as_str()])
                    .set(r.replay_lag_secs.unwrap_or(0.0));
            }
        }
        m.slot_retained_bytes.reset();
        for s in &st.slots {
            m.slot_retained_bytes
                .with_label_values(&[s.name.as_str()])
                .set(s.retained_bytes.unwrap_or(0));
        }
        let consensus = self.consensus();
        let fleet = crate::patroni::Fleet {
            unlocked: match consensus {
                Some(c) => c.view().leader.is_none(),
                None => st.primary.is_empty(),
            },
            sync_standby: match consensus {
                Some(c) => c.sync_key().as_deref() == Some(self.name()),
                None => st
                    .failover
                    .as_ref()
                    .and_then(|f| f.report.as_ref())
                    .is_some_and(|r| {
                        r.sync_mode == aurora_api::repl::SyncMode::Sync
                            && r.sync_standby.as_deref() == Some(self.name())
                    }),
            },
            failsafe: !self.cfg.automatic_failover()
                && st
                    .failover
                    .as_ref()
                    .is_some_and(|f| f.key_trouble.is_some()),
            last_contact: consensus.and_then(|c| c.last_contact()),
            paused: self.paused(),
        };
        m.patroni.set(crate::patroni::Snapshot::of(&st, fleet));
        *lock(&self.last_state) = st.state.clone();
        st
    }

    /// Bytes and seconds this standby is behind the primary's current
    /// position.
    pub async fn lag(&self, local: &ServerState) -> Result<(u64, f64), Failure> {
        let upstream = self.upstream().await?;
        let primary_lsn = match probe::current_lsn(&upstream).await {
            Ok(l) => l,
            Err(e) => {
                self.drop_upstream().await;
                return Err(e.into());
            }
        };
        let mine = local.replay_lsn.unwrap_or_default();
        let bytes = mine.bytes_until(primary_lsn);
        let secs = if bytes == 0 {
            0.0
        } else {
            local
                .last_replay_at
                .map(|t| (unix_now() - t).max(0.0))
                .unwrap_or(f64::INFINITY)
        };
        Ok((bytes, secs))
    }

    pub fn token(&self) -> Option<&Secret> {
        self.cfg.admin.token.as_ref()
    }

    pub fn since(&self, t: Instant) -> f64 {
        t.elapsed().as_secs_f64()
    }

    /// Records an event in the database's log: locally on the primary,
    /// through the primary on a standby. Best effort: the log is for
    /// operators, never an input to a decision.
    pub async fn event(&self, kind: &str, details: serde_json::Value) {
        tracing::info!(kind, %details, "event");
        // Never let the log hold up the work it records.
        if tokio::time::timeout(Duration::from_secs(3), self.record_event(kind, &details))
            .await
            .is_err()
        {
            tracing::warn!(
                kind,
                "event not recorded: the database did not answer within 3 s"
            );
        }
    }

    async fn record_event(&self, kind: &str, details: &serde_json::Value) {
        let local_primary = match self.local().await {
            Ok(c) => matches!(cluster_db::connect::is_primary(&c).await, Ok(true)).then_some(c),
            Err(_) => None,
        };
        let client = match local_primary {
            Some(c) => c,
            None => match self.upstream().await {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        if let Err(e) =
            cluster_db::queries::append_event(&*client, self.name(), kind, details).await
        {
            tracing::warn!(error = %e, kind, "event not recorded in the database");
        }
    }
}

/// Locks a std mutex, recovering the data if a panicking holder poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

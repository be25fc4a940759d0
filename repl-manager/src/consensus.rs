//! The leader key, on the fleet's Raft group.
//!
//! Every repl-manager of a fleet with automatic failover is a member of one
//! embedded Raft group ([`fleet_state`]: openraft, its vote and log fsynced
//! under the node's state directory, its messages on the admin HTTP at
//! `POST /fleet/raft`). What the group agrees on is Patroni's leader key
//! `{member, epoch}`, and every epoch change goes through it:
//!
//! - the primary renews the key by compare-and-set every failover round,
//!   and its lease (the window in which it acknowledges writes) is extended
//!   only by a renewal that **committed**, counted from before it was sent;
//! - a candidate takes the key only by compare-and-set against a revision
//!   it has watched stand unchanged for the failover timeout on its own
//!   monotonic clock, which is longer than any lease the old primary can
//!   still hold (no two machines' clocks are compared);
//! - a switchover hands the key to the target before the target promotes;
//! - a member that learns from committed state that another member holds
//!   the key at a newer epoch adopts it at once, and a primary among them
//!   fences itself.
//!
//! A promotion that is forgotten by the members that saw it (#15's first
//! finding) cannot happen: the key changed hands only if a majority stored it,
//! and any later majority includes one of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_api::repl::{History, HistoryEntry};
use fleet_state::{
    Command, DynamicConfig, FleetState, FleetView, HttpTransport, LeaderKey, NodeId, Outcome, Peer,
    Settings,
};
use sidecar_kit::admin::{AdminRequest, AdminResponse};

use cluster_db::Role;

use crate::config::Config;
use crate::tuning::Tuning;

/// At most this many members vote (lead, backup, then compute nodes in
/// the order configured); the others follow the log as learners.
pub const MAX_VOTERS: usize = 5;

/// What renewing the key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This node holds the key at `epoch`; the renewal committed.
    Held { epoch: i64 },
    /// The committed state names another member at a newer epoch: this
    /// node is not the primary any more.
    Lost { holder: String, epoch: i64 },
    /// Nothing committed (no quorum, no Raft leader yet, a timeout, or a
    /// key this node cannot claim): the lease must not be extended.
    Unknown(String),
}

/// A member's Raft identity: a hash of its name (stable, the same on
/// every member, and needing nothing but the configured member list).
pub fn member_id(name: &str) -> NodeId {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The voters: the lead, the backup, then compute nodes in the order
/// configured, up to [`MAX_VOTERS`] and an odd number of them from three
/// members on (four members give three voters and a learner).
///
/// A fourth voter adds no fault tolerance (four, like three, survive one
/// loss) and makes every commit and every election wait for three of them:
/// with one member cut off, a renewal needed all three others, and an
/// election needed all three to agree on one candidate, which under load
/// took longer than the primary's lease (seen in CI). Two members keep two
/// voters: one would leave the backup no way to take the key.
pub fn voters(cfg: &Config) -> BTreeMap<NodeId, Peer> {
    let mut ordered: Vec<_> = cfg.members.iter().collect();
    ordered.sort_by_key(|m| match m.role {
        Role::Lead => 0,
        Role::Backup => 1,
        Role::Compute => 2,
    });
    let mut n = ordered.len().min(MAX_VOTERS);
    if n > 2 && n % 2 == 0 {
        n -= 1;
    }
    ordered
        .into_iter()
        .take(n)
        .map(|m| {
            (
                member_id(m.name.as_str()),
                peer(m.name.as_str(), &m.api_url),
            )
        })
        .collect()
}

fn peer(name: &str, url: &str) -> Peer {
    Peer {
        name: name.to_string(),
        addr: url.trim_end_matches('/').to_string(),
    }
}

/// Raft's timing, derived from the primary's lease: a Raft leader lost is
/// replaced within the lease less one probe interval, so the primary's
/// renewal (tried every probe interval) still commits before its lease
/// runs out, and a standby's death never costs the primary its lease.
///
/// openraft's followers stand for election once their leader lease (the
/// maximum election timeout) and then a random election timeout have
/// passed since they last heard the leader: at most 2 × `election_max`
/// = 4 × `election_min`. With `election_min` a fifth of the budget, that is
/// 80 % of it, the rest for the election's round trips. (It was an eighth
/// of the failover timeout, at least 0.3 s: with the tuned setting,
/// 0.3 s and 1.5 s, that is 1.2 s to replace a Raft leader against a
/// lease of 0.9 s.)
pub fn settings(cfg: &Config, dir: std::path::PathBuf) -> Settings {
    settings_for(&raft_timing(cfg).0, member_id(&cfg.node.name), dir)
}

/// Raft's settings for the timing `t` (see [`settings`]).
pub fn settings_for(t: &Tuning, id: NodeId, dir: std::path::PathBuf) -> Settings {
    let mut s = Settings::new(id, dir);
    let budget = t.lease().saturating_sub(t.probe_interval());
    s.election_min = (budget / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
    s.election_max = s.election_min * 2;
    s.heartbeat = s.election_min / 4;
    s
}

/// The file beside the Raft store holding the fleet's committed timing as
/// this member last saw it: its next start times Raft's elections from it
/// (openraft cannot retime while it runs, and reading the committed config
/// from the store before opening it opened the store twice).
pub fn timing_hint_file(cfg: &Config) -> PathBuf {
    cfg.node.state_file.with_extension("raft-timing")
}

/// The committed config and its revision, as the hint file keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TimingHint {
    revision: u64,
    config: DynamicConfig,
}

/// The timing Raft starts with, and where it comes from: the fleet's
/// committed config as this member last saw it (the hint file), else the
/// member's config file. A hint that cannot be read, or that breaks a
/// rule, is a hint only: the file's timing is used, and the next committed
/// config seen writes a good one.
pub fn raft_timing(cfg: &Config) -> (Tuning, &'static str) {
    let path = timing_hint_file(cfg);
    let hint = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<TimingHint>(&bytes) {
            Ok(h) => match h.config.check() {
                Ok(()) => Some(h),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "the Raft timing hint breaks a rule: timing Raft from the config file");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the Raft timing hint does not parse: timing Raft from the config file");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the Raft timing hint cannot be read: timing Raft from the config file");
            None
        }
    };
    match hint {
        Some(h) => (
            Tuning {
                values: h.config,
                revision: Some(h.revision),
            },
            "fleet",
        ),
        None => (Tuning::file(cfg), "file"),
    }
}

/// How long a candidate waits after it saw `key`'s revision: the TTL in
/// force on it, and never less than the TTL the holder wrote into the key
/// (the holder counts its lease with that one, also when the fleet's TTL
/// was lowered since).
pub fn must_stand(key: Option<&LeaderKey>, ttl: Duration) -> Duration {
    ttl.max(Duration::from_millis(key.map(|k| k.ttl_ms).unwrap_or(0)))
}

/// How long the key's revision has stood unchanged, as one member saw it
/// on its own monotonic clock. Pure: the caller says what it sees and when.
#[derive(Debug, Default, Clone)]
pub struct KeyWatch {
    revision: Option<Option<u64>>,
    since: Option<Instant>,
}

impl KeyWatch {
    /// Notes the key's revision (`None`: empty) as seen at `now`, and
    /// returns how long it has stood unchanged since this member first saw
    /// it. A change, or the first look, starts the count at `now`: only a
    /// revision watched for the whole TTL counts, never one merely older.
    pub fn observe(&mut self, revision: Option<u64>, now: Instant) -> Duration {
        match self.since {
            Some(since) if self.revision == Some(revision) => now.saturating_duration_since(since),
            _ => {
                self.revision = Some(revision);
                self.since = Some(now);
                Duration::ZERO
            }
        }
    }
}

/// Whether a candidate that has watched `key` stand for `stood` may claim
/// it: `Err(left)` while it must still wait (see [`must_stand`]).
pub fn may_take(key: Option<&LeaderKey>, stood: Duration, ttl: Duration) -> Result<(), Duration> {
    let stand = must_stand(key, ttl);
    if stood < stand {
        Err(stand - stood)
    } else {
        Ok(())
    }
}

pub struct Consensus {
    fs: FleetState,
    me: String,
    /// This member's file's timing: in force until the fleet's config is
    /// committed.
    file: Tuning,
    /// The timing Raft's elections were started with ([`raft_timing`]).
    raft: Tuning,
    /// Where this member keeps the committed timing for its next start,
    /// and the revision last written there.
    hint_file: PathBuf,
    hinted: AtomicU64,
    /// The file's values were refused as the seed: not tried again.
    seeded: AtomicBool,
    watch: Mutex<KeyWatch>,
    /// The revision of this node's last committed claim.
    held: Mutex<Option<u64>>,
    /// The newest state a proposal of this node's answered with: ahead of
    /// this member's applied copy when it is not the Raft leader.
    answered: Mutex<FleetView>,
    /// The applied index last seen and the Unix time it was last seen to
    /// move, or a proposal of this node's last committed.
    contact: Mutex<(u64, Option<f64>)>,
}

/// Why a member the sync key does not name may not take over.
pub fn not_in_sync_key(view: &FleetView) -> String {
    match view.current_sync_standby() {
        Some(s) => format!(
            "the committed sync key names {s}, not this node: only the synchronous standby \
             takes over automatically; promote by hand with force=true if you accept the loss"
        ),
        None => "the committed sync key names no standby (the primary was not replicating \
                 synchronously): no member takes over automatically; promote by hand with \
                 force=true if you accept the loss"
            .into(),
    }
}

/// Where a member keeps its Raft store.
pub fn store_dir(cfg: &Config) -> PathBuf {
    cfg.node.state_file.with_extension("raft")
}

/// Do the configured members still include a majority of the group's
/// voters? If not, no election can ever succeed: the group lost its
/// majority (or the configuration is wrong).
pub fn majority_kept(voters: &BTreeSet<NodeId>, configured: &BTreeSet<NodeId>) -> bool {
    voters.is_empty() || voters.intersection(configured).count() > voters.len() / 2
}

fn configured_ids(cfg: &Config) -> BTreeSet<NodeId> {
    cfg.members
        .iter()
        .map(|m| member_id(m.name.as_str()))
        .collect()
}

fn names(peers: &BTreeMap<NodeId, Peer>) -> String {
    let v: Vec<&str> = peers.values().map(|p| p.name.as_str()).collect();
    v.join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error(transparent)]
    FleetState(#[from] fleet_state::FleetStateError),
    #[error(
        "the fleet's Raft group has the voters {voters}, and the configured members include only \
         {kept} of them: the group's majority is lost and it can never elect a leader. If those \
         members are gone for good, follow docs/runbooks/lost-majority.md (`repl-manager \
         reset-fleet-state` on every surviving member); if not, fix `members`"
    )]
    MajorityLost { voters: String, kept: usize },
    #[error(
        "the fleet's Raft group still has a majority among the configured members ({kept} of \
         its voters {voters}): it recovers by itself once they answer. Nothing was reset"
    )]
    MajorityKept { voters: String, kept: usize },
    #[error("cannot move {from} aside: {reason}")]
    Move { from: String, reason: String },
}

/// Why the fleet's config was not changed.
#[derive(Debug)]
pub enum ConfigWrite {
    /// It changed meanwhile: now at this revision.
    Moved(u64),
    /// It breaks a rule.
    Refused(fleet_state::Refusal),
    /// The group answered that it did not apply it: nothing changed.
    Uncommitted(String),
    /// No answer confirmed it (a timeout, an answer lost on the way): a
    /// majority may hold it all the same, and then it commits later.
    Unconfirmed(String),
}

/// What `reset-fleet-state` did.
#[derive(Debug)]
pub struct Reset {
    /// The group's voters as this member had them.
    pub voters: String,
    /// Where the old store is kept.
    pub moved_to: PathBuf,
    /// The leader key as this member had applied it.
    pub last_key: Option<LeaderKey>,
}

/// After the members that held the group's majority are gone for good:
/// moves this member's Raft store aside (kept, renamed), so that the next
/// start forms a new group of the configured members. Refused while the
/// configured members still include a majority of the old group's voters
/// (nothing needs resetting), and while the member runs (its store is
/// locked). `None`: there was no store.
pub async fn reset(cfg: &Config) -> Result<Option<Reset>, ConsensusError> {
    let dir = store_dir(cfg);
    let Some(stored) = fleet_state::inspect(&dir).await? else {
        return Ok(None);
    };
    let ids: BTreeSet<NodeId> = stored.voters.keys().copied().collect();
    let configured = configured_ids(cfg);
    let kept = ids.intersection(&configured).count();
    if majority_kept(&ids, &configured) {
        return Err(ConsensusError::MajorityKept {
            voters: names(&stored.voters),
            kept,
        });
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut to = dir.clone().into_os_string();
    to.push(format!(".lost-{stamp}"));
    let to = PathBuf::from(to);
    std::fs::rename(&dir, &to).map_err(|e| ConsensusError::Move {
        from: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some(Reset {
        voters: names(&stored.voters),
        moved_to: to,
        last_key: stored.view.leader,
    }))
}

impl Consensus {
    /// Opens this member's store (`<state file>.raft/`) and starts its Raft
    /// node, then, on a voter, offers the configured voters as the group's
    /// first configuration (a no-op on a group that has one). Refuses a group
    /// whose voters are mostly not configured any more: it could never
    /// elect a leader, and the primary would fence for good.
    pub async fn open(cfg: &Config) -> Result<Consensus, ConsensusError> {
        let transport = Arc::new(HttpTransport::new(
            cfg.admin.token.clone(),
            cfg.failover.probe_interval(),
        ));
        // Raft's timing from the fleet's config as last seen (the hint
        // file), else this member's file. (Reading the committed config
        // from the store first meant starting Raft on the store twice, and
        // the second open raced the first one's teardown: "store in use".)
        let (raft, source) = raft_timing(cfg);
        let raft_settings = settings_for(&raft, member_id(&cfg.node.name), store_dir(cfg));
        tracing::info!(
            source,
            revision = raft.revision.unwrap_or(0),
            election_min_ms = raft_settings.election_min.as_millis() as u64,
            election_max_ms = raft_settings.election_max.as_millis() as u64,
            heartbeat_ms = raft_settings.heartbeat.as_millis() as u64,
            "Raft's timing"
        );
        let fs = FleetState::open(raft_settings, transport).await?;
        let stored = fs.voters_now().await?;
        let ids: BTreeSet<NodeId> = stored.keys().copied().collect();
        let configured = configured_ids(cfg);
        if !majority_kept(&ids, &configured) {
            fs.shutdown().await;
            return Err(ConsensusError::MajorityLost {
                voters: names(&stored),
                kept: ids.intersection(&configured).count(),
            });
        }
        // Only a voter offers the first configuration (openraft refuses one
        // that leaves out the member offering it); a learner waits for the
        // Raft leader to add it (`keep_members`). Before, the fourth
        // member (now a learner) and any sixth one failed to start.
        let first = voters(cfg);
        if first.contains_key(&member_id(&cfg.node.name)) {
            fs.initialize(first).await?;
        }
        Ok(Consensus {
            fs,
            me: cfg.node.name.to_string(),
            file: Tuning::file(cfg),
            hinted: AtomicU64::new(raft.revision.unwrap_or(0)),
            raft,
            hint_file: timing_hint_file(cfg),
            seeded: AtomicBool::new(false),
            watch: Mutex::new(KeyWatch::default()),
            held: Mutex::new(None),
            answered: Mutex::new(FleetView::default()),
            contact: Mutex::new((0, None)),
        })
    }

    pub fn view(&self) -> FleetView {
        self.fs.view()
    }

    /// The timing and sync policy in force: the fleet's committed config
    /// as this member applied it, else its file's.
    pub fn tuning(&self) -> Tuning {
        self.fs.read_view(|v| match &v.config {
            Some(values) => Tuning {
                values: values.clone(),
                revision: Some(v.config_revision),
            },
            None => self.file.clone(),
        })
    }

    /// A proposal's bound in the failover loop (one probe interval: the
    /// next round tries again).
    fn patience(&self) -> Duration {
        self.tuning().probe_interval()
    }

    /// An operator's operation's bound (the TTL): long enough for a Raft
    /// leader that just went away to be replaced, as when the lead's host,
    /// which led the group, is what the operator promotes away from. Raft's
    /// election timing comes from the file ([`settings`]), so never less
    /// than the file's TTL, also when the fleet's was lowered below it.
    fn op_patience(&self) -> Duration {
        self.tuning().timeout().max(self.raft.timeout())
    }

    /// Keeps the hint file at the committed config's revision, so that the
    /// next start times Raft from the fleet's values. Written when the
    /// revision changes (a temporary file renamed over it); a failure is
    /// logged and tried again next round.
    pub fn keep_timing_hint(&self) {
        let t = self.tuning();
        let Some(revision) = t.revision else { return };
        if self.hinted.load(Ordering::Relaxed) == revision {
            return;
        }
        let hint = TimingHint {
            revision,
            config: t.values,
        };
        let written = serde_json::to_vec_pretty(&hint)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = self.hint_file.with_extension("raft-timing.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &self.hint_file)
            });
        match written {
            Ok(()) => {
                self.hinted.store(revision, Ordering::Relaxed);
                if self.raft.revision != Some(revision) {
                    tracing::info!(
                        revision,
                        "the fleet's timing changed: Raft's elections follow it from this member's next start"
                    );
                }
            }
            Err(e) => tracing::warn!(
                path = %self.hint_file.display(),
                error = %e,
                "cannot keep the Raft timing hint; tried again next round"
            ),
        }
    }

    /// The TTL a claim of this member's is written with.
    fn ttl_ms(&self) -> u64 {
        self.tuning().values.ttl_ms
    }

    /// On the primary, once it holds the key: commits its file's values as
    /// the fleet's config when none is committed yet (Patroni's
    /// `bootstrap.dcs`). Tried once per start when the values break a
    /// rule (the file passed its own checks, which allow more where
    /// nothing fails over automatically).
    pub async fn seed_config(&self) {
        if self.fs.read_view(|v| v.config.is_some()) || self.seeded.load(Ordering::Relaxed) {
            return;
        }
        match self.set_config(0, self.file.values.clone()).await {
            Ok(revision) => {
                tracing::info!(
                    revision,
                    "the fleet's config is seeded from this member's file"
                );
            }
            // Another member seeded it first.
            Err(ConfigWrite::Moved(_)) => {}
            Err(ConfigWrite::Refused(r)) => {
                self.seeded.store(true, Ordering::Relaxed);
                tracing::warn!(reason = %r, "this member's timing cannot seed the fleet's config; each member keeps its file's");
            }
            Err(ConfigWrite::Uncommitted(e) | ConfigWrite::Unconfirmed(e)) => {
                tracing::debug!(error = %e, "the fleet's config is not seeded yet");
            }
        }
    }

    /// Commits the fleet's config, against the revision `seen` (0: none
    /// committed yet: seeding it).
    pub async fn set_config(&self, seen: u64, config: DynamicConfig) -> Result<u64, ConfigWrite> {
        let cmd = Command::SetConfig {
            member: self.me.clone(),
            seen,
            config: config.clone(),
        };
        match self.propose(cmd, self.op_patience()).await {
            Ok(Outcome::Applied { view }) => Ok(view.config_revision),
            // A try whose answer was lost committed, and the retry met it.
            Ok(Outcome::Conflict { view })
                if view.config_revision != seen && view.config.as_ref() == Some(&config) =>
            {
                Ok(view.config_revision)
            }
            Ok(Outcome::Conflict { view }) if view.config_revision != seen => {
                Err(ConfigWrite::Moved(view.config_revision))
            }
            Ok(Outcome::Conflict { .. }) => Err(match config.check() {
                Err(r) => ConfigWrite::Refused(r),
                Ok(()) => ConfigWrite::Uncommitted(
                    "the group refused it (a member of an older version leads?)".into(),
                ),
            }),
            Ok(Outcome::None) => Err(ConfigWrite::Uncommitted(
                "the write carried no command".into(),
            )),
            Err(e) => Err(ConfigWrite::Unconfirmed(e)),
        }
    }

    /// `GET /history`: the key's changes of hands as this member applied
    /// them.
    pub fn history(&self) -> History {
        History {
            kept: true,
            entries: self
                .fs
                .view()
                .history
                .into_iter()
                .map(|h| HistoryEntry {
                    epoch: i64::try_from(h.epoch).unwrap_or(i64::MAX),
                    primary: h.member,
                    from: h.from,
                    how: h.how,
                    index: h.index,
                })
                .collect(),
            timelines: Vec::new(),
        }
    }

    /// The Raft leader's name, if one is known.
    pub fn raft_leader(&self) -> Option<String> {
        let id = self.fs.raft_leader()?;
        let (_, nodes) = self.fs.members();
        nodes.get(&id).map(|p| p.name.clone())
    }

    /// `POST /fleet/raft`.
    pub async fn handle_http(&self, req: &AdminRequest) -> AdminResponse {
        self.fs.handle_http(req).await
    }

    /// Commits `cmd`, trying again while no Raft leader is known or the
    /// one known does not answer (an election under way), for `within`.
    async fn propose(&self, cmd: Command, within: Duration) -> Result<Outcome, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.fs.propose(cmd.clone())).await {
                Ok(Ok(o)) => {
                    self.contact.lock().unwrap_or_else(|e| e.into_inner()).1 =
                        Some(sidecar_kit::telemetry::unix_now());
                    if let Some(v) = o.view() {
                        let mut a = self.answered.lock().unwrap_or_else(|e| e.into_inner());
                        if v.applied > a.applied {
                            *a = v.clone();
                        }
                    }
                    return Ok(o);
                }
                Ok(Err(e)) => {
                    if Instant::now() + Duration::from_millis(50) >= deadline {
                        return Err(e.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {
                    return Err(format!(
                        "nothing committed within {:.1} s (no quorum?)",
                        within.as_secs_f64()
                    ))
                }
            }
        }
    }

    fn remember(&self, view: &FleetView) {
        if let Some(k) = &view.leader {
            if k.member == self.me {
                *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(k.revision);
            }
        }
    }

    /// The revision this node holds the key at, as far as it knows.
    fn my_revision(&self, k: &LeaderKey) -> u64 {
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.unwrap_or(k.revision).max(k.revision)
    }

    /// The newest committed state this member knows: its applied copy, or
    /// what its own last proposal answered with if that is newer.
    fn newest_view(&self) -> FleetView {
        let local = self.fs.view();
        let a = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        if a.applied > local.applied {
            a.clone()
        } else {
            local
        }
    }

    /// Unix seconds this member last heard from the group: its own
    /// proposal committed, or its applied log moved (the primary renews
    /// every round). Patroni's `dcs_last_seen`.
    pub fn last_contact(&self) -> Option<f64> {
        let applied = self.fs.view().applied;
        let mut c = self.contact.lock().unwrap_or_else(|e| e.into_inner());
        if applied > c.0 {
            *c = (applied, Some(sidecar_kit::telemetry::unix_now()));
        }
        c.1
    }

    /// The standby the committed sync key names at the current epoch (the
    /// only member that may take the key automatically).
    pub fn sync_key(&self) -> Option<String> {
        self.newest_view()
            .current_sync_standby()
            .map(str::to_string)
    }

    /// The key in `view`, when this node holds it; else why not.
    fn held_by_me(&self, view: &FleetView) -> Result<LeaderKey, String> {
        match &view.leader {
            Some(k) if k.member == self.me => Ok(k.clone()),
            Some(k) => Err(format!(
                "{} holds the leader key at epoch {}, not this node",
                k.member, k.epoch
            )),
            None => Err("nobody holds the leader key".into()),
        }
    }

    /// The holder writes the sync key (`None`: no synchronous standby).
    /// Patroni's order is the caller's: a standby enters it only once it
    /// is named and caught up, and leaves it before it stops being named.
    pub async fn set_sync(&self, standby: Option<&str>) -> Result<(), String> {
        let k = self.held_by_me(&self.newest_view())?;
        let cmd = Command::SetSync {
            member: self.me.clone(),
            epoch: k.epoch,
            standby: standby.map(str::to_string),
        };
        match self.propose(cmd, self.patience()).await? {
            Outcome::Applied { .. } => Ok(()),
            Outcome::Conflict { view } => Err(format!(
                "the leader key moved meanwhile ({:?})",
                view.leader
            )),
            Outcome::None => Err("the sync key write carried no command".into()),
        }
    }

    /// Pauses (or resumes) the whole fleet through the replicated state:
    /// every member applies it, also one that was down when the operator
    /// asked, and no automatic claim commits while it is on.
    pub async fn set_pause(&self, paused: bool) -> Result<(), String> {
        let cmd = Command::SetPause {
            member: self.me.clone(),
            paused,
        };
        match self.propose(cmd, self.op_patience()).await? {
            Outcome::Applied { .. } => Ok(()),
            Outcome::Conflict { .. } | Outcome::None => {
                Err("the pause was not applied (a member of an older version leads?)".into())
            }
        }
    }

    /// Whether the fleet is paused, as committed (this member's newest
    /// copy).
    pub fn fleet_paused(&self) -> bool {
        self.newest_view().paused
    }

    /// The primary's renewal, at the epoch it believes it holds, tried
    /// until it commits or `within` (at least one probe interval) has
    /// passed: the caller passes what is left of its lease, so that an
    /// election that replaces a lost Raft leader inside the lease costs the
    /// primary nothing. A renewal that raced an earlier one of this node's
    /// (which committed after all) is proposed again at the new revision:
    /// only a commit made in this call extends the lease. `ttl`: what the
    /// caller counts its lease with, written into the key so that no
    /// candidate takes it sooner.
    pub async fn renew(&self, epoch: i64, within: Duration, ttl: Duration) -> Claim {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let deadline = Instant::now() + within.max(self.patience());
        let at_least = u64::try_from(epoch).unwrap_or(0);
        let mut view = self.fs.view();
        loop {
            let cmd = match &view.leader {
                None => Command::Acquire {
                    member: self.me.clone(),
                    seen: None,
                    at_least,
                    require_sync: false,
                    automatic: false,
                    ttl_ms,
                },
                Some(k) if k.member == self.me => Command::Renew {
                    member: self.me.clone(),
                    revision: self.my_revision(k),
                    ttl_ms,
                },
                Some(k) => return judge_other(k, epoch),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match self.propose(cmd, left).await {
                Ok(Outcome::Applied { view }) => {
                    self.remember(&view);
                    return match view.leader {
                        Some(k) => Claim::Held {
                            epoch: i64::try_from(k.epoch).unwrap_or(i64::MAX),
                        },
                        None => Claim::Unknown("the key is empty after a claim".into()),
                    };
                }
                Ok(Outcome::Conflict { view: met }) => {
                    let why = match &met.leader {
                        Some(k) if k.member == self.me => {
                            // Our own earlier renewal moved the revision on.
                            self.remember(&met);
                            format!("renewal raced at revision {}; renewing again", k.revision)
                        }
                        Some(k) => return judge_other(k, epoch),
                        None => "the key was released; claiming it again".into(),
                    };
                    view = met;
                    why
                }
                Ok(Outcome::None) => return Claim::Unknown("the claim carried no command".into()),
                Err(e) => return Claim::Unknown(e),
            };
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Claim::Unknown(why);
            }
        }
    }

    /// The leader key as committed now, confirmed through the Raft log
    /// (not this member's possibly lagging copy): a renewal in this node's
    /// name at a revision nobody holds, which always conflicts and answers
    /// with the state it met. Costs one log entry; for the rare check of a
    /// record the local copy contradicts.
    pub async fn committed_key(&self, within: Duration) -> Result<Option<LeaderKey>, String> {
        let probe = Command::Renew {
            member: self.me.clone(),
            revision: u64::MAX,
            ttl_ms: 0,
        };
        match self.propose(probe, within).await? {
            Outcome::Applied { view } | Outcome::Conflict { view } => Ok(view.leader),
            Outcome::None => Err("the check carried no command".into()),
        }
    }

    /// Called every round on a member that is not the primary: notes when
    /// the key's revision last moved, and returns the key and how long it
    /// has stood unchanged since (this member's own monotonic clock).
    pub fn observe(&self) -> (FleetView, Duration) {
        let view = self.fs.view();
        let rev = view.leader.as_ref().map(|k| k.revision);
        let stood = self
            .watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(rev, Instant::now());
        (view, stood)
    }

    /// A candidate takes the key: only once the revision it watched has
    /// stood for `stand` (longer than any lease its holder can still
    /// have), and only if it is still that revision when committed.
    /// Returns the new epoch.
    pub async fn acquire(&self, at_least: i64, stand: Duration) -> Result<i64, String> {
        let (view, stood) = self.observe();
        let key = view.leader.clone();
        match crate::rules::may_claim(&view, &self.me, stood, stand) {
            Ok(()) => {}
            Err(crate::rules::NoClaim::TooSoon { .. }) => {
                let stand = must_stand(key.as_ref(), stand);
                return Err(format!(
                    "the leader key ({}) was renewed {:.1} s ago; it must stand {:.1} s",
                    key.as_ref()
                        .map(|k| format!("{} at epoch {}", k.member, k.epoch))
                        .unwrap_or_else(|| "empty".into()),
                    stood.as_secs_f64(),
                    stand.as_secs_f64()
                ));
            }
            Err(other) => return Err(other.to_string()),
        }
        self.take(
            key.map(|k| k.revision),
            at_least,
            true,
            true,
            self.patience(),
        )
        .await
    }

    /// An operator's promotion: the key is taken against the revision this
    /// member knows, without waiting for it to stand (the operator has
    /// judged the primary gone). Still a compare-and-set: a key that moved
    /// meanwhile is not taken; with `require_sync` (no force), only while
    /// the sync key names this member.
    pub async fn take_now(&self, at_least: i64, require_sync: bool) -> Result<i64, String> {
        let seen = self.fs.view().leader.map(|k| k.revision);
        self.take(seen, at_least, require_sync, false, self.op_patience())
            .await
    }

    async fn take(
        &self,
        seen: Option<u64>,
        at_least: i64,
        require_sync: bool,
        automatic: bool,
        within: Duration,
    ) -> Result<i64, String> {
        let cmd = Command::Acquire {
            member: self.me.clone(),
            seen,
            at_least: u64::try_from(at_least).unwrap_or(0),
            require_sync,
            automatic,
            ttl_ms: self.ttl_ms(),
        };
        match self.propose(cmd, within).await? {
            Outcome::Applied { view } => {
                self.remember(&view);
                let k = view.leader.ok_or("the key is empty after taking it")?;
                Ok(i64::try_from(k.epoch).unwrap_or(i64::MAX))
            }
            Outcome::Conflict { view } if require_sync && !view.is_sync_standby(&self.me) => {
                Err(not_in_sync_key(&view))
            }
            Outcome::Conflict { view } if automatic && view.paused => {
                Err("the fleet is paused (maintenance mode): no member takes over by itself".into())
            }
            Outcome::Conflict { view } => Err(match view.leader {
                Some(k) => format!(
                    "the leader key moved meanwhile: {} holds it at epoch {}",
                    k.member, k.epoch
                ),
                None => "the leader key moved meanwhile".into(),
            }),
            Outcome::None => Err("the claim carried no command".into()),
        }
    }

    /// A switchover: the holder hands the key to `to`. Returns the new
    /// epoch and the revision it was handed over at (to take it back by
    /// compare-and-set if the target refuses).
    pub async fn handover(&self, to: &str) -> Result<(i64, u64), String> {
        let k = self.held_by_me(&self.fs.view())?;
        let cmd = Command::Handover {
            member: self.me.clone(),
            revision: self.my_revision(&k),
            to: to.to_string(),
            ttl_ms: self.ttl_ms(),
        };
        match self.propose(cmd, self.op_patience()).await? {
            Outcome::Applied { view } => {
                let k = view.leader.ok_or("the key is empty after the handover")?;
                Ok((i64::try_from(k.epoch).unwrap_or(i64::MAX), k.revision))
            }
            Outcome::Conflict { view } => Err(format!(
                "the leader key moved meanwhile ({:?})",
                view.leader
            )),
            Outcome::None => Err("the handover carried no command".into()),
        }
    }

    /// Takes the key back from a switchover target that refused, by
    /// compare-and-set on the handover's revision (so not if the target
    /// already renewed it).
    pub async fn take_back(&self, revision: u64, at_least: i64) -> Result<i64, String> {
        self.take(Some(revision), at_least, false, false, self.op_patience())
            .await
    }

    /// Waits (bounded) until this member has applied a key naming
    /// `member` at `epoch`.
    pub async fn wait_for_key(&self, member: &str, epoch: i64, within: Duration) -> bool {
        let mut rx = self.fs.subscribe();
        let want = |v: &FleetView| {
            v.leader
                .as_ref()
                .is_some_and(|k| k.member == member && i64::try_from(k.epoch) == Ok(epoch))
        };
        let waited = tokio::time::timeout(within, async {
            loop {
                if want(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        waited.is_ok() || want(&self.fs.view())
    }

    /// On the Raft leader: one step towards a group that matches
    /// `members` ([`next_change`]). Each step commits (joint consensus for
    /// the voters) before the next round plans another.
    pub async fn keep_members(&self, cfg: &Config) {
        if self.fs.raft_leader() != Some(self.fs.id()) {
            return;
        }
        let (voters, nodes) = self.fs.members();
        let Some(change) = next_change(&voters, &nodes, cfg) else {
            return;
        };
        let done = match &change {
            Change::AddLearner(id, p) => self.fs.add_learner(*id, p.clone()).await,
            Change::SetVoters(v) => self.fs.set_voters(v.clone()).await,
            Change::Remove(id) => self.fs.remove(*id).await,
        };
        match done {
            Ok(()) => {
                tracing::info!(change = %change.describe(&nodes, cfg), "the fleet's Raft group follows members")
            }
            Err(e) => {
                tracing::warn!(change = %change.describe(&nodes, cfg), error = %e, "cannot change the fleet's Raft group")
            }
        }
    }

    pub async fn shutdown(&self) {
        self.fs.shutdown().await;
    }
}

/// A change of the Raft group's membership.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A configured member joins as a learner (it follows the log).
    AddLearner(NodeId, Peer),
    /// The voters become these (all already in the group).
    SetVoters(BTreeSet<NodeId>),
    /// A member no longer configured leaves the group.
    Remove(NodeId),
}

impl Change {
    fn describe(&self, nodes: &BTreeMap<NodeId, Peer>, cfg: &Config) -> String {
        let name = |id: &NodeId| {
            nodes
                .get(id)
                .map(|p| p.name.clone())
                .or_else(|| {
                    cfg.members
                        .iter()
                        .find(|m| member_id(m.name.as_str()) == *id)
                        .map(|m| m.name.to_string())
                })
                .unwrap_or_else(|| id.to_string())
        };
        match self {
            Change::AddLearner(id, _) => format!("{} joins as a learner", name(id)),
            Change::SetVoters(v) => {
                let v: Vec<String> = v.iter().map(name).collect();
                format!("the voters become {}", v.join(", "))
            }
            Change::Remove(id) => format!("{} leaves the group", name(id)),
        }
    }
}

/// The next step that brings the group (`voters`, and every member in
/// `nodes`) in line with `members`, or `None` when it is:
///
/// 1. a configured member not in the group joins as a learner;
/// 2. the voters become [`voters`] of the config (lead, backup, the first
///    compute nodes) once all of those are in the group: one joint-consensus
///    change, so a majority of the old voters and of the new agree;
/// 3. a member in the group but no longer configured leaves it.
///
/// Nothing changes the voters while the configured members hold no majority
/// of the current ones: that group lost its majority (the lost-majority
/// runbook), and no change could commit anyway.
pub fn next_change(
    voters: &BTreeSet<NodeId>,
    nodes: &BTreeMap<NodeId, Peer>,
    cfg: &Config,
) -> Option<Change> {
    for m in &cfg.members {
        let id = member_id(m.name.as_str());
        if !nodes.contains_key(&id) {
            return Some(Change::AddLearner(id, peer(m.name.as_str(), &m.api_url)));
        }
    }
    let configured = configured_ids(cfg);
    if !majority_kept(voters, &configured) {
        return None;
    }
    let want: BTreeSet<NodeId> = self::voters(cfg).into_keys().collect();
    if &want != voters {
        return Some(Change::SetVoters(want));
    }
    nodes
        .keys()
        .find(|id| !configured.contains(id))
        .map(|id| Change::Remove(*id))
}

/// Another member holds the key: lost if at a newer epoch than ours; at an
/// older or equal one, this node's epoch did not come through the key
/// (a fleet upgraded from before it) and it may not claim it: no lease.
fn judge_other(k: &LeaderKey, epoch: i64) -> Claim {
    let theirs = i64::try_from(k.epoch).unwrap_or(i64::MAX);
    if theirs > epoch {
        Claim::Lost {
            holder: k.member.clone(),
            epoch: theirs,
        }
    } else {
        Claim::Unknown(format!(
            "{} holds the leader key at epoch {theirs}, not this node (at epoch {epoch})",
            k.member
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_revision_watched_for_the_whole_ttl_may_be_taken() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let five = Duration::from_secs(5);
        let key = |revision| LeaderKey {
            member: "lead".into(),
            epoch: 2,
            revision,
            ttl_ms: 5_000,
        };
        let mut w = KeyWatch::default();
        // The first look starts the count, however old the revision is.
        assert_eq!(w.observe(Some(40), at(100.0)), Duration::ZERO);
        let stood = w.observe(Some(40), at(104.9));
        assert_eq!(
            may_take(Some(&key(40)), stood, five),
            Err(Duration::from_secs_f64(0.1))
        );
        // A renewal restarts it.
        assert_eq!(w.observe(Some(41), at(104.95)), Duration::ZERO);
        let stood = w.observe(Some(41), at(109.0));
        assert!(may_take(Some(&key(41)), stood, five).is_err());
        let stood = w.observe(Some(41), at(109.95));
        assert_eq!(may_take(Some(&key(41)), stood, five), Ok(()));
        // An emptied key is a change too; a clock read out of order counts 0.
        assert_eq!(w.observe(None, at(110.0)), Duration::ZERO);
        assert_eq!(w.observe(None, at(109.0)), Duration::ZERO);
        assert_eq!(w.observe(None, at(115.0)), five);
        assert_eq!(may_take(None, five, five), Ok(()));
    }

    #[test]
    fn a_candidate_waits_the_ttl_the_holder_wrote_when_the_fleet_lowered_it() {
        let key = |ttl_ms| LeaderKey {
            member: "lead".into(),
            epoch: 3,
            revision: 40,
            ttl_ms,
        };
        let five = Duration::from_secs(5);
        // The holder renewed under a TTL of 30 s; the fleet's is 5 s now.
        assert_eq!(
            must_stand(Some(&key(30_000)), five),
            Duration::from_secs(30)
        );
        // Raised: the fleet's TTL counts. Written before it was kept: too.
        assert_eq!(must_stand(Some(&key(2_000)), five), five);
        assert_eq!(must_stand(Some(&key(0)), five), five);
        assert_eq!(must_stand(None, five), five);
    }

    #[test]
    fn member_ids_are_stable_and_distinct() {
        assert_eq!(member_id("lead"), member_id("lead"));
        assert_ne!(member_id("lead"), member_id("backup"));
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(member_id(""), 0xcbf2_9ce4_8422_2325);
    }

    fn cfg(members: &[(&str, Role)]) -> Config {
        let mut c = Config::default();
        c.node.name = members[0].0.to_string();
        c.members = members
            .iter()
            .map(|(n, r)| crate::member::Member {
                name: cluster_db::NodeName::parse(n).unwrap(),
                role: *r,
                host: "10.0.0.9".into(),
                port: 5432,
                api_url: format!("http://{n}:8008"),
                nofailover: false,
            })
            .collect();
        c
    }

    fn group(voters: &[&str], learners: &[&str]) -> (BTreeSet<NodeId>, BTreeMap<NodeId, Peer>) {
        let v = voters.iter().map(|n| member_id(n)).collect();
        let nodes = voters
            .iter()
            .chain(learners)
            .map(|n| (member_id(n), peer(n, &format!("http://{n}:8008"))))
            .collect();
        (v, nodes)
    }

    /// Applies `next_change` until there is none (at most 10 steps).
    fn converge(cfg: &Config, voters: &[&str], learners: &[&str]) -> (Vec<String>, Vec<String>) {
        let (mut v, mut nodes) = group(voters, learners);
        for _ in 0..10 {
            match next_change(&v, &nodes, cfg) {
                None => break,
                Some(Change::AddLearner(id, p)) => {
                    nodes.insert(id, p);
                }
                Some(Change::SetVoters(want)) => {
                    assert!(want.iter().all(|id| nodes.contains_key(id)));
                    v = want;
                }
                Some(Change::Remove(id)) => {
                    assert!(!v.contains(&id), "a voter removed without a voter change");
                    nodes.remove(&id);
                }
            }
        }
        assert_eq!(next_change(&v, &nodes, cfg), None, "did not converge");
        let mut vn: Vec<String> = v.iter().map(|id| nodes[id].name.clone()).collect();
        let mut ln: Vec<String> = nodes
            .iter()
            .filter(|(id, _)| !v.contains(id))
            .map(|(_, p)| p.name.clone())
            .collect();
        vn.sort();
        ln.sort();
        (vn, ln)
    }

    #[test]
    fn raft_is_timed_from_the_fleets_config_as_last_seen_else_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.node.state_file = dir.path().join("state.json");
        c.failover.timeout_secs = 30.0;
        c.failover.probe_interval_secs = 2.0;
        let election = |t: &Tuning| settings_for(t, 1, "/tmp/unused".into()).election_min;
        // No hint yet: the file.
        let (file, source) = raft_timing(&c);
        assert_eq!((source, file.timeout()), ("file", Duration::from_secs(30)));
        // The fleet lowered its TTL to 5 s (committed at revision 9), and
        // this member wrote the hint: its next start follows the fleet.
        let fleet = crate::tuning::from_file(&Config::default());
        let hint = |config: &DynamicConfig| {
            let h = TimingHint {
                revision: 9,
                config: config.clone(),
            };
            std::fs::write(timing_hint_file(&c), serde_json::to_vec(&h).unwrap()).unwrap();
        };
        hint(&fleet);
        let (t, source) = raft_timing(&c);
        assert_eq!(source, "fleet");
        assert_eq!(t.revision, Some(9));
        assert_eq!(t.timeout(), Duration::from_secs(5));
        assert!(election(&t) < election(&file));
        // A hint that breaks a rule, or does not parse: the file.
        let mut bad = fleet.clone();
        bad.probe_interval_ms = 10;
        hint(&bad);
        assert_eq!(raft_timing(&c).1, "file");
        std::fs::write(timing_hint_file(&c), b"{ not json").unwrap();
        assert_eq!(raft_timing(&c).1, "file");
    }

    #[test]
    fn a_lost_raft_leader_is_replaced_within_the_primarys_lease() {
        for (probe, timeout) in [(1.0, 5.0), (0.3, 1.5), (2.0, 30.0), (0.5, 2.0)] {
            let mut c = Config::default();
            c.node.state_file = "/nonexistent/aurora/state.json".into();
            c.failover.probe_interval_secs = probe;
            c.failover.timeout_secs = timeout;
            let s = settings(&c, "/tmp/unused".into());
            let budget = c.failover.lease() - c.failover.probe_interval();
            // A follower stands at most 2 × election_max after it last
            // heard the leader.
            assert!(
                s.election_max * 2 < budget,
                "probe {probe} s, timeout {timeout} s: a Raft leader is replaced after up to \
                 {:?}, the primary has {budget:?}",
                s.election_max * 2
            );
            assert!(s.heartbeat * 3 < s.election_min);
        }
    }

    #[test]
    fn a_group_that_matches_members_is_left_alone() {
        let c = cfg(&[
            ("lead", Role::Lead),
            ("backup", Role::Backup),
            ("c1", Role::Compute),
        ]);
        let (v, nodes) = group(&["lead", "backup", "c1"], &[]);
        assert_eq!(next_change(&v, &nodes, &c), None);
    }

    #[test]
    fn a_joined_node_becomes_a_learner_or_a_voter_by_its_place() {
        // Four members: three vote (an even count adds no fault
        // tolerance), the last compute node learns.
        let four = [
            ("lead", Role::Lead),
            ("backup", Role::Backup),
            ("c1", Role::Compute),
            ("c2", Role::Compute),
        ];
        let c = cfg(&four);
        let (v, nodes) = group(&["lead", "backup", "c1"], &[]);
        assert_eq!(
            next_change(&v, &nodes, &c),
            Some(Change::AddLearner(
                member_id("c2"),
                peer("c2", "http://c2:8008")
            ))
        );
        assert_eq!(
            converge(&c, &["lead", "backup", "c1"], &[]),
            (
                vec!["backup".into(), "c1".into(), "lead".into()],
                vec!["c2".into()]
            )
        );
        // A group that had four voters (an older version) gives one up.
        assert_eq!(
            converge(&c, &["lead", "backup", "c1", "c2"], &[]),
            (
                vec!["backup".into(), "c1".into(), "lead".into()],
                vec!["c2".into()]
            )
        );
        // A fifth member: five vote.
        let mut five = four.to_vec();
        five.push(("c3", Role::Compute));
        let (voters, learners) = converge(&cfg(&five), &["lead", "backup", "c1"], &["c2"]);
        assert_eq!(voters.len(), 5);
        assert!(learners.is_empty());
        // Two members: both vote; one: it alone.
        let (voters, _) = converge(&cfg(&four[..2]), &["lead"], &[]);
        assert_eq!(voters, ["backup", "lead"]);
        let (voters, _) = converge(&cfg(&four[..1]), &["lead"], &[]);
        assert_eq!(voters, ["lead"]);
        // A sixth member only learns.
        let c = cfg(&[
            ("lead", Role::Lead),
            ("backup", Role::Backup),
            ("c1", Role::Compute),
            ("c2", Role::Compute),
            ("c3", Role::Compute),
            ("c4", Role::Compute),
        ]);
        let (voters, learners) = converge(&c, &["lead", "backup", "c1", "c2", "c3"], &[]);
        assert_eq!(voters.len(), 5);
        assert_eq!(learners, ["c4"]);
    }

    #[test]
    fn a_removed_voter_is_replaced_then_leaves() {
        let c = cfg(&[
            ("lead", Role::Lead),
            ("backup", Role::Backup),
            ("c2", Role::Compute),
            ("c3", Role::Compute),
            ("c4", Role::Compute),
            ("c5", Role::Compute),
        ]);
        // c1 was a voter and is gone from members; c5 learned.
        let (v, nodes) = group(&["lead", "backup", "c1", "c2", "c3"], &["c4", "c5"]);
        match next_change(&v, &nodes, &c) {
            Some(Change::SetVoters(want)) => {
                assert!(!want.contains(&member_id("c1")));
                assert_eq!(want.len(), 5);
            }
            other => panic!("expected a voter change first, got {other:?}"),
        }
        let (voters, learners) = converge(&c, &["lead", "backup", "c1", "c2", "c3"], &["c4", "c5"]);
        assert!(!voters.contains(&"c1".to_string()) && !learners.contains(&"c1".to_string()));
        assert_eq!(voters.len() + learners.len(), 6);
    }

    #[test]
    fn a_group_whose_majority_is_not_configured_is_not_changed() {
        let c = cfg(&[
            ("c1", Role::Lead),
            ("c2", Role::Backup),
            ("c3", Role::Compute),
        ]);
        let (v, nodes) = group(&["lead", "backup", "c1"], &["c2", "c3"]);
        assert_eq!(next_change(&v, &nodes, &c), None);
    }

    #[test]
    fn a_group_is_lost_when_the_configured_members_hold_no_majority_of_its_voters() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<_>>();
        assert!(majority_kept(&set(&[1, 2, 3]), &set(&[1, 2, 3, 4])));
        assert!(majority_kept(&set(&[1, 2, 3]), &set(&[2, 3])));
        assert!(!majority_kept(&set(&[1, 2, 3]), &set(&[3])));
        assert!(!majority_kept(&set(&[1, 2, 3]), &set(&[3, 4, 5])));
        assert!(!majority_kept(&set(&[1, 2, 3, 4]), &set(&[1, 2])));
        assert!(majority_kept(&set(&[1, 2, 3, 4, 5]), &set(&[3, 4, 5])));
        // No group yet: nothing to lose.
        assert!(majority_kept(&set(&[]), &set(&[1])));
    }

    #[test]
    fn another_holder_at_a_newer_epoch_means_the_key_is_lost() {
        let k = LeaderKey {
            member: "backup".into(),
            epoch: 2,
            revision: 9,
            ttl_ms: 0,
        };
        assert_eq!(
            judge_other(&k, 1),
            Claim::Lost {
                holder: "backup".into(),
                epoch: 2
            }
        );
        assert!(matches!(judge_other(&k, 2), Claim::Unknown(_)));
        assert!(matches!(judge_other(&k, 3), Claim::Unknown(_)));
    }
}

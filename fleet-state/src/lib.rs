//! The fleet's replicated state on an embedded Raft group.
//!
//! Consensus is openraft's (the core of Databend's meta-service; chosen over
//! TiKV's raft-rs because it drives elections, replication and membership
//! changes itself behind storage and network traits, where raft-rs leaves
//! the event loop, message batching and persistence ordering to the
//! embedder). Its vote and log are fsynced in a redb file under the
//! member's state directory ([`store`]); its messages travel over the
//! repl-managers' admin HTTP ([`net`]). What the members agree on is small
//! and lives in [`model`]: Patroni's leader key and sync key.
//!
//! The interface is ours and small: [`FleetState::open`], [`initialize`],
//! [`propose`] (forwarded to the Raft leader when this member is not it),
//! [`view`] and [`subscribe`] for the applied state, [`read`] for a
//! linearizable one, [`serve`] for the messages peers send, and membership
//! changes. Nothing else of openraft leaks out.
//!
//! [`initialize`]: FleetState::initialize
//! [`propose`]: FleetState::propose
//! [`view`]: FleetState::view
//! [`subscribe`]: FleetState::subscribe
//! [`read`]: FleetState::read
//! [`serve`]: FleetState::serve

pub mod dynamic;
pub mod model;
pub mod net;
mod prevote;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, RaftMetrics};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use dynamic::{DynamicConfig, Refusal};
pub use model::{Command, FleetView, LeaderKey, Outcome, Succession, HISTORY_LEN};
pub use net::{HttpTransport, Message, Reply, Transport, TransportError};

/// A member's Raft identity. Aurora uses the member's VPN address as a
/// number: unique in the fleet by construction.
pub type NodeId = u64;

/// How to reach a member: its name and its repl-manager's admin URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// openraft's types for the fleet.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Peer,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Timing of the Raft group. Election timeouts are randomised in
/// `[election_min, election_max)` on each member's own clock.
#[derive(Clone, Debug)]
pub struct Settings {
    pub id: NodeId,
    pub dir: PathBuf,
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Entries between snapshots (the log is purged behind them).
    pub snapshot_every: u64,
    /// Hold elections back unless a majority of the voters hears no
    /// leader either (Pre-Vote: the `prevote` module). On by default; off only to show what
    /// it prevents.
    pub pre_vote: bool,
}

impl Settings {
    pub fn new(id: NodeId, dir: impl Into<PathBuf>) -> Settings {
        Settings {
            id,
            dir: dir.into(),
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            snapshot_every: 1000,
            pre_vote: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetStateError {
    #[error("fleet state store {path}: {reason}")]
    Store { path: String, reason: String },
    /// Another process (or handle) has the store open: its member runs.
    #[error("fleet state store {path} is in use (already open by a running member)")]
    InUse { path: String },
    #[error("fleet state settings: {0}")]
    Settings(String),
    #[error("no Raft leader is known yet (an election may be under way)")]
    NoLeader,
    #[error("the Raft leader {leader} did not take the command: {reason}")]
    Forward { leader: String, reason: String },
    #[error("fleet state: {0}")]
    Raft(String),
}

/// Resolves once `metrics` name a leader other than `id` (or none, as an
/// election starts); never while `id` leads.
async fn leader_replaced(mut metrics: watch::Receiver<RaftMetrics<NodeId, Peer>>, id: NodeId) {
    loop {
        if metrics.borrow_and_update().current_leader != Some(id) {
            return;
        }
        if metrics.changed().await.is_err() {
            // The Raft node stopped: nothing will change any more.
            std::future::pending::<()>().await;
        }
    }
}

fn store_error(path: &std::path::Path, e: redb::Error) -> FleetStateError {
    let path = path.display().to_string();
    match e {
        redb::Error::DatabaseAlreadyOpen => FleetStateError::InUse { path },
        e => FleetStateError::Store {
            path,
            reason: e.to_string(),
        },
    }
}

/// What a member's store holds, read without starting the member.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The voters of the group's last configuration.
    pub voters: BTreeMap<NodeId, Peer>,
    /// Its learners.
    pub learners: BTreeMap<NodeId, Peer>,
    /// The member's term.
    pub term: u64,
    /// The state as far as this member applied it.
    pub view: FleetView,
}

/// Reads the store under `dir` without starting the member (no timers, no
/// elections, no messages sent): what an operator's recovery needs to see.
/// `None` when there is no store. Fails like [`FleetState::open`] when the
/// store is in use (its member is running).
pub async fn inspect(dir: &std::path::Path) -> Result<Option<Stored>, FleetStateError> {
    let path = dir.join("raft.redb");
    if !path.exists() {
        return Ok(None);
    }
    let config = openraft::Config {
        cluster_name: "aurora".into(),
        enable_tick: false,
        enable_heartbeat: false,
        enable_elect: false,
        ..Default::default()
    }
    .validate()
    .map_err(|e| FleetStateError::Settings(e.to_string()))?;
    let (log, sm) = store::open(&path).map_err(|e| store_error(&path, e))?;
    let network = net::Network {
        transport: Arc::new(net::Nowhere),
    };
    let raft = Raft::new(0, Arc::new(config), network, log, sm.clone())
        .await
        .map_err(|e| FleetStateError::Raft(e.to_string()))?;
    let read = raft
        .with_raft_state(|st| {
            let m = st.membership_state.effective().membership().clone();
            let voters: BTreeSet<NodeId> = m.voter_ids().collect();
            let (mut v, mut l) = (BTreeMap::new(), BTreeMap::new());
            for (id, p) in m.nodes() {
                if voters.contains(id) {
                    v.insert(*id, p.clone());
                } else {
                    l.insert(*id, p.clone());
                }
            }
            (
                v,
                l,
                st.vote_ref().leader_id().term,
                st.committed.map(|c| c.index),
            )
        })
        .await
        .map_err(|e| FleetStateError::Raft(e.to_string()));
    let out = match read {
        Ok((voters, learners, term, committed)) => {
            // Entries committed before the restart are applied again at start.
            let _ = raft
                .wait(Some(Duration::from_secs(5)))
                .applied_index_at_least(committed, "the committed state applied")
                .await;
            Ok(Some(Stored {
                voters,
                learners,
                term,
                view: sm.view(),
            }))
        }
        Err(e) => Err(e),
    };
    let _ = raft.shutdown().await;
    out
}

/// One member's handle on the replicated state.
#[derive(Clone)]
pub struct FleetState {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: store::StateMachine,
    transport: Arc<dyn Transport>,
    heard: prevote::Heard,
    timing: prevote::Timing,
    gate: Arc<Gate>,
}

/// The pre-vote gate's task, stopped with the member (or when the last
/// handle on it is dropped).
struct Gate(Option<tokio::task::AbortHandle>);

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

impl FleetState {
    /// Opens the member's store under `settings.dir` (created if missing)
    /// and starts its Raft node. A fresh member waits to be initialized or
    /// added by the leader; a restarted one resumes with its vote and log.
    pub async fn open(
        settings: Settings,
        transport: Arc<dyn Transport>,
    ) -> Result<FleetState, FleetStateError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "aurora".into(),
            heartbeat_interval: ms(settings.heartbeat),
            election_timeout_min: ms(settings.election_min),
            election_timeout_max: ms(settings.election_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: settings.snapshot_every / 2,
            // With the pre-vote gate, a follower stands only once the gate
            // lets it.
            enable_elect: !settings.pre_vote,
            ..Default::default()
        }
        .validate()
        .map_err(|e| FleetStateError::Settings(e.to_string()))?;
        std::fs::create_dir_all(&settings.dir).map_err(|e| FleetStateError::Store {
            path: settings.dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = settings.dir.join("raft.redb");
        let (log, sm) = store::open(&path).map_err(|e| store_error(&path, e))?;
        let network = net::Network {
            transport: transport.clone(),
        };
        let raft = Raft::new(settings.id, Arc::new(config), network, log, sm.clone())
            .await
            .map_err(|e| FleetStateError::Raft(e.to_string()))?;
        let heard = prevote::Heard::default();
        let timing = prevote::Timing {
            quiet: settings.election_min,
            lease: settings.election_max,
            // openraft's timer: its leader lease (election_max) and then an
            // election timeout of at most election_max.
            defer: settings.election_max * 2,
        };
        let gate = settings.pre_vote.then(|| {
            tokio::spawn(prevote::run(
                settings.id,
                raft.clone(),
                transport.clone(),
                heard.clone(),
                sm.clone(),
                timing,
                settings.heartbeat,
            ))
            .abort_handle()
        });
        Ok(FleetState {
            id: settings.id,
            raft,
            sm,
            transport,
            heard,
            timing,
            gate: Arc::new(Gate(gate)),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Makes `voters` the group's first configuration. Harmless on a group
    /// that already has one (a restart, or another member was first).
    pub async fn initialize(&self, voters: BTreeMap<NodeId, Peer>) -> Result<(), FleetStateError> {
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(FleetStateError::Raft(e.to_string())),
        }
    }

    /// Commits `cmd` through the Raft leader (forwarded when this member is
    /// not it) and returns what applying it did. A `Conflict` is an answer,
    /// not an error: the condition did not hold.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, FleetStateError> {
        match self.raft.client_write(cmd.clone()).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let (Some(id), Some(node)) = (f.leader_id, f.leader_node) else {
                    return Err(FleetStateError::NoLeader);
                };
                let fail = |reason: String| FleetStateError::Forward {
                    leader: node.to_string(),
                    reason,
                };
                // A leader that went away without a word (no RST) would hold
                // the caller for the whole transport timeout, past the
                // election that replaces it: give up on it as soon as this
                // member knows another leader, or none, and let the caller
                // try the new one.
                let call = self.transport.call(id, &node, Message::Propose(cmd));
                let replaced = leader_replaced(self.raft.metrics(), id);
                let answer = tokio::select! {
                    a = call => a,
                    () = replaced => {
                        return Err(fail("the group elected another leader meanwhile".into()))
                    }
                };
                match answer {
                    Ok(Reply::Propose(Ok(o))) => Ok(o),
                    Ok(Reply::Propose(Err(e))) => Err(fail(e)),
                    Ok(other) => Err(fail(format!("an answer of the wrong kind: {other:?}"))),
                    Err(e) => Err(fail(e.to_string())),
                }
            }
            Err(e) => Err(FleetStateError::Raft(e.to_string())),
        }
    }

    /// The state as this member has applied it (may lag the leader's).
    pub fn view(&self) -> FleetView {
        self.sm.view()
    }

    /// Reads part of the applied state without copying the rest (the
    /// callers that ask every round, for one field).
    pub fn read_view<T>(&self, f: impl FnOnce(&FleetView) -> T) -> T {
        self.sm.read_view(f)
    }

    /// Every applied change, as it happens.
    pub fn subscribe(&self) -> watch::Receiver<FleetView> {
        self.sm.subscribe()
    }

    /// The state as of now, linearizable: only on the Raft leader, after it
    /// confirmed with a quorum that it still leads.
    pub async fn read(&self) -> Result<FleetView, FleetStateError> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| FleetStateError::Raft(e.to_string()))?;
        Ok(self.view())
    }

    /// This member's current Raft term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The Raft leader this member knows of.
    pub fn raft_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The voters of the configuration this member has, read through its
    /// Raft core (so loaded from the store, unlike [`FleetState::members`]
    /// right after [`FleetState::open`]).
    pub async fn voters_now(&self) -> Result<BTreeMap<NodeId, Peer>, FleetStateError> {
        self.raft
            .with_raft_state(|st| {
                let m = st.membership_state.effective().membership().clone();
                let voters: BTreeSet<NodeId> = m.voter_ids().collect();
                m.nodes()
                    .filter(|(id, _)| voters.contains(id))
                    .map(|(id, p)| (*id, p.clone()))
                    .collect()
            })
            .await
            .map_err(|e| FleetStateError::Raft(e.to_string()))
    }

    /// The voters and learners of the current configuration.
    pub fn members(&self) -> (BTreeSet<NodeId>, BTreeMap<NodeId, Peer>) {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters = m.membership().voter_ids().collect();
        let nodes = m
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        (voters, nodes)
    }

    /// Adds a member that receives the log but does not vote (a new node
    /// joining). On the Raft leader only.
    pub async fn add_learner(&self, id: NodeId, peer: Peer) -> Result<(), FleetStateError> {
        self.raft
            .add_learner(id, peer, true)
            .await
            .map(|_| ())
            .map_err(|e| FleetStateError::Raft(e.to_string()))
    }

    /// Makes `voters` the voting members (learners among them are
    /// promoted, voters not among them become learners). On the Raft
    /// leader only.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), FleetStateError> {
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await
            .map(|_| ())
            .map_err(|e| FleetStateError::Raft(e.to_string()))
    }

    /// Takes `id` out of the group altogether. On the Raft leader only.
    pub async fn remove(&self, id: NodeId) -> Result<(), FleetStateError> {
        let (voters, _) = self.members();
        if voters.contains(&id) {
            let rest: BTreeSet<NodeId> = voters.into_iter().filter(|v| *v != id).collect();
            self.set_voters(rest).await?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map(|_| ())
            .map_err(|e| FleetStateError::Raft(e.to_string()))
    }

    /// Answers a message from a peer (what the admin server's
    /// `POST /fleet/raft` calls).
    pub async fn serve(&self, msg: Message) -> Reply {
        match msg {
            Message::Append(r) => {
                let answer = self.raft.append_entries(r).await;
                // A leader this member accepts (one refused for its term
                // answers HigherVote): elections are not needed.
                if matches!(
                    answer,
                    Ok(openraft::raft::AppendEntriesResponse::Success
                        | openraft::raft::AppendEntriesResponse::PartialSuccess(_)
                        | openraft::raft::AppendEntriesResponse::Conflict)
                ) {
                    self.heard.now();
                }
                Reply::Append(answer)
            }
            Message::PreVote { from } => {
                let granted =
                    prevote::grants(prevote::standing(&self.raft, &self.heard), self.timing);
                tracing::debug!(from, granted, "pre-vote asked");
                Reply::PreVote { granted }
            }
            Message::Vote(r) => Reply::Vote(self.raft.vote(r).await),
            Message::Snapshot(r) => Reply::Snapshot(self.raft.install_snapshot(r).await),
            Message::Propose(cmd) => Reply::Propose(match self.raft.client_write(cmd).await {
                Ok(r) => Ok(r.data),
                Err(e) => Err(e.to_string()),
            }),
        }
    }

    /// `POST /fleet/raft` on the admin server (which has checked the admin
    /// token before routing): the body is a [`Message`]; a body that is not
    /// one is answered 400 with the reason and changes nothing.
    pub async fn handle_http(
        &self,
        req: &sidecar_kit::admin::AdminRequest,
    ) -> sidecar_kit::admin::AdminResponse {
        use sidecar_kit::admin::AdminResponse;
        match serde_json::from_slice::<Message>(&req.body) {
            Ok(msg) => AdminResponse::ok(&self.serve(msg).await),
            Err(e) => AdminResponse::error(
                hyper::StatusCode::BAD_REQUEST,
                format!("not a fleet-state message: {e}"),
            ),
        }
    }

    /// Stops the Raft node (its store stays for the next open).
    pub async fn shutdown(&self) {
        if let Some(h) = &self.gate.0 {
            h.abort();
        }
        let _ = self.raft.shutdown().await;
    }
}

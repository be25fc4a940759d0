//! An in-process group for tests and simulations (feature `testkit`):
//! each member a real [`FleetState`] with its own store directory, joined
//! by a router that delivers messages as calls and can cut a link one way
//! (refused at once, as with an RST), black-hole it (no answer ever), drop
//! the answer only, or lose a member entirely. Never used in production;
//! its panics are a test's failures.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    FleetState, FleetView, Message, NodeId, Peer, Reply, Settings, Transport, TransportError,
};
use async_trait::async_trait;

/// How long a caller takes to notice that the answer to its message was
/// lost on a link cut the other way.
const LOST_ANSWER_NOTICED_AFTER: Duration = Duration::from_millis(200);

#[derive(Default)]
pub struct Router {
    nodes: Mutex<BTreeMap<NodeId, FleetState>>,
    /// (from, to): refused at once.
    cut: Mutex<BTreeSet<(NodeId, NodeId)>>,
    /// (from, to): delivered nowhere, answered never.
    holes: Mutex<BTreeSet<(NodeId, NodeId)>>,
    /// Members whose process is paused (SIGSTOP): what is sent to or by
    /// them waits, as in a socket's queue, until they resume.
    frozen: Mutex<BTreeSet<NodeId>>,
}

impl Router {
    fn frozen(&self, a: NodeId, b: NodeId) -> bool {
        let f = self.frozen.lock().unwrap();
        f.contains(&a) || f.contains(&b)
    }

    async fn thawed(&self, a: NodeId, b: NodeId) {
        while self.frozen(a, b) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct Port {
    from: NodeId,
    router: Arc<Router>,
}

#[async_trait]
impl Transport for Port {
    async fn call(&self, to: NodeId, peer: &Peer, msg: Message) -> Result<Reply, TransportError> {
        let r = &self.router;
        r.thawed(self.from, to).await;
        if r.holes.lock().unwrap().contains(&(self.from, to)) {
            std::future::pending::<()>().await;
        }
        if r.cut.lock().unwrap().contains(&(self.from, to)) {
            return Err(TransportError::Unreachable(peer.to_string()));
        }
        let node = r.nodes.lock().unwrap().get(&to).cloned();
        let Some(node) = node else {
            return Err(TransportError::Unreachable(peer.to_string()));
        };
        let reply = node.serve(msg).await;
        r.thawed(self.from, to).await;
        // The way back: a cut or black-holed return path loses the answer
        // after the message did its work.
        if r.holes.lock().unwrap().contains(&(to, self.from)) {
            std::future::pending::<()>().await;
        }
        if r.cut.lock().unwrap().contains(&(to, self.from)) {
            // Noticed only when the connection gives up, not at once: an
            // instant error made openraft resend in a loop that, under a
            // simulation's paused clock, never let time move on.
            tokio::time::sleep(LOST_ANSWER_NOTICED_AFTER).await;
            return Err(TransportError::Failed(format!(
                "{peer}: the answer was lost"
            )));
        }
        Ok(reply)
    }
}

pub struct Group {
    pub router: Arc<Router>,
    pub dirs: BTreeMap<NodeId, tempfile::TempDir>,
    pub names: BTreeMap<NodeId, String>,
    pub pre_vote: bool,
}

pub fn name(id: NodeId) -> String {
    match id {
        1 => "lead".into(),
        2 => "backup".into(),
        n => format!("c{}", n - 2),
    }
}

pub fn peer(id: NodeId) -> Peer {
    Peer {
        name: name(id),
        addr: format!("mem://{id}"),
    }
}

impl Group {
    /// `n` members, 1..=n, the first three voters, initialized by member 1.
    pub async fn start(n: u64) -> Group {
        Group::start_with(n, true).await
    }

    /// As [`Group::start`], with the pre-vote gate on or off.
    pub async fn start_with(n: u64, pre_vote: bool) -> Group {
        let mut g = Group {
            router: Arc::new(Router::default()),
            dirs: BTreeMap::new(),
            names: BTreeMap::new(),
            pre_vote,
        };
        for id in 1..=n {
            g.dirs.insert(id, tempfile::tempdir().unwrap());
            g.names.insert(id, name(id));
            g.open(id).await;
        }
        let voters: BTreeMap<NodeId, Peer> = (1..=n.min(3)).map(|id| (id, peer(id))).collect();
        g.node(1).initialize(voters).await.unwrap();
        let first: Vec<NodeId> = (1..=n.min(3)).collect();
        for id in 4..=n {
            let leader = g.wait_leader_among(&first, Duration::from_secs(10)).await;
            g.node(leader).add_learner(id, peer(id)).await.unwrap();
        }
        g.wait_leader(Duration::from_secs(10)).await;
        g
    }

    pub fn settings(&self, id: NodeId) -> Settings {
        let mut s = Settings::new(id, self.dirs[&id].path());
        // Fast, as a test wants; the order of the timings is production's.
        s.heartbeat = Duration::from_millis(50);
        s.election_min = Duration::from_millis(300);
        s.election_max = Duration::from_millis(600);
        s.snapshot_every = 20;
        s.pre_vote = self.pre_vote;
        s
    }

    /// Starts (or restarts) member `id` from its store.
    pub async fn open(&self, id: NodeId) -> FleetState {
        let port = Port {
            from: id,
            router: self.router.clone(),
        };
        let port: Arc<dyn Transport> = Arc::new(port);
        // A crashed member's tasks may still be letting go of its store
        // (openraft's workers finish after shutdown returns); a real
        // restart is a new process and never meets this.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let node = loop {
            match FleetState::open(self.settings(id), port.clone()).await {
                Ok(n) => break n,
                Err(e)
                    if e.to_string().contains("already open")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("member {id} does not open: {e}"),
            }
        };
        self.router.nodes.lock().unwrap().insert(id, node.clone());
        node
    }

    pub fn node(&self, id: NodeId) -> FleetState {
        self.router.nodes.lock().unwrap()[&id].clone()
    }

    /// Member `id`, unless it is crashed.
    pub fn node_if_open(&self, id: NodeId) -> Option<FleetState> {
        self.router.nodes.lock().unwrap().get(&id).cloned()
    }

    pub fn live(&self) -> Vec<NodeId> {
        self.router.nodes.lock().unwrap().keys().copied().collect()
    }

    /// A crash: the member stops answering and its process is gone; only
    /// its store remains.
    pub async fn crash(&self, id: NodeId) {
        let node = self.router.nodes.lock().unwrap().remove(&id);
        if let Some(n) = node {
            n.shutdown().await;
        }
    }

    /// Cuts `a` off from every other member, both ways.
    pub fn isolate(&self, a: NodeId) {
        for b in self.dirs.keys().copied().filter(|b| *b != a) {
            self.cut(a, b);
            self.cut(b, a);
        }
    }

    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.router.cut.lock().unwrap().insert((from, to));
    }

    pub fn black_hole(&self, from: NodeId, to: NodeId) {
        self.router.holes.lock().unwrap().insert((from, to));
    }

    /// Whether a packet from `from` reaches `to` now (both members' hosts
    /// up, the link neither cut nor black-holed that way).
    pub fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        let r = &self.router;
        !r.cut.lock().unwrap().contains(&(from, to))
            && !r.holes.lock().unwrap().contains(&(from, to))
    }

    /// Pauses member `id`'s process (its messages wait) or resumes it.
    pub fn freeze(&self, id: NodeId, frozen: bool) {
        let mut f = self.router.frozen.lock().unwrap();
        if frozen {
            f.insert(id);
        } else {
            f.remove(&id);
        }
    }

    pub fn heal(&self) {
        self.router.cut.lock().unwrap().clear();
        self.router.holes.lock().unwrap().clear();
    }

    /// A Raft leader that every live member agrees on.
    pub async fn wait_leader(&self, within: Duration) -> NodeId {
        self.wait_leader_among(&self.live(), within).await
    }

    pub async fn wait_leader_among(&self, ids: &[NodeId], within: Duration) -> NodeId {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen: BTreeSet<Option<NodeId>> =
                ids.iter().map(|id| self.node(*id).raft_leader()).collect();
            if seen.len() == 1 {
                if let Some(Some(l)) = seen.into_iter().next() {
                    if ids.contains(&l) {
                        return l;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed Raft leader among {ids:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every live member has applied the same state.
    pub async fn wait_converged(&self, within: Duration) -> FleetView {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let views: Vec<FleetView> =
                self.live().iter().map(|id| self.node(*id).view()).collect();
            if views.windows(2).all(|w| w[0] == w[1]) {
                return views[0].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "members did not converge within {within:?}: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(&self) {
        for id in self.live() {
            self.crash(id).await;
        }
    }
}

/// splitmix64: a small, seedable, reproducible generator for fault
/// schedules.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for a schedule (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A duration in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.below(hi - lo))
    }
}

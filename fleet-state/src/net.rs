//! How members reach each other: one [`Transport`] call per Raft message,
//! served by the receiver's [`crate::FleetState::serve`]. Production uses
//! [`HttpTransport`] (a token-checked `POST` to the peer's repl-manager
//! admin server, inside the VPN); the tests use an in-process transport
//! that can cut, delay and black-hole links.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use sidecar_kit::http_client::HttpClient;
use sidecar_kit::Secret;

use crate::model::{Command, Outcome};
use crate::{NodeId, Peer, TypeConfig};

/// A message from one member to another. Externally tagged (`{"append":
/// {...}}`): an internally tagged enum is buffered before it is decoded,
/// and that loses the integer keys of openraft's membership maps (JSON
/// writes them as strings), which the HTTP test caught.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command sent to the Raft leader by a member that is not it.
    Propose(Command),
    /// Would the receiver take part in an election now? (Pre-Vote: the
    /// `prevote` module.)
    PreVote {
        from: NodeId,
    },
}

/// The answer to a [`Message`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(Result<Outcome, String>),
    PreVote { granted: bool },
}

/// Why a message got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Nothing answers there (refused, no route): the peer is down.
    #[error("{0}: unreachable")]
    Unreachable(String),
    /// It may have arrived; no answer came.
    #[error("{0}")]
    Failed(String),
}

/// Delivers one message to `to` and returns its answer. Implementations
/// need not bound the time: the caller does.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn call(&self, to: NodeId, peer: &Peer, msg: Message) -> Result<Reply, TransportError>;
}

/// `POST {peer.addr}/fleet/raft` with the admin token: the peer's
/// repl-manager hands the body to its [`crate::FleetState::serve`].
pub struct HttpTransport {
    http: HttpClient,
    token: Option<Secret>,
}

impl HttpTransport {
    pub const PATH: &'static str = "/fleet/raft";

    pub fn new(token: Option<Secret>, timeout: Duration) -> HttpTransport {
        HttpTransport {
            http: HttpClient::new(timeout),
            token,
        }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, _to: NodeId, peer: &Peer, msg: Message) -> Result<Reply, TransportError> {
        let url = format!("{}{}", peer.addr.trim_end_matches('/'), Self::PATH);
        let body = serde_json::to_value(&msg).map_err(|e| TransportError::Failed(e.to_string()))?;
        let resp = self
            .http
            .send(hyper::Method::POST, &url, self.token.as_ref(), Some(&body))
            .await
            .map_err(|e| match e {
                sidecar_kit::http_client::HttpError::Transport { ref reason, .. }
                    if reason.contains("onnection refused") || reason.contains("o route") =>
                {
                    TransportError::Unreachable(e.to_string())
                }
                other => TransportError::Failed(other.to_string()),
            })?;
        if !resp.status.is_success() {
            return Err(TransportError::Failed(format!(
                "{url}: answered {}: {}",
                resp.status,
                resp.text()
            )));
        }
        resp.json(&url)
            .map_err(|e| TransportError::Failed(e.to_string()))
    }
}

/// A transport that reaches no one (for reading a store offline).
pub(crate) struct Nowhere;

#[async_trait]
impl Transport for Nowhere {
    async fn call(&self, _to: NodeId, peer: &Peer, _msg: Message) -> Result<Reply, TransportError> {
        Err(TransportError::Unreachable(format!(
            "{peer}: not sent (store read offline)"
        )))
    }
}

/// openraft's network over a [`Transport`].
pub(crate) struct Network {
    pub(crate) transport: Arc<dyn Transport>,
}

pub(crate) struct Connection {
    transport: Arc<dyn Transport>,
    target: NodeId,
    peer: Peer,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Connection {
        Connection {
            transport: self.transport.clone(),
            target,
            peer: node.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Peer, RaftError<NodeId, E>>;

impl Connection {
    async fn send<E>(
        &self,
        action: RPCTypes,
        msg: Message,
        option: &RPCOption,
    ) -> Result<Reply, RpcErr<E>>
    where
        E: std::error::Error,
    {
        let ttl = option.hard_ttl();
        match tokio::time::timeout(ttl, self.transport.call(self.target, &self.peer, msg)).await {
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.target,
                target: self.target,
                timeout: ttl,
            })),
            Ok(Err(TransportError::Unreachable(e))) => Err(RPCError::Unreachable(
                Unreachable::new(&std::io::Error::other(e)),
            )),
            Ok(Err(TransportError::Failed(e))) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(e),
            ))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    fn unexpected<E: std::error::Error>(&self, r: &Reply) -> RpcErr<E> {
        RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "{}: an answer of the wrong kind: {r:?}",
            self.peer
        ))))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self
            .send(RPCTypes::AppendEntries, Message::Append(rpc), &option)
            .await?
        {
            Reply::Append(Ok(r)) => Ok(r),
            Reply::Append(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .send(RPCTypes::InstallSnapshot, Message::Snapshot(rpc), &option)
            .await?
        {
            Reply::Snapshot(Ok(r)) => Ok(r),
            Reply::Snapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self
            .send(RPCTypes::Vote, Message::Vote(rpc), &option)
            .await?
        {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }
}

//! openraft's network: AppendEntries, Vote and InstallSnapshot to one peer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::Connector;
use crate::codec::{self, ChunkHeader};
use crate::proto::raft::raft_client::RaftClient;
use crate::proto::raft::{RaftMessage, SnapshotChunk};
use crate::types::{NodeId, Peer, TypeConfig};

/// Creates a [`PeerNetwork`] per replication target.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    connector: Connector,
    rpc_timeout: Duration,
    /// Per peer: how its RPCs have been failing, shared by every connection
    /// to it, so the log says so once per interval instead of per RPC.
    health: Arc<Mutex<BTreeMap<NodeId, Failing>>>,
}

impl PeerNetworkFactory {
    pub fn new(connector: Connector, rpc_timeout: Duration) -> Self {
        PeerNetworkFactory {
            connector,
            rpc_timeout,
            health: Arc::default(),
        }
    }
}

/// Timeouts in a row after which a peer's connection is replaced.
pub const REDIAL_AFTER_TIMEOUTS: u32 = 2;

/// How often a peer that keeps failing is mentioned in the log.
pub const FAILURE_SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// A peer whose RPCs fail: since when, how many since the last log line.
#[derive(Debug)]
struct Failing {
    since: Instant,
    reported: Instant,
    unreported: u64,
    total: u64,
}

/// Records an RPC outcome for `target`, logging the first failure, then one
/// summary line per [`FAILURE_SUMMARY_EVERY`], then the recovery.
fn record(health: &Mutex<BTreeMap<NodeId, Failing>>, target: NodeId, addr: &str, failure: Option<&str>) {
    let mut health = health.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match (failure, health.get_mut(&target)) {
        (None, None) => {}
        (None, Some(_)) => {
            let f = health.remove(&target).expect("present");
            tracing::info!(
                "node {target} at {addr}: answering again after {} ({} failed RPCs)",
                humantime::format_duration(Duration::from_secs(now.duration_since(f.since).as_secs())),
                f.total
            );
        }
        (Some(error), None) => {
            tracing::warn!(
                "node {target} at {addr}: RPC failed, retrying with backoff (repeats are summarised every {}): {error}",
                humantime::format_duration(FAILURE_SUMMARY_EVERY)
            );
            health.insert(
                target,
                Failing {
                    since: now,
                    reported: now,
                    unreported: 0,
                    total: 1,
                },
            );
        }
        (Some(error), Some(f)) => {
            f.total += 1;
            f.unreported += 1;
            if now.duration_since(f.reported) >= FAILURE_SUMMARY_EVERY {
                tracing::warn!(
                    "node {target} at {addr}: still failing after {}: {} failed RPCs in the last {} (last: {error})",
                    humantime::format_duration(Duration::from_secs(now.duration_since(f.since).as_secs())),
                    f.unreported,
                    humantime::format_duration(Duration::from_secs(now.duration_since(f.reported).as_secs()))
                );
                f.reported = now;
                f.unreported = 0;
            }
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Self::Network {
        PeerNetwork {
            target,
            addr: node.addr.clone(),
            client: self.connector.raft_client(&node.addr),
            connector: self.connector.clone(),
            timeouts: 0,
            rpc_timeout: self.rpc_timeout,
            health: self.health.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, super::BadAddress>,
    connector: Connector,
    /// RPCs in a row that timed out; at [`REDIAL_AFTER_TIMEOUTS`] the
    /// connection is replaced.
    timeouts: u32,
    rpc_timeout: Duration,
    health: Arc<Mutex<BTreeMap<NodeId, Failing>>>,
}

type RpcErr<E> = RPCError<NodeId, Peer, RaftError<NodeId, E>>;

impl PeerNetwork {
    fn client<E: std::error::Error>(&self) -> Result<RaftClient<Channel>, RpcErr<E>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn timeout(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().min(self.rpc_timeout.max(option.soft_ttl()))
    }

    /// Maps a transport failure: a peer we cannot reach makes openraft back off;
    /// anything else is retried at once. Timeouts in a row replace the
    /// connection: a peer that answers others but not this one is most
    /// likely behind a wedged connection, which a new one gets past.
    fn status_err<E: std::error::Error>(&mut self, status: tonic::Status) -> RpcErr<E> {
        let timed_out = matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded);
        self.timeouts = if timed_out { self.timeouts + 1 } else { 0 };
        if self.timeouts >= REDIAL_AFTER_TIMEOUTS {
            tracing::debug!(target = self.target, addr = %self.addr, "RPCs keep timing out: dialing a new connection");
            self.connector.forget(&self.addr);
            self.client = self.connector.raft_client(&self.addr);
            self.timeouts = 0;
        }
        let err = PeerError {
            addr: self.addr.clone(),
            target: self.target,
            status,
        };
        record(
            &self.health,
            self.target,
            &self.addr,
            Some(&format!("{:?}: {}", err.status.code(), err.status.message())),
        );
        match err.status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&err))
            }
            _ => RPCError::Network(NetworkError::new(&err)),
        }
    }

    fn answered(&mut self) {
        self.timeouts = 0;
        record(&self.health, self.target, &self.addr, None);
    }

    fn decode<T, E>(&self, msg: RaftMessage) -> Result<T, RpcErr<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let res: Result<T, RaftError<NodeId, E>> =
            codec::decode(&msg.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                Peer {
                    addr: self.addr.clone(),
                },
                e,
            ))
        })
    }
}

/// A failed RPC to a named peer.
#[derive(Debug, thiserror::Error)]
#[error("RPC to node {target} at {addr} failed: {:?}: {}", status.code(), status.message())]
struct PeerError {
    addr: String,
    target: NodeId,
    status: tonic::Status,
}

fn encode<T: Serialize, E: std::error::Error>(v: &T) -> Result<RaftMessage, RpcErr<E>> {
    codec::encode(v).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let mut client = self.client()?;
        let req = with_timeout(encode(&rpc)?, self.timeout(&option));
        let resp = client.append_entries(req).await.map_err(|s| self.status_err(s))?;
        self.answered();
        self.decode(resp.into_inner())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let mut client = self.client()?;
        let header = ChunkHeader {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            done: rpc.done,
        };
        let header = encode(&header)?.payload;
        let chunk = SnapshotChunk { header, data: rpc.data };
        let req = with_timeout(chunk, option.hard_ttl());
        let resp = client.install_snapshot(req).await.map_err(|s| self.status_err(s))?;
        self.answered();
        self.decode(resp.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let mut client = self.client()?;
        let req = with_timeout(encode(&rpc)?, self.timeout(&option));
        let resp = client.vote(req).await.map_err(|s| self.status_err(s))?;
        self.answered();
        self.decode(resp.into_inner())
    }

    /// 250 ms, doubling to 2 s while the peer stays unreachable (openraft
    /// resets it on the next answer): a dead peer costs half an RPC a second,
    /// and one that returns is caught up within 2 s.
    fn backoff(&self) -> Backoff {
        Backoff::new((0u32..).map(|i| Duration::from_millis(250) * (1 << i.min(3))))
    }
}

//! Handlers of the internal Raft service: openraft RPCs from peers, proposals
//! forwarded by followers, and read-index requests.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{auth, status};
use crate::agent::{Agent, Committed, ProposeError};
use crate::codec::{self, ChunkHeader, ForwardRequest, HintRequest};
use crate::propose::Observer;
use crate::proto::raft::raft_server::Raft;
use crate::proto::raft::{RaftMessage, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use crate::types::{NodeId, TypeConfig};

pub struct RaftService {
    agent: Arc<Agent>,
    /// Whose probes a peer's hint starts.
    observer: Arc<Observer>,
}

impl RaftService {
    pub fn new(agent: Arc<Agent>, observer: Arc<Observer>) -> Self {
        RaftService { agent, observer }
    }

    /// Admits a Raft message: the sender's certificate must be the node the
    /// message names, that node must be (known to be) a member, and the term
    /// it carries must be within reach of this node's own (a term far ahead
    /// is a forgery or a bug, and openraft cannot recover from a term at the
    /// end of the number range).
    fn admit<T>(
        &self,
        req: &Request<T>,
        verified: Option<NodeId>,
        vote: &openraft::Vote<NodeId>,
        rpc: &str,
    ) -> Result<(), Status> {
        let Some(sender) = vote.leader_id().voted_for() else {
            return Err(Status::invalid_argument(format!("{rpc}: the vote names no node")));
        };
        auth::claims(req, verified, sender, rpc)?;
        let term = vote.leader_id().get_term();
        let mine = self.agent.term();
        if term > mine.saturating_add(MAX_TERM_LEAD) {
            let why = format!(
                "{rpc} from node {sender} refused: term {term} is beyond any reachable term (this node is at {mine})"
            );
            auth::log_refusal(&format!("node {sender}"), &why);
            return Err(Status::invalid_argument(why));
        }
        if self.agent.admits(sender) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{rpc} from node {sender} refused: node {sender} is not a member of this cluster"
            )))
        }
    }
}

/// How far ahead of this node's term a peer's may be: a node that campaigned
/// alone every second for eleven days gets there; a forged term does not.
const MAX_TERM_LEAD: u64 = 1_000_000;

fn decode<T: DeserializeOwned>(bytes: &[u8], rpc: &str) -> Result<T, Status> {
    codec::decode(bytes).map_err(|e| Status::invalid_argument(format!("malformed {rpc} payload: {e}")))
}

fn reply<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    codec::encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let me = auth::node(&self.agent, &req, "AppendEntries")?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.get_ref().payload, "AppendEntries")?;
        self.admit(&req, me, &rpc.vote, "AppendEntries")?;
        reply(&self.agent.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let me = auth::node(&self.agent, &req, "Vote")?;
        let rpc: VoteRequest<NodeId> = decode(&req.get_ref().payload, "Vote")?;
        self.admit(&req, me, &rpc.vote, "Vote")?;
        reply(&self.agent.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<SnapshotChunk>) -> Result<Response<RaftMessage>, Status> {
        let me = auth::node(&self.agent, &req, "InstallSnapshot")?;
        let header: ChunkHeader = decode(&req.get_ref().header, "InstallSnapshot")?;
        self.admit(&req, me, &header.vote, "InstallSnapshot")?;
        let chunk = req.into_inner();
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: header.vote,
            meta: header.meta,
            offset: header.offset,
            data: chunk.data,
            done: header.done,
        };
        reply(&self.agent.install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let me = auth::node(&self.agent, &req, "Forward")?;
        let fwd: ForwardRequest = decode(&req.get_ref().payload, "Forward")?;
        auth::claims(&req, me, fwd.sender, "Forward")?;
        let (nodes, _) = self.agent.members();
        if !nodes.contains_key(&fwd.sender) {
            return Err(Status::permission_denied(format!(
                "proposal forwarded by node {} refused: it is not a member of this cluster",
                fwd.sender
            )));
        }
        // Only the leader stamps and commits; a stale follower view is answered, not re-forwarded.
        let res: Result<Committed, ProposeError> = if self.agent.is_leader() {
            self.agent.propose_as_leader(fwd.sender, fwd.command).await
        } else {
            Err(ProposeError::NotLeader {
                leader: self.agent.leader().map(|(id, _)| id),
            })
        };
        reply(&res)
    }

    async fn hint(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let me = auth::node(&self.agent, &req, "Hint")?;
        let hint: HintRequest = decode(&req.get_ref().payload, "Hint")?;
        auth::claims(&req, me, hint.sender, "Hint")?;
        let (nodes, _) = self.agent.members();
        if !nodes.contains_key(&hint.sender) || hint.sender == self.agent.id() {
            return Err(Status::permission_denied(format!(
                "hint from node {} refused: it is not a peer in this cluster",
                hint.sender
            )));
        }
        // Bounded: ids this agent does not probe are ignored, and each
        // endpoint honours one hint per interval.
        let started: Vec<&String> = hint
            .endpoints
            .iter()
            .take(1024)
            .filter(|e| self.observer.endpoints.hint(e))
            .collect();
        if !started.is_empty() {
            tracing::debug!(from = hint.sender, endpoints = ?started, "peer suspects endpoints: probing them now");
        }
        Ok(Response::new(RaftMessage { payload: Vec::new() }))
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        auth::node(&self.agent, &req, "ReadIndex")?;
        match self.agent.confirm_leadership().await {
            Ok(read) => Ok(Response::new(ReadIndexResponse {
                read_index: read.map(|l| l.index).unwrap_or(0),
            })),
            Err(e) => match e.forward_to_leader() {
                Some(f) => {
                    Err(status::not_leader(f.leader_id.map(|id| {
                        (id, f.leader_node.clone().map(|n| n.addr).unwrap_or_default())
                    })))
                }
                None => Err(Status::unavailable(format!("cannot confirm leadership: {e}"))),
            },
        }
    }
}

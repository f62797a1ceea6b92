//! Handlers of the internal Raft service: openraft RPCs from peers, proposals
//! forwarded by followers, and read-index requests.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::status;
use crate::agent::{Agent, Committed, ProposeError};
use crate::codec::{self, ChunkHeader, ForwardRequest};
use crate::proto::raft::raft_server::Raft;
use crate::proto::raft::{RaftMessage, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use crate::types::{NodeId, TypeConfig};

pub struct RaftService {
    agent: Arc<Agent>,
}

impl RaftService {
    pub fn new(agent: Arc<Agent>) -> Self {
        RaftService { agent }
    }

    /// Refuses traffic from a node that is not (known to be) a member.
    fn admit(&self, sender: Option<NodeId>, rpc: &str) -> Result<(), Status> {
        let Some(sender) = sender else {
            return Err(Status::invalid_argument(format!("{rpc}: the vote names no node")));
        };
        if self.agent.admits(sender) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{rpc} from node {sender} refused: node {sender} is not a member of this cluster"
            )))
        }
    }
}

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
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.get_ref().payload, "AppendEntries")?;
        self.admit(rpc.vote.leader_id().voted_for(), "AppendEntries")?;
        reply(&self.agent.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(&req.get_ref().payload, "Vote")?;
        self.admit(rpc.vote.leader_id().voted_for(), "Vote")?;
        reply(&self.agent.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<SnapshotChunk>) -> Result<Response<RaftMessage>, Status> {
        let chunk = req.into_inner();
        let header: ChunkHeader = decode(&chunk.header, "InstallSnapshot")?;
        self.admit(header.vote.leader_id().voted_for(), "InstallSnapshot")?;
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
        let fwd: ForwardRequest = decode(&req.get_ref().payload, "Forward")?;
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

    async fn read_index(&self, _req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
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

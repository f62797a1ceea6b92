//! Mapping of internal errors to gRPC statuses, in one place.

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::agent::ProposeError;
use crate::types::{NodeId, Peer};

/// Set on an admin call a follower forwarded to the leader, so it is not forwarded twice.
pub const FORWARDED_HEADER: &str = "x-vantage-forwarded";
/// Carries the leader's address on an `Unavailable` answer from a follower.
pub const LEADER_HEADER: &str = "x-vantage-leader";

/// `Unavailable`, naming the leader (and its address in [`LEADER_HEADER`]) when known.
pub fn not_leader(leader: Option<(NodeId, String)>) -> Status {
    match leader {
        Some((id, addr)) => {
            let mut s = Status::unavailable(format!(
                "this node is not the leader; the leader is node {id} at {addr}"
            ));
            if let Ok(v) = MetadataValue::try_from(addr.as_str()) {
                s.metadata_mut().insert(LEADER_HEADER, v);
            }
            s
        }
        None => Status::unavailable("no leader is known; the cluster may be electing one or may have lost its quorum"),
    }
}

pub fn propose(e: ProposeError) -> Status {
    match e {
        ProposeError::NoLeader { .. } | ProposeError::NotLeader { .. } | ProposeError::NotReady(_) => {
            Status::unavailable(e.to_string())
        }
        ProposeError::Refused(m) => Status::failed_precondition(m),
        ProposeError::Fatal(m) => Status::internal(m),
    }
}

pub fn client_write(e: RaftError<NodeId, ClientWriteError<NodeId, Peer>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(
            f.leader_id
                .map(|id| (id, f.leader_node.map(|n| n.addr).unwrap_or_default())),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => Status::failed_precondition(c.to_string()),
        RaftError::Fatal(f) => Status::internal(format!("Raft stopped: {f}")),
    }
}

pub fn initialize(e: RaftError<NodeId, InitializeError<NodeId, Peer>>) -> Status {
    match e {
        RaftError::APIError(InitializeError::NotAllowed(n)) => Status::already_exists(format!(
            "this node already holds Raft state (vote {}); not initializing again",
            n.vote
        )),
        RaftError::APIError(InitializeError::NotInMembers(n)) => Status::invalid_argument(n.to_string()),
        RaftError::Fatal(f) => Status::internal(format!("Raft stopped: {f}")),
    }
}

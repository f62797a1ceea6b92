//! The internal service's wire format, shared by the peer client
//! ([`crate::network`]) and the server ([`crate::grpc`]): openraft's messages
//! and forwarded proposals travel as JSON inside protobuf `bytes` fields;
//! snapshot chunks carry a JSON header beside their raw data.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::proto::raft::RaftMessage;
use crate::types::{Command, NodeId, Peer};

/// The body of a `Forward` RPC: a proposal a follower hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The node that sends the request (must be a member).
    pub sender: NodeId,
    pub command: Command,
}

/// The body of a `Hint` RPC: endpoints the sender suspects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HintRequest {
    /// The node that sends the request (must be a member).
    pub sender: NodeId,
    pub endpoints: Vec<String>,
}

/// The header of an InstallSnapshot chunk; the data travels beside it as raw bytes.
#[derive(Serialize, Deserialize)]
pub struct ChunkHeader {
    pub vote: openraft::Vote<NodeId>,
    pub meta: openraft::SnapshotMeta<NodeId, Peer>,
    pub offset: u64,
    pub done: bool,
}

/// Encodes `v` as a message payload.
pub fn encode<T: Serialize>(v: &T) -> Result<RaftMessage, serde_json::Error> {
    Ok(RaftMessage {
        payload: serde_json::to_vec(v)?,
    })
}

/// Decodes a message payload (or a chunk header).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

//! The Raft type configuration and the application payload carried in the log.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A Raft node id.
pub type NodeId = u64;

/// What the Raft membership records about a peer: where to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `host:port` of the peer's gRPC server.
    pub addr: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// Vantage's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Reply,
        NodeId = NodeId,
        Node = Peer,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft instance type used throughout the crate.
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Peer>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Peer>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Peer>;

/// An application command, as proposed by an agent or an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// A free-text operator note, replicated and counted; proves the log works end to end.
    Note { text: String },
}

/// A log entry's application payload: a command plus who proposed it and the
/// leader's clock when the leader accepted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The agent that proposed the command (the leader checks it is the sender).
    pub origin: NodeId,
    /// Leader-stamped log time in ms since the Unix epoch; non-decreasing.
    pub log_time_ms: u64,
    pub command: Command,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} from {} at {}", self.command, self.origin, self.log_time_ms)
    }
}

/// The state machine's answer to an applied proposal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Log time after applying the entry.
    pub log_time_ms: u64,
    /// False when the state machine refused the command (it still occupies its log slot).
    pub accepted: bool,
    /// Why a command was refused, or a short summary of what it did.
    pub detail: String,
}

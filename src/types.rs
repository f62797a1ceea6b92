//! The Raft type configuration and the application payload carried in the log.
//!
//! The words the payload is made of (decisions, sequence numbers, node ids)
//! live in [`crate::model`]; this module adds the commands and openraft's types.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::decide::ReportClaim;
use crate::detect::{Evidence, Health};
use crate::model::Decision;
pub use crate::model::{NodeId, Seq};

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
        AsyncRuntime = Runtime,
);

/// openraft on tokio, as openraft's own `TokioRuntime`, except where the
/// randomised election timeouts come from: fastrand's generator of the
/// calling thread, which the simulator seeds (`fastrand::seed`), so that one
/// seed gives one run. In an agent the generator is seeded from the
/// operating system as usual.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

/// The thread's fastrand generator seen through `rand`'s interface.
pub struct ThreadRng;

impl rand::RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        fastrand::u32(..)
    }

    fn next_u64(&mut self) -> u64 {
        fastrand::u64(..)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        fastrand::fill(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        fastrand::fill(dest);
        Ok(())
    }
}

impl openraft::AsyncRuntime for Runtime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: openraft::OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = tokio::time::Instant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: std::future::Future<Output = R> + openraft::OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: openraft::OptionalSend> = openraft::async_runtime::TokioOneShotSender<T>;
    type OneshotReceiver<T: openraft::OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: std::future::Future + openraft::OptionalSend + 'static,
        T::Output: openraft::OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: std::time::Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: std::future::Future<Output = R> + openraft::OptionalSend>(
        duration: std::time::Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: std::future::Future<Output = R> + openraft::OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: openraft::OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (openraft::async_runtime::TokioOneShotSender(tx), rx)
    }
}

/// The Raft instance type used throughout the crate.
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Peer>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Peer>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Peer>;

/// A change of one agent's view of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Endpoint id (`pool/address`).
    pub endpoint: String,
    pub status: Health,
    pub evidence: Evidence,
}

/// One endpoint of the replicated catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEndpoint {
    /// `pool/address`.
    pub id: String,
    /// IPv4 or IPv6 address: the A or AAAA record content.
    pub address: String,
}

/// A pool of the replicated catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogPool {
    pub name: String,
    pub hostnames: Vec<String>,
    pub min_healthy: u32,
    pub endpoints: Vec<CatalogEndpoint>,
    /// Decided by regions rather than by a count of agents.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_regions: bool,
}

/// What the decision is about and how it is made: proposed by the leader from
/// its configuration, so every replica decides from the same facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Raised for every change the cluster is to adopt: a catalog is
    /// installed only over an older version, so a node whose file lags
    /// behind can never undo a change (it reports drift instead).
    #[serde(default)]
    pub version: u64,
    pub quorum: Option<u32>,
    pub observation_ttl_ms: u64,
    pub initial: Decision,
    pub panic_threshold_ppm: u32,
    pub panic_window_ms: u64,
    pub hold_down_ms: u64,
    pub history_limit: u32,
    pub pools: Vec<CatalogPool>,
    /// Each member's region (for pools decided by regions), by node id. A
    /// list, not a map: log entries are buffered through serde's untyped
    /// content, where a map key is a string and a node id would not read back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<(NodeId, String)>,
}

impl Catalog {
    /// A digest of the content, the version left out: equal for two files
    /// that describe the same pools and settings.
    pub fn content_digest(&self) -> String {
        let mut c = self.clone();
        c.version = 0;
        let bytes = serde_json::to_vec(&c).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// What changes from `self` to `next`, in words.
    pub fn diff(&self, next: &Catalog) -> Vec<String> {
        let ids = |c: &Catalog| -> std::collections::BTreeMap<String, String> {
            c.pools
                .iter()
                .flat_map(|p| p.endpoints.iter().map(|e| (e.id.clone(), e.address.clone())))
                .collect()
        };
        let (before, after) = (ids(self), ids(next));
        let mut out = Vec::new();
        let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        if !added.is_empty() {
            out.push(format!(
                "endpoints added: {}",
                added.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !removed.is_empty() {
            out.push(format!(
                "endpoints removed: {}",
                removed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let pools = |c: &Catalog| -> std::collections::BTreeMap<String, (Vec<String>, u32)> {
            c.pools
                .iter()
                .map(|p| (p.name.clone(), (p.hostnames.clone(), p.min_healthy)))
                .collect()
        };
        let (pb, pa) = (pools(self), pools(next));
        for (name, v) in &pa {
            match pb.get(name) {
                None => out.push(format!("pool {name} added")),
                Some(old) if old != v => out.push(format!("pool {name}: hostnames or min_healthy changed")),
                Some(_) => {}
            }
        }
        for name in pb.keys().filter(|n| !pa.contains_key(*n)) {
            out.push(format!("pool {name} removed"));
        }
        let setting = |name: &str, a: String, b: String, out: &mut Vec<String>| {
            if a != b {
                out.push(format!("{name} {a} -> {b}"));
            }
        };
        setting(
            "quorum",
            format!("{:?}", self.quorum),
            format!("{:?}", next.quorum),
            &mut out,
        );
        setting(
            "observation_ttl_ms",
            self.observation_ttl_ms.to_string(),
            next.observation_ttl_ms.to_string(),
            &mut out,
        );
        setting(
            "hold_down_ms",
            self.hold_down_ms.to_string(),
            next.hold_down_ms.to_string(),
            &mut out,
        );
        setting(
            "panic_threshold_ppm",
            self.panic_threshold_ppm.to_string(),
            next.panic_threshold_ppm.to_string(),
            &mut out,
        );
        setting(
            "panic_window_ms",
            self.panic_window_ms.to_string(),
            next.panic_window_ms.to_string(),
            &mut out,
        );
        setting(
            "history_limit",
            self.history_limit.to_string(),
            next.history_limit.to_string(),
            &mut out,
        );
        out
    }
}

/// One batch of provider writes (or a dry-run plan), as the leader reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAudit {
    /// The leader's term when it confirmed leadership and wrote.
    pub term: u64,
    /// Last applied log index when the desired set was computed: the decisions it served.
    pub served_index: u64,
    pub dry_run: bool,
    pub provider: String,
    /// The changes, in words ("create www.example.com A 10.0.0.1").
    pub changes: Vec<String>,
    /// The provider's answer, in words.
    pub outcome: String,
    /// Every change was applied.
    pub ok: bool,
    /// Time the provider took.
    pub latency_ms: u64,
    /// The provider refused this node's credentials or does not know the
    /// zone: retrying with the same credentials will not help.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// What the leader is about to write, committed before it writes: the commit
/// proves it still led a quorum in `term` (the fence before every write),
/// and if it dies before recording the outcome, the next leader's listing
/// settles the write against this intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsIntent {
    pub term: u64,
    pub served_index: u64,
    pub provider: String,
    pub changes: Vec<String>,
}

/// An application command, as proposed by an agent or an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// A free-text operator note, replicated and counted; proves the log works
    /// end to end. Membership changes are recorded as notes too.
    Note {
        text: String,
        /// Who wrote it: the certificate's holder ("operator alice"), as the node that took the call saw it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        by: String,
    },
    /// The endpoints and decision settings, from the leader's configuration:
    /// the first catalog, or one with a higher `catalog_version`.
    Catalog(Catalog),
    /// A catalog an operator applied (`vantage pools apply`).
    ApplyCatalog {
        catalog: Catalog,
        /// Who applied it, as the node that took the call saw it.
        by: String,
    },
    /// What the leader wrote to (or, in dry-run, would write to) the DNS provider.
    DnsAudit(DnsAudit),
    /// What the leader is about to write (see [`DnsIntent`]).
    DnsIntent(DnsIntent),
    /// An operator takes an endpoint out of DNS whatever the probes say
    /// (it is still probed); for `for_ms` of log time, or until undrained.
    Drain {
        endpoint: String,
        reason: String,
        #[serde(default)]
        for_ms: Option<u64>,
        /// Drain it even when it holds the last record of a hostname.
        #[serde(default)]
        force: bool,
        by: String,
    },
    /// Returns a drained endpoint to the quorum rule (and its hold-down).
    Undrain { endpoint: String, by: String },
    /// Stops (`paused`) or restarts every provider write, cluster-wide;
    /// decisions go on and `plan` shows what is pending.
    PauseDns { paused: bool, reason: String, by: String },
    /// Log time has reached a deadline the state machine waits on (a
    /// hold-down or a maintenance window ends): the leader proposes it at
    /// `due_ms`, so the re-add happens then, not at the next report.
    Tick { due_ms: u64 },
    /// Transitions of an agent's local view, batched.
    Observe {
        /// The reporting agent; must be the node that proposed the entry.
        agent: NodeId,
        seq: Seq,
        /// The agent cannot reach its control targets: its views do not count.
        abstain: bool,
        changes: Vec<Change>,
    },
    /// An agent's full current view, proposed periodically: proves the agent
    /// is alive and lets a new leader or a restarted agent converge.
    /// The leader delivered a notifier's events up to `state.position`
    /// (and its open alerts are now `state.open`); a new leader goes on from there.
    Notified {
        notifier: String,
        state: crate::state::NotifierState,
    },
    Heartbeat {
        agent: NodeId,
        seq: Seq,
        abstain: bool,
        /// Endpoint ids by local view; empty while abstaining.
        up: Vec<String>,
        down: Vec<String>,
        unknown: Vec<String>,
        /// Endpoint id → what its probes warn about without failing (a
        /// certificate expiring soon); empty while abstaining.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        warnings: BTreeMap<String, String>,
    },
}

impl Command {
    /// The agent a command speaks for, if it is an agent report.
    pub fn agent(&self) -> Option<NodeId> {
        match self {
            Command::Note { .. }
            | Command::Catalog(_)
            | Command::ApplyCatalog { .. }
            | Command::DnsAudit(_)
            | Command::DnsIntent(_)
            | Command::Drain { .. }
            | Command::Undrain { .. }
            | Command::PauseDns { .. }
            | Command::Tick { .. }
            | Command::Notified { .. } => None,
            Command::Observe { agent, .. } | Command::Heartbeat { agent, .. } => Some(*agent),
        }
    }

    /// What an agent report claims, as proposed by `origin`; None for other commands.
    pub fn claim(&self, origin: NodeId) -> Option<ReportClaim<'_>> {
        match self {
            Command::Note { .. }
            | Command::Catalog(_)
            | Command::ApplyCatalog { .. }
            | Command::DnsAudit(_)
            | Command::DnsIntent(_)
            | Command::Drain { .. }
            | Command::Undrain { .. }
            | Command::PauseDns { .. }
            | Command::Tick { .. }
            | Command::Notified { .. } => None,
            Command::Observe {
                agent, seq, changes, ..
            } => Some(ReportClaim {
                origin,
                agent: *agent,
                seq: *seq,
                endpoints: changes.iter().map(|c| c.endpoint.as_str()).collect(),
            }),
            Command::Heartbeat {
                agent,
                seq,
                up,
                down,
                unknown,
                ..
            } => Some(ReportClaim {
                origin,
                agent: *agent,
                seq: *seq,
                endpoints: up.iter().chain(down).chain(unknown).map(String::as_str).collect(),
            }),
        }
    }
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

//! One running agent: its Raft instance, its storage handles and the proposal
//! path every other module uses to put an entry in the log.
//!
//! Proposals may start on any node. A follower hands them to the leader over
//! the internal `Forward` RPC; the leader stamps each one with its clock
//! (log time, kept non-decreasing) and commits it. Only the leader stamps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::codec::{self, ForwardRequest};
use crate::config::Config;
use crate::network::{Connector, PeerNetworkFactory, Vouching};
use crate::store::{self, SharedSm, SmData};
use crate::types::{Command, LogId, NodeId, Peer, Proposal, Raft, RaftMetrics, Reply, TypeConfig};

/// Failure to start an agent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::OpenError),
    #[error("invalid Raft settings in {file}: {message}")]
    RaftConfig { file: String, message: String },
    #[error("Raft failed to start: {0}")]
    Raft(String),
}

/// Why a proposal did not make it into the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader was reachable within {waited_ms} ms; last problem: {last}")]
    NoLeader { waited_ms: u64, last: String },
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("refused: {0}")]
    Refused(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("Raft stopped: {0}")]
    Fatal(String),
}

/// What a successful proposal returns: where it landed and what the state machine said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub index: u64,
    pub reply: Reply,
}

/// A running agent: the one handle every other module goes through to reach
/// its Raft instance, its state and its configuration.
pub struct Agent {
    id: NodeId,
    /// The address peers and clients use for this agent.
    addr: String,
    raft: Raft,
    config: Arc<Config>,
    /// The state machine, shared with openraft; read through [`Agent::read`].
    sm: SharedSm,
    /// Last committed index persisted by the log store.
    committed: Arc<AtomicU64>,
    /// Notified after every batch the state machine applies.
    applied: Arc<tokio::sync::Notify>,
    connector: Connector,
    clock: Arc<dyn Clock>,
    /// Last stamp handed out, so log time never goes back on this leader.
    last_stamp: Mutex<u64>,
    /// Which peers may send Raft traffic.
    vouching: Arc<Vouching>,
    /// The catalog this node's configuration file describes (re-read on
    /// SIGHUP); the cluster follows the committed one.
    local_catalog: Mutex<Option<crate::types::Catalog>>,
    /// Read-only handles on the log and the snapshot, for `replay`.
    stores: (store::LogStore, store::StateMachineStore),
    /// This node's counters and histograms, for `/metrics`.
    instruments: Arc<crate::metrics::Instruments>,
}

/// A Raft API error of openraft's, for the membership calls.
pub type RaftApiError<E> = RaftError<NodeId, E>;

impl Agent {
    /// Opens storage under `config.data_dir` and starts Raft. Does not serve anything.
    pub async fn start(config: Config, connector: Connector, clock: Arc<dyn Clock>) -> Result<Arc<Agent>, StartError> {
        Self::start_watched(config, connector, clock, None).await
    }

    /// Like [`Agent::start`], and calls `watch` after every applied entry.
    pub async fn start_watched(
        config: Config,
        connector: Connector,
        clock: Arc<dyn Clock>,
        watch: Option<store::ApplyWatch>,
    ) -> Result<Arc<Agent>, StartError> {
        let (log, mut sm) = store::open(&config.data_dir)?;
        if let Some(w) = watch {
            sm.set_watch(w);
        }
        let stores = (log.clone(), sm.clone());
        let shared = sm.shared();
        let applied = sm.applied_notify();
        let committed = log.committed_index();
        let r = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "vantage".into(),
            heartbeat_interval: r.heartbeat_interval.ms(),
            election_timeout_min: r.election_timeout_min.ms(),
            election_timeout_max: r.election_timeout_max.ms(),
            install_snapshot_timeout: r.rpc_timeout.ms().max(5_000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_every),
            max_in_snapshot_log_to_keep: r.keep_logs,
            // Leave room for the chunk header and gRPC framing.
            snapshot_max_chunk_size: (r.max_message_bytes as u64).saturating_sub(32 * 1024),
            max_payload_entries: 300,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::RaftConfig {
            file: config.source.clone(),
            message: e.to_string(),
        })?;
        let network = PeerNetworkFactory::new(connector.clone(), r.rpc_timeout.0);
        let raft = Raft::new(config.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let configured = config.members.iter().map(|m| (m.id, m.addr.clone())).collect();
        let vouching = Arc::new(Vouching::new(config.node_id, configured, connector.clone()));
        let local_catalog = Mutex::new(config.catalog().ok());
        Ok(Arc::new(Agent {
            stores,
            local_catalog,
            id: config.node_id,
            addr: config.advertise_addr().to_string(),
            raft,
            config: Arc::new(config),
            sm: shared,
            committed,
            applied,
            connector,
            clock,
            last_stamp: Mutex::new(0),
            vouching,
            instruments: Arc::default(),
        }))
    }

    /// This node's counters and histograms.
    pub fn instruments(&self) -> &Arc<crate::metrics::Instruments> {
        &self.instruments
    }

    /// This agent's node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address peers and clients use for this agent.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The outgoing connections to peers.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Reads the applied state under its lock; keep `f` short.
    pub async fn read<R>(&self, f: impl FnOnce(&SmData) -> R) -> R {
        let sm = self.sm.read().await;
        f(&sm)
    }

    /// Reads the state without waiting, from outside any runtime (the
    /// simulator between two steps); None while a write holds it.
    pub fn read_now<R>(&self, f: impl FnOnce(&SmData) -> R) -> Option<R> {
        self.sm.try_read().ok().map(|sm| f(&sm))
    }

    /// Notified after every batch of entries the state machine applies.
    pub fn applied(&self) -> &tokio::sync::Notify {
        &self.applied
    }

    /// Role, vote, leader and membership as they change: what a loop that
    /// acts only as leader waits on (the full metrics change at every
    /// heartbeat ack, which would wake it several times a second for nothing).
    pub fn role_watch(&self) -> tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, Peer>> {
        self.raft.server_metrics()
    }

    /// Completes when Raft stops on its own, with the reason: a storage
    /// error (a full disk, a failing device) or another fatal error. openraft
    /// then stays stopped, so the agent must end rather than run half-dead.
    pub async fn stopped(&self) -> String {
        let mut m = self.raft.metrics();
        loop {
            {
                let now = m.borrow_and_update();
                if let Err(e) = &now.running_state {
                    return e.to_string();
                }
                if now.state == ServerState::Shutdown {
                    return "Raft shut down".into();
                }
            }
            if m.changed().await.is_err() {
                return "Raft's core task has ended".into();
            }
        }
    }

    /// The catalog this node's configuration file describes.
    pub fn local_catalog(&self) -> Option<crate::types::Catalog> {
        self.local_catalog.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces it (after a reload that validated).
    pub fn set_local_catalog(&self, c: crate::types::Catalog) {
        *self.local_catalog.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    /// Replays what this node keeps (its snapshot and the log after it)
    /// with the live settings and with `settings`.
    pub async fn replay(&self, settings: &crate::replay::Settings) -> Result<crate::replay::Comparison, String> {
        use openraft::RaftLogReader;
        let start = self.stores.1.persisted_state()?.unwrap_or_default();
        let from = start.last_applied.map(|l| l.index + 1).unwrap_or(0);
        let to = self.metrics().last_applied.map(|l| l.index).unwrap_or(0);
        let mut reader = self.stores.0.clone();
        let entries = reader.try_get_log_entries(from..=to).await.map_err(|e| e.to_string())?;
        Ok(crate::replay::compare(&start, &entries, settings))
    }

    /// Calls an election now (this node becomes a candidate in the next term).
    pub async fn call_election(&self) -> Result<(), String> {
        self.raft.trigger().elect().await.map_err(|e| e.to_string())
    }

    /// This node's current term.
    pub fn term(&self) -> u64 {
        self.metrics().current_term
    }

    /// A copy of the current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The last committed index known to this node.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// The current leader and its address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    /// True when this node currently believes it leads.
    pub fn is_leader(&self) -> bool {
        let m = self.metrics();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Proposes a command from this agent; forwards to the leader when needed,
    /// and retries while there is no leader, up to `raft.propose_timeout`.
    pub async fn propose(&self, command: Command) -> Result<Committed, ProposeError> {
        let started = Instant::now();
        let deadline = started + self.config.raft.propose_timeout.0;
        let mut last: String;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.id => self.propose_as_leader(self.id, command.clone()).await,
                Some((leader, addr)) => self.forward(leader, &addr, &command).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(c) => return Ok(c),
                Err(e @ (ProposeError::Refused(_) | ProposeError::Fatal(_) | ProposeError::NotReady(_))) => {
                    return Err(e)
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::NoLeader {
                    waited_ms: started.elapsed().as_millis() as u64,
                    last,
                });
            }
            // Wait for a leader change (or a short pause) before trying again.
            let pause = self.config.raft.heartbeat_interval.0.max(Duration::from_millis(50));
            let _ = self
                .raft
                .wait(Some(pause))
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Refuses, before it reaches the log, a command the state machine would
    /// refuse: an agent report the admission rule does not admit (the same
    /// rule the state machine applies), a catalog or DNS audit from anyone
    /// but the leader.
    async fn check_proposal(&self, origin: NodeId, command: &Command) -> Result<(), ProposeError> {
        let refuse = |m: String| Err(ProposeError::Refused(m));
        match command {
            Command::Note { .. }
            | Command::ApplyCatalog { .. }
            | Command::Drain { .. }
            | Command::Undrain { .. }
            | Command::PauseDns { .. } => Ok(()),
            Command::Catalog(_) if origin != self.id => refuse(format!(
                "node {origin} proposed a catalog; only the leader proposes the catalog, from its configuration"
            )),
            Command::Catalog(_) => Ok(()),
            Command::DnsAudit(_) | Command::DnsIntent(_) if origin != self.id => refuse(format!(
                "node {origin} reported a DNS write; only the leader writes to DNS"
            )),
            Command::DnsAudit(_) | Command::DnsIntent(_) => Ok(()),
            Command::Notified { .. } if origin != self.id => refuse(format!(
                "node {origin} reported a notification; only the leader sends them"
            )),
            Command::Notified { .. } => Ok(()),
            Command::Tick { .. } if origin != self.id => {
                refuse(format!("node {origin} proposed a tick; only the leader keeps time"))
            }
            Command::Tick { .. } => Ok(()),
            Command::Observe { .. } | Command::Heartbeat { .. } => {
                let Some(claim) = command.claim(origin) else {
                    return Ok(());
                };
                let (_, voters) = self.members();
                match self.read(|sm| sm.app.admit(&claim, &voters)).await {
                    Ok(()) => Ok(()),
                    Err(r @ crate::decide::Refusal::NoCatalog { .. }) => Err(ProposeError::NotReady(r.to_string())),
                    Err(r) => refuse(r.to_string()),
                }
            }
        }
    }

    /// Stamps and commits a command on this node, which must be the leader.
    pub(crate) async fn propose_as_leader(&self, origin: NodeId, command: Command) -> Result<Committed, ProposeError> {
        self.check_proposal(origin, &command).await?;
        let log_time_ms = self.stamp().await;
        let proposal = Proposal {
            origin,
            log_time_ms,
            command,
        };
        match self.raft.client_write(proposal).await {
            Ok(resp) => Ok(Committed {
                index: resp.log_id.index,
                reply: resp.data,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader { leader: f.leader_id })
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Refused(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// The leader's stamp: its clock, never below a stamp it or an earlier
    /// leader already put in the log.
    async fn stamp(&self) -> u64 {
        let applied = self.read(|sm| sm.app.log_time_ms).await;
        let mut last = self.last_stamp.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.clock.now_ms().max(*last).max(applied);
        *last = t;
        t
    }

    async fn forward(&self, leader: NodeId, addr: &str, command: &Command) -> Result<Committed, ProposeError> {
        let not_leader = |why: String| ProposeError::NoLeader {
            waited_ms: 0,
            last: why,
        };
        let mut client = self
            .connector
            .raft_client(addr)
            .map_err(|e| not_leader(e.to_string()))?;
        let body = ForwardRequest {
            sender: self.id,
            command: command.clone(),
        };
        let msg = codec::encode(&body).map_err(|e| ProposeError::Refused(e.to_string()))?;
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.config.raft.propose_timeout.0);
        let resp = client
            .forward(req)
            .await
            .map_err(|s| not_leader(format!("forwarding to leader {leader} at {addr}: {}", s.message())))?;
        let res: Result<Committed, ProposeError> = codec::decode(&resp.into_inner().payload)
            .map_err(|e| not_leader(format!("leader {leader} at {addr} sent an unreadable answer: {e}")))?;
        res
    }

    /// Whether a Raft RPC claiming to come from `sender` is accepted (see [`Vouching`]).
    pub fn admits(&self, sender: NodeId) -> bool {
        let m = self.metrics();
        let members: Vec<(NodeId, Peer)> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        self.vouching.admits(sender, &members)
    }

    /// Hands a peer's AppendEntries to Raft.
    pub async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftApiError<openraft::error::Infallible>> {
        self.raft.append_entries(rpc).await
    }

    /// Hands a peer's Vote to Raft.
    pub async fn vote(
        &self,
        rpc: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftApiError<openraft::error::Infallible>> {
        self.raft.vote(rpc).await
    }

    /// Hands a snapshot chunk to Raft.
    pub async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftApiError<InstallSnapshotError>> {
        self.raft.install_snapshot(rpc).await
    }

    /// Confirms with a quorum that this node still leads; returns the read index.
    pub async fn confirm_leadership(&self) -> Result<Option<LogId>, RaftApiError<CheckIsLeaderError<NodeId, Peer>>> {
        self.raft.ensure_linearizable().await
    }

    /// Waits until this node applied `index`, up to `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), String> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Waits until the leader has replicated up to `index` to node `id`.
    pub async fn wait_replicated(&self, id: NodeId, index: u64, timeout: Duration) -> bool {
        let reached = move |m: &RaftMetrics| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .is_some_and(|l| l.index >= index)
        };
        self.raft
            .wait(Some(timeout))
            .metrics(reached, "a learner caught up")
            .await
            .is_ok()
    }

    /// Whether this node holds Raft state (it belongs, or belonged, to a cluster).
    pub async fn is_initialized(&self) -> Result<bool, Fatal<NodeId>> {
        self.raft.is_initialized().await
    }

    /// Forms a new cluster of `members`.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, Peer>,
    ) -> Result<(), RaftApiError<InitializeError<NodeId, Peer>>> {
        self.raft.initialize(members).await
    }

    /// Adds a learner and waits for it to catch up.
    pub async fn add_learner(
        &self,
        id: NodeId,
        peer: Peer,
    ) -> Result<ClientWriteResponse<TypeConfig>, RaftApiError<ClientWriteError<NodeId, Peer>>> {
        self.raft.add_learner(id, peer, true).await
    }

    /// Changes the voter set.
    pub async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, Peer>,
    ) -> Result<ClientWriteResponse<TypeConfig>, RaftApiError<ClientWriteError<NodeId, Peer>>> {
        self.raft.change_membership(change, false).await
    }

    /// Stops Raft (flushing storage).
    pub async fn shutdown(&self) -> Result<(), String> {
        self.raft.shutdown().await.map_err(|e| e.to_string())
    }

    /// The voters and learners of the current membership with their addresses.
    pub fn members(&self) -> (BTreeMap<NodeId, Peer>, BTreeSet<NodeId>) {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        (nodes, voters)
    }
}

//! One running agent: its Raft instance, its storage handles and the proposal
//! path every other module uses to put an entry in the log.
//!
//! Proposals may start on any node. A follower hands them to the leader over
//! the internal `Forward` RPC; the leader stamps each one with its clock
//! (log time, kept non-decreasing) and commits it. Only the leader stamps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::network::{Connector, PeerNetworkFactory};
use crate::proto::raft::RaftMessage;
use crate::store::{self, SharedSm};
use crate::types::{Command, NodeId, Peer, Proposal, Raft, RaftMetrics, Reply};

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

/// The body of a `Forward` RPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The node that sends the request (must be a member).
    pub sender: NodeId,
    pub command: Command,
}

/// A running agent.
pub struct Agent {
    pub id: NodeId,
    /// The address peers and clients use for this agent.
    pub addr: String,
    pub raft: Raft,
    pub config: Arc<Config>,
    /// The state machine, shared with openraft; read by the query path.
    pub sm: SharedSm,
    /// Last committed index persisted by the log store.
    committed: Arc<AtomicU64>,
    /// Notified after every batch the state machine applies.
    pub applied: Arc<tokio::sync::Notify>,
    pub connector: Connector,
    clock: Arc<dyn Clock>,
    /// Last stamp handed out, so log time never goes back on this leader.
    last_stamp: Mutex<u64>,
    /// Senders vouched for by a current member (see [`Agent::admits`]).
    vouched: Mutex<BTreeSet<NodeId>>,
    /// When each unknown sender was last checked, to bound the checks.
    checked: Mutex<HashMap<NodeId, Instant>>,
}

impl Agent {
    /// Opens storage under `config.data_dir` and starts Raft. Does not serve anything.
    pub async fn start(config: Config, connector: Connector, clock: Arc<dyn Clock>) -> Result<Arc<Agent>, StartError> {
        let (log, sm) = store::open(&config.data_dir)?;
        let shared = sm.shared();
        let applied = sm.applied_notify();
        let committed = log.committed_index();
        let r = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "vantage".into(),
            heartbeat_interval: r.heartbeat_interval.0.as_millis() as u64,
            election_timeout_min: r.election_timeout_min.0.as_millis() as u64,
            election_timeout_max: r.election_timeout_max.0.as_millis() as u64,
            install_snapshot_timeout: (r.rpc_timeout.0.as_millis() as u64).max(5_000),
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
        Ok(Arc::new(Agent {
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
            vouched: Mutex::new(BTreeSet::new()),
            checked: Mutex::new(HashMap::new()),
        }))
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
    /// ignore: a report for another agent, from a non-voter, or about an
    /// endpoint that is not in the catalog; a catalog from anyone but the leader.
    async fn check_proposal(&self, origin: NodeId, command: &Command) -> Result<(), ProposeError> {
        let refuse = |m: String| Err(ProposeError::Refused(m));
        match command {
            Command::Note { .. } => Ok(()),
            Command::Catalog(_) if origin != self.id => refuse(format!(
                "node {origin} proposed a catalog; only the leader proposes the catalog, from its configuration"
            )),
            Command::Catalog(_) => Ok(()),
            Command::DnsAudit(_) if origin != self.id => refuse(format!(
                "node {origin} reported a DNS write; only the leader writes to DNS"
            )),
            Command::DnsAudit(_) => Ok(()),
            Command::Observe { agent, .. } | Command::Heartbeat { agent, .. } => {
                if *agent != origin {
                    return refuse(format!("report claims agent {agent} but was proposed by node {origin}"));
                }
                let (_, voters) = self.members();
                if !voters.contains(&origin) {
                    return refuse(format!("node {origin} is not a voter; its observations do not count"));
                }
                let sm = self.sm.read().await;
                if sm.app.catalog.is_none() {
                    return Err(ProposeError::NotReady("no catalog is committed yet".into()));
                }
                if let Command::Observe { changes, .. } = command {
                    if let Some(c) = changes.iter().find(|c| !sm.app.endpoints.contains_key(&c.endpoint)) {
                        return refuse(format!("endpoint {} is not in the catalog", c.endpoint));
                    }
                }
                Ok(())
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
        let applied = self.sm.read().await.app.log_time_ms;
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
        let payload = serde_json::to_vec(&body).map_err(|e| ProposeError::Refused(e.to_string()))?;
        let mut req = tonic::Request::new(RaftMessage { payload });
        req.set_timeout(self.config.raft.propose_timeout.0);
        let resp = client
            .forward(req)
            .await
            .map_err(|s| not_leader(format!("forwarding to leader {leader} at {addr}: {}", s.message())))?;
        let res: Result<Committed, ProposeError> = serde_json::from_slice(&resp.into_inner().payload)
            .map_err(|e| not_leader(format!("leader {leader} at {addr} sent an unreadable answer: {e}")))?;
        res
    }

    /// Whether a Raft RPC claiming to come from `sender` is accepted.
    ///
    /// A member of the current (possibly uncommitted) membership is accepted;
    /// before this node is part of a cluster, the configured members are. An
    /// unknown sender is refused, so a stranger or a removed node can neither
    /// disrupt elections nor move this node's term. Because this node may lag
    /// behind a membership change, an unknown sender is checked (at most every
    /// 2 s) against a current member's view and accepted once vouched for.
    pub fn admits(self: &Arc<Self>, sender: NodeId) -> bool {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let mut known = membership.nodes().peekable();
        let initialized = known.peek().is_some();
        if membership.get_node(&sender).is_some() {
            return true;
        }
        if !initialized && self.config.members.iter().any(|c| c.id == sender) {
            return true;
        }
        if self.vouched.lock().unwrap_or_else(|p| p.into_inner()).contains(&sender) {
            return true;
        }
        let due = {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match checked.get(&sender) {
                Some(t) if now.duration_since(*t) < Duration::from_secs(2) => false,
                _ => {
                    checked.insert(sender, now);
                    true
                }
            }
        };
        if due {
            let peers: Vec<String> = membership
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(_, n)| n.addr.clone())
                .chain(
                    self.config
                        .members
                        .iter()
                        .filter(|c| c.id != self.id)
                        .map(|c| c.addr.clone()),
                )
                .collect();
            let me = Arc::clone(self);
            tokio::spawn(async move { me.check_sender(sender, peers).await });
        }
        false
    }

    /// Asks current members whether `sender` belongs to their membership.
    async fn check_sender(&self, sender: NodeId, peers: Vec<String>) {
        for addr in peers {
            let Ok(mut client) = self.connector.cluster_client(&addr) else {
                continue;
            };
            let mut req = tonic::Request::new(crate::proto::v1::GetStatusRequest { linearizable: false });
            req.set_timeout(Duration::from_secs(1));
            let Ok(resp) = client.get_status(req).await else {
                continue;
            };
            let status = resp.into_inner();
            if status.members.iter().any(|m| m.id == sender) {
                tracing::info!(sender, vouched_by = %addr, "accepting Raft traffic from a member this node did not know yet");
                self.vouched.lock().unwrap_or_else(|p| p.into_inner()).insert(sender);
                return;
            }
            if status.initialized {
                break;
            }
        }
        tracing::warn!(
            sender,
            "refusing Raft traffic from node {sender}: it is not a member of this cluster"
        );
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

/// While this node leads, keeps the replicated catalog equal to the one its
/// configuration describes: proposes it on taking office and whenever they differ.
pub async fn maintain_catalog(agent: Arc<Agent>) {
    let Ok(wanted) = agent.config.catalog() else { return };
    let mut metrics = agent.raft.metrics();
    loop {
        if agent.is_leader() {
            let current = agent.sm.read().await.app.catalog.clone();
            if current.as_ref() != Some(&wanted) {
                match agent
                    .propose_as_leader(agent.id, Command::Catalog(wanted.clone()))
                    .await
                {
                    Ok(_) => tracing::info!(
                        endpoints = wanted.pools.iter().map(|p| p.endpoints.len()).sum::<usize>(),
                        "catalog committed from this leader's configuration"
                    ),
                    Err(e) => tracing::warn!("could not commit the catalog: {e}"),
                }
            }
        }
        // Re-check on any Raft state change, and at least every second.
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

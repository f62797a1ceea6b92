//! Handlers of the public `vantage.v1.Cluster` admin service.
//!
//! Membership changes run on the leader: a follower forwards them once (marked
//! with [`FORWARDED_HEADER`]) or, if it knows no leader, answers `Unavailable`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use super::{auth, status};
use crate::agent::Agent;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::cluster_server::Cluster;
use crate::proto::v1::{
    AddNodeRequest, ApplyCatalogRequest, ApplyCatalogResponse, BootstrapRequest, BootstrapResponse, ClusterStatus,
    DrainRequest, ExplainRequest, ExplainResponse, GetStatusRequest, Member, MembershipResponse, OverrideResponse,
    PauseDnsRequest, ProposeNoteRequest, ProposeResponse, RemoveNodeRequest, ReplayRequest, ReplayResponse,
    UndrainRequest,
};
use crate::types::{Command, NodeId, Peer};

pub struct ClusterService {
    agent: Arc<Agent>,
    /// Bounds the notes committed through this node (every byte is kept by every node).
    notes: RateLimit,
}

/// The largest note, in bytes.
pub const MAX_NOTE_BYTES: usize = 4096;
/// Notes one node commits in a burst, and per second after that.
pub const NOTE_BURST: f64 = 50_000.0;
pub const NOTES_PER_SECOND: f64 = 1_000.0;

/// A token bucket over the notes committed through one node.
struct RateLimit {
    bucket: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit {
            bucket: std::sync::Mutex::new((NOTE_BURST, tokio::time::Instant::now())),
        }
    }

    fn allow(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * NOTES_PER_SECOND;
        *b = ((b.0 + refill).min(NOTE_BURST), now);
        if b.0 < 1.0 {
            return false;
        }
        b.0 -= 1.0;
        true
    }
}

impl ClusterService {
    pub fn new(agent: Arc<Agent>) -> Self {
        ClusterService {
            agent,
            notes: RateLimit::new(),
        }
    }

    fn member_list(&self) -> Vec<Member> {
        member_list(&self.agent)
    }
}

/// This node's members with (on the leader) their replication progress.
fn member_list(agent: &Agent) -> Vec<Member> {
    let m = agent.metrics();
    let (nodes, voters) = agent.members();
    let last = m.last_log_index.unwrap_or(0);
    nodes
        .into_iter()
        .map(|(id, peer)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id))
                .map(|l| l.map(|l| l.index).unwrap_or(0));
            Member {
                id,
                addr: peer.addr,
                voter: voters.contains(&id),
                matched_index: matched,
                lag: matched.map(|x| last.saturating_sub(x)),
            }
        })
        .collect()
}

impl ClusterService {
    /// Records a membership change in the history, with who made it.
    async fn record(&self, what: &str, by: &str) {
        let note = Command::Note {
            text: format!("membership: {what}"),
            by: by.to_string(),
        };
        match tokio::time::timeout(Duration::from_secs(5), self.agent.propose(note)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("membership change not recorded in the history: {e}"),
            Err(_) => tracing::warn!("membership change not recorded in the history within 5 s"),
        }
    }

    /// Refuses a membership change after which the voters that answer now
    /// would not be a majority: the cluster could not commit again.
    async fn keeps_a_reachable_majority(&self, voters: &BTreeSet<NodeId>) -> Result<(), Status> {
        let (nodes, _) = self.agent.members();
        let mut answering = BTreeSet::new();
        for id in voters {
            if *id == self.agent.id() {
                answering.insert(*id);
                continue;
            }
            let Some(addr) = nodes.get(id).map(|p| p.addr.clone()) else {
                continue;
            };
            let Ok(mut client) = self.agent.connector().cluster_client(&addr) else {
                continue;
            };
            let mut probe = Request::new(GetStatusRequest { linearizable: false });
            probe.set_timeout(Duration::from_secs(1));
            if client.get_status(probe).await.is_ok() {
                answering.insert(*id);
            }
        }
        let need = crate::decide::majority(voters.len());
        if answering.len() < need {
            return Err(Status::failed_precondition(format!(
                "refused: after this change the voters would be {voters:?}, of which only {answering:?} answer now; \
                 {need} are needed to commit anything, so the cluster would be stuck. Bring the others back first"
            )));
        }
        Ok(())
    }
}

/// The answer to `GetStatus`, read after any linearizing wait: `/` and the
/// gRPC query show the same thing.
pub(crate) async fn status(agent: &Agent, linearizable: bool) -> ClusterStatus {
    let m = agent.metrics();
    let local = agent.local_catalog();
    let local_hash = local.as_ref().map(|c| c.content_digest()).unwrap_or_default();
    let (log_time_ms, notes_applied, state_digest, last_note, mut alarms, catalog, catalog_hash) = agent
        .read(|sm| {
            let app = &sm.app;
            let mut alarms = alarms(app);
            let hash = app.catalog.as_ref().map(|c| c.content_digest()).unwrap_or_default();
            alarms.extend(crate::catalog::drift(
                local.as_ref().map(|c| (c, local_hash.as_str())),
                app.catalog.as_ref().map(|c| (c, hash.as_str())),
            ));
            (
                app.log_time_ms,
                app.notes_applied,
                app.digest_hex(),
                app.last_note.clone(),
                alarms,
                app.catalog.clone(),
                hash,
            )
        })
        .await;
    if let Some(w) = agent
        .connector()
        .tls()
        .and_then(|t| t.expiry_warning(crate::tls::EXPIRY_WARNING_DAYS))
    {
        alarms.push(w);
    }
    if agent.config().insecure_plaintext {
        alarms.push("insecure_plaintext: no TLS; peers and operators are not authenticated".into());
    }
    let (leader_id, leader_addr) = match agent.leader() {
        Some((id, addr)) => (Some(id), addr),
        None => (None, String::new()),
    };
    let members = member_list(agent);
    ClusterStatus {
        node_id: agent.id(),
        node_addr: agent.addr().to_string(),
        role: super::role_name(m.state).to_string(),
        leader_id,
        leader_addr,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        committed_index: agent
            .committed_index()
            .max(m.last_applied.map(|l| l.index).unwrap_or(0)),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        initialized: !members.is_empty(),
        members,
        log_time_ms,
        notes_applied,
        state_digest,
        last_note,
        linearizable,
        alarms,
        catalog_version: catalog.as_ref().map(|c| c.version).unwrap_or(0),
        catalog_hash,
        local_catalog_hash: local_hash,
        catalog_endpoints: catalog
            .iter()
            .flat_map(|c| c.pools.iter().flat_map(|p| p.endpoints.iter().map(|e| e.id.clone())))
            .collect(),
    }
}

/// Conditions an operator must see in `cluster status`.
fn alarms(app: &crate::state::AppState) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &app.panic {
        out.push(format!("panic freeze since log index {}: {}", p.index, p.reason));
    }
    if let Some(p) = &app.dns_paused {
        out.push(format!(
            "DNS writes paused by {} ({}); `vantage plan` shows what is pending, `vantage dns resume` writes it",
            p.by, p.reason
        ));
    }
    let drained: Vec<String> = app
        .endpoints
        .iter()
        .filter_map(|(id, e)| e.drained.as_ref().map(|d| format!("{id} (by {}: {})", d.by, d.reason)))
        .collect();
    if !drained.is_empty() {
        out.push(format!("drained, out of DNS: {}", drained.join(", ")));
    }
    if let Some(d) = app.last_dns.as_ref().filter(|d| !d.ok && !d.dry_run) {
        if d.refused {
            out.push(format!(
                "DNS provider refuses node {}'s credentials or zone (term {}): {}; writes wait until the \
                 credentials are fixed or a voter whose credentials work takes over",
                app.last_dns_by, d.term, d.outcome
            ));
        } else {
            out.push(format!("last DNS write failed (term {}): {}", d.term, d.outcome));
        }
    }
    let abstaining: Vec<_> = app
        .agents
        .iter()
        .filter(|(_, a)| a.abstain)
        .map(|(id, _)| *id)
        .collect();
    if !abstaining.is_empty() {
        out.push(format!(
            "agents abstaining (their own network is suspect): {abstaining:?}"
        ));
    }
    out
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn get_status(&self, req: Request<GetStatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        auth::reader(&self.agent, &req, "GetStatus", true)?;
        let linearizable = req.get_ref().linearizable;
        if linearizable {
            super::linearize(&self.agent).await?;
        }
        Ok(Response::new(status(&self.agent, linearizable).await))
    }

    async fn bootstrap(&self, req: Request<BootstrapRequest>) -> Result<Response<BootstrapResponse>, Status> {
        auth::operator(&self.agent, &req, "Bootstrap")?;
        let wanted: BTreeMap<NodeId, Peer> = req
            .into_inner()
            .members
            .into_iter()
            .map(|m| (m.id, Peer { addr: m.addr }))
            .collect();
        if !wanted.contains_key(&self.agent.id()) {
            return Err(Status::invalid_argument(format!(
                "the member list {:?} does not include this node (id {}); bootstrap through a member",
                wanted.keys().collect::<Vec<_>>(),
                self.agent.id()
            )));
        }
        let already = |message: String, members: Vec<Member>| {
            Ok(Response::new(BootstrapResponse {
                initialized_now: false,
                message,
                members,
            }))
        };
        let initialized = self
            .agent
            .is_initialized()
            .await
            .map_err(|e| Status::internal(format!("Raft stopped: {e}")))?;
        if initialized {
            let members = self.member_list();
            let ids: Vec<_> = members.iter().map(|m| m.id).collect();
            return already(
                format!("cluster already formed (members {ids:?}); nothing changed"),
                members,
            );
        }
        // A peer may already belong to a formed cluster this node has not heard
        // from yet: never start a second one beside it.
        for (id, peer) in wanted.iter().filter(|(id, _)| **id != self.agent.id()) {
            let Ok(mut client) = self.agent.connector().cluster_client(&peer.addr) else {
                continue;
            };
            let mut probe = Request::new(GetStatusRequest { linearizable: false });
            probe.set_timeout(Duration::from_secs(1));
            if let Ok(resp) = client.get_status(probe).await {
                let s = resp.into_inner();
                if s.initialized {
                    let ids: Vec<_> = s.members.iter().map(|m| m.id).collect();
                    return already(
                        format!("node {id} already belongs to a formed cluster (members {ids:?}); nothing changed"),
                        s.members,
                    );
                }
            }
        }
        tracing::info!(members = ?wanted.keys().collect::<Vec<_>>(), "initializing the cluster");
        match self.agent.initialize(wanted.clone()).await {
            Ok(()) => {
                let members = wanted
                    .into_iter()
                    .map(|(id, p)| Member {
                        id,
                        addr: p.addr,
                        voter: true,
                        matched_index: None,
                        lag: None,
                    })
                    .collect();
                Ok(Response::new(BootstrapResponse {
                    initialized_now: true,
                    message: "cluster initialized".into(),
                    members,
                }))
            }
            Err(e) if matches!(e.api_error(), Some(openraft::error::InitializeError::NotAllowed(_))) => {
                already("cluster already formed; nothing changed".into(), self.member_list())
            }
            Err(e) => Err(status::initialize(e)),
        }
    }

    async fn add_node(&self, req: Request<AddNodeRequest>) -> Result<Response<MembershipResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "AddNode")?;
        let by = auth::actor(&caller, &req);
        let forward = |ch, r| async move { ClusterClient::new(ch).add_node(r).await };
        if let Some(resp) = super::on_leader(&self.agent, req.clone_for_forward(&by), forward).await? {
            return Ok(resp);
        }
        let AddNodeRequest { id, addr } = req.into_inner();
        if id == 0 {
            return Err(Status::invalid_argument("id: expected a positive node id, got 0"));
        }
        if addr.trim().is_empty() {
            return Err(Status::invalid_argument(
                "addr: expected host:port of the new node, got nothing",
            ));
        }
        let (nodes, voters) = self.agent.members();
        if let Some(existing) = nodes.get(&id) {
            if existing.addr != addr {
                return Err(Status::already_exists(format!(
                    "node {id} is already a member at {}; remove it first to change its address",
                    existing.addr
                )));
            }
            if voters.contains(&id) {
                return Ok(Response::new(MembershipResponse {
                    log_index: 0,
                    members: self.member_list(),
                    message: format!("node {id} is already a voter; nothing changed"),
                }));
            }
        }
        let wait = self.agent.config().raft.join_timeout.0;
        let learner = tokio::time::timeout(wait, self.agent.add_learner(id, Peer { addr: addr.clone() })).await;
        let added = match learner {
            Err(_) => None,
            Ok(r) => Some(r.map_err(status::client_write)?.log_id.index),
        };
        // openraft answers as soon as the learner is in the membership, even
        // when nothing answers at its address: promote it only once it has
        // really replicated the log up to its own joining.
        let caught_up = match added {
            Some(index) => self.agent.wait_replicated(id, index, wait).await,
            None => false,
        };
        if !caught_up {
            let undo = self
                .agent
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await;
            let left = if undo.is_ok() {
                "it was removed again"
            } else {
                "it stays a learner"
            };
            return Err(Status::deadline_exceeded(format!(
                "node {id} at {addr} did not catch up within {} (raft.join_timeout); {left}, and the voters are unchanged. Is it running and reachable?",
                humantime::format_duration(wait)
            )));
        }
        let mut after = voters.clone();
        after.insert(id);
        self.keeps_a_reachable_majority(&after).await?;
        let resp = self
            .agent
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
            .map_err(status::client_write)?;
        let message = format!("node {id} at {addr} joined as a voter");
        self.record(&message, &by).await;
        Ok(Response::new(MembershipResponse {
            log_index: resp.log_id.index,
            members: self.member_list(),
            message,
        }))
    }

    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Result<Response<MembershipResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "RemoveNode")?;
        let by = auth::actor(&caller, &req);
        let forward = |ch, r| async move { ClusterClient::new(ch).remove_node(r).await };
        if let Some(resp) = super::on_leader(&self.agent, req.clone_for_forward(&by), forward).await? {
            return Ok(resp);
        }
        let id = req.into_inner().id;
        let (nodes, voters) = self.agent.members();
        if !nodes.contains_key(&id) {
            return Err(Status::not_found(format!("node {id} is not a member of this cluster")));
        }
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the last voter; removing it would end the cluster"
                )));
            }
            let mut after = voters.clone();
            after.remove(&id);
            self.keeps_a_reachable_majority(&after).await?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let message = format!("node {id} removed");
        // A leader that removes itself steps down as the change commits and
        // can no longer commit the record: it records the change first.
        let itself = id == self.agent.id();
        if itself {
            self.record(&message, &by).await;
        }
        let resp = self
            .agent
            .change_membership(change)
            .await
            .map_err(status::client_write)?;
        if !itself {
            self.record(&message, &by).await;
        }
        Ok(Response::new(MembershipResponse {
            log_index: resp.log_id.index,
            members: self.member_list(),
            message,
        }))
    }

    async fn propose_note(&self, req: Request<ProposeNoteRequest>) -> Result<Response<ProposeResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "ProposeNote")?;
        let by = auth::actor(&caller, &req);
        let text = req.into_inner().text;
        if text.len() > MAX_NOTE_BYTES {
            return Err(Status::invalid_argument(format!(
                "text: a note holds at most {MAX_NOTE_BYTES} bytes, got {}",
                text.len()
            )));
        }
        if !self.notes.allow() {
            return Err(Status::resource_exhausted(format!(
                "notes are committed through one node at most {NOTES_PER_SECOND} a second (bursts of {NOTE_BURST}); try again later"
            )));
        }
        let done = self
            .agent
            .propose(Command::Note { text, by })
            .await
            .map_err(status::propose)?;
        Ok(Response::new(ProposeResponse {
            log_index: done.index,
            log_time_ms: done.reply.log_time_ms,
        }))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<OverrideResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "Drain")?;
        let by = auth::actor(&caller, &req);
        let r = req.into_inner();
        let reason = required_reason(r.reason)?;
        let command = Command::Drain {
            endpoint: r.endpoint,
            reason,
            for_ms: (r.for_ms > 0).then_some(r.for_ms),
            force: r.force,
            by,
        };
        self.override_with(command).await
    }

    async fn undrain(&self, req: Request<UndrainRequest>) -> Result<Response<OverrideResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "Undrain")?;
        let by = auth::actor(&caller, &req);
        let endpoint = req.into_inner().endpoint;
        self.override_with(Command::Undrain { endpoint, by }).await
    }

    async fn pause_dns(&self, req: Request<PauseDnsRequest>) -> Result<Response<OverrideResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "PauseDns")?;
        let by = auth::actor(&caller, &req);
        let r = req.into_inner();
        let reason = if r.pause { required_reason(r.reason)? } else { r.reason };
        self.override_with(Command::PauseDns {
            paused: r.pause,
            reason,
            by,
        })
        .await
    }

    async fn explain(&self, req: Request<ExplainRequest>) -> Result<Response<ExplainResponse>, Status> {
        auth::reader(&self.agent, &req, "Explain", false)?;
        let id = req.into_inner().endpoint;
        let (_, voters) = self.agent.members();
        let e = self.agent.read(|sm| sm.app.explain(&id, &voters)).await;
        let e = e.ok_or_else(|| Status::not_found(format!("endpoint {id:?} is not in the committed catalog")))?;
        let json = serde_json::to_string(&e).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ExplainResponse { json }))
    }

    async fn replay(&self, req: Request<ReplayRequest>) -> Result<Response<ReplayResponse>, Status> {
        auth::reader(&self.agent, &req, "Replay", false)?;
        let r = req.into_inner();
        let ppm = match r.panic_threshold {
            Some(t) if !(0.0..=1.0).contains(&t) => {
                return Err(Status::invalid_argument(format!(
                    "panic_threshold: expected 0.0 to 1.0, got {t}"
                )))
            }
            Some(t) => Some((t * 1_000_000.0).round() as u32),
            None => None,
        };
        if r.quorum == Some(0) {
            return Err(Status::invalid_argument("quorum: expected at least 1"));
        }
        let settings = crate::replay::Settings {
            quorum: r.quorum,
            observation_ttl_ms: r.observation_ttl_ms,
            hold_down_ms: r.hold_down_ms,
            panic_threshold_ppm: ppm,
            panic_window_ms: r.panic_window_ms,
        };
        let c = self.agent.replay(&settings).await.map_err(Status::internal)?;
        let json = serde_json::to_string(&c).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ReplayResponse { json }))
    }

    async fn apply_catalog(&self, req: Request<ApplyCatalogRequest>) -> Result<Response<ApplyCatalogResponse>, Status> {
        let caller = auth::operator(&self.agent, &req, "ApplyCatalog")?;
        let by = auth::actor(&caller, &req);
        let r = req.into_inner();
        let mut catalog: crate::types::Catalog = serde_json::from_str(&r.catalog_json)
            .map_err(|e| Status::invalid_argument(format!("catalog_json: {e}")))?;
        let committed = self.agent.read(|sm| sm.app.catalog.clone()).await;
        let committed_version = committed.as_ref().map(|c| c.version).unwrap_or(0);
        // An operator's apply is a change by definition: it goes in above
        // the committed version whatever the file says.
        catalog.version = catalog.version.max(committed_version + 1);
        let diff = match &committed {
            Some(c) => c.diff(&catalog),
            None => vec!["first catalog".into()],
        };
        let unchanged = committed
            .as_ref()
            .is_some_and(|c| c.content_digest() == catalog.content_digest());
        let mut out = ApplyCatalogResponse {
            committed_version,
            version: catalog.version,
            diff,
            applied: false,
            log_index: 0,
            message: String::new(),
        };
        if unchanged {
            out.message = format!("the committed catalog (version {committed_version}) already says this");
            out.version = committed_version;
            return Ok(Response::new(out));
        }
        if !r.commit {
            out.message = "not applied: shown only (--yes applies it)".into();
            return Ok(Response::new(out));
        }
        let done = self
            .agent
            .propose(Command::ApplyCatalog { catalog, by })
            .await
            .map_err(status::propose)?;
        out.applied = done.reply.accepted;
        out.log_index = done.index;
        out.message = done.reply.detail;
        Ok(Response::new(out))
    }
}

/// An override needs a reason a colleague can read later, and a bounded one.
fn required_reason(reason: String) -> Result<String, Status> {
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err(Status::invalid_argument("reason: say why (it goes in the history)"));
    }
    if reason.len() > MAX_NOTE_BYTES {
        return Err(Status::invalid_argument(format!(
            "reason: at most {MAX_NOTE_BYTES} bytes, got {}",
            reason.len()
        )));
    }
    Ok(reason)
}

impl ClusterService {
    /// Commits an operator override and says what the state machine made of it.
    async fn override_with(&self, command: Command) -> Result<Response<OverrideResponse>, Status> {
        let done = self.agent.propose(command).await.map_err(status::propose)?;
        Ok(Response::new(OverrideResponse {
            applied: done.reply.accepted,
            message: done.reply.detail,
            log_index: done.index,
        }))
    }
}

/// A request copy that keeps the metadata a forwarding decision looks at,
/// and says who made the call.
trait CloneForForward<T> {
    fn clone_for_forward(&self, by: &str) -> Request<T>;
}

impl<T: Clone> CloneForForward<T> for Request<T> {
    fn clone_for_forward(&self, by: &str) -> Request<T> {
        let mut r = Request::new(self.get_ref().clone());
        *r.metadata_mut() = self.metadata().clone();
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(by) {
            r.metadata_mut().insert(auth::BY_HEADER, v);
        }
        r
    }
}

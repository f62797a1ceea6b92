//! Handlers of `vantage.v1.Endpoints`: the local probe view beside every
//! agent's replicated observation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::time::Instant;

use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::decide;
use crate::model::NodeId;
use crate::probe::EndpointView;
use crate::propose::Observer;
use crate::proto::v1::endpoints_server::Endpoints;
use crate::proto::v1::{
    AgentInfo, AgentObservation, EndpointInfo, ListEndpointsRequest, ListEndpointsResponse, LocalProbe,
};
use crate::proto::v1::{DnsRecord, HostRecords};
use crate::state::AppState;

pub struct EndpointsService {
    agent: Arc<Agent>,
    observer: Arc<Observer>,
}

impl EndpointsService {
    pub fn new(agent: Arc<Agent>, observer: Arc<Observer>) -> Self {
        EndpointsService { agent, observer }
    }
}

#[tonic::async_trait]
impl Endpoints for EndpointsService {
    async fn list(&self, req: Request<ListEndpointsRequest>) -> Result<Response<ListEndpointsResponse>, Status> {
        super::auth::reader(&self.agent, &req, "Endpoints.List", false)?;
        let ListEndpointsRequest { linearizable, prefix } = req.into_inner();
        if linearizable {
            super::linearize(&self.agent).await?;
        }
        let resp = snapshot(&self.agent, &self.observer, &prefix, linearizable).await;
        Ok(Response::new(resp))
    }
}

/// The answer to `Endpoints.List` (after any linearizing wait): `/` and the
/// gRPC query show the same thing.
pub(crate) async fn snapshot(
    agent: &Agent,
    observer: &Observer,
    prefix: &str,
    linearizable: bool,
) -> ListEndpointsResponse {
    let local = observer.endpoints.view.read().map(|v| v.clone()).unwrap_or_default();
    let (_, voters) = agent.members();
    let mine = (agent.id(), *observer.abstaining.borrow(), observer.icmp.clone());
    agent
        .read(|sm| list(&sm.app, &local, &voters, prefix, mine, linearizable))
        .await
}

/// The answer to `Endpoints.List` from the applied state and this agent's probe view.
fn list(
    app: &AppState,
    local: &BTreeMap<String, EndpointView>,
    voters: &BTreeSet<NodeId>,
    prefix: &str,
    (node_id, abstaining, icmp): (NodeId, bool, String),
    linearizable: bool,
) -> ListEndpointsResponse {
    let ids: BTreeSet<&String> = local
        .keys()
        .chain(app.observations.keys())
        .filter(|id| id.starts_with(prefix))
        .collect();
    let now = Instant::now();
    let ttl = app.catalog.as_ref().map(|c| c.observation_ttl_ms).unwrap_or(u64::MAX);
    let quorum = decide::quorum(app.catalog.as_ref().and_then(|c| c.quorum), voters.len()) as u32;
    let endpoints = ids
        .into_iter()
        .map(|id| {
            let mine = local.get(id);
            let (pool, address) = id.split_once('/').unwrap_or(("", id));
            let decided = app.endpoints.get(id);
            EndpointInfo {
                decision: decided.map(|d| d.decision.as_str().to_string()).unwrap_or_default(),
                decided_ms: decided.map(|d| d.decided_ms).unwrap_or(0),
                decided_index: decided.map(|d| d.decided_index).unwrap_or(0),
                reason: decided.map(|d| d.reason.clone()).unwrap_or_default(),
                in_dns: decided.map(|d| d.in_dns).unwrap_or(false),
                dns_reason: decided.map(|d| d.dns_reason.clone()).unwrap_or_default(),
                id: id.clone(),
                pool: pool.to_string(),
                address: address.to_string(),
                check: mine.map(|m| m.spec.check.describe()).unwrap_or_default(),
                local: mine.map(|m| LocalProbe {
                    status: m.state.as_str().to_string(),
                    successes: m.evidence.successes,
                    failures: m.evidence.failures,
                    probes: m.evidence.probes,
                    last_rtt_us: m.evidence.last_rtt_us,
                    last_error: m.evidence.last_error.clone().unwrap_or_default(),
                    last_probe_ms_ago: m.last_probe.map(|t| now.duration_since(t).as_millis() as u64),
                    warning: m.warning.clone().unwrap_or_default(),
                    extra_probes: m.extra_probes,
                }),
                observations: app
                    .observations
                    .get(id)
                    .map(|per_agent| {
                        per_agent
                            .iter()
                            .map(|(agent, o)| {
                                let report = app.report(*agent, o);
                                let counted = decide::counts(*agent, &report, voters, app.log_time_ms, ttl);
                                AgentObservation {
                                    counted: counted.is_ok(),
                                    uncounted_reason: counted.err().map(|w| w.as_str().to_string()).unwrap_or_default(),
                                    agent: *agent,
                                    status: o.status.as_str().to_string(),
                                    since_ms: o.since_ms,
                                    reported_ms: o.reported_ms,
                                    age_ms: app.log_time_ms.saturating_sub(o.reported_ms),
                                    log_index: o.index,
                                    last_error: o
                                        .evidence
                                        .as_ref()
                                        .and_then(|e| e.last_error.clone())
                                        .unwrap_or_default(),
                                    last_rtt_us: o.evidence.as_ref().and_then(|e| e.last_rtt_us),
                                    abstaining: app.agents.get(agent).map(|a| a.abstain).unwrap_or(false),
                                    downs: o.downs,
                                    ups: o.ups,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    ListEndpointsResponse {
        node_id,
        log_time_ms: app.log_time_ms,
        abstaining,
        icmp,
        endpoints,
        linearizable,
        panic: app.panic.is_some(),
        panic_reason: app.panic.as_ref().map(|p| p.reason.clone()).unwrap_or_default(),
        records: host_records(app),
        quorum,
        voters: voters.iter().copied().collect(),
        agents: app
            .agents
            .iter()
            .map(|(id, a)| AgentInfo {
                agent: *id,
                last_seen_ms: a.last_seen_ms,
                age_ms: app.log_time_ms.saturating_sub(a.last_seen_ms),
                abstaining: a.abstain,
                seq_boot: a.last_seq.boot,
                seq_n: a.last_seq.n,
            })
            .collect(),
    }
}

/// The desired records grouped by hostname (every owned hostname, even one
/// with no record), as the API shows them.
fn host_records(app: &AppState) -> Vec<HostRecords> {
    let mut by_host: BTreeMap<String, Vec<DnsRecord>> =
        app.owned_names().into_keys().map(|h| (h, Vec::new())).collect();
    for r in app.desired_records() {
        by_host.entry(r.name).or_default().push(DnsRecord {
            r#type: r.rtype.as_str().to_string(),
            content: r.content,
        });
    }
    by_host
        .into_iter()
        .map(|(hostname, records)| HostRecords { hostname, records })
        .collect()
}

//! Handlers of `vantage.v1.Endpoints`: the local probe view beside every
//! agent's replicated observation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::propose::Observer;
use crate::proto::v1::endpoints_server::Endpoints;
use crate::proto::v1::{
    AgentInfo, AgentObservation, EndpointInfo, ListEndpointsRequest, ListEndpointsResponse, LocalProbe,
};

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
        let ListEndpointsRequest { linearizable, prefix } = req.into_inner();
        if linearizable {
            super::linearize(&self.agent).await?;
        }
        let sm = self.agent.sm.read().await;
        let app = &sm.app;
        let local = self
            .observer
            .endpoints
            .view
            .read()
            .map_err(|_| Status::internal("probe view unavailable"))?
            .clone();
        let ids: BTreeSet<&String> = local
            .keys()
            .chain(app.observations.keys())
            .filter(|id| id.starts_with(&prefix))
            .collect();
        let now = Instant::now();
        let endpoints = ids
            .into_iter()
            .map(|id| {
                let mine = local.get(id);
                let (pool, address) = id.split_once('/').unwrap_or(("", id));
                EndpointInfo {
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
                    }),
                    observations: app
                        .observations
                        .get(id)
                        .map(|per_agent| {
                            per_agent
                                .iter()
                                .map(|(agent, o)| AgentObservation {
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
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(ListEndpointsResponse {
            node_id: self.agent.id,
            log_time_ms: app.log_time_ms,
            abstaining: *self.observer.abstaining.borrow(),
            icmp: self.observer.icmp.clone(),
            endpoints,
            linearizable,
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
        }))
    }
}

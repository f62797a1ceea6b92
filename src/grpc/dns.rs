//! Handlers of `vantage.v1.Dns`: the plan the leader would apply now.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::proto::v1::dns_client::DnsClient;
use crate::proto::v1::dns_server::Dns;
use crate::proto::v1::{PlanRequest, PlanResponse};
use crate::reconcile::Reconciler;

pub struct DnsService {
    agent: Arc<Agent>,
    reconciler: Option<Arc<Reconciler>>,
}

impl DnsService {
    pub fn new(agent: Arc<Agent>, reconciler: Option<Arc<Reconciler>>) -> Self {
        DnsService { agent, reconciler }
    }
}

#[tonic::async_trait]
impl Dns for DnsService {
    async fn plan(&self, req: Request<PlanRequest>) -> Result<Response<PlanResponse>, Status> {
        super::auth::operator(&self.agent, &req, "Dns.Plan")?;
        // Only the leader talks to the provider.
        if let Some(resp) = super::on_leader(
            &self.agent,
            req,
            |ch, r| async move { DnsClient::new(ch).plan(r).await },
        )
        .await?
        {
            return Ok(resp);
        }
        let term = self.agent.term();
        let Some(r) = &self.reconciler else {
            return Ok(Response::new(PlanResponse {
                leader_id: self.agent.id(),
                term,
                ..Default::default()
            }));
        };
        let plan = r
            .plan()
            .await
            .map_err(|e| Status::unavailable(format!("{}: {e}", r.describe())))?;
        Ok(Response::new(PlanResponse {
            provider: r.describe(),
            dry_run: r.dry_run,
            leader_id: self.agent.id(),
            term,
            served_index: plan.served_index,
            desired: plan.desired.iter().map(|d| d.to_string()).collect(),
            actual: plan.actual.iter().map(|a| a.record.to_string()).collect(),
            changes: plan.changes.iter().map(|c| c.to_string()).collect(),
        }))
    }
}

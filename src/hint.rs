//! Cooperative confirmation. When a probe fails while this agent sees an
//! endpoint up (and the endpoint has rapid recheck on), the agent tells its
//! peers at once with a `Hint` on the peer connections, and each of them
//! probes that endpoint now instead of waiting for its own phase. Their own
//! `fall` consecutive failures still decide what they report: a suspicion
//! the others do not confirm costs them one probe each, never a decision.
//!
//! A hint is not a log entry: it is advisory, lost hints cost only speed,
//! and the log stays what the state machine decides on. It is bounded on
//! both sides: an agent sends at most one hint per endpoint per
//! [`SEND_EVERY`], and a receiver honours at most one per endpoint per
//! interval (see `Scheduler::hint`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::codec::{self, HintRequest};

/// The least time between two hints about one endpoint from this agent.
pub const SEND_EVERY: Duration = Duration::from_secs(1);

/// Sends a hint to every other member for each suspect endpoint; runs until
/// the suspects channel closes.
pub async fn send(agent: Arc<Agent>, mut suspects: mpsc::UnboundedReceiver<String>) {
    let mut sent: BTreeMap<String, Instant> = BTreeMap::new();
    while let Some(first) = suspects.recv().await {
        let mut batch: BTreeSet<String> = std::iter::once(first)
            .chain(std::iter::from_fn(|| suspects.try_recv().ok()))
            .collect();
        batch.retain(|e| sent.get(e).is_none_or(|t| t.elapsed() >= SEND_EVERY));
        if batch.is_empty() {
            continue;
        }
        let now = Instant::now();
        for e in &batch {
            sent.insert(e.clone(), now);
        }
        sent.retain(|_, t| t.elapsed() < SEND_EVERY);
        let body = HintRequest {
            sender: agent.id(),
            endpoints: batch.into_iter().collect(),
        };
        let Ok(payload) = codec::encode(&body) else { continue };
        let (nodes, _) = agent.members();
        let timeout = agent.config().raft.rpc_timeout.0;
        for (id, peer) in nodes.into_iter().filter(|(id, _)| *id != agent.id()) {
            let Ok(mut client) = agent.connector().raft_client(&peer.addr) else {
                continue;
            };
            let mut req = tonic::Request::new(payload.clone());
            req.set_timeout(timeout);
            tokio::spawn(async move {
                if let Err(s) = client.hint(req).await {
                    tracing::debug!(peer = id, "hint not delivered: {}", s.message());
                }
            });
        }
    }
}

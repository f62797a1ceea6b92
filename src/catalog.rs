//! The catalog loop: while this node leads, it keeps the replicated catalog
//! equal to the one its configuration describes, proposing it on taking
//! office and whenever they differ.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Agent;
use crate::types::Command;

/// Runs until the task is dropped or Raft stops.
pub async fn maintain(agent: Arc<Agent>) {
    let Ok(wanted) = agent.config().catalog() else { return };
    let mut metrics = agent.metrics_watch();
    loop {
        if agent.is_leader() {
            let current = agent.read(|sm| sm.app.catalog.clone()).await;
            if current.as_ref() != Some(&wanted) {
                match agent
                    .propose_as_leader(agent.id(), Command::Catalog(wanted.clone()))
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

//! The catalog loop. The catalog is cluster state with a version: the first
//! leader commits the catalog of its configuration, and after that a leader
//! proposes its file's catalog only when the file carries a higher
//! `catalog_version` than the committed one. A node whose file lags behind
//! (a rollout in progress) keeps following the committed catalog and reports
//! the drift in `cluster status`; leadership moving to it changes nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Agent;
use crate::types::{Catalog, Command};

/// This node's file against the committed catalog, for `cluster status`,
/// given each one's [`Catalog::content_digest`] (computed once by the caller).
pub fn drift(local: Option<(&Catalog, &str)>, committed: Option<(&Catalog, &str)>) -> Option<String> {
    let ((local, local_hash), (committed, committed_hash)) = (local?, committed?);
    if local_hash == committed_hash {
        return None;
    }
    let diff = committed.diff(local);
    Some(format!(
        "config drift: this node's file (catalog_version {}, hash {local_hash}) differs from the committed catalog \
         (version {}, hash {committed_hash}){}; the cluster follows the committed one",
        local.version,
        committed.version,
        if diff.is_empty() {
            String::new()
        } else {
            format!(" ({})", diff.join("; "))
        }
    ))
}

/// Runs until the task is dropped or Raft stops.
pub async fn maintain(agent: Arc<Agent>) {
    let mut metrics = agent.role_watch();
    let mut refused_version = None;
    loop {
        if let (true, Some(wanted)) = (agent.is_leader(), agent.local_catalog()) {
            let current = agent.read(|sm| sm.app.catalog.clone()).await;
            let newer = match &current {
                None => true,
                Some(c) => wanted.version > c.version,
            };
            if newer && refused_version != Some(wanted.version) {
                match agent
                    .propose_as_leader(agent.id(), Command::Catalog(wanted.clone()))
                    .await
                {
                    Ok(c) if c.reply.accepted => tracing::info!(
                        version = wanted.version,
                        endpoints = wanted.pools.iter().map(|p| p.endpoints.len()).sum::<usize>(),
                        "catalog committed from this node's configuration"
                    ),
                    Ok(c) => {
                        tracing::warn!("catalog refused: {}", c.reply.detail);
                        refused_version = Some(wanted.version);
                    }
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

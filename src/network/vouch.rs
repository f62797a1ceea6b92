//! Which peers may send Raft traffic to this node.
//!
//! A member of the current (possibly uncommitted) membership is accepted;
//! before this node is part of a cluster, the configured members are. An
//! unknown sender is refused, so a stranger or a removed node can neither
//! disrupt elections nor move this node's term. Because this node may lag
//! behind a membership change, an unknown sender is checked (at most every
//! 2 s) against a current member's view and accepted once vouched for.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Connector;
use crate::proto::v1::GetStatusRequest;
use crate::types::{NodeId, Peer};

/// How often one unknown sender may trigger a check with the members.
const RECHECK: Duration = Duration::from_secs(2);

/// The peer admission of one node.
pub struct Vouching {
    /// This node.
    me: NodeId,
    /// The configured `[[members]]`: who may talk before a cluster is formed.
    configured: Vec<(NodeId, String)>,
    connector: Connector,
    /// Senders vouched for by a current member.
    vouched: Mutex<BTreeSet<NodeId>>,
    /// When each unknown sender was last checked, to bound the checks.
    checked: Mutex<HashMap<NodeId, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vouching {
    pub fn new(me: NodeId, configured: Vec<(NodeId, String)>, connector: Connector) -> Vouching {
        Vouching {
            me,
            configured,
            connector,
            vouched: Mutex::new(BTreeSet::new()),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Whether Raft traffic from `sender` is accepted, given the membership
    /// this node knows (`members`, empty before it joined a cluster). An
    /// unknown sender is refused now and checked with the members in the
    /// background.
    pub fn admits(self: &Arc<Self>, sender: NodeId, members: &[(NodeId, Peer)]) -> bool {
        if members.iter().any(|(id, _)| *id == sender) {
            return true;
        }
        if members.is_empty() && self.configured.iter().any(|(id, _)| *id == sender) {
            return true;
        }
        if lock(&self.vouched).contains(&sender) {
            return true;
        }
        let due = {
            let mut checked = lock(&self.checked);
            let now = Instant::now();
            match checked.get(&sender) {
                Some(t) if now.duration_since(*t) < RECHECK => false,
                _ => {
                    checked.insert(sender, now);
                    true
                }
            }
        };
        if due {
            let peers: Vec<String> = members
                .iter()
                .filter(|(id, _)| *id != self.me)
                .map(|(_, n)| n.addr.clone())
                .chain(
                    self.configured
                        .iter()
                        .filter(|(id, _)| *id != self.me)
                        .map(|(_, a)| a.clone()),
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
            let mut req = tonic::Request::new(GetStatusRequest { linearizable: false });
            req.set_timeout(Duration::from_secs(1));
            let Ok(resp) = client.get_status(req).await else {
                continue;
            };
            let status = resp.into_inner();
            if status.members.iter().any(|m| m.id == sender) {
                tracing::info!(sender, vouched_by = %addr, "accepting Raft traffic from a member this node did not know yet");
                lock(&self.vouched).insert(sender);
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
}

//! The safety rules, checked at every entry every replica applies.
//!
//! The checks restate the rules from the state's raw data (observations,
//! agents' last reports, placements), not through the decision code they
//! check, so a bug in that code shows up here as a violation.

use std::collections::{BTreeMap, BTreeSet};

use vantage::detect::Health;
use vantage::model::{Decision, NodeId};
use vantage::state::AppState;

/// What a replica held at its previous applied index.
struct Prev {
    index: u64,
    in_dns: BTreeMap<String, bool>,
    panic: bool,
}

/// FNV-1a of the state's JSON.
fn state_hash(app: &AppState) -> u64 {
    let bytes = serde_json::to_vec(app).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Collects violations of the safety rules.
pub struct Checker {
    /// Index → (hash of the whole serialised state, the first node that applied it).
    pub digests: BTreeMap<u64, (u64, NodeId)>,
    prev: BTreeMap<NodeId, Prev>,
    pub violations: Vec<String>,
    pub downs_checked: u64,
    pub entries_checked: u64,
    /// Entries applied while the panic freeze held (its rule was in play).
    pub panic_entries: u64,
    /// Observations older than this (log time) do not count (the sim's `observation_ttl`).
    ttl_ms: u64,
    /// Every applied entry (node, index, simulated ms, digest), when asked
    /// for with `--trace`: two runs of a seed can be compared line by line.
    pub log: Option<Vec<String>>,
}

impl Checker {
    pub fn new(_agents: usize) -> Checker {
        Checker {
            digests: BTreeMap::new(),
            prev: BTreeMap::new(),
            violations: Vec::new(),
            downs_checked: 0,
            entries_checked: 0,
            panic_entries: 0,
            ttl_ms: 15_000,
            log: None,
        }
    }

    fn violation(&mut self, node: NodeId, index: u64, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(format!("node {node} at index {index}: {what}"));
        }
    }

    /// Called by `node`'s state machine after it applied `index`.
    pub fn on_apply(&mut self, node: NodeId, index: u64, voters: &BTreeSet<NodeId>, app: &AppState) {
        self.entries_checked += 1;
        if app.panic.is_some() {
            self.panic_entries += 1;
        }
        if let Some(log) = &mut self.log {
            let ms = turmoil::sim_elapsed().unwrap_or_default().as_millis();
            log.push(format!(
                "{ms} node {node} index {index} digest {:016x} log_time {}",
                app.digest, app.log_time_ms
            ));
        }
        // Replicas that applied the same index hold the same state, byte for
        // byte: the hash of the serialised state (maps are ordered, so equal
        // states serialise alike), which covers the entry digest chain too.
        let hash = state_hash(app);
        match self.digests.get(&index) {
            Some((d, first)) if *d != hash => {
                let (d, first) = (*d, *first);
                self.violation(
                    node,
                    index,
                    format!("state hash {hash:016x}, node {first} had {d:016x} at this index"),
                );
            }
            Some(_) => {}
            None => {
                self.digests.insert(index, (hash, node));
            }
        }
        let quorum = voters.len() / 2 + 1;
        // A down decision made at this index had a quorum of fresh, counted,
        // non-abstaining downs.
        let mut found = Vec::new();
        for (id, ep) in &app.endpoints {
            if ep.decision != Decision::Down || ep.decided_index != index {
                continue;
            }
            let fresh_downs: Vec<NodeId> = app
                .observations
                .get(id)
                .into_iter()
                .flatten()
                .filter(|(agent, o)| {
                    o.status == Health::Down
                        && voters.contains(agent)
                        && app.agents.get(agent).is_some_and(|r| {
                            !r.abstain && app.log_time_ms.saturating_sub(r.last_seen_ms) <= self.ttl_ms
                        })
                })
                .map(|(a, _)| *a)
                .collect();
            self.downs_checked += 1;
            if fresh_downs.len() < quorum {
                found.push(format!(
                    "{id} decided down with {} fresh downs {fresh_downs:?}, quorum {quorum} of voters {voters:?} ({})",
                    fresh_downs.len(),
                    ep.reason
                ));
            }
        }
        // Leaving DNS: only decided down; never while the panic freeze holds.
        let in_dns: BTreeMap<String, bool> = app.endpoints.iter().map(|(id, e)| (id.clone(), e.in_dns)).collect();
        if let Some(p) = self.prev.get(&node) {
            if p.index + 1 == index {
                for (id, was) in &p.in_dns {
                    let ep = app.endpoints.get(id);
                    if *was && ep.is_some_and(|e| !e.in_dns) {
                        let e = ep.expect("checked");
                        if e.decision != Decision::Down && e.drained.is_none() && !e.retiring {
                            found.push(format!(
                                "{id} left DNS while decided {:?} ({})",
                                e.decision, e.dns_reason
                            ));
                        }
                        if p.panic && app.panic.is_some() {
                            found.push(format!("{id} left DNS during the panic freeze"));
                        }
                    }
                }
            }
        }
        // min_healthy and a hostname never empty.
        if let Some(c) = &app.catalog {
            for pool in &c.pools {
                let placed = pool
                    .endpoints
                    .iter()
                    .filter(|e| app.endpoints.get(&e.id).is_some_and(|s| s.in_dns))
                    .count();
                let floor = (pool.min_healthy as usize).min(pool.endpoints.len()).max(1);
                if !pool.endpoints.is_empty() && app.endpoints.len() == pool.endpoints.len() && placed < floor {
                    found.push(format!(
                        "pool {} has {placed} endpoints in DNS, below min_healthy {floor}",
                        pool.name
                    ));
                }
            }
        }
        for f in found {
            self.violation(node, index, f);
        }
        self.prev.insert(
            node,
            Prev {
                index,
                in_dns,
                panic: app.panic.is_some(),
            },
        );
    }
}

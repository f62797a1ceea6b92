//! Why an endpoint is where it is: the answer to the first question after a
//! page, computed from the replicated state alone (so every replica gives
//! the same one), with what would change it next.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{AppState, Override};
use crate::decide;
use crate::model::{Decision, EventKind, NodeId};

/// One agent's report on the endpoint, and whether it counts.
#[derive(Clone, Debug, Serialize)]
pub struct AgentReport {
    pub agent: NodeId,
    pub status: String,
    /// Log time since the agent was last heard from.
    pub age_ms: u64,
    pub counted: bool,
    /// Why it does not count (stale, abstaining, not a voter, unknown).
    pub why: String,
}

/// The explanation of one endpoint at log time `now_ms`.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub endpoint: String,
    pub pool: String,
    pub address: String,
    /// The answer in one line.
    pub reason: String,
    pub decision: String,
    pub decided_ms: u64,
    pub decided_index: u64,
    pub rule: String,
    pub in_dns: bool,
    pub placement: String,
    pub placed_ms: u64,
    pub drained: Option<Override>,
    pub dns_paused: Option<Override>,
    pub quorum: usize,
    pub voters: Vec<NodeId>,
    pub reports: Vec<AgentReport>,
    pub hold_down_until_ms: Option<u64>,
    /// The latest DNS write that named this address, and when.
    pub last_write: Option<String>,
    pub last_write_ms: Option<u64>,
    /// What would change it next, in words.
    pub next: Vec<String>,
    pub now_ms: u64,
}

/// Whether `text` names `address` as a whole word.
fn names(text: &str, address: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')'))
        .any(|w| w == address)
}

impl AppState {
    /// Explains endpoint `id`, or None when the catalog does not list it.
    pub fn explain(&self, id: &str, voters: &BTreeSet<NodeId>) -> Option<Explanation> {
        let st = self.endpoints.get(id)?;
        let c = self.catalog.as_ref()?;
        let now = self.log_time_ms;
        let quorum = decide::quorum(c.quorum, voters.len());
        let mut reports = Vec::new();
        let (mut up, mut down) = (0usize, 0usize);
        let mut heard: BTreeSet<NodeId> = BTreeSet::new();
        if let Some(per_agent) = self.observations.get(id) {
            for (agent, o) in per_agent {
                heard.insert(*agent);
                let r = self.report(*agent, o);
                let counted = decide::counts(*agent, &r, voters, now, c.observation_ttl_ms);
                if counted.is_ok() {
                    match o.status {
                        crate::detect::Health::Up => up += 1,
                        _ => down += 1,
                    }
                }
                reports.push(AgentReport {
                    agent: *agent,
                    status: o.status.as_str().to_string(),
                    age_ms: now.saturating_sub(r.agent_seen_ms),
                    counted: counted.is_ok(),
                    why: counted.err().map(|u| u.as_str().to_string()).unwrap_or_default(),
                });
            }
        }
        for v in voters.iter().filter(|v| !heard.contains(v)) {
            reports.push(AgentReport {
                agent: *v,
                status: "none".into(),
                age_ms: 0,
                counted: false,
                why: "has not reported this endpoint".into(),
            });
        }
        // The guard's own rule, so the answer matches what holds it.
        let hold_down_until_ms = decide::hold_down_until(&st.candidate(id), c.hold_down_ms)
            .filter(|until| !st.in_dns && st.decision != Decision::Down && *until > now && st.drained.is_none());
        let address = st.address.clone();
        let last = self
            .history
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::DnsWrite && names(&e.rule, &address));
        let placement = st.dns_reason.clone();
        let reason = if let Some(d) = &st.drained {
            format!("drained by {}: {}", d.by, d.reason)
        } else if let Some(until) = hold_down_until_ms {
            format!(
                "decided up, held out of DNS by hold_down until {}",
                crate::model::at(until)
            )
        } else if st.in_dns && st.decision == Decision::Down {
            format!("decided down but kept in DNS by a guard: {placement}")
        } else if !st.in_dns && st.decision == Decision::Down {
            format!("decided down: {}", st.reason)
        } else if st.in_dns {
            format!("in DNS: decided {}: {}", st.decision.as_str(), st.reason)
        } else {
            format!("out of DNS: {placement}")
        };
        let mut next = Vec::new();
        let by_regions = c.pools.iter().any(|p| p.name == st.pool && p.by_regions);
        let region_counts = by_regions.then(|| {
            let t = self.tally(id, voters, c.observation_ttl_ms);
            let regions = c.regions.iter().cloned().collect();
            decide::rule_by_regions(st.decision, &t, voters, &regions).1
        });
        match (&st.drained, st.decision) {
            (None, d) if region_counts.is_some() => {
                let counts = region_counts.as_deref().unwrap_or_default();
                let down = d != Decision::Down;
                next.push(format!(
                    "decided by regions: {} once a majority of the {} regions each have a majority of their \
                     counted agents saying {} (now: {})",
                    if down { "removed" } else { "back" },
                    counts.len(),
                    if down { "down" } else { "up" },
                    decide::describe_regions(counts, down)
                ));
            }
            (Some(d), _) => next.push(match d.until_ms {
                Some(u) => format!(
                    "the maintenance window ends at {}, or `vantage endpoint undrain {id}`",
                    crate::model::at(u)
                ),
                None => format!("`vantage endpoint undrain {id}`"),
            }),
            (None, Decision::Down) => next.push(format!(
                "needs {} more counted agent(s) to see it up (quorum {quorum}, {up} up now)",
                quorum.saturating_sub(up)
            )),
            (None, _) => next.push(format!(
                "removed once {} more counted agent(s) see it down (quorum {quorum}, {down} down now)",
                quorum.saturating_sub(down)
            )),
        }
        if let Some(until) = hold_down_until_ms {
            next.push(format!("hold_down ends at {}", crate::model::at(until)));
        }
        if self.dns_paused.is_some() {
            next.push("DNS writes are paused: nothing reaches the provider until `vantage dns resume`".into());
        }
        Some(Explanation {
            endpoint: id.to_string(),
            pool: st.pool.clone(),
            address,
            reason,
            decision: st.decision.as_str().to_string(),
            decided_ms: st.decided_ms,
            decided_index: st.decided_index,
            rule: st.reason.clone(),
            in_dns: st.in_dns && st.drained.is_none(),
            placement,
            placed_ms: st.dns_since_ms,
            drained: st.drained.clone(),
            dns_paused: self.dns_paused.clone(),
            quorum,
            voters: voters.iter().copied().collect(),
            reports,
            hold_down_until_ms,
            last_write: last.map(|e| format!("{} {}: {}", e.from, e.to, e.rule)),
            last_write_ms: last.map(|e| e.log_time_ms),
            next,
            now_ms: now,
        })
    }
}

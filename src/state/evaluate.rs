//! Re-evaluation after an entry: the quorum rule per affected endpoint, the
//! panic freeze across all of them, then the guards per pool. Every rule is a
//! pure function in [`crate::decide`]; this module feeds it the state and
//! records what changed.

use std::collections::{BTreeMap, BTreeSet};

use super::audit::Note;
use super::{AppState, EndpointState, Observation, PanicState};
use crate::decide::{self, Candidate, Guards, PanicInput, PanicStep, Report, Tally};
use crate::model::{Decision, EventKind, NodeId};

impl EndpointState {
    /// The endpoint as the DNS guards see it.
    pub(super) fn candidate(&self, id: &str) -> Candidate {
        Candidate {
            id: id.to_string(),
            rtype: self.rtype,
            decision: self.decision,
            in_dns: self.in_dns,
            up_votes: self.up_votes as usize,
            decided_ms: self.decided_ms,
            removed_ms: self.removed_ms,
        }
    }
}

impl AppState {
    /// Applies the quorum rule to `affected` endpoints, then the guards to
    /// their pools (and to any pool with a re-add waiting on its hold-down).
    pub(super) fn reevaluate(&mut self, index: u64, affected: &BTreeSet<String>, voters: &BTreeSet<NodeId>) {
        let Some(c) = &self.catalog else { return };
        let quorum = decide::quorum(c.quorum, voters.len());
        let (ttl, window, ppm) = (c.observation_ttl_ms, c.panic_window_ms, c.panic_threshold_ppm);
        let regional: BTreeSet<String> = c
            .pools
            .iter()
            .filter(|p| p.by_regions)
            .map(|p| p.name.clone())
            .collect();
        let regions = if regional.is_empty() {
            BTreeMap::new()
        } else {
            c.regions.iter().cloned().collect()
        };
        let now = self.log_time_ms;
        let mut pools: BTreeSet<String> = BTreeSet::new();
        let mut new_down = false;
        for id in affected {
            let t = self.tally(id, voters, ttl);
            let Some(st) = self.endpoints.get_mut(id) else { continue };
            if st.retiring {
                // Out of the catalog: no report brings it back.
                pools.insert(st.pool.clone());
                continue;
            }
            st.up_votes = t.up.len() as u32;
            let (next, regions) = if regional.contains(&st.pool) {
                let (next, counts) = decide::rule_by_regions(st.decision, &t, voters, &regions);
                (next, Some(counts))
            } else {
                (decide::rule(st.decision, &t, quorum), None)
            };
            if next == st.decision {
                continue;
            }
            let from = st.decision;
            let counted = if next == Decision::Down {
                t.down.len()
            } else {
                t.up.len()
            };
            let rule = match &regions {
                Some(counts) => {
                    let n = counts.len();
                    format!(
                        "quorum by regions: a majority of {n} regions say {} ({})",
                        next.as_str(),
                        decide::describe_regions(counts, next == Decision::Down)
                    )
                }
                None => format!(
                    "quorum: {counted} counted observations say {} (quorum {quorum} of {} voters)",
                    next.as_str(),
                    voters.len()
                ),
            };
            st.decision = next;
            st.decided_ms = now;
            st.decided_index = index;
            st.reason = rule.clone();
            pools.insert(st.pool.clone());
            new_down |= next == Decision::Down;
            let note = Note {
                tally: Some(&t),
                ..Note::change(id, from.as_str(), next.as_str(), &rule)
            };
            self.event(index, EventKind::Decision, note);
        }
        // A removal from the catalog is an operator's act, not a failure:
        // it does not count toward the panic freeze.
        let total = self.endpoints.values().filter(|e| !e.retiring).count();
        let down = |e: &&EndpointState| e.decision == Decision::Down && !e.retiring;
        let input = PanicInput {
            frozen: self.panic.is_some(),
            new_down,
            recent_downs: self
                .endpoints
                .values()
                .filter(down)
                .filter(|e| e.decided_ms >= now.saturating_sub(window))
                .count(),
            down_now: self.endpoints.values().filter(down).count(),
            total,
            threshold_ppm: ppm,
        };
        match decide::panic_step(&input) {
            PanicStep::Stay => {}
            PanicStep::Freeze => {
                let reason = format!(
                    "{} of {total} endpoints decided down within {window} ms: removals frozen, the observers are more likely wrong than the world",
                    input.recent_downs
                );
                self.panic = Some(PanicState {
                    since_ms: now,
                    index,
                    reason: reason.clone(),
                });
                self.event(index, EventKind::Panic, Note::change("", "normal", "frozen", &reason));
                pools.extend(self.endpoints.values().map(|e| e.pool.clone()));
            }
            PanicStep::Lift => {
                let reason = format!("{} of {total} endpoints decided down: removals resume", input.down_now);
                self.panic = None;
                self.event(index, EventKind::Panic, Note::change("", "frozen", "normal", &reason));
                pools.extend(self.endpoints.values().map(|e| e.pool.clone()));
            }
        }
        // Re-adds waiting on a hold-down become due as log time passes.
        pools.extend(
            self.endpoints
                .values()
                .filter(|e| !e.in_dns && e.decision != Decision::Down)
                .map(|e| e.pool.clone()),
        );
        for pool in pools {
            self.place_pool(index, &pool);
        }
    }

    /// The earliest log time after now at which the state changes with no
    /// new report: a re-add's hold-down or a maintenance window ends.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let c = self.catalog.as_ref()?;
        let now = self.log_time_ms;
        let hold_downs = self
            .endpoints
            .iter()
            .filter(|(_, e)| !e.in_dns && e.decision != Decision::Down && e.drained.is_none())
            .filter_map(|(id, e)| decide::hold_down_until(&e.candidate(id), c.hold_down_ms));
        let windows = self
            .endpoints
            .values()
            .filter_map(|e| e.drained.as_ref().and_then(|d| d.until_ms));
        hold_downs.chain(windows).filter(|t| *t > now).min()
    }

    /// What the quorum rule needs of one agent's observation.
    pub fn report(&self, agent: NodeId, o: &Observation) -> Report {
        let rec = self.agents.get(&agent);
        Report {
            status: o.status,
            agent_seen_ms: rec.map(|r| r.last_seen_ms).unwrap_or(0),
            abstaining: rec.map(|r| r.abstain).unwrap_or(false),
        }
    }

    pub(super) fn tally(&self, id: &str, voters: &BTreeSet<NodeId>, ttl: u64) -> Tally {
        let reports: BTreeMap<NodeId, Report> = self
            .observations
            .get(id)
            .map(|per_agent| {
                per_agent
                    .iter()
                    .map(|(agent, o)| (*agent, self.report(*agent, o)))
                    .collect()
            })
            .unwrap_or_default();
        decide::tally(&reports, voters, self.log_time_ms, ttl)
    }

    /// Applies the guards to one pool and records every change of placement.
    pub(super) fn place_pool(&mut self, index: u64, pool: &str) {
        let Some(c) = &self.catalog else { return };
        let Some(cp) = c.pools.iter().find(|p| p.name == pool) else {
            return;
        };
        let guards = Guards {
            min_healthy: cp.min_healthy as usize,
            hold_down_ms: c.hold_down_ms,
            frozen: self.panic.is_some(),
        };
        // A drained endpoint is out whatever its decision, and does not count
        // for the guards (it is not there to keep a pool healthy).
        let candidates: Vec<Candidate> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.pool == pool && e.drained.is_none())
            .map(|(id, e)| e.candidate(id))
            .collect();
        let now = self.log_time_ms;
        let mut placements = decide::place(&candidates, &guards, now);
        for (id, e) in self.endpoints.iter().filter(|(_, e)| e.pool == pool) {
            if let Some(d) = &e.drained {
                placements.insert(
                    id.clone(),
                    decide::Placement {
                        in_dns: false,
                        reason: format!("drained by {}: {}", d.by, d.reason),
                        guarded: true,
                    },
                );
            }
        }
        let mut retired = Vec::new();
        for (id, placed) in placements {
            let Some(st) = self.endpoints.get_mut(&id) else {
                continue;
            };
            if placed.in_dns != st.in_dns {
                let (from, to) = if placed.in_dns { ("out", "in") } else { ("in", "out") };
                st.in_dns = placed.in_dns;
                st.dns_since_ms = now;
                if !placed.in_dns {
                    st.removed_ms = Some(now);
                }
                st.dns_reason = placed.reason.clone();
                self.event(index, EventKind::Dns, Note::change(&id, from, to, &placed.reason));
            } else if placed.reason != st.dns_reason {
                st.dns_reason = placed.reason.clone();
                if placed.guarded {
                    let state = if placed.in_dns { "in" } else { "out" };
                    self.event(index, EventKind::Guard, Note::change(&id, state, state, &placed.reason));
                }
            }
            if self.endpoints.get(&id).is_some_and(|st| st.retiring && !st.in_dns) {
                retired.push(id);
            }
        }
        for id in retired {
            self.endpoints.remove(&id);
            self.observations.remove(&id);
            self.warnings.remove(&id);
            let note = Note::change(
                &id,
                "retiring",
                "removed",
                "out of DNS: forgotten with the catalog change",
            );
            self.event(index, EventKind::Catalog, note);
        }
    }
}

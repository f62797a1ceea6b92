//! The replicated application state: a pure function of the committed log.
//!
//! Nothing here reads a clock, draws a random number or iterates a hash map:
//! two replicas that applied the same entries hold byte-identical state.
//! Time is the leader-stamped log time carried by each entry.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::decide::{self, Candidate, Decision, Guards, Report};
use crate::detect::{Evidence, Health};
use crate::types::{Catalog, Change, Command, DnsAudit, NodeId, Proposal, Reply, Seq};

/// What the log says about one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Newest report applied from this agent; older or repeated ones are ignored.
    pub last_seq: Seq,
    /// Log time of the agent's latest report (heartbeat or transition).
    pub last_seen_ms: u64,
    /// The agent said it cannot trust its own network.
    pub abstain: bool,
}

/// One agent's latest word on one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub status: Health,
    /// Log time when the agent first reported this status.
    pub since_ms: u64,
    /// Log time of the latest report confirming it.
    pub reported_ms: u64,
    /// Log index of that report.
    pub index: u64,
    /// Evidence of the transition, when it came with one.
    pub evidence: Option<Evidence>,
    /// Transitions to down / up this agent reported (heartbeats not counted).
    pub downs: u64,
    pub ups: u64,
}

/// The cluster's decision about one catalog endpoint and its place in DNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub pool: String,
    pub address: String,
    /// "A" or "AAAA".
    pub rtype: String,
    pub decision: Decision,
    /// Log time and index at which the current decision was made.
    pub decided_ms: u64,
    pub decided_index: u64,
    /// The rule that made it.
    pub reason: String,
    /// Counted up-observations at the last evaluation (health for `min_healthy`).
    pub up_votes: u32,
    /// Whether the endpoint's records belong in DNS.
    pub in_dns: bool,
    /// The rule or guard that placed it.
    pub dns_reason: String,
    pub dns_since_ms: u64,
    /// Log time it last left DNS.
    pub removed_ms: Option<u64>,
}

/// An active panic freeze.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicState {
    pub since_ms: u64,
    pub index: u64,
    pub reason: String,
}

/// One entry of the audit history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Increasing event number.
    pub id: u64,
    /// Log index and log time of the entry that caused it.
    pub index: u64,
    pub log_time_ms: u64,
    /// The endpoint concerned; empty for cluster-wide events.
    pub endpoint: String,
    /// "decision", "dns", "guard", "panic", "catalog" or "refused".
    pub kind: String,
    pub from: String,
    pub to: String,
    /// The rule or guard that applied, in words.
    pub rule: String,
    /// Agents whose counted observations said up / down at the time.
    pub up: Vec<NodeId>,
    pub down: Vec<NodeId>,
    /// Agents whose observations did not count, and why.
    pub uncounted: Vec<(NodeId, String)>,
}

/// The application state every replica holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// Largest leader-stamped time applied so far (log time never goes back).
    pub log_time_ms: u64,
    /// Number of notes applied.
    pub notes_applied: u64,
    /// Text of the last applied note.
    pub last_note: String,
    /// FNV-1a chain over every applied entry, so replicas can compare state cheaply.
    pub digest: u64,
    /// Reporting agents.
    pub agents: BTreeMap<NodeId, AgentRecord>,
    /// Endpoint id → agent → latest observation.
    pub observations: BTreeMap<String, BTreeMap<NodeId, Observation>>,
    /// The endpoints and decision settings in force.
    pub catalog: Option<Catalog>,
    /// Decision and DNS placement of every catalog endpoint.
    pub endpoints: BTreeMap<String, EndpointState>,
    /// Set while removals are frozen.
    pub panic: Option<PanicState>,
    /// Bounded audit history, oldest first.
    pub history: VecDeque<AuditEvent>,
    pub next_event: u64,
    /// The latest provider write (or dry-run plan) the leader reported.
    pub last_dns: Option<DnsAudit>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    if h == 0 {
        h = FNV_OFFSET;
    }
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn reply(log_time_ms: u64, accepted: bool, detail: String) -> Reply {
    Reply {
        log_time_ms,
        accepted,
        detail,
    }
}

impl AppState {
    /// Applies one committed proposal at log `index`; `voters` is the
    /// membership in force at that entry (part of the log, so deterministic).
    pub fn apply(&mut self, index: u64, p: &Proposal, voters: &BTreeSet<NodeId>) -> Reply {
        // Log time is the leader's stamp, kept non-decreasing across leader changes.
        self.log_time_ms = self.log_time_ms.max(p.log_time_ms);
        let encoded = serde_json::to_vec(p).unwrap_or_default();
        self.digest = fnv(fnv(self.digest, &index.to_be_bytes()), &encoded);
        let now = self.log_time_ms;
        let reply = match &p.command {
            Command::Note { text } => {
                self.notes_applied += 1;
                self.last_note = text.clone();
                reply(now, true, format!("note {} recorded", self.notes_applied))
            }
            Command::DnsAudit(a) => {
                let kind = if a.dry_run { "dns-plan" } else { "dns-write" };
                let rule = format!(
                    "term {} served index {} via {}: {}; {} ({} ms)",
                    a.term,
                    a.served_index,
                    a.provider,
                    if a.changes.is_empty() {
                        "no changes".to_string()
                    } else {
                        a.changes.join(", ")
                    },
                    a.outcome,
                    a.latency_ms
                );
                let to = if a.dry_run {
                    "planned"
                } else if a.ok {
                    "applied"
                } else {
                    "failed"
                };
                self.event(index, "", kind, &format!("node {}", p.origin), to, &rule, None);
                self.last_dns = Some(a.clone());
                reply(now, true, format!("{kind} recorded"))
            }
            Command::Catalog(c) => {
                self.install_catalog(index, c.clone(), voters);
                reply(
                    now,
                    true,
                    format!("catalog of {} endpoints installed", self.endpoints.len()),
                )
            }
            Command::Observe {
                agent,
                seq,
                abstain,
                changes,
            } => {
                let abstain_changed = match self.admit_report(p.origin, *agent, *seq, *abstain, voters) {
                    Ok(changed) => changed,
                    Err(why) => return self.refuse(index, why),
                };
                let mut affected = BTreeSet::new();
                let mut ignored = Vec::new();
                for Change {
                    endpoint,
                    status,
                    evidence,
                } in changes
                {
                    if self.endpoints.contains_key(endpoint) {
                        self.observe(endpoint, *agent, *status, Some(evidence), index);
                        affected.insert(endpoint.clone());
                    } else {
                        ignored.push(endpoint.as_str());
                    }
                }
                if !ignored.is_empty() {
                    let why = format!(
                        "agent {agent} reported endpoints not in the catalog, ignored: {}",
                        ignored.join(", ")
                    );
                    self.event(index, "", "refused", "", "", &why, None);
                }
                if abstain_changed {
                    affected.extend(self.endpoints.keys().cloned());
                }
                self.reevaluate(index, &affected, voters);
                reply(now, true, format!("{} changes from agent {agent}", affected.len()))
            }
            Command::Heartbeat {
                agent,
                seq,
                abstain,
                up,
                down,
                unknown,
            } => {
                if let Err(why) = self.admit_report(p.origin, *agent, *seq, *abstain, voters) {
                    return self.refuse(index, why);
                }
                for (list, status) in [(up, Health::Up), (down, Health::Down), (unknown, Health::Unknown)] {
                    for endpoint in list {
                        if self.endpoints.contains_key(endpoint) {
                            self.observe(endpoint, *agent, status, None, index);
                        }
                    }
                }
                // A heartbeat refreshes the agent's every vote (and may revive a stale one).
                let all: BTreeSet<String> = self.endpoints.keys().cloned().collect();
                self.reevaluate(index, &all, voters);
                reply(now, true, format!("heartbeat from agent {agent}"))
            }
        };
        self.trim_history();
        reply
    }

    /// Re-evaluates every endpoint after the voter set changed.
    pub fn membership_changed(&mut self, index: u64, voters: &BTreeSet<NodeId>) {
        let all: BTreeSet<String> = self.endpoints.keys().cloned().collect();
        self.reevaluate(index, &all, voters);
        self.trim_history();
    }

    fn refuse(&mut self, index: u64, why: String) -> Reply {
        self.event(index, "", "refused", "", "", &why, None);
        self.trim_history();
        reply(self.log_time_ms, false, why)
    }

    /// Checks an agent report and records the agent's liveness. Returns
    /// whether its abstain flag changed.
    fn admit_report(
        &mut self,
        origin: NodeId,
        agent: NodeId,
        seq: Seq,
        abstain: bool,
        voters: &BTreeSet<NodeId>,
    ) -> Result<bool, String> {
        if agent != origin {
            return Err(format!("report for agent {agent} proposed by node {origin}: ignored"));
        }
        if !voters.contains(&agent) {
            return Err(format!("report from node {agent}, which is not a voter: ignored"));
        }
        if self.catalog.is_none() {
            return Err(format!("report from agent {agent} before any catalog: ignored"));
        }
        let now = self.log_time_ms;
        let rec = self.agents.entry(agent).or_default();
        if seq <= rec.last_seq {
            return Err(format!(
                "report {seq:?} from agent {agent} is not newer than {:?}: ignored",
                rec.last_seq
            ));
        }
        let changed = rec.abstain != abstain;
        rec.last_seq = seq;
        rec.last_seen_ms = now;
        rec.abstain = abstain;
        Ok(changed)
    }

    /// Appends an audit event.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        index: u64,
        endpoint: &str,
        kind: &str,
        from: &str,
        to: &str,
        rule: &str,
        tally: Option<&decide::Tally>,
    ) {
        self.next_event += 1;
        let (up, down, uncounted) = match tally {
            Some(t) => (
                t.up.clone(),
                t.down.clone(),
                t.uncounted.iter().map(|(a, w)| (*a, w.as_str().to_string())).collect(),
            ),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        self.history.push_back(AuditEvent {
            id: self.next_event,
            index,
            log_time_ms: self.log_time_ms,
            endpoint: endpoint.to_string(),
            kind: kind.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            rule: rule.to_string(),
            up,
            down,
            uncounted,
        });
    }

    fn trim_history(&mut self) {
        let limit = self.catalog.as_ref().map(|c| c.history_limit).unwrap_or(1000).max(1) as usize;
        while self.history.len() > limit {
            self.history.pop_front();
        }
    }

    /// Installs a new catalog: new endpoints start at the catalog's initial
    /// decision and in DNS; endpoints no longer listed are forgotten.
    fn install_catalog(&mut self, index: u64, c: Catalog, voters: &BTreeSet<NodeId>) {
        let now = self.log_time_ms;
        let mut wanted: BTreeMap<String, (String, String)> = BTreeMap::new();
        for pool in &c.pools {
            for e in &pool.endpoints {
                wanted.insert(e.id.clone(), (pool.name.clone(), e.address.clone()));
            }
        }
        let gone: Vec<String> = self
            .endpoints
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.endpoints.remove(&id);
            self.observations.remove(&id);
            self.event(
                index,
                &id,
                "catalog",
                "listed",
                "removed",
                "endpoint removed from the catalog",
                None,
            );
        }
        for (id, (pool, address)) in wanted {
            let rtype = if address.contains(':') { "AAAA" } else { "A" };
            match self.endpoints.get_mut(&id) {
                Some(st) => st.pool = pool,
                None => {
                    self.endpoints.insert(
                        id,
                        EndpointState {
                            pool,
                            address,
                            rtype: rtype.to_string(),
                            decision: c.initial,
                            decided_ms: now,
                            decided_index: index,
                            reason: "initial decision from the catalog".into(),
                            up_votes: 0,
                            in_dns: true,
                            dns_reason: "initial".into(),
                            dns_since_ms: now,
                            removed_ms: None,
                        },
                    );
                }
            }
        }
        self.observations.retain(|id, _| self.endpoints.contains_key(id));
        let summary = format!(
            "catalog installed: {} endpoints in {} pools",
            self.endpoints.len(),
            c.pools.len()
        );
        self.catalog = Some(c);
        self.event(index, "", "catalog", "", "", &summary, None);
        let all: BTreeSet<String> = self.endpoints.keys().cloned().collect();
        self.reevaluate(index, &all, voters);
    }

    /// Applies the quorum rule to `affected` endpoints, then the guards to
    /// their pools (and to any pool with a re-add waiting on its hold-down).
    fn reevaluate(&mut self, index: u64, affected: &BTreeSet<String>, voters: &BTreeSet<NodeId>) {
        let Some(c) = &self.catalog else { return };
        let quorum = c
            .quorum
            .map(|q| q as usize)
            .unwrap_or_else(|| decide::majority(voters.len()));
        let (ttl, window, ppm) = (c.observation_ttl_ms, c.panic_window_ms, c.panic_threshold_ppm);
        let now = self.log_time_ms;
        let mut pools: BTreeSet<String> = BTreeSet::new();
        let mut new_down = false;
        for id in affected {
            let t = self.tally(id, voters, ttl);
            let Some(st) = self.endpoints.get_mut(id) else { continue };
            st.up_votes = t.up.len() as u32;
            let next = decide::rule(st.decision, &t, quorum);
            if next == st.decision {
                continue;
            }
            let from = st.decision;
            let counted = if next == Decision::Down {
                t.down.len()
            } else {
                t.up.len()
            };
            let rule = format!(
                "quorum: {counted} counted observations say {} (quorum {quorum} of {} voters)",
                next.as_str(),
                voters.len()
            );
            st.decision = next;
            st.decided_ms = now;
            st.decided_index = index;
            st.reason = rule.clone();
            pools.insert(st.pool.clone());
            new_down |= next == Decision::Down;
            self.event(index, id, "decision", from.as_str(), next.as_str(), &rule, Some(&t));
        }
        let total = self.endpoints.len();
        let down_now = self.endpoints.values().filter(|e| e.decision == Decision::Down).count();
        if new_down && self.panic.is_none() {
            let recent = self
                .endpoints
                .values()
                .filter(|e| e.decision == Decision::Down && e.decided_ms >= now.saturating_sub(window))
                .count();
            if decide::panic_triggered(recent, total, ppm) {
                let reason = format!(
                    "{recent} of {total} endpoints decided down within {} ms: removals frozen, the observers are more likely wrong than the world",
                    window
                );
                self.panic = Some(PanicState {
                    since_ms: now,
                    index,
                    reason: reason.clone(),
                });
                self.event(index, "", "panic", "normal", "frozen", &reason, None);
                pools.extend(self.endpoints.values().map(|e| e.pool.clone()));
            }
        } else if self.panic.is_some() && !decide::panic_triggered(down_now, total, ppm) {
            let reason = format!("{down_now} of {total} endpoints decided down: removals resume");
            self.panic = None;
            self.event(index, "", "panic", "frozen", "normal", &reason, None);
            pools.extend(self.endpoints.values().map(|e| e.pool.clone()));
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

    /// What the quorum rule needs of one agent's observation.
    pub fn report(&self, agent: NodeId, o: &Observation) -> Report {
        let rec = self.agents.get(&agent);
        Report {
            status: o.status,
            agent_seen_ms: rec.map(|r| r.last_seen_ms).unwrap_or(0),
            abstaining: rec.map(|r| r.abstain).unwrap_or(false),
        }
    }

    fn tally(&self, id: &str, voters: &BTreeSet<NodeId>, ttl: u64) -> decide::Tally {
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
    fn place_pool(&mut self, index: u64, pool: &str) {
        let Some(c) = &self.catalog else { return };
        let Some(cp) = c.pools.iter().find(|p| p.name == pool) else {
            return;
        };
        let guards = Guards {
            min_healthy: cp.min_healthy as usize,
            hold_down_ms: c.hold_down_ms,
            frozen: self.panic.is_some(),
        };
        let candidates: Vec<Candidate> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.pool == pool)
            .map(|(id, e)| Candidate {
                id: id.clone(),
                rtype: if e.rtype == "AAAA" { "AAAA" } else { "A" },
                decision: e.decision,
                in_dns: e.in_dns,
                up_votes: e.up_votes as usize,
                decided_ms: e.decided_ms,
                removed_ms: e.removed_ms,
            })
            .collect();
        let now = self.log_time_ms;
        for (id, placed) in decide::place(&candidates, &guards, now) {
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
                self.event(index, &id, "dns", from, to, &placed.reason, None);
            } else if placed.reason != st.dns_reason {
                st.dns_reason = placed.reason.clone();
                if placed.guarded {
                    let state = if placed.in_dns { "in" } else { "out" };
                    self.event(index, &id, "guard", state, state, &placed.reason, None);
                }
            }
        }
    }

    /// The records this catalog may touch: hostname → every address of its pool.
    pub fn owned_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Some(c) = &self.catalog {
            for pool in &c.pools {
                for host in &pool.hostnames {
                    out.entry(host.clone())
                        .or_default()
                        .extend(pool.endpoints.iter().map(|e| e.address.clone()));
                }
            }
        }
        out
    }

    /// The record set the DNS should hold: hostname → (type, address).
    pub fn desired_records(&self) -> BTreeMap<String, BTreeSet<(String, String)>> {
        let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        let Some(c) = &self.catalog else { return out };
        for pool in &c.pools {
            for host in &pool.hostnames {
                let set = out.entry(host.clone()).or_default();
                for e in &pool.endpoints {
                    if let Some(st) = self.endpoints.get(&e.id).filter(|st| st.in_dns) {
                        set.insert((st.rtype.clone(), st.address.clone()));
                    }
                }
            }
        }
        out
    }

    fn observe(&mut self, endpoint: &str, agent: NodeId, status: Health, evidence: Option<&Evidence>, index: u64) {
        let now = self.log_time_ms;
        let per_agent = self.observations.entry(endpoint.to_string()).or_default();
        let o = per_agent.entry(agent).or_insert_with(|| Observation {
            status,
            since_ms: now,
            reported_ms: now,
            index,
            evidence: None,
            downs: 0,
            ups: 0,
        });
        if o.status != status {
            o.status = status;
            o.since_ms = now;
            o.evidence = None;
        }
        o.reported_ms = now;
        o.index = index;
        // Only a reported transition (it carries evidence) counts as one.
        if let Some(e) = evidence {
            o.evidence = Some(e.clone());
            match status {
                Health::Down => o.downs += 1,
                Health::Up => o.ups += 1,
                Health::Unknown => {}
            }
        }
    }

    /// The digest as a fixed-width hex string.
    pub fn digest_hex(&self) -> String {
        format!("{:016x}", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CatalogEndpoint, CatalogPool};

    fn voters() -> BTreeSet<NodeId> {
        [1, 2, 3].into_iter().collect()
    }

    fn catalog(addrs: &[&str]) -> Catalog {
        Catalog {
            quorum: None,
            observation_ttl_ms: 15_000,
            initial: Decision::Up,
            panic_threshold_ppm: 1_000_000,
            panic_window_ms: 60_000,
            hold_down_ms: 0,
            history_limit: 100,
            pools: vec![CatalogPool {
                name: "web".into(),
                hostnames: vec!["www.example.com".into()],
                min_healthy: 0,
                endpoints: addrs
                    .iter()
                    .map(|a| CatalogEndpoint {
                        id: format!("web/{a}"),
                        address: a.to_string(),
                    })
                    .collect(),
            }],
        }
    }

    fn with_catalog() -> AppState {
        let mut s = AppState::default();
        let p = Proposal {
            origin: 1,
            log_time_ms: 10,
            command: Command::Catalog(catalog(&["10.0.0.1", "10.0.0.2"])),
        };
        assert!(s.apply(1, &p, &voters()).accepted);
        s
    }

    fn note(origin: u64, t: u64, text: &str) -> Proposal {
        Proposal {
            origin,
            log_time_ms: t,
            command: Command::Note { text: text.into() },
        }
    }

    fn observe(origin: u64, agent: u64, n: u64, t: u64, endpoint: &str, status: Health) -> Proposal {
        Proposal {
            origin,
            log_time_ms: t,
            command: Command::Observe {
                agent,
                seq: Seq { boot: 1, n },
                abstain: false,
                changes: vec![Change {
                    endpoint: endpoint.into(),
                    status,
                    evidence: Evidence::default(),
                }],
            },
        }
    }

    #[test]
    fn log_time_never_goes_back() {
        let mut s = AppState::default();
        s.apply(1, &note(1, 1000, "a"), &voters());
        let r = s.apply(2, &note(2, 900, "b"), &voters());
        assert_eq!(r.log_time_ms, 1000);
        assert_eq!(s.log_time_ms, 1000);
    }

    #[test]
    fn same_log_gives_same_digest_and_order_matters() {
        let entries = [note(1, 10, "a"), note(2, 11, "b"), note(3, 12, "c")];
        let mut a = AppState::default();
        let mut b = AppState::default();
        for (i, e) in entries.iter().enumerate() {
            a.apply(i as u64 + 1, e, &voters());
            b.apply(i as u64 + 1, e, &voters());
        }
        assert_eq!(a, b);
        let mut c = AppState::default();
        for (i, e) in entries.iter().rev().enumerate() {
            c.apply(i as u64 + 1, e, &voters());
        }
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn observation_for_another_agent_is_ignored() {
        let mut s = with_catalog();
        let r = s.apply(2, &observe(2, 3, 1, 100, "web/10.0.0.1", Health::Down), &voters());
        assert!(!r.accepted, "{r:?}");
        assert!(s.observations.is_empty());
        assert!(s.agents.is_empty());
        assert_eq!(s.history.back().unwrap().kind, "refused");
    }

    #[test]
    fn observation_from_a_non_voter_is_ignored() {
        let mut s = with_catalog();
        let r = s.apply(2, &observe(7, 7, 1, 100, "web/10.0.0.1", Health::Down), &voters());
        assert!(!r.accepted, "{r:?}");
        assert!(s.observations.is_empty());
    }

    #[test]
    fn observation_for_an_unconfigured_endpoint_is_ignored() {
        let mut s = with_catalog();
        s.apply(2, &observe(1, 1, 1, 100, "web/192.0.2.99", Health::Down), &voters());
        assert!(!s.observations.contains_key("web/192.0.2.99"));
        assert!(s
            .history
            .iter()
            .any(|e| e.kind == "refused" && e.rule.contains("192.0.2.99")));
    }

    #[test]
    fn repeated_or_older_reports_are_ignored() {
        let mut s = with_catalog();
        assert!(
            s.apply(2, &observe(2, 2, 5, 100, "web/10.0.0.1", Health::Down), &voters())
                .accepted
        );
        assert!(
            !s.apply(3, &observe(2, 2, 5, 200, "web/10.0.0.1", Health::Up), &voters())
                .accepted
        );
        assert!(
            !s.apply(4, &observe(2, 2, 4, 300, "web/10.0.0.1", Health::Up), &voters())
                .accepted
        );
        assert_eq!(s.observations["web/10.0.0.1"][&2].status, Health::Down);
        assert!(
            s.apply(5, &observe(2, 2, 6, 400, "web/10.0.0.1", Health::Up), &voters())
                .accepted
        );
        let o = &s.observations["web/10.0.0.1"][&2];
        assert_eq!((o.status, o.since_ms, o.index), (Health::Up, 400, 5));
        assert_eq!((o.downs, o.ups), (1, 1));
    }

    #[test]
    fn heartbeat_confirms_without_resetting_since() {
        let mut s = with_catalog();
        s.apply(2, &observe(1, 1, 1, 100, "web/10.0.0.1", Health::Up), &voters());
        let hb = Proposal {
            origin: 1,
            log_time_ms: 5000,
            command: Command::Heartbeat {
                agent: 1,
                seq: Seq { boot: 1, n: 2 },
                abstain: false,
                up: vec!["web/10.0.0.1".into()],
                down: vec!["web/10.0.0.2".into()],
                unknown: vec![],
            },
        };
        assert!(s.apply(3, &hb, &voters()).accepted);
        let o = &s.observations["web/10.0.0.1"][&1];
        assert_eq!((o.since_ms, o.reported_ms), (100, 5000));
        assert_eq!(s.observations["web/10.0.0.2"][&1].status, Health::Down);
        assert_eq!(s.agents[&1].last_seen_ms, 5000);
    }

    #[test]
    fn mass_removal_freezes_and_raises_the_alarm_until_endpoints_recover() {
        let addrs: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let mut cat = catalog(&refs);
        cat.panic_threshold_ppm = 500_000;
        let mut s = AppState::default();
        let install = Proposal {
            origin: 1,
            log_time_ms: 10,
            command: Command::Catalog(cat),
        };
        s.apply(1, &install, &voters());
        let mut index = 1;
        let mut down = |s: &mut AppState, agent: u64, n: u64, t: u64, ids: &[String], status: Health| {
            index += 1;
            let p = Proposal {
                origin: agent,
                log_time_ms: t,
                command: Command::Observe {
                    agent,
                    seq: Seq { boot: 1, n },
                    abstain: false,
                    changes: ids
                        .iter()
                        .map(|a| Change {
                            endpoint: format!("web/{a}"),
                            status,
                            evidence: Evidence::default(),
                        })
                        .collect(),
                },
            };
            s.apply(index, &p, &voters());
        };
        // Agents 1 and 2 see 8 of 10 endpoints go down within seconds.
        down(&mut s, 1, 1, 1000, &addrs[..8], Health::Down);
        down(&mut s, 2, 1, 1500, &addrs[..8], Health::Down);
        let decided = s.endpoints.values().filter(|e| e.decision == Decision::Down).count();
        assert_eq!(decided, 8, "decisions are still made");
        assert!(s.panic.is_some(), "alarm raised");
        assert!(s.history.iter().any(|e| e.kind == "panic" && e.to == "frozen"));
        // At most half could go before the freeze; the rest are held in DNS.
        let in_dns = s.endpoints.values().filter(|e| e.in_dns).count();
        assert!(in_dns >= 5, "removals held: {in_dns} in DNS");
        assert!(s
            .endpoints
            .values()
            .any(|e| e.decision == Decision::Down && e.in_dns && e.dns_reason.contains("panic freeze")));
        // They recover: the freeze lifts.
        down(&mut s, 1, 2, 5000, &addrs[..8], Health::Up);
        down(&mut s, 2, 2, 5500, &addrs[..8], Health::Up);
        assert!(s.panic.is_none());
        assert!(s.history.iter().any(|e| e.kind == "panic" && e.to == "normal"));
    }

    #[test]
    fn quorum_of_two_decides_down_and_history_names_the_agents() {
        let mut s = with_catalog();
        s.apply(2, &observe(1, 1, 1, 100, "web/10.0.0.1", Health::Down), &voters());
        assert_eq!(
            s.endpoints["web/10.0.0.1"].decision,
            Decision::Up,
            "one agent is not a quorum"
        );
        s.apply(3, &observe(2, 2, 1, 200, "web/10.0.0.1", Health::Down), &voters());
        let st = &s.endpoints["web/10.0.0.1"];
        assert_eq!((st.decision, st.decided_index, st.in_dns), (Decision::Down, 3, false));
        let ev = s.history.iter().find(|e| e.kind == "decision").unwrap();
        assert_eq!((ev.index, ev.down.clone()), (3, vec![1, 2]));
        assert_eq!(s.desired_records()["www.example.com"].len(), 1);
    }
}

//! The replicated application state: a pure function of the committed log.
//!
//! Nothing here reads a clock, draws a random number or iterates a hash map:
//! two replicas that applied the same entries hold byte-identical state.
//! Time is the leader-stamped log time carried by each entry.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::decide;
use crate::detect::{Evidence, Health};
use crate::model::{Decision, EventKind, NodeId, RecordType, Seq};
use crate::types::{Catalog, Command, DnsAudit, DnsIntent, Proposal, Reply};

mod audit;
mod catalog;
mod evaluate;
mod explain;
mod overrides;
#[cfg(test)]
mod tests;

pub use audit::AuditEvent;
use audit::Note;

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
    pub rtype: RecordType,
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
    /// Set while an operator holds it out of DNS.
    #[serde(default)]
    pub drained: Option<Override>,
    /// Removed from the catalog, and leaving DNS through the guards like a
    /// down decision; forgotten once it is out.
    #[serde(default)]
    pub retiring: bool,
}

/// An operator's override: who, why, since and (for a maintenance window)
/// until when, in log time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub by: String,
    pub reason: String,
    pub since_ms: u64,
    pub until_ms: Option<u64>,
}

/// An active panic freeze.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicState {
    pub since_ms: u64,
    pub index: u64,
    pub reason: String,
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
    /// The node that reported `last_dns`.
    #[serde(default)]
    pub last_dns_by: NodeId,
    /// A write announced and not yet followed by its outcome.
    #[serde(default)]
    pub dns_intent: Option<(NodeId, u64, DnsIntent)>,
    /// Set while an operator has paused every provider write.
    #[serde(default)]
    pub dns_paused: Option<Override>,
    /// Hostname → address → the log index it left the catalog at: still
    /// owned, never desired, until a successful write after that index.
    #[serde(default)]
    pub retiring: BTreeMap<String, BTreeMap<String, u64>>,
    /// Each notifier's delivery position and open alerts, by notifier name.
    #[serde(default)]
    pub notifiers: BTreeMap<String, NotifierState>,
    /// Endpoint id → agent → what the agent's probes warn about.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warnings: BTreeMap<String, BTreeMap<NodeId, String>>,
}

/// Where a notifier stands: every history event up to `position` was
/// delivered (or did not concern it); `open` holds the alerts it triggered
/// and has not resolved, by alert key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierState {
    pub position: u64,
    pub open: BTreeMap<String, OpenAlert>,
}

/// An alert a notifier triggered and has not resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlert {
    /// Log time it was triggered, and last sent (the trigger or a reminder).
    pub since_ms: u64,
    pub last_sent_ms: u64,
    /// What the trigger said, repeated by reminders.
    pub summary: String,
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
        self.expire_drains(index, voters);
        if let Some(claim) = p.command.claim(p.origin) {
            if let Err(refusal) = self.admit(&claim, voters) {
                return self.refuse(index, refusal.to_string());
            }
        }
        let reply = match &p.command {
            Command::Note { text, by } => {
                self.notes_applied += 1;
                self.last_note = text.clone();
                let from = if by.is_empty() {
                    format!("node {}", p.origin)
                } else {
                    by.clone()
                };
                self.event(index, EventKind::Note, Note::change("", &from, "", text));
                reply(now, true, format!("note {} recorded", self.notes_applied))
            }
            Command::DnsAudit(a) => {
                let kind = if a.dry_run {
                    EventKind::DnsPlan
                } else {
                    EventKind::DnsWrite
                };
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
                let writer = format!("node {}", p.origin);
                self.event(index, kind, Note::change("", &writer, to, &rule));
                self.last_dns = Some(a.clone());
                self.last_dns_by = p.origin;
                if !a.dry_run {
                    self.dns_intent = None;
                }
                if a.ok && !a.dry_run {
                    // The provider now holds the desired set as of served_index.
                    for addresses in self.retiring.values_mut() {
                        addresses.retain(|_, since| *since > a.served_index);
                    }
                    self.retiring.retain(|_, addresses| !addresses.is_empty());
                }
                reply(now, true, format!("{kind} recorded"))
            }
            Command::DnsIntent(i) => {
                self.dns_intent = Some((p.origin, index, i.clone()));
                reply(now, true, "DNS intent recorded".into())
            }
            Command::Catalog(c) => {
                let by = format!("node {}'s configuration", p.origin);
                self.change_catalog(index, c, &by, voters, now)
            }
            Command::ApplyCatalog { catalog, by } => self.change_catalog(index, catalog, by, voters, now),
            Command::Drain {
                endpoint,
                reason,
                for_ms,
                force,
                by,
            } => self.drain(index, endpoint, reason, *for_ms, *force, by, voters),
            Command::Undrain { endpoint, by } => self.undrain(index, endpoint, &format!("undrained by {by}"), voters),
            Command::PauseDns { paused, reason, by } => self.pause_dns(index, *paused, reason, by),
            Command::Notified { notifier, state } => {
                // No history event: the notifier reads the history, and must
                // not find its own bookkeeping there.
                let current = self.notifiers.get(notifier).map(|n| n.position).unwrap_or(0);
                if state.position < current {
                    reply(now, false, format!("notifier {notifier} is already at event {current}"))
                } else {
                    self.notifiers.insert(notifier.clone(), state.clone());
                    reply(now, true, format!("notifier {notifier} at event {}", state.position))
                }
            }
            Command::Tick { due_ms } => {
                // Drains whose window ended were lifted above; placing every
                // pool lets a re-add whose hold-down ended go back now.
                self.reevaluate(index, &BTreeSet::new(), voters);
                reply(now, true, format!("tick for {}", crate::model::at(*due_ms)))
            }
            Command::Observe {
                agent,
                seq,
                abstain,
                changes,
            } => {
                let abstain_changed = self.record_report(*agent, *seq, *abstain);
                let mut affected = BTreeSet::new();
                for c in changes {
                    self.observe(&c.endpoint, *agent, c.status, Some(&c.evidence), index);
                    affected.insert(c.endpoint.clone());
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
                warnings,
            } => {
                self.record_report(*agent, *seq, *abstain);
                self.record_warnings(index, *agent, warnings);
                for (list, status) in [(up, Health::Up), (down, Health::Down), (unknown, Health::Unknown)] {
                    for endpoint in list {
                        self.observe(endpoint, *agent, status, None, index);
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

    /// The admission rule ([`decide::admit`]) against this state: the leader
    /// asks it before proposing a report, and `apply` before applying one.
    pub fn admit(&self, claim: &decide::ReportClaim<'_>, voters: &BTreeSet<NodeId>) -> Result<(), decide::Refusal> {
        let last = self.agents.get(&claim.agent).map(|r| r.last_seq);
        let listed = |id: &str| self.lists(id);
        let listed: Option<&dyn Fn(&str) -> bool> = match self.catalog {
            Some(_) => Some(&listed),
            None => None,
        };
        decide::admit(claim, voters, last, listed, self.log_time_ms)
    }

    /// Re-evaluates every endpoint after the voter set changed.
    pub fn membership_changed(&mut self, index: u64, voters: &BTreeSet<NodeId>) {
        let all: BTreeSet<String> = self.endpoints.keys().cloned().collect();
        self.reevaluate(index, &all, voters);
        self.trim_history();
    }

    fn refuse(&mut self, index: u64, why: String) -> Reply {
        self.event(index, EventKind::Refused, Note::rule(&why));
        self.trim_history();
        reply(self.log_time_ms, false, why)
    }

    /// Records an admitted report's sequence and the agent's liveness.
    /// Returns whether its abstain flag changed.
    fn record_report(&mut self, agent: NodeId, seq: Seq, abstain: bool) -> bool {
        let now = self.log_time_ms;
        let rec = self.agents.entry(agent).or_default();
        let changed = rec.abstain != abstain;
        rec.last_seq = seq;
        rec.last_seen_ms = now;
        rec.abstain = abstain;
        changed
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

    /// Replaces one agent's warnings; an endpoint's first warning and the
    /// end of its last are history events (the notifiers' triggers).
    fn record_warnings(&mut self, index: u64, agent: NodeId, warnings: &BTreeMap<String, String>) {
        let ids: BTreeSet<String> = self
            .warnings
            .keys()
            .chain(warnings.keys())
            .filter(|id| self.endpoints.contains_key(*id))
            .cloned()
            .collect();
        for id in ids {
            let per_agent = self.warnings.entry(id.clone()).or_default();
            let before = per_agent.is_empty();
            match warnings.get(&id) {
                Some(w) => per_agent.insert(agent, w.clone()),
                None => per_agent.remove(&agent),
            };
            let after = per_agent.is_empty();
            if after {
                self.warnings.remove(&id);
            }
            match (before, after, warnings.get(&id)) {
                (true, false, Some(w)) => {
                    let rule = format!("agent {agent}: {w}");
                    self.event(index, EventKind::Warning, Note::change(&id, "none", "warning", &rule));
                }
                (false, true, _) => {
                    let rule = format!("agent {agent} no longer warns, nor does any other");
                    self.event(index, EventKind::Warning, Note::change(&id, "warning", "none", &rule));
                }
                _ => {}
            }
        }
    }

    /// The digest as a fixed-width hex string.
    pub fn digest_hex(&self) -> String {
        format!("{:016x}", self.digest)
    }
}

//! The replicated application state: a pure function of the committed log.
//!
//! Nothing here reads a clock, draws a random number or iterates a hash map:
//! two replicas that applied the same entries hold byte-identical state.
//! Time is the leader-stamped log time carried by each entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::{Evidence, Health};
use crate::types::{Change, Command, NodeId, Proposal, Reply, Seq};

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
    /// Applies one committed proposal at log `index`.
    pub fn apply(&mut self, index: u64, p: &Proposal) -> Reply {
        // Log time is the leader's stamp, kept non-decreasing across leader changes.
        self.log_time_ms = self.log_time_ms.max(p.log_time_ms);
        let encoded = serde_json::to_vec(p).unwrap_or_default();
        self.digest = fnv(fnv(self.digest, &index.to_be_bytes()), &encoded);
        let now = self.log_time_ms;
        match &p.command {
            Command::Note { text } => {
                self.notes_applied += 1;
                self.last_note = text.clone();
                reply(now, true, format!("note {} recorded", self.notes_applied))
            }
            Command::Observe {
                agent,
                seq,
                abstain,
                changes,
            } => {
                if let Err(why) = self.admit_report(p.origin, *agent, *seq, *abstain) {
                    return reply(now, false, why);
                }
                for Change {
                    endpoint,
                    status,
                    evidence,
                } in changes
                {
                    self.observe(endpoint, *agent, *status, Some(evidence), index);
                }
                reply(now, true, format!("{} changes from agent {agent}", changes.len()))
            }
            Command::Heartbeat {
                agent,
                seq,
                abstain,
                up,
                down,
                unknown,
            } => {
                if let Err(why) = self.admit_report(p.origin, *agent, *seq, *abstain) {
                    return reply(now, false, why);
                }
                for (list, status) in [(up, Health::Up), (down, Health::Down), (unknown, Health::Unknown)] {
                    for endpoint in list {
                        self.observe(endpoint, *agent, status, None, index);
                    }
                }
                reply(now, true, format!("heartbeat from agent {agent}"))
            }
        }
    }

    /// Checks an agent report and records the agent's liveness.
    fn admit_report(&mut self, origin: NodeId, agent: NodeId, seq: Seq, abstain: bool) -> Result<(), String> {
        if agent != origin {
            return Err(format!("report for agent {agent} proposed by node {origin}: ignored"));
        }
        let now = self.log_time_ms;
        let rec = self.agents.entry(agent).or_default();
        if seq <= rec.last_seq {
            return Err(format!(
                "report {seq:?} from agent {agent} is not newer than {:?}: ignored",
                rec.last_seq
            ));
        }
        rec.last_seq = seq;
        rec.last_seen_ms = now;
        rec.abstain = abstain;
        Ok(())
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
        s.apply(1, &note(1, 1000, "a"));
        let r = s.apply(2, &note(2, 900, "b"));
        assert_eq!(r.log_time_ms, 1000);
        assert_eq!(s.log_time_ms, 1000);
    }

    #[test]
    fn same_log_gives_same_digest_and_order_matters() {
        let entries = [note(1, 10, "a"), note(2, 11, "b"), note(3, 12, "c")];
        let mut a = AppState::default();
        let mut b = AppState::default();
        for (i, e) in entries.iter().enumerate() {
            a.apply(i as u64 + 1, e);
            b.apply(i as u64 + 1, e);
        }
        assert_eq!(a, b);
        let mut c = AppState::default();
        for (i, e) in entries.iter().rev().enumerate() {
            c.apply(i as u64 + 1, e);
        }
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn observation_for_another_agent_is_ignored() {
        let mut s = AppState::default();
        let r = s.apply(1, &observe(2, 3, 1, 100, "web/10.0.0.1", Health::Down));
        assert!(!r.accepted, "{r:?}");
        assert!(s.observations.is_empty());
        assert!(s.agents.is_empty());
    }

    #[test]
    fn repeated_or_older_reports_are_ignored() {
        let mut s = AppState::default();
        assert!(
            s.apply(1, &observe(2, 2, 5, 100, "web/10.0.0.1", Health::Down))
                .accepted
        );
        assert!(!s.apply(2, &observe(2, 2, 5, 200, "web/10.0.0.1", Health::Up)).accepted);
        assert!(!s.apply(3, &observe(2, 2, 4, 300, "web/10.0.0.1", Health::Up)).accepted);
        assert_eq!(s.observations["web/10.0.0.1"][&2].status, Health::Down);
        assert!(s.apply(4, &observe(2, 2, 6, 400, "web/10.0.0.1", Health::Up)).accepted);
        let o = &s.observations["web/10.0.0.1"][&2];
        assert_eq!((o.status, o.since_ms, o.index), (Health::Up, 400, 4));
        assert_eq!((o.downs, o.ups), (1, 1));
    }

    #[test]
    fn heartbeat_confirms_without_resetting_since() {
        let mut s = AppState::default();
        s.apply(1, &observe(1, 1, 1, 100, "web/10.0.0.1", Health::Up));
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
        assert!(s.apply(2, &hb).accepted);
        let o = &s.observations["web/10.0.0.1"][&1];
        assert_eq!((o.since_ms, o.reported_ms), (100, 5000));
        assert_eq!(s.observations["web/10.0.0.2"][&1].status, Health::Down);
        assert_eq!(s.agents[&1].last_seen_ms, 5000);
    }
}

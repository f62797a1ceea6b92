//! Which agent reports enter the replicated state at all.
//!
//! One rule, called by the leader before it proposes a report, by the state
//! machine when it applies one, and by the proposer when it trims what it
//! sends, so the refusal a client sees is the one the state machine would
//! apply (rule 10: a node id or sequence number in a message is a claim to
//! check, never a fact).

use std::collections::BTreeSet;
use std::fmt;

use crate::model::{NodeId, Seq};

/// What a report claims about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportClaim<'a> {
    /// The node that proposed the entry (for a forwarded report, the sender).
    pub origin: NodeId,
    /// The agent the report speaks for.
    pub agent: NodeId,
    pub seq: Seq,
    /// Every endpoint the report names.
    pub endpoints: Vec<&'a str>,
}

/// Why a report is refused. The whole report is refused: part of a report is
/// never applied, so a sender's sequence never moves on a report it did not
/// fully make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The report speaks for an agent other than the node that proposed it.
    ClaimsAnotherAgent { agent: NodeId, origin: NodeId },
    /// Only voters' observations count.
    NotAVoter { agent: NodeId },
    /// Nothing is monitored before a catalog is committed.
    NoCatalog { agent: NodeId },
    /// Already applied (a retry or a replay).
    NotNewer { agent: NodeId, seq: Seq, last: Seq },
    /// A sequence number no honest agent reaches: accepting it would make
    /// every later genuine report of that agent look old.
    Unreachable { agent: NodeId, seq: Seq },
    /// The report names endpoints the committed catalog does not list.
    Unlisted { agent: NodeId, endpoints: Vec<String> },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ClaimsAnotherAgent { agent, origin } => {
                write!(f, "report claims agent {agent} but was proposed by node {origin}")
            }
            Refusal::NotAVoter { agent } => {
                write!(f, "node {agent} is not a voter; its observations do not count")
            }
            Refusal::NoCatalog { agent } => write!(f, "report from agent {agent} before any catalog is committed"),
            Refusal::NotNewer { agent, seq, last } => {
                write!(f, "report {seq:?} from agent {agent} is not newer than {last:?}")
            }
            Refusal::Unreachable { agent, seq } => write!(
                f,
                "report {seq:?} from agent {agent} is beyond any reachable sequence (boot more than an hour ahead of log time, or over {MAX_SEQ_STEP} reports ahead)"
            ),
            Refusal::Unlisted { agent, endpoints } => write!(
                f,
                "agent {agent} reported endpoints not in the catalog: {}",
                endpoints.join(", ")
            ),
        }
    }
}

/// How many reports one agent may skip ahead in one boot.
pub const MAX_SEQ_STEP: u64 = 1_000_000;
/// How far (ms) an agent's boot time may be ahead of log time: clock skew.
pub const MAX_BOOT_AHEAD_MS: u64 = 3_600_000;

/// Admits a report, or says why not. `last` is the newest sequence already
/// applied from the agent; `listed` is None before any catalog is committed;
/// `now_ms` is the log time the report lands at.
pub fn admit(
    claim: &ReportClaim<'_>,
    voters: &BTreeSet<NodeId>,
    last: Option<Seq>,
    listed: Option<&dyn Fn(&str) -> bool>,
    now_ms: u64,
) -> Result<(), Refusal> {
    let agent = claim.agent;
    if agent != claim.origin {
        return Err(Refusal::ClaimsAnotherAgent {
            agent,
            origin: claim.origin,
        });
    }
    if !voters.contains(&agent) {
        return Err(Refusal::NotAVoter { agent });
    }
    let Some(listed) = listed else {
        return Err(Refusal::NoCatalog { agent });
    };
    let unlisted: Vec<String> = claim
        .endpoints
        .iter()
        .filter(|e| !listed(e))
        .map(|e| e.to_string())
        .collect();
    if !unlisted.is_empty() {
        return Err(Refusal::Unlisted {
            agent,
            endpoints: unlisted,
        });
    }
    if let Some(last) = last.filter(|l| claim.seq <= *l) {
        return Err(Refusal::NotNewer {
            agent,
            seq: claim.seq,
            last,
        });
    }
    let seq = claim.seq;
    let reachable = match last {
        Some(l) if l.boot == seq.boot => seq.n <= l.n.saturating_add(MAX_SEQ_STEP),
        _ => seq.boot <= now_ms.saturating_add(MAX_BOOT_AHEAD_MS) && seq.n <= MAX_SEQ_STEP,
    };
    if !reachable {
        return Err(Refusal::Unreachable { agent, seq });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(origin: NodeId, agent: NodeId, n: u64, endpoints: &[&'static str]) -> ReportClaim<'static> {
        ReportClaim {
            origin,
            agent,
            seq: Seq { boot: 1, n },
            endpoints: endpoints.to_vec(),
        }
    }

    #[test]
    fn only_a_voter_speaking_for_itself_with_a_newer_report_on_listed_endpoints_is_admitted() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let listed = |e: &str| e.starts_with("web/");
        let listed: &dyn Fn(&str) -> bool = &listed;
        let last = Some(Seq { boot: 1, n: 5 });
        // (claim, last seq, catalog present, expected)
        type Case = (ReportClaim<'static>, Option<Seq>, bool, Result<(), &'static str>);
        let cases: Vec<Case> = vec![
            (claim(2, 2, 6, &["web/a"]), last, true, Ok(())),
            (claim(2, 2, 1, &["web/a"]), None, true, Ok(())),
            (claim(1, 2, 6, &["web/a"]), last, true, Err("claims agent 2")),
            (claim(7, 7, 6, &["web/a"]), last, true, Err("not a voter")),
            (claim(2, 2, 6, &["web/a"]), last, false, Err("before any catalog")),
            (claim(2, 2, 5, &["web/a"]), last, true, Err("not newer")),
            (claim(2, 2, 4, &["web/a"]), last, true, Err("not newer")),
            (
                claim(2, 2, 6, &["web/a", "db/b"]),
                last,
                true,
                Err("not in the catalog: db/b"),
            ),
            (claim(2, 2, 5 + MAX_SEQ_STEP, &["web/a"]), last, true, Ok(())),
            (
                claim(2, 2, 6 + MAX_SEQ_STEP, &["web/a"]),
                last,
                true,
                Err("beyond any reachable"),
            ),
            (
                claim(2, 2, u64::MAX, &["web/a"]),
                last,
                true,
                Err("beyond any reachable"),
            ),
        ];
        for (c, last, catalog, want) in cases {
            let got = admit(&c, &voters, last, catalog.then_some(listed), 1_000).map_err(|r| r.to_string());
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(g)) => assert!(g.contains(w), "{c:?}: {g:?} does not say {w:?}"),
                (w, g) => panic!("{c:?}: expected {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn a_forged_boot_far_ahead_of_log_time_cannot_silence_an_agent() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let listed = |_: &str| true;
        let listed: &dyn Fn(&str) -> bool = &listed;
        let at = |boot: u64, n: u64| ReportClaim {
            origin: 2,
            agent: 2,
            seq: Seq { boot, n },
            endpoints: vec![],
        };
        let now = 1_000_000;
        // A restart (a new boot, at most an hour ahead of log time) is fine.
        assert_eq!(admit(&at(now + 5_000, 1), &voters, None, Some(listed), now), Ok(()));
        let before = Some(Seq { boot: 7, n: 9 });
        assert_eq!(
            admit(&at(now + MAX_BOOT_AHEAD_MS, 1), &voters, before, Some(listed), now),
            Ok(())
        );
        // A boot at the end of time is refused, so the agent's next genuine
        // report is still newer than anything applied.
        for forged in [at(u64::MAX, 1), at(now + MAX_BOOT_AHEAD_MS + 1, 1), at(now, u64::MAX)] {
            let got = admit(&forged, &voters, None, Some(listed), now);
            assert!(matches!(got, Err(Refusal::Unreachable { .. })), "{forged:?}: {got:?}");
        }
    }
}

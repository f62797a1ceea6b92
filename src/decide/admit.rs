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
            Refusal::Unlisted { agent, endpoints } => write!(
                f,
                "agent {agent} reported endpoints not in the catalog: {}",
                endpoints.join(", ")
            ),
        }
    }
}

/// Admits a report, or says why not. `last` is the newest sequence already
/// applied from the agent; `listed` is None before any catalog is committed.
pub fn admit(
    claim: &ReportClaim<'_>,
    voters: &BTreeSet<NodeId>,
    last: Option<Seq>,
    listed: Option<&dyn Fn(&str) -> bool>,
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
    if let Some(last) = last.filter(|l| claim.seq <= *l) {
        return Err(Refusal::NotNewer {
            agent,
            seq: claim.seq,
            last,
        });
    }
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
        ];
        for (c, last, catalog, want) in cases {
            let got = admit(&c, &voters, last, catalog.then_some(listed)).map_err(|r| r.to_string());
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(g)) => assert!(g.contains(w), "{c:?}: {g:?} does not say {w:?}"),
                (w, g) => panic!("{c:?}: expected {w:?}, got {g:?}"),
            }
        }
    }
}

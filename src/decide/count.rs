//! Whether an observation counts (rule 3), the tally of one endpoint's
//! observations and the quorum rule (rule 4).

use std::collections::{BTreeMap, BTreeSet};

use crate::detect::Health;
use crate::model::{Decision, NodeId, Uncounted};

/// What the tally needs to know about one agent's report on one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub status: Health,
    /// Log time of the agent's latest report of any kind (its liveness).
    pub agent_seen_ms: u64,
    pub abstaining: bool,
}

/// The counted observations of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub up: Vec<NodeId>,
    pub down: Vec<NodeId>,
    pub uncounted: Vec<(NodeId, Uncounted)>,
}

/// Whether one report counts (rule 3: a current voter, fresh in log time, not abstaining).
pub fn counts(agent: NodeId, r: &Report, voters: &BTreeSet<NodeId>, now_ms: u64, ttl_ms: u64) -> Result<(), Uncounted> {
    if !voters.contains(&agent) {
        Err(Uncounted::NotAVoter)
    } else if now_ms.saturating_sub(r.agent_seen_ms) > ttl_ms {
        Err(Uncounted::Stale)
    } else if r.abstaining {
        Err(Uncounted::Abstaining)
    } else if r.status == Health::Unknown {
        Err(Uncounted::Unknown)
    } else {
        Ok(())
    }
}

/// Sorts the reports of one endpoint into counted up, counted down and uncounted.
pub fn tally(reports: &BTreeMap<NodeId, Report>, voters: &BTreeSet<NodeId>, now_ms: u64, ttl_ms: u64) -> Tally {
    let mut t = Tally::default();
    for (agent, r) in reports {
        match counts(*agent, r, voters, now_ms, ttl_ms) {
            Ok(()) if r.status == Health::Up => t.up.push(*agent),
            Ok(()) => t.down.push(*agent),
            Err(why) => t.uncounted.push((*agent, why)),
        }
    }
    t
}

/// Rule 4: down with at least `quorum` counted downs, up with at least
/// `quorum` counted ups, otherwise unchanged. A quorum set so low that both
/// sides reach it is a conflict, and nothing changes.
pub fn rule(current: Decision, t: &Tally, quorum: usize) -> Decision {
    let quorum = quorum.max(1);
    let (down, up) = (t.down.len() >= quorum, t.up.len() >= quorum);
    match (down, up) {
        (true, false) => Decision::Down,
        (false, true) => Decision::Up,
        _ => current,
    }
}

/// One region's counted observations of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionCount {
    pub region: String,
    pub up: usize,
    pub down: usize,
}

impl RegionCount {
    /// A majority of the region's counted agents says down (up); a region
    /// with nothing counted says neither.
    fn says(&self, down: bool) -> bool {
        let counted = self.up + self.down;
        let side = if down { self.down } else { self.up };
        counted > 0 && side > counted / 2
    }
}

/// The rule by regions (as Cloudflare's monitors decide): down when a
/// majority of the voters' regions each have a majority of their counted
/// agents saying down; up likewise; otherwise unchanged. A voter with no
/// region stands as a region of its own. Returns the per-region counts, in
/// region order, for the history.
pub fn rule_by_regions(
    current: Decision,
    t: &Tally,
    voters: &BTreeSet<NodeId>,
    regions: &BTreeMap<NodeId, String>,
) -> (Decision, Vec<RegionCount>) {
    let region_of = |a: &NodeId| regions.get(a).cloned().unwrap_or_else(|| format!("node {a}"));
    let mut counts: BTreeMap<String, RegionCount> = voters
        .iter()
        .map(|v| {
            let r = region_of(v);
            (
                r.clone(),
                RegionCount {
                    region: r,
                    up: 0,
                    down: 0,
                },
            )
        })
        .collect();
    for a in &t.up {
        if let Some(c) = counts.get_mut(&region_of(a)) {
            c.up += 1;
        }
    }
    for a in &t.down {
        if let Some(c) = counts.get_mut(&region_of(a)) {
            c.down += 1;
        }
    }
    let need = majority(counts.len());
    let down = counts.values().filter(|c| c.says(true)).count() >= need;
    let up = counts.values().filter(|c| c.says(false)).count() >= need;
    let next = match (down, up) {
        (true, false) => Decision::Down,
        (false, true) => Decision::Up,
        _ => current,
    };
    (next, counts.into_values().collect())
}

/// The per-region counts in words: `eu 2/2 down, us 1/2 down`.
pub fn describe_regions(counts: &[RegionCount], down: bool) -> String {
    counts
        .iter()
        .map(|c| {
            let side = if down { c.down } else { c.up };
            format!(
                "{} {side}/{} {}",
                c.region,
                c.up + c.down,
                if down { "down" } else { "up" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default quorum: a majority of the voters.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The quorum in force: the catalog's, or a majority of the voters.
pub fn quorum(configured: Option<u32>, voters: usize) -> usize {
    configured.map(|q| q as usize).unwrap_or_else(|| majority(voters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_decide_by_a_majority_of_regions_each_by_a_majority_of_its_counted_agents() {
        let v = voters(&[1, 2, 3, 4, 5]);
        let regions: BTreeMap<NodeId, String> = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]
            .map(|(n, r)| (n, r.to_string()))
            .into();
        let t = |up: &[NodeId], down: &[NodeId]| Tally {
            up: up.to_vec(),
            down: down.to_vec(),
            uncounted: vec![],
        };
        // Region a's two agents alone: one region of three.
        let (d, counts) = rule_by_regions(Decision::Up, &t(&[3, 4, 5], &[1, 2]), &v, &regions);
        assert_eq!(d, Decision::Up);
        assert_eq!(describe_regions(&counts, true), "a 2/2 down, b 0/2 down, c 0/1 down");
        // Two regions: down, though only three of five agents say so.
        assert_eq!(
            rule_by_regions(Decision::Up, &t(&[4], &[1, 2, 3, 5]), &v, &regions).0,
            Decision::Down
        );
        // Agents 1 and 5 alone: regions a and c say down (b counts nothing): two of three.
        assert_eq!(
            rule_by_regions(Decision::Up, &t(&[], &[1, 5]), &v, &regions).0,
            Decision::Down
        );
        // A split region (1 of 2) says neither.
        assert_eq!(
            rule_by_regions(Decision::Up, &t(&[2, 4], &[1, 3, 5]), &v, &regions).0,
            Decision::Up
        );
        // Up likewise, and a voter without a region stands alone.
        let mut partial = regions.clone();
        partial.remove(&5);
        let (d, counts) = rule_by_regions(Decision::Down, &t(&[1, 3, 5], &[]), &v, &partial);
        assert_eq!(d, Decision::Up);
        assert_eq!(counts.len(), 3);
        assert!(counts.iter().any(|c| c.region == "node 5"));
    }

    fn voters(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    fn reports(list: &[(NodeId, Health, u64, bool)]) -> BTreeMap<NodeId, Report> {
        list.iter()
            .map(|(a, s, seen, abst)| {
                (
                    *a,
                    Report {
                        status: *s,
                        agent_seen_ms: *seen,
                        abstaining: *abst,
                    },
                )
            })
            .collect()
    }

    use Health::{Down as D, Unknown as U, Up as P};

    #[test]
    fn no_removal_without_quorum() {
        // (reports, quorum, current) -> expected
        type Case<'a> = (&'a [(NodeId, Health, u64, bool)], usize, Decision, Decision);
        let cases: &[Case] = &[
            (
                &[(1, D, 100, false), (2, P, 100, false), (3, P, 100, false)],
                2,
                Decision::Up,
                Decision::Up,
            ),
            (
                &[(1, D, 100, false), (2, D, 100, false), (3, P, 100, false)],
                2,
                Decision::Up,
                Decision::Down,
            ),
            (
                &[(1, D, 100, false), (2, U, 100, false), (3, U, 100, false)],
                2,
                Decision::Up,
                Decision::Up,
            ),
            (&[(1, D, 100, false), (2, D, 100, false)], 3, Decision::Up, Decision::Up),
            (
                &[(1, P, 100, false), (2, P, 100, false), (3, D, 100, false)],
                2,
                Decision::Down,
                Decision::Up,
            ),
            (
                &[(1, P, 100, false), (2, D, 100, false), (3, U, 100, false)],
                2,
                Decision::Down,
                Decision::Down,
            ),
        ];
        for (r, q, cur, want) in cases {
            let t = tally(&reports(r), &voters(&[1, 2, 3]), 100, 1000);
            assert_eq!(rule(*cur, &t, *q), *want, "reports {r:?} quorum {q}");
        }
    }

    #[test]
    fn stale_agent_does_not_count() {
        let r = reports(&[(1, D, 100, false), (2, D, 5000, false), (3, P, 5000, false)]);
        let t = tally(&r, &voters(&[1, 2, 3]), 5000, 1000);
        assert_eq!(t.down, vec![2]);
        assert_eq!(t.uncounted, vec![(1, Uncounted::Stale)]);
        assert_eq!(rule(Decision::Up, &t, 2), Decision::Up);
        // Within the TTL it counts.
        let t = tally(&r, &voters(&[1, 2, 3]), 1100, 1000);
        assert_eq!(rule(Decision::Up, &t, 2), Decision::Down);
    }

    #[test]
    fn abstaining_agent_does_not_count() {
        let r = reports(&[(1, D, 100, true), (2, D, 100, false), (3, P, 100, false)]);
        let t = tally(&r, &voters(&[1, 2, 3]), 100, 1000);
        assert_eq!(t.uncounted, vec![(1, Uncounted::Abstaining)]);
        assert_eq!(rule(Decision::Up, &t, 2), Decision::Up);
    }

    #[test]
    fn non_voter_does_not_count() {
        let r = reports(&[(1, D, 100, false), (9, D, 100, false)]);
        let t = tally(&r, &voters(&[1, 2, 3]), 100, 1000);
        assert_eq!(t.uncounted, vec![(9, Uncounted::NotAVoter)]);
        assert_eq!(rule(Decision::Up, &t, 2), Decision::Up);
    }

    #[test]
    fn conflicting_quorums_change_nothing() {
        let r = reports(&[(1, D, 100, false), (2, P, 100, false)]);
        let t = tally(&r, &voters(&[1, 2, 3]), 100, 1000);
        assert_eq!(rule(Decision::Up, &t, 1), Decision::Up);
        assert_eq!(rule(Decision::Down, &t, 1), Decision::Down);
    }

    #[test]
    fn default_quorum_is_a_majority_of_the_voters() {
        assert_eq!(quorum(None, 3), 2);
        assert_eq!(quorum(None, 4), 3);
        assert_eq!(quorum(None, 5), 3);
        assert_eq!(quorum(Some(1), 5), 1);
    }
}

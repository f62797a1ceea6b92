//! The decision: which observations count, the quorum rule, and the guards
//! that decide which endpoints stay in DNS.
//!
//! Pure functions of their arguments (no I/O, no clock, no hash maps), so
//! every replica that feeds them the same log computes the same answer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::detect::Health;
use crate::types::NodeId;

/// The cluster's decision about one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    #[default]
    Up,
    Down,
    /// Not decided yet (only when the catalog says endpoints start unknown).
    Unknown,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Up => "up",
            Decision::Down => "down",
            Decision::Unknown => "unknown",
        }
    }
}

/// What the tally needs to know about one agent's report on one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub status: Health,
    /// Log time of the agent's latest report of any kind (its liveness).
    pub agent_seen_ms: u64,
    pub abstaining: bool,
}

/// Why an observation does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncounted {
    NotAVoter,
    Stale,
    Abstaining,
    /// The agent has no opinion yet (still rising or falling).
    Unknown,
}

impl Uncounted {
    pub fn as_str(&self) -> &'static str {
        match self {
            Uncounted::NotAVoter => "not a voter",
            Uncounted::Stale => "stale",
            Uncounted::Abstaining => "abstaining",
            Uncounted::Unknown => "no opinion yet",
        }
    }
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

/// The default quorum: a majority of the voters.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// One endpoint as the DNS guards see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Record type: "A" or "AAAA".
    pub rtype: &'static str,
    pub decision: Decision,
    /// Currently in DNS.
    pub in_dns: bool,
    /// Counted up-observations (health evidence for `min_healthy`).
    pub up_votes: usize,
    /// Log time the current decision began.
    pub decided_ms: u64,
    /// Log time it was last taken out of DNS.
    pub removed_ms: Option<u64>,
}

/// Guard settings for one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guards {
    pub min_healthy: usize,
    pub hold_down_ms: u64,
    /// Removals are frozen (panic mode).
    pub frozen: bool,
}

/// The verdict on one endpoint: in DNS or not, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub in_dns: bool,
    /// The rule or guard that placed it, e.g. "decided down", "guard: hold_down".
    pub reason: String,
    /// True when a guard overrode the plain decision.
    pub guarded: bool,
}

/// Decides which endpoints of one pool are in DNS (rule 5), applying the
/// guards in order: hold-down (re-adds wait), panic freeze (removals wait),
/// `min_healthy` (keep the healthiest), and never remove the last record of a
/// record type.
pub fn place(pool: &[Candidate], g: &Guards, now_ms: u64) -> BTreeMap<String, Placement> {
    let mut out = BTreeMap::new();
    for c in pool {
        let p = match (c.decision, c.in_dns) {
            (Decision::Down, true) if g.frozen => Placement {
                in_dns: true,
                reason: "guard: panic freeze holds the removal".into(),
                guarded: true,
            },
            (Decision::Down, _) => Placement {
                in_dns: false,
                reason: "decided down".into(),
                guarded: false,
            },
            (_, false) => {
                let since = c.decided_ms.max(c.removed_ms.unwrap_or(0));
                if c.removed_ms.is_some() && now_ms < since.saturating_add(g.hold_down_ms) {
                    Placement {
                        in_dns: false,
                        reason: format!("guard: hold_down until log time {}", since + g.hold_down_ms),
                        guarded: true,
                    }
                } else {
                    Placement {
                        in_dns: true,
                        reason: format!("decided {}", c.decision.as_str()),
                        guarded: false,
                    }
                }
            }
            (_, true) => Placement {
                in_dns: true,
                reason: format!("decided {}", c.decision.as_str()),
                guarded: false,
            },
        };
        out.insert(c.id.clone(), p);
    }
    keep_min_healthy(pool, g.min_healthy, &mut out);
    for rtype in ["A", "AAAA"] {
        keep_last_record(pool, rtype, &mut out);
    }
    out
}

/// Healthiest first: most counted up-votes, then the most recently decided
/// down (it was healthy last), then the id for a total order.
fn healthiest(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.up_votes
        .cmp(&a.up_votes)
        .then(b.decided_ms.cmp(&a.decided_ms))
        .then(a.id.cmp(&b.id))
}

fn keep_min_healthy(pool: &[Candidate], min: usize, out: &mut BTreeMap<String, Placement>) {
    let mut in_count = out.values().filter(|p| p.in_dns).count();
    if in_count >= min {
        return;
    }
    let mut out_of_dns: Vec<&Candidate> = pool.iter().filter(|c| !out[&c.id].in_dns).collect();
    out_of_dns.sort_by(|a, b| healthiest(a, b));
    for c in out_of_dns {
        if in_count >= min {
            break;
        }
        // Prefer keeping what is already published over re-adding.
        if let Some(p) = out.get_mut(&c.id) {
            *p = Placement {
                in_dns: true,
                reason: format!("guard: min_healthy keeps {min} endpoints in DNS"),
                guarded: true,
            };
            in_count += 1;
        }
    }
}

fn keep_last_record(pool: &[Candidate], rtype: &str, out: &mut BTreeMap<String, Placement>) {
    let of_type: Vec<&Candidate> = pool.iter().filter(|c| c.rtype == rtype).collect();
    if of_type.is_empty() || of_type.iter().any(|c| out[&c.id].in_dns) {
        return;
    }
    // Fail open: keep what is published now; if nothing is, the healthiest.
    let mut keep: Vec<&Candidate> = of_type.iter().copied().filter(|c| c.in_dns).collect();
    if keep.is_empty() {
        let mut all = of_type.clone();
        all.sort_by(|a, b| healthiest(a, b));
        keep.extend(all.first());
    }
    for c in keep {
        if let Some(p) = out.get_mut(&c.id) {
            *p = Placement {
                in_dns: true,
                reason: format!("guard: last {rtype} record of the pool's hostnames is never removed (fail open)"),
                guarded: true,
            };
        }
    }
}

/// Panic freeze trigger: more than `threshold_ppm` (parts per million) of all
/// endpoints decided down within the window ending now.
pub fn panic_triggered(recent_downs: usize, total: usize, threshold_ppm: u32) -> bool {
    total > 0 && (recent_downs as u128) * 1_000_000 > (total as u128) * u128::from(threshold_ppm)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn cand(
        id: &str,
        rtype: &'static str,
        decision: Decision,
        in_dns: bool,
        up_votes: usize,
        decided: u64,
    ) -> Candidate {
        Candidate {
            id: id.into(),
            rtype,
            decision,
            in_dns,
            up_votes,
            decided_ms: decided,
            removed_ms: if in_dns { None } else { Some(decided) },
        }
    }

    fn guards(min: usize, hold: u64, frozen: bool) -> Guards {
        Guards {
            min_healthy: min,
            hold_down_ms: hold,
            frozen,
        }
    }

    fn in_dns(p: &BTreeMap<String, Placement>) -> Vec<&str> {
        p.iter().filter(|(_, v)| v.in_dns).map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn last_record_is_never_removed() {
        let pool = [
            cand("a", "A", Decision::Down, true, 0, 10),
            cand("b", "A", Decision::Down, true, 0, 20),
        ];
        let p = place(&pool, &guards(0, 0, false), 100);
        // Both were published; removing them would leave the hostname empty.
        assert_eq!(in_dns(&p), vec!["a", "b"]);
        assert!(p["a"].reason.contains("fail open"), "{:?}", p["a"]);
        // One healthy endpoint is enough; the down one goes.
        let pool = [
            cand("a", "A", Decision::Down, true, 0, 10),
            cand("b", "A", Decision::Up, true, 3, 20),
        ];
        assert_eq!(in_dns(&place(&pool, &guards(0, 0, false), 100)), vec!["b"]);
        // The guard is per record type: the last AAAA stays even with an A up.
        let pool = [
            cand("a", "A", Decision::Up, true, 3, 10),
            cand("b", "AAAA", Decision::Down, true, 0, 20),
        ];
        assert_eq!(in_dns(&place(&pool, &guards(0, 0, false), 100)), vec!["a", "b"]);
    }

    #[test]
    fn min_healthy_keeps_the_healthiest() {
        let pool = [
            cand("a", "A", Decision::Down, true, 0, 10),
            cand("b", "A", Decision::Down, true, 1, 20),
            cand("c", "A", Decision::Down, true, 1, 30),
            cand("d", "A", Decision::Up, true, 3, 5),
        ];
        let p = place(&pool, &guards(3, 0, false), 100);
        // d is up; b and c have one up-vote each, c went down last.
        assert_eq!(in_dns(&p), vec!["b", "c", "d"]);
        assert!(p["b"].guarded && p["b"].reason.contains("min_healthy"));
        assert!(!p["d"].guarded);
    }

    #[test]
    fn panic_freeze_holds_mass_removal() {
        assert!(panic_triggered(6, 10, 500_000));
        assert!(!panic_triggered(5, 10, 500_000));
        assert!(!panic_triggered(0, 0, 500_000));
        let pool = [
            cand("a", "A", Decision::Down, true, 0, 10),
            cand("b", "A", Decision::Down, true, 0, 10),
            cand("c", "A", Decision::Up, true, 3, 10),
            cand("d", "A", Decision::Down, false, 0, 5),
        ];
        let p = place(&pool, &guards(0, 0, true), 100);
        // Removals held; what was already out stays out.
        assert_eq!(in_dns(&p), vec!["a", "b", "c"]);
        assert!(p["a"].reason.contains("panic freeze"));
        assert_eq!(in_dns(&place(&pool, &guards(0, 0, false), 100)), vec!["c"]);
    }

    /// Replays a decision pattern every 100 ms for 60 s and returns the
    /// log times at which the endpoint entered or left DNS.
    fn dns_changes(hold: u64, decision_at: impl Fn(u64) -> (Decision, u64)) -> Vec<u64> {
        let mut in_dns_now = true;
        let mut removed: Option<u64> = None;
        let mut changes = Vec::new();
        let other = cand("z", "A", Decision::Up, true, 3, 0);
        for step in 0..600u64 {
            let now = step * 100;
            let (decision, decided) = decision_at(now);
            let c = Candidate {
                id: "a".into(),
                rtype: "A",
                decision,
                in_dns: in_dns_now,
                up_votes: 2,
                decided_ms: decided,
                removed_ms: removed,
            };
            let p = place(&[c, other.clone()], &guards(0, hold, false), now);
            if p["a"].in_dns != in_dns_now {
                changes.push(now);
                in_dns_now = p["a"].in_dns;
                if !in_dns_now {
                    removed = Some(now);
                }
            }
        }
        changes
    }

    #[test]
    fn flapping_endpoint_changes_dns_at_most_twice_per_hold_down() {
        let hold = 10_000;
        // Flips every second: taken out once, never up long enough to return.
        let every_second = dns_changes(hold, |now| {
            let d = if (now / 1000) % 2 == 1 {
                Decision::Down
            } else {
                Decision::Up
            };
            (d, now - now % 1000)
        });
        assert_eq!(every_second, vec![1000]);
        // Down 1 s in every 13 s: returns after a full hold-down of health each time.
        let sometimes = dns_changes(hold, |now| {
            let phase = now % 13_000;
            if (1000..2000).contains(&phase) {
                (Decision::Down, now - phase + 1000)
            } else if phase >= 2000 {
                (Decision::Up, now - phase + 2000)
            } else {
                (Decision::Up, now - phase)
            }
        });
        assert!(sometimes.len() >= 6, "{sometimes:?}");
        for w in sometimes.windows(3) {
            assert!(w[2] - w[0] >= hold, "three changes within one hold-down: {sometimes:?}");
        }
    }
}

//! The DNS guards (rule 5), applied after the quorum rule and recorded with
//! their reason: hold-down for re-adds, the panic freeze for mass removals,
//! `min_healthy`, and never removing the last record of a record type.

use std::collections::BTreeMap;

use crate::model::{Decision, RecordType};

/// One endpoint as the DNS guards see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub rtype: RecordType,
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
            (_, false) => match hold_down_until(c, g.hold_down_ms).filter(|until| now_ms < *until) {
                Some(until) => Placement {
                    in_dns: false,
                    reason: format!("guard: hold_down until {}", crate::model::at(until)),
                    guarded: true,
                },
                None => Placement {
                    in_dns: true,
                    reason: format!("decided {}", c.decision.as_str()),
                    guarded: false,
                },
            },
            (_, true) => Placement {
                in_dns: true,
                reason: format!("decided {}", c.decision.as_str()),
                guarded: false,
            },
        };
        out.insert(c.id.clone(), p);
    }
    keep_min_healthy(pool, g.min_healthy, &mut out);
    for rtype in [RecordType::A, RecordType::AAAA] {
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

fn keep_last_record(pool: &[Candidate], rtype: RecordType, out: &mut BTreeMap<String, Placement>) {
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
                reason: format!(
                    "guard: last {} record of the pool's hostnames is never removed (fail open)",
                    rtype.as_str()
                ),
                guarded: true,
            };
        }
    }
}

/// When an endpoint that is out of DNS may return: `hold_down` after it was
/// last taken out or last decided, whichever is later. None when it was never
/// taken out (nothing to hold).
pub fn hold_down_until(c: &Candidate, hold_down_ms: u64) -> Option<u64> {
    let removed = c.removed_ms?;
    Some(c.decided_ms.max(removed).saturating_add(hold_down_ms))
}

/// Panic freeze trigger: more than `threshold_ppm` (parts per million) of all
/// endpoints decided down within the window ending now.
pub fn panic_triggered(recent_downs: usize, total: usize, threshold_ppm: u32) -> bool {
    total > 0 && (recent_downs as u128) * 1_000_000 > (total as u128) * u128::from(threshold_ppm)
}

/// What the panic freeze looks at after a round of decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PanicInput {
    /// Removals are frozen now.
    pub frozen: bool,
    /// This round decided at least one endpoint down.
    pub new_down: bool,
    /// Endpoints decided down within the panic window ending now.
    pub recent_downs: usize,
    /// Endpoints decided down, however long ago.
    pub down_now: usize,
    pub total: usize,
    pub threshold_ppm: u32,
}

/// What the freeze does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicStep {
    Stay,
    /// Too many endpoints went down together: the observers are more likely
    /// wrong than the world, so removals stop.
    Freeze,
    /// Few enough endpoints are down again: removals resume.
    Lift,
}

/// The freeze triggers only on a fresh down decision (a burst within the
/// window) and lifts once the endpoints down, however long ago, fall back
/// under the threshold.
pub fn panic_step(i: &PanicInput) -> PanicStep {
    if !i.frozen {
        if i.new_down && panic_triggered(i.recent_downs, i.total, i.threshold_ppm) {
            PanicStep::Freeze
        } else {
            PanicStep::Stay
        }
    } else if !panic_triggered(i.down_now, i.total, i.threshold_ppm) {
        PanicStep::Lift
    } else {
        PanicStep::Stay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecordType::{A, AAAA};

    fn cand(id: &str, rtype: RecordType, decision: Decision, in_dns: bool, up_votes: usize, decided: u64) -> Candidate {
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
            cand("a", A, Decision::Down, true, 0, 10),
            cand("b", A, Decision::Down, true, 0, 20),
        ];
        let p = place(&pool, &guards(0, 0, false), 100);
        // Both were published; removing them would leave the hostname empty.
        assert_eq!(in_dns(&p), vec!["a", "b"]);
        assert!(p["a"].reason.contains("fail open"), "{:?}", p["a"]);
        // One healthy endpoint is enough; the down one goes.
        let pool = [
            cand("a", A, Decision::Down, true, 0, 10),
            cand("b", A, Decision::Up, true, 3, 20),
        ];
        assert_eq!(in_dns(&place(&pool, &guards(0, 0, false), 100)), vec!["b"]);
        // The guard is per record type: the last AAAA stays even with an A up.
        let pool = [
            cand("a", A, Decision::Up, true, 3, 10),
            cand("b", AAAA, Decision::Down, true, 0, 20),
        ];
        assert_eq!(in_dns(&place(&pool, &guards(0, 0, false), 100)), vec!["a", "b"]);
    }

    #[test]
    fn min_healthy_keeps_the_healthiest() {
        let pool = [
            cand("a", A, Decision::Down, true, 0, 10),
            cand("b", A, Decision::Down, true, 1, 20),
            cand("c", A, Decision::Down, true, 1, 30),
            cand("d", A, Decision::Up, true, 3, 5),
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
            cand("a", A, Decision::Down, true, 0, 10),
            cand("b", A, Decision::Down, true, 0, 10),
            cand("c", A, Decision::Up, true, 3, 10),
            cand("d", A, Decision::Down, false, 0, 5),
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
        let other = cand("z", A, Decision::Up, true, 3, 0);
        for step in 0..600u64 {
            let now = step * 100;
            let (decision, decided) = decision_at(now);
            let c = Candidate {
                id: "a".into(),
                rtype: A,
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

    #[test]
    fn panic_freeze_triggers_on_a_burst_and_lifts_on_recovery() {
        let at = |frozen, new_down, recent_downs, down_now| PanicInput {
            frozen,
            new_down,
            recent_downs,
            down_now,
            total: 10,
            threshold_ppm: 500_000,
        };
        // (input, expected)
        let cases = [
            (at(false, true, 6, 6), PanicStep::Freeze),
            (at(false, true, 5, 9), PanicStep::Stay),
            (at(false, false, 6, 6), PanicStep::Stay),
            (at(true, false, 0, 6), PanicStep::Stay),
            (at(true, true, 6, 6), PanicStep::Stay),
            (at(true, false, 0, 5), PanicStep::Lift),
        ];
        for (input, want) in cases {
            assert_eq!(panic_step(&input), want, "{input:?}");
        }
    }

    #[test]
    fn hold_down_ends_after_the_later_of_removal_and_decision() {
        let mut c = cand("a", A, Decision::Up, false, 2, 1_000);
        c.removed_ms = Some(400);
        assert_eq!(hold_down_until(&c, 2_000), Some(3_000));
        c.removed_ms = Some(5_000);
        assert_eq!(hold_down_until(&c, 2_000), Some(7_000));
        c.removed_ms = None;
        assert_eq!(hold_down_until(&c, 2_000), None);
        // An absurd hold_down saturates instead of wrapping around to a past time.
        c.removed_ms = Some(5_000);
        assert_eq!(hold_down_until(&c, u64::MAX), Some(u64::MAX));
    }
}

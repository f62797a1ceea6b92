//! The fault schedule a seed draws, and the links' state under it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::Options;

/// One fault, or its end.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Both directions between two hosts cut.
    Partition(String, String),
    /// Only `from` → `to` cut.
    PartitionOneway(String, String),
    Repair(String, String),
    /// An agent cut off from every other agent (it still sees the endpoints).
    Isolate(String),
    Heal(String),
    /// An agent's process killed; restarted from its data directory later.
    Crash(String),
    Restart(String),
    EndpointDies(String),
    EndpointLives(String),
    /// The provider fails a share of calls, or loses a share of answers.
    Provider {
        error: f64,
        lost: f64,
    },
    /// Whoever leads now is cut off from the other agents (a deposed leader
    /// that does not know it yet), until the next `HealLeader`.
    IsolateLeader,
    HealLeader,
}

/// A seed's faults, by time.
pub struct Schedule {
    pub actions: Vec<(Duration, Action)>,
    /// Share of segments lost on every link while the faults last.
    pub loss: f64,
}

impl Schedule {
    pub fn draw(
        rng: &mut fastrand::Rng,
        opts: &Options,
        agents: &[String],
        eps: &[String],
        from: Duration,
    ) -> Schedule {
        let end = from + opts.faults_for;
        let loss = opts.loss.unwrap_or_else(|| {
            if opts.calm {
                0.0
            } else {
                [0.0, 0.0, 0.01, 0.05, 0.1, 0.2, 0.3][rng.usize(..7)]
            }
        });
        let mut actions: Vec<(Duration, Action)> = Vec::new();
        let secs = |rng: &mut fastrand::Rng, lo: u64, hi: u64| Duration::from_millis(rng.u64(lo * 1000..=hi * 1000));
        let pick = |rng: &mut fastrand::Rng, v: &[String]| v[rng.usize(..v.len())].clone();
        let mut t = from + secs(rng, 0, 3);
        while t < end {
            let until = (t + secs(rng, 1, 15)).min(end);
            if opts.calm {
                // Endpoints die and come back; nothing else goes wrong.
                let e = pick(rng, eps);
                actions.push((t, Action::EndpointDies(e.clone())));
                actions.push((until.max(t + Duration::from_secs(8)).min(end), Action::EndpointLives(e)));
                t = until + secs(rng, 10, 20);
                continue;
            }
            match rng.u8(..11) {
                9 => {
                    // Stale witnesses: quorum - 1 agents see the endpoint fail
                    // and then go silent for longer than observation_ttl;
                    // only then does one more agent see it fail. Counting the
                    // silent agents' old reports would decide it down.
                    let e = pick(rng, eps);
                    let quorum = agents.len() / 2 + 1;
                    let mut order: Vec<String> = agents.to_vec();
                    rng.shuffle(&mut order);
                    let (silent, last) = (&order[..quorum - 1], &order[quorum - 1]);
                    let crash_at = t + Duration::from_secs(5);
                    let late = crash_at + Duration::from_secs(17);
                    let over = (late + Duration::from_secs(8)).min(end);
                    for a in silent {
                        actions.push((t, Action::Partition(a.clone(), e.clone())));
                        actions.push((crash_at, Action::Crash(a.clone())));
                        actions.push((over, Action::Restart(a.clone())));
                        actions.push((over, Action::Repair(a.clone(), e.clone())));
                    }
                    actions.push((late, Action::Partition(last.clone(), e.clone())));
                    actions.push((over, Action::Repair(last.clone(), e.clone())));
                    t = over;
                    continue;
                }
                10 => {
                    // A deposed leader, while an endpoint dies: the rest of the
                    // cluster elects a new leader and moves DNS without it.
                    let e = pick(rng, eps);
                    actions.push((t, Action::IsolateLeader));
                    actions.push((t + Duration::from_secs(1), Action::EndpointDies(e.clone())));
                    let back = (t + secs(rng, 8, 15)).min(end);
                    actions.push((back, Action::EndpointLives(e)));
                    actions.push((back + Duration::from_secs(3), Action::HealLeader));
                }
                0 => {
                    let (a, b) = two(rng, agents);
                    actions.push((t, Action::Partition(a.clone(), b.clone())));
                    actions.push((until, Action::Repair(a, b)));
                }
                1 => {
                    let (a, b) = two(rng, agents);
                    actions.push((t, Action::PartitionOneway(a.clone(), b.clone())));
                    actions.push((until, Action::Repair(a, b)));
                }
                2 => {
                    let a = pick(rng, agents);
                    actions.push((t, Action::Isolate(a.clone())));
                    actions.push((until, Action::Heal(a)));
                }
                3 => {
                    let a = pick(rng, agents);
                    actions.push((t, Action::Crash(a.clone())));
                    actions.push((until, Action::Restart(a)));
                }
                4 => {
                    let e = pick(rng, eps);
                    actions.push((t, Action::EndpointDies(e.clone())));
                    actions.push((until, Action::EndpointLives(e)));
                }
                5 => {
                    // Flapping: a few short deaths in a row.
                    let e = pick(rng, eps);
                    let mut at = t;
                    for _ in 0..rng.u8(3..=5) {
                        let died = at;
                        at += secs(rng, 1, 3);
                        actions.push((died, Action::EndpointDies(e.clone())));
                        actions.push((at.min(end), Action::EndpointLives(e.clone())));
                        at += secs(rng, 1, 3);
                    }
                }
                6 => {
                    // Seen differently: the endpoint cut off from some agents only.
                    let e = pick(rng, eps);
                    for a in agents {
                        if rng.bool() {
                            actions.push((t, Action::Partition(a.clone(), e.clone())));
                            actions.push((until, Action::Repair(a.clone(), e.clone())));
                        }
                    }
                }
                7 => {
                    let error = [0.2, 0.5, 1.0][rng.usize(..3)];
                    let lost = [0.0, 0.2, 0.5][rng.usize(..3)];
                    actions.push((t, Action::Provider { error, lost }));
                    actions.push((until, Action::Provider { error: 0.0, lost: 0.0 }));
                }
                _ => {
                    // An agent and an endpoint cut one way only.
                    let a = pick(rng, agents);
                    let e = pick(rng, eps);
                    let (from, to) = if rng.bool() { (a, e) } else { (e, a) };
                    actions.push((t, Action::PartitionOneway(from.clone(), to.clone())));
                    actions.push((until, Action::Repair(from, to)));
                }
            }
            t += secs(rng, 1, 6);
        }
        // Everything ends when the faults do.
        let hosts: Vec<&String> = agents.iter().chain(eps).collect();
        for (i, a) in hosts.iter().enumerate() {
            for b in &hosts[i + 1..] {
                actions.push((end, Action::Repair((*a).clone(), (*b).clone())));
            }
        }
        for a in agents {
            actions.push((end, Action::Restart(a.clone())));
        }
        for e in eps {
            actions.push((end, Action::EndpointLives(e.clone())));
        }
        actions.push((end, Action::Provider { error: 0.0, lost: 0.0 }));
        actions.sort_by_key(|(t, _)| *t);
        Schedule { actions, loss }
    }
}

fn two(rng: &mut fastrand::Rng, v: &[String]) -> (String, String) {
    let a = rng.usize(..v.len());
    let mut b = rng.usize(..v.len() - 1);
    if b >= a {
        b += 1;
    }
    (v[a].clone(), v[b].clone())
}

/// Which links are cut and which stall, and turmoil's link state to match.
pub struct Links {
    agents: Vec<String>,
    /// Directed cuts (from, to).
    cut: BTreeSet<(String, String)>,
    /// Unordered pair → end of its current stall.
    stalled: BTreeMap<(String, String), Duration>,
    pairs: Vec<(String, String)>,
    /// Chance per millisecond that a link starts stalling.
    per_ms: f64,
    rto: Duration,
    rng: fastrand::Rng,
}

/// Segments a busy link carries per second, for turning a loss rate into
/// stalls (each lost segment stalls its connection for a retransmission).
const SEGMENTS_PER_SEC: f64 = 20.0;

fn key(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Links {
    pub fn new(hosts: &[String], loss: f64, rto: Duration) -> Links {
        let agents: Vec<String> = hosts.iter().filter(|h| h.starts_with('n')).cloned().collect();
        let mut pairs = Vec::new();
        for (i, a) in hosts.iter().enumerate() {
            for b in &hosts[i + 1..] {
                // Endpoints do not talk to each other.
                if a.starts_with('n') || b.starts_with('n') {
                    pairs.push(key(a, b));
                }
            }
        }
        Links {
            agents,
            cut: BTreeSet::new(),
            stalled: BTreeMap::new(),
            pairs,
            per_ms: loss * SEGMENTS_PER_SEC / 1000.0,
            rto,
            rng: fastrand::Rng::with_seed((loss * 1e6) as u64 ^ 0x1055),
        }
    }

    fn is_cut(&self, a: &str, b: &str) -> bool {
        self.cut.contains(&(a.to_string(), b.to_string())) || self.cut.contains(&(b.to_string(), a.to_string()))
    }

    pub fn apply(&mut self, sim: &turmoil::Sim<'_>, action: &Action) {
        match action {
            Action::Partition(a, b) => {
                sim.partition(a.as_str(), b.as_str());
                self.cut.insert((a.clone(), b.clone()));
                self.cut.insert((b.clone(), a.clone()));
                self.stalled.remove(&key(a, b));
            }
            Action::PartitionOneway(a, b) => {
                if self.stalled.remove(&key(a, b)).is_some() {
                    sim.release(a.as_str(), b.as_str());
                }
                sim.partition_oneway(a.as_str(), b.as_str());
                self.cut.insert((a.clone(), b.clone()));
            }
            Action::Repair(a, b) if self.is_cut(a, b) => {
                sim.repair(a.as_str(), b.as_str());
                self.cut.remove(&(a.clone(), b.clone()));
                self.cut.remove(&(b.clone(), a.clone()));
            }
            Action::Isolate(a) => {
                for b in self.agents.clone() {
                    if b != *a {
                        self.apply(sim, &Action::Partition(a.clone(), b));
                    }
                }
            }
            Action::Heal(a) => {
                for b in self.agents.clone() {
                    if b != *a {
                        self.apply(sim, &Action::Repair(a.clone(), b));
                    }
                }
            }
            _ => {}
        }
    }

    /// Starts and ends stalls (only while `lossy`).
    pub fn step(&mut self, sim: &turmoil::Sim<'_>, now: Duration, lossy: bool) {
        let ended: Vec<(String, String)> = self
            .stalled
            .iter()
            .filter(|(_, until)| **until <= now || !lossy)
            .map(|(k, _)| k.clone())
            .collect();
        for (a, b) in ended {
            self.stalled.remove(&(a.clone(), b.clone()));
            if !self.is_cut(&a, &b) {
                sim.release(a.as_str(), b.as_str());
            }
        }
        if !lossy || self.per_ms == 0.0 {
            return;
        }
        for (a, b) in &self.pairs {
            if self.rng.f64() < self.per_ms && !self.stalled.contains_key(&(a.clone(), b.clone())) && !self.is_cut(a, b)
            {
                let d = self.rto + Duration::from_millis(self.rng.u64(..=self.rto.as_millis() as u64));
                sim.hold(a.as_str(), b.as_str());
                self.stalled.insert((a.clone(), b.clone()), now + d);
            }
        }
    }
}

//! The detector: turns a stream of probe results for one endpoint into a
//! local up/down view with hysteresis (`fall` failures, `rise` successes).
//!
//! Pure: no I/O, no clock; the scheduler feeds it results.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One agent's view of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not yet `rise` successes or `fall` failures in a row since start.
    #[default]
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// Time the probe took (to failure, for a failed one).
    pub rtt: Duration,
    /// Why it failed.
    pub error: Option<String>,
    /// A condition that warns without failing (a certificate expiring soon).
    pub warning: Option<String>,
}

impl Outcome {
    pub fn success(rtt: Duration) -> Self {
        Outcome {
            ok: true,
            rtt,
            error: None,
            warning: None,
        }
    }
    pub fn failure(rtt: Duration, error: impl Into<String>) -> Self {
        Outcome {
            ok: false,
            rtt,
            error: Some(error.into()),
            warning: None,
        }
    }
}

/// What justified a view: carried with every transition into the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Consecutive successes at the time.
    pub successes: u32,
    /// Consecutive failures at the time.
    pub failures: u32,
    /// Probes run since the agent started.
    pub probes: u64,
    /// Round-trip time of the last successful probe, in microseconds.
    pub last_rtt_us: Option<u64>,
    /// Error of the last failed probe.
    pub last_error: Option<String>,
}

/// A change of the local view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub evidence: Evidence,
}

/// Consecutive-result counters for one endpoint.
#[derive(Clone, Debug)]
pub struct Detector {
    fall: u32,
    rise: u32,
    /// The least time from a run's first probe to the probe that completes it.
    min_confirm: Duration,
    /// When the current run of equal results began (the caller's time).
    run_started: Duration,
    state: Health,
    evidence: Evidence,
}

impl Detector {
    /// `fall` and `rise` are at least 1 (validated by the config).
    pub fn new(fall: u32, rise: u32) -> Self {
        Detector {
            fall: fall.max(1),
            rise: rise.max(1),
            min_confirm: Duration::ZERO,
            run_started: Duration::ZERO,
            state: Health::Unknown,
            evidence: Evidence::default(),
        }
    }

    /// A detector whose changes also need their run to span `min_confirm`
    /// (measured on the times given to [`Detector::record_at`]).
    pub fn with_min_confirm(fall: u32, rise: u32, min_confirm: Duration) -> Self {
        Detector {
            min_confirm,
            ..Detector::new(fall, rise)
        }
    }

    /// True while a run that would change the view is under way: a failure
    /// while not down, or a success while not up. Rapid recheck probes then.
    pub fn in_run(&self) -> bool {
        let e = &self.evidence;
        (e.failures > 0 && self.state != Health::Down) || (e.successes > 0 && self.state != Health::Up)
    }

    pub fn state(&self) -> Health {
        self.state
    }

    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// Records one result; returns the transition it caused, if any. A
    /// transition happens exactly when the run reaches `fall` or `rise`.
    pub fn record(&mut self, outcome: &Outcome) -> Option<Transition> {
        self.record_at(outcome, Duration::ZERO)
    }

    /// Records one result of a probe that started at `at` (any monotonic
    /// origin). A transition happens at the first probe of a run that makes
    /// it `fall` (or `rise`) long and at least `min_confirm` from its first.
    pub fn record_at(&mut self, outcome: &Outcome, at: Duration) -> Option<Transition> {
        let e = &mut self.evidence;
        e.probes += 1;
        let to = if outcome.ok {
            if e.successes == 0 {
                self.run_started = at;
            }
            e.successes = e.successes.saturating_add(1);
            e.failures = 0;
            e.last_rtt_us = Some(outcome.rtt.as_micros().min(u128::from(u64::MAX)) as u64);
            (e.successes >= self.rise).then_some(Health::Up)
        } else {
            if e.failures == 0 {
                self.run_started = at;
            }
            e.failures = e.failures.saturating_add(1);
            e.successes = 0;
            e.last_error = outcome.error.clone();
            (e.failures >= self.fall).then_some(Health::Down)
        };
        let to = to.filter(|_| at.saturating_sub(self.run_started) >= self.min_confirm);
        match to {
            Some(to) if to != self.state => {
                let from = std::mem::replace(&mut self.state, to);
                Some(Transition {
                    from,
                    to,
                    evidence: self.evidence.clone(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fall: u32, rise: u32, results: &str) -> Vec<(usize, Health)> {
        let mut d = Detector::new(fall, rise);
        let mut out = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let o = if c == '+' {
                Outcome::success(Duration::from_millis(3))
            } else {
                Outcome::failure(Duration::from_millis(500), format!("failure {i}"))
            };
            if let Some(t) = d.record(&o) {
                out.push((i + 1, t.to));
            }
        }
        out
    }

    #[test]
    fn transitions_happen_exactly_at_fall_and_rise() {
        // (fall, rise, results, expected (probe number, new state))
        type Case<'a> = (u32, u32, &'a str, &'a [(usize, Health)]);
        let cases: &[Case] = &[
            (3, 2, "++", &[(2, Health::Up)]),
            (3, 2, "++---", &[(2, Health::Up), (5, Health::Down)]),
            (3, 2, "++--+---", &[(2, Health::Up), (8, Health::Down)]),
            (3, 2, "---++", &[(3, Health::Down), (5, Health::Up)]),
            (
                1,
                1,
                "+-+-",
                &[(1, Health::Up), (2, Health::Down), (3, Health::Up), (4, Health::Down)],
            ),
            (
                5,
                3,
                "+++-----+++",
                &[(3, Health::Up), (8, Health::Down), (11, Health::Up)],
            ),
            (2, 2, "--------", &[(2, Health::Down)]),
        ];
        for (fall, rise, results, want) in cases {
            assert_eq!(
                run(*fall, *rise, results),
                *want,
                "fall {fall} rise {rise} results {results}"
            );
        }
    }

    #[test]
    fn alternating_results_never_transition_when_thresholds_exceed_one() {
        for (fall, rise) in [(2, 2), (3, 2), (2, 3), (5, 5)] {
            let alternating: String = "+-".repeat(50);
            assert_eq!(run(fall, rise, &alternating), vec![], "fall {fall} rise {rise}");
            // Also once the endpoint is up: alternating never takes it down.
            let up_then_flaky = format!("{}{}", "+".repeat(rise as usize), "-+".repeat(50));
            assert_eq!(run(fall, rise, &up_then_flaky), vec![(rise as usize, Health::Up)]);
        }
    }

    #[test]
    fn min_confirm_holds_a_change_until_the_run_spans_it() {
        // fall 3, probes 200 ms apart: the third failure comes 400 ms after
        // the first. A floor of 1 s waits for the probe at 1000 ms.
        let mut d = Detector::with_min_confirm(3, 2, Duration::from_millis(1000));
        let fail = Outcome::failure(Duration::from_millis(1), "refused");
        let mut at = Vec::new();
        for i in 0..8u64 {
            if let Some(t) = d.record_at(&fail, Duration::from_millis(5_000 + i * 200)) {
                at.push((i, t.to, t.evidence.failures));
            }
        }
        assert_eq!(at, vec![(5, Health::Down, 6)]);
        // A success breaks the run; a new one starts from its own first probe.
        let ok = Outcome::success(Duration::from_millis(1));
        assert!(d.record_at(&ok, Duration::from_millis(9_000)).is_none());
        assert!(d.record_at(&ok, Duration::from_millis(9_200)).is_none(), "200 ms < 1 s");
        assert!(d.record_at(&fail, Duration::from_millis(9_400)).is_none());
        assert!(
            d.record_at(&ok, Duration::from_millis(9_600)).is_none(),
            "a new run began at 9.6 s"
        );
        let up = d
            .record_at(&ok, Duration::from_millis(10_600))
            .expect("up once the run spans 1 s");
        assert_eq!((up.to, up.evidence.successes), (Health::Up, 2));
        // Without a floor the counts alone decide, as in `record`.
        let mut plain = Detector::with_min_confirm(3, 2, Duration::ZERO);
        let got: Vec<bool> = (0..3)
            .map(|i| plain.record_at(&fail, Duration::from_millis(i * 200)).is_some())
            .collect();
        assert_eq!(got, vec![false, false, true]);
    }

    #[test]
    fn a_run_is_under_way_from_the_first_contrary_probe_to_the_change() {
        let mut d = Detector::new(3, 2);
        let ok = Outcome::success(Duration::from_millis(1));
        let fail = Outcome::failure(Duration::from_millis(1), "refused");
        // Unknown: the first success starts a run toward up.
        assert!(!d.in_run());
        d.record(&ok);
        assert!(d.in_run());
        d.record(&ok);
        assert!(!d.in_run(), "up: more successes are no run");
        d.record(&fail);
        assert!(d.in_run());
        d.record(&ok);
        assert!(!d.in_run(), "the failure run broke");
        for _ in 0..3 {
            d.record(&fail);
        }
        assert_eq!(d.state(), Health::Down);
        assert!(!d.in_run());
        d.record(&ok);
        assert!(d.in_run(), "down: a success starts a run toward up");
    }

    #[test]
    fn transition_carries_the_evidence() {
        let mut d = Detector::new(2, 1);
        d.record(&Outcome::success(Duration::from_micros(1500)));
        assert!(d
            .record(&Outcome::failure(Duration::from_millis(800), "connection refused"))
            .is_none());
        let t = d
            .record(&Outcome::failure(Duration::from_millis(800), "timed out after 800ms"))
            .expect("down at the second failure");
        assert_eq!(t.from, Health::Up);
        assert_eq!(t.to, Health::Down);
        assert_eq!(t.evidence.failures, 2);
        assert_eq!(t.evidence.successes, 0);
        assert_eq!(t.evidence.probes, 3);
        assert_eq!(t.evidence.last_rtt_us, Some(1500));
        assert_eq!(t.evidence.last_error.as_deref(), Some("timed out after 800ms"));
    }
}

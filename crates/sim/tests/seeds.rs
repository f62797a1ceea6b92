//! The simulator's fixed seeds: real agents under the seeds' faults, with
//! every safety rule checked at every applied entry. Seeds 1-12 are a set in
//! which both mutation checks of BENCHMARKS.md ("Deterministic simulation")
//! report violations: counting stale observations (seeds 1, 2, 4, 5, 7-12)
//! and writing DNS without re-confirming leadership (seeds 1-4).

use std::time::Duration;

use vantage_sim::{run, Options, Report};

type Numbered = Vec<(usize, Options)>;

/// Runs `plans` on two threads (each simulation is single-threaded).
fn run_all(plans: Vec<Options>) -> Vec<Report> {
    let (a, b): (Numbered, Numbered) = plans.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let other = std::thread::spawn(move || b.into_iter().map(|(i, o)| (i, run(&o))).collect::<Vec<_>>());
    let mut out: Vec<(usize, Report)> = a.into_iter().map(|(i, o)| (i, run(&o))).collect();
    out.extend(other.join().expect("simulation thread"));
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn fixed_seeds_keep_every_safety_rule_and_converge() {
    let plans: Vec<Options> = (1..=12).map(Options::for_seed).collect();
    let reports = run_all(plans.clone());
    let mut failures = Vec::new();
    for (o, r) in plans.iter().zip(&reports) {
        eprintln!("{}", r.summary(o));
        if !r.violations.is_empty() {
            failures.push(format!("{}\n  {}", o.replay_command(), r.violations.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "violations:\n{}", failures.join("\n"));
    // The runs did what they are for: faults that move DNS and leadership.
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(sum(|r| r.downs_checked) >= 12, "too few down decisions to check");
    assert!(sum(|r| r.writes) >= 24, "too few provider writes");
    assert!(sum(|r| r.leader_changes) >= 12, "too few leader changes");
    assert!(reports.iter().any(|r| r.entries_checked > 0 && r.failovers.len() > 1));
}

#[test]
fn a_seed_replays_identically() {
    let mut o = Options::for_seed(4);
    o.faults_for = Duration::from_secs(30);
    o.settle = Duration::from_secs(30);
    let reports = run_all(vec![o.clone(), o]);
    let (a, b) = (&reports[0], &reports[1]);
    assert!(a.entries_checked > 100, "the run did little: {a:?}");
    assert_eq!(a.trace, b.trace, "one seed, two runs: {a:?}\n{b:?}");
    assert_eq!(
        (a.entries_checked, a.writes, a.leader_changes, &a.failovers),
        (b.entries_checked, b.writes, b.leader_changes, &b.failovers)
    );
}

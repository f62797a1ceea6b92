//! `vantage-sim`: runs seeds of the deterministic simulation and prints, for
//! a failing one, its violations and the command that replays it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use vantage_sim::{Options, Profile, Report};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Vantage cluster over many seeds")]
struct Args {
    /// Run this one seed (and print what it did).
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds, from --from.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// 3 or 5 agents; by default the seed draws it.
    #[arg(long)]
    agents: Option<usize>,
    /// loopback, region, wan or wan150; by default the seed draws it.
    #[arg(long)]
    profile: Option<String>,
    /// Seconds of faults.
    #[arg(long, value_parser = humantime::parse_duration)]
    faults_for: Option<Duration>,
    /// Seconds after the faults within which the cluster must converge.
    #[arg(long, value_parser = humantime::parse_duration)]
    settle: Option<Duration>,
    /// Only link loss and endpoint deaths.
    #[arg(long)]
    calm: bool,
    /// Share of segments lost, 0.0-0.3; by default the seed draws it.
    #[arg(long)]
    loss: Option<f64>,
    /// Extra `[raft]` settings, `key = value` separated by `;`.
    #[arg(long, default_value = "")]
    raft: String,
    /// Print the agents' logs at this level (e.g. `info`, `vantage=debug`).
    #[arg(long)]
    log: Option<String>,
    /// Seeds run at once, one thread each.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

impl Args {
    fn options(&self, seed: u64) -> Result<Options, String> {
        let mut o = Options::for_seed(seed);
        if let Some(a) = self.agents {
            if a != 3 && a != 5 {
                return Err(format!("--agents: expected 3 or 5, got {a}"));
            }
            o.agents = a;
        }
        if let Some(p) = &self.profile {
            o.profile = Profile::parse(p)
                .ok_or_else(|| format!("--profile: expected loopback, region, wan or wan150, got {p:?}"))?;
        }
        if let Some(f) = self.faults_for {
            o.faults_for = f;
        }
        if let Some(s) = self.settle {
            o.settle = s;
        }
        if let Some(l) = self.loss {
            if !(0.0..=0.3).contains(&l) {
                return Err(format!("--loss: expected 0.0 to 0.3, got {l}"));
            }
            o.loss = Some(l);
        }
        o.calm = self.calm;
        o.raft = self.raft.clone();
        o.log = self.log.clone();
        Ok(o)
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args = Args::parse();
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.from..args.from + args.seeds).collect(),
    };
    let plans: Vec<Options> = match seeds.iter().map(|s| args.options(*s)).collect() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vantage-sim: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let results: Arc<Mutex<Vec<(Options, Report)>>> = Arc::default();
    let plans = Arc::new(plans);
    let workers: Vec<_> = (0..args.jobs.max(1))
        .map(|_| {
            let (next, results, plans) = (next.clone(), results.clone(), plans.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(o) = plans.get(i) else { return };
                let r = vantage_sim::run(o);
                println!("{}", r.summary(o));
                for v in &r.violations {
                    println!("  violation: {v}");
                }
                if !r.violations.is_empty() {
                    println!("  replay: {}", o.replay_command());
                }
                results.lock().unwrap_or_else(|p| p.into_inner()).push((o.clone(), r));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let results = results.lock().unwrap_or_else(|p| p.into_inner());
    let failed: Vec<&(Options, Report)> = results.iter().filter(|(_, r)| !r.violations.is_empty()).collect();
    let simulated: f64 = results.iter().map(|(_, r)| r.simulated.as_secs_f64()).sum();
    let changes: u64 = results.iter().map(|(_, r)| r.leader_changes).sum();
    let mut failovers: Vec<u64> = results.iter().flat_map(|(_, r)| r.failovers.iter().copied()).collect();
    failovers.sort_unstable();
    println!(
        "{} seeds, {} with violations | simulated {:.1} h in {:.1} min of wall time | leader changes after the first: {} ({:.1} per simulated hour) | failover, endpoint death to provider delete: {} samples, p50 {} ms, p99 {} ms",
        results.len(),
        failed.len(),
        simulated / 3600.0,
        started.elapsed().as_secs_f64() / 60.0,
        changes,
        changes as f64 / (simulated / 3600.0).max(1e-9),
        failovers.len(),
        percentile(&failovers, 0.5),
        percentile(&failovers, 0.99),
    );
    if !failed.is_empty() {
        println!("failing seeds:");
        for (o, _) in &failed {
            println!("  {}", o.replay_command());
        }
        std::process::exit(1);
    }
}

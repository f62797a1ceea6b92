//! Failover latency on three hosts (network namespaces, tests/lab): an
//! endpoint fails; over 30 runs, time from the failure to (a) the first
//! agent's local down, (b) the quorum decision committed, (c) the provider
//! (the strict Cloudflare double) acknowledging the delete. Two ways to fail,
//! side by side:
//! - refused: the endpoint's server is killed, so connections are refused at once;
//! - blackholed: iptables DROP inside the endpoint's namespace, so packets
//!   vanish and each probe waits for its timeout, as with a lost zone or a
//!   dead elastic IP.
//!
//! Each way runs with rapid recheck off and on (`recheck_interval =
//! "200ms"`, so the peers' hints are on too), at interval 1 s and fall 3.
//! After each failure the endpoint comes back; the table also shows the
//! re-add: the up decision to the provider's ack of the create, with
//! `hold_down = "1s"`.
//!
//! Run: `cargo bench --bench failover` (root, iproute2, iptables, python3;
//! about 15 minutes). `-- --runs N` for fewer runs. Prints a table; asserts
//! nothing.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/lab/mod.rs"]
mod lab;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab::{world_with, World};

const INTERVAL_MS: u64 = 1000;
const FALL: u64 = 3;
const TIMEOUT_MS: u64 = 800;
const RECHECK_MS: u64 = 200;
const HOLD_DOWN_MS: u64 = 1000;

/// Drops (or stops dropping) every packet to the endpoint's HTTP port, inside its namespace.
fn blackhole(w: &World, on: bool) {
    let op = if on { "-I" } else { "-D" };
    w.lab
        .iptables("e1", &[op, "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"]);
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Earliest "local view changed ... to=down" line for `endpoint` after `after` (ms), over all agents.
fn first_local_down(w: &World, endpoint: &str, after: f64) -> Option<f64> {
    (1..=3)
        .flat_map(|id| w.c.log_text(id).lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            l.contains("local view changed")
                && l.contains(&format!("endpoint={endpoint} "))
                && l.contains("to=\"down\"")
        })
        .filter_map(|l| {
            let ts = l.split_whitespace().next()?;
            let t = humantime::parse_rfc3339(ts).ok()?;
            Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
        })
        .filter(|t| *t >= after)
        .reduce(f64::min)
}

/// `runs` failovers on a fresh three-host world; the four stages in ms after
/// each failure, then the re-add (up decision to provider ack).
fn measure(n: u8, runs: usize, blackholed: bool, recheck: bool) -> [Vec<f64>; 5] {
    let mut probe = format!(
        "[probe]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\nfall = {FALL}\nrise = 2\nheartbeat = \"1s\"\n"
    );
    if recheck {
        probe += &format!("recheck_interval = \"{RECHECK_MS}ms\"\n");
    }
    let decide =
        format!("[decision]\nobservation_ttl = \"4s\"\nhold_down = \"{HOLD_DOWN_MS}ms\"\npanic_threshold = 1.0\n");
    let mut w = world_with(n, &probe, &decide, true);
    let wall0 = w.d_started_ms;
    let endpoint = format!("web/10.{n}.0.101");
    let endpoint = endpoint.as_str();
    let (mut a, mut b, mut c, mut cb, mut re) = (vec![], vec![], vec![], vec![], vec![]);
    let mut seed = (now_ms() as u64) | 1;
    for _ in 0..runs {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(600 + seed % INTERVAL_MS));
        let cut = w.d.requests().len();
        let died = now_ms();
        if blackholed {
            blackhole(&w, true);
        } else {
            w.lab.kill_server("e1");
        }
        let t = Instant::now();
        while w.records().len() != 2 || w.writes(cut).is_empty() {
            assert!(t.elapsed() < Duration::from_secs(30), "no delete");
            std::thread::sleep(Duration::from_millis(5));
        }
        let ack = wall0 + w.writes(cut).last().unwrap().at.as_secs_f64() * 1000.0;
        let decided = w
            .history(1)
            .into_iter()
            .filter(|e| e["endpoint"] == endpoint && e["kind"] == "decision" && e["to"] == "down")
            .filter_map(|e| e["log_time_ms"].as_f64())
            .filter(|t| *t >= died - 5.0)
            .reduce(f64::min)
            .expect("decision");
        let Some(local) = first_local_down(&w, endpoint, died - 5.0) else {
            let sample: Vec<String> =
                w.c.log_text(1)
                    .lines()
                    .filter(|l| l.contains("local view changed"))
                    .map(str::to_string)
                    .collect();
            panic!("no local down in the agents' logs; node 1 says: {sample:?}");
        };
        a.push(local - died);
        b.push(decided - died);
        c.push(ack - died);
        cb.push(ack - decided);
        let back = now_ms();
        let cut = w.d.requests().len();
        if blackholed {
            blackhole(&w, false);
        } else {
            w.lab.serve("e1", 101);
        }
        w.wait_records("re-added", &[101, 102]);
        let added = wall0 + w.writes(cut).last().expect("the create").at.as_secs_f64() * 1000.0;
        let up = w
            .history(1)
            .into_iter()
            .filter(|e| e["endpoint"] == endpoint && e["kind"] == "decision" && e["to"] == "up")
            .filter_map(|e| e["log_time_ms"].as_f64())
            .filter(|t| *t >= back - 5.0)
            .reduce(f64::min)
            .expect("up decision");
        re.push(added - up);
    }
    assert!(w.d.violations().is_empty());
    [a, b, c, cb, re]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let modes = [
        ("refused", false, false),
        ("refused", false, true),
        ("blackholed", true, false),
        ("blackholed", true, true),
    ];
    let results: Vec<[Vec<f64>; 5]> = modes
        .iter()
        .enumerate()
        .map(|(i, (_, blackholed, recheck))| measure(71 + i as u8, runs, *blackholed, *recheck))
        .collect();
    println!("Vantage failover latency: 3 agents and 2 endpoints in separate network namespaces, mutual TLS, Cloudflare double");
    println!(
        "interval {INTERVAL_MS} ms, timeout {TIMEOUT_MS} ms, fall {FALL}, hold_down {HOLD_DOWN_MS} ms, {runs} runs each, \
         failures at random points of the interval; ms after the failure; p50 / p95 / p99"
    );
    let names = [
        "(a) first agent's local down",
        "(b) quorum decision committed",
        "(c) provider acknowledges the delete",
        "(c) - (b) decision to provider ack",
        "re-add: up decision to provider ack",
    ];
    println!(
        "{:<38} {:>24} {:>24} {:>24} {:>24}",
        "stage", "refused", "refused+recheck", "blackholed", "blackholed+recheck"
    );
    for (k, name) in names.iter().enumerate() {
        let cells: Vec<String> = results
            .iter()
            .map(|r| {
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    pct(&r[k], 0.5),
                    pct(&r[k], 0.95),
                    pct(&r[k], 0.99)
                )
            })
            .collect();
        println!(
            "{name:<38} {:>24} {:>24} {:>24} {:>24}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
    println!(
        "floors for (a) with recheck off: refused interval x (fall - 1) = {} ms, blackholed + timeout = {} ms \
         (each plus the wait for the next probe, up to {INTERVAL_MS} ms)",
        INTERVAL_MS * (FALL - 1),
        INTERVAL_MS * (FALL - 1) + TIMEOUT_MS
    );
    println!(
        "floors for (a) with recheck on: refused recheck x (fall - 1) = {} ms, blackholed (timeout + recheck) x (fall - 1) + timeout = {} ms \
         (plus the wait for the first agent's next probe)",
        RECHECK_MS * (FALL - 1),
        (TIMEOUT_MS + RECHECK_MS) * (FALL - 1) + TIMEOUT_MS
    );
    println!(
        "re-add floor: hold_down = {HOLD_DOWN_MS} ms; target p99 below {} ms",
        HOLD_DOWN_MS + 100
    );
}

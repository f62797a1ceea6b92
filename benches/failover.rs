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
//! Run: `cargo bench --bench failover` (root, iproute2, iptables, python3).
//! Prints a table; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/lab/mod.rs"]
mod lab;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab::{world_with, World};

const INTERVAL_MS: u64 = 250;
const FALL: u64 = 3;
const TIMEOUT_MS: u64 = 200;

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

/// 30 failovers on a fresh three-host world; the four stages in ms after each failure.
fn measure(n: u8, tls: bool, blackholed: bool) -> [Vec<f64>; 4] {
    let probe = format!(
        "[probe]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\nfall = {FALL}\nrise = 2\nheartbeat = \"1s\"\n"
    );
    let decide = "[decision]\nobservation_ttl = \"4s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n";
    let mut w = world_with(n, &probe, decide, tls);
    let wall0 = w.d_started_ms;
    let endpoint = format!("web/10.{n}.0.101");
    let endpoint = endpoint.as_str();
    let (mut a, mut b, mut c, mut cb) = (vec![], vec![], vec![], vec![]);
    let mut seed = (now_ms() as u64) | 1;
    for _ in 0..30 {
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
        if blackholed {
            blackhole(&w, false);
        } else {
            w.lab.serve("e1", 101);
        }
        w.wait_records("re-added", &[101, 102]);
    }
    assert!(w.d.violations().is_empty());
    [a, b, c, cb]
}

fn main() {
    let refused = measure(69, true, false);
    let dropped = measure(70, true, true);
    println!("Vantage failover latency: 3 agents and 2 endpoints in separate network namespaces, mutual TLS, Cloudflare double");
    println!(
        "interval {INTERVAL_MS} ms, timeout {TIMEOUT_MS} ms, fall {FALL}, 30 runs each, failures at random points of the interval; ms after the failure"
    );
    println!(
        "{:<46} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
        "stage (refused | blackholed)", "p50", "p95", "p99", "p50", "p95", "p99"
    );
    let names = [
        "(a) first agent's local down",
        "(b) quorum decision committed",
        "(c) provider acknowledges the delete (whole)",
        "(c) - (b) decision to provider ack",
    ];
    for (i, name) in names.iter().enumerate() {
        let (r, d) = (&refused[i], &dropped[i]);
        println!(
            "{name:<46} {:>8.1} {:>8.1} {:>8.1}   {:>8.1} {:>8.1} {:>8.1}",
            pct(r, 0.5),
            pct(r, 0.95),
            pct(r, 0.99),
            pct(d, 0.5),
            pct(d, 0.95),
            pct(d, 0.99)
        );
    }
    println!(
        "floors for (a): refused interval x (fall - 1) = {} ms (plus the wait for the next probe, up to {INTERVAL_MS} ms); \
         blackholed interval x (fall - 1) + timeout = {} ms (plus the same wait)",
        INTERVAL_MS * (FALL - 1),
        INTERVAL_MS * (FALL - 1) + TIMEOUT_MS
    );
}

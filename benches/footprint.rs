//! Idle footprint of a whole cluster: three release-built agents on loopback
//! with mutual TLS and the default `[raft]` and `[probe]` settings, probing 1
//! and then 100 TCP endpoints (local listeners) at a 1 s interval, nothing
//! failing. Prints CPU seconds per agent per minute (user + system, from
//! /proc) and RSS for each agent, leader first.
//!
//! Run: `cargo bench --bench footprint`. Options after `--`: `--secs N` for
//! the window (60 s per row by default), `--only N` for one row, and
//! `--raft 'TOML'` to add settings to every node's `[raft]` table (to compare
//! cadences). Prints a table; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{clock_ticks_per_second, cpu_ticks, rss_kib, Cluster};

fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = flag_value(&args, "--secs").and_then(|v| v.parse().ok()).unwrap_or(60);
    let only: Option<u32> = flag_value(&args, "--only").and_then(|v| v.parse().ok());
    let raft = flag_value(&args, "--raft").unwrap_or_default().replace(';', "\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(async { tokio::net::TcpListener::bind("127.0.60.250:0").await.expect("bind") });
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let hz = clock_ticks_per_second();
    println!(
        "Vantage cluster footprint: 3 release agents, mutual TLS, default settings, TCP checks at 1 s; {secs} s window per row"
    );
    if !raft.is_empty() {
        println!("[raft] additions: {}", raft.replace('\n', "; "));
    }
    println!(
        "{:>9} {:>6} {:>8} {:>22} {:>10}",
        "endpoints", "node", "role", "CPU s per minute", "RSS MiB"
    );
    for (row, n) in [1u32, 100].into_iter().enumerate() {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let mut pools = format!(
            "[probe]\ninterval = \"1s\"\ntimeout = \"800ms\"\n\n[[pools]]\nname = \"bench\"\ncheck = {{ kind = \"tcp\", port = {port} }}\n"
        );
        for e in 0..n {
            pools += &format!(
                "[[pools.endpoints]]\naddress = \"127.60.{}.{}\"\n",
                e / 250,
                e % 250 + 1
            );
        }
        let mut c = Cluster::with_extra(60 - row as u8 * 2, 3, &raft, move |_| pools.clone());
        c.set_log_level("warn");
        c.start_all();
        c.bootstrap();
        let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
        // Settle: every endpoint decided up and in DNS, the first heartbeats out.
        std::thread::sleep(Duration::from_secs(15));
        let mut ids = vec![leader];
        ids.extend((1..=3).filter(|i| *i != leader));
        let pids: Vec<u32> = ids.iter().map(|i| c.pid(*i).expect("running")).collect();
        let before: Vec<(u64, u64)> = pids.iter().map(|p| cpu_ticks(*p)).collect();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let minutes = t0.elapsed().as_secs_f64() / 60.0;
        let mut per_minute = Vec::new();
        for (k, (id, pid)) in ids.iter().zip(&pids).enumerate() {
            let after = cpu_ticks(*pid);
            let ticks = (after.0 + after.1) - (before[k].0 + before[k].1);
            let cpu = ticks as f64 / hz / minutes;
            per_minute.push(cpu);
            println!(
                "{:>9} {:>6} {:>8} {:>22.2} {:>10.1}",
                n,
                id,
                if k == 0 { "leader" } else { "follower" },
                cpu,
                rss_kib(*pid) as f64 / 1024.0
            );
        }
        per_minute.sort_by(f64::total_cmp);
        println!("{:>9} {:>6} {:>8} {:>22.2}", n, "", "median", per_minute[1]);
    }
}

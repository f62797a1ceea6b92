//! Raft foundation benchmark on a three-node loopback cluster of release-built
//! agents: commit latency, throughput, failover time and idle memory.
//!
//! Run: `cargo bench --bench cluster`. Prints a table; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{rss_kib, Cluster};
use vantage::network::Connector;
use vantage::proto::v1::cluster_client::ClusterClient;
use vantage::proto::v1::{GetStatusRequest, ProposeNoteRequest};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn client(conn: &Connector, addr: &str) -> ClusterClient<tonic::transport::Channel> {
    conn.cluster_client(addr).expect("client")
}

async fn sequential(conn: &Connector, addr: &str, n: usize) -> Vec<Duration> {
    let mut c = client(conn, addr).await;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        c.propose_note(ProposeNoteRequest {
            text: format!("seq {i}"),
        })
        .await
        .expect("propose");
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

async fn concurrent(conn: &Connector, addr: &str, n: usize, inflight: usize) -> f64 {
    let c = client(conn, addr).await;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..inflight {
        let mut c = c.clone();
        set.spawn(async move {
            for i in (w..n).step_by(inflight) {
                c.propose_note(ProposeNoteRequest {
                    text: format!("conc {i}"),
                })
                .await
                .expect("propose");
            }
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / t.elapsed().as_secs_f64()
}

/// Polls the survivors every 10 ms until they agree on a leader other than `old`.
async fn time_to_new_leader(conn: &Connector, addrs: &[String], old: u64, since: Instant) -> Duration {
    loop {
        let mut leaders = Vec::new();
        for a in addrs {
            if let Ok(mut c) = conn.cluster_client(a) {
                if let Ok(s) = c.get_status(GetStatusRequest { linearizable: false }).await {
                    leaders.push(s.into_inner().leader_id);
                }
            }
        }
        if leaders.len() == addrs.len()
            && leaders
                .iter()
                .all(|l| l.is_some() && *l == leaders[0] && *l != Some(old))
        {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn main() {
    if std::env::var("BENCH_FAILOVER_ONLY").is_ok() {
        let mut c = Cluster::new(97, 3, "");
        c.start_all();
        c.bootstrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        failover(&mut c, &rt);
        return;
    }
    let mut c = Cluster::new(99, 3, "");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    println!("Vantage Raft benchmark: 3 release agents on loopback, sled fsync on every append, mutual TLS");
    println!("{:<44} {:>10} {:>10} {:>10}", "measure", "p50 ms", "p99 ms", "max ms");
    let conn = c.connector_as("operator");
    // The same measure on a plaintext cluster beside it, for the cost of TLS.
    let mut plain = Cluster::new(95, 3, "");
    plain.without_tls();
    plain.start_all();
    plain.bootstrap();
    let plain_leader = plain.wait_leader(&[1, 2, 3], Duration::from_secs(30));
    let plain_conn = plain.connector_as("operator");
    rt.block_on(sequential(&conn, c.addr(leader), 50)); // warm-up
    rt.block_on(sequential(&plain_conn, plain.addr(plain_leader), 50));
    // Interleaved in rounds, so both see the same machine.
    let (mut tls_lat, mut plain_lat) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        tls_lat.extend(rt.block_on(sequential(&conn, c.addr(leader), 250)));
        plain_lat.extend(rt.block_on(sequential(&plain_conn, plain.addr(plain_leader), 250)));
    }
    for (what, lat) in [
        ("commit latency, 1000 single proposals (leader)", &mut tls_lat),
        ("  the same without TLS", &mut plain_lat),
    ] {
        lat.sort();
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>10.2}",
            what,
            pct(lat, 0.5),
            pct(lat, 0.99),
            pct(lat, 1.0)
        );
    }
    drop(plain);
    let lat = rt.block_on(sequential(&conn, c.addr(follower), 500));
    println!(
        "{:<44} {:>10.2} {:>10.2} {:>10.2}",
        "commit latency, 500 proposals via follower",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    for inflight in [16, 64, 256] {
        let tput = rt.block_on(concurrent(&conn, c.addr(leader), 10_000, inflight));
        println!(
            "{:<44} {:>10.0} entries/s",
            format!("throughput, 10000 proposals, {inflight} in flight"),
            tput
        );
    }

    // Idle footprint after the load, once things settle.
    std::thread::sleep(Duration::from_secs(5));
    for id in 1..=3 {
        let pid = c.pid(id).expect("running");
        println!(
            "{:<44} {:>10} KiB",
            format!("idle RSS of node {id} after 31000 entries"),
            rss_kib(pid)
        );
    }

    let mut fresh = Cluster::new(98, 3, "");
    fresh.start_all();
    fresh.bootstrap();
    fresh.wait_leader(&[1, 2, 3], Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let rss: Vec<u64> = (1..=3).map(|id| rss_kib(fresh.pid(id).unwrap())).collect();
    println!("{:<44} {:>10?} KiB", "idle RSS of a fresh agent (nodes 1..3)", rss);
    drop(fresh);

    failover(&mut c, &rt);
}

fn failover(c: &mut Cluster, rt: &tokio::runtime::Runtime) {
    // Failover: kill -9 the leader, time until both survivors agree on a new one.
    let mut times = Vec::new();
    for _ in 0..10 {
        let old = c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
        let rest: Vec<String> = (1..=3)
            .filter(|id| *id != old)
            .map(|id| c.addr(id).to_string())
            .collect();
        let t = Instant::now();
        c.kill(old);
        let took = rt.block_on(time_to_new_leader(&c.connector_as("operator"), &rest, old, t));
        eprintln!(
            "failover run: node {old} killed, new leader agreed after {} ms",
            took.as_millis()
        );
        times.push(took);
        c.start(old);
        c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
        // Measure steady-state failover: let the restarted node catch up first.
        std::thread::sleep(Duration::from_secs(2));
    }
    times.sort();
    println!(
        "{:<44} {:>10.0} {:>10.0} {:>10.0}",
        "time to new leader after kill -9 (10 runs)",
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );
}

//! State machine benchmark: apply throughput and snapshot size and time for
//! 10,000 endpoints observed by 5 agents.
//!
//! Run: `cargo bench --bench state`. Prints a table; asserts nothing.

use std::collections::BTreeSet;
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use vantage::detect::{Evidence, Health};
use vantage::model::Decision;
use vantage::state::AppState;
use vantage::store::SmData;
use vantage::types::{Catalog, CatalogEndpoint, CatalogPool, Change, Command, Proposal, Seq};

const ENDPOINTS: usize = 10_000;
const AGENTS: u64 = 5;

fn catalog() -> Catalog {
    let pools = (0..100)
        .map(|p| CatalogPool {
            name: format!("pool{p}"),
            hostnames: vec![format!("svc{p}.example.com")],
            min_healthy: 1,
            endpoints: (0..ENDPOINTS / 100)
                .map(|e| {
                    let address = format!("10.{}.{}.{}", p / 250, p % 250, e + 1);
                    CatalogEndpoint {
                        id: format!("pool{p}/{address}"),
                        address,
                    }
                })
                .collect(),
            by_regions: false,
        })
        .collect();
    Catalog {
        version: 0,
        quorum: None,
        observation_ttl_ms: 15_000,
        initial: Decision::Up,
        panic_threshold_ppm: 500_000,
        panic_window_ms: 60_000,
        hold_down_ms: 30_000,
        history_limit: 1000,
        pools,
        regions: Vec::new(),
    }
}

fn main() {
    let voters: BTreeSet<u64> = (1..=AGENTS).collect();
    let cat = catalog();
    let ids: Vec<String> = cat
        .pools
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|e| e.id.clone()))
        .collect();
    let mut s = AppState::default();
    let mut index = 1;
    let mut now = 1_000_000u64;
    s.apply(
        index,
        &Proposal {
            origin: 1,
            log_time_ms: now,
            command: Command::Catalog(cat),
        },
        &voters,
    );

    println!("Vantage state machine: {ENDPOINTS} endpoints, {AGENTS} agents (release build, one core)");
    // Heartbeats: every agent's full view.
    let t = Instant::now();
    let rounds = 4;
    for r in 0..rounds {
        for agent in 1..=AGENTS {
            index += 1;
            now += 200;
            let hb = Command::Heartbeat {
                agent,
                seq: Seq { boot: 1, n: r + 1 },
                abstain: false,
                up: ids.clone(),
                down: vec![],
                unknown: vec![],
                warnings: Default::default(),
            };
            s.apply(
                index,
                &Proposal {
                    origin: agent,
                    log_time_ms: now,
                    command: hb,
                },
                &voters,
            );
        }
    }
    let hb = t.elapsed().as_secs_f64();
    println!(
        "{:<52} {:>10.1} entries/s ({:.2} ms each)",
        "apply: heartbeat listing all endpoints",
        (rounds * AGENTS) as f64 / hb,
        hb * 1000.0 / (rounds * AGENTS) as f64
    );

    // Transitions: one change per entry; the five agents report the same
    // endpoint in turn, so every third report decides it (and moves its DNS).
    let n = 20_000u64;
    let t = Instant::now();
    for i in 0..n {
        index += 1;
        now += 1;
        let agent = i % AGENTS + 1;
        let group = (i / AGENTS) as usize;
        let endpoint = ids[(group * 7919) % ids.len()].clone();
        let status = if (group / 1000).is_multiple_of(2) {
            Health::Down
        } else {
            Health::Up
        };
        let cmd = Command::Observe {
            agent,
            seq: Seq { boot: 1, n: 1000 + i },
            abstain: false,
            changes: vec![Change {
                endpoint,
                status,
                evidence: Evidence::default(),
            }],
        };
        s.apply(
            index,
            &Proposal {
                origin: agent,
                log_time_ms: now,
                command: cmd,
            },
            &voters,
        );
    }
    let obs = t.elapsed().as_secs_f64();
    let decided_down = s.endpoints.values().filter(|e| e.decision == Decision::Down).count();
    let events = s.next_event;
    println!(
        "{:<52} {:>10.0} entries/s ({events} audit events, {decided_down} endpoints left down)",
        "apply: observation with one transition",
        n as f64 / obs
    );

    // Snapshot through the real store: serialise, write to sled, flush; then restore.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut sm) = vantage::store::open(dir.path()).unwrap();
        *sm.shared().write().await = SmData {
            last_applied: None,
            last_membership: Default::default(),
            app: s.clone(),
        };
        let t = Instant::now();
        let snap = sm.build_snapshot().await.unwrap();
        let build = t.elapsed();
        let size = snap.snapshot.get_ref().len();
        let dir2 = tempfile::tempdir().unwrap();
        let (_, mut fresh) = vantage::store::open(dir2.path()).unwrap();
        let t = Instant::now();
        fresh.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        let install = t.elapsed();
        assert_eq!(fresh.shared().read().await.app, s);
        println!("{:<52} {:>10.1} MiB", "snapshot size", size as f64 / (1 << 20) as f64);
        println!(
            "{:<52} {:>10.0} ms",
            "snapshot build (serialise + sled write + fsync)",
            build.as_secs_f64() * 1000.0
        );
        println!(
            "{:<52} {:>10.0} ms",
            "snapshot install (parse + sled write + fsync)",
            install.as_secs_f64() * 1000.0
        );
    });
}

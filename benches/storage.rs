//! What fail-stop storage costs per write: the guard file's synced write
//! beside sled's own flush of one log-sized record, on the same filesystem.
//!
//! Run: `cargo bench --bench storage`. Prints a table; asserts nothing.

use std::time::{Duration, Instant};

use vantage::store::{Guard, Promised};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn row(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "| {name} | {:.0} | {:.0} | {:.0} |",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99)
    );
}

fn main() {
    // Beside the build, on the disk the agents use in the tests.
    let base = std::env::current_dir().expect("cwd").join("target");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let n = 2000;
    let db = sled::Config::new()
        .path(dir.path().join("sled"))
        .mode(sled::Mode::LowSpace)
        .open()
        .expect("sled");
    let tree = db.open_tree("log").expect("tree");
    let value = vec![0x5au8; 300];
    let mut guard = Guard::open(dir.path(), true).expect("guard").expect("created");
    let mut sled_lat = Vec::with_capacity(n);
    let mut guard_lat = Vec::with_capacity(n);
    let mut both_lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        // sled alone: insert + flush (what an append cost before).
        let t = Instant::now();
        tree.insert(i.to_be_bytes(), value.as_slice()).expect("insert");
        db.flush().expect("flush");
        sled_lat.push(t.elapsed());
        // the guard alone.
        let t = Instant::now();
        guard
            .update(|p: &mut Promised| {
                p.last_log = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i))
            })
            .expect("guard write");
        guard_lat.push(t.elapsed());
        // an append now: sled, then the guard.
        let t = Instant::now();
        tree.insert((i + 1_000_000).to_be_bytes(), value.as_slice())
            .expect("insert");
        db.flush().expect("flush");
        guard
            .update(|p: &mut Promised| {
                p.last_log = Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(1, 1),
                    i + 1_000_000,
                ))
            })
            .expect("guard write");
        both_lat.push(t.elapsed());
    }
    println!("{n} writes each, µs:\n");
    println!("| write | p50 | p90 | p99 |\n| --- | --- | --- | --- |");
    row("sled insert + flush (an append before)", sled_lat);
    row("guard write (two-copy slot, fdatasync)", guard_lat);
    row("sled insert + flush + guard write (an append now)", both_lat);
}

//! Storage that fails stop: a damaged data directory is refused with the file
//! named (or starts with exactly what the node acknowledged), `vantage data
//! recover` brings a refused node back, and a full disk ends the agent.
//!
//! Real agents, real sled files, real damage: truncation, zeroes, garbage in
//! the middle and at the tail of each file, a deleted file, and a tmpfs that
//! runs out of space under a running agent.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Overwrites `len` bytes at `at` (clamped to the file) with `byte`, or with
/// pseudo-random garbage when `byte` is None.
fn overwrite(path: &Path, at: u64, len: u64, byte: Option<u8>) {
    let size = fs::metadata(path).unwrap().len();
    let at = at.min(size);
    let len = len.min(size - at);
    let mut rng = fastrand::Rng::with_seed(at ^ len);
    let bytes: Vec<u8> = (0..len).map(|_| byte.unwrap_or_else(|| rng.u8(..))).collect();
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&bytes).unwrap();
}

fn truncate(path: &Path, to: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(to)
        .unwrap();
}

fn size(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// One way of damaging a stopped node's directory.
struct Damage {
    name: String,
    apply: Box<dyn Fn(&Path)>,
}

fn damage(name: impl Into<String>, apply: impl Fn(&Path) + 'static) -> Damage {
    Damage {
        name: name.into(),
        apply: Box::new(apply),
    }
}

/// The files of `dir` that `pattern` names: a path, or `sled/snap.*` for
/// every one of sled's own snapshot files.
fn matching(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    match pattern.strip_suffix('*') {
        None => vec![dir.join(pattern)],
        Some(prefix) => {
            let (sub, start) = prefix.rsplit_once('/').unwrap();
            fs::read_dir(dir.join(sub))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(start))
                .map(|e| e.path())
                .collect()
        }
    }
}

/// Every file of the directory, each damaged every way.
fn damages() -> Vec<Damage> {
    let mut out = Vec::new();
    for file in ["sled/db", "sled/conf", "sled/snap.*", "raft-guard"] {
        let each = move |f: fn(&Path)| move |d: &Path| matching(d, file).iter().for_each(|p| f(p));
        out.push(damage(
            format!("{file}: truncated to half"),
            each(|p| truncate(p, size(p) / 2)),
        ));
        out.push(damage(format!("{file}: truncated to 0"), each(|p| truncate(p, 0))));
        out.push(damage(
            format!("{file}: zeroed"),
            each(|p| overwrite(p, 0, size(p), Some(0))),
        ));
        out.push(damage(
            format!("{file}: 4 KiB of garbage in the middle"),
            each(|p| overwrite(p, size(p) / 2, 4096, None)),
        ));
        for (tail, f) in [
            (
                4u64,
                (|p| overwrite(p, size(p).saturating_sub(4 << 10), 4 << 10, None)) as fn(&Path),
            ),
            (64, |p| overwrite(p, size(p).saturating_sub(64 << 10), 64 << 10, None)),
            (256, |p| {
                overwrite(p, size(p).saturating_sub(256 << 10), 256 << 10, None)
            }),
        ] {
            out.push(damage(format!("{file}: garbage over the last {tail} KiB"), each(f)));
        }
        out.push(damage(
            format!("{file}: deleted"),
            each(|p| fs::remove_file(p).unwrap()),
        ));
    }
    out
}

fn data_check(dir: &Path) -> (bool, String, Option<Value>) {
    let out = cli(&["data", "check", dir.to_str().unwrap(), "--json"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "data check panicked:\n{text}");
    (out.status.success(), text, serde_json::from_slice(&out.stdout).ok())
}

fn applied(s: &Value) -> u64 {
    s["applied_index"].as_u64().unwrap_or(0)
}

/// Waits until node `id` has applied what the leader has, with the same state.
fn caught_up(c: &Cluster, leader: u64, id: u64) {
    wait_for(&format!("node {id} applies the leader's log"), LONG, || {
        let l = c.try_status(leader)?;
        let s = c.try_status(id)?;
        (applied(&s) == applied(&l) && s["state_digest"] == l["state_digest"]).then_some(())
    })
    .unwrap_or_else(|| panic!("node {id} did not catch up\n{}", c.logs()));
}

#[test]
fn a_damaged_data_directory_is_refused_by_name_or_starts_whole_and_recovery_rejoins_the_node() {
    let mut c = Cluster::new(71, 3, "snapshot_every = 40\nkeep_logs = 10");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    for i in 0..90 {
        c.note(leader, &format!("entry {i}"));
    }
    caught_up(&c, leader, 3);
    let leader = if leader == 3 {
        c.kill(3);
        c.wait_leader(&[1, 2], LONG)
    } else {
        c.kill(3);
        leader
    };
    let dir = c.data_dir(3);
    let (ok, text, facts) = data_check(&dir);
    assert!(ok, "the stopped node's directory is consistent: {text}");
    let pristine_facts = facts.expect("facts");
    assert_eq!(pristine_facts["fresh"], false, "{text}");
    let pristine = c.dir.path().join("pristine3");
    copy_dir(&dir, &pristine);
    let mut pristine_facts = pristine_facts;
    let snaps = matching(&pristine, "sled/snap.*").len();
    println!("sled holds {snaps} snapshot files of its own");
    // The cluster goes on without node 3: it has entries to catch up on.
    for i in 0..10 {
        c.note(leader, &format!("while node 3 is down {i}"));
    }

    let mut refused = Vec::new();
    let mut started = Vec::new();
    for d in damages() {
        if d.name.starts_with("sled/snap.*") && matching(&pristine, "sled/snap.*").is_empty() {
            println!("case {}: no such file in this directory", d.name);
            continue;
        }
        fs::remove_dir_all(&dir).unwrap();
        copy_dir(&pristine, &dir);
        (d.apply)(&dir);
        let (ok, text, facts) = data_check(&dir);
        println!("case {}: data check {}", d.name, if ok { "ok" } else { "refuses" });
        c.start(3);
        if ok {
            // Accepted: exactly what the node had acknowledged, no less.
            let f = facts.expect("facts");
            for key in ["vote_term", "voted_for", "last_index", "last_term"] {
                assert_eq!(
                    f[key], pristine_facts[key],
                    "{}: {key} after the damage: {text}",
                    d.name
                );
            }
            caught_up(&c, leader, 3);
            c.kill(3);
            started.push(d.name);
            // What node 3 holds now is what it has acknowledged: restoring the
            // older copy would be a rollback, which is not this test's damage.
            fs::remove_dir_all(&pristine).unwrap();
            copy_dir(&dir, &pristine);
            let (ok, text, facts) = data_check(&pristine);
            assert!(ok, "{text}");
            pristine_facts = facts.unwrap();
        } else {
            // Refused: the agent refuses too, by name, without a panic.
            let status = c.wait_exit(3, LONG).unwrap_or_else(|| {
                panic!(
                    "{}: data check refused ({text}) but the agent runs\n{}",
                    d.name,
                    c.logs()
                )
            });
            assert!(!status.success(), "{}", d.name);
            let log = c.log_text(3);
            let last = log.lines().last().unwrap_or_default().to_string();
            assert!(!log.contains("panicked"), "{}: the agent panicked:\n{log}", d.name);
            assert!(
                last.contains(dir.to_str().unwrap()) && last.contains("vantage data recover"),
                "{}: the refusal names the directory and the recovery: {last}",
                d.name
            );
            assert!(text.contains(dir.to_str().unwrap()), "{}: {text}", d.name);
            refused.push((d.name, last));
        }
        fs::write(c.nodes[&3].log.clone(), "").unwrap();
    }
    println!("started whole ({}):", started.len());
    for s in &started {
        println!("  {s}");
    }
    println!("refused ({}):", refused.len());
    for (name, line) in &refused {
        println!("  {name}\n      {line}");
    }
    // The damage the issue names must not pass unnoticed.
    for must in [
        "sled/db: garbage over the last 256 KiB",
        "sled/db: truncated to half",
        "sled/conf: zeroed",
        "sled/conf: deleted",
        "raft-guard: deleted",
    ] {
        assert!(refused.iter().any(|(n, _)| n == must), "{must} was not refused");
    }

    // Recovery from the last refused damage: one command, with the agent
    // started again while it waits (as systemd would).
    let (name, _) = refused.last().unwrap();
    fs::remove_dir_all(&dir).unwrap();
    copy_dir(&pristine, &dir);
    let d = damages().into_iter().find(|d| &d.name == name).unwrap();
    (d.apply)(&dir);
    let config = c.nodes[&3].config.to_str().unwrap().to_string();
    let recover = c
        .command()
        .args([
            "data",
            "recover",
            "--config",
            &config,
            "--addr",
            c.addr(leader),
            "--wait",
            "60s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let parent = dir.parent().unwrap().to_path_buf();
    let aside: PathBuf = wait_for("the directory moved aside", LONG, || {
        fs::read_dir(&parent)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("data3.damaged-"))
    })
    .expect("moved aside");
    assert!(!dir.exists());
    let voters_now = voters(&c.status(leader));
    assert_eq!(
        voters_now,
        vec![1, 2],
        "node 3 was removed before its directory was replaced"
    );
    c.start(3);
    let out = recover.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "recover: {said}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    println!("vantage data recover said:\n{said}");
    assert!(
        aside.join("raft-guard").exists() || aside.join("sled").exists(),
        "the damaged copy is kept"
    );
    caught_up(&c, leader, 3);
    assert_eq!(voters(&c.status(leader)), vec![1, 2, 3]);
    assert_eq!(c.status(3)["role"], "Follower");
    // And the recovered node counts: the cluster commits with node 1 or 2 gone.
    let other = [1, 2].into_iter().find(|i| *i != leader).unwrap();
    c.kill(other);
    c.note(leader, "after the recovery");
    caught_up(&c, leader, 3);
}

/// Mounts a tmpfs of `mib` MiB at `at`; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_ends_the_agent_within_seconds_and_after_space_returns_it_catches_up() {
    let mut c = Cluster::new(72, 3, "");
    let dir = c.data_dir(3);
    let _mount = Tmpfs::mount(&dir, 24);
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let leader = if leader == 3 {
        // Node 3 should be a follower here; make it one.
        c.kill(3);
        let l = c.wait_leader(&[1, 2], LONG);
        c.start(3);
        l
    } else {
        leader
    };
    c.note(leader, "before the disk fills");
    caught_up(&c, leader, 3);

    // Fill the filesystem.
    let fill = dir.join("fill");
    {
        let mut f = fs::File::create(&fill).unwrap();
        let block = vec![0xa5u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let filled = Instant::now();
    // Traffic that node 3 must write.
    let mut notes = 0;
    let status = loop {
        if let Some(s) = c.wait_exit(3, Duration::from_millis(200)) {
            break Some(s);
        }
        if filled.elapsed() > Duration::from_secs(20) {
            break None;
        }
        c.note(leader, &format!("while the disk is full {notes}"));
        notes += 1;
    };
    let took = filled.elapsed();
    let status = status.unwrap_or_else(|| panic!("node 3 kept running on a full disk\n{}", c.logs()));
    let log = c.log_text(3);
    println!("node 3 exited {status} {took:?} after the disk filled ({notes} notes sent)");
    println!("{}", log.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
    assert!(!status.success(), "a non-zero exit");
    assert!(took < Duration::from_secs(5), "exited {took:?} after the disk filled");
    assert!(!log.contains("panicked"), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains(dir.to_str().unwrap()),
        "the message names the directory: {last}"
    );

    // Space returns; a restart catches up with the others.
    fs::remove_file(&fill).unwrap();
    c.note(leader, "after the disk was freed");
    fs::write(c.nodes[&3].log.clone(), "").unwrap();
    c.start(3);
    caught_up(&c, leader, 3);
    assert_eq!(c.status(3)["role"], "Follower", "{}", c.logs());
}

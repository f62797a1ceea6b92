//! Leader-only DNS reconciliation with the zone-file provider on three real
//! agents: the file follows the decisions, passes named-checkzone, drift is
//! repaired, only the leader writes, and dry-run writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Cluster, Port};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

fn config(zone: &Path, dry_run: bool) -> String {
    format!(
        "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
         [decision]\nobservation_ttl = \"3s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
         [dns]\nprovider = \"zonefile\"\ndry_run = {dry_run}\nreconcile_interval = \"1s\"\n\
         [dns.zonefile]\npath = \"{}\"\norigin = \"example.test\"\nnameservers = [\"ns1.example.net\"]\n\
         static_records = [\"mail 300 IN A 192.0.2.25\"]\n\n\
         [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\", \"example.test\"]\ncheck = {{ kind = \"tcp\", port = 7500 }}\n\
         [[pools.endpoints]]\naddress = \"127.0.48.200\"\n[[pools.endpoints]]\naddress = \"127.0.48.201\"\n",
        zone.display()
    )
}

/// The managed A records of the zone file, sorted ("name address").
fn zone_records(zone: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(zone).unwrap_or_default();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A" && f[0] != "mail").then(|| format!("{} {}", f[0], f[4]))
        })
        .collect();
    out.sort();
    out
}

fn serial(zone: &Path) -> u64 {
    let text = std::fs::read_to_string(zone).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let soa = f.iter().position(|x| *x == "SOA").unwrap();
    f[soa + 4].parse().unwrap()
}

fn checkzone(zone: &Path) {
    let out = Command::new("named-checkzone")
        .args(["example.test"])
        .arg(zone)
        .output()
        .expect("named-checkzone is required (Debian package bind9-utils; .ci/run installs it)");
    assert!(
        out.status.success(),
        "named-checkzone refused the zone:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(zone).unwrap_or_default()
    );
}

fn history(c: &Cluster, node: u64) -> Vec<Value> {
    c.cli_json(&["history", "--addr", c.addr(node), "--limit", "1000"])["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn both() -> Vec<String> {
    vec![
        "example.test. 127.0.48.200".to_string(),
        "example.test. 127.0.48.201".into(),
        "www.example.test. 127.0.48.200".into(),
        "www.example.test. 127.0.48.201".into(),
    ]
}

#[test]
fn zone_file_follows_decisions_written_by_the_leader_only() {
    let mut a = Port::open("127.0.48.200:7500".parse().unwrap());
    let _b = Port::open("127.0.48.201:7500".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let zone: PathBuf = dir.path().join("example.test.zone");
    let z = zone.clone();
    let mut c = Cluster::with_extra(48, 3, "", move |_| config(&z, false));
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);

    let want = both();
    wait_for("both endpoints in the zone file", LONG, || {
        (zone_records(&zone) == want).then_some(())
    })
    .unwrap_or_else(|| panic!("zone: {:?}\n{}", zone_records(&zone), c.logs()));
    checkzone(&zone);
    let s1 = serial(&zone);
    let plan = c.cli_json(&["plan", "--addr", c.addr(1)]);
    assert_eq!(plan["changes"].as_array().map(|a| a.len()), Some(0), "{plan}");
    assert_eq!(plan["leader_id"].as_u64(), Some(leader));

    // The endpoint dies: its records leave the zone; the static line stays.
    a.close();
    let one = vec![
        "example.test. 127.0.48.201".to_string(),
        "www.example.test. 127.0.48.201".into(),
    ];
    wait_for("the dead endpoint out of the zone", LONG, || {
        (zone_records(&zone) == one).then_some(())
    })
    .unwrap_or_else(|| panic!("zone: {:?}\n{}", zone_records(&zone), c.logs()));
    checkzone(&zone);
    assert!(serial(&zone) > s1);
    assert!(std::fs::read_to_string(&zone)
        .unwrap()
        .contains("mail 300 IN A 192.0.2.25"));

    // Every write was made by the leader, in its term, and is in the history.
    let writes: Vec<Value> = history(&c, 2)
        .into_iter()
        .filter(|e| e["kind"] == "dns-write")
        .collect();
    assert!(writes.len() >= 2, "{writes:#?}");
    let leader_term = c.status(leader)["term"].as_u64().unwrap();
    for w in &writes {
        assert_eq!(w["from"], format!("node {leader}"), "{w}");
        assert!(
            w["rule"].as_str().unwrap().contains(&format!("term {leader_term}")),
            "{w}"
        );
    }
    assert!(writes.iter().any(|w| w["rule"]
        .as_str()
        .unwrap()
        .contains("delete www.example.test A 127.0.48.200")));

    // Drift: the file is deleted by hand; the leader restores it.
    std::fs::remove_file(&zone).unwrap();
    wait_for("the zone file restored", LONG, || {
        (zone_records(&zone) == one).then_some(())
    })
    .unwrap_or_else(|| panic!("zone not restored\n{}", c.logs()));
    checkzone(&zone);
}

#[test]
fn dry_run_records_the_exact_diff_and_writes_nothing() {
    let _a = Port::open("127.0.49.200:7500".parse().unwrap());
    let _b = Port::open("127.0.49.201:7500".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let zone: PathBuf = dir.path().join("example.test.zone");
    let z = zone.clone();
    let mut c = Cluster::with_extra(49, 3, "", move |_| config(&z, true).replace("127.0.48.", "127.0.49."));
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let planned = wait_for("a dry-run plan in the history", LONG, || {
        history(&c, 3).into_iter().find(|e| e["kind"] == "dns-plan")
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    let plan = c.cli_json(&["plan", "--addr", c.addr(2)]);
    assert_eq!(plan["dry_run"], true);
    let changes: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(changes.len(), 4, "{plan}");
    for ch in &changes {
        assert!(
            planned["rule"].as_str().unwrap().contains(ch.as_str()),
            "{ch} not in {planned}"
        );
    }
    // Nothing is written, however long we wait for the next reconcile rounds.
    let t0 = c.endpoints(1).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("3 s of log time", LONG, || {
        (c.endpoints(1)?["log_time_ms"].as_u64()? >= t0 + 3000).then_some(())
    })
    .expect("log time advances");
    assert!(!zone.exists(), "dry run wrote the zone file");

    // The same cluster with dry_run off writes exactly what the plan showed.
    for id in 1..=3 {
        c.kill(id);
        let path = c.nodes[&id].config.clone();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("dry_run = true", "dry_run = false");
        std::fs::write(&path, text).unwrap();
    }
    c.start_all();
    c.wait_leader(&[1, 2, 3], LONG);
    let written = wait_for("the zone file written", LONG, || {
        let r = zone_records(&zone);
        (r.len() == 4).then_some(r)
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    let planned: Vec<String> = changes
        .iter()
        .map(|ch| {
            let f: Vec<&str> = ch.split_whitespace().collect();
            assert_eq!((f[0], f[2]), ("create", "A"), "{ch}");
            format!("{}. {}", f[1], f[3])
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(written, planned, "the real run differs from the plan");
    checkzone(&zone);
}

#[test]
fn mass_failure_freezes_removals_and_raises_the_alarm() {
    let ports: Vec<Port> = (200..204)
        .map(|i| Port::open(format!("127.0.55.{i}:7500").parse().unwrap()))
        .collect();
    let mut ports: Vec<Option<Port>> = ports.into_iter().map(Some).collect();
    let dir = tempfile::tempdir().unwrap();
    let zone: PathBuf = dir.path().join("example.test.zone");
    let z = zone.clone();
    let mut c = Cluster::with_extra(55, 3, "", move |_| {
        config(&z, false)
            .replace("panic_threshold = 1.0\n", "")
            .replace("127.0.48.201\"\n", "127.0.48.201\"\n[[pools.endpoints]]\naddress = \"127.0.48.202\"\n[[pools.endpoints]]\naddress = \"127.0.48.203\"\n")
            .replace("127.0.48.", "127.0.55.")
    });
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    wait_for("eight records", LONG, || (zone_records(&zone).len() == 8).then_some(()))
        .unwrap_or_else(|| panic!("{:?}\n{}", zone_records(&zone), c.logs()));
    // Three of four endpoints die at once: more than the default threshold (half).
    for p in ports.iter_mut().take(3) {
        p.take().unwrap().close();
    }
    let alarm = wait_for("the panic alarm in cluster status", LONG, || {
        let s = c.status(2);
        let alarms = s["alarms"].as_array()?.clone();
        alarms
            .iter()
            .any(|a| a.as_str().unwrap_or("").contains("panic freeze"))
            .then_some(alarms)
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    assert!(!alarm.is_empty());
    let events = history(&c, 1);
    assert!(
        events.iter().any(|e| e["kind"] == "panic" && e["to"] == "frozen"),
        "{events:#?}"
    );
    let held: Vec<&Value> = events
        .iter()
        .filter(|e| e["rule"].as_str().unwrap_or("").contains("panic freeze"))
        .collect();
    assert!(!held.is_empty(), "no endpoint held by the freeze: {events:#?}");
    // The held endpoints' records are still published.
    let t0 = c.endpoints(1).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("2 s of log time", LONG, || {
        (c.endpoints(1)?["log_time_ms"].as_u64()? >= t0 + 2000).then_some(())
    })
    .expect("log time");
    assert!(
        zone_records(&zone).len() >= 4,
        "removals were not held: {:?}",
        zone_records(&zone)
    );
    let text = String::from_utf8_lossy(&c.cli(&["cluster", "status", "--addr", c.addr(3)]).stdout).into_owned();
    assert!(text.contains("ALARM: panic freeze"), "{text}");
}

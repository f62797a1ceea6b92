//! Operating the cluster day to day: one versioned catalog for the cluster,
//! config drift, `vantage pools apply`, and SIGHUP reloads.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

const NET: u8 = 76;

/// The endpoints of the catalog node `id` has committed.
fn endpoint_ids(c: &Cluster, id: u64) -> Vec<String> {
    let s = c.status(id);
    let mut ids: Vec<String> = s["catalog_endpoints"]
        .as_array()
        .map(|a| a.iter().map(|e| e.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The endpoints node `id` probes itself (its own file's).
fn probed_ids(c: &Cluster, id: u64) -> Vec<String> {
    let e = c
        .endpoints(id)
        .unwrap_or_else(|| panic!("node {id} answers\n{}", c.logs()));
    let mut ids: Vec<String> = e["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["local"].is_null())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn catalog_events(c: &Cluster, at: u64) -> Vec<Value> {
    let h = c.cli_json(&["history", "--addr", c.addr(at), "--limit", "1000"]);
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "catalog")
        .cloned()
        .collect()
}

fn drift_alarm(c: &Cluster, id: u64) -> Option<String> {
    let s = c.try_status(id)?;
    s["alarms"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("config drift"))
        .map(str::to_string)
}

fn hup(c: &Cluster, id: u64) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &c.pid(id).unwrap().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn pools(extra: &[&str]) -> String {
    let mut text = pool("web", &format!("127.0.{NET}.200"), "{ kind = \"tcp\", port = 7600 }");
    for a in [&format!("127.0.{NET}.201")]
        .into_iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        text += &format!("[[pools.endpoints]]\naddress = \"{a}\"\n");
    }
    text
}

#[test]
fn a_lagging_file_never_changes_the_catalog_pools_apply_and_sighup_change_it_once() {
    let odd = format!("127.0.{NET}.202");
    let odd_for_3 = odd.clone();
    let mut c = Cluster::with_extra(NET, 3, "", move |id| {
        // Node 3's file lists one more endpoint: a rollout half done.
        if id == 3 {
            pools(&[odd_for_3.as_str()])
        } else {
            pools(&[])
        }
    });
    c.start_all();
    c.bootstrap();
    let first = c.wait_leader(&[1, 2, 3], LONG);
    let committed = wait_for("a catalog committed", LONG, || {
        let ids = endpoint_ids(&c, first);
        (!ids.is_empty()).then_some(ids)
    })
    .unwrap();
    // Whichever node led first, its file is the catalog; the others drift.
    let drifting: Vec<u64> = if first == 3 { vec![1, 2] } else { vec![3] };
    let events_before = catalog_events(&c, first).len();
    for id in &drifting {
        let alarm = wait_for("the drift alarm", LONG, || drift_alarm(&c, *id))
            .unwrap_or_else(|| panic!("node {id} reports no drift: {:#}", c.status(*id)));
        assert!(alarm.contains("hash"), "{alarm}");
        println!("node {id}: {alarm}");
    }
    for id in (1..=3).filter(|id| !drifting.contains(id)) {
        assert!(drift_alarm(&c, id).is_none(), "node {id} has the committed file");
    }

    // Twenty leader changes, the drifting nodes leading some of them.
    let mut led = std::collections::BTreeSet::new();
    let mut leader = first;
    for _ in 0..20 {
        c.kill(leader);
        let rest: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
        let next = c.wait_leader(&rest, LONG);
        c.start(leader);
        c.wait_leader(&[1, 2, 3], LONG);
        led.insert(next);
        leader = next;
    }
    println!("leaders over 20 changes: {led:?}");
    assert!(
        drifting.iter().any(|d| led.contains(d)),
        "a drifting node led at least once: {led:?}"
    );
    for id in 1..=3 {
        assert_eq!(
            endpoint_ids(&c, id),
            committed,
            "node {id}'s catalog after 20 leader changes"
        );
    }
    assert_eq!(
        catalog_events(&c, leader).len(),
        events_before,
        "no catalog event over 20 leader changes"
    );

    // An operator applies a new catalog through a follower: once, with its diff.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let newer = c.dir.path().join("newer.toml");
    let base = std::fs::read_to_string(&c.nodes[&1].config).unwrap();
    let added = format!("127.0.{NET}.203");
    std::fs::write(&newer, format!("{base}[[pools.endpoints]]\naddress = \"{added}\"\n")).unwrap();
    let newer_s = newer.to_str().unwrap();
    let shown = c.cli_json(&["pools", "apply", newer_s, "--addr", c.addr(follower)]);
    assert_eq!(shown["applied"], false, "{shown:#}");
    assert_eq!(endpoint_ids(&c, leader), committed, "showing changed nothing");
    let applied = c.cli_json(&["pools", "apply", newer_s, "--addr", c.addr(follower), "--yes"]);
    assert_eq!(applied["applied"], true, "{applied:#}");
    let version = applied["version"].as_u64().unwrap();
    assert_eq!(version, 1);
    let want = format!("web/{added}");
    for id in 1..=3 {
        wait_for("the new endpoint on every node", LONG, || {
            endpoint_ids(&c, id).contains(&want).then_some(())
        })
        .unwrap_or_else(|| panic!("node {id}: {:?}", endpoint_ids(&c, id)));
    }
    let events = catalog_events(&c, leader);
    let text = serde_json::to_string(&events[events_before..]).unwrap();
    assert!(
        text.contains(&format!("endpoints added: {want}")) && text.contains("operator"),
        "the diff and who applied it are in the history: {text}"
    );
    let again = c.cli_json(&["pools", "apply", newer_s, "--addr", c.addr(leader), "--yes"]);
    assert_eq!(again["applied"], false, "{again:#}");
    assert_eq!(
        catalog_events(&c, leader).len(),
        events.len(),
        "applying it again changes nothing"
    );

    // SIGHUP on a follower whose file now carries catalog_version 2, one
    // endpoint fewer and one more: the cluster adopts it, and the node probes
    // the new one.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let path = c.nodes[&follower].config.clone();
    let own = std::fs::read_to_string(&path).unwrap();
    let fresh = format!("127.0.{NET}.204");
    let v2 = format!("catalog_version = 2\n{own}[[pools.endpoints]]\naddress = \"{fresh}\"\n")
        .replace(&format!("[[pools.endpoints]]\naddress = \"127.0.{NET}.201\"\n"), "");
    std::fs::write(&path, v2).unwrap();
    hup(&c, follower);
    let (gone, fresh) = (format!("web/127.0.{NET}.201"), format!("web/{fresh}"));
    for id in 1..=3 {
        wait_for("the catalog of version 2 on every node", LONG, || {
            let ids = endpoint_ids(&c, id);
            (!ids.contains(&gone) && ids.contains(&fresh)).then_some(())
        })
        .unwrap_or_else(|| {
            let said: Vec<String> = c
                .log_text(follower)
                .lines()
                .filter(|l| l.contains("SIGHUP"))
                .map(String::from)
                .collect();
            panic!("node {id}: {:?}; node {follower} said {said:#?}", endpoint_ids(&c, id))
        });
    }
    let probed = probed_ids(&c, follower);
    assert!(
        probed.contains(&fresh) && !probed.contains(&gone),
        "node {follower} probes {probed:?}"
    );
    let decided = c.endpoint(follower, &fresh).expect("listed");
    assert!(!decided["decision"].as_str().unwrap_or("").is_empty(), "{decided:#}");
    assert_eq!(c.status(follower)["catalog_version"], 2);
    let events = catalog_events(&c, leader);
    let last = events
        .iter()
        .rev()
        .find(|e| e.to_string().contains("version 2"))
        .cloned();
    assert!(
        last.as_ref().is_some_and(|e| e.to_string().contains("SIGHUP on node")),
        "{events:#?}"
    );

    // SIGHUP with a new log_level: applied at once.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("log_level = \"info\""));
    std::fs::write(&path, text.replace("log_level = \"info\"", "log_level = \"debug\"")).unwrap();
    let seen = c.log_text(follower).lines().count();
    hup(&c, follower);
    wait_for("DEBUG lines after the reload", LONG, || {
        let log = c.log_text(follower);
        let after: Vec<&str> = log.lines().skip(seen).collect();
        (after.iter().any(|l| l.contains("log_level is now \"debug\"")) && after.iter().any(|l| l.contains(" DEBUG ")))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", c.log_text(follower)));

    // SIGHUP with a file that does not validate changes nothing and names the key.
    let before = endpoint_ids(&c, leader);
    let count = catalog_events(&c, leader).len();
    let bad_path = c.nodes[&leader].config.clone();
    let bad = std::fs::read_to_string(&bad_path).unwrap();
    std::fs::write(&bad_path, format!("catalog_version = 9\nflavour = \"x\"\n{bad}")).unwrap();
    hup(&c, leader);
    wait_for("the reload error in the log", LONG, || {
        c.log_text(leader)
            .lines()
            .find(|l| l.contains("SIGHUP") && l.contains("flavour") && l.contains("nothing was reloaded"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("{}", c.log_text(leader)));
    assert!(c.is_running(leader), "a bad reload does not stop the agent");
    let check = c.cli(&["config", "check", bad_path.to_str().unwrap()]);
    assert!(!check.status.success() && String::from_utf8_lossy(&check.stderr).contains("flavour"));
    c.note(leader, "after the bad reload");
    assert_eq!(endpoint_ids(&c, leader), before);
    assert_eq!(catalog_events(&c, leader).len(), count);
}

fn explain(c: &Cluster, at: u64, id: &str) -> Value {
    c.cli_json(&["explain", id, "--addr", c.addr(at)])
}

#[test]
fn explain_names_why_an_endpoint_is_down_drained_held_down_or_kept_by_a_guard() {
    const N: u8 = 78;
    let ports: Vec<String> = (200..=202).map(|h| format!("127.0.{N}.{h}:7600")).collect();
    let mut open: Vec<Option<Port>> = ports.iter().map(|p| Some(Port::open(p.parse().unwrap()))).collect();
    let mut c = Cluster::with_extra(N, 3, "", |_| {
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\nhold_down = \"30s\"\npanic_threshold = 1.0\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\"]\ncheck = {{ kind = \"tcp\", port = 7600 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.{N}.200\"\n[[pools.endpoints]]\naddress = \"127.0.{N}.201\"\n\
             [[pools.endpoints]]\naddress = \"127.0.{N}.202\"\n"
        )
    });
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let ids: Vec<String> = (200..=202).map(|h| format!("web/127.0.{N}.{h}")).collect();
    for id in &ids {
        wait_for("three agents' counted up reports", LONG, || {
            let e = explain(&c, leader, id);
            let counted = e["reports"].as_array()?.iter().filter(|r| r["counted"] == true).count();
            (counted == 3 && e["in_dns"] == true).then_some(())
        })
        .unwrap_or_else(|| panic!("{:#}", explain(&c, leader, id)));
    }

    // Drained.
    c.cli_json(&[
        "endpoint",
        "drain",
        &ids[2],
        "--addr",
        c.addr(leader),
        "--reason",
        "disk swap",
        "--until",
        "1h",
    ]);
    let e = explain(&c, leader, &ids[2]);
    assert!(
        e["reason"].as_str().unwrap().starts_with("drained by operator"),
        "{e:#}"
    );
    assert!(e["next"].to_string().contains("maintenance window ends"), "{e:#}");

    // Down.
    open[0].take();
    let e = wait_for("decided down", LONG, || {
        let e = explain(&c, leader, &ids[0]);
        (e["decision"] == "down").then_some(e)
    })
    .unwrap();
    assert!(
        e["reason"].as_str().unwrap().starts_with("decided down: quorum"),
        "{e:#}"
    );
    assert!(
        e["next"].to_string().contains("more counted agent(s) to see it up"),
        "{e:#}"
    );
    let text = String::from_utf8_lossy(&c.cli(&["explain", &ids[0], "--addr", c.addr(leader)]).stdout).into_owned();
    println!("{text}");
    assert!(
        text.contains("decision   down since") && text.contains(" UTC ("),
        "{text}"
    );
    assert!(
        !text
            .split_whitespace()
            .any(|w| w.len() >= 13 && w.chars().all(|ch| ch.is_ascii_digit())),
        "no raw epoch milliseconds in human output: {text}"
    );

    // Held down: up again, but out until hold_down passes.
    open[0] = Some(Port::open(ports[0].parse().unwrap()));
    let e = wait_for("decided up again", LONG, || {
        let e = explain(&c, leader, &ids[0]);
        (e["decision"] == "up").then_some(e)
    })
    .unwrap();
    assert!(
        e["reason"].as_str().unwrap().contains("held out of DNS by hold_down"),
        "{e:#}"
    );
    assert!(e["next"].to_string().contains("hold_down ends"), "{e:#}");
    for id in [&ids[0], &ids[2]] {
        let text = String::from_utf8_lossy(&c.cli(&["explain", id, "--addr", c.addr(leader)]).stdout).into_owned();
        println!("{text}");
        assert!(
            !text.split(|ch: char| !ch.is_ascii_digit()).any(|w| w.len() >= 13),
            "no raw epoch milliseconds in human output: {text}"
        );
    }

    // Kept by a guard: the last record of the hostname fails open.
    open[1].take();
    let e = wait_for("decided down", LONG, || {
        let e = explain(&c, leader, &ids[1]);
        (e["decision"] == "down").then_some(e)
    })
    .unwrap();
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .starts_with("decided down but kept in DNS by a guard"),
        "{e:#}"
    );
    println!("{}", e["reason"]);
    // Every replica explains it the same way.
    let other = (1..=3).find(|i| *i != leader).unwrap();
    wait_for("the same answer on a follower", LONG, || {
        (explain(&c, other, &ids[1])["reason"] == e["reason"]).then_some(())
    })
    .expect("same reason");
}

#[test]
fn replay_counts_fewer_dns_changes_with_a_longer_hold_down_and_the_live_count_with_live_settings() {
    const N: u8 = 79;
    let flapping: std::net::SocketAddr = format!("127.0.{N}.200:7600").parse().unwrap();
    let _stable = Port::open(format!("127.0.{N}.201:7600").parse().unwrap());
    let mut port = Some(Port::open(flapping));
    let mut c = Cluster::with_extra(N, 3, "", |_| {
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\"]\ncheck = {{ kind = \"tcp\", port = 7600 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.{N}.200\"\n[[pools.endpoints]]\naddress = \"127.0.{N}.201\"\n"
        )
    });
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let id = format!("web/127.0.{N}.200");
    let decision = |c: &Cluster| {
        c.endpoint(leader, &id)
            .map(|e| e["decision"].as_str().unwrap_or("").to_string())
    };
    // Four flaps: down, then up again, each decided by the quorum.
    for _ in 0..4 {
        port.take();
        wait_for("decided down", LONG, || (decision(&c)? == "down").then_some(())).expect("down");
        port = Some(Port::open(flapping));
        wait_for("decided up", LONG, || (decision(&c)? == "up").then_some(())).expect("up");
    }
    let h = c.cli_json(&["history", "--addr", c.addr(leader), "--limit", "1000"]);
    let live_dns = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dns")
        .count() as u64;
    let same = c.cli_json(&["replay", "--addr", c.addr(leader)]);
    let longer = c.cli_json(&["replay", "--addr", c.addr(leader), "--hold-down", "30s"]);
    println!(
        "live history: {live_dns} DNS changes; replay with live settings: {}; with hold_down 30s: {} ({})",
        same["tried"]["dns_changes"], longer["tried"]["dns_changes"], longer["first_differences"]
    );
    // The replay reaches at least as far as the history just read.
    let replayed_dns = same["live"]["dns_changes"].as_u64().unwrap();
    assert!(replayed_dns >= live_dns && live_dns >= 8, "{same:#}\n{h:#}");
    assert_eq!(same["tried"], same["live"], "no settings: the same run");
    assert!(
        longer["tried"]["dns_changes"].as_u64().unwrap() < longer["live"]["dns_changes"].as_u64().unwrap(),
        "{longer:#}"
    );
    assert_eq!(
        longer["tried"]["decisions"], longer["live"]["decisions"],
        "hold_down changes placement, not decisions"
    );
    assert!(!longer["first_differences"].as_array().unwrap().is_empty());
    let text = String::from_utf8_lossy(
        &c.cli(&["replay", "--addr", c.addr(leader), "--hold-down", "30s"])
            .stdout,
    )
    .into_owned();
    println!("{text}");
    assert!(text.contains("hold_down_ms = 30000"), "{text}");
}

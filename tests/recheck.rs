//! Timeliness on three real agents: a re-add lands when its hold-down ends
//! (a leader tick), not at the next report; rapid recheck and peers' hints
//! decide a death well inside the floor of the regular cadence, and a
//! suspicion nobody confirms costs a probe, never a decision.

mod common;

use std::time::Duration;

use common::{observation as obs, wait_for, Cluster, Port};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

fn history(c: &Cluster, node: u64) -> Vec<Value> {
    c.cli_json(&["history", "--addr", c.addr(node), "--limit", "1000"])["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn log_time(c: &Cluster, node: u64) -> u64 {
    c.endpoints(node).unwrap()["log_time_ms"].as_u64().unwrap()
}

#[test]
fn a_re_add_lands_when_the_hold_down_ends_not_at_the_next_report() {
    const EP: &str = "web/127.0.51.200";
    let mut port = Port::open("127.0.51.200:7510".parse().unwrap());
    let _other = Port::open("127.0.51.201:7510".parse().unwrap());
    // Heartbeats a minute apart: after the agents' up reports, nothing but a
    // tick can bring log time to the end of the hold-down within the test.
    let mut c = Cluster::with_extra(51, 3, "", |_| {
        "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"60s\"\n\n\
         [decision]\nobservation_ttl = \"180s\"\nhold_down = \"3s\"\npanic_threshold = 1.0\n\n\
         [[pools]]\nname = \"web\"\ncheck = { kind = \"tcp\", port = 7510 }\n\
         [[pools.endpoints]]\naddress = \"127.0.51.200\"\n[[pools.endpoints]]\naddress = \"127.0.51.201\"\n"
            .to_string()
    });
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let in_dns = |c: &Cluster, want: bool| {
        wait_for(&format!("{EP} in DNS = {want}"), LONG, || {
            let ep = c.endpoint(1, EP)?;
            (ep["in_dns"].as_bool() == Some(want)).then_some(ep)
        })
    };
    assert!(in_dns(&c, true).is_some(), "{}", c.logs());
    port.close();
    assert!(in_dns(&c, false).is_some(), "never removed\n{}", c.logs());
    let _back = Port::open("127.0.51.200:7510".parse().unwrap());
    let placed = in_dns(&c, true);
    assert!(
        placed.is_some(),
        "decided up but not re-added within {LONG:?} (the next heartbeat is a minute away)\n{:#}\n{}",
        c.endpoint(1, EP).unwrap_or_default(),
        c.logs()
    );
    let events = history(&c, 1);
    let of_ep: Vec<&Value> = events.iter().filter(|e| e["endpoint"] == EP).collect();
    let up = of_ep
        .iter()
        .rfind(|e| e["kind"] == "decision" && e["to"] == "up")
        .expect("an up decision");
    let re_add = of_ep
        .iter()
        .rfind(|e| e["kind"] == "dns" && e["to"] == "in")
        .expect("a re-add");
    let (t_up, t_in) = (
        up["log_time_ms"].as_u64().unwrap(),
        re_add["log_time_ms"].as_u64().unwrap(),
    );
    let (i_up, i_in) = (up["log_index"].as_u64().unwrap(), re_add["log_index"].as_u64().unwrap());
    assert!(i_in > i_up, "re-add at index {i_in}, before the decision at {i_up}");
    assert!(
        t_in >= t_up + 3000,
        "re-added {} ms after the up decision, inside the 3 s hold-down",
        t_in - t_up
    );
    // The entry that re-added it is the leader's tick, stamped at the hold-down's end.
    let ticks: Vec<&Value> = events
        .iter()
        .filter(|e| e["log_index"] == i_in && e["kind"] == "dns")
        .collect();
    assert_eq!(ticks.len(), 1, "{ticks:?}");
    let held = of_ep
        .iter()
        .any(|e| e["kind"] == "guard" && e["rule"].as_str().is_some_and(|r| r.contains("hold_down until")));
    assert!(held, "the hold-down was never recorded: {of_ep:#?}");
}

#[test]
fn rapid_recheck_and_hints_decide_inside_the_floor_and_a_lone_suspicion_decides_nothing() {
    const EP: &str = "web/127.0.52.200";
    // Each agent probes the endpoint through its own port, so one agent's
    // path can fail alone.
    let mut ports: Vec<Option<Port>> = (1..=3)
        .map(|id| Some(Port::open(format!("127.0.52.200:75{id}0").parse().unwrap())))
        .collect();
    let _other = Port::open("127.0.52.201:7500".parse().unwrap());
    let mut c = Cluster::with_extra(52, 3, "", |id| {
        format!(
            "[probe]\ninterval = \"5s\"\ntimeout = \"150ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n\
             recheck_interval = \"100ms\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
             [[pools]]\nname = \"web\"\ncheck = {{ kind = \"tcp\", port = 75{id}0 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.52.200\"\n\
             [[pools.endpoints]]\naddress = \"127.0.52.201\"\ncheck = {{ kind = \"tcp\", port = 7500 }}\n"
        )
    });
    c.set_log_level("debug");
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let all_up = wait_for("every agent's up view replicated", LONG, || {
        let ep = c.endpoint(1, EP)?;
        (1..=3)
            .all(|a| obs(&ep, a).map(|o| o["status"] == "up") == Some(true))
            .then_some(())
    });
    assert!(all_up.is_some(), "{}", c.logs());
    let extra = |c: &Cluster, n: u64| -> u64 {
        c.endpoint(n, EP)
            .map(|e| e["local"]["extra_probes"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    let before: Vec<u64> = (1..=3).map(|n| extra(&c, n)).collect();

    // Agent 3 alone loses its path: it rechecks and hints; 1 and 2 probe at
    // once, see the endpoint answer, and nothing is decided.
    ports[2].take().unwrap().close();
    let seen = wait_for("agent 3's down report", LONG, || {
        let ep = c.endpoint(1, EP)?;
        (obs(&ep, 3)?["status"] == "down").then_some(ep)
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    assert_eq!(seen["decision"], "up", "one agent's view decided: {seen:#}");
    let honoured = wait_for("agents 1 and 2 to probe at agent 3's hint", LONG, || {
        [1u64, 2]
            .iter()
            .all(|n| extra(&c, *n) > before[*n as usize - 1])
            .then_some(())
    });
    assert!(
        honoured.is_some(),
        "extra probes {:?} -> {:?}\n{}",
        before,
        (1..=3).map(|n| extra(&c, n)).collect::<Vec<_>>(),
        c.logs()
    );
    for n in [1u64, 2] {
        assert!(
            c.log_text(n).contains("peer suspects endpoints: probing them now"),
            "node {n} never logged the hint"
        );
        let local = &c.endpoint(n, EP).unwrap()["local"];
        assert_eq!(local["status"], "up", "node {n}: {local}");
    }
    assert!(
        history(&c, 1)
            .iter()
            .all(|e| e["kind"] != "decision" || e["endpoint"] != EP),
        "a decision from one agent's suspicion"
    );

    // Now the endpoint dies for agents 1 and 2 too. The regular cadence
    // needs interval x (fall - 1) = 10 s of failures at the least; rapid
    // recheck needs 2 x 100 ms after the first failure.
    let t_kill = log_time(&c, 1);
    for p in ports.iter_mut().take(2) {
        p.take().unwrap().close();
    }
    let down = wait_for("the down decision", LONG, || {
        history(&c, 1)
            .into_iter()
            .find(|e| e["kind"] == "decision" && e["endpoint"] == EP && e["to"] == "down")
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    let took = down["log_time_ms"].as_u64().unwrap().saturating_sub(t_kill);
    assert!(
        took < 10_000,
        "decided {took} ms after the kill: not faster than the regular cadence's floor"
    );
    // Counted by the quorum: agent 3 and at least one of 1 and 2, each after
    // its own fall consecutive failures. (A peer that honoured agent 3's hint
    // within the last interval may still be waiting for its phase.)
    let voters = down["down"].as_array().cloned().unwrap_or_default();
    assert!(voters.len() >= 2 && voters.contains(&Value::from(3)), "{down:#}");
    for n in voters.iter().filter_map(Value::as_u64) {
        let local = &c.endpoint(n, EP).unwrap()["local"];
        assert_eq!(local["status"], "down", "node {n}: {local}");
        assert!(local["failures"].as_u64().unwrap() >= 3, "node {n}: {local}");
    }
}

//! Quorum by regions on five agents in three regions (a: 1 and 2, b: 3 and 4,
//! c: 5). Each agent's own file says which port it probes, so the test can
//! make exactly the agents it wants see the endpoint down. Region a's two
//! agents and one of region b's see it down: three of five, so the pool
//! decided by a count removes it, but only one region says down (b is
//! split), so the pool decided by regions keeps it. Region c joining them
//! makes two regions, and it goes.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster, Port};
use serde_json::Value;

const NET: u8 = 57;
const LONG: Duration = Duration::from_secs(40);

fn region(id: u64) -> &'static str {
    match id {
        1 | 2 => "a",
        3 | 4 => "b",
        _ => "c",
    }
}

/// The port agent `id` probes the endpoint on, so the test can close it for
/// exactly the agents it wants: region a's, agent 3's, agent 5's; agent 4's
/// stays open.
fn port(id: u64) -> u16 {
    match id {
        1 | 2 => 7601,
        3 => 7603,
        5 => 7602,
        _ => 7600,
    }
}

#[test]
fn one_region_cannot_outvote_the_others_and_two_regions_decide() {
    let ep = format!("127.0.{NET}.200");
    let ep_c = ep.clone();
    let mut c = Cluster::with_extra(NET, 5, "", move |id| {
        let p = port(id);
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
             [[pools]]\nname = \"geo\"\nquorum = \"regions\"\ncheck = {{ kind = \"tcp\", port = {p} }}\n\
             [[pools.endpoints]]\naddress = \"{ep_c}\"\n\n\
             [[pools]]\nname = \"count\"\ncheck = {{ kind = \"tcp\", port = {p} }}\n\
             [[pools.endpoints]]\naddress = \"{ep_c}\"\n"
        )
    });
    // Every member's region, in every node's file.
    for id in 1..=5u64 {
        let path = c.nodes[&id].config.clone();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for m in 1..=5u64 {
            let line = format!("[[members]]\nid = {m}\n");
            text = text.replace(&line, &format!("{line}region = \"{}\"\n", region(m)));
        }
        std::fs::write(&path, text).unwrap();
    }
    let _open = Port::open(format!("{ep}:7600").parse().unwrap());
    let mut a_port = Port::open(format!("{ep}:7601").parse().unwrap());
    let mut c_port = Port::open(format!("{ep}:7602").parse().unwrap());
    let mut b_port = Port::open(format!("{ep}:7603").parse().unwrap());
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3, 4, 5], LONG);
    let (geo, count) = (format!("geo/{ep}"), format!("count/{ep}"));
    let decision = |id: &str| {
        c.endpoint(leader, id)
            .map(|e| e["decision"].as_str().unwrap_or("").to_string())
    };
    wait_for("every agent sees it up", LONG, || {
        let e = c.endpoint(leader, &geo)?;
        let obs = e["observations"].as_array()?;
        (obs.len() == 5 && obs.iter().all(|o| o["status"] == "up" && o["counted"] == true)).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", c.endpoint(leader, &geo), c.logs()));
    // Agents 1, 2 and 3 lose it: three of five (the count) removes it; one
    // region of three (b is split) does not.
    a_port.close();
    b_port.close();
    wait_for("count decided down", LONG, || {
        (decision(&count)? == "down").then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", c.endpoint(leader, &count), c.logs()));
    let seen = wait_for("agents 1, 2 and 3 down, 4 and 5 up, on geo", LONG, || {
        let e = c.endpoint(leader, &geo)?;
        let obs = e["observations"].as_array()?;
        let status = |a: u64| obs.iter().find(|o| o["agent"] == a).map(|o| o["status"].clone());
        (status(1)? == "down"
            && status(2)? == "down"
            && status(3)? == "down"
            && status(4)? == "up"
            && status(5)? == "up")
            .then_some(e)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", c.endpoint(leader, &geo), c.logs()));
    assert_ne!(seen["decision"], "down", "one region of three removed it: {seen:#}");
    let t0 = c.endpoints(leader).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("two seconds of log time", LONG, || {
        (c.endpoints(leader)?["log_time_ms"].as_u64()? > t0 + 2000).then_some(())
    })
    .unwrap();
    assert_ne!(decision(&geo).unwrap(), "down", "still not removed by one region");
    let explained = c.cli_json(&["explain", &geo, "--addr", c.addr(leader)]);
    let text = explained.to_string();
    assert!(
        text.contains("decided by regions") && text.contains("a 2/2 down") && text.contains("b 1/2 down"),
        "{text}"
    );

    // Agent 5 (region c) sees it down too: two regions of three.
    c_port.close();
    wait_for("geo decided down", LONG, || (decision(&geo)? == "down").then_some(()))
        .unwrap_or_else(|| panic!("{:?}\n{}", c.endpoint(leader, &geo), c.logs()));
    let h = c.cli_json(&[
        "history",
        "--addr",
        c.addr(leader),
        "--endpoint",
        &geo,
        "--limit",
        "100",
    ]);
    let down: Vec<&Value> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "decision" && e["to"] == "down")
        .collect();
    assert_eq!(down.len(), 1, "{h:#}");
    let rule = down[0]["rule"].as_str().unwrap();
    assert!(
        rule.contains("quorum by regions")
            && rule.contains("a 2/2 down")
            && rule.contains("c 1/1 down")
            && rule.contains("b 1/2 down"),
        "{rule}"
    );
}

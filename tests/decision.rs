//! The replicated decision on three real agents: one agent's failing view
//! changes nothing, two decide; forged reports are refused; a dead agent's
//! word expires; history, grpcurl and `vantage watch` show it all.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{observation as obs, wait_for, Cluster, Port};
use serde_json::Value;
use vantage::agent::ProposeError;
use vantage::codec::ForwardRequest;
use vantage::detect::{Evidence, Health};
use vantage::types::{Change, Command as Cmd, Seq};

const LONG: Duration = Duration::from_secs(30);
const EP: &str = "web/127.0.47.200";
const OTHER: &str = "web/127.0.47.201";

/// The endpoint as node `node` reports it.
fn endpoint(c: &Cluster, node: u64, id: &str) -> Option<Value> {
    c.endpoint(node, id)
}

/// Sends a forged or odd proposal to the leader's internal Forward RPC.
fn observe(sender: u64, agent: u64, endpoint: &str) -> ForwardRequest {
    ForwardRequest {
        sender,
        command: Cmd::Observe {
            agent,
            seq: Seq { boot: u64::MAX, n: 1 },
            abstain: false,
            changes: vec![Change {
                endpoint: endpoint.into(),
                status: Health::Down,
                evidence: Evidence::default(),
            }],
        },
    }
}

#[test]
fn quorum_decides_forgeries_are_refused_and_dead_agents_expire() {
    // Each agent checks the shared endpoint through its own port, so the test
    // can cut one agent's view at a time; the second endpoint stays healthy.
    let ports: Vec<Port> = (1..=3)
        .map(|id| Port::open(format!("127.0.47.200:74{id}0").parse().unwrap()))
        .collect();
    let _other = Port::open("127.0.47.201:7400".parse().unwrap());
    let mut ports = ports.into_iter().map(Some).collect::<Vec<_>>();
    let mut c = Cluster::with_extra(47, 3, "", |id| {
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\nhold_down = \"1s\"\npanic_threshold = 1.0\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"www.example.com\"]\ncheck = {{ kind = \"tcp\", port = 74{id}0 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.47.200\"\n\
             [[pools.endpoints]]\naddress = \"127.0.47.201\"\ncheck = {{ kind = \"tcp\", port = 7400 }}\n"
        )
    });
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let all_up = wait_for("every agent's up view replicated", LONG, || {
        let ep = endpoint(&c, 1, EP)?;
        (1..=3)
            .all(|a| obs(&ep, a).map(|o| o["status"] == "up" && o["counted"] == true) == Some(true))
            .then_some(())
    });
    assert!(
        all_up.is_some(),
        "{:#}\n{}",
        c.endpoints(1).unwrap_or_default(),
        c.logs()
    );

    // `vantage watch` runs from here on and must print the decision when it happens.
    let mut watch = c
        .command()
        .args(["watch", "--addr", c.addr(1), "--endpoint", EP, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // One agent (3) loses its path to the endpoint: no decision change.
    ports[2].take().unwrap().close();
    let seen = wait_for("agent 3's down observation on every node", LONG, || {
        (1..=3)
            .all(|n| {
                endpoint(&c, n, EP)
                    .and_then(|ep| obs(&ep, 3))
                    .map(|o| o["status"] == "down")
                    == Some(true)
            })
            .then_some(())
    });
    assert!(seen.is_some(), "{}", c.logs());
    let t0 = c.endpoints(1).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("two heartbeats of log time", LONG, || {
        (c.endpoints(1)?["log_time_ms"].as_u64()? >= t0 + 2000).then_some(())
    })
    .expect("log time advances");
    for n in 1..=3 {
        let ep = endpoint(&c, n, EP).unwrap();
        assert_eq!(
            (ep["decision"].as_str(), ep["in_dns"].as_bool()),
            (Some("up"), Some(true)),
            "node {n}: {ep}"
        );
    }

    // Forged reports are refused at proposal time and change nothing.
    let leader_addr = c.addr(leader).to_string();
    let stranger = c.forward_as("node1", &leader_addr, &observe(99, 99, EP)).unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::PermissionDenied, "{stranger}");
    match c.forward_as("node1", &leader_addr, &observe(1, 2, EP)).unwrap() {
        Err(ProposeError::Refused(why)) => assert!(why.contains("claims agent"), "{why}"),
        other => panic!("a report for another agent was not refused: {other:?}"),
    }
    match c
        .forward_as("node1", &leader_addr, &observe(1, 1, "web/192.0.2.1"))
        .unwrap()
    {
        Err(ProposeError::Refused(why)) => assert!(why.contains("not in the catalog"), "{why}"),
        other => panic!("a report for an unlisted endpoint was not refused: {other:?}"),
    }
    let ep = endpoint(&c, 1, EP).unwrap();
    assert_eq!(ep["decision"], "up", "{ep}");
    assert!(c.endpoints(1).unwrap()["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["id"] != "web/192.0.2.1"));

    // A second agent (2) loses it: decided down by the entry that carried
    // agent 2's observation, and taken out of DNS.
    ports[1].take().unwrap().close();
    let decided = wait_for("decision down on every node", LONG, || {
        let eps: Vec<Value> = (1..=3).map(|n| endpoint(&c, n, EP)).collect::<Option<_>>()?;
        eps.iter()
            .all(|ep| ep["decision"] == "down" && ep["in_dns"] == false)
            .then(|| eps[0].clone())
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", c.endpoints(1).unwrap_or_default(), c.logs()));
    let second = obs(&decided, 2).unwrap();
    assert_eq!(
        decided["decided_ms"], second["since_ms"],
        "decided at agent 2's report: {decided}"
    );
    let other = endpoint(&c, 1, OTHER).unwrap();
    assert_eq!(
        (other["decision"].as_str(), other["in_dns"].as_bool()),
        (Some("up"), Some(true))
    );
    let records = &c.endpoints(1).unwrap()["records"];
    assert_eq!(records[0]["records"].as_array().unwrap().len(), 1, "{records}");
    assert_eq!(records[0]["records"][0]["content"], "127.0.47.201");

    // The history names the agents that justified the decision.
    let history = c.cli_json(&["history", "--addr", c.addr(3), "--endpoint", EP]);
    let ev = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "decision" && e["to"] == "down")
        .cloned()
        .unwrap_or_else(|| panic!("no decision event: {history:#}"));
    assert_eq!(ev["down"], serde_json::json!([2, 3]), "{ev}");
    assert_eq!(ev["up"], serde_json::json!([1]), "{ev}");
    assert!(history["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "dns" && e["to"] == "out"));

    // `vantage watch` printed the decision as it happened.
    let got = loop {
        let line = rx.recv_timeout(LONG).expect("vantage watch printed no decision");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["kind"] == "decision" && v["to"] == "down" {
            break v;
        }
    };
    assert_eq!(got["endpoint"], EP);
    let _ = watch.kill();
    let _ = watch.wait();

    // grpcurl reads the endpoints and the history.
    for method in ["vantage.v1.Endpoints/List", "vantage.v1.History/List"] {
        let out = Command::new("grpcurl")
            .args(c.grpcurl_flags())
            .args([c.addr(2), method])
            .output()
            .expect("grpcurl on PATH");
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(EP), "{method}: {text}");
    }

    // Agent 3, which last reported down, dies: after observation_ttl its word
    // no longer counts.
    c.kill(3);
    let stale = wait_for("agent 3's observation to go stale", LONG, || {
        let ep = endpoint(&c, 1, EP)?;
        let o = obs(&ep, 3)?;
        (o["counted"] == false && o["uncounted_reason"] == "stale").then_some(ep)
    })
    .unwrap_or_else(|| panic!("{:#}", c.endpoints(1).unwrap_or_default()));
    // Without a quorum either way, the decision stands.
    assert_eq!(stale["decision"], "down", "{stale}");
    let text = String::from_utf8_lossy(&c.cli(&["endpoints", "--addr", c.addr(1)]).stdout).into_owned();
    assert!(text.contains("not counted: stale"), "{text}");
}

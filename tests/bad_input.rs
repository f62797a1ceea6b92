//! Bad input is refused with a message naming what is wrong, and never
//! crashes an agent or moves its term.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{cli, write, Cluster};
use openraft::{LeaderId, Vote};
use vantage::proto::raft::RaftMessage;

const GOOD: &str = r#"
node_id = 1
listen = "127.0.0.1:7101"
data_dir = "data"

[[members]]
id = 1
addr = "127.0.0.1:7101"

[[members]]
id = 2
addr = "127.0.0.1:7102"
"#;

/// Runs `config check` on `text`; returns (exit code, stderr).
fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "node1.toml", text);
    let out = cli(&["config", "check", p.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_accepts_a_good_file() {
    let (code, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn config_errors_name_the_file_and_key() {
    let cases = [
        (format!("{GOOD}\nflavour = \"x\"\n"), "flavour"),
        (
            GOOD.replace("\"127.0.0.1:7102\"", "\"127.0.0.1:99999\""),
            "members[1].addr",
        ),
        (
            GOOD.replace("listen = \"127.0.0.1:7101\"", "listen = \"localhost\""),
            "listen",
        ),
        (GOOD.replace("id = 2", "id = 1"), "members[1].id: duplicate node id 1"),
        (
            format!("{GOOD}\n[raft]\nheartbeat_interval = \"0ms\"\n"),
            "raft.heartbeat_interval",
        ),
        (format!("{GOOD}\n[raft]\nrpc_timeout = \"soon\"\n"), "raft.rpc_timeout"),
        (format!("{GOOD}\n[raft]\nsnapshot_every = 0\n"), "raft.snapshot_every"),
        ("node_id = \"one\"\n".to_string(), "node_id"),
        (
            GOOD.replace("node_id = 1", "node_id = 3").replace("127.0.0.1:7101\"\ndata", "127.0.0.1:7103\"\ndata"),
            "node_id: node 3 is not among [[members]] (ids 1, 2)",
        ),
        ("this is [ not toml".to_string(), "node1.toml"),
        (
            format!("{GOOD}\n[[pools]]\nname = \"web\"\ncheck = {{ kind = \"tcp\", port = 443 }}\n[[pools.endpoints]]\naddress = \"10.0.0.300\"\n"),
            "pools[0].endpoints[0].address: expected an IPv4 or IPv6 address",
        ),
        (
            format!("{GOOD}\n[[pools]]\nname = \"web\"\ncheck = {{ kind = \"smtp\" }}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n"),
            "pools[0].check",
        ),
        (format!("{GOOD}\n[probe]\nfall = 0\n"), "probe.fall: expected at least 1"),
        (
            format!("{GOOD}\n[[pools]]\nname = \"web\"\nfall = 0\ncheck = {{ kind = \"icmp\" }}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n"),
            "pools[0].fall: expected at least 1",
        ),
        (format!("{GOOD}\n[probe]\ninterval = \"1s\"\ntimeout = \"2s\"\n"), "probe.timeout: expected a duration greater than zero and at most probe.interval (1s), got 2s"),
        (
            format!("{GOOD}\n[[pools]]\nname = \"web\"\ninterval = \"500ms\"\ntimeout = \"700ms\"\ncheck = {{ kind = \"icmp\" }}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n"),
            "pools[0].timeout",
        ),
        (
            format!("{GOOD}\n[[pools]]\nname = \"web\"\ncheck = {{ kind = \"https\", expect_status = [\"2xx\"] }}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n"),
            "pools[0].check.expect_status",
        ),
        (
            format!("{GOOD}\n[[pools]]\nname = \"web\"\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n"),
            "pools[0].endpoints[0].check: no check given",
        ),
        (format!("{GOOD}\n[decision]\nquorum = 3\n"), "decision.quorum: expected 1 to the number of voters (2), got 3"),
        (format!("{GOOD}\n[decision]\nobservation_ttl = \"2s\"\n"), "decision.observation_ttl: expected more than probe.heartbeat"),
        (format!("{GOOD}\n[decision]\npanic_threshold = 1.5\n"), "decision.panic_threshold"),
        (format!("{GOOD}\n[decision]\ninitial = \"down\"\n"), "decision.initial"),
        (
            format!("{GOOD}\n[[pools]]\nname = \"a\"\nhostnames = [\"www.example.com\"]\ncheck = {{ kind = \"icmp\" }}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n\n[[pools]]\nname = \"b\"\nhostnames = [\"www.example.com\"]\ncheck = {{ kind = \"icmp\" }}\n[[pools.endpoints]]\naddress = \"10.0.0.2\"\n"),
            "pools[1].hostnames[0]",
        ),
        (
            format!("{GOOD}\n[[pools]]\nname = \"a\"\nmin_healthy = 2\ncheck = {{ kind = \"icmp\" }}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n"),
            "pools[0].min_healthy",
        ),
    ];
    for (text, key) in cases {
        let (code, err) = check(&text);
        assert_eq!(code, 2, "expected a usage exit code for {key}; stderr: {err}");
        assert!(err.contains("node1.toml"), "error must name the file: {err}");
        assert!(err.contains(key), "error must name {key}: {err}");
    }
}

#[test]
fn agent_with_bad_config_exits_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "node1.toml", &format!("{GOOD}\nbogus = 1\n"));
    let out = cli(&["run", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn garbage_and_strangers_do_not_crash_an_agent_or_move_its_term() {
    let mut c = Cluster::new(21, 3, "");
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let term = c.status(follower)["term"].as_u64().unwrap();

    // Raw garbage on the gRPC port.
    for payload in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
    ] {
        let mut s = std::net::TcpStream::connect(c.addr(follower)).unwrap();
        let _ = s.write_all(payload);
        drop(s);
    }

    // A node of this cluster's CA that is not a member (a valid certificate of node 99).
    c.issue_node_cert(99, "127.0.0.99:7101");
    let connector = c.connector_as("node99");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = connector.raft_client(c.addr(follower)).unwrap();
        // A vote request from node 99, which is not a member, with a far higher term.
        let vote = openraft::raft::VoteRequest::<u64> {
            vote: Vote::new(term + 100, 99),
            last_log_id: None,
        };
        let payload = serde_json::to_vec(&vote).unwrap();
        let err = client.vote(RaftMessage { payload }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        assert!(err.message().contains("node 99"), "{err}");

        // An AppendEntries claiming leadership from node 77.
        let append = openraft::raft::AppendEntriesRequest::<vantage::types::TypeConfig> {
            vote: Vote {
                leader_id: LeaderId::new(term + 50, 77),
                committed: true,
            },
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let payload = serde_json::to_vec(&append).unwrap();
        let err = client.append_entries(RaftMessage { payload }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

        // Well-framed gRPC with a payload that is not a Raft message.
        let err = client
            .vote(RaftMessage {
                payload: b"{not json".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    });

    assert!(c.is_running(follower), "the agent died\n{}", c.logs());
    let s = c.status(follower);
    assert_eq!(s["term"].as_u64(), Some(term), "term moved: {s}");
    assert_eq!(s["leader_id"].as_u64(), Some(leader));
    c.note(follower, "still working");
}

#[test]
fn config_check_has_no_side_effects_and_refuses_credentials_that_do_not_resolve() {
    let listing = |d: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("data_dir = \"data\"", "data_dir = \"state/data\"");
    let p = write(dir.path(), "node1.toml", &text);
    let out = cli(&["config", "check", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(dir.path()), vec!["node1.toml"], "config check created files");

    // A Cloudflare token variable that is not set: check says so, as run would.
    let cf = format!(
        "{text}\n[dns]\nprovider = \"cloudflare\"\n[dns.cloudflare]\nzone = \"example.com\"\ntoken_env = \"VANTAGE_TEST_UNSET_TOKEN\"\n"
    );
    let p = write(dir.path(), "node1.toml", &cf);
    let out = std::process::Command::new(common::BIN)
        .args(["config", "check", p.to_str().unwrap()])
        .env_remove("VANTAGE_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("VANTAGE_TEST_UNSET_TOKEN"), "{err}");
    assert_eq!(listing(dir.path()), vec!["node1.toml"]);
}

use super::*;

fn base(extra: &str) -> String {
    format!(
        "node_id = 1\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"/tmp/vantage-config-test\"\n{extra}\n\
         [[members]]\nid = 1\naddr = \"127.0.0.1:7101\"\n[[members]]\nid = 2\naddr = \"127.0.0.1:7102\"\n"
    )
}

fn check(text: &str) -> Result<Config, ConfigError> {
    let c = Config::parse(text, "node1.toml")?;
    c.validate()?;
    Ok(c)
}

#[test]
fn a_valid_file_parses_with_defaults() {
    let c = check(&base("")).unwrap();
    assert_eq!(c.advertise_addr(), "127.0.0.1:7101");
    assert_eq!(c.raft.heartbeat_interval.0, Duration::from_millis(500));
}

#[test]
fn unknown_key_is_named() {
    let e = check(&base("colour = \"blue\"")).unwrap_err().to_string();
    assert!(e.starts_with("node1.toml: colour"), "{e}");
    assert!(e.contains("unknown field"), "{e}");
    let e = check(&format!("{}\n[raft]\nheartbeet = \"1s\"\n", base("")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("raft.heartbeet"), "{e}");
}

#[test]
fn bad_duration_names_key_and_expectation() {
    let text = format!("{}\n[raft]\nheartbeat_interval = \"fast\"\n", base(""));
    let e = check(&text).unwrap_err().to_string();
    assert!(e.contains("raft.heartbeat_interval"), "{e}");
    assert!(e.contains("expected a duration like \"1s\""), "{e}");
    assert!(e.contains("\"fast\""), "{e}");
}

#[test]
fn zero_interval_is_refused() {
    let text = format!("{}\n[raft]\nheartbeat_interval = \"0s\"\n", base(""));
    let e = check(&text).unwrap_err().to_string();
    assert!(
        e.contains("raft.heartbeat_interval: expected a duration greater than zero"),
        "{e}"
    );
}

#[test]
fn bad_address_is_refused() {
    let text = base("").replace("\"127.0.0.1:7102\"", "\"127.0.0.1:notaport\"");
    let e = check(&text).unwrap_err().to_string();
    assert!(e.contains("members[1].addr: expected host:port"), "{e}");
    let text = base("").replace("listen = \"127.0.0.1:7101\"", "listen = \"nowhere\"");
    let e = check(&text).unwrap_err().to_string();
    assert!(e.contains("listen: expected an address"), "{e}");
}

#[test]
fn duplicate_node_id_is_refused() {
    let text = base("").replace("id = 2", "id = 1");
    let e = check(&text).unwrap_err().to_string();
    assert!(e.contains("members[1].id: duplicate node id 1"), "{e}");
}

#[test]
fn own_address_must_match_member_entry() {
    let text = base("advertise = \"127.0.0.1:7999\"");
    let e = check(&text).unwrap_err().to_string();
    assert!(e.contains("members[0].addr"), "{e}");
}

#[test]
fn election_timeouts_must_be_ordered() {
    let text = format!("{}\n[raft]\nelection_timeout_min = \"50ms\"\n", base(""));
    let e = check(&text).unwrap_err().to_string();
    assert!(
        e.contains("raft.election_timeout_min: expected more than raft.heartbeat_interval"),
        "{e}"
    );
}

#[test]
fn out_of_range_numbers_are_refused_naming_the_key() {
    // (extra TOML, the key the error must name)
    let cases = [
        ("[decision]\nhold_down = \"18446744073709552s\"\n", "decision.hold_down"),
        ("[decision]\nhold_down = \"400days\"\n", "decision.hold_down"),
        ("[probe]\ninterval = \"1ns\"\ntimeout = \"1ns\"\n", "probe.interval"),
        ("[probe]\nfall = 100000\n", "probe.fall"),
        ("[raft]\nsnapshot_every = 100000000000\n", "raft.snapshot_every"),
        ("[raft]\njoin_timeout = \"10days\"\n", "raft.join_timeout"),
        ("[dns]\nreconcile_interval = \"10ms\"\n", "dns.reconcile_interval"),
        ("[decision]\nhistory_limit = 4000000000\n", "decision.history_limit"),
    ];
    for (extra, key) in cases {
        let e = check(&format!("{}\n{extra}", base(""))).unwrap_err().to_string();
        assert!(e.contains(&format!("{key}: expected")), "{extra}: {e}");
    }
    // In range, the catalog's log-time values are exact.
    let c = check(&format!("{}\n[decision]\nhold_down = \"1day\"\n", base(""))).unwrap();
    assert_eq!(c.catalog().unwrap().hold_down_ms, 86_400_000);
}

#[test]
fn http_and_notify_settings_are_checked_naming_the_key() {
    let with = |tables: &str| format!("{}\n{tables}\n", base("log_format = \"json\""));
    let ok = check(&with(
        "[http]\nlisten = \"127.0.0.1:9464\"\n\n[[pools]]\nname = \"web\"\ncheck = { kind = \"icmp\" }\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n\
         [[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://hooks.example/x\"\npools = [\"web\"]\n\
         repeat_every = \"1h\"\n",
    ))
    .unwrap();
    assert_eq!(ok.http.listen.as_deref(), Some("127.0.0.1:9464"));
    assert!(ok.http.client_cert, "client certificates are asked for by default");
    assert_eq!(ok.notify[0].on.len(), 4, "every class by default");
    assert!(ok.notify[0].send_on_resolved);
    let cases = [
        ("[http]\nlisten = \"10.0.0.5:9464\"\n", "http.listen: 10.0.0.5:9464 is not a loopback address"),
        ("[http]\nlisten = \"here\"\n", "http.listen: expected an address"),
        ("[http]\nlisten = \"127.0.0.1:7101\"\n", "http.listen: 127.0.0.1:7101 is already the gRPC listen address"),
        ("[[notify]]\nname = \"a b\"\nkind = \"webhook\"\nurl = \"http://x/\"\n", "notify[0].name"),
        ("[[notify]]\nname = \"a\"\nkind = \"webhook\"\n", "notify[0].url: required for kind = \"webhook\""),
        ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"ftp://x/\"\n", "notify[0].url: expected an http"),
        ("[[notify]]\nname = \"a\"\nkind = \"pagerduty\"\n", "notify[0].routing_key: required"),
        ("[[notify]]\nname = \"a\"\nkind = \"telegram\"\nurl = \"http://x/\"\n", "notify[0].kind"),
        ("[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\npools = [\"api\"]\n", "notify[0].pools[0]: no pool is named \"api\""),
        ("[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\nrepeat_every = \"5s\"\n", "notify[0].repeat_every: expected 1m to 7days"),
        ("[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\n[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://y/\"\n", "notify[1].name: duplicate"),
        ("[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\nrouting_key = \"k\"\n", "notify[0].routing_key: only for kind = \"pagerduty\""),
    ];
    for (tables, want) in cases {
        let text = format!("{}\n{tables}", base(""));
        let e = check(&text).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{tables}: {e}");
    }
    let e = check(&base("log_format = \"xml\""))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("log_format: expected \"text\" or \"json\""), "{e}");
    // A key file others can read is refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pd.key");
    std::fs::write(&key, "KEY\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{}\n[[notify]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key_file = \"{}\"\n",
        base(""),
        key.display()
    );
    let e = check(&text).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("notify[0].routing_key_file") && e.contains("chmod 600"),
        "{e}"
    );
}

#[test]
fn new_check_kinds_and_conditions_are_checked_naming_the_key() {
    let pool = |check: &str, extra: &str| {
        format!(
            "{}\n[[pools]]\nname = \"p\"\n{extra}check = {check}\n[[pools.endpoints]]\naddress = \"10.0.0.1\"\n",
            base("")
        )
    };
    let ok = check(&pool(
        "{ kind = \"https\", json = [{ path = \"db.up\", equals = true }], expect_headers = { \"Content-Type\" = \"application/json\" }, cert_expiry_fail = \"2days\" }",
        "max_rtt = \"300ms\"\n",
    ))
    .unwrap();
    let e = &ok.endpoints().unwrap()[0];
    assert_eq!(e.max_rtt, Some(Duration::from_millis(300)));
    match &e.check {
        Check::Http(h) => {
            assert_eq!(
                h.expect_headers,
                vec![("content-type".to_string(), "application/json".to_string())]
            );
            assert_eq!(h.json[0].0, vec!["db".to_string(), "up".to_string()]);
            assert_eq!(h.json[0].1, serde_json::json!(true));
        }
        other => panic!("{other:?}"),
    }
    for (c, extra, want) in [
        (
            "{ kind = \"tcp\", port = 80 }",
            "max_rtt = \"900ms\"\n",
            "pools[0].max_rtt: expected a duration greater than zero and below the timeout",
        ),
        (
            "{ kind = \"http\", cert_expiry_fail = \"2days\" }",
            "",
            "pools[0].check.cert_expiry_fail: only for kind = \"https\"",
        ),
        (
            "{ kind = \"https\", json = [{ path = \"a..b\", equals = 1 }] }",
            "",
            "pools[0].check.json[0].path",
        ),
        ("{ kind = \"grpc\", port = 0 }", "", "pools[0].check.port"),
        (
            "{ kind = \"grpc\", port = 50051, host = \"api.example.com\" }",
            "",
            "pools[0].check.host: applies only with tls = true",
        ),
        (
            "{ kind = \"grpc\", port = 50051, tls = true, ca_file = \"/nonexistent/ca.pem\" }",
            "",
            "pools[0].check.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            "{ kind = \"grpc\", port = 50051, tls = true, host = \"bad name\" }",
            "",
            "pools[0].check.host: expected a DNS name or an address",
        ),
        (
            "{ kind = \"tcp\", port = 80 }",
            "recheck_interval = \"1s\"\n",
            "pools[0].recheck_interval: expected a duration from 10ms to below the interval",
        ),
        ("{ kind = \"dns\", name = \"bad name\" }", "", "pools[0].check.name"),
        (
            "{ kind = \"dns\", name = \"www.example.com\", type = \"MX\" }",
            "",
            "pools[0].check.type",
        ),
        (
            "{ kind = \"dns\", name = \"www.example.com\", expect_rcode = \"MAYBE\" }",
            "",
            "pools[0].check.expect_rcode",
        ),
        (
            "{ kind = \"dns\", name = \"www.example.com\", expect_address = \"2001:db8::1\" }",
            "",
            "pools[0].check.expect_address: 2001:db8::1 cannot be in the answer to a A query",
        ),
    ] {
        let e = check(&pool(c, extra)).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{c}: {e}");
    }
    let dns = check(&pool(
        "{ kind = \"dns\", name = \"www.example.com\", type = \"aaaa\", expect_rcode = \"nxdomain\" }",
        "",
    ))
    .unwrap();
    assert_eq!(
        dns.endpoints().unwrap()[0].check.describe(),
        "dns:53 www.example.com AAAA"
    );
}

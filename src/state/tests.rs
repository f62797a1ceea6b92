use super::*;
use crate::types::{Catalog, CatalogEndpoint, CatalogPool, Change};

fn voters() -> BTreeSet<NodeId> {
    [1, 2, 3].into_iter().collect()
}

fn catalog(addrs: &[&str]) -> Catalog {
    Catalog {
        version: 0,
        quorum: None,
        observation_ttl_ms: 15_000,
        initial: Decision::Up,
        panic_threshold_ppm: 1_000_000,
        panic_window_ms: 60_000,
        hold_down_ms: 0,
        history_limit: 100,
        pools: vec![CatalogPool {
            name: "web".into(),
            hostnames: vec!["www.example.com".into()],
            min_healthy: 0,
            endpoints: addrs
                .iter()
                .map(|a| CatalogEndpoint {
                    id: format!("web/{a}"),
                    address: a.to_string(),
                })
                .collect(),
            by_regions: false,
        }],
        regions: Default::default(),
    }
}

fn with_catalog() -> AppState {
    let mut s = AppState::default();
    let p = Proposal {
        origin: 1,
        log_time_ms: 10,
        command: Command::Catalog(catalog(&["10.0.0.1", "10.0.0.2"])),
    };
    assert!(s.apply(1, &p, &voters()).accepted);
    s
}

fn note(origin: u64, t: u64, text: &str) -> Proposal {
    Proposal {
        origin,
        log_time_ms: t,
        command: Command::Note {
            text: text.into(),
            by: String::new(),
        },
    }
}

fn observe(origin: u64, agent: u64, n: u64, t: u64, endpoint: &str, status: Health) -> Proposal {
    Proposal {
        origin,
        log_time_ms: t,
        command: Command::Observe {
            agent,
            seq: Seq { boot: 1, n },
            abstain: false,
            changes: vec![Change {
                endpoint: endpoint.into(),
                status,
                evidence: Evidence::default(),
            }],
        },
    }
}

#[test]
fn log_time_never_goes_back() {
    let mut s = AppState::default();
    s.apply(1, &note(1, 1000, "a"), &voters());
    let r = s.apply(2, &note(2, 900, "b"), &voters());
    assert_eq!(r.log_time_ms, 1000);
    assert_eq!(s.log_time_ms, 1000);
}

#[test]
fn same_log_gives_same_digest_and_order_matters() {
    let entries = [note(1, 10, "a"), note(2, 11, "b"), note(3, 12, "c")];
    let mut a = AppState::default();
    let mut b = AppState::default();
    for (i, e) in entries.iter().enumerate() {
        a.apply(i as u64 + 1, e, &voters());
        b.apply(i as u64 + 1, e, &voters());
    }
    assert_eq!(a, b);
    let mut c = AppState::default();
    for (i, e) in entries.iter().rev().enumerate() {
        c.apply(i as u64 + 1, e, &voters());
    }
    assert_ne!(a.digest, c.digest);
}

#[test]
fn observation_for_another_agent_is_ignored() {
    let mut s = with_catalog();
    let r = s.apply(2, &observe(2, 3, 1, 100, "web/10.0.0.1", Health::Down), &voters());
    assert!(!r.accepted, "{r:?}");
    assert!(s.observations.is_empty());
    assert!(s.agents.is_empty());
    assert_eq!(s.history.back().unwrap().kind, EventKind::Refused);
}

#[test]
fn observation_from_a_non_voter_is_ignored() {
    let mut s = with_catalog();
    let r = s.apply(2, &observe(7, 7, 1, 100, "web/10.0.0.1", Health::Down), &voters());
    assert!(!r.accepted, "{r:?}");
    assert!(s.observations.is_empty());
}

#[test]
fn observation_for_an_unconfigured_endpoint_is_ignored() {
    let mut s = with_catalog();
    s.apply(2, &observe(1, 1, 1, 100, "web/192.0.2.99", Health::Down), &voters());
    assert!(!s.observations.contains_key("web/192.0.2.99"));
    assert!(s
        .history
        .iter()
        .any(|e| e.kind == EventKind::Refused && e.rule.contains("192.0.2.99")));
}

#[test]
fn repeated_or_older_reports_are_ignored() {
    let mut s = with_catalog();
    assert!(
        s.apply(2, &observe(2, 2, 5, 100, "web/10.0.0.1", Health::Down), &voters())
            .accepted
    );
    assert!(
        !s.apply(3, &observe(2, 2, 5, 200, "web/10.0.0.1", Health::Up), &voters())
            .accepted
    );
    assert!(
        !s.apply(4, &observe(2, 2, 4, 300, "web/10.0.0.1", Health::Up), &voters())
            .accepted
    );
    assert_eq!(s.observations["web/10.0.0.1"][&2].status, Health::Down);
    assert!(
        s.apply(5, &observe(2, 2, 6, 400, "web/10.0.0.1", Health::Up), &voters())
            .accepted
    );
    let o = &s.observations["web/10.0.0.1"][&2];
    assert_eq!((o.status, o.since_ms, o.index), (Health::Up, 400, 5));
    assert_eq!((o.downs, o.ups), (1, 1));
}

#[test]
fn heartbeat_confirms_without_resetting_since() {
    let mut s = with_catalog();
    s.apply(2, &observe(1, 1, 1, 100, "web/10.0.0.1", Health::Up), &voters());
    let hb = Proposal {
        origin: 1,
        log_time_ms: 5000,
        command: Command::Heartbeat {
            agent: 1,
            seq: Seq { boot: 1, n: 2 },
            abstain: false,
            up: vec!["web/10.0.0.1".into()],
            down: vec!["web/10.0.0.2".into()],
            unknown: vec![],
            warnings: Default::default(),
        },
    };
    assert!(s.apply(3, &hb, &voters()).accepted);
    let o = &s.observations["web/10.0.0.1"][&1];
    assert_eq!((o.since_ms, o.reported_ms), (100, 5000));
    assert_eq!(s.observations["web/10.0.0.2"][&1].status, Health::Down);
    assert_eq!(s.agents[&1].last_seen_ms, 5000);
}

#[test]
fn warnings_open_with_the_first_agent_and_close_with_the_last() {
    let mut s = with_catalog();
    let ep = "web/10.0.0.1";
    let hb = |agent: u64, n: u64, t: u64, warning: Option<&str>| Proposal {
        origin: agent,
        log_time_ms: t,
        command: Command::Heartbeat {
            agent,
            seq: Seq { boot: 1, n },
            abstain: false,
            up: vec![ep.into()],
            down: vec![],
            unknown: vec![],
            warnings: warning.map(|w| (ep.to_string(), w.to_string())).into_iter().collect(),
        },
    };
    let warnings = |s: &AppState| -> Vec<(String, String)> {
        s.history
            .iter()
            .filter(|e| e.kind == EventKind::Warning)
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect()
    };
    assert!(
        s.apply(2, &hb(1, 1, 100, Some("expires in 20 days")), &voters())
            .accepted
    );
    assert!(
        s.apply(3, &hb(2, 1, 200, Some("expires in 20 days")), &voters())
            .accepted
    );
    assert_eq!(
        warnings(&s),
        vec![("none".to_string(), "warning".to_string())],
        "one event for two agents"
    );
    assert!(s.apply(4, &hb(1, 2, 300, None), &voters()).accepted);
    assert_eq!(warnings(&s).len(), 1, "agent 2 still warns");
    assert!(s.apply(5, &hb(2, 2, 400, None), &voters()).accepted);
    assert_eq!(
        warnings(&s),
        vec![("none".into(), "warning".into()), ("warning".into(), "none".into())]
    );
    assert!(s.warnings.is_empty());
    // An endpoint the catalog does not list is not remembered.
    let mut other = hb(1, 3, 500, None);
    if let Command::Heartbeat { warnings, .. } = &mut other.command {
        warnings.insert("web/192.0.2.9".into(), "stray".into());
    }
    s.apply(6, &other, &voters());
    assert!(s.warnings.is_empty());
}

#[test]
fn mass_removal_freezes_and_raises_the_alarm_until_endpoints_recover() {
    let addrs: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let mut cat = catalog(&refs);
    cat.panic_threshold_ppm = 500_000;
    let mut s = AppState::default();
    let install = Proposal {
        origin: 1,
        log_time_ms: 10,
        command: Command::Catalog(cat),
    };
    s.apply(1, &install, &voters());
    let mut index = 1;
    let mut down = |s: &mut AppState, agent: u64, n: u64, t: u64, ids: &[String], status: Health| {
        index += 1;
        let p = Proposal {
            origin: agent,
            log_time_ms: t,
            command: Command::Observe {
                agent,
                seq: Seq { boot: 1, n },
                abstain: false,
                changes: ids
                    .iter()
                    .map(|a| Change {
                        endpoint: format!("web/{a}"),
                        status,
                        evidence: Evidence::default(),
                    })
                    .collect(),
            },
        };
        s.apply(index, &p, &voters());
    };
    // Agents 1 and 2 see 8 of 10 endpoints go down within seconds.
    down(&mut s, 1, 1, 1000, &addrs[..8], Health::Down);
    down(&mut s, 2, 1, 1500, &addrs[..8], Health::Down);
    let decided = s.endpoints.values().filter(|e| e.decision == Decision::Down).count();
    assert_eq!(decided, 8, "decisions are still made");
    assert!(s.panic.is_some(), "alarm raised");
    assert!(s.history.iter().any(|e| e.kind == EventKind::Panic && e.to == "frozen"));
    // At most half could go before the freeze; the rest are held in DNS.
    let in_dns = s.endpoints.values().filter(|e| e.in_dns).count();
    assert!(in_dns >= 5, "removals held: {in_dns} in DNS");
    assert!(s
        .endpoints
        .values()
        .any(|e| e.decision == Decision::Down && e.in_dns && e.dns_reason.contains("panic freeze")));
    // They recover: the freeze lifts.
    down(&mut s, 1, 2, 5000, &addrs[..8], Health::Up);
    down(&mut s, 2, 2, 5500, &addrs[..8], Health::Up);
    assert!(s.panic.is_none());
    assert!(s.history.iter().any(|e| e.kind == EventKind::Panic && e.to == "normal"));
}

#[test]
fn quorum_of_two_decides_down_and_history_names_the_agents() {
    let mut s = with_catalog();
    s.apply(2, &observe(1, 1, 1, 100, "web/10.0.0.1", Health::Down), &voters());
    assert_eq!(
        s.endpoints["web/10.0.0.1"].decision,
        Decision::Up,
        "one agent is not a quorum"
    );
    s.apply(3, &observe(2, 2, 1, 200, "web/10.0.0.1", Health::Down), &voters());
    let st = &s.endpoints["web/10.0.0.1"];
    assert_eq!((st.decision, st.decided_index, st.in_dns), (Decision::Down, 3, false));
    let ev = s.history.iter().find(|e| e.kind == EventKind::Decision).unwrap();
    assert_eq!((ev.index, ev.down.clone()), (3, vec![1, 2]));
    assert_eq!(
        s.desired_records()
            .iter()
            .filter(|r| r.name == "www.example.com")
            .count(),
        1
    );
}

fn command(t: u64, command: Command) -> Proposal {
    Proposal {
        origin: 1,
        log_time_ms: t,
        command,
    }
}

fn drain(id: &str, for_ms: Option<u64>, force: bool) -> Command {
    Command::Drain {
        endpoint: id.into(),
        reason: "maintenance".into(),
        for_ms,
        force,
        by: "operator alice".into(),
    }
}

#[test]
fn a_drain_takes_the_endpoint_out_refuses_the_last_record_and_its_window_ends_in_log_time() {
    let mut s = with_catalog();
    let v = voters();
    let r = s.apply(2, &command(100, drain("web/10.0.0.1", Some(5_000), false)), &v);
    assert!(r.accepted, "{}", r.detail);
    let names = |s: &AppState| s.desired_records().into_iter().map(|r| r.content).collect::<Vec<_>>();
    assert_eq!(names(&s), vec!["10.0.0.2"]);
    // The last record of www.example.com: refused, unless forced.
    let r = s.apply(3, &command(200, drain("web/10.0.0.2", None, false)), &v);
    assert!(!r.accepted && r.detail.contains("no record in DNS"), "{}", r.detail);
    assert_eq!(names(&s), vec!["10.0.0.2"]);
    // The window ends by itself once log time passes it.
    s.apply(4, &note(1, 4_000, "before"), &v);
    assert_eq!(names(&s), vec!["10.0.0.2"]);
    s.apply(5, &note(1, 5_200, "after"), &v);
    assert_eq!(names(&s), vec!["10.0.0.1", "10.0.0.2"]);
    assert!(s
        .history
        .iter()
        .any(|e| e.kind == EventKind::Override && e.rule.contains("maintenance window ended")));
}

#[test]
fn an_undrained_endpoint_waits_for_hold_down_like_any_re_add() {
    let mut s = AppState::default();
    let v = voters();
    let mut c = catalog(&["10.0.0.1", "10.0.0.2"]);
    c.hold_down_ms = 2_000;
    s.apply(1, &command(10, Command::Catalog(c)), &v);
    s.apply(2, &command(100, drain("web/10.0.0.1", None, false)), &v);
    let undrain = Command::Undrain {
        endpoint: "web/10.0.0.1".into(),
        by: "operator alice".into(),
    };
    assert!(s.apply(3, &command(1_000, undrain), &v).accepted);
    let has = |s: &AppState| s.desired_records().iter().any(|r| r.content == "10.0.0.1");
    assert!(!has(&s), "held by hold_down right after undrain");
    // Re-adds are re-examined as reports arrive (heartbeats, in a cluster).
    s.apply(4, &observe(1, 1, 1, 2_500, "web/10.0.0.2", Health::Up), &v);
    assert!(!has(&s));
    s.apply(5, &observe(1, 1, 2, 3_100, "web/10.0.0.2", Health::Up), &v);
    assert!(has(&s), "{:?}", s.endpoints["web/10.0.0.1"]);
}

#[test]
fn an_endpoint_removed_from_the_catalog_leaves_dns_through_the_guards() {
    let v = voters();
    let addrs = |s: &AppState| s.desired_records().into_iter().map(|r| r.content).collect::<Vec<_>>();
    let next = |c: Catalog, version: u64| {
        let mut c = c;
        c.version = version;
        Command::Catalog(c)
    };
    // Both up: removing one takes it out at once, and it is forgotten.
    let mut s = with_catalog();
    let r = s.apply(2, &command(100, next(catalog(&["10.0.0.2"]), 1)), &v);
    assert!(r.accepted, "{}", r.detail);
    assert_eq!(addrs(&s), vec!["10.0.0.2"]);
    assert!(!s.endpoints.contains_key("web/10.0.0.1"));
    assert!(
        s.owned_names()["www.example.com"].contains("10.0.0.1"),
        "owned until a write removed it"
    );

    // The other one is down: the removed one is the last record, so the
    // guard holds it (fail open) until the other one is back up.
    let mut s = with_catalog();
    for (n, agent) in [(1, 1), (2, 2)] {
        s.apply(2 + n, &observe(agent, agent, n, 200, "web/10.0.0.2", Health::Down), &v);
    }
    assert_eq!(addrs(&s), vec!["10.0.0.1"], "10.0.0.2 decided down and out");
    s.apply(5, &command(300, next(catalog(&["10.0.0.2"]), 1)), &v);
    assert_eq!(
        addrs(&s),
        vec!["10.0.0.1"],
        "the last record is kept: {:?}",
        s.endpoints
    );
    assert!(s.endpoints["web/10.0.0.1"].retiring);
    for (n, agent) in [(3, 1), (4, 2)] {
        s.apply(3 + n, &observe(agent, agent, n, 400, "web/10.0.0.2", Health::Up), &v);
    }
    assert_eq!(addrs(&s), vec!["10.0.0.2"], "released once another record is up");
    assert!(!s.endpoints.contains_key("web/10.0.0.1"));
}

//! Tests of the socket engine: real pings over loopback through datagram and
//! raw sockets, timeouts, send errors, clean-up of dropped requests, and
//! sequence-number allocation.

use super::*;

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const T: Duration = Duration::from_secs(2);

/// A path the tests need is missing: fail loudly with the fix, never skip.
fn skip(why: &str) {
    panic!(
        "required but unavailable: {why}. The ICMP tests need IPv6 loopback and unprivileged \
         datagram ICMP sockets: run `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` as root \
         (.ci/run does this)"
    );
}

fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

async fn ping_both(p: &Pinger, label: &str) {
    let rtt = p.ping(LO4, T).await;
    assert!(
        matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
        "{label} v4: {rtt:?}"
    );
    if has_ipv6_loopback() {
        let rtt = p.ping(LO6, T).await;
        assert!(
            matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
            "{label} v6: {rtt:?}"
        );
    } else {
        skip("no IPv6 loopback");
    }
    assert_eq!(p.inflight_len(), 0);
}

#[tokio::test]
async fn ping_ipv4_loopback() {
    let p = Pinger::new().await;
    let rtt = p.ping(LO4, T).await;
    assert!(
        matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
        "{rtt:?}; {}",
        p.describe()
    );
    // Mapped addresses go over IPv4.
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert!(p.ping(mapped, T).await.is_ok());
    assert_eq!(p.inflight_len(), 0);
}

#[tokio::test]
async fn ping_ipv6_loopback() {
    if !has_ipv6_loopback() {
        return skip("no IPv6 loopback");
    }
    let p = Pinger::new().await;
    let rtt = p.ping(LO6, T).await;
    assert!(
        matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
        "{rtt:?}; {}",
        p.describe()
    );
}

async fn concurrent(p: Arc<Pinger>, n: usize) {
    let v6 = has_ipv6_loopback();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let p = Arc::clone(&p);
        let addr = if v6 && i % 2 == 1 { LO6 } else { LO4 };
        set.spawn(async move { (addr, p.ping(addr, Duration::from_secs(5)).await) });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        let (addr, r) = r.expect("task panicked");
        assert!(r.is_ok(), "{addr}: {r:?}; {}", p.describe());
        ok += 1;
    }
    assert_eq!(ok, n);
    assert_eq!(p.inflight_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_200_mixed() {
    concurrent(Arc::new(Pinger::new().await), 200).await;
}

#[tokio::test]
async fn unanswered_address_errors_within_timeout() {
    let p = Pinger::new().await;
    let timeout = Duration::from_millis(1500);
    let mut targets = vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))];
    if has_ipv6_loopback() {
        targets.push("2001:db8::1".parse().expect("literal"));
    }
    for addr in targets {
        let start = std::time::Instant::now();
        let r = p.ping(addr, timeout).await;
        let took = start.elapsed();
        eprintln!("{addr}: {r:?} after {took:?}");
        assert!(r.is_err(), "{addr} answered: {r:?}");
        assert!(took < timeout + Duration::from_millis(500), "{addr} took {took:?}");
    }
    assert_eq!(p.inflight_len(), 0, "timed-out entries must be removed");
}

#[tokio::test]
async fn timeout_when_no_reply_is_delivered() {
    let p = Pinger::new().await;
    let Some(engine) = &p.v4.engine else {
        return skip(&p.describe());
    };
    // Without the receive task the reply is never matched, so this must time out.
    engine.task.abort();
    let start = std::time::Instant::now();
    let r = p.ping(LO4, Duration::from_millis(200)).await;
    let took = start.elapsed();
    assert_eq!(r, Err(PingError::Timeout(Duration::from_millis(200))));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(p.inflight_len(), 0, "timed-out entry must be removed");
}

#[tokio::test]
async fn send_error_is_reported() {
    let p = Pinger::new().await;
    if p.v4.engine.is_none() {
        return skip(&p.describe());
    }
    // Limited broadcast without SO_BROADCAST is refused by the kernel at send time.
    let r = p.ping(IpAddr::V4(Ipv4Addr::BROADCAST), T).await;
    eprintln!("broadcast: {r:?}");
    assert!(matches!(r, Err(PingError::Send(_))), "{r:?}");
    assert_eq!(p.inflight_len(), 0);
}

#[tokio::test]
async fn dropped_ping_removes_entry() {
    let p = Pinger::new().await;
    let fut = p.ping(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), Duration::from_secs(30));
    // Polls the ping until it is waiting, then drops it.
    let _ = tokio::time::timeout(Duration::from_millis(100), fut).await;
    assert_eq!(p.inflight_len(), 0);
}

#[tokio::test]
async fn describe_names_socket_kind() {
    let p = Pinger::new().await;
    let d = p.describe();
    eprintln!("{d}");
    assert!(d.starts_with("icmp: IPv4 "), "{d}");
    for kind in [p.kind_v4(), p.kind_v6()] {
        let word = match kind {
            SocketKind::Datagram => "datagram socket",
            SocketKind::Raw => "raw socket",
            SocketKind::Unavailable(_) => "unavailable (",
        };
        assert!(d.contains(word), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_path_both_families() {
    let p = Pinger::with_mode(SocketMode::Raw).await;
    if p.kind_v4() != &SocketKind::Raw {
        return skip(&p.describe());
    }
    if has_ipv6_loopback() {
        assert_eq!(p.kind_v6(), &SocketKind::Raw, "{}", p.describe());
    }
    assert!(p.describe().contains("IPv4 raw socket"));
    ping_both(&p, "raw").await;
    concurrent(Arc::new(p), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_path_both_families() {
    let p = Pinger::with_mode(SocketMode::Datagram).await;
    if p.kind_v4() != &SocketKind::Datagram {
        // Unavailable must say why and how to fix it.
        let d = p.describe();
        assert!(d.contains("ping_group_range") || d.contains("datagram:"), "{d}");
        return skip(&d);
    }
    if has_ipv6_loopback() {
        assert_eq!(p.kind_v6(), &SocketKind::Datagram, "{}", p.describe());
    }
    // The kernel-chosen identifier must be known so replies can be checked.
    for f in [&p.v4, &p.v6] {
        if let Some(e) = &f.engine {
            assert!(e.shared.expect_ident.is_some());
            assert_eq!(e.shared.expect_ident, Some(e.shared.send_ident));
        }
    }
    ping_both(&p, "datagram").await;
    concurrent(Arc::new(p), 100).await;
}

#[tokio::test]
async fn unavailable_family_errors() {
    let p = Pinger {
        v4: Family {
            kind: SocketKind::Unavailable("test".into()),
            engine: None,
        },
        v6: Family {
            kind: SocketKind::Unavailable("test".into()),
            engine: None,
        },
    };
    assert_eq!(
        p.ping(LO4, T).await,
        Err(PingError::Unavailable {
            family: "IPv4",
            reason: "test".into()
        })
    );
    assert!(p.describe().contains("IPv6 unavailable (test)"));
}

#[test]
fn sequence_skips_in_flight() {
    let mut inflight = Inflight {
        next_seq: u16::MAX,
        ..Inflight::default()
    };
    let (tx, _rx) = oneshot::channel();
    inflight.waiters.insert(
        0,
        Waiter {
            addr: LO4,
            nonce: 0,
            tx,
        },
    );
    assert_eq!(inflight.alloc_seq(), Some(u16::MAX));
    assert_eq!(inflight.alloc_seq(), Some(1), "0 is in flight, must be skipped");
    for seq in 0..=u16::MAX {
        let (tx, _rx) = oneshot::channel();
        inflight.waiters.insert(
            seq,
            Waiter {
                addr: LO4,
                nonce: 0,
                tx,
            },
        );
    }
    assert_eq!(inflight.alloc_seq(), None);
}

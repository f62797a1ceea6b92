//! Probing from every vantage point: real agents probe real local servers;
//! each transition must appear exactly once per agent in the replicated state
//! of every node.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pool, wait_for, Cluster, Port};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

const FAST_PROBES: &str =
    "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n";

/// How a test server answers.
const HEALTHY: u8 = 0;
const STATUS_503: u8 = 1;
const WRONG_BODY: u8 = 2;
const HANG: u8 = 3;

/// A TCP/HTTP server on `addr` whose behaviour the test switches.
struct Server {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    accepts: Arc<Mutex<Vec<Instant>>>,
}

impl Server {
    fn start(bind: &str) -> Server {
        let listener = TcpListener::bind(bind).expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(HEALTHY));
        let accepts = Arc::new(Mutex::new(Vec::new()));
        let (m, a) = (mode.clone(), accepts.clone());
        std::thread::spawn(move || serve(listener, m, a));
        Server { addr, mode, accepts }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

fn serve(listener: TcpListener, mode: Arc<AtomicU8>, accepts: Arc<Mutex<Vec<Instant>>>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        accepts.lock().unwrap().push(Instant::now());
        let m = mode.load(Ordering::SeqCst);
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            if seen.is_empty() {
                return; // a plain TCP probe: connect and close
            }
            let (status, body) = match m {
                STATUS_503 => ("503 Service Unavailable", "maintenance"),
                WRONG_BODY => ("200 OK", "something else entirely"),
                HANG => {
                    std::thread::sleep(Duration::from_secs(5));
                    return;
                }
                _ => ("200 OK", "status: healthy"),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// The replicated observation of `agent` on endpoint `id`, as node `node` reports it.
fn observation(c: &Cluster, node: u64, id: &str, agent: u64) -> Option<Value> {
    let e = c.endpoints(node)?;
    let ep = e["endpoints"].as_array()?.iter().find(|x| x["id"] == id)?.clone();
    ep["observations"]
        .as_array()?
        .iter()
        .find(|o| o["agent"] == agent)
        .cloned()
}

/// Waits until every node shows every agent's observation of `id` as
/// `status` with exactly `downs` and `ups` reported transitions.
fn wait_observed(c: &Cluster, nodes: &[u64], id: &str, status: &str, downs: u64, ups: u64) {
    let ok = wait_for(
        &format!("{id} {status} (downs {downs}, ups {ups}) on every node"),
        LONG,
        || {
            for node in nodes {
                for agent in nodes {
                    let o = observation(c, *node, id, *agent)?;
                    if o["status"] != status || o["downs"].as_u64()? != downs || o["ups"].as_u64()? != ups {
                        return None;
                    }
                }
            }
            Some(())
        },
    );
    if ok.is_none() {
        panic!(
            "{id} never reached {status} with downs {downs}, ups {ups}; node 1 says {:#}\n{}",
            c.endpoints(1).unwrap_or_default(),
            c.logs()
        );
    }
}

#[test]
fn each_transition_is_one_observation_per_agent_on_every_node() {
    let status = Server::start("127.0.41.200:0");
    let body = Server::start("127.0.41.200:0");
    let hang = Server::start("127.0.41.200:0");
    let tcp_addr: SocketAddr = {
        let probe = TcpListener::bind("127.0.41.201:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut tcp = Port::open(tcp_addr);
    let pools = format!(
        "{FAST_PROBES}\n{}{}{}{}",
        pool(
            "status",
            "127.0.41.200",
            &format!(
                "{{ kind = \"http\", port = {}, path = \"/health\" }}",
                status.addr.port()
            )
        ),
        pool(
            "body",
            "127.0.41.200",
            &format!(
                "{{ kind = \"http\", port = {}, body_contains = \"healthy\" }}",
                body.addr.port()
            )
        ),
        pool(
            "hang",
            "127.0.41.200",
            &format!("{{ kind = \"http\", port = {} }}", hang.addr.port())
        ),
        pool(
            "tcp",
            "127.0.41.201",
            &format!("{{ kind = \"tcp\", port = {} }}", tcp_addr.port())
        ),
    );
    let mut c = Cluster::with_extra(41, 3, "", move |_| pools.clone());
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let ids = [
        "status/127.0.41.200",
        "body/127.0.41.200",
        "hang/127.0.41.200",
        "tcp/127.0.41.201",
    ];
    for id in ids {
        wait_observed(&c, &[1, 2, 3], id, "up", 0, 1);
    }

    status.set(STATUS_503);
    body.set(WRONG_BODY);
    hang.set(HANG);
    tcp.close();
    for id in ids {
        wait_observed(&c, &[1, 2, 3], id, "down", 1, 1);
    }
    let reasons = [
        ("status/127.0.41.200", "HTTP status 503"),
        ("body/127.0.41.200", "does not contain \"healthy\""),
        ("hang/127.0.41.200", "timed out after 150ms"),
        ("tcp/127.0.41.201", "tcp connect"),
    ];
    for (id, why) in reasons {
        let o = observation(&c, 2, id, 3).unwrap();
        assert!(o["last_error"].as_str().unwrap().contains(why), "{id}: {o}");
    }

    status.set(HEALTHY);
    body.set(HEALTHY);
    hang.set(HEALTHY);
    let _tcp = Port::open(tcp_addr);
    for id in ids {
        wait_observed(&c, &[1, 2, 3], id, "up", 1, 2);
    }
    // Three more heartbeats: they confirm views but never add transitions.
    let before = c.endpoints(1).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("3 s of log time", LONG, || {
        (c.endpoints(1)?["log_time_ms"].as_u64()? >= before + 3000).then_some(())
    })
    .expect("log time advances with heartbeats");
    for id in ids {
        for node in 1..=3 {
            for agent in 1..=3 {
                let o = observation(&c, node, id, agent).unwrap();
                assert_eq!(
                    (o["downs"].as_u64(), o["ups"].as_u64()),
                    (Some(1), Some(2)),
                    "{id} on node {node}: {o}"
                );
                assert!(
                    o["age_ms"].as_u64().unwrap() < 3000,
                    "heartbeats keep observations fresh: {o}"
                );
            }
        }
    }
}

/// A network namespace joined to this host by a veth pair: a second "host"
/// whose addresses answer pings until the test takes them away.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn create(name: &str, v4: (&str, &str), v6: (&str, &str)) -> Netns {
        let host_if = format!("{name}h");
        let ns_if = format!("{name}n");
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let ok = Command::new("ip").args(["netns", "add", name]).status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "this test needs root and iproute2 (`ip netns add {name}` failed: {ok:?})"
        );
        let ns = Netns {
            name: name.to_string(),
            host_if: host_if.clone(),
        };
        run_ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        run_ip(&["link", "set", &ns_if, "netns", name]);
        run_ip(&["addr", "add", v4.0, "dev", &host_if]);
        run_ip(&["-6", "addr", "add", v6.0, "dev", &host_if, "nodad"]);
        run_ip(&["link", "set", &host_if, "up"]);
        run_ip(&["netns", "exec", name, "ip", "addr", "add", v4.1, "dev", &ns_if]);
        run_ip(&[
            "netns", "exec", name, "ip", "-6", "addr", "add", v6.1, "dev", &ns_if, "nodad",
        ]);
        run_ip(&["netns", "exec", name, "ip", "link", "set", &ns_if, "up"]);
        run_ip(&["netns", "exec", name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Removes an address from inside the namespace: pings to it go unanswered.
    fn take_away(&self, addr: &str) {
        let family = if addr.contains(':') { "-6" } else { "-4" };
        let dev = format!("{}n", self.name);
        run_ip(&[
            "netns", "exec", &self.name, "ip", family, "addr", "del", addr, "dev", &dev,
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn icmp_sees_loopback_and_an_address_that_is_taken_away() {
    let ns = Netns::create(
        "vt42",
        ("10.242.0.1/24", "10.242.0.2/24"),
        ("fd00:242::1/64", "fd00:242::2/64"),
    );
    let pools = format!(
        "{FAST_PROBES}\ntimeout = \"190ms\"\n{}{}{}{}",
        pool("lo4", "127.0.0.1", "{ kind = \"icmp\" }"),
        pool("lo6", "::1", "{ kind = \"icmp\" }"),
        pool("v4", "10.242.0.2", "{ kind = \"icmp\" }"),
        pool("v6", "fd00:242::2", "{ kind = \"icmp\" }"),
    )
    .replace("timeout = \"150ms\"\n", "");
    let mut c = Cluster::with_extra(42, 1, "", move |_| pools.clone());
    c.start(1);
    c.bootstrap();
    c.wait_leader(&[1], LONG);
    for id in ["lo4/127.0.0.1", "lo6/::1", "v4/10.242.0.2", "v6/fd00:242::2"] {
        wait_observed(&c, &[1], id, "up", 0, 1);
    }
    let e = c.endpoints(1).unwrap();
    assert!(e["icmp"].as_str().unwrap().contains("datagram"), "{}", e["icmp"]);

    ns.take_away("10.242.0.2/24");
    ns.take_away("fd00:242::2/64");
    wait_observed(&c, &[1], "v4/10.242.0.2", "down", 1, 1);
    wait_observed(&c, &[1], "v6/fd00:242::2", "down", 1, 1);
    for id in ["lo4/127.0.0.1", "lo6/::1"] {
        let o = observation(&c, 1, id, 1).unwrap();
        assert_eq!(
            (o["status"].as_str(), o["downs"].as_u64()),
            (Some("up"), Some(0)),
            "{id}: {o}"
        );
    }
}

#[test]
fn agent_that_cannot_reach_its_control_targets_abstains_instead_of_reporting_down() {
    // Every agent has two control targets of its own; the endpoint is shared.
    let endpoint: SocketAddr = "127.0.43.200:7300".parse().unwrap();
    let mut ep = Port::open(endpoint);
    let mut controls: Vec<Port> = Vec::new();
    for agent in 1..=3u8 {
        for k in 1..=2u8 {
            controls.push(Port::open(
                format!("127.0.43.{}:73{agent}{k}", 100 + agent).parse().unwrap(),
            ));
        }
    }
    let pools = pool("web", "127.0.43.200", "{ kind = \"tcp\", port = 7300 }");
    let mut c = Cluster::with_extra(43, 3, "", move |id| {
        let mut t = format!("{FAST_PROBES}\n{pools}");
        for k in 1..=2 {
            t += &format!(
                "[[control]]\naddress = \"127.0.43.{}\"\ncheck = {{ kind = \"tcp\", port = 73{id}{k} }}\n\n",
                100 + id
            );
        }
        t
    });
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    wait_observed(&c, &[1, 2, 3], "web/127.0.43.200", "up", 0, 1);

    // Agent 3 loses its control targets and the endpoint goes away at the same moment.
    controls[4].close();
    controls[5].close();
    ep.close();
    let ok = wait_for("agents 1 and 2 report down, agent 3 abstains", LONG, || {
        let e = c.endpoints(1)?;
        let agents = e["agents"].as_array()?;
        let a3 = agents.iter().find(|a| a["agent"] == 3)?;
        let down = |agent: u64| observation(&c, 1, "web/127.0.43.200", agent).map(|o| o["status"] == "down");
        (a3["abstaining"] == true && down(1)? && down(2)?).then_some(())
    });
    assert!(ok.is_some(), "{:#}\n{}", c.endpoints(1).unwrap_or_default(), c.logs());
    let status3 = c.endpoints(3).unwrap();
    assert_eq!(status3["abstaining"], true);

    // Over further heartbeats agent 3 never reports the endpoint down.
    let before = c.endpoints(1).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("2 s of log time", LONG, || {
        (c.endpoints(1)?["log_time_ms"].as_u64()? >= before + 2000).then_some(())
    })
    .expect("log time advances");
    for node in 1..=3 {
        let o = observation(&c, node, "web/127.0.43.200", 3).unwrap();
        assert_eq!(o["downs"].as_u64(), Some(0), "agent 3 reported down: {o}");
        assert_eq!(o["abstaining"], true, "{o}");
    }
}

#[test]
fn thousand_endpoints_spread_across_the_interval_and_only_heartbeats_reach_the_log() {
    let server = Server::start("0.0.0.0:0");
    let port = server.addr.port();
    let mut pools = String::from(
        "[probe]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n\n\
         [[pools]]\nname = \"many\"\n",
    );
    pools += &format!("check = {{ kind = \"tcp\", port = {port} }}\n");
    for i in 0..1000u32 {
        pools += &format!(
            "[[pools.endpoints]]\naddress = \"127.44.{}.{}\"\n",
            i / 250,
            i % 250 + 1
        );
    }
    let mut c = Cluster::with_extra(44, 1, "", move |_| pools.clone());
    c.start(1);
    c.bootstrap();
    c.wait_leader(&[1], LONG);
    wait_for("all 1000 endpoints up in the log", LONG, || {
        let e = c.endpoints(1)?;
        let up = e["endpoints"]
            .as_array()?
            .iter()
            .filter(|x| x["observations"][0]["status"] == "up")
            .count();
        (up == 1000).then_some(())
    })
    .expect("all up");

    // Spread: accepts per 100 ms slot over 3 s of steady probing.
    server.accepts.lock().unwrap().clear();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let accepts = server.accepts.lock().unwrap().clone();
    let mut slots = [0usize; 10];
    for t in &accepts {
        let ms = t.duration_since(t0).as_millis() % 1000;
        slots[(ms / 100) as usize] += 1;
    }
    println!(
        "probes in 3 s: {}; per 100 ms slot of the interval: {slots:?}",
        accepts.len()
    );
    assert!(
        accepts.len() >= 2700,
        "every endpoint probed about once a second: {}",
        accepts.len()
    );

    // Nothing changes: over the next 5 s of log time only heartbeats are committed.
    let status = |c: &Cluster| -> (u64, u64) {
        let s = c.status(1);
        let e = c.endpoints(1).unwrap();
        (
            s["last_log_index"].as_u64().unwrap(),
            e["agents"][0]["seq_n"].as_u64().unwrap(),
        )
    };
    let (idx0, seq0) = status(&c);
    let lt0 = c.endpoints(1).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("5 s of log time", LONG, || {
        (c.endpoints(1)?["log_time_ms"].as_u64()? >= lt0 + 5000).then_some(())
    })
    .expect("heartbeats advance log time");
    let (idx1, seq1) = status(&c);
    println!("entries while idle: {} over 5 s of log time", idx1 - idx0);
    assert_eq!(idx1 - idx0, seq1 - seq0, "every entry is one of the agent's reports");
    assert!(
        idx1 - idx0 <= 7,
        "only about one heartbeat a second: {} entries",
        idx1 - idx0
    );
    let e = c.endpoints(1).unwrap();
    let downs: u64 = e["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["observations"][0]["downs"].as_u64().unwrap())
        .sum();
    assert_eq!(downs, 0);
}

/// Serves HTTPS with a fresh self-signed certificate for `vantage.test`.
fn start_tls_server(dir: &std::path::Path) -> SocketAddr {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=vantage.test",
            "-addext",
            "subjectAltName=DNS:vantage.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("this test needs the openssl command (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.45.200:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate aborts the handshake: fine.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 2048];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    addr
}

#[test]
fn https_verifies_certificates_unless_told_not_to() {
    let certs = tempfile::tempdir().unwrap();
    let addr = start_tls_server(certs.path());
    let port = addr.port();
    let pools = format!(
        "{FAST_PROBES}\n{}{}{}",
        pool(
            "strict",
            "127.0.45.200",
            &format!("{{ kind = \"https\", port = {port} }}")
        ),
        pool(
            "insecure",
            "127.0.45.200",
            &format!("{{ kind = \"https\", port = {port}, tls_verify = false }}")
        ),
        pool(
            "named",
            "127.0.45.200",
            &format!("{{ kind = \"https\", port = {port}, host = \"vantage.test\", tls_verify = false }}")
        ),
    );
    let mut c = Cluster::with_extra(45, 1, "", move |_| pools.clone());
    c.start(1);
    c.bootstrap();
    c.wait_leader(&[1], LONG);
    wait_observed(&c, &[1], "insecure/127.0.45.200", "up", 0, 1);
    wait_observed(&c, &[1], "named/127.0.45.200", "up", 0, 1);
    wait_observed(&c, &[1], "strict/127.0.45.200", "down", 1, 0);
    let o = observation(&c, 1, "strict/127.0.45.200", 1).unwrap();
    assert!(
        o["last_error"].as_str().unwrap().to_lowercase().contains("certificate"),
        "{o}"
    );
}

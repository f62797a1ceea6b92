//! Seeing and hearing the cluster: `/metrics` parsed by the Prometheus
//! project's own parser, `/readyz` before bootstrap and on a node cut off by
//! iptables, the status page rendered by headless Chromium, JSON log lines,
//! and notifications to a webhook, a Slack-shaped and a PagerDuty-shaped
//! receiver (the test's own HTTP server) across a leader kill and a receiver
//! that answers 500 for a minute.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(40);

/// The pool both tests watch: one endpoint that dies, one that stays.
fn web_pool(dead: &str, alive: &str) -> String {
    format!(
        "[[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\"]\ncheck = {{ kind = \"tcp\", port = 7600 }}\n\
         [[pools.endpoints]]\naddress = \"{dead}\"\n[[pools.endpoints]]\naddress = \"{alive}\"\n\n"
    )
}

fn http_addr(net: u8, id: u64) -> String {
    format!("127.0.{net}.{id}:9464")
}

/// `curl` of `path` on node `id`'s HTTP listener, as `holder` (a client
/// certificate of the cluster) or as nobody. (status, body); status 0 when
/// the connection or handshake failed.
fn curl(c: &Cluster, id: u64, path: &str, holder: Option<&str>) -> (u16, String) {
    let (ca, _, _) = c.cert_files("operator").expect("the harness uses TLS");
    let url = format!("https://{}{path}", http_addr(c.net, id));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca);
    if let Some(h) = holder {
        let (_, cert, key) = c.cert_files(h).unwrap();
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(&url).output().expect("curl runs (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Every sample of an OpenMetrics text, parsed by `prometheus_client`'s
/// OpenMetrics parser (it raises on anything malformed): name → [(labels, value)].
fn parse_metrics(text: &str) -> Samples {
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for fam in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in fam.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_name = Samples::new();
    for (name, labels, value) in samples {
        by_name.entry(name).or_default().push((labels, value));
    }
    by_name
}

type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// The value of `name` whose labels include every pair of `want`.
fn sample(m: &Samples, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    m.get(name)?
        .iter()
        .find(|(labels, _)| want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| *v)
}

fn scrape(c: &Cluster, id: u64) -> Option<Samples> {
    let (code, body) = curl(c, id, "/metrics", Some("reader"));
    (code == 200).then(|| parse_metrics(&body))
}

/// Drops every packet between node `id` and the other nodes; undone on drop.
struct CutOff {
    rules: Vec<Vec<String>>,
}

impl CutOff {
    fn new(net: u8, id: u64, others: &[u64]) -> CutOff {
        let mut rules = Vec::new();
        for o in others {
            for (s, d) in [(id, *o), (*o, id)] {
                rules.push(vec![
                    "INPUT".to_string(),
                    "-s".into(),
                    format!("127.0.{net}.{s}"),
                    "-d".into(),
                    format!("127.0.{net}.{d}"),
                    "-j".into(),
                    "DROP".into(),
                ]);
            }
        }
        for r in &rules {
            let ok = Command::new("iptables")
                .arg("-I")
                .args(r)
                .status()
                .expect("iptables runs");
            assert!(ok.success(), "iptables -I {r:?} (the test needs root)");
        }
        CutOff { rules }
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(r).status();
        }
    }
}

#[test]
fn metrics_readiness_and_the_status_page_follow_a_failover() {
    const NET: u8 = 81;
    let dead = format!("127.0.{NET}.200");
    let alive = format!("127.0.{NET}.201");
    let (dead_c, alive_c) = (dead.clone(), alive.clone());
    let mut c = Cluster::with_extra(NET, 3, "", move |id| {
        let mut t = format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [dns]\nprovider = \"memory\"\nreconcile_interval = \"2s\"\n\n\
             [http]\nlisten = \"{}\"\n",
            http_addr(NET, id)
        );
        // Node 3 serves a browser that has no client certificate.
        if id == 3 {
            t += "client_cert = false\n";
        }
        t += "\n";
        t + &web_pool(&dead_c, &alive_c)
    });
    // Node 2 writes JSON log lines; the key belongs at the top of the file.
    for id in 1..=3 {
        let path = c.nodes[&id].config.clone();
        let text = std::fs::read_to_string(&path).unwrap();
        let format = if id == 2 { "log_format = \"json\"\n" } else { "" };
        let text = format!("{format}{text}");
        std::fs::write(&path, text).unwrap();
    }
    let mut up = Port::open(format!("{dead}:7600").parse().unwrap());
    let _other = Port::open(format!("{alive}:7600").parse().unwrap());
    c.start_all();

    // Before bootstrap: alive, not ready, and the reason says why.
    let (code, body) = wait_for("the HTTP listener", LONG, || {
        let r = curl(&c, 1, "/readyz", Some("reader"));
        (r.0 != 0).then_some(r)
    })
    .unwrap_or_else(|| panic!("no HTTP listener\n{}", c.logs()));
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not a member of a cluster"), "{body}");
    assert_eq!(curl(&c, 1, "/healthz", Some("reader")), (200, "ok\n".to_string()));
    // Without a client certificate the mutual-TLS listener refuses the handshake.
    assert_eq!(curl(&c, 1, "/healthz", None).0, 0, "no certificate, no answer");

    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    for id in 1..=3 {
        wait_for("ready", LONG, || {
            let who = if id == 3 { None } else { Some("reader") };
            (curl(&c, id, "/readyz", who).0 == 200).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "node {id} never ready: {:?}\n{}",
                curl(&c, id, "/readyz", Some("reader")),
                c.logs()
            )
        });
    }
    let ep = format!("web/{dead}");
    let before = wait_for("the endpoint decided up in /metrics", LONG, || {
        let m = scrape(&c, leader)?;
        (sample(&m, "vantage_endpoint_decision", &[("endpoint", &ep), ("status", "up")]) == Some(1.0)
            && sample(&m, "vantage_dns_last_reconcile_success_timestamp_seconds", &[]).unwrap_or(0.0) > 0.0)
            .then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "never up in /metrics\n{}",
            curl(&c, leader, "/metrics", Some("reader")).1
        )
    });
    let applies = |m: &Samples| {
        sample(
            m,
            "vantage_dns_requests_total",
            &[("operation", "apply"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };
    let reconciled = |m: &Samples| sample(m, "vantage_dns_last_reconcile_success_timestamp_seconds", &[]).unwrap();
    for name in [
        "vantage_probes_total",
        "vantage_probe_duration_seconds_bucket",
        "vantage_agent_report_age_seconds",
        "vantage_raft_term",
        "vantage_raft_commit_index",
        "vantage_raft_applied_index",
        "vantage_alarm",
        "vantage_endpoint_local_status",
        "vantage_dns_request_duration_seconds_count",
    ] {
        assert!(before.contains_key(name), "{name} is exported");
    }
    assert_eq!(sample(&before, "vantage_raft_role", &[("role", "Leader")]), Some(1.0));
    for id in (1..=3).filter(|i| *i != leader) {
        let m = scrape(&c, id).unwrap();
        assert_eq!(
            sample(&m, "vantage_raft_role", &[("role", "Follower")]),
            Some(1.0),
            "node {id}"
        );
        assert_eq!(sample(&m, "vantage_raft_leader", &[]), Some(leader as f64), "node {id}");
    }

    // The endpoint dies: every node's metrics show the decision and the
    // placement, and the leader's the write it made.
    up.close();
    for id in 1..=3 {
        wait_for("down and out of DNS in /metrics", LONG, || {
            let m = scrape(&c, id)?;
            (sample(
                &m,
                "vantage_endpoint_decision",
                &[("endpoint", &ep), ("status", "down")],
            ) == Some(1.0)
                && sample(&m, "vantage_endpoint_in_dns", &[("endpoint", &ep)]) == Some(0.0)
                && sample(
                    &m,
                    "vantage_endpoint_local_status",
                    &[("endpoint", &ep), ("status", "down")],
                ) == Some(1.0))
            .then_some(())
        })
        .unwrap_or_else(|| panic!("node {id}: {}", curl(&c, id, "/metrics", Some("reader")).1));
    }
    let after = wait_for("the leader's DNS write in /metrics", LONG, || {
        let m = scrape(&c, leader)?;
        (applies(&m) > applies(&before) && reconciled(&m) > reconciled(&before)).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "no DNS write counted\n{}",
            curl(&c, leader, "/metrics", Some("reader")).1
        )
    });
    println!(
        "leader {leader}: apply ok {} -> {}, last reconcile {} -> {}",
        applies(&before),
        applies(&after),
        reconciled(&before),
        reconciled(&after)
    );
    assert!(
        sample(
            &after,
            "vantage_probes_total",
            &[("endpoint", &ep), ("outcome", "failure")]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "the failed probes are counted"
    );

    // The status page in a real browser, from node 3 (no client certificate asked).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let profile = c.dir.path().join("chromium");
    let url = format!("https://{}/", http_addr(NET, 3));
    let chromium = |extra: &str| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--ignore-certificate-errors",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(extra)
            .arg(&url)
            .output()
            .expect("chromium runs (scripts/test installs it)");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dom = wait_for("the page to show it down", LONG, || {
        let dom = chromium("--dump-dom");
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&format!("data-endpoint=\"{ep}\"")))?
            .to_string();
        (row.contains("class=\"down decision\"") && row.contains("out of DNS")).then_some(dom)
    })
    .unwrap_or_else(|| panic!("the page never showed {ep} down:\n{}", chromium("--dump-dom")));
    assert!(dom.contains(&format!("node {leader}")), "the leader is named");
    let alive_row = dom
        .split("<tr")
        .find(|r| r.contains(&format!("data-endpoint=\"web/{alive}\"")))
        .unwrap();
    assert!(
        alive_row.contains("class=\"up decision\"") && alive_row.contains("in DNS"),
        "{alive_row}"
    );
    chromium(&format!("--screenshot={}", shot.display()));
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false),
        "screenshot written"
    );
    println!("status page screenshot: {}", shot.display());

    // Node 2's log lines are JSON objects.
    let log = c.log_text(2);
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() > 3, "JSON lines in node 2's log:\n{log}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }

    // A follower cut off from both peers stops being ready, and says why.
    let cut = (1..=3).find(|i| *i != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|i| *i != cut).collect();
    let who = if cut == 3 { None } else { Some("reader") };
    {
        let _cut = CutOff::new(NET, cut, &others);
        let (code, body) = wait_for("the cut-off node not ready", LONG, || {
            let r = curl(&c, cut, "/readyz", who);
            (r.0 == 503).then_some(r)
        })
        .unwrap_or_else(|| panic!("node {cut} stayed ready: {:?}", curl(&c, cut, "/readyz", who)));
        println!("node {cut} cut off: {code} {}", body.trim());
        assert!(body.contains("no leader") || body.contains("heartbeat"), "{body}");
        // The other two still lead and stay ready.
        for id in &others {
            let w = if *id == 3 { None } else { Some("reader") };
            assert_eq!(curl(&c, *id, "/readyz", w).0, 200, "node {id}");
        }
    }
    wait_for("ready again once the cut heals", LONG, || {
        (curl(&c, cut, "/readyz", who).0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("node {cut} never ready again\n{}", c.log_text(cut)));
}

/// What a receiver got and acknowledged, per path.
#[derive(Default)]
struct Inbox {
    /// Bodies answered with a 2xx, by path.
    accepted: BTreeMap<String, Vec<Value>>,
    /// Requests answered 500 while failing.
    refused: usize,
}

/// The test's own HTTP receiver: answers 2xx (202 on /pd, like PagerDuty),
/// or 500 while `failing` is set.
struct Receiver {
    addr: String,
    inbox: Arc<Mutex<Inbox>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    fn start(addr: &str) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind the receiver");
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let failing = Arc::new(AtomicBool::new(false));
        let (i, f) = (inbox.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (i, f) = (i.clone(), f.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let status = if f.load(Ordering::SeqCst) {
                        i.lock().unwrap().refused += 1;
                        "500 Internal Server Error"
                    } else {
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        i.lock().unwrap().accepted.entry(path.clone()).or_default().push(v);
                        if path == "/pd" {
                            "202 Accepted"
                        } else {
                            "200 OK"
                        }
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                });
            }
        });
        Receiver {
            addr: addr.to_string(),
            inbox,
            failing,
        }
    }

    fn accepted(&self, path: &str) -> Vec<Value> {
        self.inbox
            .lock()
            .unwrap()
            .accepted
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

/// How many of `msgs` report `action` for `endpoint`, in each receiver's own shape.
fn count(msgs: &[Value], path: &str, endpoint: &str, down: bool) -> usize {
    msgs.iter()
        .filter(|m| match path {
            "/hook" => m["endpoint"] == endpoint && m["action"] == if down { "trigger" } else { "resolve" },
            "/slack" => {
                let t = m["text"].as_str().unwrap_or("");
                t.contains(endpoint) && t.contains(if down { "is down" } else { "is up again" })
            }
            _ => {
                m["dedup_key"] == format!("vantage/endpoint/{endpoint}")
                    && m["event_action"] == if down { "trigger" } else { "resolve" }
            }
        })
        .count()
}

/// The last few messages, for a failure message.
fn tail(msgs: &[Value]) -> String {
    let skip = msgs.len().saturating_sub(4);
    format!("{} messages, the last: {:?}", msgs.len(), &msgs[skip..])
}

const PATHS: [&str; 3] = ["/hook", "/slack", "/pd"];

#[test]
fn notifications_are_sent_once_across_a_leader_kill_and_wait_out_a_receiver_that_fails_for_a_minute() {
    const NET: u8 = 82;
    let rx = Receiver::start(&format!("127.0.{NET}.100:8080"));
    let dead = format!("127.0.{NET}.200");
    let alive = format!("127.0.{NET}.201");
    let base = format!("http://{}", rx.addr);
    let (dead_c, alive_c) = (dead.clone(), alive.clone());
    let mut c = Cluster::with_extra(NET, 3, "", move |id| {
        let key = format!("pd{id}.key");
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nhold_down = \"0s\"\n\n\
             [dns]\nprovider = \"memory\"\nreconcile_interval = \"2s\"\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{base}/hook\"\non = [\"decision\"]\n\n\
             [[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{base}/slack\"\npools = [\"web\"]\non = [\"decision\"]\n\n\
             [[notify]]\nname = \"pager\"\nkind = \"pagerduty\"\nurl = \"{base}/pd\"\nrouting_key_file = \"{key}\"\non = [\"decision\"]\n\n{}",
            web_pool(&dead_c, &alive_c)
        )
    });
    for id in 1..=3 {
        let p = write(
            c.dir.path(),
            &format!("pd{id}.key"),
            "R0UTINGKEY0000000000000000000000\n",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut up = Port::open(format!("{dead}:7600").parse().unwrap());
    let _other = Port::open(format!("{alive}:7600").parse().unwrap());
    c.start_all();
    c.bootstrap();
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let ep = format!("web/{dead}");
    let decided = |c: &Cluster, id: u64, want: &str| c.endpoint(id, &ep).is_some_and(|e| e["decision"] == want);
    wait_for("decided up", LONG, || decided(&c, leader, "up").then_some(())).unwrap();

    // One failover and recovery: one down and one up on each receiver.
    up.close();
    for p in PATHS {
        wait_for("the down notification", LONG, || {
            (count(&rx.accepted(p), p, &ep, true) == 1).then_some(())
        })
        .unwrap_or_else(|| panic!("{p}: {}\n{}", tail(&rx.accepted(p)), c.logs()));
    }
    up = Port::open(format!("{dead}:7600").parse().unwrap());
    for p in PATHS {
        // In order per receiver: a repeated down would have come before the up.
        wait_for("the up notification", LONG, || {
            (count(&rx.accepted(p), p, &ep, false) == 1).then_some(())
        })
        .unwrap_or_else(|| panic!("{p}: {}\n{}", tail(&rx.accepted(p)), c.logs()));
        assert_eq!(count(&rx.accepted(p), p, &ep, true), 1, "{p}: exactly one down");
    }
    let first = rx.accepted("/pd");
    assert_eq!(first[0]["routing_key"], "R0UTINGKEY0000000000000000000000");
    assert_eq!(first[0]["payload"]["severity"], "critical");
    let hook = rx.accepted("/hook");
    let ids: Vec<&str> = hook.iter().map(|m| m["id"].as_str().unwrap()).collect();
    println!("webhook ids: {ids:?}");

    wait_for("back in DNS", LONG, || {
        c.endpoint(leader, &ep).filter(|e| e["in_dns"] == true).map(|_| ())
    })
    .unwrap();

    // The receiver fails for a minute. The endpoint dies; DNS follows at
    // once; the leader is killed between the decision and the delivery.
    rx.failing.store(true, Ordering::SeqCst);
    let failing_since = Instant::now();
    up.close();
    wait_for("decided down again", LONG, || decided(&c, leader, "down").then_some(())).unwrap();
    let removed = wait_for("the DNS write removing it", LONG, || {
        let h = c.cli_json(&["history", "--addr", c.addr(leader), "--limit", "1000"]);
        let events = h["events"].as_array()?.clone();
        let down_at = events
            .iter()
            .rev()
            .find(|e| e["kind"] == "decision" && e["endpoint"] == ep.as_str() && e["to"] == "down")?["id"]
            .as_u64()?;
        events
            .iter()
            .find(|e| {
                e["kind"] == "dns-write"
                    && e["to"] == "applied"
                    && e["id"].as_u64() > Some(down_at)
                    && e["rule"]
                        .as_str()
                        .is_some_and(|r| r.contains(&dead) && r.contains("delete"))
            })
            .cloned()
    })
    .unwrap_or_else(|| {
        let h = c.cli_json(&["history", "--addr", c.addr(leader), "--limit", "1000"]);
        panic!("no DNS removal while the receiver fails: {h:#}\n{}", c.logs())
    });
    assert!(
        rx.failing.load(Ordering::SeqCst) && rx.inbox.lock().unwrap().refused > 0,
        "the write happened while the receiver was refusing: {removed}"
    );
    for p in PATHS {
        assert_eq!(
            count(&rx.accepted(p), p, &ep, true),
            1,
            "{p}: nothing new accepted while failing"
        );
    }
    c.kill(leader);
    let rest: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let next = c.wait_leader(&rest, LONG);
    println!("leader {leader} killed with the notification undelivered; node {next} leads");
    let wait = Duration::from_secs(60).saturating_sub(failing_since.elapsed());
    std::thread::sleep(wait);
    let refused = rx.inbox.lock().unwrap().refused;
    rx.failing.store(false, Ordering::SeqCst);
    println!("the receiver answered 500 {refused} times over a minute");
    for p in PATHS {
        wait_for("the down, delivered by the new leader", LONG, || {
            (count(&rx.accepted(p), p, &ep, true) == 2).then_some(())
        })
        .unwrap_or_else(|| panic!("{p}: {}\n{}", tail(&rx.accepted(p)), c.logs()));
    }
    let _up = Port::open(format!("{dead}:7600").parse().unwrap());
    for p in PATHS {
        wait_for("the second up", LONG, || {
            (count(&rx.accepted(p), p, &ep, false) == 2).then_some(())
        })
        .unwrap_or_else(|| panic!("{p}: {}\n{}", tail(&rx.accepted(p)), c.logs()));
        assert_eq!(
            count(&rx.accepted(p), p, &ep, true),
            2,
            "{p}: exactly one down per failover"
        );
    }
    let hook = rx.accepted("/hook");
    let mut ids: Vec<&str> = hook.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no webhook id twice: {hook:?}");
    assert!(
        hook.iter().any(|m| m["sent_by"] == next),
        "the new leader sent: {hook:?}"
    );
}

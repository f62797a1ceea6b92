//! Three hosts: every agent and every endpoint in its own network namespace
//! with its own address on a private bridge, the strict Cloudflare double on
//! the bridge. Each scenario asserts on the double's request log and on the
//! replicated history. Needs root and iproute2 (and python3 for the endpoint
//! HTTP servers); fails loudly without them.

mod cfdouble;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cfdouble::{Double, DoubleConfig};
use common::{wait_for, Cluster};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);
const ZONE: &str = "example.test";
const TOKEN: &str = "lab-token-8d41c0";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed (this suite needs root and iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge 10.N.0.1/24 in the host's namespace and one namespace per host.
struct Lab {
    n: u8,
    hosts: Vec<String>,
    servers: BTreeMap<String, Child>,
}

impl Lab {
    fn new(n: u8) -> Lab {
        let br = format!("vtb{n}");
        let _ = Command::new("ip").args(["link", "del", &br]).output();
        run(&["ip", "link", "add", &br, "type", "bridge"]);
        run(&["ip", "addr", "add", &format!("10.{n}.0.1/24"), "dev", &br]);
        run(&["ip", "link", "set", &br, "up"]);
        // Docker sets FORWARD to DROP, and bridged traffic may pass through it.
        run(&["iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
        Lab {
            n,
            hosts: Vec::new(),
            servers: BTreeMap::new(),
        }
    }

    fn ns(&self, host: &str) -> String {
        format!("vt{}{host}", self.n)
    }

    fn ip(&self, octet: u8) -> String {
        format!("10.{}.0.{octet}", self.n)
    }

    /// Adds host `name` with address 10.N.0.`octet`.
    fn host(&mut self, name: &str, octet: u8) {
        let ns = self.ns(name);
        let (h, p) = (format!("{ns}h"), format!("{ns}p"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &h]).output();
        run(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        run(&["ip", "link", "add", &h, "type", "veth", "peer", "name", &p]);
        run(&["ip", "link", "set", &p, "netns", &ns]);
        run(&["ip", "link", "set", &h, "master", &format!("vtb{}", self.n)]);
        run(&["ip", "link", "set", &h, "up"]);
        let addr = format!("{}/24", self.ip(octet));
        run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &p]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &p, "up"]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    }

    /// Runs iptables inside host `name`'s namespace.
    fn iptables(&self, name: &str, rule: &[&str]) {
        let ns = self.ns(name);
        let mut args = vec!["ip", "netns", "exec", ns.as_str(), "iptables"];
        args.extend_from_slice(rule);
        run(&args);
    }

    /// Starts an HTTP server on host `name` (port 8080) and waits until it answers.
    fn serve(&mut self, name: &str, octet: u8) {
        let ns = self.ns(name);
        let ip = self.ip(octet);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                &ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the endpoint servers");
        self.servers.insert(name.to_string(), child);
        let addr = format!("{ip}:8080").parse().unwrap();
        wait_for("endpoint server", LONG, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .expect("endpoint server answers");
    }

    /// Kills host `name`'s server: the endpoint dies.
    fn kill_server(&mut self, name: &str) {
        if let Some(mut c) = self.servers.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.servers) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["link", "del", &format!("{ns}h")]).output();
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let br = format!("vtb{}", self.n);
        let _ = Command::new("iptables")
            .args(["-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"])
            .output();
        let _ = Command::new("ip").args(["link", "del", &br]).output();
    }
}

/// Agents on 10.N.0.11-13, endpoints e1/e2 on 10.N.0.101-102, the double on 10.N.0.1.
struct World {
    lab: Lab,
    rt: tokio::runtime::Runtime,
    d: Double,
    c: Cluster,
    _dir: tempfile::TempDir,
}

fn agent_addr(net: u8, id: u64) -> String {
    format!("10.{net}.0.{}:7101", 10 + id)
}

fn world(n: u8, probe: &str, decision: &str) -> World {
    let mut lab = Lab::new(n);
    for id in 1..=3u8 {
        lab.host(&format!("a{id}"), 10 + id);
    }
    for e in 1..=2u8 {
        lab.host(&format!("e{e}"), 100 + e);
        lab.serve(&format!("e{e}"), 100 + e);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(cfdouble::start(
        DoubleConfig::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/cloudflare/dns-openapi.json"
        ))
        .token(TOKEN)
        .zone(ZONE, "5c0f2d8e1a4b7c9d3e6f8a0b1c2d3e4f")
        .bind(format!("10.{n}.0.1:0").parse().unwrap()),
    ));
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, TOKEN).unwrap();
    let (base, tf) = (d.base_url(), tf.display().to_string());
    let (probe, decision) = (probe.to_string(), decision.to_string());
    let mut c = Cluster::with_extra(n, 3, "", move |_| {
        format!(
            "{probe}\n{decision}\n[dns]\nprovider = \"cloudflare\"\nreconcile_interval = \"2s\"\n\
             [dns.cloudflare]\napi_base = \"{base}\"\nzone = \"{ZONE}\"\ntoken_file = \"{tf}\"\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\", \"example.test\"]\n\
             check = {{ kind = \"http\", port = 8080, path = \"/\" }}\n\
             [[pools.endpoints]]\naddress = \"10.{n}.0.101\"\n[[pools.endpoints]]\naddress = \"10.{n}.0.102\"\n"
        )
    });
    c.on_hosts(agent_addr, move |id| format!("vt{n}a{id}"));
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let w = World {
        lab,
        rt,
        d,
        c,
        _dir: dir,
    };
    w.wait_records("both endpoints published", &[101, 102]);
    w
}

const FAST: &str = "[probe]\ninterval = \"250ms\"\ntimeout = \"200ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n";
const DECIDE: &str = "[decision]\nobservation_ttl = \"4s\"\nhold_down = \"2s\"\npanic_threshold = 1.0\n";

impl World {
    /// Managed records at the double: (name, address).
    fn records(&self) -> BTreeSet<(String, String)> {
        self.d
            .records(ZONE)
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some("managed by vantage"))
            .map(|r| (r.name, r.content))
            .collect()
    }

    fn wait_records(&self, what: &str, octets: &[u8]) {
        let n = self.lab.n;
        let want: BTreeSet<(String, String)> = ["www.example.test", "example.test"]
            .iter()
            .flat_map(|h| octets.iter().map(move |o| (h.to_string(), format!("10.{n}.0.{o}"))))
            .collect();
        let ok = wait_for(what, LONG, || (self.records() == want).then_some(()));
        assert!(ok.is_some(), "{what}: {:?}\n{}", self.records(), self.c.logs());
    }

    fn writes(&self, since: usize) -> Vec<cfdouble::RequestRecord> {
        self.d.requests()[since..]
            .iter()
            .filter(|r| r.method != "GET")
            .cloned()
            .collect()
    }

    fn history(&self, node: u64) -> Vec<Value> {
        self.c
            .cli_json(&["history", "--addr", self.c.addr(node), "--limit", "1000"])["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn leader(&self) -> u64 {
        self.c.wait_leader(&self.live(), LONG)
    }

    fn live(&self) -> Vec<u64> {
        (1..=3).filter(|id| self.c.try_status(*id).is_some()).collect()
    }

    /// Waits for `secs` of log time (heartbeats advance it).
    fn log_time_passes(&self, node: u64, secs: u64) {
        let t0 = self.c.endpoints(node).unwrap()["log_time_ms"].as_u64().unwrap();
        wait_for("log time", LONG, || {
            (self.c.endpoints(node)?["log_time_ms"].as_u64()? >= t0 + secs * 1000).then_some(())
        })
        .expect("log time advances");
    }

    fn clean(&self) {
        assert!(self.d.violations().is_empty(), "{:#?}", self.d.violations());
    }
}

#[test]
fn endpoint_death_removes_records_once_and_return_re_adds_after_rise_and_hold_down() {
    let mut w = world(61, FAST, DECIDE);
    let leader = w.leader();
    let cut = w.d.requests().len();
    w.lab.kill_server("e1");
    w.wait_records("e1 removed", &[102]);
    let removal = w.writes(cut);
    assert_eq!(removal.len(), 1, "one batch removes both records: {removal:?}");
    assert_eq!(removal[0].vantage_node.as_deref(), Some(leader.to_string().as_str()));
    let cut = w.d.requests().len();
    w.lab.serve("e1", 101);
    w.wait_records("e1 re-added", &[101, 102]);
    let readd = w.writes(cut);
    assert_eq!(readd.len(), 1, "{readd:?}");
    // The history shows the decision up, then the hold-down, then the re-add.
    let n = w.lab.n;
    let ep = format!("web/10.{n}.0.101");
    let events: Vec<Value> = w
        .history(2)
        .into_iter()
        .filter(|e| e["endpoint"] == ep.as_str())
        .collect();
    let up = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "decision" && e["to"] == "up")
        .expect("decided up");
    let back = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "dns" && e["to"] == "in")
        .expect("back in DNS");
    let waited = back["log_time_ms"].as_u64().unwrap() - up["log_time_ms"].as_u64().unwrap();
    assert!(
        waited >= 2000,
        "re-added {waited} ms after the up decision, before hold_down"
    );
    w.clean();
}

#[test]
fn one_agent_losing_its_path_to_an_endpoint_changes_nothing() {
    let w = world(62, FAST, DECIDE);
    let cut = w.d.requests().len();
    let e1 = w.lab.ip(101);
    w.lab.iptables("a3", &["-A", "OUTPUT", "-d", &e1, "-j", "DROP"]);
    let n = w.lab.n;
    let ep = format!("web/10.{n}.0.101");
    let seen = wait_for("agent 3's down view replicated", LONG, || {
        let e = w.c.endpoints(1)?;
        let x = e["endpoints"]
            .as_array()?
            .iter()
            .find(|x| x["id"] == ep.as_str())?
            .clone();
        x["observations"]
            .as_array()?
            .iter()
            .any(|o| o["agent"] == 3 && o["status"] == "down")
            .then_some(())
    });
    assert!(seen.is_some(), "{}", w.c.logs());
    w.log_time_passes(1, 3);
    assert!(w.writes(cut).is_empty(), "a single agent's view caused writes");
    let e = w.c.endpoints(2).unwrap();
    let x = e["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == ep.as_str())
        .unwrap()
        .clone();
    assert_eq!(x["decision"], "up");
    w.wait_records("nothing changed", &[101, 102]);
    w.clean();
}

#[test]
fn partitioned_leader_causes_no_false_failover_and_writes_nothing() {
    let w = world(63, FAST, DECIDE);
    let old = w.leader();
    let cut = w.d.requests().len();
    let host = format!("a{old}");
    for other in (1..=3u64).filter(|o| *o != old) {
        let ip = w.lab.ip(10 + other as u8);
        w.lab.iptables(&host, &["-A", "INPUT", "-s", &ip, "-j", "DROP"]);
        w.lab.iptables(&host, &["-A", "OUTPUT", "-d", &ip, "-j", "DROP"]);
    }
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = wait_for("a new leader among the others", LONG, || {
        let l = w.c.wait_leader(&rest, LONG);
        (l != old).then_some(l)
    })
    .expect("new leader");
    w.log_time_passes(new, 4);
    let writes = w.writes(cut);
    assert!(writes.is_empty(), "a partition caused writes: {writes:?}");
    assert!(w.d.requests()[cut..]
        .iter()
        .all(|r| r.vantage_node.as_deref() != Some(old.to_string().as_str()) || r.method == "GET"));
    let decisions: Vec<Value> = w.history(new).into_iter().filter(|e| e["kind"] == "decision").collect();
    assert!(
        decisions.iter().all(|e| e["to"] != "down"),
        "false failover: {decisions:?}"
    );
    w.wait_records("records intact", &[101, 102]);
    w.clean();
}

#[test]
fn when_every_endpoint_dies_the_last_record_stays_and_status_says_why() {
    let mut w = world(65, FAST, DECIDE);
    w.lab.kill_server("e1");
    w.lab.kill_server("e2");
    let n = w.lab.n;
    let held = wait_for("both decided down", LONG, || {
        let e = w.c.endpoints(1)?;
        let eps = e["endpoints"].as_array()?.clone();
        eps.iter().all(|x| x["decision"] == "down").then_some(eps)
    })
    .unwrap_or_else(|| panic!("{}", w.c.logs()));
    // One of them stays published, and says why.
    let kept: Vec<&Value> = held.iter().filter(|x| x["in_dns"] == true).collect();
    assert!(!kept.is_empty(), "the hostname was emptied: {held:?}");
    assert!(
        kept.iter()
            .any(|x| x["dns_reason"].as_str().unwrap().contains("fail open")),
        "{kept:?}"
    );
    w.log_time_passes(1, 3);
    let records = w.records();
    assert!(!records.is_empty() && records.len() <= 4, "{records:?}");
    assert!(records.iter().all(|(_, a)| a.starts_with(&format!("10.{n}.0."))));
    w.clean();
}

#[test]
fn a_restarted_node_rejoins_from_its_disk_without_a_manual_step() {
    let mut w = world(68, FAST, DECIDE);
    let leader = w.leader();
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    w.c.kill(victim);
    w.lab.kill_server("e2");
    w.wait_records("e2 removed while node is down", &[101]);
    w.c.start(victim);
    let caught_up = wait_for("the restarted node agrees", LONG, || {
        let s = w.c.try_status(victim)?;
        let l = w.c.try_status(leader)?;
        (s["leader_id"] == l["leader_id"] && s["applied_index"].as_u64()? + 5 >= l["applied_index"].as_u64()?)
            .then_some(())
    });
    assert!(caught_up.is_some(), "{}", w.c.logs());
    let e = w.c.endpoints(victim).unwrap();
    let n = w.lab.n;
    let x = e["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == format!("web/10.{n}.0.102").as_str())
        .cloned();
    assert_eq!(
        x.unwrap()["decision"],
        "down",
        "the restarted node holds the decision made while it was away"
    );
    w.clean();
    drop(w.rt);
}

#[test]
fn leader_killed_during_a_failover_is_finished_by_the_new_leader() {
    let mut w = world(64, FAST, DECIDE);
    let old = w.leader();
    let cut = w.d.requests().len();
    // The old leader's write is applied but its answer is lost; it dies at once.
    w.d.inject_when(cfdouble::Fault::AppliedButLost, cfdouble::FaultFilter::writes());
    w.lab.kill_server("e1");
    let sent = wait_for("the old leader's write", LONG, || {
        w.writes(cut)
            .iter()
            .any(|r| r.vantage_node.as_deref() == Some(old.to_string().as_str()))
            .then_some(())
    });
    assert!(sent.is_some(), "{}", w.c.logs());
    w.c.kill(old);
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = w.c.wait_leader(&rest, LONG);
    w.wait_records("the change completed", &[102]);
    let keys: Vec<_> = w.d.records(ZONE).into_iter().map(|r| (r.name, r.content)).collect();
    assert_eq!(
        keys.len(),
        keys.iter().collect::<BTreeSet<_>>().len(),
        "duplicates: {keys:?}"
    );
    // The new leader looked at the provider itself.
    assert!(w.d.requests()[cut..]
        .iter()
        .any(|r| r.vantage_node.as_deref() == Some(new.to_string().as_str())));
    w.clean();
}

/// Makes host `name`'s HTTP port refuse (true) or accept (false) connections.
fn refuse(lab: &Lab, name: &str, on: bool) {
    let op = if on { "-I" } else { "-D" };
    lab.iptables(
        name,
        &[
            op,
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
}

#[test]
fn a_flapping_endpoint_changes_dns_at_most_twice_per_hold_down() {
    let decide = "[decision]\nobservation_ttl = \"4s\"\nhold_down = \"10s\"\npanic_threshold = 1.0\n";
    let w = world(66, FAST, decide);
    let cut = w.d.requests().len();
    // 60 s flipping at every probe (250 ms): fall 3 and rise 2 absorb it.
    let start = std::time::Instant::now();
    let mut on = false;
    while start.elapsed() < Duration::from_secs(60) {
        on = !on;
        refuse(&w.lab, "e1", on);
        std::thread::sleep(Duration::from_millis(250));
    }
    if on {
        refuse(&w.lab, "e1", false);
    }
    assert!(
        w.writes(cut).is_empty(),
        "flapping at probe rate changed DNS: {:?}",
        w.writes(cut)
    );
    // 60 s of longer flaps: down 2 s, up 11 s.
    let cut = w.d.requests().len();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        refuse(&w.lab, "e1", true);
        std::thread::sleep(Duration::from_secs(2));
        refuse(&w.lab, "e1", false);
        std::thread::sleep(Duration::from_secs(11));
    }
    let times: Vec<Duration> = w.writes(cut).iter().map(|r| r.at).collect();
    assert!(times.len() >= 2, "the flaps never reached DNS: {times:?}");
    let worst = cfdouble::max_in_window(&times, Duration::from_secs(10));
    assert!(worst <= 2, "{worst} DNS changes within one 10 s hold-down: {times:?}");
    w.clean();
}

#[test]
fn twenty_percent_packet_loss_on_one_agent_causes_no_failover() {
    let probe = "[probe]\ninterval = \"100ms\"\ntimeout = \"90ms\"\nfall = 5\nrise = 2\nheartbeat = \"1s\"\n";
    let w = world(67, probe, DECIDE);
    let cut = w.d.requests().len();
    for e in [101u8, 102] {
        let ip = w.lab.ip(e);
        w.lab.iptables(
            "a2",
            &[
                "-A",
                "INPUT",
                "-s",
                &ip,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.2",
                "-j",
                "DROP",
            ],
        );
    }
    // 600 probes per endpoint: 10 minutes at a 1 s interval, here at 100 ms.
    std::thread::sleep(Duration::from_secs(60));
    let decisions: Vec<Value> = w.history(1).into_iter().filter(|e| e["kind"] == "decision").collect();
    assert!(decisions.is_empty(), "false failover under packet loss: {decisions:?}");
    assert!(
        w.writes(cut).is_empty(),
        "writes under packet loss: {:?}",
        w.writes(cut)
    );
    let probes = w.c.endpoints(2).unwrap()["endpoints"][0]["local"]["probes"]
        .as_u64()
        .unwrap();
    assert!(probes >= 600, "agent 2 ran only {probes} probes");
    w.clean();
}

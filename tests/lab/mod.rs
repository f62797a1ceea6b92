//! The three-host lab: a private bridge with every agent and every endpoint
//! in its own network namespace, and the strict Cloudflare double on the
//! bridge. Used by tests/hosts.rs and benches/failover.rs.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{wait_for, Cluster};
use cfdouble::{self, Double, DoubleConfig};

pub const LONG: Duration = Duration::from_secs(60);
pub const ZONE: &str = "example.test";
pub const TOKEN: &str = "lab-token-8d41c0";

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
pub struct Lab {
    pub n: u8,
    hosts: Vec<String>,
    servers: BTreeMap<String, Child>,
}

impl Lab {
    pub fn new(n: u8) -> Lab {
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

    pub fn ns(&self, host: &str) -> String {
        format!("vt{}{host}", self.n)
    }

    pub fn ip(&self, octet: u8) -> String {
        format!("10.{}.0.{octet}", self.n)
    }

    /// Adds host `name` with address 10.N.0.`octet`.
    pub fn host(&mut self, name: &str, octet: u8) {
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
    pub fn iptables(&self, name: &str, rule: &[&str]) {
        let ns = self.ns(name);
        let mut args = vec!["ip", "netns", "exec", ns.as_str(), "iptables"];
        args.extend_from_slice(rule);
        run(&args);
    }

    /// Starts an HTTP server on host `name` (port 8080) and waits until it answers.
    pub fn serve(&mut self, name: &str, octet: u8) {
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
    pub fn kill_server(&mut self, name: &str) {
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
pub struct World {
    pub lab: Lab,
    pub rt: tokio::runtime::Runtime,
    pub d: Double,
    pub c: Cluster,
    /// Wall clock (ms since the Unix epoch) when the double started: its
    /// request log's times are relative to it.
    pub d_started_ms: f64,
    _dir: tempfile::TempDir,
}

pub fn agent_addr(net: u8, id: u64) -> String {
    format!("10.{net}.0.{}:7101", 10 + id)
}

pub fn world(n: u8, probe: &str, decision: &str) -> World {
    world_with(n, probe, decision, true)
}

/// Like [`world`]; `tls` false runs the agents in plaintext (`insecure_plaintext`).
pub fn world_with(n: u8, probe: &str, decision: &str, tls: bool) -> World {
    let mut lab = Lab::new(n);
    for id in 1..=3u8 {
        lab.host(&format!("a{id}"), 10 + id);
    }
    for e in 1..=2u8 {
        lab.host(&format!("e{e}"), 100 + e);
        lab.serve(&format!("e{e}"), 100 + e);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d_started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
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
    std::fs::set_permissions(&tf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
    if !tls {
        c.without_tls();
    }
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let w = World {
        lab,
        rt,
        d,
        c,
        d_started_ms,
        _dir: dir,
    };
    w.wait_records("both endpoints published", &[101, 102]);
    w
}

pub const FAST: &str = "[probe]\ninterval = \"250ms\"\ntimeout = \"200ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n";
pub const DECIDE: &str = "[decision]\nobservation_ttl = \"4s\"\nhold_down = \"2s\"\npanic_threshold = 1.0\n";

impl World {
    /// Managed records at the double: (name, address).
    pub fn records(&self) -> BTreeSet<(String, String)> {
        self.d
            .records(ZONE)
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some("managed by vantage"))
            .map(|r| (r.name, r.content))
            .collect()
    }

    pub fn wait_records(&self, what: &str, octets: &[u8]) {
        let n = self.lab.n;
        let want: BTreeSet<(String, String)> = ["www.example.test", "example.test"]
            .iter()
            .flat_map(|h| octets.iter().map(move |o| (h.to_string(), format!("10.{n}.0.{o}"))))
            .collect();
        let ok = wait_for(what, LONG, || (self.records() == want).then_some(()));
        assert!(ok.is_some(), "{what}: {:?}\n{}", self.records(), self.c.logs());
    }

    pub fn writes(&self, since: usize) -> Vec<cfdouble::RequestRecord> {
        self.d.requests()[since..]
            .iter()
            .filter(|r| r.method != "GET")
            .cloned()
            .collect()
    }

    pub fn history(&self, node: u64) -> Vec<Value> {
        self.c
            .cli_json(&["history", "--addr", self.c.addr(node), "--limit", "1000"])["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn leader(&self) -> u64 {
        self.c.wait_leader(&self.live(), LONG)
    }

    pub fn live(&self) -> Vec<u64> {
        (1..=3).filter(|id| self.c.try_status(*id).is_some()).collect()
    }

    /// Waits for `secs` of log time (heartbeats advance it).
    pub fn log_time_passes(&self, node: u64, secs: u64) {
        let t0 = self.c.endpoints(node).unwrap()["log_time_ms"].as_u64().unwrap();
        wait_for("log time", LONG, || {
            (self.c.endpoints(node)?["log_time_ms"].as_u64()? >= t0 + secs * 1000).then_some(())
        })
        .expect("log time advances");
    }

    pub fn clean(&self) {
        assert!(self.d.violations().is_empty(), "{:#?}", self.d.violations());
    }
}

/// Makes host `name`'s HTTP port refuse (true) or accept (false) connections.
pub fn refuse(lab: &Lab, name: &str, on: bool) {
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

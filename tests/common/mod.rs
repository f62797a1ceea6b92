//! Test harness: real `vantage` processes on loopback, driven through the CLI
//! and the gRPC API.
//!
//! Each test passes its own `net` number; its nodes listen on `127.0.<net>.<id>`
//! so tests running in parallel never share an address or a port.
//!
//! Clusters run with mutual TLS, as a deployment would: the harness makes a CA
//! with `vantage tls`, a certificate per node, and an operator's and a
//! reader's; every CLI call presents the operator's. `Cluster::without_tls`
//! switches a cluster to plaintext on loopback.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_vantage");

/// A node's process and files.
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A set of agents under one temporary directory; kills them all on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub net: u8,
    pub nodes: BTreeMap<u64, Node>,
    /// Extra TOML appended to every node's `[raft]` table.
    raft_extra: String,
    /// Extra TOML tables per node (probes, pools, control targets).
    extra: Box<dyn Fn(u64) -> String>,
    /// `log_level` written into every node's config.
    pub log_level: String,
    /// Address of node `id` in network `net` (loopback by default).
    addr_of: fn(u8, u64) -> String,
    /// Network namespace each node runs in, if any (see tests/hosts.rs).
    pub netns: BTreeMap<u64, String>,
    /// The cluster CA and the certificates (None: plaintext).
    pub certs: Option<PathBuf>,
}

/// The cluster name the harness's certificates carry.
pub const CLUSTER: &str = "test";

pub fn addr(net: u8, id: u64) -> String {
    format!("127.0.{net}.{id}:7101")
}

impl Cluster {
    /// Writes configs for nodes `1..=voters` (the bootstrap members); starts nothing.
    pub fn new(net: u8, voters: u64, raft_extra: &str) -> Cluster {
        Cluster::with_extra(net, voters, raft_extra, |_| String::new())
    }

    /// Like [`Cluster::new`], with `extra(id)` appended to node `id`'s config.
    pub fn with_extra(net: u8, voters: u64, raft_extra: &str, extra: impl Fn(u64) -> String + 'static) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Cluster {
            dir,
            net,
            nodes: BTreeMap::new(),
            raft_extra: raft_extra.to_string(),
            extra: Box::new(extra),
            log_level: "info".into(),
            addr_of: addr,
            netns: BTreeMap::new(),
            certs: None,
        };
        let certs = c.dir.path().join("certs");
        c.tls_tool(&["ca", "--dir", certs.to_str().expect("utf-8 path"), "--cluster", CLUSTER]);
        for (name, role) in [("operator", "operator"), ("reader", "reader")] {
            c.tls_tool(&[
                "client",
                "--dir",
                certs.to_str().expect("utf-8 path"),
                "--name",
                name,
                "--role",
                role,
            ]);
        }
        c.certs = Some(certs);
        for id in 1..=voters {
            c.add_config(id, voters);
        }
        c
    }

    /// Nodes as separate hosts: node `id` listens on `addr_of(net, id)` inside
    /// the namespace `netns(id)`. Rewrites every node's config.
    pub fn on_hosts(&mut self, addr_of: fn(u8, u64) -> String, netns: impl Fn(u64) -> String) {
        self.addr_of = addr_of;
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let members = ids.len() as u64;
        for id in ids {
            self.netns.insert(id, netns(id));
            self.add_config(id, members);
        }
    }

    /// Runs `vantage tls ARGS`; panics with its output when it fails.
    pub fn tls_tool(&self, args: &[&str]) {
        let mut all = vec!["tls"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "vantage {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Issues node `id`'s certificate for `addr` (again, if it exists).
    pub fn issue_node_cert(&self, id: u64, addr: &str) {
        if let Some(certs) = &self.certs {
            let c = certs.to_str().expect("utf-8 path").to_string();
            self.tls_tool(&["node", "--dir", &c, "--id", &id.to_string(), "--addr", addr]);
        }
    }

    /// The PEM files of the holder `name` (`operator`, `reader`, `nodeN`): (ca, cert, key).
    pub fn cert_files(&self, name: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
        let d = self.certs.as_ref()?;
        Some((
            d.join("ca.pem"),
            d.join(format!("{name}.pem")),
            d.join(format!("{name}.key")),
        ))
    }

    /// Switches every node to plaintext (loopback only): no certificates.
    pub fn without_tls(&mut self) {
        self.certs = None;
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let members = ids.len() as u64;
        for id in ids {
            self.add_config(id, members);
        }
    }

    /// An outgoing connector presenting `name`'s certificate (plaintext without TLS).
    pub fn connector_as(&self, name: &str) -> vantage::network::Connector {
        let tls = self.cert_files(name).map(|(ca, cert, key)| {
            vantage::tls::Tls::load(vantage::tls::TlsFiles { ca, cert, key }).expect("harness certificates load")
        });
        vantage::network::Connector::new(Duration::from_secs(2), 64 << 20).with_tls(tls)
    }

    /// grpcurl's connection flags for this cluster, as the operator.
    pub fn grpcurl_flags(&self) -> Vec<String> {
        match self.cert_files("operator") {
            Some((ca, cert, key)) => vec![
                "-cacert".into(),
                ca.display().to_string(),
                "-cert".into(),
                cert.display().to_string(),
                "-key".into(),
                key.display().to_string(),
            ],
            None => vec!["-plaintext".into()],
        }
    }

    /// Sends a proposal to `addr`'s internal Forward RPC as `name`
    /// (`nodeN`), the way a follower hands one to the leader.
    pub fn forward_as(
        &self,
        name: &str,
        addr: &str,
        req: &vantage::codec::ForwardRequest,
    ) -> Result<Result<vantage::agent::Committed, vantage::agent::ProposeError>, Box<tonic::Status>> {
        // A runtime and a connector of its own: channels live on the runtime that made them.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let connector = self.connector_as(name);
        rt.block_on(async {
            let mut client = connector.raft_client(addr).expect("client");
            let msg = vantage::codec::encode(req).expect("encode");
            let resp = client.forward(msg).await.map_err(Box::new)?;
            Ok(vantage::codec::decode(&resp.into_inner().payload).expect("an answer"))
        })
    }

    /// Endpoint `id` as node `node` reports it.
    pub fn endpoint(&self, node: u64, id: &str) -> Option<Value> {
        let e = self.endpoints(node)?;
        e["endpoints"].as_array()?.iter().find(|x| x["id"] == id).cloned()
    }

    /// A `vantage` command that presents the operator's certificate.
    pub fn command(&self) -> Command {
        self.command_as("operator")
    }

    /// A `vantage` command that presents `name`'s certificate.
    pub fn command_as(&self, name: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.stdin(Stdio::null());
        if let Some((ca, cert, key)) = self.cert_files(name) {
            cmd.env("VANTAGE_CA", ca)
                .env("VANTAGE_CERT", cert)
                .env("VANTAGE_KEY", key);
        } else {
            cmd.env_remove("VANTAGE_CA")
                .env_remove("VANTAGE_CERT")
                .env_remove("VANTAGE_KEY");
        }
        cmd
    }

    /// Rewrites every node's config with `level` as its log level.
    pub fn set_log_level(&mut self, level: &str) {
        self.log_level = level.to_string();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let members = ids.len() as u64;
        for id in ids {
            self.add_config(id, members);
        }
    }

    /// Writes a config for node `id`, listing nodes `1..=members` as the cluster's members.
    pub fn add_config(&mut self, id: u64, members: u64) -> &Node {
        let addr = (self.addr_of)(self.net, id);
        let mut text = format!(
            "node_id = {id}\nlisten = \"{addr}\"\ndata_dir = \"data{id}\"\nlog_level = \"{}\"\n\n",
            self.log_level
        );
        let loopback = addr
            .rsplit_once(':')
            .and_then(|(h, _)| h.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        if self.certs.is_none() && !loopback {
            // Plaintext beyond loopback takes the explicit opt-out.
            text += "insecure_plaintext = true\n\n";
        }
        for m in 1..=members {
            text += &format!("[[members]]\nid = {m}\naddr = \"{}\"\n\n", (self.addr_of)(self.net, m));
        }
        if let Some((ca, cert, key)) = self.cert_files(&format!("node{id}")) {
            self.issue_node_cert(id, &addr);
            text += &format!(
                "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
                ca.display(),
                cert.display(),
                key.display()
            );
        }
        text += &format!("[raft]\n{}\n\n{}\n", self.raft_extra, (self.extra)(id));
        let config = self.dir.path().join(format!("node{id}.toml"));
        fs::write(&config, text).expect("write config");
        let log = self.dir.path().join(format!("node{id}.log"));
        self.nodes.insert(
            id,
            Node {
                id,
                addr,
                config,
                log,
                child: None,
            },
        );
        &self.nodes[&id]
    }

    pub fn addr(&self, id: u64) -> &str {
        &self.nodes[&id].addr
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    /// Starts node `id`'s agent process (its log is appended to `nodeN.log`).
    pub fn start(&mut self, id: u64) {
        let (config, log_path) = {
            let node = &self.nodes[&id];
            assert!(node.child.is_none(), "node {id} already running");
            (node.config.clone(), node.log.clone())
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log");
        let mut cmd = match self.netns.get(&id) {
            // `ip netns exec` replaces itself with the agent: the child is the agent.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&config)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn vantage");
        self.nodes.get_mut(&id).expect("node configured").child = Some(child);
    }

    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for node `id`'s agent to exit by itself; its status.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let child = self.nodes.get_mut(&id)?.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes.get_mut(&id)?.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id).and_then(|n| n.child.as_ref()).map(|c| c.id())
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self, id: u64) -> String {
        fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// Runs the CLI with `args`, as the operator.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run vantage")
    }

    /// Runs a CLI command with `--json` and parses its output; panics with stderr on failure.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "vantage {all:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// Bootstraps from node 1's config and returns the JSON answer.
    pub fn bootstrap(&self) -> Value {
        let config = self.nodes[&1].config.to_str().expect("utf-8 path").to_string();
        self.cli_json(&["cluster", "bootstrap", "--config", &config])
    }

    /// `cluster status` of node `id`, or None when it does not answer.
    pub fn try_status(&self, id: u64) -> Option<Value> {
        let out = self.cli(&["cluster", "status", "--addr", self.addr(id), "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self, id: u64) -> Value {
        self.try_status(id)
            .unwrap_or_else(|| panic!("node {id} does not answer status\n{}", self.logs()))
    }

    /// Waits until every node in `ids` names the same leader; returns it.
    pub fn wait_leader(&self, ids: &[u64], timeout: Duration) -> u64 {
        wait_for(&format!("one leader agreed by nodes {ids:?}"), timeout, || {
            let mut leaders = Vec::new();
            for id in ids {
                let s = self.try_status(*id)?;
                leaders.push(s["leader_id"].as_u64()?);
            }
            let first = leaders[0];
            (leaders.iter().all(|l| *l == first) && ids.contains(&first)).then_some(first)
        })
        .unwrap_or_else(|| panic!("no agreed leader\n{}", self.logs()))
    }

    /// `vantage endpoints --json` of node `id`, or None when it does not answer.
    pub fn endpoints(&self, id: u64) -> Option<Value> {
        let out = self.cli(&["endpoints", "--addr", self.addr(id), "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Commits a note through node `id`.
    pub fn note(&self, id: u64, text: &str) -> Value {
        self.cli_json(&["cluster", "note", "--addr", self.addr(id), text])
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.nodes.keys() {
            let text = self.log_text(*id);
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out += &format!("--- node {id} log (last lines) ---\n");
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vantage")
}

/// Polls `check` every 100 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            eprintln!("timed out after {timeout:?} waiting for {what}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Agent `agent`'s observation in an endpoint as `endpoints --json` shows it.
pub fn observation(ep: &Value, agent: u64) -> Option<Value> {
    ep["observations"]
        .as_array()?
        .iter()
        .find(|o| o["agent"] == agent)
        .cloned()
}

pub fn voters(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["voter"].as_bool() == Some(true))
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("write file");
    p
}

/// A TCP listener that can be closed and reopened on the same address.
pub struct Port {
    pub addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Port {
    pub fn open(addr: SocketAddr) -> Port {
        let listener = TcpListener::bind(addr).expect("bind port");
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || loop {
            if rx.try_recv().is_ok() {
                return; // dropping the listener closes the port
            }
            if let Ok((s, _)) = listener.accept() {
                drop(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        Port { addr, stop: Some(tx) }
    }

    pub fn close(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        // Wait until connects are refused.
        let addr = self.addr;
        wait_for("port to close", Duration::from_secs(30), || {
            TcpStream::connect(addr).is_err().then_some(())
        })
        .expect("port closes");
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn pool(name: &str, address: &str, check: &str) -> String {
    format!("[[pools]]\nname = \"{name}\"\ncheck = {check}\n[[pools.endpoints]]\naddress = \"{address}\"\n\n")
}

/// Resident memory of a process, in KiB (from /proc; 0 if unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// (user, system) CPU ticks of a process.
pub fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (field(11), field(12))
}

pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

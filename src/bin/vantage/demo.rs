//! `vantage demo`: a local three-agent cluster, three HTTP endpoints this
//! process serves and can take down, and the zone-file provider — a failover
//! and a leader change within a minute, no account needed.
//!
//! Agents listen on `127.0.N.1-3:7101`, endpoints on `127.0.N.11-13:8080`
//! (N = `--net`, default 77). Commands on standard input: `down E`, `up E`,
//! `kill A`, `start A`, `status`, `quit`. `--auto` plays a scripted
//! failover, recovery and leader change, then exits (0 when all happened).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use vantage::network::Connector;
use vantage::proto::v1::cluster_client::ClusterClient;
use vantage::proto::v1::endpoints_client::EndpointsClient;
use vantage::proto::v1::history_client::HistoryClient;
use vantage::proto::v1::{BootstrapRequest, GetStatusRequest, ListEndpointsRequest, Member, WatchRequest};
use vantage::tls::issue::{self, Validity};
use vantage::tls::{Identity, Role, Tls, TlsFiles};

/// Demo options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Loopback subnet 127.0.N.x.
    pub net: u8,
    /// Keep files here instead of a temporary directory.
    pub dir: Option<PathBuf>,
    /// Play the scripted scenario and exit.
    pub auto: bool,
}

struct Demo {
    net: u8,
    dir: PathBuf,
    exe: PathBuf,
    agents: BTreeMap<u64, Option<Child>>,
    endpoints: BTreeMap<u64, Arc<AtomicBool>>,
    connector: Connector,
}

fn agent_addr(net: u8, id: u64) -> String {
    format!("127.0.{net}.{id}:7101")
}

fn endpoint_ip(net: u8, e: u64) -> String {
    format!("127.0.{net}.{}", 10 + e)
}

fn config(net: u8, id: u64, dir: &Path) -> String {
    let mut t = format!(
        "# Written by `vantage demo`.\nnode_id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\nlog_level = \"info\"\n\n",
        agent_addr(net, id),
        dir.join(format!("data{id}")).display()
    );
    for m in 1..=3 {
        t += &format!("[[members]]\nid = {m}\naddr = \"{}\"\n\n", agent_addr(net, m));
    }
    let certs = dir.join("certs");
    t += &format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
        certs.join("ca.pem").display(),
        certs.join(format!("node{id}.pem")).display(),
        certs.join(format!("node{id}.key")).display()
    );
    t += "[probe]\ninterval = \"500ms\"\ntimeout = \"400ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n\n";
    t += "[decision]\nobservation_ttl = \"4s\"\nhold_down = \"5s\"\npanic_threshold = 0.7\npanic_window = \"30s\"\n\n";
    t += &format!(
        "[dns]\nprovider = \"zonefile\"\nreconcile_interval = \"2s\"\n[dns.zonefile]\npath = \"{}\"\norigin = \"demo.test\"\nttl = 30\n\n",
        dir.join("demo.test.zone").display()
    );
    t += "[[pools]]\nname = \"web\"\nhostnames = [\"www.demo.test\"]\ncheck = { kind = \"http\", port = 8080, path = \"/health\" }\n";
    for e in 1..=3 {
        t += &format!("[[pools.endpoints]]\naddress = \"{}\"\n", endpoint_ip(net, e));
    }
    t
}

/// Makes (or reuses, with `--dir`) the demo cluster's CA, its three node
/// certificates and an operator's; returns the operator's, for the demo's own calls.
fn certificates(net: u8, certs: &Path) -> Result<Arc<Tls>, String> {
    if !certs.join("ca.key").exists() {
        issue::new_ca(certs, "demo", Validity::default())?;
    }
    for id in 1..=3 {
        issue::issue(
            certs,
            &Identity::Node(id),
            &[agent_addr(net, id)],
            &format!("node{id}"),
            certs,
            Validity::default(),
        )?;
    }
    let operator = Identity::Client {
        name: "operator".into(),
        role: Role::Operator,
    };
    issue::issue(certs, &operator, &[], "operator", certs, Validity::default())?;
    Tls::load(TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("operator.pem"),
        key: certs.join("operator.key"),
    })
    .map_err(|e| e.to_string())
}

/// A tiny HTTP server answering 200 while `up`, 503 otherwise.
async fn serve_endpoint(ip: String, up: Arc<AtomicBool>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:8080")).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let up = up.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
                let (status, body) = if up.load(Ordering::SeqCst) {
                    ("200 OK", "ok")
                } else {
                    ("503 Service Unavailable", "down")
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}

impl Demo {
    fn start_agent(&mut self, id: u64) -> Result<(), String> {
        if matches!(self.agents.get(&id), Some(Some(_))) {
            return Err(format!("agent {id} is already running"));
        }
        let log = std::fs::File::create(self.dir.join(format!("node{id}.log"))).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .args(["run", "--config"])
            .arg(self.dir.join(format!("node{id}.toml")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start agent {id}: {e}"))?;
        self.agents.insert(id, Some(child));
        Ok(())
    }

    fn kill_agent(&mut self, id: u64) -> Result<(), String> {
        match self.agents.get_mut(&id).and_then(Option::take) {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
                Ok(())
            }
            None => Err(format!("agent {id} is not running")),
        }
    }

    fn stop_all(&mut self) {
        let ids: Vec<u64> = self.agents.keys().copied().collect();
        for id in ids {
            let _ = self.kill_agent(id);
        }
    }

    fn live(&self) -> Vec<u64> {
        self.agents
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    async fn status_of(&self, id: u64) -> Option<vantage::proto::v1::ClusterStatus> {
        let ch = self.connector.channel(&agent_addr(self.net, id)).ok()?;
        let mut req = tonic::Request::new(GetStatusRequest { linearizable: false });
        req.set_timeout(Duration::from_millis(500));
        ClusterClient::new(ch)
            .get_status(req)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// The leader as a live agent sees it.
    async fn leader(&self) -> Option<(u64, u64)> {
        for id in self.live() {
            if let Some(s) = self.status_of(id).await {
                if let Some(l) = s.leader_id {
                    return Some((l, s.term));
                }
            }
        }
        None
    }

    /// One line: leader, every endpoint's decision and the zone's records.
    async fn view(&self) -> String {
        let mut line = match self.leader().await {
            Some((l, t)) => format!("leader {l} (term {t}) | agents up {:?}", self.live()),
            None => format!("no leader | agents up {:?}", self.live()),
        };
        for id in self.live() {
            let Ok(ch) = self.connector.channel(&agent_addr(self.net, id)) else {
                continue;
            };
            let mut req = tonic::Request::new(ListEndpointsRequest::default());
            req.set_timeout(Duration::from_millis(500));
            if let Ok(r) = EndpointsClient::new(ch).list(req).await {
                for e in r.into_inner().endpoints {
                    line += &format!(
                        " | {} {}{}",
                        e.address,
                        e.decision,
                        if e.in_dns { "" } else { " (out of DNS)" }
                    );
                }
                break;
            }
        }
        let zone = std::fs::read_to_string(self.dir.join("demo.test.zone")).unwrap_or_default();
        let records: Vec<&str> = zone
            .lines()
            .filter(|l| l.contains(" IN A "))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        line + &format!(" | zone www.demo.test A {records:?}")
    }

    async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&str) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let v = self.view().await;
            if ok(&v) {
                say!("[{:>5.1}s] {what}: {v}", start.elapsed().as_secs_f64());
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!("{what}: not seen within {timeout:?}; last view: {v}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn command(&mut self, line: &str) -> Result<bool, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<u64>().ok())
                .filter(|n| (1..=3).contains(n))
        };
        match (words.first().copied(), n(1)) {
            (Some("down"), Some(e)) | (Some("up"), Some(e)) => {
                self.endpoints[&e].store(words[0] == "up", Ordering::SeqCst);
                say!(
                    "endpoint {e} ({}) now answers {}",
                    endpoint_ip(self.net, e),
                    if words[0] == "up" { 200 } else { 503 }
                );
            }
            (Some("kill"), Some(a)) => {
                self.kill_agent(a)?;
                say!("agent {a} killed (SIGKILL)");
            }
            (Some("start"), Some(a)) => {
                self.start_agent(a)?;
                say!("agent {a} started");
            }
            (Some("status"), _) => say!("{}", self.view().await),
            (Some("quit"), _) | (Some("exit"), _) => return Ok(false),
            (None, _) => {}
            _ => say!("commands: down E | up E (endpoint 1-3), kill A | start A (agent 1-3), status, quit"),
        }
        Ok(true)
    }

    /// Streams decision and DNS events from whichever agent answers.
    fn spawn_event_printer(&self) {
        let (net, connector) = (self.net, self.connector.clone());
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                for id in 1..=3 {
                    let Ok(ch) = connector.channel(&agent_addr(net, id)) else {
                        continue;
                    };
                    let Ok(resp) = HistoryClient::new(ch)
                        .watch(WatchRequest {
                            endpoint: String::new(),
                            after_id: after,
                        })
                        .await
                    else {
                        continue;
                    };
                    let mut stream = resp.into_inner();
                    while let Ok(Some(e)) = stream.message().await {
                        after = e.id;
                        if matches!(e.kind.as_str(), "decision" | "dns" | "dns-write" | "panic" | "guard") {
                            say!("  event: {}", crate::render::render_event(&e));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    async fn scenario(&mut self) -> Result<(), String> {
        let ip1 = endpoint_ip(self.net, 1);
        self.wait_until("all three endpoints in the zone", Duration::from_secs(30), |v| {
            v.matches("\"127.0.").count() == 3
        })
        .await?;
        self.command("down 1").await?;
        let t = self
            .wait_until(
                "endpoint 1 decided down and removed from the zone",
                Duration::from_secs(30),
                |v| v.contains(&format!("{ip1} down (out of DNS)")) && !v.contains(&format!("\"{ip1}\"")),
            )
            .await?;
        say!(
            "failover: {:.1}s from `down 1` to the record leaving the zone",
            t.as_secs_f64()
        );
        self.command("up 1").await?;
        self.wait_until(
            "endpoint 1 back in the zone after rise and hold_down",
            Duration::from_secs(30),
            |v| v.contains(&format!("\"{ip1}\"")),
        )
        .await?;
        let (old, _) = self.leader().await.ok_or("no leader")?;
        self.command(&format!("kill {old}")).await?;
        self.wait_until("a new leader", Duration::from_secs(30), |v| {
            v.starts_with("leader ") && !v.starts_with(&format!("leader {old} "))
        })
        .await?;
        self.command(&format!("start {old}")).await?;
        self.wait_until("the old leader back as a follower", Duration::from_secs(30), |v| {
            v.contains("agents up [1, 2, 3]") && v.starts_with("leader ")
        })
        .await?;
        Ok(())
    }
}

/// Runs the demo until `quit`, Ctrl-C, or the end of the `--auto` scenario.
pub async fn run(opts: DemoOptions) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the vantage binary: {e}"))?;
    let (dir, _temp) = match &opts.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = std::env::temp_dir().join(format!("vantage-demo-{}", std::process::id()));
            (t.clone(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let operator = certificates(opts.net, &dir.join("certs"))?;
    for id in 1..=3 {
        std::fs::write(dir.join(format!("node{id}.toml")), config(opts.net, id, &dir)).map_err(|e| e.to_string())?;
    }
    let mut demo = Demo {
        net: opts.net,
        dir: dir.clone(),
        exe,
        agents: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        connector: Connector::new(Duration::from_millis(300), 16 << 20).with_tls(Some(operator.clone())),
    };
    for e in 1..=3 {
        let up = Arc::new(AtomicBool::new(true));
        serve_endpoint(endpoint_ip(opts.net, e), up.clone())
            .await
            .map_err(|err| format!("cannot serve endpoint {e} on {}:8080: {err}", endpoint_ip(opts.net, e)))?;
        demo.endpoints.insert(e, up);
    }
    say!("vantage demo: files in {}", dir.display());
    let certs = dir.join("certs");
    say!(
        "mutual TLS; to use the CLI on it: export VANTAGE_CA={} VANTAGE_CERT={} VANTAGE_KEY={}",
        certs.join("ca.pem").display(),
        certs.join("operator.pem").display(),
        certs.join("operator.key").display()
    );
    for id in 1..=3 {
        demo.start_agent(id)?;
    }
    let members: Vec<Member> = (1..=3)
        .map(|id| Member {
            id,
            addr: agent_addr(opts.net, id),
            voter: true,
            matched_index: None,
            lag: None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ch = demo
            .connector
            .channel(&agent_addr(opts.net, 1))
            .map_err(|e| e.to_string())?;
        match ClusterClient::new(ch)
            .bootstrap(BootstrapRequest {
                members: members.clone(),
            })
            .await
        {
            Ok(r) => {
                say!("{}", r.into_inner().message);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                demo.stop_all();
                return Err(format!("bootstrap failed: {}", e.message()));
            }
        }
    }
    demo.spawn_event_printer();
    let result = if opts.auto {
        tokio::select! {
            r = demo.scenario() => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    } else {
        say!("commands: down E | up E (endpoint 1-3), kill A | start A (agent 1-3), status, quit");
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break Ok(()),
                _ = tick.tick() => say!("{}", demo.view().await),
                line = lines.next_line() => match line {
                    Ok(Some(l)) => match demo.command(&l).await {
                        Ok(true) => {}
                        Ok(false) => break Ok(()),
                        Err(e) => say!("error: {e}"),
                    },
                    _ => break Ok(()),
                },
            }
        }
    };
    demo.stop_all();
    if let Some(t) = _temp {
        let _ = std::fs::remove_dir_all(t);
    }
    say!(
        "demo stopped; agents killed{}",
        if opts.dir.is_none() { " and files removed" } else { "" }
    );
    result
}

//! The command line: `vantage run`, `vantage cluster …`, `vantage config check`.
//!
//! Exit codes: 0 success, 1 a runtime failure (unreachable node, refused
//! request), 2 a usage or configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde::Serialize;
use tonic::transport::Channel;

use crate::clock::SystemClock;
use crate::config::{Config, Dur};
use crate::network::Connector;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::dns_client::DnsClient;
use crate::proto::v1::endpoints_client::EndpointsClient;
use crate::proto::v1::history_client::HistoryClient;
use crate::proto::v1::PlanRequest;
use crate::proto::v1::{
    AddNodeRequest, BootstrapRequest, ClusterStatus, GetStatusRequest, ListEndpointsRequest, ListEndpointsResponse,
    Member, MembershipResponse, ProposeNoteRequest, RemoveNodeRequest,
};
use crate::proto::v1::{HistoryEvent, ListHistoryRequest, WatchRequest};

#[derive(Parser, Debug)]
#[command(
    name = "vantage",
    version,
    about = "Multi-vantage health checking and DNS failover on Raft"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Start a local three-agent cluster with three HTTP endpoints and a zone file, and show failovers.
    Demo {
        /// Loopback subnet to use: agents on 127.0.N.1-3, endpoints on 127.0.N.11-13.
        #[arg(long, default_value_t = 77)]
        net: u8,
        /// Keep the files here (default: a temporary directory removed on exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Play a scripted failover, recovery and leader change, then exit.
        #[arg(long)]
        auto: bool,
    },
    /// Run one agent.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Form, inspect and change the Raft cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Show every endpoint: this agent's probe view and every agent's replicated observation.
    Endpoints {
        #[arg(long, short)]
        addr: String,
        /// Only endpoints whose id starts with this (e.g. a pool name).
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        linearizable: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the replicated audit history: decisions, DNS placements, guards, panics.
    History {
        #[arg(long, short)]
        addr: String,
        /// Only events about this endpoint id (cluster-wide events too).
        #[arg(long, default_value = "")]
        endpoint: String,
        /// Events after this id (for paging).
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Print history events as they happen (Ctrl-C to stop).
    Watch {
        #[arg(long, short)]
        addr: String,
        #[arg(long, default_value = "")]
        endpoint: String,
        /// Replay events after this id first.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the DNS changes the leader would apply now (it lists the provider; writes nothing).
    Plan {
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        json: bool,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Form the cluster from the members listed in a node's config (once; a no-op afterwards).
    Bootstrap {
        #[arg(long, short)]
        config: PathBuf,
        /// How long to wait for a leader after initializing.
        #[arg(long, default_value = "15s", value_parser = parse_dur)]
        wait: Dur,
        #[arg(long)]
        json: bool,
    },
    /// Show a node's view: leader, term, indexes, members and replication lag.
    Status {
        #[arg(long, short)]
        addr: String,
        /// Confirm through the leader that the answer is current.
        #[arg(long)]
        linearizable: bool,
        #[arg(long)]
        json: bool,
    },
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    Join {
        /// Any member of the cluster (a follower forwards to the leader).
        #[arg(long, short)]
        addr: String,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's host:port, as its peers will reach it.
        #[arg(long)]
        node_addr: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a node (voter or learner); removing the leader hands leadership on.
    Remove {
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Commit an operator note to the replicated log.
    Note {
        #[arg(long, short)]
        addr: String,
        text: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate a configuration file without starting anything.
    Check { file: PathBuf },
}

fn parse_dur(s: &str) -> Result<Dur, String> {
    humantime::parse_duration(s)
        .map(Dur)
        .map_err(|_| format!("expected a duration like \"15s\", got {s:?}"))
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // An agent sizes its runtime from its configuration (default one worker:
    // agents are meant to be light); everything else uses the default.
    let agent = match &cli.command {
        Cmd::Run { config } => match Config::load(config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(c) = &agent {
        builder.worker_threads(c.worker_threads);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match agent {
        Some(config) => rt.block_on(run_agent(config)),
        None => rt.block_on(dispatch(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        // Loaded by `main`, which sizes the runtime from it.
        Cmd::Run { config } => run_agent(load(&config)?).await,
        Cmd::Demo { net, dir, auto } => crate::demo::run(crate::demo::DemoOptions { net, dir, auto })
            .await
            .map_err(Failure::runtime),
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            let c = load(&file)?;
            let endpoints = c.endpoints().map(|e| e.len()).unwrap_or(0);
            println!(
                "{}: ok (node {}, {} members, {} endpoints in {} pools, {} control targets, data_dir {})",
                file.display(),
                c.node_id,
                c.members.len(),
                endpoints,
                c.pools.len(),
                c.control.len(),
                c.data_dir.display()
            );
            Ok(())
        }
        Cmd::Cluster { cmd } => cluster(cmd).await,
        Cmd::History {
            addr,
            endpoint,
            after,
            limit,
            json,
        } => {
            let mut c = HistoryClient::new(channel(&addr)?).max_decoding_message_size(64 * 1024 * 1024);
            let r = c
                .list(ListHistoryRequest {
                    endpoint,
                    after_id: after,
                    limit,
                    linearizable: false,
                })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            if json {
                return print_json(&r);
            }
            for e in &r.events {
                println!("{}", render_event(e));
            }
            if r.more {
                println!("(more: --after {})", r.next_after_id);
            }
            Ok(())
        }
        Cmd::Watch {
            addr,
            endpoint,
            after,
            json,
        } => {
            let mut c = HistoryClient::new(channel(&addr)?);
            let mut stream = c
                .watch(WatchRequest {
                    endpoint,
                    after_id: after,
                })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            while let Some(e) = stream.message().await.map_err(|s| rpc_failure(&addr, s))? {
                if json {
                    let line = serde_json::to_string(&e).map_err(|e| Failure::runtime(e.to_string()))?;
                    println!("{line}");
                } else {
                    println!("{}", render_event(&e));
                }
            }
            Err(Failure::runtime(format!(
                "{addr}: the stream ended (the agent stopped?)"
            )))
        }
        Cmd::Plan { addr, json } => {
            let mut c = DnsClient::new(channel(&addr)?);
            let r = c
                .plan(PlanRequest {})
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            if json {
                return print_json(&r);
            }
            if r.provider.is_empty() {
                println!("no DNS provider configured (dns.provider = \"none\"): nothing to write");
                return Ok(());
            }
            println!(
                "leader node {} (term {}), provider {}{}, decisions up to index {}",
                r.leader_id,
                r.term,
                r.provider,
                if r.dry_run { " (dry run)" } else { "" },
                r.served_index
            );
            if r.changes.is_empty() {
                println!("in sync: {} records", r.desired.len());
            }
            for c in &r.changes {
                println!("  {c}");
            }
            Ok(())
        }
        Cmd::Endpoints {
            addr,
            prefix,
            linearizable,
            json,
        } => {
            let mut c = EndpointsClient::new(channel(&addr)?).max_decoding_message_size(64 * 1024 * 1024);
            let r = c
                .list(ListEndpointsRequest { linearizable, prefix })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            if json {
                return print_json(&r);
            }
            print!("{}", render_endpoints(&r));
            Ok(())
        }
    }
}

fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::usage(e.to_string()))
}

fn init_tracing(level: &str) {
    let directive = match level {
        "info" | "warn" | "error" => format!("{level},openraft=warn,sled=warn,h2=warn,tower=warn,hyper=warn"),
        other => other.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VANTAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directive));
    // Colour only on a terminal: files and journald get plain text.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run_agent(config: Config) -> Result<(), Failure> {
    init_tracing(&config.log_level);
    let addr = config.listen_addr().map_err(|e| Failure::usage(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("{}: listen: cannot bind {addr}: {e}", config.source)))?;
    let connector =
        Connector::new(config.raft.connect_timeout.0, config.raft.max_message_bytes).with_local_ip(addr.ip());
    crate::run(config, listener, connector, Arc::new(SystemClock), shutdown_signal())
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn channel(addr: &str) -> Result<Channel, Failure> {
    Connector::new(Duration::from_secs(2), 64 * 1024 * 1024)
        .channel(addr)
        .map_err(|e| Failure::usage(format!("--addr: {e}")))
}

fn client(addr: &str) -> Result<ClusterClient<Channel>, Failure> {
    Connector::new(Duration::from_secs(2), 64 * 1024 * 1024)
        .cluster_client(addr)
        .map_err(|e| Failure::usage(format!("--addr: {e}")))
}

fn rpc_failure(addr: &str, s: tonic::Status) -> Failure {
    Failure::runtime(format!("{addr}: {:?}: {}", s.code(), s.message()))
}

fn print_json<T: Serialize>(v: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn get_status(addr: &str, linearizable: bool) -> Result<ClusterStatus, Failure> {
    let mut c = client(addr)?;
    let mut req = tonic::Request::new(GetStatusRequest { linearizable });
    req.set_timeout(Duration::from_secs(10));
    c.get_status(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| rpc_failure(addr, s))
}

async fn cluster(cmd: ClusterCmd) -> Result<(), Failure> {
    match cmd {
        ClusterCmd::Bootstrap { config, wait, json } => bootstrap(&config, wait.0, json).await,
        ClusterCmd::Status {
            addr,
            linearizable,
            json,
        } => {
            let s = get_status(&addr, linearizable).await?;
            if json {
                return print_json(&s);
            }
            // Replication progress is known only to the leader: show its view of the members.
            let leader_view = if s.role != "Leader" && !s.leader_addr.is_empty() {
                get_status(&s.leader_addr, false).await.ok()
            } else {
                None
            };
            print!("{}", render_status(&s, leader_view.as_ref()));
            Ok(())
        }
        ClusterCmd::Join {
            addr,
            id,
            node_addr,
            json,
        } => {
            let mut c = client(&addr)?;
            let r = c
                .add_node(AddNodeRequest { id, addr: node_addr })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            membership_out(&r, json)
        }
        ClusterCmd::Remove { addr, id, json } => {
            let mut c = client(&addr)?;
            let r = c
                .remove_node(RemoveNodeRequest { id })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            membership_out(&r, json)
        }
        ClusterCmd::Note { addr, text, json } => {
            let mut c = client(&addr)?;
            let r = c
                .propose_note(ProposeNoteRequest { text })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            if json {
                return print_json(&r);
            }
            println!(
                "committed at index {} (log time {})",
                r.log_index,
                fmt_time(r.log_time_ms)
            );
            Ok(())
        }
    }
}

fn membership_out(r: &MembershipResponse, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(r);
    }
    println!("{}", r.message);
    print!("{}", render_members(&r.members));
    Ok(())
}

/// Bootstrap output in `--json` form.
#[derive(Serialize)]
struct BootstrapOutput {
    initialized_now: bool,
    message: String,
    members: Vec<Member>,
    leader_id: Option<u64>,
    leader_addr: String,
    term: u64,
}

async fn bootstrap(path: &Path, wait: Duration, json: bool) -> Result<(), Failure> {
    let config = load(path)?;
    if !config.members.iter().any(|m| m.id == config.node_id) {
        return Err(Failure::usage(format!(
            "{}: members: this node (id {}) is not listed; bootstrap with the config of one of the voters",
            config.source, config.node_id
        )));
    }
    let addr = config.advertise_addr().to_string();
    let members: Vec<Member> = config
        .members
        .iter()
        .map(|m| Member {
            id: m.id,
            addr: m.addr.clone(),
            voter: true,
            matched_index: None,
            lag: None,
        })
        .collect();
    let mut c = client(&addr)?;
    // The agents may still be starting: retry while the node is not reachable.
    let deadline = Instant::now() + wait;
    let r = loop {
        match c
            .bootstrap(BootstrapRequest {
                members: members.clone(),
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => return Err(rpc_failure(&addr, s)),
        }
    };
    if !json {
        println!("{}", r.message);
    }
    // Wait for an elected leader so the command's success means a working cluster.
    let status = loop {
        match get_status(&addr, false).await {
            Ok(s) if s.leader_id.is_some() => break s,
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => {
                return Err(Failure::runtime(format!(
                    "no leader was elected within {}; are a majority of the members running?",
                    humantime::format_duration(wait)
                )))
            }
            Err(f) => return Err(f),
        }
    };
    if json {
        return print_json(&BootstrapOutput {
            initialized_now: r.initialized_now,
            message: r.message,
            members: status.members,
            leader_id: status.leader_id,
            leader_addr: status.leader_addr,
            term: status.term,
        });
    }
    println!(
        "leader: node {} at {} (term {})",
        status.leader_id.unwrap_or(0),
        status.leader_addr,
        status.term
    );
    print!("{}", render_members(&status.members));
    Ok(())
}

fn fmt_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn opt(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn render_members(members: &[Member]) -> String {
    let mut out = format!(
        "{:<6} {:<8} {:<24} {:>8} {:>6}\n",
        "id", "role", "addr", "matched", "lag"
    );
    for m in members {
        out += &format!(
            "{:<6} {:<8} {:<24} {:>8} {:>6}\n",
            m.id,
            if m.voter { "voter" } else { "learner" },
            m.addr,
            opt(m.matched_index),
            opt(m.lag)
        );
    }
    out
}

/// Human-readable status; `leader_view` supplies replication lag when `s` is a follower's.
pub fn render_status(s: &ClusterStatus, leader_view: Option<&ClusterStatus>) -> String {
    let leader = match s.leader_id {
        Some(id) => format!("node {id} at {}", s.leader_addr),
        None => "none known".into(),
    };
    let mut out = format!(
        "node {} at {}: {} (term {})\nleader: {leader}\n",
        s.node_id, s.node_addr, s.role, s.term
    );
    out += &format!(
        "log: last {}, committed {}, applied {}, snapshot {}, purged {}\n",
        s.last_log_index, s.committed_index, s.applied_index, s.snapshot_index, s.purged_index
    );
    out += &format!(
        "state: log time {}, {} notes, digest {}\n",
        fmt_time(s.log_time_ms),
        s.notes_applied,
        s.state_digest
    );
    for a in &s.alarms {
        out += &format!("ALARM: {a}\n");
    }
    if !s.initialized {
        out += "not part of a cluster yet (run `vantage cluster bootstrap` or `vantage cluster join`)\n";
        return out;
    }
    let members = leader_view.map(|l| &l.members).unwrap_or(&s.members);
    if let Some(l) = leader_view {
        out += &format!("members (replication as seen by leader node {}):\n", l.node_id);
    } else {
        out += "members:\n";
    }
    out + &render_members(members)
}

/// Human-readable endpoint table: one line per endpoint, one per agent observation.
pub fn render_endpoints(r: &ListEndpointsResponse) -> String {
    let mut out = format!(
        "node {} (log time {}){}\n{}\n",
        r.node_id,
        fmt_time(r.log_time_ms),
        if r.abstaining {
            ", ABSTAINING: control targets unreachable"
        } else {
            ""
        },
        r.icmp
    );
    if r.panic {
        out += &format!("PANIC FREEZE: {}\n", r.panic_reason);
    }
    out += &format!("quorum {} of voters {:?}\n", r.quorum, r.voters);
    for e in &r.endpoints {
        out += &format!("{} [{}]\n", e.id, e.check);
        if !e.decision.is_empty() {
            out += &format!(
                "  decision {:<8} since {} ({}); {} DNS: {}\n",
                e.decision,
                fmt_time(e.decided_ms),
                e.reason,
                if e.in_dns { "in" } else { "out of" },
                e.dns_reason
            );
        }
        if let Some(l) = &e.local {
            out += &format!(
                "  local    {:<8} ok-run {} fail-run {} probes {} rtt {} {}\n",
                l.status,
                l.successes,
                l.failures,
                l.probes,
                l.last_rtt_us
                    .map(|u| format!("{:.1}ms", u as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                l.last_error
            );
        }
        for o in &e.observations {
            out += &format!(
                "  agent {:<2} {:<8} {:<22} age {:>6.1}s since {}{}{}\n",
                o.agent,
                o.status,
                if o.counted {
                    "counted".to_string()
                } else {
                    format!("not counted: {}", o.uncounted_reason)
                },
                o.age_ms as f64 / 1000.0,
                fmt_time(o.since_ms),
                if o.abstaining { " (abstaining)" } else { "" },
                if o.last_error.is_empty() {
                    String::new()
                } else {
                    format!(" last error: {}", o.last_error)
                }
            );
        }
    }
    out
}

/// One history event on one line.
pub fn render_event(e: &HistoryEvent) -> String {
    let mut line = format!(
        "#{} {} index {} {:<8}",
        e.id,
        fmt_time(e.log_time_ms),
        e.log_index,
        e.kind
    );
    if !e.endpoint.is_empty() {
        line += &format!(" {}", e.endpoint);
    }
    if !e.from.is_empty() || !e.to.is_empty() {
        line += &format!(" {} -> {}", e.from, e.to);
    }
    line += &format!(": {}", e.rule);
    if !e.up.is_empty() || !e.down.is_empty() {
        line += &format!(" [up {:?}, down {:?}", e.up, e.down);
        for u in &e.uncounted {
            line += &format!(", {} {}", u.agent, u.reason);
        }
        line += "]";
    }
    line
}

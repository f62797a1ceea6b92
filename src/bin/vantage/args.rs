//! The command line's shape: every command, its arguments and their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vantage::config::Dur;

#[derive(Parser, Debug)]
#[command(
    name = "vantage",
    version,
    about = "Multi-vantage health checking and DNS failover on Raft"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// The operator's (or reader's) certificate for talking to a TLS cluster.
/// Set all three, on the command line or in the environment, or none for a
/// plaintext cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientTls {
    /// The cluster CA bundle.
    #[arg(long, global = true, env = "VANTAGE_CA")]
    pub ca: Option<PathBuf>,
    /// Your certificate, from `vantage tls client`.
    #[arg(long, global = true, env = "VANTAGE_CERT")]
    pub cert: Option<PathBuf>,
    /// Your private key (mode 0600).
    #[arg(long, global = true, env = "VANTAGE_KEY")]
    pub key: Option<PathBuf>,
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
    /// Make the cluster's certificates: a CA, then one per node, operator and reader.
    Tls {
        #[command(subcommand)]
        cmd: TlsCmd,
    },
    /// Why an endpoint is where it is: decision, counted reports, guard or override, last write, what comes next.
    Explain {
        /// The endpoint id, e.g. web/192.0.2.10.
        id: String,
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        json: bool,
    },
    /// Replay the log a node keeps with other decision settings: how many decisions and DNS changes they
    /// would have made, against what happened.
    Replay {
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        quorum: Option<u32>,
        #[arg(long, value_parser = parse_dur)]
        observation_ttl: Option<Dur>,
        #[arg(long, value_parser = parse_dur)]
        hold_down: Option<Dur>,
        /// 0.0 to 1.0.
        #[arg(long)]
        panic_threshold: Option<f64>,
        #[arg(long, value_parser = parse_dur)]
        panic_window: Option<Dur>,
        #[arg(long)]
        json: bool,
    },
    /// Operator overrides of one endpoint: drain it out of DNS, undrain it.
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    /// Pause or resume every DNS provider write, cluster-wide.
    Dns {
        #[command(subcommand)]
        cmd: DnsCmd,
    },
    /// Change the cluster-wide catalog (pools, endpoints, decision settings).
    Pools {
        #[command(subcommand)]
        cmd: PoolsCmd,
    },
    /// Check a stopped node's data directory, or recover a node whose directory cannot be trusted.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
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

/// Where an issued certificate goes and how long it is valid.
#[derive(clap::Args, Debug)]
pub struct Issued {
    /// Where to write (default: the CA directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Start the validity this many days in the past (an expired certificate, for tests).
    #[arg(long, default_value_t = 0, hide = true)]
    pub backdate_days: u32,
}

#[derive(Subcommand, Debug)]
pub enum TlsCmd {
    /// Create the cluster's CA in DIR (ca.pem, ca.key 0600, cluster); never replaces one.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        /// The cluster name every certificate of this CA carries.
        #[arg(long)]
        cluster: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue node N's certificate (OUT/nodeN.pem, OUT/nodeN.key).
    Node {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u64,
        /// host:port (or host) the node is reached at, repeatable: IP or DNS names in the certificate.
        #[arg(long = "addr")]
        addrs: Vec<String>,
        #[command(flatten)]
        issued: Issued,
    },
    /// Issue a certificate for an operator or a reader (OUT/NAME.pem, OUT/NAME.key).
    Client {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        /// operator (every call) or reader (status, endpoints, history, watch).
        #[arg(long)]
        role: String,
        #[command(flatten)]
        issued: Issued,
    },
}

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Take ID out of DNS whatever the probes say (it is still probed). Refused when it holds the last record
    /// of a hostname, unless --force.
    Drain {
        id: String,
        #[arg(long, short)]
        addr: String,
        /// Why (goes in the history).
        #[arg(long)]
        reason: String,
        /// A maintenance window: undrained by itself after this long (e.g. "2h").
        #[arg(long, value_parser = parse_dur)]
        until: Option<Dur>,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Return ID to the quorum rule (its re-add waits for hold_down, as after any removal).
    Undrain {
        id: String,
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DnsCmd {
    /// Stop every provider write; decisions go on and `vantage plan` shows what is pending.
    Pause {
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Restart provider writes: the leader then writes what `plan` showed.
    Resume {
        #[arg(long, short)]
        addr: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PoolsCmd {
    /// Show the difference between FILE's catalog and the committed one; with --yes, apply it once for the
    /// whole cluster (as the committed version + 1, or FILE's catalog_version if higher).
    Apply {
        /// A node configuration file (validated whole); its pools and [decision] make the catalog.
        file: PathBuf,
        /// Any member of the cluster.
        #[arg(long, short)]
        addr: String,
        /// Apply it (without: show the difference only).
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Verify a stopped node's data directory against its guard file; changes nothing.
    Check {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove the node from the cluster, move its data directory aside, wait for its
    /// agent to come up empty and join it back (learner, then voter).
    Recover {
        /// The node's own configuration (its id, address and data directory).
        #[arg(long, short)]
        config: PathBuf,
        /// A working member of the cluster.
        #[arg(long, short)]
        addr: String,
        /// How long to wait for the agent to be started again.
        #[arg(long, default_value = "5m", value_parser = parse_dur)]
        wait: Dur,
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

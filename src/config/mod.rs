//! Agent configuration: a TOML file, parsed strictly and validated before any
//! port is bound.
//!
//! Every error names the file, the key and what was expected, e.g.
//! `node1.toml: raft.heartbeat_interval: expected a duration like "1s", got "fast"`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::types::NodeId;

mod decision;
mod dns;
mod observe;
mod pools;
mod probe;
mod tls;

pub use decision::DecisionConfig;
pub use dns::{CloudflareSection, DnsConfig, ProviderConfig, Rfc2136Section, Route53Section, ZonefileConfig};
pub use observe::{read_secret, HttpConfig, NotifyConfig, NotifyKind, NotifyOn, PAGERDUTY_URL};
pub use pools::{EndpointConfig, PoolConfig};
pub use probe::{
    Check, CheckConfig, ControlConfig, DnsCheck, DnsCheckConfig, EndpointSpec, GrpcTls, HttpCheck, HttpCheckConfig,
    JsonCondition, ProbeDefaults,
};
pub use tls::TlsConfig;

/// A configuration problem, always naming the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the file: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
}

/// A duration written as a human string ("250ms", "1s", "2m").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a duration string like \"1s\" or \"250ms\""))?;
        humantime::parse_duration(text.trim()).map(Dur).map_err(|_| {
            serde::de::Error::custom(format!("expected a duration like \"1s\" or \"250ms\", got {text:?}"))
        })
    }
}

impl Dur {
    /// Whole milliseconds, saturating (a validated duration is far below the limit).
    pub fn ms(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// One member of the cluster as the configuration lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Raft node id; unique in the list.
    pub id: NodeId,
    /// `host:port` where the member's gRPC server is reached by its peers.
    pub addr: String,
    /// Where the member probes from, for pools with `quorum = "regions"`.
    #[serde(default)]
    pub region: Option<String>,
}

/// Raft timing, snapshot and transport knobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// How often the leader sends heartbeats; must be well below the election timeout.
    pub heartbeat_interval: Dur,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min: Dur,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max: Dur,
    /// Deadline for one AppendEntries or Vote RPC to a peer.
    pub rpc_timeout: Dur,
    /// Deadline for establishing a TCP connection to a peer.
    pub connect_timeout: Dur,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the latest snapshot (for lagging followers).
    pub keep_logs: u64,
    /// Largest gRPC message accepted or sent, in bytes; snapshot chunks fit in it.
    pub max_message_bytes: usize,
    /// How long `cluster join` waits for a new node to catch up before giving up.
    pub join_timeout: Dur,
    /// How long a proposal may wait for a leader before it fails.
    pub propose_timeout: Dur,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            // Two heartbeats a second. openraft also gives every AppendEntries
            // this long to come back, so it must stay above the slowest round
            // trip between agents with a batch in it: at 250 ms a replica
            // 250 ms away could never be caught up after a partition (the
            // simulator's WAN seeds 404 and 571 at the old default).
            heartbeat_interval: Dur(Duration::from_millis(500)),
            // A follower waits `election_timeout_max` (openraft's leader lease)
            // plus a random timeout in [min, max) before it campaigns: 4.5-6 s.
            // Three lost heartbeats in a row are needed to start an election;
            // at 150 ms +/- 50 ms between agents and 1 % loss the simulator
            // saw no spurious leader change in hours (about 10 an hour at
            // 250 / 750 / 1500 ms).
            election_timeout_min: Dur(Duration::from_millis(1500)),
            election_timeout_max: Dur(Duration::from_millis(3000)),
            rpc_timeout: Dur(Duration::from_millis(1000)),
            connect_timeout: Dur(Duration::from_millis(500)),
            snapshot_every: 5000,
            keep_logs: 1000,
            max_message_bytes: 4 * 1024 * 1024,
            join_timeout: Dur(Duration::from_secs(60)),
            propose_timeout: Dur(Duration::from_secs(10)),
        }
    }
}

/// The whole agent configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent's Raft node id.
    pub node_id: NodeId,
    /// Socket address the gRPC server binds (peer and admin traffic).
    pub listen: String,
    /// `host:port` peers and clients use to reach this agent; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory holding the sled database (log, vote, snapshots). Relative
    /// paths are taken from the directory of the configuration file.
    pub data_dir: PathBuf,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Async runtime worker threads. One keeps an agent cheap (measured: less
    /// CPU per probe than two, with fewer cross-thread wake-ups); raise it for
    /// tens of thousands of endpoints.
    #[serde(default = "one")]
    pub worker_threads: usize,
    /// The cluster's voters as they are formed by `vantage cluster bootstrap`.
    /// A node that is not yet a member accepts Raft traffic only from these.
    pub members: Vec<MemberConfig>,
    #[serde(default)]
    pub raft: RaftConfig,
    /// Probe defaults shared by every pool.
    #[serde(default)]
    pub probe: ProbeDefaults,
    /// Monitored endpoints, grouped by the DNS hostnames they serve.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Targets this agent probes to judge its own network; when it cannot
    /// reach a majority of them it abstains instead of reporting endpoints down.
    #[serde(default)]
    pub control: Vec<ControlConfig>,
    /// The version of the pools and decision settings in this file. The
    /// cluster adopts a file's catalog only when this is higher than the
    /// committed one (on the leader, or on any node at SIGHUP); otherwise a
    /// differing file is reported as config drift.
    #[serde(default)]
    pub catalog_version: u64,
    /// The quorum rule and its guards.
    #[serde(default)]
    pub decision: DecisionConfig,
    /// The DNS provider the leader writes to.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Mutual TLS on every connection, peers and operators alike.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve and dial without TLS, trusting whatever a message claims. Only
    /// for a lab: without TLS and without this, the agent binds loopback only.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// `/metrics`, `/healthz`, `/readyz` and the status page.
    #[serde(default)]
    pub http: HttpConfig,
    /// Receivers of notifications, sent by the leader.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// `text` (the default) or `json`: one JSON object per log line.
    #[serde(default = "default_log_format")]
    pub log_format: String,

    /// The file this configuration was read from, for error messages.
    #[serde(skip)]
    pub source: String,
}

fn one() -> usize {
    1
}

fn default_log_format() -> String {
    "text".to_string()
}

fn default_log_level() -> String {
    "info".to_string()
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut config = Config::parse(&text, &file)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        if let Some(t) = config.tls.as_mut() {
            for p in [&mut t.ca, &mut t.cert, &mut t.key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        match &mut config.dns.provider {
            ProviderConfig::ZoneFile(z) if z.path.is_relative() => z.path = base.join(&z.path),
            ProviderConfig::Cloudflare(c) => {
                if let Some(f) = c.token_file.as_mut().filter(|f| f.is_relative()) {
                    *f = base.join(&*f);
                }
            }
            ProviderConfig::Route53(r) => {
                if let Some(f) = r.credentials_file.as_mut().filter(|f| f.is_relative()) {
                    *f = base.join(&*f);
                }
            }
            ProviderConfig::Rfc2136(r) => {
                if let Some(f) = r.tsig_secret_file.as_mut().filter(|f| f.is_relative()) {
                    *f = base.join(&*f);
                }
            }
            _ => {}
        }
        for n in config.notify.iter_mut() {
            for f in n.files_mut().filter(|f| f.is_relative()) {
                *f = base.join(&*f);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `file` is used in error messages only. Does not validate.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            let line = inner
                .span()
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            // serde reports an unknown key at the table that holds it; name the key itself.
            let key = match unknown_field(&message) {
                Some(field) if path == "." || path.is_empty() => field.to_string(),
                Some(field) if !path.ends_with(field) => format!("{path}.{field}"),
                _ => path,
            };
            if key == "." || key.is_empty() {
                ConfigError::Syntax {
                    file: file.to_string(),
                    message: format!("{message}{line}"),
                }
            } else {
                ConfigError::Invalid {
                    file: file.to_string(),
                    key: format!("{key}{line}"),
                    message,
                }
            }
        })?;
        config.source = file.to_string();
        Ok(config)
    }

    /// The address peers use to reach this agent.
    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// The listen address as a socket address (validated by [`Config::validate`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            self.invalid(
                "listen",
                format!("expected an address like \"127.0.0.1:7101\", got {:?}", self.listen),
            )
        })
    }

    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.source.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks every value; touches nothing but a probe file in `data_dir`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(self.invalid("node_id", "expected a positive integer, got 0"));
        }
        let listen = self.listen_addr()?;
        if let Some(adv) = &self.advertise {
            check_host_port(adv).map_err(|m| self.invalid("advertise", m))?;
        } else if listen.ip().is_unspecified() {
            return Err(self.invalid(
                "advertise",
                format!("required when listen is the wildcard address {listen}: peers need a routable host:port"),
            ));
        }
        self.validate_transport(listen)?;
        if self.worker_threads == 0 || self.worker_threads > 256 {
            return Err(self.invalid(
                "worker_threads",
                format!("expected 1 to 256 threads, got {}", self.worker_threads),
            ));
        }
        if self.members.is_empty() {
            return Err(self.invalid("members", "expected at least one [[members]] entry"));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let key = format!("members[{i}]");
            if m.id == 0 {
                return Err(self.invalid(&format!("{key}.id"), "expected a positive integer, got 0"));
            }
            if !ids.insert(m.id) {
                return Err(self.invalid(
                    &format!("{key}.id"),
                    format!("duplicate node id {}: every member needs its own id", m.id),
                ));
            }
            check_host_port(&m.addr).map_err(|msg| self.invalid(&format!("{key}.addr"), msg))?;
            if !addrs.insert(m.addr.as_str()) {
                return Err(self.invalid(
                    &format!("{key}.addr"),
                    format!("duplicate address {:?}: two members cannot share one", m.addr),
                ));
            }
            if m.id == self.node_id && m.addr != self.advertise_addr() {
                return Err(self.invalid(
                    &format!("{key}.addr"),
                    format!(
                        "this node (id {}) is listed at {:?} but advertises {:?}; they must match",
                        m.id,
                        m.addr,
                        self.advertise_addr()
                    ),
                ));
            }
        }
        if !ids.contains(&self.node_id) {
            return Err(self.invalid(
                "node_id",
                format!(
                    "node {} is not among [[members]] (ids {}): list this node there too, at the address its \
                     peers reach it at (a node that will join lists itself beside the current members)",
                    self.node_id,
                    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        self.validate_raft()?;
        self.validate_probes()?;
        self.validate_ranges()?;
        self.validate_decision()?;
        self.validate_dns()?;
        self.validate_observe()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(self.invalid(
                "log_format",
                format!("expected \"text\" or \"json\", got {:?}", self.log_format),
            ));
        }
        self.tls_material()?;
        self.check_data_dir()
    }

    /// Every duration and count has a documented range: a value outside it is
    /// a mistake (a unit slip, an extra digit) that would otherwise burn a
    /// core, hold an endpoint out for ever or overflow log-time arithmetic.
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        const MS: Duration = Duration::from_millis(1);
        const S: Duration = Duration::from_secs(1);
        const MIN: Duration = Duration::from_secs(60);
        const H: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let (r, p, d) = (&self.raft, &self.probe, &self.decision);
        let durations = [
            ("raft.heartbeat_interval", r.heartbeat_interval, 10 * MS, 10 * S),
            ("raft.election_timeout_min", r.election_timeout_min, 20 * MS, MIN),
            ("raft.election_timeout_max", r.election_timeout_max, 30 * MS, 2 * MIN),
            ("raft.rpc_timeout", r.rpc_timeout, 10 * MS, MIN),
            ("raft.connect_timeout", r.connect_timeout, 10 * MS, MIN),
            ("raft.join_timeout", r.join_timeout, S, H),
            ("raft.propose_timeout", r.propose_timeout, 100 * MS, 10 * MIN),
            ("probe.interval", p.interval, 10 * MS, H),
            ("probe.timeout", p.timeout, MS, H),
            ("probe.heartbeat", p.heartbeat, 100 * MS, H),
            ("probe.batch_window", p.batch_window, Duration::ZERO, 10 * S),
            ("decision.observation_ttl", d.observation_ttl, 200 * MS, DAY),
            ("decision.panic_window", d.panic_window, S, DAY),
            ("decision.hold_down", d.hold_down, Duration::ZERO, DAY),
            ("dns.reconcile_interval", self.dns.reconcile_interval, S, DAY),
        ];
        for (key, v, lo, hi) in durations {
            // A zero where zero is meaningless keeps its own, older message.
            if v.0.is_zero() && !lo.is_zero() {
                return Err(self.invalid(key, "expected a duration greater than zero, got 0"));
            }
            if v.0 < lo || v.0 > hi {
                return Err(self.invalid(
                    key,
                    format!("expected a duration from {} to {}, got {v}", Dur(lo), Dur(hi)),
                ));
            }
        }
        let counts: [(&str, u64, u64, u64); 8] = [
            ("raft.snapshot_every", r.snapshot_every, 1, 10_000_000),
            ("raft.keep_logs", r.keep_logs, 0, 10_000_000),
            ("raft.max_message_bytes", r.max_message_bytes as u64, 64 * 1024, 1 << 30),
            ("probe.fall", u64::from(p.fall), 1, 1000),
            ("probe.rise", u64::from(p.rise), 1, 1000),
            ("probe.max_concurrency", p.max_concurrency as u64, 1, 1 << 20),
            ("decision.history_limit", u64::from(d.history_limit), 1, 1_000_000),
            ("worker_threads", self.worker_threads as u64, 1, 256),
        ];
        for (key, v, lo, hi) in counts {
            if v < lo || v > hi {
                return Err(self.invalid(key, format!("expected {lo} to {hi}, got {v}")));
            }
        }
        Ok(())
    }

    fn validate_raft(&self) -> Result<(), ConfigError> {
        let r = &self.raft;
        for (key, d) in [
            ("raft.heartbeat_interval", r.heartbeat_interval),
            ("raft.election_timeout_min", r.election_timeout_min),
            ("raft.election_timeout_max", r.election_timeout_max),
            ("raft.rpc_timeout", r.rpc_timeout),
            ("raft.connect_timeout", r.connect_timeout),
            ("raft.join_timeout", r.join_timeout),
            ("raft.propose_timeout", r.propose_timeout),
        ] {
            if d.0.is_zero() {
                return Err(self.invalid(key, "expected a duration greater than zero, got 0"));
            }
        }
        if r.election_timeout_min <= r.heartbeat_interval {
            return Err(self.invalid(
                "raft.election_timeout_min",
                format!(
                    "expected more than raft.heartbeat_interval ({}), got {}",
                    r.heartbeat_interval, r.election_timeout_min
                ),
            ));
        }
        if r.election_timeout_max <= r.election_timeout_min {
            return Err(self.invalid(
                "raft.election_timeout_max",
                format!(
                    "expected more than raft.election_timeout_min ({}), got {}",
                    r.election_timeout_min, r.election_timeout_max
                ),
            ));
        }
        if r.snapshot_every == 0 {
            return Err(self.invalid("raft.snapshot_every", "expected a positive number of entries, got 0"));
        }
        if r.max_message_bytes < 64 * 1024 {
            return Err(self.invalid(
                "raft.max_message_bytes",
                format!("expected at least 65536 bytes, got {}", r.max_message_bytes),
            ));
        }
        Ok(())
    }

    fn check_data_dir(&self) -> Result<(), ConfigError> {
        let dir = &self.data_dir;
        let fail = |what: &str, e: std::io::Error| {
            self.invalid(
                "data_dir",
                format!("expected a writable directory; {what} {}: {e}", dir.display()),
            )
        };
        // Checked without creating anything: `config check` leaves no trace,
        // and the store creates the directory when the agent starts.
        let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("."));
        if !existing.is_dir() {
            return Err(self.invalid(
                "data_dir",
                format!("expected a directory, but {} is a file", existing.display()),
            ));
        }
        let probe = existing.join(format!(".vantage-write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"ok").map_err(|e| fail("cannot write in", e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }
}

/// Whether `h` is a syntactically valid DNS name (labels of letters, digits,
/// `-`, `_` and `*`).
pub(crate) fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        })
}

/// Checks `host:port` with a non-empty host and a numeric, non-zero port.
fn check_host_port(addr: &str) -> Result<(), String> {
    let expected = || format!("expected host:port like \"10.0.0.1:7101\", got {addr:?}");
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if port == 0 || !host_ok {
        return Err(expected());
    }
    Ok(())
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests;

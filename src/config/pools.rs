//! Pools, endpoints, checks and control targets: what an agent probes.
//!
//! The raw TOML shapes (`*Config`) are resolved into [`EndpointSpec`]s, with
//! pool defaults applied and every value checked, by [`Config::endpoints`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, Dur};
use crate::model::Decision;
use crate::types::{Catalog, CatalogEndpoint, CatalogPool};

/// Probe settings that pools inherit unless they override them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeDefaults {
    /// Time between two probes of one endpoint.
    pub interval: Dur,
    /// A probe that takes longer fails; at most `interval`.
    pub timeout: Dur,
    /// Consecutive failures before this agent sees an endpoint down.
    pub fall: u32,
    /// Consecutive successes before this agent sees an endpoint up.
    pub rise: u32,
    /// How often the agent proposes its full view (and proves it is alive).
    pub heartbeat: Dur,
    /// Probes in flight at once, across all endpoints.
    pub max_concurrency: usize,
    /// Transitions seen within this window share one log entry.
    pub batch_window: Dur,
}

impl Default for ProbeDefaults {
    fn default() -> Self {
        ProbeDefaults {
            interval: Dur(Duration::from_secs(1)),
            timeout: Dur(Duration::from_millis(800)),
            fall: 3,
            rise: 2,
            heartbeat: Dur(Duration::from_secs(5)),
            max_concurrency: 1024,
            batch_window: Dur(Duration::from_millis(20)),
        }
    }
}

/// A check as written in the configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CheckConfig {
    /// ICMP echo request/reply.
    Icmp {},
    /// A TCP connect to `port`.
    Tcp { port: u16 },
    /// An HTTP request.
    Http(HttpCheckConfig),
    /// An HTTPS request.
    Https(HttpCheckConfig),
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckConfig {
    /// Defaults to 80 for http and 443 for https.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// Host header (and TLS server name); defaults to the endpoint address.
    #[serde(default)]
    pub host: Option<String>,
    /// Accepted status codes: single codes ("204") or ranges ("200-299").
    #[serde(default = "default_expect")]
    pub expect_status: Vec<String>,
    /// A substring the response body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Verify the server certificate (https); turning it off is explicit.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Follow redirects (up to 5) instead of judging the redirect itself.
    #[serde(default)]
    pub follow_redirects: bool,
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_expect() -> Vec<String> {
    vec!["200-299".into()]
}
fn yes() -> bool {
    true
}

/// One monitored endpoint as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// IPv4 or IPv6 address; also the A/AAAA record content.
    pub address: String,
    /// Overrides the pool's check.
    #[serde(default)]
    pub check: Option<CheckConfig>,
}

/// A pool: endpoints that serve the same hostnames.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Unique name; part of every endpoint id (`pool/address`).
    pub name: String,
    /// DNS names whose A/AAAA records point at these endpoints.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub fall: Option<u32>,
    #[serde(default)]
    pub rise: Option<u32>,
    /// Default check of the pool's endpoints.
    #[serde(default)]
    pub check: Option<CheckConfig>,
    /// Endpoints kept in DNS even when more are decided down (the healthiest).
    #[serde(default)]
    pub min_healthy: u32,
    pub endpoints: Vec<EndpointConfig>,
}

/// Where the decided records are written (by the leader only).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// `none` (decide only), `zonefile` or `memory`.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Compute, log and record the changes, but write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// How often the leader re-reads the provider to repair drift.
    #[serde(default = "default_reconcile")]
    pub reconcile_interval: Dur,
    #[serde(default)]
    pub zonefile: Option<ZonefileConfig>,
    #[serde(default)]
    pub cloudflare: Option<CloudflareSection>,
}

/// The Cloudflare provider's settings. The credentials are never written
/// here: they come from an environment variable or a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSection {
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Zone name, e.g. "example.com"; every pool hostname must be inside it.
    pub zone: String,
    /// Skips the zone lookup when given.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// Environment variable holding an API token (default CLOUDFLARE_API_TOKEN).
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding an API token.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Legacy global-key authentication: environment variables for the email and key.
    #[serde(default)]
    pub email_env: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
    /// Set on created records.
    #[serde(default = "yes_proxied")]
    pub proxied: bool,
    /// 1 = automatic, else 30..86400.
    #[serde(default = "auto_ttl")]
    pub ttl: u32,
    #[serde(default = "default_comment")]
    pub comment: String,
    /// Operations per batch request: 200 on the Free plan, 3500 on paid plans.
    #[serde(default = "default_batch")]
    pub batch_limit: usize,
    #[serde(default = "yes_proxied")]
    pub use_batch: bool,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// At most this many requests start in any `rate_window` (Cloudflare: 1,200 per 5 minutes).
    #[serde(default = "default_rate")]
    pub rate_limit: u32,
    #[serde(default = "default_rate_window")]
    pub rate_window: Dur,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_api_base() -> String {
    "https://api.cloudflare.com/client/v4".into()
}
fn yes_proxied() -> bool {
    true
}
fn auto_ttl() -> u32 {
    1
}
fn default_comment() -> String {
    "managed by vantage".into()
}
fn default_batch() -> usize {
    200
}
fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_rate() -> u32 {
    1200
}
fn default_rate_window() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_attempts() -> u32 {
    5
}

fn default_provider() -> String {
    "none".into()
}
fn default_reconcile() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            provider: default_provider(),
            dry_run: false,
            reconcile_interval: default_reconcile(),
            zonefile: None,
            cloudflare: None,
        }
    }
}

/// The zone-file provider's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonefileConfig {
    /// The file to write; relative paths are taken from the configuration file's directory.
    pub path: std::path::PathBuf,
    /// Zone apex, e.g. "example.com"; every pool hostname must be inside it.
    pub origin: String,
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    /// NS targets; default "localhost." (out of zone, so it needs no glue).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// SOA contact; default "hostmaster.<origin>".
    #[serde(default)]
    pub hostmaster: Option<String>,
    /// Lines copied into the zone as they are (MX, TXT, other hosts…).
    #[serde(default)]
    pub static_records: Vec<String>,
}

fn default_zone_ttl() -> u32 {
    60
}

/// How the replicated decision is made; part of the catalog every replica applies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Counted observations needed to decide; defaults to a majority of the voters.
    pub quorum: Option<u32>,
    /// An agent's observations stop counting this long (log time) after its last report.
    pub observation_ttl: Dur,
    /// Decision of an endpoint before any quorum: "up" (as Goavail) or "unknown".
    pub initial: String,
    /// Share of all endpoints (0 < x <= 1) decided down within `panic_window`
    /// above which removals freeze.
    pub panic_threshold: f64,
    pub panic_window: Dur,
    /// An endpoint taken out of DNS returns only after being decided up this long.
    pub hold_down: Dur,
    /// Audit events kept in the replicated history.
    pub history_limit: u32,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            quorum: None,
            observation_ttl: Dur(Duration::from_secs(15)),
            initial: "up".into(),
            panic_threshold: 0.5,
            panic_window: Dur(Duration::from_secs(60)),
            hold_down: Dur(Duration::from_secs(30)),
            history_limit: 1000,
        }
    }
}

/// A control target: something this agent should always reach.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    pub address: String,
    pub check: CheckConfig,
}

/// A resolved HTTP(S) check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    pub tls: bool,
    pub port: u16,
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// Inclusive status ranges.
    pub expect: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    pub tls_verify: bool,
    pub follow_redirects: bool,
}

/// A resolved check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Icmp,
    Tcp { port: u16 },
    Http(HttpCheck),
}

impl Check {
    /// Short description for logs and the API, e.g. `tcp:443`.
    pub fn describe(&self) -> String {
        match self {
            Check::Icmp => "icmp".into(),
            Check::Tcp { port } => format!("tcp:{port}"),
            Check::Http(h) => format!(
                "{}:{} {} {}",
                if h.tls { "https" } else { "http" },
                h.port,
                h.method,
                h.path
            ),
        }
    }
}

/// One endpoint with everything resolved: what to probe, how and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// `pool/address`: the endpoint's identity in the log and the API.
    pub id: String,
    pub pool: String,
    pub addr: IpAddr,
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

fn parse_status_ranges(list: &[String]) -> Result<Vec<(u16, u16)>, String> {
    if list.is_empty() {
        return Err("expected at least one status code or range like \"200-299\"".into());
    }
    let mut out = Vec::new();
    for item in list {
        let bad = || format!("expected a status code like \"204\" or a range like \"200-299\" (100-599), got {item:?}");
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
            None => (item.trim().parse::<u16>(), item.trim().parse::<u16>()),
        };
        let (lo, hi) = (lo.map_err(|_| bad())?, hi.map_err(|_| bad())?);
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(bad());
        }
        out.push((lo, hi));
    }
    Ok(out)
}

fn valid_hostname(h: &str) -> bool {
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

impl Config {
    fn resolve_check(&self, key: &str, c: &CheckConfig) -> Result<Check, ConfigError> {
        Ok(match c {
            CheckConfig::Icmp {} => Check::Icmp,
            CheckConfig::Tcp { port } => {
                if *port == 0 {
                    return Err(self.invalid(&format!("{key}.port"), "expected a port from 1 to 65535, got 0"));
                }
                Check::Tcp { port: *port }
            }
            CheckConfig::Http(h) | CheckConfig::Https(h) => {
                let tls = matches!(c, CheckConfig::Https(_));
                let port = h.port.unwrap_or(if tls { 443 } else { 80 });
                if port == 0 {
                    return Err(self.invalid(&format!("{key}.port"), "expected a port from 1 to 65535, got 0"));
                }
                if h.method.is_empty() || !h.method.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(self.invalid(
                        &format!("{key}.method"),
                        format!("expected an HTTP method like \"GET\" or \"HEAD\", got {:?}", h.method),
                    ));
                }
                if !h.path.starts_with('/') {
                    return Err(self.invalid(
                        &format!("{key}.path"),
                        format!("expected a path starting with \"/\", got {:?}", h.path),
                    ));
                }
                if let Some(host) = &h.host {
                    if !valid_hostname(host) {
                        return Err(self.invalid(&format!("{key}.host"), format!("expected a DNS name, got {host:?}")));
                    }
                }
                let expect = parse_status_ranges(&h.expect_status)
                    .map_err(|m| self.invalid(&format!("{key}.expect_status"), m))?;
                Check::Http(HttpCheck {
                    tls,
                    port,
                    method: h.method.clone(),
                    path: h.path.clone(),
                    host: h.host.clone(),
                    expect,
                    body_contains: h.body_contains.clone(),
                    tls_verify: h.tls_verify,
                    follow_redirects: h.follow_redirects,
                })
            }
        })
    }

    fn parse_ip(&self, key: &str, text: &str) -> Result<IpAddr, ConfigError> {
        text.trim()
            .parse()
            .map_err(|_| self.invalid(key, format!("expected an IPv4 or IPv6 address, got {text:?}")))
    }

    /// Every configured endpoint, resolved, in configuration order.
    pub fn endpoints(&self) -> Result<Vec<EndpointSpec>, ConfigError> {
        let d = &self.probe;
        let mut out = Vec::new();
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (p, pool) in self.pools.iter().enumerate() {
            let pk = format!("pools[{p}]");
            if pool.name.is_empty() || pool.name.contains('/') || pool.name.chars().any(char::is_whitespace) {
                return Err(self.invalid(
                    &format!("{pk}.name"),
                    format!("expected a name without '/' or spaces, got {:?}", pool.name),
                ));
            }
            if !names.insert(pool.name.as_str()) {
                return Err(self.invalid(&format!("{pk}.name"), format!("duplicate pool name {:?}", pool.name)));
            }
            for (h, host) in pool.hostnames.iter().enumerate() {
                if !valid_hostname(host) {
                    return Err(self.invalid(
                        &format!("{pk}.hostnames[{h}]"),
                        format!("expected a DNS name like \"www.example.com\", got {host:?}"),
                    ));
                }
            }
            let interval = pool.interval.unwrap_or(d.interval);
            let timeout = pool.timeout.unwrap_or(d.timeout);
            let fall = pool.fall.unwrap_or(d.fall);
            let rise = pool.rise.unwrap_or(d.rise);
            let key = |k: &str| {
                if pool.interval.is_some() || pool.timeout.is_some() {
                    format!("{pk}.{k}")
                } else {
                    format!("probe.{k}")
                }
            };
            if interval.0.is_zero() {
                return Err(self.invalid(&key("interval"), "expected a duration greater than zero, got 0"));
            }
            if timeout.0.is_zero() || timeout > interval {
                return Err(self.invalid(
                    &key("timeout"),
                    format!(
                        "expected a duration greater than zero and at most the interval ({interval}), got {timeout}"
                    ),
                ));
            }
            for (k, v, set) in [("fall", fall, pool.fall.is_some()), ("rise", rise, pool.rise.is_some())] {
                if v == 0 {
                    let key = if set { format!("{pk}.{k}") } else { format!("probe.{k}") };
                    return Err(self.invalid(&key, "expected at least 1 consecutive probe, got 0"));
                }
            }
            if pool.endpoints.is_empty() {
                return Err(self.invalid(&format!("{pk}.endpoints"), "expected at least one endpoint"));
            }
            for (e, ep) in pool.endpoints.iter().enumerate() {
                let ek = format!("{pk}.endpoints[{e}]");
                let addr = self.parse_ip(&format!("{ek}.address"), &ep.address)?;
                let check = match (&ep.check, &pool.check) {
                    (Some(c), _) => self.resolve_check(&format!("{ek}.check"), c)?,
                    (None, Some(c)) => self.resolve_check(&format!("{pk}.check"), c)?,
                    (None, None) => {
                        return Err(self.invalid(
                            &format!("{ek}.check"),
                            "no check given, and the pool has no default check",
                        ))
                    }
                };
                let id = format!("{}/{}", pool.name, addr);
                if !ids.insert(id.clone()) {
                    return Err(self.invalid(&format!("{ek}.address"), format!("endpoint {id} is listed twice")));
                }
                out.push(EndpointSpec {
                    id,
                    pool: pool.name.clone(),
                    addr,
                    check,
                    interval: interval.0,
                    timeout: timeout.0,
                    fall,
                    rise,
                });
            }
        }
        Ok(out)
    }

    /// The control targets, resolved as endpoints of a pseudo-pool `control`
    /// that uses the probe defaults.
    pub fn control_targets(&self) -> Result<Vec<EndpointSpec>, ConfigError> {
        let d = &self.probe;
        let mut out = Vec::new();
        for (i, c) in self.control.iter().enumerate() {
            let key = format!("control[{i}]");
            let addr = self.parse_ip(&format!("{key}.address"), &c.address)?;
            let check = self.resolve_check(&format!("{key}.check"), &c.check)?;
            out.push(EndpointSpec {
                id: format!("control/{addr}/{}", check.describe().replace(' ', "")),
                pool: "control".into(),
                addr,
                check,
                interval: d.interval.0,
                timeout: d.timeout.0,
                fall: d.fall,
                rise: d.rise,
            });
        }
        Ok(out)
    }

    pub(super) fn validate_probes(&self) -> Result<(), ConfigError> {
        let d = &self.probe;
        if d.interval.0.is_zero() {
            return Err(self.invalid("probe.interval", "expected a duration greater than zero, got 0"));
        }
        if d.heartbeat.0.is_zero() {
            return Err(self.invalid("probe.heartbeat", "expected a duration greater than zero, got 0"));
        }
        if d.max_concurrency == 0 {
            return Err(self.invalid("probe.max_concurrency", "expected at least 1, got 0"));
        }
        if d.timeout.0.is_zero() || d.timeout > d.interval {
            return Err(self.invalid(
                "probe.timeout",
                format!(
                    "expected a duration greater than zero and at most probe.interval ({}), got {}",
                    d.interval, d.timeout
                ),
            ));
        }
        for (k, v) in [("probe.fall", d.fall), ("probe.rise", d.rise)] {
            if v == 0 {
                return Err(self.invalid(k, "expected at least 1 consecutive probe, got 0"));
            }
        }
        let endpoints = self.endpoints()?;
        self.control_targets()?;
        self.validate_decision(endpoints.len())
    }

    fn validate_decision(&self, endpoints: usize) -> Result<(), ConfigError> {
        let d = &self.decision;
        if let Some(q) = d.quorum {
            if q == 0 || q as usize > self.members.len() {
                return Err(self.invalid(
                    "decision.quorum",
                    format!("expected 1 to the number of voters ({}), got {q}", self.members.len()),
                ));
            }
        }
        if d.observation_ttl <= self.probe.heartbeat {
            return Err(self.invalid(
                "decision.observation_ttl",
                format!(
                    "expected more than probe.heartbeat ({}), or live agents would expire between heartbeats; got {}",
                    self.probe.heartbeat, d.observation_ttl
                ),
            ));
        }
        if d.initial != "up" && d.initial != "unknown" {
            return Err(self.invalid(
                "decision.initial",
                format!("expected \"up\" or \"unknown\", got {:?}", d.initial),
            ));
        }
        if !(d.panic_threshold > 0.0 && d.panic_threshold <= 1.0) {
            return Err(self.invalid(
                "decision.panic_threshold",
                format!(
                    "expected a share above 0 and at most 1 (1 turns the freeze off), got {}",
                    d.panic_threshold
                ),
            ));
        }
        if d.panic_window.0.is_zero() {
            return Err(self.invalid("decision.panic_window", "expected a duration greater than zero, got 0"));
        }
        if d.history_limit == 0 {
            return Err(self.invalid("decision.history_limit", "expected at least 1 event, got 0"));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (p, pool) in self.pools.iter().enumerate() {
            if pool.min_healthy as usize > pool.endpoints.len() {
                return Err(self.invalid(
                    &format!("pools[{p}].min_healthy"),
                    format!(
                        "expected at most the pool's {} endpoints, got {}",
                        pool.endpoints.len(),
                        pool.min_healthy
                    ),
                ));
            }
            for (h, host) in pool.hostnames.iter().enumerate() {
                if let Some(other) = seen.insert(host.as_str(), pool.name.as_str()) {
                    return Err(self.invalid(
                        &format!("pools[{p}].hostnames[{h}]"),
                        format!("{host:?} is already served by pool {other:?}; a hostname belongs to one pool"),
                    ));
                }
            }
        }
        let _ = endpoints;
        self.validate_dns()
    }

    /// Every pool hostname must lie inside the provider's zone.
    fn hostnames_inside(&self, zone: &str, key: &str) -> Result<(), ConfigError> {
        for (p, pool) in self.pools.iter().enumerate() {
            for (h, host) in pool.hostnames.iter().enumerate() {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if host != zone && !host.ends_with(&format!(".{zone}")) {
                    return Err(self.invalid(
                        &format!("pools[{p}].hostnames[{h}]"),
                        format!("{host:?} is outside the zone {zone:?} of {key}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_dns(&self) -> Result<(), ConfigError> {
        let d = &self.dns;
        match d.provider.as_str() {
            "none" | "memory" => {}
            "cloudflare" => {
                let Some(c) = &d.cloudflare else {
                    return Err(self.invalid(
                        "dns.cloudflare",
                        "provider \"cloudflare\" needs a [dns.cloudflare] table with at least zone",
                    ));
                };
                let zone = c.zone.trim_end_matches('.').to_ascii_lowercase();
                if !valid_hostname(&zone) {
                    return Err(self.invalid(
                        "dns.cloudflare.zone",
                        format!("expected a DNS name like \"example.com\", got {:?}", c.zone),
                    ));
                }
                if !(c.api_base.starts_with("https://") || c.api_base.starts_with("http://")) {
                    return Err(self.invalid(
                        "dns.cloudflare.api_base",
                        format!("expected an http(s) URL, got {:?}", c.api_base),
                    ));
                }
                if c.ttl != 1 && !(30..=86_400).contains(&c.ttl) {
                    return Err(self.invalid(
                        "dns.cloudflare.ttl",
                        format!("expected 1 (automatic) or 30 to 86400, got {}", c.ttl),
                    ));
                }
                if c.batch_limit == 0 {
                    return Err(self.invalid("dns.cloudflare.batch_limit", "expected at least 1, got 0"));
                }
                if c.rate_limit == 0 || c.rate_window.0.is_zero() {
                    return Err(self.invalid(
                        "dns.cloudflare.rate_limit",
                        "expected a positive number of requests per a positive rate_window",
                    ));
                }
                self.hostnames_inside(&zone, "dns.cloudflare.zone")?;
            }
            "zonefile" => {
                let Some(z) = &d.zonefile else {
                    return Err(self.invalid(
                        "dns.zonefile",
                        "provider \"zonefile\" needs a [dns.zonefile] table with path and origin",
                    ));
                };
                let origin = z.origin.trim_end_matches('.').to_ascii_lowercase();
                if !valid_hostname(&origin) {
                    return Err(self.invalid(
                        "dns.zonefile.origin",
                        format!("expected a DNS name like \"example.com\", got {:?}", z.origin),
                    ));
                }
                if z.ttl == 0 || z.ttl > 86_400 {
                    return Err(self.invalid(
                        "dns.zonefile.ttl",
                        format!("expected 1 to 86400 seconds, got {}", z.ttl),
                    ));
                }
                self.hostnames_inside(&origin, "dns.zonefile.origin")?;
            }
            other => {
                return Err(self.invalid(
                    "dns.provider",
                    format!("expected \"none\", \"zonefile\", \"cloudflare\" or \"memory\", got {other:?}"),
                ))
            }
        }
        if d.reconcile_interval.0.is_zero() {
            return Err(self.invalid("dns.reconcile_interval", "expected a duration greater than zero, got 0"));
        }
        Ok(())
    }

    /// The replicated catalog this configuration describes.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let d = &self.decision;
        let endpoints = self.endpoints()?;
        let pools = self
            .pools
            .iter()
            .map(|p| CatalogPool {
                name: p.name.clone(),
                hostnames: p
                    .hostnames
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                min_healthy: p.min_healthy,
                endpoints: endpoints
                    .iter()
                    .filter(|e| e.pool == p.name)
                    .map(|e| CatalogEndpoint {
                        id: e.id.clone(),
                        address: e.addr.to_string(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Catalog {
            quorum: d.quorum,
            observation_ttl_ms: d.observation_ttl.0.as_millis() as u64,
            initial: if d.initial == "unknown" {
                Decision::Unknown
            } else {
                Decision::Up
            },
            panic_threshold_ppm: (d.panic_threshold * 1_000_000.0).round() as u32,
            panic_window_ms: d.panic_window.0.as_millis() as u64,
            hold_down_ms: d.hold_down.0.as_millis() as u64,
            history_limit: d.history_limit,
            pools,
        })
    }
}

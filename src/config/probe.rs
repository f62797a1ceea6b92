//! What an agent probes and how: probe defaults, checks, control targets,
//! and their resolution into [`EndpointSpec`]s with every value checked.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{valid_hostname, Config, ConfigError, Dur};

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
    /// A probe slower than this fails, however it answered (off unless set).
    pub max_rtt: Option<Dur>,
    /// Rapid recheck: once a run toward a change has started (a failure
    /// while up, a success while down), the next probes of that endpoint come
    /// this long after the previous one ends instead of at the next interval.
    /// Off unless set.
    pub recheck_interval: Option<Dur>,
    /// A change of view also needs its run of probes to span at least this
    /// long (a floor under what rapid recheck counts as an outage).
    pub min_confirm: Option<Dur>,
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
            max_rtt: None,
            recheck_interval: None,
            min_confirm: None,
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
    /// `grpc.health.v1.Health/Check` over HTTP/2, plaintext or TLS: SERVING passes.
    Grpc {
        port: u16,
        /// The service asked about; empty: the server as a whole.
        #[serde(default)]
        service: String,
        /// Speak TLS (ALPN h2).
        #[serde(default)]
        tls: bool,
        /// The name the certificate must carry (and SNI); default: the address.
        #[serde(default)]
        host: Option<String>,
        /// Verify the server certificate; turning it off is explicit.
        #[serde(default = "yes")]
        tls_verify: bool,
        /// PEM file of the CAs to trust instead of the system's.
        #[serde(default)]
        ca_file: Option<String>,
    },
    /// A DNS query to the endpoint (UDP), judged by its answer code and,
    /// optionally, an address in the answer.
    Dns(DnsCheckConfig),
}

/// A DNS check as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsCheckConfig {
    #[serde(default = "dns_port")]
    pub port: u16,
    /// The name asked for.
    pub name: String,
    /// `A` or `AAAA`.
    #[serde(default = "dns_type", rename = "type")]
    pub rtype: String,
    /// The answer code that passes: NOERROR (default), NXDOMAIN, …
    #[serde(default = "dns_rcode")]
    pub expect_rcode: String,
    /// An address the answer must hold.
    #[serde(default)]
    pub expect_address: Option<String>,
}

fn dns_port() -> u16 {
    53
}
fn dns_type() -> String {
    "A".into()
}
fn dns_rcode() -> String {
    "NOERROR".into()
}

/// A JSON body condition: the value at `path` (dot-separated keys, numbers
/// index arrays) equals `equals`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonCondition {
    pub path: String,
    pub equals: toml::Value,
}

impl Eq for JsonCondition {}

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
    /// Response headers that must be present with these values (names are
    /// case-insensitive, values compared exactly).
    #[serde(default)]
    pub expect_headers: std::collections::BTreeMap<String, String>,
    /// Conditions on the JSON body, all of which must hold.
    #[serde(default)]
    pub json: Vec<JsonCondition>,
    /// https: a server certificate expiring within this fails the check.
    #[serde(default)]
    pub cert_expiry_fail: Option<Dur>,
    /// https: a server certificate expiring within this is reported (not a failure).
    #[serde(default)]
    pub cert_expiry_warn: Option<Dur>,
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
    /// Lower-case header name → expected value.
    pub expect_headers: Vec<(String, String)>,
    /// (path segments, expected JSON value).
    pub json: Vec<(Vec<String>, serde_json::Value)>,
    pub cert_expiry_fail: Option<Duration>,
    pub cert_expiry_warn: Option<Duration>,
}

/// A resolved DNS check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheck {
    pub port: u16,
    pub name: String,
    /// true: AAAA, false: A.
    pub aaaa: bool,
    /// The answer code that passes, upper case (`NOERROR`).
    pub rcode: String,
    pub address: Option<IpAddr>,
}

/// A resolved check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Icmp,
    Tcp {
        port: u16,
    },
    Http(HttpCheck),
    Grpc {
        port: u16,
        service: String,
        tls: Option<GrpcTls>,
    },
    Dns(DnsCheck),
}

/// How a gRPC check speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcTls {
    /// The name verified (and sent as SNI); None: the endpoint's address.
    pub host: Option<String>,
    pub verify: bool,
    /// The CAs trusted instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
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
            Check::Grpc { port, service, tls } => format!(
                "{}:{port} health{}{service}",
                if tls.is_some() { "grpcs" } else { "grpc" },
                if service.is_empty() { "" } else { " " }
            ),
            Check::Dns(d) => format!("dns:{} {} {}", d.port, d.name, if d.aaaa { "AAAA" } else { "A" }),
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
    /// A probe slower than this fails, however it answered.
    pub max_rtt: Option<Duration>,
    /// Spacing of the probes while a run toward a change is under way.
    pub recheck: Option<Duration>,
    /// The least time a run must span before it changes the view.
    pub min_confirm: Duration,
}

/// A TOML value as JSON, for comparing with a body.
fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect())
        }
    }
}

/// The answer codes a DNS check may expect.
pub const RCODES: [&str; 6] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];

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
                let mut expect_headers = Vec::new();
                for (name, value) in &h.expect_headers {
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                        return Err(self.invalid(
                            &format!("{key}.expect_headers"),
                            format!("expected header names like \"content-type\", got {name:?}"),
                        ));
                    }
                    expect_headers.push((name.to_ascii_lowercase(), value.clone()));
                }
                let mut json = Vec::new();
                for (i, j) in h.json.iter().enumerate() {
                    let segments: Vec<String> = j.path.split('.').map(str::to_string).collect();
                    if j.path.is_empty() || segments.iter().any(String::is_empty) {
                        return Err(self.invalid(
                            &format!("{key}.json[{i}].path"),
                            format!(
                                "expected dot-separated keys like \"status.db\" or \"items.0.state\", got {:?}",
                                j.path
                            ),
                        ));
                    }
                    json.push((segments, toml_to_json(&j.equals)));
                }
                for (k, v) in [
                    ("cert_expiry_fail", h.cert_expiry_fail),
                    ("cert_expiry_warn", h.cert_expiry_warn),
                ] {
                    if let Some(d) = v {
                        if !tls {
                            return Err(self.invalid(&format!("{key}.{k}"), "only for kind = \"https\""));
                        }
                        if d.0.is_zero() || d.0 > Duration::from_secs(3650 * 86_400) {
                            return Err(self.invalid(
                                &format!("{key}.{k}"),
                                format!("expected a duration from 1s to 3650 days, got {d}"),
                            ));
                        }
                    }
                }
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
                    expect_headers,
                    json,
                    cert_expiry_fail: h.cert_expiry_fail.map(|d| d.0),
                    cert_expiry_warn: h.cert_expiry_warn.map(|d| d.0),
                })
            }
            CheckConfig::Grpc {
                port,
                service,
                tls,
                host,
                tls_verify,
                ca_file,
            } => {
                if *port == 0 {
                    return Err(self.invalid(&format!("{key}.port"), "expected a port from 1 to 65535, got 0"));
                }
                let tls = if *tls {
                    if let Some(h) = host {
                        if !valid_hostname(h) && h.parse::<std::net::IpAddr>().is_err() {
                            return Err(self.invalid(
                                &format!("{key}.host"),
                                format!("expected a DNS name or an address, got {h:?}"),
                            ));
                        }
                    }
                    let ca_file = match ca_file {
                        Some(f) => {
                            let path = std::path::PathBuf::from(f);
                            crate::probe::grpc::read_roots(&path)
                                .map_err(|e| self.invalid(&format!("{key}.ca_file"), e))?;
                            Some(path)
                        }
                        None => None,
                    };
                    Some(GrpcTls {
                        host: host.clone(),
                        verify: *tls_verify,
                        ca_file,
                    })
                } else {
                    for (k, set) in [
                        ("host", host.is_some()),
                        ("ca_file", ca_file.is_some()),
                        ("tls_verify", !tls_verify),
                    ] {
                        if set {
                            return Err(self.invalid(&format!("{key}.{k}"), "applies only with tls = true"));
                        }
                    }
                    None
                };
                Check::Grpc {
                    port: *port,
                    service: service.clone(),
                    tls,
                }
            }
            CheckConfig::Dns(d) => {
                if d.port == 0 {
                    return Err(self.invalid(&format!("{key}.port"), "expected a port from 1 to 65535, got 0"));
                }
                if !valid_hostname(&d.name) {
                    return Err(self.invalid(&format!("{key}.name"), format!("expected a DNS name, got {:?}", d.name)));
                }
                let aaaa = match d.rtype.to_ascii_uppercase().as_str() {
                    "A" => false,
                    "AAAA" => true,
                    _ => {
                        return Err(self.invalid(
                            &format!("{key}.type"),
                            format!("expected \"A\" or \"AAAA\", got {:?}", d.rtype),
                        ))
                    }
                };
                let rcode = d.expect_rcode.to_ascii_uppercase();
                if !RCODES.contains(&rcode.as_str()) {
                    return Err(self.invalid(
                        &format!("{key}.expect_rcode"),
                        format!("expected one of {}, got {:?}", RCODES.join(", "), d.expect_rcode),
                    ));
                }
                let address = match &d.expect_address {
                    Some(a) => {
                        let ip = self.parse_ip(&format!("{key}.expect_address"), a)?;
                        if ip.is_ipv6() != aaaa {
                            return Err(self.invalid(
                                &format!("{key}.expect_address"),
                                format!(
                                    "{ip} cannot be in the answer to a {} query",
                                    if aaaa { "AAAA" } else { "A" }
                                ),
                            ));
                        }
                        Some(ip)
                    }
                    None => None,
                };
                Check::Dns(DnsCheck {
                    port: d.port,
                    name: d.name.trim_end_matches('.').to_string(),
                    aaaa,
                    rcode,
                    address,
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
            let max_rtt = pool.max_rtt.or(d.max_rtt);
            let recheck = pool.recheck_interval.or(d.recheck_interval);
            let min_confirm = pool.min_confirm.or(d.min_confirm);
            let own = |k: &str, set: bool| if set { format!("{pk}.{k}") } else { format!("probe.{k}") };
            if let Some(r) = recheck {
                if r.0 < Duration::from_millis(10) || r >= interval {
                    return Err(self.invalid(
                        &own("recheck_interval", pool.recheck_interval.is_some()),
                        format!("expected a duration from 10ms to below the interval ({interval}), got {r}"),
                    ));
                }
            }
            if let Some(m) = min_confirm {
                if m.0 > Duration::from_secs(3600) {
                    return Err(self.invalid(
                        &own("min_confirm", pool.min_confirm.is_some()),
                        format!("expected a duration up to 1h, got {m}"),
                    ));
                }
            }
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
            if interval.0 < Duration::from_millis(10) || interval.0 > Duration::from_secs(3600) {
                return Err(self.invalid(
                    &key("interval"),
                    format!("expected a duration from 10ms to 1h, got {interval}"),
                ));
            }
            for (k, v) in [("fall", fall), ("rise", rise)] {
                if v > 1000 {
                    return Err(self.invalid(&key(k), format!("expected 1 to 1000 consecutive probes, got {v}")));
                }
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
            if let Some(m) = max_rtt {
                if m.0.is_zero() || m >= timeout {
                    let k = if pool.max_rtt.is_some() {
                        format!("{pk}.max_rtt")
                    } else {
                        "probe.max_rtt".into()
                    };
                    return Err(self.invalid(
                        &k,
                        format!("expected a duration greater than zero and below the timeout ({timeout}), got {m}"),
                    ));
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
                    max_rtt: max_rtt.map(|m| m.0),
                    recheck: recheck.map(|r| r.0),
                    min_confirm: min_confirm.map(|m| m.0).unwrap_or_default(),
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
                max_rtt: None,
                recheck: None,
                min_confirm: Duration::ZERO,
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
        self.endpoints()?;
        self.control_targets()?;
        Ok(())
    }
}

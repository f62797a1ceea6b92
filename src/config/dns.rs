//! The DNS provider the leader writes to, and its settings.

use std::time::Duration;

use serde::Deserialize;

use super::{valid_hostname, Config, ConfigError, Dur};

/// Where the decided records are written (by the leader only).
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawDns")]
pub struct DnsConfig {
    pub provider: ProviderConfig,
    /// Compute, log and record the changes, but write nothing.
    pub dry_run: bool,
    /// How often the leader re-reads the provider to repair drift.
    pub reconcile_interval: Dur,
}

/// The provider and its settings: the shape is checked once, when the file
/// is read, so nothing downstream meets a provider without its table.
#[derive(Clone, Debug)]
pub enum ProviderConfig {
    /// Decide and record, write nothing.
    None,
    /// In memory (tests and experiments).
    Memory,
    ZoneFile(ZonefileConfig),
    Cloudflare(CloudflareSection),
    Route53(Route53Section),
    Rfc2136(Rfc2136Section),
}

/// `[dns]` as written: `provider = "…"` names which sub-table applies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default = "default_provider")]
    provider: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default = "default_reconcile")]
    reconcile_interval: Dur,
    #[serde(default)]
    zonefile: Option<ZonefileConfig>,
    #[serde(default)]
    cloudflare: Option<CloudflareSection>,
    #[serde(default)]
    route53: Option<Route53Section>,
    #[serde(default)]
    rfc2136: Option<Rfc2136Section>,
}

impl TryFrom<RawDns> for DnsConfig {
    type Error = String;

    fn try_from(r: RawDns) -> Result<Self, String> {
        let provider = match r.provider.as_str() {
            "none" => ProviderConfig::None,
            "memory" => ProviderConfig::Memory,
            "zonefile" => ProviderConfig::ZoneFile(
                r.zonefile
                    .ok_or("provider \"zonefile\" needs a [dns.zonefile] table with path and origin")?,
            ),
            "cloudflare" => ProviderConfig::Cloudflare(
                r.cloudflare
                    .ok_or("provider \"cloudflare\" needs a [dns.cloudflare] table with at least zone")?,
            ),
            "rfc2136" => ProviderConfig::Rfc2136(
                r.rfc2136
                    .ok_or("provider \"rfc2136\" needs a [dns.rfc2136] table with server, zone and the TSIG key")?,
            ),
            "route53" => ProviderConfig::Route53(
                r.route53
                    .ok_or("provider \"route53\" needs a [dns.route53] table with at least zone")?,
            ),
            other => return Err(format!(
                "provider: expected \"none\", \"zonefile\", \"cloudflare\", \"route53\", \"rfc2136\" or \"memory\", got {other:?}"
            )),
        };
        Ok(DnsConfig {
            provider,
            dry_run: r.dry_run,
            reconcile_interval: r.reconcile_interval,
        })
    }
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
    /// Environment variable holding an API token; CLOUDFLARE_API_TOKEN when
    /// neither it, `token_file` nor the legacy variables are given.
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
            provider: ProviderConfig::None,
            dry_run: false,
            reconcile_interval: default_reconcile(),
        }
    }
}

/// The Route 53 provider's settings. Credentials are never written here:
/// they come from the environment, a shared credentials file, the container
/// endpoint or the instance's role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Section {
    /// The hosted zone's name; every pool hostname must be inside it.
    pub zone: String,
    /// The hosted zone's id (`Z…`); skips the lookup by name.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// Between a public and a private zone of the same name: which one.
    #[serde(default)]
    pub private_zone: Option<bool>,
    /// TTL of record sets this provider creates (an existing set keeps its own).
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    #[serde(default = "default_route53_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// A profile of the shared credentials file (else AWS_PROFILE, else "default").
    #[serde(default)]
    pub profile: Option<String>,
    /// The shared credentials file (else AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials).
    #[serde(default)]
    pub credentials_file: Option<std::path::PathBuf>,
    /// Whether the instance metadata service (IMDSv2) may provide a role's credentials.
    #[serde(default = "yes_proxied")]
    pub instance_metadata: bool,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// How long a change is polled for INSYNC; "0s": not at all.
    #[serde(default = "default_insync")]
    pub insync_timeout: Dur,
}

/// The RFC 2136 provider's settings: the primary and a TSIG key whose secret
/// is in a file (mode 0600) or a variable, never here.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Section {
    /// The zone's primary, `address:port`.
    pub server: String,
    /// The zone; every pool hostname must be inside it.
    pub zone: String,
    pub tsig_key_name: String,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// A file holding the base64 secret (as `tsig-keygen` prints it).
    #[serde(default)]
    pub tsig_secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub tsig_secret_env: Option<String>,
    /// TTL of the records it adds.
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    /// Deadline of one exchange with the primary.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Dur,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}
fn default_dns_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

fn default_route53_endpoint() -> String {
    crate::dns::route53::DEFAULT_ENDPOINT.into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_insync() -> Dur {
    Dur(Duration::from_secs(60))
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

impl Config {
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

    pub(super) fn validate_dns(&self) -> Result<(), ConfigError> {
        let d = &self.dns;
        match &d.provider {
            ProviderConfig::None | ProviderConfig::Memory => {}
            ProviderConfig::Cloudflare(c) => {
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
                let bounds: [(&str, u64, u64, u64); 3] = [
                    ("dns.cloudflare.batch_limit", c.batch_limit as u64, 1, 10_000),
                    ("dns.cloudflare.max_attempts", u64::from(c.max_attempts), 1, 100),
                    ("dns.cloudflare.rate_limit", u64::from(c.rate_limit), 1, 1_000_000),
                ];
                for (key, v, lo, hi) in bounds {
                    if v < lo || v > hi {
                        return Err(self.invalid(key, format!("expected {lo} to {hi}, got {v}")));
                    }
                }
                for (key, v, lo, hi) in [
                    (
                        "dns.cloudflare.request_timeout",
                        c.request_timeout,
                        Duration::from_millis(100),
                        Duration::from_secs(300),
                    ),
                    (
                        "dns.cloudflare.rate_window",
                        c.rate_window,
                        Duration::from_secs(1),
                        Duration::from_secs(86_400),
                    ),
                ] {
                    if v.0 < lo || v.0 > hi {
                        return Err(self.invalid(
                            key,
                            format!("expected a duration from {} to {}, got {v}", Dur(lo), Dur(hi)),
                        ));
                    }
                }
                self.hostnames_inside(&zone, "dns.cloudflare.zone")?;
            }
            ProviderConfig::Rfc2136(r) => {
                let zone = r.zone.trim_end_matches('.').to_ascii_lowercase();
                if !valid_hostname(&zone) {
                    return Err(self.invalid(
                        "dns.rfc2136.zone",
                        format!("expected a DNS name like \"example.com\", got {:?}", r.zone),
                    ));
                }
                if r.server.parse::<std::net::SocketAddr>().is_err() {
                    return Err(self.invalid(
                        "dns.rfc2136.server",
                        format!(
                            "expected the primary's address like \"192.0.2.53:53\", got {:?}",
                            r.server
                        ),
                    ));
                }
                if !valid_hostname(&r.tsig_key_name) {
                    return Err(self.invalid(
                        "dns.rfc2136.tsig_key_name",
                        format!("expected a key name like \"vantage\", got {:?}", r.tsig_key_name),
                    ));
                }
                if crate::dns::rfc2136::algorithm(&r.tsig_algorithm).is_none() {
                    return Err(self.invalid(
                        "dns.rfc2136.tsig_algorithm",
                        format!(
                            "expected hmac-sha256, hmac-sha384 or hmac-sha512, got {:?}",
                            r.tsig_algorithm
                        ),
                    ));
                }
                match (&r.tsig_secret_file, &r.tsig_secret_env) {
                    (Some(_), Some(_)) => {
                        return Err(self.invalid(
                            "dns.rfc2136.tsig_secret_file",
                            "give tsig_secret_file or tsig_secret_env, not both",
                        ))
                    }
                    (None, None) => {
                        return Err(self.invalid("dns.rfc2136.tsig_secret_file", "required (or tsig_secret_env)"))
                    }
                    _ => {}
                }
                if r.ttl == 0 || r.ttl > 604_800 {
                    return Err(self.invalid(
                        "dns.rfc2136.ttl",
                        format!("expected 1 to 604800 seconds, got {}", r.ttl),
                    ));
                }
                if r.timeout.0 < Duration::from_millis(100) || r.timeout.0 > Duration::from_secs(300) {
                    return Err(self.invalid(
                        "dns.rfc2136.timeout",
                        format!("expected a duration from 100ms to 5m, got {}", r.timeout),
                    ));
                }
                self.hostnames_inside(&zone, "dns.rfc2136.zone")?;
            }
            ProviderConfig::Route53(r) => {
                let zone = r.zone.trim_end_matches('.').to_ascii_lowercase();
                if !valid_hostname(&zone) {
                    return Err(self.invalid(
                        "dns.route53.zone",
                        format!("expected a DNS name like \"example.com\", got {:?}", r.zone),
                    ));
                }
                if !(r.endpoint.starts_with("https://") || r.endpoint.starts_with("http://")) {
                    return Err(self.invalid(
                        "dns.route53.endpoint",
                        format!("expected an http(s) URL, got {:?}", r.endpoint),
                    ));
                }
                if r.ttl == 0 || r.ttl > 604_800 {
                    return Err(self.invalid(
                        "dns.route53.ttl",
                        format!("expected 1 to 604800 seconds, got {}", r.ttl),
                    ));
                }
                if !(1..=100).contains(&r.max_attempts) {
                    return Err(self.invalid(
                        "dns.route53.max_attempts",
                        format!("expected 1 to 100, got {}", r.max_attempts),
                    ));
                }
                for (key, v, lo, hi) in [
                    (
                        "dns.route53.request_timeout",
                        r.request_timeout,
                        Duration::from_millis(100),
                        Duration::from_secs(300),
                    ),
                    (
                        "dns.route53.insync_timeout",
                        r.insync_timeout,
                        Duration::ZERO,
                        Duration::from_secs(3600),
                    ),
                ] {
                    if v.0 < lo || v.0 > hi {
                        return Err(self.invalid(
                            key,
                            format!("expected a duration from {} to {}, got {v}", Dur(lo), Dur(hi)),
                        ));
                    }
                }
                self.hostnames_inside(&zone, "dns.route53.zone")?;
            }
            ProviderConfig::ZoneFile(z) => {
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
        }
        if d.reconcile_interval.0.is_zero() {
            return Err(self.invalid("dns.reconcile_interval", "expected a duration greater than zero, got 0"));
        }
        Ok(())
    }
}

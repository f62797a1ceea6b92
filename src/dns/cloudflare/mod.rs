//! Cloudflare DNS provider (API v4).
//!
//! Lists and writes only the A/AAAA records the configuration owns. Writes go
//! through `POST /zones/{id}/dns_records/batch` (deletes, then posts; all or
//! nothing per request) in chunks of `batch_limit` operations, falling back to
//! single `POST` / `DELETE` calls when the batch endpoint is unavailable.
//!
//! Robustness rules:
//! - every request (retries included) passes a sliding-window rate limiter, so
//!   at most `rate_limit.0` requests start in any `rate_limit.1` window;
//! - HTTP 429 honours `retry-after` (and holds back every other request too);
//! - reads are retried on 5xx, timeouts, connection errors and malformed bodies
//!   with capped exponential backoff and jitter;
//! - a write whose outcome is unknown is never resent blindly: the affected
//!   names are listed again, what is already done is reported as applied, and
//!   only the remainder is retried;
//! - credentials never appear in logs, errors or `Debug` output.

mod credentials;
mod http;
mod wire;
mod write;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use tokio::time::Instant;

pub use credentials::{Credentials, Secret};
pub use wire::{CODE_IDENTICAL_RECORD_EXISTS, CODE_RECORD_DOES_NOT_EXIST, CODE_RECORD_EXISTS};

use crate::dns::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};
use credentials::sensitive;
use http::{RateLimiter, Request};
use wire::{has_more_pages, normalize_name, parse_records, parse_zones, record_type, same_content, CfRecord, CfZone};

/// Cloudflare's API base URL.
/// The environment variable the API token is read from when the
/// configuration names no other source.
pub const DEFAULT_TOKEN_ENV: &str = "CLOUDFLARE_API_TOKEN";
pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";

/// Records requested per page when listing (the schema allows far more; 1000
/// keeps one page per hostname in practice while keeping responses small).
const LIST_PER_PAGE: u64 = 1000;

/// `GET /zones` allows at most 50 per page.
const ZONES_PER_PAGE: u64 = 50;

/// Safety stop for a server that never stops paginating.
const MAX_PAGES: u64 = 10_000;

/// Settings for one Cloudflare zone.
#[derive(Clone, Debug)]
pub struct CloudflareConfig {
    /// API base URL, default [`DEFAULT_API_BASE`].
    pub api_base: String,
    /// The zone, e.g. `example.com`.
    pub zone_name: String,
    /// The zone's id; when given, the lookup by name is skipped.
    pub zone_id: Option<String>,
    pub credentials: Credentials,
    /// Set on created records.
    pub proxied: bool,
    /// Set on created records: 1 = automatic, else 30..=86400.
    pub ttl: u32,
    /// Set on created records to mark them as managed by Vantage (empty: none).
    pub comment: String,
    /// Operations per batch request (200 on the Free plan, 3500 on paid plans).
    pub batch_limit: usize,
    /// Use the batch endpoint; single calls are used when it is unavailable.
    pub use_batch: bool,
    /// Whole-request timeout (connect, send, receive the body).
    pub request_timeout: Duration,
    /// At most `.0` requests start in any `.1` window (Cloudflare: 1200 per 300 s).
    pub rate_limit: (u32, Duration),
    /// Attempts per call for transient failures (at least 1).
    pub max_attempts: u32,
    /// Extra headers sent on every request.
    pub extra_headers: Vec<(String, String)>,
}

impl CloudflareConfig {
    /// A configuration with the defaults: Cloudflare's API, zone looked up by
    /// name, not proxied, TTL 60, comment "managed by vantage", batches of 200,
    /// 30 s timeout, 1200 requests per 300 s, 5 attempts.
    pub fn new(zone_name: impl Into<String>, credentials: Credentials) -> CloudflareConfig {
        CloudflareConfig {
            api_base: DEFAULT_API_BASE.to_string(),
            zone_name: zone_name.into(),
            zone_id: None,
            credentials,
            proxied: false,
            ttl: 60,
            comment: "managed by vantage".to_string(),
            batch_limit: 200,
            use_batch: true,
            request_timeout: Duration::from_secs(30),
            rate_limit: (1200, Duration::from_secs(300)),
            max_attempts: 5,
            extra_headers: Vec::new(),
        }
    }
}

/// Request counters since the client was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// HTTP requests started (retries included).
    pub requests: u64,
    /// Requests that repeated an earlier attempt (including write rounds after re-listing).
    pub retries: u64,
    /// HTTP 429 answers seen.
    pub rate_limited: u64,
    /// Writes whose outcome was unknown and had to be checked by listing again.
    pub ambiguous_writes: u64,
    /// Times the batch endpoint was found unavailable and single calls were used.
    pub batch_fallbacks: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    ambiguous_writes: AtomicU64,
    batch_fallbacks: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Cloudflare DNS provider for one zone.
pub struct Cloudflare {
    cfg: CloudflareConfig,
    http: reqwest::Client,
    auth: HeaderMap,
    extra: HeaderMap,
    context: StdMutex<Option<(u64, u64)>>,
    zone_id: tokio::sync::OnceCell<String>,
    limiter: RateLimiter,
    batch_off_until: StdMutex<Option<Instant>>,
    counters: Counters,
}

impl fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloudflare")
            .field("config", &self.cfg)
            .field("zone_id", &self.zone_id.get())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Cloudflare {
    /// Checks the configuration and builds the client (no request is made).
    pub fn new(mut cfg: CloudflareConfig) -> Result<Cloudflare, String> {
        cfg.api_base = cfg.api_base.trim().trim_end_matches('/').to_string();
        if !(cfg.api_base.starts_with("https://") || cfg.api_base.starts_with("http://")) {
            return Err(format!("cloudflare: api_base {:?} is not an http(s) URL", cfg.api_base));
        }
        cfg.zone_name = normalize_name(&cfg.zone_name);
        if cfg.zone_name.is_empty() {
            return Err("cloudflare: zone_name is empty".to_string());
        }
        if let Some(id) = &cfg.zone_id {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err("cloudflare: zone_id must be a non-empty identifier".to_string());
            }
        }
        if cfg.ttl != 1 && !(30..=86400).contains(&cfg.ttl) {
            return Err(format!(
                "cloudflare: ttl {} must be 1 (automatic) or 30..=86400",
                cfg.ttl
            ));
        }
        if cfg.batch_limit == 0 {
            return Err("cloudflare: batch_limit must be at least 1".to_string());
        }
        if cfg.rate_limit.0 == 0 || cfg.rate_limit.1.is_zero() {
            return Err("cloudflare: rate_limit must allow at least one request in a non-zero window".to_string());
        }
        if cfg.max_attempts == 0 {
            return Err("cloudflare: max_attempts must be at least 1".to_string());
        }
        if cfg.request_timeout.is_zero() {
            return Err("cloudflare: request_timeout must be positive".to_string());
        }

        let mut auth = HeaderMap::new();
        match &cfg.credentials {
            Credentials::Token(t) => {
                auth.insert(
                    AUTHORIZATION,
                    sensitive(&format!("Bearer {}", t.expose()), "API token")?,
                );
            }
            Credentials::Legacy { email, key } => {
                auth.insert(HeaderName::from_static("x-auth-email"), sensitive(email, "email")?);
                auth.insert(
                    HeaderName::from_static("x-auth-key"),
                    sensitive(key.expose(), "API key")?,
                );
            }
        }
        let mut extra = HeaderMap::new();
        for (k, v) in &cfg.extra_headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("cloudflare: extra header name {k:?} is not valid"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("cloudflare: extra header {k:?} has an invalid value"))?;
            extra.append(name, value);
        }

        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vantage-cloudflare/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cloudflare: building the HTTP client: {e}"))?;

        Ok(Cloudflare {
            limiter: RateLimiter::new(cfg.rate_limit.0, cfg.rate_limit.1),
            cfg,
            http,
            auth,
            extra,
            context: StdMutex::new(None),
            zone_id: tokio::sync::OnceCell::new(),
            batch_off_until: StdMutex::new(None),
            counters: Counters::default(),
        })
    }

    /// Sets the `x-vantage-node` / `x-vantage-term` headers sent from now on.
    pub fn set_context(&self, node: u64, term: u64) {
        *lock(&self.context) = Some((node, term));
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            ambiguous_writes: c.ambiguous_writes.load(Ordering::Relaxed),
            batch_fallbacks: c.batch_fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Removes any credential text from `s` (belt and braces: error text may quote server answers).
    fn redact(&self, s: String) -> String {
        let secret = self.cfg.credentials.secret();
        if secret.is_empty() || !s.contains(secret) {
            s
        } else {
            s.replace(secret, "<redacted>")
        }
    }

    fn transient(&self, msg: String) -> ProviderError {
        ProviderError::Transient(self.redact(msg))
    }

    fn permanent(&self, msg: String) -> ProviderError {
        ProviderError::Permanent(self.redact(msg))
    }

    /// The zone id: from the configuration, or looked up by name once.
    async fn zone(&self) -> Result<String, ProviderError> {
        if let Some(id) = &self.cfg.zone_id {
            return Ok(id.clone());
        }
        self.zone_id.get_or_try_init(|| self.lookup_zone()).await.cloned()
    }

    async fn lookup_zone(&self) -> Result<String, ProviderError> {
        let what = format!("looking up zone {}", self.cfg.zone_name);
        let req = Request {
            method: Method::GET,
            path: "/zones".to_string(),
            query: vec![
                ("name", self.cfg.zone_name.clone()),
                ("per_page", ZONES_PER_PAGE.to_string()),
            ],
            body: None,
            write: false,
            what: &what,
        };
        let env = self.read(&req).await.map_err(|e| match e {
            ProviderError::Permanent(m) => ProviderError::Permanent(format!(
                "{m} (a token without Zone:Read needs zone_id in the configuration)"
            )),
            t => t,
        })?;
        let zones = parse_zones(env.result).map_err(|e| self.transient(format!("{what}: {e}")))?;
        let matching: Vec<&CfZone> = zones
            .iter()
            .filter(|z| z.name.eq_ignore_ascii_case(&self.cfg.zone_name))
            .collect();
        match matching.as_slice() {
            [z] => {
                tracing::info!(zone = %self.cfg.zone_name, id = %z.id, "cloudflare zone found");
                Ok(z.id.clone())
            }
            [] => Err(self.permanent(format!("{what}: no such zone visible to these credentials"))),
            many => Err(self.permanent(format!("{what}: {} zones match; set zone_id", many.len()))),
        }
    }

    /// Every record named `name` of type `rtype`, all pages.
    async fn list_raw(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<CfRecord>, ProviderError> {
        let what = format!("listing {} records of {name}", rtype.as_str());
        let mut out: Vec<CfRecord> = Vec::new();
        let mut seen_ids = BTreeSet::new();
        let mut page = 1;
        loop {
            let req = Request {
                method: Method::GET,
                path: format!("/zones/{zone}/dns_records"),
                query: vec![
                    ("type", rtype.as_str().to_string()),
                    ("name", name.to_string()),
                    ("match", "all".to_string()),
                    ("page", page.to_string()),
                    ("per_page", LIST_PER_PAGE.to_string()),
                ],
                body: None,
                write: false,
                what: &what,
            };
            let env = self.read(&req).await?;
            let info = env.result_info;
            let records = parse_records(env.result).map_err(|e| self.transient(format!("{what}: page {page}: {e}")))?;
            let got = records.len();
            for r in records {
                // Keep exact matches only, even if the server ignored a filter.
                if normalize_name(&r.name) == name
                    && record_type(&r.rtype) == Some(rtype)
                    && seen_ids.insert(r.id.clone())
                {
                    out.push(r);
                }
            }
            if !has_more_pages(info.as_ref(), page, got, LIST_PER_PAGE) {
                return Ok(out);
            }
            page += 1;
            if page > MAX_PAGES {
                return Err(self.transient(format!("{what}: more than {MAX_PAGES} pages")));
            }
        }
    }

    fn in_zone(&self, name: &str) -> bool {
        let zone = &self.cfg.zone_name;
        name == zone
            || (name.len() > zone.len()
                && name.ends_with(zone.as_str())
                && name[..name.len() - zone.len()].ends_with('.'))
    }
}

#[tonic::async_trait]
impl Provider for Cloudflare {
    fn set_context(&self, node: u64, term: u64) {
        Cloudflare::set_context(self, node, term);
    }

    fn rate_limited(&self) -> u64 {
        self.stats().rate_limited
    }

    fn describe(&self) -> String {
        format!("cloudflare zone {}", self.cfg.zone_name)
    }

    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        if owned.names.is_empty() {
            return Ok(Vec::new());
        }
        let zone = self.zone().await?;
        let mut out = Vec::new();
        for (name, addresses) in &owned.names {
            let norm = normalize_name(name);
            if !self.in_zone(&norm) {
                tracing::warn!("{name} is not in zone {}; not listed", self.cfg.zone_name);
                continue;
            }
            let types: BTreeSet<RecordType> = addresses.iter().map(|a| RecordType::of(a)).collect();
            for rtype in types {
                for r in self.list_raw(&zone, &norm, rtype).await? {
                    let Some(content) = r.content else { continue };
                    // Report the configured spelling of an address Cloudflare may have canonicalised.
                    let content = addresses
                        .iter()
                        .find(|a| same_content(a, &content))
                        .cloned()
                        .unwrap_or(content);
                    let record = Record {
                        name: name.clone(),
                        rtype,
                        content,
                    };
                    if owned.owns(&record) {
                        out.push(Existing { record, id: r.id });
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        self.apply_changes(changes).await
    }
}

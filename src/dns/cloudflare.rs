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

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::dns::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};

/// Cloudflare's API base URL.
pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";

/// Records requested per page when listing (the schema allows far more; 1000
/// keeps one page per hostname in practice while keeping responses small).
const LIST_PER_PAGE: u64 = 1000;
/// `GET /zones` allows at most 50 per page.
const ZONES_PER_PAGE: u64 = 50;
/// Safety stop for a server that never stops paginating.
const MAX_PAGES: u64 = 10_000;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// After the batch endpoint is found unavailable, single calls are used for this long before trying it again.
const BATCH_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Longest piece of an unparseable error body quoted in an error message.
const SNIPPET_LEN: usize = 200;

/// "The record already exists."
pub const CODE_RECORD_EXISTS: i64 = 81057;
/// "An identical record already exists."
pub const CODE_IDENTICAL_RECORD_EXISTS: i64 = 81058;
/// "Record does not exist."
pub const CODE_RECORD_DOES_NOT_EXIST: i64 = 81044;
/// Error codes meaning the credentials are wrong or lack permission.
const AUTH_CODES: &[i64] = &[6003, 6111, 9103, 9106, 9107, 9109, 10000, 10001];

// ---------------------------------------------------------------------------
// Secrets and credentials
// ---------------------------------------------------------------------------

/// A credential. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; only for building request headers.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>` (preferred: a token scoped to Zone.DNS:Edit).
    Token(Secret),
    /// Legacy global key: `X-Auth-Email` + `X-Auth-Key`.
    Legacy { email: String, key: Secret },
}

impl Credentials {
    /// Reads credentials, in this order: the API token from environment variable
    /// `token_env`; the API token from `token_file` (surrounding whitespace
    /// trimmed); the legacy email and key from `email_env` and `key_env`.
    /// Unset or empty variables are skipped; an unreadable or empty token file is
    /// an error. Errors name the variable or file, never the value.
    pub fn from_env_or_file(
        token_env: Option<&str>,
        token_file: Option<&Path>,
        email_env: Option<&str>,
        key_env: Option<&str>,
    ) -> Result<Credentials, String> {
        let mut tried = Vec::new();
        if let Some(var) = token_env {
            match read_env(var)? {
                Some(token) => {
                    check_header_safe(&token).map_err(|e| format!("environment variable {var}: {e}"))?;
                    return Ok(Credentials::Token(Secret(token)));
                }
                None => tried.push(format!("environment variable {var} is not set or empty")),
            }
        }
        if let Some(path) = token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("API token file {}: cannot read: {}", path.display(), e.kind()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(format!("API token file {}: empty", path.display()));
            }
            check_header_safe(token).map_err(|e| format!("API token file {}: {e}", path.display()))?;
            return Ok(Credentials::Token(Secret(token.to_string())));
        }
        match (email_env, key_env) {
            (Some(evar), Some(kvar)) => match (read_env(evar)?, read_env(kvar)?) {
                (Some(email), Some(key)) => {
                    check_header_safe(&email).map_err(|e| format!("environment variable {evar}: {e}"))?;
                    check_header_safe(&key).map_err(|e| format!("environment variable {kvar}: {e}"))?;
                    return Ok(Credentials::Legacy {
                        email,
                        key: Secret(key),
                    });
                }
                (None, None) => tried.push(format!("environment variables {evar} and {kvar} are not set or empty")),
                (None, Some(_)) => {
                    return Err(format!(
                        "environment variable {evar} is not set or empty (needed with {kvar})"
                    ))
                }
                (Some(_), None) => {
                    return Err(format!(
                        "environment variable {kvar} is not set or empty (needed with {evar})"
                    ))
                }
            },
            (Some(var), None) | (None, Some(var)) => {
                return Err(format!(
                    "legacy credentials need both an email and a key variable; only {var} was named"
                ))
            }
            (None, None) => {}
        }
        if tried.is_empty() {
            Err("no Cloudflare credentials configured (name a token variable, a token file, or email and key variables)"
                .to_string())
        } else {
            Err(format!("no Cloudflare credentials found: {}", tried.join("; ")))
        }
    }

    fn secret(&self) -> &str {
        match self {
            Credentials::Token(t) => t.expose(),
            Credentials::Legacy { key, .. } => key.expose(),
        }
    }
}

fn read_env(var: &str) -> Result<Option<String>, String> {
    match std::env::var(var) {
        Ok(v) => {
            let v = v.trim();
            Ok(if v.is_empty() { None } else { Some(v.to_string()) })
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("environment variable {var} is not valid UTF-8")),
    }
}

fn check_header_safe(value: &str) -> Result<(), String> {
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("contains whitespace or characters not allowed in an HTTP header".to_string())
    }
}

// ---------------------------------------------------------------------------
// Configuration and statistics
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------

/// Sliding-window limiter: remembers the start times of the last `max`
/// requests and lets a new one start only when the oldest of them is at least
/// `window` old. Waiters queue in order (the async mutex is fair). A 429 can
/// additionally hold every request back until a given instant.
struct RateLimiter {
    max: usize,
    window: Duration,
    starts: tokio::sync::Mutex<VecDeque<Instant>>,
    blocked_until: StdMutex<Option<Instant>>,
}

impl RateLimiter {
    fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max: max as usize,
            window,
            starts: tokio::sync::Mutex::new(VecDeque::with_capacity(max.min(4096) as usize)),
            blocked_until: StdMutex::new(None),
        }
    }

    /// Waits until a request may start, and records it as started.
    async fn acquire(&self) {
        let mut starts = self.starts.lock().await;
        loop {
            let now = Instant::now();
            let blocked = *lock(&self.blocked_until);
            if let Some(until) = blocked.filter(|u| *u > now) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            while starts.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                starts.pop_front();
            }
            if starts.len() < self.max {
                starts.push_back(now);
                return;
            }
            let oldest = *starts.front().unwrap_or(&now);
            tokio::time::sleep_until(oldest + self.window).await;
        }
    }

    /// Holds every request back for `wait` from now (never shortens an earlier hold).
    fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut b = lock(&self.blocked_until);
        if b.is_none_or(|old| old < until) {
            *b = Some(until);
        }
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------

/// One entry of `errors` / `messages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
struct CfMessage {
    #[serde(default, deserialize_with = "lenient_code")]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_chain: Option<Vec<CfMessage>>,
}

impl fmt::Display for CfMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)?;
        for c in self.error_chain.iter().flatten() {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

fn lenient_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match &v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

#[derive(Debug, Default, Deserialize)]
struct ResultInfo {
    #[serde(default)]
    page: Option<f64>,
    #[serde(default)]
    per_page: Option<f64>,
    #[serde(default)]
    total_count: Option<f64>,
    #[serde(default)]
    total_pages: Option<f64>,
}

/// The response envelope every endpoint uses.
#[derive(Debug, Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Option<Vec<CfMessage>>,
    #[serde(default)]
    result: serde_json::Value,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

/// A DNS record as listed; only the fields used here (others are ignored).
#[derive(Clone, Debug, Deserialize)]
struct CfRecord {
    id: String,
    #[serde(rename = "type")]
    rtype: String,
    name: String,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct CfZone {
    id: String,
    name: String,
}

#[derive(Debug, Serialize)]
struct PostRecord<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    rtype: &'static str,
    content: &'a str,
    ttl: u32,
    proxied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct DeleteId<'a> {
    id: &'a str,
}

#[derive(Debug, Serialize)]
struct BatchBody<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deletes: Vec<DeleteId<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    posts: Vec<PostRecord<'a>>,
}

fn parse_envelope(body: &[u8]) -> Result<Envelope, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed response body ({} bytes): {e}", body.len()))
}

fn parse_records(result: serde_json::Value) -> Result<Vec<CfRecord>, String> {
    if result.is_null() {
        return Err("response has no result".to_string());
    }
    serde_json::from_value(result).map_err(|e| format!("malformed record list: {e}"))
}

fn parse_zones(result: serde_json::Value) -> Result<Vec<CfZone>, String> {
    if result.is_null() {
        return Err("response has no result".to_string());
    }
    serde_json::from_value(result).map_err(|e| format!("malformed zone list: {e}"))
}

/// Whether another page follows page `page` (which held `got` items).
fn has_more_pages(info: Option<&ResultInfo>, page: u64, got: usize, requested_per_page: u64) -> bool {
    if got == 0 {
        return false;
    }
    let Some(ri) = info else { return false };
    if let Some(tp) = ri.total_pages {
        return (page as f64) < tp;
    }
    if let (Some(tc), Some(pp)) = (ri.total_count, ri.per_page.or(Some(requested_per_page as f64))) {
        let current = ri.page.unwrap_or(page as f64);
        return current * pp < tc;
    }
    got as u64 >= requested_per_page
}

fn fmt_errors(errors: &[CfMessage]) -> String {
    if errors.is_empty() {
        "no error details".to_string()
    } else {
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
    }
}

fn has_code(errors: &[CfMessage], codes: &[i64]) -> bool {
    errors
        .iter()
        .any(|e| codes.contains(&e.code) || e.error_chain.as_deref().is_some_and(|c| has_code(c, codes)))
}

fn is_auth_failure(status: u16, errors: &[CfMessage]) -> bool {
    status == 401 || status == 403 || has_code(errors, AUTH_CODES)
}

/// Whether two record contents are the same (addresses compared as addresses).
fn same_content(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn record_type(s: &str) -> Option<RecordType> {
    match s {
        "A" => Some(RecordType::A),
        "AAAA" => Some(RecordType::AAAA),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Request plumbing
// ---------------------------------------------------------------------------

/// How one HTTP call ended after its own retries.
#[derive(Debug)]
enum CallError {
    /// Cloudflare refused (4xx other than 429, or `success: false`): nothing was done.
    Api { status: u16, errors: Vec<CfMessage> },
    /// Transient, and the request certainly had no effect (connection refused, 429).
    NotSent(String),
    /// Transient, and a write may or may not have taken effect.
    Ambiguous(String),
}

/// How one HTTP attempt ended.
enum Attempt {
    Done(Envelope),
    Refused {
        status: u16,
        errors: Vec<CfMessage>,
    },
    RateLimited(Option<Duration>),
    /// `sent`: the server may have processed the request.
    Transient {
        msg: String,
        sent: bool,
    },
}

struct Request<'a> {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    /// A write: never resent after an ambiguous failure.
    write: bool,
    what: &'a str,
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
    rng: StdMutex<u64>,
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

        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x2545_f491_4f6c_dd1d)
            ^ 0x9e37_79b9_7f4a_7c15;
        Ok(Cloudflare {
            limiter: RateLimiter::new(cfg.rate_limit.0, cfg.rate_limit.1),
            cfg,
            http,
            auth,
            extra,
            context: StdMutex::new(None),
            zone_id: tokio::sync::OnceCell::new(),
            batch_off_until: StdMutex::new(None),
            rng: StdMutex::new(seed.max(1)),
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

    fn next_random(&self) -> u64 {
        let mut x = lock(&self.rng);
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Capped exponential backoff with jitter: a random wait in [d/2, d] for
    /// d = min(200 ms * 2^(attempt-1), 10 s).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(BACKOFF_CAP);
        let half = exp / 2;
        let span = half.as_millis() as u64 + 1;
        half + Duration::from_millis(self.next_random() % span)
    }

    fn headers(&self, has_body: bool) -> HeaderMap {
        let mut h = self.auth.clone();
        for (k, v) in &self.extra {
            h.append(k.clone(), v.clone());
        }
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if has_body {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some((node, term)) = *lock(&self.context) {
            h.insert(HeaderName::from_static("x-vantage-node"), HeaderValue::from(node));
            h.insert(HeaderName::from_static("x-vantage-term"), HeaderValue::from(term));
        }
        h
    }

    /// One HTTP attempt, classified.
    async fn attempt(&self, req: &Request<'_>) -> Attempt {
        let url = format!("{}{}", self.cfg.api_base, req.path);
        let mut rb = self
            .http
            .request(req.method.clone(), &url)
            .headers(self.headers(req.body.is_some()));
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                // A failed connect means nothing reached the server.
                let sent = !e.is_connect();
                let kind = if e.is_timeout() { "timed out" } else { "failed" };
                return Attempt::Transient {
                    msg: format!("{} {kind}: {}", req.what, error_chain(e)),
                    sent,
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    return Attempt::RateLimited(retry_after);
                }
                return Attempt::Transient {
                    msg: format!(
                        "{}: HTTP {}: reading the body failed: {}",
                        req.what,
                        status.as_u16(),
                        error_chain(e)
                    ),
                    sent: true,
                };
            }
        };
        classify(req.what, status, retry_after, &body)
    }

    /// A request with retries: 429 waits `retry-after`; for reads, 5xx,
    /// timeouts, connection errors and malformed bodies are retried with
    /// backoff; a write whose outcome is unknown is returned as `Ambiguous`.
    async fn call(&self, req: &Request<'_>) -> Result<Envelope, CallError> {
        let max = self.cfg.max_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                bump(&self.counters.retries);
            }
            self.limiter.acquire().await;
            bump(&self.counters.requests);
            tracing::debug!(method = %req.method, path = %req.path, attempt, "cloudflare request");
            match self.attempt(req).await {
                Attempt::Done(env) => return Ok(env),
                Attempt::Refused { status, errors } => return Err(CallError::Api { status, errors }),
                Attempt::RateLimited(retry_after) => {
                    bump(&self.counters.rate_limited);
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    // Cloudflare blocks every call while limited: hold all requests back.
                    self.limiter.hold_for(wait);
                    let msg = format!(
                        "{}: HTTP 429 rate limited (retry after {})",
                        req.what,
                        humantime::format_duration(wait)
                    );
                    if attempt >= max {
                        return Err(CallError::NotSent(msg));
                    }
                    tracing::warn!("{msg}; waiting");
                }
                Attempt::Transient { msg, sent } => {
                    let msg = self.redact(msg);
                    if req.write && sent {
                        return Err(CallError::Ambiguous(msg));
                    }
                    if attempt >= max {
                        return Err(if sent {
                            CallError::Ambiguous(msg)
                        } else {
                            CallError::NotSent(msg)
                        });
                    }
                    let wait = self.backoff(attempt);
                    tracing::warn!("{msg}; retrying in {}", humantime::format_duration(wait));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// A read: any failure is an error.
    async fn read(&self, req: &Request<'_>) -> Result<Envelope, ProviderError> {
        match self.call(req).await {
            Ok(env) => Ok(env),
            Err(CallError::Api { status, errors }) => {
                Err(self.permanent(format!("{}: HTTP {status}: {}", req.what, fmt_errors(&errors))))
            }
            Err(CallError::NotSent(m) | CallError::Ambiguous(m)) => {
                Err(self.transient(format!("{m} (after {} attempts)", self.cfg.max_attempts)))
            }
        }
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

    /// Why `change` cannot be sent at all, if so.
    fn invalid(&self, change: &Change) -> Option<String> {
        match change {
            Change::Create(r) => {
                let ok_type = match r.content.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => r.rtype == RecordType::A,
                    Ok(IpAddr::V6(_)) => r.rtype == RecordType::AAAA,
                    Err(_) => false,
                };
                if !ok_type {
                    Some(format!(
                        "{:?} is not an address for a {} record",
                        r.content,
                        r.rtype.as_str()
                    ))
                } else if !self.in_zone(&normalize_name(&r.name)) {
                    Some(format!("{} is not in zone {}", r.name, self.cfg.zone_name))
                } else {
                    None
                }
            }
            Change::Delete(e) if e.id.is_empty() => Some("delete without a record id".to_string()),
            Change::Delete(_) => None,
        }
    }

    fn post_body<'a>(&'a self, r: &'a Record) -> PostRecord<'a> {
        PostRecord {
            name: &r.name,
            rtype: r.rtype.as_str(),
            content: &r.content,
            ttl: self.cfg.ttl,
            proxied: self.cfg.proxied,
            comment: (!self.cfg.comment.is_empty()).then_some(self.cfg.comment.as_str()),
        }
    }

    fn batch_enabled(&self) -> bool {
        if !self.cfg.use_batch {
            return false;
        }
        let mut off = lock(&self.batch_off_until);
        match *off {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *off = None;
                true
            }
            None => true,
        }
    }

    async fn send_batch(&self, zone: &str, changes: &[Change], pending: &[usize]) -> WriteResult {
        let mut body = BatchBody {
            deletes: Vec::new(),
            posts: Vec::new(),
        };
        for &i in pending {
            match &changes[i] {
                Change::Delete(e) => body.deletes.push(DeleteId { id: &e.id }),
                Change::Create(r) => body.posts.push(self.post_body(r)),
            }
        }
        let what = format!(
            "batch of {} deletes and {} creates",
            body.deletes.len(),
            body.posts.len()
        );
        let bytes = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return WriteResult::Rejected(format!("{what}: encoding: {e}")),
        };
        let req = Request {
            method: Method::POST,
            path: format!("/zones/{zone}/dns_records/batch"),
            query: Vec::new(),
            body: Some(bytes),
            write: true,
            what: &what,
        };
        match self.call(&req).await {
            Ok(_) => WriteResult::Done,
            Err(CallError::Api { status, errors }) => {
                let msg = self.redact(format!("{what}: HTTP {status}: {}", fmt_errors(&errors)));
                if is_auth_failure(status, &errors) {
                    WriteResult::Auth(msg)
                } else if has_code(
                    &errors,
                    &[
                        CODE_RECORD_EXISTS,
                        CODE_IDENTICAL_RECORD_EXISTS,
                        CODE_RECORD_DOES_NOT_EXIST,
                    ],
                ) {
                    WriteResult::Conflict(msg)
                } else if status == 404 || status == 405 {
                    WriteResult::Unavailable(msg)
                } else {
                    WriteResult::Rejected(msg)
                }
            }
            Err(CallError::Ambiguous(m)) => WriteResult::Ambiguous(m),
            Err(CallError::NotSent(m)) => WriteResult::NotSent(m),
        }
    }

    async fn send_single(&self, zone: &str, change: &Change) -> WriteResult {
        let what = change.to_string();
        let req = match change {
            Change::Create(r) => Request {
                method: Method::POST,
                path: format!("/zones/{zone}/dns_records"),
                query: Vec::new(),
                body: match serde_json::to_vec(&self.post_body(r)) {
                    Ok(b) => Some(b),
                    Err(e) => return WriteResult::Rejected(format!("{what}: encoding: {e}")),
                },
                write: true,
                what: &what,
            },
            Change::Delete(e) => Request {
                method: Method::DELETE,
                path: format!("/zones/{zone}/dns_records/{}", e.id),
                query: Vec::new(),
                body: None,
                write: true,
                what: &what,
            },
        };
        match self.call(&req).await {
            Ok(_) => WriteResult::Done,
            Err(CallError::Api { status, errors }) => {
                let msg = self.redact(format!("{what}: HTTP {status}: {}", fmt_errors(&errors)));
                let already = match change {
                    Change::Create(_) => has_code(&errors, &[CODE_RECORD_EXISTS, CODE_IDENTICAL_RECORD_EXISTS]),
                    Change::Delete(_) => has_code(&errors, &[CODE_RECORD_DOES_NOT_EXIST]),
                };
                if already {
                    tracing::info!("{msg}: counts as applied");
                    WriteResult::Done
                } else if is_auth_failure(status, &errors) {
                    WriteResult::Auth(msg)
                } else {
                    WriteResult::Rejected(msg)
                }
            }
            Err(CallError::Ambiguous(m)) => WriteResult::Ambiguous(m),
            Err(CallError::NotSent(m)) => WriteResult::NotSent(m),
        }
    }

    /// Lists the names the pending changes touch and settles those already
    /// done: a create whose record exists, a delete whose id is gone.
    async fn settle(
        &self,
        zone: &str,
        changes: &[Change],
        pending: &mut Vec<usize>,
        st: &mut ApplyState,
    ) -> Result<(), ProviderError> {
        let pairs: BTreeSet<(String, RecordType)> = pending
            .iter()
            .map(|&i| match &changes[i] {
                Change::Create(r) => (normalize_name(&r.name), r.rtype),
                Change::Delete(e) => (normalize_name(&e.record.name), e.record.rtype),
            })
            .collect();
        let mut present: HashMap<(String, RecordType), Vec<CfRecord>> = HashMap::new();
        for (name, rtype) in pairs {
            let recs = self.list_raw(zone, &name, rtype).await?;
            present.insert((name, rtype), recs);
        }
        pending.retain(|&i| {
            let done = match &changes[i] {
                Change::Create(r) => present.get(&(normalize_name(&r.name), r.rtype)).is_some_and(|v| {
                    v.iter()
                        .any(|x| x.content.as_deref().is_some_and(|c| same_content(c, &r.content)))
                }),
                Change::Delete(e) => present
                    .get(&(normalize_name(&e.record.name), e.record.rtype))
                    .is_some_and(|v| !v.iter().any(|x| x.id == e.id)),
            };
            if done {
                tracing::info!("{}: found done on re-listing", changes[i]);
                st.outcomes[i] = Some(Outcome::Applied);
            }
            !done
        });
        Ok(())
    }

    /// Applies the changes `idx` (deletes first), settling ambiguous writes by
    /// re-listing. Sets an outcome for each change it settles; an `Err` leaves
    /// the unsettled ones to the caller.
    async fn apply_chunk(
        &self,
        zone: &str,
        changes: &[Change],
        idx: &[usize],
        st: &mut ApplyState,
    ) -> Result<(), ChunkError> {
        let mut pending: Vec<usize> = idx.to_vec();
        let mut singles = !self.batch_enabled();
        let mut uncertain_rounds = 0u32;
        let mut conflicts = 0u32;
        let mut needs_settle = false;
        let mut last = String::new();
        loop {
            if needs_settle {
                needs_settle = false;
                if let Err(e) = self.settle(zone, changes, &mut pending, st).await {
                    let msg = self.redact(format!("{last}; re-listing to check failed: {e}"));
                    for &i in &pending {
                        st.outcomes[i] = Some(Outcome::Unknown(msg.clone()));
                    }
                    return Ok(());
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if uncertain_rounds >= self.cfg.max_attempts {
                let msg = self.redact(format!("{last} (gave up after {uncertain_rounds} attempts)"));
                for &i in &pending {
                    st.outcomes[i] = Some(Outcome::Unknown(msg.clone()));
                }
                return Ok(());
            }
            if uncertain_rounds > 0 {
                bump(&self.counters.retries);
            }
            if !singles {
                match self.send_batch(zone, changes, &pending).await {
                    WriteResult::Done => {
                        st.touched = true;
                        for &i in &pending {
                            st.outcomes[i] = Some(Outcome::Applied);
                        }
                        return Ok(());
                    }
                    WriteResult::Unavailable(msg) => {
                        tracing::warn!("{msg}: batch endpoint unavailable; using single calls");
                        bump(&self.counters.batch_fallbacks);
                        *lock(&self.batch_off_until) = Some(Instant::now() + BATCH_RETRY_AFTER);
                        singles = true;
                    }
                    WriteResult::Conflict(msg) => {
                        // Nothing was applied; find what already is, retry the rest. A
                        // second conflict isolates the changes with single calls.
                        tracing::info!("{msg}: re-listing");
                        conflicts += 1;
                        if conflicts >= 2 {
                            singles = true;
                        }
                        last = msg;
                        needs_settle = true;
                    }
                    WriteResult::Rejected(msg) => {
                        // All or nothing: nothing was applied. Single calls tell which change is refused.
                        tracing::warn!("{msg}: retrying the changes one by one");
                        singles = true;
                    }
                    WriteResult::Auth(msg) => return Err(ChunkError::Permanent(msg)),
                    WriteResult::Ambiguous(msg) => {
                        bump(&self.counters.ambiguous_writes);
                        st.touched = true;
                        uncertain_rounds += 1;
                        tracing::warn!("{msg}: outcome unknown; re-listing before retrying");
                        tokio::time::sleep(self.backoff(uncertain_rounds)).await;
                        last = msg;
                        needs_settle = true;
                    }
                    WriteResult::NotSent(msg) => return Err(ChunkError::Transient(msg)),
                }
            } else {
                let mut ambiguous = false;
                for i in pending.clone() {
                    match self.send_single(zone, &changes[i]).await {
                        WriteResult::Done => {
                            st.touched = true;
                            st.outcomes[i] = Some(Outcome::Applied);
                        }
                        WriteResult::Rejected(msg) | WriteResult::Conflict(msg) | WriteResult::Unavailable(msg) => {
                            tracing::warn!("{msg}");
                            st.outcomes[i] = Some(Outcome::Failed(self.redact(msg)));
                        }
                        WriteResult::Auth(msg) => return Err(ChunkError::Permanent(msg)),
                        WriteResult::Ambiguous(msg) => {
                            bump(&self.counters.ambiguous_writes);
                            st.touched = true;
                            tracing::warn!("{msg}: outcome unknown; will re-list");
                            ambiguous = true;
                            last = msg;
                        }
                        WriteResult::NotSent(msg) => return Err(ChunkError::Transient(msg)),
                    }
                }
                pending.retain(|&i| st.outcomes[i].is_none());
                if ambiguous {
                    uncertain_rounds += 1;
                    tokio::time::sleep(self.backoff(uncertain_rounds)).await;
                    needs_settle = true;
                }
            }
        }
    }
}

fn sensitive(value: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| format!("cloudflare: the {what} contains characters not allowed in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A reqwest error with its sources (reqwest's own Display is terse).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn classify(what: &str, status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Attempt {
    let code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::RateLimited(retry_after);
    }
    if status.is_server_error() {
        let detail = parse_envelope(body).ok().and_then(|e| e.errors).map(|e| fmt_errors(&e));
        return Attempt::Transient {
            msg: format!(
                "{what}: HTTP {code}{}",
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
            sent: true,
        };
    }
    if status.is_success() {
        return match parse_envelope(body) {
            Ok(env) if env.success => Attempt::Done(env),
            Ok(env) => Attempt::Refused {
                status: code,
                errors: env.errors.unwrap_or_default(),
            },
            Err(e) => Attempt::Transient {
                msg: format!("{what}: HTTP {code}: {e}"),
                sent: true,
            },
        };
    }
    match parse_envelope(body) {
        Ok(env) => Attempt::Refused {
            status: code,
            errors: env.errors.unwrap_or_default(),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(SNIPPET_LEN).collect();
            Attempt::Refused {
                status: code,
                errors: vec![CfMessage {
                    code: 0,
                    message: format!("unparseable body: {:?}", snippet.trim()),
                    error_chain: None,
                }],
            }
        }
    }
}

enum WriteResult {
    Done,
    /// Batch refused because a create already exists or a delete is gone.
    Conflict(String),
    /// Refused for another reason (nothing applied).
    Rejected(String),
    /// The batch endpoint is not there.
    Unavailable(String),
    /// Credentials refused: the whole call fails.
    Auth(String),
    Ambiguous(String),
    NotSent(String),
}

enum ChunkError {
    Permanent(String),
    Transient(String),
}

struct ApplyState {
    outcomes: Vec<Option<Outcome>>,
    /// Whether anything may have changed at the provider.
    touched: bool,
}

#[tonic::async_trait]
impl Provider for Cloudflare {
    fn set_context(&self, node: u64, term: u64) {
        Cloudflare::set_context(self, node, term);
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
        let mut st = ApplyState {
            outcomes: vec![None; changes.len()],
            touched: false,
        };
        let mut order: Vec<usize> = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            if let Some(why) = self.invalid(c) {
                st.outcomes[i] = Some(Outcome::Failed(why));
            }
        }
        order.extend(
            (0..changes.len()).filter(|&i| st.outcomes[i].is_none() && matches!(changes[i], Change::Delete(_))),
        );
        order.extend(
            (0..changes.len()).filter(|&i| st.outcomes[i].is_none() && matches!(changes[i], Change::Create(_))),
        );
        if !order.is_empty() {
            let zone = self.zone().await?;
            for chunk in order.chunks(self.cfg.batch_limit) {
                let failure = match self.apply_chunk(&zone, changes, chunk, &mut st).await {
                    Ok(()) => continue,
                    Err(ChunkError::Permanent(m)) => (self.permanent(m), false),
                    Err(ChunkError::Transient(m)) => (self.transient(m), true),
                };
                // Nothing may have changed yet: fail the whole call.
                if !st.touched {
                    return Err(failure.0);
                }
                // Otherwise report what is known and leave the rest to the next listing.
                let msg = failure.0.to_string();
                for o in st.outcomes.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(if failure.1 {
                        Outcome::Unknown(msg.clone())
                    } else {
                        Outcome::Failed(msg.clone())
                    });
                }
                break;
            }
        }
        Ok(changes
            .iter()
            .zip(st.outcomes)
            .map(|(c, o)| {
                (
                    c.clone(),
                    o.unwrap_or_else(|| Outcome::Unknown("not attempted".to_string())),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/cloudflare/vectors")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn parses_every_vector_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cloudflare/vectors");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let env =
                parse_envelope(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.contains("zones") {
                assert!(!parse_zones(env.result).unwrap().is_empty());
            } else if name.contains("81057") {
                assert!(!env.success);
            } else {
                assert!(!parse_records(env.result).unwrap().is_empty());
            }
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn cloudflare_go_list_page() {
        let env = parse_envelope(&vector("cloudflare-go_v0.116.0_dns_list_page_1.json")).unwrap();
        assert!(env.success);
        let info = env.result_info.as_ref().unwrap();
        assert!(has_more_pages(Some(info), 1, 3, 100));
        assert!(!has_more_pages(Some(info), 2, 2, 100));
        let recs = parse_records(env.result).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].name, "sub1.example.com");
        assert_eq!(recs[1].content.as_deref(), Some("198.51.100.5"));
        assert_eq!(record_type(&recs[0].rtype), Some(RecordType::A));
    }

    #[test]
    fn octodns_records_and_zones() {
        let env = parse_envelope(&vector("octodns_dns_records_page_1.json")).unwrap();
        assert!(has_more_pages(env.result_info.as_ref(), 1, 10, 100));
        let recs = parse_records(env.result).unwrap();
        assert_eq!(recs.len(), 10);
        assert_eq!(recs.iter().filter(|r| record_type(&r.rtype).is_some()).count(), 5);
        assert_eq!(
            recs[4].content.as_deref(),
            Some("2601:644:500:e210:62f8:1dff:feb8:947a")
        );
        let env = parse_envelope(&vector("octodns_zones_page_1.json")).unwrap();
        let zones = parse_zones(env.result).unwrap();
        assert_eq!(zones[0].id, "234234243423aaabb334342aaa343433");
        assert_eq!(zones[1].name, "github.io");
    }

    #[test]
    fn lexicon_81057_is_refused_with_the_code() {
        let body = vector("lexicon_81057_2020.json");
        match classify("create", StatusCode::BAD_REQUEST, None, &body) {
            Attempt::Refused { status, errors } => {
                assert_eq!(status, 400);
                assert!(has_code(&errors, &[CODE_RECORD_EXISTS]));
                assert_eq!(fmt_errors(&errors), "[81057] The record already exists.");
            }
            _ => panic!("not refused"),
        }
    }

    #[test]
    fn classify_failures() {
        assert!(matches!(
            classify("x", StatusCode::OK, None, br#"{"success":true,"errors":[],"res"#),
            Attempt::Transient { sent: true, .. }
        ));
        assert!(matches!(
            classify(
                "x",
                StatusCode::OK,
                None,
                br#"{"success":false,"errors":[{"code":1004,"message":"bad"}],"messages":[],"result":null}"#
            ),
            Attempt::Refused { status: 200, .. }
        ));
        assert!(matches!(
            classify("x", StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), b""),
            Attempt::RateLimited(Some(d)) if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify("x", StatusCode::BAD_GATEWAY, None, b"<html>"),
            Attempt::Transient { sent: true, .. }
        ));
        assert!(matches!(
            classify("x", StatusCode::NOT_FOUND, None, b"<html>"),
            Attempt::Refused { status: 404, .. }
        ));
        // Error codes given as strings are accepted.
        let env = parse_envelope(br#"{"success":false,"errors":[{"code":"81044","message":"gone"}]}"#).unwrap();
        assert!(has_code(&env.errors.unwrap(), &[CODE_RECORD_DOES_NOT_EXIST]));
    }

    #[test]
    fn pagination_without_total_pages() {
        let ri = ResultInfo {
            page: Some(1.0),
            per_page: Some(2.0),
            total_count: Some(5.0),
            total_pages: None,
        };
        assert!(has_more_pages(Some(&ri), 1, 2, 100));
        let ri = ResultInfo {
            page: Some(3.0),
            per_page: Some(2.0),
            total_count: Some(5.0),
            total_pages: None,
        };
        assert!(!has_more_pages(Some(&ri), 3, 1, 100));
        assert!(!has_more_pages(None, 1, 100, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_never_exceeds_in_any_window() {
        let window = Duration::from_secs(1);
        let lim = std::sync::Arc::new(RateLimiter::new(5, window));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let lim = lim.clone();
            tasks.push(tokio::spawn(async move {
                lim.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        for w in times.windows(6) {
            assert!(
                w[5].duration_since(w[0]) >= window,
                "6 starts within {:?}",
                w[5].duration_since(w[0])
            );
        }
        assert_eq!(times[19].duration_since(start), Duration::from_secs(3));
        // A hold (from a 429) delays everything.
        lim.hold_for(Duration::from_secs(7));
        let before = Instant::now();
        lim.acquire().await;
        assert!(Instant::now().duration_since(before) >= Duration::from_secs(7));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cf = Cloudflare::new(CloudflareConfig::new(
            "example.com",
            Credentials::Token(Secret::new("t")),
        ))
        .unwrap();
        for attempt in 1..40 {
            let d = cf.backoff(attempt);
            let exp = BACKOFF_BASE
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            assert!(d >= exp / 2 && d <= exp, "{attempt}: {d:?}");
        }
    }
}

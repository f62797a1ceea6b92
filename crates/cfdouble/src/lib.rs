//! `cfdouble`: an in-process test double of the Cloudflare v4 DNS API.
//!
//! * Serves under `http://127.0.0.1:PORT/client/v4` (see [`Double::base_url`]).
//! * Validates **every** request at runtime against the OpenAPI document given in
//!   [`DoubleConfig::openapi_path`] (routing, method, path/query/header parameters,
//!   security requirements, JSON request bodies). See the `schema` module docs
//!   for the supported and ignored JSON-Schema keywords. A violation is recorded in
//!   [`Double::violations`] and answered with a Cloudflare error envelope (HTTP 400;
//!   HTTP 403 / code 10000 when no accepted credential is presented at all).
//! * Simulates zones and DNS records (list/filter/paginate, create, get, patch, put,
//!   delete, batch with all-or-nothing semantics and a per-request operation limit).
//! * Fault injection ([`Double::inject`], [`Double::inject_when`], [`Double::set_always`])
//!   and departures a client must survive: a page-size cap ([`Double::set_max_per_page`]),
//!   list filters ignored ([`Double::set_ignore_list_filters`]), contents refused by
//!   validation ([`Double::refuse_content`]), credentials quoted in authentication
//!   errors ([`DoubleConfig::echo_credentials`]).
//! * Observation ([`Double::requests`], [`Double::records`],
//!   [`Double::max_requests_in_window`], [`Double::self_check_failures`]).
//!
//! Status/codes used for rejected requests:
//! unknown path 400/7000, undeclared method 400/7001, bad path parameter 400/7003,
//! bad query or header parameter 400/6003, bad body 400/9207, semantically invalid
//! record (e.g. A content not IPv4, missing `type`/`content`) 400/1004 (proxying an
//! unproxiable type 400/9004) — all of these are violations.
//! Not violations (simulated state): missing/unknown credentials 403/10000 (bearer) or
//! 403/9103 (legacy key) — *missing* credentials are additionally a violation;
//! unknown zone 404/7003; unknown record 404/81044; a content refused with
//! [`Double::refuse_content`] 400/1004; duplicate create 400/81057;
//! duplicate update 400/81058; CNAME clash 400/81053; batch over limit
//! 400/[`BATCH_LIMIT_CODE`]; batch endpoint disabled 404/7003.

mod api;
mod schema;
mod server;
mod spec;
mod util;

#[cfg(test)]
mod tests;

pub use api::BATCH_LIMIT_CODE;
pub use util::max_in_window;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use server::{Shared, State};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Path prefix under which the API is served (like `https://api.cloudflare.com/client/v4`).
pub const API_PREFIX: &str = "/client/v4";

/// Errors from [`try_start`].
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    #[error("cannot read OpenAPI document {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("OpenAPI document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("OpenAPI document: {0}")]
    Spec(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Configuration of a [`Double`].
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// The OpenAPI 3.0 JSON document interpreted for validation.
    pub openapi_path: PathBuf,
    /// Address to bind; `None` = `127.0.0.1:0`.
    pub bind: Option<SocketAddr>,
    /// Accepted API tokens (`Authorization: Bearer <token>`).
    pub tokens: Vec<String>,
    /// Accepted legacy pair (`X-Auth-Email`, `X-Auth-Key`).
    pub legacy_key: Option<(String, String)>,
    /// Zones: name -> 32-hex id.
    pub zones: BTreeMap<String, String>,
    /// Records present at start that the client does not own.
    pub seed_records: Vec<SeedRecord>,
    /// Maximum operations per batch request (Free plan: 200).
    pub batch_limit: usize,
    /// Whether `POST .../dns_records/batch` exists (if not: 404, clients must fall back).
    pub batch_enabled: bool,
    /// Treat every object schema with `properties` as closed (like
    /// `unevaluatedProperties: false`). Off by default because the document leaves
    /// objects open and its placeholder schema for non-A/AAAA types declares only `type`.
    pub reject_undeclared_properties: bool,
    /// Largest page `GET .../dns_records` answers, whatever `per_page` asks for.
    pub max_per_page: Option<u64>,
    /// Record contents refused with 400/1004 (not a violation: the client sent a
    /// well-formed request the API does not accept).
    pub refused_contents: Vec<String>,
    /// Quote the presented credential in authentication error messages, as a
    /// careless server might (clients must keep it out of their own errors).
    pub echo_credentials: bool,
}

impl DoubleConfig {
    pub fn new(openapi_path: impl Into<PathBuf>) -> Self {
        DoubleConfig {
            openapi_path: openapi_path.into(),
            bind: None,
            tokens: Vec::new(),
            legacy_key: None,
            zones: BTreeMap::new(),
            seed_records: Vec::new(),
            batch_limit: 200,
            batch_enabled: true,
            reject_undeclared_properties: false,
            max_per_page: None,
            refused_contents: Vec::new(),
            echo_credentials: false,
        }
    }
    pub fn token(mut self, t: impl Into<String>) -> Self {
        self.tokens.push(t.into());
        self
    }
    pub fn legacy_key(mut self, email: impl Into<String>, key: impl Into<String>) -> Self {
        self.legacy_key = Some((email.into(), key.into()));
        self
    }
    pub fn zone(mut self, name: impl Into<String>, id: impl Into<String>) -> Self {
        self.zones.insert(name.into(), id.into());
        self
    }
    pub fn seed(mut self, r: SeedRecord) -> Self {
        self.seed_records.push(r);
        self
    }
    pub fn batch_limit(mut self, n: usize) -> Self {
        self.batch_limit = n;
        self
    }
    pub fn batch_enabled(mut self, on: bool) -> Self {
        self.batch_enabled = on;
        self
    }
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }
    pub fn max_per_page(mut self, n: u64) -> Self {
        self.max_per_page = Some(n);
        self
    }
    pub fn refuse_content(mut self, content: impl Into<String>) -> Self {
        self.refused_contents.push(content.into());
        self
    }
    pub fn echo_credentials(mut self, on: bool) -> Self {
        self.echo_credentials = on;
        self
    }
}

/// A record that exists before the test starts (not owned by the client under test).
#[derive(Clone, Debug)]
pub struct SeedRecord {
    /// Zone *name*.
    pub zone: String,
    pub record_type: String,
    /// Relative or fully-qualified name.
    pub name: String,
    pub content: String,
    pub ttl: u32,
    pub proxied: bool,
    pub comment: Option<String>,
    pub tags: Vec<String>,
    pub priority: Option<u16>,
    /// Fixed id; generated when `None`.
    pub id: Option<String>,
}

impl SeedRecord {
    pub fn new(zone: &str, record_type: &str, name: &str, content: &str) -> Self {
        SeedRecord {
            zone: zone.into(),
            record_type: record_type.into(),
            name: name.into(),
            content: content.into(),
            ttl: 1,
            proxied: false,
            comment: None,
            tags: Vec::new(),
            priority: None,
            id: None,
        }
    }
}

/// A DNS record as the double stores and returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub zone_id: String,
    pub zone_name: String,
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub content: String,
    pub proxiable: bool,
    pub proxied: bool,
    pub ttl: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Omitted from JSON when absent (the schema types `comment` as a non-nullable string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub settings: Value,
    pub meta: Value,
    pub created_on: String,
    pub modified_on: String,
}

impl Record {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An injected failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 429, `retry-after: N`, code 10100; the request is not applied.
    TooManyRequests { retry_after_secs: u64 },
    /// HTTP 5xx; not applied. 502/503/504 answer an HTML page (as Cloudflare's edge
    /// does), other codes a JSON envelope with code 10001.
    ServerError(u16),
    /// Sleep, then answer normally.
    Slow(Duration),
    /// Apply (and log) the request at once, then wait this long before answering:
    /// a client that times out meanwhile cannot know the mutation happened.
    SlowAfterApplying(Duration),
    /// Applied normally, then HTTP 200 with the JSON body cut in half.
    TruncatedJson,
    /// The request **is applied**, then the double answers HTTP 502 with an HTML body,
    /// so the client cannot tell that the mutation happened.
    AppliedButLost,
    /// HTTP 200 with a non-JSON body (`content-type: application/json`); not applied.
    Garbage,
    /// This status and body (`content-type: application/json`); not applied.
    Raw { status: u16, body: String },
}

/// Which requests a queued fault applies to. `Default` matches every request.
#[derive(Clone, Debug, Default)]
pub struct FaultFilter {
    /// Only requests with a method other than GET/HEAD/OPTIONS.
    pub writes_only: bool,
    /// Only this method (case-insensitive).
    pub method: Option<String>,
    /// Only paths starting with this (with or without the `/client/v4` prefix).
    pub path_prefix: Option<String>,
    /// Only this path (with or without the `/client/v4` prefix).
    pub path: Option<String>,
}

impl FaultFilter {
    pub fn writes() -> Self {
        FaultFilter {
            writes_only: true,
            ..Default::default()
        }
    }
    pub fn method(m: &str) -> Self {
        FaultFilter {
            method: Some(m.into()),
            ..Default::default()
        }
    }
    pub fn path_prefix(p: &str) -> Self {
        FaultFilter {
            path_prefix: Some(p.into()),
            ..Default::default()
        }
    }
    /// Only `method` on exactly `path` (e.g. `FaultFilter::route("GET", "/zones")`).
    pub fn route(method: &str, path: &str) -> Self {
        FaultFilter {
            method: Some(method.into()),
            path: Some(path.into()),
            ..Default::default()
        }
    }
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let write = !matches!(method, "GET" | "HEAD" | "OPTIONS");
        if self.writes_only && !write {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| !m.eq_ignore_ascii_case(method)) {
            return false;
        }
        if let Some(p) = &self.path_prefix {
            let rel = path.strip_prefix(API_PREFIX).unwrap_or(path);
            if !path.starts_with(p.as_str()) && !rel.starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            let rel = path.strip_prefix(API_PREFIX).unwrap_or(path);
            if path != p && rel != p {
                return false;
            }
        }
        true
    }
}

/// One observed request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Arrival time since the double started.
    pub at: Duration,
    pub method: String,
    /// Full path as received (including `/client/v4`).
    pub path: String,
    /// Raw query string ("" if none).
    pub query: String,
    /// Body parsed as JSON, if it was JSON.
    pub body: Option<Value>,
    /// Body as (lossy UTF-8) text.
    pub raw_body: String,
    /// Status sent (0 if no response was produced).
    pub status: u16,
    pub vantage_node: Option<String>,
    pub vantage_term: Option<String>,
    /// Every header as received (lower-case names, in order).
    pub headers: Vec<(String, String)>,
    /// Fault applied to this request, if any.
    pub fault: Option<Fault>,
}

impl RequestRecord {
    /// A header's value (several occurrences joined by ", "); `name` is case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }

    /// A query parameter, percent-decoded (the first occurrence).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| spec::percent_decode(k, true).as_deref() == Some(name))
            .and_then(|(_, v)| spec::percent_decode(v, true))
    }

    /// The path without the `/client/v4` prefix.
    pub fn api_path(&self) -> &str {
        self.path.strip_prefix(API_PREFIX).unwrap_or(&self.path)
    }
}

/// A running double. Dropping it stops the server.
pub struct Double {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a double; panics on configuration errors (use [`try_start`] to handle them).
pub async fn start(cfg: DoubleConfig) -> Double {
    match try_start(cfg).await {
        Ok(d) => d,
        Err(e) => panic!("cfdouble: {e}"),
    }
}

/// Start a double, reporting configuration errors.
pub async fn try_start(cfg: DoubleConfig) -> Result<Double, DoubleError> {
    let text = std::fs::read(&cfg.openapi_path).map_err(|source| DoubleError::Read {
        path: cfg.openapi_path.clone(),
        source,
    })?;
    let doc: Value = serde_json::from_slice(&text)?;
    let spec = spec::Spec::load(doc).map_err(DoubleError::Spec)?;

    let mut zones = Vec::new();
    let account_id = util::new_id();
    for (name, id) in &cfg.zones {
        if id.len() > 32 || id.is_empty() {
            return Err(DoubleError::Config(format!("zone id {id:?} must be 1..=32 characters")));
        }
        zones.push(api::Zone {
            id: id.clone(),
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            account_id: account_id.clone(),
            created_on: util::now_rfc3339(),
            records: Vec::new(),
        });
    }
    let mut seeds = Vec::new();
    for s in &cfg.seed_records {
        seeds.push(insert_record(&mut zones, s).map_err(|e| DoubleError::Config(format!("seed record: {e}")))?);
    }

    let addr = cfg.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DoubleError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DoubleError::Bind { addr, source })?;

    let shared = Arc::new(Shared {
        spec,
        tokens: cfg.tokens.clone(),
        legacy: cfg.legacy_key.clone(),
        reject_undeclared: cfg.reject_undeclared_properties,
        started: Instant::now(),
        state: Mutex::new(State {
            zones,
            seeds,
            log: Vec::new(),
            violations: Vec::new(),
            self_check: Vec::new(),
            faults: VecDeque::new(),
            always: None,
            batch_limit: cfg.batch_limit,
            batch_enabled: cfg.batch_enabled,
            list: api::ListOptions {
                max_per_page: cfg.max_per_page,
                ignore_filters: false,
            },
            refused_contents: cfg.refused_contents.iter().map(|c| c.to_ascii_lowercase()).collect(),
            echo_credentials: cfg.echo_credentials,
        }),
    });
    let task = tokio::spawn(server::serve(listener, shared.clone()));
    Ok(Double { shared, addr, task })
}

/// Add `s` to its zone as a create would (same checks and normalisation).
fn insert_record(zones: &mut [api::Zone], s: &SeedRecord) -> Result<Record, String> {
    let zname = s.zone.trim_end_matches('.').to_ascii_lowercase();
    let zone = zones
        .iter_mut()
        .find(|z| z.name == zname)
        .ok_or_else(|| format!("record for unknown zone {:?}", s.zone))?;
    let mut body = serde_json::json!({
        "type": s.record_type, "name": s.name, "content": s.content,
        "ttl": s.ttl, "proxied": s.proxied, "tags": s.tags,
    });
    if let Some(c) = &s.comment {
        body["comment"] = Value::String(c.clone());
    }
    if let Some(p) = s.priority {
        body["priority"] = Value::from(p);
    }
    api::create(zone, &body).map_err(|e| format!("{s:?}: {}", e.message))?;
    let r = zone.records.last_mut().ok_or("record vanished")?;
    if let Some(id) = &s.id {
        r.id = id.clone();
    }
    Ok(r.clone())
}

impl Double {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// e.g. `http://127.0.0.1:41234/client/v4`
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, API_PREFIX)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request that violated the OpenAPI document (or that Cloudflare would reject
    /// as malformed), as `"METHOD /path?query: problem"`.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Responses of the double that do not validate against the document's response
    /// schemas (bugs in the double; should always be empty).
    pub fn self_check_failures(&self) -> Vec<String> {
        self.lock().self_check.clone()
    }

    /// Log of all requests, in completion order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Current records of a zone (by name or id); empty for unknown zones.
    pub fn records(&self, zone: &str) -> Vec<Record> {
        let z = zone.trim_end_matches('.').to_ascii_lowercase();
        self.lock()
            .zones
            .iter()
            .find(|x| x.name == z || x.id == zone)
            .map(|x| x.records.clone())
            .unwrap_or_default()
    }

    /// Id of a configured zone.
    pub fn zone_id(&self, name: &str) -> Option<String> {
        let z = name.trim_end_matches('.').to_ascii_lowercase();
        self.lock().zones.iter().find(|x| x.name == z).map(|x| x.id.clone())
    }

    /// `Ok` when every seed record still exists unchanged; otherwise the differences.
    pub fn seed_records_intact(&self) -> Result<(), Vec<String>> {
        let st = self.lock();
        let mut problems = Vec::new();
        for s in &st.seeds {
            let cur = st.zones.iter().flat_map(|z| z.records.iter()).find(|r| r.id == s.id);
            match cur {
                None => problems.push(format!(
                    "seed record {} {} {} ({}) was deleted",
                    s.record_type, s.name, s.content, s.id
                )),
                Some(c) if c != s => problems.push(format!("seed record {} was modified: {:?} -> {:?}", s.id, s, c)),
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Largest number of requests whose arrival times fall in any window `[t, t + window)`.
    pub fn max_requests_in_window(&self, window: Duration) -> usize {
        let times: Vec<Duration> = self.lock().log.iter().map(|r| r.at).collect();
        max_in_window(&times, window)
    }

    /// Queue a fault for the next request.
    pub fn inject(&self, fault: Fault) {
        self.inject_when(fault, FaultFilter::default());
    }

    /// Queue a fault for the next request matching `filter` (faults are consumed in
    /// FIFO order; each applies to one request).
    pub fn inject_when(&self, fault: Fault, filter: FaultFilter) {
        self.lock().faults.push_back((fault, filter));
    }

    /// Queued faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// Apply `fault` to every request (after queued faults) until `set_always(None)`.
    pub fn set_always(&self, fault: Option<Fault>) {
        self.lock().always = fault;
    }

    /// Change the batch limit while running.
    pub fn set_batch_limit(&self, n: usize) {
        self.lock().batch_limit = n;
    }

    /// Enable/disable the batch endpoint while running.
    pub fn set_batch_enabled(&self, on: bool) {
        self.lock().batch_enabled = on;
    }

    /// Add a record while running, as if some other client had created it (unlike
    /// seed records, it is not watched by [`Double::seed_records_intact`]).
    pub fn add_record(&self, r: SeedRecord) -> Result<Record, String> {
        insert_record(&mut self.lock().zones, &r)
    }

    /// Cap the page size of `GET .../dns_records` (`None`: as requested).
    pub fn set_max_per_page(&self, n: Option<u64>) {
        self.lock().list.max_per_page = n;
    }

    /// Answer `GET .../dns_records` with every record of the zone, ignoring the
    /// filters (name, type, content, ...); ordering and pagination still apply.
    pub fn set_ignore_list_filters(&self, on: bool) {
        self.lock().list.ignore_filters = on;
    }

    /// Refuse creates and updates with this content (400/1004, "DNS Validation
    /// Error"); a batch holding one is refused as a whole.
    pub fn refuse_content(&self, content: &str) {
        self.lock().refused_contents.insert(content.to_ascii_lowercase());
    }

    /// Quote (or stop quoting) the presented credential in authentication errors.
    pub fn set_echo_credentials(&self, on: bool) {
        self.lock().echo_credentials = on;
    }
}

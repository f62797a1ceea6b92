//! The Route 53 provider: signed (SigV4, the `aws-sigv4` crate) REST-XML
//! requests through reqwest.
//!
//! Route 53 holds record *sets* (one name and type, many values), not single
//! records. A change to owned addresses rewrites each touched set in one
//! `ChangeResourceRecordSets` batch, all or nothing. The set is re-read
//! first, so the values this configuration does not own stay as they are.
//! Emptying a set deletes it with its exact current values. Duplicates cannot
//! exist in a set.
//!
//! - **Retries.** Throttling (`Throttling`, `PriorRequestNotComplete`, HTTP
//!   429 or 5xx) is retried with capped backoff and jitter.
//! - **Lost answers.** A write whose answer was lost is reported as unknown,
//!   and the reconciler settles it by listing again.
//! - **Waiting for the change.** After a write the change is polled until
//!   `INSYNC` (or `insync_timeout`), and the time it took goes into the DNS
//!   audit entry.
//! - **Refusals.** Bad credentials, a missing zone and an invalid batch are
//!   named with the zone and the setting to fix.

pub mod creds;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};
use wire::SetChange;

/// The provider's settings.
#[derive(Clone, Debug)]
pub struct Route53Config {
    /// The hosted zone's name, lower case, without the final dot.
    pub zone: String,
    /// Skips the lookup by name.
    pub zone_id: Option<String>,
    /// Between a public and a private zone of the same name, which one.
    pub private_zone: Option<bool>,
    /// TTL of the sets this provider creates (an existing set keeps its own).
    pub ttl: u32,
    pub endpoint: String,
    pub region: String,
    pub sources: creds::Sources,
    pub request_timeout: Duration,
    pub max_attempts: u32,
    /// How long to poll a change for `INSYNC`; None: do not wait.
    pub insync_timeout: Option<Duration>,
}

impl Route53Config {
    pub fn new(zone: &str) -> Route53Config {
        Route53Config {
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            zone_id: None,
            private_zone: None,
            ttl: 60,
            endpoint: DEFAULT_ENDPOINT.into(),
            region: "us-east-1".into(),
            sources: creds::Sources::default(),
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            insync_timeout: Some(Duration::from_secs(60)),
        }
    }
}

pub const DEFAULT_ENDPOINT: &str = "https://route53.amazonaws.com";
const API: &str = "/2013-04-01";

/// A Route 53 hosted zone.
pub struct Route53 {
    cfg: Route53Config,
    client: reqwest::Client,
    zone_id: tokio::sync::Mutex<Option<String>>,
    keys: tokio::sync::Mutex<Option<creds::Keys>>,
    /// What the last write's change did (INSYNC after how long).
    note: Mutex<Option<String>>,
    throttled: AtomicU64,
    /// The writer's node and term, sent (unsigned) as `x-vantage-node` / `x-vantage-term`.
    context: Mutex<Option<(u64, u64)>>,
}

/// How one request went.
enum Answer {
    Body(String),
    /// Refused for good, with the error code.
    Refused(u16, String, String),
    /// The request may or may not have been acted on (no answer).
    Lost(String),
}

fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl Route53 {
    pub fn new(cfg: Route53Config) -> Result<Route53, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("route53: cannot build the HTTP client: {e}"))?;
        Ok(Route53 {
            zone_id: tokio::sync::Mutex::new(
                cfg.zone_id
                    .as_ref()
                    .map(|z| z.trim_start_matches("/hostedzone/").to_string()),
            ),
            cfg,
            client,
            keys: tokio::sync::Mutex::new(None),
            note: Mutex::new(None),
            throttled: AtomicU64::new(0),
            context: Mutex::new(None),
        })
    }

    fn what(&self) -> String {
        format!("route53 zone {}", self.cfg.zone)
    }

    async fn keys(&self) -> Result<creds::Keys, ProviderError> {
        let mut k = self.keys.lock().await;
        let fresh = k.as_ref().is_some_and(|k| {
            k.expires
                .is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300))
        });
        if !fresh {
            let found = creds::resolve(&self.client, &self.cfg.sources)
                .await
                .map_err(|e| ProviderError::Permanent(format!("{}: dns.route53 credentials: {e}", self.what())))?;
            *k = Some(found);
        }
        Ok(k.clone().expect("just set"))
    }

    /// The signed headers for one request.
    fn sign(
        &self,
        keys: &creds::Keys,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, ProviderError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4;
        let identity = aws_credential_types::Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.clone(),
            keys.session_token.clone(),
            keys.expires,
            "vantage",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("route53")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ProviderError::Permanent(format!("{}: cannot sign: {e}", self.what())))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| ProviderError::Permanent(format!("{}: cannot sign: {e}", self.what())))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ProviderError::Permanent(format!("{}: cannot sign: {e}", self.what())))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// One request with retries of throttling and transient failures. A
    /// write (POST) whose answer was lost is not repeated: it is `Lost`.
    async fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, ProviderError> {
        let url = format!("{}{path}", self.cfg.endpoint.trim_end_matches('/'));
        let host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| u.port().map(|p| format!("{h}:{p}")).unwrap_or_else(|| h.to_string()))
            })
            .ok_or_else(|| {
                ProviderError::Permanent(format!("{}: dns.route53.endpoint: not a URL: {url}", self.what()))
            })?;
        let bytes = body.unwrap_or_default().into_bytes();
        let mut last = String::new();
        for attempt in 0..self.cfg.max_attempts.max(1) {
            if attempt > 0 {
                let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt - 1);
                let wait = base.min(Duration::from_secs(5));
                tokio::time::sleep(wait + wait.mul_f64(fastrand::f64() * 0.3)).await;
            }
            let keys = self.keys().await?;
            let mut headers: Vec<(&str, String)> = vec![("host", host.clone())];
            if method == "POST" {
                headers.push(("content-type", "text/xml".into()));
            }
            let signed = self.sign(&keys, method, &url, &headers, &bytes)?;
            let mut req = match method {
                "POST" => self.client.post(&url).body(bytes.clone()),
                _ => self.client.get(&url),
            }
            .timeout(self.cfg.request_timeout);
            for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
                req = req.header(*k, v);
            }
            for (k, v) in &signed {
                req = req.header(k, v);
            }
            if let Some((node, term)) = *self.context.lock().unwrap_or_else(|p| p.into_inner()) {
                req = req
                    .header("x-vantage-node", node.to_string())
                    .header("x-vantage-term", term.to_string());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let connect = e.is_connect();
                    last = format!("{}: {} {path}: {}", self.what(), method, e.without_url());
                    if method == "POST" && !connect {
                        return Ok(Answer::Lost(last));
                    }
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    last = format!(
                        "{}: the answer to {method} {path} was cut: {}",
                        self.what(),
                        e.without_url()
                    );
                    if method == "POST" {
                        return Ok(Answer::Lost(last));
                    }
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return Ok(Answer::Body(text));
            }
            let (code, message) = match wire::parse::<wire::ErrorResponse>(&text) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (String::new(), text.chars().take(200).collect()),
            };
            last = format!("{}: HTTP {status} {code}: {message}", self.what());
            let throttled = matches!(
                code.as_str(),
                "Throttling" | "PriorRequestNotComplete" | "ThrottlingException"
            );
            if throttled || status == 429 || status >= 500 {
                if throttled || status == 429 {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if status == 403 || code.contains("Token") || code.contains("Signature") || code == "AccessDenied" {
                // Temporary credentials may have been replaced: look again next time.
                *self.keys.lock().await = None;
                return Err(ProviderError::Permanent(format!(
                    "{}: AWS refused the credentials from {} (dns.route53 credentials: check the access key and \
                     secret, and that they may change this zone): HTTP {status} {code}: {message}",
                    self.what(),
                    keys.source
                )));
            }
            return Ok(Answer::Refused(status, code, message));
        }
        Err(ProviderError::Transient(format!(
            "{last} (after {} attempts)",
            self.cfg.max_attempts.max(1)
        )))
    }

    async fn get<T: for<'de> serde::Deserialize<'de>>(&self, path: &str) -> Result<T, ProviderError> {
        match self.call("GET", path, None).await? {
            Answer::Body(b) => {
                wire::parse(&b).map_err(|e| ProviderError::Transient(format!("{}: {path}: {e}", self.what())))
            }
            Answer::Refused(_, code, message) if code == "NoSuchHostedZone" => Err(ProviderError::Permanent(format!(
                "{}: no such hosted zone (dns.route53.zone_id / dns.route53.zone): {code}: {message}",
                self.what()
            ))),
            Answer::Refused(status, code, message) => Err(ProviderError::Permanent(format!(
                "{}: {path}: HTTP {status} {code}: {message}",
                self.what()
            ))),
            Answer::Lost(m) => Err(ProviderError::Transient(m)),
        }
    }

    /// The hosted zone's id, looked up by name once.
    async fn zone(&self) -> Result<String, ProviderError> {
        let mut id = self.zone_id.lock().await;
        if let Some(z) = id.as_ref() {
            return Ok(z.clone());
        }
        let zone = &self.cfg.zone;
        let found: wire::ListZones = self
            .get(&format!("{API}/hostedzonesbyname?dnsname={zone}.&maxitems=100"))
            .await?;
        let matching: Vec<&wire::Zone> = found
            .zones
            .items
            .iter()
            .filter(|z| wire::plain_name(&z.name) == *zone)
            .filter(|z| {
                self.cfg
                    .private_zone
                    .is_none_or(|p| z.config.as_ref().map(|c| c.private).unwrap_or(false) == p)
            })
            .collect();
        let z = match matching.as_slice() {
            [one] => one.id.trim_start_matches("/hostedzone/").to_string(),
            [] => {
                return Err(ProviderError::Permanent(format!(
                    "{}: no hosted zone named {zone} is visible to these credentials (dns.route53.zone{})",
                    self.what(),
                    match self.cfg.private_zone {
                        Some(true) => ", private_zone = true",
                        Some(false) => ", private_zone = false",
                        None => "",
                    }
                )))
            }
            _ => {
                return Err(ProviderError::Permanent(format!(
                    "{}: {} hosted zones are named {zone}; set dns.route53.private_zone or dns.route53.zone_id",
                    self.what(),
                    matching.len()
                )))
            }
        };
        tracing::info!(zone = %zone, id = %z, "route53 hosted zone found");
        *id = Some(z.clone());
        Ok(z)
    }

    /// The simple record set of `name` and `rtype`, if there is one.
    async fn set(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Option<wire::Set>, ProviderError> {
        let name_q = name.replace('*', "%5C052");
        let l: wire::ListSets = self
            .get(&format!(
                "{API}/hostedzone/{zone}/rrset?name={name_q}.&type={}&maxitems=1",
                rtype.as_str()
            ))
            .await?;
        Ok(l.sets.items.into_iter().find(|s| {
            wire::plain_name(&s.name) == name
                && s.rtype == rtype.as_str()
                && s.set_identifier.is_none()
                && s.alias.is_none()
        }))
    }

    fn values(set: &Option<wire::Set>) -> Vec<String> {
        set.as_ref()
            .and_then(|s| s.records.as_ref())
            .map(|r| r.items.iter().map(|v| v.value.clone()).collect())
            .unwrap_or_default()
    }

    /// Polls a change until Route 53 says it is served everywhere.
    async fn wait_insync(&self, change: &str, limit: Duration) -> String {
        let started = Instant::now();
        let id = change.trim_start_matches("/change/");
        loop {
            match self.get::<wire::ChangeResponse>(&format!("{API}/change/{id}")).await {
                Ok(c) if c.info.status == "INSYNC" => {
                    return format!("change {id} INSYNC after {} ms", started.elapsed().as_millis());
                }
                Ok(_) if started.elapsed() >= limit => {
                    return format!("change {id} still PENDING after {} s", limit.as_secs());
                }
                Ok(_) => {}
                Err(e) => return format!("change {id}: status unknown: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tonic::async_trait]
impl Provider for Route53 {
    fn describe(&self) -> String {
        self.what()
    }

    fn rate_limited(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    fn set_context(&self, node: u64, term: u64) {
        *self.context.lock().unwrap_or_else(|p| p.into_inner()) = Some((node, term));
    }

    fn write_note(&self) -> Option<String> {
        self.note.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        if owned.names.is_empty() {
            return Ok(Vec::new());
        }
        let zone = self.zone().await?;
        let mut out = Vec::new();
        for (name, addresses) in &owned.names {
            let types: BTreeSet<RecordType> = addresses.iter().map(|a| RecordType::of(a)).collect();
            for rtype in types {
                let set = self.set(&zone, name, rtype).await?;
                for value in Self::values(&set) {
                    // The configured spelling of an address Route 53 may write differently.
                    let content = addresses
                        .iter()
                        .find(|a| same_ip(a, &value))
                        .cloned()
                        .unwrap_or(value.clone());
                    let record = Record {
                        name: name.clone(),
                        rtype,
                        content,
                    };
                    if owned.owns(&record) {
                        out.push(Existing {
                            id: format!("{name}/{}/{value}", rtype.as_str()),
                            record,
                        });
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let zone = self.zone().await?;
        // Each touched set, re-read, with what leaves it and what joins it.
        let mut groups: BTreeMap<(String, RecordType), (Vec<String>, Vec<String>)> = BTreeMap::new();
        for c in changes {
            match c {
                Change::Create(r) => groups
                    .entry((r.name.clone(), r.rtype))
                    .or_default()
                    .1
                    .push(r.content.clone()),
                Change::Delete(e) => groups
                    .entry((e.record.name.clone(), e.record.rtype))
                    .or_default()
                    .0
                    .push(e.record.content.clone()),
            }
        }
        let mut batch: Vec<(&'static str, String, &'static str, u32, Vec<String>)> = Vec::new();
        for ((name, rtype), (gone, added)) in &groups {
            let current = self.set(&zone, name, *rtype).await?;
            let now = Self::values(&current);
            let mut next: Vec<String> = now
                .iter()
                .filter(|v| !gone.iter().any(|g| same_ip(g, v)))
                .cloned()
                .collect();
            for a in added {
                if !next.iter().any(|v| same_ip(v, a)) {
                    next.push(a.clone());
                }
            }
            next.sort();
            let mut was = now.clone();
            was.sort();
            if next == was {
                continue;
            }
            let ttl = current.as_ref().and_then(|s| s.ttl).unwrap_or(self.cfg.ttl);
            if next.is_empty() {
                // DELETE must name the set exactly as it is.
                batch.push(("DELETE", name.clone(), rtype.as_str(), ttl, now));
            } else {
                batch.push(("UPSERT", name.clone(), rtype.as_str(), ttl, next));
            }
        }
        let applied = || {
            changes
                .iter()
                .map(|c| (c.clone(), Outcome::Applied))
                .collect::<Vec<_>>()
        };
        if batch.is_empty() {
            return Ok(applied());
        }
        let sets: Vec<SetChange<'_>> = batch
            .iter()
            .map(|(action, name, rtype, ttl, values)| SetChange {
                action,
                name,
                rtype,
                ttl: *ttl,
                values,
            })
            .collect();
        let body = wire::change_batch("written by vantage", &sets);
        let started = Instant::now();
        match self
            .call("POST", &format!("{API}/hostedzone/{zone}/rrset/"), Some(body))
            .await?
        {
            Answer::Body(b) => {
                let info: wire::ChangeResponse = wire::parse(&b)
                    .map_err(|e| ProviderError::Transient(format!("{}: the write's answer: {e}", self.what())))?;
                let note = match self.cfg.insync_timeout {
                    Some(limit) => self.wait_insync(&info.info.id, limit).await,
                    None => format!(
                        "change {} {}",
                        info.info.id.trim_start_matches("/change/"),
                        info.info.status
                    ),
                };
                tracing::info!(zone = %self.cfg.zone, sets = sets.len(), ms = started.elapsed().as_millis() as u64, "{note}");
                *self.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
                Ok(applied())
            }
            Answer::Refused(status, code, message) => {
                let why = format!(
                    "{}: the batch was refused: HTTP {status} {code}: {message}",
                    self.what()
                );
                if code == "NoSuchHostedZone" {
                    return Err(ProviderError::Permanent(format!(
                        "{why} (dns.route53.zone_id / dns.route53.zone)"
                    )));
                }
                Ok(changes
                    .iter()
                    .map(|c| (c.clone(), Outcome::Failed(why.clone())))
                    .collect())
            }
            Answer::Lost(m) => Ok(changes
                .iter()
                .map(|c| (c.clone(), Outcome::Unknown(m.clone())))
                .collect()),
        }
    }
}

//! Request plumbing for the Cloudflare client: the sliding-window rate
//! limiter, one HTTP attempt, the retrying call and read paths, and the
//! capped exponential backoff with jitter between attempts.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::wire::{classify, fmt_errors, Attempt, CfMessage, Envelope};
use super::{bump, lock, Cloudflare};
use crate::dns::ProviderError;

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Sliding-window limiter: remembers the start times of the last `max`
/// requests and lets a new one start only when the oldest of them is at least
/// `window` old. Waiters queue in order (the async mutex is fair). A 429 can
/// additionally hold every request back until a given instant.
pub(super) struct RateLimiter {
    max: usize,
    window: Duration,
    starts: tokio::sync::Mutex<VecDeque<Instant>>,
    blocked_until: StdMutex<Option<Instant>>,
}

impl RateLimiter {
    pub(super) fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max: max as usize,
            window,
            starts: tokio::sync::Mutex::new(VecDeque::with_capacity(max.min(4096) as usize)),
            blocked_until: StdMutex::new(None),
        }
    }

    /// Waits until a request may start, and records it as started.
    pub(super) async fn acquire(&self) {
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
    pub(super) fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut b = lock(&self.blocked_until);
        if b.is_none_or(|old| old < until) {
            *b = Some(until);
        }
    }
}

/// How one HTTP call ended after its own retries.
#[derive(Debug)]
pub(super) enum CallError {
    /// Cloudflare refused (4xx other than 429, or `success: false`): nothing was done.
    Api { status: u16, errors: Vec<CfMessage> },
    /// Transient, and the request certainly had no effect (connection refused, 429).
    NotSent(String),
    /// Transient, and a write may or may not have taken effect.
    Ambiguous(String),
}

pub(super) struct Request<'a> {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: Vec<(&'static str, String)>,
    pub(super) body: Option<Vec<u8>>,
    /// A write: never resent after an ambiguous failure.
    pub(super) write: bool,
    pub(super) what: &'a str,
}

impl Cloudflare {
    /// Capped exponential backoff with jitter: a random wait in [d/2, d] for
    /// d = min(200 ms * 2^(attempt-1), 10 s).
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(BACKOFF_CAP);
        let half = exp / 2;
        let span = half.as_millis() as u64 + 1;
        half + Duration::from_millis(fastrand::u64(..span))
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
    pub(super) async fn call(&self, req: &Request<'_>) -> Result<Envelope, CallError> {
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
    pub(super) async fn read(&self, req: &Request<'_>) -> Result<Envelope, ProviderError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::cloudflare::{CloudflareConfig, Credentials, Secret};

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

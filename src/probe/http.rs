//! HTTP(S) checks with reqwest: a fresh connection per probe (so a dead
//! listener is noticed, not hidden behind a pooled connection), redirects
//! judged as answers unless the check follows them, TLS verified by default.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::HOST;
use reqwest::{Client, Method, Url};

use crate::config::HttpCheck;

/// Largest body read when a check looks for a substring.
const MAX_BODY: usize = 64 * 1024;

/// Shared clients, one per (verify TLS, follow redirects, read the certificate) combination.
#[derive(Default)]
pub struct Clients {
    shared: Mutex<HashMap<(bool, bool, bool), Client>>,
}

fn builder(h: &HttpCheck) -> reqwest::ClientBuilder {
    let redirect = if h.follow_redirects {
        reqwest::redirect::Policy::limited(5)
    } else {
        reqwest::redirect::Policy::none()
    };
    Client::builder()
        .redirect(redirect)
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(!h.tls_verify)
        .tls_info(h.cert_expiry_fail.is_some() || h.cert_expiry_warn.is_some())
        .user_agent(concat!("vantage/", env!("CARGO_PKG_VERSION"), " health-check"))
}

impl Clients {
    /// Builds the request of one endpoint. HTTPS with a host name connects to
    /// the endpoint address but verifies the certificate for the host name, so
    /// it gets a client of its own with that name pinned to the address.
    pub fn request_for(&self, addr: IpAddr, h: &HttpCheck) -> Result<HttpProbe, String> {
        let scheme = if h.tls { "https" } else { "http" };
        let method = Method::from_bytes(h.method.as_bytes()).map_err(|e| format!("method {:?}: {e}", h.method))?;
        let (client, url, host_header) = match (&h.host, h.tls) {
            (Some(host), true) => {
                let client = builder(h)
                    .resolve(host, SocketAddr::new(addr, h.port))
                    .build()
                    .map_err(|e| format!("https client for {host}: {e}"))?;
                (client, format!("https://{host}:{}{}", h.port, h.path), None)
            }
            _ => {
                let key = (
                    h.tls_verify,
                    h.follow_redirects,
                    h.cert_expiry_fail.is_some() || h.cert_expiry_warn.is_some(),
                );
                let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                let client = match shared.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c = builder(h).build().map_err(|e| format!("http client: {e}"))?;
                        shared.insert(key, c.clone());
                        c
                    }
                };
                let host = match addr {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                };
                (
                    client,
                    format!("{scheme}://{host}:{}{}", h.port, h.path),
                    h.host.clone(),
                )
            }
        };
        let url = Url::parse(&url).map_err(|e| format!("url {url}: {e}"))?;
        Ok(HttpProbe {
            client,
            method,
            url,
            host_header,
            expect: h.expect.clone(),
            body_contains: h.body_contains.clone(),
            headers: h.expect_headers.clone(),
            json: h.json.clone(),
            cert_fail: h.cert_expiry_fail,
            cert_warn: h.cert_expiry_warn,
        })
    }
}

/// One endpoint's prepared HTTP check.
pub struct HttpProbe {
    client: Client,
    method: Method,
    url: Url,
    host_header: Option<String>,
    expect: Vec<(u16, u16)>,
    body_contains: Option<String>,
    headers: Vec<(String, String)>,
    json: Vec<(Vec<String>, serde_json::Value)>,
    cert_fail: Option<Duration>,
    cert_warn: Option<Duration>,
}

/// The value at `path` in `v` (keys, or indexes into arrays).
pub fn json_at<'a>(v: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, k| match v {
        serde_json::Value::Object(m) => m.get(k),
        serde_json::Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Whether the body satisfies every JSON condition; the first that fails, in words.
pub fn json_conditions(body: &[u8], conditions: &[(Vec<String>, serde_json::Value)]) -> Result<(), String> {
    if conditions.is_empty() {
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}), and the check has json conditions"))?;
    for (path, want) in conditions {
        let at = path.join(".");
        match json_at(&v, path) {
            Some(got) if got == want => {}
            Some(got) => return Err(format!("body JSON {at} is {got}, expected {want}")),
            None => return Err(format!("body JSON has no {at}")),
        }
    }
    Ok(())
}

/// Whether the response headers hold every expected one (names lower case).
pub fn header_conditions(headers: &reqwest::header::HeaderMap, expected: &[(String, String)]) -> Result<(), String> {
    for (name, want) in expected {
        match headers.get(name.as_str()).map(|v| v.to_str().unwrap_or("")) {
            Some(got) if got.trim() == want.trim() => {}
            Some(got) => return Err(format!("response header {name} is {got:?}, expected {want:?}")),
            None => return Err(format!("response header {name} is missing (expected {want:?})")),
        }
    }
    Ok(())
}

/// What a certificate's expiry means for the check: Err fails it, Ok(Some) warns.
pub fn cert_conditions(
    not_after: Option<SystemTime>,
    now: SystemTime,
    fail: Option<Duration>,
    warn: Option<Duration>,
) -> Result<Option<String>, String> {
    if fail.is_none() && warn.is_none() {
        return Ok(None);
    }
    let Some(at) = not_after else {
        return Err("the server's certificate could not be read".into());
    };
    let left = at.duration_since(now).unwrap_or(Duration::ZERO);
    let when = humantime::format_rfc3339_seconds(at);
    let days = |d: Duration| format!("{:.1} days", d.as_secs_f64() / 86_400.0);
    if fail.is_some_and(|f| left <= f) {
        return Err(format!(
            "the certificate expires at {when}, in {}, within cert_expiry_fail ({})",
            days(left),
            days(fail.unwrap_or_default())
        ));
    }
    if warn.is_some_and(|w| left <= w) {
        return Ok(Some(format!(
            "the certificate expires at {when}, in {}, within cert_expiry_warn ({})",
            days(left),
            days(warn.unwrap_or_default())
        )));
    }
    Ok(None)
}

impl HttpProbe {
    pub async fn run(&self) -> Result<Option<String>, String> {
        let mut req = self.client.request(self.method.clone(), self.url.clone());
        if let Some(h) = &self.host_header {
            req = req.header(HOST, h);
        }
        let mut resp = req.send().await.map_err(|e| describe(&e))?;
        let code = resp.status().as_u16();
        if !self.expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code)) {
            return Err(format!(
                "HTTP status {code} is not among the expected {}",
                ranges(&self.expect)
            ));
        }
        let not_after = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .and_then(|der| crate::tls::expiry::not_after(&rustls::pki_types::CertificateDer::from(der.to_vec())));
        let warning = cert_conditions(not_after, SystemTime::now(), self.cert_fail, self.cert_warn)?;
        header_conditions(resp.headers(), &self.headers)?;
        if self.body_contains.is_some() || !self.json.is_empty() {
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("reading the body: {}", describe(&e)))?
            {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            if let Some(needle) = &self.body_contains {
                let text = String::from_utf8_lossy(&body);
                if !text.contains(needle.as_str()) {
                    return Err(format!(
                        "response body (first {} bytes) does not contain {needle:?}",
                        body.len()
                    ));
                }
            }
            json_conditions(&body, &self.json)?;
        }
        Ok(warning)
    }
}

fn ranges(r: &[(u16, u16)]) -> String {
    r.iter()
        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect::<Vec<_>>()
        .join(",")
}

/// reqwest's Display hides the cause; walk the chain for a useful reason.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn json_conditions_follow_keys_and_indexes() {
        let body = br#"{"status":"ok","db":{"up":true,"lag":3},"items":[{"state":"a"},{"state":"b"}]}"#;
        let cases: [(&str, Value, Result<(), &str>); 7] = [
            ("status", json!("ok"), Ok(())),
            ("db.up", json!(true), Ok(())),
            ("db.lag", json!(3), Ok(())),
            ("items.1.state", json!("b"), Ok(())),
            ("db.lag", json!(4), Err("body JSON db.lag is 3, expected 4")),
            ("items.7.state", json!("b"), Err("body JSON has no items.7.state")),
            ("status.deeper", json!("x"), Err("body JSON has no status.deeper")),
        ];
        for (p, want, expect) in cases {
            let got = json_conditions(body, &[(path(p), want.clone())]);
            assert_eq!(got.as_ref().map(|_| ()).map_err(String::as_str), expect, "{p} = {want}");
        }
        assert!(json_conditions(b"<html>", &[(path("a"), json!(1))])
            .unwrap_err()
            .contains("not JSON"));
        assert_eq!(
            json_conditions(b"<html>", &[]),
            Ok(()),
            "no conditions: the body is not parsed"
        );
    }

    use serde_json::Value;

    #[test]
    fn header_conditions_are_exact_per_value_and_name_case_free() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-ready", " yes ".parse().unwrap());
        let want = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        assert_eq!(
            header_conditions(&h, &want(&[("content-type", "application/json"), ("x-ready", "yes")])),
            Ok(())
        );
        assert_eq!(
            header_conditions(&h, &want(&[("content-type", "text/html")])),
            Err("response header content-type is \"application/json\", expected \"text/html\"".into())
        );
        assert!(header_conditions(&h, &want(&[("x-missing", "1")]))
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn certificate_expiry_fails_inside_the_fail_window_and_warns_inside_the_warn_window() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let (fail, warn) = (Some(2 * day), Some(30 * day));
        assert_eq!(cert_conditions(Some(now + 60 * day), now, fail, warn), Ok(None));
        let w = cert_conditions(Some(now + 10 * day), now, fail, warn).unwrap().unwrap();
        assert!(w.contains("within cert_expiry_warn"), "{w}");
        let f = cert_conditions(Some(now + day), now, fail, warn).unwrap_err();
        assert!(f.contains("within cert_expiry_fail") && f.contains("1.0 days"), "{f}");
        assert!(cert_conditions(Some(now - day), now, fail, None).is_err(), "expired");
        assert!(
            cert_conditions(None, now, fail, None).is_err(),
            "no certificate to read"
        );
        assert_eq!(cert_conditions(None, now, None, None), Ok(None), "not asked");
        assert_eq!(cert_conditions(Some(now + 10 * day), now, None, Some(day)), Ok(None));
    }
}

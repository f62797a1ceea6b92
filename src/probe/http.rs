//! HTTP(S) checks with reqwest: a fresh connection per probe (so a dead
//! listener is noticed, not hidden behind a pooled connection), redirects
//! judged as answers unless the check follows them, TLS verified by default.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use reqwest::header::HOST;
use reqwest::{Client, Method, Url};

use crate::config::HttpCheck;

/// Largest body read when a check looks for a substring.
const MAX_BODY: usize = 64 * 1024;

/// Shared clients, one per (verify TLS, follow redirects) combination.
#[derive(Default)]
pub struct Clients {
    shared: Mutex<HashMap<(bool, bool), Client>>,
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
                let key = (h.tls_verify, h.follow_redirects);
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
}

impl HttpProbe {
    pub async fn run(&self) -> Result<(), String> {
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
        if let Some(needle) = &self.body_contains {
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
            let text = String::from_utf8_lossy(&body);
            if !text.contains(needle.as_str()) {
                return Err(format!(
                    "response body (first {} bytes) does not contain {needle:?}",
                    body.len()
                ));
            }
        }
        Ok(())
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

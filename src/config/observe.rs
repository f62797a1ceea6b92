//! `[http]` (metrics, health, status page) and `[[notify]]` (webhooks, Slack,
//! PagerDuty): how an agent is watched and how it tells people.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, Dur};

/// The HTTP listener: `/metrics`, `/healthz`, `/readyz` and the status page.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Socket address to serve on; none (the default) keeps it off.
    #[serde(default)]
    pub listen: Option<String>,
    /// With `[tls]`: ask every client for a certificate of the cluster CA
    /// (Prometheus's `tls_config` presents one). `false` serves HTTPS to
    /// anyone who reaches the address, for a scraper or browser that cannot.
    #[serde(default = "yes")]
    pub client_cert: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            client_cert: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Where a notifier sends.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// A JSON POST of the documented body (README, "Notifications").
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2: trigger and resolve with a dedup key.
    Pagerduty,
}

impl NotifyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Pagerduty => "pagerduty",
        }
    }
}

/// What a notifier is told about.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// An endpoint decided down (and, with `send_on_resolved`, back up).
    Decision,
    /// A DNS write failed (and, resolved, the provider took one again).
    Dns,
    /// The panic freeze, and the last record held in DNS (fail open).
    Alarm,
    /// An endpoint's probes warn without failing (a certificate expiring
    /// inside `cert_expiry_warn`), and, resolved, no agent warns any more.
    Warning,
}

/// The PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One receiver of notifications. Only the leader sends; where each one
/// stands is part of the replicated state.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Unique name (letters, digits, `-`, `_`); keys its replicated position.
    pub name: String,
    pub kind: NotifyKind,
    /// Where to POST. Slack and webhook URLs often carry a secret: prefer
    /// `url_file`. PagerDuty defaults to its public endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// A file (mode 0600) holding the URL; re-read at every delivery.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// PagerDuty's integration (routing) key, inline or in a file (0600).
    #[serde(default)]
    pub routing_key: Option<String>,
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// Pools whose endpoints it is told about; empty: every pool. Cluster-wide
    /// events (DNS, panic freeze) go to every notifier that asks for them.
    #[serde(default)]
    pub pools: Vec<String>,
    /// What it is told about; default all of `decision`, `dns`, `alarm`.
    #[serde(default = "every_kind")]
    pub on: Vec<NotifyOn>,
    /// Also send the resolution: up after down, DNS writing again, the freeze lifted.
    #[serde(default = "yes")]
    pub send_on_resolved: bool,
    /// Repeat an open alert this often while it stays open (off if unset).
    #[serde(default)]
    pub repeat_every: Option<Dur>,
    /// Deadline of one delivery attempt.
    #[serde(default = "five_seconds")]
    pub timeout: Dur,
}

fn every_kind() -> Vec<NotifyOn> {
    vec![NotifyOn::Decision, NotifyOn::Dns, NotifyOn::Alarm, NotifyOn::Warning]
}

fn five_seconds() -> Dur {
    Dur(Duration::from_secs(5))
}

impl NotifyConfig {
    /// The secret files it names.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        self.url_file.iter_mut().chain(self.routing_key_file.iter_mut())
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(())
}

impl Config {
    pub(super) fn validate_observe(&self) -> Result<(), ConfigError> {
        if let Some(listen) = &self.http.listen {
            let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
                self.invalid(
                    "http.listen",
                    format!("expected an address like \"127.0.0.1:9464\", got {listen:?}"),
                )
            })?;
            if self.tls.is_none() && !self.insecure_plaintext && !addr.ip().is_loopback() {
                return Err(self.invalid(
                    "http.listen",
                    format!(
                        "{addr} is not a loopback address and no [tls] is configured: the status and metrics \
                         would be served in plaintext to anyone. Configure [tls], or set insecure_plaintext = true \
                         to accept that"
                    ),
                ));
            }
            if listen == &self.listen {
                return Err(self.invalid("http.listen", format!("{listen} is already the gRPC listen address")));
            }
        }
        let pools: BTreeSet<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        let mut names = BTreeSet::new();
        for (i, n) in self.notify.iter().enumerate() {
            let key = |k: &str| format!("notify[{i}].{k}");
            let ok_name = !n.name.is_empty()
                && n.name.len() <= 64
                && n.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_name {
                return Err(self.invalid(
                    &key("name"),
                    format!("expected 1 to 64 letters, digits, '-' or '_', got {:?}", n.name),
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(self.invalid(&key("name"), format!("duplicate notifier name {:?}", n.name)));
            }
            match (&n.url, &n.url_file) {
                (Some(_), Some(_)) => {
                    return Err(self.invalid(&key("url"), "give url or url_file, not both"));
                }
                (None, None) if n.kind != NotifyKind::Pagerduty => {
                    return Err(self.invalid(&key("url"), format!("required for kind = \"{}\"", n.kind.as_str())));
                }
                (Some(u), None) => check_url(u).map_err(|m| self.invalid(&key("url"), m))?,
                (None, Some(f)) => {
                    let text = read_secret(f).map_err(|m| self.invalid(&key("url_file"), m))?;
                    check_url(&text).map_err(|m| self.invalid(&key("url_file"), format!("{}: {m}", f.display())))?;
                }
                (None, None) => {}
            }
            match (n.kind, &n.routing_key, &n.routing_key_file) {
                (NotifyKind::Pagerduty, Some(_), Some(_)) => {
                    return Err(self.invalid(&key("routing_key"), "give routing_key or routing_key_file, not both"));
                }
                (NotifyKind::Pagerduty, None, None) => {
                    return Err(self.invalid(&key("routing_key"), "required for kind = \"pagerduty\""));
                }
                (NotifyKind::Pagerduty, None, Some(f)) => {
                    read_secret(f).map_err(|m| self.invalid(&key("routing_key_file"), m))?;
                }
                (NotifyKind::Pagerduty, Some(_), None) => {}
                (_, None, None) => {}
                _ => {
                    return Err(self.invalid(&key("routing_key"), "only for kind = \"pagerduty\""));
                }
            }
            for (j, p) in n.pools.iter().enumerate() {
                if !pools.contains(p.as_str()) {
                    return Err(self.invalid(
                        &format!("notify[{i}].pools[{j}]"),
                        format!(
                            "no pool is named {p:?} (pools: {})",
                            pools.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            if n.on.is_empty() {
                return Err(self.invalid(&key("on"), "expected at least one of \"decision\", \"dns\", \"alarm\""));
            }
            if let Some(r) = n.repeat_every {
                if r.0 < Duration::from_secs(60) || r.0 > Duration::from_secs(7 * 86_400) {
                    return Err(self.invalid(&key("repeat_every"), format!("expected 1m to 7days, got {r}")));
                }
            }
            if n.timeout.0 < Duration::from_millis(100) || n.timeout.0 > Duration::from_secs(60) {
                return Err(self.invalid(&key("timeout"), format!("expected 100ms to 1m, got {}", n.timeout)));
            }
        }
        Ok(())
    }
}

/// A secret file's text, trimmed; refused when others can read it or it is empty.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    crate::secret::check_private(path).map_err(|m| format!("{}: {m}", path.display()))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {}", path.display(), e.kind()))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(format!("{}: is empty", path.display()));
    }
    Ok(text)
}

//! Shaping a [`Message`] for each kind of receiver, and one delivery attempt.
//!
//! Bodies:
//! - webhook: the JSON object of [`webhook_body`] (documented in the README);
//! - Slack: `{"text": …}` for an incoming webhook;
//! - PagerDuty Events v2: `trigger` (reminders too; PagerDuty folds them into
//!   the open incident by `dedup_key`) and `resolve`, keyed `vantage/KEY`.
//!
//! URLs and routing keys are secrets: they never appear in a log line or an
//! error (only the scheme and host do).

use serde_json::{json, Value};

use super::{Action, Message};
use crate::config::{read_secret, NotifyConfig, NotifyKind, PAGERDUTY_URL};

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Worth retrying: no answer, a timeout, 408, 429 or 5xx.
    Failed(String),
    /// The receiver refused the message itself (another 4xx): not retried.
    Rejected(String),
}

/// `scheme://host[:port]/…`: what of a URL may be logged.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", u.scheme(), u.host_str().unwrap_or("?"))
        }
        Err(_) => "(an invalid URL)".into(),
    }
}

/// The log time as RFC 3339, UTC.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// The generic webhook's body.
pub fn webhook_body(notifier: &str, m: &Message, node: u64, term: u64) -> Value {
    json!({
        "id": m.id,
        "notifier": notifier,
        "action": m.action.as_str(),
        "class": m.class.as_str(),
        "key": m.key,
        "endpoint": m.endpoint,
        "pool": m.pool,
        "summary": m.summary,
        "detail": m.detail,
        "event_id": m.event_id,
        "log_time_ms": m.log_time_ms,
        "log_time": rfc3339(m.log_time_ms),
        "sent_by": node,
        "term": term,
    })
}

fn slack_body(m: &Message) -> Value {
    let mark = match m.action {
        Action::Trigger => ":red_circle:",
        Action::Remind => ":large_orange_circle:",
        Action::Resolve => ":large_green_circle:",
    };
    json!({ "text": format!("{mark} Vantage {} ({}): {}", m.action.as_str(), m.class.as_str(), m.summary) })
}

fn pagerduty_body(routing_key: &str, m: &Message, node: u64) -> Value {
    let dedup_key = format!("vantage/{}", m.key);
    if m.action == Action::Resolve {
        return json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key });
    }
    let severity = match m.class {
        crate::config::NotifyOn::Decision => "critical",
        crate::config::NotifyOn::Dns => "error",
        crate::config::NotifyOn::Alarm => "warning",
        crate::config::NotifyOn::Warning => "warning",
    };
    let mut summary = m.summary.clone();
    // PagerDuty's limit on the summary.
    if summary.len() > 1024 {
        let mut cut = 1021;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push_str("...");
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": format!("vantage node {node}"),
            "severity": severity,
            "component": m.endpoint,
            "group": m.pool,
            "class": m.class.as_str(),
            "custom_details": { "id": m.id, "detail": m.detail, "log_time": rfc3339(m.log_time_ms) },
        },
    })
}

/// One configured receiver.
pub struct Receiver {
    cfg: NotifyConfig,
    client: reqwest::Client,
}

impl Receiver {
    pub fn new(cfg: NotifyConfig, client: reqwest::Client) -> Receiver {
        Receiver { cfg, client }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The URL, from the configuration or its file (re-read, so a rotated secret is used at once).
    fn url(&self) -> Result<String, String> {
        match (&self.cfg.url, &self.cfg.url_file) {
            (Some(u), _) => Ok(u.trim().to_string()),
            (None, Some(f)) => read_secret(f),
            (None, None) => Ok(PAGERDUTY_URL.to_string()),
        }
    }

    fn routing_key(&self) -> Result<String, String> {
        match (&self.cfg.routing_key, &self.cfg.routing_key_file) {
            (Some(k), _) => Ok(k.trim().to_string()),
            (None, Some(f)) => read_secret(f),
            (None, None) => Err("no routing_key".into()),
        }
    }

    /// The body this receiver gets for `m`.
    pub fn body(&self, m: &Message, node: u64, term: u64) -> Result<Value, String> {
        Ok(match self.cfg.kind {
            NotifyKind::Webhook => webhook_body(&self.cfg.name, m, node, term),
            NotifyKind::Slack => slack_body(m),
            NotifyKind::Pagerduty => pagerduty_body(&self.routing_key()?, m, node),
        })
    }

    /// One attempt, within the notifier's timeout.
    pub async fn deliver(&self, m: &Message, node: u64, term: u64) -> Delivery {
        let url = match self.url() {
            Ok(u) => u,
            Err(e) => return Delivery::Failed(e),
        };
        let body = match self.body(m, node, term) {
            Ok(b) => b,
            Err(e) => return Delivery::Failed(e),
        };
        let shown = redact_url(&url);
        let sent = self
            .client
            .post(&url)
            .timeout(self.cfg.timeout.0)
            .header("x-vantage-notification", m.id.as_str())
            .json(&body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            // Without the URL: reqwest's message would quote it.
            Err(e) => return Delivery::Failed(format!("{shown}: {}", e.without_url())),
        };
        let status = resp.status();
        if status.is_success() {
            return Delivery::Delivered;
        }
        let text: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
        let why = format!("{shown} answered HTTP {}: {}", status.as_u16(), text.trim());
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Delivery::Failed(why)
        } else {
            Delivery::Rejected(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_url_keeps_only_scheme_and_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/hook?token=abc"),
            "http://127.0.0.1:9000/…"
        );
        assert!(!redact_url("nonsense").contains("nonsense"));
    }

    fn message(action: Action) -> Message {
        Message {
            id: "event-7".into(),
            key: "endpoint/web/10.0.0.1".into(),
            action,
            class: crate::config::NotifyOn::Decision,
            endpoint: "web/10.0.0.1".into(),
            pool: "web".into(),
            summary: "web/10.0.0.1 is down".into(),
            detail: "quorum 2 of 3".into(),
            log_time_ms: 1_700_000_000_000,
            event_id: 7,
        }
    }

    #[test]
    fn pagerduty_triggers_and_resolves_one_incident_by_dedup_key() {
        let t = pagerduty_body("KEY", &message(Action::Trigger), 2);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["dedup_key"], "vantage/endpoint/web/10.0.0.1");
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(t["payload"]["source"], "vantage node 2");
        let r = pagerduty_body("KEY", &message(Action::Resolve), 3);
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(r["dedup_key"], t["dedup_key"]);
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn webhook_body_carries_a_stable_id_and_the_log_time() {
        let b = webhook_body("ops", &message(Action::Trigger), 1, 4);
        assert_eq!(b["id"], "event-7");
        assert_eq!(b["action"], "trigger");
        assert_eq!(b["log_time"], "2023-11-14T22:13:20.000Z");
        assert_eq!((b["sent_by"].as_u64(), b["term"].as_u64()), (Some(1), Some(4)));
        let s = slack_body(&message(Action::Resolve));
        assert!(s["text"].as_str().unwrap().contains("resolve"));
    }
}

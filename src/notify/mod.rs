//! Notifications: the leader tells people what the history says.
//!
//! Each `[[notify]]` receiver reads the replicated history in order. Its
//! position (the last event it delivered or skipped) and its open alerts are
//! part of the replicated state ([`crate::state::NotifierState`]), committed
//! by the leader after each delivery, so a new leader goes on where the last
//! one stopped: it neither skips an event nor resends one whose delivery was
//! committed. The one window left is a leader that dies after the receiver
//! answered and before the position committed: the next leader sends that
//! message again, with the same `id` (webhook) or dedup key (PagerDuty), so a
//! receiver can tell.
//!
//! What is sent ([`step`]): an endpoint decided down (trigger) and back up
//! (resolve); a failed DNS write (trigger) and the next good one (resolve);
//! the panic freeze and its end; the last record held in DNS by the fail-open
//! guard (resolved when the endpoint is up or out). A trigger for an alert
//! already open is not sent again; `repeat_every` sends reminders in log time
//! while it stays open.
//!
//! Each attempt is preceded by a leadership check with a quorum, so a leader
//! cut off from the others sends nothing. Each receiver runs on its own task
//! and retries with backoff (1 s doubling to 30 s) for as long as this node
//! leads; a receiver that fails holds up only its own later messages, never
//! a DNS write or another receiver.

mod send;

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Agent;
use crate::config::{NotifyConfig, NotifyOn};
use crate::model::EventKind;
use crate::state::{AuditEvent, NotifierState, OpenAlert};
use crate::types::Command;

pub use send::{redact_url, Delivery, Receiver};

/// Whether an alert starts, ends or is repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Trigger,
    Resolve,
    Remind,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Resolve => "resolve",
            Action::Remind => "remind",
        }
    }
}

/// One notification, before it is shaped for a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Stable across leaders: `event-N` for the event it reports, or
    /// `remind-KEY-T` for the reminder due at log time T.
    pub id: String,
    /// The alert it belongs to: `endpoint/POOL/ADDR`, `fail-open/POOL/ADDR`, `dns`, `panic`.
    pub key: String,
    pub action: Action,
    pub class: NotifyOn,
    pub endpoint: String,
    pub pool: String,
    pub summary: String,
    /// The rule or outcome, in words.
    pub detail: String,
    pub log_time_ms: u64,
    /// History event it reports (0 for a reminder).
    pub event_id: u64,
}

impl NotifyOn {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyOn::Decision => "decision",
            NotifyOn::Dns => "dns",
            NotifyOn::Alarm => "alarm",
            NotifyOn::Warning => "warning",
        }
    }
}

fn wants(cfg: &NotifyConfig, class: NotifyOn, pool: &str) -> bool {
    cfg.on.contains(&class) && (pool.is_empty() || cfg.pools.is_empty() || cfg.pools.iter().any(|p| p == pool))
}

/// What one history event means for a notifier in state `st`: the messages
/// to send, in order, and the state after them (position not yet moved).
pub fn step(cfg: &NotifyConfig, st: &NotifierState, e: &AuditEvent) -> (Vec<Message>, NotifierState) {
    let mut next = st.clone();
    let mut out = Vec::new();
    let pool = e.endpoint.split_once('/').map(|(p, _)| p).unwrap_or("").to_string();
    let message = |key: String, action: Action, class: NotifyOn, summary: String| Message {
        id: format!("event-{}", e.id),
        key,
        action,
        class,
        endpoint: e.endpoint.clone(),
        pool: pool.clone(),
        summary,
        detail: e.rule.clone(),
        log_time_ms: e.log_time_ms,
        event_id: e.id,
    };
    let open = |next: &mut NotifierState, out: &mut Vec<Message>, key: String, class: NotifyOn, summary: String| {
        if next.open.contains_key(&key) {
            return;
        }
        next.open.insert(
            key.clone(),
            OpenAlert {
                since_ms: e.log_time_ms,
                last_sent_ms: e.log_time_ms,
                summary: summary.clone(),
            },
        );
        out.push(message(key, Action::Trigger, class, summary));
    };
    let close = |next: &mut NotifierState, out: &mut Vec<Message>, key: String, class: NotifyOn, summary: String| {
        if next.open.remove(&key).is_some() && cfg.send_on_resolved {
            out.push(message(key, Action::Resolve, class, summary));
        }
    };
    match e.kind {
        EventKind::Decision if wants(cfg, NotifyOn::Decision, &pool) => match e.to.as_str() {
            "down" => open(
                &mut next,
                &mut out,
                format!("endpoint/{}", e.endpoint),
                NotifyOn::Decision,
                format!("{} is down (decided by agents {:?})", e.endpoint, e.down),
            ),
            "up" => close(
                &mut next,
                &mut out,
                format!("endpoint/{}", e.endpoint),
                NotifyOn::Decision,
                format!("{} is up again (decided by agents {:?})", e.endpoint, e.up),
            ),
            _ => {}
        },
        _ => {}
    }
    // The fail-open alarm ends when its endpoint is up or out of DNS.
    let fail_open = format!("fail-open/{}", e.endpoint);
    match e.kind {
        EventKind::Guard if e.rule.contains("fail open") && wants(cfg, NotifyOn::Alarm, &pool) => open(
            &mut next,
            &mut out,
            fail_open,
            NotifyOn::Alarm,
            format!("{} is down but held in DNS: {}", e.endpoint, e.rule),
        ),
        EventKind::Decision if e.to == "up" => close(
            &mut next,
            &mut out,
            fail_open,
            NotifyOn::Alarm,
            format!("{} is up: no longer held in DNS against its decision", e.endpoint),
        ),
        EventKind::Dns if e.to == "out" => close(
            &mut next,
            &mut out,
            fail_open,
            NotifyOn::Alarm,
            format!("{} left DNS: no longer held there", e.endpoint),
        ),
        EventKind::Panic if wants(cfg, NotifyOn::Alarm, "") => match e.to.as_str() {
            "frozen" => open(
                &mut next,
                &mut out,
                "panic".into(),
                NotifyOn::Alarm,
                format!("removals frozen: {}", e.rule),
            ),
            "normal" => close(
                &mut next,
                &mut out,
                "panic".into(),
                NotifyOn::Alarm,
                format!("removals resume: {}", e.rule),
            ),
            _ => {}
        },
        EventKind::Warning if wants(cfg, NotifyOn::Warning, &pool) => match e.to.as_str() {
            "warning" => open(
                &mut next,
                &mut out,
                format!("warning/{}", e.endpoint),
                NotifyOn::Warning,
                format!("{} warns: {}", e.endpoint, e.rule),
            ),
            "none" => close(
                &mut next,
                &mut out,
                format!("warning/{}", e.endpoint),
                NotifyOn::Warning,
                format!("{}: no agent warns any more", e.endpoint),
            ),
            _ => {}
        },
        EventKind::DnsWrite if wants(cfg, NotifyOn::Dns, "") => match e.to.as_str() {
            "failed" => open(
                &mut next,
                &mut out,
                "dns".into(),
                NotifyOn::Dns,
                format!("DNS write failed ({})", e.from),
            ),
            "applied" => close(
                &mut next,
                &mut out,
                "dns".into(),
                NotifyOn::Dns,
                format!("DNS writes succeed again ({})", e.from),
            ),
            _ => {}
        },
        _ => {}
    }
    (out, next)
}

/// Reminders due at log time `now`, and the state after them.
pub fn reminders(cfg: &NotifyConfig, st: &NotifierState, now: u64) -> (Vec<Message>, NotifierState) {
    let Some(every) = cfg.repeat_every else {
        return (Vec::new(), st.clone());
    };
    let every = every.ms();
    let mut next = st.clone();
    let mut out = Vec::new();
    for (key, a) in next.open.iter_mut() {
        if now < a.last_sent_ms.saturating_add(every) {
            continue;
        }
        let due = a.last_sent_ms.saturating_add(every);
        a.last_sent_ms = now;
        let endpoint = key
            .strip_prefix("endpoint/")
            .or_else(|| key.strip_prefix("fail-open/"))
            .unwrap_or("")
            .to_string();
        let class = match key.as_str() {
            "dns" => NotifyOn::Dns,
            k if k.starts_with("endpoint/") => NotifyOn::Decision,
            _ => NotifyOn::Alarm,
        };
        out.push(Message {
            id: format!("remind-{key}-{due}"),
            key: key.clone(),
            action: Action::Remind,
            class,
            pool: endpoint.split_once('/').map(|(p, _)| p).unwrap_or("").to_string(),
            endpoint,
            summary: format!(
                "still open since {} s of log time: {}",
                now.saturating_sub(a.since_ms) / 1000,
                a.summary
            ),
            detail: String::new(),
            log_time_ms: now,
            event_id: 0,
        });
    }
    (out, next)
}

/// Where a notifier never heard of starts: at the events of the last minute
/// of log time, so adding one to a running cluster does not replay its history.
pub const NEW_NOTIFIER_LOOKBACK_MS: u64 = 60_000;
/// Events read per pass.
const BATCH: usize = 256;

/// Runs every configured notifier until the task is dropped.
pub async fn run(agent: Arc<Agent>) {
    let receivers: Vec<_> = agent.config().notify.clone();
    if receivers.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("notifications off: cannot build the HTTP client: {e}");
            return;
        }
    };
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|cfg| {
            tracing::info!(notifier = %cfg.name, kind = cfg.kind.as_str(), "notifier ready (sends while leader)");
            tokio::spawn(notifier(agent.clone(), cfg, client.clone()))
        })
        .collect();
    // Dropping this future (the agent stops) stops the notifiers.
    struct AbortAll(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortAll {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _guard = AbortAll(tasks);
    std::future::pending::<()>().await;
}

/// What one pass reads: the notifier's state (or where a new one starts),
/// the events after it, the oldest event still kept, and log time.
async fn read(agent: &Agent, name: &str) -> (NotifierState, bool, Vec<AuditEvent>, u64, u64) {
    agent
        .read(|sm| {
            let app = &sm.app;
            let (st, known) = match app.notifiers.get(name) {
                Some(st) => (st.clone(), true),
                None => {
                    let since = app.log_time_ms.saturating_sub(NEW_NOTIFIER_LOOKBACK_MS);
                    let position = app
                        .history
                        .iter()
                        .filter(|e| e.log_time_ms < since)
                        .map(|e| e.id)
                        .max()
                        .unwrap_or(0);
                    (
                        NotifierState {
                            position,
                            ..Default::default()
                        },
                        false,
                    )
                }
            };
            let oldest = app.history.front().map(|e| e.id).unwrap_or(app.next_event + 1);
            let events = app
                .history
                .iter()
                .filter(|e| e.id > st.position)
                .take(BATCH)
                .cloned()
                .collect();
            (st, known, events, oldest, app.log_time_ms)
        })
        .await
}

async fn commit(agent: &Agent, name: &str, st: &NotifierState) -> bool {
    let command = Command::Notified {
        notifier: name.to_string(),
        state: st.clone(),
    };
    match agent.propose_as_leader(agent.id(), command).await {
        Ok(c) if c.reply.accepted => true,
        Ok(c) => {
            tracing::warn!(notifier = %name, "notification position not taken: {}", c.reply.detail);
            false
        }
        Err(e) => {
            tracing::warn!(notifier = %name, "notification position not committed: {e}");
            false
        }
    }
}

/// Whether a quorum still follows this leader, asked before each attempt:
/// a leader cut off from the others (which does not know it yet) sends nothing.
async fn still_leading(agent: &Agent) -> bool {
    if !agent.is_leader() {
        return false;
    }
    let wait = agent.config().raft.election_timeout_max.0 * 2;
    matches!(tokio::time::timeout(wait, agent.confirm_leadership()).await, Ok(Ok(_)))
}

/// Delivers `m`, retrying while this node leads. False when leadership was
/// lost first (the next leader sends it).
async fn deliver(agent: &Agent, rx: &Receiver, m: &Message) -> bool {
    let mut wait = Duration::from_secs(1);
    let mut logged = false;
    loop {
        if !still_leading(agent).await {
            return false;
        }
        match rx.deliver(m, agent.id(), agent.term()).await {
            Delivery::Delivered => {
                agent.instruments().notified(rx.name(), "delivered");
                if logged {
                    tracing::info!(notifier = %rx.name(), id = %m.id, "notification delivered after retries");
                }
                return true;
            }
            Delivery::Rejected(why) => {
                agent.instruments().notified(rx.name(), "rejected");
                tracing::error!(notifier = %rx.name(), id = %m.id, "notification refused for good, not retried: {why}");
                return true;
            }
            Delivery::Failed(why) => {
                agent.instruments().notified(rx.name(), "retried");
                if !logged {
                    tracing::warn!(notifier = %rx.name(), id = %m.id, "notification not delivered, retrying with backoff: {why}");
                    logged = true;
                }
                let jitter = wait.mul_f64(fastrand::f64() * 0.2);
                tokio::time::sleep(wait + jitter).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn notifier(agent: Arc<Agent>, cfg: NotifyConfig, client: reqwest::Client) {
    let rx = Receiver::new(cfg.clone(), client);
    let name = cfg.name.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = agent.applied().notified();
        if agent.is_leader() {
            pass(&agent, &cfg, &rx, &name).await;
        }
        tokio::select! {
            _ = notified => {}
            _ = tick.tick() => {}
        }
    }
}

/// Sends what is due and commits the new position; stops at the first
/// message it could not deliver as leader.
async fn pass(agent: &Agent, cfg: &NotifyConfig, rx: &Receiver, name: &str) {
    let (mut st, known, events, oldest, now) = read(agent, name).await;
    let mut dirty = !known;
    if st.position + 1 < oldest && oldest > 1 {
        let missed = oldest - 1 - st.position;
        tracing::error!(
            notifier = %name,
            "{missed} history events (after {}) were trimmed before they could be sent; going on from event {oldest}",
            st.position
        );
        agent.instruments().notified(name, "missed");
        st.position = oldest - 1;
        dirty = true;
    }
    for e in &events {
        let (messages, mut next) = step(cfg, &st, e);
        next.position = e.id;
        if messages.is_empty() {
            st = next;
            dirty = true;
            continue;
        }
        // The skipped events before this one are committed with it.
        for m in &messages {
            if !deliver(agent, rx, m).await {
                return;
            }
        }
        st = next;
        if !commit(agent, name, &st).await {
            return;
        }
        dirty = false;
    }
    let (due, next) = reminders(cfg, &st, now);
    for m in &due {
        if !deliver(agent, rx, m).await {
            return;
        }
    }
    if !due.is_empty() {
        st = next;
        dirty = true;
    }
    if dirty {
        commit(agent, name, &st).await;
    }
}

#[cfg(test)]
mod tests;

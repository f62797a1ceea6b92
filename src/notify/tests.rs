use super::*;
use crate::config::{Dur, NotifyKind};

fn cfg() -> NotifyConfig {
    NotifyConfig {
        name: "ops".into(),
        kind: NotifyKind::Webhook,
        url: Some("http://127.0.0.1:1/hook".into()),
        url_file: None,
        routing_key: None,
        routing_key_file: None,
        pools: Vec::new(),
        on: vec![NotifyOn::Decision, NotifyOn::Dns, NotifyOn::Alarm],
        send_on_resolved: true,
        repeat_every: None,
        timeout: Dur(Duration::from_secs(1)),
    }
}

fn event(id: u64, kind: EventKind, endpoint: &str, from: &str, to: &str, rule: &str) -> AuditEvent {
    AuditEvent {
        id,
        index: id * 10,
        log_time_ms: id * 1000,
        endpoint: endpoint.into(),
        kind,
        from: from.into(),
        to: to.into(),
        rule: rule.into(),
        up: vec![],
        down: vec![1, 2],
        uncounted: vec![],
    }
}

/// Runs events through `step`, returning every message and the final state.
fn run(cfg: &NotifyConfig, events: &[AuditEvent]) -> (Vec<Message>, NotifierState) {
    let mut st = NotifierState::default();
    let mut all = Vec::new();
    for e in events {
        let (m, mut next) = step(cfg, &st, e);
        next.position = e.id;
        all.extend(m);
        st = next;
    }
    (all, st)
}

#[test]
fn down_then_up_is_one_trigger_and_one_resolve() {
    let (m, st) = run(
        &cfg(),
        &[
            event(1, EventKind::Decision, "web/10.0.0.1", "unknown", "up", "quorum"),
            event(2, EventKind::Decision, "web/10.0.0.1", "up", "down", "quorum"),
            event(3, EventKind::Dns, "web/10.0.0.1", "in", "out", "down"),
            event(4, EventKind::Decision, "web/10.0.0.1", "down", "up", "quorum"),
        ],
    );
    let actions: Vec<_> = m.iter().map(|m| (m.action, m.id.as_str(), m.key.as_str())).collect();
    assert_eq!(
        actions,
        vec![
            (Action::Trigger, "event-2", "endpoint/web/10.0.0.1"),
            (Action::Resolve, "event-4", "endpoint/web/10.0.0.1"),
        ],
        "the first up (from unknown) resolves nothing"
    );
    assert!(st.open.is_empty());
    assert_eq!(st.position, 4);
}

#[test]
fn without_send_on_resolved_the_up_is_silent_but_the_alert_closes() {
    let mut c = cfg();
    c.send_on_resolved = false;
    let (m, st) = run(
        &c,
        &[
            event(1, EventKind::Decision, "web/a", "up", "down", ""),
            event(2, EventKind::Decision, "web/a", "down", "up", ""),
            event(3, EventKind::Decision, "web/a", "up", "down", ""),
        ],
    );
    assert_eq!(
        m.iter().map(|m| m.action).collect::<Vec<_>>(),
        vec![Action::Trigger, Action::Trigger]
    );
    assert_eq!(st.open.len(), 1);
}

#[test]
fn pools_and_classes_filter_and_cluster_wide_events_reach_every_notifier() {
    let mut c = cfg();
    c.pools = vec!["api".into()];
    c.on = vec![NotifyOn::Decision, NotifyOn::Dns];
    let (m, _) = run(
        &c,
        &[
            event(1, EventKind::Decision, "web/a", "up", "down", ""),
            event(2, EventKind::Decision, "api/b", "up", "down", ""),
            event(3, EventKind::DnsWrite, "", "node 1", "failed", "HTTP 403"),
            event(4, EventKind::DnsWrite, "", "node 1", "failed", "HTTP 403"),
            event(5, EventKind::Panic, "", "normal", "frozen", "too many"),
            event(6, EventKind::DnsWrite, "", "node 2", "applied", "ok"),
        ],
    );
    let got: Vec<_> = m.iter().map(|m| (m.action, m.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Action::Trigger, "endpoint/api/b"),
            (Action::Trigger, "dns"),
            (Action::Resolve, "dns"),
        ],
        "web is filtered out, a repeated failure is not re-sent, alarms are off"
    );
}

#[test]
fn panic_freeze_and_fail_open_are_alarms_that_resolve() {
    let (m, st) = run(
        &cfg(),
        &[
            event(1, EventKind::Panic, "", "normal", "frozen", "6 of 10 down"),
            event(
                2,
                EventKind::Guard,
                "web/a",
                "in",
                "in",
                "guard: last A record of the pool's hostnames is never removed (fail open)",
            ),
            event(
                3,
                EventKind::Guard,
                "web/a",
                "in",
                "in",
                "guard: last A record of the pool's hostnames is never removed (fail open)",
            ),
            event(4, EventKind::Panic, "", "frozen", "normal", "1 of 10 down"),
            event(5, EventKind::Dns, "web/a", "in", "out", "down"),
        ],
    );
    let got: Vec<_> = m.iter().map(|m| (m.action, m.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Action::Trigger, "panic"),
            (Action::Trigger, "fail-open/web/a"),
            (Action::Resolve, "panic"),
            (Action::Resolve, "fail-open/web/a"),
        ]
    );
    assert!(st.open.is_empty());
}

#[test]
fn reminders_repeat_in_log_time_with_stable_ids() {
    let mut c = cfg();
    c.repeat_every = Some(Dur(Duration::from_secs(600)));
    let (_, st) = run(&c, &[event(1, EventKind::Decision, "web/a", "up", "down", "")]);
    let (none, same) = reminders(&c, &st, 1000 + 599_999);
    assert!(none.is_empty());
    assert_eq!(same, st);
    let (due, next) = reminders(&c, &st, 1000 + 600_000);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].action, Action::Remind);
    assert_eq!(due[0].id, "remind-endpoint/web/a-601000");
    assert_eq!(due[0].class, NotifyOn::Decision);
    // The same log time gives the same reminder on any leader, and once sent it is not due again.
    assert_eq!(reminders(&c, &st, 1000 + 600_000).0, due);
    assert!(reminders(&c, &next, 1000 + 600_001).0.is_empty());
    c.repeat_every = None;
    assert!(reminders(&c, &st, u64::MAX).0.is_empty());
}

#[test]
fn a_certificate_warning_triggers_once_and_resolves_when_no_agent_warns() {
    let mut c = cfg();
    c.on.push(NotifyOn::Warning);
    let events = [
        event(
            1,
            EventKind::Warning,
            "web/10.0.0.1",
            "none",
            "warning",
            "agent 1: expires within cert_expiry_warn",
        ),
        event(
            2,
            EventKind::Warning,
            "web/10.0.0.1",
            "warning",
            "none",
            "no agent warns",
        ),
    ];
    let (m, st) = run(&c, &events);
    let got: Vec<_> = m.iter().map(|m| (m.action, m.key.as_str(), m.class)).collect();
    assert_eq!(
        got,
        vec![
            (Action::Trigger, "warning/web/10.0.0.1", NotifyOn::Warning),
            (Action::Resolve, "warning/web/10.0.0.1", NotifyOn::Warning),
        ]
    );
    assert!(m[0].summary.contains("cert_expiry_warn"), "{}", m[0].summary);
    assert!(st.open.is_empty());
    // A notifier that does not ask for warnings hears nothing of them.
    let (m, _) = run(&cfg(), &events);
    assert!(m.is_empty(), "{m:?}");
}

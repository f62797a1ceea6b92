//! Human-readable output of the client commands.

use std::time::{Duration, UNIX_EPOCH};

use vantage::proto::v1::{ClusterStatus, HistoryEvent, ListEndpointsResponse, Member};

pub fn fmt_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A log time for people: the time of day (UTC) and how far it is from `now_ms`.
pub fn when(ms: u64, now_ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let rel = |d: u64| humantime::format_duration(Duration::from_secs(d.div_ceil(1000))).to_string();
    let relative = if ms > now_ms {
        format!("in {}", rel(ms - now_ms))
    } else if now_ms - ms < 1000 {
        "now".to_string()
    } else {
        format!("{} ago", rel(now_ms - ms))
    };
    format!("{h:02}:{m:02}:{s:02} UTC ({relative})")
}

/// `vantage explain`: one screen, the answer first.
pub fn render_explanation(e: &serde_json::Value) -> String {
    let now = e["now_ms"].as_u64().unwrap_or(0);
    let t = |k: &str| when(e[k].as_u64().unwrap_or(0), now);
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "{} ({} in pool {})\n  {}\n\n",
        s("endpoint"),
        s("address"),
        s("pool"),
        s("reason")
    );
    out += &format!(
        "decision   {} since {} (log index {}): {}\n",
        s("decision"),
        t("decided_ms"),
        e["decided_index"],
        s("rule")
    );
    out += &format!(
        "DNS        {} since {}: {}\n",
        if e["in_dns"].as_bool().unwrap_or(false) {
            "in"
        } else {
            "out"
        },
        t("placed_ms"),
        s("placement")
    );
    if let Some(d) = e["drained"].as_object() {
        let until = d.get("until_ms").and_then(|u| u.as_u64());
        out += &format!(
            "drained    by {} since {}{}: {}\n",
            d.get("by").and_then(|v| v.as_str()).unwrap_or(""),
            when(d.get("since_ms").and_then(|v| v.as_u64()).unwrap_or(0), now),
            until.map(|u| format!(", until {}", when(u, now))).unwrap_or_default(),
            d.get("reason").and_then(|v| v.as_str()).unwrap_or("")
        );
    }
    if let Some(p) = e["dns_paused"].as_object() {
        out += &format!(
            "paused     every DNS write, by {}: {}\n",
            p.get("by").and_then(|v| v.as_str()).unwrap_or(""),
            p.get("reason").and_then(|v| v.as_str()).unwrap_or("")
        );
    }
    if let Some(u) = e["hold_down_until_ms"].as_u64() {
        out += &format!("hold_down  until {}\n", when(u, now));
    }
    out += &format!("quorum     {} of voters {}\n", e["quorum"], e["voters"]);
    for r in e["reports"].as_array().into_iter().flatten() {
        let counted = r["counted"].as_bool().unwrap_or(false);
        out += &format!(
            "  agent {:<3} {:<8} {}{}\n",
            r["agent"],
            r["status"].as_str().unwrap_or(""),
            if counted {
                "counted".to_string()
            } else {
                format!("not counted: {}", r["why"].as_str().unwrap_or(""))
            },
            if r["status"] == "none" {
                String::new()
            } else {
                format!(
                    ", heard {} ago",
                    humantime::format_duration(Duration::from_secs(r["age_ms"].as_u64().unwrap_or(0) / 1000))
                )
            }
        );
    }
    match e["last_write"].as_str() {
        Some(w) => out += &format!("last write {}: {w}\n", t("last_write_ms")),
        None => out += "last write none recorded for this address (in the kept history)\n",
    }
    for n in e["next"].as_array().into_iter().flatten() {
        out += &format!("next       {}\n", n.as_str().unwrap_or(""));
    }
    out
}

/// A number or `-`.
pub fn opt(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

pub fn render_members(members: &[Member]) -> String {
    let mut out = format!(
        "{:<6} {:<8} {:<24} {:>8} {:>6}\n",
        "id", "role", "addr", "matched", "lag"
    );
    for m in members {
        out += &format!(
            "{:<6} {:<8} {:<24} {:>8} {:>6}\n",
            m.id,
            if m.voter { "voter" } else { "learner" },
            m.addr,
            opt(m.matched_index),
            opt(m.lag)
        );
    }
    out
}

/// Human-readable status; `leader_view` supplies replication lag when `s` is a follower's.
pub fn render_status(s: &ClusterStatus, leader_view: Option<&ClusterStatus>) -> String {
    let leader = match s.leader_id {
        Some(id) => format!("node {id} at {}", s.leader_addr),
        None => "none known".into(),
    };
    let mut out = format!(
        "node {} at {}: {} (term {})\nleader: {leader}\n",
        s.node_id, s.node_addr, s.role, s.term
    );
    out += &format!(
        "log: last {}, committed {}, applied {}, snapshot {}, purged {}\n",
        s.last_log_index, s.committed_index, s.applied_index, s.snapshot_index, s.purged_index
    );
    out += &format!(
        "state: log time {}, {} notes, digest {}\n",
        fmt_time(s.log_time_ms),
        s.notes_applied,
        s.state_digest
    );
    for a in &s.alarms {
        out += &format!("ALARM: {a}\n");
    }
    if !s.initialized {
        out += "not part of a cluster yet (run `vantage cluster bootstrap` or `vantage cluster join`)\n";
        return out;
    }
    let members = leader_view.map(|l| &l.members).unwrap_or(&s.members);
    if let Some(l) = leader_view {
        out += &format!("members (replication as seen by leader node {}):\n", l.node_id);
    } else {
        out += "members:\n";
    }
    out + &render_members(members)
}

/// Human-readable endpoint table: one line per endpoint, one per agent observation.
pub fn render_endpoints(r: &ListEndpointsResponse) -> String {
    let mut out = format!(
        "node {} (log time {}){}\n{}\n",
        r.node_id,
        fmt_time(r.log_time_ms),
        if r.abstaining {
            ", ABSTAINING: control targets unreachable"
        } else {
            ""
        },
        r.icmp
    );
    if r.panic {
        out += &format!("PANIC FREEZE: {}\n", r.panic_reason);
    }
    out += &format!("quorum {} of voters {:?}\n", r.quorum, r.voters);
    for e in &r.endpoints {
        out += &format!("{} [{}]\n", e.id, e.check);
        if !e.decision.is_empty() {
            out += &format!(
                "  decision {:<8} since {} ({}); {} DNS: {}\n",
                e.decision,
                fmt_time(e.decided_ms),
                e.reason,
                if e.in_dns { "in" } else { "out of" },
                e.dns_reason
            );
        }
        if let Some(l) = &e.local {
            out += &format!(
                "  local    {:<8} ok-run {} fail-run {} probes {} (extra {}) rtt {} {}\n",
                l.status,
                l.successes,
                l.failures,
                l.probes,
                l.extra_probes,
                l.last_rtt_us
                    .map(|u| format!("{:.1}ms", u as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                l.last_error
            );
        }
        for o in &e.observations {
            out += &format!(
                "  agent {:<2} {:<8} {:<22} age {:>6.1}s since {}{}{}\n",
                o.agent,
                o.status,
                if o.counted {
                    "counted".to_string()
                } else {
                    format!("not counted: {}", o.uncounted_reason)
                },
                o.age_ms as f64 / 1000.0,
                fmt_time(o.since_ms),
                if o.abstaining { " (abstaining)" } else { "" },
                if o.last_error.is_empty() {
                    String::new()
                } else {
                    format!(" last error: {}", o.last_error)
                }
            );
        }
    }
    out
}

/// One history event on one line.
pub fn render_event(e: &HistoryEvent) -> String {
    let mut line = format!(
        "#{} {} index {} {:<8}",
        e.id,
        fmt_time(e.log_time_ms),
        e.log_index,
        e.kind
    );
    if !e.endpoint.is_empty() {
        line += &format!(" {}", e.endpoint);
    }
    if !e.from.is_empty() || !e.to.is_empty() {
        line += &format!(" {} -> {}", e.from, e.to);
    }
    line += &format!(": {}", e.rule);
    if !e.up.is_empty() || !e.down.is_empty() {
        line += &format!(" [up {:?}, down {:?}", e.up, e.down);
        for u in &e.uncounted {
            line += &format!(", {} {}", u.agent, u.reason);
        }
        line += "]";
    }
    line
}

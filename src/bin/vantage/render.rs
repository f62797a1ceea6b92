//! Human-readable output of the client commands.

use std::time::{Duration, UNIX_EPOCH};

use vantage::proto::v1::{ClusterStatus, HistoryEvent, ListEndpointsResponse, Member};

pub fn fmt_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn opt(v: Option<u64>) -> String {
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
                "  local    {:<8} ok-run {} fail-run {} probes {} rtt {} {}\n",
                l.status,
                l.successes,
                l.failures,
                l.probes,
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

//! The status page: one server-rendered HTML document, no scripts, no
//! external assets, refreshing itself every few seconds. It shows the same
//! answers `cluster status`, `endpoints` and `history` give (it calls the
//! functions behind those gRPC queries).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::agent::Agent;
use crate::grpc::{cluster, endpoints, history};
use crate::propose::Observer;
use crate::proto::v1::{ClusterStatus, HistoryEvent, ListEndpointsResponse};

/// Seconds between the page's own reloads.
pub const REFRESH_SECONDS: u32 = 5;
/// History events shown.
pub const HISTORY_SHOWN: usize = 25;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.up{background:#d9f2d9}.down{background:#f8d0d0}.unknown{background:#eee}\
.uncounted{opacity:.55}.alarm{background:#fff0c0;padding:.4em .6em;margin:.2em 0}\
code{font-size:12px}";

/// Reads the state and renders the page.
pub async fn render(agent: &Agent, observer: &Observer) -> String {
    let status = cluster::status(agent, false).await;
    let eps = endpoints::snapshot(agent, observer, "", false).await;
    let events = history::latest(agent, HISTORY_SHOWN).await;
    html(&status, &eps, &events)
}

/// The page for these answers (pure, so it can be tested as it is).
pub fn html(status: &ClusterStatus, eps: &ListEndpointsResponse, events: &[HistoryEvent]) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let leader = match status.leader_id {
        Some(id) => format!("node {id} ({})", esc(&status.leader_addr)),
        None => "none known".into(),
    };
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>Vantage: node {id}</title><style>{STYLE}</style></head><body>\
         <h1>Vantage status, as node {id} sees it</h1>\
         <p id=\"summary\">Role <b id=\"role\">{role}</b>, term {term}, leader <b id=\"leader\">{leader}</b>; \
         log time {time}; applied index {applied}; catalog version {catalog}. Refreshes every {REFRESH_SECONDS} s.</p>",
        id = status.node_id,
        role = esc(&status.role),
        term = status.term,
        time = utc(status.log_time_ms),
        applied = status.applied_index,
        catalog = status.catalog_version,
    );
    o.push_str("<h2>Alarms</h2><div id=\"alarms\">");
    if status.alarms.is_empty() && !eps.panic {
        o.push_str("<p>None.</p>");
    }
    for a in &status.alarms {
        let _ = write!(o, "<div class=\"alarm\">{}</div>", esc(a));
    }
    o.push_str("</div>");

    o.push_str("<h2>Members</h2><table id=\"members\"><tr><th>node</th><th>address</th><th>voter</th><th>matched index</th><th>lag</th></tr>");
    for m in &status.members {
        let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        let _ = write!(
            o,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.id,
            if status.leader_id == Some(m.id) {
                " (leader)"
            } else {
                ""
            },
            esc(&m.addr),
            if m.voter { "yes" } else { "learner" },
            opt(m.matched_index),
            opt(m.lag),
        );
    }
    o.push_str("</table>");

    // Every agent that reported, and every voter, gets a column.
    let agents: BTreeSet<u64> = eps
        .voters
        .iter()
        .copied()
        .chain(eps.agents.iter().map(|a| a.agent))
        .collect();
    let _ = write!(
        o,
        "<h2>Endpoints</h2><p>Quorum {} of {} voters. A cell is an agent's replicated view; a faded one did not count.</p>\
         <table id=\"endpoints\"><tr><th>endpoint</th><th>decision</th><th>DNS</th>",
        eps.quorum,
        eps.voters.len()
    );
    for a in &agents {
        let _ = write!(o, "<th>agent {a}</th>");
    }
    o.push_str("<th>this node's probe</th></tr>");
    for e in &eps.endpoints {
        let decision = if e.decision.is_empty() {
            "unknown"
        } else {
            e.decision.as_str()
        };
        let _ = write!(
            o,
            "<tr data-endpoint=\"{id}\"><td><code>{id}</code></td>\
             <td class=\"{d} decision\" title=\"{reason}\">{d}</td><td class=\"dns\" title=\"{dns_reason}\">{dns}</td>",
            id = esc(&e.id),
            d = esc(decision),
            reason = esc(&e.reason),
            dns_reason = esc(&e.dns_reason),
            dns = if e.in_dns { "in DNS" } else { "out of DNS" },
        );
        for a in &agents {
            match e.observations.iter().find(|x| x.agent == *a) {
                Some(x) => {
                    let class = if x.counted { "" } else { " uncounted" };
                    let why = if x.counted {
                        format!("counted; reported {} ms ago", x.age_ms)
                    } else {
                        format!("not counted: {}", x.uncounted_reason)
                    };
                    let _ = write!(
                        o,
                        "<td class=\"{s}{class}\" title=\"{why}\">{s}{mark}</td>",
                        s = esc(&x.status),
                        why = esc(&why),
                        mark = if x.counted { "" } else { " (not counted)" },
                    );
                }
                None => o.push_str("<td class=\"unknown\">-</td>"),
            }
        }
        match &e.local {
            Some(l) => {
                let _ = write!(
                    o,
                    "<td class=\"{s}\">{s}{err}</td>",
                    s = esc(&l.status),
                    err = if l.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", esc(&l.last_error))
                    }
                );
            }
            None => o.push_str("<td>not probed here</td>"),
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");

    o.push_str("<h2>Records</h2><table id=\"records\"><tr><th>hostname</th><th>decided records</th></tr>");
    for h in &eps.records {
        let list: Vec<String> = h
            .records
            .iter()
            .map(|r| format!("{} {}", r.r#type, r.content))
            .collect();
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&h.hostname),
            if list.is_empty() {
                "none".to_string()
            } else {
                esc(&list.join(", "))
            }
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Latest history</h2><table id=\"history\"><tr><th>#</th><th>log time</th><th>kind</th><th>endpoint</th><th>change</th><th>rule</th></tr>");
    for ev in events.iter().rev() {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} &rarr; {}</td><td>{}</td></tr>",
            ev.id,
            utc(ev.log_time_ms),
            esc(&ev.kind),
            esc(&ev.endpoint),
            esc(&ev.from),
            esc(&ev.to),
            esc(&ev.rule),
        );
    }
    o.push_str("</table></body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{AgentObservation, EndpointInfo};

    #[test]
    fn escapes_what_an_operator_or_endpoint_could_inject() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        let status = ClusterStatus {
            node_id: 1,
            alarms: vec!["<script>alert(1)</script>".into()],
            ..Default::default()
        };
        let eps = ListEndpointsResponse {
            voters: vec![1, 2],
            quorum: 2,
            endpoints: vec![EndpointInfo {
                id: "web/10.0.0.1".into(),
                decision: "down".into(),
                in_dns: false,
                observations: vec![
                    AgentObservation {
                        agent: 1,
                        status: "down".into(),
                        counted: true,
                        ..Default::default()
                    },
                    AgentObservation {
                        agent: 2,
                        status: "up".into(),
                        counted: false,
                        uncounted_reason: "stale".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = html(&status, &eps, &[]);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("<td class=\"down decision\""));
        assert!(page.contains("out of DNS"));
        assert!(page.contains("up (not counted)"));
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(!page.contains("src=") && !page.contains("href="), "no external assets");
    }
}

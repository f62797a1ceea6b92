//! The bounded audit history: every decision, DNS placement, guard, panic
//! freeze, catalog change and refusal, with the log index that caused it.

use serde::{Deserialize, Serialize};

use super::AppState;
use crate::decide::Tally;
use crate::model::{EventKind, NodeId, Uncounted};

/// One entry of the audit history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Increasing event number.
    pub id: u64,
    /// Log index and log time of the entry that caused it.
    pub index: u64,
    pub log_time_ms: u64,
    /// The endpoint concerned; empty for cluster-wide events.
    pub endpoint: String,
    pub kind: EventKind,
    pub from: String,
    pub to: String,
    /// The rule or guard that applied, in words.
    pub rule: String,
    /// Agents whose counted observations said up / down at the time.
    pub up: Vec<NodeId>,
    pub down: Vec<NodeId>,
    /// Agents whose observations did not count, and why.
    pub uncounted: Vec<(NodeId, Uncounted)>,
}

/// What an event is about, beyond its kind.
pub(super) struct Note<'a> {
    pub endpoint: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub rule: &'a str,
    pub tally: Option<&'a Tally>,
}

impl<'a> Note<'a> {
    /// A cluster-wide event with just a rule.
    pub fn rule(rule: &'a str) -> Note<'a> {
        Note {
            endpoint: "",
            from: "",
            to: "",
            rule,
            tally: None,
        }
    }

    /// An event that moves `endpoint` (or the cluster, when empty) from one state to another.
    pub fn change(endpoint: &'a str, from: &'a str, to: &'a str, rule: &'a str) -> Note<'a> {
        Note {
            endpoint,
            from,
            to,
            rule,
            tally: None,
        }
    }
}

impl AppState {
    /// Appends an audit event caused by the entry at `index`.
    pub(super) fn event(&mut self, index: u64, kind: EventKind, n: Note<'_>) {
        self.next_event += 1;
        let (up, down, uncounted) = match n.tally {
            Some(t) => (t.up.clone(), t.down.clone(), t.uncounted.clone()),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        self.history.push_back(AuditEvent {
            id: self.next_event,
            index,
            log_time_ms: self.log_time_ms,
            endpoint: n.endpoint.to_string(),
            kind,
            from: n.from.to_string(),
            to: n.to.to_string(),
            rule: n.rule.to_string(),
            up,
            down,
            uncounted,
        });
    }

    /// Drops the oldest events beyond the catalog's `history_limit`.
    pub(super) fn trim_history(&mut self) {
        let limit = self.catalog.as_ref().map(|c| c.history_limit).unwrap_or(1000).max(1) as usize;
        while self.history.len() > limit {
            self.history.pop_front();
        }
    }
}

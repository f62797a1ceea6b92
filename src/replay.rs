//! Replaying the recorded log with other decision settings: how many
//! decisions and DNS changes a tuning change would have made over this
//! node's own past, before it is applied.
//!
//! The input is what the node keeps: the state at its latest snapshot and
//! every log entry after it. Probe results themselves are not in the log
//! (only the transitions and heartbeats agents reported), so `fall` and
//! `rise` cannot be replayed; everything the state machine decides can:
//! the quorum, the observation TTL, hold_down and the panic guard.
//! The replay is the state machine's own apply, so with the live settings
//! it reproduces exactly what happened.

use std::collections::BTreeSet;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use crate::model::{EventKind, NodeId};
use crate::state::AppState;
use crate::store::SmData;
use crate::types::{Catalog, Command, Entry, StoredMembership};

/// Settings to try instead of the committed ones; None keeps the committed value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    pub quorum: Option<u32>,
    pub observation_ttl_ms: Option<u64>,
    pub hold_down_ms: Option<u64>,
    pub panic_threshold_ppm: Option<u32>,
    pub panic_window_ms: Option<u64>,
}

impl Settings {
    fn apply_to(&self, c: &mut Catalog) {
        if let Some(q) = self.quorum {
            c.quorum = Some(q);
        }
        if let Some(v) = self.observation_ttl_ms {
            c.observation_ttl_ms = v;
        }
        if let Some(v) = self.hold_down_ms {
            c.hold_down_ms = v;
        }
        if let Some(v) = self.panic_threshold_ppm {
            c.panic_threshold_ppm = v;
        }
        if let Some(v) = self.panic_window_ms {
            c.panic_window_ms = v;
        }
        // Every event of the replay is kept, so none is missed in the count.
        c.history_limit = u32::MAX;
    }
}

/// One run of the replay.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub decisions: u64,
    pub dns_changes: u64,
    pub panics: u64,
    /// (log index, endpoint, kind, to) of every decision and DNS change.
    #[serde(skip)]
    pub events: Vec<(u64, String, String, String)>,
}

/// Live settings against the tried ones, over the same entries.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub from_index: u64,
    pub to_index: u64,
    pub entries: u64,
    pub live: Run,
    pub tried: Run,
    pub settings: Settings,
    /// The first events that one run has and the other has not.
    pub first_differences: Vec<String>,
}

fn run(start: &SmData, entries: &[Entry], settings: &Settings) -> Run {
    let mut app: AppState = start.app.clone();
    if let Some(c) = app.catalog.as_mut() {
        settings.apply_to(c);
    }
    let mut membership: StoredMembership = start.last_membership.clone();
    let mut voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
    let mut out = Run::default();
    let mut seen = app.next_event;
    for entry in entries {
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(p) => {
                let mut p = p.clone();
                match &mut p.command {
                    Command::Catalog(c) | Command::ApplyCatalog { catalog: c, .. } => settings.apply_to(c),
                    _ => {}
                }
                app.apply(entry.log_id.index, &p, &voters);
            }
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(entry.log_id), m.clone());
                voters = membership.membership().voter_ids().collect();
                app.membership_changed(entry.log_id.index, &voters);
            }
        }
        for e in app.history.iter().filter(|e| e.id > seen) {
            match e.kind {
                EventKind::Decision => out.decisions += 1,
                EventKind::Dns => out.dns_changes += 1,
                EventKind::Panic => out.panics += 1,
                _ => continue,
            }
            out.events
                .push((e.index, e.endpoint.clone(), e.kind.as_str().to_string(), e.to.clone()));
        }
        seen = app.next_event;
    }
    out
}

/// Replays `entries` (which follow the state `start`) with the live settings
/// and with `settings`.
pub fn compare(start: &SmData, entries: &[Entry], settings: &Settings) -> Comparison {
    let live = run(start, entries, &Settings::default());
    let tried = run(start, entries, settings);
    let a: BTreeSet<_> = live.events.iter().cloned().collect();
    let b: BTreeSet<_> = tried.events.iter().cloned().collect();
    let mut first_differences: Vec<String> = Vec::new();
    for (index, endpoint, kind, to) in live.events.iter().filter(|e| !b.contains(*e)).take(5) {
        first_differences.push(format!(
            "index {index}: live {kind} {endpoint} -> {to}; the tried settings did not"
        ));
    }
    for (index, endpoint, kind, to) in tried.events.iter().filter(|e| !a.contains(*e)).take(5) {
        first_differences.push(format!(
            "index {index}: the tried settings {kind} {endpoint} -> {to}; live did not"
        ));
    }
    first_differences.sort_by_key(|d| {
        d.split_whitespace()
            .nth(1)
            .and_then(|i| i.trim_end_matches(':').parse::<u64>().ok())
            .unwrap_or(0)
    });
    first_differences.truncate(5);
    Comparison {
        from_index: start.last_applied.map(|l| l.index + 1).unwrap_or(0),
        to_index: entries.last().map(|e| e.log_id.index).unwrap_or(0),
        entries: entries.len() as u64,
        live,
        tried,
        settings: settings.clone(),
        first_differences,
    }
}

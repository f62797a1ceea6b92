//! Operator overrides, replicated and audited: draining an endpoint out of
//! DNS (for a maintenance window or until undrained) and pausing every
//! provider write. Both are log entries, applied like any other, so every
//! replica agrees on them and the history says who did what and why.

use std::collections::BTreeSet;

use super::audit::Note;
use super::{AppState, Override};
use crate::model::{EventKind, NodeId};
use crate::types::Reply;

impl AppState {
    fn said(&self, accepted: bool, detail: String) -> Reply {
        Reply {
            log_time_ms: self.log_time_ms,
            accepted,
            detail,
        }
    }

    /// A hostname whose every record would be gone with `id` drained too.
    fn left_empty_by_draining(&self, id: &str) -> Option<String> {
        let c = self.catalog.as_ref()?;
        let pool = c.pools.iter().find(|p| p.endpoints.iter().any(|e| e.id == id))?;
        let others_in = pool
            .endpoints
            .iter()
            .filter(|e| e.id != id)
            .filter_map(|e| self.endpoints.get(&e.id))
            .any(|st| st.in_dns && st.drained.is_none());
        if others_in {
            return None;
        }
        pool.hostnames.first().cloned()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn drain(
        &mut self,
        index: u64,
        id: &str,
        reason: &str,
        for_ms: Option<u64>,
        force: bool,
        by: &str,
        voters: &BTreeSet<NodeId>,
    ) -> Reply {
        let now = self.log_time_ms;
        let Some(st) = self.endpoints.get(id) else {
            return self.said(false, format!("endpoint {id} is not in the catalog"));
        };
        if st.drained.is_some() {
            return self.said(false, format!("endpoint {id} is already drained"));
        }
        if !force {
            if let Some(host) = self.left_empty_by_draining(id) {
                return self.said(
                    false,
                    format!(
                        "draining {id} would leave {host} with no record in DNS; refused (--force drains it anyway)"
                    ),
                );
            }
        }
        let until_ms = for_ms.map(|d| now.saturating_add(d));
        let pool = st.pool.clone();
        if let Some(st) = self.endpoints.get_mut(id) {
            st.drained = Some(Override {
                by: by.to_string(),
                reason: reason.to_string(),
                since_ms: now,
                until_ms,
            });
        }
        let window = until_ms
            .map(|u| format!(" until {}", crate::model::at(u)))
            .unwrap_or_default();
        let rule = format!("drained by {by}{window}: {reason}");
        self.event(index, EventKind::Override, Note::change(id, "normal", "drained", &rule));
        // Placement alone changes: the decision stays the quorum rule's.
        let _ = voters;
        self.place_pool(index, &pool);
        self.said(true, rule)
    }

    pub(super) fn undrain(&mut self, index: u64, id: &str, why: &str, voters: &BTreeSet<NodeId>) -> Reply {
        let now = self.log_time_ms;
        let Some(st) = self.endpoints.get_mut(id) else {
            return self.said(false, format!("endpoint {id} is not in the catalog"));
        };
        if st.drained.take().is_none() {
            return self.said(false, format!("endpoint {id} is not drained"));
        }
        // Back under the quorum rule, and its re-add waits for hold_down
        // from now, as after any removal.
        st.removed_ms = Some(now);
        let pool = st.pool.clone();
        self.event(index, EventKind::Override, Note::change(id, "drained", "normal", why));
        self.reevaluate(index, &BTreeSet::from([id.to_string()]), voters);
        self.place_pool(index, &pool);
        self.said(true, format!("{id}: {why}"))
    }

    /// Ends maintenance windows whose time has come (log time).
    pub(super) fn expire_drains(&mut self, index: u64, voters: &BTreeSet<NodeId>) {
        let now = self.log_time_ms;
        let due: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.drained.as_ref().and_then(|d| d.until_ms).is_some_and(|u| u <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.undrain(index, &id, "the maintenance window ended", voters);
        }
    }

    pub(super) fn pause_dns(&mut self, index: u64, paused: bool, reason: &str, by: &str) -> Reply {
        let now = self.log_time_ms;
        match (paused, self.dns_paused.is_some()) {
            (true, true) => self.said(false, "DNS writes are already paused".into()),
            (false, false) => self.said(false, "DNS writes are not paused".into()),
            (true, false) => {
                self.dns_paused = Some(Override {
                    by: by.to_string(),
                    reason: reason.to_string(),
                    since_ms: now,
                    until_ms: None,
                });
                let rule = format!("every provider write paused by {by}: {reason}");
                self.event(index, EventKind::Override, Note::change("", "writing", "paused", &rule));
                self.said(true, rule)
            }
            (false, true) => {
                self.dns_paused = None;
                let rule = format!("provider writes resumed by {by}");
                self.event(index, EventKind::Override, Note::change("", "paused", "writing", &rule));
                self.said(true, rule)
            }
        }
    }
}

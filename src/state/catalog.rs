//! The catalog in force and what it implies for DNS: which endpoints exist,
//! which records Vantage owns, and which records DNS should hold.

use std::collections::{BTreeMap, BTreeSet};

use super::audit::Note;
use super::{AppState, EndpointState};
use crate::model::{EventKind, NodeId, Record, RecordType};
use crate::types::Catalog;

impl AppState {
    /// Whether the catalog in force lists endpoint `id`.
    pub fn lists(&self, id: &str) -> bool {
        self.endpoints.contains_key(id)
    }

    /// Installs a new catalog: new endpoints start at the catalog's initial
    /// decision and in DNS; endpoints no longer listed are forgotten.
    /// The one rule for a catalog change, from a leader's file or an
    /// operator: the first catalog is installed; after that only a higher
    /// version is, with its difference in the history. An equal version with
    /// other content is refused: that is a lagging file, never a change.
    pub(super) fn change_catalog(
        &mut self,
        index: u64,
        c: &Catalog,
        by: &str,
        voters: &BTreeSet<NodeId>,
        now: u64,
    ) -> crate::types::Reply {
        let reply = |accepted: bool, detail: String| crate::types::Reply {
            log_time_ms: now,
            accepted,
            detail,
        };
        if let Some(cur) = &self.catalog {
            if c.version <= cur.version {
                if c.content_digest() == cur.content_digest() {
                    return reply(true, format!("catalog version {} unchanged", cur.version));
                }
                return reply(
                    false,
                    format!(
                        "catalog version {} is not newer than the committed version {}: raise catalog_version to \
                         change the cluster's catalog",
                        c.version, cur.version
                    ),
                );
            }
        }
        let diff = match &self.catalog {
            Some(cur) => cur.diff(c),
            None => vec!["first catalog".to_string()],
        };
        let summary = format!(
            "catalog version {} applied by {by}: {}",
            c.version,
            if diff.is_empty() {
                "no content change".to_string()
            } else {
                diff.join("; ")
            }
        );
        self.event(index, EventKind::Catalog, Note::rule(&summary));
        // Records of endpoints leaving the catalog stay owned until a write
        // has removed them: otherwise they would be foreign, and left in DNS.
        if let Some(cur) = &self.catalog {
            let kept: BTreeSet<(String, String)> = c
                .pools
                .iter()
                .flat_map(|p| {
                    p.hostnames
                        .iter()
                        .flat_map(|h| p.endpoints.iter().map(|e| (h.clone(), e.address.clone())))
                })
                .collect();
            for (h, a) in &kept {
                if let Some(addresses) = self.retiring.get_mut(h) {
                    addresses.remove(a);
                }
            }
            self.retiring.retain(|_, addresses| !addresses.is_empty());
            for p in &cur.pools {
                for h in &p.hostnames {
                    for e in &p.endpoints {
                        if !kept.contains(&(h.clone(), e.address.clone())) {
                            self.retiring
                                .entry(h.clone())
                                .or_default()
                                .insert(e.address.clone(), index);
                        }
                    }
                }
            }
        }
        self.install_catalog(index, c.clone(), voters);
        reply(true, summary)
    }

    pub(super) fn install_catalog(&mut self, index: u64, c: Catalog, voters: &BTreeSet<NodeId>) {
        let now = self.log_time_ms;
        let mut wanted: BTreeMap<String, (String, String)> = BTreeMap::new();
        for pool in &c.pools {
            for e in &pool.endpoints {
                wanted.insert(e.id.clone(), (pool.name.clone(), e.address.clone()));
            }
        }
        let gone: Vec<String> = self
            .endpoints
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        let pools: BTreeSet<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
        for id in gone {
            let keep = self
                .endpoints
                .get(&id)
                .is_some_and(|st| st.in_dns && pools.contains(st.pool.as_str()));
            if keep {
                // Its pool remains: it leaves DNS the way a down endpoint
                // does, so the pool's guards (the last record, min_healthy)
                // hold it while they must.
                if let Some(st) = self.endpoints.get_mut(&id) {
                    st.retiring = true;
                    st.decision = crate::model::Decision::Down;
                    st.decided_ms = now;
                    st.decided_index = index;
                    st.reason = "removed from the catalog".into();
                    st.drained = None;
                }
                let note = Note::change(
                    &id,
                    "listed",
                    "retiring",
                    "removed from the catalog: leaves DNS through the guards",
                );
                self.event(index, EventKind::Catalog, note);
            } else {
                self.endpoints.remove(&id);
                self.observations.remove(&id);
                let note = Note::change(&id, "listed", "removed", "endpoint removed from the catalog");
                self.event(index, EventKind::Catalog, note);
            }
        }
        for (id, (pool, address)) in wanted {
            match self.endpoints.get_mut(&id) {
                Some(st) => {
                    st.pool = pool;
                    st.retiring = false;
                }
                None => {
                    self.endpoints.insert(
                        id,
                        EndpointState {
                            pool,
                            rtype: RecordType::of(&address),
                            address,
                            decision: c.initial,
                            decided_ms: now,
                            decided_index: index,
                            reason: "initial decision from the catalog".into(),
                            up_votes: 0,
                            in_dns: true,
                            dns_reason: "initial".into(),
                            dns_since_ms: now,
                            removed_ms: None,
                            drained: None,
                            retiring: false,
                        },
                    );
                }
            }
        }
        self.observations.retain(|id, _| self.endpoints.contains_key(id));
        let summary = format!(
            "catalog installed: {} endpoints in {} pools",
            self.endpoints.len(),
            c.pools.len()
        );
        self.catalog = Some(c);
        self.event(index, EventKind::Catalog, Note::rule(&summary));
        let all: BTreeSet<String> = self.endpoints.keys().cloned().collect();
        self.reevaluate(index, &all, voters);
    }

    /// The records this catalog may touch: hostname → every address of its pool.
    pub fn owned_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Some(c) = &self.catalog {
            for pool in &c.pools {
                for host in &pool.hostnames {
                    out.entry(host.clone())
                        .or_default()
                        .extend(pool.endpoints.iter().map(|e| e.address.clone()));
                }
            }
        }
        for (host, addresses) in &self.retiring {
            out.entry(host.clone()).or_default().extend(addresses.keys().cloned());
        }
        if let Some(c) = &self.catalog {
            for pool in &c.pools {
                for st in self.endpoints.values().filter(|st| st.retiring && st.pool == pool.name) {
                    for host in &pool.hostnames {
                        out.entry(host.clone()).or_default().insert(st.address.clone());
                    }
                }
            }
        }
        out
    }

    /// The record set DNS should hold: every hostname × every endpoint of its
    /// pool that is placed in DNS.
    pub fn desired_records(&self) -> BTreeSet<Record> {
        let mut out = BTreeSet::new();
        let Some(c) = &self.catalog else { return out };
        for pool in &c.pools {
            for host in &pool.hostnames {
                for e in &pool.endpoints {
                    if let Some(st) = self.endpoints.get(&e.id).filter(|st| st.in_dns) {
                        out.insert(Record {
                            name: host.clone(),
                            rtype: st.rtype,
                            content: st.address.clone(),
                        });
                    }
                }
                // Removed from the catalog but still held in DNS by a guard.
                for st in self
                    .endpoints
                    .values()
                    .filter(|st| st.retiring && st.in_dns && st.pool == pool.name)
                {
                    out.insert(Record {
                        name: host.clone(),
                        rtype: st.rtype,
                        content: st.address.clone(),
                    });
                }
            }
        }
        out
    }
}

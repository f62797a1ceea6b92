//! The decision settings and the replicated catalog a configuration describes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, Dur};
use crate::model::Decision;
use crate::types::{Catalog, CatalogEndpoint, CatalogPool};

/// How the replicated decision is made; part of the catalog every replica applies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Counted observations needed to decide; defaults to a majority of the voters.
    pub quorum: Option<u32>,
    /// An agent's observations stop counting this long (log time) after its last report.
    pub observation_ttl: Dur,
    /// Decision of an endpoint before any quorum: "up" (as Goavail) or "unknown".
    pub initial: String,
    /// Share of all endpoints (0 < x <= 1) decided down within `panic_window`
    /// above which removals freeze.
    pub panic_threshold: f64,
    pub panic_window: Dur,
    /// An endpoint taken out of DNS returns only after being decided up this long.
    pub hold_down: Dur,
    /// Audit events kept in the replicated history.
    pub history_limit: u32,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            quorum: None,
            observation_ttl: Dur(Duration::from_secs(15)),
            initial: "up".into(),
            panic_threshold: 0.5,
            panic_window: Dur(Duration::from_secs(60)),
            hold_down: Dur(Duration::from_secs(30)),
            history_limit: 1000,
        }
    }
}

impl Config {
    pub(super) fn validate_decision(&self) -> Result<(), ConfigError> {
        let d = &self.decision;
        if let Some(q) = d.quorum {
            if q == 0 || q as usize > self.members.len() {
                return Err(self.invalid(
                    "decision.quorum",
                    format!("expected 1 to the number of voters ({}), got {q}", self.members.len()),
                ));
            }
        }
        if d.observation_ttl <= self.probe.heartbeat {
            return Err(self.invalid(
                "decision.observation_ttl",
                format!(
                    "expected more than probe.heartbeat ({}), or live agents would expire between heartbeats; got {}",
                    self.probe.heartbeat, d.observation_ttl
                ),
            ));
        }
        if d.initial != "up" && d.initial != "unknown" {
            return Err(self.invalid(
                "decision.initial",
                format!("expected \"up\" or \"unknown\", got {:?}", d.initial),
            ));
        }
        if !(d.panic_threshold > 0.0 && d.panic_threshold <= 1.0) {
            return Err(self.invalid(
                "decision.panic_threshold",
                format!(
                    "expected a share above 0 and at most 1 (1 turns the freeze off), got {}",
                    d.panic_threshold
                ),
            ));
        }
        if d.panic_window.0.is_zero() {
            return Err(self.invalid("decision.panic_window", "expected a duration greater than zero, got 0"));
        }
        if d.history_limit == 0 {
            return Err(self.invalid("decision.history_limit", "expected at least 1 event, got 0"));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (p, pool) in self.pools.iter().enumerate() {
            if pool.min_healthy as usize > pool.endpoints.len() {
                return Err(self.invalid(
                    &format!("pools[{p}].min_healthy"),
                    format!(
                        "expected at most the pool's {} endpoints, got {}",
                        pool.endpoints.len(),
                        pool.min_healthy
                    ),
                ));
            }
            match pool.quorum.as_deref() {
                None | Some("count") => {}
                Some("regions") => {
                    let unplaced: Vec<String> = self
                        .members
                        .iter()
                        .filter(|m| m.region.as_deref().is_none_or(str::is_empty))
                        .map(|m| m.id.to_string())
                        .collect();
                    if !unplaced.is_empty() {
                        return Err(self.invalid(
                            &format!("pools[{p}].quorum"),
                            format!(
                                "\"regions\" needs a region on every [[members]] entry; members {} have none",
                                unplaced.join(", ")
                            ),
                        ));
                    }
                    let regions: std::collections::BTreeSet<&str> =
                        self.members.iter().filter_map(|m| m.region.as_deref()).collect();
                    if regions.len() < 2 {
                        return Err(self.invalid(
                            &format!("pools[{p}].quorum"),
                            format!("\"regions\" needs members in at least two regions, got {regions:?}"),
                        ));
                    }
                }
                Some(other) => {
                    return Err(self.invalid(
                        &format!("pools[{p}].quorum"),
                        format!("expected \"regions\" or \"count\", got {other:?}"),
                    ))
                }
            }
            for (h, host) in pool.hostnames.iter().enumerate() {
                if let Some(other) = seen.insert(host.as_str(), pool.name.as_str()) {
                    return Err(self.invalid(
                        &format!("pools[{p}].hostnames[{h}]"),
                        format!("{host:?} is already served by pool {other:?}; a hostname belongs to one pool"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The replicated catalog this configuration describes.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let d = &self.decision;
        let endpoints = self.endpoints()?;
        let pools = self
            .pools
            .iter()
            .map(|p| CatalogPool {
                name: p.name.clone(),
                hostnames: p
                    .hostnames
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                min_healthy: p.min_healthy,
                endpoints: endpoints
                    .iter()
                    .filter(|e| e.pool == p.name)
                    .map(|e| CatalogEndpoint {
                        id: e.id.clone(),
                        address: e.addr.to_string(),
                    })
                    .collect(),
                by_regions: p.quorum.as_deref() == Some("regions"),
            })
            .collect();
        Ok(Catalog {
            version: self.catalog_version,
            quorum: d.quorum,
            observation_ttl_ms: d.observation_ttl.ms(),
            initial: if d.initial == "unknown" {
                Decision::Unknown
            } else {
                Decision::Up
            },
            panic_threshold_ppm: (d.panic_threshold * 1_000_000.0).round() as u32,
            panic_window_ms: d.panic_window.ms(),
            hold_down_ms: d.hold_down.ms(),
            history_limit: d.history_limit,
            pools,
            regions: self
                .members
                .iter()
                .filter_map(|m| m.region.clone().map(|r| (m.id, r)))
                .collect(),
        })
    }
}

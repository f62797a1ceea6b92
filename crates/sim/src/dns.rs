//! The simulated DNS provider: one record store every agent's provider
//! writes to, fenced by term, recording each write with its node and term.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vantage::dns::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record};

/// The provider's side of the world.
pub struct DnsWorld {
    records: BTreeMap<(String, String), Existing>,
    next_id: u64,
    /// The greatest leader id (term, node) that has written. openraft orders
    /// leaders by term, then node id (two candidates of one term may each win
    /// in turn), so that pair is the fencing token, not the term alone.
    max_leader: (u64, u64),
    /// Hostnames that have held records (they must never hold none again).
    held: BTreeSet<String>,
    /// Endpoint address → when it died, until its records are deleted.
    deaths: BTreeMap<String, Duration>,
    error: f64,
    lost: f64,
    rng: fastrand::Rng,
    pub writes: Vec<String>,
    pub fenced: u64,
    pub violations: Vec<String>,
    pub failovers: Vec<u64>,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

impl DnsWorld {
    pub fn new(seed: u64) -> DnsWorld {
        DnsWorld {
            records: BTreeMap::new(),
            next_id: 1,
            max_leader: (0, 0),
            held: BTreeSet::new(),
            deaths: BTreeMap::new(),
            error: 0.0,
            lost: 0.0,
            rng: fastrand::Rng::with_seed(seed ^ 0xd45),
            writes: Vec::new(),
            fenced: 0,
            violations: Vec::new(),
            failovers: Vec::new(),
        }
    }

    /// Every record held.
    pub fn records(&self) -> BTreeSet<Record> {
        self.records.values().map(|e| e.record.clone()).collect()
    }

    /// From now on a share `error` of calls fails before doing anything, and
    /// a share `lost` does its work and loses the answer.
    pub fn set_faults(&mut self, error: f64, lost: f64) {
        self.error = error;
        self.lost = lost;
    }

    pub fn endpoint_died(&mut self, address: String, at: Duration) {
        self.deaths.insert(address, at);
    }

    pub fn endpoint_lives(&mut self, address: &str) {
        self.deaths.remove(address);
    }

    fn apply(&mut self, node: u64, term: u64, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        let at = now();
        if self.rng.f64() < self.error {
            return Err(ProviderError::Transient("simulated: 503 before any change".into()));
        }
        if (term, node) < self.max_leader {
            self.fenced += 1;
            let (t, n) = self.max_leader;
            self.violations.push(format!(
                "at {} ms node {node} wrote as leader of term {term}, after node {n} had written as leader of term {t} (refused by the fence)",
                at.as_millis()
            ));
            return Err(ProviderError::Permanent(format!(
                "fenced: leader {term}/{node} is older than {t}/{n}"
            )));
        }
        self.max_leader = (term, node);
        let mut out = Vec::new();
        for c in changes {
            match c {
                Change::Delete(e) => {
                    self.records.remove(&(e.record.name.clone(), e.record.content.clone()));
                    if let Some(died) = self.deaths.remove(&e.record.content) {
                        self.failovers.push((at - died).as_millis() as u64);
                    }
                }
                Change::Create(r) => {
                    let id = format!("r{}", self.next_id);
                    self.next_id += 1;
                    self.records
                        .entry((r.name.clone(), r.content.clone()))
                        .or_insert(Existing { record: r.clone(), id });
                }
            }
            out.push((c.clone(), Outcome::Applied));
        }
        let names: BTreeSet<String> = self.records.keys().map(|(n, _)| n.clone()).collect();
        for h in &self.held {
            if !names.contains(h) {
                self.violations.push(format!(
                    "at {} ms node {node}'s write (term {term}) left {h} with no record",
                    at.as_millis()
                ));
            }
        }
        self.held.extend(names);
        self.writes.push(format!(
            "{} ms node {node} term {term}: {}",
            at.as_millis(),
            changes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ));
        if self.rng.f64() < self.lost {
            return Err(ProviderError::Transient("simulated: the answer was lost".into()));
        }
        Ok(out)
    }
}

/// One agent's handle on the provider.
pub struct SimProvider {
    node: u64,
    term: AtomicU64,
    world: Arc<Mutex<DnsWorld>>,
}

impl SimProvider {
    pub fn new(node: u64, world: Arc<Mutex<DnsWorld>>) -> SimProvider {
        SimProvider {
            node,
            term: AtomicU64::new(0),
            world,
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, DnsWorld> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A provider's answer takes 2-20 ms.
    async fn latency(&self) {
        let ms = self.world().rng.u64(2..=20);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[tonic::async_trait]
impl Provider for SimProvider {
    fn describe(&self) -> String {
        "simulated provider (fenced by term)".into()
    }

    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        self.latency().await;
        let mut w = self.world();
        if w.rng.f64() < w.error {
            return Err(ProviderError::Transient("simulated: 503 on list".into()));
        }
        Ok(w.records.values().filter(|e| owned.owns(&e.record)).cloned().collect())
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        self.latency().await;
        let term = self.term.load(Ordering::Relaxed);
        self.world().apply(self.node, term, changes)
    }

    fn set_context(&self, _node: u64, term: u64) {
        self.term.store(term, Ordering::Relaxed);
    }
}

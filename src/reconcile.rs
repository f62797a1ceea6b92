//! The reconciler: the leader, and only the leader, makes the DNS provider
//! hold the record set the replicated state decided (design rule 6).
//!
//! It runs when the desired set changes, when this node becomes leader, and
//! every `reconcile_interval` to repair drift (a record deleted by hand). Each
//! round lists what the provider holds (owned records only), diffs it against
//! the desired set, re-confirms leadership with a quorum
//! (`ensure_linearizable`) and abandons the batch if that fails, applies the
//! difference, and proposes a `DnsAudit` entry with the term, the log index
//! the decision came from, the provider's answer and the latency. Writes are
//! idempotent; an unknown outcome is settled by listing again next round.
//! In dry-run mode the diff is recorded, never written.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::agent::Agent;
use crate::dns::{self, Change, Existing, Outcome, Owned, Provider, ProviderError};
use crate::model::Record;
use crate::types::{Command, DnsAudit, DnsIntent};

/// What the leader would do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub desired: BTreeSet<Record>,
    pub actual: Vec<Existing>,
    pub changes: Vec<Change>,
    /// Last applied index the desired set was computed at.
    pub served_index: u64,
}

/// The leader-only writer of one provider.
pub struct Reconciler {
    agent: Arc<Agent>,
    /// Rebuilt when the credential files change.
    provider: RwLock<Arc<dyn Provider>>,
    /// The credential files and a digest of what they held when the provider was built.
    credentials: Mutex<Vec<(PathBuf, Option<u64>)>>,
    pub dry_run: bool,
    interval: Duration,
    /// The latest listing (when, of what, what it held), for `plan`.
    listing: tokio::sync::Mutex<Option<(Instant, Owned, Vec<Existing>)>>,
    /// The provider's current failure, already recorded in the history.
    failure: Mutex<Option<String>>,
    /// The provider whose 429 answers were last counted, and how many it had.
    rate_limits_seen: Mutex<(Arc<dyn Provider>, u64)>,
}

/// How often the credential files are looked at for a change.
pub const CREDENTIALS_CHECK_EVERY: Duration = Duration::from_secs(5);

fn digest(path: &PathBuf) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

fn stamps(files: Vec<PathBuf>) -> Vec<(PathBuf, Option<u64>)> {
    files
        .into_iter()
        .map(|f| {
            let d = digest(&f);
            (f, d)
        })
        .collect()
}

/// A follower's attempts to take over DNS writes from a leader whose provider refuses it.
struct Takeover {
    backoff: Backoff,
    next: Instant,
    last_error: Option<String>,
}

/// How long a listing answers `plan` before the provider is asked again.
pub const PLAN_LISTING_TTL: Duration = Duration::from_secs(5);

impl Reconciler {
    pub fn new(agent: Arc<Agent>, provider: Arc<dyn Provider>) -> Reconciler {
        Reconciler {
            dry_run: agent.config().dns.dry_run,
            interval: agent.config().dns.reconcile_interval.0,
            credentials: Mutex::new(stamps(dns::credential_files(agent.config()))),
            agent,
            rate_limits_seen: Mutex::new((provider.clone(), 0)),
            provider: RwLock::new(provider),
            listing: tokio::sync::Mutex::new(None),
            failure: Mutex::new(None),
        }
    }

    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Carries the provider's 429 count into `/metrics` (a rebuilt provider starts at 0).
    fn count_rate_limits(&self, provider: &Arc<dyn Provider>) {
        let now = provider.rate_limited();
        let mut seen = self.rate_limits_seen.lock().unwrap_or_else(|p| p.into_inner());
        let before = if Arc::ptr_eq(&seen.0, provider) { seen.1 } else { 0 };
        self.agent
            .instruments()
            .dns_rate_limited
            .inc_by(now.saturating_sub(before));
        *seen = (provider.clone(), now);
    }

    /// Lists the provider, counted and timed for `/metrics`.
    async fn list(&self, provider: &Arc<dyn Provider>, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        let started = Instant::now();
        let result = provider.list(owned).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ProviderError::Permanent(_)) => "refused",
            Err(_) => "error",
        };
        self.agent
            .instruments()
            .dns_request("list", outcome, started.elapsed().as_secs_f64());
        self.count_rate_limits(provider);
        result
    }

    /// Applies changes, counted and timed for `/metrics`.
    async fn apply(
        &self,
        provider: &Arc<dyn Provider>,
        changes: &[Change],
    ) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        let started = Instant::now();
        let result = provider.apply(changes).await;
        let outcome = match &result {
            Ok(o) if o.iter().all(|(_, o)| *o == Outcome::Applied) => "ok",
            Ok(_) => "failed",
            Err(ProviderError::Permanent(_)) => "refused",
            Err(_) => "error",
        };
        self.agent
            .instruments()
            .dns_request("apply", outcome, started.elapsed().as_secs_f64());
        self.count_rate_limits(provider);
        result
    }

    pub fn describe(&self) -> String {
        self.provider().describe()
    }

    /// Rebuilds the provider when a credential file changed (a rotated or
    /// fixed token). True when the new credentials are in use.
    pub async fn reload_if_changed(&self) -> bool {
        let files: Vec<PathBuf> = {
            let known = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
            if known.iter().all(|(f, d)| digest(f) == *d) {
                return false;
            }
            known.iter().map(|(f, _)| f.clone()).collect()
        };
        let names = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) = stamps(files);
        match dns::from_config(self.agent.config()) {
            Ok(Some(p)) => {
                *self.provider.write().unwrap_or_else(|p| p.into_inner()) = p;
                *self.listing.lock().await = None;
                tracing::info!("DNS credentials changed ({names}): the provider uses them from now on");
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!("DNS credentials changed ({names}) but cannot be used, keeping the previous ones: {e}");
                false
            }
        }
    }

    /// The desired set and the owned names, from this node's applied state.
    async fn desired(&self) -> (BTreeSet<Record>, Owned, u64) {
        self.agent
            .read(|sm| {
                let owned = Owned {
                    names: sm.app.owned_names(),
                };
                (
                    sm.app.desired_records(),
                    owned,
                    sm.last_applied.map(|l| l.index).unwrap_or(0),
                )
            })
            .await
    }

    /// The changes the desired set needs, for `vantage plan`. The provider
    /// is listed at most once per [`PLAN_LISTING_TTL`] for this (the last
    /// round's listing serves too), so however often an operator asks, the
    /// request budget stays with the writes.
    pub async fn plan(&self) -> Result<Plan, ProviderError> {
        let (desired, owned, served_index) = self.desired().await;
        let mut cache = self.listing.lock().await;
        let actual = match cache
            .as_ref()
            .filter(|(at, o, _)| at.elapsed() < PLAN_LISTING_TTL && *o == owned)
        {
            Some((_, _, actual)) => actual.clone(),
            None => {
                let actual = self.list(&self.provider(), &owned).await?;
                *cache = Some((Instant::now(), owned.clone(), actual.clone()));
                actual
            }
        };
        drop(cache);
        Ok(Self::diffed(desired, actual, &owned, served_index))
    }

    fn diffed(desired: BTreeSet<Record>, actual: Vec<Existing>, owned: &Owned, served_index: u64) -> Plan {
        let changes = dns::diff(&desired, &actual, owned);
        Plan {
            desired,
            actual,
            changes,
            served_index,
        }
    }

    /// Lists the provider for a round (and keeps the listing for `plan`).
    async fn plan_for(
        &self,
        desired: BTreeSet<Record>,
        owned: Owned,
        served_index: u64,
    ) -> Result<Plan, ProviderError> {
        let actual = self.list(&self.provider(), &owned).await?;
        *self.listing.lock().await = Some((Instant::now(), owned.clone(), actual.clone()));
        let changes = dns::diff(&desired, &actual, &owned);
        Ok(Plan {
            desired,
            actual,
            changes,
            served_index,
        })
    }

    /// An audit entry of this node's provider, not a dry run.
    fn entry(&self, term: u64, served_index: u64, changes: Vec<String>, outcome: String, ok: bool) -> DnsAudit {
        DnsAudit {
            term,
            served_index,
            dry_run: false,
            provider: self.describe(),
            changes,
            outcome,
            ok,
            latency_ms: 0,
            refused: false,
        }
    }

    async fn audit(&self, a: DnsAudit) {
        if let Err(e) = self
            .agent
            .propose_as_leader(self.agent.id(), Command::DnsAudit(a))
            .await
        {
            tracing::warn!("could not record the DNS audit entry: {e}");
        }
    }

    /// One round. Returns true when the provider holds the desired set.
    async fn round(&self, wanted: (BTreeSet<Record>, Owned, u64), last_plan: &mut Option<Vec<Change>>) -> bool {
        // Every request of the round, reads included, says who sends it.
        let term = self.agent.term();
        let provider = self.provider();
        provider.set_context(self.agent.id(), term);
        let (desired, owned, served_index) = wanted;
        let plan = match self.plan_for(desired, owned, served_index).await {
            Ok(p) => p,
            Err(e) => {
                let refused = matches!(e, ProviderError::Permanent(_));
                let outcome = format!("cannot list records: {e}");
                tracing::warn!(provider = %provider.describe(), "{outcome}");
                // Once per distinct failure, so `cluster status` raises the
                // alarm without a log entry every round.
                let fresh = {
                    let mut last = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                    let fresh = last.as_deref() != Some(outcome.as_str());
                    *last = Some(outcome.clone());
                    fresh
                };
                if fresh {
                    let mut a = self.entry(term, served_index, Vec::new(), outcome, false);
                    a.refused = refused;
                    self.audit(a).await;
                }
                return false;
            }
        };
        let recovered = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        if plan.changes.is_empty() {
            *last_plan = None;
            // A write announced by a leader that stopped before recording its
            // outcome: the listing shows it done, and the history says so.
            let intent = self.agent.read(|sm| sm.app.dns_intent.clone()).await;
            if let Some((by, index, i)) = intent.filter(|_| !self.dry_run) {
                let outcome = format!(
                    "already done when this leader listed the provider: node {by} announced these changes in term {} \
                     (log index {index}) and stopped before recording the outcome",
                    i.term
                );
                self.audit(self.entry(term, i.served_index, i.changes, outcome, true))
                    .await;
            } else if let Some(was) = recovered {
                let outcome = format!("the provider answers again, in sync (it had failed: {was})");
                self.audit(self.entry(term, plan.served_index, Vec::new(), outcome, true))
                    .await;
            }
            return true;
        }
        let changes: Vec<String> = plan.changes.iter().map(|c| c.to_string()).collect();
        if self.dry_run {
            if last_plan.as_ref() != Some(&plan.changes) {
                tracing::info!(changes = ?changes, "dry run: would apply");
                self.audit(DnsAudit {
                    term,
                    served_index: plan.served_index,
                    dry_run: true,
                    provider: provider.describe(),
                    changes,
                    outcome: "dry run: nothing written".into(),
                    ok: true,
                    latency_ms: 0,
                    refused: false,
                })
                .await;
                *last_plan = Some(plan.changes);
            }
            return true;
        }
        // One writer: commit the intent right before writing. Its commit in
        // this term proves a quorum still follows this leader (the fence), and
        // it lets the next leader settle the write if this one dies mid-way.
        // An isolated leader cannot commit: give up after two election
        // timeouts rather than wait for the partition to heal.
        let wait = self.agent.config().raft.election_timeout_max.0 * 2;
        let intent = Command::DnsIntent(DnsIntent {
            term,
            served_index: plan.served_index,
            provider: provider.describe(),
            changes: changes.clone(),
        });
        match tokio::time::timeout(wait, self.agent.propose_as_leader(self.agent.id(), intent)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!("leadership not confirmed, DNS batch abandoned: {e}");
                self.agent.instruments().dns_abandoned.inc();
                return false;
            }
            Err(_) => {
                tracing::warn!("no quorum confirmed leadership within {wait:?}, DNS batch abandoned");
                self.agent.instruments().dns_abandoned.inc();
                return false;
            }
        }
        let started = Instant::now();
        let result = self.apply(&provider, &plan.changes).await;
        // What was listed before the writes no longer describes the provider.
        *self.listing.lock().await = None;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (ok, outcome) = match &result {
            Ok(outcomes) => {
                let failed: Vec<String> = outcomes
                    .iter()
                    .filter(|(_, o)| *o != Outcome::Applied)
                    .map(|(c, o)| format!("{c}: {o:?}"))
                    .collect();
                if failed.is_empty() {
                    (true, format!("{} applied", outcomes.len()))
                } else {
                    (false, format!("not applied: {}", failed.join("; ")))
                }
            }
            Err(e) => (false, e.to_string()),
        };
        let outcome = match provider.write_note() {
            Some(note) => format!("{outcome}; {note}"),
            None => outcome,
        };
        let refused = matches!(result, Err(ProviderError::Permanent(_)));
        tracing::info!(changes = ?changes, ok, latency_ms, "DNS changes written");
        self.audit(DnsAudit {
            term,
            served_index: plan.served_index,
            dry_run: false,
            provider: provider.describe(),
            changes,
            outcome,
            ok,
            latency_ms,
            refused,
        })
        .await;
        ok
    }

    /// On a follower: when the leader's provider refuses its credentials and
    /// this node's own work (one read-only listing says so), call an election
    /// so a node that can write leads. Voters go in id order, one election
    /// timeout apart, so one of them takes over.
    async fn take_over_if_refused(&self, t: &mut Takeover) {
        let now = Instant::now();
        let term = self.agent.term();
        let Some((leader, _)) = self.agent.leader() else { return };
        let refused = self
            .agent
            .read(|sm| {
                sm.app.last_dns_by == leader
                    && sm
                        .app
                        .last_dns
                        .as_ref()
                        .is_some_and(|d| d.refused && !d.dry_run && d.term == term)
            })
            .await;
        let id = self.agent.id();
        let (_, voters) = self.agent.members();
        if !refused || leader == id || !voters.contains(&id) {
            t.backoff.reset();
            t.next = now;
            t.last_error = None;
            return;
        }
        if now < t.next {
            return;
        }
        let (_, owned, _) = self.desired().await;
        let provider = self.provider();
        provider.set_context(id, term);
        if let Err(e) = self.list(&provider, &owned).await {
            let e = e.to_string();
            if t.last_error.as_deref() != Some(e.as_str()) {
                tracing::warn!("node {leader}'s DNS provider refuses it, and this node's cannot take over either: {e}");
            }
            t.last_error = Some(e);
            t.next = now + t.backoff.failed();
            return;
        }
        let timeout = self.agent.config().raft.election_timeout_max.0;
        let rank = voters.iter().filter(|v| **v != leader && **v < id).count() as u32;
        tokio::time::sleep(timeout * rank).await;
        if self.agent.term() != term || self.agent.leader().map(|l| l.0) != Some(leader) {
            return;
        }
        // Credentials re-read while waiting: the check spoke for the old ones.
        if !Arc::ptr_eq(&provider, &self.provider()) {
            return;
        }
        tracing::warn!(
            "node {leader}'s DNS provider refuses its credentials (term {term}); this node's work: calling an \
             election to take over DNS writes"
        );
        if let Err(e) = self.agent.call_election().await {
            tracing::warn!("could not call an election: {e}");
        }
        t.next = Instant::now() + timeout * 4;
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut metrics = self.agent.role_watch();
        let mut last_desired: Option<BTreeSet<Record>> = None;
        let mut last_plan: Option<Vec<Change>> = None;
        let mut was_leader = false;
        let mut was_paused = false;
        let mut due = Instant::now();
        let mut backoff = Backoff::new(self.interval);
        let mut takeover = Takeover {
            backoff: Backoff::new(self.interval),
            next: Instant::now(),
            last_error: None,
        };
        let mut credentials_check = tokio::time::interval(CREDENTIALS_CHECK_EVERY);
        credentials_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let leader = self.agent.is_leader();
            let paused = self.agent.read(|sm| sm.app.dns_paused.clone()).await;
            if leader && paused.is_some() {
                // Decisions go on; writes wait for `vantage dns resume`.
                if !was_paused {
                    if let Some(p) = &paused {
                        tracing::warn!(
                            "DNS writes paused by {}: {}; nothing is written until resumed",
                            p.by,
                            p.reason
                        );
                    }
                }
                last_desired = None;
                was_paused = true;
            } else if leader {
                if was_paused {
                    tracing::info!("DNS writes resumed");
                    was_paused = false;
                    due = Instant::now();
                }
                let wanted = self.desired().await;
                let desired = wanted.0.clone();
                // Work when the decision changed, on taking office, or when the
                // drift-repair interval is up. After a failure, only the backoff
                // (or a new term) brings the next attempt: a provider that says
                // no is not asked again at every applied entry.
                let failing = backoff.failures() > 0;
                let changed = last_desired.as_ref() != Some(&desired);
                let needed = !was_leader || (changed && !failing) || Instant::now() >= due;
                if needed {
                    let done = self.round(wanted, &mut last_plan).await;
                    if done && !self.dry_run {
                        self.agent
                            .instruments()
                            .dns_last_success
                            .set(crate::metrics::unix_now());
                    }
                    last_desired = Some(desired);
                    due = Instant::now()
                        + if done {
                            backoff.reset();
                            self.interval
                        } else {
                            backoff.failed()
                        };
                }
            } else {
                last_desired = None;
                backoff.reset();
                if !self.dry_run {
                    self.take_over_if_refused(&mut takeover).await;
                }
            }
            was_leader = leader;
            let notified = self.agent.applied().notified();
            tokio::select! {
                _ = credentials_check.tick() => {
                    if self.reload_if_changed().await {
                        // New credentials are tried at once, not after the backoff.
                        backoff.reset();
                        due = Instant::now();
                        takeover.backoff.reset();
                        takeover.next = Instant::now();
                    }
                }
                _ = notified => {}
                r = metrics.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(due.max(Instant::now() + Duration::from_millis(50))) => {}
            }
        }
    }
}

/// The wait before the next attempt after consecutive failed rounds: 1 s,
/// doubling, capped at the reconcile interval, each with up to 20% jitter so
/// a cluster's retries do not align. It carries across rounds and resets on
/// success or a change of leader.
#[derive(Clone, Debug)]
pub struct Backoff {
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(cap: Duration) -> Backoff {
        Backoff { cap, failures: 0 }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records a failure and returns how long to wait.
    pub fn failed(&mut self) -> Duration {
        let base = Duration::from_secs(1)
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap.max(Duration::from_secs(1)));
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(1.0 - 0.2 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_interval_and_carries_across_rounds() {
        let mut b = Backoff::new(Duration::from_secs(30));
        let waits: Vec<Duration> = (0..10).map(|_| b.failed()).collect();
        let nominal = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30];
        for (w, n) in waits.iter().zip(nominal) {
            let n = Duration::from_secs(n);
            assert!(*w <= n && *w >= n.mul_f64(0.8), "{waits:?}");
        }
        // Five minutes of a provider that always refuses: a bounded number of rounds.
        let mut b = Backoff::new(Duration::from_secs(30));
        let (mut t, mut rounds) = (Duration::ZERO, 0);
        while t < Duration::from_secs(300) {
            t += b.failed();
            rounds += 1;
        }
        assert!(rounds <= 16, "{rounds} rounds in 5 minutes");
        b.reset();
        assert!(b.failed() <= Duration::from_secs(1));
    }
}

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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::dns::{self, Change, Existing, Outcome, Owned, Provider, ProviderError};
use crate::model::Record;
use crate::types::{Command, DnsAudit};

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
    provider: Arc<dyn Provider>,
    pub dry_run: bool,
    interval: Duration,
}

impl Reconciler {
    pub fn new(agent: Arc<Agent>, provider: Arc<dyn Provider>) -> Reconciler {
        Reconciler {
            dry_run: agent.config().dns.dry_run,
            interval: agent.config().dns.reconcile_interval.0,
            agent,
            provider,
        }
    }

    pub fn describe(&self) -> String {
        self.provider.describe()
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

    /// Lists the provider and computes the changes the desired set needs.
    pub async fn plan(&self) -> Result<Plan, ProviderError> {
        let (desired, owned, served_index) = self.desired().await;
        self.plan_for(desired, owned, served_index).await
    }

    async fn plan_for(
        &self,
        desired: BTreeSet<Record>,
        owned: Owned,
        served_index: u64,
    ) -> Result<Plan, ProviderError> {
        let actual = self.provider.list(&owned).await?;
        let changes = dns::diff(&desired, &actual, &owned);
        Ok(Plan {
            desired,
            actual,
            changes,
            served_index,
        })
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
        self.provider.set_context(self.agent.id(), term);
        let (desired, owned, served_index) = wanted;
        let plan = match self.plan_for(desired, owned, served_index).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(provider = %self.provider.describe(), "cannot list records: {e}");
                return false;
            }
        };
        if plan.changes.is_empty() {
            *last_plan = None;
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
                    provider: self.provider.describe(),
                    changes,
                    outcome: "dry run: nothing written".into(),
                    ok: true,
                    latency_ms: 0,
                })
                .await;
                *last_plan = Some(plan.changes);
            }
            return true;
        }
        // One writer: confirm leadership with a quorum right before writing.
        // An isolated leader cannot collect a quorum: give up after two
        // election timeouts rather than wait for the partition to heal.
        let wait = self.agent.config().raft.election_timeout_max.0 * 2;
        match tokio::time::timeout(wait, self.agent.confirm_leadership()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!("leadership not confirmed, DNS batch abandoned: {e}");
                return false;
            }
            Err(_) => {
                tracing::warn!("no quorum confirmed leadership within {wait:?}, DNS batch abandoned");
                return false;
            }
        }
        let started = Instant::now();
        let result = self.provider.apply(&plan.changes).await;
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
        tracing::info!(changes = ?changes, ok, latency_ms, "DNS changes written");
        self.audit(DnsAudit {
            term,
            served_index: plan.served_index,
            dry_run: false,
            provider: self.provider.describe(),
            changes,
            outcome,
            ok,
            latency_ms,
        })
        .await;
        ok
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut metrics = self.agent.metrics_watch();
        let mut last_desired: Option<BTreeSet<Record>> = None;
        let mut last_plan: Option<Vec<Change>> = None;
        let mut was_leader = false;
        let mut due = Instant::now();
        loop {
            let leader = self.agent.is_leader();
            if leader {
                let wanted = self.desired().await;
                let desired = wanted.0.clone();
                // Work when the decision changed, on taking office, after a
                // failed round, or when the drift-repair interval is up.
                let needed = !was_leader || last_desired.as_ref() != Some(&desired) || Instant::now() >= due;
                if needed {
                    let done = self.round(wanted, &mut last_plan).await;
                    last_desired = done.then_some(desired);
                    due = Instant::now() + if done { self.interval } else { Duration::from_secs(1) };
                }
            } else {
                last_desired = None;
            }
            was_leader = leader;
            let notified = self.agent.applied().notified();
            tokio::select! {
                _ = notified => {}
                r = metrics.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(due.max(Instant::now() + Duration::from_millis(50)).into()) => {}
            }
        }
    }
}

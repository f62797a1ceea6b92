//! The probe scheduler: every endpoint is probed once per interval, each on
//! its own task with a fixed phase inside the interval, so probes spread
//! evenly instead of firing in bursts. A semaphore bounds probes in flight;
//! each probe has its own timeout, so a slow endpoint never delays another.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::Probers;
use crate::config::Check;
use crate::config::EndpointSpec;
use crate::detect::{Detector, Evidence, Health, Transition};
use crate::metrics::Instruments;

/// This agent's current view of one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointView {
    pub spec: EndpointSpec,
    pub state: Health,
    pub evidence: Evidence,
    /// When the last probe finished.
    pub last_probe: Option<Instant>,
    /// What the last probe warned about without failing (a certificate expiring soon).
    pub warning: Option<String>,
    /// Probes run off the regular cadence (rapid rechecks, peers' hints).
    pub extra_probes: u64,
}

/// The views of every endpoint this scheduler probes, by endpoint id.
pub type LocalView = Arc<RwLock<BTreeMap<String, EndpointView>>>;

/// A transition of one endpoint's local view.
#[derive(Clone, Debug)]
pub struct Event {
    pub endpoint: String,
    pub transition: Transition,
}

/// Running probe tasks; they stop when this is dropped.
pub struct Scheduler {
    pub view: LocalView,
    seed: u64,
    probers: Probers,
    limit: Arc<Semaphore>,
    /// The probes allowed in flight now (the semaphore's total).
    concurrency: std::sync::atomic::AtomicUsize,
    events: mpsc::UnboundedSender<Event>,
    /// One task per endpoint, with the spec it probes.
    tasks: std::sync::Mutex<BTreeMap<String, (EndpointSpec, JoinHandle<()>)>>,
    /// Where each probe's outcome is counted (the endpoints', not the control targets').
    instruments: Option<Arc<Instruments>>,
    /// Per endpoint: what wakes its task for a probe now, its interval, and
    /// when a hint was last honoured (see [`Scheduler::hint`]).
    hints: Arc<std::sync::Mutex<BTreeMap<String, Hint>>>,
    /// Where the id of an endpoint whose view turns suspect goes (a failure
    /// while up): the agent tells its peers (see `crate::hint`).
    suspects: Option<mpsc::UnboundedSender<String>>,
}

struct Hint {
    wake: Arc<tokio::sync::Notify>,
    interval: Duration,
    last: Option<Instant>,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, t) in tasks.values() {
            t.abort();
        }
    }
}

/// FNV-1a, to derive a stable phase per (agent, endpoint).
fn phase_hash(seed: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where in the interval an endpoint's probes fire. Seeding with the agent id
/// also keeps different agents from probing an endpoint at the same instant.
pub fn phase(seed: u64, id: &str, interval: Duration) -> Duration {
    let frac = (phase_hash(seed, id) % 1_000_000) as f64 / 1_000_000.0;
    interval.mul_f64(frac)
}

impl Scheduler {
    /// Starts one task per endpoint; transitions are sent on `events`.
    pub fn start(
        seed: u64,
        specs: &[EndpointSpec],
        probers: &Probers,
        max_concurrency: usize,
        events: mpsc::UnboundedSender<Event>,
        instruments: Option<Arc<Instruments>>,
        suspects: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Scheduler, String> {
        let s = Scheduler {
            view: Arc::new(RwLock::new(BTreeMap::new())),
            seed,
            probers: probers.clone(),
            limit: Arc::new(Semaphore::new(max_concurrency.max(1))),
            concurrency: std::sync::atomic::AtomicUsize::new(max_concurrency.max(1)),
            events,
            tasks: std::sync::Mutex::new(BTreeMap::new()),
            instruments,
            hints: Arc::new(std::sync::Mutex::new(BTreeMap::new())),
            suspects,
        };
        s.update(specs)?;
        Ok(s)
    }

    /// Probes exactly `specs` from now on: new endpoints start (Unknown, in
    /// their phase), removed ones stop and leave the view, and an endpoint
    /// whose check changed starts over. Unchanged ones keep their state.
    /// Checked whole first: on an error nothing changes.
    pub fn update(&self, specs: &[EndpointSpec]) -> Result<(usize, usize), String> {
        let mut probes = BTreeMap::new();
        for spec in specs {
            let probe = self
                .probers
                .probe_for(spec)
                .map_err(|e| format!("endpoint {}: {e}", spec.id))?;
            probes.insert(spec.id.clone(), (spec.clone(), probe));
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = tasks
            .iter()
            .filter(|(id, (spec, _))| probes.get(*id).is_none_or(|(s, _)| s != spec))
            .map(|(id, _)| id.clone())
            .collect();
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        for id in &stale {
            if let Some((_, t)) = tasks.remove(id) {
                t.abort();
            }
            view.remove(id);
            self.hints.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            if let Some(i) = &self.instruments {
                i.forget_endpoint(id);
            }
        }
        let mut started = 0;
        for (id, (spec, probe)) in probes {
            if tasks.contains_key(&id) {
                continue;
            }
            view.insert(
                id.clone(),
                EndpointView {
                    spec: spec.clone(),
                    state: Health::Unknown,
                    evidence: Evidence::default(),
                    last_probe: None,
                    warning: None,
                    extra_probes: 0,
                },
            );
            let task = self.spawn(&spec, probe);
            tasks.insert(id, (spec, task));
            started += 1;
        }
        Ok((started, stale.len()))
    }

    /// A peer suspects `endpoint`: probe it now instead of in its phase.
    /// Honoured at most once per interval of the endpoint, so a lossy or
    /// hostile peer can at most double this agent's probe rate for it; and
    /// only while this agent sees it up (a run under way rechecks anyway).
    /// Returns whether a probe was started.
    pub fn hint(&self, endpoint: &str) -> bool {
        let up = self.view.read().ok().and_then(|v| {
            v.get(endpoint)
                .map(|e| e.state == Health::Up && e.evidence.failures == 0)
        });
        if up != Some(true) {
            return false;
        }
        let mut hints = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = hints.get_mut(endpoint) else { return false };
        if h.last.is_some_and(|t| t.elapsed() < h.interval) {
            return false;
        }
        h.last = Some(Instant::now());
        h.wake.notify_one();
        true
    }

    /// The wake-up of one endpoint's task, made when the task starts.
    fn hint_for(&self, spec: &EndpointSpec) -> Arc<tokio::sync::Notify> {
        let wake = Arc::new(tokio::sync::Notify::new());
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).insert(
            spec.id.clone(),
            Hint {
                wake: wake.clone(),
                interval: spec.interval,
                last: None,
            },
        );
        wake
    }

    /// Allows `n` probes in flight from now on. Growing is immediate;
    /// shrinking takes effect as probes in flight finish.
    pub fn set_concurrency(&self, n: usize) -> usize {
        use std::sync::atomic::Ordering;
        let n = n.max(1);
        let was = self.concurrency.swap(n, Ordering::SeqCst);
        if n > was {
            self.limit.add_permits(n - was);
        } else if n < was {
            let limit = self.limit.clone();
            let fewer = (was - n) as u32;
            tokio::spawn(async move {
                if let Ok(p) = limit.acquire_many(fewer).await {
                    p.forget();
                }
            });
        }
        was
    }

    fn spawn(&self, spec: &EndpointSpec, probe: super::Probe) -> JoinHandle<()> {
        let start = tokio::time::Instant::now() + phase(self.seed, &spec.id, spec.interval);
        let (id, interval, limit, view, events) = (
            spec.id.clone(),
            spec.interval,
            self.limit.clone(),
            self.view.clone(),
            self.events.clone(),
        );
        let mut detector = Detector::with_min_confirm(spec.fall, spec.rise, spec.min_confirm);
        let recheck = spec.recheck;
        let instruments = self.instruments.clone();
        let kind = match spec.check {
            Check::Icmp => "icmp",
            Check::Tcp { .. } => "tcp",
            Check::Http(_) => "http",
            Check::Grpc { .. } => "grpc",
            Check::Dns(_) => "dns",
        };
        let hint = self.hint_for(spec);
        let suspects = self.suspects.clone();
        tokio::spawn(async move {
            let mut next = start;
            // Whether the next probe is the regular one of its slot.
            let mut on_grid = true;
            loop {
                let extra = tokio::select! {
                    _ = tokio::time::sleep_until(next) => !on_grid,
                    // Another agent suspects this endpoint: probe it now (at
                    // most once an interval; see `Scheduler::hint`).
                    _ = hint.notified() => true,
                };
                let began = tokio::time::Instant::now();
                let outcome = {
                    let Ok(_permit) = limit.acquire().await else { return };
                    probe.run().await
                };
                if let Some(i) = &instruments {
                    i.probed(&id, kind, outcome.ok, outcome.rtt.as_secs_f64());
                }
                // The regular cadence keeps its phase: the first slot of the
                // grid `start + k * interval` after now.
                let now = tokio::time::Instant::now();
                let periods = (now.saturating_duration_since(start).as_nanos() / interval.as_nanos().max(1)) as u32;
                let regular = start + interval * periods.saturating_add(1);
                let was_up = detector.state() == Health::Up && detector.evidence().failures == 0;
                let transition = detector.record_at(&outcome, began.saturating_duration_since(start));
                if was_up && !outcome.ok && recheck.is_some() {
                    if let Some(tx) = &suspects {
                        let _ = tx.send(id.clone());
                    }
                }
                next = match recheck {
                    Some(r) if detector.in_run() && now + r < regular => now + r,
                    _ => regular,
                };
                on_grid = next == regular;
                if let Ok(mut v) = view.write() {
                    if let Some(e) = v.get_mut(&id) {
                        e.state = detector.state();
                        e.evidence = detector.evidence().clone();
                        e.last_probe = Some(Instant::now());
                        e.extra_probes += u64::from(extra);
                        if e.warning != outcome.warning {
                            if let Some(w) = &outcome.warning {
                                tracing::warn!(endpoint = %id, "{w}");
                            }
                            e.warning = outcome.warning.clone();
                        }
                    }
                }
                if let Some(transition) = transition {
                    tracing::info!(endpoint = %id, from = transition.from.as_str(), to = transition.to.as_str(),
                        error = transition.evidence.last_error.as_deref().unwrap_or(""), "local view changed");
                    if events
                        .send(Event {
                            endpoint: id.clone(),
                            transition,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrency_grows_at_once_and_shrinks_as_probes_in_flight_finish() {
        let probers = Probers::new().await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let s = Scheduler::start(1, &[], &probers, 2, tx, None, None).unwrap();
        assert_eq!(s.limit.available_permits(), 2);
        assert_eq!(s.set_concurrency(5), 2);
        assert_eq!(s.limit.available_permits(), 5);
        // Five probes in flight; the limit drops to one.
        let in_flight = s.limit.clone().acquire_many_owned(5).await.unwrap();
        s.set_concurrency(1);
        drop(in_flight);
        for _ in 0..100 {
            if s.limit.available_permits() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(s.limit.available_permits(), 1);
    }
}

//! The proposer: turns local transitions into log entries.
//!
//! Transitions seen within `batch_window` share one `Observe` entry; a
//! `Heartbeat` with the full view goes out every `heartbeat`. A proposal that
//! fails (no leader, say) is kept and retried, merged with newer transitions,
//! so nothing is lost; each attempt gets a fresh sequence number, so a retry
//! of an entry that did commit is harmless. Nothing is proposed while nothing
//! changes, except heartbeats.
//!
//! Self-health: the agent probes its control targets with the same scheduler.
//! When it cannot reach a majority of them, its own network is suspect: it
//! proposes that it abstains, holds its endpoint transitions back, and sends
//! its full view again once it recovers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::clock::Clock;
use crate::config::Config;
use crate::detect::Health;
use crate::probe::scheduler::Event;
use crate::probe::{LocalView, Probers, Scheduler};
use crate::types::{Change, Command, Seq};

/// The running probes and proposer of one agent; stop when dropped.
pub struct Observer {
    pub endpoints: Scheduler,
    pub control: Scheduler,
    /// Whether this agent currently abstains.
    pub abstaining: watch::Receiver<bool>,
    /// How ICMP probes are sent (datagram or raw sockets, per family).
    pub icmp: String,
    /// When this agent's latest heartbeat was committed (for `/readyz`).
    pub last_heartbeat: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    task: tokio::task::JoinHandle<()>,
    /// Tells the peers which endpoints this agent suspects.
    hints: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
        self.hints.abort();
    }
}

/// Failure to start the probes.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ObserverError {
    file: String,
    message: String,
}

impl Observer {
    /// Starts probing every configured endpoint and control target, and the proposer.
    pub async fn start(agent: Arc<Agent>, clock: Arc<dyn Clock>) -> Result<Observer, ObserverError> {
        let config: &Config = agent.config();
        let err = |message: String| ObserverError {
            file: config.source.clone(),
            message,
        };
        let specs = config.endpoints().map_err(|e| err(e.to_string()))?;
        let control = config.control_targets().map_err(|e| err(e.to_string()))?;
        let probers = match agent.connector().dialer() {
            Some(d) => Probers::simulated(d.clone()).await,
            None => Probers::new().await,
        };
        let icmp = probers.pinger.describe();
        tracing::info!("{icmp}");
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctx, crx) = mpsc::unbounded_channel();
        let (suspects_tx, suspects) = mpsc::unbounded_channel();
        let d = &config.probe;
        let endpoints = Scheduler::start(
            agent.id(),
            &specs,
            &probers,
            d.max_concurrency,
            tx,
            Some(agent.instruments().clone()),
            Some(suspects_tx),
        )
        .map_err(err)?;
        let control_sched =
            Scheduler::start(agent.id(), &control, &probers, d.max_concurrency, ctx, None, None).map_err(err)?;
        let (abstain_tx, abstaining) = watch::channel(false);
        let last_heartbeat = Arc::new(std::sync::Mutex::new(None));
        let proposer = Proposer {
            last_heartbeat: last_heartbeat.clone(),
            agent: agent.clone(),
            seq: Seq {
                boot: clock.now_ms(),
                n: 0,
            },
            view: endpoints.view.clone(),
            control: control_sched.view.clone(),
            abstain: abstain_tx,
            heartbeat: d.heartbeat.0,
            batch_window: d.batch_window.0,
        };
        let task = tokio::spawn(proposer.run(rx, crx));
        let hints = tokio::spawn(crate::hint::send(agent.clone(), suspects));
        tracing::info!(endpoints = specs.len(), control = control.len(), "probing started");
        Ok(Observer {
            endpoints,
            control: control_sched,
            abstaining,
            icmp,
            last_heartbeat,
            task,
            hints,
        })
    }
}

struct Proposer {
    agent: Arc<Agent>,
    last_heartbeat: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    seq: Seq,
    view: LocalView,
    control: LocalView,
    abstain: watch::Sender<bool>,
    heartbeat: Duration,
    batch_window: Duration,
}

/// True when fewer than a majority of the control targets are reachable.
/// A target not yet probed `fall` times counts as reachable.
fn cannot_reach_majority(control: &LocalView) -> bool {
    let Ok(v) = control.read() else { return false };
    let n = v.len();
    if n == 0 {
        return false;
    }
    let reachable = v.values().filter(|e| e.state != Health::Down).count();
    reachable < n / 2 + 1
}

/// True while some control target is failing but not yet decided down: the
/// agent's own network may be breaking, so a fresh "down" waits until the
/// control view settles (abstain, or all clear).
fn control_in_doubt(control: &LocalView) -> bool {
    let Ok(v) = control.read() else { return false };
    v.values().any(|e| e.state != Health::Down && e.evidence.failures > 0)
}

impl Proposer {
    fn next_seq(&mut self) -> Seq {
        self.seq.n += 1;
        self.seq
    }

    fn abstaining(&self) -> bool {
        *self.abstain.borrow()
    }

    /// The endpoints of the committed catalog this agent probes; None before
    /// any catalog is committed (reports then wait, see [`Proposer::propose`]).
    async fn listed(&self) -> Option<BTreeSet<String>> {
        let probed: Vec<String> = self
            .view
            .read()
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        self.agent
            .read(|sm| {
                let app = &sm.app;
                app.catalog
                    .is_some()
                    .then(|| probed.into_iter().filter(|id| app.lists(id)).collect())
            })
            .await
    }

    /// Proposes a report. Returns false when it should be retried; a report
    /// the leader refuses for good is logged and dropped (true).
    async fn propose(&mut self, command: Command) -> bool {
        match self.agent.propose(command).await {
            Ok(c) if c.reply.accepted => true,
            Ok(c) => {
                // The state machine ignored it (e.g. stale sequence); a fresh one will do.
                tracing::warn!("report ignored by the state machine: {}", c.reply.detail);
                false
            }
            Err(crate::agent::ProposeError::Refused(why)) => {
                tracing::error!("report refused by the leader, dropped: {why}");
                true
            }
            Err(e) => {
                tracing::debug!("report not committed yet, will retry: {e}");
                false
            }
        }
    }

    /// The full view, of the endpoints the committed catalog lists (a report
    /// naming others is refused whole; see [`crate::decide::admit`]).
    async fn heartbeat_command(&mut self) -> Command {
        let (mut up, mut down, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        let mut warnings = BTreeMap::new();
        let abstain = self.abstaining();
        let listed = self.listed().await;
        if !abstain {
            if let Ok(v) = self.view.read() {
                for (id, e) in v
                    .iter()
                    .filter(|(id, _)| listed.as_ref().is_none_or(|l| l.contains(*id)))
                {
                    if let Some(w) = &e.warning {
                        warnings.insert(id.clone(), w.clone());
                    }
                    match e.state {
                        Health::Up => up.push(id.clone()),
                        Health::Down => down.push(id.clone()),
                        Health::Unknown => unknown.push(id.clone()),
                    }
                }
            }
        }
        Command::Heartbeat {
            agent: self.agent.id(),
            seq: self.next_seq(),
            abstain,
            up,
            down,
            unknown,
            warnings,
        }
    }

    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>, mut control: mpsc::UnboundedReceiver<Event>) {
        let mut pending: BTreeMap<String, Change> = BTreeMap::new();
        // The abstain flag changed and the log does not know yet.
        let mut abstain_dirty = false;
        let mut heartbeat_due = false;
        let mut ticker = tokio::time::interval(self.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = false;
        // Down transitions wait while the control targets are in doubt.
        let mut held = false;
        let (mut events_open, mut control_open) = (true, true);
        loop {
            tokio::select! {
                ev = events.recv(), if events_open => {
                    // No endpoints (or probes stopped): keep sending heartbeats.
                    let Some(ev) = ev else { events_open = false; continue };
                    // Let a burst of transitions land in one entry.
                    tokio::time::sleep(self.batch_window).await;
                    for ev in std::iter::once(ev).chain(std::iter::from_fn(|| events.try_recv().ok())) {
                        pending.insert(ev.endpoint.clone(), Change {
                            endpoint: ev.endpoint,
                            status: ev.transition.to,
                            evidence: ev.transition.evidence,
                        });
                    }
                }
                ev = control.recv(), if control_open => {
                    // No control targets: the agent never abstains.
                    if ev.is_none() { control_open = false; continue };
                    while control.try_recv().is_ok() {}
                    let now = cannot_reach_majority(&self.control);
                    if now != self.abstaining() {
                        tracing::warn!(abstain = now, "control targets {}: {}",
                            if now { "mostly unreachable" } else { "reachable again" },
                            if now { "abstaining, this agent's network is suspect" } else { "reporting again" });
                        self.abstain.send_replace(now);
                        abstain_dirty = true;
                        // On recovery the full view goes out at once.
                        heartbeat_due = !now;
                    }
                }
                _ = ticker.tick() => heartbeat_due = true,
                _ = tokio::time::sleep(Duration::from_millis(500)), if failed => {}
                _ = tokio::time::sleep(Duration::from_millis(100)), if held => {}
            }
            failed = false;
            held = false;
            if heartbeat_due || abstain_dirty && self.abstaining() {
                let hb = self.heartbeat_command().await;
                if self.propose(hb).await {
                    *self.last_heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
                    heartbeat_due = false;
                    abstain_dirty = false;
                    if !self.abstaining() {
                        // The full view supersedes a pending transition the
                        // view has since moved past; one that still holds is
                        // reported as well, so every agent's transition count
                        // stays exact even when a heartbeat goes out first.
                        if let Ok(v) = self.view.read() {
                            pending.retain(|id, c| v.get(id).map(|e| e.state) == Some(c.status));
                        }
                    }
                } else {
                    failed = true;
                }
            }
            let has_down = pending.values().any(|c| c.status == Health::Down);
            if has_down && control_in_doubt(&self.control) {
                held = true;
                continue;
            }
            if !pending.is_empty() && !self.abstaining() {
                // Endpoints the replicated catalog does not list (this agent's
                // configuration differs from the leader's) are not reported.
                if let Some(listed) = self.listed().await {
                    pending.retain(|id, _| listed.contains(id));
                }
                if pending.is_empty() {
                    continue;
                }
                let command = Command::Observe {
                    agent: self.agent.id(),
                    seq: self.next_seq(),
                    abstain: false,
                    changes: pending.values().cloned().collect(),
                };
                if self.propose(command).await {
                    pending.clear();
                    abstain_dirty = false;
                } else {
                    failed = true;
                }
            }
        }
    }
}

//! Timers in log time. The state machine knows time only from the entries it
//! applies, so a hold-down or a maintenance window that ends between two
//! entries would be noticed only at the next report (a heartbeat, seconds
//! later). The leader watches the replicated state for the next such
//! deadline and proposes a `Tick` when its clock reaches it; the entry
//! carries log time past the deadline and the pools are placed again.
//!
//! A tick is proposed only for a deadline still ahead of the applied log
//! time, so one deadline costs one entry, and a state with none costs
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Agent;
use crate::clock::Clock;
use crate::types::Command;

/// How long to wait at most before looking at the state again.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs until the task is dropped or Raft stops.
pub async fn run(agent: Arc<Agent>, clock: Arc<dyn Clock>) {
    let mut metrics = agent.role_watch();
    loop {
        // Armed before the state is read, so an entry applied meanwhile wakes it.
        let applied = agent.applied().notified();
        tokio::pin!(applied);
        applied.as_mut().enable();
        let due = if agent.is_leader() {
            agent.read(|sm| sm.app.next_deadline_ms()).await
        } else {
            None
        };
        let wait = due.map(|d| Duration::from_millis(d.saturating_sub(clock.now_ms())));
        if let (Some(due_ms), Some(Duration::ZERO)) = (due, wait) {
            match agent.propose_as_leader(agent.id(), Command::Tick { due_ms }).await {
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("tick for {} not committed: {e}", crate::model::at(due_ms));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            _ = &mut applied => {}
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait.unwrap_or(RECHECK).min(RECHECK)) => {}
        }
    }
}

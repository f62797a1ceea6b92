//! Handlers of `vantage.v1.History`: the replicated audit history, paged and streamed.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::proto::v1::history_server::History;
use crate::proto::v1::{HistoryEvent, ListHistoryRequest, ListHistoryResponse, Uncounted, WatchRequest};
use crate::state::AuditEvent;

pub struct HistoryService {
    agent: Arc<Agent>,
    watches: Arc<Watches>,
}

impl HistoryService {
    pub fn new(agent: Arc<Agent>) -> Self {
        HistoryService {
            agent,
            watches: Arc::new(Watches::default()),
        }
    }
}

/// Open Watch streams in all, and per caller.
pub const MAX_WATCHES: usize = 1024;
pub const MAX_WATCHES_PER_CALLER: usize = 64;

/// Counts open Watch streams, so no caller can hold every task and socket.
#[derive(Default)]
struct Watches {
    open: Mutex<BTreeMap<String, usize>>,
}

/// One open stream; frees its place when dropped.
struct WatchSlot {
    watches: Arc<Watches>,
    who: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.who);
            }
        }
    }
}

impl Watches {
    fn take(self: &Arc<Self>, who: &str) -> Result<WatchSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(who).copied().unwrap_or(0);
        if total >= MAX_WATCHES || mine >= MAX_WATCHES_PER_CALLER {
            return Err(Status::resource_exhausted(format!(
                "too many open Watch streams ({mine} of {MAX_WATCHES_PER_CALLER} for {who}, {total} of {MAX_WATCHES} in all)"
            )));
        }
        *open.entry(who.to_string()).or_default() += 1;
        Ok(WatchSlot {
            watches: self.clone(),
            who: who.to_string(),
        })
    }
}

/// Whether an event belongs to a listing filtered by `endpoint`; cluster-wide
/// events (panic, catalog) always do.
fn matches(e: &AuditEvent, endpoint: &str) -> bool {
    endpoint.is_empty() || e.endpoint.is_empty() || e.endpoint == endpoint
}

fn to_proto(e: &AuditEvent) -> HistoryEvent {
    HistoryEvent {
        id: e.id,
        log_index: e.index,
        log_time_ms: e.log_time_ms,
        endpoint: e.endpoint.clone(),
        kind: e.kind.as_str().to_string(),
        from: e.from.clone(),
        to: e.to.clone(),
        rule: e.rule.clone(),
        up: e.up.clone(),
        down: e.down.clone(),
        uncounted: e
            .uncounted
            .iter()
            .map(|(agent, reason)| Uncounted {
                agent: *agent,
                reason: reason.as_str().to_string(),
            })
            .collect(),
    }
}

/// The latest `n` events, newest last.
pub(crate) async fn latest(agent: &Agent, n: usize) -> Vec<HistoryEvent> {
    agent
        .read(|sm| {
            let skip = sm.app.history.len().saturating_sub(n);
            sm.app.history.iter().skip(skip).map(to_proto).collect()
        })
        .await
}

type EventStream = Pin<Box<dyn Stream<Item = Result<HistoryEvent, Status>> + Send>>;

#[tonic::async_trait]
impl History for HistoryService {
    async fn list(&self, req: Request<ListHistoryRequest>) -> Result<Response<ListHistoryResponse>, Status> {
        super::auth::reader(&self.agent, &req, "History.List", false)?;
        let ListHistoryRequest {
            endpoint,
            after_id,
            limit,
            linearizable,
        } = req.into_inner();
        if linearizable {
            super::linearize(&self.agent).await?;
        }
        let limit = if limit == 0 { 100 } else { limit.min(10_000) } as usize;
        let (events, more) = self
            .agent
            .read(|sm| {
                let mut page = sm
                    .app
                    .history
                    .iter()
                    .filter(|e| e.id > after_id && matches(e, &endpoint));
                let events: Vec<HistoryEvent> = page.by_ref().take(limit).map(to_proto).collect();
                (events, page.next().is_some())
            })
            .await;
        Ok(Response::new(ListHistoryResponse {
            next_after_id: events.last().map(|e| e.id).unwrap_or(after_id),
            events,
            more,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = super::auth::reader(&self.agent, &req, "History.Watch", false)?;
        let who = match &caller {
            super::auth::Caller::Verified(id) => id.to_string(),
            super::auth::Caller::Plaintext => req.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default(),
        };
        let slot = self.watches.take(&who)?;
        let WatchRequest { endpoint, after_id } = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let agent = self.agent.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut last = if after_id == 0 {
                agent.read(|sm| sm.app.next_event).await
            } else {
                after_id
            };
            loop {
                // Register for the wake-up before reading, so no event slips between.
                let notified = agent.applied().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let fresh: Vec<HistoryEvent> = agent
                    .read(|sm| {
                        sm.app
                            .history
                            .iter()
                            .filter(|e| e.id > last && matches(e, &endpoint))
                            .map(to_proto)
                            .collect()
                    })
                    .await;
                for e in fresh {
                    last = e.id;
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

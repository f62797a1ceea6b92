//! The Cloudflare write planner: invalid changes fail at once, deletes go
//! before creates in chunks of `batch_limit`, each chunk as one batch request
//! or as single calls, and a write whose outcome is unknown is settled by
//! listing the affected names again before anything is resent.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use reqwest::Method;
use tokio::time::Instant;

use super::http::{CallError, Request};
use super::wire::{
    fmt_errors, has_code, is_auth_failure, normalize_name, same_content, BatchBody, CfMessage, CfRecord, DeleteId,
    PostRecord, CODE_IDENTICAL_RECORD_EXISTS, CODE_RECORD_DOES_NOT_EXIST, CODE_RECORD_EXISTS,
};
use super::{bump, lock, Cloudflare};
use crate::dns::{Change, Outcome, ProviderError, Record, RecordType};

/// After the batch endpoint is found unavailable, single calls are used for this long before trying it again.
const BATCH_RETRY_AFTER: Duration = Duration::from_secs(3600);

enum WriteResult {
    Done,
    /// Batch refused because a create already exists or a delete is gone.
    Conflict(String),
    /// Refused for another reason (nothing applied).
    Rejected(String),
    /// The batch endpoint is not there.
    Unavailable(String),
    /// Credentials refused: the whole call fails.
    Auth(String),
    Ambiguous(String),
    NotSent(String),
}

enum ChunkError {
    Permanent(String),
    Transient(String),
}

struct ApplyState {
    outcomes: Vec<Option<Outcome>>,
    /// Whether anything may have changed at the provider.
    touched: bool,
}

impl Cloudflare {
    /// Applies `changes`: invalid ones fail at once, the rest go deletes first
    /// in chunks of `batch_limit`; reports each change's outcome.
    pub(super) async fn apply_changes(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        let mut st = ApplyState {
            outcomes: vec![None; changes.len()],
            touched: false,
        };
        let mut order: Vec<usize> = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            if let Some(why) = self.invalid(c) {
                st.outcomes[i] = Some(Outcome::Failed(why));
            }
        }
        order.extend(
            (0..changes.len()).filter(|&i| st.outcomes[i].is_none() && matches!(changes[i], Change::Delete(_))),
        );
        order.extend(
            (0..changes.len()).filter(|&i| st.outcomes[i].is_none() && matches!(changes[i], Change::Create(_))),
        );
        if !order.is_empty() {
            let zone = self.zone().await?;
            for chunk in order.chunks(self.cfg.batch_limit) {
                let failure = match self.apply_chunk(&zone, changes, chunk, &mut st).await {
                    Ok(()) => continue,
                    Err(ChunkError::Permanent(m)) => (self.permanent(m), false),
                    Err(ChunkError::Transient(m)) => (self.transient(m), true),
                };
                // Nothing may have changed yet: fail the whole call.
                if !st.touched {
                    return Err(failure.0);
                }
                // Otherwise report what is known and leave the rest to the next listing.
                let msg = failure.0.to_string();
                for o in st.outcomes.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(if failure.1 {
                        Outcome::Unknown(msg.clone())
                    } else {
                        Outcome::Failed(msg.clone())
                    });
                }
                break;
            }
        }
        Ok(changes
            .iter()
            .zip(st.outcomes)
            .map(|(c, o)| {
                (
                    c.clone(),
                    o.unwrap_or_else(|| Outcome::Unknown("not attempted".to_string())),
                )
            })
            .collect())
    }

    /// Why `change` cannot be sent at all, if so.
    fn invalid(&self, change: &Change) -> Option<String> {
        match change {
            Change::Create(r) => {
                let ok_type = match r.content.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => r.rtype == RecordType::A,
                    Ok(IpAddr::V6(_)) => r.rtype == RecordType::AAAA,
                    Err(_) => false,
                };
                if !ok_type {
                    Some(format!(
                        "{:?} is not an address for a {} record",
                        r.content,
                        r.rtype.as_str()
                    ))
                } else if !self.in_zone(&normalize_name(&r.name)) {
                    Some(format!("{} is not in zone {}", r.name, self.cfg.zone_name))
                } else {
                    None
                }
            }
            Change::Delete(e) if e.id.is_empty() => Some("delete without a record id".to_string()),
            Change::Delete(_) => None,
        }
    }

    fn post_body<'a>(&'a self, r: &'a Record) -> PostRecord<'a> {
        PostRecord {
            name: &r.name,
            rtype: r.rtype.as_str(),
            content: &r.content,
            ttl: self.cfg.ttl,
            proxied: self.cfg.proxied,
            comment: (!self.cfg.comment.is_empty()).then_some(self.cfg.comment.as_str()),
        }
    }

    fn batch_enabled(&self) -> bool {
        if !self.cfg.use_batch {
            return false;
        }
        let mut off = lock(&self.batch_off_until);
        match *off {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *off = None;
                true
            }
            None => true,
        }
    }

    async fn send_batch(&self, zone: &str, changes: &[Change], pending: &[usize]) -> WriteResult {
        let mut body = BatchBody {
            deletes: Vec::new(),
            posts: Vec::new(),
        };
        for &i in pending {
            match &changes[i] {
                Change::Delete(e) => body.deletes.push(DeleteId { id: &e.id }),
                Change::Create(r) => body.posts.push(self.post_body(r)),
            }
        }
        let what = format!(
            "batch of {} deletes and {} creates",
            body.deletes.len(),
            body.posts.len()
        );
        let bytes = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return WriteResult::Rejected(format!("{what}: encoding: {e}")),
        };
        let req = Request {
            method: Method::POST,
            path: format!("/zones/{zone}/dns_records/batch"),
            query: Vec::new(),
            body: Some(bytes),
            write: true,
            what: &what,
        };
        self.write(&req, |status, errors, msg| {
            if is_auth_failure(status, errors) {
                WriteResult::Auth(msg)
            } else if has_code(
                errors,
                &[
                    CODE_RECORD_EXISTS,
                    CODE_IDENTICAL_RECORD_EXISTS,
                    CODE_RECORD_DOES_NOT_EXIST,
                ],
            ) {
                WriteResult::Conflict(msg)
            } else if status == 404 || status == 405 {
                WriteResult::Unavailable(msg)
            } else {
                WriteResult::Rejected(msg)
            }
        })
        .await
    }

    /// Sends one write; an API refusal (its message redacted) is judged by
    /// `refused`, everything else means the same for every kind of write.
    async fn write(
        &self,
        req: &Request<'_>,
        refused: impl FnOnce(u16, &[CfMessage], String) -> WriteResult,
    ) -> WriteResult {
        match self.call(req).await {
            Ok(_) => WriteResult::Done,
            Err(CallError::Api { status, errors }) => {
                let msg = self.redact(format!("{}: HTTP {status}: {}", req.what, fmt_errors(&errors)));
                refused(status, &errors, msg)
            }
            Err(CallError::Ambiguous(m)) => WriteResult::Ambiguous(m),
            Err(CallError::NotSent(m)) => WriteResult::NotSent(m),
        }
    }

    async fn send_single(&self, zone: &str, change: &Change) -> WriteResult {
        let what = change.to_string();
        let req = match change {
            Change::Create(r) => Request {
                method: Method::POST,
                path: format!("/zones/{zone}/dns_records"),
                query: Vec::new(),
                body: match serde_json::to_vec(&self.post_body(r)) {
                    Ok(b) => Some(b),
                    Err(e) => return WriteResult::Rejected(format!("{what}: encoding: {e}")),
                },
                write: true,
                what: &what,
            },
            Change::Delete(e) => Request {
                method: Method::DELETE,
                path: format!("/zones/{zone}/dns_records/{}", e.id),
                query: Vec::new(),
                body: None,
                write: true,
                what: &what,
            },
        };
        self.write(&req, |status, errors, msg| {
            let already = match change {
                Change::Create(_) => has_code(errors, &[CODE_RECORD_EXISTS, CODE_IDENTICAL_RECORD_EXISTS]),
                Change::Delete(_) => has_code(errors, &[CODE_RECORD_DOES_NOT_EXIST]),
            };
            if already {
                tracing::info!("{msg}: counts as applied");
                WriteResult::Done
            } else if is_auth_failure(status, errors) {
                WriteResult::Auth(msg)
            } else {
                WriteResult::Rejected(msg)
            }
        })
        .await
    }

    /// Lists the names the pending changes touch and settles those already
    /// done: a create whose record exists, a delete whose id is gone.
    async fn settle(
        &self,
        zone: &str,
        changes: &[Change],
        pending: &mut Vec<usize>,
        st: &mut ApplyState,
    ) -> Result<(), ProviderError> {
        let pairs: BTreeSet<(String, RecordType)> = pending
            .iter()
            .map(|&i| match &changes[i] {
                Change::Create(r) => (normalize_name(&r.name), r.rtype),
                Change::Delete(e) => (normalize_name(&e.record.name), e.record.rtype),
            })
            .collect();
        let mut present: HashMap<(String, RecordType), Vec<CfRecord>> = HashMap::new();
        for (name, rtype) in pairs {
            let recs = self.list_raw(zone, &name, rtype).await?;
            present.insert((name, rtype), recs);
        }
        pending.retain(|&i| {
            let done = match &changes[i] {
                Change::Create(r) => present.get(&(normalize_name(&r.name), r.rtype)).is_some_and(|v| {
                    v.iter()
                        .any(|x| x.content.as_deref().is_some_and(|c| same_content(c, &r.content)))
                }),
                Change::Delete(e) => present
                    .get(&(normalize_name(&e.record.name), e.record.rtype))
                    .is_some_and(|v| !v.iter().any(|x| x.id == e.id)),
            };
            if done {
                tracing::info!("{}: found done on re-listing", changes[i]);
                st.outcomes[i] = Some(Outcome::Applied);
            }
            !done
        });
        Ok(())
    }

    /// Applies the changes `idx` (deletes first), settling ambiguous writes by
    /// re-listing. Sets an outcome for each change it settles; an `Err` leaves
    /// the unsettled ones to the caller.
    async fn apply_chunk(
        &self,
        zone: &str,
        changes: &[Change],
        idx: &[usize],
        st: &mut ApplyState,
    ) -> Result<(), ChunkError> {
        let mut pending: Vec<usize> = idx.to_vec();
        let mut singles = !self.batch_enabled();
        let mut uncertain_rounds = 0u32;
        let mut conflicts = 0u32;
        let mut needs_settle = false;
        let mut last = String::new();
        loop {
            if needs_settle {
                needs_settle = false;
                if let Err(e) = self.settle(zone, changes, &mut pending, st).await {
                    let msg = self.redact(format!("{last}; re-listing to check failed: {e}"));
                    for &i in &pending {
                        st.outcomes[i] = Some(Outcome::Unknown(msg.clone()));
                    }
                    return Ok(());
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if uncertain_rounds >= self.cfg.max_attempts {
                let msg = self.redact(format!("{last} (gave up after {uncertain_rounds} attempts)"));
                for &i in &pending {
                    st.outcomes[i] = Some(Outcome::Unknown(msg.clone()));
                }
                return Ok(());
            }
            if uncertain_rounds > 0 {
                bump(&self.counters.retries);
            }
            if !singles {
                match self.send_batch(zone, changes, &pending).await {
                    WriteResult::Done => {
                        st.touched = true;
                        for &i in &pending {
                            st.outcomes[i] = Some(Outcome::Applied);
                        }
                        return Ok(());
                    }
                    WriteResult::Unavailable(msg) => {
                        tracing::warn!("{msg}: batch endpoint unavailable; using single calls");
                        bump(&self.counters.batch_fallbacks);
                        *lock(&self.batch_off_until) = Some(Instant::now() + BATCH_RETRY_AFTER);
                        singles = true;
                    }
                    WriteResult::Conflict(msg) => {
                        // Nothing was applied; find what already is, retry the rest. A
                        // second conflict isolates the changes with single calls.
                        tracing::info!("{msg}: re-listing");
                        conflicts += 1;
                        if conflicts >= 2 {
                            singles = true;
                        }
                        last = msg;
                        needs_settle = true;
                    }
                    WriteResult::Rejected(msg) => {
                        // All or nothing: nothing was applied. Single calls tell which change is refused.
                        tracing::warn!("{msg}: retrying the changes one by one");
                        singles = true;
                    }
                    WriteResult::Auth(msg) => return Err(ChunkError::Permanent(msg)),
                    WriteResult::Ambiguous(msg) => {
                        bump(&self.counters.ambiguous_writes);
                        st.touched = true;
                        uncertain_rounds += 1;
                        tracing::warn!("{msg}: outcome unknown; re-listing before retrying");
                        tokio::time::sleep(self.backoff(uncertain_rounds)).await;
                        last = msg;
                        needs_settle = true;
                    }
                    WriteResult::NotSent(msg) => return Err(ChunkError::Transient(msg)),
                }
            } else {
                let mut ambiguous = false;
                for i in pending.clone() {
                    match self.send_single(zone, &changes[i]).await {
                        WriteResult::Done => {
                            st.touched = true;
                            st.outcomes[i] = Some(Outcome::Applied);
                        }
                        WriteResult::Rejected(msg) | WriteResult::Conflict(msg) | WriteResult::Unavailable(msg) => {
                            tracing::warn!("{msg}");
                            st.outcomes[i] = Some(Outcome::Failed(self.redact(msg)));
                        }
                        WriteResult::Auth(msg) => return Err(ChunkError::Permanent(msg)),
                        WriteResult::Ambiguous(msg) => {
                            bump(&self.counters.ambiguous_writes);
                            st.touched = true;
                            tracing::warn!("{msg}: outcome unknown; will re-list");
                            ambiguous = true;
                            last = msg;
                        }
                        WriteResult::NotSent(msg) => return Err(ChunkError::Transient(msg)),
                    }
                }
                pending.retain(|&i| st.outcomes[i].is_none());
                if ambiguous {
                    uncertain_rounds += 1;
                    tokio::time::sleep(self.backoff(uncertain_rounds)).await;
                    needs_settle = true;
                }
            }
        }
    }
}

//! Who is calling, and what they may do (design rule 10).
//!
//! With TLS, every connection carries a certificate of the cluster CA (the
//! handshake refuses anything else) whose SAN URI names a node, an operator
//! or a reader. Node certificates reach the internal service, and may speak
//! only for their own node id; a follower forwarding an operator's call to
//! the leader is the one exception on the admin service, marked by
//! [`super::FORWARDED_HEADER`]. Without TLS (loopback, or an explicit
//! `insecure_plaintext`), every caller is trusted as before.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tonic::{Request, Status};

use super::status::FORWARDED_HEADER;
use crate::agent::Agent;
use crate::model::NodeId;
use crate::tls::{identity_in, Identity, Role};

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No TLS on this agent: nobody is authenticated.
    Plaintext,
    Verified(Identity),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Plaintext => f.write_str("an unauthenticated caller"),
            Caller::Verified(who) => who.fmt(f),
        }
    }
}

/// Refusals already logged, by peer and reason: at most one line a minute each.
static LOGGED: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());

/// Logs a refusal unless the same one was logged in the last minute.
pub fn log_refusal(peer: &str, why: &str) {
    let key = format!("{peer}|{why}");
    let now = Instant::now();
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    if logged
        .get(&key)
        .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
    {
        return;
    }
    if logged.len() > 10_000 {
        logged.clear();
    }
    logged.insert(key, now);
    tracing::warn!(peer, "refused: {why}");
}

fn peer<T>(req: &Request<T>) -> String {
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown peer".into())
}

fn refuse<T>(req: &Request<T>, status: Status) -> Status {
    log_refusal(&peer(req), status.message());
    status
}

/// The caller of `req`, from its certificate.
pub fn caller<T>(agent: &Agent, req: &Request<T>) -> Result<Caller, Status> {
    let Some(tls) = agent.connector().tls() else {
        return Ok(Caller::Plaintext);
    };
    let certs = req
        .peer_certs()
        .ok_or_else(|| refuse(req, Status::unauthenticated("no client certificate")))?;
    let cluster = tls.cluster();
    let cert = certs
        .first()
        .ok_or_else(|| refuse(req, Status::unauthenticated("no client certificate")))?;
    identity_in(cert, &cluster).map(Caller::Verified).ok_or_else(|| {
        refuse(
            req,
            Status::permission_denied(format!("the certificate names no identity of cluster {cluster}")),
        )
    })
}

/// The internal service: a node, speaking for itself. Returns the node's id
/// (None without TLS, when claims cannot be checked).
pub fn node<T>(agent: &Agent, req: &Request<T>, rpc: &str) -> Result<Option<NodeId>, Status> {
    match caller(agent, req)? {
        Caller::Plaintext => Ok(None),
        Caller::Verified(Identity::Node(id)) => Ok(Some(id)),
        Caller::Verified(who) => Err(refuse(
            req,
            Status::permission_denied(format!(
                "{rpc}: {who} is not a node; the internal service is for nodes only"
            )),
        )),
    }
}

/// Checks that a message's claimed node id is the certificate's.
pub fn claims<T>(req: &Request<T>, verified: Option<NodeId>, claimed: NodeId, rpc: &str) -> Result<(), Status> {
    match verified {
        Some(id) if id != claimed => Err(refuse(
            req,
            Status::permission_denied(format!(
                "{rpc} claims node {claimed}, but the certificate is node {id}'s"
            )),
        )),
        _ => Ok(()),
    }
}

/// Reads: a reader or an operator (and a node, for `GetStatus` only).
pub fn reader<T>(agent: &Agent, req: &Request<T>, rpc: &str, nodes_too: bool) -> Result<Caller, Status> {
    let c = caller(agent, req)?;
    match &c {
        Caller::Plaintext | Caller::Verified(Identity::Client { .. }) => Ok(c),
        Caller::Verified(Identity::Node(_)) if nodes_too => Ok(c),
        Caller::Verified(who) => Err(refuse(
            req,
            Status::permission_denied(format!(
                "{rpc}: {who} may not call it; use a reader or operator certificate"
            )),
        )),
    }
}

/// Carries, on a call a follower forwards, who made it.
pub const BY_HEADER: &str = "x-vantage-by";

/// Who made a change, for the history: the certificate's holder, or, on a
/// call a follower forwarded, the holder it names and the follower.
pub fn actor<T>(caller: &Caller, req: &Request<T>) -> String {
    let by = req.metadata().get(BY_HEADER).and_then(|v| v.to_str().ok());
    match (caller, by) {
        (Caller::Verified(Identity::Node(n)), Some(by)) => format!("{by} (via node {n})"),
        (Caller::Plaintext, Some(by)) => by.to_string(),
        (c, _) => c.to_string(),
    }
}

/// Changes: an operator, or a node forwarding an operator's call to the leader.
pub fn operator<T>(agent: &Agent, req: &Request<T>, rpc: &str) -> Result<Caller, Status> {
    let c = caller(agent, req)?;
    match &c {
        Caller::Plaintext
        | Caller::Verified(Identity::Client {
            role: Role::Operator, ..
        }) => Ok(c),
        Caller::Verified(Identity::Node(_)) if req.metadata().contains_key(FORWARDED_HEADER) => Ok(c),
        Caller::Verified(who) => Err(refuse(
            req,
            Status::permission_denied(format!(
                "{rpc}: {who} may not change the cluster; it needs an operator certificate"
            )),
        )),
    }
}

//! The `[http]` listener: `/metrics` (OpenMetrics text), `/healthz`,
//! `/readyz` and `/`, a status page.
//!
//! With `[tls]` it speaks HTTPS with the node's certificate and, unless
//! `http.client_cert = false`, asks each client for a certificate of the
//! cluster CA naming an identity of this cluster (any role: everything here
//! is read-only). Without TLS it is plaintext, on loopback unless
//! `insecure_plaintext` says otherwise (checked with the configuration).
//! Connections are bounded in number and in the time a request may take to
//! arrive; nothing here waits on the DNS provider or on a quorum.

mod page;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::agent::Agent;
use crate::propose::Observer;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request headers (and a TLS handshake).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A heartbeat older than this many heartbeat intervals makes the node not ready.
pub const READY_HEARTBEATS: u32 = 3;

struct Ctx {
    agent: Arc<Agent>,
    observer: Arc<Observer>,
}

/// Binds `[http] listen`, if set. An address that cannot be bound is an error
/// the caller reports (the agent does not start half-watched).
pub async fn bind(agent: &Agent) -> Result<Option<TcpListener>, String> {
    let Some(addr) = agent.config().http.listen.clone() else {
        return Ok(None);
    };
    TcpListener::bind(&addr)
        .await
        .map(Some)
        .map_err(|e| format!("{}: http.listen: cannot bind {addr}: {e}", agent.config().source))
}

/// Serves until the task is dropped.
pub async fn serve(agent: Arc<Agent>, observer: Arc<Observer>, listener: TcpListener) {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let client_cert = agent.config().http.client_cert;
    match agent.connector().tls() {
        Some(_) if client_cert => {
            tracing::info!(addr = %local, "HTTP listener (HTTPS, client certificates of the cluster CA required)")
        }
        Some(_) => tracing::warn!(
            addr = %local,
            "HTTP listener (HTTPS) with http.client_cert = false: anyone who reaches it reads the status and metrics"
        ),
        None => tracing::info!(addr = %local, "HTTP listener (plaintext)"),
    }
    let ctx = Arc::new(Ctx { agent, observer });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match ctx.agent.connector().tls().cloned() {
                None => connection(ctx, stream).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.http_server_config(client_cert));
                    let s = match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %from, "http: TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    if client_cert {
                        let cluster = tls.cluster();
                        let named = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| crate::tls::identity_in(c, &cluster));
                        if named.is_none() {
                            tracing::debug!(peer = %from, "http: the certificate names no identity of cluster {cluster}");
                            return;
                        }
                    }
                    connection(ctx, s).await
                }
            }
        });
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(ctx: Arc<Ctx>, stream: S) {
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(route(&ctx, req).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        r.headers_mut().insert(hyper::header::CACHE_CONTROL, v);
    }
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn route<B>(ctx: &Ctx, req: Request<B>) -> Response<Full<Bytes>> {
    ctx.agent.instruments().http_requests.inc();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return answer(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/healthz" => answer(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" => match readiness(&ctx.agent, &ctx.observer).await {
            Ok(()) => answer(StatusCode::OK, TEXT, "ready\n"),
            Err(why) => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not ready: {why}\n")),
        },
        "/metrics" => answer(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::scrape(&ctx.agent, &ctx.observer.endpoints.view).await,
        ),
        "/" => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::render(&ctx.agent, &ctx.observer).await,
        ),
        other => answer(StatusCode::NOT_FOUND, TEXT, format!("no such page: {other}\n")),
    }
}

/// Ready: a member of a formed cluster with a known leader, a committed
/// catalog, and a heartbeat of its own committed recently. The error says
/// which condition fails.
pub async fn readiness(agent: &Agent, observer: &Observer) -> Result<(), String> {
    let (members, _) = agent.members();
    if members.is_empty() {
        return Err("not a member of a cluster yet (bootstrap it, or join this node)".into());
    }
    if !members.contains_key(&agent.id()) {
        return Err(format!("node {} is not in the cluster's membership", agent.id()));
    }
    if agent.leader().is_none() {
        return Err(
            "no leader is known (this node may be cut off from the others, or an election is under way)".into(),
        );
    }
    if !agent.read(|sm| sm.app.catalog.is_some()).await {
        return Err("no catalog is committed yet".into());
    }
    let every = agent.config().probe.heartbeat.0;
    let limit = every * READY_HEARTBEATS;
    let last = *observer.last_heartbeat.lock().unwrap_or_else(|p| p.into_inner());
    match last {
        None => Err("this node's first heartbeat is not committed yet".into()),
        Some(t) if t.elapsed() > limit => Err(format!(
            "this node's last heartbeat was committed {} s ago (more than {READY_HEARTBEATS} × probe.heartbeat)",
            t.elapsed().as_secs()
        )),
        Some(_) => Ok(()),
    }
}

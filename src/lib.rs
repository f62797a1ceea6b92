//! Vantage: multi-vantage health checking and DNS failover on a Raft log.
//!
//! Agents in several regions form one Raft group. Each proposes what it sees;
//! every decision is a pure function of the committed log; the leader alone
//! talks to the DNS provider.
//!
//! # Layout, in pipeline order
//!
//! Follow one observation from a probe to a DNS write:
//!
//! 1. [`probe`]: ICMP, TCP and HTTP checks and the scheduler that runs them
//!    once per interval for every endpoint.
//! 2. [`detect`]: rise/fall hysteresis turns probe results into this agent's
//!    local view; a change is a transition carrying its evidence.
//! 3. [`propose`]: transitions (batched) and periodic heartbeats become log
//!    entries; the agent abstains when its own network is suspect.
//! 4. [`agent`]: the handle every stage goes through: a follower forwards a
//!    proposal to the leader, the leader checks it with the admission rule,
//!    stamps log time and commits it through Raft.
//! 5. [`store`]: sled holds the log, the vote and snapshots; committed
//!    entries are applied to the state machine.
//! 6. [`state`]: the replicated state, applied deterministically: catalog,
//!    observations, decisions, DNS placement and the audit history.
//! 7. [`decide`]: the pure rules the state machine calls: which reports are
//!    admitted, which observations count, the quorum rule and the guards.
//! 8. [`reconcile`]: the leader lists the provider, diffs it against the
//!    decided record set, re-confirms leadership and writes the difference.
//! 9. [`dns`]: the providers (Cloudflare, zone file, memory) and the
//!    owned-record diff; each write is proposed back as an audit entry.
//!
//! Around the pipeline:
//!
//! - [`model`]: the shared words: node ids, decisions, record types,
//!   records, sequence numbers, audit event kinds.
//! - [`types`]: the log payload ([`types::Command`]) and the Raft type configuration.
//! - [`catalog`]: the versioned cluster catalog: the first leader's, then only a
//!   higher `catalog_version`; a lagging file is reported as drift.
//! - [`tick`]: the leader's timers in log time: a `Tick` entry when a
//!   hold-down or a maintenance window ends.
//! - [`hint`]: an agent tells its peers which endpoints it suspects, so they
//!   recheck at once (cooperative confirmation).
//! - [`reload`]: SIGHUP re-reads the configuration file.
//! - [`metrics`], [`http`]: `/metrics`, `/healthz`, `/readyz` and the status page.
//! - [`notify`]: webhooks, Slack and PagerDuty, sent by the leader from the
//!   history, with the delivery position in the replicated state.
//! - [`replay`]: the kept log replayed with other decision settings.
//! - [`codec`]: the internal service's wire format, shared by client and server.
//! - [`network`]: outgoing gRPC to peers (channel cache, bound source
//!   address, openraft network) and which peers may talk to this node.
//! - [`tls`]: mutual TLS: the identities certificates carry, the rustls
//!   configurations, reloading, and issuing certificates.
//! - [`grpc`]: incoming gRPC: the internal Raft service, the `vantage.v1`
//!   admin and query API and server reflection, each call checked against
//!   the caller's certificate.
//! - [`config`]: the TOML configuration and its validation.
//! - [`clock`]: the injected wall clock (read by the leader only).
//! - [`secret`]: files that hold secrets are readable by their owner only.
//! - [`proto`]: generated protobuf and gRPC code.
//!
//! The command line, its output and `vantage demo` live in the binary
//! (`src/bin/vantage/`); this library prints nothing.

#![forbid(unsafe_code)]
// tonic::Status and openraft's errors are large by design, and handlers must return them.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod config;
pub mod decide;
pub mod detect;
pub mod dns;
pub mod grpc;
pub mod hint;
pub mod http;
pub mod metrics;
pub mod model;
pub mod network;
pub mod notify;
pub mod probe;
pub mod propose;
pub mod proto;
pub mod reconcile;
pub mod reload;
pub mod replay;
pub mod secret;
pub mod state;
pub mod store;
pub mod tick;
pub mod tls;
pub mod types;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::agent::{Agent, StartError};
use crate::clock::Clock;
use crate::config::Config;
use crate::grpc::{Listener, ServeError};
use crate::network::Connector;

/// A failure of a running agent.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Probes(#[from] propose::ObserverError),
    #[error("{0}")]
    Dns(String),
    #[error("{0}")]
    Http(String),
    #[error("Raft stopped on its own, the data directory {dir} may be failing (full, read-only, damaged): {reason}; this agent exits so its supervisor can restart it once the disk is fixed")]
    Stopped { dir: String, reason: String },
}

/// Runs one agent on an already-bound `listener` until `shutdown` completes,
/// then stops Raft and flushes storage. Every I/O handle is passed in, so tests
/// and simulations drive the same code as the binary.
pub async fn run(
    config: Config,
    listener: TcpListener,
    connector: Connector,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let agent = Agent::start(config, connector, clock.clone()).await?;
    let provider = dns::from_config(agent.config()).map_err(RunError::Dns)?;
    let wiring = Wiring {
        listener: Listener::Tcp(listener),
        clock,
        provider,
        sighup: true,
    };
    serve_agent(agent, wiring, shutdown).await
}

/// What a started agent is served with, besides its configuration.
pub struct Wiring {
    /// Where peers and operators connect.
    pub listener: Listener,
    /// The wall clock the leader stamps entries with.
    pub clock: Arc<dyn Clock>,
    /// The DNS provider the leader writes to (None: decisions only).
    pub provider: Option<Arc<dyn dns::Provider>>,
    /// Re-read the configuration file on SIGHUP (a simulation has no signals).
    pub sighup: bool,
}

/// Serves a started `agent` (probes, proposals, the reconciler, the leader's
/// loops and the gRPC services) until `shutdown` completes or Raft stops.
pub async fn serve_agent(
    agent: Arc<Agent>,
    wiring: Wiring,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let Wiring {
        listener,
        clock,
        provider,
        sighup,
    } = wiring;
    tracing::info!(node = agent.id(), addr = %agent.addr(), "agent started");
    let tls_watch = match agent.connector().tls() {
        Some(tls) => {
            tracing::info!(cluster = %tls.cluster(), "mutual TLS on every connection; certificates re-read when they change");
            Some(tokio::spawn(tls.clone().watch(std::time::Duration::from_secs(5))))
        }
        None if agent.config().insecure_plaintext => {
            tracing::warn!(
                "INSECURE: insecure_plaintext = true: no TLS, every peer and operator is trusted as it claims"
            );
            None
        }
        None => {
            tracing::warn!("no TLS: serving on loopback only");
            None
        }
    };
    let catalog = tokio::spawn(catalog::maintain(agent.clone()));
    let ticks = tokio::spawn(tick::run(agent.clone(), clock.clone()));
    let observer = Arc::new(propose::Observer::start(agent.clone(), clock).await?);
    let reconciler = match provider {
        Some(provider) => {
            let r = Arc::new(reconcile::Reconciler::new(agent.clone(), provider));
            tracing::info!(provider = %r.describe(), dry_run = r.dry_run, "DNS reconciler ready (writes only while leader)");
            Some(r)
        }
        None => {
            tracing::info!("dns.provider = \"none\": decisions are made and recorded, nothing is written");
            None
        }
    };
    let reconcile_task = reconciler.clone().map(|r| tokio::spawn(r.run()));
    let reload_task =
        sighup.then(|| tokio::spawn(reload::on_sighup(agent.clone(), observer.clone(), reconciler.clone())));
    let http_task = http::bind(&agent)
        .await
        .map_err(RunError::Http)?
        .map(|l| tokio::spawn(http::serve(agent.clone(), observer.clone(), l)));
    let notify_task = tokio::spawn(notify::run(agent.clone()));
    let leader_changes = tokio::spawn(metrics::count_leader_changes(agent.clone()));
    let served = tokio::select! {
        served = grpc::serve(agent.clone(), observer, reconciler, listener, shutdown) => served,
        // A storage error stops openraft for good: end now, without waiting
        // for open streams to close, so the exit code tells the supervisor.
        reason = agent.stopped() => {
            let e = RunError::Stopped { dir: agent.config().data_dir.display().to_string(), reason };
            tracing::error!("{e}");
            return Err(e);
        }
    };
    tracing::info!(node = agent.id(), "shutting down");
    catalog.abort();
    ticks.abort();
    if let Some(t) = reload_task {
        t.abort();
    }
    notify_task.abort();
    leader_changes.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    if let Some(t) = tls_watch {
        t.abort();
    }
    if let Some(t) = reconcile_task {
        t.abort();
    }
    if let Err(e) = agent.shutdown().await {
        tracing::warn!("Raft did not stop cleanly: {e}");
    }
    served?;
    Ok(())
}

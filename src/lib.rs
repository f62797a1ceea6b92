//! Vantage: multi-vantage health checking and DNS failover on a Raft log.
//!
//! Agents in several regions form one Raft group. Each proposes what it sees;
//! every decision is a pure function of the committed log; the leader alone
//! talks to the DNS provider.
//!
//! # Layout, in pipeline order
//!
//! - [`probe`]: ICMP, TCP and HTTP checks and the scheduler that runs them
//!   once per interval for every endpoint.
//! - [`detect`]: rise/fall hysteresis turning probe results into a local view.
//! - [`propose`]: local transitions and heartbeats into log entries; abstains
//!   when the agent's own network is suspect.
//! - [`agent`]: one running agent: Raft instance, storage handles and the
//!   proposal path (followers forward to the leader, the leader stamps log
//!   time and refuses reports the state machine would ignore).
//! - [`store`]: sled storage for the log, vote, committed pointer and snapshots.
//! - [`state`]: the replicated application state, applied deterministically:
//!   catalog, observations, decisions, DNS placement, audit history.
//! - [`decide`]: which observations count, the quorum rule and the DNS guards.
//! - [`reconcile`]: the leader writes the decided record set to the provider.
//! - [`dns`]: DNS providers (Cloudflare, zone file, memory) and the owned-record diff.
//!
//! Around the pipeline:
//!
//! - [`types`]: the Raft type configuration and the log payload ([`types::Command`]).
//! - [`network`]: outgoing gRPC to peers (channel cache, bound source
//!   address, openraft network).
//! - [`grpc`]: incoming gRPC: the internal Raft service, the `vantage.v1`
//!   admin and query API and server reflection.
//! - [`config`]: the TOML configuration and its validation.
//! - [`clock`]: the injected wall clock (read by the leader only).
//! - [`cli`]: the command-line client and commands used by the binary.
//! - [`demo`]: `vantage demo`, a local cluster with endpoints it can break.
//! - [`proto`]: generated protobuf and gRPC code.

#![forbid(unsafe_code)]
// tonic::Status and openraft's errors are large by design, and handlers must return them.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decide;
pub mod demo;
pub mod detect;
pub mod dns;
pub mod grpc;
pub mod network;
pub mod probe;
pub mod propose;
pub mod proto;
pub mod reconcile;
pub mod state;
pub mod store;
pub mod types;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::agent::{Agent, StartError};
use crate::clock::Clock;
use crate::config::Config;
use crate::grpc::ServeError;
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
    tracing::info!(node = agent.id, addr = %agent.addr, "agent started");
    let catalog = tokio::spawn(agent::maintain_catalog(agent.clone()));
    let observer = Arc::new(propose::Observer::start(agent.clone(), clock).await?);
    let reconciler = match dns::from_config(&agent.config).map_err(RunError::Dns)? {
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
    let served = grpc::serve(agent.clone(), observer, reconciler, listener, shutdown).await;
    tracing::info!(node = agent.id, "shutting down");
    catalog.abort();
    if let Some(t) = reconcile_task {
        t.abort();
    }
    if let Err(e) = agent.raft.shutdown().await {
        tracing::warn!("Raft did not stop cleanly: {e}");
    }
    served?;
    Ok(())
}

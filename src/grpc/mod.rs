//! Incoming gRPC: the internal Raft service, the public `vantage.v1` admin
//! service and server reflection (v1 and v1alpha), served on one listener.

pub(crate) mod auth;
pub(crate) mod cluster;
mod dns;
pub(crate) mod endpoints;
pub(crate) mod history;
mod incoming;
mod raft;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;

use tonic::{Request, Status};

use crate::agent::Agent;
use crate::propose::Observer;
use crate::proto::raft::raft_server::RaftServer;
use crate::proto::raft::ReadIndexRequest;
use crate::proto::v1::cluster_server::ClusterServer;
use crate::proto::v1::dns_server::DnsServer;
use crate::proto::v1::endpoints_server::EndpointsServer;
use crate::proto::v1::history_server::HistoryServer;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::reconcile::Reconciler;

pub use incoming::{Accepted, Listener};
pub use status::{FORWARDED_HEADER, LEADER_HEADER};

/// Failure to serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot accept on the listener: {0}")]
    Listener(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves every service of `agent` on `listener` until `shutdown` completes.
pub async fn serve(
    agent: Arc<Agent>,
    observer: Arc<Observer>,
    reconciler: Option<Arc<Reconciler>>,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let max = agent.config().raft.max_message_bytes;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let raft = RaftServer::new(raft::RaftService::new(agent.clone(), observer.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let cluster = ClusterServer::new(cluster::ClusterService::new(agent.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let endpoints = EndpointsServer::new(endpoints::EndpointsService::new(agent.clone(), observer))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let history = HistoryServer::new(history::HistoryService::new(agent.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let dns = DnsServer::new(dns::DnsService::new(agent.clone(), reconciler))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let router = tonic::transport::Server::builder()
        // A peer that stops answering is noticed, and its connection dropped.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(raft)
        .add_service(cluster)
        .add_service(endpoints)
        .add_service(history)
        .add_service(dns)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let listener = match listener {
        Listener::Tcp(l) => l,
        Listener::Accepted(_) if agent.connector().tls().is_some() => {
            return Err(ServeError::Listener(
                "a listener of accepted connections serves plaintext only".into(),
            ))
        }
        Listener::Accepted(incoming) => {
            router.serve_with_incoming_shutdown(incoming, shutdown).await?;
            return Ok(());
        }
    };
    match agent.connector().tls().cloned() {
        Some(tls) => {
            let handshake = agent.config().raft.connect_timeout.0.max(Duration::from_secs(5));
            router
                .serve_with_incoming_shutdown(incoming::tls(listener, tls, handshake), shutdown)
                .await?
        }
        None => {
            let plain =
                TcpIncoming::from_listener(listener, true, None).map_err(|e| ServeError::Listener(e.to_string()))?;
            router.serve_with_incoming_shutdown(plain, shutdown).await?
        }
    }
    Ok(())
}

/// A Raft role as the API and `/metrics` name it.
pub fn role_name(state: openraft::ServerState) -> &'static str {
    use openraft::ServerState;
    match state {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

/// Waits until this node has applied everything committed before the read
/// began: on the leader by confirming leadership with a quorum, on a follower
/// by asking the leader for its read index and applying up to it.
pub(crate) async fn linearize(agent: &Agent) -> Result<(), Status> {
    if agent.is_leader() {
        return agent
            .confirm_leadership()
            .await
            .map(|_| ())
            .map_err(|e| Status::unavailable(format!("cannot confirm leadership: {e}")));
    }
    let Some((_, addr)) = agent.leader() else {
        return Err(status::not_leader(None));
    };
    let mut client = agent
        .connector()
        .raft_client(&addr)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(ReadIndexRequest {});
    req.set_timeout(agent.config().raft.rpc_timeout.0 * 2);
    let index = client.read_index(req).await?.into_inner().read_index;
    agent
        .wait_applied(index, agent.config().raft.propose_timeout.0)
        .await
        .map_err(|e| Status::unavailable(format!("this node did not catch up to index {index}: {e}")))?;
    Ok(())
}

/// Runs a call on the leader: `None` when this node leads and should handle
/// it; otherwise the leader's answer, forwarded once (marked with
/// [`FORWARDED_HEADER`]), or `Unavailable` naming the leader.
pub(crate) async fn on_leader<T, R, F, Fut>(
    agent: &Agent,
    req: Request<T>,
    call: F,
) -> Result<Option<tonic::Response<R>>, Status>
where
    F: FnOnce(tonic::transport::Channel, Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    if agent.is_leader() {
        return Ok(None);
    }
    let leader = agent.leader().filter(|(id, _)| *id != agent.id());
    if req.metadata().contains_key(FORWARDED_HEADER) {
        return Err(status::not_leader(leader));
    }
    let Some((_, addr)) = leader else {
        return Err(status::not_leader(None));
    };
    let channel = agent
        .connector()
        .channel(&addr)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let by = req.metadata().get(auth::BY_HEADER).cloned();
    let mut fwd = Request::new(req.into_inner());
    fwd.metadata_mut()
        .insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    if let Some(by) = by {
        fwd.metadata_mut().insert(auth::BY_HEADER, by);
    }
    fwd.set_timeout(agent.config().raft.join_timeout.0 + std::time::Duration::from_secs(5));
    call(channel, fwd).await.map(Some)
}

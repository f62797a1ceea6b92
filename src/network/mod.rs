//! Outgoing connections: one place that builds gRPC channels to peers (so TLS
//! becomes a switch here), the openraft network that sends Raft RPCs over
//! them, and the admission of incoming peers ([`Vouching`]).

mod raft;
mod vouch;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

pub use raft::PeerNetworkFactory;
pub use vouch::Vouching;

use crate::proto::raft::raft_client::RaftClient;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::tls::Tls;

/// Builds and caches one HTTP/2 channel per peer address; channels reconnect
/// on their own, so a peer that restarts is picked up without a new client.
#[derive(Clone)]
pub struct Connector {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    max_message_bytes: usize,
    /// Source address of outgoing connections (the agent's own), so that
    /// peers, firewalls and tests see each agent as its own host.
    local_ip: Option<IpAddr>,
    /// This holder's certificate and the cluster CA; None for plaintext.
    tls: Option<Arc<Tls>>,
    /// Opens connections in place of the operating system (a simulated network).
    dialer: Option<Arc<dyn Dial>>,
}

/// A connection being opened.
pub type Dialing = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send>>;

/// Opens TCP connections. The operating system's sockets unless one is given
/// with [`Connector::with_dialer`]: the simulator's network, for one.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self, host: String, port: u16) -> Dialing;
}

/// A peer address that cannot be turned into a gRPC endpoint.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peer address {addr:?} is not a valid host:port: {reason}")]
pub struct BadAddress {
    pub addr: String,
    pub reason: String,
}

impl Connector {
    pub fn new(connect_timeout: Duration, max_message_bytes: usize) -> Self {
        Connector {
            channels: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
            max_message_bytes,
            local_ip: None,
            tls: None,
            dialer: None,
        }
    }

    /// Opens every connection (to peers, and TCP checks) through `dialer`.
    pub fn with_dialer(mut self, dialer: Arc<dyn Dial>) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// The dialer given with [`Connector::with_dialer`], if any.
    pub fn dialer(&self) -> Option<&Arc<dyn Dial>> {
        self.dialer.as_ref()
    }

    /// Dials every peer with mutual TLS, presenting `tls`'s certificate and
    /// accepting only nodes of its cluster.
    pub fn with_tls(mut self, tls: Option<Arc<Tls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS material connections use, if any.
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// Binds outgoing connections to `ip` (ignored when unspecified).
    pub fn with_local_ip(mut self, ip: IpAddr) -> Self {
        self.local_ip = (!ip.is_unspecified()).then_some(ip);
        self
    }

    /// A (cached) lazily connecting channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let ch = match (self.local_ip, self.tls.clone(), self.dialer.clone()) {
            (None, None, None) => endpoint.connect_lazy(),
            (local_ip, tls, dialer) => {
                endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: tonic::transport::Uri| {
                    let tls = tls.clone();
                    let dialer = dialer.clone();
                    Box::pin(async move {
                        let host = uri
                            .host()
                            .unwrap_or_default()
                            .trim_matches(|c| c == '[' || c == ']')
                            .to_string();
                        let port = uri.port_u16().unwrap_or(80);
                        let stream: Box<dyn Io> = match dialer {
                            Some(d) => d.dial(host.clone(), port).await?,
                            None => Box::new(dial(&host, port, local_ip).await?),
                        };
                        let io: Box<dyn Io> = match tls {
                            None => stream,
                            Some(tls) => {
                                // The verifier checks the peer's SAN URI, not this name.
                                let unnamed = std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED);
                                let name = rustls::pki_types::ServerName::try_from(host.clone())
                                    .unwrap_or(rustls::pki_types::ServerName::IpAddress(unnamed.into()));
                                let connector = TlsConnector::from(tls.client_config());
                                Box::new(connector.connect(name, stream).await?)
                            }
                        };
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
                    })
                }))
            }
        };
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Drops the cached channel to `addr`: the next call dials a new
    /// connection. For a connection that stopped carrying anything (its
    /// segments lost, the peer's side wedged) while new ones would work:
    /// HTTP/2 keep-alive notices that only after its interval and timeout,
    /// and not at all while the peer's own pings keep arriving.
    pub fn forget(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }

    /// Client of a peer's internal Raft service.
    pub fn raft_client(&self, addr: &str) -> Result<RaftClient<Channel>, BadAddress> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// Client of a peer's public Cluster service.
    pub fn cluster_client(&self, addr: &str) -> Result<ClusterClient<Channel>, BadAddress> {
        Ok(ClusterClient::new(self.channel(addr)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

/// A connection, plain or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Connects to `host:port`, from `local_ip` when given.
async fn dial(host: &str, port: u16, local_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match local_ip {
        None => TcpStream::connect((host, port)).await?,
        Some(ip) => {
            let target = tokio::net::lookup_host((host, port))
                .await?
                .find(|a| a.is_ipv4() == ip.is_ipv4())
                .ok_or_else(|| std::io::Error::other(format!("{host}: no address of the family of {ip}")))?;
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

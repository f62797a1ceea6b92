//! Accepting connections. With TLS, each handshake runs on its own task with
//! a deadline, so a slow or hostile client never holds up another, and a
//! failed handshake is logged (once a minute per peer) and dropped rather
//! than handed to the server: a connection without a valid certificate of the
//! cluster CA never reaches a handler.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::auth::log_refusal;
use crate::network::Io;
use crate::tls::Tls;

/// Connections that completed the handshake, as the gRPC server takes them.
pub type TlsIncoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Accepts on `listener` and completes TLS handshakes within `deadline`,
/// each with the certificates in force at that moment.
pub fn tls(listener: TcpListener, tls: Arc<Tls>, deadline: Duration) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => log_refusal(&from.to_string(), &format!("TLS handshake failed: {e}")),
                    Err(_) => log_refusal(&from.to_string(), "TLS handshake did not finish in time"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Where the gRPC server takes its connections from.
pub enum Listener {
    /// A socket of the operating system's.
    Tcp(TcpListener),
    /// Connections accepted by someone else: the simulator's network, whose
    /// connections are plaintext (its configurations set `insecure_plaintext`).
    Accepted(Pin<Box<dyn Stream<Item = std::io::Result<Accepted>> + Send>>),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

/// One connection handed to [`Listener::Accepted`], with its two ends.
pub struct Accepted {
    pub io: Box<dyn Io>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

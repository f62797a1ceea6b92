//! Accepting connections. With TLS, each handshake runs on its own task with
//! a deadline, so a slow or hostile client never holds up another, and a
//! failed handshake is logged (once a minute per peer) and dropped rather
//! than handed to the server: a connection without a valid certificate of the
//! cluster CA never reaches a handler.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::log_refusal;
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

//! The agents' I/O on the simulated network: a dialer, a listener and the clock.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use vantage::clock::Clock;
use vantage::grpc::Accepted;
use vantage::network::{Dial, Dialing, Io};

/// Connects over turmoil's network.
pub struct SimDial;

impl Dial for SimDial {
    fn dial(&self, host: String, port: u16) -> Dialing {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(s) as Box<dyn Io>)
        })
    }
}

/// Binds `port` on the current host and hands every accepted connection on.
pub async fn listen(port: u16) -> std::io::Result<Pin<Box<dyn Stream<Item = std::io::Result<Accepted>> + Send>>> {
    let l = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let local = l.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = l.accept().await.map(|(s, remote)| Accepted {
                io: Box::new(s),
                local,
                remote,
            });
            if tx.send(accepted).await.is_err() {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// The simulation's clock, from [`crate::EPOCH_MS`].
pub struct SimClock;

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        crate::EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
    }
}

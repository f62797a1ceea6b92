//! Probes: one check of one endpoint (ICMP echo, TCP connect, HTTP request),
//! and the scheduler that runs them for every endpoint once per interval.

mod dns;
pub mod grpc;
mod http;
pub mod icmp;
pub mod scheduler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Check, EndpointSpec};
use crate::detect::Outcome;
use crate::network::Dial;

pub use scheduler::{EndpointView, LocalView, Scheduler};

/// What probes share: the ICMP sockets and the HTTP clients.
#[derive(Clone)]
pub struct Probers {
    pub pinger: Arc<icmp::Pinger>,
    http: Arc<http::Clients>,
    /// TCP checks connect through it when set (a simulated network).
    dialer: Option<Arc<dyn Dial>>,
}

impl Probers {
    /// Opens the ICMP sockets (logging which kind is used) and prepares HTTP clients.
    pub async fn new() -> Probers {
        let pinger = Arc::new(icmp::Pinger::new().await);
        Probers {
            pinger,
            http: Arc::default(),
            dialer: None,
        }
    }

    /// Probers on a network of `dialer`'s: TCP checks connect through it, and
    /// no ICMP socket is opened (there is no such network under it).
    pub async fn simulated(dialer: Arc<dyn Dial>) -> Probers {
        Probers {
            pinger: Arc::new(icmp::Pinger::unavailable("the network is simulated")),
            http: Arc::default(),
            dialer: Some(dialer),
        }
    }

    /// Prepares the probe of one endpoint.
    pub fn probe_for(&self, spec: &EndpointSpec) -> Result<Probe, String> {
        let kind = match &spec.check {
            Check::Icmp => ProbeKind::Icmp(self.pinger.clone()),
            Check::Tcp { port } => ProbeKind::Tcp(SocketAddr::new(spec.addr, *port), self.dialer.clone()),
            Check::Http(h) => ProbeKind::Http(self.http.request_for(spec.addr, h)?),
            Check::Grpc { port, service, tls } => ProbeKind::Grpc(grpc::GrpcProbe::new(
                SocketAddr::new(spec.addr, *port),
                service,
                tls.as_ref(),
            )?),
            Check::Dns(d) => ProbeKind::Dns(dns::DnsProbe::new(SocketAddr::new(spec.addr, d.port), d)?),
        };
        Ok(Probe {
            addr: spec.addr,
            timeout: spec.timeout,
            max_rtt: spec.max_rtt,
            kind,
        })
    }
}

enum ProbeKind {
    Icmp(Arc<icmp::Pinger>),
    Tcp(SocketAddr, Option<Arc<dyn Dial>>),
    Http(http::HttpProbe),
    Grpc(grpc::GrpcProbe),
    Dns(dns::DnsProbe),
}

/// A ready-to-run check of one endpoint.
pub struct Probe {
    addr: std::net::IpAddr,
    timeout: Duration,
    max_rtt: Option<Duration>,
    kind: ProbeKind,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Probe {
    /// Runs the check once; a check that exceeds the timeout is a failure that says so.
    pub async fn run(&self) -> Outcome {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.attempt()).await;
        let rtt = started.elapsed();
        match result {
            Ok(Ok(_)) if self.max_rtt.is_some_and(|m| rtt > m) => Outcome::failure(
                rtt,
                format!(
                    "answered in {}, slower than max_rtt {}",
                    ms(rtt),
                    ms(self.max_rtt.unwrap_or_default())
                ),
            ),
            Ok(Ok(warning)) => Outcome {
                warning,
                ..Outcome::success(rtt)
            },
            Ok(Err(e)) => Outcome::failure(rtt, e),
            Err(_) => Outcome::failure(
                rtt,
                format!("timed out after {}", humantime::format_duration(self.timeout)),
            ),
        }
    }

    /// One attempt: Ok with a warning, if any, or why it failed.
    async fn attempt(&self) -> Result<Option<String>, String> {
        match &self.kind {
            ProbeKind::Icmp(p) => p
                .ping(self.addr, self.timeout)
                .await
                .map(|_| None)
                .map_err(|e| e.to_string()),
            ProbeKind::Tcp(sa, Some(dialer)) => {
                dialer
                    .dial(sa.ip().to_string(), sa.port())
                    .await
                    .map_err(|e| format!("tcp connect to {sa}: {e}"))?;
                Ok(None)
            }
            ProbeKind::Tcp(sa, None) => {
                let stream = tokio::net::TcpStream::connect(sa)
                    .await
                    .map_err(|e| format!("tcp connect to {sa}: {e}"))?;
                // Close with a reset, as HAProxy's checks do: no FIN exchange
                // and no TIME_WAIT socket left behind for every probe.
                let _ = stream.set_zero_linger();
                Ok(None)
            }
            ProbeKind::Http(h) => h.run().await,
            ProbeKind::Grpc(g) => g.run().await.map(|_| None),
            ProbeKind::Dns(d) => d.run().await.map(|_| None),
        }
    }
}

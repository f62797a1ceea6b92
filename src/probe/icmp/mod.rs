//! Async ICMP echo ("ping") prober shared by all endpoints.
//!
//! One socket per address family is opened once and shared: thousands of
//! endpoints pinging in parallel would otherwise need thousands of file
//! descriptors, and raw sockets each receive a copy of *all* ICMP traffic on
//! the host, so per-endpoint raw sockets would multiply the receive work. A
//! single background task per socket reads every reply and hands it to the
//! waiting request, matched by identifier, sequence number, source address
//! and a per-request nonce in the payload.
//!
//! Unprivileged datagram ICMP sockets are preferred (Linux, gated by
//! `net.ipv4.ping_group_range`); raw sockets (needing `CAP_NET_RAW`) are the
//! fallback. A family where neither works is reported, not fatal.

mod packet;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use packet::{build_echo_request, parse_packet, payload_matches, Parsed};

/// Large enough for any error message quoting our request; longer packets are
/// truncated by the kernel, which is harmless because only the head matters.
const RECV_BUF_LEN: usize = 4096;

/// Distinguishes identifiers of several pingers within one process.
static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which kind of ICMP socket a family ended up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// Unprivileged datagram ICMP socket (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`).
    Datagram,
    /// Raw ICMP socket (`SOCK_RAW`), needs `CAP_NET_RAW`.
    Raw,
    /// No socket could be opened; carries the OS errors and a hint.
    Unavailable(String),
}

/// Which socket kinds [`Pinger::with_mode`] may try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketMode {
    /// Datagram first, raw as fallback (what [`Pinger::new`] does).
    Auto,
    /// Datagram only, no fallback.
    Datagram,
    /// Raw only.
    Raw,
}

/// Why a ping failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// No matching echo reply arrived in time.
    #[error("no echo reply within {0:?}")]
    Timeout(Duration),
    /// No ICMP socket exists for the address family.
    #[error("ICMP over {family} unavailable: {reason}")]
    Unavailable {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// OS error text and hint.
        reason: String,
    },
    /// The echo request could not be sent (e.g. no route).
    #[error("sending echo request failed: {0}")]
    Send(String),
    /// An ICMP error (destination unreachable, time exceeded) answered our request.
    #[error("{0}")]
    Unreachable(String),
}

/// Async ICMP echo pinger with one shared socket per address family.
pub struct Pinger {
    v4: Family,
    v6: Family,
}

impl fmt::Debug for Pinger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinger")
            .field("v4", &self.v4.kind)
            .field("v6", &self.v6.kind)
            .finish()
    }
}

struct Family {
    kind: SocketKind,
    engine: Option<Engine>,
}

struct Engine {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The task holds the socket; without this it would outlive the Pinger.
        self.task.abort();
    }
}

/// State shared between senders and the receive task of one socket.
struct Shared {
    v6: bool,
    raw: bool,
    /// Identifier written into requests (datagram sockets: overwritten by the kernel).
    send_ident: u16,
    /// Identifier replies must carry; `None` when the kernel already filters by it.
    expect_ident: Option<u16>,
    nonce_state: RandomState,
    inflight: Mutex<Inflight>,
}

struct Waiter {
    addr: IpAddr,
    nonce: u64,
    tx: oneshot::Sender<Result<Instant, PingError>>,
}

#[derive(Default)]
struct Inflight {
    next_seq: u16,
    nonce_counter: u64,
    waiters: HashMap<u16, Waiter>,
}

impl Inflight {
    /// Picks the next free sequence number, skipping those still in flight.
    fn alloc_seq(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX as u32 {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            if !self.waiters.contains_key(&seq) {
                return Some(seq);
            }
        }
        None
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inflight> {
        // Nothing panics while holding the lock, but a poisoned map is still usable.
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn family(&self) -> &'static str {
        if self.v6 {
            "IPv6"
        } else {
            "IPv4"
        }
    }
}

/// Removes the request's map entry however `ping` ends (reply, timeout, drop).
struct InflightGuard<'a> {
    shared: &'a Shared,
    seq: u16,
    nonce: u64,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = self.shared.lock();
        // The seq may already have been completed and reused by another request.
        if inflight.waiters.get(&self.seq).is_some_and(|w| w.nonce == self.nonce) {
            inflight.waiters.remove(&self.seq);
        }
    }
}

impl Pinger {
    /// Opens one ICMP socket per family, datagram preferred, raw as fallback.
    pub async fn new() -> Pinger {
        Self::with_mode(SocketMode::Auto).await
    }

    /// A pinger with no socket: every ping fails, saying `why`.
    pub fn unavailable(why: &str) -> Pinger {
        let family = || Family {
            kind: SocketKind::Unavailable(why.to_string()),
            engine: None,
        };
        Pinger {
            v4: family(),
            v6: family(),
        }
    }

    /// Like [`Pinger::new`] but restricted to the given socket kinds.
    pub async fn with_mode(mode: SocketMode) -> Pinger {
        let (v4, v6) = (open_family(false, mode), open_family(true, mode));
        let pinger = Pinger { v4, v6 };
        tracing::debug!("{}", pinger.describe());
        pinger
    }

    /// Socket kind used for IPv4.
    pub fn kind_v4(&self) -> &SocketKind {
        &self.v4.kind
    }

    /// Socket kind used for IPv6.
    pub fn kind_v6(&self) -> &SocketKind {
        &self.v6.kind
    }

    /// One human line for start-up logs naming each family's socket kind.
    pub fn describe(&self) -> String {
        fn one(name: &str, kind: &SocketKind) -> String {
            match kind {
                SocketKind::Datagram => format!("{name} datagram socket"),
                SocketKind::Raw => format!("{name} raw socket"),
                SocketKind::Unavailable(why) => format!("{name} unavailable ({why})"),
            }
        }
        format!("icmp: {}, {}", one("IPv4", &self.v4.kind), one("IPv6", &self.v6.kind))
    }

    /// Sends one echo request and waits for the matching reply; returns the round-trip time.
    pub async fn ping(&self, addr: IpAddr, timeout: Duration) -> Result<Duration, PingError> {
        // An IPv4-mapped IPv6 address is really an IPv4 destination.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let (family, name) = match addr {
            IpAddr::V4(_) => (&self.v4, "IPv4"),
            IpAddr::V6(_) => (&self.v6, "IPv6"),
        };
        let Some(engine) = &family.engine else {
            let reason = match &family.kind {
                SocketKind::Unavailable(why) => why.clone(),
                other => format!("{other:?} socket missing"),
            };
            return Err(PingError::Unavailable { family: name, reason });
        };
        let deadline = Instant::now() + timeout;
        let shared = &*engine.shared;

        let (tx, rx) = oneshot::channel();
        let (seq, nonce) = {
            let mut inflight = shared.lock();
            let Some(seq) = inflight.alloc_seq() else {
                return Err(PingError::Send(format!(
                    "all 65536 {name} sequence numbers are in flight"
                )));
            };
            inflight.nonce_counter = inflight.nonce_counter.wrapping_add(1);
            let mut h = shared.nonce_state.build_hasher();
            h.write_u64(inflight.nonce_counter);
            let nonce = h.finish();
            inflight.waiters.insert(seq, Waiter { addr, nonce, tx });
            (seq, nonce)
        };
        // Registered before sending: on loopback the reply can beat send_to's return.
        let _guard = InflightGuard { shared, seq, nonce };

        let packet = build_echo_request(shared.v6, shared.send_ident, seq, nonce);
        let sent_at = Instant::now();
        match tokio::time::timeout_at(deadline, engine.socket.send_to(&packet, SocketAddr::new(addr, 0))).await {
            Err(_) => return Err(PingError::Timeout(timeout)),
            Ok(Err(e)) => return Err(PingError::Send(e.to_string())),
            Ok(Ok(_)) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(PingError::Timeout(timeout)),
            Ok(Ok(Ok(received_at))) => Ok(received_at.saturating_duration_since(sent_at)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(PingError::Unavailable {
                family: name,
                reason: "receive task stopped".into(),
            }),
        }
    }

    #[cfg(test)]
    fn inflight_len(&self) -> usize {
        [&self.v4, &self.v6]
            .iter()
            .filter_map(|f| f.engine.as_ref())
            .map(|e| e.shared.lock().waiters.len())
            .sum()
    }
}

fn open_family(v6: bool, mode: SocketMode) -> Family {
    let mut errors = Vec::new();
    if mode != SocketMode::Raw {
        match open_socket(v6, false) {
            Ok(engine) => {
                return Family {
                    kind: SocketKind::Datagram,
                    engine: Some(engine),
                };
            }
            Err(e) => errors.push(explain(v6, false, &e)),
        }
    }
    if mode != SocketMode::Datagram {
        match open_socket(v6, true) {
            Ok(engine) => {
                return Family {
                    kind: SocketKind::Raw,
                    engine: Some(engine),
                };
            }
            Err(e) => errors.push(explain(v6, true, &e)),
        }
    }
    Family {
        kind: SocketKind::Unavailable(errors.join("; ")),
        engine: None,
    }
}

fn explain(v6: bool, raw: bool, e: &io::Error) -> String {
    let what = if raw { "raw" } else { "datagram" };
    let hint = match (e.kind(), raw) {
        (io::ErrorKind::PermissionDenied, false) => {
            " (hint: the process's group must be inside sysctl net.ipv4.ping_group_range)"
        }
        (io::ErrorKind::PermissionDenied, true) => " (hint: needs root or CAP_NET_RAW)",
        _ if v6 => " (hint: is IPv6 enabled in the kernel?)",
        _ => "",
    };
    format!("{what}: {e}{hint}")
}

fn open_socket(v6: bool, raw: bool) -> io::Result<Engine> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let ty = if raw { Type::RAW } else { Type::DGRAM };
    let socket = Socket::new(domain, ty, Some(proto))?;
    socket.set_nonblocking(true)?;

    let (send_ident, expect_ident) = if raw {
        // Raw sockets see every ICMP packet on the host, so our id must be ours.
        let id = random_ident();
        (id, Some(id))
    } else {
        // Binding makes the kernel pick the identifier now, so we can check it.
        let any: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        socket.bind(&any.into())?;
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .filter(|p| *p != 0);
        (port.unwrap_or(0), port)
    };

    let socket = Arc::new(UdpSocket::from_std(std::net::UdpSocket::from(socket))?);
    let shared = Arc::new(Shared {
        v6,
        raw,
        send_ident,
        expect_ident,
        nonce_state: RandomState::new(),
        inflight: Mutex::new(Inflight::default()),
    });
    let task = tokio::spawn(receive_loop(Arc::clone(&socket), Arc::clone(&shared)));
    Ok(Engine { socket, shared, task })
}

fn random_ident() -> u16 {
    // RandomState is randomly seeded per process; pid and a counter keep several
    // pingers (and several processes) apart even if the seed were weak.
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed));
    let x = h.finish();
    (x ^ (x >> 16) ^ (x >> 32) ^ (x >> 48)) as u16
}

async fn receive_loop(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut consecutive_errors = 0u32;
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => {
                consecutive_errors = 0;
                r
            }
            Err(e) => {
                // Pending socket errors (e.g. ICMP errors on some kernels) are
                // per-read and transient; never let them stop the shared socket.
                consecutive_errors = consecutive_errors.saturating_add(1);
                tracing::debug!(family = shared.family(), error = %e, "icmp recv error");
                if consecutive_errors > 10 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let received_at = Instant::now();
        let Some(packet) = buf.get(..len) else {
            continue;
        };
        if let Some(parsed) = parse_packet(packet, shared.v6, shared.raw) {
            dispatch(&shared, parsed, from.ip(), received_at);
        }
    }
}

fn dispatch(shared: &Shared, parsed: Parsed<'_>, from: IpAddr, received_at: Instant) {
    let (ident, seq) = match &parsed {
        Parsed::Reply { ident, seq, .. } | Parsed::Error { ident, seq, .. } => (*ident, *seq),
    };
    if shared.expect_ident.is_some_and(|want| want != ident) {
        return;
    }
    let mut inflight = shared.lock();
    let Some(waiter) = inflight.waiters.get(&seq) else {
        return;
    };
    let result = match &parsed {
        Parsed::Reply { payload, .. } => {
            if from != waiter.addr || !payload_matches(payload, waiter.nonce) {
                return;
            }
            Ok(received_at)
        }
        Parsed::Error {
            dst, payload, message, ..
        } => {
            // Errors come from routers, so match on the quoted destination; the
            // quote may be cut short (RFC 792 only guarantees 8 bytes).
            if *dst != waiter.addr || (payload.len() >= 12 && !payload_matches(payload, waiter.nonce)) {
                return;
            }
            Err(PingError::Unreachable(format!("{message} (reported by {from})")))
        }
    };
    if let Some(waiter) = inflight.waiters.remove(&seq) {
        // The requester may have timed out just now; nothing to do then.
        let _ = waiter.tx.send(result);
    }
}

#[cfg(test)]
mod tests;

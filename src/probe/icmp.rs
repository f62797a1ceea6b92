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

const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV4_DEST_UNREACHABLE: u8 = 3;
const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV4_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// Tags our payloads so stray echo replies from other tools are ignored cheaply.
const MAGIC: [u8; 4] = *b"VNTG";
/// ICMP echo header (8) + magic (4) + nonce (8).
const PACKET_LEN: usize = 8 + 4 + 8;
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

/// A received packet that may concern one of our requests.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    Reply {
        ident: u16,
        seq: u16,
        payload: &'a [u8],
    },
    /// ICMP error quoting an echo request we may have sent.
    Error {
        ident: u16,
        seq: u16,
        /// Destination of the quoted request.
        dst: IpAddr,
        /// What was quoted after the echo header (may be truncated).
        payload: &'a [u8],
        message: String,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Strips the IPv4 header raw IPv4 sockets prepend; returns (protocol, dst, payload).
fn split_ipv4(b: &[u8]) -> Option<(u8, Ipv4Addr, &[u8])> {
    let first = *b.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = *b.get(9)?;
    let d = b.get(16..20)?;
    let dst = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
    Some((proto, dst, b.get(ihl..)?))
}

fn parse_packet(packet: &[u8], v6: bool, raw: bool) -> Option<Parsed<'_>> {
    if v6 {
        // IPv6 sockets of both kinds deliver the ICMPv6 message without IP header.
        parse_icmpv6(packet)
    } else if raw {
        let (proto, _dst, icmp) = split_ipv4(packet)?;
        if proto != IPPROTO_ICMP {
            return None;
        }
        parse_icmpv4(icmp)
    } else {
        parse_icmpv4(packet)
    }
}

fn parse_icmpv4(msg: &[u8]) -> Option<Parsed<'_>> {
    if msg.len() < 8 || checksum(msg) != 0 {
        return None;
    }
    let (ty, code) = (msg[0], msg[1]);
    match ty {
        ICMPV4_ECHO_REPLY => Some(Parsed::Reply {
            ident: be16(msg, 4)?,
            seq: be16(msg, 6)?,
            payload: &msg[8..],
        }),
        ICMPV4_DEST_UNREACHABLE | ICMPV4_TIME_EXCEEDED => {
            let (proto, dst, inner) = split_ipv4(msg.get(8..)?)?;
            if proto != IPPROTO_ICMP || *inner.first()? != ICMPV4_ECHO_REQUEST {
                return None;
            }
            Some(Parsed::Error {
                ident: be16(inner, 4)?,
                seq: be16(inner, 6)?,
                dst: IpAddr::V4(dst),
                payload: inner.get(8..).unwrap_or_default(),
                message: describe_v4_error(ty, code),
            })
        }
        _ => None,
    }
}

fn parse_icmpv6(msg: &[u8]) -> Option<Parsed<'_>> {
    if msg.len() < 8 {
        return None;
    }
    let (ty, code) = (msg[0], msg[1]);
    match ty {
        ICMPV6_ECHO_REPLY => Some(Parsed::Reply {
            ident: be16(msg, 4)?,
            seq: be16(msg, 6)?,
            payload: &msg[8..],
        }),
        ICMPV6_DEST_UNREACHABLE | ICMPV6_TIME_EXCEEDED => {
            let ip = msg.get(8..)?;
            // Extension headers between IPv6 and ICMPv6 are not followed: echo
            // requests we send never carry them.
            if *ip.first()? >> 4 != 6 || *ip.get(6)? != IPPROTO_ICMPV6 {
                return None;
            }
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let inner = ip.get(40..)?;
            if *inner.first()? != ICMPV6_ECHO_REQUEST {
                return None;
            }
            Some(Parsed::Error {
                ident: be16(inner, 4)?,
                seq: be16(inner, 6)?,
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                payload: inner.get(8..).unwrap_or_default(),
                message: describe_v6_error(ty, code),
            })
        }
        _ => None,
    }
}

fn describe_v4_error(ty: u8, code: u8) -> String {
    if ty == ICMPV4_TIME_EXCEEDED {
        return "time exceeded (TTL expired in transit)".into();
    }
    match code {
        0 => "network unreachable".into(),
        1 => "host unreachable".into(),
        2 => "protocol unreachable".into(),
        3 => "port unreachable".into(),
        4 => "fragmentation needed".into(),
        6 => "destination network unknown".into(),
        7 => "destination host unknown".into(),
        9 | 10 | 13 => "communication administratively prohibited".into(),
        c => format!("destination unreachable (code {c})"),
    }
}

fn describe_v6_error(ty: u8, code: u8) -> String {
    if ty == ICMPV6_TIME_EXCEEDED {
        return "time exceeded (hop limit reached in transit)".into();
    }
    match code {
        0 => "no route to destination".into(),
        1 => "communication administratively prohibited".into(),
        2 => "beyond scope of source address".into(),
        3 => "address unreachable".into(),
        4 => "port unreachable".into(),
        5 => "source address failed policy".into(),
        6 => "reject route to destination".into(),
        c => format!("destination unreachable (code {c})"),
    }
}

/// Our payload is magic + nonce; a mismatch means someone else's packet.
fn payload_matches(payload: &[u8], nonce: u64) -> bool {
    payload.len() >= 12 && payload[..4] == MAGIC && payload[4..12] == nonce.to_be_bytes()
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

fn build_echo_request(v6: bool, ident: u16, seq: u16, nonce: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = if v6 { ICMPV6_ECHO_REQUEST } else { ICMPV4_ECHO_REQUEST };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&MAGIC);
    p[12..20].copy_from_slice(&nonce.to_be_bytes());
    if !v6 {
        // ICMPv6 checksums include a pseudo-header with our source address, which
        // only the kernel knows; it fills them in for both socket kinds.
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// RFC 1071 Internet checksum; over a message with a valid checksum it yields 0.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
    const T: Duration = Duration::from_secs(2);

    /// A path the tests need is missing: fail loudly with the fix, never skip.
    fn skip(why: &str) {
        panic!(
            "required but unavailable: {why}. The ICMP tests need IPv6 loopback and unprivileged \
             datagram ICMP sockets: run `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` as root \
             (.ci/run does this)"
        );
    }

    fn has_ipv6_loopback() -> bool {
        std::net::UdpSocket::bind("[::1]:0").is_ok()
    }

    async fn ping_both(p: &Pinger, label: &str) {
        let rtt = p.ping(LO4, T).await;
        assert!(
            matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
            "{label} v4: {rtt:?}"
        );
        if has_ipv6_loopback() {
            let rtt = p.ping(LO6, T).await;
            assert!(
                matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
                "{label} v6: {rtt:?}"
            );
        } else {
            skip("no IPv6 loopback");
        }
        assert_eq!(p.inflight_len(), 0);
    }

    #[tokio::test]
    async fn ping_ipv4_loopback() {
        let p = Pinger::new().await;
        let rtt = p.ping(LO4, T).await;
        assert!(
            matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
            "{rtt:?}; {}",
            p.describe()
        );
        // Mapped addresses go over IPv4.
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert!(p.ping(mapped, T).await.is_ok());
        assert_eq!(p.inflight_len(), 0);
    }

    #[tokio::test]
    async fn ping_ipv6_loopback() {
        if !has_ipv6_loopback() {
            return skip("no IPv6 loopback");
        }
        let p = Pinger::new().await;
        let rtt = p.ping(LO6, T).await;
        assert!(
            matches!(rtt, Ok(d) if d < Duration::from_millis(500)),
            "{rtt:?}; {}",
            p.describe()
        );
    }

    async fn concurrent(p: Arc<Pinger>, n: usize) {
        let v6 = has_ipv6_loopback();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let p = Arc::clone(&p);
            let addr = if v6 && i % 2 == 1 { LO6 } else { LO4 };
            set.spawn(async move { (addr, p.ping(addr, Duration::from_secs(5)).await) });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            let (addr, r) = r.expect("task panicked");
            assert!(r.is_ok(), "{addr}: {r:?}; {}", p.describe());
            ok += 1;
        }
        assert_eq!(ok, n);
        assert_eq!(p.inflight_len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_200_mixed() {
        concurrent(Arc::new(Pinger::new().await), 200).await;
    }

    #[tokio::test]
    async fn unanswered_address_errors_within_timeout() {
        let p = Pinger::new().await;
        let timeout = Duration::from_millis(1500);
        let mut targets = vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))];
        if has_ipv6_loopback() {
            targets.push("2001:db8::1".parse().expect("literal"));
        }
        for addr in targets {
            let start = std::time::Instant::now();
            let r = p.ping(addr, timeout).await;
            let took = start.elapsed();
            eprintln!("{addr}: {r:?} after {took:?}");
            assert!(r.is_err(), "{addr} answered: {r:?}");
            assert!(took < timeout + Duration::from_millis(500), "{addr} took {took:?}");
        }
        assert_eq!(p.inflight_len(), 0, "timed-out entries must be removed");
    }

    #[tokio::test]
    async fn timeout_when_no_reply_is_delivered() {
        let p = Pinger::new().await;
        let Some(engine) = &p.v4.engine else {
            return skip(&p.describe());
        };
        // Without the receive task the reply is never matched, so this must time out.
        engine.task.abort();
        let start = std::time::Instant::now();
        let r = p.ping(LO4, Duration::from_millis(200)).await;
        let took = start.elapsed();
        assert_eq!(r, Err(PingError::Timeout(Duration::from_millis(200))));
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(700),
            "{took:?}"
        );
        assert_eq!(p.inflight_len(), 0, "timed-out entry must be removed");
    }

    #[tokio::test]
    async fn send_error_is_reported() {
        let p = Pinger::new().await;
        if p.v4.engine.is_none() {
            return skip(&p.describe());
        }
        // Limited broadcast without SO_BROADCAST is refused by the kernel at send time.
        let r = p.ping(IpAddr::V4(Ipv4Addr::BROADCAST), T).await;
        eprintln!("broadcast: {r:?}");
        assert!(matches!(r, Err(PingError::Send(_))), "{r:?}");
        assert_eq!(p.inflight_len(), 0);
    }

    #[tokio::test]
    async fn dropped_ping_removes_entry() {
        let p = Pinger::new().await;
        let fut = p.ping(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), Duration::from_secs(30));
        // Polls the ping until it is waiting, then drops it.
        let _ = tokio::time::timeout(Duration::from_millis(100), fut).await;
        assert_eq!(p.inflight_len(), 0);
    }

    #[tokio::test]
    async fn describe_names_socket_kind() {
        let p = Pinger::new().await;
        let d = p.describe();
        eprintln!("{d}");
        assert!(d.starts_with("icmp: IPv4 "), "{d}");
        for kind in [p.kind_v4(), p.kind_v6()] {
            let word = match kind {
                SocketKind::Datagram => "datagram socket",
                SocketKind::Raw => "raw socket",
                SocketKind::Unavailable(_) => "unavailable (",
            };
            assert!(d.contains(word), "{d}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_path_both_families() {
        let p = Pinger::with_mode(SocketMode::Raw).await;
        if p.kind_v4() != &SocketKind::Raw {
            return skip(&p.describe());
        }
        if has_ipv6_loopback() {
            assert_eq!(p.kind_v6(), &SocketKind::Raw, "{}", p.describe());
        }
        assert!(p.describe().contains("IPv4 raw socket"));
        ping_both(&p, "raw").await;
        concurrent(Arc::new(p), 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagram_path_both_families() {
        let p = Pinger::with_mode(SocketMode::Datagram).await;
        if p.kind_v4() != &SocketKind::Datagram {
            // Unavailable must say why and how to fix it.
            let d = p.describe();
            assert!(d.contains("ping_group_range") || d.contains("datagram:"), "{d}");
            return skip(&d);
        }
        if has_ipv6_loopback() {
            assert_eq!(p.kind_v6(), &SocketKind::Datagram, "{}", p.describe());
        }
        // The kernel-chosen identifier must be known so replies can be checked.
        for f in [&p.v4, &p.v6] {
            if let Some(e) = &f.engine {
                assert!(e.shared.expect_ident.is_some());
                assert_eq!(e.shared.expect_ident, Some(e.shared.send_ident));
            }
        }
        ping_both(&p, "datagram").await;
        concurrent(Arc::new(p), 100).await;
    }

    #[tokio::test]
    async fn unavailable_family_errors() {
        let p = Pinger {
            v4: Family {
                kind: SocketKind::Unavailable("test".into()),
                engine: None,
            },
            v6: Family {
                kind: SocketKind::Unavailable("test".into()),
                engine: None,
            },
        };
        assert_eq!(
            p.ping(LO4, T).await,
            Err(PingError::Unavailable {
                family: "IPv4",
                reason: "test".into()
            })
        );
        assert!(p.describe().contains("IPv6 unavailable (test)"));
    }

    #[test]
    fn checksum_known_values() {
        // RFC 1071 example words.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0xff]), !0xff00);
        let p = build_echo_request(false, 0x1234, 7, 42);
        assert_eq!(checksum(&p), 0);
    }

    fn ipv4_header(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    #[test]
    fn parses_raw_v4_reply_and_error() {
        let mut reply = build_echo_request(false, 0xabcd, 9, 5);
        reply[0] = ICMPV4_ECHO_REPLY;
        reply[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(&reply);
        reply[2..4].copy_from_slice(&c.to_be_bytes());
        let mut pkt = ipv4_header(1, [127, 0, 0, 1], [127, 0, 0, 1]);
        pkt.extend_from_slice(&reply);
        match parse_packet(&pkt, false, true) {
            Some(Parsed::Reply { ident, seq, payload }) => {
                assert_eq!((ident, seq), (0xabcd, 9));
                assert!(payload_matches(payload, 5));
                assert!(!payload_matches(payload, 6));
            }
            other => panic!("{other:?}"),
        }
        // Our own request seen on a raw socket is not a reply.
        let mut own = ipv4_header(1, [127, 0, 0, 1], [127, 0, 0, 1]);
        own.extend_from_slice(&build_echo_request(false, 0xabcd, 9, 5));
        assert_eq!(parse_packet(&own, false, true), None);
        // A corrupted reply is dropped.
        let last = pkt.len() - 1;
        pkt[last] ^= 1;
        assert_eq!(parse_packet(&pkt, false, true), None);

        let mut err = vec![ICMPV4_DEST_UNREACHABLE, 1, 0, 0, 0, 0, 0, 0];
        err.extend(ipv4_header(1, [10, 0, 0, 1], [198, 51, 100, 1]));
        err.extend_from_slice(&build_echo_request(false, 0xabcd, 3, 5)[..8]);
        let c = checksum(&err);
        err[2..4].copy_from_slice(&c.to_be_bytes());
        let mut pkt = ipv4_header(1, [10, 0, 0, 254], [10, 0, 0, 1]);
        pkt.extend(err);
        match parse_packet(&pkt, false, true) {
            Some(Parsed::Error {
                ident,
                seq,
                dst,
                payload,
                message,
            }) => {
                assert_eq!((ident, seq), (0xabcd, 3));
                assert_eq!(dst, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
                assert!(payload.is_empty());
                assert_eq!(message, "host unreachable");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_v6_reply_and_error() {
        let mut reply = build_echo_request(true, 1, 2, 3);
        reply[0] = ICMPV6_ECHO_REPLY;
        assert!(matches!(
            parse_packet(&reply, true, true),
            Some(Parsed::Reply { ident: 1, seq: 2, .. })
        ));
        let mut err = vec![ICMPV6_DEST_UNREACHABLE, 3, 0, 0, 0, 0, 0, 0];
        let mut ip = vec![0x60, 0, 0, 0, 0, 20, IPPROTO_ICMPV6, 64];
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("lit").octets());
        err.extend(ip);
        err.extend_from_slice(&build_echo_request(true, 1, 2, 3));
        match parse_packet(&err, true, false) {
            Some(Parsed::Error {
                dst, payload, message, ..
            }) => {
                assert_eq!(dst, "2001:db8::1".parse::<IpAddr>().expect("lit"));
                assert!(payload_matches(payload, 3));
                assert_eq!(message, "address unreachable");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic xorshift so failures are reproducible.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 128];
        for round in 0..200_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Steer some inputs past the first checks to reach deeper parsing.
            if round % 3 == 0 {
                buf[0] = 0x45;
                buf[9] = 1;
                buf[20] = ICMPV4_DEST_UNREACHABLE;
                buf[28] = 0x40 | (buf[28] & 0x0f);
            }
            if round % 5 == 0 {
                buf[0] = ICMPV6_DEST_UNREACHABLE;
                buf[8] = 0x60;
                buf[14] = IPPROTO_ICMPV6;
            }
            let len = (x as usize) % (buf.len() + 1);
            for (v6, raw) in [(false, false), (false, true), (true, false), (true, true)] {
                let _ = parse_packet(&buf[..len], v6, raw);
            }
        }
    }

    #[test]
    fn sequence_skips_in_flight() {
        let mut inflight = Inflight {
            next_seq: u16::MAX,
            ..Inflight::default()
        };
        let (tx, _rx) = oneshot::channel();
        inflight.waiters.insert(
            0,
            Waiter {
                addr: LO4,
                nonce: 0,
                tx,
            },
        );
        assert_eq!(inflight.alloc_seq(), Some(u16::MAX));
        assert_eq!(inflight.alloc_seq(), Some(1), "0 is in flight, must be skipped");
        for seq in 0..=u16::MAX {
            let (tx, _rx) = oneshot::channel();
            inflight.waiters.insert(
                seq,
                Waiter {
                    addr: LO4,
                    nonce: 0,
                    tx,
                },
            );
        }
        assert_eq!(inflight.alloc_seq(), None);
    }
}

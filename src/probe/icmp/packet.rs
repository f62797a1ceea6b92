//! ICMP echo packets, without I/O: building echo requests, the RFC 1071
//! checksum, and parsing what a socket delivers (echo replies, and the
//! destination-unreachable and time-exceeded errors that quote our requests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// A received packet that may concern one of our requests.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
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

pub(super) fn parse_packet(packet: &[u8], v6: bool, raw: bool) -> Option<Parsed<'_>> {
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
pub(super) fn payload_matches(payload: &[u8], nonce: u64) -> bool {
    payload.len() >= 12 && payload[..4] == MAGIC && payload[4..12] == nonce.to_be_bytes()
}

pub(super) fn build_echo_request(v6: bool, ident: u16, seq: u16, nonce: u64) -> [u8; PACKET_LEN] {
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
}

//! DNS checks: one query over UDP to the endpoint, judged by the answer code
//! and, when asked, by an address in the answer.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::config::DnsCheck;

pub struct DnsProbe {
    server: SocketAddr,
    name: Name,
    rtype: RecordType,
    rcode: String,
    address: Option<IpAddr>,
}

/// An answer code as the configuration names it.
pub fn rcode_name(c: ResponseCode) -> String {
    match c {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("{other}").to_ascii_uppercase(),
    }
}

impl DnsProbe {
    pub fn new(server: SocketAddr, d: &DnsCheck) -> Result<DnsProbe, String> {
        Ok(DnsProbe {
            server,
            name: Name::from_str(&format!("{}.", d.name)).map_err(|e| format!("dns name {:?}: {e}", d.name))?,
            rtype: if d.aaaa { RecordType::AAAA } else { RecordType::A },
            rcode: d.rcode.clone(),
            address: d.address,
        })
    }

    pub async fn run(&self) -> Result<(), String> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(self.name.clone(), self.rtype));
        let bytes = m.to_vec().map_err(|e| format!("dns query: {e}"))?;
        let bind: SocketAddr = if self.server.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let sock = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("dns socket: {e}"))?;
        sock.connect(self.server)
            .await
            .map_err(|e| format!("dns to {}: {e}", self.server))?;
        sock.send(&bytes)
            .await
            .map_err(|e| format!("dns to {}: {e}", self.server))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .await
                .map_err(|e| format!("dns from {}: {e}", self.server))?;
            let Ok(answer) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            // Only the answer to this query (the socket is connected; the id must match too).
            if answer.metadata.id != m.metadata.id {
                continue;
            }
            let code = rcode_name(answer.metadata.response_code);
            if code != self.rcode {
                return Err(format!(
                    "dns {} {}: answered {code}, expected {}",
                    self.name, self.rtype, self.rcode
                ));
            }
            if let Some(want) = self.address {
                let found = answer.answers.iter().any(|r| match &r.data {
                    RData::A(a) => IpAddr::V4(a.0) == want,
                    RData::AAAA(a) => IpAddr::V6(a.0) == want,
                    _ => false,
                });
                if !found {
                    return Err(format!(
                        "dns {} {}: the answer does not hold {want}",
                        self.name, self.rtype
                    ));
                }
            }
            return Ok(());
        }
    }
}

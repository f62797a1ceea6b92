//! The RFC 2136 provider: DNS UPDATE messages signed with TSIG (RFC 8945),
//! sent to the zone's primary over TCP. Messages are built and signed with
//! `hickory-proto`.
//!
//! - **Listing.** Signed queries for each owned name's A and AAAA sets.
//! - **Writing.** One prerequisite-free UPDATE per round. Each owned
//!   address is added (class IN) or deleted (class NONE, TTL 0), exactly. A
//!   record set cannot hold duplicates, and nothing else in the zone is
//!   touched.
//! - **Answers.** Every answer's TSIG is verified. NOERROR is done. NOTAUTH
//!   means the server refuses the key or is not the zone's primary, and
//!   REFUSED and NOTZONE that it does not take updates for the zone; these
//!   are named with the setting to fix.
//! - **Lost answers.** An answer that never comes is an unknown outcome. The
//!   next round queries the primary before anything is sent again.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record as DnsRecord, RecordType as DnsType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};

/// The provider's settings.
#[derive(Clone)]
pub struct Rfc2136Config {
    /// The zone's primary.
    pub server: SocketAddr,
    /// The zone, lower case, without the final dot.
    pub zone: String,
    pub key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// The key's secret, decoded from base64.
    pub secret: Vec<u8>,
    /// TTL of added records.
    pub ttl: u32,
    /// Deadline of one exchange (connect, send, answer).
    pub timeout: Duration,
}

impl std::fmt::Debug for Rfc2136Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rfc2136Config({} at {}, key {})",
            self.zone, self.server, self.key_name
        )
    }
}

/// The TSIG algorithms accepted, by the names BIND's `tsig-keygen` writes.
pub fn algorithm(name: &str) -> Option<TsigAlgorithm> {
    match name.to_ascii_lowercase().as_str() {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

/// A zone on its primary.
pub struct Rfc2136 {
    cfg: Rfc2136Config,
    signer: TSigner,
    zone: Name,
}

/// How one exchange went, short of an answer.
enum Failed {
    /// Nothing was sent (no connection).
    Unreachable(String),
    /// Sent, but no (usable) answer came: it may or may not have been applied.
    Lost(String),
    /// Refused for good: the key, the zone.
    Refused(String),
}

fn fqdn(name: &str) -> Result<Name, String> {
    Name::from_str(&format!("{}.", name.trim_end_matches('.'))).map_err(|e| format!("{name:?} is not a DNS name: {e}"))
}

impl Rfc2136 {
    pub fn new(cfg: Rfc2136Config) -> Result<Rfc2136, String> {
        let alg = algorithm(&cfg.algorithm).ok_or_else(|| {
            format!(
                "tsig_algorithm {:?}: expected hmac-sha256, hmac-sha384 or hmac-sha512",
                cfg.algorithm
            )
        })?;
        let signer = TSigner::new(cfg.secret.clone(), alg, fqdn(&cfg.key_name)?, 300)
            .map_err(|e| format!("tsig key {}: {e}", cfg.key_name))?;
        Ok(Rfc2136 {
            zone: fqdn(&cfg.zone)?,
            cfg,
            signer,
        })
    }

    fn what(&self) -> String {
        format!("rfc2136 zone {} at {}", self.cfg.zone, self.cfg.server)
    }

    /// What an error answer code means here, with the setting to fix.
    fn refusal(&self, code: ResponseCode, what: &str) -> String {
        let why = match code {
            ResponseCode::NotAuth => format!(
                "the server answered NOTAUTH: it does not accept TSIG key {} (dns.rfc2136.tsig_key_name, \
                 tsig_secret_file, tsig_algorithm) or is not the primary of the zone (dns.rfc2136.server)",
                self.cfg.key_name
            ),
            ResponseCode::Refused => "the server answered REFUSED: it does not serve this zone (dns.rfc2136.zone) \
                                      or does not let this key change it (its update-policy)"
                .to_string(),
            ResponseCode::NotZone => {
                "the server answered NOTZONE: a name is outside the zone (dns.rfc2136.zone)".into()
            }
            other => format!("the server answered {other}"),
        };
        format!("{}: {what}: {why}", self.what())
    }

    /// Signs `m`, sends it, and returns the verified answer.
    async fn exchange(&self, mut m: Message) -> Result<Message, Failed> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut verifier = m
            .finalize(&self.signer, now)
            .map_err(|e| Failed::Refused(format!("{}: cannot sign: {e}", self.what())))?;
        let bytes = m
            .to_vec()
            .map_err(|e| Failed::Refused(format!("{}: cannot encode: {e}", self.what())))?;
        let limit = self.cfg.timeout;
        let mut s = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(self.cfg.server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Failed::Unreachable(format!("{}: cannot connect: {e}", self.what()))),
            Err(_) => {
                return Err(Failed::Unreachable(format!(
                    "{}: no connection within {limit:?}",
                    self.what()
                )))
            }
        };
        let len =
            u16::try_from(bytes.len()).map_err(|_| Failed::Refused(format!("{}: message too long", self.what())))?;
        let io = async {
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(&bytes).await?;
            let mut n = [0u8; 2];
            s.read_exact(&mut n).await?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(n))];
            s.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(limit, io).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(Failed::Lost(format!("{}: no answer: {e}", self.what()))),
            Err(_) => return Err(Failed::Lost(format!("{}: no answer within {limit:?}", self.what()))),
        };
        let verified = match verifier.as_mut().map(|v| v.verify(&answer)) {
            Some(Ok(r)) => Message::from_vec(r.as_buffer())
                .map_err(|e| Failed::Lost(format!("{}: a malformed answer: {e}", self.what())))?,
            Some(Err(e)) => {
                // An error answer to a bad key carries no valid signature: say what it was.
                return Err(match Message::from_vec(&answer) {
                    Ok(m) if m.metadata.response_code != ResponseCode::NoError => {
                        Failed::Refused(self.refusal(m.metadata.response_code, "the answer"))
                    }
                    _ => Failed::Lost(format!("{}: the answer's TSIG does not verify: {e}", self.what())),
                });
            }
            None => Message::from_vec(&answer)
                .map_err(|e| Failed::Lost(format!("{}: a malformed answer: {e}", self.what())))?,
        };
        if verified.metadata.id != m.metadata.id {
            return Err(Failed::Lost(format!("{}: an answer to another message", self.what())));
        }
        Ok(verified)
    }

    /// The addresses of `name`'s `rtype` set, as the primary serves them.
    async fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<IpAddr>, ProviderError> {
        let qtype = match rtype {
            RecordType::A => DnsType::A,
            RecordType::AAAA => DnsType::AAAA,
        };
        let mut m = Message::query();
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(fqdn(name).map_err(ProviderError::Permanent)?, qtype));
        let answer = match self.exchange(m).await {
            Ok(a) => a,
            Err(Failed::Refused(e)) => return Err(ProviderError::Permanent(e)),
            Err(Failed::Unreachable(e) | Failed::Lost(e)) => return Err(ProviderError::Transient(e)),
        };
        match answer.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            ResponseCode::ServFail => {
                return Err(ProviderError::Transient(format!(
                    "{}: query {name}: SERVFAIL",
                    self.what()
                )));
            }
            code => return Err(ProviderError::Permanent(self.refusal(code, &format!("query {name}")))),
        }
        let want = fqdn(name).map_err(ProviderError::Permanent)?;
        Ok(answer
            .answers
            .iter()
            .filter(|r| r.name == want)
            .filter_map(|r| match &r.data {
                RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) if rtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }

    fn record(&self, r: &Record, delete: bool) -> Result<DnsRecord, String> {
        let ip: IpAddr = r
            .content
            .parse()
            .map_err(|_| format!("{} is not an address", r.content))?;
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        let mut rec = DnsRecord::from_rdata(fqdn(&r.name)?, if delete { 0 } else { self.cfg.ttl }, data);
        rec.dns_class = if delete { DNSClass::NONE } else { DNSClass::IN };
        Ok(rec)
    }
}

#[tonic::async_trait]
impl Provider for Rfc2136 {
    fn describe(&self) -> String {
        self.what()
    }

    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        let mut out = Vec::new();
        for (name, addresses) in &owned.names {
            let types: BTreeSet<RecordType> = addresses.iter().map(|a| RecordType::of(a)).collect();
            for rtype in types {
                for ip in self.query(name, rtype).await? {
                    let content = addresses
                        .iter()
                        .find(|a| a.parse::<IpAddr>().ok() == Some(ip))
                        .cloned()
                        .unwrap_or_else(|| ip.to_string());
                    let record = Record {
                        name: name.clone(),
                        rtype,
                        content,
                    };
                    if owned.owns(&record) {
                        out.push(Existing {
                            id: format!("{name}/{}/{ip}", rtype.as_str()),
                            record,
                        });
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut m = Message::query();
        m.metadata.op_code = OpCode::Update;
        m.metadata.recursion_desired = false;
        let mut zone = Query::query(self.zone.clone(), DnsType::SOA);
        zone.set_query_class(DNSClass::IN);
        m.add_zone(zone);
        for c in changes {
            let rec = match c {
                Change::Create(r) => self.record(r, false),
                Change::Delete(e) => self.record(&e.record, true),
            }
            .map_err(|e| ProviderError::Permanent(format!("{}: {e}", self.what())))?;
            m.add_update(rec);
        }
        let all = |o: Outcome| changes.iter().map(|c| (c.clone(), o.clone())).collect::<Vec<_>>();
        match self.exchange(m).await {
            Ok(a) => match a.metadata.response_code {
                ResponseCode::NoError => Ok(all(Outcome::Applied)),
                ResponseCode::ServFail => Err(ProviderError::Transient(format!("{}: update: SERVFAIL", self.what()))),
                code @ (ResponseCode::NotAuth | ResponseCode::Refused | ResponseCode::NotZone) => {
                    Err(ProviderError::Permanent(self.refusal(code, "update")))
                }
                code => Ok(all(Outcome::Failed(self.refusal(code, "update")))),
            },
            Err(Failed::Refused(e)) => Err(ProviderError::Permanent(e)),
            Err(Failed::Unreachable(e)) => Err(ProviderError::Transient(e)),
            Err(Failed::Lost(e)) => Ok(all(Outcome::Unknown(e))),
        }
    }
}

//! The words every stage shares: node ids, decisions, record types, DNS
//! records, report sequence numbers and the kinds of audit event.
//!
//! A leaf module: the decision logic, the state machine, the DNS providers
//! and the API all import from here, and it imports nothing of theirs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node id; also the id of the agent that runs on that node.
pub type NodeId = u64;

/// The cluster's decision about one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    #[default]
    Up,
    Down,
    /// Not decided yet (only when the catalog says endpoints start unknown).
    Unknown,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Up => "up",
            Decision::Down => "down",
            Decision::Unknown => "unknown",
        }
    }
}

/// Why an agent's observation does not count toward a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncounted {
    NotAVoter,
    Stale,
    Abstaining,
    /// The agent has no opinion yet (still rising or falling).
    Unknown,
}

impl Uncounted {
    pub fn as_str(&self) -> &'static str {
        match self {
            Uncounted::NotAVoter => "not a voter",
            Uncounted::Stale => "stale",
            Uncounted::Abstaining => "abstaining",
            Uncounted::Unknown => "no opinion yet",
        }
    }
}

/// Record types Vantage manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordType {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
}

impl RecordType {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
        }
    }

    /// The type of a record holding `address`: AAAA for IPv6, A otherwise.
    pub fn of(address: &str) -> RecordType {
        if address.contains(':') {
            RecordType::AAAA
        } else {
            RecordType::A
        }
    }
}

/// A record's identity: fully qualified name (lower case, no trailing dot),
/// type and content (the address).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub rtype: RecordType,
    pub content: String,
}

impl Record {
    /// The A or AAAA record of `name` holding `address`.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Record {
        let content = address.into();
        Record {
            name: name.into(),
            rtype: RecordType::of(&content),
            content,
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.rtype.as_str(), self.content)
    }
}

/// Orders one agent's reports: `boot` is the agent's start time (ms), `n`
/// counts reports since. The state machine ignores anything not newer than
/// what it already applied from that agent, so retried proposals are harmless.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seq {
    pub boot: u64,
    pub n: u64,
}

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The quorum rule changed an endpoint's decision.
    Decision,
    /// An endpoint entered or left the desired DNS record set.
    Dns,
    /// A guard held an endpoint where the plain decision would not.
    Guard,
    /// Removals froze or resumed.
    Panic,
    /// The catalog was installed or an endpoint left it.
    Catalog,
    /// A report or command was refused by the state machine.
    Refused,
    /// The leader wrote to the DNS provider.
    DnsWrite,
    /// The leader, in dry-run mode, recorded what it would write.
    DnsPlan,
    /// An operator's note or membership change, with who made it.
    Note,
    /// An operator drained or undrained an endpoint, or paused or resumed DNS writes.
    Override,
    /// Agents began (or stopped) warning about an endpoint without failing
    /// it: a certificate expiring inside `cert_expiry_warn`.
    Warning,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Dns => "dns",
            EventKind::Guard => "guard",
            EventKind::Panic => "panic",
            EventKind::Catalog => "catalog",
            EventKind::Refused => "refused",
            EventKind::DnsWrite => "dns-write",
            EventKind::DnsPlan => "dns-plan",
            EventKind::Note => "note",
            EventKind::Override => "override",
            EventKind::Warning => "warning",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log time (ms since the Unix epoch) as people read it in the history:
/// `2026-12-02T21:36:16Z`. Pure, so replicas write the same text.
pub fn at(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_serialise_as_their_names() {
        for k in [
            EventKind::Decision,
            EventKind::Dns,
            EventKind::Guard,
            EventKind::Panic,
            EventKind::Catalog,
            EventKind::Refused,
            EventKind::DnsWrite,
            EventKind::DnsPlan,
            EventKind::Note,
        ] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
    }

    #[test]
    fn record_type_follows_the_address_family() {
        assert_eq!(RecordType::of("192.0.2.1"), RecordType::A);
        assert_eq!(RecordType::of("2001:db8::1"), RecordType::AAAA);
        assert_eq!(Record::new("www.example.com", "2001:db8::1").rtype, RecordType::AAAA);
    }
}

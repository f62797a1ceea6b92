//! The replicated application state: a pure function of the committed log.
//!
//! Nothing here reads a clock, draws a random number or iterates a hash map:
//! two replicas that applied the same entries hold byte-identical state.

use serde::{Deserialize, Serialize};

use crate::types::{Command, Proposal, Reply};

/// The application state every replica holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// Largest leader-stamped time applied so far (log time never goes back).
    pub log_time_ms: u64,
    /// Number of notes applied.
    pub notes_applied: u64,
    /// Text of the last applied note.
    pub last_note: String,
    /// FNV-1a chain over every applied command, so replicas can compare state cheaply.
    pub digest: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    if h == 0 {
        h = FNV_OFFSET;
    }
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl AppState {
    /// Applies one committed proposal at log `index`.
    pub fn apply(&mut self, index: u64, p: &Proposal) -> Reply {
        // Log time is the leader's stamp, kept non-decreasing across leader changes.
        self.log_time_ms = self.log_time_ms.max(p.log_time_ms);
        let mut h = fnv(self.digest, &index.to_be_bytes());
        h = fnv(h, &p.origin.to_be_bytes());
        h = fnv(h, &p.log_time_ms.to_be_bytes());
        let detail = match &p.command {
            Command::Note { text } => {
                h = fnv(h, text.as_bytes());
                self.notes_applied += 1;
                self.last_note = text.clone();
                format!("note {} recorded", self.notes_applied)
            }
        };
        self.digest = h;
        Reply {
            log_time_ms: self.log_time_ms,
            accepted: true,
            detail,
        }
    }

    /// The digest as a fixed-width hex string.
    pub fn digest_hex(&self) -> String {
        format!("{:016x}", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(origin: u64, t: u64, text: &str) -> Proposal {
        Proposal {
            origin,
            log_time_ms: t,
            command: Command::Note { text: text.into() },
        }
    }

    #[test]
    fn log_time_never_goes_back() {
        let mut s = AppState::default();
        s.apply(1, &note(1, 1000, "a"));
        let r = s.apply(2, &note(2, 900, "b"));
        assert_eq!(r.log_time_ms, 1000);
        assert_eq!(s.log_time_ms, 1000);
    }

    #[test]
    fn same_log_gives_same_digest_and_order_matters() {
        let entries = [note(1, 10, "a"), note(2, 11, "b"), note(3, 12, "c")];
        let mut a = AppState::default();
        let mut b = AppState::default();
        for (i, e) in entries.iter().enumerate() {
            a.apply(i as u64 + 1, e);
            b.apply(i as u64 + 1, e);
        }
        assert_eq!(a, b);
        let mut c = AppState::default();
        for (i, e) in entries.iter().rev().enumerate() {
            c.apply(i as u64 + 1, e);
        }
        assert_ne!(a.digest, c.digest);
    }
}

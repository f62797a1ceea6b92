//! The guard file: what this node has promised, kept outside sled so that a
//! damaged or rolled-back database is noticed instead of trusted.
//!
//! It records the vote this node granted, the last log id it acknowledged as
//! flushed, the last purged log id and the log id of the latest persisted
//! snapshot. Each of these is written only after sled has flushed the same
//! fact (or, for a truncation, before sled drops the entries), so on a healthy
//! disk sled always holds at least what the guard says. At start-up
//! [`super::check`] compares the two; sled holding less means sled lost data.
//!
//! Layout: two 512-byte slots. A write goes to the slot the previous write did
//! not use and is synced before the call returns; each slot carries a
//! sequence number and a CRC-32, so a torn write leaves the other slot, one
//! step older, intact. Readers take the valid slot with the higher sequence.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{LogId, NodeId};

/// The guard's file name inside `data_dir`.
pub const GUARD_FILE: &str = "raft-guard";

const MAGIC: &[u8; 8] = b"VNTGRD01";
const SLOT: usize = 512;
/// magic, sequence, body length, then the body, then the CRC of all of it.
const HEADER: usize = 8 + 8 + 4;

/// What the node has promised, as the guard records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promised {
    pub vote: Option<openraft::Vote<NodeId>>,
    /// The last log id whose flush was acknowledged to Raft.
    pub last_log: Option<LogId>,
    pub last_purged: Option<LogId>,
    /// The last log id covered by the persisted snapshot.
    pub snapshot: Option<LogId>,
}

/// Why the guard file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: neither copy is intact ({detail}); the file is damaged")]
    Damaged { path: String, detail: String },
    #[error("{path}: in use by a running agent (locked); stop it first")]
    Locked { path: String },
}

/// The open guard file, locked against a second agent on the same directory.
pub struct Guard {
    path: PathBuf,
    file: File,
    seq: u64,
    promised: Promised,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("promised", &self.promised)
            .finish()
    }
}

fn encode(seq: u64, p: &Promised) -> [u8; SLOT] {
    let body = serde_json::to_vec(p).expect("the guard's fields always serialise");
    assert!(HEADER + body.len() + 4 <= SLOT, "guard body of {} bytes", body.len());
    let mut slot = [0u8; SLOT];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&seq.to_be_bytes());
    slot[16..20].copy_from_slice(&(body.len() as u32).to_be_bytes());
    slot[HEADER..HEADER + body.len()].copy_from_slice(&body);
    let end = HEADER + body.len();
    let crc = crc32fast::hash(&slot[..end]);
    slot[end..end + 4].copy_from_slice(&crc.to_be_bytes());
    slot
}

fn decode(slot: &[u8]) -> Result<(u64, Promised), String> {
    if slot.len() < HEADER + 4 {
        return Err("short".into());
    }
    if &slot[..8] != MAGIC {
        return Err("no guard header".into());
    }
    let seq = u64::from_be_bytes(slot[8..16].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(slot[16..20].try_into().expect("4 bytes")) as usize;
    let end = HEADER
        .checked_add(len)
        .filter(|e| e + 4 <= slot.len())
        .ok_or("bad length")?;
    let crc = u32::from_be_bytes(slot[end..end + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&slot[..end]) != crc {
        return Err("checksum mismatch".into());
    }
    let p = serde_json::from_slice(&slot[HEADER..end]).map_err(|e| format!("unreadable body: {e}"))?;
    Ok((seq, p))
}

/// Reads the guard in `dir` without locking it; `Ok(None)` when there is none.
#[cfg(test)]
pub fn read(dir: &Path) -> Result<Option<Promised>, GuardError> {
    let path = dir.join(GUARD_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(GuardError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    newest(&path, &bytes).map(|(_, p)| Some(p))
}

fn newest(path: &Path, bytes: &[u8]) -> Result<(u64, Promised), GuardError> {
    let slots = [
        decode(bytes.get(..SLOT).unwrap_or(bytes)),
        decode(bytes.get(SLOT..).unwrap_or(&[])),
    ];
    let best = slots.iter().filter_map(|s| s.as_ref().ok()).max_by_key(|(seq, _)| *seq);
    match best {
        Some(b) => Ok(*b),
        None => Err(GuardError::Damaged {
            path: path.display().to_string(),
            detail: slots
                .iter()
                .enumerate()
                .map(|(i, s)| format!("copy {}: {}", i + 1, s.as_ref().err().map(String::as_str).unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

impl Guard {
    /// Opens the guard in `dir`, creating an empty one if `create` and there
    /// is none, and takes the directory's lock.
    pub fn open(dir: &Path, create: bool) -> Result<Option<Guard>, GuardError> {
        let path = dir.join(GUARD_FILE);
        let io_err = |source| GuardError::Io {
            path: path.display().to_string(),
            source,
        };
        let exists = path.exists();
        if !exists && !create {
            return Ok(None);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(GuardError::Locked {
                    path: path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let mut guard = Guard {
            path: path.clone(),
            file,
            seq: 0,
            promised: Promised::default(),
        };
        if exists {
            let bytes = std::fs::read(&path).map_err(io_err)?;
            let (seq, promised) = newest(&path, &bytes)?;
            guard.seq = seq;
            guard.promised = promised;
        } else {
            // Both slots, so the file never changes size again (a full disk
            // cannot fail a later write), and the new name made durable.
            guard.write(Promised::default()).map_err(io_err)?;
            guard.write(Promised::default()).map_err(io_err)?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        }
        Ok(Some(guard))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the guard records now.
    pub fn promised(&self) -> Promised {
        self.promised
    }

    /// Records `p` durably (synced) before returning.
    pub fn write(&mut self, p: Promised) -> io::Result<()> {
        let seq = self.seq + 1;
        let slot = encode(seq, &p);
        let offset = if seq.is_multiple_of(2) { 0 } else { SLOT as u64 };
        self.file.write_all_at(&slot, offset)?;
        self.file.sync_data()?;
        self.seq = seq;
        self.promised = p;
        Ok(())
    }

    /// Applies `f` to the promise and records it, unless nothing changes.
    pub fn update(&mut self, f: impl FnOnce(&mut Promised)) -> io::Result<()> {
        let mut p = self.promised;
        f(&mut p);
        if p == self.promised {
            return Ok(());
        }
        self.write(p)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Vote};

    use super::*;

    fn promised(term: u64, index: u64) -> Promised {
        Promised {
            vote: Some(Vote::new_committed(term, 1)),
            last_log: Some(LogId::new(CommittedLeaderId::new(term, 1), index)),
            last_purged: None,
            snapshot: None,
        }
    }

    #[test]
    fn the_newest_intact_copy_wins_and_a_torn_write_falls_back_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Guard::open(dir.path(), true).unwrap().unwrap();
        g.write(promised(3, 10)).unwrap();
        g.write(promised(3, 11)).unwrap();
        drop(g);
        assert_eq!(read(dir.path()).unwrap(), Some(promised(3, 11)));
        // Tear the newer copy: the older one is read.
        let path = dir.path().join(GUARD_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let newer = if bytes[8..16] > bytes[SLOT + 8..SLOT + 16] {
            0
        } else {
            SLOT
        };
        bytes[newer + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(promised(3, 10)));
        // Both torn: an error naming the file.
        bytes[(SLOT - newer) + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains(GUARD_FILE) && e.contains("checksum"), "{e}");
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _g = Guard::open(dir.path(), true).unwrap().unwrap();
        let e = Guard::open(dir.path(), false).unwrap_err();
        assert!(matches!(e, GuardError::Locked { .. }), "{e}");
    }
}

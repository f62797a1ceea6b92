//! Opening a data directory only when it holds what this node promised.
//!
//! Every way a directory can be damaged ends in one of two places: sled opens
//! and reads back a state at least as new as the guard file's record (then the
//! node starts with exactly what it acknowledged), or [`Damage`] names the
//! directory, the file and what is inconsistent, and the node does not start.
//! Nothing here panics: sled's own panics on a damaged file are caught and
//! reported as damage of that file.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use openraft::RaftLogId;
use serde::Serialize;

use super::guard::{Guard, GuardError, Promised, GUARD_FILE};
use crate::types::{Entry, LogId, NodeId, SnapshotMeta};

/// sled's directory inside `data_dir`.
pub const SLED_DIR: &str = "sled";

/// The recovery every refusal points to.
pub const RECOVERY: &str = "recover with `vantage data recover --config FILE --addr PEER`: it moves the directory \
     aside (kept for inspection), removes this node from the cluster and joins it back as a learner that copies \
     the log from the others";

/// A data directory that cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[error("data directory {dir}: {file}: {problem}; {RECOVERY}")]
pub struct Damage {
    pub dir: String,
    pub file: String,
    pub problem: String,
}

/// Why a directory was not opened.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Damaged(#[from] Damage),
    #[error("data directory {dir}: in use by a running agent ({path} is locked); stop it first")]
    InUse { dir: String, path: String },
    #[error("data directory {dir}: {message}")]
    Io { dir: String, message: String },
}

/// What a consistent directory holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub fresh: bool,
    pub vote_term: Option<u64>,
    pub voted_for: Option<NodeId>,
    pub vote_committed: bool,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub last_term: Option<u64>,
    pub purged_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub entries: u64,
    pub guard_last_index: Option<u64>,
    pub guard_vote_term: Option<u64>,
    /// Written by a version without the guard file: the agent adopts it,
    /// recording what sled holds now, on its next start.
    pub unguarded: bool,
}

/// sled's record that this database has a guard file beside it.
const GUARDED: &[u8] = b"guarded";

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into an error and keeping the panic's default
/// report (a backtrace on standard error) out of the agent's output.
pub fn without_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info)
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

struct Dir<'a> {
    root: &'a Path,
}

impl Dir<'_> {
    fn damage(&self, file: &str, problem: impl Into<String>) -> Damage {
        Damage {
            dir: self.root.display().to_string(),
            file: self.root.join(file).display().to_string(),
            problem: problem.into(),
        }
    }

    fn db(&self, problem: impl Into<String>) -> Damage {
        self.damage("sled/db", problem)
    }
}

/// Checks sled's `conf` file: sled itself only warns about a bad checksum and
/// treats a missing or short file as a new database.
fn check_conf(d: &Dir<'_>, sled: &Path) -> Result<(), Damage> {
    let conf = sled.join("conf");
    let db = sled.join("db");
    let db_len = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let bytes = match std::fs::read(&conf) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if db_len > 0 {
                return Err(d.damage("sled/conf", "missing, while sled/db holds data"));
            }
            return Ok(());
        }
        Err(e) => return Err(d.damage("sled/conf", format!("unreadable: {e}"))),
    };
    if bytes.len() <= 8 {
        return Err(d.damage("sled/conf", format!("{} bytes: truncated", bytes.len())));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32fast::hash(body) != stored {
        return Err(d.damage("sled/conf", "checksum mismatch: the file is damaged"));
    }
    Ok(())
}

/// Everything sled holds, read back whole.
struct Held {
    vote: Option<openraft::Vote<NodeId>>,
    purged: Option<LogId>,
    first: Option<LogId>,
    last: Option<LogId>,
    entries: u64,
    snapshot: Option<SnapshotMeta>,
    guarded: bool,
}

fn read_held(d: &Dir<'_>, db: &sled::Db) -> Result<Held, Damage> {
    let tree = |name: &str| {
        db.open_tree(name)
            .map_err(|e| d.db(format!("cannot open tree {name}: {e}")))
    };
    let meta = tree("meta")?;
    let log = tree("log")?;
    let snaps = tree("snapshot")?;
    fn json<T: serde::de::DeserializeOwned>(
        d: &Dir<'_>,
        t: &sled::Tree,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, Damage> {
        match t.get(key) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| d.db(format!("{what} unreadable: {e}"))),
            Err(e) => Err(d.db(format!("{what}: {e}"))),
        }
    }
    let vote = json(d, &meta, b"vote", "the stored vote")?;
    let purged: Option<Option<LogId>> = json(d, &meta, b"last_purged", "the last purged log id")?;
    let purged = purged.flatten();
    let mut first: Option<LogId> = None;
    let mut last: Option<LogId> = None;
    let mut entries = 0u64;
    for item in log.iter() {
        let (k, v) = item.map_err(|e| d.db(format!("reading the log: {e}")))?;
        let key = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| d.db(format!("a log key of {} bytes", k.len())))?;
        let entry: Entry = serde_json::from_slice(&v).map_err(|e| d.db(format!("log entry {key} unreadable: {e}")))?;
        let id = *entry.get_log_id();
        if id.index != key {
            return Err(d.db(format!("log entry stored at {key} says it is entry {}", id.index)));
        }
        if let Some(prev) = last {
            if id.index != prev.index + 1 {
                return Err(d.db(format!("the log jumps from entry {} to {}", prev.index, id.index)));
            }
        }
        first.get_or_insert(id);
        last = Some(id);
        entries += 1;
    }
    let snapshot: Option<SnapshotMeta> = json(d, &snaps, b"meta", "the snapshot's meta")?;
    if snapshot.is_some() {
        let data = snaps
            .get(b"data")
            .map_err(|e| d.db(format!("the snapshot: {e}")))?
            .ok_or_else(|| d.db("the snapshot's meta is there but its data is not"))?;
        serde_json::from_slice::<serde_json::Value>(&data)
            .map_err(|e| d.db(format!("the snapshot's data unreadable: {e}")))?;
    }
    let guarded = meta
        .contains_key(GUARDED)
        .map_err(|e| d.db(format!("reading the guard marker: {e}")))?;
    Ok(Held {
        vote,
        purged,
        first,
        last,
        entries,
        snapshot,
        guarded,
    })
}

/// An index for a message: `entry 7`, or `nothing`.
fn show(i: Option<u64>) -> String {
    i.map(|i| format!("entry {i}")).unwrap_or_else(|| "nothing".into())
}

fn index(l: &Option<LogId>) -> Option<u64> {
    l.map(|l| l.index)
}

/// The last log id sled knows of: the last entry, or the purge point when
/// nothing follows it.
fn last_of(held: &Held) -> Option<LogId> {
    match (held.last, held.purged) {
        (Some(l), Some(p)) if p.index > l.index => Some(p),
        (l, p) => l.or(p),
    }
}

/// Compares what sled holds with what the guard says was promised.
fn compare(d: &Dir<'_>, held: &Held, p: &Promised) -> Result<(), Damage> {
    let g = GUARD_FILE;
    if let Some(promised) = p.vote {
        match held.vote {
            None => {
                return Err(d.db(format!(
                    "no vote stored, but {g} records a vote in term {}",
                    promised.leader_id.term
                )))
            }
            Some(v)
                if !matches!(
                    v.partial_cmp(&promised),
                    Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                ) =>
            {
                return Err(d.db(format!(
                    "the stored vote (term {}, for node {}) is older than the one {g} records (term {}, for node {}): \
                     sled lost a write",
                    v.leader_id.term, v.leader_id.node_id, promised.leader_id.term, promised.leader_id.node_id
                )))
            }
            Some(_) => {}
        }
    }
    if index(&held.purged) < index(&p.last_purged) {
        return Err(d.db(format!(
            "the log was purged up to {} but {g} records a purge up to {}",
            show(index(&held.purged)),
            show(index(&p.last_purged))
        )));
    }
    if let Some(first) = held.first {
        let at_most = held.purged.map(|l| l.index + 1).unwrap_or(0);
        if first.index > at_most {
            return Err(d.db(format!(
                "the log starts at entry {} but only entries up to {} were purged: entries are missing",
                first.index,
                show(index(&held.purged))
            )));
        }
    }
    let held_last = last_of(held);
    if let Some(promised) = p.last_log {
        if index(&held_last) < Some(promised.index) {
            return Err(d.db(format!(
                "the log ends at {} but {g} records entry {} (term {}) as flushed and acknowledged: \
                 sled lost acknowledged entries",
                show(index(&held_last)),
                promised.index,
                promised.leader_id.term,
            )));
        }
    }
    let snap = held.snapshot.as_ref().and_then(|m| m.last_log_id);
    if index(&snap) < index(&p.snapshot) {
        return Err(d.db(format!(
            "the snapshot covers up to {} but {g} records one up to {}",
            show(index(&snap)),
            show(index(&p.snapshot))
        )));
    }
    if held.purged.is_some() && index(&snap) < index(&held.purged) {
        return Err(d.db(format!(
            "the log was purged up to {} but the snapshot covers only up to {}: entries are gone",
            show(index(&held.purged)),
            show(index(&snap))
        )));
    }
    Ok(())
}

/// The acknowledged entry must be stored with the term it was acknowledged in.
fn check_entry(d: &Dir<'_>, db: &sled::Db, p: &Promised, purged: Option<LogId>) -> Result<(), Damage> {
    let Some(promised) = p.last_log else { return Ok(()) };
    if Some(promised.index) <= index(&purged) {
        return Ok(());
    }
    let log = db.open_tree("log").map_err(|e| d.db(e.to_string()))?;
    let stored = log
        .get(promised.index.to_be_bytes())
        .map_err(|e| d.db(format!("reading entry {}: {e}", promised.index)))?
        .ok_or_else(|| {
            d.db(format!(
                "entry {} acknowledged in {GUARD_FILE} is missing",
                promised.index
            ))
        })?;
    let entry: Entry =
        serde_json::from_slice(&stored).map_err(|e| d.db(format!("log entry {} unreadable: {e}", promised.index)))?;
    if *entry.get_log_id() != promised {
        return Err(d.db(format!(
            "entry {} is from term {} but {GUARD_FILE} acknowledged it in term {}",
            promised.index,
            entry.get_log_id().leader_id.term,
            promised.leader_id.term
        )));
    }
    Ok(())
}

fn facts(held: &Held, p: &Promised) -> Facts {
    Facts {
        fresh: held.entries == 0 && held.vote.is_none() && held.snapshot.is_none(),
        vote_term: held.vote.map(|v| v.leader_id.term),
        voted_for: held.vote.map(|v| v.leader_id.node_id),
        vote_committed: held.vote.map(|v| v.committed).unwrap_or(false),
        first_index: index(&held.first),
        last_index: index(&last_of(held)),
        last_term: last_of(held).map(|l| l.leader_id.term),
        purged_index: index(&held.purged),
        snapshot_index: held.snapshot.as_ref().and_then(|m| index(&m.last_log_id)),
        entries: held.entries,
        guard_last_index: index(&p.last_log),
        guard_vote_term: p.vote.map(|v| v.leader_id.term),
        unguarded: false,
    }
}

fn open_sled(d: &Dir<'_>, path: &Path) -> Result<sled::Db, Damage> {
    let opened = without_panic(|| {
        sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(16 * 1024 * 1024)
            // Every write is flushed explicitly before it is acknowledged;
            // sled's own timer would only wake the process twice a second.
            .flush_every_ms(None)
            .open()
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(d.db(format!("sled cannot open it: {e}"))),
        Err(panic) => Err(d.db(format!("sled failed reading it ({panic}): the file is damaged"))),
    }
}

/// Reads and compares an opened database; a panic inside sled is damage.
/// Reads and compares an opened database, and says what sled holds as a
/// promise (for a directory an earlier version wrote, adopted as it is).
fn verify(d: &Dir<'_>, db: &sled::Db, promised: &Promised, had_guard: bool) -> Result<(Facts, Promised), Damage> {
    let held = without_panic(|| read_held(d, db))
        .map_err(|panic| d.db(format!("sled failed reading it ({panic}): the file is damaged")))??;
    let holds = Promised {
        vote: held.vote,
        last_log: last_of(&held),
        last_purged: held.purged,
        snapshot: held.snapshot.as_ref().and_then(|m| m.last_log_id),
    };
    if !had_guard {
        let mut f = facts(&held, promised);
        if !f.fresh && !held.guarded {
            // Written before the guard existed: nothing to compare against.
            f.unguarded = true;
            return Ok((f, holds));
        }
        if !f.fresh {
            return Err(d.damage(
                GUARD_FILE,
                format!(
                    "missing, while sled holds a log (last entry {}, vote term {}); without it a rolled-back \
                     database cannot be told from a good one",
                    show(f.last_index),
                    show(f.vote_term)
                ),
            ));
        }
    }
    compare(d, &held, promised)?;
    without_panic(|| check_entry(d, db, promised, held.purged))
        .map_err(|panic| d.db(format!("sled failed reading it ({panic})")))??;
    Ok((facts(&held, promised), holds))
}

/// Opens `dir` for an agent: the database and its guard, or why not.
pub fn open_checked(dir: &Path) -> Result<(sled::Db, Guard, Facts), CheckError> {
    let d = Dir { root: dir };
    let sled_path = dir.join(SLED_DIR);
    let io = |message: String| CheckError::Io {
        dir: dir.display().to_string(),
        message,
    };
    let sled_exists = sled_path.exists();
    let guard = match Guard::open(dir, !sled_exists) {
        Ok(g) => g,
        Err(e) => return Err(guard_error(&d, e)),
    };
    if sled_exists {
        check_conf(&d, &sled_path)?;
    } else if let Some(g) = &guard {
        if g.promised() != Promised::default() {
            return Err(d
                .damage(
                    SLED_DIR,
                    format!(
                        "missing, while {GUARD_FILE} records promises (last acknowledged {})",
                        show(index(&g.promised().last_log))
                    ),
                )
                .into());
        }
    }
    let db = open_sled(&d, &sled_path)?;
    let promised = guard.as_ref().map(|g| g.promised()).unwrap_or_default();
    let (facts, holds) = verify(&d, &db, &promised, guard.is_some())?;
    let guard = match guard {
        Some(g) => g,
        // An empty database, or one an earlier version wrote: guard it from now on.
        None => {
            let mut g = Guard::open(dir, true)
                .map_err(|e| guard_error(&d, e))?
                .ok_or_else(|| io("the guard file could not be created".into()))?;
            if facts.unguarded {
                tracing::warn!(
                    "{}: no {GUARD_FILE} beside a database written by an earlier version; adopting it as it is \
                     (vote term {}, last entry {})",
                    dir.display(),
                    show(facts.vote_term),
                    show(facts.last_index)
                );
                g.write(holds).map_err(|e| io(format!("{}: {e}", g.path().display())))?;
            }
            g
        }
    };
    // From now on a missing guard file is damage, not an old version.
    let marked = db.open_tree("meta").and_then(|m| {
        if !m.contains_key(GUARDED)? {
            m.insert(GUARDED, b"1".as_slice())?;
            db.flush()?;
        }
        Ok(())
    });
    marked.map_err(|e| io(format!("{}: cannot mark sled as guarded: {e}", sled_path.display())))?;
    Ok((db, guard, facts))
}

fn guard_error(d: &Dir<'_>, e: GuardError) -> CheckError {
    match e {
        GuardError::Locked { path } => CheckError::InUse {
            dir: d.root.display().to_string(),
            path,
        },
        GuardError::Damaged { detail, .. } => d.damage(GUARD_FILE, detail).into(),
        GuardError::Io { path, source } => CheckError::Io {
            dir: d.root.display().to_string(),
            message: format!("{path}: {source}"),
        },
    }
}

/// Verifies a stopped node's directory without changing it: sled is opened
/// on a copy, since opening repairs a torn tail in place.
pub fn check_stopped(dir: &Path) -> Result<Facts, CheckError> {
    let d = Dir { root: dir };
    let io = |message: String| CheckError::Io {
        dir: dir.display().to_string(),
        message,
    };
    if !dir.is_dir() {
        return Err(io("no such directory".into()));
    }
    // Holding the lock proves no agent runs on it; the guard is read, not written.
    let guard = Guard::open(dir, false).map_err(|e| guard_error(&d, e))?;
    let sled_path = dir.join(SLED_DIR);
    if !sled_path.exists() {
        return match guard.map(|g| g.promised()).filter(|p| *p != Promised::default()) {
            Some(p) => Err(d
                .damage(
                    SLED_DIR,
                    format!(
                        "missing, while {GUARD_FILE} records promises (last acknowledged {})",
                        show(index(&p.last_log))
                    ),
                )
                .into()),
            None => Ok(Facts {
                fresh: true,
                ..Facts::default()
            }),
        };
    }
    check_conf(&d, &sled_path)?;
    let scratch =
        Scratch(std::env::temp_dir().join(format!("vantage-check-{}-{}", std::process::id(), fastrand::u64(..))));
    copy_dir(&sled_path, &scratch.0).map_err(|e| io(format!("cannot copy {}: {e}", sled_path.display())))?;
    let db = open_sled(&d, &scratch.0)?;
    let promised = guard.as_ref().map(|g| g.promised()).unwrap_or_default();
    let facts = verify(&d, &db, &promised, guard.is_some());
    drop(db);
    Ok(facts?.0)
}

/// A scratch copy, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    use super::*;

    /// A directory as the version before the guard file left it: sled alone.
    fn earlier_version(dir: &Path, entries: u64) {
        let db = sled::open(dir.join(SLED_DIR)).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(
            b"vote",
            serde_json::to_vec(&Vote::<NodeId>::new_committed(4, 2)).unwrap(),
        )
        .unwrap();
        let log = db.open_tree("log").unwrap();
        for i in 0..entries {
            let e = Entry {
                log_id: LogId::new(CommittedLeaderId::new(4, 2), i),
                payload: EntryPayload::Blank,
            };
            log.insert(i.to_be_bytes(), serde_json::to_vec(&e).unwrap()).unwrap();
        }
        db.flush().unwrap();
    }

    #[test]
    fn a_directory_from_before_the_guard_is_adopted_once_and_then_guarded() {
        let dir = tempfile::tempdir().unwrap();
        earlier_version(dir.path(), 5);
        let f = check_stopped(dir.path()).unwrap();
        assert!(f.unguarded && f.last_index == Some(4), "{f:?}");
        // The agent adopts it: the guard records what sled holds.
        let (db, guard, f) = open_checked(dir.path()).unwrap();
        assert!(f.unguarded);
        assert_eq!(guard.promised().last_log.map(|l| l.index), Some(4));
        assert_eq!(guard.promised().vote.map(|v| v.leader_id.term), Some(4));
        drop((db, guard));
        let f = check_stopped(dir.path()).unwrap();
        assert!(!f.unguarded && f.guard_last_index == Some(4), "{f:?}");
        // Now a missing guard is damage, not an old version.
        std::fs::remove_file(dir.path().join(GUARD_FILE)).unwrap();
        let e = check_stopped(dir.path()).unwrap_err().to_string();
        assert!(e.contains(GUARD_FILE) && e.contains("missing"), "{e}");
        assert!(open_checked(dir.path()).is_err());
    }

    #[test]
    fn a_log_shorter_than_the_guard_says_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        earlier_version(dir.path(), 5);
        let (db, mut guard, _) = open_checked(dir.path()).unwrap();
        // The guard acknowledged entry 9, sled holds up to 4: a rolled-back sled.
        guard
            .update(|p| p.last_log = Some(LogId::new(CommittedLeaderId::new(4, 2), 9)))
            .unwrap();
        drop((db, guard));
        let e = open_checked(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("sled/db") && e.contains("entry 9") && e.contains("vantage data recover"),
            "{e}"
        );
    }
}

//! The Raft log, vote and committed pointer in sled trees.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogId, RaftLogReader, StorageIOError, Vote};

use super::{Promised, SharedGuard};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Log storage: entries keyed by big-endian index so sled's order is log order.
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    db: sled::Db,
    /// What has been promised, recorded outside sled.
    guard: SharedGuard,
    /// Last committed index seen, for status answers (0 = none).
    committed: Arc<AtomicU64>,
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

impl LogStore {
    pub(super) fn new(log: sled::Tree, meta: sled::Tree, db: sled::Db, guard: SharedGuard) -> Self {
        LogStore {
            log,
            meta,
            db,
            guard,
            committed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A shared view of the last committed index (0 before anything commits).
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, StorageError> {
        match self.meta.get(k).map_err(read_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(read_err),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, k: &[u8], v: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(v).map_err(io_err)?;
        self.meta.insert(k, bytes).map_err(io_err)?;
        Ok(())
    }

    /// Records a promise in the guard file (synced before it returns).
    fn promise(&self, f: impl FnOnce(&mut Promised)) -> std::io::Result<()> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner()).update(f)
    }

    async fn flush(&self) -> Result<(), StorageError> {
        super::flush(&self.db).await.map_err(io_err)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, v) = item.map_err(read_err)?;
            let entry: Entry = serde_json::from_slice(&v).map_err(read_err)?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => {
                let entry: Entry = serde_json::from_slice(&v).map_err(read_err)?;
                Some(*entry.get_log_id())
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    // To ensure correctness: the vote must be on disk before this returns,
    // otherwise a restarted node could vote twice in one term.
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.meta
            .insert(VOTE, bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        super::flush(&self.db)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        let vote = *vote;
        self.promise(|p| p.vote = Some(vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE)
    }

    // The committed pointer may lag on disk: losing it only means re-applying
    // entries from the last snapshot, so it is not flushed here.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed)?;
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c: Option<Option<LogId>> = self.get_meta(COMMITTED)?;
        let c = c.flatten();
        if let Some(c) = c {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(c)
    }

    // To ensure correctness: entries are readable when this returns, and the
    // callback fires only after they are flushed to disk.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(io_err)?;
            batch.insert(&key(entry.get_log_id().index), bytes);
            last = Some(*entry.get_log_id());
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        // sled first, then the guard: the guard never claims more than sled holds.
        let flushed = super::flush(&self.db)
            .await
            .map(|_| ())
            .map_err(std::io::Error::other)
            .and_then(|()| match last {
                Some(l) => self.promise(|p| p.last_log = Some(l)),
                None => Ok(()),
            });
        callback.log_io_completed(flushed);
        Ok(())
    }

    // To ensure correctness: no hole is left; everything from `log_id` on goes.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The guard first this time: it must stop claiming the entries before
        // sled drops them, or a crash in between would look like lost data.
        let before = match log_id.index.checked_sub(1) {
            Some(prev) => match self.log.get(key(prev)).map_err(read_err)? {
                Some(v) => Some(*serde_json::from_slice::<Entry>(&v).map_err(read_err)?.get_log_id()),
                None => self.get_meta::<Option<LogId>>(LAST_PURGED)?.flatten(),
            },
            None => None,
        };
        self.promise(|p| {
            if p.last_log.is_some_and(|l| l.index >= log_id.index) {
                p.last_log = before;
            }
        })
        .map_err(io_err)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(read_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        self.flush().await
    }

    // To ensure correctness: `last_purged` is recorded before the entries go,
    // so a crash in between never leaves a hole at the front of the log.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(LAST_PURGED, &Some(log_id))?;
        self.flush().await?;
        self.promise(|p| p.last_purged = Some(log_id)).map_err(io_err)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=key(log_id.index)) {
            let (k, _) = item.map_err(read_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        Ok(())
    }
}

//! The state machine store: applies committed entries to [`AppState`], builds
//! snapshots and persists the latest one in sled.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::{SharedGuard, SharedSm};
use crate::state::AppState;
use crate::types::{Entry, LogId, NodeId, Reply, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SNAP_META: &[u8] = b"meta";
const SNAP_DATA: &[u8] = b"data";

/// Everything the state machine holds; serialised whole into a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub app: AppState,
}

/// Called after every applied entry (and every installed snapshot) with its
/// log index, the voters in force and the state as of that index: the
/// simulator checks its safety rules there, at every step of every replica.
pub type ApplyWatch = Arc<dyn Fn(u64, &BTreeSet<NodeId>, &AppState) + Send + Sync>;

/// The openraft state machine; cheap to clone (shares the data and the tree).
#[derive(Clone)]
pub struct StateMachineStore {
    data: SharedSm,
    snapshots: sled::Tree,
    db: sled::Db,
    /// Records the persisted snapshot's log id outside sled.
    guard: SharedGuard,
    /// Distinguishes snapshots built at the same log id.
    built: Arc<AtomicU64>,
    /// Notified after every applied batch (history watchers wait on it).
    applied: Arc<tokio::sync::Notify>,
    watch: Option<ApplyWatch>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// The snapshot body: the application state. The applied log id and the
/// membership travel in openraft's snapshot meta.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    app: AppState,
}

impl StateMachineStore {
    /// Creates the store and restores the state from the persisted snapshot, if any.
    pub(super) fn new(snapshots: sled::Tree, db: sled::Db, guard: SharedGuard) -> Result<Self, String> {
        let store = StateMachineStore {
            data: Arc::new(tokio::sync::RwLock::new(SmData::default())),
            snapshots,
            db,
            guard,
            built: Arc::new(AtomicU64::new(0)),
            applied: Arc::new(tokio::sync::Notify::new()),
            watch: None,
        };
        if let Some((meta, bytes)) = store.load_snapshot().map_err(|e| e.to_string())? {
            let restored = Self::restore(&meta, &bytes).map_err(|e| e.to_string())?;
            *store.data.try_write().map_err(|e| e.to_string())? = restored;
        }
        Ok(store)
    }

    /// Calls `watch` after every entry applied from now on.
    pub fn set_watch(&mut self, watch: ApplyWatch) {
        self.watch = Some(watch);
    }

    /// The state shared with the query path.
    pub fn shared(&self) -> SharedSm {
        self.data.clone()
    }

    /// The state as of the persisted snapshot (None before the first one).
    pub fn persisted_state(&self) -> Result<Option<SmData>, String> {
        match self.load_snapshot().map_err(|e| e.to_string())? {
            Some((meta, bytes)) => Self::restore(&meta, &bytes).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Notified after every applied batch of entries.
    pub fn applied_notify(&self) -> Arc<tokio::sync::Notify> {
        self.applied.clone()
    }

    fn restore(meta: &SnapshotMeta, bytes: &[u8]) -> Result<SmData, serde_json::Error> {
        let body: SnapshotBody = serde_json::from_slice(bytes)?;
        Ok(SmData {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            app: body.app,
        })
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let read = |e: &dyn std::error::Error| -> StorageError {
            StorageIOError::read_snapshot(None, openraft::AnyError::error(e.to_string())).into()
        };
        let meta = self.snapshots.get(SNAP_META).map_err(|e| read(&e))?;
        let data = self.snapshots.get(SNAP_DATA).map_err(|e| read(&e))?;
        match (meta, data) {
            (Some(m), Some(d)) => {
                let meta: SnapshotMeta = serde_json::from_slice(&m).map_err(|e| read(&e))?;
                Ok(Some((meta, d.to_vec())))
            }
            _ => Ok(None),
        }
    }

    // Snapshot meta and data are written in one batch and flushed, so the log
    // may be purged behind this snapshot as soon as openraft learns of it.
    async fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAP_META, serde_json::to_vec(meta).map_err(snap_err)?);
        batch.insert(SNAP_DATA, data);
        self.snapshots.apply_batch(batch).map_err(snap_err)?;
        super::flush(&self.db).await.map_err(snap_err)?;
        let covered = meta.last_log_id;
        self.guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(|p| p.snapshot = covered)
            .map_err(snap_err)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let sm = self.data.read().await;
            let data = serde_json::to_vec(&SnapshotBody { app: sm.app.clone() }).map_err(snap_err)?;
            let n = self.built.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match sm.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, n),
                None => format!("0-0-{n}"),
            };
            let meta = SnapshotMeta {
                last_log_id: sm.last_applied,
                last_membership: sm.last_membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.save_snapshot(&meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let sm = self.data.read().await;
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = self.data.write().await;
        let mut replies = Vec::new();
        let mut voters: BTreeSet<NodeId> = sm.last_membership.membership().voter_ids().collect();
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply {
                    log_time_ms: sm.app.log_time_ms,
                    accepted: true,
                    detail: "blank".into(),
                },
                EntryPayload::Normal(p) => sm.app.apply(entry.log_id.index, &p, &voters),
                EntryPayload::Membership(m) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    voters = sm.last_membership.membership().voter_ids().collect();
                    sm.app.membership_changed(entry.log_id.index, &voters);
                    Reply {
                        log_time_ms: sm.app.log_time_ms,
                        accepted: true,
                        detail: "membership".into(),
                    }
                }
            };
            if let Some(w) = &self.watch {
                w(entry.log_id.index, &voters, &sm.app);
            }
            replies.push(reply);
        }
        drop(sm);
        // Wake watchers of the audit history.
        self.applied.notify_waiters();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let restored = Self::restore(meta, &bytes).map_err(sm_err)?;
        self.save_snapshot(meta, &bytes).await?;
        if let Some(w) = &self.watch {
            let voters = restored.last_membership.membership().voter_ids().collect();
            w(meta.last_log_id.map_or(0, |l| l.index), &voters, &restored.app);
        }
        *self.data.write().await = restored;
        self.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.load_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

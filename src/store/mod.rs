//! Durable storage on sled: the Raft log, the vote, the committed pointer and
//! the latest snapshot, all in one database under `data_dir`.
//!
//! The state machine itself lives in memory and is rebuilt at start-up from the
//! latest persisted snapshot; openraft then re-applies the committed entries
//! that follow it (the log and `committed` are durable), so a restarted node
//! needs no manual step.

mod log;
mod sm;

use std::path::Path;
use std::sync::Arc;

pub use log::LogStore;
pub use sm::{SmData, StateMachineStore};

/// Errors opening the database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the sled database in {dir}: {source}")]
    Sled { dir: String, source: sled::Error },
    #[error("the snapshot stored in {dir} is unreadable: {message}")]
    Snapshot { dir: String, message: String },
}

/// Opens (or creates) the database in `dir` and returns the two halves openraft needs.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let path = dir.join("sled");
    let db = sled::Config::new()
        .path(&path)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .map_err(|source| OpenError::Sled {
            dir: path.display().to_string(),
            source,
        })?;
    open_db(db, &path.display().to_string())
}

/// Builds the stores on an already-open database (tests use a temporary one).
pub fn open_db(db: sled::Db, label: &str) -> Result<(LogStore, StateMachineStore), OpenError> {
    let sled_err = |source| OpenError::Sled {
        dir: label.to_string(),
        source,
    };
    let log = LogStore::new(
        db.open_tree("log").map_err(sled_err)?,
        db.open_tree("meta").map_err(sled_err)?,
        db.clone(),
    );
    let sm = StateMachineStore::new(db.open_tree("snapshot").map_err(sled_err)?, db).map_err(|message| {
        OpenError::Snapshot {
            dir: label.to_string(),
            message,
        }
    })?;
    Ok((log, sm))
}

/// The in-memory state machine shared between openraft and the query path.
pub type SharedSm = Arc<tokio::sync::RwLock<SmData>>;

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::types::{StorageError, TypeConfig};

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let (log, sm) = open(dir.path()).expect("open store");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn sled_store_passes_openraft_suite() -> Result<(), StorageError> {
        Suite::test_all(SledBuilder)?;
        Ok(())
    }
}

//! The in-memory provider: holds records in a list, for tests and demos.

use super::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record};

/// An in-memory provider, for tests and demos.
#[derive(Default)]
pub struct Memory {
    records: std::sync::Mutex<Vec<Existing>>,
    next: std::sync::atomic::AtomicU64,
}

impl Memory {
    /// Every record held, owned or not.
    pub fn records(&self) -> Vec<Existing> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Adds a record directly (e.g. one Vantage does not own).
    pub fn seed(&self, r: Record) {
        let id = format!("m{}", self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        if let Ok(mut all) = self.records.lock() {
            all.push(Existing { record: r, id });
        }
    }
}

#[tonic::async_trait]
impl Provider for Memory {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        Ok(self.records().into_iter().filter(|e| owned.owns(&e.record)).collect())
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        let mut out = Vec::new();
        for c in changes {
            match c {
                Change::Delete(e) => {
                    if let Ok(mut all) = self.records.lock() {
                        all.retain(|x| x.id != e.id);
                    }
                }
                Change::Create(r) => self.seed(r.clone()),
            }
            out.push((c.clone(), Outcome::Applied));
        }
        Ok(out)
    }
}

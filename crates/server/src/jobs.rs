//! Runs submitted with `wait: false`: their state and results, kept in
//! memory for a while and bounded in count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use evald_proto::v1::{JobState, RunStatus};
use tokio::sync::watch;

struct Entry {
    status: watch::Sender<RunStatus>,
    /// When the run finished (for expiry).
    done_at: Option<Instant>,
}

/// The store. The std mutex is held only for map operations, never across
/// an await.
pub struct JobStore {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
    ttl: Duration,
}

/// Why a run could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many runs are stored; retry later")]
pub struct StoreFull;

impl JobStore {
    pub fn new(capacity: usize, ttl: Duration) -> JobStore {
        JobStore { entries: Mutex::default(), capacity, ttl }
    }

    /// Adds a queued run; finished runs past their time to live (then the
    /// oldest finished ones) make room.
    pub fn insert(&self, id: &str) -> Result<(), StoreFull> {
        let mut entries = self.entries.lock().map_err(|_| StoreFull)?;
        let now = Instant::now();
        entries.retain(|_, e| e.done_at.is_none_or(|t| now.duration_since(t) < self.ttl));
        if entries.len() >= self.capacity {
            let oldest = entries.iter().filter_map(|(k, e)| e.done_at.map(|t| (t, k.clone()))).min().map(|(_, k)| k);
            match oldest {
                Some(k) => {
                    entries.remove(&k);
                }
                None => return Err(StoreFull),
            }
        }
        let status = RunStatus { id: id.to_owned(), state: JobState::Queued, result: None, error: None };
        entries.insert(id.to_owned(), Entry { status: watch::channel(status).0, done_at: None });
        Ok(())
    }

    /// Updates a run; `done` states start its time to live.
    pub fn update(&self, status: RunStatus) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if let Some(e) = entries.get_mut(&status.id) {
            if status.state == JobState::Done {
                e.done_at = Some(Instant::now());
            }
            e.status.send_replace(status);
        }
    }

    pub fn get(&self, id: &str) -> Option<RunStatus> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(id)?;
        if e.done_at.is_some_and(|t| t.elapsed() >= self.ttl) {
            return None;
        }
        let status = e.status.borrow().clone();
        Some(status)
    }

    /// Waits until the run is done (None for an unknown id).
    pub async fn wait_done(&self, id: &str) -> Option<RunStatus> {
        let mut rx = self.entries.lock().ok()?.get(id)?.status.subscribe();
        let status = rx.wait_for(|s| s.state == JobState::Done).await.ok()?.clone();
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(id: &str) -> RunStatus {
        RunStatus { id: id.into(), state: JobState::Done, result: None, error: None }
    }

    #[tokio::test]
    async fn bounded_and_awaitable() {
        let s = JobStore::new(2, Duration::from_secs(60));
        s.insert("a").expect("room");
        s.insert("b").expect("room");
        assert_eq!(s.insert("c"), Err(StoreFull), "nothing finished to evict");
        s.update(done("a"));
        assert_eq!(s.wait_done("a").await.map(|r| r.state), Some(JobState::Done));
        s.insert("c").expect("evicts a");
        assert!(s.get("a").is_none());
        assert_eq!(s.get("b").map(|r| r.state), Some(JobState::Queued));
    }
}

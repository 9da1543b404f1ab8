//! The in-memory cache of large objects: one sealed memfd per object.
//!
//! Rooms: `file_state` (one object's state machine, and the fetch and OPEN
//! that drive it), `budget` (the memory cap, what is released to make room,
//! `/proc` references, operator eviction), `expiry` (`expireTimeSec`),
//! `prefetch` (the whole model in order, a bounded window at a time),
//! `status` (STATUS rows), `errno` (what a failed OPEN reports).
//!
//! Design decision: one [`Cache`] value holds every large object of the
//! mirror, the fetcher that fills them and the memory budget; each room adds
//! its part of `Cache`'s methods, so callers see one type.

mod budget;
mod errno;
mod expiry;
mod file_state;
mod prefetch;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::metrics::Metrics;
use crate::object_source::ObjectFetcher;
use budget::Budget;

pub use budget::{EvictOutcome, MEMORY_RETRY_INTERVAL};
pub use errno::{errno_for, fetch_error, OpenError};
pub use file_state::{FetchedFrom, FileState, LargeFile};
pub use prefetch::{PREFETCH_WINDOW_FACTOR, PROGRESS_LOG_INTERVAL};
pub use status::FileStatus;

/// The cache of all large objects of the mirror.
pub struct Cache {
    files: Vec<Arc<LargeFile>>,
    by_path: HashMap<String, Arc<LargeFile>>,
    fetcher: Arc<dyn ObjectFetcher>,
    budget: Budget,
    metrics: Arc<Metrics>,
    expire: Duration,
    prefetch_window: u64,
    fetch_done: Notify,
}

impl Cache {
    /// `files` in prefetch order; `memory_limit` in bytes (already resolved).
    pub fn new(
        files: Vec<Arc<LargeFile>>,
        fetcher: Arc<dyn ObjectFetcher>,
        memory_limit: u64,
        prefetch_window: u64,
        expire: Duration,
        metrics: Arc<Metrics>,
    ) -> Cache {
        let by_path = files
            .iter()
            .map(|f| (f.rel_path.clone(), f.clone()))
            .collect();
        Cache {
            files,
            by_path,
            fetcher,
            budget: Budget::new(memory_limit),
            metrics,
            expire,
            prefetch_window: prefetch_window.max(1),
            fetch_done: Notify::new(),
        }
    }

    pub fn files(&self) -> &[Arc<LargeFile>] {
        &self.files
    }

    pub fn get(&self, rel_path: &str) -> Option<&Arc<LargeFile>> {
        self.by_path.get(rel_path)
    }

    pub fn memory_limit(&self) -> u64 {
        self.budget.limit
    }

    pub fn reserved_bytes(&self) -> u64 {
        self.budget.reserved()
    }

    /// Bytes of Ready files held in memory.
    pub fn resident_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| matches!(f.lock().state, FileState::Ready { .. }))
            .map(|f| f.meta.size)
            .sum()
    }
}

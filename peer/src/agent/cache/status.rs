//! STATUS rows: one snapshot per large object (state, progress, memory
//! waits, hand-overs, last use, time to expiry, bytes by source).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::file_state::{FetchedFrom, FileState, LargeFile};
use super::Cache;
use crate::agent::protocol::Source;

/// A snapshot of one file for STATUS.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileStatus {
    pub path: String,
    pub key: String,
    pub size: u64,
    pub state: &'static str,
    pub bytes_done: u64,
    pub source: Option<Source>,
    pub waiting_for_memory: bool,
    /// OPEN answers still handing this file's fd over (it cannot be released
    /// until they finish).
    pub handoffs: usize,
    pub error: Option<String>,
    /// RFC 3339 time of the last OPEN.
    pub last_use: Option<String>,
    pub seconds_to_expiry: Option<u64>,
    /// Bytes of the last completed fetch by source (absent before one).
    pub fetched_from: Option<FetchedFrom>,
}

impl Cache {
    /// STATUS rows.
    pub fn status(&self, now: Instant) -> Vec<FileStatus> {
        self.files
            .iter()
            .map(|f| {
                let inner = f.lock();
                let (bytes_done, source, error) = match &inner.state {
                    FileState::Pending => (0, None, None),
                    FileState::Fetching { progress } => (
                        progress.bytes_done.load(Ordering::Relaxed).min(f.meta.size),
                        None,
                        None,
                    ),
                    FileState::Ready { source, .. } => (f.meta.size, Some(*source), None),
                    FileState::Failed { error, .. } => (0, None, Some(error.clone())),
                };
                let handoffs = match &inner.state {
                    FileState::Ready { memfd, .. } => Arc::strong_count(memfd) - 1,
                    _ => 0,
                };
                let seconds_to_expiry = match inner.state {
                    FileState::Ready { .. } => LargeFile::last_use(&inner)
                        .map(|t| (t + self.expire).saturating_duration_since(now).as_secs()),
                    _ => None,
                };
                FileStatus {
                    path: f.rel_path.clone(),
                    key: f.meta.key.clone(),
                    size: f.meta.size,
                    state: inner.state.name(),
                    bytes_done,
                    source,
                    waiting_for_memory: inner.waiting_for_memory,
                    handoffs,
                    error,
                    last_use: inner.last_open_wall.map(|t| {
                        chrono::DateTime::<chrono::Utc>::from(t)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    }),
                    seconds_to_expiry,
                    fetched_from: inner.fetched_from.clone(),
                }
            })
            .collect()
    }
}

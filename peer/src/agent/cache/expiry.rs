//! Expiry (`expireTimeSec`): a Ready file whose last use (its last OPEN, or
//! its arrival if never opened) is older than `expire` and that no process
//! references is released; a later OPEN fetches it again.

use std::sync::Arc;
use std::time::Instant;

use super::file_state::{FileState, LargeFile};
use super::Cache;
use crate::agent::metrics::Metrics;
use crate::agent::procscan;

impl Cache {
    /// Releases every expired, unreferenced Ready file; returns how many.
    pub fn expire_idle(&self, now: Instant) -> usize {
        let Some(cutoff) = now.checked_sub(self.expire) else {
            return 0;
        };
        let expired: Vec<&Arc<LargeFile>> = self
            .files
            .iter()
            .filter(|f| {
                let inner = f.lock();
                matches!(inner.state, FileState::Ready { .. })
                    && LargeFile::last_use(&inner).is_some_and(|t| t <= cutoff)
            })
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let referenced = procscan::referenced_memfd_inodes(&self.own_fds());
        let mut n = 0;
        for f in expired {
            if self.release_if_unreferenced(f, &referenced, Some(cutoff)) {
                n += 1;
                Metrics::add(&self.metrics.expirations, 1);
                tracing::info!(key = %f.meta.key, bytes = f.meta.size, "expired from memory");
            }
        }
        n
    }
}

//! The memory cap: reservations, who waits for memory in which order, and
//! which Ready files are released to make room.
//!
//! Design decisions:
//! - Memory is *reserved* for the whole object before its memfd is created, so
//!   the cap holds even while parts are in flight.
//! - When a reservation does not fit, Ready files that no process references
//!   are released, oldest use first. A prefetch may only release files that
//!   have been opened since they became ready (otherwise prefetch would evict
//!   its own not-yet-used work); an OPEN may also release never-opened files
//!   (latest arrival first, as prefetch order puts those last in need).
//! - Waiting OPENs go before waiting prefetches, which take memory in the
//!   order they were queued (one ticket per started fetch).
//! - "Referenced" means: an fd or a mapping of the memfd's inode in some
//!   process other than the cache's own descriptors (see `procscan`), or a
//!   handle held by a connection that is still handing the fd over.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::errno::OpenError;
use super::file_state::{FileState, LargeFile};
use super::Cache;
use crate::agent::metrics::Metrics;
use crate::agent::procscan;

/// How often a reservation that cannot be satisfied re-checks (processes may
/// close their memfds without telling the agent).
pub const MEMORY_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// What an eviction request did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictOutcome {
    /// Its memory was released; a later OPEN fetches it again.
    Evicted,
    /// A process holds an fd or mapping of it (or an OPEN is handing it over).
    InUse,
    /// A fetch is running; it was left alone.
    Fetching,
    /// It was not in memory.
    NotResident,
}

#[derive(Debug, Default)]
struct BudgetState {
    reserved: u64,
    open_waiters: usize,
    /// Tickets of fetches waiting for memory, in the order they were started;
    /// without an OPEN waiting, only the oldest may take memory (FIFO).
    queue: BTreeSet<u64>,
    next_ticket: u64,
}

/// Reserved bytes against the limit.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) limit: u64,
    state: Mutex<BudgetState>,
    /// Woken when memory is released or the queue moves.
    pub(super) released: Notify,
}

impl Budget {
    pub(super) fn new(limit: u64) -> Budget {
        Budget {
            limit,
            state: Mutex::default(),
            released: Notify::new(),
        }
    }

    /// Queues a fetch for memory, in call order.
    pub(super) fn ticket(&self) -> u64 {
        let mut st = self.lock();
        let t = st.next_ticket;
        st.next_ticket += 1;
        st.queue.insert(t);
        t
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn reserved(&self) -> u64 {
        self.lock().reserved
    }

    pub(super) fn release(&self, bytes: u64) {
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(bytes);
        drop(st);
        self.released.notify_waiters();
    }

    /// Takes `ticket` out of the queue once its reservation is settled.
    pub(super) fn leave_queue(&self, ticket: u64) {
        {
            let mut st = self.lock();
            st.queue.remove(&ticket);
        }
        // The next queued fetch may now be first in line.
        self.released.notify_waiters();
    }
}

impl Cache {
    /// Waits until `file.meta.size` bytes fit under the limit (see module note).
    pub(super) async fn reserve(&self, file: &LargeFile, ticket: u64) -> Result<(), OpenError> {
        let size = file.meta.size;
        if size > self.budget.limit {
            return Err(OpenError {
                errno: libc::ENOMEM,
                message: format!(
                    "{} is {size} bytes, more than the cache memory limit of {} bytes",
                    file.meta.key, self.budget.limit
                ),
            });
        }
        let mut counted_open = false;
        let result = loop {
            let released = self.budget.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let for_open = file.open_waiters.load(Ordering::SeqCst) > 0;
            let need = {
                let mut st = self.budget.lock();
                if for_open && !counted_open {
                    st.open_waiters += 1;
                    counted_open = true;
                }
                let first_in_line = st.queue.first() == Some(&ticket);
                let my_turn = for_open || (st.open_waiters == 0 && first_in_line);
                if my_turn && st.reserved + size <= self.budget.limit {
                    st.reserved += size;
                    self.metrics
                        .peak_reserved_bytes
                        .fetch_max(st.reserved, Ordering::Relaxed);
                    break Ok(());
                }
                my_turn.then(|| st.reserved + size - self.budget.limit)
            };
            if let Some(need) = need {
                if self.release_unreferenced(need, for_open) > 0 {
                    continue;
                }
            }
            tokio::select! {
                _ = &mut released => {}
                _ = tokio::time::sleep(MEMORY_RETRY_INTERVAL) => {}
            }
        };
        if counted_open {
            self.budget.lock().open_waiters -= 1;
            self.budget.released.notify_waiters();
        }
        result
    }

    /// Descriptors of every Ready memfd (excluded from the `/proc` scan).
    pub(super) fn own_fds(&self) -> HashSet<i32> {
        self.files
            .iter()
            .filter_map(|f| match &f.lock().state {
                FileState::Ready { memfd, .. } => Some(memfd.as_raw_fd()),
                _ => None,
            })
            .collect()
    }

    /// Releases unreferenced Ready files, oldest use first, until `need` bytes
    /// are freed. `include_unopened` also allows files never opened since they
    /// arrived. Returns bytes freed.
    fn release_unreferenced(&self, need: u64, include_unopened: bool) -> u64 {
        // (never opened, last use, file)
        let mut candidates: Vec<(bool, Instant, Arc<LargeFile>)> = self
            .files
            .iter()
            .filter_map(|f| {
                let inner = f.lock();
                match &inner.state {
                    FileState::Ready { memfd, .. }
                        if Arc::strong_count(memfd) == 1
                            && (include_unopened || inner.opened_since_ready) =>
                    {
                        Some((
                            !inner.opened_since_ready,
                            LargeFile::last_use(&inner)?,
                            f.clone(),
                        ))
                    }
                    _ => None,
                }
            })
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        // Opened files first, oldest use first; then never-opened prefetched
        // files, most recently arrived first (they are needed last).
        candidates.sort_by(|a, b| match (a.0, b.0) {
            (false, false) => a.1.cmp(&b.1),
            (true, true) => b.1.cmp(&a.1),
            (x, y) => x.cmp(&y),
        });
        let referenced = procscan::referenced_memfd_inodes(&self.own_fds());
        let mut freed = 0;
        for (_, _, f) in candidates {
            if freed >= need {
                break;
            }
            if self.release_if_unreferenced(&f, &referenced, None) {
                freed += f.meta.size;
                Metrics::add(&self.metrics.evictions, 1);
                tracing::info!(key = %f.meta.key, bytes = f.meta.size, "released from memory to make room");
            }
        }
        freed
    }

    /// Releases `f` if it is Ready, not referenced and (when `older_than` is
    /// given) unused since then.
    pub(super) fn release_if_unreferenced(
        &self,
        f: &LargeFile,
        referenced: &HashSet<u64>,
        older_than: Option<Instant>,
    ) -> bool {
        let mut inner = f.lock();
        let FileState::Ready { memfd, .. } = &inner.state else {
            return false;
        };
        if Arc::strong_count(memfd) > 1 || referenced.contains(&memfd.ino()) {
            return false;
        }
        if let Some(cutoff) = older_than {
            if LargeFile::last_use(&inner).is_some_and(|t| t > cutoff) {
                return false;
            }
        }
        inner.state = FileState::Pending;
        inner.ready_at = None;
        inner.opened_since_ready = false;
        drop(inner);
        f.notify();
        self.budget.release(f.meta.size);
        true
    }

    /// Releases each of `files` that is in memory and referenced by no process
    /// (an operator's `ossc evict`); files in use or still fetching are left
    /// alone and reported as such.
    pub fn evict(&self, files: &[Arc<LargeFile>]) -> Vec<(Arc<LargeFile>, EvictOutcome)> {
        let referenced = procscan::referenced_memfd_inodes(&self.own_fds());
        files
            .iter()
            .map(|f| {
                // Only the state's name: a cloned state would hold another
                // handle on the memfd and make it look in use.
                let state = f.state().name();
                let outcome = match state {
                    "ready" => {
                        if self.release_if_unreferenced(f, &referenced, None) {
                            tracing::info!(key = %f.meta.key, bytes = f.meta.size, "evicted on request");
                            EvictOutcome::Evicted
                        } else {
                            EvictOutcome::InUse
                        }
                    }
                    "fetching" => EvictOutcome::Fetching,
                    _ => EvictOutcome::NotResident,
                };
                (f.clone(), outcome)
            })
            .collect()
    }
}

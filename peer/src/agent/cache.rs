//! The in-memory cache of large objects: one sealed memfd per object.
//!
//! Design decisions:
//! - Per-file state machine (after Dragonfly's piece/task states):
//!   `Pending -> Fetching{progress} -> Ready{memfd, source} | Failed{error}`,
//!   published through a `watch` channel so any number of OPENs wait on one
//!   fetch (one fetch per file however many processes ask).
//! - Memory is *reserved* for the whole object before its memfd is created, so
//!   the cap holds even while parts are in flight. When a reservation does not
//!   fit, Ready files that no process references are released, oldest use
//!   first. A prefetch may only release files that have been opened since they
//!   became ready (otherwise prefetch would evict its own not-yet-used work);
//!   an OPEN may also release never-opened files (latest arrival first, as
//!   prefetch order puts those last in need), and waiting OPENs go before
//!   waiting prefetches, which take memory in the order they were queued.
//! - "Referenced" means: an fd or a mapping of the memfd's inode in some
//!   process other than the cache's own descriptors (see `procscan`), or a
//!   handle held by a connection that is still handing the fd over.
//! - Expiry: a Ready file whose last use (its last OPEN, or its arrival if never
//!   opened) is older than `expire` and that is unreferenced is released; a
//!   later OPEN fetches it again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ossc_core::fetch::FetchProgress;
use ossc_core::object_client::{ObjectClientError, ObjectMeta};
use tokio::sync::{watch, Notify};

use super::metrics::Metrics;
use super::procscan;
use super::protocol::Source;
use crate::object_source::memfd::Memfd;
use crate::object_source::{ChunkTarget, FetchOutcome, ObjectFetcher};

/// How often a reservation that cannot be satisfied re-checks (processes may
/// close their memfds without telling the agent).
pub const MEMORY_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Prefetch keeps at most this many times the engine's in-flight bytes
/// (`max_in_flight × part_size`) queued in started fetches, so an OPEN of a file
/// further down the order never waits behind the whole model.
pub const PREFETCH_WINDOW_FACTOR: u64 = 2;

/// Interval of prefetch progress log lines.
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Bytes per gigabyte for the progress log (decimal, like link rates).
const BYTES_PER_GB: f64 = 1e9;

/// Lifecycle of one large object.
#[derive(Debug, Clone)]
pub enum FileState {
    Pending,
    Fetching { progress: Arc<FetchProgress> },
    Ready { memfd: Arc<Memfd>, source: Source },
    Failed { errno: i32, error: String },
}

impl FileState {
    pub fn name(&self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Fetching { .. } => "fetching",
            FileState::Ready { .. } => "ready",
            FileState::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug)]
struct FileInner {
    state: FileState,
    waiting_for_memory: bool,
    ready_at: Option<Instant>,
    last_open: Option<Instant>,
    last_open_wall: Option<SystemTime>,
    opened_since_ready: bool,
    /// Where the last completed fetch got its bytes (store, peers, by peer).
    fetched_from: Option<FetchedFrom>,
}

/// Bytes of one object's last fetch by source, for STATUS and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FetchedFrom {
    /// From the object store (refetches included).
    pub store: u64,
    /// From peers, verified and kept.
    pub peer: u64,
    /// `peer`, per peer id.
    pub by_peer: std::collections::BTreeMap<String, u64>,
    /// What verified the object end to end (`crc64`, `sha256`, `md5-etag`,
    /// ...); `null`: unverified, the store declared nothing to check.
    pub verified_by: Option<&'static str>,
}

/// One large object and its cache state.
#[derive(Debug)]
pub struct LargeFile {
    pub rel_path: String,
    pub meta: ObjectMeta,
    inner: Mutex<FileInner>,
    changed: watch::Sender<u64>,
    open_waiters: AtomicUsize,
}

impl LargeFile {
    pub fn new(rel_path: String, meta: ObjectMeta) -> LargeFile {
        LargeFile {
            rel_path,
            meta,
            inner: Mutex::new(FileInner {
                state: FileState::Pending,
                waiting_for_memory: false,
                ready_at: None,
                last_open: None,
                last_open_wall: None,
                opened_since_ready: false,
                fetched_from: None,
            }),
            changed: watch::channel(0).0,
            open_waiters: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FileInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn state(&self) -> FileState {
        self.lock().state.clone()
    }

    /// What verified the last completed fetch: `Some(None)` when it was
    /// unverified, `None` before any fetch completed.
    pub fn verified_by(&self) -> Option<Option<&'static str>> {
        self.lock().fetched_from.as_ref().map(|f| f.verified_by)
    }

    /// Last use: the last OPEN, or arrival in memory if never opened since.
    fn last_use(inner: &FileInner) -> Option<Instant> {
        match (inner.last_open, inner.ready_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

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

#[derive(Debug, Default)]
struct BudgetState {
    reserved: u64,
    open_waiters: usize,
    /// Tickets of fetches waiting for memory, in the order they were started;
    /// without an OPEN waiting, only the oldest may take memory (FIFO).
    queue: std::collections::BTreeSet<u64>,
    next_ticket: u64,
}

/// Reserved bytes against the limit.
#[derive(Debug)]
struct Budget {
    limit: u64,
    state: Mutex<BudgetState>,
    released: Notify,
}

impl Budget {
    /// Queues a fetch for memory, in call order.
    fn ticket(&self) -> u64 {
        let mut st = self.lock();
        let t = st.next_ticket;
        st.next_ticket += 1;
        st.queue.insert(t);
        t
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, bytes: u64) {
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(bytes);
        drop(st);
        self.released.notify_waiters();
    }
}

/// An error an OPEN reports: errno and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    pub errno: i32,
    pub message: String,
}

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
            budget: Budget {
                limit: memory_limit,
                state: Mutex::default(),
                released: Notify::new(),
            },
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
        self.budget.lock().reserved
    }

    /// Bytes of Ready files held in memory.
    pub fn resident_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| matches!(f.lock().state, FileState::Ready { .. }))
            .map(|f| f.meta.size)
            .sum()
    }

    /// Starts fetching `file` if it is Pending or Failed; true if started.
    pub fn start_fetch(self: &Arc<Self>, file: &Arc<LargeFile>) -> bool {
        let progress = Arc::new(FetchProgress::default());
        {
            let mut inner = file.lock();
            if !matches!(inner.state, FileState::Pending | FileState::Failed { .. }) {
                return false;
            }
            inner.state = FileState::Fetching {
                progress: progress.clone(),
            };
            inner.waiting_for_memory = true;
        }
        let ticket = self.budget.ticket();
        file.notify();
        let cache = self.clone();
        let file = file.clone();
        tokio::spawn(async move { cache.fetch_task(file, progress, ticket).await });
        true
    }

    async fn fetch_task(
        self: Arc<Self>,
        file: Arc<LargeFile>,
        progress: Arc<FetchProgress>,
        ticket: u64,
    ) {
        let started = Instant::now();
        let result = self.fetch_into_memory(&file, progress, ticket).await;
        {
            let mut inner = file.lock();
            inner.waiting_for_memory = false;
            match result {
                Ok((memfd, outcome)) => {
                    Metrics::add(&self.metrics.bytes_store, outcome.bytes_store);
                    Metrics::add(&self.metrics.bytes_peer, outcome.bytes_peer);
                    let secs = started.elapsed().as_secs_f64();
                    tracing::debug!(
                        key = %file.meta.key,
                        bytes = file.meta.size,
                        bytes_store = outcome.bytes_store,
                        bytes_peer = outcome.bytes_peer,
                        secs,
                        "object in memory"
                    );
                    let source = if outcome.mostly_from_peers() {
                        Source::Peer
                    } else {
                        Source::Store
                    };
                    inner.state = FileState::Ready { memfd, source };
                    inner.ready_at = Some(Instant::now());
                    inner.opened_since_ready = false;
                    inner.fetched_from = Some(FetchedFrom {
                        store: outcome.bytes_store,
                        peer: outcome.bytes_peer,
                        by_peer: outcome.by_peer.clone(),
                        verified_by: outcome.verified_by,
                    });
                    if outcome.verified_by.is_none() {
                        tracing::warn!(key = %file.meta.key, "the store declares no checksum for this object: it is served unverified");
                    }
                }
                Err(e) => {
                    Metrics::add(&self.metrics.fetch_errors, 1);
                    tracing::error!(key = %file.meta.key, errno = e.errno, error = %e.message, "fetch failed");
                    inner.state = FileState::Failed {
                        errno: e.errno,
                        error: e.message,
                    };
                }
            }
        }
        file.notify();
        self.fetch_done.notify_waiters();
    }

    async fn fetch_into_memory(
        &self,
        file: &LargeFile,
        progress: Arc<FetchProgress>,
        ticket: u64,
    ) -> Result<(Arc<Memfd>, FetchOutcome), OpenError> {
        let reserved = self.reserve(file, ticket).await;
        {
            let mut st = self.budget.lock();
            st.queue.remove(&ticket);
        }
        // The next queued fetch may now be first in line.
        self.budget.released.notify_waiters();
        reserved?;
        file.lock().waiting_for_memory = false;
        let size = file.meta.size;
        let result = async {
            let memfd = Arc::new(Memfd::create(&file.meta.key, size).map_err(|e| OpenError {
                errno: e.raw_os_error().unwrap_or(libc::ENOMEM),
                message: format!("creating memory file for {}: {e}", file.meta.key),
            })?);
            Metrics::add(&self.metrics.fetches, 1);
            let target: Arc<dyn ChunkTarget> = memfd.clone();
            let outcome = self
                .fetcher
                .fetch(&file.meta, target, progress)
                .await
                .map_err(|e| fetch_error(&file.meta.key, &e))?;
            memfd.seal().map_err(|e| OpenError {
                errno: libc::EIO,
                message: format!("sealing memory file for {}: {e}", file.meta.key),
            })?;
            Ok((memfd, outcome))
        }
        .await;
        if result.is_err() {
            self.budget.release(size);
        }
        result
    }

    /// Waits until `file.meta.size` bytes fit under the limit (see module note).
    async fn reserve(&self, file: &LargeFile, ticket: u64) -> Result<(), OpenError> {
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
    fn own_fds(&self) -> HashSet<i32> {
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
    fn release_if_unreferenced(
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

    /// Waits until `file` is not `Fetching` (a fetch that has not started yet
    /// counts as settled) and returns its state.
    pub async fn settled(&self, file: &LargeFile) -> FileState {
        let mut rx = file.changed.subscribe();
        loop {
            let state = file.state();
            if !matches!(state, FileState::Fetching { .. }) {
                return state;
            }
            if rx.changed().await.is_err() {
                return file.state();
            }
        }
    }

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

    /// Waits until `file` is in memory (starting or restarting its fetch as
    /// needed) and returns its memfd. `Source::Cache` when it was already
    /// resident on arrival.
    pub async fn open(
        self: &Arc<Self>,
        file: &Arc<LargeFile>,
    ) -> Result<(Arc<Memfd>, Source), OpenError> {
        struct Waiting<'a>(&'a LargeFile);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.open_waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
        file.open_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(file);
        // Wake a prefetch reservation of this file so it gains OPEN priority.
        self.budget.released.notify_waiters();
        let mut rx = file.changed.subscribe();
        let mut first_look = true;
        let mut attempted = false;
        loop {
            {
                let mut inner = file.lock();
                match &inner.state {
                    FileState::Ready { memfd, source } => {
                        let memfd = memfd.clone();
                        let source = if first_look { Source::Cache } else { *source };
                        inner.last_open = Some(Instant::now());
                        inner.last_open_wall = Some(SystemTime::now());
                        inner.opened_since_ready = true;
                        return Ok((memfd, source));
                    }
                    FileState::Failed { errno, error } if attempted => {
                        return Err(OpenError {
                            errno: *errno,
                            message: error.clone(),
                        });
                    }
                    FileState::Fetching { .. } => attempted = true,
                    FileState::Pending | FileState::Failed { .. } => {
                        drop(inner);
                        self.start_fetch(file);
                        attempted = true;
                        first_look = false;
                        continue;
                    }
                }
            }
            first_look = false;
            if rx.changed().await.is_err() {
                return Err(OpenError {
                    errno: libc::EIO,
                    message: "agent shutting down".into(),
                });
            }
        }
    }

    /// Fetches `files` in order, keeping at most the prefetch window in flight,
    /// and logs progress. Returns when every file has left `Fetching`.
    pub async fn prefetch(self: &Arc<Self>, files: Vec<Arc<LargeFile>>) {
        let total: u64 = files.iter().map(|f| f.meta.size).sum();
        if files.is_empty() {
            return;
        }
        tracing::info!(files = files.len(), bytes = total, "prefetch started");
        let started = Instant::now();
        let mut ticker = tokio::time::interval(PROGRESS_LOG_INTERVAL);
        ticker.tick().await;
        let mut in_flight: Vec<Arc<LargeFile>> = Vec::new();
        let mut queue = files.iter();
        let mut next = queue.next();
        loop {
            in_flight.retain(|f| matches!(f.lock().state, FileState::Fetching { .. }));
            while let Some(f) = next {
                let outstanding: u64 = in_flight.iter().map(|f| f.meta.size).sum();
                if !in_flight.is_empty() && outstanding + f.meta.size > self.prefetch_window {
                    break;
                }
                if self.start_fetch(f) {
                    in_flight.push(f.clone());
                }
                next = queue.next();
            }
            if in_flight.is_empty() {
                if next.is_none() {
                    break;
                }
                continue;
            }
            let done = self.fetch_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            // Re-check after enabling, so a completion in between is not missed.
            if in_flight
                .iter()
                .any(|f| !matches!(f.lock().state, FileState::Fetching { .. }))
            {
                continue;
            }
            tokio::select! {
                _ = &mut done => {}
                _ = ticker.tick() => log_progress(&files, total, started),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let ready = files
            .iter()
            .filter(|f| matches!(f.lock().state, FileState::Ready { .. }))
            .count();
        tracing::info!(
            files = files.len(),
            ready,
            bytes = total,
            secs = format!("{secs:.2}"),
            gb_per_s = format!("{:.2}", total as f64 / BYTES_PER_GB / secs.max(1e-9)),
            "prefetch finished"
        );
    }

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

fn log_progress(files: &[Arc<LargeFile>], total: u64, started: Instant) {
    let done: u64 = files
        .iter()
        .map(|f| match &f.lock().state {
            FileState::Ready { .. } => f.meta.size,
            FileState::Fetching { progress } => {
                progress.bytes_done.load(Ordering::Relaxed).min(f.meta.size)
            }
            _ => 0,
        })
        .sum();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(
        bytes = done,
        total,
        percent = format!("{:.1}", done as f64 * 100.0 / total.max(1) as f64),
        gb_per_s = format!("{:.2}", done as f64 / BYTES_PER_GB / secs),
        "prefetch progress"
    );
}

/// Maps a store error to the errno an OPEN reports.
pub fn fetch_error(key: &str, e: &ObjectClientError) -> OpenError {
    OpenError {
        errno: errno_for(e),
        message: format!("fetching {key}: {e}"),
    }
}

/// EACCES for permission problems, ENOENT for missing keys/buckets, EIO else
/// (including CRC mismatches and transport failures).
pub fn errno_for(e: &ObjectClientError) -> i32 {
    use ossc_core::object_client::ServiceErrorKind;
    match e.service_kind() {
        Some(ServiceErrorKind::AccessDenied | ServiceErrorKind::InvalidCredentials) => libc::EACCES,
        Some(ServiceErrorKind::NotFound) => libc::ENOENT,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_core::object_client::{ClientError, ServiceError};

    fn service(code: &str, status: u16) -> ObjectClientError {
        ObjectClientError::Service(ServiceError {
            status,
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
            string_to_sign: None,
        })
    }

    #[test]
    fn store_errors_map_to_errno() {
        assert_eq!(errno_for(&service("AccessDenied", 403)), libc::EACCES);
        assert_eq!(
            errno_for(&service("SignatureDoesNotMatch", 403)),
            libc::EACCES
        );
        assert_eq!(errno_for(&service("NoSuchBucket", 404)), libc::ENOENT);
        assert_eq!(errno_for(&service("SlowDown", 503)), libc::EIO);
        let crc = ClientError::Crc64Mismatch {
            key: "k".into(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(errno_for(&crc.into()), libc::EIO);
    }

    #[test]
    fn last_use_is_the_later_of_open_and_arrival() {
        let f = LargeFile::new(
            "a".into(),
            ObjectMeta {
                key: "a".into(),
                size: 1,
                etag: String::new(),
                last_modified: None,
                crc64: None,
                checksums: Default::default(),
            },
        );
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut inner = f.lock();
        assert_eq!(LargeFile::last_use(&inner), None);
        inner.ready_at = Some(t1);
        inner.last_open = Some(t0);
        assert_eq!(LargeFile::last_use(&inner), Some(t1));
        inner.last_open = Some(t1 + Duration::from_secs(1));
        assert_eq!(LargeFile::last_use(&inner), inner.last_open);
    }
}

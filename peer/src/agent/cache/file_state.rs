//! One large object's lifecycle and the cache's transitions of it.
//!
//! Design decisions (after Dragonfly's piece/task states):
//! - `Pending -> Fetching{progress} -> Ready{memfd, source} | Failed{error}`;
//!   a release puts a Ready file back to `Pending`, and a Failed file is
//!   fetched again by the next OPEN.
//! - Every change is published through a `watch` channel, so any number of
//!   OPENs wait on one fetch (one fetch per file however many processes ask).
//! - An OPEN counts itself in `open_waiters` while it waits, which gives the
//!   file's memory reservation OPEN priority (see `budget`).
//! - A Ready state's `Arc<Memfd>` is a reference too: a connection still
//!   handing the fd over holds a clone, so the file cannot be released under it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use ossc_core::fetch::FetchProgress;
use ossc_core::object_client::ObjectMeta;
use tokio::sync::watch;

use super::errno::{fetch_error, OpenError};
use super::Cache;
use crate::agent::metrics::Metrics;
use crate::agent::protocol::Source;
use crate::object_source::memfd::Memfd;
use crate::object_source::{ChunkTarget, FetchOutcome};

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

/// A file's mutable part, behind [`LargeFile`]'s lock.
#[derive(Debug)]
pub(super) struct FileInner {
    pub(super) state: FileState,
    pub(super) waiting_for_memory: bool,
    pub(super) ready_at: Option<Instant>,
    pub(super) last_open: Option<Instant>,
    pub(super) last_open_wall: Option<SystemTime>,
    pub(super) opened_since_ready: bool,
    /// Where the last completed fetch got its bytes (store, peers, by peer).
    pub(super) fetched_from: Option<FetchedFrom>,
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
    /// OPENs waiting for this file (they give its reservation priority).
    pub(super) open_waiters: AtomicUsize,
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

    pub(super) fn lock(&self) -> MutexGuard<'_, FileInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn notify(&self) {
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
    pub(super) fn last_use(inner: &FileInner) -> Option<Instant> {
        match (inner.last_open, inner.ready_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Cache {
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
        self.budget.leave_queue(ticket);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

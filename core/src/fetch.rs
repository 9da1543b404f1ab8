//! The parallel fetch engine: one object, many ranged GETs, straight into the
//! caller's memory, verified end to end.
//!
//! Design decisions:
//! - **One engine-wide in-flight limit, strictly FIFO across objects.** Parts
//!   take permits from one `tokio::sync::Semaphore` (which is fair), and a
//!   fair `tokio::sync::Mutex` ("the dispatch turn") is held while an object
//!   queues its parts, so every part of an earlier `fetch_object` call is
//!   issued before any part of a later one. Files needed first finish first
//!   instead of all files crawling along together. The pending permit request
//!   is kept across loop iterations, never re-created, so it keeps its place in
//!   the semaphore's queue.
//! - **No part buffers.** Each part is a spawned task that streams its GET
//!   into the [`RangeSink`] at absolute offsets; the client computes the
//!   part's CRC-64 while streaming. A retried part rewrites its whole range
//!   and its CRC starts over, so a partial first attempt cannot leak into the
//!   result.
//! - **Never spliced bytes.** Every part is pinned to the ETag from `meta`
//!   with `If-Match`; a part that still reports another ETag or size fails
//!   the object with [`ClientError::ObjectChanged`]. The part CRCs are
//!   combined in order (`crc64::combine`, no second pass over the data) and
//!   compared with the store's whole-object CRC-64; a mismatch is
//!   [`ClientError::Crc64Mismatch`]. When the store sends no CRC the result
//!   says so (`crc64_verified: false`).
//! - The first part failure that survives its retries aborts the object's
//!   other parts (the `JoinSet` is dropped) and is returned as is.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::crc64;
use crate::object_client::{
    ClientError, GetRangeMeta, ObjectClient, ObjectClientError, ObjectMeta, RangeSink,
};
use crate::retry::{retry, RetryPolicy};

/// Default part size: 8 MiB, the AWS CRT client's choice; large enough that
/// per-request overhead is small, small enough to spread one object over
/// many connections.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Default engine-wide ranged GETs in flight: 256 (the CRT client's sizing
/// for about 100 Gbit/s at roughly 0.4 Gbit/s per connection).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchConfig {
    /// Bytes per ranged GET (default [`DEFAULT_PART_SIZE`] = 8 MiB; 0 is
    /// treated as 1).
    pub part_size: u64,
    /// Engine-wide concurrent GETs (default [`DEFAULT_MAX_IN_FLIGHT`] = 256;
    /// 0 is treated as 1).
    pub max_in_flight: usize,
    /// Per-part retry policy (default [`RetryPolicy::default`]).
    pub retry: RetryPolicy,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: RetryPolicy::default(),
        }
    }
}

/// Live counters, shareable across objects and readable while fetching.
#[derive(Debug, Default)]
pub struct FetchProgress {
    /// Bytes of parts that completed successfully.
    pub bytes_done: AtomicU64,
    /// Part GETs the engine issued (its retries included). A client that
    /// retries internally (like `HttpObjectClient`) counts its own extra
    /// HTTP requests in its own stats.
    pub requests: AtomicU64,
    /// Engine-level part retries.
    pub retries: AtomicU64,
}

/// What a completed fetch delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedObject {
    pub size: u64,
    pub etag: String,
    /// CRC-64/XZ of the bytes written, combined from the parts.
    pub crc64: u64,
    /// Whether the store sent a whole-object CRC-64 and it matched.
    pub crc64_verified: bool,
}

/// Downloads objects as concurrent ranged GETs. See the module docs.
pub struct FetchEngine {
    client: Arc<dyn ObjectClient>,
    config: FetchConfig,
    permits: Arc<Semaphore>,
    dispatch_turn: Mutex<()>,
}

impl FetchEngine {
    pub fn new(client: Arc<dyn ObjectClient>, config: FetchConfig) -> Self {
        let config = FetchConfig {
            part_size: config.part_size.max(1),
            max_in_flight: config.max_in_flight.max(1),
            retry: config.retry,
        };
        Self {
            client,
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            dispatch_turn: Mutex::new(()),
            config,
        }
    }

    pub fn client(&self) -> &Arc<dyn ObjectClient> {
        &self.client
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Fetches all of `meta.key` (`meta.size` bytes, pinned to `meta.etag`)
    /// into `sink`. On error the sink may hold partial data.
    pub async fn fetch_object(
        &self,
        meta: &ObjectMeta,
        sink: Arc<dyn RangeSink>,
        progress: Arc<FetchProgress>,
    ) -> Result<FetchedObject, ObjectClientError> {
        let size = meta.size;
        let job = self.job(meta, sink, progress, self.config.part_size);
        tracing::debug!(key = %meta.key, size, "fetch start");
        let parts = self.run_parts(&job, 0..size).await?;
        let result = job.finish(meta, &parts);
        match &result {
            Ok(f) => {
                tracing::debug!(key = %meta.key, size, verified = f.crc64_verified, "fetch done")
            }
            Err(e) => tracing::debug!(key = %meta.key, "fetch failed: {e}"),
        }
        result
    }

    /// Fetches `range` of `meta.key` (pinned to `meta.etag`) into `sink` at
    /// absolute offsets, as parts under the same engine-wide in-flight limit
    /// and FIFO order as [`FetchEngine::fetch_object`]. Returns the CRC-64 of
    /// exactly that range (combined from the parts) and the whole-object CRC-64
    /// header if the store sent one. Used by the peer layer, which fetches an
    /// object's chunks separately.
    pub async fn fetch_range(
        &self,
        meta: &ObjectMeta,
        range: Range<u64>,
        sink: Arc<dyn RangeSink>,
        progress: Arc<FetchProgress>,
    ) -> Result<RangeFetched, ObjectClientError> {
        let part_size = self.config.part_size;
        self.fetch_range_in_parts(meta, range, part_size, sink, progress)
            .await
    }

    /// [`FetchEngine::fetch_range`] in parts of `part_size` bytes (0 is
    /// treated as 1) instead of the configured size. The peer layer fetches
    /// a chunk in one part, so its bytes land in order and peers can be
    /// streamed them as they arrive.
    pub async fn fetch_range_in_parts(
        &self,
        meta: &ObjectMeta,
        range: Range<u64>,
        part_size: u64,
        sink: Arc<dyn RangeSink>,
        progress: Arc<FetchProgress>,
    ) -> Result<RangeFetched, ObjectClientError> {
        let part_size = part_size.max(1);
        if range.start > range.end || range.end > meta.size {
            return Err(ClientError::InvalidRequest(format!(
                "range {range:?} outside object {} of {} bytes",
                meta.key, meta.size
            ))
            .into());
        }
        let job = self.job(meta, sink, progress, part_size);
        let parts = self.run_parts(&job, range.clone()).await?;
        let parts: Vec<&GetRangeMeta> = parts
            .iter()
            .map(|p| p.as_ref().expect("every part recorded"))
            .collect();
        let mut crc = 0u64;
        let mut offset = range.start;
        for p in &parts {
            let len = part_size.min(range.end - offset);
            crc = crc64::combine(crc, p.range_crc64, len);
            offset += len;
        }
        let etag = job.agreed_etag(&parts)?;
        Ok(RangeFetched {
            crc64: crc,
            etag: etag.unwrap_or_else(|| meta.etag.clone()),
            object_crc64: parts.iter().find_map(|p| p.object_crc64),
        })
    }

    fn job(
        &self,
        meta: &ObjectMeta,
        sink: Arc<dyn RangeSink>,
        progress: Arc<FetchProgress>,
        part_size: u64,
    ) -> Arc<Job> {
        Arc::new(Job {
            client: self.client.clone(),
            key: meta.key.clone(),
            pin: (!meta.etag.is_empty()).then(|| meta.etag.clone()),
            size: meta.size,
            part_size,
            sink,
            progress,
            retry: self.config.retry,
            failed: AtomicBool::new(false),
        })
    }

    /// Issues the parts of `range` (part boundaries at `range.start + k ×
    /// part_size`) under the permits, in FIFO order across calls, and waits
    /// for all of them. The first failure aborts the rest.
    async fn run_parts(
        &self,
        job: &Arc<Job>,
        range: Range<u64>,
    ) -> Result<Vec<Option<GetRangeMeta>>, ObjectClientError> {
        let part_size = job.part_size;
        let len = range.end - range.start;
        let n_parts = usize::try_from(len.div_ceil(part_size))
            .map_err(|_| ClientError::InvalidRequest(format!("range too large: {len}")))?;
        let mut parts: Vec<Option<GetRangeMeta>> = vec![None; n_parts];
        let mut set: JoinSet<(usize, Result<GetRangeMeta, ObjectClientError>)> = JoinSet::new();
        {
            let _turn = self.dispatch_turn.lock().await;
            let mut acquire = None;
            let mut next = 0usize;
            while next < n_parts {
                let pending =
                    acquire.get_or_insert_with(|| Box::pin(self.permits.clone().acquire_owned()));
                tokio::select! {
                    biased;
                    Some(joined) = set.join_next(), if !set.is_empty() => {
                        record(&mut parts, joined)?;
                    }
                    permit = pending => {
                        acquire = None;
                        let permit = permit.expect("the engine never closes its semaphore");
                        if job.failed.load(Ordering::Acquire) {
                            // A part failed for good; its task may not have
                            // reported yet. Issue nothing more.
                            break;
                        }
                        let start = range.start + next as u64 * part_size;
                        let part = start..(start + part_size).min(range.end);
                        let job = job.clone();
                        let index = next;
                        set.spawn(async move {
                            let result = job.fetch_part(part).await;
                            if result.is_err() {
                                // Before the permit goes back, so the
                                // dispatcher cannot issue another part.
                                job.failed.store(true, Ordering::Release);
                            }
                            drop(permit);
                            (index, result)
                        });
                        next += 1;
                    }
                }
            }
        }
        while let Some(joined) = set.join_next().await {
            record(&mut parts, joined)?;
        }
        Ok(parts)
    }
}

/// What [`FetchEngine::fetch_range`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeFetched {
    /// CRC-64/XZ of exactly the bytes of the range.
    pub crc64: u64,
    /// The ETag the store reported (the pinned one when pinned).
    pub etag: String,
    /// The store's whole-object CRC-64 header, if sent.
    pub object_crc64: Option<u64>,
}

/// Stores one finished part, or returns its error (which aborts the rest).
fn record(
    parts: &mut [Option<GetRangeMeta>],
    joined: Result<(usize, Result<GetRangeMeta, ObjectClientError>), tokio::task::JoinError>,
) -> Result<(), ObjectClientError> {
    match joined {
        Ok((index, Ok(meta))) => {
            parts[index] = Some(meta);
            Ok(())
        }
        Ok((_, Err(e))) => Err(e),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ClientError::BadResponse(format!("part task cancelled: {e}")).into()),
    }
}

/// What every part task of one object shares.
struct Job {
    client: Arc<dyn ObjectClient>,
    key: String,
    pin: Option<String>,
    size: u64,
    part_size: u64,
    sink: Arc<dyn RangeSink>,
    progress: Arc<FetchProgress>,
    retry: RetryPolicy,
    /// Set by the first part that fails after its retries.
    failed: AtomicBool,
}

impl Job {
    async fn fetch_part(&self, range: Range<u64>) -> Result<GetRangeMeta, ObjectClientError> {
        let len = range.end - range.start;
        let got = retry(&self.retry, "fetch part", |attempt| {
            if attempt > 0 {
                self.progress.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.progress.requests.fetch_add(1, Ordering::Relaxed);
            let range = range.clone();
            async move {
                let got = self
                    .client
                    .get_range(&self.key, range, self.pin.as_deref(), &*self.sink)
                    .await?;
                self.check_part(&got)?;
                Ok(got)
            }
        })
        .await?;
        self.progress.bytes_done.fetch_add(len, Ordering::Relaxed);
        Ok(got)
    }

    /// A part must come from the object we pinned: same ETag, same size.
    fn check_part(&self, got: &GetRangeMeta) -> Result<(), ObjectClientError> {
        let etag_differs = self.pin.as_ref().is_some_and(|p| *p != got.etag);
        if etag_differs || got.object_size != self.size {
            return Err(ClientError::ObjectChanged {
                key: self.key.clone(),
                expected: format!(
                    "{} ({} bytes)",
                    self.pin.as_deref().unwrap_or("?"),
                    self.size
                ),
                found: format!("{} ({} bytes)", got.etag, got.object_size),
            }
            .into());
        }
        Ok(())
    }

    /// The ETag every part came from: the pin, or, unpinned (no ETag known
    /// up front), the one all parts must agree on ([`ClientError::ObjectChanged`]
    /// otherwise: the object was replaced between parts). `None` without parts.
    fn agreed_etag(&self, parts: &[&GetRangeMeta]) -> Result<Option<String>, ObjectClientError> {
        match (&self.pin, parts.first()) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(first)) => {
                if let Some(other) = parts.iter().find(|p| p.etag != first.etag) {
                    return Err(ClientError::ObjectChanged {
                        key: self.key.clone(),
                        expected: first.etag.clone(),
                        found: other.etag.clone(),
                    }
                    .into());
                }
                Ok(Some(first.etag.clone()))
            }
            (None, None) => Ok(None),
        }
    }

    /// Combines the part CRCs in order and checks them against the store.
    fn finish(
        &self,
        meta: &ObjectMeta,
        parts: &[Option<GetRangeMeta>],
    ) -> Result<FetchedObject, ObjectClientError> {
        let parts: Vec<&GetRangeMeta> = parts
            .iter()
            .map(|p| p.as_ref().expect("every part recorded"))
            .collect();
        let etag = self.agreed_etag(&parts)?.unwrap_or_default();
        let mut crc = 0u64;
        let mut offset = 0u64;
        for p in &parts {
            let len = self.part_size.min(self.size - offset);
            crc = crc64::combine(crc, p.range_crc64, len);
            offset += len;
        }
        let expected = meta
            .crc64
            .or_else(|| parts.iter().find_map(|p| p.object_crc64));
        if let Some(expected) = expected {
            if expected != crc {
                return Err(ClientError::Crc64Mismatch {
                    key: self.key.clone(),
                    expected,
                    actual: crc,
                }
                .into());
            }
        }
        Ok(FetchedObject {
            size: self.size,
            etag,
            crc64: crc,
            crc64_verified: expected.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::object_client::failure::{FailureInjectingClient, Fault, Operation};
    use crate::object_client::mock::{MockObject, MockObjectClient, VecSink};
    use crate::object_client::ListPage;

    const PART: u64 = 1024;

    fn fast_retry(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(1),
        }
    }

    fn config(max_in_flight: usize) -> FetchConfig {
        FetchConfig {
            part_size: PART,
            max_in_flight,
            retry: fast_retry(10),
        }
    }

    fn data(n: u64, seed: u64) -> Vec<u8> {
        crate::object_client::mock::pseudo_random_bytes(n as usize, seed)
    }

    async fn fetch(
        engine: &FetchEngine,
        meta: &ObjectMeta,
    ) -> (
        Result<FetchedObject, ObjectClientError>,
        Arc<VecSink>,
        Arc<FetchProgress>,
    ) {
        let sink = Arc::new(VecSink::with_len(meta.size as usize));
        let progress = Arc::new(FetchProgress::default());
        let r = engine
            .fetch_object(meta, sink.clone(), progress.clone())
            .await;
        (r, sink, progress)
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = FetchConfig::default();
        assert_eq!(c.part_size, 8 * 1024 * 1024);
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.retry, RetryPolicy::default());
    }

    #[tokio::test]
    async fn part_boundaries_deliver_exact_bytes() {
        for size in [0, 1, PART - 1, PART, PART + 1, 2 * PART, 37 * PART + 5] {
            let mock = Arc::new(MockObjectClient::new("b").with_chunk_size(100));
            let d = data(size, size);
            mock.put_object("obj", d.clone());
            let meta = mock.head("obj").await.unwrap();
            let engine = FetchEngine::new(mock.clone(), config(8));
            let (r, sink, progress) = fetch(&engine, &meta).await;
            let f = r.unwrap();
            assert_eq!(sink.contents(), d, "size {size}");
            assert_eq!(f.size, size);
            assert_eq!(f.crc64, crate::crc64::crc64(&d));
            assert!(f.crc64_verified);
            assert_eq!(f.etag, meta.etag);
            let parts = size.div_ceil(PART);
            assert_eq!(progress.requests.load(Ordering::Relaxed), parts);
            assert_eq!(progress.retries.load(Ordering::Relaxed), 0);
            assert_eq!(progress.bytes_done.load(Ordering::Relaxed), size);
            let mut ranges: Vec<Range<u64>> = mock.get_log().into_iter().map(|(_, r)| r).collect();
            ranges.sort_by_key(|r| r.start);
            let expected: Vec<Range<u64>> = (0..parts)
                .map(|i| i * PART..((i + 1) * PART).min(size))
                .collect();
            assert_eq!(ranges, expected, "size {size}");
        }
    }

    #[tokio::test]
    async fn fetch_range_writes_only_its_range_and_returns_its_crc() {
        let mock = Arc::new(MockObjectClient::new("b").with_chunk_size(100));
        let size = 9 * PART + 11;
        let d = data(size, 21);
        mock.put_object("obj", d.clone());
        let meta = mock.head("obj").await.unwrap();
        let engine = FetchEngine::new(mock.clone(), config(4));
        for range in [0..1, PART / 2..3 * PART + 7, 5 * PART..size, 0..size] {
            mock.reset_stats();
            let sink = Arc::new(VecSink::with_len(size as usize));
            let progress = Arc::new(FetchProgress::default());
            let got = engine
                .fetch_range(&meta, range.clone(), sink.clone(), progress.clone())
                .await
                .unwrap();
            let (s, e) = (range.start as usize, range.end as usize);
            assert_eq!(got.crc64, crate::crc64::crc64(&d[s..e]), "{range:?}");
            assert_eq!(got.object_crc64, Some(crate::crc64::crc64(&d)));
            assert_eq!(got.etag, meta.etag);
            let out = sink.contents();
            assert_eq!(&out[s..e], &d[s..e]);
            assert!(out[..s].iter().chain(&out[e..]).all(|b| *b == 0));
            assert_eq!(mock.bytes_served(), range.end - range.start);
            assert_eq!(
                progress.bytes_done.load(Ordering::Relaxed),
                range.end - range.start
            );
        }
        let sink = Arc::new(VecSink::with_len(size as usize));
        let past_end = engine
            .fetch_range(&meta, 0..size + 1, sink, Arc::default())
            .await;
        assert!(matches!(
            past_end,
            Err(ObjectClientError::Client(ClientError::InvalidRequest(_)))
        ));
    }

    #[tokio::test]
    async fn a_range_fetched_in_one_part_is_one_get_with_the_same_crc() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let size = 5 * PART + 3;
        let d = data(size, 22);
        mock.put_object("obj", d.clone());
        let meta = mock.head("obj").await.unwrap();
        let engine = FetchEngine::new(mock.clone(), config(4));
        let range = PART / 2..4 * PART + 1;
        let sink = Arc::new(VecSink::with_len(size as usize));
        let got = engine
            .fetch_range_in_parts(&meta, range.clone(), size, sink.clone(), Arc::default())
            .await
            .unwrap();
        let (s, e) = (range.start as usize, range.end as usize);
        assert_eq!(got.crc64, crate::crc64::crc64(&d[s..e]));
        assert_eq!(&sink.contents()[s..e], &d[s..e]);
        assert_eq!(mock.get_log(), [("obj".to_string(), range)]);
    }

    #[tokio::test]
    async fn zero_size_checks_crc_header() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let engine = FetchEngine::new(mock.clone(), config(4));
        let meta = ObjectMeta {
            key: "empty".into(),
            size: 0,
            etag: "e".into(),
            last_modified: None,
            crc64: Some(5),
            checksums: Default::default(),
        };
        let (r, _, _) = fetch(&engine, &meta).await;
        assert!(matches!(
            r,
            Err(ObjectClientError::Client(ClientError::Crc64Mismatch {
                expected: 5,
                actual: 0,
                ..
            }))
        ));
        let meta = ObjectMeta {
            crc64: None,
            ..meta
        };
        let (r, _, _) = fetch(&engine, &meta).await;
        assert!(!r.unwrap().crc64_verified);
        assert_eq!(mock.request_count(), 0);
    }

    #[tokio::test]
    async fn listing_meta_uses_get_crc_header() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let d = data(5 * PART + 3, 9);
        mock.put_object("obj", d.clone());
        let meta = mock
            .list_page("", None, 10)
            .await
            .unwrap()
            .objects
            .remove(0);
        assert_eq!(meta.crc64, None);
        let engine = FetchEngine::new(mock.clone(), config(4));
        let (r, sink, _) = fetch(&engine, &meta).await;
        assert!(r.unwrap().crc64_verified);
        assert_eq!(sink.contents(), d);
    }

    /// Deterministic "random" fault plan: each call index gets a fault or not.
    fn chaos(call: u64) -> Option<Fault> {
        let h = call.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59; // 0..32
        match h {
            0..=3 => Some(Fault::throttled()),
            4..=6 => Some(Fault::reset()),
            7..=9 => Some(Fault::Truncate { after: h * 50 }),
            _ => None,
        }
    }

    #[tokio::test]
    async fn every_retryable_fault_still_yields_exact_bytes() {
        let mock = Arc::new(MockObjectClient::new("b").with_chunk_size(128));
        let d = data(64 * PART + 17, 3);
        mock.put_object("obj", d.clone());
        let meta = mock.head("obj").await.unwrap();
        let client = Arc::new(
            FailureInjectingClient::new(mock.clone()).with_script(|c| chaos(c.call_index)),
        );
        let engine = FetchEngine::new(client.clone(), config(16));
        let (r, sink, progress) = fetch(&engine, &meta).await;
        let f = r.unwrap();
        assert!(f.crc64_verified);
        assert_eq!(sink.contents(), d);
        let injected = client.injected();
        assert!(injected > 0);
        // Each injected fault cost exactly one retry.
        assert_eq!(progress.retries.load(Ordering::Relaxed), injected);
        assert_eq!(progress.requests.load(Ordering::Relaxed), 65 + injected);
    }

    #[tokio::test]
    async fn exhausted_retries_fail_with_the_typed_error() {
        let mock = Arc::new(MockObjectClient::new("b"));
        mock.put_object("obj", data(3 * PART, 1));
        let meta = mock.head("obj").await.unwrap();
        let client = Arc::new(
            FailureInjectingClient::new(mock.clone())
                .with_script(|c| (c.operation == Operation::Get).then(Fault::throttled)),
        );
        let engine = FetchEngine::new(
            client.clone(),
            FetchConfig {
                max_in_flight: 1,
                retry: fast_retry(3),
                ..config(1)
            },
        );
        let (r, _, progress) = fetch(&engine, &meta).await;
        assert_eq!(
            r.unwrap_err().service_code(),
            Some("DownloadTrafficRateLimitExceeded")
        );
        // The first part failed 3 times; later parts never went out.
        assert_eq!(progress.requests.load(Ordering::Relaxed), 3);
        assert_eq!(progress.retries.load(Ordering::Relaxed), 2);
        assert_eq!(mock.stats().get_requests, 0);
    }

    #[tokio::test]
    async fn access_denied_is_not_retried() {
        let mock = Arc::new(MockObjectClient::new("b"));
        mock.put_object("obj", data(PART / 2, 1));
        let meta = mock.head("obj").await.unwrap();
        let client = Arc::new(FailureInjectingClient::new(mock.clone()));
        client.push_fault(Operation::Get, Fault::access_denied());
        let engine = FetchEngine::new(client.clone(), config(4));
        let (r, _, progress) = fetch(&engine, &meta).await;
        let e = r.unwrap_err();
        assert_eq!(e.service_code(), Some("AccessDenied"));
        assert_eq!(progress.requests.load(Ordering::Relaxed), 1);
        assert_eq!(progress.retries.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn corrupted_bytes_are_detected_by_crc() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let d = data(10 * PART, 4);
        mock.put_object("obj", d.clone());
        let meta = mock.head("obj").await.unwrap();
        let bad = 3 * PART + 7;
        let client = Arc::new(
            FailureInjectingClient::new(mock.clone()).with_script(move |c| {
                let hit = c.range.as_ref().is_some_and(|r| r.contains(&bad));
                hit.then_some(Fault::Corrupt { offset: bad })
            }),
        );
        let engine = FetchEngine::new(client.clone(), config(1));
        let (r, _, _) = fetch(&engine, &meta).await;
        match r.unwrap_err() {
            ObjectClientError::Client(ClientError::Crc64Mismatch {
                key,
                expected,
                actual,
            }) => {
                assert_eq!(key, "obj");
                assert_eq!(expected, crate::crc64::crc64(&d));
                assert_ne!(actual, expected);
            }
            other => panic!("expected Crc64Mismatch, got {other:?}"),
        }
        assert_eq!(client.injected(), 1);
    }

    #[tokio::test]
    async fn store_crc_disagreeing_with_bytes_is_a_mismatch() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let d = data(2 * PART + 1, 5);
        mock.put_raw(
            "obj",
            MockObject {
                data: d.clone().into(),
                etag: "e1".into(),
                last_modified: std::time::SystemTime::now(),
                crc64: Some(crate::crc64::crc64(&d) ^ 1),
            },
        );
        let meta = mock.head("obj").await.unwrap();
        let engine = FetchEngine::new(mock.clone(), config(4));
        let (r, _, _) = fetch(&engine, &meta).await;
        assert!(matches!(
            r,
            Err(ObjectClientError::Client(ClientError::Crc64Mismatch { .. }))
        ));
    }

    #[tokio::test]
    async fn object_replaced_mid_download_is_detected() {
        let mock = Arc::new(MockObjectClient::new("b"));
        mock.put_object("obj", data(8 * PART, 6));
        let meta = mock.head("obj").await.unwrap();
        let hook = mock.clone();
        let client = Arc::new(
            FailureInjectingClient::new(mock.clone()).with_script(move |c| {
                if c.call_index == 3 {
                    hook.put_object("obj", data(8 * PART, 7));
                }
                None
            }),
        );
        let engine = FetchEngine::new(client, config(1));
        let (r, _, progress) = fetch(&engine, &meta).await;
        match r.unwrap_err() {
            ObjectClientError::Client(ClientError::ObjectChanged { key, expected, .. }) => {
                assert_eq!(key, "obj");
                assert_eq!(expected, meta.etag);
            }
            other => panic!("expected ObjectChanged, got {other:?}"),
        }
        // Not retried: the 4th GET failed and nothing after it was issued.
        assert_eq!(progress.requests.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn sink_failure_is_typed_and_not_retried() {
        struct Broken;
        impl RangeSink for Broken {
            fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
                Err(std::io::Error::other("disk full"))
            }
        }
        let mock = Arc::new(MockObjectClient::new("b"));
        mock.put_object("obj", data(PART, 1));
        let meta = mock.head("obj").await.unwrap();
        let engine = FetchEngine::new(mock.clone(), config(4));
        let progress = Arc::new(FetchProgress::default());
        let e = engine
            .fetch_object(&meta, Arc::new(Broken), progress.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ObjectClientError::Client(ClientError::Sink(m)) if m.contains("disk full"))
        );
        assert_eq!(progress.requests.load(Ordering::Relaxed), 1);
    }

    /// Counts concurrent GETs and holds each one briefly.
    struct Gauge {
        inner: Arc<MockObjectClient>,
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    #[async_trait]
    impl ObjectClient for Gauge {
        fn bucket(&self) -> &str {
            self.inner.bucket()
        }
        async fn list_page(
            &self,
            p: &str,
            t: Option<&str>,
            n: u32,
        ) -> crate::object_client::Result<ListPage> {
            self.inner.list_page(p, t, n).await
        }
        async fn head(&self, k: &str) -> crate::object_client::Result<ObjectMeta> {
            self.inner.head(k).await
        }
        async fn get_range(
            &self,
            k: &str,
            r: Range<u64>,
            i: Option<&str>,
            s: &dyn RangeSink,
        ) -> crate::object_client::Result<GetRangeMeta> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            let out = self.inner.get_range(k, r, i, s).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            out
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn in_flight_limit_is_engine_wide_and_fifo_across_objects() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let a = data(40 * PART, 1);
        let b = data(40 * PART, 2);
        mock.put_object("a", a.clone());
        mock.put_object("b", b.clone());
        let gauge = Arc::new(Gauge {
            inner: mock.clone(),
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let engine = FetchEngine::new(gauge.clone(), config(4));
        let ma = mock.head("a").await.unwrap();
        let mb = mock.head("b").await.unwrap();
        let (ra, rb) = tokio::join!(fetch(&engine, &ma), fetch(&engine, &mb));
        ra.0.unwrap();
        rb.0.unwrap();
        assert_eq!(ra.1.contents(), a);
        assert_eq!(rb.1.contents(), b);
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 4);
        // Every part of `a` was issued before any part of `b`, except those
        // still queued behind the permits when `a` finished dispatching.
        let log = mock.get_log();
        let first_b = log.iter().position(|(k, _)| k == "b").unwrap();
        assert!(first_b >= 40 - 4, "b started at {first_b}: {log:?}");
        let last_a = log.iter().rposition(|(k, _)| k == "a").unwrap();
        assert!(last_a < 40 + 4, "a finished at {last_a}");
    }

    #[tokio::test]
    async fn unpinned_parts_must_agree_on_etag() {
        let mock = Arc::new(MockObjectClient::new("b"));
        mock.put_object("obj", data(4 * PART, 1));
        let mut meta = mock.head("obj").await.unwrap();
        meta.etag.clear();
        let hook = mock.clone();
        let client = Arc::new(
            FailureInjectingClient::new(mock.clone()).with_script(move |c| {
                if c.call_index == 2 {
                    hook.put_object("obj", data(4 * PART, 1));
                }
                None
            }),
        );
        let engine = FetchEngine::new(client, config(1));
        let (r, _, _) = fetch(&engine, &meta).await;
        assert!(matches!(
            r,
            Err(ObjectClientError::Client(ClientError::ObjectChanged { .. }))
        ));
        // The same holds for a range fetched on its own.
        let mut meta = mock.head("obj").await.unwrap();
        meta.etag.clear();
        let hook = mock.clone();
        let client = Arc::new(
            FailureInjectingClient::new(mock.clone()).with_script(move |c| {
                if c.call_index == 1 {
                    hook.put_object("obj", data(4 * PART, 1));
                }
                None
            }),
        );
        let engine = FetchEngine::new(client, config(1));
        let sink = Arc::new(VecSink::with_len(4 * PART as usize));
        let r = engine
            .fetch_range(&meta, 0..3 * PART, sink, Arc::default())
            .await;
        assert!(
            matches!(
                r,
                Err(ObjectClientError::Client(ClientError::ObjectChanged { .. }))
            ),
            "{r:?}"
        );
        // Without a pin and without changes, the first part's ETag is reported.
        let mut meta = mock.head("obj").await.unwrap();
        let etag = std::mem::take(&mut meta.etag);
        let engine = FetchEngine::new(mock.clone(), config(2));
        let (r, _, _) = fetch(&engine, &meta).await;
        assert_eq!(r.unwrap().etag, etag);
    }
}

//! A bandwidth cap over any [`ObjectClient`]'s ranged GETs.
//!
//! Design: one token bucket shared by all concurrent GETs through the wrapper
//! (like an account-wide bandwidth limit), kept as a "theoretical arrival
//! time" (GCRA) under a mutex instead of a refilling counter: a GET of `n`
//! bytes pushes the time at which the link is free by `n / rate` and may
//! complete once that time is at most `burst / rate` ahead of now. This needs
//! no background task and stays exact for requests larger than the burst.
//! The inner GET runs while the wrapper waits, and the call completes at the
//! later of the two, so the wrapper models a slow link rather than adding
//! its delay on top of the store's latency.

use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{GetRangeMeta, ListPage, ObjectClient, ObjectMeta, RangeSink, Result};

/// Default burst allowance: 1 MiB may pass instantly after an idle period.
pub const DEFAULT_BURST_BYTES: u64 = 1024 * 1024;

/// Shared token bucket in bytes per second (GCRA form).
#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_sec: u64,
    burst: Duration,
    /// When the link will have delivered everything reserved so far.
    free_at: Mutex<Instant>,
}

impl TokenBucket {
    /// `bytes_per_sec` must be > 0; `burst_bytes` may be 0.
    pub fn new(bytes_per_sec: u64, burst_bytes: u64) -> Self {
        let bytes_per_sec = bytes_per_sec.max(1);
        Self {
            bytes_per_sec,
            burst: transfer_time(burst_bytes, bytes_per_sec),
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Reserves `n` bytes; returns the instant at which they have passed.
    pub fn reserve(&self, n: u64) -> Instant {
        let cost = transfer_time(n, self.bytes_per_sec);
        let now = Instant::now();
        let mut free_at = self.free_at.lock().unwrap();
        // An idle link saves up at most `burst` worth of tokens.
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let start = (*free_at).max(earliest);
        *free_at = start + cost;
        free_at.checked_sub(self.burst).map_or(now, |t| t.max(now))
    }

    /// Waits until `n` more bytes may pass.
    pub async fn acquire(&self, n: u64) {
        let at = self.reserve(n);
        tokio::time::sleep_until(at).await;
    }
}

/// Time to move `n` bytes at `rate` bytes/s, in integer nanoseconds (exact
/// for round numbers, so paused-clock tests can assert equality).
fn transfer_time(n: u64, rate: u64) -> Duration {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

/// Wraps `C`, limiting the sum of all GET bodies to a byte rate.
pub struct ThroughputLimitedClient<C> {
    inner: C,
    bucket: TokenBucket,
}

impl<C: ObjectClient> ThroughputLimitedClient<C> {
    /// A cap of `bytes_per_sec` with a [`DEFAULT_BURST_BYTES`] burst.
    pub fn new(inner: C, bytes_per_sec: u64) -> Self {
        Self::with_burst(inner, bytes_per_sec, DEFAULT_BURST_BYTES)
    }

    pub fn with_burst(inner: C, bytes_per_sec: u64, burst_bytes: u64) -> Self {
        Self {
            inner,
            bucket: TokenBucket::new(bytes_per_sec, burst_bytes),
        }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for ThroughputLimitedClient<C> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        self.inner
            .list_page(prefix, continuation_token, max_keys)
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        let len = range.end.saturating_sub(range.start);
        let done_at = self.bucket.reserve(len);
        let result = self.inner.get_range(key, range, if_match, sink).await;
        tokio::time::sleep_until(done_at).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::object_client::mock::{MockObjectClient, VecSink};

    #[tokio::test(start_paused = true)]
    async fn bucket_enforces_rate_after_burst() {
        let b = TokenBucket::new(1000, 0);
        let t0 = Instant::now();
        b.acquire(500).await;
        assert_eq!(Instant::now() - t0, Duration::from_millis(500));
        b.acquire(1500).await;
        assert_eq!(Instant::now() - t0, Duration::from_millis(2000));

        let b = TokenBucket::new(1000, 1000);
        let t0 = Instant::now();
        b.acquire(1000).await; // the saved-up burst
        assert_eq!(Instant::now() - t0, Duration::ZERO);
        b.acquire(1000).await;
        assert_eq!(Instant::now() - t0, Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_gets_share_the_cap() {
        let m = MockObjectClient::new("b");
        let d: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        m.put_object("k", d.clone());
        let c = Arc::new(ThroughputLimitedClient::with_burst(m, 10_000, 0));
        let sink = Arc::new(VecSink::with_len(4000));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let (c, sink) = (c.clone(), sink.clone());
            tasks.push(tokio::spawn(async move {
                c.get_range("k", i * 1000..(i + 1) * 1000, None, &*sink)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 4000 bytes at 10 kB/s: 0.4 s in all, not 0.1 s in parallel.
        assert_eq!(Instant::now() - t0, Duration::from_millis(400));
        assert_eq!(sink.contents(), d);
        assert_eq!(c.inner().stats().bytes_served, 4000);
        // HEAD is not limited.
        let t1 = Instant::now();
        c.head("k").await.unwrap();
        assert_eq!(Instant::now() - t1, Duration::ZERO);
    }
}

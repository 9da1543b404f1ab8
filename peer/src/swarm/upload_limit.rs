//! The cap on the bytes this node sends to peers (`peer.uploadBytesPerSec`),
//! and the chunk streams it is sending.
//!
//! Design decisions:
//! - **One bucket per node.** Every chunk stream, whatever its transport,
//!   asks the node's [`UploadLimit`] before a data segment goes out
//!   (`chunk_server::Serving::next_segment`, through its [`ServedStream`]),
//!   so the cap holds across transports and concurrent pulls. Without a cap
//!   there is no bucket: asking returns at once, with no lock and no timer.
//! - **A token bucket kept as a schedule** (the generic cell rate
//!   algorithm): the bucket is one instant, when the bytes granted so far
//!   will have drained at the cap. A segment of `n` bytes may go at
//!   `max(that instant, now) + n / rate − burst / rate` (at once if that is
//!   past), and the instant moves on by `n / rate`. That arithmetic is all a
//!   plain mutex guards; the stream then sleeps until its time (one timer,
//!   no polling, no lock held across an await). Times are handed out in the
//!   order streams ask, first come, first served, and since a stream asks
//!   for one segment at a time, concurrent streams take turns frame by
//!   frame.
//! - **Burst**: [`MIN_BURST_BYTES`] (one frame) or [`BURST_TIME`] at the
//!   cap, whichever is larger: an idle node sends a frame at once, and over
//!   any longer window the rate is the cap.
//! - **Keep-alives while waiting.** A stream whose time is further away than
//!   its next keep-alive sends the keep-alive and keeps its place, so a
//!   puller behind a long queue sees a live sender rather than a stall. A
//!   stream dropped while it waits gives back the part of its time that has
//!   not come yet.
//! - **Counted**: bytes that had to wait and how long they waited (STATUS
//!   `peers.upload`, `ossc_peer_upload_throttled_bytes_total`,
//!   `ossc_peer_upload_throttle_wait_seconds_total`), and the streams in
//!   flight, from an admitted request to the end of its stream, which a
//!   leaving node waits for ([`super::leaving`]). Once the node stops
//!   ([`UploadLimit::close`]) a stream's next segment ends it instead
//!   (UNAVAILABLE), whatever the transport still holds open.
//! - **Claims are bounded.** The idle upload bandwidth a peer reports in
//!   `Have` is believed up to [`MAX_IDLE_UPLOAD`] (100 Gbit/s), so a peer
//!   that claims more cannot take every pick; one that then does not
//!   deliver costs at most one patience per pull slot per object before
//!   later picks of that object avoid it ([`super::source_record`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::chunk_server::FRAME_BYTES;

/// Smallest burst: one data frame.
pub const MIN_BURST_BYTES: u64 = FRAME_BYTES as u64;
/// The burst is at least this long at the cap.
pub const BURST_TIME: Duration = Duration::from_millis(50);
/// The most idle upload bandwidth a peer's `Have` answer is believed to
/// report: 100 Gbit/s, the fastest NICs peers commonly share.
pub const MAX_IDLE_UPLOAD: u64 = 12_500_000_000;

/// A peer's reported idle upload bandwidth, as far as it is believed.
pub fn believed_idle_upload(reported: u64) -> u64 {
    reported.min(MAX_IDLE_UPLOAD)
}

/// The node's upload cap and its streams in flight (see the module docs).
#[derive(Debug)]
pub struct UploadLimit {
    /// None: no cap.
    bucket: Option<Mutex<Bucket>>,
    /// Bytes that waited for their turn.
    throttled_bytes: AtomicU64,
    /// Time they waited, summed over segments (nanoseconds).
    waited_nanos: AtomicU64,
    /// Streams admitted and not ended yet.
    streams: watch::Sender<usize>,
    /// The node stopped: nothing more is sent.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Bucket {
    /// The cap, bytes per second (at least 1).
    rate: u64,
    /// How far ahead of the drained instant a segment may go: burst / rate.
    tolerance: Duration,
    /// When the bytes granted so far will have drained at the cap.
    drained_at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate.max(1);
        let burst = MIN_BURST_BYTES.max((rate as f64 * BURST_TIME.as_secs_f64()) as u64);
        Bucket {
            rate,
            tolerance: Duration::from_secs_f64(burst as f64 / rate as f64),
            drained_at: Instant::now(),
        }
    }

    /// How long `n` bytes take at the cap.
    fn cost(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.rate as f64)
    }

    /// When `n` bytes asked for at `now` may go; books them.
    fn grant(&mut self, n: u64, now: Instant) -> Instant {
        let end = self.drained_at.max(now) + self.cost(n);
        self.drained_at = end;
        end.checked_sub(self.tolerance)
            .map_or(now, |at| at.max(now))
    }

    /// `n` bytes that were to go at `at` will not: the part of their time
    /// still to come is free again.
    fn give_back(&mut self, n: u64, at: Instant, now: Instant) {
        let drained = at + self.tolerance;
        let unused = self.cost(n).min(drained.saturating_duration_since(now));
        self.drained_at = self
            .drained_at
            .checked_sub(unused)
            .unwrap_or(self.drained_at);
    }
}

impl UploadLimit {
    /// A cap of `rate` bytes per second; `None` (or 0): no cap.
    pub fn new(rate: Option<u64>) -> UploadLimit {
        UploadLimit {
            bucket: rate.filter(|r| *r > 0).map(|r| Mutex::new(Bucket::new(r))),
            throttled_bytes: AtomicU64::new(0),
            waited_nanos: AtomicU64::new(0),
            streams: watch::channel(0).0,
            closed: AtomicBool::new(false),
        }
    }

    /// The node stops: every stream ends at its next segment.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn refuse_if_closed(&self) -> Result<(), Status> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Status::unavailable("node shutting down"));
        }
        Ok(())
    }

    fn bucket(&self) -> Option<std::sync::MutexGuard<'_, Bucket>> {
        let b = self.bucket.as_ref()?;
        Some(b.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The cap in bytes per second, if any.
    pub fn rate(&self) -> Option<u64> {
        self.bucket().map(|b| b.rate)
    }

    /// A stream starts: counted in flight until the returned handle drops.
    pub fn stream(self: &Arc<Self>) -> ServedStream {
        self.streams.send_modify(|n| *n += 1);
        ServedStream {
            limit: self.clone(),
            pending: None,
        }
    }

    /// Streams admitted and not ended yet.
    pub fn in_flight(&self) -> usize {
        *self.streams.borrow()
    }

    /// Waits until no stream is in flight, or `until`; whether none is.
    pub async fn drained(&self, until: Instant) -> bool {
        let mut rx = self.streams.subscribe();
        let none_left = tokio::time::timeout_at(until, rx.wait_for(|n| *n == 0)).await;
        matches!(none_left, Ok(Ok(_)))
    }

    /// Bytes that had to wait for their turn.
    pub fn throttled_bytes(&self) -> u64 {
        self.throttled_bytes.load(Ordering::Relaxed)
    }

    /// How long throttled bytes waited, summed over segments.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    /// The `upload` object of the STATUS `peers` section.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "limit_bytes_per_sec": self.rate(),
            "throttled_bytes": self.throttled_bytes(),
            "throttle_wait_secs": self.waited().as_secs_f64(),
            "streams_in_flight": self.in_flight(),
        })
    }

    /// Fault injection for tests: nothing more is granted for a day (the
    /// node keeps advertising what it was configured with).
    #[cfg(test)]
    pub(crate) fn stall(&self) {
        let mut b = self.bucket().expect("stalling needs a configured cap");
        b.drained_at = Instant::now() + Duration::from_secs(86_400) + b.tolerance;
    }
}

/// A time granted to a stream and not used yet.
#[derive(Debug, Clone, Copy)]
struct Grant {
    bytes: u64,
    at: Instant,
    asked: Instant,
}

/// One chunk stream being served: in flight until dropped, and its place in
/// the upload limit's queue.
#[derive(Debug)]
pub struct ServedStream {
    limit: Arc<UploadLimit>,
    pending: Option<Grant>,
}

impl ServedStream {
    /// How many of the `ready` bytes at the head of the stream may go now:
    /// waits for this stream's turn under the cap, but not past `until`.
    /// `None` at `until`: send a keep-alive and ask again (the place in the
    /// queue is kept). Never more than `ready`, and without a cap, `ready`
    /// at once. UNAVAILABLE once the node stopped.
    pub async fn clear(&mut self, ready: u64, until: Instant) -> Result<Option<u64>, Status> {
        self.limit.refuse_if_closed()?;
        let Some(bucket) = &self.limit.bucket else {
            return Ok(Some(ready));
        };
        let now = Instant::now();
        let grant = match self.pending.take() {
            Some(g) if g.bytes > ready => {
                // Fewer bytes are ready than were granted (the chunk is
                // being fetched again): the rest is given back.
                self.give_back(g.bytes - ready, g.at, now);
                Grant { bytes: ready, ..g }
            }
            Some(g) => g,
            None => Grant {
                bytes: ready,
                at: bucket
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .grant(ready, now),
                asked: now,
            },
        };
        // Kept before waiting, so a stream dropped mid-wait gives it back.
        self.pending = Some(grant);
        if grant.at > now {
            tokio::time::sleep_until(grant.at.min(until)).await;
            self.limit.refuse_if_closed()?;
            if grant.at > until {
                return Ok(None);
            }
        }
        self.pending = None;
        if grant.at > grant.asked {
            let limit = &self.limit;
            limit
                .throttled_bytes
                .fetch_add(grant.bytes, Ordering::Relaxed);
            let waited = (grant.at - grant.asked).as_nanos();
            limit
                .waited_nanos
                .fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        Ok(Some(grant.bytes))
    }

    fn give_back(&self, n: u64, at: Instant, now: Instant) {
        if let Some(mut b) = self.limit.bucket() {
            b.give_back(n, at, now);
        }
    }
}

impl Drop for ServedStream {
    fn drop(&mut self) {
        if let Some(g) = self.pending.take() {
            self.give_back(g.bytes, g.at, Instant::now());
        }
        self.limit.streams.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests;

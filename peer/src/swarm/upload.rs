//! How much upload bandwidth this node has to spare, for `Have` answers.
//!
//! Design decision (Dragonfly's rule): a puller picks among the holders of a
//! chunk with probability proportional to each holder's *idle upload
//! bandwidth*, so a hot owner (every node wants its chunks at once) sheds
//! requests to nodes that already hold them. Idle = capacity − current rate:
//! - current rate: bytes served to peers over the last [`WINDOW`], sampled
//!   every [`SAMPLE_EVERY`];
//! - capacity: the configured `peer.uploadBytesPerSec` if set, else the peak
//!   rate observed (a node's link is found by using it), but never below
//!   [`ASSUMED_MIN_CAPACITY`], so a node that has not uploaded yet counts as
//!   idle rather than as "no bandwidth";
//! - the answer is floored at [`IDLE_FLOOR`]: a saturated holder keeps a
//!   small chance of being picked, so a stale figure cannot starve it
//!   forever.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate window: one second, the heartbeat period, so answers follow load
/// changes within a heartbeat.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Sampling period of the byte counter.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Capacity assumed for a node that has not shown a higher rate: 1 Gbit/s.
pub const ASSUMED_MIN_CAPACITY: u64 = 125_000_000;
/// Smallest idle figure answered: 1 MB/s.
pub const IDLE_FLOOR: u64 = 1_000_000;

/// Counts bytes served and turns them into current / idle rates.
#[derive(Debug)]
pub struct UploadMeter {
    sent: AtomicU64,
    configured_capacity: Option<u64>,
    samples: Mutex<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    /// (time, total bytes sent then), oldest first, spanning ≥ [`WINDOW`].
    points: VecDeque<(Instant, u64)>,
    peak: u64,
}

impl UploadMeter {
    /// `capacity`: the configured upload capacity in bytes/s, if any.
    pub fn new(capacity: Option<u64>) -> UploadMeter {
        UploadMeter {
            sent: AtomicU64::new(0),
            configured_capacity: capacity.filter(|c| *c > 0),
            samples: Mutex::default(),
        }
    }

    /// `n` more bytes were served to a peer.
    pub fn add(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Records a sample at `now` (called every [`SAMPLE_EVERY`]).
    pub fn sample(&self, now: Instant) {
        let total = self.total();
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.points.push_back((now, total));
        while s.points.len() > 2
            && s.points
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            s.points.pop_front();
        }
        let rate = rate_of(&s.points);
        s.peak = s.peak.max(rate);
    }

    /// Bytes/s served over the last window.
    pub fn current(&self) -> u64 {
        rate_of(
            &self
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .points,
        )
    }

    /// The capacity estimate (see the module docs).
    pub fn capacity(&self) -> u64 {
        let peak = self.samples.lock().unwrap_or_else(|p| p.into_inner()).peak;
        self.configured_capacity
            .unwrap_or_else(|| peak.max(ASSUMED_MIN_CAPACITY))
    }

    /// Spare upload bandwidth, bytes/s (see the module docs).
    pub fn idle(&self) -> u64 {
        self.capacity()
            .saturating_sub(self.current())
            .max(IDLE_FLOOR)
    }
}

fn rate_of(points: &VecDeque<(Instant, u64)>) -> u64 {
    match (points.front(), points.back()) {
        (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
            ((b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()) as u64
        }
        _ => 0,
    }
}

/// Index into `weights` picked with probability proportional to each weight,
/// from a uniform `r` in `[0, 1)`; `None` when `weights` is empty.
pub fn pick_weighted(weights: &[u64], r: f64) -> Option<usize> {
    let total: f64 = weights.iter().map(|w| *w as f64).sum();
    if weights.is_empty() {
        return None;
    }
    if total <= 0.0 {
        return Some(((r * weights.len() as f64) as usize).min(weights.len() - 1));
    }
    let mut x = r.clamp(0.0, 1.0) * total;
    for (i, w) in weights.iter().enumerate() {
        x -= *w as f64;
        if x < 0.0 {
            return Some(i);
        }
    }
    Some(weights.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_capacity_minus_current_and_floored() {
        let m = UploadMeter::new(Some(100_000_000));
        let t0 = Instant::now();
        m.sample(t0);
        m.add(60_000_000);
        m.sample(t0 + Duration::from_secs(1));
        assert_eq!(m.current(), 60_000_000);
        assert_eq!(m.idle(), 40_000_000);
        m.add(200_000_000);
        m.sample(t0 + Duration::from_secs(2));
        assert_eq!(m.idle(), IDLE_FLOOR, "saturated: floored, never zero");
        // The window slides: with nothing sent, the node is idle again.
        m.sample(t0 + Duration::from_secs(3));
        m.sample(t0 + Duration::from_secs(4));
        assert_eq!(m.current(), 0);
        assert_eq!(m.idle(), 100_000_000);
    }

    #[test]
    fn without_a_configured_capacity_the_peak_counts_but_not_below_the_assumed_minimum() {
        let m = UploadMeter::new(None);
        assert_eq!(m.idle(), ASSUMED_MIN_CAPACITY, "a fresh node is idle");
        let t0 = Instant::now();
        m.sample(t0);
        m.add(500_000_000);
        m.sample(t0 + Duration::from_secs(1));
        assert_eq!(m.capacity(), 500_000_000);
        assert_eq!(m.idle(), IDLE_FLOOR);
        m.sample(t0 + Duration::from_secs(2));
        m.sample(t0 + Duration::from_secs(3));
        assert_eq!(m.idle(), 500_000_000, "the peak is remembered");
    }

    #[test]
    fn picks_follow_the_weights() {
        assert_eq!(pick_weighted(&[], 0.5), None);
        assert_eq!(pick_weighted(&[0, 0], 0.7), Some(1));
        let weights = [1u64, 3, 0, 6];
        let mut counts = [0usize; 4];
        let n = 10_000;
        for i in 0..n {
            let r = (i as f64 + 0.5) / n as f64;
            counts[pick_weighted(&weights, r).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 3000, 0, 6000]);
    }
}

//! Agent counters.
//!
//! Design decision: plain atomics with relaxed ordering in one struct, read
//! through [`Metrics::snapshot`] into a serializable value. That snapshot is what
//! STATUS prints today and what a Prometheus exporter can render later, without
//! a metrics crate in the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Bytes fetched from the object store (small files and large objects).
    pub bytes_store: AtomicU64,
    /// Bytes of large objects received from peers (verified by the fetcher).
    pub bytes_peer: AtomicU64,
    /// Bytes served to OPENs from memory that was already resident.
    pub bytes_local: AtomicU64,
    pub opens: AtomicU64,
    pub opens_fd: AtomicU64,
    pub opens_pass: AtomicU64,
    pub opens_err: AtomicU64,
    pub fetches: AtomicU64,
    pub fetch_errors: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    /// Highest memory reservation seen, in bytes.
    pub peak_reserved_bytes: AtomicU64,
}

/// A consistent-enough copy of [`Metrics`] for reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    pub bytes_store: u64,
    pub bytes_peer: u64,
    pub bytes_local: u64,
    pub opens: u64,
    pub opens_fd: u64,
    pub opens_pass: u64,
    pub opens_err: u64,
    pub fetches: u64,
    pub fetch_errors: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub peak_reserved_bytes: u64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            bytes_store: g(&self.bytes_store),
            bytes_peer: g(&self.bytes_peer),
            bytes_local: g(&self.bytes_local),
            opens: g(&self.opens),
            opens_fd: g(&self.opens_fd),
            opens_pass: g(&self.opens_pass),
            opens_err: g(&self.opens_err),
            fetches: g(&self.fetches),
            fetch_errors: g(&self.fetch_errors),
            evictions: g(&self.evictions),
            expirations: g(&self.expirations),
            peak_reserved_bytes: g(&self.peak_reserved_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_counters() {
        let m = Metrics::default();
        Metrics::add(&m.bytes_store, 10);
        Metrics::add(&m.bytes_store, 5);
        Metrics::add(&m.opens, 1);
        let s = m.snapshot();
        assert_eq!(s.bytes_store, 15);
        assert_eq!(s.opens, 1);
        assert_eq!(s.fetch_errors, 0);
    }
}

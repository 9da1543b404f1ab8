//! Request, egress and fault counters (`GET /_ossc/stats`).
//!
//! Design decision: relaxed atomics, snapshotted field by field. A snapshot
//! taken while requests run is not a single instant, which is fine for the
//! egress totals tests and benchmarks read after the traffic settles.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Requests by operation (control-plane requests are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Object GETs (ranged or whole), including ones answered with an error.
    pub get: u64,
    /// Object HEADs.
    pub head: u64,
    /// Bucket listings (ListObjects V1 and V2).
    pub list: u64,
    /// Everything else (service listing, HEAD bucket, rejected methods...).
    pub other: u64,
}

/// Injected faults by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub errors: u64,
    pub resets: u64,
    pub truncations: u64,
    /// Requests delayed by `latency_ms`.
    pub delayed: u64,
    /// Objects rewritten by `replace_key`.
    pub replacements: u64,
}

/// What the store did since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    pub requests: RequestCounts,
    /// Object body bytes handed to the connections (store egress).
    pub bytes_served: u64,
    pub faults: FaultCounts,
    /// Requests rejected by signature checks (403 / 400 from auth).
    pub auth_failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub list: AtomicU64,
    pub other: AtomicU64,
    pub bytes_served: AtomicU64,
    pub fault_errors: AtomicU64,
    pub fault_resets: AtomicU64,
    pub fault_truncations: AtomicU64,
    pub fault_delayed: AtomicU64,
    pub fault_replacements: AtomicU64,
    pub auth_failures: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn all(&self) -> [&AtomicU64; 11] {
        [
            &self.get,
            &self.head,
            &self.list,
            &self.other,
            &self.bytes_served,
            &self.fault_errors,
            &self.fault_resets,
            &self.fault_truncations,
            &self.fault_delayed,
            &self.fault_replacements,
            &self.auth_failures,
        ]
    }

    pub fn snapshot(&self) -> StoreStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            requests: RequestCounts {
                get: load(&self.get),
                head: load(&self.head),
                list: load(&self.list),
                other: load(&self.other),
            },
            bytes_served: load(&self.bytes_served),
            faults: FaultCounts {
                errors: load(&self.fault_errors),
                resets: load(&self.fault_resets),
                truncations: load(&self.fault_truncations),
                delayed: load(&self.fault_delayed),
                replacements: load(&self.fault_replacements),
            },
            auth_failures: load(&self.auth_failures),
        }
    }

    pub fn reset(&self) {
        for c in self.all() {
            c.store(0, Ordering::Relaxed);
        }
    }
}

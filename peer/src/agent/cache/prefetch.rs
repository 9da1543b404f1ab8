//! Prefetch: every large object fetched in order, with a bounded window of
//! bytes in started fetches, and progress in the log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::file_state::{FileState, LargeFile};
use super::Cache;

/// Prefetch keeps at most this many times the engine's in-flight bytes
/// (`max_in_flight × part_size`) queued in started fetches, so an OPEN of a file
/// further down the order never waits behind the whole model.
pub const PREFETCH_WINDOW_FACTOR: u64 = 2;

/// Interval of prefetch progress log lines.
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Bytes per gigabyte for the progress log (decimal, like link rates).
const BYTES_PER_GB: f64 = 1e9;

impl Cache {
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

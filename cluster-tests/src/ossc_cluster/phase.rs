//! A phase: one consumer per node at once, each with a fresh MODEL_DIR, socket
//! and config, and what it measured (wall time, bytes by source, the store's
//! egress over the phase). Every node's processes are killed afterwards, so
//! the next phase starts without an agent or a cache.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use ossc_core::store_server::StoreStats;

use super::{start_consumer_with_config, Binaries, ConsumerOutcome, Model, Store};
use crate::netns::Cluster;

/// Everything one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    pub consumers: Vec<ConsumerOutcome>,
    /// Store stats after the phase (counters reset before it).
    pub store: StoreStats,
    /// From the first spawn to the last consumer's exit.
    pub wall: Duration,
}

/// Runs one consumer per node at once (fresh MODEL_DIR, socket and config per
/// node under `work/<phase>/node<i>`), with `extra_env` on every node and
/// `config_extra` (a JSON object, e.g. `{"peer": {"chunkSizeBytes":
/// 4194304}}`) merged into every node's config file. Each consumer must exit
/// 0 within `timeout` of its own start (it verified every byte) and report
/// the model's full size. Afterwards every node's processes are killed.
#[allow(clippy::too_many_arguments)]
pub fn run_phase_with_config(
    cluster: &Cluster,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    work: &Path,
    phase: &str,
    extra_env: &[(String, String)],
    config_extra: &serde_json::Value,
    timeout: Duration,
) -> Result<PhaseOutcome> {
    store.reset_stats()?;
    let t0 = Instant::now();
    let mut running = Vec::new();
    for node in cluster.nodes() {
        let dir = work.join(phase).join(&node.name);
        running.push(start_consumer_with_config(
            node,
            bins,
            store,
            model,
            &dir,
            extra_env,
            config_extra,
        )?);
    }
    // Each wait's deadline counts from that consumer's own start, so they all
    // get the full `timeout` (they run side by side).
    let results: Vec<Result<ConsumerOutcome>> = running
        .into_iter()
        .map(|c| c.finish(bins, model, timeout))
        .collect();
    let wall = t0.elapsed();
    let stats = store.stats()?;
    for node in cluster.nodes() {
        node.kill_all()?;
    }
    Ok(PhaseOutcome {
        consumers: results.into_iter().collect::<Result<_>>()?,
        store: stats,
        wall,
    })
}

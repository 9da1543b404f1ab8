//! With the store's uplink capped at B and every
//! node's link capped at B, N = 4 nodes load a model in at most half the time
//! with peers than without.
//!
//! Needs root, `ip netns` and `tc` (see `ossc_cluster_tests::netns`): without
//! them it prints a loud skip message and passes, except when env `CI` is set.
//!
//! Design decisions (measured on this 2-core machine; the numbers are in
//! the report of the run that chose them):
//! - **B = [`RATE_MBIT`] = 200 Mbit/s, not 1 Gbit/s.** The claim is about a
//!   *network-bound* load: without peers the store's uplink carries N models
//!   (time ≈ N·M/B); with peers it carries one while the nodes exchange the
//!   rest over their own links. All N nodes are emulated on 2 CPU cores,
//!   though: at 1 Gbit/s the four node downlinks together move ~4 Gbit/s of
//!   TLS-encrypted peer traffic plus CRC-64 and SHA-256 verification through
//!   those 2 cores, so the peer phase was partly CPU bound (ratio 0.51–0.61
//!   measured). At 200 Mbit/s the aggregate is ~0.8 Gbit/s and the links are
//!   the bottleneck again, which is what the test is about. Env [`RATE_ENV`]
//!   overrides B (e.g. 1000 on a machine with more cores).
//! - **Chunks of [`CHUNK_BYTES`] = 2 MiB for a 128 MiB model**: the issue's
//!   1 GB model has 64 default (16 MiB) chunks and so does this one, scaled
//!   down 8×. The chunk *count* is what spreads ownership — and with it the
//!   owners' upload load — over the nodes: with the default size this model
//!   has ~10 chunks, rendezvous hashing gave one node half of them, and that
//!   node's upload link alone took longer than the whole load should.
//! - **The bound** is the issue's: ≤ [`MAX_TIME_RATIO`] = 0.5. The ideal is
//!   ≈ M/B + start-up against ≈ N·M/B (ratio ~0.25 plus start-up): with
//!   peers each node's downlink carries one model, a quarter from the store
//!   and the rest streamed by the owners *while their chunks arrive*
//!   (cut-through, `peer/src/swarm/chunk_server.rs`). Measured on this
//!   2-core machine, five runs: 0.37–0.44 (27.9–28.2 s without, 10.4–12.4 s
//!   with; wire time 6.6 s).
//!   Before cut-through (store-then-forward) it was 0.43–0.50.

use ossc_cluster_tests::netns::{self, ClusterSpec, Rate};
use ossc_cluster_tests::note;
use ossc_cluster_tests::ossc_cluster::{self, Model, PhaseOutcome, CONSUMER_TIMEOUT};
use ossc_cluster_tests::testbed::{serial, Testbed};

/// B in Mbit/s (see the module note for why not 1 Gbit/s).
const RATE_MBIT: u64 = 200;
/// Env var overriding [`RATE_MBIT`].
const RATE_ENV: &str = "OSSC_NETNS_TIMING_MBIT";
/// Model size: 128 MiB (gen-model's 4 shards come to ~165 MB), so the no-peer
/// phase (4 models through one 200 Mbit/s uplink) takes ~28 s and the whole
/// test under a minute.
const MODEL_MB: u64 = 128;
const MODEL_SHARDS: u32 = 4;
/// Peer chunk size (see the module note).
const CHUNK_BYTES: u64 = 2 << 20;
const NODES: usize = 4;
/// The target, asserted: time with peers ≤ 0.5 × time without.
const MAX_TIME_RATIO: f64 = 0.5;
/// Store egress bounds, checked on the way.
const NO_PEERS_MIN_FACTOR: f64 = 4.0;
const PEERS_MAX_FACTOR: f64 = 1.1;

fn report(phase: &str, out: &PhaseOutcome, model: &Model) {
    note!(
        "{phase}: store served {:.3} x model ({} GETs); wall {:.2} s",
        out.store.bytes_served as f64 / model.total_bytes as f64,
        out.store.requests.get,
        out.wall.as_secs_f64()
    );
    for c in &out.consumers {
        note!(
            "  {}: {:.2} s (load+verify {:.2} s); bytes store {} / peer {}",
            c.node,
            c.wall.as_secs_f64(),
            c.report["load_seconds"].as_f64().unwrap_or(0.0),
            c.bytes_from("store"),
            c.bytes_from("peer")
        );
    }
}

#[test]
fn four_nodes_load_at_least_twice_as_fast_with_peers_when_the_network_is_the_limit() {
    let name = "four_nodes_load_at_least_twice_as_fast_with_peers_when_the_network_is_the_limit";
    if !netns::available_or_skip(name) {
        return;
    }
    let _serial = serial();
    let rate_mbit = std::env::var(RATE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RATE_MBIT);
    let rate = Rate::mbit(rate_mbit);
    let spec = ClusterSpec::capped(NODES, rate);
    let bed = Testbed::start(&spec, MODEL_MB, MODEL_SHARDS).expect("testbed");
    let model = &bed.model;

    let config = serde_json::json!({"peer": {"chunkSizeBytes": CHUNK_BYTES}});
    let without = bed
        .run_phase("no-peers", &[], &config, CONSUMER_TIMEOUT)
        .expect("phase without peers");
    report("no-peers", &without, model);
    let secret = ossc_cluster::new_cluster_secret();
    let peer_env = ossc_cluster::peer_env(&bed.cluster, &secret);
    let with = bed
        .run_phase("peers", &peer_env, &config, CONSUMER_TIMEOUT)
        .expect("phase with peers");
    report("peers", &with, model);

    let m = model.total_bytes as f64;
    let ideal_without = rate.seconds_for(NODES as u64 * model.total_bytes);
    let ideal_with = rate.seconds_for(model.total_bytes);
    let ratio = with.wall.as_secs_f64() / without.wall.as_secs_f64();
    note!(
        "B = {rate_mbit} Mbit/s, N = {NODES}, model {} bytes: without peers {:.2} s (wire time \
         {ideal_without:.2} s), with peers {:.2} s (wire time {ideal_with:.2} s): ratio {ratio:.3} \
         (bound {MAX_TIME_RATIO})",
        model.total_bytes,
        without.wall.as_secs_f64(),
        with.wall.as_secs_f64()
    );
    assert!(
        without.store.bytes_served as f64 >= NO_PEERS_MIN_FACTOR * m,
        "without peers the store served only {} bytes",
        without.store.bytes_served
    );
    assert!(
        with.store.bytes_served as f64 <= PEERS_MAX_FACTOR * m,
        "with peers the store served {} bytes (> {PEERS_MAX_FACTOR} x model)",
        with.store.bytes_served
    );
    assert!(
        with.consumers.iter().all(|c| c.bytes_from("peer") > 0),
        "a node got nothing from its peers"
    );
    assert!(
        ratio <= MAX_TIME_RATIO,
        "with peers {:.2} s vs {:.2} s without: ratio {ratio:.3} > {MAX_TIME_RATIO}",
        with.wall.as_secs_f64(),
        without.wall.as_secs_f64()
    );
}

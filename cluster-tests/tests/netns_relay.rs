//! Relay: N = 8 nodes load one model at once over capped links; every node
//! serves the chunks it is still receiving, so the model leaves the store
//! once, no pull falls back to the store, and no node uploads much more
//! than the others (the owners do not each upload their share N − 1 times).
//!
//! Needs root, `ip netns` and `tc` (see `ossc_cluster_tests::netns`): without
//! them it prints a loud skip message and passes, except when env `CI` is set.
//!
//! Design decisions:
//! - **B = [`RATE_MBIT`] = 100 Mbit/s on every node link and on the store's
//!   uplink.** N = 8 agents and consumers share the machine's 2 cores; at
//!   100 Mbit/s the eight downlinks together carry ~100 MB/s of
//!   TLS-encrypted peer traffic, which 2 cores keep up with, so the links,
//!   not the CPUs, pace the load. Env [`RATE_ENV`] overrides B.
//! - **Model: [`MODEL_MB`] = 128 MiB in 4 shards (gen-model writes ~165 MB),
//!   chunks of [`CHUNK_BYTES`] = 4 MiB** (about 40 chunks, 5 per node):
//!   enough chunks to spread ownership and relaying over 8 nodes, few
//!   enough bytes that the N = 1 phase and the N = 8 phase take about half
//!   a minute of wire time together (~13 s each at B).
//! - **Bounds:** store egress ≤ [`MAX_EGRESS`] × the model, no store
//!   fallback (the fetcher's "pull from peer failed" log line), every byte
//!   exact (each consumer checks every file's and tensor's SHA-256), and
//!   the busiest uploader sends ≤ [`MAX_UPLOAD_OVER_MEAN`] × the mean
//!   upload. Time is reported against N = 1, not asserted (2 shared cores
//!   make it noisy; `docs/benchmarks.md` §3 has the measurement).

use std::io::Write as _;

use ossc_cluster_tests::netns::{self, Cluster, ClusterSpec, Rate};
use ossc_cluster_tests::ossc_cluster::{self, Binaries, ConsumerOutcome, Model, Store};

/// A line of the test's report, straight to stderr (not captured).
fn note(line: String) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// B in Mbit/s (see the module note).
const RATE_MBIT: u64 = 100;
/// Env var overriding [`RATE_MBIT`].
const RATE_ENV: &str = "OSSC_NETNS_RELAY_MBIT";
const MODEL_MB: u64 = 128;
const MODEL_SHARDS: u32 = 4;
const CHUNK_BYTES: u64 = 4 << 20;
const NODES: usize = 8;
const MAX_EGRESS: f64 = 1.05;
const MAX_UPLOAD_OVER_MEAN: f64 = 2.0;

/// Bytes this node's agent sent to peers (its STATUS, per peer).
fn bytes_sent(c: &ConsumerOutcome) -> u64 {
    c.agent_status
        .as_ref()
        .map(ossc_cluster::bytes_sent_to_peers)
        .unwrap_or(0)
}

/// Bytes this node pulled from relays (peers still receiving the chunk).
fn bytes_from_relays(c: &ConsumerOutcome) -> u64 {
    c.agent_status
        .as_ref()
        .map(ossc_cluster::bytes_pulled_from_relays)
        .unwrap_or(0)
}

/// Chunk pulls this node completed over `transport` ("framed", "grpc").
fn pulls_over(c: &ConsumerOutcome, transport: &str) -> u64 {
    c.agent_status
        .as_ref()
        .map(|s| ossc_cluster::pulls_over_transport(s, transport))
        .unwrap_or(0)
}

#[test]
fn eight_nodes_relay_chunks_so_the_model_leaves_the_store_once_and_uploads_stay_balanced() {
    let name =
        "eight_nodes_relay_chunks_so_the_model_leaves_the_store_once_and_uploads_stay_balanced";
    if !netns::available_or_skip(name) {
        return;
    }
    let rate_mbit = std::env::var(RATE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RATE_MBIT);
    let rate = Rate::mbit(rate_mbit);
    let bins = Binaries::locate().expect("ossc binaries");
    let work_dir = ossc_cluster::work_dir().expect("work dir");
    let work = work_dir.path();
    let model = Model::generate(&bins, work, MODEL_MB, MODEL_SHARDS).expect("gen-model");
    let config = serde_json::json!({"peer": {"chunkSizeBytes": CHUNK_BYTES}});
    let secret = ossc_cluster::new_cluster_secret();
    let spec = |nodes| ClusterSpec {
        nodes,
        node_link: Some(rate),
        store_uplink: Some(rate),
    };

    let alone = {
        let cluster = Cluster::create(&spec(1)).expect("cluster of one");
        let store = Store::start(&cluster, &bins, &model).expect("store");
        ossc_cluster::run_phase_with_config(
            &cluster,
            &bins,
            &store,
            &model,
            work,
            "one-node",
            &ossc_cluster::peer_env(&cluster, &secret),
            &config,
            ossc_cluster::CONSUMER_TIMEOUT,
        )
        .expect("phase with one node")
    };
    let cluster = Cluster::create(&spec(NODES)).expect("cluster");
    let store = Store::start(&cluster, &bins, &model).expect("store");
    let with = ossc_cluster::run_phase_with_config(
        &cluster,
        &bins,
        &store,
        &model,
        work,
        "eight-nodes",
        &ossc_cluster::peer_env(&cluster, &secret),
        &config,
        ossc_cluster::CONSUMER_TIMEOUT,
    )
    .expect("phase with eight nodes");

    let m = model.total_bytes as f64;
    let egress = with.store.bytes_served as f64 / m;
    let sent: Vec<u64> = with.consumers.iter().map(bytes_sent).collect();
    let mean = sent.iter().sum::<u64>() as f64 / sent.len() as f64;
    let busiest = sent.iter().copied().max().unwrap_or(0) as f64;
    let fallbacks: usize = with
        .consumers
        .iter()
        .map(|c| ossc_cluster::store_fallbacks(&c.dir))
        .sum();
    for (c, s) in with.consumers.iter().zip(&sent) {
        note(format!(
            "  {}: {:.2} s; MB received store {:.1} / peer {:.1} (from relays {:.1}); MB sent {:.1}; pulls framed {} / grpc {}",
            c.node,
            c.wall.as_secs_f64(),
            c.bytes_from("store") as f64 / 1e6,
            c.bytes_from("peer") as f64 / 1e6,
            bytes_from_relays(c) as f64 / 1e6,
            *s as f64 / 1e6,
            pulls_over(c, "framed"),
            pulls_over(c, "grpc"),
        ));
    }
    note(format!(
        "B = {rate_mbit} Mbit/s, model {} bytes ({} chunks of {CHUNK_BYTES}): N = 1 {:.2} s \
         (wire time {:.2} s); N = {NODES} {:.2} s: {:.2} x N = 1; store egress {egress:.3} x \
         model; busiest uploader {:.2} x the mean; {fallbacks} store fallbacks",
        model.total_bytes,
        model.total_bytes.div_ceil(CHUNK_BYTES),
        alone.wall.as_secs_f64(),
        rate.seconds_for(model.total_bytes),
        with.wall.as_secs_f64(),
        with.wall.as_secs_f64() / alone.wall.as_secs_f64(),
        busiest / mean.max(1.0)
    ));
    assert!(
        egress <= MAX_EGRESS,
        "the store served {egress:.3} x the model (> {MAX_EGRESS})"
    );
    assert_eq!(fallbacks, 0, "pulls fell back to the store");
    assert!(
        with.consumers.iter().all(|c| c.bytes_from("peer") > 0),
        "a node got nothing from its peers"
    );
    // The default transport carried every pull: none needed the gRPC fallback.
    for c in &with.consumers {
        let (framed, grpc) = (pulls_over(c, "framed"), pulls_over(c, "grpc"));
        assert!(
            framed > 0 && grpc == 0,
            "{}: {framed} pulls over framed, {grpc} over the gRPC fallback",
            c.node
        );
    }
    assert!(
        busiest <= MAX_UPLOAD_OVER_MEAN * mean,
        "the busiest node sent {busiest} bytes, {:.2} x the mean {mean}",
        busiest / mean.max(1.0)
    );
}

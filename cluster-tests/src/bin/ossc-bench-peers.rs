//! The benchmark of peer-assisted multi-node loading on a real netns
//! cluster (see `ossc_cluster_tests::netns`), peers disabled vs enabled, for
//! several cluster sizes. Needs root; run through `bash scripts/bench.sh
//! peers`, which builds the release binaries, runs this and prints the table.
//!
//! ```text
//! ossc-bench-peers --nodes 1,2,4 --model-mb 256 --node-mbit 300 --store-mbit 300 \
//!                  --rounds 1 --out target/bench/peers-raw.json
//! ossc-bench-peers --nodes 8 --model-mb 64 --node-mbit 100 --store-mbit 100 \
//!                  --chunk-mb 2 --start-skew 5 --seed 7 --peers-only --out skew.json
//! ```
//!
//! Design decision: one cluster per N, built once, with the store started once;
//! within it the two contenders (no peers, peers) alternate round by round, and
//! every phase starts from nothing (the harness kills every node's processes
//! and gives each phase fresh MODEL_DIRs), so both pay agent start-up, listing
//! and verification alike. Node links and the store uplink are capped with
//! `tc tbf` at rates where the network, not the machine's CPUs, is the
//! bottleneck; the raw per-phase measurements go to JSON, and the summary
//! (medians, ratios, model comparison) is left to `scripts/bench.py`.
//!
//! `--start-skew S` measures start skew instead: every node runs a daemon
//! (`ossc peer`, `OSS_PATH` at the bucket root) and its application opens the
//! model at a seeded random offset in [0, S] (the first at 0, the last at S;
//! round r uses seed `--seed` + r), as `ossc_cluster::run_staggered_phase`
//! does. Each round then adds a third contender, `peers_together`: the same
//! daemons with every application opening at once, the baseline of the
//! skewed phase's time.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ossc_cluster_tests::netns::{self, Cluster, ClusterSpec, Rate};
use ossc_cluster_tests::ossc_cluster::{
    self, Binaries, DaemonSettings, Model, PhaseOutcome, StartSchedule, Store,
};
use serde_json::{json, Value};

/// Cluster sizes measured by default.
const DEFAULT_NODES: &[usize] = &[1, 2, 4];
/// Model size by default: large enough that start-up (agent spawn, listing,
/// membership) is a minor part of a capped transfer (~0.5 s of ~8 s at N = 1),
/// small enough that a whole run of N = 1, 2, 4 takes under two minutes.
const DEFAULT_MODEL_MB: u64 = 256;
/// Shards of the generated model (as in the cluster tests).
const DEFAULT_SHARDS: u32 = 4;
/// Default node link and store uplink cap in Mbit/s: on the 2-core VM the
/// peer transport moves ~1.6 GB/s (gRPC + TLS, sender and receiver together,
/// `transport_throughput`), so 300 Mbit/s per link (6 nodes: ~210 MB/s in
/// all) keeps every phase network-bound with 6 agents sharing 2 cores.
const DEFAULT_RATE_MBIT: u64 = 300;
/// Rounds per N (each round runs both contenders once).
const DEFAULT_ROUNDS: usize = 1;
/// Seed of the first round's start schedule (`--start-skew`).
const DEFAULT_SEED: u64 = 1;
/// How long one consumer may take, from its spawn (the slowest phase, no
/// peers at N = 6 with a 512 MiB model at 300 Mbit/s, takes ~95 s).
const DEFAULT_TIMEOUT_S: u64 = 600;

#[derive(Debug)]
struct Args {
    nodes: Vec<usize>,
    model_mb: u64,
    shards: u32,
    node_mbit: u64,
    store_mbit: u64,
    rounds: usize,
    out: PathBuf,
    /// Extra `KEY=VALUE` environment for the peers phase (e.g. the transport).
    peer_env: Vec<(String, String)>,
    timeout: Duration,
    /// `peer.chunkSizeBytes` in MiB (None: the default).
    chunk_mb: Option<u64>,
    /// Only the peers contender (`--peers-only`): a quick comparison of
    /// builds or settings; `scripts/bench.py` needs both.
    peers_only: bool,
    /// `--start-skew`: applications open the model up to this far apart.
    start_skew: Option<Duration>,
    /// `--seed`: the start schedule of round r is drawn from seed + r.
    seed: u64,
}

fn usage() -> String {
    format!(
        "usage: ossc-bench-peers [--nodes 1,2,4] [--model-mb {DEFAULT_MODEL_MB}] [--shards {DEFAULT_SHARDS}] \
         [--node-mbit {DEFAULT_RATE_MBIT}] [--store-mbit {DEFAULT_RATE_MBIT}] [--rounds {DEFAULT_ROUNDS}] \
         [--peer-env KEY=VALUE]... [--chunk-mb N] [--peers-only] [--start-skew SECONDS [--seed {DEFAULT_SEED}]] \
         [--timeout-s {DEFAULT_TIMEOUT_S}] --out FILE.json\n(env OSSC_BIN / OSSC_PRELOAD_LIB: the binaries under test)"
    )
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        nodes: DEFAULT_NODES.to_vec(),
        model_mb: DEFAULT_MODEL_MB,
        shards: DEFAULT_SHARDS,
        node_mbit: DEFAULT_RATE_MBIT,
        store_mbit: DEFAULT_RATE_MBIT,
        rounds: DEFAULT_ROUNDS,
        out: PathBuf::new(),
        peer_env: Vec::new(),
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
        chunk_mb: None,
        peers_only: false,
        start_skew: None,
        seed: DEFAULT_SEED,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{}", usage());
            std::process::exit(0);
        }
        if flag == "--peers-only" {
            args.peers_only = true;
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{}", usage()))?;
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value}: {e}");
        match flag.as_str() {
            "--nodes" => {
                args.nodes = value
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?
            }
            "--model-mb" => args.model_mb = value.parse().map_err(|e| bad(&e))?,
            "--shards" => args.shards = value.parse().map_err(|e| bad(&e))?,
            "--node-mbit" => args.node_mbit = value.parse().map_err(|e| bad(&e))?,
            "--store-mbit" => args.store_mbit = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => args.rounds = value.parse().map_err(|e| bad(&e))?,
            "--chunk-mb" => args.chunk_mb = Some(value.parse().map_err(|e| bad(&e))?),
            "--out" => args.out = PathBuf::from(value),
            "--start-skew" => {
                let secs: f64 = value.parse().map_err(|e| bad(&e))?;
                args.start_skew = Some(Duration::try_from_secs_f64(secs).map_err(|e| bad(&e))?);
            }
            "--seed" => args.seed = value.parse().map_err(|e| bad(&e))?,
            "--timeout-s" => {
                args.timeout = Duration::from_secs(value.parse().map_err(|e| bad(&e))?)
            }
            "--peer-env" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| bad(&"expected KEY=VALUE"))?;
                args.peer_env.push((k.to_string(), v.to_string()));
            }
            _ => bail!("unknown flag {flag}\n{}", usage()),
        }
    }
    if args.out.as_os_str().is_empty() {
        bail!("--out is required\n{}", usage());
    }
    if args.nodes.is_empty() || args.rounds == 0 {
        bail!("--nodes and --rounds must not be empty or zero");
    }
    Ok(args)
}

/// The log line of a pull that fell back to the store (swarm_fetcher.rs).
const PULL_FAILED_LOG: &str = "pull from peer failed";
/// How many distinct pull errors each phase keeps as examples.
const PULL_ERROR_EXAMPLES: usize = 3;

/// Pulls that fell back to the store, from a node's `connector.log`: the
/// count and a few distinct error texts (the `error=` field).
fn pull_failures(dir: &Path) -> (usize, Vec<String>) {
    let log = std::fs::read_to_string(dir.join("connector.log")).unwrap_or_default();
    let mut count = 0;
    let mut examples: Vec<String> = Vec::new();
    for line in log.lines().filter(|l| l.contains(PULL_FAILED_LOG)) {
        count += 1;
        let error = line
            .split_once("error=")
            .map(|(_, rest)| rest.split(" pull from").next().unwrap_or(rest))
            .unwrap_or(line)
            .trim()
            .to_string();
        if examples.len() < PULL_ERROR_EXAMPLES && !examples.contains(&error) {
            examples.push(error);
        }
    }
    (count, examples)
}

/// Bytes a node's agent sent to its peers (its STATUS, summed over peers).
fn bytes_sent(status: Option<&Value>) -> u64 {
    status.map(ossc_cluster::bytes_sent_to_peers).unwrap_or(0)
}

/// One phase as JSON: wall, store egress, every node's bytes by source and
/// what it sent to peers.
fn phase_json(out: &PhaseOutcome, model: &Model, schedule: Option<&StartSchedule>) -> Value {
    let nodes: Vec<Value> = out
        .consumers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (pull_failures, pull_errors) = pull_failures(&c.dir);
            json!({
                "pull_failures": pull_failures,
                "pull_errors": pull_errors,
                "node": c.node,
                "opened_at_s": schedule.map(|s| s.offsets[i].as_secs_f64()),
                "wall_s": c.wall.as_secs_f64(),
                "load_seconds": c.report.get("load_seconds").cloned().unwrap_or(Value::Null),
                "bytes_store": c.bytes_from("store"),
                "bytes_peer": c.bytes_from("peer"),
                "bytes_local": c.bytes_from("local"),
                "bytes_sent": bytes_sent(c.agent_status.as_ref()),
                "bytes_pulled_by_source": c
                    .agent_status
                    .as_ref()
                    .map_or(Value::Null, |s| s["peers"]["bytes_pulled_by_source"].clone()),
                "peers": c.agent_status.as_ref().and_then(|s| s.get("peers").cloned()),
            })
        })
        .collect();
    json!({
        "wall_s": out.wall.as_secs_f64(),
        "seed": schedule.map(|s| s.seed),
        "store_bytes": out.store.bytes_served,
        "store_gets": out.store.requests.get,
        "egress_over_model": out.store.bytes_served as f64 / model.total_bytes as f64,
        "nodes": nodes,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    netns::check_available().context("the peers benchmark needs root, ip netns and tc")?;
    let bins = Binaries::locate()?;
    let work_dir = ossc_cluster::work_dir()?;
    let work = work_dir.path().to_path_buf();
    let model = Model::generate(&bins, &work, args.model_mb, args.shards)?;
    eprintln!(
        "model: {} bytes in {} files; node links {} Mbit/s, store uplink {} Mbit/s",
        model.total_bytes, model.files, args.node_mbit, args.store_mbit
    );
    let secret = ossc_cluster::new_cluster_secret();
    let mut results = Vec::new();
    for &n in &args.nodes {
        let cluster = Cluster::create(&ClusterSpec {
            nodes: n,
            node_link: Some(Rate::mbit(args.node_mbit)),
            store_uplink: Some(Rate::mbit(args.store_mbit)),
        })?;
        let store = Store::start(&cluster, &bins, &model)?;
        let mut peer_env = ossc_cluster::peer_env(&cluster, &secret);
        peer_env.extend(args.peer_env.iter().cloned());
        let config = match args.chunk_mb {
            Some(mb) => json!({"peer": {"chunkSizeBytes": mb << 20}}),
            None => Value::Null,
        };
        let mut rounds = Vec::new();
        for round in 0..args.rounds {
            let mut entry = serde_json::Map::new();
            let mut contenders = vec![("no_peers", &[][..]), ("peers", &peer_env[..])];
            if args.start_skew.is_some() {
                contenders.push(("peers_together", &peer_env[..]));
            }
            let skipped = usize::from(args.peers_only);
            for (name, env) in contenders.into_iter().skip(skipped) {
                let phase = format!("n{n}-r{round}-{name}");
                let schedule = args.start_skew.map(|skew| match name {
                    "peers_together" => StartSchedule::simultaneous(n),
                    _ => StartSchedule::random(n, skew, args.seed + round as u64),
                });
                if let Some(s) = &schedule {
                    let names: Vec<String> =
                        cluster.nodes().iter().map(|h| h.name.clone()).collect();
                    eprintln!("N={n} round {} {name}: {}", round + 1, s.describe(&names));
                }
                let out = match &schedule {
                    Some(s) => ossc_cluster::run_staggered_phase(
                        &cluster,
                        &bins,
                        &store,
                        &model,
                        &work,
                        &phase,
                        &DaemonSettings {
                            env: env.to_vec(),
                            args: Vec::new(),
                            config: config.clone(),
                        },
                        s,
                        args.timeout,
                    ),
                    None => ossc_cluster::run_phase_with_config(
                        &cluster,
                        &bins,
                        &store,
                        &model,
                        &work,
                        &phase,
                        env,
                        &config,
                        args.timeout,
                    ),
                }
                .with_context(|| format!("phase {phase}"))?;
                let sent: Vec<u64> = out
                    .consumers
                    .iter()
                    .map(|c| bytes_sent(c.agent_status.as_ref()))
                    .collect();
                let mean = sent.iter().sum::<u64>() as f64 / sent.len().max(1) as f64;
                let busiest = sent.iter().copied().max().unwrap_or(0) as f64;
                let failures: usize = out.consumers.iter().map(|c| pull_failures(&c.dir).0).sum();
                eprintln!(
                    "N={n} round {} {name}: wall {:.2} s, store egress {:.3} x model, busiest uploader {:.2} x the mean, {failures} store fallbacks",
                    round + 1,
                    out.wall.as_secs_f64(),
                    out.store.bytes_served as f64 / model.total_bytes as f64,
                    if mean > 0.0 { busiest / mean } else { 0.0 }
                );
                entry.insert(
                    name.to_string(),
                    phase_json(&out, &model, schedule.as_ref()),
                );
                // Phase directories hold a whole model per node: drop them now.
                let _ = std::fs::remove_dir_all(work.join(&phase));
            }
            rounds.push(Value::Object(entry));
        }
        results.push(json!({"nodes": n, "rounds": rounds}));
        drop(store);
        drop(cluster);
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(&model.manifest_path)?)?;
    let file_sizes: Vec<u64> = manifest["files"]
        .as_object()
        .map(|files| files.values().filter_map(|f| f["size"].as_u64()).collect())
        .unwrap_or_default();
    let report = json!({
        "model_bytes": model.total_bytes,
        "file_sizes": file_sizes,
        "model_files": model.files,
        "node_link_bits_per_sec": Rate::mbit(args.node_mbit).bits_per_sec(),
        "store_uplink_bits_per_sec": Rate::mbit(args.store_mbit).bits_per_sec(),
        "rounds": args.rounds,
        "chunk_bytes": args.chunk_mb.map(|mb| mb << 20),
        "start_skew_s": args.start_skew.map(|d| d.as_secs_f64()),
        "seed": args.start_skew.map(|_| args.seed),
        "peer_env": args.peer_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "results": results,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

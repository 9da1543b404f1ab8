//! An SGLang-style multi-node launch across network namespaces: every node
//! runs `deploy/examples/sglang-multinode.sh RANK HEAD:PORT`, so every node's
//! server is a main process (`ENABLE_CONNECTOR=1`) with `--nnodes` /
//! `--node-rank` / `--dist-init-addr`. The server is a small stand-in for
//! SGLang (`cluster-tests/launchers/sglang_like.py`, same flags): it spawns
//! one worker per local TP rank, the workers attach to the node's agent as
//! secondaries (`ENABLE_CONNECTOR=2`) and read their share of the tensors
//! through safetensors, and node 0 checks that every tensor was read exactly
//! once with the store's bytes.
//!
//! Needs root, `ip netns` and `tc`, and a Python with safetensors and numpy;
//! without them it prints a loud skip message and passes, except when env
//! `CI` is set.

use std::time::Duration;

use ossc_cluster_tests::launch::{self, Deadline, NodeFiles};
use ossc_cluster_tests::netns::{Cluster, ClusterSpec};
use ossc_cluster_tests::note;
use ossc_cluster_tests::ossc_cluster::{self, Binaries, Model, Store};
use ossc_cluster_tests::testbed::Testbed;

const NODES: usize = 2;
/// Tensor-parallel ranks in all: two per node.
const TP: usize = 4;
const MODEL_MB: u64 = 64;
const MODEL_SHARDS: u32 = 4;
/// `--dist-init-addr` port on node 0.
const DIST_PORT: u16 = 50000;
const TEST_BUDGET: Duration = Duration::from_secs(170);
/// Upper bound of the model's small files (config, tokenizer, ...), which the
/// agents mirror before the phase's counters start.
const SMALL_FILES_MAX: u64 = 1 << 20;
/// With peers, store egress at most this share of the egress without them.
const PEERS_MAX_SHARE_OF_SOLO: f64 = 0.8;

#[test]
fn sglang_style_ranks_on_every_node_load_through_that_nodes_agent() {
    const NAME: &str = "sglang_style_ranks_on_every_node_load_through_that_nodes_agent";
    let Some(python) = launch::cluster_and_python_or_skip(NAME, &["safetensors", "numpy"]) else {
        return;
    };
    let deadline = Deadline::after(TEST_BUDGET);
    let spec = ClusterSpec::uncapped(NODES);
    let bed = Testbed::start(&spec, MODEL_MB, MODEL_SHARDS).expect("testbed");
    let (cluster, model) = (&bed.cluster, &bed.model);
    let ctx = Ctx {
        bins: &bed.bins,
        python: &python,
        model,
        cluster,
        store: &bed.store,
        work: &bed.work,
        deadline,
    };
    let solo = run_phase(&ctx, "solo", &[]);
    let secret = format!(
        "sglang-test-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    );
    let peers = run_phase(&ctx, "peers", &ossc_cluster::peer_env(cluster, &secret));
    note!(
        "store egress: no peers {solo} B = {:.3}x the model, peers {peers} B = {:.3}x",
        solo as f64 / model.total_bytes as f64,
        peers as f64 / model.total_bytes as f64
    );
    // Each node's agent fetched the whole model without peers; with them the
    // nodes shared it.
    assert!(solo >= NODES as u64 * (model.total_bytes - SMALL_FILES_MAX));
    assert!(
        peers as f64 <= PEERS_MAX_SHARE_OF_SOLO * solo as f64,
        "peers: {peers} B vs {solo} B without"
    );
}

/// What every phase shares.
struct Ctx<'a> {
    bins: &'a Binaries,
    python: &'a std::path::Path,
    model: &'a Model,
    cluster: &'a Cluster,
    store: &'a Store,
    work: &'a std::path::Path,
    deadline: Deadline,
}

/// Runs the script on every node at once (fresh MODEL_DIR, socket and logs
/// per node under `work/<phase>/`), checks every rank, and returns the store's
/// egress over the phase.
fn run_phase(ctx: &Ctx, phase: &str, extra_env: &[(String, String)]) -> u64 {
    let Ctx {
        bins,
        python,
        model,
        cluster,
        store,
        work,
        deadline,
    } = *ctx;
    let work = &work.join(phase);
    let dist_init = cluster.node(0).addr(DIST_PORT).to_string();

    store.reset_stats().expect("reset");
    let files: Vec<NodeFiles> = cluster
        .nodes()
        .iter()
        .map(|n| NodeFiles::create(&work.join(&n.name), &serde_json::Value::Null).unwrap())
        .collect();
    let mut servers = Vec::new();
    for (rank, node) in cluster.nodes().iter().enumerate() {
        let mut env = launch::example_env(bins, store, model, &files[rank], python);
        env.extend(extra_env.iter().cloned());
        env.extend([
            ("MODEL".to_string(), ossc_cluster::PREFIX.to_string()),
            ("TP".to_string(), TP.to_string()),
            ("NNODES".to_string(), NODES.to_string()),
            (
                "SGLANG_SERVER".to_string(),
                format!(
                    "{} {}",
                    python.display(),
                    launch::launcher("sglang_like.py").display()
                ),
            ),
        ]);
        let report = work.join(format!("report-{rank}.json"));
        let args = [
            rank.to_string(),
            dist_init.clone(),
            "--expect-from".to_string(),
            model.store_dir().display().to_string(),
            "--report".to_string(),
            report.display().to_string(),
        ];
        let process = launch::spawn_with_env(
            node,
            std::path::Path::new("bash"),
            &launch::example("sglang-multinode.sh"),
            &args,
            &env,
        )
        .expect("server");
        servers.push((node.clone(), process, report));
    }
    let mut reports = Vec::new();
    for (node, process, report) in servers {
        let out = process
            .wait(deadline.step(TEST_BUDGET).expect("time left"))
            .unwrap_or_else(|e| panic!("{}: {e}", node.name));
        assert!(
            out.status.success(),
            "{}: server failed ({}):\n{}\n{}\n--- connector.log ---\n{}",
            node.name,
            out.status,
            out.stdout_text(),
            out.stderr_text(),
            ossc_cluster::log_tail(&work.join(&node.name), 20)
        );
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).expect("report")).unwrap();
        reports.push(r);
    }
    let stats = store.stats().expect("stats");

    let mut agents = Vec::new();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let r = &reports[i];
        let verdict = &r["verdict"];
        assert_eq!(verdict["ok"], true, "{}: {verdict}", node.name);
        assert!(verdict["tensors"].as_u64().unwrap_or(0) >= TP as u64);
        // The server: main process under the hook.
        assert_eq!(r["main"]["hooked"], true, "{}: {}", node.name, r["main"]);
        assert_eq!(r["main"]["enable_connector"], "1", "{}", node.name);
        // Its workers: secondaries under the hook, one per local rank.
        let ranks = r["ranks"].as_array().expect("ranks");
        assert_eq!(ranks.len(), TP / NODES, "{}: {ranks:?}", node.name);
        let audit = launch::audit_by_pid(&files[i].audit_log()).expect("audit log");
        for rank in ranks {
            assert_eq!(rank["hooked"], true, "{}: {rank}", node.name);
            assert_eq!(rank["enable_connector"], "2", "{}: {rank}", node.name);
            let pid = rank["pid"].as_u64().unwrap() as u32;
            let (comm, opens, bytes) = audit
                .get(&pid)
                .unwrap_or_else(|| panic!("{}: agent never served rank {rank}", node.name));
            note!(
                "{}: rank {} pid {pid} ({comm}): {opens} opens, {bytes} bytes, {} tensors",
                node.name,
                rank["rank"],
                rank["tensor_count"]
            );
            let other = launch::audit_by_pid(&files[NODES - 1 - i].audit_log()).expect("audit");
            assert!(
                !other.contains_key(&pid),
                "rank pid {pid} served by the other node"
            );
        }
        // One agent per node, in the node's namespace, without the hook.
        let (agent, status) =
            launch::node_agent(node, bins, &files[i].socket()).unwrap_or_else(|e| panic!("{e:#}"));
        let census = launch::hook_census(node, &bins.preload).expect("census");
        let ossc_processes = census.iter().filter(|p| p.comm == "ossc").count();
        note!("{}", launch::census_table(node, &census));
        assert_eq!(ossc_processes, 1, "{}: agents {census:?}", node.name);
        note!(
            "{}: agent pid {agent}, bytes by source {}",
            node.name,
            status["bytes_by_source"]
        );
        agents.push(agent);
    }
    assert_ne!(agents[0], agents[1]);
    // The next phase starts from nothing: no agent, no cache.
    for node in cluster.nodes() {
        node.kill_all().expect("kill the phase's processes");
    }
    stats.bytes_served
}

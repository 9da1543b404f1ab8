//! Multi-host tests on real Linux network namespaces (see `ossc_cluster_tests::netns`).
//!
//! They need root, `ip netns` and `tc`: without them they print a loud skip
//! message and pass — except when env `CI` is set, where they fail.
//!
//! Design decision: the tests take one process-wide lock, so they run one
//! after another even under the default parallel test runner; bandwidth
//! measurements and the 4-node loads would otherwise fight over CI's 2 cores
//! and give meaningless numbers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ossc_cluster_tests::netns::{self, Cluster, ClusterSpec, Host, Rate};
use ossc_cluster_tests::note;
use ossc_cluster_tests::ossc_cluster::{self, PhaseOutcome};
use ossc_cluster_tests::testbed::{serial, Testbed};

/// Node link cap in the bandwidth test.
const TEST_NODE_RATE: Rate = Rate::mbit(100);
/// Store uplink cap in the bandwidth test (lower than the nodes', so the
/// store's own cap is what a store transfer measures).
const TEST_STORE_RATE: Rate = Rate::mbit(50);
/// Each capped transfer lasts about this long at its cap: long enough that
/// TCP slow start and the tbf burst are noise, short enough for CI.
const TRANSFER_SECONDS: f64 = 1.0;
/// A capped transfer must reach at least this fraction of its cap (generous:
/// CI machines are slow and noisy).
const MIN_FRACTION_OF_CAP: f64 = 0.5;
/// ... and may not exceed the cap by more than this factor (tbf counts
/// Ethernet framing, so payload goodput sits at ~0.96 of the cap).
const MAX_FRACTION_OF_CAP: f64 = 1.1;
/// An uncapped veth link must be at least this many times faster than the
/// node cap (it runs at memory speed; proves the caps are what slow the rest).
const UNCAPPED_SPEEDUP: f64 = 2.0;
/// Connect timeout when a connection is expected to fail.
const UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Model size for the 4-node load: the target's "model ≥ 1 GB" (gen-model's
/// files come to 1.07 GB for 1024). Env [`MODEL_MB_ENV`] overrides it.
const MODEL_MB: u64 = 1024;
/// Env var overriding [`MODEL_MB`].
const MODEL_MB_ENV: &str = "OSSC_NETNS_MODEL_MB";
/// Shards of the generated model.
const MODEL_SHARDS: u32 = 4;
/// Nodes in the model-loading tests.
const NODES: usize = 4;
/// Node links and the store uplink in the model-loading tests (the issue's
/// "store uplink capped at B, node links at B").
const LOAD_RATE: Rate = Rate::gbit(1);
/// Without peers the store must serve at most this many times N models
/// (every node needs every byte once; a little slack for retried parts).
const NO_PEERS_MAX_FACTOR: f64 = 1.05;
/// With peers the store may serve at most this many models.
const PEERS_MAX_FACTOR: f64 = 1.1;

/// Sends `bytes` from `from` to `to` over TCP; returns (bytes received, time
/// from connect to the receiver seeing EOF).
fn tcp_transfer(from: &Host, to: &Host, bytes: u64) -> (u64, Duration) {
    let (port_tx, port_rx) = mpsc::channel();
    let receiver_host = to.clone();
    let receiver = std::thread::spawn(move || {
        receiver_host
            .run(|| {
                let listener = TcpListener::bind(receiver_host.addr(0)).expect("bind");
                port_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send");
                let (mut conn, _) = listener.accept().expect("accept");
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0u64;
                loop {
                    let n = conn.read(&mut buf).expect("read");
                    if n == 0 {
                        return (got, Instant::now());
                    }
                    got += n as u64;
                }
            })
            .expect("receiver namespace")
    });
    let addr: SocketAddr = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("receiver port");
    let start = from
        .run(|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            let start = Instant::now();
            let block = vec![0x5au8; 1 << 16];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                s.write_all(&block[..n]).expect("write");
                left -= n as u64;
            }
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            start
        })
        .expect("sender namespace");
    let (got, end) = receiver.join().expect("receiver thread");
    (got, end.duration_since(start))
}

/// Runs a capped transfer and checks its goodput against `cap`; returns Mbit/s.
fn check_capped(what: &str, from: &Host, to: &Host, cap: Rate) -> f64 {
    let bytes = (cap.bytes_per_sec() * TRANSFER_SECONDS) as u64;
    let (got, took) = tcp_transfer(from, to, bytes);
    assert_eq!(got, bytes, "{what}: bytes lost");
    let mbit = got as f64 * 8.0 / took.as_secs_f64() / 1e6;
    let cap_mbit = cap.bits_per_sec() as f64 / 1e6;
    note!(
        "{what}: {got} bytes in {:.3} s = {mbit:.1} Mbit/s (cap {cap_mbit:.0})",
        took.as_secs_f64()
    );
    assert!(
        mbit >= cap_mbit * MIN_FRACTION_OF_CAP && mbit <= cap_mbit * MAX_FRACTION_OF_CAP,
        "{what}: {mbit:.1} Mbit/s is not within [{MIN_FRACTION_OF_CAP}, {MAX_FRACTION_OF_CAP}] x the {cap_mbit} Mbit/s cap"
    );
    mbit
}

fn connect_fails(from: &Host, addr: SocketAddr) -> bool {
    from.run(|| TcpStream::connect_timeout(&addr, UNREACHABLE_TIMEOUT).is_err())
        .expect("namespace")
}

/// A listener on `host` that accepts forever (until the process ends).
fn listen_on(host: &Host) -> SocketAddr {
    let listener = host
        .run(|| TcpListener::bind(host.addr(0)).expect("bind"))
        .expect("namespace");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || for _conn in listener.incoming() {});
    addr
}

fn routes(host: &Host) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &host.netns, "route", "show"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn harness_isolation_and_bandwidth_caps() {
    if !netns::available_or_skip("harness_isolation_and_bandwidth_caps") {
        return;
    }
    let _serial = serial();
    let a = Cluster::create(&ClusterSpec {
        nodes: 2,
        node_link: Some(TEST_NODE_RATE),
        store_uplink: Some(TEST_STORE_RATE),
    })
    .expect("cluster a");
    let b = Cluster::create(&ClusterSpec::uncapped(1)).expect("cluster b");
    let names: Vec<String> = a
        .hosts()
        .chain(b.hosts())
        .map(|h| h.netns.clone())
        .collect();

    // Every host reaches every other host of its cluster.
    let hosts: Vec<&Host> = a.hosts().collect();
    for from in &hosts {
        for to in &hosts {
            if from.name != to.name {
                let (got, _) = tcp_transfer(from, to, 1024);
                assert_eq!(got, 1024, "{} -> {}", from.name, to.name);
            }
        }
    }
    // Isolation: only the cluster subnet is routed, the test's own loopback
    // is not reachable, and another cluster's hosts are not reachable.
    for host in a.hosts() {
        let r = routes(host);
        assert!(r.contains("10.231.0.0/16"), "{}: routes {r:?}", host.name);
        assert!(
            !r.contains("default"),
            "{}: has a default route: {r:?}",
            host.name
        );
    }
    let root_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let root_addr = root_listener.local_addr().expect("addr");
    assert!(
        connect_fails(a.node(0), root_addr),
        "a host reached the root namespace's loopback"
    );
    let b_addr = listen_on(b.node(0));
    assert!(
        !connect_fails(b.store(), b_addr),
        "cluster b's own hosts must reach each other"
    );
    assert!(
        connect_fails(a.node(0), b_addr),
        "cluster a reached cluster b"
    );

    // Caps: node link, store uplink (store egress = host-side qdisc; store
    // ingress = switch-side qdisc), and the store uplink shared by two nodes.
    check_capped("node0 -> node1", a.node(0), a.node(1), TEST_NODE_RATE);
    check_capped("store -> node0", a.store(), a.node(0), TEST_STORE_RATE);
    check_capped("node1 -> store", a.node(1), a.store(), TEST_STORE_RATE);
    let half = (TEST_STORE_RATE.bytes_per_sec() * TRANSFER_SECONDS / 2.0) as u64;
    let t = Instant::now();
    std::thread::scope(|s| {
        let pulls: Vec<_> = a
            .nodes()
            .iter()
            .map(|n| s.spawn(|| tcp_transfer(a.store(), n, half)))
            .collect();
        for p in pulls {
            assert_eq!(p.join().expect("pull").0, half);
        }
    });
    let shared_mbit = (2 * half) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6;
    let store_mbit = TEST_STORE_RATE.bits_per_sec() as f64 / 1e6;
    note!("store -> node0 + node1 at once: {shared_mbit:.1} Mbit/s in total (cap {store_mbit:.0})");
    assert!(
        shared_mbit <= store_mbit * MAX_FRACTION_OF_CAP
            && shared_mbit >= store_mbit * MIN_FRACTION_OF_CAP,
        "the store uplink cap is not shared: {shared_mbit:.1} Mbit/s"
    );
    // An uncapped link is much faster: the caps are what slowed the above.
    let bytes = (TEST_NODE_RATE.bytes_per_sec() * TRANSFER_SECONDS) as u64;
    let (got, took) = tcp_transfer(b.store(), b.node(0), bytes);
    let free_mbit = got as f64 * 8.0 / took.as_secs_f64() / 1e6;
    note!("uncapped store -> node0: {free_mbit:.0} Mbit/s");
    assert!(free_mbit > TEST_NODE_RATE.bits_per_sec() as f64 / 1e6 * UNCAPPED_SPEEDUP);

    // Changing a cap and partitioning a host.
    for n in a.nodes() {
        a.set_link_rate(n, None).expect("uncap");
    }
    let (_, took) = tcp_transfer(a.node(0), a.node(1), bytes);
    assert!(
        took.as_secs_f64() < TRANSFER_SECONDS / UNCAPPED_SPEEDUP,
        "uncapped node links still slow: {took:?}"
    );
    for n in a.nodes() {
        a.set_link_rate(n, Some(TEST_NODE_RATE)).expect("recap");
    }
    check_capped(
        "node0 -> node1 re-capped",
        a.node(0),
        a.node(1),
        TEST_NODE_RATE,
    );
    let n1 = listen_on(a.node(1));
    a.set_link_up(a.node(1), false).expect("down");
    assert!(
        connect_fails(a.node(0), n1),
        "node1 reachable while partitioned"
    );
    a.set_link_up(a.node(1), true).expect("up");
    assert!(
        !connect_fails(a.node(0), n1),
        "node1 unreachable after healing"
    );

    // A process started in a host runs in its namespace and is cleaned up.
    let mut sleeper = a.node(0).command("sleep");
    sleeper.arg("600");
    let mut sleeper = a.node(0).spawn(sleeper).expect("spawn");
    let pid = sleeper.pid() as i32;
    assert!(a.node(0).pids().expect("pids").contains(&pid));
    assert!(!a.node(1).pids().expect("pids").contains(&pid));

    // Drop removes every namespace and kills what runs inside.
    drop(a);
    drop(b);
    for name in names {
        assert!(
            !std::path::Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
    assert!(
        !sleeper.is_running(),
        "a process started in the cluster survived its removal"
    );
}

#[test]
fn harness_removes_leftovers_of_dead_runs() {
    if !netns::available_or_skip("harness_removes_leftovers_of_dead_runs") {
        return;
    }
    let _serial = serial();
    // No process has a pid >= pid_max: this namespace belongs to a dead run.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("pid_max number");
    let stale = format!("{}{pid_max}-0-n0", netns::NAME_PREFIX);
    let foreign = format!("ossc-foreign-{pid_max}");
    for name in [&stale, &foreign] {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("ip");
        assert!(st.success(), "ip netns add {name}");
    }
    let mut orphan = std::process::Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "600"])
        .spawn()
        .expect("sleep in the stale namespace");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ns_has_processes(&stale) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ns_has_processes(&stale), "the orphan never started");

    let removed = netns::cleanup_stale();
    let gone = !std::path::Path::new("/run/netns").join(&stale).exists();
    let foreign_kept = std::path::Path::new("/run/netns").join(&foreign).exists();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &foreign])
        .status();
    let orphan_exited = orphan.try_wait().expect("try_wait").is_some() || {
        std::thread::sleep(Duration::from_millis(200));
        orphan.try_wait().expect("try_wait").is_some()
    };
    if !orphan_exited {
        let _ = orphan.kill();
    }
    let _ = orphan.wait();
    assert!(removed >= 1 && gone, "stale namespace {stale} not removed");
    assert!(
        orphan_exited,
        "the stale namespace's process was not killed"
    );
    assert!(foreign_kept, "cleanup touched a namespace that isn't ours");
}

fn ns_has_processes(ns: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    !out.stdout.trim_ascii().is_empty()
}

/// What the model-loading tests share: the model on a capped cluster.
fn load_setup() -> Testbed {
    let size_mb = std::env::var(MODEL_MB_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MODEL_MB);
    let spec = ClusterSpec::capped(NODES, LOAD_RATE);
    Testbed::start(&spec, size_mb, MODEL_SHARDS).expect("testbed")
}

fn run(s: &Testbed, phase: &str, env: &[(String, String)]) -> PhaseOutcome {
    let no_config = serde_json::Value::Null;
    let out = s
        .run_phase(phase, env, &no_config, ossc_cluster::CONSUMER_TIMEOUT)
        .unwrap_or_else(|e| panic!("{phase}: {e:#}"));
    let factor = out.store.bytes_served as f64 / s.model.total_bytes as f64;
    note!(
        "{phase}: {} nodes, model {} bytes; store served {} bytes = {factor:.3} x model \
         ({} GETs); wall {:.2} s",
        out.consumers.len(),
        s.model.total_bytes,
        out.store.bytes_served,
        out.store.requests.get,
        out.wall.as_secs_f64()
    );
    for c in &out.consumers {
        note!(
            "  {}: {:.2} s; bytes store {} / peer {} / local {}",
            c.node,
            c.wall.as_secs_f64(),
            c.bytes_from("store"),
            c.bytes_from("peer"),
            c.bytes_from("local")
        );
    }
    out
}

/// Without peers every node pulls every byte from the store.
fn check_no_peers(s: &Testbed, out: &PhaseOutcome) {
    let model = s.model.total_bytes;
    let n = s.cluster.nodes().len() as u64;
    assert!(
        out.store.bytes_served >= n * model,
        "store served {} bytes, less than {n} models ({}) without peers",
        out.store.bytes_served,
        n * model
    );
    assert!(
        out.store.bytes_served as f64 <= (n * model) as f64 * NO_PEERS_MAX_FACTOR,
        "store served {} bytes, more than {NO_PEERS_MAX_FACTOR} x {n} models",
        out.store.bytes_served
    );
    for c in &out.consumers {
        assert_eq!(
            c.bytes_from("peer"),
            0,
            "{}: peer bytes without peers",
            c.node
        );
    }
}

#[test]
fn four_nodes_with_peers_fetch_the_model_about_once() {
    if !netns::available_or_skip("four_nodes_with_peers_fetch_the_model_about_once") {
        return;
    }
    let _serial = serial();
    let s = load_setup();
    assert!(
        s.model.total_bytes >= 1_000_000_000 || std::env::var_os(MODEL_MB_ENV).is_some(),
        "the peer test needs a model of at least 1 GB"
    );
    // Without peers (same cluster, same store, same test): every node pulls
    // the whole model.
    let baseline = run(&s, "no-peers", &[]);
    check_no_peers(&s, &baseline);
    let secret = ossc_cluster::new_cluster_secret();
    let peers = run(&s, "peers", &ossc_cluster::peer_env(&s.cluster, &secret));
    let model = s.model.total_bytes;
    assert!(
        out_factor(&peers, model) <= PEERS_MAX_FACTOR,
        "with peers the store served {:.3} x the model (limit {PEERS_MAX_FACTOR}); without: {:.3}",
        out_factor(&peers, model),
        out_factor(&baseline, model)
    );
    let from_peers: u64 = peers.consumers.iter().map(|c| c.bytes_from("peer")).sum();
    assert!(from_peers > 0, "no node reported bytes from peers");
    // Per object, the status says where each file's bytes came from, and
    // from which peer: the per-peer figures add up to the peer bytes, and
    // the files' store and peer bytes add up to the node's totals.
    for c in &peers.consumers {
        let st = c.agent_status.as_ref().expect("agent status");
        let files = st["files"].as_array().expect("files");
        let (mut store, mut peer) = (0, 0);
        for f in files {
            let from = &f["fetched_from"];
            let by_peer: u64 = from["by_peer"]
                .as_object()
                .expect("by_peer")
                .values()
                .filter_map(|v| v.as_u64())
                .sum();
            assert_eq!(by_peer, from["peer"].as_u64().unwrap(), "{}: {f}", c.node);
            assert!(
                !from["by_peer"]
                    .as_object()
                    .unwrap()
                    .contains_key(&ossc_cluster::peer_id(
                        s.cluster
                            .nodes()
                            .iter()
                            .find(|h| h.name == c.node)
                            .expect("the consumer's host")
                    )),
                "{}: a node counted bytes from itself",
                c.node
            );
            store += from["store"].as_u64().unwrap();
            peer += from["peer"].as_u64().unwrap();
        }
        // (The node's store total also counts the small files, which the
        // mirror writes to disk.)
        let small = st["catalog"]["small_bytes"].as_u64().expect("small_bytes");
        assert_eq!(store + small, c.bytes_from("store"), "{}", c.node);
        assert_eq!(peer, c.bytes_from("peer"), "{}", c.node);
    }
    note!(
        "peers: wall {:.2} s vs {:.2} s without ({:.2} x)",
        peers.wall.as_secs_f64(),
        baseline.wall.as_secs_f64(),
        peers.wall.as_secs_f64() / baseline.wall.as_secs_f64()
    );
}

fn out_factor(out: &PhaseOutcome, model: u64) -> f64 {
    out.store.bytes_served as f64 / model as f64
}

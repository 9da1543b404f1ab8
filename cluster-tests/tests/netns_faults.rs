//! The peer layer under faults, on real hosts
//! (network namespaces, see `ossc_cluster_tests::netns`). Four nodes load one
//! model with peers; one node (the "victim", the last node) misbehaves:
//!
//! - killed mid-transfer while the others pull from it,
//! - started late (after the others finished),
//! - partitioned (its link downed) mid-transfer,
//! - configured with the wrong cluster secret,
//! - serving corrupted chunks (`OSSC_FAULT_PEER_CORRUPT=1`).
//!
//! In every case each surviving node's consumer must verify every byte
//! (`ossc load-model --manifest` checks every file's and tensor's SHA-256 and
//! exits non-zero otherwise), within a bounded time.
//!
//! Needs root, `ip netns` and `tc`: without them each test prints a loud skip
//! message and passes — except when env `CI` is set, where it fails.
//!
//! Design decisions: links are capped at [`RATE`] (node links and the store
//! uplink), so a 128 MiB model takes ~10 s to spread and "mid-transfer" is a
//! wide, observable window: the victim is hit once the survivors have
//! *verified* bytes from it (their STATUS), not after a guessed sleep. Chunks are
//! [`CHUNK_BYTES`] so the model has ~80 of them and every node owns several
//! (with the default 16 MiB a node may own just one or two). The tests take
//! one process-wide lock (one cluster at a time on CI's 2 cores).

use std::time::{Duration, Instant};

use ossc_cluster_tests::netns::{self, ClusterSpec, Host, Rate};
use ossc_cluster_tests::note;
use ossc_cluster_tests::ossc_cluster::{self, ConsumerOutcome, RunningConsumer, CONSUMER_TIMEOUT};
use ossc_cluster_tests::testbed::{serial, Testbed};

/// Nodes per cluster; the last one is the victim.
const NODES: usize = 4;
/// Node links and store uplink (see the module note).
const RATE: Rate = Rate::mbit(200);
/// Model size and shards.
const MODEL_MB: u64 = 128;
const MODEL_SHARDS: u32 = 4;
/// Peer chunk size (see the module note).
const CHUNK_BYTES: u64 = 2 << 20;
/// How long to wait for the victim to start serving peers.
const SERVE_WAIT: Duration = Duration::from_secs(60);
/// The victim is hit once the survivors have verified this many bytes from
/// it (a few chunks: it is demonstrably serving them).
const HIT_AFTER_RECEIVED_BYTES: u64 = 8 << 20;
/// After a peer is killed or partitioned, the survivors must finish within
/// this long. Expected: detection (3 s without heartbeats; pulls to the
/// victim are abandoned then) + what is left of the victim's share, fetched
/// from the store once by its chunks' next owners and shared + what was left
/// of the load: 6.7–7.7 s measured (3–11 s when each survivor fetched the
/// victim's share itself). Before pulls were abandoned on death,
/// each round of pulls waiting on the victim took the full 12 s peer wait and
/// survivors needed 19–24 s.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);
/// Poll period.
const POLL: Duration = Duration::from_millis(100);
/// Store egress bound (× model) when a peer dies or is partitioned
/// mid-transfer: the victim's own partial download plus its chunks, which
/// are reassigned to their next owners and fetched once for the swarm
/// (measured 1.16–1.31; each survivor fetching them itself measured 1.8).
const FAULT_MAX_STORE_FACTOR: f64 = 1.5;
/// ... when a peer serves corrupted chunks: its own share, refetched once
/// by the next owners of its chunks (≈ 1.25; each survivor refetching them
/// itself measured 2.04).
const CORRUPT_MAX_STORE_FACTOR: f64 = 1.5;
/// ... when one node has the wrong secret: it loads alone (1 model), the
/// members share another.
const WRONG_SECRET_MAX_STORE_FACTOR: f64 = 2.1;
/// ... to a latecomer when the others hold the whole model: only the small
/// files (read from the store by every node's mirror) — measured 0.001.
const LATE_MAX_STORE_FACTOR: f64 = 0.05;

/// One cluster with a store and a model, and the cluster secret.
struct Setup {
    bed: Testbed,
    secret: String,
}

impl Setup {
    fn new() -> Setup {
        let spec = ClusterSpec::capped(NODES, RATE);
        Setup {
            bed: Testbed::start(&spec, MODEL_MB, MODEL_SHARDS).expect("testbed"),
            secret: ossc_cluster::new_cluster_secret(),
        }
    }

    fn victim(&self) -> &Host {
        self.bed.cluster.node(NODES - 1)
    }

    fn survivors(&self) -> &[Host] {
        &self.bed.cluster.nodes()[..NODES - 1]
    }

    fn env(&self) -> Vec<(String, String)> {
        ossc_cluster::peer_env(&self.bed.cluster, &self.secret)
    }

    /// Starts `node`'s consumer (and agent) with the peer layer on, plus `extra`.
    fn start(&self, node: &Host, phase: &str, extra: &[(&str, &str)]) -> RunningConsumer {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v.to_string()));
        }
        let config = serde_json::json!({"peer": {"chunkSizeBytes": CHUNK_BYTES}});
        ossc_cluster::start_consumer_with_config(
            node,
            &self.bed.bins,
            &self.bed.store,
            &self.bed.model,
            &self.bed.work.join(phase).join(&node.name),
            &env,
            &config,
        )
        .unwrap_or_else(|e| panic!("{}: start: {e:#}", node.name))
    }

    fn finish(&self, c: RunningConsumer, timeout: Duration) -> ConsumerOutcome {
        c.expect_finished(&self.bed.bins, &self.bed.model, timeout)
    }

    fn store_factor(&self) -> f64 {
        let s = self.bed.store.stats().expect("store stats");
        s.bytes_served as f64 / self.bed.model.total_bytes as f64
    }
}

/// Waits until the survivors have verified [`HIT_AFTER_RECEIVED_BYTES`] from
/// the victim (it is serving them) while every survivor's consumer is still
/// loading; returns that count.
fn wait_mid_transfer(s: &Setup, others: &mut [RunningConsumer]) -> u64 {
    let victim_id = ossc_cluster::peer_id(s.victim());
    let deadline = Instant::now() + SERVE_WAIT;
    loop {
        let received: u64 = others
            .iter()
            .filter_map(|c| c.agent_status(&s.bed.bins))
            .map(|st| ossc_cluster::peer_counter(&st, &victim_id, "bytes_received"))
            .sum();
        if received >= HIT_AFTER_RECEIVED_BYTES {
            for c in others.iter_mut() {
                assert!(
                    c.is_running(),
                    "{} finished before the victim was hit: the test did not hit mid-transfer",
                    c.node().name
                );
            }
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "the survivors got only {received} bytes from the victim within {SERVE_WAIT:?}"
        );
        std::thread::sleep(POLL);
    }
}

fn report(what: &str, outcomes: &[ConsumerOutcome], s: &Setup) {
    note!(
        "{what}: model {} bytes; store served {:.3} x model",
        s.bed.model.total_bytes,
        s.store_factor()
    );
    for c in outcomes {
        note!(
            "  {}: {:.2} s; bytes store {} / peer {}",
            c.node,
            c.wall.as_secs_f64(),
            c.bytes_from("store"),
            c.bytes_from("peer")
        );
    }
}

/// With the store's counters reset, every node loads at once, the victim with
/// `victim_env` on top; returns every node's outcome (the victim's last),
/// reported.
fn all_load_with_the_victim_under(
    s: &Setup,
    phase: &str,
    victim_env: &[(&str, &str)],
) -> Vec<ConsumerOutcome> {
    s.bed.store.reset_stats().expect("reset");
    let mut running: Vec<RunningConsumer> = s
        .survivors()
        .iter()
        .map(|n| s.start(n, phase, &[]))
        .collect();
    running.push(s.start(s.victim(), phase, victim_env));
    let outcomes: Vec<ConsumerOutcome> = running
        .into_iter()
        .map(|c| s.finish(c, CONSUMER_TIMEOUT))
        .collect();
    report(phase, &outcomes, s);
    outcomes
}

/// Starts every node, hits the victim mid-transfer with `hit`, and checks
/// that the survivors finish with exact bytes within [`RECOVERY_BOUND`].
fn survivors_recover(
    s: &Setup,
    phase: &str,
    hit: impl FnOnce(&Setup),
) -> (Vec<ConsumerOutcome>, u64, Duration) {
    s.bed.store.reset_stats().expect("reset");
    let mut running: Vec<RunningConsumer> = s
        .bed
        .cluster
        .nodes()
        .iter()
        .map(|n| s.start(n, phase, &[]))
        .collect();
    let victim = running.pop().expect("victim");
    let received_before = wait_mid_transfer(s, &mut running);
    hit(s);
    let hit_at = Instant::now();
    note!("{phase}: victim hit after the survivors verified {received_before} bytes from it");
    let outcomes: Vec<ConsumerOutcome> = running
        .into_iter()
        // (The wait's timeout counts from each consumer's start; the
        // recovery bound is checked below.)
        .map(|c| s.finish(c, CONSUMER_TIMEOUT))
        .collect();
    let recovery = hit_at.elapsed();
    drop(victim);
    report(phase, &outcomes, s);
    note!(
        "{phase}: survivors done {:.2} s after the hit",
        recovery.as_secs_f64()
    );
    assert!(
        recovery <= RECOVERY_BOUND,
        "survivors took {recovery:?} after the hit"
    );
    assert!(
        s.store_factor() <= FAULT_MAX_STORE_FACTOR,
        "{phase}: the store served {:.3} x the model (bound {FAULT_MAX_STORE_FACTOR})",
        s.store_factor()
    );
    (outcomes, received_before, recovery)
}

#[test]
fn a_peer_killed_mid_transfer_leaves_the_survivors_with_exact_bytes() {
    if !netns::available_or_skip("a_peer_killed_mid_transfer_leaves_the_survivors_with_exact_bytes")
    {
        return;
    }
    let _serial = serial();
    let s = Setup::new();
    let (outcomes, received_before, _) = survivors_recover(&s, "killed", |s| {
        let killed = s
            .victim()
            .kill_all()
            .expect("kill the victim's agent and consumer");
        assert!(killed >= 1, "nothing ran on the victim");
    });
    // The survivors did get data from the victim before it died, and have
    // their whole model anyway (the consumer verified every byte).
    let victim_id = ossc_cluster::peer_id(s.victim());
    let from_victim: u64 = outcomes
        .iter()
        .filter_map(|c| c.agent_status.as_ref())
        .map(|st| ossc_cluster::peer_counter(st, &victim_id, "bytes_received"))
        .sum();
    assert!(
        from_victim >= received_before && from_victim > 0,
        "survivors kept {from_victim} bytes from the victim ({received_before} before the kill)"
    );
    for c in &outcomes {
        assert!(c.bytes_from("peer") > 0, "{}: nothing from peers", c.node);
    }
}

#[test]
fn a_partitioned_peer_leaves_the_survivors_with_exact_bytes_in_bounded_time() {
    if !netns::available_or_skip(
        "a_partitioned_peer_leaves_the_survivors_with_exact_bytes_in_bounded_time",
    ) {
        return;
    }
    let _serial = serial();
    let s = Setup::new();
    let (outcomes, _, _) = survivors_recover(&s, "partitioned", |s| {
        s.bed
            .cluster
            .set_link_up(s.victim(), false)
            .expect("take the victim's link down");
    });
    // Every survivor sees the victim dead by now (heartbeats time out).
    let victim_id = ossc_cluster::peer_id(s.victim());
    for c in &outcomes {
        let st = c.agent_status.as_ref().expect("survivor status");
        let alive = st["peers"]["alive"].as_array().expect("alive list");
        assert!(
            !alive.iter().any(|a| a.as_str() == Some(victim_id.as_str())),
            "{}: the partitioned victim is still alive in {alive:?}",
            c.node
        );
    }
    s.victim().kill_all().expect("kill the victim");
    s.bed.cluster.set_link_up(s.victim(), true).expect("heal");
}

#[test]
fn a_late_joiner_gets_exact_bytes_from_peers() {
    if !netns::available_or_skip("a_late_joiner_gets_exact_bytes_from_peers") {
        return;
    }
    let _serial = serial();
    let s = Setup::new();
    // The first three load while the fourth is down (they wait out the
    // start-up grace for it, then split among themselves).
    let first: Vec<RunningConsumer> = s
        .survivors()
        .iter()
        .map(|n| s.start(n, "late", &[]))
        .collect();
    let first: Vec<ConsumerOutcome> = first
        .into_iter()
        .map(|c| s.finish(c, CONSUMER_TIMEOUT))
        .collect();
    report("late: first three", &first, &s);
    // Their agents stay up (expireTimeSec) holding the model; the latecomer
    // joins and pulls what it does not own from them.
    s.bed.store.reset_stats().expect("reset");
    let late = s.start(s.victim(), "late", &[]);
    let late = s.finish(late, CONSUMER_TIMEOUT);
    let factor = s.store_factor();
    report("late: latecomer", std::slice::from_ref(&late), &s);
    let (peer, store) = (late.bytes_from("peer"), late.bytes_from("store"));
    assert!(
        peer > store,
        "the latecomer got {peer} bytes from peers and {store} from the store"
    );
    assert!(
        factor <= LATE_MAX_STORE_FACTOR,
        "the store served {factor:.3} x the model to the latecomer alone (bound \
         {LATE_MAX_STORE_FACTOR}): it should pull even the chunks it owns from their holders"
    );
    let late_id = ossc_cluster::peer_id(s.victim());
    let served: u64 = first
        .iter()
        .filter_map(|c| {
            ossc_cluster::query_agent_status(
                &s.bed.bins,
                &c.dir.join("agent").join("connector.sock"),
            )
        })
        .map(|st| ossc_cluster::peer_counter(&st, &late_id, "bytes_sent"))
        .sum();
    assert!(
        served >= peer,
        "the first three served {served} bytes to the latecomer, which kept {peer} from peers"
    );
}

#[test]
fn a_node_with_the_wrong_secret_gets_nothing_and_corrupts_nothing() {
    if !netns::available_or_skip("a_node_with_the_wrong_secret_gets_nothing_and_corrupts_nothing") {
        return;
    }
    let _serial = serial();
    let s = Setup::new();
    let wrong = format!("{}-but-wrong", s.secret);
    let outcomes = all_load_with_the_victim_under(
        &s,
        "wrong-secret",
        &[("OSS_CONNECTOR_CLUSTER_SECRET", wrong.as_str())],
    );
    assert!(
        s.store_factor() <= WRONG_SECRET_MAX_STORE_FACTOR,
        "wrong secret: the store served {:.3} x the model",
        s.store_factor()
    );
    let intruder = &outcomes[NODES - 1];
    let intruder_id = ossc_cluster::peer_id(s.victim());
    // It loaded exact bytes (verified by its consumer), all from the store.
    assert_eq!(
        intruder.bytes_from("peer"),
        0,
        "the intruder got peer bytes"
    );
    let st = intruder.agent_status.as_ref().expect("intruder status");
    assert_eq!(
        ossc_cluster::bytes_sent_to_peers(st),
        0,
        "the intruder served someone: {st}"
    );
    for member in &outcomes[..NODES - 1] {
        let st = member.agent_status.as_ref().expect("member status");
        assert_eq!(
            ossc_cluster::peer_counter(st, &intruder_id, "bytes_sent"),
            0,
            "{} sent bytes to the intruder",
            member.node
        );
        assert_eq!(
            ossc_cluster::peer_counter(st, &intruder_id, "bytes_received"),
            0,
            "{} took bytes from the intruder",
            member.node
        );
        assert!(
            member.bytes_from("peer") > 0,
            "{}: no peer bytes",
            member.node
        );
    }
    // No log holds the secret (nor the intruder's).
    for c in &outcomes {
        let log = std::fs::read_to_string(c.dir.join("connector.log")).unwrap_or_default();
        assert!(
            !log.contains(&s.secret) && !log.contains(&wrong),
            "{}: a secret is in the log",
            c.node
        );
    }
}

#[test]
fn a_peer_serving_corrupted_chunks_is_detected_and_bypassed() {
    if !netns::available_or_skip("a_peer_serving_corrupted_chunks_is_detected_and_bypassed") {
        return;
    }
    let _serial = serial();
    let s = Setup::new();
    let outcomes =
        all_load_with_the_victim_under(&s, "corrupt", &[("OSSC_FAULT_PEER_CORRUPT", "1")]);
    assert!(
        s.store_factor() <= CORRUPT_MAX_STORE_FACTOR,
        "corrupting peer: the store served {:.3} x the model (bound {CORRUPT_MAX_STORE_FACTOR})",
        s.store_factor()
    );
    let bad = ossc_cluster::peer_id(s.victim());
    for c in &outcomes[..NODES - 1] {
        let st = c.agent_status.as_ref().expect("status");
        // Nothing from the corrupter was kept...
        assert_eq!(
            ossc_cluster::peer_counter(st, &bad, "bytes_received"),
            0,
            "{} kept bytes from the corrupting peer",
            c.node
        );
        assert!(
            ossc_cluster::peer_counter(st, &bad, "failures") > 0,
            "{}: no failure recorded against the corrupting peer",
            c.node
        );
        // ...and the log names it.
        let log = std::fs::read_to_string(c.dir.join("connector.log")).unwrap_or_default();
        let named = log
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&bad) && l.contains("CRC-64 mismatch"));
        assert!(
            named,
            "{}: no warning naming {bad} and a CRC-64 mismatch\n{}",
            c.node,
            ossc_cluster::log_tail(&c.dir, 30)
        );
        // Good peers still helped.
        assert!(c.bytes_from("peer") > 0, "{}: no peer bytes", c.node);
    }
}

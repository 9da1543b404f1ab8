//! Faults under relay, on real hosts (network namespaces, see
//! `ossc_cluster_tests::netns`): N = 8 nodes load one model at once while
//! every node serves the chunks it is still receiving, and three of them
//! misbehave in the same run:
//!
//! - one is killed mid-transfer ([`KILLED`]),
//! - one is partitioned (its link downed) mid-transfer ([`PARTITIONED`]),
//! - one serves corrupted chunks from the start ([`CORRUPTING`],
//!   `OSSC_FAULT_PEER_CORRUPT=1`).
//!
//! The other five nodes (the survivors) and the corrupting node itself must
//! finish with every byte exact (`ossc load-model --manifest` checks every
//! file's and tensor's SHA-256), the store must send the misbehaving
//! nodes' shares at most once more (see below), and the loads must end within
//! [`MAX_TIME_OVER_FAULT_FREE`] × the time of the same eight nodes loading
//! without faults, measured first in the same test on the same cluster.
//!
//! Needs root, `ip netns` and `tc`: without them it prints a loud skip
//! message and passes, except when env `CI` is set.
//!
//! Design decisions:
//! - **B = [`RATE`] = 50 Mbit/s on every node link and on the store's
//!   uplink, model [`MODEL_MB`] = 128 MiB (gen-model writes ~165 MB, ~26 s
//!   of wire time at B), chunks of [`CHUNK_BYTES`] = 2 MiB (~80 chunks,
//!   ~10 per node).** At 50 Mbit/s the eight nodes' TLS peer traffic
//!   (~50 MB/s in all) leaves the 2 cores room (at 100 Mbit/s
//!   `netns_relay` measured them saturated), so the links rather than the
//!   CPUs pace the loads; on a machine shared with other builds the
//!   fault-free run still took ~1.9× its wire time, and the ratio of the two
//!   runs, side by side in one process, is what is asserted. ~26 s of wire
//!   time makes the membership's fixed ~3 s detection delay a small part of
//!   the fault run, and the whole test takes about two minutes (model,
//!   cluster and both runs). Small chunks give each node several to own
//!   and relay.
//! - **The victims are hit once the survivors have verified bytes from
//!   them** (their agents' STATUS: [`HIT_AFTER_RECEIVED_BYTES`] from each
//!   of the two, and some bytes through relays), not after a guessed
//!   sleep; the test fails if a survivor had already finished by then.
//! - **Egress bound: each misbehaving node's share is fetched once more,
//!   for the swarm.** The corrupting node fetches its chunks from the store,
//!   then every survivor excludes it and their next owners fetch them again.
//!   A victim's chunks are fetched again by their next owners unless a
//!   survivor held them complete at the hit, which in practice none does:
//!   every node's uploads share its link, so all chunks progress side by
//!   side and complete late (the first verified peer bytes arrive about
//!   half-way through), while a victim holds most of its share from the
//!   store by then. So the test asserts egress ≤ the fault-free run's +
//!   [`EXTRA_FETCHES_OF_A_FAULTY_SHARE`] × the three nodes' shares (each
//!   node's store bytes in the fault-free run, where ownership is the
//!   same); the 2/7 is for chunks whose next owner is another misbehaving
//!   node (2 of the 7 others), fetched a third time. Survivors fetching a
//!   faulty node's chunks each for themselves would cost up to five times
//!   its share. The target of [`EGRESS_TARGET`] × the model is reported,
//!   not asserted: ~1 + 3/8 is about what this design costs, and ownership
//!   luck moves it by several chunks either way (docs/benchmarks.md §3).
//! - **Time bound** ([`MAX_TIME_OVER_FAULT_FREE`]): the store has to send the
//!   extra shares at B, and each death is seen only after the membership's
//!   detection delay.

use std::time::{Duration, Instant};

use ossc_cluster_tests::netns::{self, ClusterSpec, Host, Rate};
use ossc_cluster_tests::note;
use ossc_cluster_tests::ossc_cluster::{
    self, ConsumerOutcome, RunningConsumer, CONSUMER_TIMEOUT, STORE_FALLBACK_LOG,
};
use ossc_cluster_tests::testbed::{serial, Testbed};

const NODES: usize = 8;
/// The node killed mid-transfer.
const KILLED: usize = 5;
/// The node whose link is taken down mid-transfer.
const PARTITIONED: usize = 6;
/// The node that serves corrupted chunks.
const CORRUPTING: usize = 7;
/// Node links and store uplink (see the module note).
const RATE: Rate = Rate::mbit(50);
const MODEL_MB: u64 = 128;
const MODEL_SHARDS: u32 = 4;
const CHUNK_BYTES: u64 = 2 << 20;
/// The victims are hit once the survivors have verified this many bytes
/// from each of them (four chunks: both are demonstrably serving).
const HIT_AFTER_RECEIVED_BYTES: u64 = 8 << 20;
/// How long the survivors may take to get there (measured 22–28 s: the
/// first chunks complete about half-way through the load).
const SERVE_WAIT: Duration = Duration::from_secs(90);
/// Poll period of the survivors' STATUS while waiting to hit.
const POLL: Duration = Duration::from_millis(200);
/// The egress target (× the model): reported, not asserted (see the module
/// note).
const EGRESS_TARGET: f64 = 1.3;
/// How many times more than once the store may send a misbehaving node's
/// share (see the module note).
const EXTRA_FETCHES_OF_A_FAULTY_SHARE: f64 = 1.0 + 2.0 / 7.0;
/// Bound of the fault run's time over the fault-free run's.
const MAX_TIME_OVER_FAULT_FREE: f64 = 1.5;

/// What a node is in the fault run.
fn role(i: usize) -> &'static str {
    match i {
        KILLED => "killed",
        PARTITIONED => "partitioned",
        CORRUPTING => "corrupting",
        _ => "survivor",
    }
}

/// The nodes that must finish: every node but the killed and the
/// partitioned one.
fn finishers() -> impl Iterator<Item = usize> {
    (0..NODES).filter(|&i| i != KILLED && i != PARTITIONED)
}

/// The survivors: the finishers that misbehave in no way.
fn is_survivor(i: usize) -> bool {
    role(i) == "survivor"
}

/// Waits until the survivors (the running consumers of `running` at
/// [`is_survivor`] indices) have verified [`HIT_AFTER_RECEIVED_BYTES`] from
/// each of `victims` and pulled some bytes through relays, with every one of
/// them still loading; returns the bytes verified from each victim.
fn wait_mid_transfer(
    bed: &Testbed,
    running: &mut [RunningConsumer],
    victims: &[String],
) -> Vec<u64> {
    let deadline = Instant::now() + SERVE_WAIT;
    loop {
        let statuses: Vec<serde_json::Value> = running
            .iter()
            .enumerate()
            .filter(|(i, _)| is_survivor(*i))
            .filter_map(|(_, c)| c.agent_status(&bed.bins))
            .collect();
        let received: Vec<u64> = victims
            .iter()
            .map(|v| {
                statuses
                    .iter()
                    .map(|st| ossc_cluster::peer_counter(st, v, "bytes_received"))
                    .sum()
            })
            .collect();
        let relayed: u64 = statuses
            .iter()
            .map(ossc_cluster::bytes_pulled_from_relays)
            .sum();
        if relayed > 0 && received.iter().all(|&r| r >= HIT_AFTER_RECEIVED_BYTES) {
            for c in running.iter_mut() {
                assert!(
                    c.is_running(),
                    "{} finished before the victims were hit: the test did not hit mid-transfer",
                    c.node().name
                );
            }
            note!(
                "faults: hit after the survivors verified {received:?} bytes from {victims:?} \
                 and {relayed} through relays"
            );
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "within {SERVE_WAIT:?} the survivors verified only {received:?} bytes from \
             {victims:?} and {relayed} through relays"
        );
        std::thread::sleep(POLL);
    }
}

/// Lines of a node's log that warn of a CRC-64 mismatch in bytes from `peer`.
fn crc_mismatches_from(c: &ConsumerOutcome, peer: &str) -> usize {
    std::fs::read_to_string(c.dir.join("connector.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(peer) && l.contains("CRC-64 mismatch"))
        .count()
}

/// One line per node: role, time, bytes by source, bytes sent, fallbacks.
fn report_node(
    host: &Host,
    role: &str,
    c: Option<&ConsumerOutcome>,
    st: Option<&serde_json::Value>,
) {
    let mb = |b: u64| b as f64 / 1e6;
    let by = |src: &str| {
        st.and_then(|s| s["bytes_by_source"][src].as_u64())
            .unwrap_or(0)
    };
    note!(
        "  {} ({}): {}; MB received store {:.1} / peer {:.1} (from relays {:.1}); MB sent {:.1}; \
         {} store fallbacks",
        host.name,
        role,
        c.map(|c| format!(
            "{:.2} s (verify {:.2} s)",
            c.wall.as_secs_f64(),
            c.report["verify_seconds"].as_f64().unwrap_or(f64::NAN)
        ))
        .unwrap_or_else(|| "did not finish".into()),
        mb(by("store")),
        mb(by("peer")),
        mb(st.map(ossc_cluster::bytes_pulled_from_relays).unwrap_or(0)),
        mb(st.map(ossc_cluster::bytes_sent_to_peers).unwrap_or(0)),
        c.map(|c| ossc_cluster::store_fallbacks(&c.dir).to_string())
            .unwrap_or_else(|| "?".into()),
    );
}

#[test]
fn eight_relaying_nodes_survive_a_kill_a_partition_and_a_corrupting_peer_at_once() {
    let name = "eight_relaying_nodes_survive_a_kill_a_partition_and_a_corrupting_peer_at_once";
    if !netns::available_or_skip(name) {
        return;
    }
    let _serial = serial();
    let bed =
        Testbed::start(&ClusterSpec::capped(NODES, RATE), MODEL_MB, MODEL_SHARDS).expect("testbed");
    let secret = ossc_cluster::new_cluster_secret();
    let env = ossc_cluster::peer_env(&bed.cluster, &secret);
    let config = serde_json::json!({"peer": {"chunkSizeBytes": CHUNK_BYTES}});
    let model_bytes = bed.model.total_bytes as f64;

    // The reference: the same eight nodes, no fault.
    let fault_free = bed
        .run_phase("fault-free", &env, &config, CONSUMER_TIMEOUT)
        .expect("fault-free phase");
    let fault_free_egress = fault_free.store.bytes_served as f64 / model_bytes;
    // Each node's share: what it fetched from the store without faults.
    let faulty_shares: f64 = [KILLED, PARTITIONED, CORRUPTING]
        .iter()
        .map(|&i| fault_free.consumers[i].bytes_from("store") as f64 / model_bytes)
        .sum();
    let max_egress = fault_free_egress + EXTRA_FETCHES_OF_A_FAULTY_SHARE * faulty_shares;
    note!(
        "fault-free: N = {NODES}, B = {} Mbit/s, model {} bytes ({} chunks of {CHUNK_BYTES}): \
         {:.2} s (wire time {:.2} s); store egress {fault_free_egress:.3} x model",
        RATE.bits_per_sec() / 1_000_000,
        bed.model.total_bytes,
        bed.model.total_bytes.div_ceil(CHUNK_BYTES),
        fault_free.wall.as_secs_f64(),
        RATE.seconds_for(bed.model.total_bytes),
    );
    for (host, c) in bed.cluster.nodes().iter().zip(&fault_free.consumers) {
        report_node(host, "fault-free", Some(c), c.agent_status.as_ref());
    }

    // The fault run.
    bed.store.reset_stats().expect("reset the store's counters");
    let nodes = bed.cluster.nodes();
    let ids: Vec<String> = nodes.iter().map(ossc_cluster::peer_id).collect();
    let t0 = Instant::now();
    let mut running: Vec<RunningConsumer> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut env = env.clone();
            if i == CORRUPTING {
                env.push(("OSSC_FAULT_PEER_CORRUPT".into(), "1".into()));
            }
            ossc_cluster::start_consumer_with_config(
                node,
                &bed.bins,
                &bed.store,
                &bed.model,
                &bed.work.join("faults").join(&node.name),
                &env,
                &config,
            )
            .unwrap_or_else(|e| panic!("{}: start: {e:#}", node.name))
        })
        .collect();
    let victims = [ids[KILLED].clone(), ids[PARTITIONED].clone()];
    let received_before_hit = wait_mid_transfer(&bed, &mut running, &victims);
    let killed = nodes[KILLED].kill_all().expect("kill a victim");
    assert!(killed >= 1, "nothing ran on {}", nodes[KILLED].name);
    bed.cluster
        .set_link_up(&nodes[PARTITIONED], false)
        .expect("take a victim's link down");
    let hit_at = t0.elapsed();

    // Each finisher's wait counts from its own start (they run side by side).
    let mut outcomes: Vec<Option<ConsumerOutcome>> = Vec::new();
    let mut partitioned = None;
    for (i, c) in running.into_iter().enumerate() {
        outcomes.push(match i {
            KILLED => None,
            PARTITIONED => {
                partitioned = Some(c);
                None
            }
            _ => Some(c.expect_finished(&bed.bins, &bed.model, CONSUMER_TIMEOUT)),
        });
    }
    let fault_time = t0.elapsed();
    let egress = bed.store.stats().expect("store stats").bytes_served as f64 / model_bytes;
    // The partitioned node's agent still answers on its socket (a path).
    let partitioned_status = partitioned.as_ref().and_then(|c| c.agent_status(&bed.bins));
    drop(partitioned);
    nodes[PARTITIONED]
        .kill_all()
        .expect("kill the partitioned node");
    bed.cluster
        .set_link_up(&nodes[PARTITIONED], true)
        .expect("heal the partition");

    let ratio = fault_time.as_secs_f64() / fault_free.wall.as_secs_f64();
    note!(
        "faults: victims hit at {:.2} s; finishers done at {:.2} s: {ratio:.2} x the fault-free \
         run; store egress {egress:.3} x model (target {EGRESS_TARGET}: {}; bound {max_egress:.3}: \
         the fault-free {fault_free_egress:.3} + {EXTRA_FETCHES_OF_A_FAULTY_SHARE:.2} x the \
         faulty nodes' shares {faulty_shares:.3})",
        hit_at.as_secs_f64(),
        fault_time.as_secs_f64(),
        if egress <= EGRESS_TARGET {
            "met"
        } else {
            "missed"
        },
    );
    for (i, (host, c)) in nodes.iter().zip(&outcomes).enumerate() {
        let st = match i {
            PARTITIONED => partitioned_status.as_ref(),
            _ => c.as_ref().and_then(|c| c.agent_status.as_ref()),
        };
        report_node(host, role(i), c.as_ref(), st);
    }
    let finished: Vec<(usize, &ConsumerOutcome)> = finishers()
        .map(|i| (i, outcomes[i].as_ref().expect("a finisher's outcome")))
        .collect();
    let survivors: Vec<&ConsumerOutcome> = finished
        .iter()
        .filter(|(i, _)| is_survivor(*i))
        .map(|(_, c)| *c)
        .collect();
    let status = |c: &ConsumerOutcome| c.agent_status.clone().expect("a finisher's STATUS");
    let from_all_survivors = |peer: &str, counter: &str| -> u64 {
        survivors
            .iter()
            .map(|c| ossc_cluster::peer_counter(&status(c), peer, counter))
            .sum()
    };
    let mismatches: usize = survivors
        .iter()
        .map(|c| crc_mismatches_from(c, &ids[CORRUPTING]))
        .sum();
    let fallbacks: usize = finished
        .iter()
        .map(|(_, c)| ossc_cluster::store_fallbacks(&c.dir))
        .sum();
    note!(
        "faults: survivors kept {} bytes from the killed node, {} from the partitioned one, {} \
         from the corrupting one; {mismatches} CRC-64 mismatches from it logged, {} failures \
         counted against it; {fallbacks} store fallbacks (\"{STORE_FALLBACK_LOG}\")",
        from_all_survivors(&ids[KILLED], "bytes_received"),
        from_all_survivors(&ids[PARTITIONED], "bytes_received"),
        from_all_survivors(&ids[CORRUPTING], "bytes_received"),
        from_all_survivors(&ids[CORRUPTING], "failures"),
    );

    // Every finisher verified every byte (expect_finished above); the
    // survivors kept what they had verified from the victims before the hit.
    for (victim, before) in victims.iter().zip(&received_before_hit) {
        let kept = from_all_survivors(victim, "bytes_received");
        assert!(
            kept >= *before,
            "the survivors kept {kept} bytes from {victim}, {before} before the hit"
        );
    }
    // The partitioned node is dead to every finisher.
    for (_, c) in &finished {
        let st = status(c);
        let alive = st["peers"]["alive"].as_array().expect("alive list");
        assert!(
            !alive
                .iter()
                .any(|a| a.as_str() == Some(ids[PARTITIONED].as_str())),
            "{}: the partitioned node is still alive in {alive:?}",
            c.node
        );
    }
    // The corrupting node served, was caught, and nothing of it was kept.
    let corrupting = outcomes[CORRUPTING].as_ref().expect("corrupting outcome");
    let served_corrupt = ossc_cluster::bytes_sent_to_peers(&status(corrupting));
    assert!(
        served_corrupt > 0,
        "the corrupting node served nothing: the test checked no corruption"
    );
    assert!(
        mismatches > 0 && from_all_survivors(&ids[CORRUPTING], "failures") > 0,
        "the corrupting node sent {served_corrupt} bytes, yet no survivor logged a CRC-64 \
         mismatch from it ({mismatches}) or counted a failure"
    );
    for c in &survivors {
        assert_eq!(
            ossc_cluster::peer_counter(&status(c), &ids[CORRUPTING], "bytes_received"),
            0,
            "{} kept bytes from the corrupting node",
            c.node
        );
        assert!(c.bytes_from("peer") > 0, "{}: nothing from peers", c.node);
    }
    assert!(
        egress <= max_egress,
        "the store served {egress:.3} x the model under faults (bound {max_egress:.3}: the \
         faulty nodes' shares, {faulty_shares:.3} x the model, were fetched more than once more)"
    );
    assert!(
        ratio <= MAX_TIME_OVER_FAULT_FREE,
        "the fault run took {:.2} s, {ratio:.2} x the fault-free {:.2} s (bound \
         {MAX_TIME_OVER_FAULT_FREE})",
        fault_time.as_secs_f64(),
        fault_free.wall.as_secs_f64()
    );
}

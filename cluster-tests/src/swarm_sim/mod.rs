//! An event-level simulator of the peer layer: N agents loading one model
//! from one store, to predict times, store egress and per-node traffic at
//! cluster sizes the netns lab cannot build (`ossc-swarm-sim`, results in
//! docs/benchmarks.md "Event-level scaling simulator").
//!
//! Design decisions:
//! - **Events, not fluids.** Agent start-ups, membership rounds, Have
//!   rounds, every store GET (with its first-byte latency), every pull
//!   (request, book check, pieces, stall and wait timers, fallbacks) and
//!   every piece that lands are explicit events; only the sharing of a
//!   link's bandwidth between the transfers on it at one moment is
//!   computed ([`links`]: max-min fair shares, recomputed at the links an
//!   event touches). A piece (1–8 MiB) is the unit of events; a piece a
//!   source is still receiving can be forwarded, completing with the
//!   source's copy, so cut-through costs no store-and-forward per hop
//!   (`stream.rs`).
//! - **Today's code is the baseline**, constant for constant: 16 MiB chunks
//!   owned by rendezvous hashing with the peer layer's SHA-256 weights,
//!   8 MiB store parts FIFO with `vcpus × workers` in flight, 16 pulls in
//!   flight, the prefetch window, Have rounds every 500 ms, 1 MiB frames
//!   with a 5 s stall timer, 60 s peer wait, 3 s book wait, three sources
//!   before the store (`transfer.rs`, [`sources`], [`scenario`]).
//!   [`campaign`] holds the measured points and the published runs.
//! - **The relay design** is one switch away (`Scenario::with_relay`):
//!   per-chunk pipelined trees that serve what they are still receiving,
//!   gossip membership, have-maps on membership messages, objects opened on
//!   request, two objects in flight at least.
//! - **Deterministic**: one seed fixes the ring (cluster address, ETags),
//!   start offsets, source picks and gossip targets, and ties between
//!   simultaneous events resolve by a fixed order.
//! - **Left out**: CPU spent on transfers (TLS, CRC), TCP dynamics (slow
//!   start, losses, unfairness between flows on one link), node failures,
//!   store throttling beyond the account cap. The one-machine lab's shared
//!   cores are modelled only for the SHA-256 passes (`Cpu::shared_cores`).

pub mod campaign;
mod due;
pub mod layout;
pub mod links;
pub mod membership;
pub mod report;
pub mod rng;
pub mod scenario;
mod sim;
pub mod sources;
mod stream;
mod transfer;

pub use report::Outcome;
pub use scenario::Scenario;

/// Simulates one run.
pub fn run(sc: &Scenario) -> Outcome {
    sim::Sim::new(sc, None).run()
}

#[cfg(test)]
mod tests {
    use super::layout::Ranking;
    use super::scenario::{Cpu, HaveMode, Messages, Policy, MIB};
    use super::*;

    fn quiet(mut sc: Scenario) -> Scenario {
        sc.messages = Messages {
            hello: 0.0,
            have: 0.0,
            gossip: 0.0,
            rumor: 0.0,
        };
        sc.have = HaveMode::Piggyback;
        sc.cpu = Cpu {
            verify: 0.0,
            consume: 0.0,
            shared_cores: 0.0,
        };
        sc.small_bytes = 0;
        sc.rtt = 0.0;
        sc
    }

    /// `nodes` on 100 MiB/s links, one file of `size` in pieces of `piece`,
    /// a store without a cap and 10 ms to first byte.
    fn small(nodes: usize, size: u64, piece: u64, store_conc: usize, t0: f64) -> Scenario {
        let mut sc = quiet(Scenario::bench266(nodes, 0.0));
        sc.files = vec![size];
        sc.piece = piece;
        sc.node_up = 100.0 * MIB as f64;
        sc.node_down = 100.0 * MIB as f64;
        sc.store_cap = 1e15;
        sc.store_latency = 0.01;
        sc.store_conc = store_conc;
        sc.t0 = t0;
        sc
    }

    #[test]
    fn one_node_takes_the_analytic_time() {
        // One 64 MiB file in eight 8 MiB parts, all in flight: t0 +
        // latency + M / B.
        let o = run(&small(1, 64 * MIB, 4 * MIB, 32, 0.25));
        assert!(
            (o.time_all - (0.25 + 0.01 + 0.64)).abs() < 1e-9,
            "{}",
            o.time_all
        );
        assert_eq!(o.egress_over_model, 1.0);
        // Four in flight: two waves, each paying the first-byte latency.
        let o = run(&small(1, 64 * MIB, 4 * MIB, 4, 0.25));
        assert!(
            (o.time_all - (0.25 + 0.02 + 0.64)).abs() < 1e-9,
            "{}",
            o.time_all
        );
        assert_eq!(o.per_node[0].sent, 0.0);
    }

    #[test]
    fn two_nodes_two_chunks_by_hand() {
        // Node 0 owns chunk 0, node 1 chunk 1, pieces are whole 8 MiB parts,
        // latency L = 10 ms, links B = 100 MiB/s. From L each downlink
        // carries three flows at B/3: its owner's two parts and the other
        // owner's first piece, streamed while it arrives; all three land at
        // L + 24 MiB / B (the streamed piece completes with the source's
        // copy). The other owner's second piece, landed by then, follows
        // alone at B: L + 32 MiB / B = 0.33 s, each downlink busy throughout.
        let mut sc = small(2, 32 * MIB, 8 * MIB, 32, 0.0);
        for policy in [Policy::OwnerOnly, Policy::Relay] {
            sc.policy = policy;
            let ring = Ranking::fixed(vec![vec![0, 1], vec![1, 0]]);
            let o = sim::Sim::new(&sc, Some(ring)).run();
            assert!(
                (o.time_all - 0.33).abs() < 1e-9,
                "{policy:?}: {}",
                o.time_all
            );
            assert!(
                (o.time_min - 0.33).abs() < 1e-9,
                "{policy:?}: {}",
                o.time_min
            );
            assert_eq!(o.egress_over_model, 1.0);
            for n in &o.per_node {
                assert_eq!(n.sent, 16.0 * MIB as f64);
                assert_eq!(n.recv_store, 16.0 * MIB as f64);
            }
        }
    }

    fn check_conservation(sc: &Scenario) {
        let o = run(sc);
        assert!(o.time_all.is_finite(), "{}: a node never finished", o.label);
        assert_eq!(o.fallbacks, 0, "{}", o.label);
        let large = o.large_bytes as f64;
        for (v, n) in o.per_node.iter().enumerate() {
            assert_eq!(n.wasted, 0.0, "{} node {v}", o.label);
            assert!(
                (n.recv_store + n.recv_peer - large).abs() < 1.0,
                "{} node {v}: {} + {} != {large}",
                o.label,
                n.recv_store,
                n.recv_peer
            );
        }
        let stored: f64 = o.per_node.iter().map(|n| n.recv_store).sum();
        assert!(
            (stored - large).abs() < 1.0,
            "{}: store sent {stored}",
            o.label
        );
        let egress = (large + (sc.nodes as u64 * sc.small_bytes) as f64) / o.model_bytes as f64;
        assert!((o.egress_over_model - egress).abs() < 1e-12, "{}", o.label);
        let sent: f64 = o.per_node.iter().map(|n| n.sent).sum();
        let pulled: f64 = o.per_node.iter().map(|n| n.recv_peer).sum();
        assert!((sent - pulled).abs() < 1.0);
    }

    #[test]
    fn every_node_receives_every_byte_exactly_once() {
        let sc = Scenario::bench266(6, 300.0);
        check_conservation(&sc);
        check_conservation(&sc.clone().with_relay());
        let mut skewed = Scenario::bench266(9, 300.0).with_relay();
        skewed.skew = 2.0;
        skewed.seed = 3;
        check_conservation(&skewed);
    }

    #[test]
    fn a_seed_fixes_the_run() {
        let mut sc = Scenario::bench266(5, 300.0);
        sc.skew = 1.0;
        let (a, b) = (run(&sc), run(&sc));
        assert_eq!(a.time_all, b.time_all);
        assert_eq!(a.events, b.events);
        let sent = |o: &Outcome| o.per_node.iter().map(|n| n.sent).collect::<Vec<_>>();
        assert_eq!(sent(&a), sent(&b));
        sc.seed = 2;
        assert_ne!(sent(&a), sent(&run(&sc)), "another seed, another ring");
    }
}

//! Which peers one have-map refresh round asks: a bounded set, so a node's
//! metadata traffic per round does not grow with the swarm.
//!
//! Design decisions:
//! - A round asks at most [`HAVE_FANOUT`] peers, whatever N. With N − 1 ≤
//!   [`HAVE_FANOUT`] that is every peer, every round (small swarms keep
//!   the behaviour of asking everybody).
//! - **Wanted peers first.** The fetch names the peers whose maps it is
//!   waiting on ([`HaveFanout::want`]): for a chunk whose first pull waits
//!   for its relay parent's bytes, that parent *and the chunk's owner*
//!   (the wait also ends when a peer holds the chunk complete, and the
//!   owner is the first to; wanting the parent alone left such pulls
//!   waiting for parents busy elsewhere: an in-process load at N = 14 took
//!   4.8–13 s against 1.9–3.6 s, docs/benchmarks.md), and an owner that
//!   answered NOT_FOUND (did it decline the object, or not start yet?).
//!   They are asked in the order they were first named, up to
//!   [`HAVE_FANOUT`] − [`EXPLORE_SLOTS`] a round; one not asked this round
//!   keeps its place, one asked leaves the queue (it is named again if it
//!   is still waited on after the answer). Only alive peers are kept.
//! - **Rotation fills the rest.** The remaining slots (at least
//!   [`EXPLORE_SLOTS`]) go round the alive peers in id order from a cursor
//!   that starts at a random place (so nodes do not all ask the same peer
//!   at once), skipping those already asked this round. Every alive peer
//!   is so asked at least once every ⌈(N − 1) / [`EXPLORE_SLOTS`]⌉ rounds:
//!   complete holders (a late joiner's sources, retries' sources) are found
//!   without asking everybody each round, and a late joiner's first round
//!   (nothing wanted yet) asks [`HAVE_FANOUT`] peers, of which any that
//!   fetched the object long ago holds all of it.
//! - A node asks at most [`HAVE_FANOUT`] peers per round; what a node
//!   *answers* is [`HAVE_FANOUT`] per round on average over the swarm
//!   (rotation is spread uniformly; relay parents are spread by the
//!   rendezvous hash), though a node that is the relay parent or the owner
//!   of a chunk many pulls wait on is asked by up to all of them each round
//!   until its bytes show (in-process at N = 14: at most 7.4 answers per
//!   node and round against 6 on average, docs/benchmarks.md).
//! - Maps stay hints: a peer asked less often has an older map, which
//!   costs at most a NOT_FOUND and a pull elsewhere, never a wrong byte.

use std::collections::VecDeque;

/// Peers asked per have-map refresh round, at most.
pub const HAVE_FANOUT: usize = 6;
/// Slots of a round that always go to the rotation over all alive peers.
pub const EXPLORE_SLOTS: usize = 1;

/// The peers one version's refresh rounds want to ask, and where the
/// rotation stands.
#[derive(Debug, Default)]
pub struct HaveFanout {
    wanted: VecDeque<String>,
    /// Next rotation position (taken modulo the alive count); `None` until
    /// the first round picks a random start.
    cursor: Option<usize>,
}

impl HaveFanout {
    /// Queues `peer` to be asked in a coming round (no-op if queued).
    pub fn want(&mut self, peer: &str) {
        // The queue holds alive peers only, each once: at most N entries.
        if !self.wanted.iter().any(|p| p == peer) {
            self.wanted.push_back(peer.to_string());
        }
    }

    /// The peers to ask this round, out of `alive` (sorted by id, this
    /// node left out): wanted ones first, then the rotation; at most
    /// [`HAVE_FANOUT`]. `random` picks the rotation's first start.
    pub fn next_round(&mut self, alive: &[String], random: usize) -> Vec<String> {
        let mut asked: Vec<String> = Vec::with_capacity(HAVE_FANOUT.min(alive.len()));
        self.wanted.retain(|p| alive.binary_search(p).is_ok());
        let wanted_slots = HAVE_FANOUT - EXPLORE_SLOTS;
        while asked.len() < wanted_slots {
            let Some(p) = self.wanted.pop_front() else {
                break;
            };
            asked.push(p);
        }
        if alive.is_empty() {
            return asked;
        }
        let n = alive.len();
        let mut at = self.cursor.unwrap_or(random) % n;
        let mut looked = 0;
        while asked.len() < HAVE_FANOUT && looked < n {
            let p = &alive[at];
            if !asked.contains(p) {
                asked.push(p.clone());
            }
            at = (at + 1) % n;
            looked += 1;
        }
        self.cursor = Some(at);
        asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn peers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i:02}")).collect()
    }

    #[test]
    fn a_small_swarm_is_asked_whole_every_round() {
        let alive = peers(HAVE_FANOUT);
        let mut f = HaveFanout::default();
        f.want("p03");
        for round in 0..3 {
            let asked: HashSet<String> = f.next_round(&alive, 4).into_iter().collect();
            assert_eq!(asked.len(), HAVE_FANOUT, "round {round}");
            assert_eq!(asked, alive.iter().cloned().collect());
        }
    }

    #[test]
    fn rounds_are_bounded_and_the_rotation_covers_every_peer() {
        let alive = peers(40);
        let mut f = HaveFanout::default();
        let mut seen = HashSet::new();
        let rounds = 40usize.div_ceil(HAVE_FANOUT);
        for _ in 0..rounds {
            let asked = f.next_round(&alive, 17);
            assert_eq!(asked.len(), HAVE_FANOUT);
            assert_eq!(asked.iter().collect::<HashSet<_>>().len(), HAVE_FANOUT);
            seen.extend(asked);
        }
        assert_eq!(seen.len(), 40, "with nothing wanted every slot rotates");
    }

    #[test]
    fn wanted_peers_go_first_in_order_and_keep_their_place_until_asked() {
        let alive = peers(40);
        let mut f = HaveFanout::default();
        let wanted: Vec<String> = (10..20).map(|i| format!("p{i:02}")).collect();
        for p in &wanted {
            f.want(p);
        }
        f.want("p10");
        f.want("gone");
        let slots = HAVE_FANOUT - EXPLORE_SLOTS;
        let first = f.next_round(&alive, 0);
        assert_eq!(first.len(), HAVE_FANOUT);
        assert_eq!(first[..slots], wanted[..slots]);
        // The rotation takes the rest, from its start.
        assert_eq!(first[slots..], ["p00".to_string()]);
        let second = f.next_round(&alive, 0);
        assert_eq!(second[..slots], wanted[slots..2 * slots]);
        assert_eq!(second[slots..], ["p01".to_string()]);
        // A dead wanted peer is dropped; an asked one can be wanted again.
        f.want("p10");
        let third = f.next_round(&alive, 0);
        assert_eq!(third[0], "p10");
        assert!(!third.contains(&"gone".to_string()));
    }

    #[test]
    fn the_rotation_skips_peers_already_asked_this_round() {
        let alive = peers(8);
        let mut f = HaveFanout::default();
        f.want("p00");
        f.want("p01");
        let asked = f.next_round(&alive, 0);
        assert_eq!(asked, ["p00", "p01", "p02", "p03", "p04", "p05"]);
    }
}

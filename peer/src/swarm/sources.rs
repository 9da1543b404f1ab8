//! Where a pull takes a chunk from: its owner, a peer that holds it
//! complete, or a relay (a peer still receiving it) — and why relaying
//! cannot form a cycle.
//!
//! Design decisions:
//! - **Relay order.** For each chunk, the peers this fetch trusts, by
//!   descending rendezvous weight for that chunk ([`super::ring::weight`]):
//!   position 0 is the owner (the ring's own rule), and position k ≥ 1
//!   relays from position (k − 1) / [`RELAY_FANOUT`]. Peers that declined
//!   the object (they will not fetch it) are left out below the owner. In a
//!   simultaneous start every chunk so spreads down a tree of fan-out 2:
//!   its owner uploads it about twice instead of N − 1 times, every node
//!   forwards about as much as it receives, and the delay added grows with
//!   log N. Every node computes the same tree without talking to the
//!   others; differing views only move a node in it.
//! - **First attempt.** A node whose parent in the order is not the owner
//!   waits, holding no pull slot, until its parent shows bytes of the chunk
//!   (or any peer holds it complete, or the peer wait passes), meanwhile
//!   asking the parent's and the owner's have-maps first
//!   ([`Holders::want`]); then it picks
//!   among the peers that hold the chunk complete, its parent if the parent
//!   has bytes of it, and the owner if the parent does not. **Retries** pick
//!   among the owner and complete holders only; the owner even when it
//!   failed this chunk before as a relay (when an owner dies, ownership
//!   moves down the relay order, often to the parent whose download broke
//!   with it), so only a node that owns a chunk fetches it from the store
//!   after a failed pull. Picks are weighted by idle
//!   upload bandwidth ([`super::upload::pick_weighted`]) times
//!   `1 + AHEAD_BONUS · prefix / len`: a source that is ahead is preferred.
//!   Peers that let this object's fetch down (suspects,
//!   [`super::source_record`]) are left out while anyone else is left.
//! - **No cycles.** Every pull tells the sender what it takes the sender for
//!   (`ChunkRequest.pull_from`), and the sender refuses what does not fit
//!   (`super::chunk_server`): as a holder, it must hold the chunk complete
//!   (those bytes depend on no one); as a relay, bytes of the chunk's
//!   current download must already be in its memory; as the owner, the
//!   sender is the node of highest weight in the puller's view, and a node
//!   fetches a chunk it owns only from the store or from complete holders.
//!   Suppose pulls formed a ring. Each node's download is the stream from
//!   the next. If some edge of the ring is a relay pull, the node it points
//!   to had bytes before the puller got any; those bytes came to it from
//!   the next node of the ring, which had them even earlier, and so on
//!   around the ring back to itself: a byte that arrived before itself.
//!   If no edge is a relay pull and none a holder pull, every edge goes to a
//!   node of strictly higher weight than the puller (the puller is in its
//!   own view, and the owner of its view beats it): weights that increase
//!   all around a ring. Both are impossible, whatever each node's view of
//!   membership, so a load cannot deadlock on its own relays. (The retry
//!   rule is not needed for this; it keeps a failed relay from making its
//!   downstream depend on another relay.)

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::chunk_book::ChunkId;
use super::holders::Holders;
use super::peer_set::PeerSet;
use super::ring;
use super::source_record::SourceRecord;
use super::upload::pick_weighted;

/// Peers each relay serves in a simultaneous start (the owner too).
pub const RELAY_FANOUT: usize = 2;
/// How much a source's progress on the chunk adds to its weight: a complete
/// holder weighs `1 + AHEAD_BONUS` times its idle upload.
pub const AHEAD_BONUS: u64 = 3;

/// What the puller takes a source for (sent as `ChunkRequest.pull_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The chunk's owner in this node's view.
    Owner,
    /// A peer whose have-map showed the chunk complete.
    Holder,
    /// A peer still receiving the chunk (this node's parent in the relay
    /// order).
    Relay,
}

impl SourceKind {
    /// The wire value of `ChunkRequest.pull_from`.
    pub fn pull_from(self) -> ossc_proto::v1::PullFrom {
        match self {
            SourceKind::Owner => ossc_proto::v1::PullFrom::Owner,
            SourceKind::Holder => ossc_proto::v1::PullFrom::Holder,
            SourceKind::Relay => ossc_proto::v1::PullFrom::Relay,
        }
    }
}

/// A peer a chunk may come from, and how many bytes of it the peer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub peer: String,
    pub kind: SourceKind,
    pub prefix: u64,
}

/// `trusted` (the alive peers the fetch has not excluded, this node
/// included) by descending weight for `chunk`: the owner first, then the
/// relay order, leaving out below the owner every peer `declined` names.
pub fn relay_order<'a>(
    trusted: &'a [String],
    chunk: &ChunkId,
    declined: impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    let mut by_weight: Vec<(u64, &str)> = trusted
        .iter()
        .map(|p| (ring::weight(p, chunk), p.as_str()))
        .collect();
    // Same order as `ring::owner`: the larger weight, then the larger id.
    by_weight.sort_unstable_by(|a, b| b.cmp(a));
    by_weight
        .into_iter()
        .enumerate()
        .filter(|(i, (_, p))| *i == 0 || !declined(p))
        .map(|(_, (_, p))| p)
        .collect()
}

/// The node `me` relays from in `order` (from [`relay_order`]): `None` when
/// `me` is the owner or not in the order.
pub fn relay_parent<'a>(order: &[&'a str], me: &str) -> Option<&'a str> {
    let at = order.iter().position(|p| *p == me)?;
    (at > 0).then(|| order[(at - 1) / RELAY_FANOUT])
}

/// One of `candidates`, picked with probability proportional to
/// `idle(peer) × (1 + AHEAD_BONUS · prefix / len)` from a uniform `r` in
/// `[0, 1)`; `None` when there is none.
pub fn pick(
    mut candidates: Vec<Candidate>,
    len: u64,
    idle: impl Fn(&str) -> u64,
    r: f64,
) -> Option<Candidate> {
    let len = u128::from(len.max(1));
    let weights: Vec<u64> = candidates
        .iter()
        .map(|c| {
            let ahead = len + u128::from(AHEAD_BONUS) * u128::from(c.prefix.min(len as u64));
            let w = u128::from(idle(&c.peer)) * ahead / len;
            u64::try_from(w).unwrap_or(u64::MAX)
        })
        .collect();
    let i = pick_weighted(&weights, r)?;
    Some(candidates.swap_remove(i))
}

/// Who owns a chunk and whom this node relays it from.
pub struct ChunkView {
    /// The alive peers the object's fetch has not excluded (this node too).
    pub trusted: Vec<String>,
    pub owner: String,
    /// This node's parent in the relay order, when it is not the owner.
    pub parent: Option<String>,
}

/// Where pulls of a chunk may go: this node's membership and the peers'
/// have-maps, for the fetcher's picks.
pub struct Sources<'a> {
    pub peers: &'a PeerSet,
    pub holders: &'a Holders,
    /// How long a first pull waits for its relay parent, at most.
    pub peer_wait: Duration,
}

impl Sources<'_> {
    /// The owner of chunk `id` (over the alive peers this object's fetch has
    /// not `excluded`), this node's parent in the chunk's relay order, and
    /// the peers both are computed over.
    pub fn view(&self, id: &ChunkId, record: &SourceRecord) -> ChunkView {
        let me = self.peers.self_id();
        let trusted: Vec<String> = self
            .peers
            .alive_ids()
            .into_iter()
            .filter(|p| !record.is_excluded(p))
            .collect();
        let order = relay_order(&trusted, id, |p| {
            p != me && self.holders.declined(&id.object, p)
        });
        let owner = order.first().map_or(me, |o| *o).to_string();
        let parent = relay_parent(&order, me)
            .filter(|p| *p != owner)
            .map(str::to_string);
        ChunkView {
            trusted,
            owner,
            parent,
        }
    }

    /// Before a chunk's first pull: while the relay order gives this node a
    /// parent other than the owner, waits (holding no pull slot) until that
    /// parent has bytes of the chunk, a peer holds it complete, or the peer
    /// wait passed (see the module docs).
    pub async fn await_relay(&self, id: &ChunkId, record: &SourceRecord) {
        let until = Instant::now() + self.peer_wait;
        loop {
            let view = self.view(id, record);
            let Some(parent) = view.parent else {
                return;
            };
            let progress = self.holders.progress(&id.object, &parent, id.index);
            if progress.prefix > 0
                || progress.held
                || !self.holders.holders_of(&id.object, id.index).is_empty()
                || Instant::now() >= until
            {
                return;
            }
            self.holders.want(&id.object, &parent);
            self.holders.want(&id.object, &view.owner);
            self.holders.wait_round(until).await;
        }
    }

    /// The source to pull chunk `id` (`len` bytes) from, or `None` for the
    /// store: among the peers that hold it complete (minus `tried`, the
    /// excluded and this node) and, unless this node owns the chunk, either
    /// its relay parent (only on the `first` pull, once the parent has
    /// bytes of it) or the owner, even one in `tried`; suspects only when
    /// no one else is left ([`SourceRecord::demote`]); weighted by idle
    /// upload bandwidth and by how far ahead each is (see the module docs),
    /// from a uniform `r` in `[0, 1)`. So only a chunk this node owns, with
    /// no complete holder known, goes to the store.
    pub fn pick(
        &self,
        id: &ChunkId,
        len: u64,
        first: bool,
        tried: &HashSet<String>,
        record: &SourceRecord,
        r: f64,
    ) -> Option<Picked> {
        let me = self.peers.self_id();
        let view = self.view(id, record);
        let mut candidates: Vec<Candidate> = self
            .holders
            .holders_of(&id.object, id.index)
            .into_iter()
            .filter(|p| p != me && !tried.contains(p) && view.trusted.contains(p))
            .map(|peer| Candidate {
                kind: if peer == view.owner {
                    SourceKind::Owner
                } else {
                    SourceKind::Holder
                },
                peer,
                prefix: len,
            })
            .collect();
        // The owner may be asked unless it failed this chunk before and a
        // complete holder is left to ask instead (a stalling owner must not
        // capture the chunk; one whose relay download broke, now the owner,
        // fetches it from the store once for everyone).
        let owner_left =
            view.owner != me && (!tried.contains(&view.owner) || candidates.is_empty());
        if view.owner != me {
            let relay = view
                .parent
                .filter(|p| first && !tried.contains(p))
                .map(|p| {
                    let progress = self.holders.progress(&id.object, &p, id.index);
                    (p, progress)
                })
                .filter(|(_, progress)| progress.prefix > 0 && !progress.held);
            let listed = candidates.iter().any(|c| c.peer == view.owner);
            match relay {
                Some((peer, progress)) => candidates.push(Candidate {
                    peer,
                    kind: SourceKind::Relay,
                    prefix: progress.prefix,
                }),
                // The owner is asked even when it failed this chunk
                // before as a relay or holder: when an owner dies its
                // chunks move to the next node of their relay order, often
                // the relay parent whose download broke with it, and that
                // new owner fetches the chunk from the store once for
                // everyone (`MAX_PEER_ATTEMPTS` in the fetcher bounds the retries).
                None if !listed && owner_left => {
                    let progress = self.holders.progress(&id.object, &view.owner, id.index);
                    candidates.push(Candidate {
                        prefix: if progress.held { len } else { progress.prefix },
                        peer: view.owner.clone(),
                        kind: SourceKind::Owner,
                    });
                }
                None => {}
            }
        }
        let candidates = record.demote(candidates);
        let others = candidates.len().saturating_sub(1);
        let source = pick(candidates, len, |p| self.holders.idle_upload(p), r)?;
        let alternative = others > 0 || (owner_left && source.peer != view.owner);
        Some(Picked {
            source,
            alternative,
        })
    }

    /// Whether a peer other than `besides` (and this node), not `tried`,
    /// excluded or suspect, holds chunk `id` complete.
    pub fn other_holder(
        &self,
        id: &ChunkId,
        besides: &str,
        tried: &HashSet<String>,
        record: &SourceRecord,
    ) -> bool {
        let me = self.peers.self_id();
        self.holders
            .holders_of(&id.object, id.index)
            .into_iter()
            .any(|p| {
                p != me
                    && p != besides
                    && !tried.contains(&p)
                    && !record.is_excluded(&p)
                    && !record.is_suspect(&p)
                    && self.peers.is_alive(&p)
            })
    }
}

/// A pick: the source, and whether another peer could serve the chunk
/// (which shortens the source's patience, see [`super::source_record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub source: Candidate,
    pub alternative: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::chunk_book::ObjectVersion;

    fn chunk(i: u64) -> ChunkId {
        ChunkId {
            object: ObjectVersion {
                bucket: "b".into(),
                key: "k".into(),
                etag: "e".into(),
                size: 1 << 30,
            },
            index: i,
        }
    }

    #[test]
    fn the_relay_order_is_a_tree_of_fan_out_two_below_the_owner() {
        let nodes: Vec<String> = (1..=8).map(|i| format!("10.0.0.{i}:7468")).collect();
        for i in 0..50 {
            let c = chunk(i);
            let order = relay_order(&nodes, &c, |_| false);
            assert_eq!(order.len(), 8);
            assert_eq!(
                Some(order[0]),
                ring::owner(nodes.iter().map(String::as_str), &c)
            );
            assert_eq!(relay_parent(&order, order[0]), None);
            // Positions 1 and 2 pull from the owner, 3 and 4 from 1, ...
            for (at, node) in order.iter().enumerate().skip(1) {
                assert_eq!(relay_parent(&order, node), Some(order[(at - 1) / 2]));
            }
            // Every node feeds at most two.
            for node in &order {
                let children = order
                    .iter()
                    .filter(|n| relay_parent(&order, n) == Some(*node))
                    .count();
                assert!(children <= RELAY_FANOUT);
            }
        }
        assert_eq!(relay_parent(&["a", "b"], "c"), None);
        // A peer that declined leaves the order, unless it is the owner.
        let c = chunk(1);
        let full = relay_order(&nodes, &c, |_| false);
        let owner = full[0];
        let gone = full[3];
        let order = relay_order(&nodes, &c, |p| p == gone || p == owner);
        assert_eq!(order[0], owner);
        assert_eq!(order.len(), 7);
        assert!(!order.contains(&gone));
    }

    #[test]
    fn a_relay_that_failed_a_chunk_is_pulled_from_again_once_it_owns_the_chunk() {
        use crate::swarm::auth::{ClusterSecret, TEST_SECRET};
        use crate::swarm::membership::swim::MemberState;
        use crate::swarm::membership::MembershipMode;
        use crate::swarm::peer_set::MembershipTiming;
        use std::net::SocketAddr;

        let addr = |i: u8| SocketAddr::from(([10, 0, 0, i], 7468));
        let nodes: Vec<SocketAddr> = (1..=4).map(addr).collect();
        let me = nodes[0].to_string();
        let peers = PeerSet::new(
            nodes[0],
            &nodes,
            nodes.iter().map(|a| a.to_string()).collect(),
            ClusterSecret::new(TEST_SECRET).unwrap(),
            MembershipTiming::default(),
            None,
            MembershipMode::Gossip,
        );
        let alive: Vec<_> = nodes[1..]
            .iter()
            .map(|a| (*a, MemberState::Alive))
            .collect();
        peers.apply_gossip_view(&alive);
        let holders = Holders::default();
        let sources = Sources {
            peers: &peers,
            holders: &holders,
            peer_wait: Duration::from_secs(1),
        };
        let record = SourceRecord::default();
        let owner_of = |c: &ChunkId| sources.view(c, &record).owner;
        // A chunk another node owns, which this node's pull from that node
        // failed before (as its relay parent, when the owner was another).
        let theirs = (0..).map(chunk).find(|c| owner_of(c) != me).unwrap();
        let owner = owner_of(&theirs);
        let tried = HashSet::from([owner.clone()]);
        let got = sources.pick(&theirs, 10, false, &tried, &record, 0.5);
        assert_eq!(
            got.map(|p| (p.source.peer, p.source.kind)),
            Some((owner, SourceKind::Owner)),
            "the new owner is skipped: the chunk would go to the store from a node that does \
             not own it"
        );
        // Only a chunk this node owns, with no holder, goes to the store.
        let mine = (0..).map(chunk).find(|c| owner_of(c) == me).unwrap();
        assert!(sources
            .pick(&mine, 10, false, &tried, &record, 0.5)
            .is_none());
    }

    #[test]
    fn picks_follow_idle_upload_and_prefer_sources_that_are_ahead() {
        let c = |peer: &str, prefix| Candidate {
            peer: peer.into(),
            kind: SourceKind::Holder,
            prefix,
        };
        assert_eq!(pick(vec![], 10, |_| 1, 0.5), None);
        // Same idle upload: the complete one weighs 4, the empty one 1.
        let n = 1000;
        let mut ahead = 0;
        for i in 0..n {
            let r = (i as f64 + 0.5) / n as f64;
            let got = pick(vec![c("empty", 0), c("complete", 100)], 100, |_| 7, r).unwrap();
            ahead += usize::from(got.peer == "complete");
        }
        assert_eq!(ahead, 800);
        // Idle upload still dominates: 1 against 10^9.
        let got = pick(
            vec![c("busy", 100), c("idle", 0)],
            100,
            |p| if p == "busy" { 1 } else { 1_000_000_000 },
            0.5,
        )
        .unwrap();
        assert_eq!(got.peer, "idle");
    }
}

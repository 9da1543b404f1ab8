//! Where a chunk comes from: today's owner-or-holder pick, and the relay
//! tree.
//!
//! Design decisions:
//! - **Owner-only** (`swarm_fetcher.rs::pick_source`): the owner is the
//!   highest-weight node in the puller's view minus the peers excluded for
//!   this object; the other sources are holders whose chunk was complete in
//!   the puller's last have-map (completed at least one refresh period
//!   ago: `have_refresh` with Have rounds, a membership interval with
//!   piggybacked maps). One is picked with probability proportional to its
//!   idle upload, `max(1 MB/s, max(peak, 1 Gbit/s) − current)`
//!   (`swarm/upload.rs`). Holders are sampled (at most [`SAMPLED_HOLDERS`])
//!   rather than all weighed, which changes nothing but the cost at 1000
//!   nodes.
//! - **Relay: a pipelined k-ary tree per chunk**, rooted at the chunk's
//!   owner (which fetches it from the store, as today). The other nodes
//!   take tree positions in a fixed order (node index) rotated per chunk by
//!   the number of interior positions, so the interior positions, which
//!   upload `k` copies, go round the cluster and every node uploads about
//!   one copy of the model in all; a node pulls each chunk from its parent,
//!   which serves every piece as soon as it has it (cut-through down the
//!   tree), so a chunk reaches all N nodes after ⌈log_k N⌉ piece times
//!   rather than after N−1 uploads by one node. Chosen over rarest-first
//!   and "pull from whoever is ahead" because it needs no have-maps at all
//!   (every node computes its parent from the ring), keeps each uploader's
//!   fan-out at `k` streams per chunk, and is free of cycles: a parent
//!   always precedes its child in the chunk's order, so waits end at the
//!   root.
//! - **Views.** A parent the puller does not see up is skipped for the
//!   nearest visible ancestor; if the root is not visible either, the owner
//!   over the puller's view is the source (or the puller itself fetches from
//!   the store, like today's ring). Peers tried or excluded are skipped the
//!   same way, so retries climb the tree.

use super::scenario::{HaveMode, Membership, Policy};
use super::sim::Sim;

/// Holders weighed per pick at most.
pub const SAMPLED_HOLDERS: usize = 8;
/// `swarm/upload.rs`: capacity assumed before a higher rate was seen, and
/// the floor of an idle figure.
const ASSUMED_MIN_CAPACITY: f64 = 125e6;
const IDLE_FLOOR: f64 = 1e6;

/// Tree positions of one chunk over `n` nodes: index 0 is the root; the
/// other n−1 nodes fill indices 1.. in node order (the root left out),
/// rotated by `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    pub n: usize,
    pub fanout: usize,
    pub root: usize,
    pub offset: usize,
}

impl Tree {
    /// The tree of chunk `c` rooted at `root`.
    pub fn of_chunk(n: usize, fanout: usize, root: usize, c: usize) -> Tree {
        let interior = (n.saturating_sub(2) / fanout).max(1);
        let offset = if n > 1 { c * interior % (n - 1) } else { 0 };
        Tree {
            n,
            fanout,
            root,
            offset,
        }
    }

    /// Index of node w.
    pub fn index(&self, w: usize) -> usize {
        if w == self.root {
            return 0;
        }
        let m = self.n - 1;
        let w = if w > self.root { w - 1 } else { w };
        (w + m - self.offset) % m + 1
    }

    /// Node at index i.
    pub fn node(&self, i: usize) -> usize {
        if i == 0 {
            return self.root;
        }
        let w = (i - 1 + self.offset) % (self.n - 1);
        if w >= self.root {
            w + 1
        } else {
            w
        }
    }

    pub fn parent(&self, i: usize) -> usize {
        (i - 1) / self.fanout
    }

    /// Children of node w.
    pub fn children(&self, w: usize) -> usize {
        let i = self.index(w);
        let first = i * self.fanout + 1;
        (self.n.saturating_sub(first)).min(self.fanout)
    }
}

impl Sim {
    /// The peer task t should pull from now, or `None` for the store.
    pub(super) fn pick(&mut self, t: usize) -> Option<u32> {
        match self.sc.policy {
            Policy::OwnerOnly => self.pick_owner_or_holder(t),
            Policy::Relay => self.pick_parent(t),
        }
    }

    /// The highest-weight node of chunk c in v's view, minus `excluded`.
    fn view_owner(&mut self, v: usize, c: usize, excluded: &[u32]) -> usize {
        let now = self.now;
        let usable = |m: &super::membership::Members, w: u32| {
            m.visible(v, w as usize, now) && !excluded.contains(&w)
        };
        if let Some(&w) = self.ring.top(c).iter().find(|w| usable(&self.members, **w)) {
            return w as usize;
        }
        if !self.full_orders.contains_key(&c) {
            let order = self.ring.full_order(&self.lay, c);
            self.full_orders.insert(c, order);
        }
        self.full_orders[&c]
            .iter()
            .find(|w| usable(&self.members, **w))
            .map_or(v, |w| *w as usize)
    }

    fn pick_owner_or_holder(&mut self, t: usize) -> Option<u32> {
        let (v, c) = (self.tasks[t].node as usize, self.tasks[t].chunk as usize);
        let f = self.lay.chunks[c].file;
        let excluded = self.excluded[v * self.lay.files.len() + f].clone();
        let owner = self.view_owner(v, c, &excluded) as u32;
        let lag = match (self.sc.have, self.sc.membership) {
            (HaveMode::Rounds, _) => self.sc.timers.have_refresh,
            (HaveMode::Piggyback, Membership::AllToAll) => self.sc.timers.heartbeat,
            (HaveMode::Piggyback, Membership::Gossip) => {
                // A node's map reaches another through a few gossip hops.
                let hops =
                    (self.sc.nodes as f64).ln() / (self.sc.timers.gossip_fanout as f64).ln_1p();
                self.sc.timers.gossip_period * hops.ceil().max(1.0)
            }
        };
        let known = self.holders[c].partition_point(|(at, _)| *at <= self.now - lag);
        let mut sources: Vec<u32> = Vec::with_capacity(SAMPLED_HOLDERS + 1);
        for k in 0..known.min(SAMPLED_HOLDERS) {
            let i = if known <= SAMPLED_HOLDERS {
                k
            } else {
                self.pick_rng.below(known)
            };
            let w = self.holders[c][i].1;
            let task = &self.tasks[t];
            if w as usize != v
                && !task.tried.contains(&w)
                && !excluded.contains(&w)
                && !sources.contains(&w)
                && self.members.visible(v, w as usize, self.now)
            {
                sources.push(w);
            }
        }
        if owner as usize != v && !self.tasks[t].tried.contains(&owner) && !sources.contains(&owner)
        {
            sources.push(owner);
        }
        if sources.is_empty() {
            return None;
        }
        let weights: Vec<f64> = sources
            .iter()
            .map(|&w| {
                let node = &mut self.nodes[w as usize];
                let current = self.links.rate_of(node.up);
                node.peak_up = node.peak_up.max(current);
                (node.peak_up.max(ASSUMED_MIN_CAPACITY) - current).max(IDLE_FLOOR)
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut x = self.pick_rng.unit() * total;
        for (w, weight) in sources.iter().zip(&weights) {
            x -= weight;
            if x < 0.0 {
                return Some(*w);
            }
        }
        sources.last().copied()
    }

    fn pick_parent(&mut self, t: usize) -> Option<u32> {
        let (v, c) = (self.tasks[t].node as usize, self.tasks[t].chunk as usize);
        let f = self.lay.chunks[c].file;
        let excluded = self.excluded[v * self.lay.files.len() + f].clone();
        let owner = self.view_owner(v, c, &excluded);
        if owner == v {
            return None;
        }
        let usable = |sim: &Sim, w: usize| {
            w != v
                && sim.members.visible(v, w, sim.now)
                && !sim.tasks[t].tried.contains(&(w as u32))
                && !excluded.contains(&(w as u32))
        };
        let root = self.ring.top(c)[0] as usize;
        let tree = Tree::of_chunk(self.sc.nodes, self.sc.fanout, root, c);
        let mut i = tree.index(v);
        while i > 0 {
            i = tree.parent(i);
            let w = tree.node(i);
            if usable(self, w) {
                return Some(w as u32);
            }
        }
        usable(self, owner).then_some(owner as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_has_one_place_and_parents_precede_children() {
        for (n, k) in [(2, 2), (3, 2), (7, 3), (100, 2), (1024, 4)] {
            for (root, c) in [(0, 0), (n - 1, 5), (n / 2, 17)] {
                let tree = Tree::of_chunk(n, k, root, c);
                let mut seen = vec![false; n];
                for i in 0..n {
                    let w = tree.node(i);
                    assert!(!seen[w], "n={n} node {w} twice");
                    seen[w] = true;
                    assert_eq!(tree.index(w), i);
                    if i > 0 {
                        assert!(tree.parent(i) < i);
                    }
                }
                let uploads: usize = (0..n).map(|w| tree.children(w)).sum();
                assert_eq!(uploads, n - 1, "every non-root node has one parent");
            }
        }
    }

    #[test]
    fn rotation_spreads_uploads_evenly() {
        // 16 chunks over 1024 nodes (the benchmark model at N = 1024): every
        // node uploads about 16 chunk copies in all, none more than 2 over
        // (a random placement of interior positions gives about 30).
        let (n, k, chunks) = (1024, 2, 16);
        let mut copies = vec![0usize; n];
        for c in 0..chunks {
            let tree = Tree::of_chunk(n, k, (c * 37) % n, c);
            for (w, up) in copies.iter_mut().enumerate() {
                *up += tree.children(w);
            }
        }
        let max = *copies.iter().max().unwrap();
        let mean = (chunks * (n - 1)) as f64 / n as f64;
        assert!(max as f64 <= mean + 2.1, "max {max}, mean {mean}");
    }
}

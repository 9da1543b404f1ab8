//! Who knows that whom is up, and what knowing it costs on the wire.
//!
//! Design decisions:
//! - **Views are explicit**: `visible_at[v][w]` is when node v learns that
//!   w is up (infinity until then). Rings, relay trees and the start-up wait
//!   are computed over a node's own view, so differing views cost what they
//!   cost in the code (a NOT_FOUND, a second owner, a wait).
//! - **All-to-all heartbeats** (today): a joining node's first Hello round
//!   reaches every node that is up, and theirs reach it, within one
//!   round trip; traffic is (N−1) Hello exchanges per node per heartbeat in
//!   each direction, O(N²) for the cluster.
//! - **Gossip** (SWIM-style, as memberlist): a joiner syncs its view with
//!   one random node that is up (push-pull); each round every node sends
//!   the joins it learned recently to `fanout` random nodes, each join being
//!   retransmitted ⌈4·log10(N+1)⌉ rounds; each node also probes one node per
//!   heartbeat. Rounds are simulated message by message (rumors as node
//!   lists), so dissemination time and message sizes come out of the run.
//! - Message traffic is charged as a rate on each node's links for the
//!   following round (the caller subtracts it from the data capacity), not
//!   as individual transfers: a Hello is a few hundred bytes against
//!   megabyte pieces.

use super::rng::Rng;
use super::scenario::{Membership, Messages, Timers};

#[derive(Debug)]
pub struct Members {
    n: usize,
    kind: Membership,
    rtt: f64,
    timers: Timers,
    msgs: Messages,
    visible_at: Vec<f64>,
    known: Vec<u32>,
    /// The latest time a node learns of any other (its view is complete
    /// then, once it knows them all).
    latest: Vec<f64>,
    up: Vec<bool>,
    up_list: Vec<u32>,
    /// Gossip: joins each node still retransmits, with rounds left.
    rumors: Vec<Vec<(u32, u32)>>,
    /// Gossip bytes each node sent and received in the last round.
    sent: Vec<f64>,
    received: Vec<f64>,
    retransmit: u32,
}

impl Members {
    pub fn new(n: usize, kind: Membership, rtt: f64, timers: &Timers, msgs: &Messages) -> Members {
        Members {
            n,
            kind,
            rtt,
            timers: timers.clone(),
            msgs: msgs.clone(),
            visible_at: vec![f64::INFINITY; n * n],
            known: vec![0; n],
            latest: vec![0.0; n],
            up: vec![false; n],
            up_list: Vec::new(),
            rumors: vec![Vec::new(); n],
            sent: vec![0.0; n],
            received: vec![0.0; n],
            retransmit: (4.0 * ((n + 1) as f64).log10()).ceil().max(1.0) as u32,
        }
    }

    pub fn visible(&self, v: usize, w: usize, now: f64) -> bool {
        v == w || self.visible_at[v * self.n + w] <= now
    }

    pub fn n_up(&self) -> usize {
        self.up_list.len()
    }

    /// Records that v learns of w at `at`; the time v's view is complete
    /// if this completed it.
    fn learn(&mut self, v: usize, w: usize, at: f64) -> Option<f64> {
        let cell = &mut self.visible_at[v * self.n + w];
        if v == w || *cell <= at {
            return None;
        }
        let first = cell.is_infinite();
        *cell = at;
        self.latest[v] = self.latest[v].max(at);
        if first {
            self.known[v] += 1;
            if self.known[v] as usize == self.n - 1 {
                return Some(self.latest[v]);
            }
        }
        None
    }

    /// Node v's agent is up; returns the nodes whose view is complete from
    /// some time on, with that time.
    pub fn join(&mut self, v: usize, now: f64, rng: &mut Rng) -> Vec<(usize, f64)> {
        let mut complete = Vec::new();
        if self.n == 1 {
            complete.push((v, now));
        }
        match self.kind {
            Membership::AllToAll => {
                let at = now + self.rtt;
                for i in 0..self.up_list.len() {
                    let w = self.up_list[i] as usize;
                    complete.extend(self.learn(v, w, at).map(|t| (v, t)));
                    complete.extend(self.learn(w, v, at).map(|t| (w, t)));
                }
            }
            Membership::Gossip => {
                let r = self.retransmit;
                self.rumors[v].push((v as u32, r));
                if !self.up_list.is_empty() {
                    // Push-pull with one node that is up: its whole list
                    // (members it has heard of, even if only just) for ours.
                    let k = self.up_list[rng.below(self.up_list.len())] as usize;
                    let at = now + self.rtt;
                    complete.extend(self.learn(k, v, now + self.rtt / 2.0).map(|t| (k, t)));
                    complete.extend(self.learn(v, k, at).map(|t| (v, t)));
                    for w in 0..self.n {
                        if w != v && self.visible_at[k * self.n + w].is_finite() {
                            complete.extend(self.learn(v, w, at).map(|t| (v, t)));
                        }
                    }
                    self.rumors[k].push((v as u32, r));
                    let list = self.msgs.gossip + self.msgs.rumor * self.known[k] as f64;
                    self.sent[v] += list;
                    self.received[k] += list;
                    self.sent[k] += list;
                    self.received[v] += list;
                }
            }
        }
        self.up[v] = true;
        self.up_list.push(v as u32);
        complete
    }

    /// Whether gossip rounds still have something to spread.
    pub fn spreading(&self) -> bool {
        self.kind == Membership::Gossip && self.rumors.iter().any(|r| !r.is_empty())
    }

    /// One gossip round at `now`; returns the nodes whose view became
    /// complete, with the time.
    pub fn gossip_round(&mut self, now: f64, rng: &mut Rng) -> Vec<(usize, f64)> {
        let mut complete = Vec::new();
        self.sent.iter_mut().for_each(|b| *b = 0.0);
        self.received.iter_mut().for_each(|b| *b = 0.0);
        if self.up_list.len() < 2 {
            return complete;
        }
        let at = now + self.rtt / 2.0;
        let mut fresh: Vec<Vec<u32>> = vec![Vec::new(); self.n];
        for i in 0..self.up_list.len() {
            let v = self.up_list[i] as usize;
            if self.rumors[v].is_empty() {
                continue;
            }
            let bytes = self.msgs.gossip + self.msgs.rumor * self.rumors[v].len() as f64;
            for _ in 0..self.timers.gossip_fanout {
                let t = loop {
                    let t = self.up_list[rng.below(self.up_list.len())] as usize;
                    if t != v {
                        break t;
                    }
                };
                self.sent[v] += bytes;
                self.received[t] += bytes;
                for j in 0..self.rumors[v].len() {
                    let x = self.rumors[v][j].0 as usize;
                    if x != t && self.visible_at[t * self.n + x] > at {
                        complete.extend(self.learn(t, x, at).map(|w| (t, w)));
                        fresh[t].push(x as u32);
                    }
                }
            }
        }
        let r = self.retransmit;
        for (v, new) in fresh.into_iter().enumerate() {
            let list = &mut self.rumors[v];
            list.iter_mut().for_each(|e| e.1 -= 1);
            list.retain(|e| e.1 > 0);
            list.extend(new.into_iter().map(|x| (x, r)));
        }
        complete
    }

    /// Membership bytes/s node v sends and receives now.
    pub fn traffic(&self, v: usize) -> (f64, f64) {
        if !self.up[v] {
            return (0.0, 0.0);
        }
        let peers = self.up_list.len().saturating_sub(1) as f64;
        match self.kind {
            Membership::AllToAll => {
                let r = peers * 2.0 * self.msgs.hello / self.timers.heartbeat;
                (r, r)
            }
            Membership::Gossip => {
                let probe = if peers > 0.0 {
                    2.0 * self.msgs.gossip / self.timers.heartbeat
                } else {
                    0.0
                };
                let p = self.timers.gossip_period;
                (probe + self.sent[v] / p, probe + self.received[v] / p)
            }
        }
    }

    /// How many nodes each membership message reaches per heartbeat-long
    /// interval from node v (for have-maps riding on them).
    pub fn carriers_per_second(&self) -> f64 {
        let peers = self.up_list.len().saturating_sub(1) as f64;
        match self.kind {
            Membership::AllToAll => peers / self.timers.heartbeat,
            Membership::Gossip => {
                self.timers.gossip_fanout as f64 / self.timers.gossip_period
                    + 1.0 / self.timers.heartbeat
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, kind: Membership) -> Members {
        Members::new(n, kind, 0.001, &Timers::default(), &Messages::default())
    }

    #[test]
    fn all_to_all_sees_every_join_within_a_round_trip_at_quadratic_cost() {
        let mut m = members(50, Membership::AllToAll);
        let mut rng = Rng::new(1);
        let mut complete = Vec::new();
        for v in 0..50 {
            complete.extend(m.join(v, v as f64 * 0.01, &mut rng));
        }
        assert_eq!(complete.len(), 50);
        assert!(complete.iter().all(|(_, t)| *t <= 0.49 + 0.001 + 1e-12));
        assert!(m.visible(3, 49, 0.5) && !m.visible(3, 49, 0.49));
        let (up, down) = m.traffic(0);
        assert_eq!(up, 49.0 * 800.0);
        assert_eq!(up, down);
    }

    #[test]
    fn gossip_spreads_every_join_in_logarithmic_rounds_at_linear_cost() {
        let n = 1024;
        let mut m = members(n, Membership::Gossip);
        let mut rng = Rng::new(2);
        let mut complete = vec![f64::INFINITY; n];
        for v in 0..n {
            for (w, t) in m.join(v, 0.0, &mut rng) {
                complete[w] = complete[w].min(t);
            }
        }
        let mut rounds = 0;
        let mut now = 0.0;
        while m.spreading() {
            rounds += 1;
            now += 0.2;
            for (w, t) in m.gossip_round(now, &mut rng) {
                complete[w] = complete[w].min(t);
            }
            let busiest = (0..n).map(|v| m.traffic(v).0).fold(0.0, f64::max);
            assert!(busiest < 4.0e6, "round {rounds}: {busiest} B/s");
        }
        assert!(
            complete.iter().all(|t| t.is_finite()),
            "every view completes"
        );
        let last = complete.iter().cloned().fold(0.0, f64::max);
        assert!(last < 4.0, "views complete by {last} s ({rounds} rounds)");
        // Once quiet, a node only probes: two small messages a second.
        m.gossip_round(now + 0.2, &mut rng);
        assert_eq!(m.traffic(0).0, 300.0);
    }
}

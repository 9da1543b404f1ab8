//! How a pull's pieces move: which pieces a source can serve, the flows
//! that carry them, and the receiver's copy completing.
//!
//! Design decisions:
//! - **What a source serves.** A piece it holds, or one it is still
//!   receiving from the store (`RecordingSink`); under `Relay` also one it
//!   is still receiving from a peer. Today's server sends a chunk's
//!   contiguous prefix, so an owner-only pull carries one piece at a time,
//!   in order; a relay source sends every range it has, so a relay pull
//!   carries every piece the source has, each as its own flow (a chunk's
//!   two store parts arrive side by side, and so they travel on down the
//!   tree).
//! - **Cut-through at byte granularity with piece-sized events.** A piece
//!   streamed while its source still receives it may arrive faster than the
//!   source gets it; it is then *held*, and complete at the receiver when
//!   the source's copy is. So a chain of relays adds no store-and-forward
//!   delay per piece, and pieces can be as large as a store part without
//!   slowing the pipeline.
//! - A pull whose source lacks what it needs next is listed among the
//!   waiters of the source's copy of the chunk, woken by any piece of it
//!   starting or completing there. With no flow running it waits with
//!   keep-alives, which the peer wait bounds.

use super::links::FlowId;
use super::scenario::Policy;
use super::sim::{Ev, Sim, KIND_PULL, KIND_SHIFT};
use super::transfer::PullState;

fn bit(p: &super::transfer::Pull, g: usize) -> u64 {
    1u64 << (g - p.first)
}

impl Sim {
    /// Whether node s serves piece g now.
    fn serves(&self, s: usize, g: usize) -> bool {
        let i = s * self.lay.pieces() + g;
        self.landed[i] || self.arriving[i]
    }

    /// Pieces pull p should start streaming now.
    fn to_start(&self, p: usize) -> Vec<usize> {
        let pull = &self.pulls[p];
        let c = self.tasks[pull.task].chunk as usize;
        let n = self.lay.chunks[c].pieces.len();
        let s = pull.src as usize;
        let busy = pull.got | pull.held | pull.flows.iter().fold(0, |m, (g, _)| m | bit(pull, *g));
        let mut missing = (0..n)
            .filter(|i| busy & (1u64 << i) == 0)
            .map(|i| pull.first + i);
        match self.sc.policy {
            Policy::OwnerOnly => {
                if busy != pull.got {
                    return Vec::new();
                }
                missing
                    .next()
                    .filter(|g| self.serves(s, *g))
                    .into_iter()
                    .collect()
            }
            Policy::Relay => missing.filter(|g| self.serves(s, *g)).collect(),
        }
    }

    /// Completes held pieces the source now holds, starts what the source
    /// serves, and waits for the rest.
    pub(super) fn stream_next(&mut self, p: usize) {
        self.complete_held(p);
        if self.finished(p) {
            return;
        }
        self.start_flows(p, None);
        self.settle_pull(p);
    }

    fn complete_held(&mut self, p: usize) {
        let s = self.pulls[p].src as usize;
        let mut held = self.pulls[p].held;
        while held != 0 {
            let g = self.pulls[p].first + held.trailing_zeros() as usize;
            held &= held - 1;
            if self.landed[s * self.lay.pieces() + g] {
                self.piece_done(p, g);
            }
        }
    }

    /// Whether every piece of the pull is complete (then it is finished).
    fn finished(&mut self, p: usize) -> bool {
        let c = self.tasks[self.pulls[p].task].chunk as usize;
        let n = self.lay.chunks[c].pieces.len();
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        if self.pulls[p].got != all {
            return false;
        }
        self.pull_finish(p);
        true
    }

    /// Starts a flow for each piece to start, reusing `reuse` (a flow of
    /// this pull whose segment just ended) for the first.
    fn start_flows(&mut self, p: usize, mut reuse: Option<FlowId>) {
        let s = self.pulls[p].src as usize;
        let v = self.tasks[self.pulls[p].task].node as usize;
        for g in self.to_start(p) {
            let len = self.lay.piece_len[g] as f64;
            let flow = match reuse.take() {
                Some(flow) => {
                    self.links.extend(self.now, flow, len);
                    flow
                }
                None => {
                    let token = (KIND_PULL << KIND_SHIFT) | p as u64;
                    let (up, down) = (self.nodes[s].up, self.nodes[v].down);
                    self.links.start(self.now, up, Some(down), len, token)
                }
            };
            self.pulls[p].flows.push((g, flow));
            if self.sc.policy == Policy::Relay {
                self.start_arriving(v, g);
            }
        }
        if let Some(flow) = reuse {
            self.links.remove(self.now, flow);
        }
    }

    /// Sets the pull streaming or waiting, and lists it among the waiters
    /// of its source while it needs anything from there.
    fn settle_pull(&mut self, p: usize) {
        let c = self.tasks[self.pulls[p].task].chunk as usize;
        let n = self.lay.chunks[c].pieces.len();
        let pull = &mut self.pulls[p];
        let streaming = pull
            .flows
            .iter()
            .fold(0, |m, (g, _)| m | (1u64 << (g - pull.first)));
        let needs = (pull.got | streaming).count_ones() < n as u32;
        if !pull.flows.is_empty() {
            if pull.state != PullState::Streaming {
                pull.state = PullState::Streaming;
                pull.epoch += 1;
                pull.mark = pull.moved;
                let e = pull.epoch;
                self.after(self.sc.timers.frame_stall, Ev::StallCheck(p, e));
            }
        } else if pull.state != PullState::Waiting {
            pull.state = PullState::Waiting;
            pull.epoch += 1;
            let e = pull.epoch;
            let wait = self.sc.timers.peer_wait + self.sc.timers.response_margin;
            self.after(wait, Ev::WaitTimeout(p, e));
        }
        let pull = &mut self.pulls[p];
        if needs && !pull.listed {
            pull.listed = true;
            let key = pull.src as usize * self.lay.chunks.len() + c;
            self.waiters.entry(key).or_default().push(p);
        }
    }

    /// Pull p's piece g is complete at its receiver.
    fn piece_done(&mut self, p: usize, g: usize) {
        let t = self.pulls[p].task;
        let v = self.tasks[t].node as usize;
        let b = bit(&self.pulls[p], g);
        self.pulls[p].held &= !b;
        self.pulls[p].got |= b;
        self.tasks[t].left -= 1;
        if self.sc.policy == Policy::Relay {
            self.land(v, g);
        }
    }

    pub(super) fn on_pull_segment(&mut self, p: usize, flow: FlowId) {
        let i = self.pulls[p]
            .flows
            .iter()
            .position(|(_, f)| *f == flow)
            .expect("the pull's flow");
        let (g, _) = self.pulls[p].flows.swap_remove(i);
        let t = self.pulls[p].task;
        let (s, v) = (self.pulls[p].src as usize, self.tasks[t].node as usize);
        let len = self.lay.piece_len[g] as f64;
        self.nodes[v].out.recv_peer += len;
        self.nodes[s].out.sent += len;
        self.pulls[p].moved += len;
        self.pulls[p].held |= bit(&self.pulls[p], g);
        self.complete_held(p);
        if self.pulls[p].got.count_ones() as usize
            == self.lay.chunks[self.tasks[t].chunk as usize].pieces.len()
        {
            self.links.remove(self.now, flow);
            self.pull_finish(p);
            return;
        }
        self.start_flows(p, Some(flow));
        self.settle_pull(p);
    }

    fn pull_finish(&mut self, p: usize) {
        for (_, flow) in std::mem::take(&mut self.pulls[p].flows) {
            self.links.remove(self.now, flow);
        }
        self.pull_over(p);
        let t = self.pulls[p].task;
        let (v, c) = (self.tasks[t].node as usize, self.tasks[t].chunk as usize);
        self.release_permit(t);
        if self.sc.policy == Policy::OwnerOnly {
            // Received chunks are served on only once held (CRC checked).
            for g in self.lay.chunks[c].pieces.clone() {
                self.land(v, g);
            }
        }
        self.task_over(t, true);
    }

    /// Node v holds piece g from now on.
    pub(super) fn land(&mut self, v: usize, g: usize) {
        let i = v * self.lay.pieces() + g;
        self.arriving[i] = false;
        if !self.landed[i] {
            self.landed[i] = true;
            self.wake(v, g);
        }
    }

    /// Node v starts receiving piece g (servable while it arrives).
    pub(super) fn start_arriving(&mut self, v: usize, g: usize) {
        let i = v * self.lay.pieces() + g;
        if !self.landed[i] && !self.arriving[i] {
            self.arriving[i] = true;
            self.wake(v, g);
        }
    }

    /// Node v no longer receives piece g (its pull was dropped).
    pub(super) fn not_arriving(&mut self, v: usize, g: usize) {
        self.arriving[v * self.lay.pieces() + g] = false;
    }

    /// Wakes the pulls waiting on piece g's chunk at node v.
    fn wake(&mut self, v: usize, g: usize) {
        let key = v * self.lay.chunks.len() + self.lay.piece_chunk[g] as usize;
        for p in self.waiters.remove(&key).unwrap_or_default() {
            let pull = &mut self.pulls[p];
            let live = matches!(pull.state, PullState::Streaming | PullState::Waiting);
            if pull.listed && live && pull.src as usize == v {
                pull.listed = false;
                self.stream_next(p);
            }
        }
    }
}

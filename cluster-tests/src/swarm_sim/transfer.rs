//! How one node gets one chunk: a task per (node, chunk) that tries peer
//! sources and ends at the store, pulls that stream a chunk piece by piece,
//! and the fetch engine's FIFO of ranged GETs.
//!
//! Design decisions (each mirrors `peer/src/swarm/swarm_fetcher.rs`):
//! - **Task loop.** A chunk with no peer source goes to the store at once
//!   (own chunks never wait for a pull slot); otherwise it queues for one
//!   of `pull_conc` slots (FIFO, as tokio's fair semaphore), picks its
//!   source again with a slot in hand, and pulls. NOT_FOUND excludes that
//!   peer for the object and loops (back of the queue) while fewer than
//!   `max_attempts` sources were tried; any other failure goes to the store.
//! - **A pull** costs half a round trip to reach the source, which checks
//!   its book (the object opened): if missing it opens the object (when
//!   `open_on_request`) or waits `book_wait` and answers NOT_FOUND. Then the
//!   chunk streams (`stream.rs`).
//! - **Failures.** A stream that moves less than one frame (1 MiB) in
//!   `frame_stall` seconds is "stalled": its bytes are dropped, its slot is
//!   held for `dies_soon` (membership confirming the peer alive), and the
//!   chunk goes to the store. A pull waiting longer than `peer_wait` +
//!   margin on a piece goes to the store. A store fetch after any peer
//!   attempt counts as a fallback.
//! - **Store fetches** split the chunk into `part`-sized GETs queued FIFO
//!   behind the node's earlier GETs, `store_conc` in flight; each waits
//!   `store_latency` for its first byte, then streams its pieces in order;
//!   every landed piece is servable at once (the owner's cut-through).

use super::links::FlowId;
use super::sim::{Ev, Sim, KIND_PART, KIND_SHIFT};

/// One node's pursuit of one chunk.
#[derive(Debug)]
pub struct Task {
    pub node: u32,
    pub chunk: u32,
    /// Peers already tried, in order.
    pub tried: Vec<u32>,
    pub permit: bool,
    /// Pieces still to arrive from the current source.
    pub left: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Asking,
    BookWait,
    Streaming,
    Waiting,
    Over,
}

/// A chunk streaming from one peer.
#[derive(Debug)]
pub struct Pull {
    pub task: usize,
    pub src: u32,
    /// The chunk's first piece; bit i of the masks is piece `first + i`.
    pub first: usize,
    /// Pieces complete at the receiver.
    pub got: u64,
    /// Pieces whose bytes are all here, complete when the source's are.
    pub held: u64,
    /// Pieces streaming now, each with its flow.
    pub flows: Vec<(usize, FlowId)>,
    /// Listed among the waiters of the source's copy of the chunk.
    pub listed: bool,
    pub state: PullState,
    /// Bumped on every state change: stale timers are ignored.
    pub epoch: u32,
    /// Bytes of whole pieces received.
    pub moved: f64,
    /// `moved` when the current stall window began.
    pub mark: f64,
}

/// One ranged GET of pieces `next..end`.
#[derive(Debug)]
pub struct Part {
    pub node: u32,
    pub task: usize,
    pub next: usize,
    pub end: usize,
    pub flow: Option<FlowId>,
}

/// Puts `item` into the last free slot of `slots` (or a new one); its index.
fn place<T>(slots: &mut Vec<T>, free: &mut Vec<usize>, item: T) -> usize {
    match free.pop() {
        Some(i) => {
            slots[i] = item;
            i
        }
        None => {
            slots.push(item);
            slots.len() - 1
        }
    }
}

impl Sim {
    pub(super) fn new_task(&mut self, v: usize, c: usize) -> usize {
        let task = Task {
            node: v as u32,
            chunk: c as u32,
            tried: Vec::new(),
            permit: false,
            left: 0,
        };
        place(&mut self.tasks, &mut self.free_tasks, task)
    }

    /// Task t's chunk is held: its slot may serve another task.
    pub(super) fn task_over(&mut self, t: usize, via_peer: bool) {
        let (v, c) = (self.tasks[t].node as usize, self.tasks[t].chunk as usize);
        self.free_tasks.push(t);
        self.chunk_done(v, c, via_peer);
    }

    /// Pull p is over; its slot may serve another pull.
    pub(super) fn pull_over(&mut self, p: usize) {
        self.pulls[p].state = PullState::Over;
        self.pulls[p].epoch += 1;
        self.free_pulls.push(p);
    }

    pub(super) fn task_begin(&mut self, t: usize) {
        if self.pick(t).is_none() {
            self.store_fetch(t);
            return;
        }
        let v = self.tasks[t].node as usize;
        self.nodes[v].pull_queue.push_back(t);
        self.pump_pulls(v);
    }

    fn pump_pulls(&mut self, v: usize) {
        while self.nodes[v].pull_free > 0 {
            let Some(t) = self.nodes[v].pull_queue.pop_front() else {
                return;
            };
            self.nodes[v].pull_free -= 1;
            self.tasks[t].permit = true;
            match self.pick(t) {
                None => {
                    self.tasks[t].permit = false;
                    self.nodes[v].pull_free += 1;
                    self.store_fetch(t);
                }
                Some(s) => {
                    self.tasks[t].tried.push(s);
                    self.pull_start(t, s);
                }
            }
        }
    }

    pub(super) fn release_permit(&mut self, t: usize) {
        if self.tasks[t].permit {
            self.tasks[t].permit = false;
            let v = self.tasks[t].node as usize;
            self.nodes[v].pull_free += 1;
            self.pump_pulls(v);
        }
    }

    fn pull_start(&mut self, t: usize, s: u32) {
        let c = self.tasks[t].chunk as usize;
        let pieces = self.lay.chunks[c].pieces.clone();
        assert!(pieces.len() <= 64, "at most 64 pieces per chunk");
        self.tasks[t].left = pieces.len() as u32;
        let pull = Pull {
            task: t,
            src: s,
            first: pieces.start,
            got: 0,
            held: 0,
            flows: Vec::new(),
            listed: false,
            state: PullState::Asking,
            // A reused slot's epoch keeps counting: the old pull's timers
            // stay stale.
            epoch: self
                .free_pulls
                .last()
                .map_or(0, |&p| self.pulls[p].epoch + 1),
            moved: 0.0,
            mark: 0.0,
        };
        let p = place(&mut self.pulls, &mut self.free_pulls, pull);
        let e = self.pulls[p].epoch;
        self.after(self.sc.rtt / 2.0, Ev::PullArrive(p, e));
    }

    pub(super) fn file_of(&self, p: usize) -> usize {
        let c = self.tasks[self.pulls[p].task].chunk as usize;
        self.lay.chunks[c].file
    }

    /// The request reached the source: is the object open there?
    pub(super) fn pull_arrive(&mut self, p: usize, e: u32) {
        if self.pulls[p].state != PullState::Asking || self.pulls[p].epoch != e {
            return;
        }
        let s = self.pulls[p].src as usize;
        let f = self.file_of(p);
        let i = s * self.lay.files.len() + f;
        if self.file_open[i] {
            self.after(self.sc.rtt / 2.0, Ev::PullGo(p, e));
        } else if self.sc.open_on_request && self.nodes[s].startup_done {
            self.open_file(s, f, false);
            self.after(self.sc.rtt / 2.0, Ev::PullGo(p, e));
        } else {
            // A fetch the request starts still waits for the source's
            // start-up (as every fetch does) before it opens the book.
            if self.sc.open_on_request && !self.nodes[s].requested.contains(&f) {
                self.nodes[s].requested.push(f);
            }
            self.pulls[p].state = PullState::BookWait;
            self.book_waiters.entry(i).or_default().push(p);
            self.after(self.sc.timers.book_wait, Ev::BookTimeout(p, e));
        }
    }

    /// The object this pull waited for was opened at its source.
    pub(super) fn book_found(&mut self, p: usize) {
        let s = self.pulls[p].src as usize;
        let open = self.file_open[s * self.lay.files.len() + self.file_of(p)];
        if self.pulls[p].state == PullState::BookWait && open {
            let pull = &mut self.pulls[p];
            pull.state = PullState::Asking;
            pull.epoch += 1;
            let e = pull.epoch;
            self.after(self.sc.rtt / 2.0, Ev::PullGo(p, e));
        }
    }

    pub(super) fn book_timeout(&mut self, p: usize, e: u32) {
        if self.pulls[p].state != PullState::BookWait || self.pulls[p].epoch != e {
            return;
        }
        let t = self.pulls[p].task;
        let v = self.tasks[t].node as usize;
        let s = self.pulls[p].src;
        let f = self.file_of(p);
        self.pull_over(p);
        self.nodes[v].out.not_found += 1;
        let ex = &mut self.excluded[v * self.lay.files.len() + f];
        if !ex.contains(&s) {
            ex.push(s);
        }
        self.release_permit(t);
        if self.tasks[t].tried.len() < self.sc.timers.max_attempts {
            self.task_begin(t);
        } else {
            self.store_fetch(t);
        }
    }

    pub(super) fn pull_go(&mut self, p: usize, e: u32) {
        if self.pulls[p].state == PullState::Asking && self.pulls[p].epoch == e {
            self.stream_next(p);
        }
    }

    /// Drops a pull's bytes (its chunk will come whole from the store).
    fn abandon(&mut self, p: usize) {
        let t = self.pulls[p].task;
        let (v, s) = (self.tasks[t].node as usize, self.pulls[p].src as usize);
        let mut partial = 0.0;
        for (g, flow) in std::mem::take(&mut self.pulls[p].flows) {
            partial += self.links.remove(self.now, flow);
            self.not_arriving(v, g);
        }
        let mut held = self.pulls[p].held;
        while held != 0 {
            self.not_arriving(v, self.pulls[p].first + held.trailing_zeros() as usize);
            held &= held - 1;
        }
        self.nodes[v].out.recv_peer += partial;
        self.nodes[s].out.sent += partial;
        self.nodes[v].out.wasted += self.pulls[p].moved + partial;
        self.pull_over(p);
    }

    pub(super) fn stall_check(&mut self, p: usize, e: u32) {
        let pull = &self.pulls[p];
        if pull.state != PullState::Streaming || pull.epoch != e {
            return;
        }
        let c = self.tasks[pull.task].chunk as usize;
        let progress: f64 = pull
            .flows
            .iter()
            .map(|(_, f)| self.links.progress(self.now, *f))
            .sum();
        let moved = pull.moved + progress;
        let left = self.lay.chunks[c].len as f64 - pull.mark;
        let frame = self.sc.timers.frame_bytes as f64 * self.sc.timers.unfairness;
        let need = frame.min(left);
        if moved - pull.mark >= need - 1e-6 {
            self.pulls[p].mark = moved;
            self.after(self.sc.timers.frame_stall, Ev::StallCheck(p, e));
            return;
        }
        let t = pull.task;
        let v = self.tasks[t].node as usize;
        self.nodes[v].out.stalls += 1;
        self.abandon(p);
        self.after(self.sc.timers.dies_soon, Ev::StoreAfterStall(t));
    }

    pub(super) fn wait_timeout(&mut self, p: usize, e: u32) {
        if self.pulls[p].state != PullState::Waiting || self.pulls[p].epoch != e {
            return;
        }
        let t = self.pulls[p].task;
        let v = self.tasks[t].node as usize;
        self.nodes[v].out.wait_timeouts += 1;
        self.abandon(p);
        self.release_permit(t);
        self.store_fetch(t);
    }

    /// Fetches task t's whole chunk from the store through the node's
    /// engine.
    pub(super) fn store_fetch(&mut self, t: usize) {
        let (v, c) = (self.tasks[t].node as usize, self.tasks[t].chunk as usize);
        if !self.tasks[t].tried.is_empty() {
            self.nodes[v].out.fallbacks += 1;
        }
        let pieces = self.lay.chunks[c].pieces.clone();
        self.tasks[t].left = pieces.len() as u32;
        let per_part = (self.sc.part / self.sc.piece) as usize;
        let mut g = pieces.start;
        while g < pieces.end {
            let end = (g + per_part).min(pieces.end);
            let part = Part {
                node: v as u32,
                task: t,
                next: g,
                end,
                flow: None,
            };
            let i = place(&mut self.parts, &mut self.free_parts, part);
            self.nodes[v].store_queue.push_back(i);
            g = end;
        }
        self.pump_store(v);
    }

    fn pump_store(&mut self, v: usize) {
        while self.nodes[v].store_free > 0 {
            let Some(part) = self.nodes[v].store_queue.pop_front() else {
                return;
            };
            self.nodes[v].store_free -= 1;
            self.after(self.sc.store_latency, Ev::PartGo(part));
        }
    }

    pub(super) fn part_go(&mut self, part: usize) {
        let v = self.parts[part].node as usize;
        self.start_arriving(v, self.parts[part].next);
        let len = self.lay.piece_len[self.parts[part].next] as f64;
        let token = (KIND_PART << KIND_SHIFT) | part as u64;
        let down = self.nodes[v].down;
        let flow = self
            .links
            .start(self.now, self.store_side, Some(down), len, token);
        self.parts[part].flow = Some(flow);
    }

    pub(super) fn on_part_segment(&mut self, part: usize) {
        let (v, t, g) = {
            let p = &self.parts[part];
            (p.node as usize, p.task, p.next)
        };
        let len = self.lay.piece_len[g] as f64;
        self.nodes[v].out.recv_store += len;
        self.egress += len;
        self.parts[part].next += 1;
        let flow = self.parts[part].flow.expect("a streaming part has a flow");
        if self.parts[part].next < self.parts[part].end {
            let next = self.lay.piece_len[self.parts[part].next] as f64;
            self.links.extend(self.now, flow, next);
            self.start_arriving(v, self.parts[part].next);
        } else {
            self.links.remove(self.now, flow);
            self.parts[part].flow = None;
            self.free_parts.push(part);
            self.nodes[v].store_free += 1;
            self.pump_store(v);
        }
        self.land(v, g);
        self.tasks[t].left -= 1;
        if self.tasks[t].left == 0 {
            self.task_over(t, false);
        }
    }
}

//! The event loop and each node's life: job start, agent start-up,
//! membership, the prefetch window, objects opened and finished, the digest
//! pass and the consumer.
//!
//! Design decisions:
//! - **One queue of timed events** (a binary heap ordered by time, then by
//!   the event itself, so ties resolve the same way every run) beside the
//!   transfers' segment ends ([`Links`]); the loop takes whichever is
//!   earlier and settles changed rates once per instant, before time moves.
//! - **A node's life follows the agent**: job start (+`t0`) → agent up →
//!   start-up wait (every listed peer visible, or `startup_wait`) → files
//!   opened in prefetch order while their sizes fit the window → per object:
//!   Have round (if rounds) → one task per chunk ([`super::transfer`]) →
//!   digest pass if peers supplied bytes → ready (frees the window) →
//!   consumer in file order.
//! - Control traffic (membership, Have) is recomputed when it changes (a
//!   join, a gossip round, an object opened or finished) and subtracted from
//!   the node's link capacity, never below half of it.
//! - A run ends when every node is done; a queue that empties earlier is a
//!   deadlock and is reported as nodes that never finished (infinite time).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use super::layout::{Layout, Ranking};
use super::links::{FlowId, Links, Ord64, SideId};
use super::membership::Members;
use super::report::{NodeOutcome, Outcome};
use super::rng::Rng;
use super::scenario::{HaveMode, Policy, Scenario, Start};
use super::transfer::{Part, Pull, Task};

/// Tokens of transfer flows: kind in the top byte, index below.
pub(super) const KIND_SHIFT: u32 = 56;
pub(super) const KIND_PART: u64 = 1;
pub(super) const KIND_PULL: u64 = 2;
pub(super) const KIND_CPU: u64 = 3;
/// Capacity a node's link keeps for data whatever its control traffic.
const MIN_DATA_SHARE: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Ev {
    JobStart(u32),
    AgentUp(u32),
    StartupDone(u32),
    MemberTick,
    HaveDone(u32, u32),
    PartGo(usize),
    PullArrive(usize, u32),
    PullGo(usize, u32),
    BookTimeout(usize, u32),
    StallCheck(usize, u32),
    WaitTimeout(usize, u32),
    StoreAfterStall(usize),
    CpuDone(usize),
}

/// One node's agent and consumer.
#[derive(Debug)]
pub(super) struct Node {
    pub up: SideId,
    pub down: SideId,
    pub agent_up: bool,
    pub startup_done: bool,
    pub job_started: bool,
    pub next_file: usize,
    pub window_files: usize,
    pub window_bytes: u64,
    pub pull_free: usize,
    pub pull_queue: VecDeque<usize>,
    pub store_free: usize,
    pub store_queue: VecDeque<usize>,
    pub open_objects: usize,
    pub open_map_bytes: f64,
    /// Files peers asked for before this node's start-up wait ended.
    pub requested: Vec<usize>,
    pub consumed: usize,
    pub consuming: bool,
    pub peak_up: f64,
    pub out: NodeOutcome,
}

/// A running simulation.
pub(super) struct Sim {
    pub sc: Scenario,
    pub lay: Layout,
    pub ring: Ranking,
    pub links: Links,
    pub members: Members,
    pub now: f64,
    queue: BinaryHeap<Reverse<(Ord64, Ev)>>,
    pub pick_rng: Rng,
    member_rng: Rng,
    pub nodes: Vec<Node>,
    pub store_side: SideId,
    cpu_side: Option<SideId>,
    /// Per (node, piece): the node holds the piece.
    pub landed: Vec<bool>,
    /// Per (node, piece): the node is receiving the piece from a source its
    /// peers may stream it from meanwhile (the store; any under `Relay`).
    pub arriving: Vec<bool>,
    /// Per (node, chunk): 0 not started, 1 in progress, 2 held.
    pub chunk_state: Vec<u8>,
    /// Per chunk: (time, node) of every completion, in time order (what
    /// have-maps show; kept for `OwnerOnly` only).
    pub holders: Vec<Vec<(f64, u32)>>,
    /// Per (node, file).
    pub file_open: Vec<bool>,
    file_counted: Vec<bool>,
    file_left: Vec<u32>,
    pub file_peer: Vec<bool>,
    file_ready: Vec<bool>,
    pub excluded: Vec<Vec<u32>>,
    /// Pulls waiting for a piece of (node × chunks + chunk) to land.
    pub waiters: HashMap<usize, Vec<usize>>,
    /// Pulls waiting for (node × files + file) to be opened.
    pub book_waiters: HashMap<usize, Vec<usize>>,
    pub full_orders: HashMap<usize, Vec<u32>>,
    pub tasks: Vec<Task>,
    pub pulls: Vec<Pull>,
    pub parts: Vec<Part>,
    /// Slots of finished tasks, pulls and parts, for reuse.
    pub free_tasks: Vec<usize>,
    pub free_pulls: Vec<usize>,
    pub free_parts: Vec<usize>,
    cpu_jobs: Vec<(u32, u32, bool, Option<FlowId>)>,
    pub egress: f64,
    done: usize,
    events: u64,
    max_ctrl_share: f64,
    member_tick_armed: bool,
}

impl Sim {
    /// A run of `sc`, with the hashed ring unless `ring` is given.
    pub fn new(sc: &Scenario, ring: Option<Ranking>) -> Sim {
        let sc = sc.clone();
        let n = sc.nodes;
        assert!(
            n >= 1 && !sc.files.is_empty(),
            "a run needs nodes and files"
        );
        let lay = sc.layout();
        let mut rng = Rng::new(sc.seed);
        let mut placement = rng.fork();
        let ring = ring.unwrap_or_else(|| Ranking::hashed(&lay, n, &mut placement));
        let mut links = Links::new();
        // The smallest share a receiving end can offer: its capacity less
        // control traffic, over its most concurrent transfers.
        let floor = MIN_DATA_SHARE * sc.node_down / (sc.pull_conc + sc.store_conc) as f64;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let up = links.add_sender(sc.node_up, f64::INFINITY, floor);
            let down = links.add_receiver(sc.node_down);
            nodes.push(Node {
                up,
                down,
                agent_up: false,
                startup_done: false,
                job_started: false,
                next_file: 0,
                window_files: 0,
                window_bytes: 0,
                pull_free: sc.pull_conc,
                pull_queue: VecDeque::new(),
                store_free: sc.store_conc,
                store_queue: VecDeque::new(),
                open_objects: 0,
                open_map_bytes: 0.0,
                requested: Vec::new(),
                consumed: 0,
                consuming: false,
                peak_up: 0.0,
                out: NodeOutcome::default(),
            });
        }
        let store_side = links.add_sender(sc.store_cap, sc.store_conn, floor);
        let cpu_side = (sc.cpu.shared_cores > 0.0)
            .then(|| links.add_sender(sc.cpu.shared_cores, 1.0, f64::INFINITY));
        let members = Members::new(n, sc.membership, sc.rtt, &sc.timers, &sc.messages);
        let (p, c, f) = (lay.pieces(), lay.chunks.len(), lay.files.len());
        let mut sim = Sim {
            lay,
            ring,
            links,
            members,
            now: 0.0,
            queue: BinaryHeap::new(),
            pick_rng: rng.fork(),
            member_rng: rng.fork(),
            nodes,
            store_side,
            cpu_side,
            landed: vec![false; n * p],
            arriving: vec![false; n * p],
            chunk_state: vec![0; n * c],
            holders: vec![Vec::new(); c],
            file_open: vec![false; n * f],
            file_counted: vec![false; n * f],
            file_left: vec![0; n * f],
            file_peer: vec![false; n * f],
            file_ready: vec![false; n * f],
            excluded: vec![Vec::new(); n * f],
            waiters: HashMap::new(),
            book_waiters: HashMap::new(),
            full_orders: HashMap::new(),
            tasks: Vec::new(),
            pulls: Vec::new(),
            parts: Vec::new(),
            free_tasks: Vec::new(),
            free_pulls: Vec::new(),
            free_parts: Vec::new(),
            cpu_jobs: Vec::new(),
            egress: 0.0,
            done: 0,
            events: 0,
            max_ctrl_share: 0.0,
            member_tick_armed: false,
            sc,
        };
        for v in 0..n {
            for ff in 0..f {
                sim.file_left[v * f + ff] = sim.lay.files[ff].chunks.len() as u32;
            }
        }
        let mut starts = rng.fork();
        for v in 0..n {
            let offset = starts.unit() * sim.sc.skew;
            match sim.sc.start {
                Start::Eager => sim.at(offset, Ev::JobStart(v as u32)),
                Start::Lazy => {
                    sim.at(0.0, Ev::AgentUp(v as u32));
                    sim.at(offset + sim.sc.t0, Ev::JobStart(v as u32));
                }
            }
        }
        sim
    }

    pub fn at(&mut self, t: f64, ev: Ev) {
        self.queue.push(Reverse((Ord64(t), ev)));
    }

    pub fn after(&mut self, dt: f64, ev: Ev) {
        self.at(self.now + dt, ev);
    }

    /// Runs to the end; `wall` is measured by the caller.
    pub fn run(mut self) -> Outcome {
        let n = self.sc.nodes;
        while self.done < n {
            let t_ev = self.queue.peek().map(|Reverse((t, _))| t.0);
            let t_flow = self.links.next_due();
            let t = match (t_ev, t_flow) {
                (None, None) if !self.links.has_dirty() => break,
                (a, b) => a.unwrap_or(f64::INFINITY).min(b.unwrap_or(f64::INFINITY)),
            };
            if t > self.now && self.links.has_dirty() {
                self.links.settle(self.now);
                continue;
            }
            self.now = self.now.max(t);
            self.events += 1;
            if t_flow.is_some_and(|tf| tf <= t_ev.unwrap_or(f64::INFINITY)) {
                let (flow, token) = self.links.pop_due(self.now).expect("due flow");
                self.on_segment(flow, token);
            } else {
                let Reverse((_, ev)) = self.queue.pop().expect("peeked event");
                self.on_event(ev);
            }
        }
        self.outcome()
    }

    fn on_segment(&mut self, flow: FlowId, token: u64) {
        let id = (token & ((1 << KIND_SHIFT) - 1)) as usize;
        match token >> KIND_SHIFT {
            KIND_PART => self.on_part_segment(id),
            KIND_PULL => self.on_pull_segment(id, flow),
            KIND_CPU => {
                self.links.remove(self.now, flow);
                self.cpu_jobs[id].3 = None;
                self.cpu_done(id);
            }
            k => unreachable!("flow kind {k}"),
        }
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::JobStart(v) => self.job_start(v as usize),
            Ev::AgentUp(v) => self.agent_up(v as usize),
            Ev::StartupDone(v) => {
                let v = v as usize;
                if !self.nodes[v].startup_done {
                    self.nodes[v].startup_done = true;
                    let nf = self.lay.files.len();
                    for f in std::mem::take(&mut self.nodes[v].requested) {
                        if !self.file_open[v * nf + f] {
                            self.open_file(v, f, false);
                        }
                    }
                    self.pump_prefetch(v);
                }
            }
            Ev::MemberTick => self.member_tick(),
            Ev::HaveDone(v, f) => self.spawn_tasks(v as usize, f as usize),
            Ev::PartGo(p) => self.part_go(p),
            Ev::PullArrive(p, e) => self.pull_arrive(p, e),
            Ev::PullGo(p, e) => self.pull_go(p, e),
            Ev::BookTimeout(p, e) => self.book_timeout(p, e),
            Ev::StallCheck(p, e) => self.stall_check(p, e),
            Ev::WaitTimeout(p, e) => self.wait_timeout(p, e),
            Ev::StoreAfterStall(t) => {
                self.release_permit(t);
                self.store_fetch(t);
            }
            Ev::CpuDone(j) => self.cpu_done(j),
        }
    }

    fn job_start(&mut self, v: usize) {
        match self.sc.start {
            Start::Eager => self.after(self.sc.t0, Ev::AgentUp(v as u32)),
            Start::Lazy => {
                self.nodes[v].job_started = true;
                self.pump_prefetch(v);
            }
        }
    }

    fn agent_up(&mut self, v: usize) {
        self.nodes[v].agent_up = true;
        self.egress += self.sc.small_bytes as f64;
        let complete = self.members.join(v, self.now, &mut self.member_rng);
        for (w, t) in complete {
            self.at(t, Ev::StartupDone(w as u32));
        }
        self.after(self.sc.timers.startup_wait, Ev::StartupDone(v as u32));
        if self.sc.start == Start::Eager {
            self.nodes[v].job_started = true;
        }
        self.update_all_ctrl();
        if self.members.spreading() && !self.member_tick_armed {
            self.member_tick_armed = true;
            self.after(self.sc.timers.gossip_period, Ev::MemberTick);
        }
    }

    fn member_tick(&mut self) {
        let complete = self.members.gossip_round(self.now, &mut self.member_rng);
        for (w, t) in complete {
            self.at(t, Ev::StartupDone(w as u32));
        }
        self.update_all_ctrl();
        if self.members.spreading() {
            self.after(self.sc.timers.gossip_period, Ev::MemberTick);
        } else {
            self.member_tick_armed = false;
        }
    }

    fn update_all_ctrl(&mut self) {
        for v in 0..self.sc.nodes {
            if self.nodes[v].agent_up {
                self.update_ctrl(v);
            }
        }
    }

    /// Bytes of file f's have-map: its bitmap and the CRCs of about half
    /// its chunks.
    fn map_bytes(&self, f: usize) -> f64 {
        let chunks = self.lay.files[f].chunks.len() as f64;
        (chunks / 8.0).ceil() + 4.0 * chunks
    }

    /// Sets node v's data capacity to its links less its control traffic.
    pub fn update_ctrl(&mut self, v: usize) {
        let (mut up, mut down) = self.members.traffic(v);
        let node = &self.nodes[v];
        let peers = self.members.n_up().saturating_sub(1) as f64;
        let have = match self.sc.have {
            HaveMode::Rounds => {
                let per_object = 2.0 * self.sc.messages.have;
                (node.open_objects as f64 * per_object + node.open_map_bytes) * peers
                    / self.sc.timers.have_refresh
            }
            HaveMode::Piggyback => node.open_map_bytes * self.members.carriers_per_second(),
        };
        up += have;
        down += have;
        let share = (up / self.sc.node_up).max(down / self.sc.node_down);
        self.max_ctrl_share = self.max_ctrl_share.max(share);
        let up_cap = (self.sc.node_up - up).max(MIN_DATA_SHARE * self.sc.node_up);
        let down_cap = (self.sc.node_down - down).max(MIN_DATA_SHARE * self.sc.node_down);
        let (su, sd) = (self.nodes[v].up, self.nodes[v].down);
        for (side, cap) in [(su, up_cap), (sd, down_cap)] {
            if (self.links.cap(side) - cap).abs() > 1e-4 * cap {
                self.links.set_cap(side, cap);
            }
        }
    }

    pub fn pump_prefetch(&mut self, v: usize) {
        let nf = self.lay.files.len();
        if !self.nodes[v].job_started || !self.nodes[v].startup_done {
            return;
        }
        while self.nodes[v].next_file < nf {
            let f = self.nodes[v].next_file;
            if !self.file_open[v * nf + f] {
                let size = self.lay.files[f].size;
                let node = &self.nodes[v];
                let full = node.window_bytes + size > self.sc.window;
                if node.window_files >= self.sc.window_min_files && full {
                    break;
                }
                self.open_file(v, f, true);
            }
            self.nodes[v].next_file += 1;
        }
    }

    /// Node v opens file f (its book): by its prefetch (`counted` against
    /// the window) or on a peer's request.
    pub fn open_file(&mut self, v: usize, f: usize, counted: bool) {
        let nf = self.lay.files.len();
        let i = v * nf + f;
        debug_assert!(!self.file_open[i]);
        self.file_open[i] = true;
        self.file_counted[i] = counted;
        if counted {
            self.nodes[v].window_files += 1;
            self.nodes[v].window_bytes += self.lay.files[f].size;
        }
        self.nodes[v].open_objects += 1;
        self.nodes[v].open_map_bytes += self.map_bytes(f);
        self.update_ctrl(v);
        for p in self.book_waiters.remove(&i).unwrap_or_default() {
            self.book_found(p);
        }
        let peers = self.members.n_up().saturating_sub(1);
        if self.sc.have == HaveMode::Rounds && peers > 0 {
            let answers = peers as f64 * (self.sc.messages.have + self.map_bytes(f));
            let round = self.sc.rtt + answers / self.links.cap(self.nodes[v].down);
            let latency = round.min(self.sc.timers.have_timeout);
            self.after(latency, Ev::HaveDone(v as u32, f as u32));
        } else {
            self.spawn_tasks(v, f);
        }
    }

    fn spawn_tasks(&mut self, v: usize, f: usize) {
        let nc = self.lay.chunks.len();
        for c in self.lay.files[f].chunks.clone() {
            if self.chunk_state[v * nc + c] == 0 {
                self.chunk_state[v * nc + c] = 1;
                let t = self.new_task(v, c);
                self.task_begin(t);
            }
        }
    }

    /// Node v holds chunk c (verified).
    pub fn chunk_done(&mut self, v: usize, c: usize, via_peer: bool) {
        let nc = self.lay.chunks.len();
        self.chunk_state[v * nc + c] = 2;
        if self.sc.policy == Policy::OwnerOnly {
            self.holders[c].push((self.now, v as u32));
        }
        let f = self.lay.chunks[c].file;
        let i = v * self.lay.files.len() + f;
        self.file_peer[i] |= via_peer;
        self.file_left[i] -= 1;
        if self.file_left[i] > 0 {
            return;
        }
        self.nodes[v].open_objects -= 1;
        self.nodes[v].open_map_bytes -= self.map_bytes(f);
        self.update_ctrl(v);
        if self.sc.cpu.verify > 0.0 && self.file_peer[i] {
            self.cpu_start(v, f, true);
        } else {
            self.file_ready(v, f);
        }
    }

    fn file_ready(&mut self, v: usize, f: usize) {
        let i = v * self.lay.files.len() + f;
        self.file_ready[i] = true;
        if self.file_counted[i] {
            self.nodes[v].window_files -= 1;
            self.nodes[v].window_bytes -= self.lay.files[f].size;
        }
        self.pump_prefetch(v);
        self.pump_consumer(v);
    }

    fn pump_consumer(&mut self, v: usize) {
        let nf = self.lay.files.len();
        while !self.nodes[v].consuming && self.nodes[v].consumed < nf {
            let f = self.nodes[v].consumed;
            if !self.file_ready[v * nf + f] {
                return;
            }
            if self.sc.cpu.consume > 0.0 {
                self.nodes[v].consuming = true;
                self.cpu_start(v, f, false);
                return;
            }
            self.nodes[v].consumed += 1;
        }
        if self.nodes[v].consumed == nf && !self.nodes[v].consuming {
            self.nodes[v].out.done = self.now;
            self.done += 1;
        }
    }

    /// A digest pass (`verify`) or the consumer's reading of file f.
    fn cpu_start(&mut self, v: usize, f: usize, verify: bool) {
        let rate = if verify {
            self.sc.cpu.verify
        } else {
            self.sc.cpu.consume
        };
        let core_seconds = self.lay.files[f].size as f64 / rate;
        let j = self.cpu_jobs.len();
        let flow = self.cpu_side.map(|side| {
            let token = (KIND_CPU << KIND_SHIFT) | j as u64;
            self.links.start(self.now, side, None, core_seconds, token)
        });
        self.cpu_jobs.push((v as u32, f as u32, verify, flow));
        if flow.is_none() {
            self.after(core_seconds, Ev::CpuDone(j));
        }
    }

    fn cpu_done(&mut self, j: usize) {
        let (v, f, verify, _) = self.cpu_jobs[j];
        let (v, f) = (v as usize, f as usize);
        if verify {
            self.file_ready(v, f);
        } else {
            self.nodes[v].consuming = false;
            self.nodes[v].consumed += 1;
            self.pump_consumer(v);
        }
    }

    fn outcome(self) -> Outcome {
        let nodes: Vec<NodeOutcome> = self
            .nodes
            .iter()
            .map(|n| {
                let mut o = n.out.clone();
                if n.consumed < self.lay.files.len() {
                    o.done = f64::INFINITY;
                }
                o
            })
            .collect();
        Outcome::new(
            &self.sc,
            self.lay.files.iter().map(|f| f.size).sum(),
            self.egress,
            self.events,
            self.max_ctrl_share,
            nodes,
        )
    }
}

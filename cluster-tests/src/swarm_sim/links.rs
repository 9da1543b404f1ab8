//! Bandwidth sharing between transfers: who gets which rate, and when each
//! transfer's current segment ends.
//!
//! Design decisions:
//! - **Sides, flows, segments.** A *side* is one capacity: a node's uplink or
//!   downlink, the store's account cap, a pool of CPU cores. A side either
//!   sends or receives, never both. A *flow* runs from a sending side to an
//!   optional receiving side and carries one *segment* of bytes at a time
//!   (a piece of a chunk); when a segment ends the caller extends the flow
//!   with the next segment (the share does not change) or removes it.
//! - **Rate rule: max-min fairness, found locally.** Each side keeps a
//!   *level*: the water level at which its capacity is shared among its
//!   flows when each flow is also capped by the level of its other end
//!   (and by `flow_cap`: one store connection's or one core's ceiling). A
//!   flow runs at the lower of its two ends' levels. This is the
//!   distributed max-min computation of rate-based flow control, with each
//!   side updated only at its own events (it reads its neighbours' current
//!   levels): a side whose every flow is held back elsewhere advertises its
//!   spare capacity on top, so the other ends can rise at their next event.
//!   Links are thus nearly work-conserving (a receiver whose store GETs are
//!   held back by the store gives the slack to its peer streams) at a cost
//!   local to the sides an event touched; propagating level changes to the
//!   neighbours at once changed no result of the calibration or the
//!   32-node runs by more than 2 % and cost 3.5× the time.
//! - **Rates change only at events**, and only for the flows of the sides
//!   an event touched (marked dirty, settled once per instant, before time
//!   advances), so simultaneous starts cost one recomputation.
//! - **Pooled senders.** A sending side whose equal share is at or below
//!   the smallest level any receiving end can drop to (`far_floor`: a
//!   node's downlink over its most concurrent transfers) binds every one of
//!   its flows. Such a side keeps a virtual clock (bytes delivered per flow) and
//!   its flows' segment ends in virtual bytes, so a hot owner streaming to a
//!   thousand pullers costs O(log n) per event instead of O(n).

use std::collections::BTreeSet;

use super::due::DueHeap;

/// Index of a side.
pub type SideId = usize;
/// Index of a flow (reused after removal).
pub type FlowId = usize;

/// A side pools its flows from this many flows on (when its equal share
/// allows), and stops below [`POOL_LEAVE`].
const POOL_ENTER: usize = 24;
const POOL_LEAVE: usize = 8;
/// A flow keeps its rate (and its scheduled end) when the new one differs
/// by less than this fraction: a link may run this much over or under its
/// capacity, in exchange for far fewer reschedules.
pub const RATE_TOLERANCE: f64 = 1e-3;

/// An f64 with a total order (times, virtual clocks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ord64(pub f64);

impl Eq for Ord64 {}

impl PartialOrd for Ord64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ord64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug)]
struct Pool {
    /// Bytes each flow of the pool has received since the pool formed, at `at`.
    clock: f64,
    at: f64,
    rate: f64,
    /// Segment ends of the pool's running flows, in clock bytes.
    due: BTreeSet<(Ord64, FlowId)>,
}

impl Pool {
    fn clock_at(&self, now: f64) -> f64 {
        self.clock + self.rate * (now - self.at)
    }
}

#[derive(Debug)]
struct Side {
    cap: f64,
    flow_cap: f64,
    far_floor: f64,
    /// Water level (see the module docs); `cap` while empty.
    level: f64,
    sends: bool,
    members: Vec<FlowId>,
    pool: Option<Pool>,
    dirty: bool,
}

impl Side {
    /// The equal share.
    fn offer(&self) -> f64 {
        (self.cap / self.members.len().max(1) as f64).min(self.flow_cap)
    }
}

#[derive(Debug, Default)]
struct Flow {
    up: SideId,
    down: Option<SideId>,
    slot_up: usize,
    slot_down: usize,
    token: u64,
    seg: f64,
    /// Individual flows: bytes of the segment left at `at`, at `rate`.
    left: f64,
    at: f64,
    rate: f64,
    /// Pooled flows: the segment ends when the pool's clock reaches this.
    vfinish: f64,
    pooled: bool,
    /// The segment ended and the caller has not yet extended or removed it.
    ended: bool,
}

/// Keys of the due heap: a flow's segment end, or a pool's next one.
fn flow_key(id: FlowId) -> usize {
    2 * id
}

fn pool_key(side: SideId) -> usize {
    2 * side + 1
}

/// All sides and flows of one simulation.
#[derive(Debug, Default)]
pub struct Links {
    sides: Vec<Side>,
    flows: Vec<Flow>,
    free: Vec<FlowId>,
    dirty: Vec<SideId>,
    due: DueHeap,
    scratch: Vec<f64>,
}

impl Links {
    pub fn new() -> Links {
        Links::default()
    }

    /// A sending side of `cap` bytes/s whose flows get at most `flow_cap`
    /// each; the receiving ends of its flows never give one of them less
    /// than `far_floor` (infinity for flows without a receiving side).
    pub fn add_sender(&mut self, cap: f64, flow_cap: f64, far_floor: f64) -> SideId {
        self.add_side(cap, flow_cap, far_floor, true)
    }

    /// A receiving side of `cap` bytes/s.
    pub fn add_receiver(&mut self, cap: f64) -> SideId {
        self.add_side(cap, f64::INFINITY, 0.0, false)
    }

    fn add_side(&mut self, cap: f64, flow_cap: f64, far_floor: f64, sends: bool) -> SideId {
        assert!(cap > 0.0, "a side needs capacity");
        self.sides.push(Side {
            cap,
            flow_cap,
            far_floor,
            level: cap.min(flow_cap),
            sends,
            members: Vec::new(),
            pool: None,
            dirty: false,
        });
        self.sides.len() - 1
    }

    pub fn cap(&self, side: SideId) -> f64 {
        self.sides[side].cap
    }

    /// Changes a side's capacity from `now` on.
    pub fn set_cap(&mut self, side: SideId, cap: f64) {
        assert!(cap > 0.0, "a side needs capacity");
        if self.sides[side].cap != cap {
            self.sides[side].cap = cap;
            self.mark(side);
        }
    }

    /// Flows on a side.
    pub fn load(&self, side: SideId) -> usize {
        self.sides[side].members.len()
    }

    /// Bytes/s a sending side is delivering now (rates as of the last settle).
    pub fn rate_of(&self, side: SideId) -> f64 {
        let s = &self.sides[side];
        match &s.pool {
            Some(p) => p.rate * p.due.len() as f64,
            None => s.members.iter().map(|f| self.flows[*f].rate).sum(),
        }
    }

    fn mark(&mut self, side: SideId) {
        if !self.sides[side].dirty {
            self.sides[side].dirty = true;
            self.dirty.push(side);
        }
    }

    /// Starts a flow with a first segment of `bytes`; `token` comes back when
    /// a segment ends.
    pub fn start(
        &mut self,
        now: f64,
        up: SideId,
        down: Option<SideId>,
        bytes: f64,
        token: u64,
    ) -> FlowId {
        let id = self.free.pop().unwrap_or_else(|| {
            self.flows.push(Flow::default());
            self.flows.len() - 1
        });
        let slot_up = self.sides[up].members.len();
        self.sides[up].members.push(id);
        let slot_down = match down {
            Some(d) => {
                self.sides[d].members.push(id);
                self.sides[d].members.len() - 1
            }
            None => 0,
        };
        self.flows[id] = Flow {
            up,
            down,
            slot_up,
            slot_down,
            token,
            seg: bytes,
            left: bytes,
            at: now,
            ..Flow::default()
        };
        if let Some(p) = &mut self.sides[up].pool {
            let v = p.clock_at(now) + bytes;
            self.flows[id].pooled = true;
            self.flows[id].vfinish = v;
            p.due.insert((Ord64(v), id));
        }
        self.mark(up);
        if let Some(d) = down {
            self.mark(d);
        }
        id
    }

    /// Gives a flow whose segment just ended its next segment.
    pub fn extend(&mut self, now: f64, id: FlowId, bytes: f64) {
        let f = &mut self.flows[id];
        debug_assert!(f.ended, "extend only after a segment ended");
        f.ended = false;
        f.seg = bytes;
        if f.pooled {
            let up = f.up;
            let p = self.sides[up]
                .pool
                .as_mut()
                .expect("pooled flow has a pool");
            let v = p.clock_at(now) + bytes;
            self.flows[id].vfinish = v;
            p.due.insert((Ord64(v), id));
            self.schedule_pool(up);
        } else {
            f.left = bytes;
            f.at = now;
            if f.rate > 0.0 {
                let t = now + bytes / f.rate;
                self.due.set(flow_key(id), t);
            }
        }
    }

    /// Bytes of the current segment delivered by `now`.
    pub fn progress(&self, now: f64, id: FlowId) -> f64 {
        let f = &self.flows[id];
        if f.ended {
            return f.seg;
        }
        let left = if f.pooled {
            let p = self.sides[f.up]
                .pool
                .as_ref()
                .expect("pooled flow has a pool");
            f.vfinish - p.clock_at(now)
        } else {
            f.left - f.rate * (now - f.at)
        };
        (f.seg - left).clamp(0.0, f.seg)
    }

    /// Removes a flow; returns the bytes of its segment it had delivered.
    pub fn remove(&mut self, now: f64, id: FlowId) -> f64 {
        let done = self.progress(now, id);
        let (up, down, slot_up, slot_down, pooled, vfinish) = {
            let f = &self.flows[id];
            (f.up, f.down, f.slot_up, f.slot_down, f.pooled, f.vfinish)
        };
        if pooled {
            if let Some(p) = &mut self.sides[up].pool {
                p.due.remove(&(Ord64(vfinish), id));
            }
        }
        self.unlink(up, slot_up, true);
        if let Some(d) = down {
            self.unlink(d, slot_down, false);
        }
        self.due.remove(flow_key(id));
        let f = &mut self.flows[id];
        f.pooled = false;
        f.ended = true;
        f.rate = 0.0;
        self.free.push(id);
        self.mark(up);
        if let Some(d) = down {
            self.mark(d);
        }
        done
    }

    fn unlink(&mut self, side: SideId, slot: usize, as_up: bool) {
        let members = &mut self.sides[side].members;
        members.swap_remove(slot);
        if let Some(&moved) = members.get(slot) {
            let f = &mut self.flows[moved];
            if as_up {
                f.slot_up = slot;
            } else {
                f.slot_down = slot;
            }
        }
    }

    /// Whether some side's flows need new rates.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Gives the flows of every side touched since the last call their rates
    /// from `now` on.
    pub fn settle(&mut self, now: f64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        for &s in &dirty {
            self.sides[s].dirty = false;
            self.settle_pooling(now, s);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for &s in &dirty {
            self.sides[s].level = self.level(s, &mut scratch);
        }
        self.scratch = scratch;
        for s in dirty {
            if self.sides[s].pool.is_some() {
                self.schedule_pool(s);
                continue;
            }
            for i in 0..self.sides[s].members.len() {
                let id = self.sides[s].members[i];
                self.rerate(now, id);
            }
        }
    }

    /// Side s's water level: its capacity shared among its flows, each
    /// capped by its other end's level and by `flow_cap` (water-filling
    /// over the caps in ascending order; `scratch` holds them).
    fn level(&self, s: SideId, scratch: &mut Vec<f64>) -> f64 {
        let side = &self.sides[s];
        if side.pool.is_some() || side.members.is_empty() {
            return side.offer();
        }
        scratch.clear();
        scratch.extend(side.members.iter().map(|&id| {
            let f = &self.flows[id];
            let other = if side.sends { f.down } else { Some(f.up) };
            other
                .map_or(f64::INFINITY, |o| self.sides[o].level)
                .min(side.flow_cap)
        }));
        scratch.sort_unstable_by(f64::total_cmp);
        let mut left = side.cap;
        let mut n = scratch.len();
        for &c in scratch.iter() {
            if c * n as f64 <= left {
                left -= c;
                n -= 1;
            } else {
                return (left / n as f64).min(side.flow_cap);
            }
        }
        // Every flow is held back elsewhere: any one of them could grow by
        // the spare capacity (so that its other end may raise its level).
        (left + scratch[scratch.len() - 1]).min(side.flow_cap)
    }

    /// Forms, keeps or dissolves a side's pool, advancing its clock to `now`.
    fn settle_pooling(&mut self, now: f64, s: SideId) {
        let side = &self.sides[s];
        let n = side.members.len();
        let offer = side.offer();
        let poolable = offer <= side.far_floor;
        match &mut self.sides[s].pool {
            Some(p) if poolable && n >= POOL_LEAVE => {
                p.clock = p.clock_at(now);
                p.at = now;
                p.rate = offer;
            }
            Some(_) => {
                let p = self.sides[s].pool.take().expect("matched Some");
                self.due.remove(pool_key(s));
                let clock = p.clock_at(now);
                for i in 0..self.sides[s].members.len() {
                    let id = self.sides[s].members[i];
                    let f = &mut self.flows[id];
                    f.pooled = false;
                    f.left = if f.ended { 0.0 } else { f.vfinish - clock };
                    f.at = now;
                    f.rate = 0.0;
                }
            }
            None if poolable && n >= POOL_ENTER => {
                let mut due = BTreeSet::new();
                for i in 0..n {
                    let id = self.sides[s].members[i];
                    let f = &mut self.flows[id];
                    let left = (f.left - f.rate * (now - f.at)).max(0.0);
                    f.pooled = true;
                    f.vfinish = left;
                    if !f.ended {
                        due.insert((Ord64(left), id));
                    }
                    self.due.remove(flow_key(id));
                }
                self.sides[s].pool = Some(Pool {
                    clock: 0.0,
                    at: now,
                    rate: offer,
                    due,
                });
            }
            None => {}
        }
    }

    /// New rate for an individual flow from its two ends' levels.
    fn rerate(&mut self, now: f64, id: FlowId) {
        let f = &self.flows[id];
        if f.pooled || f.ended {
            return;
        }
        let mut rate = self.sides[f.up].level;
        if let Some(d) = f.down {
            rate = rate.min(self.sides[d].level);
        }
        let f = &mut self.flows[id];
        if (rate - f.rate).abs() <= RATE_TOLERANCE * rate {
            return;
        }
        f.left = (f.left - f.rate * (now - f.at)).max(0.0);
        f.at = now;
        f.rate = rate;
        let t = now + f.left / rate;
        self.due.set(flow_key(id), t);
    }

    fn schedule_pool(&mut self, s: SideId) {
        let p = self.sides[s].pool.as_ref().expect("side has a pool");
        match p.due.first() {
            Some((Ord64(v), _)) => {
                let t = p.at + ((v - p.clock) / p.rate).max(0.0);
                self.due.set(pool_key(s), t);
            }
            None => self.due.remove(pool_key(s)),
        }
    }

    /// When the next segment ends.
    pub fn next_due(&self) -> Option<f64> {
        self.due.peek().map(|(t, _)| t)
    }

    /// The flow whose segment ends next, if that is at or before `now`; the
    /// flow stays (counted on its sides) until extended or removed.
    pub fn pop_due(&mut self, now: f64) -> Option<(FlowId, u64)> {
        let (t, key) = self.due.peek()?;
        if t > now {
            return None;
        }
        let id = if key % 2 == 0 {
            self.due.remove(key);
            key / 2
        } else {
            let s = key / 2;
            let p = self.sides[s].pool.as_mut().expect("a scheduled pool");
            let (_, id) = p.due.pop_first().expect("a scheduled pool has a due flow");
            self.schedule_pool(s);
            id
        };
        let f = &mut self.flows[id];
        f.ended = true;
        f.left = 0.0;
        f.at = now;
        Some((id, f.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs until no segment is due; returns (time, token) of each end.
    fn drain(l: &mut Links, mut now: f64) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        loop {
            if l.has_dirty() {
                l.settle(now);
            }
            let Some(t) = l.next_due() else { break };
            now = now.max(t);
            let (id, token) = l.pop_due(now).expect("due");
            out.push((now, token));
            l.remove(now, id);
        }
        out
    }

    #[test]
    fn max_min_shares_give_the_slack_to_the_unbound_flow() {
        let mut l = Links::new();
        let up = l.add_sender(100.0, f64::INFINITY, 0.0);
        let down_a = l.add_receiver(100.0);
        let down_b = l.add_receiver(20.0);
        l.start(0.0, up, Some(down_a), 100.0, 1);
        l.start(0.0, up, Some(down_b), 100.0, 2);
        // b is held to 20 by its downlink, so a gets the other 80.
        let ends = drain(&mut l, 0.0);
        assert_eq!(ends[0].1, 1);
        assert!((ends[0].0 - 1.25).abs() < 1e-9, "{ends:?}");
        // b: 20 bytes/s throughout.
        assert!((ends[1].0 - 5.0).abs() < 1e-9, "{ends:?}");
    }

    #[test]
    fn a_receiver_gives_its_slack_to_streams_not_held_back() {
        // A receiver of 100 with 4 store GETs (the store gives each 10) and
        // one peer stream: the stream gets 60, not an equal fifth.
        let mut l = Links::new();
        let store = l.add_sender(40.0, f64::INFINITY, 0.0);
        let peer = l.add_sender(100.0, f64::INFINITY, 0.0);
        let down = l.add_receiver(100.0);
        for i in 0..4 {
            l.start(0.0, store, Some(down), 10.0, i);
        }
        let stream = l.start(0.0, peer, Some(down), 600.0, 9);
        l.settle(0.0);
        assert!((l.progress(1.0, stream) - 60.0).abs() < 1e-6);
        assert!((l.rate_of(store) - 40.0).abs() < 1e-6);
    }

    #[test]
    fn a_pooled_sender_matches_individual_rates() {
        // 100 pullers of one sender, each pulling 10 bytes then 10 more;
        // far ends never offer less than 1, so the sender (cap 50, 100
        // flows: 0.5 each) pools.
        let run = |floor: f64| {
            let mut l = Links::new();
            let up = l.add_sender(50.0, f64::INFINITY, floor);
            let downs: Vec<SideId> = (0..100).map(|_| l.add_receiver(100.0)).collect();
            let mut ids = Vec::new();
            for (i, d) in downs.iter().enumerate() {
                ids.push(l.start(
                    i as f64 * 0.01,
                    up,
                    Some(*d),
                    10.0 + i as f64 * 0.1,
                    i as u64,
                ));
                l.settle(i as f64 * 0.01);
            }
            let mut now = 0.99;
            let mut extended = [false; 100];
            let mut ends = Vec::new();
            loop {
                if l.has_dirty() {
                    l.settle(now);
                }
                let Some(t) = l.next_due() else { break };
                now = t;
                let (id, token) = l.pop_due(now).expect("due");
                if !extended[token as usize] {
                    extended[token as usize] = true;
                    l.extend(now, id, 10.0);
                } else {
                    ends.push((token, now));
                    l.remove(now, id);
                }
            }
            ends.sort_by_key(|e| e.0);
            ends
        };
        let pooled = run(1.0);
        let individual = run(0.0);
        assert_eq!(pooled.len(), 100);
        for (p, i) in pooled.iter().zip(&individual) {
            assert!((p.1 - i.1).abs() < 1e-6, "{p:?} vs {i:?}");
        }
        // All bytes at 50/s: 100 × 20 + Σ 0.1 i ≈ 2495 bytes ≈ 49.9 s.
        let last = pooled.iter().map(|e| e.1).fold(0.0, f64::max);
        assert!((last - 2495.0 / 50.0).abs() < 0.5, "{last}");
    }

    #[test]
    fn progress_and_removal_mid_segment() {
        let mut l = Links::new();
        let cpu = l.add_sender(10.0, 4.0, f64::INFINITY);
        let a = l.start(0.0, cpu, None, 40.0, 1);
        l.settle(0.0);
        assert!((l.progress(2.0, a) - 8.0).abs() < 1e-9);
        assert!((l.rate_of(cpu) - 4.0).abs() < 1e-9);
        assert!((l.remove(2.0, a) - 8.0).abs() < 1e-9);
        assert!(l.next_due().is_none());
        assert_eq!(l.load(cpu), 0);
    }
}

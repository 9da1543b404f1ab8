//! The SWIM state machine without I/O: payloads and clock ticks in,
//! addressed payloads, membership changes and the member list out.
//!
//! Design decisions:
//! - `foca` does the protocol; this wrapper owns its timers (a min-heap of
//!   deadlines, at most about two per member), maps identities to gossip
//!   socket addresses and enforces [`MAX_MEMBERS`]: members that arrive
//!   while the table is full are marked down and removed at once, locally
//!   and without telling anyone, and counted. The table therefore never
//!   holds more than the cap however many identities authentic datagrams
//!   name.
//! - A node that joins asks a random member for its whole member list
//!   ([`super::member_sync`]); this wrapper asks, serves (at most once per
//!   probe period) and applies those pages next to the SWIM messages.
//! - Everything here is synchronous and deterministic given the clock and
//!   the seed of its random generator, so it is tested without sockets.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::time::Instant;

use foca::{
    AccumulatingRuntime, Config, Foca, Member, NoCustomBroadcast, OwnedNotification,
    PeriodicParams, PostcardCodec, State, Timer,
};
use rand_0_10::rngs::SmallRng;
use rand_0_10::{RngExt, SeedableRng};

use super::datagram::MAX_PAYLOAD;
use super::member_sync::{self, BadPage, PayloadKind, MAX_SWIM_MESSAGE};
use super::{GossipTiming, MemberId, INDIRECT_PROBES, LEAVE_FANOUT, MAX_MEMBERS};

type Engine = Foca<MemberId, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// Most members one payload can name (a member encodes in ≥ 8 bytes): the
/// most a single receive can add to the table.
const MAX_NEW_PER_PAYLOAD: usize = MAX_PAYLOAD / 8;

/// Smallest cluster size updates are spread for (foca's LAN rule gives
/// 4·log10(33) = 6 transmissions of each update).
const MIN_SIZE_ESTIMATE: usize = 32;

/// A member as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

impl From<State> for MemberState {
    fn from(s: State) -> MemberState {
        match s {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        }
    }
}

/// Why an authentic payload was of no use.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("unknown payload kind")]
    UnknownKind,
    #[error(transparent)]
    Page(#[from] BadPage),
    #[error("SWIM: {0}")]
    Swim(#[from] foca::Error),
}

/// A membership event worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Up(MemberId),
    Down(MemberId),
    /// A restarted or rejoined member replaced its previous identity.
    Renamed {
        from: MemberId,
        to: MemberId,
    },
    /// This node has members (again).
    Connected,
    /// This node has no members left.
    Isolated,
    /// The cluster declared this node down; it rejoins as `MemberId`.
    Rejoined(MemberId),
    /// This node left (or was declared down and could not rejoin).
    Defunct,
}

/// A timer due at `at`; `seq` keeps equal deadlines in submission order.
struct Due {
    at: Instant,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One node's SWIM state (see the module docs).
pub struct SwimNode {
    engine: Engine,
    config: Config,
    timing: GossipTiming,
    /// Active members the current `max_transmissions` was chosen for.
    tuned_for: usize,
    cap: usize,
    runtime: AccumulatingRuntime<MemberId>,
    timers: BinaryHeap<Reverse<Due>>,
    next_seq: u64,
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    changes: Vec<Change>,
    refused: u64,
    rng: SmallRng,
    /// When this node last sent its member list to a joiner.
    last_sync_served: Option<Instant>,
}

impl SwimNode {
    /// A node that knows no one yet; `seed` seeds its random choices.
    pub fn new(me: MemberId, timing: GossipTiming, seed: u64) -> SwimNode {
        SwimNode::with_cap(me, timing, seed, MAX_MEMBERS)
    }

    /// [`SwimNode::new`] with a member cap other than [`MAX_MEMBERS`].
    pub fn with_cap(me: MemberId, timing: GossipTiming, seed: u64, cap: usize) -> SwimNode {
        let config = engine_config(&timing, 1);
        SwimNode {
            engine: Foca::new(
                me,
                config.clone(),
                SmallRng::seed_from_u64(seed),
                PostcardCodec,
            ),
            config,
            timing,
            tuned_for: 1,
            cap,
            runtime: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            next_seq: 0,
            outbox: Vec::new(),
            changes: Vec::new(),
            refused: 0,
            rng: SmallRng::seed_from_u64(seed.rotate_left(32)),
            last_sync_served: None,
        }
    }

    pub fn identity(&self) -> &MemberId {
        self.engine.identity()
    }

    /// Handles an authenticated payload that came from gossip socket
    /// `from`.
    pub fn receive(
        &mut self,
        payload: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), Unusable> {
        let (kind, body) = PayloadKind::of(payload).ok_or(Unusable::UnknownKind)?;
        let before = self.near_cap_snapshot(MAX_NEW_PER_PAYLOAD);
        let result = match kind {
            PayloadKind::Swim => self
                .engine
                .handle_data(body, &mut self.runtime)
                .map_err(Unusable::from),
            PayloadKind::SyncRequest => {
                self.serve_sync(from, now);
                Ok(())
            }
            PayloadKind::SyncPage => member_sync::decode_page(body)
                .map_err(Unusable::from)
                .and_then(|members| {
                    self.engine
                        .apply_many(members.into_iter(), false, &mut self.runtime)
                        .map_err(Unusable::from)
                }),
        };
        self.settle(before, now);
        result
    }

    /// Sends this node's member list to `to`, unless it did so less than a
    /// probe period ago.
    fn serve_sync(&mut self, to: SocketAddr, now: Instant) {
        if self
            .last_sync_served
            .is_some_and(|t| now.duration_since(t) < self.timing.probe_period)
        {
            return;
        }
        self.last_sync_served = Some(now);
        for page in member_sync::encode_pages(self.engine.iter_membership_state()) {
            self.outbox.push((to, page));
        }
    }

    /// Asks a random member for its member list (this node just joined).
    fn request_sync(&mut self) {
        let n = self.engine.num_members();
        if n == 0 {
            return;
        }
        let pick = self.rng.random_range(0..n);
        if let Some(m) = self.engine.iter_members().nth(pick) {
            let to = m.id().gossip_addr();
            self.outbox.push((to, vec![PayloadKind::SyncRequest as u8]));
        }
    }

    /// Asks `to` (a seed or a member) to let this node in.
    pub fn announce(&mut self, to: MemberId, now: Instant) {
        if let Err(e) = self.engine.announce(to, &mut self.runtime) {
            tracing::debug!(error = %e, "gossip announce not sent");
        }
        self.settle(None, now);
    }

    /// Runs every timer due at `now`.
    pub fn fire_due(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(due)) = self.timers.pop() else {
                break;
            };
            if let Err(e) = self.engine.handle_timer(due.timer, &mut self.runtime) {
                tracing::debug!(error = %e, "gossip timer");
            }
            self.settle(None, now);
        }
    }

    /// Declares this node down and tells up to [`LEAVE_FANOUT`] members.
    pub fn leave(&mut self, now: Instant) {
        let fanout = self.engine.num_members().clamp(1, LEAVE_FANOUT);
        let mut wide = self.config.clone();
        wide.num_indirect_probes = NonZeroUsize::new(fanout).expect("clamped to ≥ 1");
        // The leave must ride every one of those messages.
        let fanout_tx = NonZeroU8::new(u8::try_from(fanout).unwrap_or(u8::MAX)).expect("≥ 1");
        wide.max_transmissions = wide.max_transmissions.max(fanout_tx);
        if self.engine.set_config(wide).is_err() {
            tracing::debug!("gossip leave fanout not applied");
        }
        if let Err(e) = self.engine.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "gossip leave");
        }
        self.settle(None, now);
    }

    /// When the next timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(d)| d.at)
    }

    /// Payloads to send, with their gossip socket addresses.
    pub fn take_outbox(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.outbox)
    }

    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Members refused for the cap since the last call.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// Every member in the table (down ones included) by peer id, sorted.
    pub fn members(&self) -> Vec<(SocketAddr, MemberState)> {
        let mut out: Vec<_> = self
            .engine
            .iter_membership_state()
            .map(|m| (m.id().peer, m.state().into()))
            .collect();
        out.sort_unstable_by_key(|(a, _)| *a);
        out
    }

    /// Whether `peer` is an alive or suspected member.
    pub fn is_member(&self, peer: SocketAddr) -> bool {
        self.engine.iter_members().any(|m| m.id().peer == peer)
    }

    /// Alive or suspected members.
    pub fn member_count(&self) -> usize {
        self.engine.num_members()
    }

    /// Entries in the table, down members included (≤ the cap).
    pub fn table_len(&self) -> usize {
        self.engine.iter_membership_state().len()
    }

    /// Timers pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Applies member records as if gossiped (tests and state imports).
    pub fn apply(&mut self, members: Vec<Member<MemberId>>, now: Instant) {
        let before = self.near_cap_snapshot(members.len());
        if let Err(e) = self
            .engine
            .apply_many(members.into_iter(), true, &mut self.runtime)
        {
            tracing::debug!(error = %e, "gossip apply");
        }
        self.settle(before, now);
    }

    /// The peer ids in the table, when `incoming` more could pass the cap.
    fn near_cap_snapshot(&self, incoming: usize) -> Option<HashSet<SocketAddr>> {
        (self.table_len() + incoming > self.cap).then(|| {
            self.engine
                .iter_membership_state()
                .map(|m| m.id().peer)
                .collect()
        })
    }

    /// After any engine call: enforce the cap against the table as it was
    /// (`before`), retune, then collect what the engine asked for.
    fn settle(&mut self, before: Option<HashSet<SocketAddr>>, now: Instant) {
        let mut evicted = HashSet::new();
        if let Some(before) = before {
            let excess = self.table_len().saturating_sub(self.cap);
            let newcomers: Vec<Member<MemberId>> = self
                .engine
                .iter_membership_state()
                .filter(|m| !before.contains(&m.id().peer))
                .take(excess)
                .cloned()
                .collect();
            for m in newcomers {
                let down = Member::new(m.id().clone(), m.incarnation(), State::Down);
                let id = m.id().clone();
                let _ = self
                    .engine
                    .apply_many(std::iter::once(down), false, &mut self.runtime);
                let _ = self
                    .engine
                    .handle_timer(Timer::RemoveDown(id.clone()), &mut self.runtime);
                evicted.insert(id);
                self.refused += 1;
            }
        }
        self.retune();
        self.collect(&evicted, now);
    }

    /// Keeps `max_transmissions` at foca's LAN value for the current size
    /// (≈ 4·log10(N+1)), re-chosen when the size doubles or halves.
    fn retune(&mut self) {
        let n = self.engine.num_members().max(1);
        if n < self.tuned_for * 2 && n * 2 > self.tuned_for {
            return;
        }
        let config = engine_config(&self.timing, n);
        if self.engine.set_config(config.clone()).is_ok() {
            self.config = config;
            self.tuned_for = n;
        }
    }

    fn collect(&mut self, evicted: &HashSet<MemberId>, now: Instant) {
        while let Some((to, message)) = self.runtime.to_send() {
            let payload = PayloadKind::Swim.wrap(&message);
            self.outbox.push((to.gossip_addr(), payload));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            if matches!(&timer, Timer::RemoveDown(id) if evicted.contains(id)) {
                continue;
            }
            self.next_seq += 1;
            self.timers.push(Reverse(Due {
                at: now + after,
                seq: self.next_seq,
                timer,
            }));
        }
        while let Some(n) = self.runtime.to_notify() {
            if matches!(n, OwnedNotification::Active | OwnedNotification::Rejoin(_)) {
                self.request_sync();
            }
            let change = match n {
                OwnedNotification::MemberUp(id) if !evicted.contains(&id) => Change::Up(id),
                OwnedNotification::MemberDown(id) if !evicted.contains(&id) => Change::Down(id),
                OwnedNotification::Rename(from, to) => Change::Renamed { from, to },
                OwnedNotification::Active => Change::Connected,
                OwnedNotification::Idle => Change::Isolated,
                OwnedNotification::Rejoin(id) => Change::Rejoined(id),
                OwnedNotification::Defunct => Change::Defunct,
                _ => continue,
            };
            self.changes.push(change);
        }
    }
}

/// foca's settings for `members` active members under `timing`. Sizes
/// below [`MIN_SIZE_ESTIMATE`] count as that: while a cluster forms, each
/// node knows only a few members but its updates must still reach all.
fn engine_config(timing: &GossipTiming, members: usize) -> Config {
    let size = u32::try_from(members.max(MIN_SIZE_ESTIMATE)).unwrap_or(u32::MAX);
    let size = NonZeroU32::new(size).expect("at least MIN_SIZE_ESTIMATE");
    let periodic = |frequency, n| {
        Some(PeriodicParams {
            frequency,
            num_members: NonZeroUsize::new(n).expect("non-zero"),
        })
    };
    Config {
        probe_period: timing.probe_period,
        probe_rtt: timing.probe_rtt,
        num_indirect_probes: NonZeroUsize::new(INDIRECT_PROBES).expect("non-zero"),
        suspect_to_down_after: timing.suspect_to_down,
        remove_down_after: Some(timing.remove_down_after),
        max_packet_size: NonZeroUsize::new(MAX_SWIM_MESSAGE).expect("non-zero"),
        notify_down_members: true,
        periodic_announce: periodic(timing.announce_every, 1),
        periodic_announce_to_down_members: periodic(timing.rejoin_every, 2),
        periodic_gossip: periodic(timing.gossip_every, 3),
        ..Config::new_lan(size)
    }
}

#[cfg(test)]
#[path = "swim_tests.rs"]
mod tests;

//! The gossip socket: one task per node that feeds authenticated datagrams
//! and clock ticks to [`SwimNode`], seals and sends what it produces, joins
//! through the seed list, and publishes the member list to [`PeerSet`].
//!
//! Design decisions:
//! - One task owns the socket and the SWIM state: no locks on the protocol
//!   path; readers see the published list through [`PeerSet`].
//! - Datagrams are read into a buffer one byte larger than
//!   [`MAX_DATAGRAM`], so a larger one shows as oversized and is dropped
//!   unread. Up to [`RECEIVE_BATCH`] queued datagrams are handled before the
//!   list is published again.
//! - Seeds: the peer list's addresses (DNS names re-resolved every
//!   [`RESOLVE_INTERVAL`]); a seed's gossip port is its peer port plus this
//!   node's offset. Join rounds go to up to [`JOIN_FANOUT`] seeds that are
//!   not members: every probe period while this node has no members, every
//!   `rejoin_every` after.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::datagram::{DatagramKey, Refusal};
use super::swim::{Change, MemberState, SwimNode};
use super::{gossip_port, GossipCounters, GossipTiming, MemberId};
use super::{JOIN_FANOUT, MAX_DATAGRAM, REPLAY_CAPACITY};
use crate::swarm::auth::{now_secs, NonceCache, NONCE_BYTES};
use crate::swarm::peer_set::{PeerSet, RESOLVE_INTERVAL};

/// Queued datagrams handled per wake-up before publishing.
pub const RECEIVE_BATCH: usize = 64;
/// Pause after a failed receive (a socket error must not spin the task).
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How long [`GossipMembership::leave`] waits for the leave to be sent.
const LEAVE_WAIT: Duration = Duration::from_secs(1);

/// A running gossip membership (stops when dropped).
pub struct GossipMembership {
    local_addr: SocketAddr,
    counters: Arc<GossipCounters>,
    leave: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: JoinHandle<()>,
}

impl GossipMembership {
    /// Starts gossiping on `socket` for `peers` (which must be in gossip
    /// mode). A peer's gossip port is its peer port + `port_offset`.
    pub fn start(
        peers: Arc<PeerSet>,
        socket: UdpSocket,
        port_offset: i32,
        timing: GossipTiming,
    ) -> std::io::Result<GossipMembership> {
        let local_addr = socket.local_addr()?;
        let counters = peers.gossip_counters();
        let run = GossipLoop::new(peers, socket, port_offset, timing)?;
        let (leave, leave_rx) = oneshot::channel();
        let task = tokio::spawn(run.run(leave_rx));
        Ok(GossipMembership {
            local_addr,
            counters,
            leave: Some(leave),
            task,
        })
    }

    /// The gossip socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn counters(&self) -> &Arc<GossipCounters> {
        &self.counters
    }

    /// Tells the cluster this node leaves (peers drop it at once), then
    /// stops.
    pub async fn leave(mut self) {
        if let Some(leave) = self.leave.take() {
            let (done, sent) = oneshot::channel();
            if leave.send(done).is_ok() {
                let _ = tokio::time::timeout(LEAVE_WAIT, sent).await;
            }
        }
        self.task.abort();
    }

    /// Stops without a word: peers detect it like a crash.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for GossipMembership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The task's state (see the module docs).
struct GossipLoop {
    peers: Arc<PeerSet>,
    socket: UdpSocket,
    swim: SwimNode,
    key: DatagramKey,
    nonces: NonceCache,
    counters: Arc<GossipCounters>,
    port_offset: i32,
    timing: GossipTiming,
    /// Peer ids of the listed entries (self included).
    seeds: Vec<SocketAddr>,
    /// The member list last given to `peers`.
    published: Vec<(SocketAddr, MemberState)>,
    started: Instant,
    next_join: Instant,
    last_resolve: Instant,
    first_round: bool,
}

impl GossipLoop {
    fn new(
        peers: Arc<PeerSet>,
        socket: UdpSocket,
        port_offset: i32,
        timing: GossipTiming,
    ) -> std::io::Result<GossipLoop> {
        let me: SocketAddr = peers
            .self_id()
            .parse()
            .map_err(|_| std::io::Error::other("this node's id is not an ip:port"))?;
        let my_gossip_port = match gossip_port(me.port(), port_offset) {
            Some(p) => p,
            None => socket.local_addr()?.port(),
        };
        let now = Instant::now();
        Ok(GossipLoop {
            swim: SwimNode::new(
                MemberId::starting_now(me, my_gossip_port),
                timing,
                rand::random(),
            ),
            key: DatagramKey::new(peers.secret()),
            nonces: NonceCache::with_capacity(REPLAY_CAPACITY),
            counters: peers.gossip_counters(),
            seeds: peers.listed_addrs(),
            peers,
            socket,
            port_offset,
            timing,
            published: Vec::new(),
            started: now,
            next_join: now,
            last_resolve: now,
            first_round: false,
        })
    }

    async fn run(mut self, mut leave: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let now = Instant::now();
            self.swim.fire_due(now);
            if now >= self.next_join {
                self.join_round(now).await;
            }
            self.flush(now).await;
            let wake = self
                .swim
                .next_deadline()
                .map_or(self.next_join, |d| d.min(self.next_join));
            tokio::select! {
                biased;
                asked = &mut leave => {
                    if let Ok(done) = asked {
                        self.swim.leave(Instant::now());
                        self.flush(Instant::now()).await;
                        let _ = done.send(());
                    }
                    return;
                }
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok((n, from)) => {
                        self.on_datagram(&buf[..n], from);
                        for _ in 1..RECEIVE_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                        tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Authenticates `datagram` (from gossip socket `from`) and hands its
    /// payload to SWIM.
    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        match self.key.open(datagram, now_secs(), &self.nonces) {
            Ok(payload) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.swim.receive(payload, from, Instant::now()) {
                    self.counters.unusable.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(error = %e, "gossip payload not used");
                }
            }
            Err(refusal) => {
                self.counters.count(refusal);
                if refusal == Refusal::BadTag {
                    tracing::debug!("gossip datagram with a bad tag dropped");
                }
            }
        }
    }

    /// Re-resolves names when due and announces to seeds that are not
    /// members.
    async fn join_round(&mut self, now: Instant) {
        if self.peers.has_names() && self.last_resolve.elapsed() >= RESOLVE_INTERVAL {
            self.last_resolve = now;
            if let Some(addrs) = self.peers.resolve_listed().await {
                self.seeds = addrs;
            }
        }
        let me = self.swim.identity().peer;
        let mut candidates: Vec<SocketAddr> = self
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != me && !self.swim.is_member(*s))
            .collect();
        candidates.shuffle(&mut rand::thread_rng());
        for seed in candidates.into_iter().take(JOIN_FANOUT) {
            if let Some(port) = gossip_port(seed.port(), self.port_offset) {
                self.swim.announce(MemberId::seed(seed, port), now);
            }
        }
        let alone = self.swim.member_count() == 0;
        self.next_join = now
            + if alone {
                self.timing.probe_period
            } else {
                self.timing.rejoin_every
            };
    }

    /// Sends what SWIM produced, logs its changes and publishes the list.
    async fn flush(&mut self, now: Instant) {
        for (to, payload) in self.swim.take_outbox() {
            let nonce: [u8; NONCE_BYTES] = rand::random();
            let Some(sealed) = self.key.seal(&payload, now_secs(), nonce) else {
                continue;
            };
            match self.socket.send_to(&sealed, to).await {
                Ok(_) => self.counters.sent.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::trace!(to = %to, error = %e, "gossip send failed");
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        let refused = self.swim.take_refused();
        if refused > 0 {
            self.counters
                .members_refused
                .fetch_add(refused, Ordering::Relaxed);
            tracing::warn!(
                refused,
                cap = super::MAX_MEMBERS,
                "gossip member table full: members refused"
            );
        }
        for change in self.swim.take_changes() {
            log_change(&change);
        }
        let members = self.swim.members();
        if members != self.published {
            self.peers.apply_gossip_view(&members);
            self.published = members;
        }
        if !self.first_round
            && (self.swim.member_count() > 0
                || now.duration_since(self.started) >= self.timing.probe_period * 2)
        {
            self.first_round = true;
            self.peers.first_round_done();
        }
    }
}

fn log_change(change: &Change) {
    match change {
        Change::Renamed { from, to } if from.generation < to.generation => {
            tracing::info!(peer = %to.peer, "peer restarted (new gossip identity)")
        }
        Change::Connected => tracing::info!("gossip: joined the cluster"),
        Change::Isolated => tracing::warn!("gossip: no members left"),
        Change::Rejoined(id) => tracing::warn!(
            generation = id.generation,
            "gossip: the cluster declared this node down; rejoining"
        ),
        Change::Defunct => tracing::info!("gossip: this node is out of the cluster"),
        _ => tracing::debug!(?change, "gossip membership change"),
    }
}

#[cfg(test)]
#[path = "gossip_tests.rs"]
mod tests;

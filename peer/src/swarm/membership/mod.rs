//! Gossip membership: who is in the cluster and who is alive, with O(N)
//! messages per protocol period instead of the O(N²) of all-to-all
//! heartbeats.
//!
//! Design decisions:
//! - **SWIM** (the `foca` crate: SWIM with suspicion and infection-style
//!   dissemination). Every probe period each node pings *one* member, chosen
//!   round-robin over a shuffled list; a member that does not ack is probed
//!   indirectly through [`INDIRECT_PROBES`] random members, then marked
//!   *suspect*, and *down* if it does not refute the suspicion (by raising
//!   its incarnation number) within the suspicion timeout. Membership
//!   changes ride piggybacked on pings and acks, plus a short gossip round
//!   while there are changes to spread. Per node and period that is one
//!   ping and one ack in steady state: the cluster sends O(N) datagrams per
//!   period, where heartbeats sent N·(N−1). Failure detection does not
//!   depend on N: a dead member is first probed after about one period on
//!   average and suspected one period later.
//! - **Parameters** come from [`MembershipTiming`] ([`GossipTiming::from`]):
//!   probe period = the heartbeat period (1 s), indirect probes after half a
//!   period, suspect → down after `dead_after` (3 s), a gossip round every
//!   fifth of a period while changes are pending, and an announce to one
//!   random member every 10 periods (its answer, a feed of up to ~60
//!   members, repairs views that missed an update).
//! - **Suspected is still a member; down is gone.** A suspected member
//!   keeps its place in every ring and its streams keep running
//!   ([`PeerSet::is_up`](crate::swarm::peer_set::PeerSet::is_up)): on a
//!   saturated link pings and acks are dropped with the bulk traffic, and a
//!   busy node whose chunks moved to their next owners at the first
//!   suspicion had them fetched from the store again (measured: 1.2–1.3× the
//!   model on 8 loaded namespace hosts). A suspected node that is alive
//!   refutes within a gossip round. A dead one is dropped from the rings
//!   once down, 4–5 s after it died; before that, a pull whose stream to it
//!   broke counts as its death at once (a killed process resets its
//!   connections, and a broken stream plus a suspicion is evidence enough),
//!   so its chunks move on for that object as fast as with heartbeats.
//! - **Identity.** A member is its peer id (the advertised `ip:port` of the
//!   gRPC port, so rings agree across modes), the UDP port of its gossip
//!   socket, and a *generation* (the start time in ms): a restarted node is
//!   a new identity at the same address and replaces the old one
//!   everywhere; a node wrongly declared down rejoins with a higher
//!   generation ([`member_id`]).
//! - **Joining.** The peer list (`peer.peers`, DNS names re-resolved every
//!   10 s) is the seed list. A node announces itself to up to
//!   [`JOIN_FANOUT`] random seeds every period until it has members, then
//!   every 10 periods to seeds it does not count as members (heals
//!   partitions, finds late seeds). A seed's gossip port is its peer port
//!   plus the same offset this node uses (default +1), so every node must
//!   use the same two ports. Members learned by gossip become [`Peer`]s just
//!   like listed ones. A node that joins also asks one member for its
//!   whole member list ([`member_sync`]), so it sees a cluster of any size
//!   at once instead of one SWIM feed (~60 members) at a time.
//! - **Leaving.** [`crate::swarm::Swarm::leave`] marks this node down and
//!   tells up to [`LEAVE_FANOUT`] members directly, who spread it: peers
//!   drop it at once instead of after the detection delay.
//! - **Authentication** ([`datagram`]): every datagram is sealed with
//!   HMAC-SHA256 under a key derived from the cluster secret by HKDF with a
//!   gossip label, over a version byte, the time, a random nonce and the
//!   payload. A datagram is checked for size, tag, time (±30 s) and replay
//!   (a bounded nonce cache) before one byte of it is parsed; each refusal
//!   is counted ([`GossipCounters`], STATUS `peers.gossip`).
//! - **Bounds.** Datagrams are at most [`MAX_DATAGRAM`] bytes (larger ones
//!   are dropped unread), the member table holds at most [`MAX_MEMBERS`]
//!   (members beyond it are refused and counted), the nonce cache
//!   [`REPLAY_CAPACITY`] entries, and timers at most two per member. 1,000
//!   members cost well under 4 MB (measured in `swim`'s tests).
//! - **Heartbeats stay available** (`peer.membership = "heartbeat"`,
//!   [`MembershipMode`]): all-to-all Hellos from [`super::peer_set`], for
//!   small clusters or networks that block the gossip port.
//!
//! [`Peer`]: super::peer_set::Peer

pub mod datagram;
pub mod gossip;
pub mod member_id;
pub mod member_sync;
pub mod swim;

#[cfg(test)]
mod alloc_meter;

use std::net::SocketAddr;
use std::time::Duration;

pub use datagram::GossipCounters;
pub use gossip::GossipMembership;
pub use member_id::MemberId;

use super::peer_set::MembershipTiming;

/// Largest datagram sent or accepted, sealing included: fits an Ethernet
/// MTU with IP and UDP headers, so gossip never fragments.
pub const MAX_DATAGRAM: usize = 1400;
/// Most members (this node excluded) the table holds.
pub const MAX_MEMBERS: usize = 4096;
/// Nonces of accepted datagrams remembered for replay detection: each is
/// kept until its time leaves the window (≤ 90 s), so this allows about 180
/// accepted datagrams a second per node, far above the ~5 of steady state,
/// in about 0.6 MB. Past it datagrams are refused (fail closed).
pub const REPLAY_CAPACITY: usize = 16 << 10;
/// Members asked to probe a silent member on this node's behalf.
pub const INDIRECT_PROBES: usize = 3;
/// Seeds announced to per join round.
pub const JOIN_FANOUT: usize = 3;
/// Members told directly that this node leaves.
pub const LEAVE_FANOUT: usize = 32;
/// Gossip port = peer port + this, unless `peer.gossipListen` says otherwise.
pub const DEFAULT_GOSSIP_PORT_OFFSET: i32 = 1;

/// How liveness is decided (`peer.membership`,
/// `OSS_CONNECTOR_PEER_MEMBERSHIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MembershipMode {
    /// SWIM gossip over UDP (this module). The default.
    #[default]
    Gossip,
    /// Every node sends an authenticated Hello to every peer each period.
    Heartbeat,
}

impl MembershipMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipMode::Gossip => "gossip",
            MembershipMode::Heartbeat => "heartbeat",
        }
    }
}

/// A `peer.membership` value that is neither mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer membership {0:?} is neither \"gossip\" nor \"heartbeat\" (OSS_CONNECTOR_PEER_MEMBERSHIP / peer.membership)")]
pub struct BadMembershipMode(pub String);

impl std::str::FromStr for MembershipMode {
    type Err = BadMembershipMode;
    fn from_str(s: &str) -> Result<Self, BadMembershipMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gossip" => Ok(MembershipMode::Gossip),
            "heartbeat" => Ok(MembershipMode::Heartbeat),
            _ => Err(BadMembershipMode(s.to_string())),
        }
    }
}

/// Membership settings of the peer layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MembershipConfig {
    pub mode: MembershipMode,
    /// UDP address of the gossip socket (None: the peer listen address with
    /// the port + [`DEFAULT_GOSSIP_PORT_OFFSET`]).
    pub gossip_listen: Option<SocketAddr>,
}

/// Where the gossip socket binds, and the offset from a peer port to its
/// gossip port (the same on every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipAddress {
    pub bind: SocketAddr,
    pub port_offset: i32,
}

impl MembershipConfig {
    /// The gossip socket of a node whose peer service listens on `listen`;
    /// `None` when the port would leave 1..=65535 or is 0 (seeds are found
    /// by port arithmetic, so the port must be fixed).
    pub fn gossip_address(&self, listen: SocketAddr) -> Option<GossipAddress> {
        let bind = match self.gossip_listen {
            Some(a) => a,
            None => {
                let port = gossip_port(listen.port(), DEFAULT_GOSSIP_PORT_OFFSET)?;
                SocketAddr::new(listen.ip(), port)
            }
        };
        if bind.port() == 0 {
            return None;
        }
        Some(GossipAddress {
            bind,
            port_offset: i32::from(bind.port()) - i32::from(listen.port()),
        })
    }
}

/// `peer_port + offset`, if that is a valid non-zero port.
pub fn gossip_port(peer_port: u16, offset: i32) -> Option<u16> {
    u16::try_from(i32::from(peer_port) + offset)
        .ok()
        .filter(|p| *p != 0)
}

/// Timing of the SWIM protocol (see the module docs for the choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipTiming {
    pub probe_period: Duration,
    /// Wait for a direct ack before probing through other members.
    pub probe_rtt: Duration,
    /// Suspect → down without a refutation.
    pub suspect_to_down: Duration,
    /// Gossip rounds while membership changes are pending.
    pub gossip_every: Duration,
    /// Announce to one random member (anti-entropy feed).
    pub announce_every: Duration,
    /// Announce to down members (a healed partition merges back), and to
    /// seeds that are not members.
    pub rejoin_every: Duration,
    /// How long a down member is remembered (a stale "alive" about it is
    /// ignored meanwhile).
    pub remove_down_after: Duration,
    /// `dead_after` of the timing it came from: the detection bound callers
    /// wait for.
    pub dead_after: Duration,
}

impl From<&MembershipTiming> for GossipTiming {
    fn from(t: &MembershipTiming) -> GossipTiming {
        let period = t.heartbeat.max(Duration::from_millis(10));
        GossipTiming {
            probe_period: period,
            probe_rtt: period / 2,
            suspect_to_down: t.dead_after.max(period),
            gossip_every: period / 5,
            announce_every: period * 10,
            rejoin_every: period * 10,
            remove_down_after: period * 600,
            dead_after: t.dead_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_parses_either_name_and_defaults_to_gossip() {
        assert_eq!(" Gossip ".parse(), Ok(MembershipMode::Gossip));
        assert_eq!("HEARTBEAT".parse(), Ok(MembershipMode::Heartbeat));
        assert!("swim".parse::<MembershipMode>().is_err());
        assert_eq!(MembershipMode::default(), MembershipMode::Gossip);
    }

    #[test]
    fn the_gossip_port_is_the_peer_port_plus_one_unless_configured() {
        let listen: SocketAddr = "0.0.0.0:7468".parse().unwrap();
        let d = MembershipConfig::default().gossip_address(listen).unwrap();
        assert_eq!(d.bind, "0.0.0.0:7469".parse().unwrap());
        assert_eq!(d.port_offset, 1);
        let set = MembershipConfig {
            gossip_listen: Some("10.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let g = set.gossip_address(listen).unwrap();
        assert_eq!(g.port_offset, -468);
        assert_eq!(gossip_port(7468, g.port_offset), Some(7000));
        let top: SocketAddr = "0.0.0.0:65535".parse().unwrap();
        assert!(MembershipConfig::default().gossip_address(top).is_none());
        let zero = MembershipConfig {
            gossip_listen: Some("0.0.0.0:0".parse().unwrap()),
            ..Default::default()
        };
        assert!(zero.gossip_address(listen).is_none());
    }

    #[test]
    fn gossip_timing_follows_the_heartbeat_timing() {
        let t = GossipTiming::from(&MembershipTiming::default());
        assert_eq!(t.probe_period, Duration::from_secs(1));
        assert_eq!(t.probe_rtt, Duration::from_millis(500));
        assert_eq!(t.suspect_to_down, Duration::from_secs(3));
        assert_eq!(t.gossip_every, Duration::from_millis(200));
    }
}

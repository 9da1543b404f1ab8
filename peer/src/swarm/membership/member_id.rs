//! A member's identity in SWIM.
//!
//! Design decision: the address SWIM keys members by is the peer id (the
//! advertised `ip:port` of the gRPC port), so at most one identity per peer
//! id is ever current. The gossip socket is that IP at `gossip_port`. The
//! `generation` (unix ms at start) tells incarnations of a process apart:
//! a restarted node (higher generation) replaces its old identity
//! everywhere, and a node the cluster declared down rejoins as generation +
//! 1 ([`MemberId::renew`] via `foca::Identity`).

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One member: peer id, gossip port, generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub peer: SocketAddr,
    pub gossip_port: u16,
    pub generation: u64,
}

impl MemberId {
    /// This process's identity: generation = now in unix ms.
    pub fn starting_now(peer: SocketAddr, gossip_port: u16) -> MemberId {
        MemberId {
            peer,
            gossip_port,
            generation: now_ms(),
        }
    }

    /// A seed known only by its address; generation 0 loses to any real
    /// identity, and SWIM accepts an announce addressed to any identity of
    /// the receiver's peer id.
    pub fn seed(peer: SocketAddr, gossip_port: u16) -> MemberId {
        MemberId {
            peer,
            gossip_port,
            generation: 0,
        }
    }

    /// Where its gossip socket listens.
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.peer.ip(), self.gossip_port)
    }

    /// Tie-break of two identities at one peer id: the later generation.
    fn rank(&self) -> (u64, u16) {
        (self.generation, self.gossip_port)
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            generation: now_ms().max(self.generation.saturating_add(1)),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.peer
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.rank() > adversary.rank()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_later_generation_wins_and_renewal_always_moves_forward() {
        let peer: SocketAddr = "10.0.0.1:7468".parse().unwrap();
        let old = MemberId::starting_now(peer, 7469);
        let seed = MemberId::seed(peer, 7469);
        assert!(old.win_addr_conflict(&seed));
        let renewed = old.renew().unwrap();
        assert!(renewed.generation > old.generation);
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
        assert_eq!(renewed.addr(), peer);
        assert_eq!(renewed.gossip_addr(), "10.0.0.1:7469".parse().unwrap());
        // A generation from a clock ahead of ours still moves forward.
        let ahead = MemberId {
            generation: u64::MAX - 1,
            ..old.clone()
        };
        assert_eq!(ahead.renew().unwrap().generation, u64::MAX);
    }

    #[test]
    fn a_member_encodes_in_about_twenty_bytes() {
        use foca::Codec;
        let id = MemberId::starting_now("10.0.0.1:7468".parse().unwrap(), 7469);
        let mut bytes = Vec::new();
        foca::PostcardCodec
            .encode_member(&foca::Member::alive(id), &mut bytes)
            .unwrap();
        assert!(bytes.len() <= 22, "{} bytes", bytes.len());
    }
}

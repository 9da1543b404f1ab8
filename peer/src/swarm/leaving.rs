//! Leaving the swarm without dropping the peers that are pulling from this
//! node (an agent that idle-exits, a signal, `ossc peer` stopping).
//!
//! Design decisions:
//! - **Announce, then drain, then stop.** [`Swarm::leave`] marks this node
//!   leaving ([`PeerSet::leave`](super::PeerSet::leave)): from then on its
//!   Hellos and its Hello answers say so, and one round of Hellos tells
//!   every alive peer at once, whatever the membership mode. A peer drops a
//!   leaving node from the set it picks sources from and computes chunk
//!   ownership over, so its chunks go to their next owners; the pulls it
//!   already runs from the node go on, for the node stays a live member
//!   (heartbeats, gossip) until it has drained. Only then does it tell
//!   gossip it is gone (peers drop it at once) and stop.
//! - **New pulls are refused as "not held"** (NOT_FOUND, from
//!   `ChunkServer::locate`): a puller that had not heard yet takes the
//!   chunk elsewhere and excludes the node for that object, as for any
//!   peer without the object — never as corruption.
//! - **Bounded.** Streams in flight are served until they end or the leave
//!   grace (`peer.leaveGraceSec`, [`DEFAULT_LEAVE_GRACE`]) passes; then the
//!   node stops and cuts what is left, whose pullers take those chunks
//!   elsewhere once membership declares the node dead.
//! - **No stream slips through.** A request is counted in flight
//!   ([`UploadLimit::stream`](super::upload_limit::UploadLimit::stream))
//!   before it checks whether the node is leaving, and leaving is marked
//!   before the count is read, so a request either is refused or is waited
//!   for.

use std::time::Duration;

use tokio::time::Instant;

use super::{Swarm, SHUTDOWN_GRACE};

/// How long a leaving node finishes the pulls in flight: enough for a
/// 16 MiB chunk at ~5 Mbit/s, or a whole share of chunks on a fast link.
pub const DEFAULT_LEAVE_GRACE: Duration = Duration::from_secs(30);

impl Swarm {
    /// Leaves the swarm (see the module docs): announces it, refuses new
    /// pulls and serves those in flight for at most the leave grace, tells
    /// gossip this node is gone, then stops; streams left after the grace
    /// are cut.
    pub async fn leave(mut self) {
        let until = Instant::now() + self.leave_grace;
        self.peers.leave().await;
        let streams = self.upload_limit.in_flight();
        if streams > 0 {
            tracing::info!(
                streams,
                grace_secs = self.leave_grace.as_secs_f64(),
                "leaving the swarm: finishing the pulls peers have in flight"
            );
        }
        let drained = self.upload_limit.drained(until).await;
        if !drained {
            tracing::warn!(
                streams = self.upload_limit.in_flight(),
                "leave grace over: cutting the pulls still in flight (their peers take those chunks elsewhere)"
            );
        }
        if let Some(g) = self.gossip.take() {
            g.leave().await;
        }
        let grace = if drained {
            SHUTDOWN_GRACE
        } else {
            Duration::ZERO
        };
        self.stop(grace).await;
    }
}

#[cfg(test)]
mod tests;

//! What follows a failed pull: pull again (another source, or the same
//! owner later) or go to the store, by the failure's kind alone (the rules
//! are the parent module's **Failures**, **Start skew** and **A slow source
//! is not a dead one**), and what the object's [`SourceRecord`] learns from
//! it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ossc_core::object_client::ObjectMeta;
use tokio::time::Instant;

use super::{Shared, DEAD_PEER_CHECK, MAX_NOT_STARTED_BACKOFF, NOT_STARTED_BACKOFF};
use crate::swarm::chunk_book::ChunkId;
use crate::swarm::peer_set::Peer;
use crate::swarm::source_record::SourceRecord;
use crate::swarm::sources::{Candidate, SourceKind};
use crate::swarm::transport::PullError;

impl Shared {
    /// What follows a failed pull (see the module docs): true to pull again
    /// (another source, or the same owner later), false for the store.
    /// Counts failures, logs, and updates `at` and the object's record.
    pub(super) async fn after_failure(
        &self,
        meta: &ObjectMeta,
        id: &ChunkId,
        failed: Failed<'_>,
        error: PullError,
        at: &mut Attempts,
        record: &SourceRecord,
    ) -> bool {
        let Failed {
            peer,
            source,
            asked_at,
        } = failed;
        let (name, index) = (&source.peer, id.index);
        let owner = source.kind == SourceKind::Owner;
        if !matches!(error, PullError::NotHeld) {
            peer.failures.fetch_add(1, Ordering::Relaxed);
        }
        match error {
            PullError::NotHeld if owner && self.not_started_yet(id, name, asked_at, at) => {
                tracing::debug!(peer = %name, key = %meta.key, chunk = index, "the owner has not started this object yet; asking again");
                at.count -= 1;
                tokio::time::sleep(at.next_backoff()).await;
            }
            PullError::NotHeld if owner => {
                if record.exclude(name) {
                    tracing::info!(peer = %name, key = %meta.key, "peer does not hold this object; its chunks go to their next owners");
                }
            }
            PullError::NotHeld => {
                tracing::debug!(peer = %name, key = %meta.key, chunk = index, "peer no longer has the chunk; pulling it elsewhere");
                at.tried.insert(name.clone());
            }
            PullError::Corrupt(e) => {
                record.exclude(name);
                tracing::warn!(peer = %name, key = %meta.key, chunk = index, error = %e, "peer sent bytes that are not the chunk; it is no longer trusted for this object, and the chunk is refetched from the store by its next owner");
            }
            PullError::Dead => {
                tracing::info!(peer = %name, key = %meta.key, chunk = index, "peer declared dead mid-pull; the chunk goes to its next owner");
            }
            e if !owner || self.sources().other_holder(id, name, &at.tried, record) => {
                at.tried.insert(name.clone());
                let newly_suspect = record.suspect(name);
                tracing::info!(peer = %name, key = %meta.key, chunk = index, error = %e, newly_suspect, "pull failed while another peer could serve the chunk; pulling it there, and later picks for this object avoid this peer while others can serve");
            }
            PullError::Lost(e) if self.dies_soon(peer).await => {
                // Suspected but not yet down: it still holds its place in the
                // ring, so its chunks move on for this object now.
                if self.peers.is_up(name) {
                    record.exclude(name);
                }
                tracing::info!(peer = %name, key = %meta.key, chunk = index, error = %e, "stream to a dying peer broke; the chunk goes to its next owner");
            }
            PullError::Lost(e) => {
                tracing::info!(peer = %name, key = %meta.key, chunk = index, error = %e, "the owner's stream broke but the owner lives; pulling the chunk again");
            }
            _ => return false,
        }
        true
    }

    /// Whether a NOT_FOUND from `owner`, asked at `asked_at`, means "not
    /// started yet": the owner is alive, did not decline the object in its
    /// last have-map answer, and first said so less than the peer wait ago.
    fn not_started_yet(
        &self,
        id: &ChunkId,
        owner: &str,
        asked_at: Instant,
        at: &mut Attempts,
    ) -> bool {
        let since = *at.not_started_since.get_or_insert(asked_at);
        // Its next answer tells whether it declined the object.
        self.holders.want(&id.object, owner);
        self.peers.is_up(owner)
            && !self.holders.declined(&id.object, owner)
            && since.elapsed() < self.settings.peer_wait
    }

    /// Whether membership suspects `peer` or declares it dead within its
    /// detection delay (after a stream to it broke: a killed process resets
    /// its connections before its heartbeats are missed; a broken stream
    /// plus a suspicion is evidence enough). True: reassign the chunk;
    /// false: the peer lives on, and the chunk goes to the store.
    async fn dies_soon(&self, peer: &Peer) -> bool {
        let until = tokio::time::Instant::now() + self.peers.dead_after() + DEAD_PEER_CHECK;
        loop {
            if !self.peers.is_alive(&peer.id) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(DEAD_PEER_CHECK).await;
        }
    }
}

/// Where one chunk's pulls stand.
#[derive(Default)]
pub(super) struct Attempts {
    /// Pulls made.
    pub count: usize,
    /// Holders and relays that failed this chunk.
    pub tried: HashSet<String>,
    /// When the owner was first asked and answered it has not started.
    not_started_since: Option<Instant>,
    /// The next pause before asking such an owner again.
    backoff: Duration,
}

impl Attempts {
    pub fn next_backoff(&mut self) -> Duration {
        self.backoff = (self.backoff * 2).clamp(NOT_STARTED_BACKOFF, MAX_NOT_STARTED_BACKOFF);
        self.backoff
    }
}

/// A pull that failed: from whom, taken for what, asked when.
pub(super) struct Failed<'a> {
    pub peer: &'a Peer,
    pub source: &'a Candidate,
    pub asked_at: Instant,
}

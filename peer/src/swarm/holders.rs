//! Which peers hold which chunks (their have-maps), which are relaying
//! which chunks, and what upload bandwidth each has to spare: the puller's
//! side of `Have`.
//!
//! Design decisions:
//! - While this node fetches an object version it asks a bounded set of
//!   alive peers for that version's have-map every [`HAVE_REFRESH`]: at
//!   most [`HAVE_FANOUT`] a round, the peers the fetch waits on first, the
//!   others in rotation ([`super::have_fanout`]), so metadata traffic per
//!   node and round does not grow with N (one small RPC per asked peer;
//!   the bitmaps of a 1 GB object at 16 MiB chunks are 8 bytes each). A
//!   peer not asked this round keeps its last map. Answers are hints, never
//!   trusted for bytes: a chunk pulled from a holder or a relay is verified
//!   against the CRC-64 recorded by the node that fetched it from the
//!   store, like one from its owner, and a peer that no longer has it
//!   answers NOT_FOUND or fails, which costs a retry elsewhere.
//! - A map says, per chunk, whether the peer holds it (complete and
//!   verified), whether it is arriving there (so the peer relays it), and
//!   how many bytes from its start are in (how far ahead that source is).
//!   An answer also names the asked versions the peer will not fetch
//!   (`declined`): a NOT_FOUND from such an owner means "never", from any
//!   other owner "not started yet" (start skew, [`super::unheld`]).
//! - Sources are picked with probability proportional to the idle upload
//!   bandwidth each last reported ([`super::upload`]), believed up to
//!   [`super::upload_limit::MAX_IDLE_UPLOAD`]. A peer that has not
//!   reported yet counts as [`super::upload::ASSUMED_MIN_CAPACITY`].
//! - Each refresh round bumps a counter that waiting pulls watch
//!   ([`Holders::wait_round`]), so a pull waiting for its relay to start
//!   wakes once per round, not per answer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ossc_proto::v1::{HaveRequest, HaveResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use super::chunk_book::ObjectVersion;
use super::chunk_server::HAVE_METHOD;
use super::have_fanout::HaveFanout;
pub use super::have_fanout::HAVE_FANOUT;
use super::peer_set::PeerSet;
use super::upload::ASSUMED_MIN_CAPACITY;
use super::upload_limit::believed_idle_upload;

/// How often have-maps are refreshed while an object is being fetched:
/// about the time one 16 MiB chunk takes on a 1 Gbit/s share, so a freshly
/// completed chunk becomes a source for the next pulls.
pub const HAVE_REFRESH: Duration = Duration::from_millis(500);
/// Timeout of one Have call (a slow answer is simply skipped this round).
pub const HAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What peers last said they hold, per object version.
#[derive(Debug, Default)]
pub struct Holders {
    state: Mutex<State>,
    /// Refresh rounds completed.
    rounds: watch::Sender<u64>,
    /// Refresh rounds begun (one cut short when its fetch ends counts).
    begun: AtomicU64,
    /// Have calls made, all rounds together.
    asks: AtomicU64,
}

/// Have traffic this node made: rounds and calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaveTraffic {
    pub rounds: u64,
    pub asks: u64,
}

#[derive(Debug, Default)]
struct State {
    /// version → peer → its map.
    maps: HashMap<ObjectVersion, HashMap<String, PeerMap>>,
    /// version → peers whose last answer declined it.
    declined: HashMap<ObjectVersion, HashSet<String>>,
    /// peer → idle upload bytes/s, as last reported.
    idle: HashMap<String, u64>,
    /// version → whom its next rounds ask.
    fanout: HashMap<ObjectVersion, HaveFanout>,
}

/// One peer's map of one version (bit i: byte i / 8, bit i % 8).
#[derive(Debug, Default)]
struct PeerMap {
    held: Vec<u8>,
    receiving: Vec<u8>,
    prefix: Vec<u64>,
}

/// What a peer last said about one chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Complete and verified there.
    pub held: bool,
    /// Arriving there (it relays the chunk).
    pub receiving: bool,
    /// Bytes from the chunk's start there.
    pub prefix: u64,
}

fn bit(bitmap: &[u8], index: u64) -> bool {
    let (byte, bit) = ((index / 8) as usize, index % 8);
    bitmap.get(byte).is_some_and(|b| b & (1 << bit) != 0)
}

impl Holders {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks at most [`HAVE_FANOUT`] alive peers which chunks of `version`
    /// they hold, those wanted first ([`super::have_fanout`]; bounded by
    /// [`HAVE_TIMEOUT`]; a peer not asked or not answering keeps its last
    /// map).
    pub async fn refresh(&self, peers: &PeerSet, version: &ObjectVersion) {
        let asked = std::slice::from_ref(version);
        let request = HaveRequest {
            objects: vec![version.into()],
        };
        let mut alive = peers.alive_ids();
        alive.retain(|id| id != peers.self_id());
        alive.sort();
        let chosen = self
            .lock()
            .fanout
            .entry(version.clone())
            .or_default()
            .next_round(&alive, rand::random::<usize>());
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.asks.fetch_add(chosen.len() as u64, Ordering::Relaxed);
        let calls = chosen
            .into_iter()
            .filter_map(|id| peers.peer(&id))
            .map(|peer| {
                let mut req = tonic::Request::new(request.clone());
                peers
                    .secret()
                    .sign_request(&mut req, peers.self_id(), HAVE_METHOD);
                async move {
                    let mut client = peer.client();
                    match tokio::time::timeout(HAVE_TIMEOUT, client.have(req)).await {
                        Ok(Ok(answer)) => self.update(&peer.id, asked, answer.get_ref()),
                        Ok(Err(status)) => {
                            tracing::debug!(peer = %peer.id, error = %status, "Have refused")
                        }
                        Err(_) => tracing::debug!(peer = %peer.id, "Have timed out"),
                    }
                }
            });
        futures::future::join_all(calls).await;
        self.rounds.send_modify(|r| *r = r.wrapping_add(1));
    }

    /// Asks `peer` for its map of `version` in a coming round (the fetch
    /// waits on it; see [`super::have_fanout`]).
    pub fn want(&self, version: &ObjectVersion, peer: &str) {
        if let Some(f) = self.lock().fanout.get_mut(version) {
            f.want(peer);
        }
    }

    /// Rounds begun and peers asked, since this node started.
    pub fn traffic(&self) -> HaveTraffic {
        HaveTraffic {
            rounds: self.begun.load(Ordering::Relaxed),
            asks: self.asks.load(Ordering::Relaxed),
        }
    }

    /// Waits for the next refresh round to complete, or `until`.
    pub async fn wait_round(&self, until: Instant) {
        let mut rx = self.rounds.subscribe();
        rx.borrow_and_update();
        let _ = tokio::time::timeout_at(until, rx.changed()).await;
    }

    /// Takes in `peer`'s answer to a Have for `asked` (a version the answer
    /// leaves out is no longer held by that peer).
    pub fn update(&self, peer: &str, asked: &[ObjectVersion], answer: &HaveResponse) {
        let mut s = self.lock();
        let idle = believed_idle_upload(answer.idle_upload_bytes_per_sec);
        s.idle.insert(peer.to_string(), idle);
        for version in asked {
            let map = answer.maps.iter().find(|m| {
                m.object
                    .as_ref()
                    .is_some_and(|o| ObjectVersion::from(o) == *version)
            });
            let declines = answer
                .declined
                .iter()
                .any(|o| ObjectVersion::from(o) == *version);
            let declined = s.declined.entry(version.clone()).or_default();
            if declines {
                declined.insert(peer.to_string());
            } else {
                declined.remove(peer);
            }
            let entry = s.maps.entry(version.clone()).or_default();
            match map {
                Some(m) => {
                    entry.insert(
                        peer.to_string(),
                        PeerMap {
                            held: m.bitmap.clone(),
                            receiving: m.receiving.clone(),
                            prefix: m.chunk_prefix.clone(),
                        },
                    );
                }
                None => {
                    entry.remove(peer);
                }
            }
        }
    }

    /// Peers that last said they hold chunk `index` of `version`.
    pub fn holders_of(&self, version: &ObjectVersion, index: u64) -> Vec<String> {
        let s = self.lock();
        let Some(maps) = s.maps.get(version) else {
            return Vec::new();
        };
        let mut out: Vec<String> = maps
            .iter()
            .filter(|(_, m)| bit(&m.held, index))
            .map(|(peer, _)| peer.clone())
            .collect();
        out.sort();
        out
    }

    /// What `peer` last said about chunk `index` of `version`.
    pub fn progress(&self, version: &ObjectVersion, peer: &str, index: u64) -> ChunkProgress {
        let s = self.lock();
        let Some(m) = s.maps.get(version).and_then(|maps| maps.get(peer)) else {
            return ChunkProgress::default();
        };
        ChunkProgress {
            held: bit(&m.held, index),
            receiving: bit(&m.receiving, index),
            prefix: usize::try_from(index)
                .ok()
                .and_then(|i| m.prefix.get(i).copied())
                .unwrap_or(0),
        }
    }

    /// Whether `peer`'s last answer said it will not fetch `version`.
    pub fn declined(&self, version: &ObjectVersion, peer: &str) -> bool {
        self.lock()
            .declined
            .get(version)
            .is_some_and(|d| d.contains(peer))
    }

    /// A peer's last reported idle upload bandwidth (bytes/s).
    pub fn idle_upload(&self, peer: &str) -> u64 {
        self.lock()
            .idle
            .get(peer)
            .copied()
            .unwrap_or(ASSUMED_MIN_CAPACITY)
    }

    /// Forgets the maps of `version` (its fetch ended).
    pub fn forget(&self, version: &ObjectVersion) {
        let mut s = self.lock();
        s.maps.remove(version);
        s.declined.remove(version);
        s.fanout.remove(version);
    }

    /// Every peer's last reported idle upload bandwidth (for STATUS).
    pub fn idle_by_peer(&self) -> HashMap<String, u64> {
        self.lock().idle.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_proto::v1;

    fn version(key: &str) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: key.into(),
            etag: "e".into(),
            size: 100,
        }
    }

    fn answer(v: &ObjectVersion, bitmap: Vec<u8>, idle: u64) -> HaveResponse {
        HaveResponse {
            maps: vec![v1::HaveMap {
                object: Some(v.into()),
                chunk_size: 10,
                bitmap,
                ..Default::default()
            }],
            idle_upload_bytes_per_sec: idle,
            ..Default::default()
        }
    }

    #[test]
    fn bitmaps_name_the_holders_and_a_missing_map_removes_one() {
        let h = Holders::default();
        let v = version("k");
        let other = version("other");
        // Chunks 0 and 9 (byte 1, bit 1).
        h.update(
            "p1",
            std::slice::from_ref(&v),
            &answer(&v, vec![0b1, 0b10], 7),
        );
        h.update("p2", std::slice::from_ref(&v), &answer(&v, vec![0b11], 9));
        assert_eq!(h.holders_of(&v, 0), ["p1", "p2"]);
        assert_eq!(h.holders_of(&v, 1), ["p2"]);
        assert_eq!(h.holders_of(&v, 9), ["p1"]);
        assert!(h.holders_of(&v, 2).is_empty());
        assert!(h.holders_of(&other, 0).is_empty());
        assert_eq!(h.idle_upload("p1"), 7);
        assert_eq!(h.idle_upload("never-asked"), ASSUMED_MIN_CAPACITY);
        // p2 no longer has a book for v: it is no holder any more.
        h.update(
            "p2",
            std::slice::from_ref(&v),
            &HaveResponse {
                idle_upload_bytes_per_sec: 3,
                ..Default::default()
            },
        );
        assert_eq!(h.holders_of(&v, 0), ["p1"]);
        assert_eq!(h.idle_upload("p2"), 3);
        h.forget(&v);
        assert!(h.holders_of(&v, 0).is_empty());
    }

    #[test]
    fn maps_tell_relays_and_their_progress_and_answers_tell_declined_versions() {
        let h = Holders::default();
        let v = version("k");
        let mut a = answer(&v, vec![0b001], 5);
        a.maps[0].receiving = vec![0b010];
        a.maps[0].chunk_prefix = vec![10, 4, 0];
        h.update("p1", std::slice::from_ref(&v), &a);
        assert_eq!(
            h.progress(&v, "p1", 0),
            ChunkProgress {
                held: true,
                receiving: false,
                prefix: 10
            }
        );
        assert_eq!(
            h.progress(&v, "p1", 1),
            ChunkProgress {
                held: false,
                receiving: true,
                prefix: 4
            }
        );
        assert_eq!(h.progress(&v, "p1", 2), ChunkProgress::default());
        assert_eq!(h.progress(&v, "p2", 1), ChunkProgress::default());
        // p2 will not fetch v; then it starts after all.
        let declined = HaveResponse {
            declined: vec![(&v).into()],
            ..Default::default()
        };
        h.update("p2", std::slice::from_ref(&v), &declined);
        assert!(h.declined(&v, "p2"));
        assert!(!h.declined(&v, "p1"));
        h.update("p2", std::slice::from_ref(&v), &answer(&v, vec![0], 5));
        assert!(!h.declined(&v, "p2"));
    }
}

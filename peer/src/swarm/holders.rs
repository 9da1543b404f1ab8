//! Which peers hold which chunks (their have-maps), and what upload
//! bandwidth each has to spare: the puller's side of `Have`.
//!
//! Design decisions:
//! - While this node fetches an object version it asks every alive peer for
//!   that version's have-map every [`HAVE_REFRESH`] (one small RPC per peer;
//!   the bitmap of a 1 GB object at 16 MiB chunks is 8 bytes). Answers are
//!   hints, never trusted for bytes: a chunk pulled from a holder is
//!   verified against the CRC-64 recorded by the node that fetched it from
//!   the store, like one from its owner, and a holder that no longer has it
//!   answers NOT_FOUND or fails, which costs a retry elsewhere.
//! - A chunk's sources are its owner (which streams the chunk while it
//!   arrives) and every alive peer whose map shows it complete; one is
//!   picked with probability proportional to the idle upload bandwidth each
//!   last reported ([`super::upload`]), believed up to
//!   [`super::upload_limit::MAX_IDLE_UPLOAD`]. A holder that has not
//!   reported yet counts as [`super::upload::ASSUMED_MIN_CAPACITY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ossc_proto::v1::{HaveRequest, HaveResponse};

use super::chunk_book::ObjectVersion;
use super::chunk_server::HAVE_METHOD;
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
}

#[derive(Debug, Default)]
struct State {
    /// version → peer → held bitmap (bit i: byte i / 8, bit i % 8).
    maps: HashMap<ObjectVersion, HashMap<String, Vec<u8>>>,
    /// peer → idle upload bytes/s, as last reported.
    idle: HashMap<String, u64>,
}

impl Holders {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every alive peer which chunks of `version` it holds (bounded by
    /// [`HAVE_TIMEOUT`]; a peer that does not answer keeps its last map).
    pub async fn refresh(&self, peers: &PeerSet, version: &ObjectVersion) {
        let asked = std::slice::from_ref(version);
        let request = HaveRequest {
            objects: vec![version.into()],
        };
        let calls = peers
            .alive_ids()
            .into_iter()
            .filter(|id| id != peers.self_id())
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
            let entry = s.maps.entry(version.clone()).or_default();
            match map {
                Some(m) => {
                    entry.insert(peer.to_string(), m.bitmap.clone());
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
        let (byte, bit) = ((index / 8) as usize, index % 8);
        let mut out: Vec<String> = maps
            .iter()
            .filter(|(_, bitmap)| bitmap.get(byte).is_some_and(|b| b & (1 << bit) != 0))
            .map(|(peer, _)| peer.clone())
            .collect();
        out.sort();
        out
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
        self.lock().maps.remove(version);
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
                chunk_crc64: vec![],
            }],
            idle_upload_bytes_per_sec: idle,
            upload_bytes_per_sec: 0,
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
}

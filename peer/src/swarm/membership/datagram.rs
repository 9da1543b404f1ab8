//! Sealed gossip datagrams: authenticated before a byte is parsed.
//!
//! Design decision: one layout, fixed offsets, so that opening a datagram
//! needs no parsing until its tag has verified:
//!
//! ```text
//! 0        1              9                25           len-32     len
//! | ver=1  | time (u64 BE) | nonce (16 B)   | payload    | tag (32 B) |
//! ```
//!
//! `tag` = HMAC-SHA256(gossip key, every byte before it). The gossip key is
//! HKDF-SHA256 of the cluster secret with its own salt and label, so a
//! gossip tag is never valid as an RPC tag or the reverse. Checks, in
//! order: length (≤ [`MAX_DATAGRAM`], ≥ the fixed fields), tag (constant
//! time), version, time within [`MAX_SKEW_SECS`] of ours, nonce unseen
//! (the RPC layer's bounded [`NonceCache`]). Only then does the SWIM
//! decoder see the payload.

use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::MAX_DATAGRAM;
use crate::swarm::auth::{AuthError, ClusterSecret, NonceCache, NONCE_BYTES};

/// Layout version.
pub const VERSION: u8 = 1;
/// Largest accepted distance between a datagram's time and ours.
pub const MAX_SKEW_SECS: u64 = 30;
const TIME_AT: usize = 1;
const NONCE_AT: usize = TIME_AT + 8;
const PAYLOAD_AT: usize = NONCE_AT + NONCE_BYTES;
const TAG_BYTES: usize = 32;
/// Bytes sealing adds to a payload.
pub const OVERHEAD: usize = PAYLOAD_AT + TAG_BYTES;
/// Largest payload that fits one datagram.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;

const KEY_SALT: &[u8] = b"ossc gossip v1";
const KEY_INFO: &[u8] = b"hmac-sha256 datagram key";

type HmacSha256 = Hmac<Sha256>;

/// Why a datagram was dropped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Oversized,
    Truncated,
    BadTag,
    BadVersion,
    Stale,
    Replayed,
    ReplayCacheFull,
}

/// Seals and opens datagrams under the gossip key.
#[derive(Clone)]
pub struct DatagramKey {
    /// HMAC state already keyed (cloned per datagram).
    keyed: HmacSha256,
}

impl std::fmt::Debug for DatagramKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatagramKey(<hidden>)")
    }
}

impl DatagramKey {
    pub fn new(secret: &ClusterSecret) -> DatagramKey {
        let mut key = [0u8; 32];
        secret.derive(KEY_SALT, KEY_INFO, &mut key);
        DatagramKey {
            keyed: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    /// `payload` sealed at unix second `time` with `nonce`; `None` if it
    /// does not fit [`MAX_PAYLOAD`].
    pub fn seal(&self, payload: &[u8], time: u64, nonce: [u8; NONCE_BYTES]) -> Option<Vec<u8>> {
        if payload.len() > MAX_PAYLOAD {
            return None;
        }
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.push(VERSION);
        out.extend_from_slice(&time.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(payload);
        let mut mac = self.keyed.clone();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        Some(out)
    }

    /// The payload of `datagram` if it is authentic, fresh and new at unix
    /// second `now` (its nonce is then remembered in `nonces`).
    pub fn open<'a>(
        &self,
        datagram: &'a [u8],
        now: u64,
        nonces: &NonceCache,
    ) -> Result<&'a [u8], Refusal> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Refusal::Oversized);
        }
        if datagram.len() < OVERHEAD {
            return Err(Refusal::Truncated);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_BYTES);
        let mut mac = self.keyed.clone();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| Refusal::BadTag)?;
        if signed[0] != VERSION {
            return Err(Refusal::BadVersion);
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&signed[TIME_AT..NONCE_AT]);
        let time = u64::from_be_bytes(time);
        if time.abs_diff(now) > MAX_SKEW_SECS {
            return Err(Refusal::Stale);
        }
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&signed[NONCE_AT..PAYLOAD_AT]);
        nonces.remember(nonce, time, now).map_err(|e| match e {
            AuthError::Replayed => Refusal::Replayed,
            _ => Refusal::ReplayCacheFull,
        })?;
        Ok(&signed[PAYLOAD_AT..])
    }
}

/// What the gossip socket did (STATUS `peers.gossip`).
#[derive(Debug, Default)]
pub struct GossipCounters {
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub received: AtomicU64,
    /// Authentic datagrams handed to SWIM.
    pub accepted: AtomicU64,
    /// Authentic datagrams SWIM could not use (undecodable, not for us).
    pub unusable: AtomicU64,
    pub oversized: AtomicU64,
    pub truncated: AtomicU64,
    pub bad_tag: AtomicU64,
    pub bad_version: AtomicU64,
    pub stale: AtomicU64,
    pub replayed: AtomicU64,
    pub replay_cache_full: AtomicU64,
    /// Members refused because the table was full.
    pub members_refused: AtomicU64,
}

impl GossipCounters {
    pub fn count(&self, refusal: Refusal) {
        let c = match refusal {
            Refusal::Oversized => &self.oversized,
            Refusal::Truncated => &self.truncated,
            Refusal::BadTag => &self.bad_tag,
            Refusal::BadVersion => &self.bad_version,
            Refusal::Stale => &self.stale,
            Refusal::Replayed => &self.replayed,
            Refusal::ReplayCacheFull => &self.replay_cache_full,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped before parsing, all reasons.
    pub fn dropped(&self) -> u64 {
        [
            &self.oversized,
            &self.truncated,
            &self.bad_tag,
            &self.bad_version,
            &self.stale,
            &self.replayed,
            &self.replay_cache_full,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "sent": get(&self.sent),
            "send_errors": get(&self.send_errors),
            "received": get(&self.received),
            "accepted": get(&self.accepted),
            "unusable": get(&self.unusable),
            "dropped": {
                "oversized": get(&self.oversized),
                "truncated": get(&self.truncated),
                "bad_tag": get(&self.bad_tag),
                "bad_version": get(&self.bad_version),
                "stale": get(&self.stale),
                "replayed": get(&self.replayed),
                "replay_cache_full": get(&self.replay_cache_full),
            },
            "members_refused": get(&self.members_refused),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::auth::TEST_SECRET;

    fn key() -> DatagramKey {
        DatagramKey::new(&ClusterSecret::new(TEST_SECRET).unwrap())
    }

    #[test]
    fn a_sealed_payload_opens_once_and_anything_else_is_refused_unread() {
        let k = key();
        let nonces = NonceCache::with_capacity(16);
        let d = k.seal(b"ping", 1_000, [1; NONCE_BYTES]).unwrap();
        assert_eq!(d.len(), OVERHEAD + 4);
        assert_eq!(k.open(&d, 1_010, &nonces), Ok(&b"ping"[..]));
        assert_eq!(k.open(&d, 1_010, &nonces), Err(Refusal::Replayed));
        // Every single-bit change breaks the tag.
        let fresh = NonceCache::with_capacity(16);
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                k.open(&bad, 1_000, &fresh),
                Err(Refusal::BadTag),
                "byte {i}"
            );
        }
        // Another cluster's key.
        let other = DatagramKey::new(&ClusterSecret::new(b"Zr4Wq8Ne2Ty6Ui0Op3As7Df1").unwrap());
        let theirs = other.seal(b"ping", 1_000, [2; NONCE_BYTES]).unwrap();
        assert_eq!(k.open(&theirs, 1_000, &fresh), Err(Refusal::BadTag));
        // Stale either way, by more than 30 s.
        let old = k.seal(b"x", 1_000, [3; NONCE_BYTES]).unwrap();
        assert_eq!(k.open(&old, 1_031, &fresh), Err(Refusal::Stale));
        assert_eq!(k.open(&old, 969, &fresh), Err(Refusal::Stale));
        assert!(k.open(&old, 1_030, &fresh).is_ok());
        // Size bounds.
        assert_eq!(
            k.open(&vec![0; MAX_DATAGRAM + 1], 0, &fresh),
            Err(Refusal::Oversized)
        );
        assert_eq!(
            k.open(&[0; OVERHEAD - 1], 0, &fresh),
            Err(Refusal::Truncated)
        );
        assert!(k.seal(&[0; MAX_PAYLOAD + 1], 0, [0; NONCE_BYTES]).is_none());
        let full = k.seal(&[7; MAX_PAYLOAD], 5, [4; NONCE_BYTES]).unwrap();
        assert_eq!(full.len(), MAX_DATAGRAM);
        assert_eq!(k.open(&full, 5, &fresh).unwrap().len(), MAX_PAYLOAD);
        // The key never prints.
        assert_eq!(format!("{k:?}"), "DatagramKey(<hidden>)");
    }

    #[test]
    fn a_full_replay_cache_fails_closed_and_refusals_are_counted() {
        let k = key();
        let nonces = NonceCache::with_capacity(1);
        let a = k.seal(b"a", 100, [1; NONCE_BYTES]).unwrap();
        let b = k.seal(b"b", 100, [2; NONCE_BYTES]).unwrap();
        assert!(k.open(&a, 100, &nonces).is_ok());
        let refusal = k.open(&b, 100, &nonces).unwrap_err();
        assert_eq!(refusal, Refusal::ReplayCacheFull);
        let c = GossipCounters::default();
        c.count(refusal);
        c.count(Refusal::BadTag);
        assert_eq!(c.dropped(), 2);
        assert_eq!(c.to_json()["dropped"]["bad_tag"], 1);
    }
}

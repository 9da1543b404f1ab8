//! Cluster-secret authentication of every peer RPC.
//!
//! Design decisions:
//! - Each request carries four entries (gRPC metadata, or fields of a QUIC
//!   request): `x-ossc-node` (the caller's node id), `x-ossc-time` (unix
//!   seconds), `x-ossc-nonce` (16 random bytes, hex) and `x-ossc-auth` = hex
//!   HMAC-SHA256(secret, node "\n" time "\n" nonce "\n" method path "\n"
//!   hex SHA-256 of the request body). Binding the method path means a tag
//!   for Hello cannot be replayed as a FetchChunk; binding the body hash
//!   means the request cannot be altered; the timestamp must be within
//!   [`MAX_SKEW_SECS`] of ours and the nonce unseen within that window
//!   ([`NonceCache`]), so a captured request cannot be replayed.
//! - The server checks the tag *before* it decodes the body
//!   ([`super::auth_layer`] is the gRPC layer that buffers the bounded
//!   body, hashes it and verifies): an unauthenticated caller never reaches
//!   the protobuf decoder.
//! - The secret never travels and is never logged ([`ClusterSecret`]'s
//!   `Debug` hides it). It must carry at least 128 bits of entropy
//!   ([`ClusterSecret::new`] refuses obviously weak ones): the TLS CA key is
//!   derived from it ([`super::tls`]), so a guessable secret could be
//!   recovered offline from any certificate. `ossc secret generate` prints a
//!   good one.
//! - This is authentication; encryption is the job of [`super::tls`]
//!   (mutual TLS, on by default), and with TLS off the tag still keeps out
//!   nodes without the secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata key of the caller's node id.
pub const NODE_HEADER: &str = "x-ossc-node";
/// Metadata key of the signing time (unix seconds).
pub const TIME_HEADER: &str = "x-ossc-time";
/// Metadata key of the request's random nonce (32 lower-case hex digits).
pub const NONCE_HEADER: &str = "x-ossc-nonce";
/// Metadata key of the HMAC tag (lower-case hex).
pub const AUTH_HEADER: &str = "x-ossc-auth";
/// Largest accepted distance between a tag's time and ours: 60 s, generous
/// for NTP-synced nodes, short enough that the nonce cache stays small.
pub const MAX_SKEW_SECS: u64 = 60;
/// Random bytes in a nonce.
pub const NONCE_BYTES: usize = 16;
/// Most nonces remembered at once. A nonce is kept for up to twice
/// [`MAX_SKEW_SECS`]; 512 Ki entries allow ~4,000 authenticated requests a
/// second, sustained (about 1 s of heartbeats from a 4,000-node cluster), in
/// ~40 MB at worst. Past it new requests are refused (fail closed), never
/// a remembered nonce forgotten early.
pub const MAX_NONCES: usize = 512 << 10;
/// Shortest accepted secret: 22 characters (128 bits as base64), 32 if it
/// is hex (see [`check_secret_strength`]).
pub const MIN_SECRET_CHARS: usize = 22;
/// Shortest accepted hex secret (128 bits).
pub const MIN_HEX_SECRET_CHARS: usize = 32;
/// Fewest distinct characters in an accepted secret.
pub const MIN_DISTINCT_CHARS: usize = 10;
/// Words that mark a secret as made up by hand (matched case-insensitively).
const WEAK_WORDS: [&str; 10] = [
    "secret", "password", "passwd", "changeme", "cluster", "example", "admin", "qwerty", "letmein",
    "default",
];

type HmacSha256 = Hmac<Sha256>;

/// The shared cluster secret.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret(<{} bytes, hidden>)", self.0.len())
    }
}

/// Why a request was refused (logged; the caller only sees UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed {0} metadata")]
    Missing(&'static str),
    #[error("timestamp {0} is more than {MAX_SKEW_SECS} s from ours")]
    Stale(u64),
    #[error("bad HMAC tag (wrong cluster secret, or the request was altered)")]
    BadTag,
    #[error("replayed request (nonce already seen)")]
    Replayed,
    #[error("too many recent requests to remember their nonces")]
    NonceCacheFull,
}

/// Why a secret is refused; the message says what a good one looks like.
pub fn check_secret_strength(text: &[u8]) -> Result<(), String> {
    const HINT: &str = "use `ossc secret generate` for a random one";
    let s = std::str::from_utf8(text)
        .map_err(|_| format!("the cluster secret must be text (UTF-8); {HINT}"))?;
    let chars: Vec<char> = s.chars().collect();
    let hex = chars.iter().all(|c| c.is_ascii_hexdigit());
    let min = if hex {
        MIN_HEX_SECRET_CHARS
    } else {
        MIN_SECRET_CHARS
    };
    if chars.len() < min {
        return Err(format!(
            "the cluster secret must be at least {min} characters of random material \
             (128 bits: {MIN_SECRET_CHARS} base64 or {MIN_HEX_SECRET_CHARS} hex characters), got {}; {HINT}",
            chars.len()
        ));
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Err(format!(
            "the cluster secret uses only {} distinct characters (at least {MIN_DISTINCT_CHARS} needed): \
             it is not random; {HINT}",
            distinct.len()
        ));
    }
    // Repeats and steps ("aaaa", "abcd", "4321"): at most 3 in 16 adjacent
    // pairs of random hex, far fewer in base64.
    let patterned = chars
        .windows(2)
        .filter(|w| (w[0] as i64 - w[1] as i64).abs() <= 1)
        .count();
    if patterned * 2 > chars.len() - 1 {
        return Err(format!(
            "the cluster secret is mostly repeated or consecutive characters: it is not random; {HINT}"
        ));
    }
    let lower = s.to_ascii_lowercase();
    if let Some(word) = WEAK_WORDS.iter().find(|w| lower.contains(*w)) {
        return Err(format!(
            "the cluster secret contains the word {word:?}: it looks made up, not random; {HINT}"
        ));
    }
    Ok(())
}

impl ClusterSecret {
    /// Surrounding whitespace (a trailing newline in a secret file) is
    /// dropped; weak secrets are refused ([`check_secret_strength`]).
    pub fn new(secret: &[u8]) -> Result<ClusterSecret, String> {
        let text = secret.trim_ascii();
        check_secret_strength(text)?;
        Ok(ClusterSecret(text.to_vec()))
    }

    /// HKDF-SHA256 of the secret (`salt`, `info`) into `out`: keys derived
    /// from the secret (the TLS CA) without exposing it.
    pub(crate) fn derive(&self, salt: &[u8], info: &[u8], out: &mut [u8]) {
        hkdf::Hkdf::<Sha256>::new(Some(salt), &self.0)
            .expand(info, out)
            .expect("HKDF-SHA256 output of at most 8160 bytes");
    }

    fn tag(&self, node: &str, time: u64, nonce: &str, method: &str, body: &[u8; 32]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [node, &time.to_string(), nonce, method] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac.update(hex::encode(body).as_bytes());
        mac
    }

    /// Adds the four auth entries for `method` (a gRPC path such as
    /// `/ossc.v1.PeerControl/FetchChunk`) and a body whose SHA-256 is
    /// `body` to `md`, with a fresh nonce.
    pub fn sign(&self, md: &mut MetadataMap, node: &str, method: &str, body: &[u8; 32]) {
        self.sign_at(md, node, method, body, now_secs(), &new_nonce());
    }

    /// Signs a gRPC request message: its body is the message framed as gRPC
    /// sends it ([`grpc_body_digest`]).
    pub fn sign_request<T: prost::Message>(
        &self,
        req: &mut tonic::Request<T>,
        node: &str,
        method: &str,
    ) {
        let digest = grpc_body_digest(req.get_ref());
        self.sign(req.metadata_mut(), node, method, &digest);
    }

    pub fn sign_at(
        &self,
        md: &mut MetadataMap,
        node: &str,
        method: &str,
        body: &[u8; 32],
        time: u64,
        nonce: &str,
    ) {
        let tag = hex::encode(
            self.tag(node, time, nonce, method, body)
                .finalize()
                .into_bytes(),
        );
        if let Ok(v) = MetadataValue::try_from(node) {
            md.insert(NODE_HEADER, v);
        }
        md.insert(TIME_HEADER, MetadataValue::from(time));
        if let Ok(v) = MetadataValue::try_from(nonce) {
            md.insert(NONCE_HEADER, v);
        }
        md.insert(
            AUTH_HEADER,
            MetadataValue::try_from(tag.as_str()).expect("hex is valid metadata"),
        );
    }

    /// Checks the entries for `method` and a body hashing to `body`, then
    /// records the nonce in `nonces` (a replay is refused); returns the
    /// caller's node id.
    pub fn verify(
        &self,
        md: &MetadataMap,
        method: &str,
        body: &[u8; 32],
        nonces: &NonceCache,
    ) -> Result<String, AuthError> {
        self.verify_at(md, method, body, nonces, now_secs())
    }

    pub fn verify_at(
        &self,
        md: &MetadataMap,
        method: &str,
        body: &[u8; 32],
        nonces: &NonceCache,
        now: u64,
    ) -> Result<String, AuthError> {
        let get = |k: &'static str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthError::Missing(k))
        };
        let node = get(NODE_HEADER)?;
        let time: u64 = get(TIME_HEADER)?
            .parse()
            .map_err(|_| AuthError::Missing(TIME_HEADER))?;
        let nonce_text = get(NONCE_HEADER)?;
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce_text, &mut nonce)
            .map_err(|_| AuthError::Missing(NONCE_HEADER))?;
        let tag = hex::decode(get(AUTH_HEADER)?).map_err(|_| AuthError::Missing(AUTH_HEADER))?;
        if time.abs_diff(now) > MAX_SKEW_SECS {
            return Err(AuthError::Stale(time));
        }
        self.tag(node, time, nonce_text, method, body)
            .verify_slice(&tag)
            .map_err(|_| AuthError::BadTag)?;
        nonces.remember(nonce, time, now)?;
        Ok(node.to_string())
    }
}

/// SHA-256 of `msg` as a gRPC request body: the 5-byte frame header (not
/// compressed, u32 BE length) and the protobuf encoding.
pub fn grpc_body_digest<T: prost::Message>(msg: &T) -> [u8; 32] {
    let encoded = msg.encode_to_vec();
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update((encoded.len() as u32).to_be_bytes());
    h.update(&encoded);
    h.finalize().into()
}

/// SHA-256 of raw body bytes (what the server hashes).
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// A fresh random nonce, hex.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; NONCE_BYTES]>())
}

/// Nonces of accepted requests, each kept until its timestamp leaves the
/// accepted window (after which the timestamp check alone refuses a
/// replay). Bounded by [`MAX_NONCES`].
pub struct NonceCache {
    capacity: usize,
    inner: Mutex<NonceState>,
}

#[derive(Default)]
struct NonceState {
    /// Nonce -> unix second after which it may be forgotten.
    seen: HashMap<[u8; NONCE_BYTES], u64>,
    /// When expired entries were last swept.
    swept_at: u64,
}

impl Default for NonceCache {
    fn default() -> Self {
        NonceCache::with_capacity(MAX_NONCES)
    }
}

impl NonceCache {
    pub fn with_capacity(capacity: usize) -> NonceCache {
        NonceCache {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// Records `nonce` of a request signed at `time`; refuses one already
    /// recorded.
    pub(crate) fn remember(
        &self,
        nonce: [u8; NONCE_BYTES],
        time: u64,
        now: u64,
    ) -> Result<(), AuthError> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.seen.contains_key(&nonce) {
            return Err(AuthError::Replayed);
        }
        // Sweep at most once a second, or when full.
        if st.seen.len() >= self.capacity || now != st.swept_at {
            st.seen.retain(|_, forget_after| *forget_after >= now);
            st.swept_at = now;
        }
        if st.seen.len() >= self.capacity {
            return Err(AuthError::NonceCacheFull);
        }
        st.seen.insert(nonce, time + MAX_SKEW_SECS);
        Ok(())
    }

    /// Nonces currently remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A secret that passes [`check_secret_strength`], for tests.
#[cfg(test)]
pub(crate) const TEST_SECRET: &[u8] = b"kQ7vT2mX9pL4wR8zB3nF6hJ1cY5dG0sE";

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "/ossc.v1.PeerControl/FetchChunk";
    const BODY: [u8; 32] = [7; 32];
    const NONCE: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn good_tags_verify_and_everything_else_is_refused() {
        let s = ClusterSecret::new(&[TEST_SECRET, b"\n"].concat()).unwrap();
        let mut md = MetadataMap::new();
        s.sign_at(&mut md, "10.0.0.1:7468", M, &BODY, 1_000_000, NONCE);
        let fresh = NonceCache::default;
        assert_eq!(
            s.verify_at(&md, M, &BODY, &fresh(), 1_000_010).unwrap(),
            "10.0.0.1:7468"
        );
        // Other method, other body, stale, wrong secret, tampered node or
        // nonce, missing entries.
        let hello = "/ossc.v1.PeerControl/Hello";
        assert_eq!(
            s.verify_at(&md, hello, &BODY, &fresh(), 1_000_000),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            s.verify_at(&md, M, &[8; 32], &fresh(), 1_000_000),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            s.verify_at(&md, M, &BODY, &fresh(), 1_000_000 + MAX_SKEW_SECS + 1),
            Err(AuthError::Stale(1_000_000))
        );
        let other = ClusterSecret::new(b"Zr4Wq8Ne2Ty6Ui0Op3As7Df1").unwrap();
        assert_eq!(
            other.verify_at(&md, M, &BODY, &fresh(), 1_000_000),
            Err(AuthError::BadTag)
        );
        let mut forged = md.clone();
        forged.insert(NODE_HEADER, MetadataValue::from_static("10.0.0.9:7468"));
        assert_eq!(
            s.verify_at(&forged, M, &BODY, &fresh(), 1_000_000),
            Err(AuthError::BadTag)
        );
        let mut renonced = md.clone();
        renonced.insert(
            NONCE_HEADER,
            MetadataValue::from_static("ffeeddccbbaa99887766554433221100"),
        );
        assert_eq!(
            s.verify_at(&renonced, M, &BODY, &fresh(), 1_000_000),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            s.verify_at(&MetadataMap::new(), M, &BODY, &fresh(), 1_000_000),
            Err(AuthError::Missing(NODE_HEADER))
        );
    }

    #[test]
    fn a_replayed_request_is_refused_and_the_cache_stays_bounded() {
        let s = ClusterSecret::new(TEST_SECRET).unwrap();
        let nonces = NonceCache::with_capacity(2);
        let signed = |nonce: &str, time: u64| {
            let mut md = MetadataMap::new();
            s.sign_at(&mut md, "n", M, &BODY, time, nonce);
            md
        };
        let first = signed(NONCE, 1_000);
        assert!(s.verify_at(&first, M, &BODY, &nonces, 1_000).is_ok());
        assert_eq!(
            s.verify_at(&first, M, &BODY, &nonces, 1_030),
            Err(AuthError::Replayed)
        );
        // Once its time leaves the window the timestamp check refuses it.
        assert_eq!(
            s.verify_at(&first, M, &BODY, &nonces, 1_000 + MAX_SKEW_SECS + 1),
            Err(AuthError::Stale(1_000))
        );
        // Full: a third fresh nonce is refused, until the first two expire.
        assert!(s
            .verify_at(&signed(&"1".repeat(32), 1_001), M, &BODY, &nonces, 1_001)
            .is_ok());
        let third = signed(&"2".repeat(32), 1_002);
        assert_eq!(
            s.verify_at(&third, M, &BODY, &nonces, 1_002),
            Err(AuthError::NonceCacheFull)
        );
        let later = signed(&"2".repeat(32), 1_000 + MAX_SKEW_SECS + 2);
        assert!(s
            .verify_at(&later, M, &BODY, &nonces, 1_000 + MAX_SKEW_SECS + 2)
            .is_ok());
        assert!(nonces.len() <= 2);
        // Signing makes a fresh nonce every time.
        assert_ne!(new_nonce(), new_nonce());
    }

    #[test]
    fn weak_secrets_are_refused_with_a_reason_and_debug_hides_the_secret() {
        for (weak, why) in [
            (&b"short"[..], "at least"),
            (b"0123456789abcdef0123456789abcde", "at least 32"),
            (b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
            (b"abababababababababababababababab", "distinct"),
            (b"0123456789abcdefghijklmnopqrstuvwxyz", "consecutive"),
            (b"test-cluster-secret-0123456789", "\"secret\""),
            (b"MyPassword-2024-Prod-Key-Nodes!", "\"password\""),
        ] {
            let err = ClusterSecret::new(weak).unwrap_err();
            assert!(
                err.contains(why),
                "{:?}: {err}",
                String::from_utf8_lossy(weak)
            );
            assert!(err.contains("ossc secret generate"), "{err}");
        }
        // What `ossc secret generate` prints passes, in either encoding.
        for _ in 0..200 {
            let bytes: [u8; 32] = rand::random();
            ClusterSecret::new(hex::encode(bytes).as_bytes()).unwrap();
            let b64 =
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
            ClusterSecret::new(b64.as_bytes()).unwrap();
        }
        let s = ClusterSecret::new(TEST_SECRET).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("kQ7v"), "{shown}");
    }
}

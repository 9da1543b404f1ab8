//! Cluster-secret authentication of every peer RPC.
//!
//! Design decision: each request carries three gRPC metadata entries,
//! `x-ossc-node` (the caller's node id), `x-ossc-time` (unix seconds) and
//! `x-ossc-auth` = hex HMAC-SHA256(secret, node "\n" time "\n" method path).
//! Binding the method path means a captured Hello tag cannot be replayed as a
//! FetchChunk; the timestamp bounds replays to [`MAX_SKEW_SECS`]. The secret never
//! travels and is never logged ([`ClusterSecret`]'s `Debug` hides it). This is
//! authentication; encryption is the job of [`super::tls`] (mutual TLS, on
//! by default), and with TLS off the tag still keeps out nodes without the
//! secret.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata key of the caller's node id.
pub const NODE_HEADER: &str = "x-ossc-node";
/// Metadata key of the signing time (unix seconds).
pub const TIME_HEADER: &str = "x-ossc-time";
/// Metadata key of the HMAC tag (lower-case hex).
pub const AUTH_HEADER: &str = "x-ossc-auth";
/// Largest accepted distance between a tag's time and ours: 5 minutes, the
/// same order as the store's own request-skew window, generous for unsynced
/// clocks, short enough to bound replays.
pub const MAX_SKEW_SECS: u64 = 300;
/// Shortest accepted secret, in bytes: a guessable secret defeats the HMAC.
pub const MIN_SECRET_BYTES: usize = 16;

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
    #[error("bad HMAC tag (wrong cluster secret?)")]
    BadTag,
}

impl ClusterSecret {
    /// Surrounding whitespace (a trailing newline in a secret file) is dropped.
    pub fn new(secret: &[u8]) -> Result<ClusterSecret, String> {
        let text = secret.trim_ascii();
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret must be at least {MIN_SECRET_BYTES} bytes (got {})",
                text.len()
            ));
        }
        Ok(ClusterSecret(text.to_vec()))
    }

    /// HKDF-SHA256 of the secret (`salt`, `info`) into `out`: keys derived
    /// from the secret (the TLS CA) without exposing it.
    pub(crate) fn derive(&self, salt: &[u8], info: &[u8], out: &mut [u8]) {
        hkdf::Hkdf::<Sha256>::new(Some(salt), &self.0)
            .expand(info, out)
            .expect("HKDF-SHA256 output of at most 8160 bytes");
    }

    fn tag(&self, node: &str, time: u64, method: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(node.as_bytes());
        mac.update(b"\n");
        mac.update(time.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(method.as_bytes());
        mac
    }

    /// Adds the three auth entries for `method` (a gRPC path such as
    /// `/ossc.v1.PeerControl/FetchChunk`) to `md`.
    pub fn sign(&self, md: &mut MetadataMap, node: &str, method: &str) {
        self.sign_at(md, node, method, now_secs());
    }

    pub fn sign_at(&self, md: &mut MetadataMap, node: &str, method: &str, time: u64) {
        let tag = hex::encode(self.tag(node, time, method).finalize().into_bytes());
        if let Ok(v) = MetadataValue::try_from(node) {
            md.insert(NODE_HEADER, v);
        }
        md.insert(TIME_HEADER, MetadataValue::from(time));
        md.insert(
            AUTH_HEADER,
            MetadataValue::try_from(tag.as_str()).expect("hex is valid metadata"),
        );
    }

    /// Checks the entries for `method`; returns the caller's node id.
    pub fn verify(&self, md: &MetadataMap, method: &str) -> Result<String, AuthError> {
        self.verify_at(md, method, now_secs())
    }

    pub fn verify_at(&self, md: &MetadataMap, method: &str, now: u64) -> Result<String, AuthError> {
        let get = |k: &'static str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthError::Missing(k))
        };
        let node = get(NODE_HEADER)?;
        let time: u64 = get(TIME_HEADER)?
            .parse()
            .map_err(|_| AuthError::Missing(TIME_HEADER))?;
        let tag = hex::decode(get(AUTH_HEADER)?).map_err(|_| AuthError::Missing(AUTH_HEADER))?;
        if time.abs_diff(now) > MAX_SKEW_SECS {
            return Err(AuthError::Stale(time));
        }
        self.tag(node, time, method)
            .verify_slice(&tag)
            .map_err(|_| AuthError::BadTag)?;
        Ok(node.to_string())
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "/ossc.v1.PeerControl/FetchChunk";

    #[test]
    fn good_tags_verify_and_everything_else_is_refused() {
        let s = ClusterSecret::new(b"0123456789abcdef-secret\n").unwrap();
        let mut md = MetadataMap::new();
        s.sign_at(&mut md, "10.0.0.1:7468", M, 1_000_000);
        assert_eq!(s.verify_at(&md, M, 1_000_010).unwrap(), "10.0.0.1:7468");
        // Other method, stale, wrong secret, tampered node, missing entries.
        assert_eq!(
            s.verify_at(&md, "/ossc.v1.PeerControl/Hello", 1_000_000),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            s.verify_at(&md, M, 1_000_000 + MAX_SKEW_SECS + 1),
            Err(AuthError::Stale(1_000_000))
        );
        let other = ClusterSecret::new(b"another-secret-of-16").unwrap();
        assert_eq!(other.verify_at(&md, M, 1_000_000), Err(AuthError::BadTag));
        let mut forged = md.clone();
        forged.insert(NODE_HEADER, MetadataValue::from_static("10.0.0.9:7468"));
        assert_eq!(s.verify_at(&forged, M, 1_000_000), Err(AuthError::BadTag));
        assert_eq!(
            s.verify_at(&MetadataMap::new(), M, 1_000_000),
            Err(AuthError::Missing(NODE_HEADER))
        );
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_the_secret() {
        assert!(ClusterSecret::new(b"short").is_err());
        let s = ClusterSecret::new(b"very-secret-value-xyz").unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}

//! Request signing: OSS V1 (HMAC-SHA1), OSS V4 (OSS4-HMAC-SHA256), AWS SigV4.
//!
//! Design decision: one canonicalisation routine per scheme serves both
//! sides. [`sign`] (the client) and [`verify`] (the embedded store) build the
//! canonical request from the same [`RequestToSign`] view through the same
//! functions, so the two can only disagree when the request itself differs,
//! and a round-trip test covers every scheme. Known-answer tests pin each
//! routine to the vendors' published vectors (`core/testdata/signing.json`).
//!
//! Rooms:
//! - `canonical`: canonical URI, query and headers, and the percent-encoding
//!   rules of each scheme;
//! - `signature`: the HMACs, the V4 credential scope and derived key, and the
//!   names that set OSS V4 and SigV4 apart;
//! - `signer`: the client side, [`sign`];
//! - `verifier`: the server side, [`verify`].
//!
//! This file holds the vocabulary both sides share: the scheme names,
//! credentials, the request view, header names and error codes.

use std::time::Duration;

mod canonical;
mod signature;
mod signer;
#[cfg(test)]
mod test_support;
mod verifier;

pub use canonical::{uri_encode, OSS_V1_SUBRESOURCES};
pub use signer::{sign, sign_with_options, SignOptions, Signed};
pub use verifier::{verify, VerifyError};

/// Largest accepted difference between a request's date and the server clock
/// (OSS and S3 both use 15 minutes).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Payload hash value meaning "body not covered by the signature".
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Header names this module reads or writes (lowercase, as canonicalised).
pub mod header {
    pub const AUTHORIZATION: &str = "authorization";
    pub const DATE: &str = "date";
    pub const HOST: &str = "host";
    pub const CONTENT_MD5: &str = "content-md5";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const RANGE: &str = "range";
    pub const OSS_DATE: &str = "x-oss-date";
    pub const OSS_CONTENT_SHA256: &str = "x-oss-content-sha256";
    pub const OSS_SECURITY_TOKEN: &str = "x-oss-security-token";
    pub const AMZ_DATE: &str = "x-amz-date";
    pub const AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
    pub const AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
}

/// Error codes [`verify`] returns, spelled as OSS and S3 spell them.
pub mod codes {
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const INVALID_ACCESS_KEY_ID: &str = "InvalidAccessKeyId";
    pub const SIGNATURE_DOES_NOT_MATCH: &str = "SignatureDoesNotMatch";
    pub const REQUEST_TIME_TOO_SKEWED: &str = "RequestTimeTooSkewed";
    pub const INVALID_SECURITY_TOKEN: &str = "InvalidSecurityToken";
    /// Malformed or unsupported `Authorization` header.
    pub const INVALID_ARGUMENT: &str = "InvalidArgument";
}

/// How an OSS V1 `Authorization` header starts.
const OSS_V1_PREFIX: &str = "OSS ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignatureVersion {
    #[serde(rename = "v1")]
    OssV1,
    #[serde(rename = "v4")]
    OssV4,
    #[serde(rename = "s3v4")]
    S3V4,
}

impl SignatureVersion {
    /// The spelling used in `config.json` and `OSS_SIGNATURE_VERSION`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::OssV1 => "v1",
            SignatureVersion::OssV4 => "v4",
            SignatureVersion::S3V4 => "s3v4",
        }
    }

    /// Whether this scheme needs a signing region.
    pub fn needs_region(self) -> bool {
        !matches!(self, SignatureVersion::OssV1)
    }
}

impl std::fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SignatureVersion {
    type Err = String;

    /// Accepts `v1`, `v4`, `s3v4` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" => Ok(SignatureVersion::OssV1),
            "v4" => Ok(SignatureVersion::OssV4),
            "s3v4" => Ok(SignatureVersion::S3V4),
            _ => Err(format!(
                "unknown signature version {s:?}: expected one of \"v1\", \"v4\", \"s3v4\""
            )),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub security_token: Option<String>,
}

impl Credentials {
    /// Long-term credentials without an STS token.
    pub fn new(access_key_id: impl Into<String>, access_key_secret: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
            security_token: None,
        }
    }

    /// The same credentials with an STS security token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.security_token = Some(token.into());
        self
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Everything about a request that enters a canonical form.
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// `Host` header value as sent (with `:port` when not the scheme default).
    pub host: &'a str,
    /// Bucket name (may be empty for service-level requests).
    pub bucket: &'a str,
    /// Decoded object key without leading `/` (empty for bucket-level requests).
    pub key: &'a str,
    /// Request path exactly as sent on the wire (percent-encoded), e.g.
    /// `/bucket/key` for path style or `/key` for virtual-hosted style.
    pub path: &'a str,
    /// Decoded query pairs; an empty value means a bare `k` / `k=`.
    pub query: &'a [(String, String)],
    /// Headers already on the request (names in any case).
    pub headers: &'a [(String, String)],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::test_support::{creds, ALL_VERSIONS};

    #[test]
    fn signature_version_parsing() {
        for v in ALL_VERSIONS {
            assert_eq!(v.as_str().parse::<SignatureVersion>(), Ok(v));
            assert_eq!(v.as_str().to_uppercase().parse::<SignatureVersion>(), Ok(v));
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
        }
        let err = "v2".parse::<SignatureVersion>().unwrap_err();
        assert!(err.contains("\"v1\", \"v4\", \"s3v4\""), "{err}");
        assert!(!SignatureVersion::OssV1.needs_region());
        assert!(SignatureVersion::S3V4.needs_region());
    }

    #[test]
    fn credentials_debug_redacts_secrets() {
        let text = format!("{:?}", creds().with_token("tok-secret"));
        assert!(text.contains("AKID"));
        assert!(
            !text.contains("ünïcode") && !text.contains("tok-secret"),
            "{text}"
        );
    }
}

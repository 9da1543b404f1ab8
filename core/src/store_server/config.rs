//! Configuration of the embedded store: where the buckets live, who may sign,
//! and which faults to inject.
//!
//! Design decision: [`FaultConfig`] is plain data (serde, `PartialEq`) so the
//! same value travels through the `ossc serve-store` CLI, `PUT /_ossc/faults`
//! and [`super::RunningStore::set_faults`]; the server owns the mutable state
//! derived from it (random generator, token bucket, one-shot replacement).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sign::Credentials;

/// Region assumed when a config omits it (OSS's first public region).
pub const DEFAULT_REGION: &str = "cn-hangzhou";
/// HTTP status of an injected error: OSS/S3 throttle with 503.
pub const DEFAULT_FAULT_STATUS: u16 = 503;
/// Error code of an injected error: OSS's bandwidth throttle.
pub const DEFAULT_FAULT_CODE: &str = "DownloadTrafficRateLimitExceeded";

fn default_region() -> String {
    DEFAULT_REGION.to_string()
}

/// How to start an embedded store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreServerConfig {
    /// Each subdirectory of `root` is a bucket; the regular files below it
    /// (recursively, '/'-separated relative paths) are its objects.
    pub root: PathBuf,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// Accepted signing credentials; empty means anonymous access.
    #[serde(default, with = "credentials_serde")]
    pub credentials: Vec<Credentials>,
    /// Region expected in V4 credential scopes (`cn-beijing`, bare). Empty
    /// disables the region check.
    #[serde(default = "default_region")]
    pub region: String,
    /// Faults injected from the first request on.
    #[serde(default)]
    pub faults: FaultConfig,
    /// How a range that does not fit the object is answered when the client
    /// did not send `x-oss-range-behavior: standard`.
    #[serde(default)]
    pub range_behavior: RangeBehavior,
    /// Which whole-object digests objects carry.
    #[serde(default)]
    pub checksums: ChecksumConfig,
}

/// Which whole-object digests the store declares (see `crate::checksums`).
/// SHA-256 and CRC-32C are always sent on HEAD and whole-object GETs that
/// carry `x-amz-checksum-mode: ENABLED`, as S3 does for objects uploaded
/// with those checksums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChecksumConfig {
    /// Leave out `x-oss-hash-crc64ecma`, like an S3 store (MinIO, Garage).
    pub no_crc64: bool,
    /// ETags are the MD5 of the content (an S3 or OSS single-part upload),
    /// computed once per file version; otherwise a version hash shaped like
    /// a multipart ETag, which costs no read of the data.
    pub md5_etags: bool,
}

/// OSS and S3 disagree on out-of-bounds ranges: OSS (by default) answers
/// `bytes=0-2000` on a 1000-byte object with 200 and the whole object; S3
/// clamps it to a 206 of the bytes that exist. Clients written for S3 (the AWS
/// SDKs' downloaders, s5cmd) ask for past-the-end last parts and need `S3`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeBehavior {
    /// OSS's default behaviour (the faithful default).
    #[default]
    Oss,
    /// S3's behaviour: always as if `x-oss-range-behavior: standard` were sent.
    S3,
}

/// Faults injected into object GETs.
///
/// One random draw per object GET picks at most one of error / reset /
/// truncate (so the three rates must sum to at most 1). `latency_ms` applies
/// to every bucket request (GET, HEAD and listings) to model round-trip time;
/// everything else applies to object GETs only. The control plane
/// (`/_ossc/...`) is never faulted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed of the fault generator; `None` seeds from the OS. With a seed and
    /// sequential requests, the same requests fail on every run.
    pub seed: Option<u64>,
    /// Probability that a GET answers `error_status` + `error_code` instead of data.
    pub error_rate: f64,
    pub error_status: u16,
    pub error_code: String,
    /// Probability that a GET's TCP connection is reset (RST, `SO_LINGER` 0)
    /// after part of the body was sent.
    pub reset_rate: f64,
    /// Probability that a GET declares the full `Content-Length`, sends fewer
    /// bytes and closes the connection cleanly (FIN).
    pub truncate_rate: f64,
    /// Delay added before every bucket request is answered.
    pub latency_ms: u64,
    /// Cap on object bytes/s served, shared by all connections (one token
    /// bucket); 0 means unlimited. A change applies to responses started after it.
    pub bandwidth_bytes_per_sec: u64,
    /// Key (in any bucket) rewritten right after its first GET starts: the
    /// file is atomically replaced by its byte-wise complement (same size, new
    /// inode, so a new ETag). That first GET still streams the old bytes; later
    /// GETs with the old `If-Match` get 412, those without get the new bytes.
    /// One-shot per `set_faults`.
    pub replace_key: Option<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: None,
            error_rate: 0.0,
            error_status: DEFAULT_FAULT_STATUS,
            error_code: DEFAULT_FAULT_CODE.to_string(),
            reset_rate: 0.0,
            truncate_rate: 0.0,
            latency_ms: 0,
            bandwidth_bytes_per_sec: 0,
            replace_key: None,
        }
    }
}

impl FaultConfig {
    /// Checks rates are probabilities summing to at most 1 and the status is an error.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("reset_rate", self.reset_rate),
            ("truncate_rate", self.truncate_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within [0, 1], got {rate}"));
            }
        }
        let sum = self.error_rate + self.reset_rate + self.truncate_rate;
        if sum > 1.0 + f64::EPSILON {
            return Err(format!(
                "error_rate + reset_rate + truncate_rate must be at most 1, got {sum}"
            ));
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be a 4xx/5xx status, got {}",
                self.error_status
            ));
        }
        if self.error_code.is_empty() || self.error_code.contains(['<', '>', '&']) {
            return Err(format!(
                "error_code {:?} is not a plain code",
                self.error_code
            ));
        }
        Ok(())
    }
}

/// `Credentials` lives in `sign` without serde; this mirrors its fields.
mod credentials_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::sign::Credentials;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        access_key_id: String,
        access_key_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        security_token: Option<String>,
    }

    pub fn serialize<S: Serializer>(creds: &[Credentials], s: S) -> Result<S::Ok, S::Error> {
        let wire: Vec<Wire> = creds
            .iter()
            .map(|c| Wire {
                access_key_id: c.access_key_id.clone(),
                access_key_secret: c.access_key_secret.clone(),
                security_token: c.security_token.clone(),
            })
            .collect();
        wire.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Credentials>, D::Error> {
        let wire = Vec::<Wire>::deserialize(d)?;
        Ok(wire
            .into_iter()
            .map(|w| Credentials {
                access_key_id: w.access_key_id,
                access_key_secret: w.access_key_secret,
                security_token: w.security_token,
            })
            .collect())
    }
}

//! Signature values: OSS V1's HMAC-SHA1, and the V4 credential scope with
//! its derived-key HMAC-SHA256 that OSS V4 and AWS SigV4 share.
//!
//! Design decision: the two V4 schemes differ only in a handful of names
//! (algorithm, key prefix, service, terminator, date and token headers), so
//! each is one [`V4Scheme`] value and a single [`Scope`] computes for both;
//! the signer and the verifier pick the value, never the code path.

use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::header;

/// `x-oss-date` / `x-amz-date` format (ISO 8601 basic, UTC).
pub(super) const ISO8601_BASIC: &str = "%Y%m%dT%H%M%SZ";
/// Length of the `yyyymmdd` prefix of an ISO 8601 basic timestamp.
pub(super) const DATE_STAMP_LEN: usize = 8;

/// The names that set one V4 scheme apart from the other.
pub(super) struct V4Scheme {
    /// First word of the `Authorization` header and of the string-to-sign.
    pub(super) algorithm: &'static str,
    /// Put before the secret to form the first HMAC key.
    pub(super) key_prefix: &'static str,
    pub(super) service: &'static str,
    pub(super) terminator: &'static str,
    /// Header that carries the request time (ISO 8601 basic).
    pub(super) date_header: &'static str,
    /// Header that carries the STS security token.
    pub(super) token_header: &'static str,
}

/// OSS V4 (`OSS4-HMAC-SHA256`).
pub(super) const OSS_V4: V4Scheme = V4Scheme {
    algorithm: "OSS4-HMAC-SHA256",
    key_prefix: "aliyun_v4",
    service: "oss",
    terminator: "aliyun_v4_request",
    date_header: header::OSS_DATE,
    token_header: header::OSS_SECURITY_TOKEN,
};

/// AWS SigV4 (`AWS4-HMAC-SHA256`) for S3.
pub(super) const S3_V4: V4Scheme = V4Scheme {
    algorithm: "AWS4-HMAC-SHA256",
    key_prefix: "AWS4",
    service: "s3",
    terminator: "aws4_request",
    date_header: header::AMZ_DATE,
    token_header: header::AMZ_SECURITY_TOKEN,
};

/// A V4 credential scope: `yyyymmdd/region/service/terminator`.
pub(super) struct Scope<'a> {
    scheme: &'static V4Scheme,
    date: &'a str,
    region: &'a str,
}

impl<'a> Scope<'a> {
    pub(super) fn new(scheme: &'static V4Scheme, datetime: &'a str, region: &'a str) -> Self {
        Self {
            scheme,
            date: date_stamp(datetime),
            region,
        }
    }

    pub(super) fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.date, self.region, self.scheme.service, self.scheme.terminator
        )
    }

    pub(super) fn string_to_sign(&self, datetime: &str, canonical_request: &str) -> String {
        format!(
            "{}\n{datetime}\n{}\n{}",
            self.scheme.algorithm,
            self.path(),
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        )
    }

    /// Hex HMAC-SHA256 of `sts` under the derived key
    /// prefix+secret -> date -> region -> service -> terminator.
    pub(super) fn signature(&self, secret: &str, sts: &str) -> String {
        let mut key = hmac_sha256(
            format!("{}{secret}", self.scheme.key_prefix).as_bytes(),
            self.date,
        );
        for part in [self.region, self.scheme.service, self.scheme.terminator] {
            key = hmac_sha256(&key, part);
        }
        hex::encode(hmac_sha256(&key, sts))
    }
}

pub(super) fn date_stamp(datetime: &str) -> &str {
    datetime.get(..DATE_STAMP_LEN).unwrap_or(datetime)
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// OSS V1's signature: base64 of HMAC-SHA1 under the secret.
pub(super) fn hmac_sha1_base64(key: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(super) fn iso8601_basic(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format(ISO8601_BASIC)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::test_support::{str_field, vectors};

    #[test]
    fn oss_v1_every_vector_signature() {
        let all = vectors();
        let list = all["oss_v1"].as_array().expect("oss_v1 vectors");
        assert_eq!(list.len(), 5);
        for v in list {
            let sts = str_field(v, "string_to_sign");
            let sig = hmac_sha1_base64(str_field(v, "secret").as_bytes(), sts);
            match (v.get("signature"), v.get("authorization")) {
                (Some(expected), _) => assert_eq!(sig, expected.as_str().unwrap(), "{sts}"),
                (None, Some(auth)) => {
                    assert_eq!(format!("OSS ak:{sig}"), auth.as_str().unwrap(), "{sts}")
                }
                _ => panic!("vector without an expected value"),
            }
        }
    }
}

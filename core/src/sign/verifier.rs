//! The server side: checks an incoming request's signature (the embedded
//! store calls [`verify`]).
//!
//! Design decision: the checks run in a fixed order (header present and
//! well-formed, key id known, date within [`MAX_CLOCK_SKEW`], security token,
//! then the signature itself), so a request fails with the same code S3 and
//! OSS give it. Signatures and tokens are compared in constant time, and a
//! mismatch carries the server's string-to-sign for the client's debug log.
//! Both V4 schemes run through one path ([`Check::v4`]) that differs only in
//! the [`V4Scheme`] names and in which headers the request says it signed.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::canonical::{
    oss_v1_string_to_sign, oss_v4_additional_headers, oss_v4_canonical_request,
    s3_canonical_request, Headers,
};
use super::signature::{
    date_stamp, hmac_sha1_base64, Scope, V4Scheme, DATE_STAMP_LEN, ISO8601_BASIC, OSS_V4, S3_V4,
};
use super::{codes, header, Credentials, RequestToSign, MAX_CLOCK_SKEW, OSS_V1_PREFIX};

/// Why a server rejected a request's signature (embedded store side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// `SignatureDoesNotMatch`, `InvalidAccessKeyId`, `RequestTimeTooSkewed`, `AccessDenied`...
    pub code: &'static str,
    pub message: String,
    pub string_to_sign: Option<String>,
}

impl VerifyError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            string_to_sign: None,
        }
    }
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for VerifyError {}

/// Server side: checks the request's `Authorization` (any of the three schemes).
///
/// Order of checks: header present and well-formed, key id known, date within
/// [`MAX_CLOCK_SKEW`], security token, then the signature itself (compared in
/// constant time). For V4 schemes the signing region is the one named in the
/// credential scope.
pub fn verify(
    request: &RequestToSign<'_>,
    lookup_secret: &dyn Fn(&str) -> Option<Credentials>,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let check = Check {
        request,
        headers: Headers::new(request.headers),
        lookup_secret,
        now,
    };
    let Some(authorization) = check.headers.get(header::AUTHORIZATION) else {
        return Err(VerifyError::new(
            codes::ACCESS_DENIED,
            "Anonymous access is forbidden: the request has no Authorization header",
        ));
    };
    if let Some(rest) = authorization.strip_prefix(OSS_V4.algorithm) {
        check.oss_v4(rest)
    } else if let Some(rest) = authorization.strip_prefix(S3_V4.algorithm) {
        check.s3(rest)
    } else if let Some(rest) = authorization.strip_prefix(OSS_V1_PREFIX) {
        check.oss_v1(rest)
    } else {
        Err(VerifyError::new(
            codes::INVALID_ARGUMENT,
            format!(
                "unsupported Authorization scheme in {:?}",
                authorization.split(' ').next().unwrap_or_default()
            ),
        ))
    }
}

/// One incoming request and what its signature is checked against.
struct Check<'r, 'a> {
    request: &'r RequestToSign<'a>,
    headers: Headers,
    lookup_secret: &'r dyn Fn(&str) -> Option<Credentials>,
    now: SystemTime,
}

impl Check<'_, '_> {
    fn oss_v1(&self, rest: &str) -> Result<(), VerifyError> {
        let (key_id, provided) = rest.trim().rsplit_once(':').ok_or_else(|| {
            VerifyError::new(
                codes::INVALID_ARGUMENT,
                "malformed OSS V1 Authorization: expected `OSS <AccessKeyId>:<Signature>`",
            )
        })?;
        let credentials = self.credentials(key_id)?;
        // x-oss-date, when present, is what OSS checks the clock against.
        let date_for_clock = self
            .headers
            .get(header::OSS_DATE)
            .or_else(|| self.headers.get(header::DATE))
            .ok_or_else(|| missing_date("Date"))?;
        let request_time = httpdate::parse_http_date(&date_for_clock)
            .map_err(|_| invalid_date(&date_for_clock))?;
        check_skew(request_time, self.now)?;
        check_token(&credentials, self.headers.get(header::OSS_SECURITY_TOKEN))?;
        let date_line = self.headers.get(header::DATE).unwrap_or_default();
        let sts = oss_v1_string_to_sign(self.request, &self.headers, &date_line);
        let expected = hmac_sha1_base64(credentials.access_key_secret.as_bytes(), &sts);
        check_signature(&expected, provided, sts)
    }

    fn oss_v4(&self, rest: &str) -> Result<(), VerifyError> {
        let auth = V4Authorization::parse(rest)?;
        let requested_additional: Vec<String> = auth
            .fields
            .get("AdditionalHeaders")
            .map(|list| {
                list.split(';')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        self.v4(&OSS_V4, &auth, || {
            let additional = oss_v4_additional_headers(&requested_additional, &self.headers);
            oss_v4_canonical_request(self.request, &self.headers, &additional)
        })
    }

    fn s3(&self, rest: &str) -> Result<(), VerifyError> {
        let auth = V4Authorization::parse(rest)?;
        let signed_headers = auth
            .fields
            .get("SignedHeaders")
            .ok_or_else(|| malformed("SignedHeaders"))?;
        let signed_names: Vec<String> = signed_headers
            .split(';')
            .map(|n| n.to_ascii_lowercase())
            .collect();
        if !signed_names.iter().any(|n| n == header::HOST) {
            return Err(VerifyError::new(
                codes::ACCESS_DENIED,
                "SigV4 SignedHeaders must include host",
            ));
        }
        self.v4(&S3_V4, &auth, || {
            s3_canonical_request(self.request, &self.headers, &signed_names)
        })
    }

    /// The checks both V4 schemes share, after their own header parsing;
    /// `canonical_request` builds the scheme's canonical request.
    fn v4(
        &self,
        scheme: &'static V4Scheme,
        auth: &V4Authorization<'_>,
        canonical_request: impl FnOnce() -> String,
    ) -> Result<(), VerifyError> {
        let parsed = parse_credential(auth.credential, scheme.service, scheme.terminator)?;
        let credentials = self.credentials(parsed.key_id)?;
        let datetime = self
            .headers
            .get(scheme.date_header)
            .ok_or_else(|| missing_date(scheme.date_header))?;
        let request_time = parse_iso8601_basic(&datetime)?;
        check_scope_date(&datetime, parsed.date)?;
        check_skew(request_time, self.now)?;
        check_token(&credentials, self.headers.get(scheme.token_header))?;
        let canonical = canonical_request();
        let scope = Scope::new(scheme, &datetime, parsed.region);
        let sts = scope.string_to_sign(&datetime, &canonical);
        let expected = scope.signature(&credentials.access_key_secret, &sts);
        check_signature(&expected, auth.signature, sts)
    }

    fn credentials(&self, key_id: &str) -> Result<Credentials, VerifyError> {
        (self.lookup_secret)(key_id).ok_or_else(|| {
            VerifyError::new(
                codes::INVALID_ACCESS_KEY_ID,
                format!("The Access Key Id you provided ({key_id}) does not exist in our records."),
            )
        })
    }
}

/// A V4 `Authorization` header (after the algorithm): its `Name=Value`
/// fields, with the two that every V4 scheme requires.
struct V4Authorization<'h> {
    fields: BTreeMap<&'h str, &'h str>,
    credential: &'h str,
    signature: &'h str,
}

impl<'h> V4Authorization<'h> {
    fn parse(rest: &'h str) -> Result<Self, VerifyError> {
        let fields = parse_auth_fields(rest)?;
        let credential = *fields
            .get("Credential")
            .ok_or_else(|| malformed("Credential"))?;
        let signature = *fields
            .get("Signature")
            .ok_or_else(|| malformed("Signature"))?;
        Ok(Self {
            fields,
            credential,
            signature,
        })
    }
}

/// `Name=Value` pairs of a V4 Authorization header (after the algorithm).
fn parse_auth_fields(rest: &str) -> Result<BTreeMap<&str, &str>, VerifyError> {
    let mut fields = BTreeMap::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=').ok_or_else(|| {
            VerifyError::new(
                codes::INVALID_ARGUMENT,
                format!("malformed Authorization field {part:?}: expected Name=Value"),
            )
        })?;
        fields.insert(name.trim(), value.trim());
    }
    Ok(fields)
}

struct ParsedCredential<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
}

/// `ak/yyyymmdd/region/service/terminator` (the key id may itself contain `/`).
fn parse_credential<'a>(
    credential: &'a str,
    service: &str,
    terminator: &str,
) -> Result<ParsedCredential<'a>, VerifyError> {
    let mut parts = credential.rsplitn(5, '/');
    let (Some(term), Some(svc), Some(region), Some(date), Some(key_id)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(VerifyError::new(
            codes::INVALID_ARGUMENT,
            format!("malformed Credential {credential:?}: expected AccessKeyId/date/region/{service}/{terminator}"),
        ));
    };
    if term != terminator || svc != service || date.len() != DATE_STAMP_LEN || key_id.is_empty() {
        return Err(VerifyError::new(
            codes::INVALID_ARGUMENT,
            format!("malformed Credential {credential:?}: expected AccessKeyId/date/region/{service}/{terminator}"),
        ));
    }
    Ok(ParsedCredential {
        key_id,
        date,
        region,
    })
}

fn check_scope_date(datetime: &str, scope_date: &str) -> Result<(), VerifyError> {
    if date_stamp(datetime) == scope_date {
        Ok(())
    } else {
        Err(VerifyError::new(
            codes::INVALID_ARGUMENT,
            format!("credential date {scope_date} does not match request date {datetime}"),
        ))
    }
}

fn check_skew(request_time: SystemTime, now: SystemTime) -> Result<(), VerifyError> {
    let skew = match now.duration_since(request_time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > MAX_CLOCK_SKEW {
        Err(VerifyError::new(
            codes::REQUEST_TIME_TOO_SKEWED,
            format!(
                "The difference between the request time and the current time is too large ({} s, limit {} s).",
                skew.as_secs(),
                MAX_CLOCK_SKEW.as_secs()
            ),
        ))
    } else {
        Ok(())
    }
}

fn check_token(credentials: &Credentials, provided: Option<String>) -> Result<(), VerifyError> {
    let ok = match (&credentials.security_token, &provided) {
        (None, None) => true,
        (Some(expected), Some(provided)) => {
            constant_time_eq(expected.as_bytes(), provided.as_bytes())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::new(
            codes::INVALID_SECURITY_TOKEN,
            if provided.is_none() {
                "The request carries no security token but the access key requires one."
            } else {
                "The security token included in the request is invalid."
            },
        ))
    }
}

fn check_signature(
    expected: &str,
    provided: &str,
    string_to_sign: String,
) -> Result<(), VerifyError> {
    if constant_time_eq(expected.as_bytes(), provided.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError {
            code: codes::SIGNATURE_DOES_NOT_MATCH,
            message: "The request signature we calculated does not match the signature you provided. Check your key and signing method.".to_owned(),
            string_to_sign: Some(string_to_sign),
        })
    }
}

/// Compares without an early exit on the first differing byte (the length
/// of a signature is public).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn malformed(field: &str) -> VerifyError {
    VerifyError::new(
        codes::INVALID_ARGUMENT,
        format!("malformed Authorization header: missing {field}"),
    )
}

fn missing_date(name: &str) -> VerifyError {
    VerifyError::new(
        codes::ACCESS_DENIED,
        format!("the request has no {name} header; signed requests must carry one"),
    )
}

fn invalid_date(value: &str) -> VerifyError {
    VerifyError::new(
        codes::ACCESS_DENIED,
        format!("cannot parse the request date {value:?}"),
    )
}

pub(super) fn parse_iso8601_basic(value: &str) -> Result<SystemTime, VerifyError> {
    chrono::NaiveDateTime::parse_from_str(value, ISO8601_BASIC)
        .map(|dt| SystemTime::from(dt.and_utc()))
        .map_err(|_| invalid_date(value))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sign::signature::iso8601_basic;
    use crate::sign::test_support::{
        creds, lookup_for, round_trip_request, signed_request, unix, ALL_VERSIONS, TRICKY_KEYS,
    };
    use crate::sign::{sign_with_options, uri_encode, SignOptions, SignatureVersion};

    #[test]
    fn round_trip_all_schemes_and_tricky_keys() {
        let now = unix(1_750_000_000);
        let creds = creds();
        let lookup = lookup_for(creds.clone());
        for version in ALL_VERSIONS {
            for key in TRICKY_KEYS {
                let req = signed_request(version, &creds, key, now);
                assert_eq!(
                    verify(&req.view(), &lookup, now),
                    Ok(()),
                    "{version} {key:?}"
                );
                // Within the skew window on either side.
                let later = now + MAX_CLOCK_SKEW - Duration::from_secs(1);
                assert_eq!(
                    verify(&req.view(), &lookup, later),
                    Ok(()),
                    "{version} later"
                );
            }
        }
    }

    #[test]
    fn round_trip_with_token_and_additional_headers() {
        let now = unix(1_750_000_000);
        let creds = creds().with_token("sts token+/=");
        let lookup = lookup_for(creds.clone());
        for version in ALL_VERSIONS {
            let req = signed_request(version, &creds, TRICKY_KEYS[3], now);
            assert_eq!(verify(&req.view(), &lookup, now), Ok(()), "{version}");
        }
        let mut req = round_trip_request(TRICKY_KEYS[2]);
        let options = SignOptions {
            additional_headers: vec!["host".into(), "range".into()],
        };
        let signed = sign_with_options(
            SignatureVersion::OssV4,
            &creds,
            "cn-beijing",
            &req.view(),
            now,
            &options,
        );
        req.apply(&signed);
        assert!(req
            .header("Authorization")
            .unwrap()
            .contains("AdditionalHeaders=host;range"));
        assert_eq!(verify(&req.view(), &lookup, now), Ok(()));
        // Range is now covered: changing it breaks the signature.
        req.headers.retain(|(n, _)| n != "Range");
        req.headers.push(("Range".into(), "bytes=0-100".into()));
        let err = verify(&req.view(), &lookup, now).unwrap_err();
        assert_eq!(err.code, codes::SIGNATURE_DOES_NOT_MATCH);
    }

    #[test]
    fn tampered_requests_fail_with_server_string_to_sign() {
        let now = unix(1_750_000_000);
        let creds = creds();
        let lookup = lookup_for(creds.clone());
        for version in ALL_VERSIONS {
            let good = signed_request(version, &creds, TRICKY_KEYS[1], now);
            let mut tampered = Vec::new();
            let mut other_key = good.clone();
            other_key.key = "dir with spaces/other.bin".into();
            other_key.path = uri_encode("/bucket/dir with spaces/other.bin", true);
            tampered.push(("key", other_key));
            let mut other_method = good.clone();
            other_method.method = "DELETE".into();
            tampered.push(("method", other_method));
            let mut other_sub = good.clone();
            other_sub.query[0].1 = "v2".into();
            tampered.push(("versionId", other_sub));
            let mut other_meta = good.clone();
            for (n, v) in other_meta.headers.iter_mut() {
                if n.starts_with("X-Oss") || n.starts_with("x-amz-meta") {
                    *v = "changed".into();
                }
            }
            tampered.push(("meta header", other_meta));
            for (what, req) in tampered {
                let err = verify(&req.view(), &lookup, now).unwrap_err();
                assert_eq!(
                    err.code,
                    codes::SIGNATURE_DOES_NOT_MATCH,
                    "{version} {what}"
                );
                let sts = err.string_to_sign.expect("server string-to-sign");
                assert!(!sts.is_empty());
            }
        }
    }

    #[test]
    fn wrong_secret_gives_signature_mismatch() {
        let now = unix(1_750_000_000);
        let creds = creds();
        let server_side = Credentials::new(creds.access_key_id.clone(), "another secret");
        let lookup = lookup_for(server_side);
        for version in ALL_VERSIONS {
            let req = signed_request(version, &creds, TRICKY_KEYS[0], now);
            let err = verify(&req.view(), &lookup, now).unwrap_err();
            assert_eq!(err.code, codes::SIGNATURE_DOES_NOT_MATCH, "{version}");
        }
    }

    #[test]
    fn unknown_key_skew_token_and_missing_authorization() {
        let now = unix(1_750_000_000);
        let creds = creds();
        for version in ALL_VERSIONS {
            let req = signed_request(version, &creds, TRICKY_KEYS[0], now);

            let nobody = |_: &str| None;
            let err = verify(&req.view(), &nobody, now).unwrap_err();
            assert_eq!(err.code, codes::INVALID_ACCESS_KEY_ID, "{version}");

            let lookup = lookup_for(creds.clone());
            let skewed = now + MAX_CLOCK_SKEW + Duration::from_secs(1);
            let err = verify(&req.view(), &lookup, skewed).unwrap_err();
            assert_eq!(err.code, codes::REQUEST_TIME_TOO_SKEWED, "{version} future");
            let err = verify(
                &req.view(),
                &lookup,
                now - MAX_CLOCK_SKEW - Duration::from_secs(1),
            )
            .unwrap_err();
            assert_eq!(err.code, codes::REQUEST_TIME_TOO_SKEWED, "{version} past");

            // Server expects a token the request lacks.
            let with_token = lookup_for(creds.clone().with_token("t"));
            let err = verify(&req.view(), &with_token, now).unwrap_err();
            assert_eq!(err.code, codes::INVALID_SECURITY_TOKEN, "{version}");

            // Request signed with a token the server doesn't know.
            let wrong = signed_request(
                version,
                &creds.clone().with_token("other"),
                TRICKY_KEYS[0],
                now,
            );
            let err = verify(&wrong.view(), &with_token, now).unwrap_err();
            assert_eq!(err.code, codes::INVALID_SECURITY_TOKEN, "{version}");

            let mut anonymous = req.clone();
            anonymous
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
            let err = verify(&anonymous.view(), &lookup, now).unwrap_err();
            assert_eq!(err.code, codes::ACCESS_DENIED, "{version}");
        }
    }

    #[test]
    fn malformed_authorization_headers_are_rejected() {
        let now = unix(1_750_000_000);
        let lookup = lookup_for(creds());
        for bad in [
            "Bearer abc",
            "OSS no-colon",
            "OSS4-HMAC-SHA256 Signature=00",
            "OSS4-HMAC-SHA256 Credential=ak/20250615/cn/s3/aws4_request,Signature=00",
            "AWS4-HMAC-SHA256 Credential=ak/20250615/us-east-1/s3/aws4_request, Signature=00",
            "AWS4-HMAC-SHA256 Credential=ak/20250615/us-east-1/s3/aws4_request, SignedHeaders=range, Signature=00",
            "AWS4-HMAC-SHA256 garbage",
        ] {
            let mut req = round_trip_request("k");
            req.headers.push(("Authorization".into(), bad.into()));
            req.headers.push(("x-amz-date".into(), iso8601_basic(now)));
            req.headers.push(("x-oss-date".into(), iso8601_basic(now)));
            let err = verify(&req.view(), &lookup, now).unwrap_err();
            assert!(
                [codes::INVALID_ARGUMENT, codes::ACCESS_DENIED].contains(&err.code),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn scope_date_must_match_request_date() {
        let now = unix(1_750_000_000);
        let creds = creds();
        let lookup = lookup_for(creds.clone());
        let mut req = signed_request(SignatureVersion::OssV4, &creds, "k", now);
        let auth = req.header("Authorization").unwrap().to_owned();
        let date = &iso8601_basic(now)[..8];
        let forged = auth.replacen(date, "20000101", 1);
        req.headers.retain(|(n, _)| n != "Authorization");
        req.headers.push(("Authorization".into(), forged));
        let err = verify(&req.view(), &lookup, now).unwrap_err();
        assert_eq!(err.code, codes::INVALID_ARGUMENT);
    }

    #[test]
    fn constant_time_eq_behaviour() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

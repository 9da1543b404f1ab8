//! Request signing: OSS V1 (HMAC-SHA1), OSS V4 (OSS4-HMAC-SHA256), AWS SigV4.
//!
//! Design decision: one canonicalisation routine per scheme serves both
//! sides. [`sign`] (the client) and [`verify`] (the embedded store) build the
//! canonical request from the same [`RequestToSign`] view through the same
//! functions, so the two can only disagree when the request itself differs,
//! and a round-trip test covers every scheme. Known-answer tests pin each
//! routine to the vendors' published vectors (`core/testdata/signing.json`).
//!
//! Scheme differences that matter (see field notes §4):
//! - OSS V1 signs the *raw* key and only a fixed list of sub-resources
//!   ([`OSS_V1_SUBRESOURCES`]); `list-type`, `prefix`, `max-keys`... are not.
//! - OSS V4 percent-encodes `/bucket/key` (keeping `/`), writes an empty query
//!   value as the bare `k`, and signs `content-type`, `content-md5` and every
//!   `x-oss-*` header; more only when listed as `AdditionalHeaders`.
//! - AWS SigV4 uses the wire path as the canonical URI, writes `k=` for an
//!   empty value and always signs `host`.
//!
//! [`sign`] computes the date from the `now` it is given (never from headers
//! already on the request) and returns the headers the caller must *set*
//! (replacing any existing header of the same name).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

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

/// `x-oss-date` / `x-amz-date` format (ISO 8601 basic, UTC).
const ISO8601_BASIC: &str = "%Y%m%dT%H%M%SZ";
/// Length of the `yyyymmdd` prefix of an ISO 8601 basic timestamp.
const DATE_STAMP_LEN: usize = 8;

const OSS_V1_PREFIX: &str = "OSS ";
const OSS_V4_ALGORITHM: &str = "OSS4-HMAC-SHA256";
const OSS_V4_KEY_PREFIX: &str = "aliyun_v4";
const OSS_V4_SERVICE: &str = "oss";
const OSS_V4_TERMINATOR: &str = "aliyun_v4_request";
const S3_ALGORITHM: &str = "AWS4-HMAC-SHA256";
const S3_KEY_PREFIX: &str = "AWS4";
const S3_SERVICE: &str = "s3";
const S3_TERMINATOR: &str = "aws4_request";

/// Query parameters that OSS V1 includes in the canonical resource (the
/// list the official SDKs sign). Everything else (`list-type`, `prefix`,
/// `max-keys`, `delimiter`, `encoding-type`, `start-after`...) is not signed.
pub const OSS_V1_SUBRESOURCES: &[&str] = &[
    "accessPoint",
    "accessPointPolicy",
    "acl",
    "append",
    "asyncFetch",
    "bucketInfo",
    "callback",
    "callback-var",
    "cloudboxes",
    "cname",
    "comp",
    "continuation-token",
    "cors",
    "delete",
    "encryption",
    "endTime",
    "httpsConfig",
    "img",
    "inventory",
    "inventoryId",
    "lifecycle",
    "live",
    "location",
    "logging",
    "metaQuery",
    "objectMeta",
    "partNumber",
    "policy",
    "policyStatus",
    "position",
    "publicAccessBlock",
    "qos",
    "qosInfo",
    "referer",
    "regionList",
    "replication",
    "replicationLocation",
    "replicationProgress",
    "requestPayment",
    "resourceGroup",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "rtc",
    "security-token",
    "sequential",
    "startTime",
    "stat",
    "status",
    "style",
    "styleName",
    "symlink",
    "tagging",
    "transferAcceleration",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "vod",
    "website",
    "worm",
    "wormExtend",
    "wormId",
    "x-oss-ac-forward-allow",
    "x-oss-ac-source-ip",
    "x-oss-ac-subnet-mask",
    "x-oss-ac-vpc-id",
    "x-oss-async-process",
    "x-oss-enable-md5",
    "x-oss-enable-sha1",
    "x-oss-enable-sha256",
    "x-oss-hash-ctx",
    "x-oss-md5-ctx",
    "x-oss-process",
    "x-oss-request-payer",
    "x-oss-traffic-limit",
];

/// RFC 3986 unreserved characters stay; everything else is `%XX` (uppercase).
const URI_ENCODE_ALL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// As [`URI_ENCODE_ALL`] but `/` stays (paths).
const URI_ENCODE_PATH: &AsciiSet = &URI_ENCODE_ALL.remove(b'/');

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

/// What signing produced: headers to add to the request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    /// The string-to-sign, for debug logging on `SignatureDoesNotMatch`.
    pub string_to_sign: String,
}

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

/// Optional signing inputs beyond [`sign`]'s arguments.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// OSS V4 only: extra header names to sign (sent as `AdditionalHeaders`).
    /// Names are lowercased; ones absent from the request, and ones V4 signs
    /// anyway (`content-type`, `content-md5`, `x-oss-*`), are dropped. `host`
    /// is taken from [`RequestToSign::host`] when there is no `Host` header.
    pub additional_headers: Vec<String>,
}

/// Percent-encodes `s` the way OSS V4 and SigV4 canonical forms do: RFC 3986
/// unreserved characters stay, everything else becomes `%XX` (uppercase);
/// `/` stays when `keep_slash`. Also the right way to build a wire path from
/// a decoded key.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let set = if keep_slash {
        URI_ENCODE_PATH
    } else {
        URI_ENCODE_ALL
    };
    percent_encoding::utf8_percent_encode(s, set).to_string()
}

/// Signs `request` with [`SignOptions::default`].
pub fn sign(
    version: SignatureVersion,
    credentials: &Credentials,
    region: &str,
    request: &RequestToSign<'_>,
    now: SystemTime,
) -> Signed {
    sign_with_options(
        version,
        credentials,
        region,
        request,
        now,
        &SignOptions::default(),
    )
}

/// Signs `request`; the returned headers (date, content hash, token,
/// `Authorization`) must be set on the request, replacing same-named ones.
pub fn sign_with_options(
    version: SignatureVersion,
    credentials: &Credentials,
    region: &str,
    request: &RequestToSign<'_>,
    now: SystemTime,
    options: &SignOptions,
) -> Signed {
    let original = Headers::new(request.headers);
    let mut added: Vec<(String, String)> = Vec::new();
    let token_header = match version {
        SignatureVersion::OssV1 | SignatureVersion::OssV4 => header::OSS_SECURITY_TOKEN,
        SignatureVersion::S3V4 => header::AMZ_SECURITY_TOKEN,
    };
    match version {
        SignatureVersion::OssV1 => {
            added.push(("Date".to_owned(), httpdate::fmt_http_date(now)));
        }
        SignatureVersion::OssV4 => {
            added.push((header::OSS_DATE.to_owned(), iso8601_basic(now)));
            if original.get(header::OSS_CONTENT_SHA256).is_none() {
                added.push((
                    header::OSS_CONTENT_SHA256.to_owned(),
                    UNSIGNED_PAYLOAD.to_owned(),
                ));
            }
        }
        SignatureVersion::S3V4 => {
            added.push((header::AMZ_DATE.to_owned(), iso8601_basic(now)));
            if original.get(header::AMZ_CONTENT_SHA256).is_none() {
                added.push((
                    header::AMZ_CONTENT_SHA256.to_owned(),
                    UNSIGNED_PAYLOAD.to_owned(),
                ));
            }
        }
    }
    if let Some(token) = &credentials.security_token {
        added.push((token_header.to_owned(), token.clone()));
    }
    // The headers the server will see: the request's, with ours replacing
    // same-named ones (and no stale Authorization).
    let mut effective: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case(header::AUTHORIZATION)
                && !added.iter().any(|(a, _)| a.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect();
    effective.extend(added.iter().cloned());
    let headers = Headers::new(&effective);

    let (authorization, string_to_sign) = match version {
        SignatureVersion::OssV1 => {
            let date = headers.get(header::DATE).unwrap_or_default();
            let sts = oss_v1_string_to_sign(request, &headers, &date);
            let signature = hmac_sha1_base64(credentials.access_key_secret.as_bytes(), &sts);
            (
                format!("{OSS_V1_PREFIX}{}:{signature}", credentials.access_key_id),
                sts,
            )
        }
        SignatureVersion::OssV4 => {
            let datetime = headers.get(header::OSS_DATE).unwrap_or_default();
            let additional = oss_v4_additional_headers(&options.additional_headers, &headers);
            let canonical = oss_v4_canonical_request(request, &headers, &additional);
            let scope = Scope::oss(&datetime, region);
            let sts = scope.string_to_sign(OSS_V4_ALGORITHM, &datetime, &canonical);
            let signature = scope.signature(&credentials.access_key_secret, &sts);
            let mut auth = format!(
                "{OSS_V4_ALGORITHM} Credential={}/{}",
                credentials.access_key_id,
                scope.path()
            );
            if !additional.is_empty() {
                auth.push_str(",AdditionalHeaders=");
                auth.push_str(&additional.join(";"));
            }
            auth.push_str(",Signature=");
            auth.push_str(&signature);
            (auth, sts)
        }
        SignatureVersion::S3V4 => {
            let datetime = headers.get(header::AMZ_DATE).unwrap_or_default();
            let signed_names = s3_default_signed_headers(&headers);
            let canonical = s3_canonical_request(request, &headers, &signed_names);
            let scope = Scope::s3(&datetime, region);
            let sts = scope.string_to_sign(S3_ALGORITHM, &datetime, &canonical);
            let signature = scope.signature(&credentials.access_key_secret, &sts);
            (
                format!(
                    "{S3_ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
                    credentials.access_key_id,
                    scope.path(),
                    signed_names.join(";"),
                ),
                sts,
            )
        }
    };
    added.push(("Authorization".to_owned(), authorization));
    Signed {
        headers: added,
        string_to_sign,
    }
}

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
    let headers = Headers::new(request.headers);
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Err(VerifyError::new(
            codes::ACCESS_DENIED,
            "Anonymous access is forbidden: the request has no Authorization header",
        ));
    };
    if let Some(rest) = authorization.strip_prefix(OSS_V4_ALGORITHM) {
        verify_oss_v4(request, &headers, rest, lookup_secret, now)
    } else if let Some(rest) = authorization.strip_prefix(S3_ALGORITHM) {
        verify_s3(request, &headers, rest, lookup_secret, now)
    } else if let Some(rest) = authorization.strip_prefix(OSS_V1_PREFIX) {
        verify_oss_v1(request, &headers, rest, lookup_secret, now)
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

fn verify_oss_v1(
    request: &RequestToSign<'_>,
    headers: &Headers,
    rest: &str,
    lookup_secret: &dyn Fn(&str) -> Option<Credentials>,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let (key_id, provided) = rest.trim().rsplit_once(':').ok_or_else(|| {
        VerifyError::new(
            codes::INVALID_ARGUMENT,
            "malformed OSS V1 Authorization: expected `OSS <AccessKeyId>:<Signature>`",
        )
    })?;
    let credentials = lookup_credentials(lookup_secret, key_id)?;
    // x-oss-date, when present, is what OSS checks the clock against.
    let date_for_clock = headers
        .get(header::OSS_DATE)
        .or_else(|| headers.get(header::DATE))
        .ok_or_else(|| missing_date("Date"))?;
    let request_time =
        httpdate::parse_http_date(&date_for_clock).map_err(|_| invalid_date(&date_for_clock))?;
    check_skew(request_time, now)?;
    check_token(&credentials, headers.get(header::OSS_SECURITY_TOKEN))?;
    let date_line = headers.get(header::DATE).unwrap_or_default();
    let sts = oss_v1_string_to_sign(request, headers, &date_line);
    let expected = hmac_sha1_base64(credentials.access_key_secret.as_bytes(), &sts);
    check_signature(&expected, provided, sts)
}

fn verify_oss_v4(
    request: &RequestToSign<'_>,
    headers: &Headers,
    rest: &str,
    lookup_secret: &dyn Fn(&str) -> Option<Credentials>,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let fields = parse_auth_fields(rest)?;
    let credential = fields
        .get("Credential")
        .ok_or_else(|| malformed("Credential"))?;
    let provided = fields
        .get("Signature")
        .ok_or_else(|| malformed("Signature"))?;
    let requested_additional: Vec<String> = fields
        .get("AdditionalHeaders")
        .map(|list| {
            list.split(';')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let parsed = parse_credential(credential, OSS_V4_SERVICE, OSS_V4_TERMINATOR)?;
    let credentials = lookup_credentials(lookup_secret, parsed.key_id)?;
    let datetime = headers
        .get(header::OSS_DATE)
        .ok_or_else(|| missing_date(header::OSS_DATE))?;
    let request_time = parse_iso8601_basic(&datetime)?;
    check_scope_date(&datetime, parsed.date)?;
    check_skew(request_time, now)?;
    check_token(&credentials, headers.get(header::OSS_SECURITY_TOKEN))?;
    let additional = oss_v4_additional_headers(&requested_additional, headers);
    let canonical = oss_v4_canonical_request(request, headers, &additional);
    let scope = Scope::oss(&datetime, parsed.region);
    let sts = scope.string_to_sign(OSS_V4_ALGORITHM, &datetime, &canonical);
    let expected = scope.signature(&credentials.access_key_secret, &sts);
    check_signature(&expected, provided, sts)
}

fn verify_s3(
    request: &RequestToSign<'_>,
    headers: &Headers,
    rest: &str,
    lookup_secret: &dyn Fn(&str) -> Option<Credentials>,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let fields = parse_auth_fields(rest)?;
    let credential = fields
        .get("Credential")
        .ok_or_else(|| malformed("Credential"))?;
    let provided = fields
        .get("Signature")
        .ok_or_else(|| malformed("Signature"))?;
    let signed_headers = fields
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
    let parsed = parse_credential(credential, S3_SERVICE, S3_TERMINATOR)?;
    let credentials = lookup_credentials(lookup_secret, parsed.key_id)?;
    let datetime = headers
        .get(header::AMZ_DATE)
        .ok_or_else(|| missing_date(header::AMZ_DATE))?;
    let request_time = parse_iso8601_basic(&datetime)?;
    check_scope_date(&datetime, parsed.date)?;
    check_skew(request_time, now)?;
    check_token(&credentials, headers.get(header::AMZ_SECURITY_TOKEN))?;
    let canonical = s3_canonical_request(request, headers, &signed_names);
    let scope = Scope::s3(&datetime, parsed.region);
    let sts = scope.string_to_sign(S3_ALGORITHM, &datetime, &canonical);
    let expected = scope.signature(&credentials.access_key_secret, &sts);
    check_signature(&expected, provided, sts)
}

// ---------------------------------------------------------------------------
// Canonical forms.

/// Request headers with lowercased names and trimmed values, in order.
struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    fn new(raw: &[(String, String)]) -> Self {
        Self {
            entries: raw
                .iter()
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
        }
    }

    /// All values of `name` (lowercase) joined with `,`, as HTTP folds them.
    fn get(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .entries
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if values.is_empty() {
            None
        } else {
            Some(values.join(","))
        }
    }

    /// `name -> folded value` for every header whose name passes `keep`.
    fn collect(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, _) in &self.entries {
            if keep(name) && !out.contains_key(name) {
                let value = self.get(name).unwrap_or_default();
                out.insert(name.clone(), value);
            }
        }
        out
    }
}

/// `VERB\nContent-MD5\nContent-Type\n<date_line>\n<x-oss-* headers><resource>`.
/// `date_line` is the `Date` header (or `Expires` for presigned URLs).
fn oss_v1_string_to_sign(
    request: &RequestToSign<'_>,
    headers: &Headers,
    date_line: &str,
) -> String {
    let mut sts = String::new();
    sts.push_str(request.method);
    sts.push('\n');
    sts.push_str(&headers.get(header::CONTENT_MD5).unwrap_or_default());
    sts.push('\n');
    sts.push_str(&headers.get(header::CONTENT_TYPE).unwrap_or_default());
    sts.push('\n');
    sts.push_str(date_line);
    sts.push('\n');
    for (name, value) in headers.collect(|n| n.starts_with("x-oss-")) {
        sts.push_str(&name);
        sts.push(':');
        sts.push_str(&value);
        sts.push('\n');
    }
    sts.push_str(&oss_v1_canonical_resource(
        request.bucket,
        request.key,
        request.query,
    ));
    sts
}

/// `/bucket/key` with the raw key, plus the signed sub-resources sorted by
/// name, `?k` for an empty value and `?k=v` otherwise (values decoded).
fn oss_v1_canonical_resource(bucket: &str, key: &str, query: &[(String, String)]) -> String {
    let mut resource = if bucket.is_empty() {
        "/".to_owned()
    } else {
        format!("/{bucket}/{key}")
    };
    let mut subresources: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| OSS_V1_SUBRESOURCES.contains(&k.as_str()))
        .collect();
    subresources.sort();
    for (i, (k, v)) in subresources.into_iter().enumerate() {
        resource.push(if i == 0 { '?' } else { '&' });
        resource.push_str(k);
        if !v.is_empty() {
            resource.push('=');
            resource.push_str(v);
        }
    }
    resource
}

/// Headers OSS V4 signs without being asked.
fn oss_v4_default_signed(name: &str) -> bool {
    name == header::CONTENT_TYPE || name == header::CONTENT_MD5 || name.starts_with("x-oss-")
}

/// The effective `AdditionalHeaders` list: lowercased, sorted, deduplicated,
/// without default-signed names or names the request doesn't carry.
fn oss_v4_additional_headers(requested: &[String], headers: &Headers) -> Vec<String> {
    let mut names: Vec<String> = requested
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty() && !oss_v4_default_signed(n))
        .filter(|n| n == header::HOST || headers.get(n).is_some())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn oss_v4_canonical_request(
    request: &RequestToSign<'_>,
    headers: &Headers,
    additional: &[String],
) -> String {
    let uri = if request.bucket.is_empty() {
        format!("/{}", request.key)
    } else {
        format!("/{}/{}", request.bucket, request.key)
    };
    let mut signed =
        headers.collect(|n| oss_v4_default_signed(n) || additional.iter().any(|a| a == n));
    if additional.iter().any(|a| a == header::HOST) && !signed.contains_key(header::HOST) {
        signed.insert(header::HOST.to_owned(), request.host.to_owned());
    }
    let mut canonical_headers = String::new();
    for (name, value) in &signed {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let payload = headers
        .get(header::OSS_CONTENT_SHA256)
        .unwrap_or_else(|| UNSIGNED_PAYLOAD.to_owned());
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        uri_encode(&uri, true),
        canonical_query(request.query, false),
        canonical_headers,
        additional.join(";"),
        payload
    )
}

/// Query pairs encoded, sorted by encoded name then value; an empty value is
/// written `k=` when `empty_with_equals` (SigV4) and bare `k` otherwise (OSS V4).
fn canonical_query(query: &[(String, String)], empty_with_equals: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| {
            if v.is_empty() && !empty_with_equals {
                k
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    parts.join("&")
}

/// What [`sign`] signs for SigV4: `host`, `content-md5`, `content-type`,
/// `range` and every `x-amz-*` header present, sorted.
fn s3_default_signed_headers(headers: &Headers) -> Vec<String> {
    let mut names: Vec<String> = headers
        .collect(|n| {
            n == header::CONTENT_MD5
                || n == header::CONTENT_TYPE
                || n == header::RANGE
                || n.starts_with("x-amz-")
        })
        .into_keys()
        .collect();
    names.push(header::HOST.to_owned());
    names.sort();
    names.dedup();
    names
}

fn s3_canonical_request(
    request: &RequestToSign<'_>,
    headers: &Headers,
    signed: &[String],
) -> String {
    let mut canonical_headers = String::new();
    for name in signed {
        let value = match headers.get(name) {
            Some(v) => v,
            None if name == header::HOST => request.host.to_owned(),
            None => String::new(),
        };
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        // SigV4 collapses runs of spaces inside values.
        canonical_headers.push_str(&value.split_whitespace().collect::<Vec<_>>().join(" "));
        canonical_headers.push('\n');
    }
    let payload = headers
        .get(header::AMZ_CONTENT_SHA256)
        .unwrap_or_else(|| UNSIGNED_PAYLOAD.to_owned());
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        path,
        canonical_query(request.query, true),
        canonical_headers,
        signed.join(";"),
        payload
    )
}

/// A V4 credential scope: `yyyymmdd/region/service/terminator`.
struct Scope<'a> {
    date: &'a str,
    region: &'a str,
    service: &'static str,
    terminator: &'static str,
    key_prefix: &'static str,
}

impl<'a> Scope<'a> {
    fn oss(datetime: &'a str, region: &'a str) -> Self {
        Self {
            date: date_stamp(datetime),
            region,
            service: OSS_V4_SERVICE,
            terminator: OSS_V4_TERMINATOR,
            key_prefix: OSS_V4_KEY_PREFIX,
        }
    }

    fn s3(datetime: &'a str, region: &'a str) -> Self {
        Self {
            date: date_stamp(datetime),
            region,
            service: S3_SERVICE,
            terminator: S3_TERMINATOR,
            key_prefix: S3_KEY_PREFIX,
        }
    }

    fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.date, self.region, self.service, self.terminator
        )
    }

    fn string_to_sign(&self, algorithm: &str, datetime: &str, canonical_request: &str) -> String {
        format!(
            "{algorithm}\n{datetime}\n{}\n{}",
            self.path(),
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        )
    }

    /// Hex HMAC-SHA256 of `sts` under the derived key
    /// prefix+secret -> date -> region -> service -> terminator.
    fn signature(&self, secret: &str, sts: &str) -> String {
        let mut key = hmac_sha256(format!("{}{secret}", self.key_prefix).as_bytes(), self.date);
        for part in [self.region, self.service, self.terminator] {
            key = hmac_sha256(&key, part);
        }
        hex::encode(hmac_sha256(&key, sts))
    }
}

fn date_stamp(datetime: &str) -> &str {
    datetime.get(..DATE_STAMP_LEN).unwrap_or(datetime)
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1_base64(key: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn iso8601_basic(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format(ISO8601_BASIC)
        .to_string()
}

fn parse_iso8601_basic(value: &str) -> Result<SystemTime, VerifyError> {
    chrono::NaiveDateTime::parse_from_str(value, ISO8601_BASIC)
        .map(|dt| SystemTime::from(dt.and_utc()))
        .map_err(|_| invalid_date(value))
}

// ---------------------------------------------------------------------------
// Verification helpers.

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

fn lookup_credentials(
    lookup: &dyn Fn(&str) -> Option<Credentials>,
    key_id: &str,
) -> Result<Credentials, VerifyError> {
    lookup(key_id).ok_or_else(|| {
        VerifyError::new(
            codes::INVALID_ACCESS_KEY_ID,
            format!("The Access Key Id you provided ({key_id}) does not exist in our records."),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The shared vectors file, copied into the crate (never read from ../shared).
    const VECTORS: &str = include_str!("../../testdata/signing.json");

    fn vectors() -> Value {
        serde_json::from_str(VECTORS).expect("signing.json parses")
    }

    /// Owned parts of a request, borrowed into a [`RequestToSign`].
    #[derive(Clone)]
    struct Req {
        method: String,
        host: String,
        bucket: String,
        key: String,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
    }

    impl Req {
        fn view(&self) -> RequestToSign<'_> {
            RequestToSign {
                method: &self.method,
                host: &self.host,
                bucket: &self.bucket,
                key: &self.key,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
            }
        }

        fn from_json(v: &Value) -> Self {
            let bucket = v["bucket"].as_str().unwrap_or_default().to_owned();
            let key = v["key"].as_str().unwrap_or_default().to_owned();
            let path = v["path"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| uri_encode(&format!("/{bucket}/{key}"), true));
            let headers = v["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let query = v["query"]
                .as_array()
                .map(|q| {
                    q.iter()
                        .map(|p| {
                            (
                                p[0].as_str().expect("query name").to_owned(),
                                p[1].as_str().expect("query value").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Req {
                method: v["method"].as_str().expect("method").to_owned(),
                host: v["host"].as_str().unwrap_or("localhost").to_owned(),
                bucket,
                key,
                path,
                query,
                headers,
            }
        }

        /// Sets the signed headers (replacing same-named ones), as a client does.
        fn apply(&mut self, signed: &Signed) {
            for (name, value) in &signed.headers {
                self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                self.headers.push((name.clone(), value.clone()));
            }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn unix(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn iso_to_time(s: &str) -> SystemTime {
        parse_iso8601_basic(s).expect("vector date")
    }

    fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}"))
    }

    /// Extracts the hex signature from a V4 Authorization header.
    fn signature_of(authorization: &str) -> &str {
        authorization
            .rsplit_once("Signature=")
            .expect("Signature field")
            .1
    }

    // ---- OSS V1 known answers ------------------------------------------

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

    #[test]
    fn oss_v1_vector_with_request_via_sign() {
        let v = &vectors()["oss_v1"][0];
        let req = Req::from_json(&v["request"]);
        let date = req.header("Date").expect("Date").to_owned();
        let now = httpdate::parse_http_date(&date).unwrap();
        let signed = sign(
            SignatureVersion::OssV1,
            &Credentials::new("ak", str_field(v, "secret")),
            "",
            &req.view(),
            now,
        );
        assert_eq!(signed.string_to_sign, str_field(v, "string_to_sign"));
        let auth = signed
            .headers
            .iter()
            .find(|(n, _)| n == "Authorization")
            .map(|(_, v)| v.as_str());
        assert_eq!(auth, Some(str_field(v, "authorization")));
        assert!(signed
            .headers
            .iter()
            .any(|(n, v)| n == "Date" && *v == date));
    }

    #[test]
    fn oss_v1_canonical_strings_rebuilt_from_parts() {
        let all = vectors();
        let v1 = &all["oss_v1"];
        let base = Req::from_json(&v1[0]["request"]);
        let date = base.header("Date").unwrap().to_owned();

        // Vector 2: same request with the `acl` sub-resource, plus unsigned
        // parameters that must not appear.
        let mut acl = base.clone();
        acl.query = vec![
            ("acl".into(), String::new()),
            ("max-keys".into(), "10".into()),
        ];
        let sts = oss_v1_string_to_sign(&acl.view(), &Headers::new(&acl.headers), &date);
        assert_eq!(sts, str_field(&v1[1], "string_to_sign"));

        // Vector 3: bucket-level GET with `resourceGroup`.
        let group = Req {
            method: "GET".into(),
            host: "examplebucket.oss-cn-hangzhou.aliyuncs.com".into(),
            bucket: "examplebucket".into(),
            key: String::new(),
            path: "/".into(),
            query: vec![("resourceGroup".into(), String::new())],
            headers: vec![("x-oss-date".into(), date.clone())],
        };
        let sts = oss_v1_string_to_sign(&group.view(), &Headers::new(&group.headers), &date);
        assert_eq!(sts, str_field(&v1[2], "string_to_sign"));

        // Vector 4: presigned URL, raw key with '+', Expires as the date line;
        // list parameters are not signed, token and versionId are.
        let presigned = Req {
            method: "GET".into(),
            host: "bucket.oss-cn-hangzhou.aliyuncs.com".into(),
            bucket: "bucket".into(),
            key: "key+123".into(),
            path: "/key%2B123".into(),
            query: vec![
                ("versionId".into(), "versionId".into()),
                ("prefix".into(), "p".into()),
                ("list-type".into(), "2".into()),
                ("security-token".into(), "token".into()),
                ("delimiter".into(), "/".into()),
                ("encoding-type".into(), "url".into()),
            ],
            headers: vec![],
        };
        let sts = oss_v1_string_to_sign(&presigned.view(), &Headers::new(&[]), "1699808204");
        assert_eq!(sts, str_field(&v1[3], "string_to_sign"));
    }

    #[test]
    fn oss_v1_api_reference_example_via_sign() {
        let v = &vectors()["oss_v1"][4];
        let req = Req {
            method: "PUT".into(),
            host: "oss-example.oss-cn-hangzhou.aliyuncs.com".into(),
            bucket: "oss-example".into(),
            key: "nelson".into(),
            path: "/nelson".into(),
            query: vec![],
            headers: vec![
                (
                    "Content-MD5".into(),
                    "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=".into(),
                ),
                ("Content-Type".into(), "text/html".into()),
                ("X-OSS-Meta-Author".into(), "foo@bar.com".into()),
                ("X-OSS-Magic".into(), "abracadabra".into()),
            ],
        };
        let now = httpdate::parse_http_date("Thu, 17 Nov 2005 18:49:58 GMT").unwrap();
        let creds = Credentials::new(str_field(v, "key_id"), str_field(v, "secret"));
        let signed = sign(SignatureVersion::OssV1, &creds, "", &req.view(), now);
        assert_eq!(signed.string_to_sign, str_field(v, "string_to_sign"));
        let expected = format!(
            "OSS {}:{}",
            str_field(v, "key_id"),
            str_field(v, "signature")
        );
        assert!(signed
            .headers
            .iter()
            .any(|(n, v)| n == "Authorization" && *v == expected));
    }

    #[test]
    fn oss_v1_continuation_token_is_signed_list_params_are_not() {
        let query = vec![
            ("list-type".to_owned(), "2".to_owned()),
            ("continuation-token".to_owned(), "abc".to_owned()),
            ("max-keys".to_owned(), "1000".to_owned()),
        ];
        assert_eq!(
            oss_v1_canonical_resource("b", "", &query),
            "/b/?continuation-token=abc"
        );
    }

    // ---- OSS V4 known answers ------------------------------------------

    fn oss_v4_vector() -> (Value, Req) {
        let v = vectors()["oss_v4"][0].clone();
        let req = Req::from_json(&v["request"]);
        (v, req)
    }

    #[test]
    fn oss_v4_canonical_request_and_hash() {
        let (v, mut req) = oss_v4_vector();
        req.headers
            .push(("x-oss-date".into(), str_field(&v, "x_oss_date").into()));
        let canonical = oss_v4_canonical_request(&req.view(), &Headers::new(&req.headers), &[]);
        assert_eq!(canonical, str_field(&v, "canonical_request"));
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            str_field(&v, "canonical_request_sha256")
        );
    }

    #[test]
    fn oss_v4_authorization_via_sign() {
        let (v, req) = oss_v4_vector();
        let now = unix(v["unix_time"].as_u64().unwrap());
        assert_eq!(now, iso_to_time(str_field(&v, "x_oss_date")));
        let creds = Credentials::new(str_field(&v, "key_id"), str_field(&v, "secret"));
        let signed = sign(
            SignatureVersion::OssV4,
            &creds,
            str_field(&v, "region"),
            &req.view(),
            now,
        );
        let header = |name: &str| {
            signed
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("Authorization").as_deref(),
            Some(str_field(&v, "authorization"))
        );
        assert_eq!(
            header("x-oss-date").as_deref(),
            Some(str_field(&v, "x_oss_date"))
        );
        // The request already carried x-oss-content-sha256: not added twice.
        assert_eq!(header("x-oss-content-sha256"), None);
        assert!(signed
            .string_to_sign
            .ends_with(str_field(&v, "canonical_request_sha256")));
    }

    #[test]
    fn oss_v4_with_security_token_variant() {
        let (v, req) = oss_v4_vector();
        let creds =
            Credentials::new(str_field(&v, "key_id"), str_field(&v, "secret")).with_token("token");
        let signed = sign(
            SignatureVersion::OssV4,
            &creds,
            str_field(&v, "region"),
            &req.view(),
            unix(1_702_784_856),
        );
        let auth = &signed.headers.last().unwrap().1;
        assert_eq!(
            signature_of(auth),
            "b94a3f999cf85bcdc00d332fbd3734ba03e48382c36fa4d5af5df817395bd9ea"
        );
        assert!(signed
            .headers
            .iter()
            .any(|(n, v)| n == "x-oss-security-token" && v == "token"));
    }

    #[test]
    fn oss_v4_with_additional_headers_variant() {
        let (v, req) = oss_v4_vector();
        let creds = Credentials::new(str_field(&v, "key_id"), str_field(&v, "secret"));
        let options = SignOptions {
            // Mixed case, a duplicate, a default-signed and an absent name:
            // all normalised away to `abc;zabc`.
            additional_headers: vec![
                "ZAbc".into(),
                "abc".into(),
                "abc".into(),
                "content-type".into(),
                "not-present".into(),
            ],
        };
        let signed = sign_with_options(
            SignatureVersion::OssV4,
            &creds,
            str_field(&v, "region"),
            &req.view(),
            unix(1_702_747_512),
            &options,
        );
        let auth = &signed.headers.last().unwrap().1;
        assert!(auth.contains(",AdditionalHeaders=abc;zabc,"), "{auth}");
        assert_eq!(
            signature_of(auth),
            "4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f"
        );
    }

    // ---- AWS SigV4 known answers ---------------------------------------

    #[test]
    fn s3_every_vector_via_sign() {
        let all = vectors();
        let list = all["s3_sigv4"].as_array().expect("s3 vectors");
        assert_eq!(list.len(), 2);
        for v in list {
            let req = Req::from_json(&v["request"]);
            let now = iso_to_time(str_field(v, "x_amz_date"));
            let creds = Credentials::new(str_field(v, "key_id"), str_field(v, "secret"));
            let signed = sign(
                SignatureVersion::S3V4,
                &creds,
                str_field(v, "region"),
                &req.view(),
                now,
            );
            let auth = &signed.headers.last().unwrap().1;
            let expected = format!(
                "AWS4-HMAC-SHA256 Credential={}/{}/{}/s3/aws4_request, SignedHeaders={}, Signature={}",
                str_field(v, "key_id"),
                &str_field(v, "x_amz_date")[..8],
                str_field(v, "region"),
                str_field(v, "signed_headers"),
                str_field(v, "signature"),
            );
            assert_eq!(auth, &expected);
        }
    }

    #[test]
    fn s3_empty_query_value_is_written_with_equals() {
        let q = vec![
            ("uploads".to_owned(), String::new()),
            ("a b".to_owned(), "/".to_owned()),
        ];
        assert_eq!(canonical_query(&q, true), "a%20b=%2F&uploads=");
        assert_eq!(canonical_query(&q, false), "a%20b=%2F&uploads");
    }

    #[test]
    fn uri_encode_rules() {
        assert_eq!(uri_encode("a b+c/d~e_f.g-h", true), "a%20b%2Bc/d~e_f.g-h");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("é", true), "%C3%A9");
    }

    // ---- Round trips ---------------------------------------------------

    const ALL_VERSIONS: [SignatureVersion; 3] = [
        SignatureVersion::OssV1,
        SignatureVersion::OssV4,
        SignatureVersion::S3V4,
    ];

    const TRICKY_KEYS: [&str; 5] = [
        "models/qwen/model-00001-of-00002.safetensors",
        "dir with spaces/file name.bin",
        "plus+sign/a+b=c&d.json",
        "unicode/模型/ファイル/ü.txt",
        "weird/%41~!*'();:@$,[]#?.bin",
    ];

    fn round_trip_request(key: &str) -> Req {
        Req {
            method: "GET".into(),
            host: "127.0.0.1:9000".into(),
            bucket: "bucket".into(),
            key: key.into(),
            path: uri_encode(&format!("/bucket/{key}"), true),
            query: vec![
                ("versionId".into(), "v 1+2".into()),
                ("x-param".into(), String::new()),
            ],
            headers: vec![
                ("Range".into(), "bytes=0-99".into()),
                ("Accept-Encoding".into(), "identity".into()),
                ("If-Match".into(), "\"etag\"".into()),
                ("X-Oss-Meta-Note".into(), "  spaced  value ".into()),
                ("x-amz-meta-note".into(), "a  b".into()),
            ],
        }
    }

    fn creds() -> Credentials {
        Credentials::new("AKID/with+odd chars", "secret+/=  ünïcode")
    }

    fn lookup_for(creds: Credentials) -> impl Fn(&str) -> Option<Credentials> {
        move |id: &str| (id == creds.access_key_id).then(|| creds.clone())
    }

    fn signed_request(
        version: SignatureVersion,
        creds: &Credentials,
        key: &str,
        now: SystemTime,
    ) -> Req {
        let mut req = round_trip_request(key);
        let signed = sign(version, creds, "cn-beijing", &req.view(), now);
        req.apply(&signed);
        req
    }

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

    #[test]
    fn constant_time_eq_behaviour() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

//! Canonical forms: how each scheme turns a request into the text it signs.
//!
//! Design decision: these functions serve both sides. The signer and the
//! verifier build the canonical request from the same [`RequestToSign`] view
//! through the same code, so the two can only disagree when the request
//! itself differs.
//!
//! Scheme differences that matter (see field notes §4):
//! - OSS V1 signs the *raw* key and only a fixed list of sub-resources
//!   ([`OSS_V1_SUBRESOURCES`]); `list-type`, `prefix`, `max-keys`... are not.
//! - OSS V4 percent-encodes `/bucket/key` (keeping `/`), writes an empty query
//!   value as the bare `k`, and signs `content-type`, `content-md5` and every
//!   `x-oss-*` header; more only when listed as `AdditionalHeaders`.
//! - AWS SigV4 uses the wire path as the canonical URI, writes `k=` for an
//!   empty value and always signs `host`.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::{header, RequestToSign, UNSIGNED_PAYLOAD};

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

/// Request headers with lowercased names and trimmed values, in order.
pub(super) struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    pub(super) fn new(raw: &[(String, String)]) -> Self {
        Self {
            entries: raw
                .iter()
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
        }
    }

    /// All values of `name` (lowercase) joined with `,`, as HTTP folds them.
    pub(super) fn get(&self, name: &str) -> Option<String> {
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
pub(super) fn oss_v1_string_to_sign(
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
pub(super) fn oss_v4_additional_headers(requested: &[String], headers: &Headers) -> Vec<String> {
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

pub(super) fn oss_v4_canonical_request(
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
pub(super) fn s3_default_signed_headers(headers: &Headers) -> Vec<String> {
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

pub(super) fn s3_canonical_request(
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

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::sign::test_support::{oss_v4_vector, str_field, vectors, Req};

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
}

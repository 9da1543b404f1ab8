//! Fixtures the signing tests share: the vendors' vectors
//! (`core/testdata/signing.json`, a copy of the shared file) and an owned
//! request that signs and verifies.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::verifier::parse_iso8601_basic;
use super::{sign, uri_encode, Credentials, RequestToSign, SignatureVersion, Signed};

/// The shared vectors file, copied into the crate (never read from ../shared).
const VECTORS: &str = include_str!("../../testdata/signing.json");

pub(super) fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("signing.json parses")
}

/// Owned parts of a request, borrowed into a [`RequestToSign`].
#[derive(Clone)]
pub(super) struct Req {
    pub(super) method: String,
    pub(super) host: String,
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
}

impl Req {
    pub(super) fn view(&self) -> RequestToSign<'_> {
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

    pub(super) fn from_json(v: &Value) -> Self {
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
    pub(super) fn apply(&mut self, signed: &Signed) {
        for (name, value) in &signed.headers {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            self.headers.push((name.clone(), value.clone()));
        }
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn iso_to_time(s: &str) -> SystemTime {
    parse_iso8601_basic(s).expect("vector date")
}

pub(super) fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("missing {field}"))
}

/// Extracts the hex signature from a V4 Authorization header.
pub(super) fn signature_of(authorization: &str) -> &str {
    authorization
        .rsplit_once("Signature=")
        .expect("Signature field")
        .1
}

pub(super) fn oss_v4_vector() -> (Value, Req) {
    let v = vectors()["oss_v4"][0].clone();
    let req = Req::from_json(&v["request"]);
    (v, req)
}

pub(super) const ALL_VERSIONS: [SignatureVersion; 3] = [
    SignatureVersion::OssV1,
    SignatureVersion::OssV4,
    SignatureVersion::S3V4,
];

pub(super) const TRICKY_KEYS: [&str; 5] = [
    "models/qwen/model-00001-of-00002.safetensors",
    "dir with spaces/file name.bin",
    "plus+sign/a+b=c&d.json",
    "unicode/模型/ファイル/ü.txt",
    "weird/%41~!*'();:@$,[]#?.bin",
];

pub(super) fn round_trip_request(key: &str) -> Req {
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

pub(super) fn creds() -> Credentials {
    Credentials::new("AKID/with+odd chars", "secret+/=  ünïcode")
}

pub(super) fn lookup_for(creds: Credentials) -> impl Fn(&str) -> Option<Credentials> {
    move |id: &str| (id == creds.access_key_id).then(|| creds.clone())
}

pub(super) fn signed_request(
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

//! Fuzz entry points for the parsers that read untrusted bytes: the store's
//! listing and error XML, `Content-Range`, the signature verifier, the
//! embedded store's range and key-to-path parsing, store URLs and the vendor
//! config file.
//!
//! Design decision: each entry point takes raw bytes, never panics on any
//! input, and asserts the property that makes the parser safe to expose (a
//! range stays inside the object, a key stays inside the bucket, what we sign
//! we verify). The `fuzz/` crate (cargo fuzz, nightly) calls these functions;
//! the tests below replay the committed corpora on stable, so every finding
//! that became a corpus file stays a regression test.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::sign::{self, Credentials, RequestToSign, SignatureVersion};
use crate::store_server::handler::{resolve_range, RangeOutcome};

/// Splits fuzz input into fields: each field is a length byte followed by up
/// to that many bytes (fewer at the end of the input).
pub struct FieldReader<'a> {
    data: &'a [u8],
}

impl<'a> FieldReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next field's bytes (empty once the input is used up).
    pub fn bytes(&mut self) -> &'a [u8] {
        let Some((&len, rest)) = self.data.split_first() else {
            return &[];
        };
        let n = usize::from(len).min(rest.len());
        let (field, rest) = rest.split_at(n);
        self.data = rest;
        field
    }

    /// The next field as (lossily decoded) UTF-8.
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// The next byte, 0 at the end.
    pub fn byte(&mut self) -> u8 {
        self.bytes().first().copied().unwrap_or(0)
    }

    /// Whatever input is left.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// ListObjectsV2 bodies, error bodies and `Content-Range` values: no panic,
/// and a parsed range is non-empty and inside the object.
pub fn store_responses(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::list_xml::parse_list(&text);
    let _ = crate::http_client::parse_error_xml(&text);
    if let Some((start, end, total)) = crate::http_client::parse_content_range(&text) {
        assert!(
            start < end && end <= total,
            "{text:?} -> {start}..{end} of {total}"
        );
    }
}

/// The embedded store's `Range` resolution: a partial answer is a non-empty
/// range inside the object.
pub fn store_range(data: &[u8]) {
    let mut f = FieldReader::new(data);
    let size_bytes = f.bytes();
    let mut size = [0u8; 8];
    size[..size_bytes.len().min(8)].copy_from_slice(&size_bytes[..size_bytes.len().min(8)]);
    let size = u64::from_le_bytes(size);
    let standard = f.byte() & 1 == 1;
    let spec = String::from_utf8_lossy(f.rest());
    if let RangeOutcome::Partial(a, b) = resolve_range(&spec, size, standard) {
        assert!(a <= b && b < size, "{spec:?} on {size} bytes -> {a}-{b}");
    }
}

/// The embedded store's key-to-path mapping never leaves the bucket
/// directory: every component it adds is a plain name.
pub fn store_key(data: &[u8]) {
    let key = String::from_utf8_lossy(data);
    let bucket = Path::new("/srv/store/bucket");
    if let Some(path) = crate::store_server::files::object_path(bucket, &key) {
        let rest = path.strip_prefix(bucket).expect("inside the bucket");
        assert!(
            rest.components().count() > 0,
            "{key:?} maps to the bucket itself"
        );
        for c in rest.components() {
            assert!(
                matches!(c, std::path::Component::Normal(_)),
                "{key:?} -> {path:?} has component {c:?}"
            );
        }
    }
}

/// Signature verification of arbitrary requests (the embedded store's
/// authentication boundary): no panic; and every request we sign, with any
/// key, query and headers, verifies under all three schemes.
pub fn signatures(data: &[u8]) {
    let mut f = FieldReader::new(data);
    let version = match f.byte() % 3 {
        0 => SignatureVersion::OssV1,
        1 => SignatureVersion::OssV4,
        _ => SignatureVersion::S3V4,
    };
    let method = ["GET", "HEAD", "PUT", "POST"][usize::from(f.byte() % 4)];
    let bucket = "bucket";
    let key = f.text();
    let query: Vec<(String, String)> = (0..usize::from(f.byte() % 4))
        .map(|_| (f.text(), f.text()))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let mut headers: Vec<(String, String)> = (0..usize::from(f.byte() % 4))
        .map(|_| (f.text(), f.text()))
        .collect();
    let authorization = f.text();
    let path = format!("/{bucket}/{}", sign::uri_encode(&key, true));
    let host = "127.0.0.1:9000";
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let creds = Credentials::new("AKID", "secret");
    let lookup = |id: &str| (id == "AKID").then(|| creds.clone());

    // Arbitrary Authorization header: must not panic.
    let mut forged = headers.clone();
    forged.push(("Authorization".into(), authorization));
    let request = RequestToSign {
        method,
        host,
        bucket,
        key: &key,
        path: &path,
        query: &query,
        headers: &forged,
    };
    let _ = sign::verify(&request, &lookup, now);

    // Round trip, with header names a client could send.
    headers.retain(|(name, value)| {
        !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !name.eq_ignore_ascii_case("authorization")
            && !name.eq_ignore_ascii_case("host")
            && !name.to_ascii_lowercase().starts_with("x-oss-")
            && !name.to_ascii_lowercase().starts_with("x-amz-")
            && !name.eq_ignore_ascii_case("date")
            && value.bytes().all(|b| (0x20..0x7f).contains(&b))
    });
    let request = RequestToSign {
        headers: &headers,
        ..request
    };
    let signed = sign::sign(version, &creds, "cn-beijing", &request, now);
    let mut sent = headers.clone();
    sent.retain(|(n, _)| {
        !signed
            .headers
            .iter()
            .any(|(s, _)| s.eq_ignore_ascii_case(n))
    });
    sent.extend(signed.headers.iter().cloned());
    let request = RequestToSign {
        headers: &sent,
        ..request
    };
    if let Err(e) = sign::verify(&request, &lookup, now) {
        panic!("{version} request for {key:?} {query:?} {headers:?} does not verify: {e}");
    }
}

/// `oss://`/`s3://` paths and endpoints, then the vendor config file.
pub fn config_and_urls(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::store_url::StoreUrl::parse(&text);
    let _ = crate::store_url::parse_endpoint(&text);
    let _ =
        crate::config::ConnectorConfig::parse(&text, Path::new("/etc/oss-connector/config.json"));
}

/// Replays every file of `<manifest_dir>/../fuzz/corpus/<target>` (committed
/// seeds and past findings) through `run`; panics if the corpus is empty.
/// Each crate's tests call it with their own `CARGO_MANIFEST_DIR`.
pub fn replay_corpus(manifest_dir: &str, target: &str, run: fn(&[u8])) {
    let dir = Path::new(manifest_dir).join("../fuzz/corpus").join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        run(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n > 0, "corpus {} is empty", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_corpora_replay_cleanly() {
        let here = env!("CARGO_MANIFEST_DIR");
        replay_corpus(here, "store_responses", store_responses);
        replay_corpus(here, "store_range", store_range);
        replay_corpus(here, "store_key", store_key);
        replay_corpus(here, "signatures", signatures);
        replay_corpus(here, "config_and_urls", config_and_urls);
    }

    #[test]
    fn properties_hold_on_hand_picked_inputs() {
        store_responses(b"bytes 0-9/10");
        store_range(b"\x08\x0a\0\0\0\0\0\0\0\x01\x01bytes=5-");
        store_key(b"a/b/c.safetensors");
        store_key(b"a/../b");
        let mut sig = vec![1u8, 0, 1, 4];
        sig.extend_from_slice(b"\x0bmodel/x y+z");
        signatures(&sig);
    }
}

//! An in-memory [`ObjectClient`] for tests.
//!
//! Design: the mock follows the store's semantics rather than being permissive,
//! so a consumer that passes against it behaves on a real store too: keys are
//! listed in byte order with `max_keys`-sized pages and opaque continuation
//! tokens, ranged GETs have 206 semantics (an end past the object is clamped,
//! a start at or past it is `InvalidRange`), `If-Match` against a replaced
//! object is [`ClientError::ObjectChanged`], and a missing key is the
//! `NoSuchKey` service error. Object data is shared [`Bytes`], so replacing an
//! object mid-download never mutates bytes a reader is copying.
//!
//! The body is delivered to the sink in [`DEFAULT_CHUNK_SIZE`] pieces, like a
//! socket would, so sinks and wrapping clients see more than one write.

use std::collections::BTreeMap;
use std::ops::{Bound, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ClientError, GetRangeMeta, ListPage, ObjectClient, ObjectMeta, RangeSink, Result, ServiceError,
};

/// Body bytes per `write_at` call, like one socket read.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;
/// ListObjectsV2's page-size ceiling.
pub const MAX_KEYS_LIMIT: u32 = 1000;
/// Prefix of the mock's continuation tokens (the rest is the last key listed).
const TOKEN_PREFIX: &str = "mock-after:";

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockObject {
    pub data: Bytes,
    pub etag: String,
    pub last_modified: SystemTime,
    /// Sent as the whole-object CRC-64 header (HEAD and GET) when `Some`.
    pub crc64: Option<u64>,
}

/// Request and byte counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockStats {
    pub list_requests: u64,
    pub head_requests: u64,
    pub get_requests: u64,
    /// Body bytes written into sinks by GETs.
    pub bytes_served: u64,
}

/// In-memory bucket. See the module docs for the semantics it enforces.
pub struct MockObjectClient {
    bucket: String,
    objects: RwLock<BTreeMap<String, MockObject>>,
    send_crc64: bool,
    send_sha256: bool,
    chunk_size: usize,
    generation: AtomicU64,
    list_requests: AtomicU64,
    head_requests: AtomicU64,
    get_requests: AtomicU64,
    bytes_served: AtomicU64,
    request_ids: AtomicU64,
    get_log: Mutex<Vec<(String, Range<u64>)>>,
}

impl MockObjectClient {
    /// An empty bucket that sends CRC-64 headers.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            objects: RwLock::new(BTreeMap::new()),
            send_crc64: true,
            send_sha256: false,
            chunk_size: DEFAULT_CHUNK_SIZE,
            generation: AtomicU64::new(0),
            list_requests: AtomicU64::new(0),
            head_requests: AtomicU64::new(0),
            get_requests: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
            get_log: Mutex::new(Vec::new()),
        }
    }

    /// Whether objects added from now on carry a CRC-64 header (like S3
    /// without checksums when `false`).
    pub fn with_crc64_headers(mut self, send: bool) -> Self {
        self.send_crc64 = send;
        self
    }

    /// Whether HEAD declares each object's SHA-256 (as S3 does for objects
    /// uploaded with `x-amz-checksum-sha256`, asked with checksum mode).
    pub fn with_sha256_headers(mut self, send: bool) -> Self {
        self.send_sha256 = send;
        self
    }

    /// Body bytes per sink write (at least 1).
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size.max(1);
        self
    }

    /// Adds or replaces `key`; returns its new ETag. Every put gets a fresh
    /// ETag, even with identical content, so a replacement is always visible.
    pub fn put_object(&self, key: impl Into<String>, data: impl Into<Bytes>) -> String {
        let data = data.into();
        let crc = crate::crc64::crc64(&data);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let etag = format!("{crc:016X}-{generation}");
        self.put_object_with_etag(key, data, etag.clone());
        etag
    }

    /// Adds or replaces `key` with an explicit ETag.
    pub fn put_object_with_etag(
        &self,
        key: impl Into<String>,
        data: impl Into<Bytes>,
        etag: impl Into<String>,
    ) {
        let data = data.into();
        let crc64 = self.send_crc64.then(|| crate::crc64::crc64(&data));
        let obj = MockObject {
            data,
            etag: etag.into(),
            last_modified: SystemTime::now(),
            crc64,
        };
        self.objects.write().unwrap().insert(key.into(), obj);
    }

    /// Replaces the stored object record as given (e.g. a deliberately wrong
    /// `crc64` to simulate a store whose checksum disagrees with its bytes).
    pub fn put_raw(&self, key: impl Into<String>, object: MockObject) {
        self.objects.write().unwrap().insert(key.into(), object);
    }

    /// Deletes `key`; returns whether it existed.
    pub fn remove_object(&self, key: &str) -> bool {
        self.objects.write().unwrap().remove(key).is_some()
    }

    /// A copy of the stored record.
    pub fn object(&self, key: &str) -> Option<MockObject> {
        self.objects.read().unwrap().get(key).cloned()
    }

    pub fn stats(&self) -> MockStats {
        MockStats {
            list_requests: self.list_requests.load(Ordering::Relaxed),
            head_requests: self.head_requests.load(Ordering::Relaxed),
            get_requests: self.get_requests.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
        }
    }

    /// Total requests of all kinds.
    pub fn request_count(&self) -> u64 {
        let s = self.stats();
        s.list_requests + s.head_requests + s.get_requests
    }

    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.load(Ordering::Relaxed)
    }

    /// Every GET's key and requested range, in arrival order.
    pub fn get_log(&self) -> Vec<(String, Range<u64>)> {
        self.get_log.lock().unwrap().clone()
    }

    pub fn reset_stats(&self) {
        self.list_requests.store(0, Ordering::Relaxed);
        self.head_requests.store(0, Ordering::Relaxed);
        self.get_requests.store(0, Ordering::Relaxed);
        self.bytes_served.store(0, Ordering::Relaxed);
        self.get_log.lock().unwrap().clear();
    }

    fn error(&self, status: u16, code: &str, message: String) -> ServiceError {
        let id = self.request_ids.fetch_add(1, Ordering::Relaxed);
        ServiceError {
            status,
            code: code.to_string(),
            message,
            request_id: format!("mock-{id}"),
            string_to_sign: None,
        }
    }

    /// `head`: what a HEAD declares (CRC-64, SHA-256 if enabled); else what
    /// a listing does.
    fn meta(&self, key: &str, obj: &MockObject, head: bool) -> ObjectMeta {
        let mut checksums = crate::checksums::StoreChecksums::default();
        if head && self.send_sha256 {
            checksums.digests.push(crate::checksums::StoreDigest {
                kind: crate::checksums::DigestKind::Sha256,
                value: crate::checksums::digest_bytes(
                    crate::checksums::DigestKind::Sha256,
                    &obj.data,
                ),
            });
        }
        ObjectMeta {
            key: key.to_string(),
            size: obj.data.len() as u64,
            etag: obj.etag.clone(),
            last_modified: Some(obj.last_modified),
            crc64: if head { obj.crc64 } else { None },
            checksums,
        }
    }
}

#[async_trait]
impl ObjectClient for MockObjectClient {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        self.list_requests.fetch_add(1, Ordering::Relaxed);
        let start = match continuation_token {
            None | Some("") => Bound::Included(prefix.to_string()),
            Some(t) => match t.strip_prefix(TOKEN_PREFIX) {
                Some(after) => Bound::Excluded(after.to_string()),
                None => {
                    return Err(self
                        .error(
                            400,
                            "InvalidArgument",
                            format!("bad continuation token {t:?}"),
                        )
                        .into())
                }
            },
        };
        let limit = max_keys.min(MAX_KEYS_LIMIT) as usize;
        let objects = self.objects.read().unwrap();
        let mut matching = objects
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let page: Vec<ObjectMeta> = matching
            .by_ref()
            .take(limit)
            .map(|(k, o)| self.meta(k, o, false))
            .collect();
        let more = matching.next().is_some();
        let next_continuation_token = match (more, page.last()) {
            (true, Some(last)) => Some(format!("{TOKEN_PREFIX}{}", last.key)),
            _ => None,
        };
        Ok(ListPage {
            objects: page,
            next_continuation_token,
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.head_requests.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.read().unwrap();
        match objects.get(key) {
            Some(o) => Ok(self.meta(key, o, true)),
            None => Err(self
                .error(404, "NoSuchKey", "The specified key does not exist.".into())
                .into()),
        }
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        self.get_requests.fetch_add(1, Ordering::Relaxed);
        self.get_log
            .lock()
            .unwrap()
            .push((key.to_string(), range.clone()));
        if range.start >= range.end {
            return Err(ClientError::InvalidRequest(format!("empty range {range:?}")).into());
        }
        let obj = match self.objects.read().unwrap().get(key) {
            Some(o) => o.clone(),
            None => {
                return Err(self
                    .error(404, "NoSuchKey", "The specified key does not exist.".into())
                    .into())
            }
        };
        if let Some(expected) = if_match {
            if expected != obj.etag {
                return Err(ClientError::ObjectChanged {
                    key: key.to_string(),
                    expected: expected.to_string(),
                    found: obj.etag.clone(),
                }
                .into());
            }
        }
        let size = obj.data.len() as u64;
        if range.start >= size {
            return Err(self
                .error(
                    416,
                    "InvalidRange",
                    format!("range {range:?} is not satisfiable for size {size}"),
                )
                .into());
        }
        let end = range.end.min(size);
        let body = &obj.data[range.start as usize..end as usize];
        let mut hasher = crate::crc64::Crc64Hasher::new();
        let mut offset = range.start;
        for chunk in body.chunks(self.chunk_size) {
            sink.write_at(offset, chunk)
                .map_err(|e| ClientError::Sink(e.to_string()))?;
            hasher.update(chunk);
            offset += chunk.len() as u64;
            self.bytes_served
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Ok(GetRangeMeta {
            object_size: size,
            etag: obj.etag.clone(),
            object_crc64: obj.crc64,
            range_crc64: hasher.finish(),
        })
    }
}

/// A growable in-memory sink for tests: bytes land at their offsets.
#[derive(Default)]
pub struct VecSink {
    data: Mutex<Vec<u8>>,
}

impl VecSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pre-sized (zero-filled) to `len` bytes.
    pub fn with_len(len: usize) -> Self {
        Self {
            data: Mutex::new(vec![0; len]),
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
}

impl RangeSink for VecSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut v = self.data.lock().unwrap();
        let start = offset as usize;
        let end = start + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64), different per
/// `seed`: test and benchmark data that no compression or dedup can shortcut.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_client::{list_all, ObjectClientError};

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn head_and_get_ranges() {
        let m = MockObjectClient::new("b").with_chunk_size(7);
        let d = data(100);
        let etag = m.put_object("k", d.clone());
        let meta = m.head("k").await.unwrap();
        assert_eq!(meta.size, 100);
        assert_eq!(meta.etag, etag);
        assert_eq!(meta.crc64, Some(crate::crc64::crc64(&d)));

        let sink = VecSink::with_len(100);
        let g = m.get_range("k", 10..50, Some(&etag), &sink).await.unwrap();
        assert_eq!(g.object_size, 100);
        assert_eq!(g.range_crc64, crate::crc64::crc64(&d[10..50]));
        assert_eq!(g.object_crc64, meta.crc64);
        assert_eq!(&sink.contents()[10..50], &d[10..50]);
        assert!(sink.contents()[..10].iter().all(|&b| b == 0));

        // End past the object is clamped (206 with the available bytes).
        let sink = VecSink::new();
        let g = m.get_range("k", 90..500, None, &sink).await.unwrap();
        assert_eq!(g.range_crc64, crate::crc64::crc64(&d[90..]));
        assert_eq!(&sink.contents()[90..], &d[90..]);

        let s = m.stats();
        assert_eq!(
            (s.head_requests, s.get_requests, s.bytes_served),
            (1, 2, 50)
        );
        assert_eq!(
            m.get_log(),
            vec![("k".into(), 10..50), ("k".into(), 90..500)]
        );
    }

    #[tokio::test]
    async fn errors_have_store_semantics() {
        let m = MockObjectClient::new("b");
        let etag = m.put_object("k", data(10));
        let sink = VecSink::new();
        let e = m.head("missing").await.unwrap_err();
        assert_eq!(e.service_code(), Some("NoSuchKey"));
        assert!(!e.is_retryable());
        let e = m.get_range("missing", 0..1, None, &sink).await.unwrap_err();
        assert_eq!(e.service_code(), Some("NoSuchKey"));
        let e = m.get_range("k", 10..11, None, &sink).await.unwrap_err();
        assert_eq!(e.service_code(), Some("InvalidRange"));
        let e = m.get_range("k", 3..3, None, &sink).await.unwrap_err();
        assert!(matches!(
            e,
            ObjectClientError::Client(ClientError::InvalidRequest(_))
        ));

        let new_etag = m.put_object("k", data(10));
        assert_ne!(etag, new_etag);
        let e = m
            .get_range("k", 0..5, Some(&etag), &sink)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ObjectClientError::Client(ClientError::ObjectChanged {
                key: "k".into(),
                expected: etag,
                found: new_etag,
            })
        );
        assert!(sink.contents().is_empty(), "no bytes on a failed If-Match");
    }

    #[tokio::test]
    async fn listing_paginates_sorted_with_prefix() {
        let m = MockObjectClient::new("b").with_crc64_headers(false);
        for i in (0..25).rev() {
            m.put_object(format!("p/{i:03}"), vec![i as u8; i]);
        }
        m.put_object("q/other", vec![1]);
        m.put_object("o", vec![1]);

        let first = m.list_page("p/", None, 10).await.unwrap();
        assert_eq!(first.objects.len(), 10);
        assert_eq!(first.objects[0].key, "p/000");
        assert_eq!(first.objects[0].crc64, None, "listings carry no CRC");
        let token = first.next_continuation_token.clone().unwrap();
        let second = m.list_page("p/", Some(&token), 10).await.unwrap();
        assert_eq!(second.objects[0].key, "p/010");
        let third = m
            .list_page("p/", second.next_continuation_token.as_deref(), 10)
            .await
            .unwrap();
        assert_eq!(third.objects.len(), 5);
        assert_eq!(third.next_continuation_token, None);

        // Exactly a full last page: no token.
        let exact = m.list_page("p/", None, 25).await.unwrap();
        assert_eq!(exact.objects.len(), 25);
        assert_eq!(exact.next_continuation_token, None);

        let all = list_all(&m, "").await.unwrap();
        let keys: Vec<_> = all.iter().map(|o| o.key.clone()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 27);
        assert_eq!(all.iter().find(|o| o.key == "p/007").unwrap().size, 7);

        let e = m.list_page("p/", Some("garbage"), 10).await.unwrap_err();
        assert_eq!(e.service_code(), Some("InvalidArgument"));
        assert!(m.remove_object("o"));
        assert_eq!(list_all(&m, "").await.unwrap().len(), 26);
        assert_eq!(m.stats().list_requests, 7);
    }

    #[tokio::test]
    async fn max_keys_is_capped_at_1000() {
        let m = MockObjectClient::new("b");
        for i in 0..1001 {
            m.put_object(format!("{i:05}"), Vec::new());
        }
        let p = m.list_page("", None, 5000).await.unwrap();
        assert_eq!(p.objects.len(), 1000);
        assert!(p.next_continuation_token.is_some());
        assert_eq!(list_all(&m, "").await.unwrap().len(), 1001);
    }
}

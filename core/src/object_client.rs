//! The object-client seam.
//!
//! Design (after Mountpoint for S3's `ObjectClient`): every consumer of the
//! store (the fetch engine, `ossc ls/cp`, the node agent) talks to
//! `dyn ObjectClient`, never to HTTP directly. Tests substitute `mock`'s
//! `MockObjectClient` (in memory), `throughput`'s `ThroughputLimitedClient`
//! (a bandwidth cap) or `failure`'s `FailureInjectingClient` (scripted
//! faults) without a server. Those three modules exist only in test builds
//! and with the `test-doubles` feature, so the agent never carries them.
//!
//! Errors are two-level: a [`ServiceError`] is the store's own answer (an XML
//! `<Error>` with code, message and request id, classified into a
//! [`ServiceErrorKind`]); a [`ClientError`] is everything on our side of the
//! wire (transport, truncation, a changed object, a CRC mismatch). Callers
//! decide retry and user messages from that split and from the kind.
//!
//! Reads are written straight into caller memory through [`RangeSink`], at
//! absolute object offsets, so a ranged GET costs one copy (socket buffer to
//! destination) and no intermediate buffer.

mod error;
#[cfg(any(test, feature = "test-doubles"))]
pub mod failure;
#[cfg(any(test, feature = "test-doubles"))]
pub mod mock;
#[cfg(any(test, feature = "test-doubles"))]
pub mod throughput;

pub use error::{ClientError, ObjectClientError, ServiceError, ServiceErrorKind};

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;

/// Metadata of one object, as returned by HEAD or a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key inside the bucket (decoded, never URL-encoded).
    pub key: String,
    pub size: u64,
    /// ETag with its quotes stripped. Pinned across all ranges of one download.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    /// CRC-64/XZ of the whole object (`x-oss-hash-crc64ecma`), when the store
    /// sends it. Listings never carry it; HEAD and GET do on OSS.
    pub crc64: Option<u64>,
    /// Other whole-object digests the store declared (HEAD only; empty from
    /// listings). See [`crate::checksums`].
    pub checksums: crate::checksums::StoreChecksums,
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Present when the listing is truncated; pass it back to get the next page.
    pub next_continuation_token: Option<String>,
}

/// What a successful ranged GET learned about the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRangeMeta {
    /// Total object size, from `Content-Range`.
    pub object_size: u64,
    pub etag: String,
    /// Whole-object CRC-64 header, if the store sent one.
    pub object_crc64: Option<u64>,
    /// CRC-64/XZ of exactly the bytes written for this range, computed while
    /// streaming (so the caller can combine part CRCs without a second pass).
    pub range_crc64: u64,
}

/// Destination of a ranged GET. `offset` is the absolute offset in the object.
///
/// Implementations must tolerate concurrent calls for disjoint ranges and
/// rewrites of the same range (a retried part writes its bytes again).
pub trait RangeSink: Send + Sync {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()>;
}

/// A sink that discards everything: the "raw ceiling" in benchmarks.
pub struct DiscardSink;

impl RangeSink for DiscardSink {
    fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

impl RangeSink for std::fs::File {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }
}

pub type Result<T, E = ObjectClientError> = std::result::Result<T, E>;

/// A client for one bucket of an S3-compatible store.
///
/// Keys are always plain (decoded) strings; implementations encode as needed.
#[async_trait]
pub trait ObjectClient: Send + Sync {
    /// The bucket this client is bound to.
    fn bucket(&self) -> &str;

    /// One ListObjectsV2 page (`max_keys` ≤ 1000) of keys under `prefix`.
    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage>;

    /// HEAD one object.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// GET `range` (half-open, non-empty) of `key` into `sink` at absolute
    /// offsets. When `if_match` is given, a different ETag is
    /// [`ClientError::ObjectChanged`], never spliced data. The implementation
    /// checks status 206, `Content-Range` and the byte count.
    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta>;
}

/// Lists every object under `prefix`, following continuation tokens.
///
/// A store that hands out a continuation token it already gave for this
/// listing would make the walk loop forever; that is an error naming the
/// token, as is a walk past [`MAX_LIST_PAGES`] pages.
pub async fn list_all(client: &dyn ObjectClient, prefix: &str) -> Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..MAX_LIST_PAGES {
        let page = client.list_page(prefix, token.as_deref(), 1000).await?;
        out.extend(page.objects);
        match page.next_continuation_token {
            Some(t) if !t.is_empty() => {
                if !seen.insert(t.clone()) {
                    return Err(ClientError::BadResponse(format!(
                        "listing of {prefix:?} repeated continuation token {t:?}: the store is looping"
                    ))
                    .into());
                }
                token = Some(t);
            }
            _ => return Ok(out),
        }
    }
    Err(ClientError::BadResponse(format!(
        "listing of {prefix:?} did not end after {MAX_LIST_PAGES} pages"
    ))
    .into())
}

/// Pages one listing may take: 10 million keys at 1000 per page.
pub const MAX_LIST_PAGES: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use mock::MockObjectClient;

    /// A store whose listing always claims another page behind `token`.
    struct LoopingLister {
        inner: MockObjectClient,
        token: &'static str,
    }

    #[async_trait]
    impl ObjectClient for LoopingLister {
        fn bucket(&self) -> &str {
            self.inner.bucket()
        }
        async fn list_page(&self, p: &str, t: Option<&str>, n: u32) -> Result<ListPage> {
            let mut page = self.inner.list_page(p, None, n).await?;
            page.next_continuation_token = Some(format!("{}{}", self.token, t.map_or(0, |_| 1)));
            Ok(page)
        }
        async fn head(&self, k: &str) -> Result<ObjectMeta> {
            self.inner.head(k).await
        }
        async fn get_range(
            &self,
            k: &str,
            r: Range<u64>,
            i: Option<&str>,
            s: &dyn RangeSink,
        ) -> Result<GetRangeMeta> {
            self.inner.get_range(k, r, i, s).await
        }
    }

    #[tokio::test]
    async fn a_repeated_continuation_token_fails_instead_of_looping() {
        let inner = MockObjectClient::new("b");
        inner.put_object("a", b"x".to_vec());
        let client = LoopingLister {
            inner,
            token: "tok",
        };
        let listed =
            tokio::time::timeout(std::time::Duration::from_secs(10), list_all(&client, ""))
                .await
                .expect("list_all must not loop");
        match listed {
            Err(ObjectClientError::Client(ClientError::BadResponse(m))) => {
                assert!(m.contains("repeated continuation token \"tok1\""), "{m}")
            }
            other => panic!("expected a looping-listing error, got {other:?}"),
        }
    }
}

//! How the cache gets an object's bytes: the [`ObjectFetcher`] seam.
//!
//! Design decision: the cache only knows "fill this target with this object
//! version and tell me where the bytes came from". The default
//! [`StoreFetcher`] is exactly the fetch engine (same parts, same FIFO order,
//! same checks), so an agent without peers behaves as before. The peer layer
//! (its `SwarmFetcher`) implements the same trait; it needs to read
//! back what it wrote (to serve chunks it holds to peers), hence
//! [`ChunkTarget`] = [`RangeSink`] + positional read. The memfd supports
//! `pread` even after it is sealed.
//!
//! This room sits below both the agent and the peer layer: each may import
//! it, it imports neither. Whoever starts an agent picks the fetcher (the
//! store, or the swarm) and hands it in as a [`FetcherSpec`]: the agent starts
//! it with its own fetch engine once it holds its socket's lock, and stops it
//! through [`ObjectFetcher::shutdown`] when it exits.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ossc_core::fetch::{FetchEngine, FetchProgress, FetchedObject};
use ossc_core::object_client::{ObjectClientError, ObjectMeta, RangeSink};

pub mod memfd;
pub mod verify;

use memfd::Memfd;

/// A destination that can also be read back at absolute offsets.
pub trait ChunkTarget: RangeSink {
    /// Fills `buf` from `offset`; an error if the range is not inside.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;

    /// Fills `bufs` in turn from `offset` (one `preadv` where the target is
    /// a file); an error if the range is not inside.
    fn read_vectored_at(
        &self,
        mut offset: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
    ) -> std::io::Result<()> {
        for buf in bufs {
            self.read_at(offset, buf)?;
            offset += buf.len() as u64;
        }
        Ok(())
    }
}

impl ChunkTarget for Memfd {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        Memfd::read_at(self, offset, buf)
    }

    fn read_vectored_at(
        &self,
        offset: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
    ) -> std::io::Result<()> {
        Memfd::read_vectored_at(self, offset, bufs)
    }
}

/// What a fetch delivered and where from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    pub fetched: FetchedObject,
    /// Bytes that came from the object store (refetches included).
    pub bytes_store: u64,
    /// Bytes that came from peers and were kept (verified).
    pub bytes_peer: u64,
    /// `bytes_peer` per peer id.
    pub by_peer: BTreeMap<String, u64>,
    /// What verified the whole object end to end: `crc64`, or a digest the
    /// store declared (`sha256`, `md5-etag`, ... see
    /// `ossc_core::checksums`); `None`: the store offered nothing to check.
    pub verified_by: Option<&'static str>,
}

impl FetchOutcome {
    /// "peer" when most bytes came from peers, else "store".
    pub fn mostly_from_peers(&self) -> bool {
        self.bytes_peer > self.bytes_store
    }
}

/// Fills a target with one object version, verified.
#[async_trait]
pub trait ObjectFetcher: Send + Sync {
    async fn fetch(
        &self,
        meta: &ObjectMeta,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
    ) -> Result<FetchOutcome, ObjectClientError>;

    /// A JSON section for STATUS (`peers`), if this fetcher has one.
    fn status(&self) -> Option<serde_json::Value> {
        None
    }

    /// Stops whatever the fetcher runs beside its fetches (a peer port,
    /// heartbeats). The agent calls it once, after its accept loop ended and
    /// before it removes its socket; the default has nothing to stop.
    async fn shutdown(&self) {}
}

/// A fetcher before it starts. The agent starts it once it holds its socket's
/// lock and before it binds the socket, with the agent's own fetch engine:
/// an agent that finds its socket already served starts nothing (no peer
/// port), a failed start leaves no socket behind, and the fetcher shares the
/// engine's in-flight limit with the mirror.
#[async_trait]
pub trait FetcherSpec: Send {
    /// Starts the fetcher for `bucket`, fetching from the store through `engine`.
    async fn start(
        self: Box<Self>,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> anyhow::Result<Arc<dyn ObjectFetcher>>;
}

/// A fetcher that is already running is its own spec.
#[async_trait]
impl FetcherSpec for Arc<dyn ObjectFetcher> {
    async fn start(
        self: Box<Self>,
        _engine: Arc<FetchEngine>,
        _bucket: String,
    ) -> anyhow::Result<Arc<dyn ObjectFetcher>> {
        Ok(*self)
    }
}

/// The default: everything from the store through the fetch engine.
pub struct StoreFetcher {
    engine: Arc<FetchEngine>,
}

impl StoreFetcher {
    pub fn new(engine: Arc<FetchEngine>) -> StoreFetcher {
        StoreFetcher { engine }
    }
}

#[async_trait]
impl ObjectFetcher for StoreFetcher {
    async fn fetch(
        &self,
        meta: &ObjectMeta,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
    ) -> Result<FetchOutcome, ObjectClientError> {
        fetch_from_store(&self.engine, meta, target, progress).await
    }
}

/// Fetches all of `meta` from the store into `target` and verifies it with
/// the best the store offers ([`verify::verify_store_bytes`]).
pub async fn fetch_from_store(
    engine: &FetchEngine,
    meta: &ObjectMeta,
    target: Arc<dyn ChunkTarget>,
    progress: Arc<FetchProgress>,
) -> Result<FetchOutcome, ObjectClientError> {
    let sink: Arc<dyn RangeSink> = target.clone();
    let fetched = engine.fetch_object(meta, sink, progress).await?;
    let verified_by =
        verify::verify_store_bytes(&**engine.client(), meta, target, fetched.crc64_verified)
            .await?;
    Ok(FetchOutcome {
        bytes_store: fetched.size,
        fetched,
        bytes_peer: 0,
        by_peer: BTreeMap::new(),
        verified_by,
    })
}

/// An in-memory [`ChunkTarget`] (tests and tools).
#[derive(Debug)]
pub struct VecTarget {
    data: std::sync::Mutex<Vec<u8>>,
}

impl VecTarget {
    pub fn with_len(len: usize) -> VecTarget {
        VecTarget {
            data: std::sync::Mutex::new(vec![0; len]),
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl RangeSink for VecTarget {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut v = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(data.len())
            .filter(|e| *e <= v.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "past end"))?;
        v[start..end].copy_from_slice(data);
        Ok(())
    }
}

impl ChunkTarget for VecTarget {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let v = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .filter(|e| *e <= v.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "past end"))?;
        buf.copy_from_slice(&v[start..end]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_core::fetch::FetchConfig;
    use ossc_core::object_client::mock::MockObjectClient;
    use ossc_core::object_client::{ClientError, ObjectClient};

    #[tokio::test]
    async fn store_fetcher_is_the_engine_and_counts_store_bytes() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        mock.put_object("k", data.clone());
        let meta = mock.head("k").await.unwrap();
        let engine = Arc::new(FetchEngine::new(mock.clone(), FetchConfig::default()));
        let target = Arc::new(VecTarget::with_len(data.len()));
        let out = StoreFetcher::new(engine)
            .fetch(&meta, target.clone(), Arc::default())
            .await
            .unwrap();
        assert_eq!(target.contents(), data);
        assert_eq!(out.bytes_store, data.len() as u64);
        assert_eq!(out.bytes_peer, 0);
        assert!(out.fetched.crc64_verified);
        assert!(!out.mostly_from_peers());
        let mut back = vec![0u8; 10];
        target.read_at(5, &mut back).unwrap();
        assert_eq!(back, data[5..15]);
        assert!(target.read_at(data.len() as u64 - 1, &mut back).is_err());
    }

    #[tokio::test]
    async fn store_fetcher_reports_what_verified_the_object() {
        use ossc_core::object_client::failure::{FailureInjectingClient, Fault};
        let data = ossc_core::object_client::mock::pseudo_random_bytes(300_000, 2);
        let fetch = |client: Arc<dyn ObjectClient>, meta: ObjectMeta| {
            let data_len = data.len();
            async move {
                let engine = Arc::new(FetchEngine::new(client, FetchConfig::default()));
                let target = Arc::new(VecTarget::with_len(data_len));
                let out = StoreFetcher::new(engine)
                    .fetch(&meta, target.clone(), Arc::default())
                    .await;
                (out, target.contents())
            }
        };
        let crc_store = Arc::new(MockObjectClient::new("b"));
        crc_store.put_object("k", data.clone());
        let meta = crc_store.head("k").await.unwrap();
        let (out, got) = fetch(crc_store.clone(), meta).await;
        assert_eq!(out.unwrap().verified_by, Some("crc64"));
        assert_eq!(got, data);

        // An S3-like store: no CRC-64, a SHA-256 on HEAD; the listing's meta.
        let s3 = Arc::new(
            MockObjectClient::new("b")
                .with_crc64_headers(false)
                .with_sha256_headers(true),
        );
        s3.put_object("k", data.clone());
        let listed = s3.list_page("", None, 10).await.unwrap().objects.remove(0);
        let (out, got) = fetch(s3.clone(), listed.clone()).await;
        let out = out.unwrap();
        assert_eq!(out.verified_by, Some("sha256"));
        assert!(!out.fetched.crc64_verified);
        assert_eq!(got, data);
        // Bytes flipped on the wire are caught by the SHA-256 alone.
        let flipping = Arc::new(
            FailureInjectingClient::new(s3.clone())
                .with_script(|c| (c.call_index == 0).then_some(Fault::Corrupt { offset: 1000 })),
        );
        let (out, _) = fetch(flipping, listed).await;
        assert!(
            matches!(
                out,
                Err(ObjectClientError::Client(ClientError::ChecksumMismatch {
                    algorithm: "sha256",
                    ..
                }))
            ),
            "{out:?}"
        );

        // Nothing to check: unverified, and says so.
        let bare = Arc::new(MockObjectClient::new("b").with_crc64_headers(false));
        bare.put_object("k", data.clone());
        let meta = bare.head("k").await.unwrap();
        let (out, _) = fetch(bare, meta).await;
        assert_eq!(out.unwrap().verified_by, None);
    }

    #[tokio::test]
    async fn a_running_fetcher_starts_as_itself_and_has_nothing_to_stop() {
        let mock = Arc::new(MockObjectClient::new("b"));
        let engine = Arc::new(FetchEngine::new(mock, FetchConfig::default()));
        let running: Arc<dyn ObjectFetcher> = Arc::new(StoreFetcher::new(engine.clone()));
        let spec: Box<dyn FetcherSpec> = Box::new(running.clone());
        let started = spec.start(engine, "b".into()).await.unwrap();
        assert!(Arc::ptr_eq(&started, &running));
        assert!(started.status().is_none());
        started.shutdown().await;
    }

    #[test]
    fn memfd_reads_back_what_was_written_even_when_sealed() {
        let m = Memfd::create("t", 8).unwrap();
        m.write_at(2, b"abc").unwrap();
        m.seal().unwrap();
        let mut b = [0u8; 4];
        ChunkTarget::read_at(&m, 1, &mut b).unwrap();
        assert_eq!(&b, b"\0abc");
        assert!(ChunkTarget::read_at(&m, 6, &mut b).is_err());
    }
}

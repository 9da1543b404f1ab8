//! The peer-assisted [`ObjectFetcher`]: own chunks from the store, the rest
//! from peers, every byte verified.
//!
//! Design decisions:
//! - **Sources.** A chunk's owner is computed by rendezvous hashing over the
//!   alive set ([`super::ring`]). Its sources are the owner, which streams
//!   the chunk *while it arrives from the store* (cut-through, see
//!   [`super::chunk_server`]), and every alive peer whose have-map shows the
//!   chunk complete ([`super::holders`]); one is picked weighted by idle
//!   upload bandwidth, so a hot owner does not throttle the swarm. A chunk
//!   this node owns comes from the store, unless a peer already holds it
//!   (a late joiner takes over chunks the others fetched long ago).
//! - **Store fetches** go through the fetch engine ([`FetchEngine::fetch_range`]:
//!   same in-flight limit, FIFO and If-Match pinning as a plain fetch), into
//!   a [`RecordingSink`] so peers can be served the bytes as they land.
//!   Pulls run under a *separate* semaphore ([`DEFAULT_PULL_CONCURRENCY`]),
//!   so pulls waiting for an owner never hold store slots and never starve
//!   own fetches — which is also why the swarm cannot deadlock: every owner
//!   fetches its own chunks unconditionally.
//! - **Failures.** Each object's fetch keeps a set of *excluded* peers:
//!   those that answered NOT_FOUND (they do not hold the object) or sent
//!   bytes that are not the chunk (CRC mismatch, bad frames; logged with the
//!   peer's id). The ring for that object is computed over the alive peers
//!   minus the excluded ones, so their chunks are *reassigned* to the next
//!   owner — the next-highest weight — which fetches them from the store
//!   once and shares them, instead of every node fetching them itself. A
//!   source declared dead mid-pull is replaced the same way (membership
//!   drops it from the alive set). A stream that breaks or stalls counts as
//!   a death if membership confirms it within its detection delay (a killed
//!   process resets its connections before it misses heartbeats); otherwise,
//!   and for error statuses or no progress past the wait, the chunk goes to
//!   the store at once with a warning naming the peer. At most
//!   [`MAX_PEER_ATTEMPTS`] sources are tried before the store.
//! - Pulls go over QUIC ([`super::quic`]) when the node is configured for
//!   it, else over gRPC `FetchChunk`; a peer whose QUIC handshake fails is
//!   pulled from over gRPC instead (the QUIC node logs this once per peer).
//!   Both transports answer from the same server logic.
//! - **Integrity.** A pulled chunk is written into the target, its CRC-64
//!   computed while receiving and compared with the CRC the owner recorded
//!   from the store (sent after the last byte). Only then is it recorded in
//!   this node's [`ChunkBook`] (so it may be served on). At the end the chunk
//!   CRCs are combined and compared with the store's whole-object CRC-64 (the
//!   listing's, a store part's header, or a HEAD). On mismatch every
//!   peer-sourced chunk is refetched from the store and the check repeated;
//!   the target is not handed out before this passes.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ossc_core::crc64::{self, Crc64Hasher};
use ossc_core::fetch::{FetchEngine, FetchProgress, FetchedObject};
use ossc_core::object_client::{ClientError, ObjectClientError, ObjectMeta};
use ossc_proto::v1;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::chunk_book::{BookRegistry, ChunkBook, ChunkId, ObjectVersion, RecordingSink};
use super::chunk_server::{FETCH_CHUNK_METHOD, HAVE_METHOD};
use super::holders::{Holders, HAVE_REFRESH, HAVE_TIMEOUT};
use super::peer_set::{Peer, PeerSet};
use super::quic::{QuicNode, QuicPullError};
use super::ring;
use super::upload::pick_weighted;
use crate::object_source::verify::{self, store_checksums};
use crate::object_source::{fetch_from_store, ChunkTarget, FetchOutcome, ObjectFetcher};

/// Concurrent pulls per node. 16 × 16 MiB = 256 MiB in flight, enough to fill
/// a 100 Gbit/s link at a few ms RTT; separate from the store's limit.
pub const DEFAULT_PULL_CONCURRENCY: usize = 16;
/// How long a chunk being pulled may go without progress (sent as
/// `wait_ms`; the server caps it at `MAX_SERVE_WAIT`; keep-alives do not
/// count as progress). 60 s: an owner fetches its whole share at once, FIFO,
/// so a chunk late in its queue may wait long for its first byte (a 534 MB
/// model on 300 Mbit/s links measured ~15 s). A 10 s wait sent those pulls to
/// the store, which slowed every owner further: egress rose to 3–4×
/// (docs/benchmarks.md). A dead owner is not waited for: `pull_while_alive`
/// abandons the pull within `DEAD_PEER_CHECK` of the heartbeat declaring it
/// dead, and the chunk is reassigned.
pub const DEFAULT_PEER_WAIT: Duration = Duration::from_secs(60);
/// Extra time over the wait for the owner's first answer to arrive.
pub const RESPONSE_MARGIN: Duration = Duration::from_secs(2);
/// Sources tried for one chunk (owner, holders, reassigned owners) before
/// the store: a dead owner and one stale holder, then a live owner.
pub const MAX_PEER_ATTEMPTS: usize = 3;
/// A chunk stream that delivers no frame for this long is abandoned.
pub const FRAME_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a running or queued pull checks that its peer is still alive
/// (a small fraction of the membership's 3 s detection delay).
pub const DEAD_PEER_CHECK: Duration = Duration::from_millis(250);

/// Knobs of the fetcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSettings {
    pub chunk_size: u64,
    pub pull_concurrency: usize,
    pub peer_wait: Duration,
    /// Peer bytes only for objects whose store declares a cryptographic
    /// digest; everything else from the store (`peer.requireVerifiedObjects`).
    pub require_verified: bool,
}

/// Where one chunk came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChunkSource {
    Store { object_crc64: Option<u64> },
    Peer(String),
}

struct ChunkDone {
    index: u64,
    crc: u64,
    source: ChunkSource,
    /// Store bytes spent on this chunk (a failed pull's fallback included).
    store_bytes: u64,
}

/// Why a pull did not deliver.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("peer does not hold this object version")]
    NotFound,
    #[error("peer declared dead")]
    Dead,
    /// The stream broke, stalled or was refused as unavailable: the peer
    /// may be dying, which membership will tell within its detection delay.
    #[error("{0}")]
    Lost(String),
    /// Bytes that are not the chunk (bad frames, CRC mismatch): the peer is
    /// no longer trusted for this object.
    #[error("{0}")]
    Corrupt(String),
    /// Any other wrong answer (an error status, no progress): store.
    #[error("{0}")]
    Failed(String),
}

impl PullError {
    /// A gRPC status as a pull failure: transport-level codes mean "lost".
    fn from_status(s: &tonic::Status) -> PullError {
        let text = format!("{}: {}", s.code(), s.message());
        match s.code() {
            tonic::Code::NotFound => PullError::NotFound,
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted => PullError::Lost(text),
            _ => PullError::Failed(text),
        }
    }
}

/// Aborts a background task when dropped (an early return included).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    engine: Arc<FetchEngine>,
    peers: Arc<PeerSet>,
    books: Arc<BookRegistry>,
    bucket: String,
    settings: PullSettings,
    pulls: Semaphore,
    /// Pull over QUIC through this endpoint (None: gRPC only).
    quic: Option<Arc<QuicNode>>,
    /// What peers last said they hold.
    holders: Holders,
}

/// See the module docs.
pub struct SwarmFetcher {
    shared: Arc<Shared>,
}

impl SwarmFetcher {
    /// A fetcher that pulls over gRPC only.
    pub fn new(
        engine: Arc<FetchEngine>,
        peers: Arc<PeerSet>,
        books: Arc<BookRegistry>,
        bucket: String,
        settings: PullSettings,
    ) -> SwarmFetcher {
        SwarmFetcher::with_transport(engine, peers, books, bucket, settings, None)
    }

    /// A fetcher that pulls over QUIC through `quic` when given (gRPC per
    /// peer whose handshake fails), else over gRPC.
    pub fn with_transport(
        engine: Arc<FetchEngine>,
        peers: Arc<PeerSet>,
        books: Arc<BookRegistry>,
        bucket: String,
        settings: PullSettings,
        quic: Option<Arc<QuicNode>>,
    ) -> SwarmFetcher {
        let settings = PullSettings {
            chunk_size: settings.chunk_size.max(1),
            pull_concurrency: settings.pull_concurrency.max(1),
            ..settings
        };
        SwarmFetcher {
            shared: Arc::new(Shared {
                engine,
                peers,
                books,
                bucket,
                pulls: Semaphore::new(settings.pull_concurrency),
                settings,
                quic,
                holders: Holders::default(),
            }),
        }
    }

    pub fn peers(&self) -> &Arc<PeerSet> {
        &self.shared.peers
    }

    /// The object versions this node holds (and serves to peers).
    pub fn books(&self) -> &Arc<BookRegistry> {
        &self.shared.books
    }

    /// "quic" or "grpc": how this fetcher pulls.
    pub fn transport(&self) -> &'static str {
        if self.shared.quic.is_some() {
            "quic"
        } else {
            "grpc"
        }
    }

    /// Pulls chunk `id` from peer `peer_id` into `target` (at the chunk's
    /// offset) with the configured transport; its verified CRC-64. For
    /// measurements and tests: no ownership, no store fallback.
    pub async fn pull_chunk(
        &self,
        peer_id: &str,
        id: &ChunkId,
        target: &dyn ChunkTarget,
    ) -> Result<u64, String> {
        let peer = self
            .shared
            .peers
            .peer(peer_id)
            .ok_or_else(|| format!("unknown peer {peer_id}"))?;
        let range = super::chunk_book::chunk_range(
            id.object.size,
            self.shared.settings.chunk_size,
            id.index,
        );
        let _permit = self
            .shared
            .pulls
            .acquire()
            .await
            .map_err(|_| "pull limiter closed".to_string())?;
        self.shared
            .pull(&peer, id, range, target)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl ObjectFetcher for SwarmFetcher {
    async fn fetch(
        &self,
        meta: &ObjectMeta,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
    ) -> Result<FetchOutcome, ObjectClientError> {
        let s = &self.shared;
        if meta.etag.is_empty() || meta.size == 0 {
            // Without an ETag there is no version to agree on: store only.
            return fetch_from_store(&s.engine, meta, target, progress).await;
        }
        let mut meta = meta.clone();
        if s.settings.require_verified {
            meta.checksums = match store_checksums(&**s.engine.client(), &meta).await {
                Ok(c) => c,
                Err(e @ ObjectClientError::Client(ClientError::ObjectChanged { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::warn!(key = %meta.key, error = %e, "HEAD for the store's checksums failed; peer.requireVerifiedObjects fetches the object from the store only");
                    Default::default()
                }
            };
            if meta.checksums.strongest_cryptographic().is_none() {
                tracing::info!(key = %meta.key, "the store declares no cryptographic digest for this object; peer.requireVerifiedObjects fetches it from the store only");
                return fetch_from_store(&s.engine, &meta, target, progress).await;
            }
        }
        let meta = &meta;
        s.peers.wait_for_startup().await;
        let version = ObjectVersion {
            bucket: s.bucket.clone(),
            key: meta.key.clone(),
            etag: meta.etag.clone(),
            size: meta.size,
        };
        let book = s.books.open(version, s.settings.chunk_size, &target);
        let result = s.clone().fetch_chunks(meta, &book, target, progress).await;
        if result.is_err() {
            s.books.remove(&book);
        }
        result
    }

    fn status(&self) -> Option<serde_json::Value> {
        let mut v = self.shared.peers.status_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("chunk_size".into(), self.shared.settings.chunk_size.into());
            o.insert("transport".into(), self.transport().into());
            o.insert("objects_held".into(), self.shared.books.len().into());
            let idle: serde_json::Map<String, serde_json::Value> = self
                .shared
                .holders
                .idle_by_peer()
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            o.insert("peer_idle_upload_bytes_per_sec".into(), idle.into());
        }
        Some(v)
    }
}

impl Shared {
    async fn fetch_chunks(
        self: Arc<Self>,
        meta: &ObjectMeta,
        book: &Arc<ChunkBook>,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
    ) -> Result<FetchOutcome, ObjectClientError> {
        let n = book.n_chunks();
        let meta = Arc::new(meta.clone());
        let excluded: Arc<Mutex<HashSet<String>>> = Arc::default();
        // Have-maps: one round now (a late joiner finds holders for its first
        // chunks), then in the background while the chunks arrive.
        // (Declared first, dropped last: the refresher stops before the
        // maps are forgotten.)
        let _forget = ForgetMaps(&self.holders, &book.version);
        self.refresh_have_maps(&book.version).await;
        let _refresher = AbortOnDrop(tokio::spawn({
            let me = self.clone();
            let version = book.version.clone();
            async move {
                let mut tick = tokio::time::interval(HAVE_REFRESH);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    me.refresh_have_maps(&version).await;
                }
            }
        }));
        let mut set: JoinSet<Result<ChunkDone, ObjectClientError>> = JoinSet::new();
        for index in 0..n {
            let (me, meta, book, target, progress, excluded) = (
                self.clone(),
                meta.clone(),
                book.clone(),
                target.clone(),
                progress.clone(),
                excluded.clone(),
            );
            set.spawn(async move {
                me.fetch_chunk(&meta, &book, index, target, progress, &excluded)
                    .await
            });
        }
        let mut done: Vec<Option<ChunkDone>> = (0..n).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            let c = match joined {
                Ok(r) => r?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    return Err(
                        ClientError::BadResponse(format!("chunk task cancelled: {e}")).into(),
                    )
                }
            };
            let i = c.index as usize;
            done[i] = Some(c);
        }
        let mut chunks: Vec<ChunkDone> = done
            .into_iter()
            .map(|c| c.expect("every chunk recorded"))
            .collect();
        let mut crc = combined(&chunks, book);
        let mut expected = meta.crc64.or_else(|| {
            chunks.iter().find_map(|c| match c.source {
                ChunkSource::Store { object_crc64 } => object_crc64,
                ChunkSource::Peer(_) => None,
            })
        });
        let from_peers = chunks
            .iter()
            .any(|c| matches!(c.source, ChunkSource::Peer(_)));
        // Peer bytes are checked against every digest the store declares:
        // one HEAD (unless the meta has them) gives the CRC-64 and the rest.
        let mut checksums = meta.checksums.clone();
        if from_peers && (expected.is_none() || checksums.is_empty()) {
            match self.engine.client().head(&meta.key).await {
                Ok(head) if head.etag == meta.etag && head.size == meta.size => {
                    expected = expected.or(head.crc64);
                    if checksums.is_empty() {
                        checksums = head.checksums;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %meta.key, error = %e, "HEAD for the store's checksums failed; checking what the parts declared")
                }
            }
        }
        if expected.is_some_and(|e| e != crc) && from_peers {
            tracing::warn!(
                key = %meta.key,
                peers = ?peer_sources(&chunks),
                expected = format!("{:#018x}", expected.unwrap_or(0)),
                actual = format!("{crc:#018x}"),
                "whole-object CRC-64 mismatch; refetching every peer chunk from the store"
            );
            self.refetch_peer_chunks(&meta, book, &target, &progress, &mut chunks)
                .await?;
            crc = combined(&chunks, book);
        }
        if let Some(e) = expected.filter(|e| *e != crc) {
            return Err(ClientError::Crc64Mismatch {
                key: meta.key.clone(),
                expected: e,
                actual: crc,
            }
            .into());
        }
        let crc64_verified = expected.is_some();
        let mut verified_by = crc64_verified.then_some(verify::CRC64);
        let from_peers = chunks
            .iter()
            .any(|c| matches!(c.source, ChunkSource::Peer(_)));
        if let Some(digest) = verify::digest_to_check(&checksums, crc64_verified, from_peers) {
            let mut check = verify::check_digest(digest, meta.size, target.clone()).await?;
            if matches!(check, verify::DigestCheck::Mismatch { .. }) && from_peers {
                tracing::warn!(
                    key = %meta.key,
                    peers = ?peer_sources(&chunks),
                    digest = digest.kind.name(),
                    "whole-object digest mismatch; refetching every peer chunk from the store"
                );
                self.refetch_peer_chunks(&meta, book, &target, &progress, &mut chunks)
                    .await?;
                crc = combined(&chunks, book);
                if let Some(e) = expected.filter(|e| *e != crc) {
                    return Err(ClientError::Crc64Mismatch {
                        key: meta.key.clone(),
                        expected: e,
                        actual: crc,
                    }
                    .into());
                }
                check = verify::check_digest(digest, meta.size, target.clone()).await?;
            }
            verified_by = verify::settle_store_check(&meta, check, crc64_verified)?;
        }
        let mut by_peer = BTreeMap::new();
        let mut bytes_peer = 0;
        let mut bytes_store = 0;
        for c in &chunks {
            bytes_store += c.store_bytes;
            if let ChunkSource::Peer(p) = &c.source {
                let r = book.range(c.index);
                *by_peer.entry(p.clone()).or_insert(0) += r.end - r.start;
                bytes_peer += r.end - r.start;
            }
        }
        Ok(FetchOutcome {
            fetched: FetchedObject {
                size: meta.size,
                etag: meta.etag.clone(),
                crc64: crc,
                crc64_verified,
            },
            bytes_store,
            bytes_peer,
            by_peer,
            verified_by,
        })
    }

    /// Refetches every peer-sourced chunk from the store (after an
    /// end-to-end mismatch), recording them as store chunks.
    async fn refetch_peer_chunks(
        &self,
        meta: &ObjectMeta,
        book: &Arc<ChunkBook>,
        target: &Arc<dyn ChunkTarget>,
        progress: &Arc<FetchProgress>,
        chunks: &mut [ChunkDone],
    ) -> Result<(), ObjectClientError> {
        for c in chunks
            .iter_mut()
            .filter(|c| matches!(c.source, ChunkSource::Peer(_)))
        {
            book.forget(c.index);
            let range = book.range(c.index);
            let sink = Arc::new(RecordingSink {
                target: target.clone(),
                book: book.clone(),
            });
            let got = self
                .engine
                .fetch_range(meta, range.clone(), sink, progress.clone())
                .await?;
            c.crc = got.crc64;
            c.store_bytes += range.end - range.start;
            c.source = ChunkSource::Store {
                object_crc64: got.object_crc64,
            };
            book.record(c.index, c.crc);
        }
        Ok(())
    }

    /// Asks every alive peer which chunks of `version` it holds (bounded by
    /// [`HAVE_TIMEOUT`]; a peer that does not answer keeps its last map).
    async fn refresh_have_maps(&self, version: &ObjectVersion) {
        let asked = std::slice::from_ref(version);
        let request = v1::HaveRequest {
            objects: vec![version.into()],
        };
        let calls = self
            .peers
            .alive_ids()
            .into_iter()
            .filter(|id| id != self.peers.self_id())
            .filter_map(|id| self.peers.peer(&id))
            .map(|peer| {
                let mut req = tonic::Request::new(request.clone());
                self.peers
                    .secret()
                    .sign_request(&mut req, self.peers.self_id(), HAVE_METHOD);
                async move {
                    let mut client = peer.client();
                    match tokio::time::timeout(HAVE_TIMEOUT, client.have(req)).await {
                        Ok(Ok(answer)) => self.holders.update(&peer.id, asked, answer.get_ref()),
                        Ok(Err(status)) => {
                            tracing::debug!(peer = %peer.id, error = %status, "Have refused")
                        }
                        Err(_) => tracing::debug!(peer = %peer.id, "Have timed out"),
                    }
                }
            });
        futures::future::join_all(calls).await;
    }

    /// The source to pull chunk `id` from, or `None` for the store: among
    /// the owner the ring names now (over the alive peers this object's
    /// fetch has not `excluded`) and the peers that hold the chunk (minus
    /// `tried`, `excluded` and this node), weighted by idle upload
    /// bandwidth (see the module docs).
    fn pick_source(
        &self,
        id: &ChunkId,
        tried: &HashSet<String>,
        excluded: &Mutex<HashSet<String>>,
    ) -> Option<String> {
        let me = self.peers.self_id();
        let excluded = excluded.lock().unwrap_or_else(|p| p.into_inner());
        let alive: Vec<String> = self
            .peers
            .alive_ids()
            .into_iter()
            .filter(|p| !excluded.contains(p))
            .collect();
        let owner = ring::owner(alive.iter().map(String::as_str), id).unwrap_or(me);
        let mut sources: Vec<String> = self
            .holders
            .holders_of(&id.object, id.index)
            .into_iter()
            .filter(|p| p != me && !tried.contains(p) && alive.contains(p))
            .collect();
        if owner != me && !tried.contains(owner) && !sources.iter().any(|p| p == owner) {
            sources.push(owner.to_string());
        }
        let weights: Vec<u64> = sources
            .iter()
            .map(|p| self.holders.idle_upload(p))
            .collect();
        let i = pick_weighted(&weights, rand::random::<f64>())?;
        Some(sources.swap_remove(i))
    }

    async fn fetch_chunk(
        &self,
        meta: &ObjectMeta,
        book: &Arc<ChunkBook>,
        index: u64,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
        excluded: &Mutex<HashSet<String>>,
    ) -> Result<ChunkDone, ObjectClientError> {
        let id = ChunkId {
            object: book.version.clone(),
            index,
        };
        let range = book.range(index);
        let len = range.end - range.start;
        let mut tried = HashSet::new();
        while tried.len() < MAX_PEER_ATTEMPTS {
            // A chunk with no peer source goes to the store without waiting
            // for a pull slot (own chunks never queue behind pulls: no
            // deadlock). Otherwise the source is picked again once a slot is
            // free, so the pick sees current have-maps, deaths and exclusions.
            if self.pick_source(&id, &tried, excluded).is_none() {
                break;
            }
            let Ok(_permit) = self.pulls.acquire().await else {
                break;
            };
            let Some(source) = self.pick_source(&id, &tried, excluded) else {
                break;
            };
            tried.insert(source.clone());
            let Some(peer) = self.peers.peer(&source) else {
                continue;
            };
            match self
                .pull_while_alive(&peer, &id, range.clone(), &*target)
                .await
            {
                Ok(crc) => {
                    book.record(index, crc);
                    peer.bytes_received.fetch_add(len, Ordering::Relaxed);
                    progress.bytes_done.fetch_add(len, Ordering::Relaxed);
                    return Ok(ChunkDone {
                        index,
                        crc,
                        source: ChunkSource::Peer(source),
                        store_bytes: 0,
                    });
                }
                Err(PullError::NotFound) => {
                    let first = excluded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(source.clone());
                    if first {
                        tracing::info!(peer = %source, key = %meta.key, "peer does not hold this object; its chunks go to their next owners");
                    }
                }
                Err(PullError::Corrupt(e)) => {
                    peer.failures.fetch_add(1, Ordering::Relaxed);
                    excluded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(source.clone());
                    tracing::warn!(peer = %source, key = %meta.key, chunk = index, error = %e, "peer sent bytes that are not the chunk; it is no longer trusted for this object, and the chunk is refetched from the store by its next owner");
                }
                Err(PullError::Dead) => {
                    peer.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %source, key = %meta.key, chunk = index, "peer declared dead mid-pull; the chunk goes to its next owner");
                }
                Err(PullError::Lost(e)) if self.dies_soon(&peer).await => {
                    peer.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %source, key = %meta.key, chunk = index, error = %e, "stream to a dying peer broke; the chunk goes to its next owner");
                }
                Err(e) => {
                    peer.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %source, key = %meta.key, chunk = index, error = %e, "pull from peer failed; fetching the chunk from the store");
                    break;
                }
            }
        }
        let sink = Arc::new(RecordingSink {
            target,
            book: book.clone(),
        });
        let got = self.engine.fetch_range(meta, range, sink, progress).await?;
        book.record(index, got.crc64);
        Ok(ChunkDone {
            index,
            crc: got.crc64,
            source: ChunkSource::Store {
                object_crc64: got.object_crc64,
            },
            store_bytes: len,
        })
    }

    /// Whether membership declares `peer` dead within its detection delay
    /// (after a stream to it broke: a killed process resets its connections
    /// before its heartbeats are missed). True: reassign the chunk; false:
    /// the peer lives on, and the chunk goes to the store.
    async fn dies_soon(&self, peer: &Peer) -> bool {
        let until = tokio::time::Instant::now() + self.peers.dead_after() + DEAD_PEER_CHECK;
        loop {
            if !self.peers.is_alive(&peer.id) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(DEAD_PEER_CHECK).await;
        }
    }

    /// [`Shared::pull`], abandoned as soon as membership declares `peer`
    /// dead (checked every [`DEAD_PEER_CHECK`]). A killed or partitioned
    /// owner then costs its pending chunks the membership's detection delay,
    /// not the full peer wait each: with
    /// QUIC a killed peer sends no reset, so its pulls would otherwise hang
    /// until their timeouts, one round of pull permits after another.
    async fn pull_while_alive(
        &self,
        peer: &Peer,
        id: &ChunkId,
        range: Range<u64>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let pull = self.pull(peer, id, range, target);
        tokio::pin!(pull);
        let mut check = tokio::time::interval(DEAD_PEER_CHECK);
        loop {
            tokio::select! {
                r = &mut pull => return r,
                _ = check.tick() => {
                    if !self.peers.is_alive(&peer.id) {
                        return Err(PullError::Dead);
                    }
                }
            }
        }
    }

    /// Pulls chunk `id` (`range` of the object) from `peer` into `target`;
    /// returns its verified CRC-64. The caller holds a pull permit.
    async fn pull(
        &self,
        peer: &Peer,
        id: &ChunkId,
        range: Range<u64>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let wait = self.settings.peer_wait;
        let request = v1::ChunkRequest {
            chunk: Some(v1::ChunkId {
                object: Some((&id.object).into()),
                chunk_size: self.settings.chunk_size,
                index: id.index,
            }),
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        };
        if let Some(quic) = &self.quic {
            let pulled = quic
                .fetch(
                    peer.addr,
                    self.peers.secret(),
                    self.peers.self_id(),
                    request.clone(),
                    range.clone(),
                    target,
                    wait + RESPONSE_MARGIN,
                    FRAME_STALL_TIMEOUT,
                )
                .await;
            match pulled {
                Ok(crc) => return Ok(crc),
                Err(QuicPullError::NotFound) => return Err(PullError::NotFound),
                Err(QuicPullError::Lost(e)) => return Err(PullError::Lost(format!("QUIC: {e}"))),
                Err(QuicPullError::Corrupt(e)) => {
                    return Err(PullError::Corrupt(format!("QUIC: {e}")))
                }
                Err(QuicPullError::Failed(e)) => {
                    return Err(PullError::Failed(format!("QUIC: {e}")))
                }
                // No QUIC to this peer: gRPC below (logged by the QUIC node).
                Err(QuicPullError::Unreachable(_)) => {}
            }
        }
        let mut req = tonic::Request::new(request);
        self.peers
            .secret()
            .sign_request(&mut req, self.peers.self_id(), FETCH_CHUNK_METHOD);
        let mut client = peer.client();
        let resp = tokio::time::timeout(wait + RESPONSE_MARGIN, client.fetch_chunk(req))
            .await
            .map_err(|_| PullError::Lost(format!("no answer within {wait:?}")))?
            .map_err(|s| PullError::from_status(&s))?;
        let mut stream = resp.into_inner();
        let len = range.end - range.start;
        let mut pos = 0u64;
        let mut last_data = tokio::time::Instant::now();
        let mut hasher = Crc64Hasher::new();
        let claimed = loop {
            let frame = tokio::time::timeout(FRAME_STALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| PullError::Lost("chunk stream stalled".into()))?
                .map_err(|s| PullError::from_status(&s))?
                .ok_or_else(|| PullError::Lost(format!("chunk stream ended at {pos} of {len}")))?;
            if frame.last {
                break frame.crc64;
            }
            let n = frame.data.len() as u64;
            if n == 0 {
                // Keep-alive: the owner is alive, the chunk has not advanced.
                if last_data.elapsed() > wait + RESPONSE_MARGIN {
                    return Err(PullError::Failed(format!(
                        "chunk made no progress for {wait:?}"
                    )));
                }
                continue;
            }
            if frame.offset != pos || pos + n > len {
                return Err(PullError::Corrupt(format!(
                    "frame at {} (+{n}) does not fit chunk at {pos} of {len}",
                    frame.offset
                )));
            }
            hasher.update(&frame.data);
            target
                .write_at(range.start + pos, &frame.data)
                .map_err(|e| PullError::Failed(format!("writing chunk: {e}")))?;
            pos += n;
            last_data = tokio::time::Instant::now();
        };
        if pos != len {
            return Err(PullError::Corrupt(format!("chunk ended at {pos} of {len}")));
        }
        let actual = hasher.finish();
        if claimed == actual {
            Ok(actual)
        } else {
            Err(PullError::Corrupt(format!(
                "chunk CRC-64 mismatch: peer recorded {claimed:#018x}, data has {actual:#018x}"
            )))
        }
    }
}

/// Forgets an object's have-maps when its fetch ends, however it ends.
struct ForgetMaps<'a>(&'a Holders, &'a ObjectVersion);

impl Drop for ForgetMaps<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// The peers that sent any of `chunks`, each once.
fn peer_sources(chunks: &[ChunkDone]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| match &c.source {
            ChunkSource::Peer(p) => Some(p.clone()),
            ChunkSource::Store { .. } => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The object's CRC-64 from its chunks' CRCs, in order.
fn combined(chunks: &[ChunkDone], book: &ChunkBook) -> u64 {
    chunks.iter().fold(0u64, |acc, c| {
        let r = book.range(c.index);
        crc64::combine(acc, c.crc, r.end - r.start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_source::memfd::Memfd;
    use crate::object_source::{StoreFetcher, VecTarget};
    use crate::swarm::{MembershipTiming, PeerTransport, Swarm, SwarmConfig};
    use ossc_core::fetch::FetchConfig;
    use ossc_core::object_client::mock::MockObjectClient;
    use ossc_core::object_client::{ObjectClient, RangeSink};
    use tokio::net::TcpListener;

    const CHUNK: u64 = 64 * 1024;
    const SECRET: &[u8] = crate::swarm::auth::TEST_SECRET;

    fn data(n: u64, seed: u64) -> Vec<u8> {
        ossc_core::object_client::mock::pseudo_random_bytes(n as usize, seed)
    }

    fn config(
        peers: &[String],
        me: SocketAddrText,
        secret: &[u8],
        tls: bool,
        transport: PeerTransport,
    ) -> SwarmConfig {
        SwarmConfig {
            peers: peers.to_vec(),
            listen: me.0.parse().unwrap(),
            advertise: None,
            secret: ClusterSecretText(secret).into(),
            chunk_size: CHUNK,
            pull_concurrency: 4,
            peer_wait: Duration::from_secs(3),
            timing: MembershipTiming {
                heartbeat: Duration::from_millis(100),
                dead_after: Duration::from_millis(400),
                hello_timeout: Duration::from_millis(300),
                startup_wait: Duration::from_millis(500),
            },
            tls,
            corrupt_served_chunks: false,
            limits: Default::default(),
            transport,
            upload_capacity: None,
            require_verified: false,
            membership: Default::default(),
        }
    }

    struct SocketAddrText(String);
    struct ClusterSecretText<'a>(&'a [u8]);
    impl From<ClusterSecretText<'_>> for crate::swarm::ClusterSecret {
        fn from(s: ClusterSecretText<'_>) -> Self {
            crate::swarm::ClusterSecret::new(s.0).unwrap()
        }
    }

    fn engine(client: Arc<dyn ObjectClient>) -> Arc<FetchEngine> {
        Arc::new(FetchEngine::new(
            client,
            FetchConfig {
                part_size: CHUNK / 2,
                max_in_flight: 8,
                ..FetchConfig::default()
            },
        ))
    }

    /// `clients.len()` nodes on 127.0.0.1 with TLS, all listed; `secrets[i]`
    /// per node.
    async fn cluster(
        clients: Vec<Arc<dyn ObjectClient>>,
        secrets: &[&[u8]],
        t: PeerTransport,
    ) -> Vec<Swarm> {
        cluster_tls(clients, secrets, true, t).await
    }

    /// A TCP listener on 127.0.0.1 whose port number is also free on UDP
    /// (the QUIC endpoint binds the same number).
    pub(crate) async fn listener_with_free_udp() -> TcpListener {
        loop {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            if std::net::UdpSocket::bind(l.local_addr().unwrap()).is_ok() {
                return l;
            }
        }
    }

    async fn cluster_tls(
        clients: Vec<Arc<dyn ObjectClient>>,
        secrets: &[&[u8]],
        tls: bool,
        t: PeerTransport,
    ) -> Vec<Swarm> {
        cluster_with(clients, secrets, tls, t, |_, _| {}).await
    }

    /// [`cluster_tls`] with `tweak(i, config)` applied to node `i`'s config.
    async fn cluster_with(
        clients: Vec<Arc<dyn ObjectClient>>,
        secrets: &[&[u8]],
        tls: bool,
        t: PeerTransport,
        tweak: impl Fn(usize, &mut SwarmConfig),
    ) -> Vec<Swarm> {
        let mut listeners = Vec::new();
        for _ in &clients {
            listeners.push(listener_with_free_udp().await);
        }
        let peers: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let mut nodes = Vec::new();
        for (i, (l, c)) in listeners.into_iter().zip(clients).enumerate() {
            let mut cfg = config(&peers, SocketAddrText(peers[i].clone()), secrets[i], tls, t);
            tweak(i, &mut cfg);
            nodes.push(
                Swarm::start_with_listener(cfg, l, engine(c), "b".into())
                    .await
                    .unwrap(),
            );
        }
        nodes
    }

    async fn wait_alive(nodes: &[Swarm], n: usize) {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while nodes.iter().any(|s| s.peers().alive_ids().len() != n) {
            assert!(
                std::time::Instant::now() < until,
                "peers never became alive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn fetch_all(
        nodes: &[&Swarm],
        meta: &ObjectMeta,
    ) -> Vec<(Result<FetchOutcome, ObjectClientError>, Vec<u8>)> {
        let each: Vec<(&Swarm, ObjectMeta)> = nodes.iter().map(|n| (*n, meta.clone())).collect();
        fetch_each(&each).await
    }

    /// Each node fetches its `ObjectMeta` concurrently.
    async fn fetch_each(
        nodes: &[(&Swarm, ObjectMeta)],
    ) -> Vec<(Result<FetchOutcome, ObjectClientError>, Vec<u8>)> {
        // Every target stays alive until all nodes finish, as in the agent's
        // cache (a node serves chunks only while it holds the object).
        let futs = nodes.iter().map(|(s, meta)| {
            let f = s.fetcher();
            let meta = meta.clone();
            async move {
                let memfd = Arc::new(Memfd::create(&meta.key, meta.size).unwrap());
                let target: Arc<dyn ChunkTarget> = memfd.clone();
                let r = f.fetch(&meta, target, Arc::default()).await;
                (r, memfd)
            }
        });
        let done = futures::future::join_all(futs).await;
        done.into_iter()
            .map(|(r, memfd)| {
                let mut out = vec![0u8; memfd.size() as usize];
                memfd.read_at(0, &mut out).unwrap();
                (r, out)
            })
            .collect()
    }

    /// Three live nodes sharing one store that holds a `size`-byte object
    /// (pseudo-random from `seed`): the store, the object's bytes and meta.
    async fn three_nodes_one_store(
        size: u64,
        seed: u64,
        t: PeerTransport,
    ) -> (Arc<MockObjectClient>, Vec<u8>, ObjectMeta, Vec<Swarm>) {
        let (mock, d) = mock_with(size, seed);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
        let nodes = cluster(clients, &[SECRET, SECRET, SECRET], t).await;
        wait_alive(&nodes, 3).await;
        (mock, d, meta, nodes)
    }

    fn mock_with(size: u64, seed: u64) -> (Arc<MockObjectClient>, Vec<u8>) {
        let mock = Arc::new(MockObjectClient::new("b"));
        let d = data(size, seed);
        mock.put_object("model/shard-1.safetensors", d.clone());
        (mock, d)
    }

    async fn three_nodes_get_exact_bytes_for_about_one_object_of_store_egress(t: PeerTransport) {
        let size = 40 * CHUNK + 1234;
        let (mock, d) = mock_with(size, 1);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        // Without peers: every node pulls the whole object from the store.
        for _ in 0..3 {
            let t = Arc::new(VecTarget::with_len(size as usize));
            StoreFetcher::new(engine(mock.clone()))
                .fetch(&meta, t.clone(), Arc::default())
                .await
                .unwrap();
            assert_eq!(t.contents(), d);
        }
        assert_eq!(mock.bytes_served(), 3 * size);
        mock.reset_stats();

        let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
        let nodes = cluster(clients, &[SECRET, SECRET, SECRET], t).await;
        wait_alive(&nodes, 3).await;
        let refs: Vec<&Swarm> = nodes.iter().collect();
        let results = fetch_all(&refs, &meta).await;
        let mut store_total = 0;
        let mut peer_total = 0;
        for (r, out) in results {
            let o = r.unwrap();
            assert_eq!(out, d);
            assert!(o.fetched.crc64_verified);
            assert_eq!(o.fetched.crc64, ossc_core::crc64::crc64(&d));
            assert_eq!(o.bytes_store + o.bytes_peer, size);
            assert!(o.bytes_peer > size / 3, "{o:?}");
            assert_eq!(o.by_peer.values().sum::<u64>(), o.bytes_peer);
            store_total += o.bytes_store;
            peer_total += o.bytes_peer;
        }
        let served = mock.bytes_served();
        assert_eq!(served, store_total);
        // The configured transport carried the peer bytes.
        let quic_bytes: u64 = nodes
            .iter()
            .map(|n| n.quic().unwrap().bytes_received.load(Ordering::Relaxed))
            .sum();
        let unreachable: u64 = nodes
            .iter()
            .map(|n| n.quic().unwrap().unreachable.load(Ordering::Relaxed))
            .sum();
        assert_eq!(unreachable, 0);
        match t {
            PeerTransport::Quic => assert_eq!(quic_bytes, peer_total),
            PeerTransport::Grpc => assert_eq!(quic_bytes, 0),
        }
        assert_eq!(
            nodes[0].swarm_fetcher().status().unwrap()["transport"],
            t.as_str()
        );
        assert!(served * 10 <= size * 11, "store served {served} for {size}");
        // Traffic per peer is visible in the status section.
        let status = nodes[0].swarm_fetcher().status().unwrap();
        assert_eq!(status["alive"].as_array().unwrap().len(), 3);
        let sent: u64 = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["bytes_sent"].as_u64().unwrap())
            .sum();
        assert!(sent > 0, "{status}");
        for n in nodes {
            n.shutdown().await;
        }
    }

    async fn a_node_with_the_wrong_secret_gets_nothing_and_injects_nothing(t: PeerTransport) {
        // Without TLS the HMAC refuses it (UNAUTHENTICATED); with TLS it
        // cannot even complete a handshake.
        wrong_secret_case(false, t).await;
        wrong_secret_case(true, t).await;
    }

    async fn wrong_secret_case(tls: bool, t: PeerTransport) {
        let size = 12 * CHUNK + 5;
        let (mock, d) = mock_with(size, 2);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
        let wrong: &[u8] = b"Wx3Lr8Tq1Nz6Vb0Kf5Hd9Pj2Mc7Gs4Ya";
        let nodes = cluster_tls(clients, &[SECRET, SECRET, wrong], tls, t).await;
        wait_alive(&nodes[..2], 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            nodes[2].peers().alive_ids().len(),
            1,
            "intruder sees no one"
        );
        assert_eq!(
            nodes[0].peers().alive_ids().len(),
            2,
            "members ignore intruder"
        );

        // A direct FetchChunk signed with the wrong secret is refused.
        let good = nodes[0].peers().self_id().to_string();
        let intruder = nodes[2].peers();
        let peer = intruder.peer(&good).unwrap();
        let mut req = tonic::Request::new(v1::ChunkRequest {
            chunk: Some(v1::ChunkId {
                object: Some(v1::ObjectVersion {
                    bucket: "b".into(),
                    key: meta.key.clone(),
                    etag: meta.etag.clone(),
                    size,
                }),
                chunk_size: CHUNK,
                index: 0,
            }),
            wait_ms: 0,
        });
        intruder
            .secret()
            .sign_request(&mut req, intruder.self_id(), FETCH_CHUNK_METHOD);
        let status = peer.client().fetch_chunk(req).await.unwrap_err();
        let refused = if tls {
            tonic::Code::Unavailable // the TLS handshake fails
        } else {
            tonic::Code::Unauthenticated
        };
        assert_eq!(status.code(), refused, "{status}");
        // Unsigned requests too.
        let unsigned = tonic::Request::new(v1::HelloRequest::default());
        let status = peer.client().hello(unsigned).await.unwrap_err();
        assert_eq!(status.code(), refused, "{status}");

        let results = fetch_all(&[&nodes[0], &nodes[1], &nodes[2]], &meta).await;
        for (i, (r, out)) in results.into_iter().enumerate() {
            let o = r.unwrap();
            assert_eq!(out, d, "node {i}");
            if i == 2 {
                assert_eq!(o.bytes_peer, 0);
                assert_eq!(o.bytes_store, size);
            }
        }
        for n in &nodes[..2] {
            let st = n.swarm_fetcher().status().unwrap();
            for p in st["peers"].as_array().unwrap() {
                if p["id"] == intruder.self_id() {
                    assert_eq!(p["bytes_sent"], 0, "{st}");
                    assert_eq!(p["bytes_received"], 0, "{st}");
                }
            }
        }
    }

    async fn corrupted_chunks_from_a_peer_are_detected_and_bypassed(t: PeerTransport) {
        let size = 16 * CHUNK + 77;
        let (mock, d) = mock_with(size, 3);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        let nodes = cluster(vec![mock.clone(), mock.clone()], &[SECRET, SECRET], t).await;
        wait_alive(&nodes, 2).await;
        nodes[1].server().inject_corruption(true);
        let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
        let (r0, out0) = &results[0];
        let o0 = r0.as_ref().unwrap();
        assert_eq!(*out0, d);
        assert_eq!(o0.bytes_peer, 0, "no corrupted chunk may be kept");
        assert_eq!(o0.bytes_store, size);
        let (r1, out1) = &results[1];
        assert_eq!(*out1, d);
        assert!(r1.as_ref().unwrap().bytes_peer > 0);
        let st = nodes[0].swarm_fetcher().status().unwrap();
        let failures: u64 = st["peers"][0]["failures"].as_u64().unwrap();
        assert!(failures > 0, "{st}");
    }

    async fn bad_bytes_behind_a_consistent_chunk_crc_are_caught_end_to_end(t: PeerTransport) {
        let size = 16 * CHUNK + 9;
        let (mock, d) = mock_with(size, 4);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        // Node 1 sees an inconsistent store (same ETag, one byte different,
        // no CRC header): it records chunk CRCs that match its bad bytes, so
        // only node 0's whole-object check against its store can catch them.
        let bad_store = Arc::new(MockObjectClient::new("b").with_crc64_headers(false));
        let nodes = cluster(vec![mock.clone(), bad_store.clone()], &[SECRET, SECRET], t).await;
        wait_alive(&nodes, 2).await;
        let alive = nodes[0].peers().alive_ids();
        let index = *chunks_owned_by(&alive, nodes[1].peers().self_id(), &version_of(&meta))
            .first()
            .expect("node 1 owns a chunk");
        let mut bad = d.clone();
        bad[(index * CHUNK + 100) as usize] ^= 0x5a;
        bad_store.put_object_with_etag(meta.key.clone(), bad, meta.etag.clone());
        // Node 1 knows no CRC (a listing's meta, a store without the header).
        let unknown = ObjectMeta {
            crc64: None,
            ..meta.clone()
        };
        let results = fetch_each(&[(&nodes[0], meta.clone()), (&nodes[1], unknown)]).await;
        let (r0, out0) = &results[0];
        let o0 = r0.as_ref().unwrap();
        assert_eq!(*out0, d);
        assert!(o0.fetched.crc64_verified);
        assert_eq!(o0.bytes_peer, 0, "every peer chunk was refetched: {o0:?}");
        assert_eq!(o0.bytes_store, size);
        // Node 0 did receive node 1's chunks (then threw them away).
        let st = nodes[1].swarm_fetcher().status().unwrap();
        assert!(st["peers"][0]["bytes_sent"].as_u64().unwrap() > 0, "{st}");
        // Node 1 cannot know better than its store: unverified, not failed.
        assert!(!results[1].0.as_ref().unwrap().fetched.crc64_verified);
    }

    async fn a_dead_peer_falls_back_to_the_store_and_leaves_the_ring(t: PeerTransport) {
        let size = 24 * CHUNK + 1;
        let (mock, d, meta, mut nodes) = three_nodes_one_store(size, 5, t).await;
        let dead = nodes.pop().unwrap();
        let dead_id = dead.peers().self_id().to_string();
        dead.shutdown().await;
        // Still believed alive: pulls to it fail and fall back.
        assert!(nodes[0].peers().is_alive(&dead_id));
        let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
        for (r, out) in &results {
            r.as_ref().unwrap();
            assert_eq!(*out, d);
        }
        // After DEAD_AFTER without heartbeats it leaves the alive set.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while nodes[0].peers().is_alive(&dead_id) {
            assert!(std::time::Instant::now() < until);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(nodes[0].peers().alive_ids().len(), 2);
        // A second object now splits between the two survivors only.
        mock.put_object("model/shard-2.safetensors", d.clone());
        let meta2 = mock.head("model/shard-2.safetensors").await.unwrap();
        mock.reset_stats();
        let results = fetch_all(&[&nodes[0], &nodes[1]], &meta2).await;
        for (r, out) in &results {
            assert!(r.as_ref().unwrap().bytes_peer > 0);
            assert_eq!(*out, d);
        }
        assert!(mock.bytes_served() * 10 <= size * 11);
    }

    /// Node 0 holds `d` (all chunks recorded) as object `version`, kept alive
    /// by the returned target.
    fn hold(node: &Swarm, version: &ObjectVersion, d: &[u8]) -> Arc<dyn ChunkTarget> {
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(d.len()));
        target.write_at(0, d).unwrap();
        let book = node
            .swarm_fetcher()
            .books()
            .open(version.clone(), CHUNK, &target);
        for i in 0..book.n_chunks() {
            let r = book.range(i);
            book.record(
                i,
                ossc_core::crc64::crc64(&d[r.start as usize..r.end as usize]),
            );
        }
        target
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_wrong_secret_node_cannot_complete_a_quic_handshake_and_gets_nothing() {
        use crate::swarm::quic::{QuicCrypto, QuicNode};
        use crate::swarm::tls::PeerTls;
        use crate::swarm::ClusterSecret;
        let size = 4 * CHUNK;
        let d = data(size, 6);
        let mock = Arc::new(MockObjectClient::new("b"));
        let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock];
        let nodes = cluster(clients, &[SECRET, SECRET], PeerTransport::Quic).await;
        wait_alive(&nodes, 2).await;
        let version = test_version(size);
        let _held = hold(&nodes[0], &version, &d);
        let id = ChunkId {
            object: version.clone(),
            index: 1,
        };
        let range = CHUNK..2 * CHUNK;
        // A member pulls the chunk over QUIC.
        let got = VecTarget::with_len(size as usize);
        let crc = nodes[1]
            .swarm_fetcher()
            .pull_chunk(nodes[0].peers().self_id(), &id, &got)
            .await
            .unwrap();
        assert_eq!(
            crc,
            ossc_core::crc64::crc64(&d[range.start as usize..range.end as usize])
        );
        assert_eq!(
            got.contents()[range.start as usize..range.end as usize],
            d[range.start as usize..range.end as usize]
        );
        assert_eq!(
            nodes[1]
                .quic()
                .unwrap()
                .bytes_received
                .load(Ordering::Relaxed),
            CHUNK
        );

        let good = nodes[0].local_addr();
        let request = v1::ChunkRequest {
            chunk: Some(v1::ChunkId {
                object: Some((&version).into()),
                chunk_size: CHUNK,
                index: 1,
            }),
            wait_ms: 0,
        };
        let wrong = ClusterSecret::new(b"Wx3Lr8Tq1Nz6Vb0Kf5Hd9Pj2Mc7Gs4Ya").unwrap();
        let right = ClusterSecret::new(SECRET).unwrap();
        let wrong_tls = PeerTls::new(&wrong, "127.0.0.1:9").unwrap();
        let right_tls = PeerTls::new(&right, "127.0.0.1:9").unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let timeout = Duration::from_secs(2);
        let server = nodes[1].server().clone();
        let out = VecTarget::with_len(size as usize);
        // 1. Wrong secret throughout: neither side trusts the other's CA.
        let intruder = QuicNode::bind(
            any,
            QuicCrypto::from_tls(&wrong_tls).unwrap(),
            server.clone(),
        )
        .unwrap();
        let r = intruder
            .fetch(
                good,
                &wrong,
                "127.0.0.1:9",
                request.clone(),
                range.clone(),
                &out,
                timeout,
                timeout,
            )
            .await;
        assert!(matches!(r, Err(QuicPullError::Unreachable(_))), "{r:?}");
        // 2. Trusting our CA does not help: it can only present a certificate
        // from its own CA, which the server refuses.
        let crypto = QuicCrypto::from_pems(
            right_tls.ca_pem(),
            wrong_tls.cert_pem(),
            wrong_tls.key_pem(),
        )
        .unwrap();
        let half = QuicNode::bind(any, crypto, server.clone()).unwrap();
        let r = half
            .fetch(
                good,
                &wrong,
                "127.0.0.1:9",
                request.clone(),
                range.clone(),
                &out,
                timeout,
                timeout,
            )
            .await;
        assert!(r.is_err(), "{r:?}");
        // 3. Valid certificates but a tag under the wrong secret: refused.
        let forged =
            QuicNode::bind(any, QuicCrypto::from_tls(&right_tls).unwrap(), server).unwrap();
        let r = forged
            .fetch(
                good,
                &wrong,
                "127.0.0.1:9",
                request,
                range,
                &out,
                timeout,
                timeout,
            )
            .await;
        match r {
            Err(QuicPullError::Failed(m)) => assert!(m.contains("Unauthenticated"), "{m}"),
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
        assert!(out.contents().iter().all(|b| *b == 0), "nothing written");
        for q in [&intruder, &half, &forged] {
            assert_eq!(q.bytes_received.load(Ordering::Relaxed), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_peer_without_quic_is_pulled_from_over_grpc() {
        let size = 12 * CHUNK + 3;
        let (mock, d) = mock_with(size, 7);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        let listeners = [
            listener_with_free_udp().await,
            listener_with_free_udp().await,
        ];
        let peers: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        // Something else holds node 1's UDP port (and swallows datagrams):
        // node 1 runs without QUIC, node 0's handshakes time out.
        let _squatter = std::net::UdpSocket::bind(&peers[1]).unwrap();
        let mut nodes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let cfg = config(
                &peers,
                SocketAddrText(peers[i].clone()),
                SECRET,
                true,
                PeerTransport::Quic,
            );
            let s = Swarm::start_with_listener(cfg, l, engine(mock.clone()), "b".into())
                .await
                .unwrap();
            nodes.push(s);
        }
        assert!(nodes[0].quic().is_some());
        assert!(nodes[1].quic().is_none(), "node 1 could not bind UDP");
        wait_alive(&nodes, 2).await;
        let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
        for (r, out) in &results {
            assert_eq!(*out, d);
            assert!(r.as_ref().unwrap().bytes_peer > 0, "{r:?}");
        }
        // Node 0 tried QUIC, gave up on node 1 and used gRPC for its pulls.
        let q = nodes[0].quic().unwrap();
        assert!(q.unreachable.load(Ordering::Relaxed) > 0);
        assert_eq!(q.bytes_received.load(Ordering::Relaxed), 0);
        // Node 1 (QUIC configured but unbound) pulled over gRPC too.
        assert_eq!(nodes[1].swarm_fetcher().transport(), "grpc");
    }

    /// Object version `b/k` with ETag `"e"` and `size` bytes.
    fn test_version(size: u64) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            etag: "\"e\"".into(),
            size,
        }
    }

    fn version_of(meta: &ObjectMeta) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: meta.key.clone(),
            etag: meta.etag.clone(),
            size: meta.size,
        }
    }

    /// The chunks of `version` (at [`CHUNK`]) that the ring over `alive`
    /// gives to `owner`.
    fn chunks_owned_by(alive: &[String], owner: &str, version: &ObjectVersion) -> Vec<u64> {
        (0..version.size.div_ceil(CHUNK))
            .filter(|i| {
                let id = ChunkId {
                    object: version.clone(),
                    index: *i,
                };
                ring::owner(alive.iter().map(String::as_str), &id) == Some(owner)
            })
            .collect()
    }

    /// `puller` pulls chunk `index` of `version` from `from` into `into`, in
    /// the background.
    fn spawn_pull(
        puller: &Swarm,
        from: &Swarm,
        version: &ObjectVersion,
        index: u64,
        into: &Arc<VecTarget>,
    ) -> tokio::task::JoinHandle<Result<u64, String>> {
        let fetcher = puller.swarm_fetcher().clone();
        let from = from.peers().self_id().to_string();
        let into = into.clone();
        let id = ChunkId {
            object: version.clone(),
            index,
        };
        tokio::spawn(async move { fetcher.pull_chunk(&from, &id, &*into).await })
    }

    async fn a_chunk_is_streamed_to_peers_while_it_arrives(t: PeerTransport) {
        let size = 4 * CHUNK;
        let d = data(size, 8);
        let mock = Arc::new(MockObjectClient::new("b"));
        let nodes = cluster(vec![mock.clone(), mock], &[SECRET, SECRET], t).await;
        wait_alive(&nodes, 2).await;
        let version = test_version(size);
        // Node 0 is "downloading" the object: chunk 1 lands in two halves.
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(size as usize));
        let book = nodes[0]
            .swarm_fetcher()
            .books()
            .open(version.clone(), CHUNK, &target);
        let sink = RecordingSink {
            target: target.clone(),
            book: book.clone(),
        };
        let (a, mid, b) = (
            CHUNK as usize,
            (CHUNK + CHUNK / 2) as usize,
            2 * CHUNK as usize,
        );
        sink.write_at(a as u64, &d[a..mid]).unwrap();
        let got = Arc::new(VecTarget::with_len(size as usize));
        let pull = spawn_pull(&nodes[1], &nodes[0], &version, 1, &got);
        // The first half reaches the puller before the chunk is complete.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while got.contents()[a..mid] != d[a..mid] {
            assert!(
                std::time::Instant::now() < until,
                "the first half never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Nothing more arrives for a while (keep-alives hold the stream open).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!pull.is_finished(), "the pull ended before the chunk did");
        assert!(got.contents()[mid..b].iter().all(|x| *x == 0));
        sink.write_at(mid as u64, &d[mid..b]).unwrap();
        book.record(1, ossc_core::crc64::crc64(&d[a..b]));
        let crc = pull.await.unwrap().unwrap();
        assert_eq!(crc, ossc_core::crc64::crc64(&d[a..b]));
        assert_eq!(got.contents()[a..b], d[a..b]);

        // A chunk whose recorded CRC disagrees with the streamed bytes (the
        // owner refetched different bytes) is rejected, not kept.
        sink.write_at(b as u64, &d[b..b + CHUNK as usize]).unwrap();
        let other = Arc::new(VecTarget::with_len(size as usize));
        let pull = spawn_pull(&nodes[1], &nodes[0], &version, 2, &other);
        tokio::time::sleep(Duration::from_millis(300)).await;
        book.record(2, 0x1234);
        let err = pull.await.unwrap().unwrap_err();
        assert!(err.contains("CRC-64 mismatch"), "{err}");
        drop(target);
    }

    async fn holders_serve_the_chunks_their_owners_lack(t: PeerTransport) {
        let size = 12 * CHUNK + 11;
        let (mock, d, meta, nodes) = three_nodes_one_store(size, 9, t).await;
        // Node 1 holds the object; node 0 (owner of about a third of the
        // chunks) knows nothing of it; node 2 (owner of another third) loads.
        let _held = hold(&nodes[1], &version_of(&meta), &d);
        mock.reset_stats();
        let results = fetch_each(&[(&nodes[2], meta.clone())]).await;
        let (r, out) = &results[0];
        let o = r.as_ref().unwrap();
        assert_eq!(*out, d);
        assert!(o.fetched.crc64_verified);
        assert_eq!(o.bytes_store, 0, "every chunk had a holder: {o:?}");
        assert_eq!(mock.bytes_served(), 0);
        assert_eq!(
            o.by_peer.keys().collect::<Vec<_>>(),
            [nodes[1].peers().self_id()],
            "{o:?}"
        );
        assert_eq!(o.bytes_peer, size);
        // Node 1 answers Have with its bitmap and its idle upload figure.
        let have = nodes[1].server().have(&[(&version_of(&meta)).into()]);
        assert_eq!(have.maps.len(), 1);
        assert!(have.maps[0].bitmap.iter().all(|b| *b != 0));
        assert!(have.idle_upload_bytes_per_sec > 0);
    }

    async fn pulls_avoid_a_holder_without_idle_upload_bandwidth(t: PeerTransport) {
        let size = 16 * CHUNK + 5;
        let (mock, d) = mock_with(size, 10);
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
        // Node 0's upload is "saturated" (capacity 1 byte/s: it reports the
        // floor, 1 MB/s); node 1 has bandwidth to spare (10^15 bytes/s).
        let nodes = cluster_with(clients, &[SECRET, SECRET, SECRET], true, t, |i, c| {
            c.upload_capacity = match i {
                0 => Some(1),
                1 => Some(1_000_000_000_000_000),
                _ => None,
            };
        })
        .await;
        wait_alive(&nodes, 3).await;
        let version = version_of(&meta);
        let _h0 = hold(&nodes[0], &version, &d);
        let _h1 = hold(&nodes[1], &version, &d);
        let owned_by_0 = chunks_owned_by(
            &nodes[2].peers().alive_ids(),
            nodes[0].peers().self_id(),
            &version,
        );
        assert!(
            !owned_by_0.is_empty(),
            "node 0 owns no chunk of this object"
        );
        mock.reset_stats();
        let results = fetch_each(&[(&nodes[2], meta.clone())]).await;
        let (r, out) = &results[0];
        let o = r.as_ref().unwrap();
        assert_eq!(*out, d);
        assert_eq!(o.bytes_store, 0);
        // Even the chunks node 0 owns came from node 1 (picked with odds of
        // 10^9 to 1).
        assert_eq!(
            o.by_peer.get(nodes[1].peers().self_id()).copied(),
            Some(size),
            "{o:?}"
        );
        let st = nodes[2].swarm_fetcher().status().unwrap();
        assert_eq!(
            st["peer_idle_upload_bytes_per_sec"][nodes[0].peers().self_id()],
            crate::swarm::upload::IDLE_FLOOR,
            "{st}"
        );
    }

    async fn a_dead_owners_chunks_are_fetched_once_by_their_new_owners(t: PeerTransport) {
        let size = 30 * CHUNK + 3;
        let (mock, d, meta, mut nodes) = three_nodes_one_store(size, 11, t).await;
        // Node 0 has started the object but its download hangs: pulls of its
        // chunks wait on it (keep-alives), until it dies.
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(size as usize));
        let _book = nodes[0]
            .swarm_fetcher()
            .books()
            .open(version_of(&meta), CHUNK, &target);
        mock.reset_stats();
        let dying = nodes.remove(0);
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            drop(dying);
        });
        let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
        killer.await.unwrap();
        let mut peer_bytes = 0;
        for (r, out) in &results {
            let o = r.as_ref().unwrap();
            assert_eq!(*out, d);
            assert!(o.fetched.crc64_verified);
            peer_bytes += o.bytes_peer;
        }
        // Every byte left the store once: the dead owner's chunks were
        // reassigned to the survivors, not fetched by each of them.
        assert_eq!(mock.bytes_served(), size);
        assert_eq!(peer_bytes, size);
    }

    async fn a_corrupting_peers_chunks_are_refetched_once_for_the_swarm(t: PeerTransport) {
        let size = 24 * CHUNK + 17;
        let (mock, d, meta, nodes) = three_nodes_one_store(size, 12, t).await;
        nodes[2].server().inject_corruption(true);
        let version = version_of(&meta);
        let alive = nodes[0].peers().alive_ids();
        let share_of_2: u64 = chunks_owned_by(&alive, nodes[2].peers().self_id(), &version)
            .into_iter()
            .map(|i| super::super::chunk_book::chunk_range(size, CHUNK, i))
            .map(|r| r.end - r.start)
            .sum();
        assert!(share_of_2 > 0);
        mock.reset_stats();
        let results = fetch_all(&[&nodes[0], &nodes[1], &nodes[2]], &meta).await;
        for (i, (r, out)) in results.iter().enumerate() {
            let o = r.as_ref().unwrap();
            assert_eq!(*out, d, "node {i}");
            assert!(o.fetched.crc64_verified);
            if i < 2 {
                assert!(
                    !o.by_peer.contains_key(nodes[2].peers().self_id()),
                    "node {i} kept bytes from the corrupting peer: {o:?}"
                );
            }
        }
        // The corrupting node's share left the store twice (once to it, once
        // to its chunks' next owners), everything else once.
        assert_eq!(mock.bytes_served(), size + share_of_2);
    }

    /// Each scenario runs once per transport: `by_transport::<name>::{quic,grpc}`.
    /// Node 1 forges a chunk: its bytes differ from the store's, and the
    /// chunk CRC it sends matches them. The store declares no CRC-64 (an S3
    /// store) but a SHA-256: node 0 catches the forgery with it and takes the
    /// chunk from the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn forged_chunks_behind_matching_crcs_are_caught_by_the_store_sha256() {
        let size = 16 * CHUNK + 9;
        let key = "model/shard-1.safetensors";
        let store = Arc::new(
            MockObjectClient::new("b")
                .with_crc64_headers(false)
                .with_sha256_headers(true),
        );
        let d = data(size, 4);
        store.put_object(key, d.clone());
        let meta = store.head(key).await.unwrap();
        assert_eq!(meta.crc64, None);
        let forger = Arc::new(MockObjectClient::new("b").with_crc64_headers(false));
        let nodes = cluster(
            vec![store.clone(), forger.clone()],
            &[SECRET, SECRET],
            PeerTransport::Grpc,
        )
        .await;
        wait_alive(&nodes, 2).await;
        let alive = nodes[0].peers().alive_ids();
        let owned = chunks_owned_by(&alive, nodes[1].peers().self_id(), &version_of(&meta));
        assert!(!owned.is_empty(), "node 1 owns a chunk");
        let mut forged = d.clone();
        for index in &owned {
            forged[(index * CHUNK) as usize] ^= 0x5a;
        }
        forger.put_object_with_etag(key, forged, meta.etag.clone());
        // As listed: neither a CRC-64 nor other digests.
        let listed = ObjectMeta {
            crc64: None,
            checksums: Default::default(),
            ..meta.clone()
        };
        let results = fetch_each(&[(&nodes[0], listed.clone()), (&nodes[1], listed)]).await;
        let (r0, out0) = &results[0];
        let o0 = r0.as_ref().unwrap();
        assert!(*out0 == d, "node 0 kept forged bytes");
        assert_eq!(o0.verified_by, Some("sha256"));
        assert!(!o0.fetched.crc64_verified);
        assert_eq!(o0.bytes_peer, 0, "every peer chunk was refetched: {o0:?}");
        assert_eq!(o0.bytes_store, size);
        let st = nodes[1].swarm_fetcher().status().unwrap();
        assert!(st["peers"][0]["bytes_sent"].as_u64().unwrap() > 0, "{st}");
        // The forger's own store declares nothing: it cannot know better.
        assert_eq!(results[1].0.as_ref().unwrap().verified_by, None);
    }

    /// With `peer.requireVerifiedObjects`, an object without a cryptographic
    /// store digest comes from the store alone; one with a SHA-256 is shared.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn require_verified_objects_keeps_unverifiable_objects_off_peers() {
        let size = 12 * CHUNK + 3;
        let key = "model/shard-1.safetensors";
        for sha256 in [false, true] {
            let store = Arc::new(
                MockObjectClient::new("b")
                    .with_crc64_headers(true)
                    .with_sha256_headers(sha256),
            );
            let d = data(size, 6);
            store.put_object(key, d.clone());
            let mut meta = store.head(key).await.unwrap();
            meta.checksums = Default::default();
            let clients: Vec<Arc<dyn ObjectClient>> = vec![store.clone(), store.clone()];
            let nodes = cluster_with(
                clients,
                &[SECRET, SECRET],
                true,
                PeerTransport::Grpc,
                |_, c| c.require_verified = true,
            )
            .await;
            wait_alive(&nodes, 2).await;
            let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
            let mut from_peers = 0;
            for (r, out) in &results {
                let o = r.as_ref().unwrap();
                assert!(*out == d);
                from_peers += o.bytes_peer;
                if sha256 {
                    assert_eq!(o.verified_by, Some("sha256"), "{o:?}");
                } else {
                    assert_eq!(o.bytes_peer, 0, "{o:?}");
                    assert_eq!(o.bytes_store, size);
                    assert_eq!(o.verified_by, Some("crc64"));
                }
            }
            if sha256 {
                assert!(from_peers > 0, "peers were used for a verifiable object");
            }
        }
    }

    macro_rules! both_transports {
        ($($name:ident),* $(,)?) => {
            mod by_transport {
                $(pub mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn quic() {
                        super::super::$name(crate::swarm::PeerTransport::Quic).await
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn grpc() {
                        super::super::$name(crate::swarm::PeerTransport::Grpc).await
                    }
                })*
            }
        };
    }

    both_transports!(
        three_nodes_get_exact_bytes_for_about_one_object_of_store_egress,
        a_node_with_the_wrong_secret_gets_nothing_and_injects_nothing,
        corrupted_chunks_from_a_peer_are_detected_and_bypassed,
        bad_bytes_behind_a_consistent_chunk_crc_are_caught_end_to_end,
        a_dead_peer_falls_back_to_the_store_and_leaves_the_ring,
        a_chunk_is_streamed_to_peers_while_it_arrives,
        holders_serve_the_chunks_their_owners_lack,
        pulls_avoid_a_holder_without_idle_upload_bandwidth,
        a_dead_owners_chunks_are_fetched_once_by_their_new_owners,
        a_corrupting_peers_chunks_are_refetched_once_for_the_swarm,
    );
}

//! The peer-assisted [`ObjectFetcher`]: own chunks from the store, the rest
//! from peers, every byte verified.
//!
//! Design decisions:
//! - **Sources.** A chunk's owner is computed by rendezvous hashing over the
//!   alive set ([`super::ring`]). Its sources are the owner, which streams
//!   the chunk *while it arrives from the store* (cut-through, see
//!   [`super::chunk_server`]), every alive peer whose have-map shows the
//!   chunk complete ([`super::holders`]), and, on a chunk's first pull, this
//!   node's parent in the chunk's relay order once that parent has bytes of
//!   it: every node serves what it is still receiving (relay), so in a
//!   simultaneous start each chunk spreads down a tree of fan-out 2 instead
//!   of its owner uploading it N − 1 times ([`super::sources`], which also
//!   argues why relaying cannot form a cycle). One source is picked weighted
//!   by idle upload bandwidth and by how far ahead it is. A chunk this node
//!   owns comes from the store, unless a peer already holds it complete (a
//!   late joiner takes over chunks the others fetched long ago).
//! - **Store fetches** go through the fetch engine
//!   ([`FetchEngine::fetch_range_in_parts`]: same in-flight limit, FIFO and
//!   If-Match pinning as a plain fetch), into a [`RecordingSink`] so peers
//!   can be served the bytes as they land; pulls write through one too
//!   (relay). A chunk is one ranged GET, not the engine's two 8 MiB parts:
//!   streams follow the chunk's prefix, and with two parts in parallel the
//!   first half arrived at half the chunk's rate while the second half
//!   could go out only once the first had landed, so half of every chunk
//!   in flight reached the peers after the store was done (measured at
//!   N = 4 and 8, 100 Mbit/s: 1.32× and 1.84× one node's time; see
//!   docs/benchmarks.md). Pulls run under a *separate*
//!   semaphore ([`DEFAULT_PULL_CONCURRENCY`]), so pulls waiting for an owner
//!   never hold store slots and never starve own fetches — which is also
//!   why the swarm cannot deadlock: every owner fetches its own chunks
//!   unconditionally. A pull waiting for its relay parent to start holds no
//!   slot either.
//! - **Failures.** Each object's fetch keeps a set of *excluded* peers
//!   ([`super::source_record`]):
//!   those that will never hold the object (NOT_FOUND from an owner whose
//!   have-map answer declined it, or that did not start within the peer
//!   wait) or sent bytes that are not the chunk (CRC mismatch, bad frames;
//!   logged with the peer's id). The ring for that object is computed over
//!   the alive peers minus the excluded ones, so their chunks are
//!   *reassigned* to the next owner — the next-highest weight — which
//!   fetches them from the store once and shares them, instead of every
//!   node fetching them itself. A source declared dead mid-pull is replaced
//!   the same way (membership drops it from the alive set). After a failed
//!   pull the chunk is forgotten here first, so streams this node relayed
//!   from it fail and their pullers pull again (never a wrong byte).
//! - **Start skew.** NOT_FOUND from an alive owner that did not decline the
//!   object means "not started yet" (its agent starts it when asked, see
//!   [`super::unheld`]): the pull is asked again with backoff for up to the
//!   peer wait, not sent to the store.
//! - **A slow source is not a dead one.** A relay or holder whose stream
//!   fails, breaks or stalls is replaced by the owner or a complete holder
//!   at once, and so is an owner whose chunk another peer holds complete.
//!   Either becomes a *suspect* for the rest of the object's fetch: later
//!   picks leave it out while anyone else can serve the chunk, so a peer
//!   that claims every chunk and 100 Gbit/s of idle upload but stalls costs
//!   at most one patience per pull slot per object. While another peer
//!   could serve the chunk, a source that claims the chunk complete gets a
//!   short patience instead of the peer wait and must keep a minimum rate
//!   ([`super::source_record`]). Otherwise the owner's
//!   broken or stalled stream counts as a death if
//!   membership confirms it within its detection delay (a killed process
//!   resets its connections before it misses heartbeats); otherwise the
//!   owner lives and is pulled again. Only the owner's error statuses (such
//!   as no progress past the wait) send the chunk to the store at once, with
//!   a warning naming the peer. At most [`MAX_PEER_ATTEMPTS`] pulls are
//!   made before the store.
//! - **Transport.** Pulls go through a [`ChunkPuller`] chosen from the
//!   configuration ([`super::transport`]): this module never names a wire,
//!   and its decisions above read only the [`PullError`] kind, so they are
//!   the same over every transport.
//! - **Integrity.** A pulled chunk is written into the target, its CRC-64
//!   computed while receiving and compared with the CRC the owner recorded
//!   from the store (sent after the last byte). Only then is it recorded in
//!   this node's [`ChunkBook`], and only then does a stream this node relays
//!   of it get its CRC. The finished object is checked end to end against
//!   the store ([`super::end_to_end`]) before the target is handed out.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::{ClientError, ObjectClientError, ObjectMeta};
use ossc_proto::v1;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::chunk_book::{BookRegistry, ChunkBook, ChunkId, ObjectVersion, RecordingSink};
use super::end_to_end::{self, ChunkDone, ChunkSource};
use super::holders::{Holders, HAVE_REFRESH};
use super::peer_set::{Peer, PeerSet};
use super::source_record::{Patience, SourceRecord, MIN_HOLDER_RATE};
use super::sources::{SourceKind, Sources};
use super::transport::{self, ChunkPull, ChunkPuller, PullError};
use crate::object_source::verify::store_checksums;
use crate::object_source::{fetch_from_store, ChunkTarget, FetchOutcome, ObjectFetcher};
use after_failure::{Attempts, Failed};

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
/// Pulls made for one chunk before the store: a failed relay, a dead
/// owner, a stale holder, then the next owner. Asking again an owner that
/// has not started the object does not count.
pub const MAX_PEER_ATTEMPTS: usize = 4;
/// First pause before asking again an owner that has not started the
/// object; it doubles up to [`MAX_NOT_STARTED_BACKOFF`].
pub const NOT_STARTED_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_NOT_STARTED_BACKOFF: Duration = Duration::from_secs(2);
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
    /// How chunks are pulled (the configured transport).
    puller: Arc<dyn ChunkPuller>,
    /// What peers last said they hold.
    holders: Holders,
    /// Bytes pulled and kept, by what the source was taken for (owner,
    /// holder, relay).
    pulled: [AtomicU64; 3],
    /// Draws for weighted picks (seeded from entropy; tests may fix it).
    draws: Mutex<StdRng>,
}

/// See the module docs.
pub struct SwarmFetcher {
    shared: Arc<Shared>,
}

impl SwarmFetcher {
    /// A fetcher that pulls over gRPC (the transport every node serves).
    pub fn new(
        engine: Arc<FetchEngine>,
        peers: Arc<PeerSet>,
        books: Arc<BookRegistry>,
        bucket: String,
        settings: PullSettings,
    ) -> SwarmFetcher {
        let puller = transport::default_puller();
        SwarmFetcher::with_transport(engine, peers, books, bucket, settings, puller)
    }

    /// A fetcher that pulls through `puller` (a node's configured
    /// transport and its fallback, see [`super::transport::start`]).
    pub fn with_transport(
        engine: Arc<FetchEngine>,
        peers: Arc<PeerSet>,
        books: Arc<BookRegistry>,
        bucket: String,
        settings: PullSettings,
        puller: Arc<dyn ChunkPuller>,
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
                puller,
                holders: Holders::default(),
                pulled: Default::default(),
                draws: Mutex::new(StdRng::from_entropy()),
            }),
        }
    }

    pub fn peers(&self) -> &Arc<PeerSet> {
        &self.shared.peers
    }

    /// Makes this fetcher's weighted picks follow `seed` (reproducible
    /// tests).
    #[cfg(test)]
    pub(crate) fn seed_picks(&self, seed: u64) {
        *self.shared.draws.lock().unwrap() = StdRng::seed_from_u64(seed);
    }

    /// The object versions this node holds (and serves to peers).
    pub fn books(&self) -> &Arc<BookRegistry> {
        &self.shared.books
    }

    /// The config name of the transport this fetcher pulls with ("quic",
    /// "grpc").
    pub fn transport(&self) -> &'static str {
        self.shared.puller.name()
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
        let patience = Patience::owner(self.shared.settings.peer_wait);
        self.shared
            .pull(&peer, id, SourceKind::Owner, patience, range, target)
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
            let by_transport = transport::pulls_by_transport_json(&*self.shared.puller);
            o.insert("pulls_by_transport".into(), by_transport);
            o.insert("objects_held".into(), self.shared.books.len().into());
            let idle: serde_json::Map<String, serde_json::Value> = self
                .shared
                .holders
                .idle_by_peer()
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            o.insert("peer_idle_upload_bytes_per_sec".into(), idle.into());
            let pulled = |k: SourceKind| self.shared.pulled[k as usize].load(Ordering::Relaxed);
            o.insert(
                "bytes_pulled_by_source".into(),
                serde_json::json!({
                    "owner": pulled(SourceKind::Owner),
                    "holder": pulled(SourceKind::Holder),
                    "relay": pulled(SourceKind::Relay),
                }),
            );
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
        let record: Arc<SourceRecord> = Arc::default();
        // Have-maps: one round now (a late joiner finds holders for its first
        // chunks), then in the background while the chunks arrive.
        // (Declared first, dropped last: the refresher stops before the
        // maps are forgotten.)
        let _forget = ForgetMaps(&self.holders, &book.version);
        self.holders.refresh(&self.peers, &book.version).await;
        let _refresher = AbortOnDrop(tokio::spawn({
            let me = self.clone();
            let version = book.version.clone();
            async move {
                let mut tick = tokio::time::interval(HAVE_REFRESH);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    me.holders.refresh(&me.peers, &version).await;
                }
            }
        }));
        let mut set: JoinSet<Result<ChunkDone, ObjectClientError>> = JoinSet::new();
        for index in 0..n {
            let (me, meta, book, target, progress, record) = (
                self.clone(),
                meta.clone(),
                book.clone(),
                target.clone(),
                progress.clone(),
                record.clone(),
            );
            set.spawn(async move {
                me.fetch_chunk(&meta, &book, index, target, progress, &record)
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
        let chunks: Vec<ChunkDone> = done
            .into_iter()
            .map(|c| c.expect("every chunk recorded"))
            .collect();
        end_to_end::settle(&self.engine, &meta, book, &target, &progress, chunks).await
    }

    /// A uniform draw in `[0, 1)` for a weighted pick.
    fn draw(&self) -> f64 {
        self.draws.lock().unwrap_or_else(|p| p.into_inner()).gen()
    }

    /// Where pulls of a chunk may go, by this node's membership and the
    /// peers' have-maps.
    fn sources(&self) -> Sources<'_> {
        Sources {
            peers: &self.peers,
            holders: &self.holders,
            peer_wait: self.settings.peer_wait,
        }
    }

    async fn fetch_chunk(
        &self,
        meta: &ObjectMeta,
        book: &Arc<ChunkBook>,
        index: u64,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
        record: &SourceRecord,
    ) -> Result<ChunkDone, ObjectClientError> {
        let id = ChunkId {
            object: book.version.clone(),
            index,
        };
        let range = book.range(index);
        let len = range.end - range.start;
        // Pulled bytes advance the book as they land: peers may be served
        // them meanwhile (relay).
        let sink = Arc::new(RecordingSink {
            target,
            book: book.clone(),
        });
        let mut at = Attempts::default();
        self.sources().await_relay(&id, record).await;
        while at.count < MAX_PEER_ATTEMPTS {
            let first = at.count == 0;
            // A chunk with no peer source goes to the store without waiting
            // for a pull slot (own chunks never queue behind pulls: no
            // deadlock). Otherwise the source is picked again once a slot is
            // free, so the pick sees current have-maps, deaths, exclusions
            // and suspects.
            let pick = || {
                self.sources()
                    .pick(&id, len, first, &at.tried, record, self.draw())
            };
            if pick().is_none() {
                break;
            }
            let Ok(permit) = self.pulls.acquire().await else {
                break;
            };
            let Some(picked) = pick() else {
                break;
            };
            let source = picked.source;
            let Some(peer) = self.peers.peer(&source.peer) else {
                at.tried.insert(source.peer);
                continue;
            };
            at.count += 1;
            let asked_at = Instant::now();
            book.begin(index);
            let patience = Patience::of(&source, picked.alternative, len, self.settings.peer_wait);
            let pulled = self
                .pull_while_alive(&peer, &id, source.kind, patience, range.clone(), &*sink)
                .await;
            drop(permit);
            match pulled {
                Ok(crc) => {
                    book.record(index, crc);
                    peer.bytes_received.fetch_add(len, Ordering::Relaxed);
                    progress.bytes_done.fetch_add(len, Ordering::Relaxed);
                    self.pulled[source.kind as usize].fetch_add(len, Ordering::Relaxed);
                    return Ok(ChunkDone {
                        index,
                        crc,
                        source: ChunkSource::Peer(source.peer),
                        store_bytes: 0,
                    });
                }
                Err(e) => {
                    // Streams relayed from this download fail now.
                    book.forget(index);
                    let failed = Failed {
                        peer: &peer,
                        source: &source,
                        asked_at,
                    };
                    let error = (source.peer.clone(), e.to_string());
                    let again = self
                        .after_failure(meta, &id, failed, e, &mut at, record)
                        .await;
                    if !again || at.count >= MAX_PEER_ATTEMPTS {
                        tracing::warn!(peer = %error.0, key = %meta.key, chunk = index, error = %error.1, attempts = at.count, "pull from peer failed; fetching the chunk from the store");
                        break;
                    }
                }
            }
        }
        book.begin(index);
        // One GET per chunk: its bytes land in order, so peers are streamed
        // all of it while it arrives (see the module docs).
        let got = self
            .engine
            .fetch_range_in_parts(meta, range, len, sink, progress)
            .await?;
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

    /// [`Shared::pull`], abandoned as soon as membership declares `peer`
    /// down (checked every [`DEAD_PEER_CHECK`]; a suspicion alone does not
    /// abandon a stream that keeps delivering, see [`PeerSet::is_up`]) or past the `patience`'s
    /// bound on the whole pull ([`PullError::Lost`]). A killed or partitioned
    /// owner then costs its pending chunks the membership's detection delay,
    /// not the full peer wait each: with
    /// QUIC a killed peer sends no reset, so its pulls would otherwise hang
    /// until their timeouts, one round of pull permits after another.
    async fn pull_while_alive(
        &self,
        peer: &Peer,
        id: &ChunkId,
        kind: SourceKind,
        patience: Patience,
        range: Range<u64>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let pull = self.pull(peer, id, kind, patience, range, target);
        tokio::pin!(pull);
        let too_slow = async {
            match patience.whole {
                Some(whole) => tokio::time::sleep(whole).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(too_slow);
        let mut check = tokio::time::interval(DEAD_PEER_CHECK);
        loop {
            tokio::select! {
                r = &mut pull => return r,
                _ = &mut too_slow => {
                    return Err(PullError::Lost(format!(
                        "the source delivered below {MIN_HOLDER_RATE} bytes/s"
                    )));
                }
                _ = check.tick() => {
                    if !self.peers.is_up(&peer.id) {
                        return Err(PullError::Dead);
                    }
                }
            }
        }
    }

    /// Pulls chunk `id` (`range` of the object) from `peer`, taken for a
    /// `kind` of source, into `target` with the configured transport,
    /// going without data at most `patience.without_data`; returns its
    /// verified CRC-64. The caller holds a pull permit.
    async fn pull(
        &self,
        peer: &Peer,
        id: &ChunkId,
        kind: SourceKind,
        patience: Patience,
        range: Range<u64>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let wait = patience.without_data;
        let pull = ChunkPull {
            secret: self.peers.secret(),
            self_id: self.peers.self_id(),
            request: v1::ChunkRequest {
                chunk: Some(v1::ChunkId {
                    object: Some((&id.object).into()),
                    chunk_size: self.settings.chunk_size,
                    index: id.index,
                }),
                wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
                pull_from: kind.pull_from() as i32,
            },
            range,
            answer_timeout: wait + RESPONSE_MARGIN,
            stall: FRAME_STALL_TIMEOUT,
        };
        self.puller.pull(peer, &pull, target).await
    }
}

/// Forgets an object's have-maps when its fetch ends, however it ends.
struct ForgetMaps<'a>(&'a Holders, &'a ObjectVersion);

impl Drop for ForgetMaps<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

mod after_failure;
#[cfg(test)]
mod stall_tests;
#[cfg(test)]
mod tests;

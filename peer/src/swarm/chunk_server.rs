//! What a node answers peers, whatever the transport: Have maps, and chunk
//! streams from the books of the objects it holds or is fetching.
//!
//! Design decisions:
//! - A chunk is answered from the [`BookRegistry`] only. For an object
//!   version this node has no book for, the [`UnheldObjects`] hook is asked
//!   whether this node will fetch it (start skew, [`super::unheld`]): if so,
//!   the book is waited for as long as the request's wait allows; if not,
//!   for [`BOOK_WAIT`], then NOT_FOUND, so a peer reassigns the chunk
//!   quickly.
//! - **What a puller takes the sender for** (`ChunkRequest.pull_from`)
//!   bounds the answer: as the owner, whatever arrives is streamed; as a
//!   holder, only a held chunk; as a relay, only a chunk with bytes of its
//!   current download already here (else NOT_FOUND at once). That last rule
//!   is what keeps relaying free of cycles (see `super::sources`).
//! - **Cut-through and relay**: a chunk is streamed *while it is still
//!   arriving*, from the store or from a peer ([`Serving::next_segment`]):
//!   whatever prefix of the chunk is in memory goes out in segments of at
//!   most [`FRAME_BYTES`] read with `pread` (into buffers a transport may
//!   give back, [`Serving::recycle`], rather than fresh zeroed ones), then the server waits for more,
//!   sending a keep-alive every [`KEEPALIVE_EVERY`] while the chunk does not
//!   advance (the owner's part may still be queued behind its other parts),
//!   and ends with the chunk's CRC-64 once this node recorded it, which it
//!   does only after its own copy verified. A chunk that restarts here (its
//!   download failed, see the book's generations) ends every stream of it
//!   with ABORTED, before a byte of the next download goes out in a stream
//!   that began under the failed one. The request's `wait_ms` (at most [`MAX_SERVE_WAIT`]) bounds how
//!   long the chunk may go *without progress*, not the whole transfer, so a
//!   big share on a slow link is not mistaken for a dead one.
//! - `Have` answers which chunks of the asked versions this node holds
//!   completely, which are arriving and how far, which asked versions it
//!   will not fetch (`declined`), and its idle upload bandwidth
//!   ([`super::upload`]).
//! - Each data segment waits for its turn under the node's upload cap
//!   ([`super::upload_limit`]); a node leaving the swarm answers new chunk
//!   requests NOT_FOUND and finishes the streams in flight
//!   ([`super::leaving`]).
//! - **One answer, every transport.** Admission
//!   ([`ChunkServer::admit_metadata`]), chunk lookup ([`ChunkServer::locate`])
//!   and streaming ([`Serving`]) are shared by every transport
//!   ([`super::transport`]), which only puts segments on its wire, so all
//!   answer identically. Every request is authenticated before its body is
//!   decoded (by [`super::auth_layer`] for gRPC, by the QUIC server for
//!   QUIC); failures are logged with the remote address and claimed node,
//!   never the secret.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ossc_proto::v1::{ChunkRequest, HaveMap, HaveResponse, PullFrom};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::auth::NonceCache;
use super::chunk_book::{BookRegistry, ChunkBook, ObjectVersion, SlotState};
use super::peer_set::{Peer, PeerSet};
use super::unheld::{UnheldObjectHook, UnheldObjects};
use super::upload::UploadMeter;
use super::upload_limit::{ServedStream, UploadLimit};

/// Largest data frame: 1 MiB, well under tonic's 4 MiB message limit, small
/// enough that a frame is one cheap `pread` and the receiver's stall
/// timeout applies per MiB.
pub const FRAME_BYTES: usize = 1 << 20;
/// Data frame buffers a stream keeps for reuse (a framed batch's worth).
pub const SPARE_FRAMES: usize = 4;
/// Upper bound of how long a chunk being served may go without progress,
/// whatever the request asks.
pub const MAX_SERVE_WAIT: Duration = Duration::from_secs(60);
/// While a chunk does not advance, a keep-alive frame goes out this often, so
/// the receiver's stall timeout (5 s) tells a dead stream from a slow chunk.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long the server waits for a book of an object version it will not
/// fetch (the unheld-object hook declined it) to appear: the peer may have
/// started the object a little earlier than this node.
pub const BOOK_WAIT: Duration = Duration::from_secs(3);

/// gRPC path of Have.
pub const HAVE_METHOD: &str = "/ossc.v1.PeerControl/Have";

/// The answers of one node to its peers (served by every transport).
pub struct ChunkServer {
    books: Arc<BookRegistry>,
    peers: Arc<PeerSet>,
    upload: Arc<UploadMeter>,
    /// The cap on bytes sent, and the streams in flight.
    limit: Arc<UploadLimit>,
    corrupt: AtomicBool,
    trickle: std::sync::Mutex<Option<Trickle>>,
    stopped: AtomicBool,
    /// Nonces of accepted requests (replay protection, every transport).
    nonces: NonceCache,
    /// Whether this node will fetch a version it does not hold (start skew).
    unheld: UnheldObjects,
    /// Have requests answered.
    have_answers: AtomicU64,
}

impl ChunkServer {
    /// Serves `books` to `peers`, counting served bytes in `upload`.
    pub fn new(
        books: Arc<BookRegistry>,
        peers: Arc<PeerSet>,
        upload: Arc<UploadMeter>,
    ) -> ChunkServer {
        ChunkServer {
            books,
            peers,
            upload,
            limit: Arc::new(UploadLimit::new(None)),
            corrupt: AtomicBool::new(false),
            trickle: Default::default(),
            stopped: AtomicBool::new(false),
            nonces: NonceCache::default(),
            unheld: UnheldObjects::default(),
            have_answers: AtomicU64::new(0),
        }
    }

    /// Sends through `limit` (default: no cap).
    pub fn with_upload_limit(self, limit: Arc<UploadLimit>) -> ChunkServer {
        ChunkServer { limit, ..self }
    }

    /// Asked whether this node will fetch a version a peer named that it
    /// does not hold (see [`super::unheld`]).
    pub fn on_unheld_object(&self, hook: UnheldObjectHook) {
        self.unheld.set_hook(hook);
    }

    /// Have requests this node answered.
    pub fn have_answers(&self) -> u64 {
        self.have_answers.load(Ordering::Relaxed)
    }

    /// Bytes served to peers, and the rates `Have` reports.
    pub fn upload_meter(&self) -> &Arc<UploadMeter> {
        &self.upload
    }

    /// The `Have` answer for `versions`: a map for each with a live book;
    /// the others are `declined` unless this node will fetch them.
    pub fn have(&self, versions: &[ossc_proto::v1::ObjectVersion]) -> HaveResponse {
        self.have_answers.fetch_add(1, Ordering::Relaxed);
        let mut maps = Vec::new();
        let mut declined = Vec::new();
        for o in versions {
            let version = ObjectVersion::from(o);
            let Some(book) = self.books.get(&version) else {
                if !self.unheld.will_fetch(&version) {
                    declined.push(o.clone());
                }
                continue;
            };
            let (bitmap, chunk_crc64) = book.have_map();
            let (receiving, chunk_prefix) = book.arrival_map();
            maps.push(HaveMap {
                object: Some(o.clone()),
                chunk_size: book.chunk_size,
                bitmap,
                chunk_crc64,
                receiving,
                chunk_prefix,
            });
        }
        HaveResponse {
            maps,
            idle_upload_bytes_per_sec: self.upload.idle(),
            upload_bytes_per_sec: self.upload.current(),
            declined,
        }
    }

    /// Fault injection (tests, `OSSC_FAULT_PEER_CORRUPT`): flip one byte of
    /// every chunk served while still sending the recorded CRC.
    pub fn inject_corruption(&self, on: bool) {
        self.corrupt.store(on, Ordering::Relaxed);
    }

    /// Fault injection (tests): trickle every chunk requested from now on
    /// (`None`: full speed again).
    pub fn inject_trickle(&self, trickle: Option<Trickle>) {
        *self.trickle.lock().unwrap_or_else(|p| p.into_inner()) = trickle;
    }

    /// Refuse everything from now on (shutdown).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The peers this node serves (membership, per-peer counters).
    pub fn peers(&self) -> &Arc<PeerSet> {
        &self.peers
    }

    /// UNAVAILABLE once the server stopped (every request is refused).
    pub(crate) fn refuse_if_stopped(&self) -> Result<(), Status> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Status::unavailable("node shutting down"));
        }
        Ok(())
    }

    /// Authenticates a request of any transport (gRPC metadata, or the same
    /// auth entries carried in a QUIC request message) whose body hashes to
    /// `body`; returns the caller's node id.
    pub(crate) fn admit_metadata(
        &self,
        md: &MetadataMap,
        remote: Option<SocketAddr>,
        method: &str,
        body: &[u8; 32],
    ) -> Result<String, Status> {
        self.refuse_if_stopped()?;
        self.peers
            .secret()
            .verify(md, method, body, &self.nonces)
            .map_err(|e| {
                let claimed = md
                    .get(super::auth::NODE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?");
                tracing::warn!(
                    remote = ?remote,
                    claimed_node = claimed,
                    method,
                    error = %e,
                    "peer request refused"
                );
                Status::unauthenticated("peer authentication failed")
            })
    }

    /// Finds the chunk a request names (waiting for its object's book to
    /// appear: as long as the request allows if this node will fetch it,
    /// else up to [`BOOK_WAIT`]) and returns a [`Serving`] that streams it.
    /// Shared by every transport, so they answer identically.
    pub(crate) async fn locate(&self, node: &str, req: ChunkRequest) -> Result<Serving, Status> {
        // In flight before the check, so a node that starts leaving waits for it.
        let stream = self.limit.stream();
        if self.peers.is_leaving() {
            return Err(Status::not_found("this node is leaving the swarm"));
        }
        let from = req.pull_from();
        let id = req
            .chunk
            .ok_or_else(|| Status::invalid_argument("no chunk"))?;
        let version = id
            .object
            .as_ref()
            .map(ObjectVersion::from)
            .ok_or_else(|| Status::invalid_argument("no object"))?;
        let patience = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_SERVE_WAIT);
        let book_wait = match self.books.get(&version) {
            Some(_) => Duration::ZERO,
            // A holder or relay the puller saw has its book already.
            None if from != PullFrom::Owner => Duration::ZERO,
            None if self.unheld.will_fetch(&version) => patience,
            None => patience.min(BOOK_WAIT),
        };
        let book = self
            .books
            .wait_get(&version, Instant::now() + book_wait)
            .await
            .ok_or_else(|| Status::not_found("object version not held by this node"))?;
        if book.chunk_size != id.chunk_size {
            return Err(Status::failed_precondition(format!(
                "chunk size {} differs from this node's {}",
                id.chunk_size, book.chunk_size
            )));
        }
        if id.index >= book.n_chunks() {
            return Err(Status::out_of_range("no such chunk"));
        }
        let state = book.state(id.index);
        match from {
            PullFrom::Holder if state.held.is_none() => {
                return Err(Status::not_found("chunk not held complete by this node"));
            }
            PullFrom::Relay if state.held.is_none() && state.prefix == 0 => {
                return Err(Status::not_found("no bytes of this chunk here yet"));
            }
            _ => {}
        }
        Ok(Serving {
            range: book.range(id.index),
            _pinned: book.target(),
            generation: state.generation,
            book,
            stream,
            id,
            corrupt: self.corrupt.load(Ordering::Relaxed),
            trickle: *self.trickle.lock().unwrap_or_else(|p| p.into_inner()),
            peer: self.peers.peer(node),
            upload: self.upload.clone(),
            patience,
            progress_at: Instant::now(),
            sent_at: Instant::now(),
            pos: 0,
            spare: Vec::new(),
        })
    }
}

/// A chunk found for a request, streamed by [`Serving::next_segment`].
pub(crate) struct Serving {
    book: Arc<ChunkBook>,
    /// The object's memory, kept while the stream lasts (the cache does not
    /// release an object a peer is being sent).
    _pinned: Option<Arc<dyn crate::object_source::ChunkTarget>>,
    /// In flight, and its turn under the upload cap.
    stream: ServedStream,
    /// The chunk's bytes within the object.
    range: Range<u64>,
    /// The chunk's generation when serving began (see the module docs).
    generation: u64,
    pub id: ossc_proto::v1::ChunkId,
    /// Fault injection: flip the first byte.
    corrupt: bool,
    /// Fault injection: send slowly.
    trickle: Option<Trickle>,
    /// The requesting peer (for per-peer traffic counters).
    peer: Option<Arc<Peer>>,
    upload: Arc<UploadMeter>,
    /// How long the chunk may go without progress.
    patience: Duration,
    /// When the chunk last advanced (or serving began).
    progress_at: Instant,
    /// When the last frame (data or keep-alive) went out.
    sent_at: Instant,
    /// Bytes of the chunk sent so far.
    pos: u64,
    /// Data frames' buffers the transport gave back ([`Serving::recycle`]).
    spare: Vec<Vec<u8>>,
}

/// Fault injection for tests (a peer that delivers far below its claim):
/// at most `bytes` per frame, each after `pause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trickle {
    pub bytes: u64,
    pub pause: Duration,
}

/// The next piece of a chunk stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Bytes at the chunk offset that preceded them.
    Data { offset: u64, bytes: Vec<u8> },
    /// The chunk did not advance for [`KEEPALIVE_EVERY`]; the owner is alive.
    KeepAlive,
    /// Every byte was sent; the chunk's CRC-64 as recorded.
    End { crc: u64 },
}

impl Serving {
    /// The chunk's length.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Bytes of the chunk sent so far.
    pub fn sent(&self) -> u64 {
        self.pos
    }

    /// Gives back the buffer of a data frame that was sent, for the next
    /// frames to reuse (up to [`SPARE_FRAMES`] are kept), so a stream does
    /// not allocate and zero-fill a new frame each time.
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < SPARE_FRAMES && bytes.capacity() <= FRAME_BYTES {
            bytes.resize(bytes.capacity(), 0);
            self.spare.push(bytes);
        }
    }

    /// ABORTED once the chunk restarted here: the bytes from now on would
    /// belong to another download than those already sent.
    fn check_generation(&self, state: SlotState) -> Result<(), Status> {
        if state.generation != self.generation {
            return Err(Status::aborted(
                "the chunk restarted at this node (its download failed); pull it again",
            ));
        }
        Ok(())
    }

    /// The next data frame, keep-alive or end of the chunk (see the module
    /// docs). An error once the object is released, the chunk restarts, it
    /// goes without progress past the request's wait, or the server stops.
    pub async fn next_segment(&mut self) -> Result<Segment, Status> {
        match self.next(FRAME_BYTES as u64).await? {
            Next::Data(n) => {
                let mut bytes = self.spare.pop().unwrap_or_default();
                // A recycled buffer is as long as the longest frame it held:
                // only a longer frame zero-fills (the part it adds).
                bytes.resize(n as usize, 0);
                let offset = self.read_into(&mut [IoSliceMut::new(&mut bytes)])?;
                Ok(Segment::Data { offset, bytes })
            }
            Next::KeepAlive => Ok(Segment::KeepAlive),
            Next::End { crc } => Ok(Segment::End { crc }),
        }
    }

    /// What [`next_segment`](Self::next_segment) would answer, with data
    /// announced (up to `max` bytes, cleared under the upload cap) but not
    /// read: [`read_into`](Self::read_into) must follow a [`Next::Data`],
    /// into buffers of exactly its length, such as the records of a
    /// transport's send buffer.
    pub async fn next(&mut self, max: u64) -> Result<Next, Status> {
        let index = self.id.index;
        let len = self.len();
        loop {
            let state = self.book.state(index);
            if !self.book.is_live() {
                return Err(Status::unavailable("object no longer held by this node"));
            }
            self.check_generation(state)?;
            if state.prefix > self.pos {
                let mut ready = (state.prefix - self.pos).min(max);
                if let Some(Trickle { bytes, pause }) = self.trickle {
                    tokio::time::sleep(pause).await;
                    ready = ready.min(bytes.max(1));
                }
                let Some(n) = self
                    .stream
                    .clear(ready, self.sent_at + KEEPALIVE_EVERY)
                    .await?
                else {
                    self.sent_at = Instant::now();
                    return Ok(Next::KeepAlive);
                };
                return Ok(Next::Data(n));
            }
            if let (true, Some(crc)) = (self.pos == len, state.held) {
                return Ok(Next::End { crc });
            }
            let deadline = self.progress_at + self.patience;
            let now = Instant::now();
            if now >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "chunk made no progress for {:?}",
                    self.patience
                )));
            }
            let keepalive_at = self.sent_at + KEEPALIVE_EVERY;
            if now >= keepalive_at {
                self.sent_at = now;
                return Ok(Next::KeepAlive);
            }
            self.book
                .wait_change(index, state, keepalive_at.min(deadline))
                .await;
        }
    }

    /// Reads the data [`next`](Self::next) announced into `bufs` (as many
    /// bytes as it announced, in total) and counts it sent; its offset in
    /// the chunk.
    pub fn read_into(&mut self, bufs: &mut [IoSliceMut<'_>]) -> Result<u64, Status> {
        let n: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.book
            .read_vectored(self.range.start + self.pos, bufs)
            .map_err(|e| Status::unavailable(format!("chunk no longer held: {e}")))?;
        // Read under one generation: a restart during the read may have
        // overwritten some of these bytes.
        self.check_generation(self.book.state(self.id.index))?;
        if self.corrupt && self.pos == 0 {
            if let Some(first) = bufs.iter_mut().find_map(|b| b.first_mut()) {
                *first ^= 0xff;
            }
        }
        if let Some(p) = &self.peer {
            p.bytes_sent.fetch_add(n, Ordering::Relaxed);
        }
        self.upload.add(n);
        let offset = self.pos;
        self.pos += n;
        self.progress_at = Instant::now();
        self.sent_at = self.progress_at;
        Ok(offset)
    }
}

/// What a stream sends next ([`Serving::next`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// This many bytes are ready, to be read with [`Serving::read_into`].
    Data(u64),
    KeepAlive,
    End {
        crc: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_source::{ChunkTarget, VecTarget};
    use crate::swarm::chunk_book::RecordingSink;
    use ossc_core::object_client::RangeSink;

    const CHUNK: u64 = 64 << 10;

    fn serving(book: &Arc<ChunkBook>, index: u64, patience: Duration) -> Serving {
        Serving {
            range: book.range(index),
            _pinned: None,
            book: book.clone(),
            stream: Arc::new(UploadLimit::new(None)).stream(),
            id: ossc_proto::v1::ChunkId {
                object: None,
                chunk_size: CHUNK,
                index,
            },
            generation: book.state(index).generation,
            corrupt: false,
            trickle: None,
            peer: None,
            upload: Arc::new(UploadMeter::new(None)),
            patience,
            progress_at: Instant::now(),
            sent_at: Instant::now(),
            pos: 0,
            spare: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_chunk_streams_as_it_lands_with_keep_alives_then_its_crc() {
        let version = ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            size: 2 * CHUNK,
        };
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(2 * CHUNK as usize));
        let book = Arc::new(ChunkBook::new(version, CHUNK, &target));
        let sink = RecordingSink {
            target: target.clone(),
            book: book.clone(),
        };
        let data: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        let half = (CHUNK / 2) as usize;
        let mut s = serving(&book, 0, Duration::from_secs(5));
        sink.write_at(0, &data[..half]).unwrap();
        let first = s.next_segment().await.unwrap();
        assert_eq!(
            first,
            Segment::Data {
                offset: 0,
                bytes: data[..half].to_vec()
            }
        );
        // Its buffer, given back, carries the next frame.
        let Segment::Data { bytes, .. } = first else {
            unreachable!()
        };
        s.recycle(bytes);
        // Nothing lands: a keep-alive after about KEEPALIVE_EVERY.
        let t = Instant::now();
        assert_eq!(s.next_segment().await.unwrap(), Segment::KeepAlive);
        assert!(t.elapsed() >= KEEPALIVE_EVERY - Duration::from_millis(50));
        // The rest lands while the server waits: it goes out at once.
        let writer = {
            let (sink, data) = (sink, data.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                sink.write_at(half as u64, &data[half..]).unwrap();
                sink
            })
        };
        let t = Instant::now();
        assert_eq!(
            s.next_segment().await.unwrap(),
            Segment::Data {
                offset: half as u64,
                bytes: data[half..].to_vec()
            }
        );
        assert!(t.elapsed() < KEEPALIVE_EVERY, "the data waited for a tick");
        let _sink = writer.await.unwrap();
        // Every byte sent, the CRC not recorded yet: keep-alives, then the end.
        let crc = ossc_core::crc64::crc64(&data);
        let recorder = {
            let book = book.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1300)).await;
                book.record(0, crc);
            })
        };
        assert_eq!(s.next_segment().await.unwrap(), Segment::KeepAlive);
        assert_eq!(s.next_segment().await.unwrap(), Segment::End { crc });
        recorder.await.unwrap();

        // A chunk that never advances fails after its patience, keep-alives
        // until then.
        let mut stuck = serving(&book, 1, Duration::from_millis(1500));
        assert_eq!(stuck.next_segment().await.unwrap(), Segment::KeepAlive);
        let err = stuck.next_segment().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err}");
        // A closed book ends every stream with UNAVAILABLE.
        let mut late = serving(&book, 1, Duration::from_secs(5));
        book.close();
        let err = late.next_segment().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }

    #[tokio::test]
    async fn a_relayed_chunk_ends_with_its_crc_only_when_held_and_fails_if_it_restarts() {
        let version = ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            size: CHUNK,
        };
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(CHUNK as usize));
        let book = Arc::new(ChunkBook::new(version, CHUNK, &target));
        let sink = RecordingSink {
            target: target.clone(),
            book: book.clone(),
        };
        let data: Vec<u8> = (0..CHUNK).map(|i| (i % 241) as u8).collect();
        // This node pulls the chunk from a peer and relays it meanwhile.
        book.begin(0);
        let mut s = serving(&book, 0, Duration::from_secs(5));
        sink.write_at(0, &data).unwrap();
        assert_eq!(
            s.next_segment().await.unwrap(),
            Segment::Data {
                offset: 0,
                bytes: data.clone()
            }
        );
        // Every byte is here but not verified yet: no CRC goes out.
        assert_eq!(s.next_segment().await.unwrap(), Segment::KeepAlive);
        // The pull failed its CRC check: the chunk restarts, the stream
        // fails (ABORTED, a lost stream for the receiver), and a stream
        // started after the restart gets the next download's bytes.
        book.forget(0);
        let err = s.next_segment().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
        let mut again = serving(&book, 0, Duration::from_secs(5));
        book.begin(0);
        sink.write_at(0, &data).unwrap();
        let crc = ossc_core::crc64::crc64(&data);
        book.record(0, crc);
        assert!(matches!(
            again.next_segment().await.unwrap(),
            Segment::Data { offset: 0, .. }
        ));
        assert_eq!(again.next_segment().await.unwrap(), Segment::End { crc });
    }
}

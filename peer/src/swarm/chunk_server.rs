//! The gRPC side of a node: answers Hello and streams chunks it holds.
//!
//! Design decision: `FetchChunk` is answered from the [`BookRegistry`] only:
//! the server waits (bounded by the request's `wait_ms`, at most
//! [`MAX_SERVE_WAIT`]) until it holds the chunk, because peers usually ask
//! for chunks this node is still fetching from the store; then it streams
//! `pread`s of the object's memory in frames of at most [`FRAME_BYTES`], each
//! carrying the CRC-64 recorded when the chunk was fetched. An object version
//! this node has no book for (within [`BOOK_WAIT`]) is NOT_FOUND, so a peer
//! falls back to the store quickly. Every request is authenticated first;
//! failures are logged with the remote address and claimed node, never the
//! secret. Admission ([`ChunkServer::admit_metadata`]) and chunk lookup
//! ([`ChunkServer::locate`]) are shared with the QUIC server
//! ([`super::quic`]), so both transports answer identically.

use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ossc_proto::v1::peer_control_server::PeerControl;
use ossc_proto::v1::{
    ChunkData, ChunkRequest, HaveRequest, HaveResponse, HelloRequest, HelloResponse, PeerInfo,
};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::chunk_book::{BookRegistry, ChunkBook, ObjectVersion};
use super::peer_set::{Peer, PeerSet, HELLO_METHOD};

/// Largest data frame: 1 MiB, well under tonic's 4 MiB message limit, small
/// enough that a frame is one cheap `pread` and the receiver's stall
/// timeout applies per MiB.
pub const FRAME_BYTES: usize = 1 << 20;
/// Upper bound of how long the server waits for a chunk it does not hold yet,
/// whatever the request asks.
pub const MAX_SERVE_WAIT: Duration = Duration::from_secs(60);
/// How long the server waits for a book of an object version to appear (the
/// peer may have started the object a little earlier than this node).
pub const BOOK_WAIT: Duration = Duration::from_secs(3);

/// gRPC path of FetchChunk (signed into the auth tag).
pub const FETCH_CHUNK_METHOD: &str = "/ossc.v1.PeerControl/FetchChunk";
/// gRPC path of Have.
pub const HAVE_METHOD: &str = "/ossc.v1.PeerControl/Have";

/// The PeerControl service of one node.
pub struct ChunkServer {
    books: Arc<BookRegistry>,
    peers: Arc<PeerSet>,
    corrupt: AtomicBool,
    stopped: AtomicBool,
}

impl ChunkServer {
    pub fn new(books: Arc<BookRegistry>, peers: Arc<PeerSet>) -> ChunkServer {
        ChunkServer {
            books,
            peers,
            corrupt: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    /// Fault injection (tests, `OSSC_FAULT_PEER_CORRUPT`): flip one byte of
    /// every chunk served while still sending the recorded CRC.
    pub fn inject_corruption(&self, on: bool) {
        self.corrupt.store(on, Ordering::Relaxed);
    }

    /// Refuse everything from now on (shutdown).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn admit<T>(&self, req: &Request<T>, method: &str) -> Result<String, Status> {
        self.admit_metadata(req.metadata(), req.remote_addr(), method)
    }

    /// Authenticates a request of either transport (the QUIC server carries
    /// the same three auth entries in its request message); returns the
    /// caller's node id.
    pub(crate) fn admit_metadata(
        &self,
        md: &MetadataMap,
        remote: Option<SocketAddr>,
        method: &str,
    ) -> Result<String, Status> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Status::unavailable("node shutting down"));
        }
        self.peers.secret().verify(md, method).map_err(|e| {
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

    /// Finds the chunk a request names, waiting (bounded by `wait_ms`, at
    /// most [`MAX_SERVE_WAIT`]) until this node holds it. Shared by both
    /// transports, so they answer identically.
    pub(crate) async fn locate(&self, node: &str, req: ChunkRequest) -> Result<Serving, Status> {
        let id = req
            .chunk
            .ok_or_else(|| Status::invalid_argument("no chunk"))?;
        let object = id
            .object
            .clone()
            .ok_or_else(|| Status::invalid_argument("no object"))?;
        let version = ObjectVersion {
            bucket: object.bucket,
            key: object.key,
            etag: object.etag,
            size: object.size,
        };
        let now = Instant::now();
        let until = now + Duration::from_millis(u64::from(req.wait_ms)).min(MAX_SERVE_WAIT);
        let book = self
            .books
            .wait_get(&version, until.min(now + BOOK_WAIT))
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
        let crc = book
            .wait_for(id.index, until)
            .await
            .ok_or_else(|| Status::unavailable("chunk not held within the wait"))?;
        Ok(Serving {
            range: book.range(id.index),
            book,
            crc,
            id,
            corrupt: self.corrupt.load(Ordering::Relaxed),
            peer: self.peers.peer(node),
        })
    }
}

/// A chunk found for a request, ready to be sent.
pub(crate) struct Serving {
    pub book: Arc<ChunkBook>,
    /// The chunk's bytes within the object.
    pub range: Range<u64>,
    /// CRC-64 recorded when this node got the chunk.
    pub crc: u64,
    pub id: ossc_proto::v1::ChunkId,
    /// Fault injection: flip the first byte.
    pub corrupt: bool,
    /// The requesting peer (for per-peer traffic counters).
    pub peer: Option<Arc<Peer>>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChunkData, Status>> + Send>>;

#[tonic::async_trait]
impl PeerControl for ChunkServer {
    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let node = self.admit(&request, HELLO_METHOD)?;
        self.peers.note_seen(&node);
        let peers = self
            .peers
            .alive_ids()
            .into_iter()
            .map(|id| PeerInfo {
                control_addr: id.clone(),
                node_id: id,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(HelloResponse {
            node_id: self.peers.self_id().to_string(),
            peers,
        }))
    }

    async fn have(&self, request: Request<HaveRequest>) -> Result<Response<HaveResponse>, Status> {
        self.admit(&request, HAVE_METHOD)?;
        Err(Status::unimplemented("Have is not implemented yet"))
    }

    type FetchChunkStream = ChunkStream;

    async fn fetch_chunk(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let node = self.admit(&request, FETCH_CHUNK_METHOD)?;
        let Serving {
            book,
            range,
            crc,
            id,
            corrupt,
            peer,
        } = self.locate(&node, request.into_inner()).await?;
        let stream = futures::stream::unfold(0u64, move |pos| {
            let book = book.clone();
            let id = id.clone();
            let peer = peer.clone();
            async move {
                let len = range.end - range.start;
                if pos >= len {
                    return None;
                }
                let n = (len - pos).min(FRAME_BYTES as u64);
                let mut data = vec![0u8; n as usize];
                if let Err(e) = book.read(range.start + pos, &mut data) {
                    return Some((
                        Err(Status::unavailable(format!("chunk no longer held: {e}"))),
                        len,
                    ));
                }
                if corrupt && pos == 0 {
                    data[0] ^= 0xff;
                }
                if let Some(p) = &peer {
                    p.bytes_sent.fetch_add(n, Ordering::Relaxed);
                }
                let frame = ChunkData {
                    chunk: (pos == 0).then_some(id),
                    data,
                    crc64: crc,
                    offset: pos,
                };
                Some((Ok(frame), pos + n))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

//! The pulling side of the framed transport: persistent connections per
//! peer, one pull at a time on each, opened on demand and kept while idle
//! for at most [`CLIENT_IDLE`] (see [`super`] for the protocol and the
//! fallback).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::record_stream::RecordStream;
use super::records::take_keys;
use super::wire::{
    Marker, RequestHeader, ResponseHeader, GREETING, NONCE_BYTES, RESPONSE_HEADER_BYTES, TAG_BYTES,
};
use super::{
    framed_addr, FramedIo, ALPN, CLIENT_IDLE, CONNECT_TIMEOUT, FRAMED_FETCH_METHOD,
    MAX_IDLE_CONNECTIONS, READ_BUFFER_BYTES, REQUEST_SEND_BUFFER_BYTES, RETRY_AFTER,
    WRITE_BATCH_BYTES,
};
use crate::object_source::ChunkTarget;
use crate::swarm::auth::{body_digest, now_secs, ClusterSecret, AUTH_HEADER};
use crate::swarm::peer_set::Peer;
use crate::swarm::tls::PEER_TLS_NAME;
use crate::swarm::transport::grpc::client::from_status;
use crate::swarm::transport::reachability::PeerReachability;
use crate::swarm::transport::{ChunkPull, ChunkPuller, PullError, Receiving};

/// Pulls chunks over framed connections.
pub struct FramedPuller {
    /// TLS towards peers (None: plaintext).
    connector: Option<tokio_rustls::TlsConnector>,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerConnections>>>,
    /// Idle connections, all peers together.
    idle: AtomicUsize,
    /// Verified chunk bytes pulled over this transport.
    pub bytes_received: AtomicU64,
    /// Pulls handed to the next transport because a peer was unreachable.
    pub unreachable: AtomicU64,
    /// Connections opened so far.
    pub connections_opened: AtomicU64,
}

/// The connections to one peer's framed port.
#[derive(Default)]
struct PeerConnections {
    /// Connections between pulls, with when each was given back.
    idle: Mutex<Vec<(Box<dyn FramedIo>, Instant)>>,
    /// Connections in use by a pull.
    in_use: AtomicUsize,
    /// Whether connections to the peer can be opened.
    reach: PeerReachability,
}

/// A connection taken for one pull.
struct Connection {
    io: Box<dyn FramedIo>,
    _in_use: InUse,
}

/// Counts a connection in use until dropped.
struct InUse(Arc<PeerConnections>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeerConnections {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(Box<dyn FramedIo>, Instant)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(self: &Arc<Self>, io: Box<dyn FramedIo>) -> Connection {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Connection {
            io,
            _in_use: InUse(self.clone()),
        }
    }

    /// Drops idle connections past [`CLIENT_IDLE`]; how many.
    fn expire_idle(&self) -> usize {
        let mut idle = self.lock_idle();
        let before = idle.len();
        idle.retain(|(_, since)| since.elapsed() < CLIENT_IDLE);
        before - idle.len()
    }

    /// Whether any connection to the peer is open (so a failed connect is
    /// this connection's trouble, such as a connection cap, not the peer's).
    fn any_open(&self) -> bool {
        self.in_use.load(Ordering::Relaxed) > 0 || !self.lock_idle().is_empty()
    }
}

/// How a failed exchange leaves its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// The answer was read to its end: the connection can serve the next.
    Reusable,
    /// Unknown state: closed.
    Broken,
    /// Broken before any answer arrived (a reused connection the peer had
    /// closed): worth one try on a fresh connection.
    Unanswered,
}

type Exchange<T> = Result<T, (PullError, After)>;

fn lost(what: &str, e: &io::Error) -> PullError {
    PullError::Lost(format!("{what}: {e}"))
}

/// Reads exactly `buf.len()` bytes within `limit`.
async fn read_within(
    io: &mut dyn FramedIo,
    buf: &mut [u8],
    limit: Duration,
    what: &str,
) -> Exchange<()> {
    match tokio::time::timeout(limit, io.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err((
            PullError::Lost(format!("{what}: the peer closed the connection")),
            After::Broken,
        )),
        Ok(Err(e)) => Err((lost(what, &e), After::Broken)),
        Err(_) => Err((
            PullError::Lost(format!("{what}: stalled for {limit:?}")),
            After::Broken,
        )),
    }
}

/// The error an error header and its message announce, as gRPC maps it.
async fn read_status(
    io: &mut dyn FramedIo,
    header: &ResponseHeader,
    stall: Duration,
) -> Exchange<PullError> {
    let mut message = vec![0u8; header.message_len as usize];
    read_within(io, &mut message, stall, "reading the error").await?;
    let status = Status::new(header.status, String::from_utf8_lossy(&message));
    Ok(from_status(&status))
}

fn parse_header(h: &[u8; RESPONSE_HEADER_BYTES]) -> Exchange<ResponseHeader> {
    ResponseHeader::parse(h).map_err(|e| {
        (
            PullError::Corrupt(format!("bad answer header: {e}")),
            After::Broken,
        )
    })
}

/// A signed request carrying `body` (an encoded `ChunkRequest`): header,
/// node id, body (see [`super::wire`]); the tag is made at `time` with
/// `nonce`.
pub(crate) fn signed_request(
    secret: &ClusterSecret,
    self_id: &str,
    body: &[u8],
    time: u64,
    nonce: [u8; NONCE_BYTES],
) -> Vec<u8> {
    let mut md = MetadataMap::new();
    let digest = body_digest(body);
    let nonce_hex = hex::encode(nonce);
    secret.sign_at(
        &mut md,
        self_id,
        FRAMED_FETCH_METHOD,
        &digest,
        time,
        &nonce_hex,
    );
    let mut tag = [0u8; TAG_BYTES];
    let tag_hex = md.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    hex::decode_to_slice(tag_hex.unwrap_or_default(), &mut tag)
        .expect("sign_at writes a hex HMAC-SHA256 tag");
    let header = RequestHeader {
        body_len: body.len() as u32,
        node_len: self_id.len() as u16,
        time,
        nonce,
        tag,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(self_id.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Received bytes on their way to the target: a large buffer from the
/// read layer goes straight through, small ones (a TLS record's 16 KiB) are
/// gathered into one write of up to [`WRITE_BATCH_BYTES`], so a pull makes
/// few large writes into its target instead of one per record.
#[derive(Default)]
struct Staged(Vec<u8>);

impl Staged {
    fn add(&mut self, bytes: &[u8], got: &mut Receiving<'_>) -> Result<(), PullError> {
        if self.0.is_empty() && bytes.len() >= WRITE_BATCH_BYTES / 2 {
            return got.take(bytes);
        }
        if self.0.len() + bytes.len() > WRITE_BATCH_BYTES {
            self.flush(got)?;
        }
        if self.0.capacity() == 0 {
            self.0.reserve_exact(WRITE_BATCH_BYTES);
        }
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self, got: &mut Receiving<'_>) -> Result<(), PullError> {
        if !self.0.is_empty() {
            got.take(&self.0)?;
            self.0.clear();
        }
        Ok(())
    }
}

/// One pull on `io`: the request, then the answer into `target`.
async fn exchange(
    io: &mut dyn FramedIo,
    pull: &ChunkPull<'_>,
    target: &dyn ChunkTarget,
) -> Exchange<u64> {
    let (stall, answer_timeout) = (pull.stall, pull.answer_timeout);
    let request = signed_request(
        pull.secret,
        pull.self_id,
        &pull.request.encode_to_vec(),
        now_secs(),
        rand::random(),
    );
    let sent = async {
        io.write_all(&request).await?;
        io.flush().await
    };
    match tokio::time::timeout(stall, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err((lost("sending the request", &e), After::Unanswered)),
        Err(_) => {
            let e = PullError::Lost("sending the request stalled".into());
            return Err((e, After::Broken));
        }
    }
    let mut h = [0u8; RESPONSE_HEADER_BYTES];
    match tokio::time::timeout(answer_timeout, io.read_exact(&mut h)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err((lost("reading the answer", &e), After::Unanswered)),
        Err(_) => {
            let e = PullError::Lost(format!("no answer within {answer_timeout:?}"));
            return Err((e, After::Broken));
        }
    }
    let header = parse_header(&h)?;
    if header.status != Code::Ok {
        let e = read_status(io, &header, stall).await?;
        return Err((e, After::Reusable));
    }
    let mut got = Receiving::new(target, pull.range.clone(), answer_timeout);
    let len = got.len();
    if header.data_len != len {
        let e = PullError::Corrupt(format!(
            "peer sends {} bytes for a chunk of {len}",
            header.data_len
        ));
        return Err((e, After::Broken));
    }
    let broken = |e: PullError| (e, After::Broken);
    let mut staged = Staged::default();
    let crc = loop {
        let pos = got.pos();
        let mut word = [0u8; 4];
        read_within(io, &mut word, stall, &format!("chunk at {pos} of {len}")).await?;
        let marker = Marker::parse(word)
            .map_err(|e| broken(PullError::Corrupt(format!("bad segment at {pos}: {e}"))))?;
        match marker {
            Marker::KeepAlive => got.keep_alive().map_err(broken)?,
            Marker::End => {
                let mut crc = [0u8; 8];
                read_within(io, &mut crc, stall, "reading the chunk CRC").await?;
                break u64::from_be_bytes(crc);
            }
            Marker::Abort => {
                read_within(io, &mut h, stall, "reading the abort").await?;
                let header = parse_header(&h)?;
                let e = read_status(io, &header, stall).await?;
                return Err((e, After::Reusable));
            }
            Marker::Data(n) => {
                let end = pos + u64::from(n);
                if end > len {
                    return Err(broken(PullError::Corrupt(format!(
                        "segment of {n} bytes at {pos} overruns the chunk of {len}"
                    ))));
                }
                let mut at = pos;
                while at < end {
                    let buf = match tokio::time::timeout(stall, io.fill_buf()).await {
                        Ok(Ok(buf)) => buf,
                        Ok(Err(e)) => return Err(broken(lost("reading the chunk", &e))),
                        Err(_) => {
                            return Err(broken(PullError::Lost("chunk stream stalled".into())))
                        }
                    };
                    if buf.is_empty() {
                        let e = PullError::Lost(format!("chunk truncated at {at} of {len}"));
                        return Err(broken(e));
                    }
                    let take = buf.len().min((end - at) as usize);
                    staged.add(&buf[..take], &mut got).map_err(broken)?;
                    io.consume(take);
                    at += take as u64;
                }
                staged.flush(&mut got).map_err(broken)?;
            }
        }
    };
    // The answer was read to its end: only the bytes can be wrong now.
    got.finish(crc).map_err(|e| (e, After::Reusable))
}

impl FramedPuller {
    /// A puller that speaks TLS through `connector` (None: plaintext).
    pub fn new(connector: Option<tokio_rustls::TlsConnector>) -> FramedPuller {
        FramedPuller {
            connector,
            peers: Mutex::default(),
            idle: AtomicUsize::new(0),
            bytes_received: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
        }
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<PeerConnections>>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peer(&self, addr: SocketAddr) -> Arc<PeerConnections> {
        self.lock_peers().entry(addr).or_default().clone()
    }

    /// The most recently used idle connection to `peer` (older ones past
    /// [`CLIENT_IDLE`] are closed).
    fn take_idle(&self, peer: &Arc<PeerConnections>) -> Option<Connection> {
        let expired = peer.expire_idle();
        let popped = peer.lock_idle().pop();
        let taken = expired + usize::from(popped.is_some());
        self.idle.fetch_sub(taken, Ordering::Relaxed);
        popped.map(|(io, _)| peer.take(io))
    }

    /// Keeps `conn` for the next pull to `peer`, unless
    /// [`MAX_IDLE_CONNECTIONS`] are idle (expired ones are closed first) or
    /// its keys are worn.
    fn give_back(&self, peer: &PeerConnections, conn: Connection) {
        let Connection {
            io,
            _in_use: in_use,
        } = conn;
        if io.worn() {
            return;
        }
        if self.idle.load(Ordering::Relaxed) >= MAX_IDLE_CONNECTIONS {
            let peers: Vec<_> = self.lock_peers().values().cloned().collect();
            let expired: usize = peers.iter().map(|p| p.expire_idle()).sum();
            self.idle.fetch_sub(expired, Ordering::Relaxed);
        }
        if self.idle.fetch_add(1, Ordering::Relaxed) < MAX_IDLE_CONNECTIONS {
            peer.lock_idle().push((io, Instant::now()));
        } else {
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
        drop(in_use);
    }

    /// A new connection to `addr`, greeted by a framed server.
    async fn connect(&self, addr: SocketAddr) -> Result<Box<dyn FramedIo>, String> {
        let connecting = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut io: Box<dyn FramedIo> = match &self.connector {
                Some(c) => {
                    let name = rustls::pki_types::ServerName::try_from(PEER_TLS_NAME)
                        .expect("the peer TLS name is a valid DNS name");
                    let (tcp, tls) = c.connect(name, tcp).await?.into_inner();
                    let keys = take_keys(tls.into(), ALPN)?;
                    Box::new(RecordStream::new(
                        tcp,
                        keys,
                        READ_BUFFER_BYTES,
                        REQUEST_SEND_BUFFER_BYTES,
                    ))
                }
                None => Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, tcp)),
            };
            let mut greeting = [0u8; GREETING.len()];
            io.read_exact(&mut greeting).await?;
            if greeting != GREETING {
                let e = "the port does not answer as a framed peer server";
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Ok(io)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(io)) => {
                self.connections_opened.fetch_add(1, Ordering::Relaxed);
                Ok(io)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
    }

    /// An idle connection to `addr` (unless `fresh`), or a new one;
    /// `Unreachable` when none can be made (logged once per peer until one
    /// can; then for [`RETRY_AFTER`], after which one pull tries again).
    /// Also whether it was reused.
    async fn checkout(
        &self,
        peer: &Arc<PeerConnections>,
        addr: SocketAddr,
        fresh: bool,
    ) -> Result<(Connection, bool), PullError> {
        if !fresh {
            if let Some(conn) = self.take_idle(peer) {
                return Ok((conn, true));
            }
        }
        peer.reach.may_connect(RETRY_AFTER)?;
        match self.connect(addr).await {
            Ok(io) => {
                peer.reach.connected("framed", addr);
                Ok((peer.take(io), false))
            }
            Err(e) => {
                // With other connections to the peer open, this one's
                // trouble (a connection cap, say) is not the peer's.
                if !peer.any_open() {
                    peer.reach.failed("framed", addr, &e, RETRY_AFTER);
                }
                Err(PullError::Unreachable(e))
            }
        }
    }

    /// Pulls one chunk from the framed server at `addr` into `target` (see
    /// [`ChunkPuller::pull`]).
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let peer = self.peer(addr);
        let mut fresh = false;
        loop {
            let (mut conn, reused) = self.checkout(&peer, addr, fresh).await.inspect_err(|_| {
                self.unreachable.fetch_add(1, Ordering::Relaxed);
            })?;
            match exchange(&mut *conn.io, pull, target).await {
                Ok(crc) => {
                    self.give_back(&peer, conn);
                    let len = pull.range.end - pull.range.start;
                    self.bytes_received.fetch_add(len, Ordering::Relaxed);
                    return Ok(crc);
                }
                Err((e, After::Reusable)) => {
                    self.give_back(&peer, conn);
                    return Err(e);
                }
                Err((_, After::Unanswered)) if reused && !fresh => fresh = true,
                Err((e, _)) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl ChunkPuller for FramedPuller {
    fn name(&self) -> &'static str {
        "framed"
    }

    async fn pull(
        &self,
        peer: &Peer,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let Some(addr) = framed_addr(peer.addr) else {
            self.unreachable.fetch_add(1, Ordering::Relaxed);
            return Err(PullError::Unreachable(format!(
                "framed: peer port {} has no framed port",
                peer.addr.port()
            )));
        };
        self.fetch(addr, pull, target)
            .await
            .map_err(|e| e.via("framed"))
    }
}

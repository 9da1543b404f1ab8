//! The serving side of the framed transport ([`super`] has the design and
//! [`super::wire`] the format): an accept loop behind the peer port's
//! connection gate, one task per connection answering its requests in
//! turn.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use ossc_proto::v1;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::server::Connected;
use tonic::Status;

use super::record_stream::RecordStream;
use super::records::take_keys;
use super::wire::{
    Marker, RequestHeader, ResponseHeader, GREETING, MAX_REQUEST_BODY_BYTES, REQUEST_HEADER_BYTES,
};
use super::{
    FramedIo, ALPN, FRAMED_FETCH_METHOD, MAX_BATCH_BYTES, REQUEST_BUFFER_BYTES, SEND_BUFFER_BYTES,
};
use crate::swarm::admission::{bind_listener, ConnectionGate, GatedStream, ServeLimits};
use crate::swarm::auth::{body_digest, AUTH_HEADER, NODE_HEADER, NONCE_HEADER, TIME_HEADER};
use crate::swarm::chunk_server::{ChunkServer, Next, Segment, Serving, FRAME_BYTES};
use crate::swarm::transport::ChunkService;

/// The running framed server of a node.
pub struct FramedService {
    local_addr: SocketAddr,
    /// None while serving; the grace period once stopping.
    stop: watch::Sender<Option<Duration>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What every connection task needs.
struct Context {
    server: Arc<ChunkServer>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: ServeLimits,
}

impl FramedService {
    /// Binds TCP `addr` and serves `server`'s chunks (spawns on the current
    /// tokio runtime): connections admitted by `gate`, TLS by `acceptor`
    /// when given.
    pub fn start(
        addr: SocketAddr,
        server: Arc<ChunkServer>,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        gate: Arc<ConnectionGate>,
    ) -> io::Result<Arc<FramedService>> {
        let listener = bind_listener(addr)?;
        let local_addr = listener.local_addr()?;
        let context = Arc::new(Context {
            server,
            acceptor,
            limits: *gate.limits(),
        });
        let (stop, stopping) = watch::channel(None);
        let incoming = gate.incoming(listener);
        let task = tokio::spawn(accept_loop(incoming, context, stopping));
        Ok(Arc::new(FramedService {
            local_addr,
            stop,
            task: Mutex::new(Some(task)),
        }))
    }

    /// The bound TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait]
impl ChunkService for FramedService {
    fn name(&self) -> &'static str {
        "framed"
    }

    async fn shutdown(&self, grace: Duration) {
        self.stop.send_replace(Some(grace));
        let Some(mut task) = self.take_task() else {
            return;
        };
        // The accept loop gives connections `grace`, then aborts them.
        let margin = Duration::from_millis(500);
        if tokio::time::timeout(grace + margin, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    fn abort(&self) {
        if let Some(task) = self.take_task() {
            task.abort();
        }
    }
}

impl Drop for FramedService {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Accepts until stopped, then gives connections in flight the grace
/// period; dropping the task set aborts the rest.
async fn accept_loop(
    incoming: impl futures::Stream<Item = io::Result<GatedStream>> + Send + 'static,
    context: Arc<Context>,
    stopping: watch::Receiver<Option<Duration>>,
) {
    let mut stop = stopping.clone();
    // Boxed so that dropping it closes the listener.
    let mut incoming = Box::pin(incoming);
    let mut conns = JoinSet::new();
    let grace = loop {
        tokio::select! {
            next = incoming.next() => {
                if let Some(Ok(conn)) = next {
                    conns.spawn(serve_connection(conn, context.clone(), stopping.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            stopped = stop.wait_for(Option::is_some) => {
                break stopped.map_or(Duration::ZERO, |g| g.unwrap_or_default());
            }
        }
    };
    drop(incoming); // stop accepting
    let drained = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(grace, drained).await;
}

/// `fut`, failing with `TimedOut` after `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: no progress within {limit:?}"),
        ))
    })
}

/// Writes every byte of `bufs` with vectored writes.
async fn write_all_vectored<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Answers one connection's requests until it closes, fails or the
/// service stops (between requests).
async fn serve_connection(
    conn: GatedStream,
    context: Arc<Context>,
    mut stopping: watch::Receiver<Option<Duration>>,
) {
    let info = conn.connect_info();
    let remote = info.remote;
    let limits = context.limits;
    let served = async {
        let mut io: Box<dyn FramedIo> = match &context.acceptor {
            Some(acceptor) => {
                let accepting = acceptor.accept(conn);
                let tls = bounded(limits.handshake_timeout, "TLS handshake", accepting).await?;
                let (conn, tls) = tls.into_inner();
                let keys = take_keys(tls.into(), ALPN)?;
                Box::new(RecordStream::new(
                    conn,
                    keys,
                    REQUEST_BUFFER_BYTES,
                    SEND_BUFFER_BYTES,
                ))
            }
            None => Box::new(BufReader::with_capacity(REQUEST_BUFFER_BYTES, conn)),
        };
        io.write_all(&GREETING).await?;
        io.flush().await?;
        io.release_send_buffer();
        loop {
            let mut header = [0u8; REQUEST_HEADER_BYTES];
            tokio::select! {
                read = io.read_exact(&mut header) => match read {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                },
                _ = stopping.wait_for(Option::is_some) => return Ok(()),
            }
            let node = match read_request(&mut *io, &header, &context, remote).await? {
                Admitted::Yes { node, body } => {
                    info.mark_authenticated();
                    (node, body)
                }
                Admitted::No(status) => {
                    // Refused before the body was decoded; the connection
                    // closes after the answer.
                    answer_error(&mut *io, &status, limits).await?;
                    return Ok(());
                }
            };
            answer(&mut *io, &context.server, node, limits).await?;
            io.release_send_buffer();
            info.mark_authenticated();
        }
    };
    if let Err(e) = served.await {
        tracing::debug!(remote = %remote, error = %e, "framed peer connection closed");
    }
}

/// Whether a request passed authentication.
enum Admitted {
    Yes { node: String, body: Vec<u8> },
    No(Status),
}

/// Reads the rest of the request `header` opens and authenticates it. An
/// error (closing the connection, unanswered) when the header is malformed
/// or announces more than the caps allow, before anything past it is read.
async fn read_request(
    io: &mut dyn FramedIo,
    header: &[u8; REQUEST_HEADER_BYTES],
    context: &Context,
    remote: SocketAddr,
) -> io::Result<Admitted> {
    let limits = context.limits;
    let max_body = MAX_REQUEST_BODY_BYTES.min(limits.max_request_body_bytes);
    let req = RequestHeader::parse(header, max_body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("request refused: {e}")))?;
    let node_len = usize::from(req.node_len);
    let mut rest = vec![0u8; node_len + req.body_len as usize];
    bounded(
        limits.body_timeout,
        "request body",
        io.read_exact(&mut rest),
    )
    .await?;
    let body = rest.split_off(node_len);
    let md = auth_entries(&rest, &req);
    let digest = body_digest(&body);
    Ok(
        match context
            .server
            .admit_metadata(&md, Some(remote), FRAMED_FETCH_METHOD, &digest)
        {
            Ok(node) => Admitted::Yes { node, body },
            Err(status) => Admitted::No(status),
        },
    )
}

/// A request's auth fields as the entries [`ChunkServer::admit_metadata`]
/// reads (a node id that is not text is left out, and refused there).
fn auth_entries(node: &[u8], req: &RequestHeader) -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Some(v) = std::str::from_utf8(node)
        .ok()
        .and_then(|n| MetadataValue::try_from(n).ok())
    {
        md.insert(NODE_HEADER, v);
    }
    md.insert(TIME_HEADER, MetadataValue::from(req.time));
    let hex_entry = |b: &[u8]| MetadataValue::try_from(hex::encode(b)).expect("hex is ASCII");
    md.insert(NONCE_HEADER, hex_entry(&req.nonce));
    md.insert(AUTH_HEADER, hex_entry(&req.tag));
    md
}

/// An error answer (or the abort that ends a chunk, after its marker).
async fn answer_error(
    io: &mut dyn FramedIo,
    status: &Status,
    limits: ServeLimits,
) -> io::Result<()> {
    let (header, message) = ResponseHeader::error(status.code(), status.message());
    let header = header.encode();
    let mut bufs = [IoSlice::new(&header), IoSlice::new(message)];
    bounded(limits.idle_timeout, "writing an answer", async {
        write_all_vectored(io, &mut bufs).await?;
        io.flush().await
    })
    .await
}

/// Answers an authenticated request: the chunk it names, or why not.
async fn answer(
    io: &mut dyn FramedIo,
    server: &ChunkServer,
    (node, body): (String, Vec<u8>),
    limits: ServeLimits,
) -> io::Result<()> {
    let located = match v1::ChunkRequest::decode(body.as_slice()) {
        Ok(request) => server.locate(&node, request).await,
        Err(e) => Err(Status::invalid_argument(format!(
            "undecodable request: {e}"
        ))),
    };
    match located {
        Ok(serving) => stream_chunk(io, serving, limits).await,
        Err(status) => answer_error(io, &status, limits).await,
    }
}

/// Streams a located chunk: the OK header, segments as the chunk lands
/// (batched into vectored writes), then its CRC-64, or an abort.
async fn stream_chunk(
    io: &mut dyn FramedIo,
    mut s: Serving,
    limits: ServeLimits,
) -> io::Result<()> {
    let write_limit = limits.idle_timeout;
    let header = ResponseHeader::ok(s.len()).encode();
    bounded(write_limit, "writing the answer", io.write_all(&header)).await?;
    if io.seals_in_place() {
        return stream_sealed(io, s, limits).await;
    }
    let mut next = None;
    loop {
        let segment = match next.take() {
            Some(segment) => segment,
            None => s.next_segment().await,
        };
        match segment {
            Ok(Segment::Data { bytes, .. }) => {
                let mut batch = vec![bytes];
                let mut len = batch[0].len();
                // Whatever else has landed goes in the same write.
                while len + FRAME_BYTES <= MAX_BATCH_BYTES {
                    match s.next_segment().now_or_never() {
                        Some(Ok(Segment::Data { bytes, .. })) => {
                            len += bytes.len();
                            batch.push(bytes);
                        }
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                let marker = Marker::Data(len as u32).encode();
                let mut bufs: Vec<IoSlice<'_>> = std::iter::once(&marker[..])
                    .chain(batch.iter().map(Vec::as_slice))
                    .map(IoSlice::new)
                    .collect();
                bounded(write_limit, "writing the chunk", async {
                    write_all_vectored(io, &mut bufs).await?;
                    io.flush().await
                })
                .await?;
                drop(bufs);
                for bytes in batch {
                    s.recycle(bytes);
                }
            }
            Ok(Segment::KeepAlive) => keep_alive(io, limits).await?,
            Ok(Segment::End { crc }) => return end_chunk(io, crc, limits).await,
            Err(status) => return abort_chunk(io, &status, limits).await,
        }
    }
}

/// [`stream_chunk`] over TLS records: each data frame is read from the
/// served target straight into the records that carry it, in the send
/// buffer, and sealed there (one `preadv`, no copy), its segment word in
/// the first record; the buffer is written while the next frame is
/// awaited.
async fn stream_sealed(
    io: &mut dyn FramedIo,
    mut s: Serving,
    limits: ServeLimits,
) -> io::Result<()> {
    let write_limit = limits.idle_timeout;
    loop {
        match s.next(FRAME_BYTES as u64).await {
            Ok(Next::Data(n)) => {
                bounded(write_limit, "writing the chunk", io.flush()).await?;
                let marker = Marker::Data(n as u32).encode();
                let mut refused = None;
                let sealed = io.seal_with(&marker, n as usize, &mut |slots| {
                    s.read_into(slots).map(drop).map_err(|status| {
                        refused = Some(status);
                        io::Error::other("the chunk could not be read")
                    })
                });
                match (sealed, refused) {
                    (_, Some(status)) => return abort_chunk(io, &status, limits).await,
                    (result, None) => result?,
                }
            }
            Ok(Next::KeepAlive) => keep_alive(io, limits).await?,
            Ok(Next::End { crc }) => return end_chunk(io, crc, limits).await,
            Err(status) => return abort_chunk(io, &status, limits).await,
        }
    }
}

async fn keep_alive(io: &mut dyn FramedIo, limits: ServeLimits) -> io::Result<()> {
    bounded(limits.idle_timeout, "writing a keep-alive", async {
        io.write_all(&Marker::KeepAlive.encode()).await?;
        io.flush().await
    })
    .await
}

/// The end of a chunk: its CRC-64.
async fn end_chunk(io: &mut dyn FramedIo, crc: u64, limits: ServeLimits) -> io::Result<()> {
    let mut end = Marker::End.encode().to_vec();
    end.extend_from_slice(&crc.to_be_bytes());
    bounded(limits.idle_timeout, "ending the chunk", async {
        io.write_all(&end).await?;
        io.flush().await
    })
    .await
}

/// Ends a chunk with `status`.
async fn abort_chunk(
    io: &mut dyn FramedIo,
    status: &Status,
    limits: ServeLimits,
) -> io::Result<()> {
    bounded(
        limits.idle_timeout,
        "aborting the chunk",
        io.write_all(&Marker::Abort.encode()),
    )
    .await?;
    answer_error(io, status, limits).await
}

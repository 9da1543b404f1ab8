//! Bulk chunk data over QUIC (quinn): one bidirectional stream per chunk,
//! raw byte segments after a fixed header. Opt-in (`OSS_CONNECTOR_PEER_TRANSPORT=quic`):
//! gRPC measured faster on the reference test, see [`crate::swarm`]'s notes.
//!
//! Design decisions:
//! - **Where**: one quinn endpoint per agent, on UDP at the same address and
//!   port number as the gRPC service (TCP), so a peer id (`ip:port`) names
//!   both and no second port needs opening or configuring. The endpoint is
//!   both server (peers pull from us) and client (we pull from peers).
//! - **Security**: the same secret-derived CA and node certificate as the
//!   gRPC path ([`crate::swarm::tls`]): TLS 1.3 with client certificates
//!   required and verified against the derived CA, server name
//!   [`PEER_TLS_NAME`](crate::swarm::tls::PEER_TLS_NAME), ALPN [`ALPN`]. A
//!   node without the secret cannot complete a handshake in either
//!   direction. QUIC is always encrypted, so `OSS_CONNECTOR_PEER_TLS=0`
//!   (which only concerns gRPC) does not change it. On top of TLS every
//!   request carries the same HMAC tag as a gRPC call
//!   ([`crate::swarm::auth`]), bound to [`QUIC_FETCH_METHOD`], and is
//!   checked by the same [`ChunkServer::admit_metadata`].
//! - **Protocol** (also documented in `proto/ossc.proto`): the client opens
//!   a bidirectional stream, writes a u32 big-endian length and a
//!   `QuicChunkRequest` (the `ChunkRequest` plus auth fields), and finishes
//!   its side. The server answers with a [`RESPONSE_HEADER_BYTES`]-byte
//!   header (gRPC status code, message length, data length), then the error
//!   message, or the chunk as segments (u32 BE length + raw bytes; length 0
//!   is a keep-alive) *while it arrives* at the owner (cut-through, see
//!   [`crate::swarm::chunk_server`]), and finally [`END_OF_CHUNK`] + the chunk's
//!   CRC-64. No per-frame protobuf: the receiver hashes each `read_chunk`
//!   buffer (quinn's own, no copy) and writes it straight into its
//!   `ChunkTarget`; nothing counts as received before the CRC matches. The
//!   server side shares [`ChunkServer::locate`] and `Serving::next_segment`
//!   with gRPC FetchChunk, so waiting, keep-alives, NOT_FOUND for unknown
//!   versions and fault injection behave identically.
//! - **Bulk tuning** ([`crypto::transport_config`]): a 16 MiB stream receive window
//!   (one whole default chunk in flight per stream), a 64 MiB connection
//!   receive and send window (several concurrent chunks; the default 16
//!   pulls per node share one connection per peer), 4 MiB UDP socket
//!   buffers so bursts are not dropped by the kernel (clamped by
//!   `net.core.rmem_max`/`wmem_max`), and quinn's default MTU discovery
//!   (up to 1452-byte payloads). Probing for jumbo frames (8952 bytes) was
//!   measured and dropped: on a CPU-bound receiver the larger bursts
//!   overflowed the socket buffer, quinn took the losses for an MTU black
//!   hole and fell back to 1200-byte packets (slower than the default).
//! - **Rooms**: this module holds the endpoint both sides share and the
//!   wire constants; [`crypto`] the TLS and quinn configuration, [`client`]
//!   connections to peers and the pull, [`server`] the accept loop
//!   (connection and handshake caps, per-stream request timeout,
//!   authentication before decoding).
//! - **Fallback**: a peer whose QUIC handshake fails or times out
//!   ([`CONNECT_TIMEOUT`]) is pulled from over gRPC for
//!   [`QUIC_RETRY_AFTER`]; this is logged once per peer (and again when QUIC
//!   works again): the pull answers `Unreachable`
//!   ([`PullError`](crate::swarm::transport::PullError)) and the next
//!   transport takes it. A failure *after* connecting is an ordinary pull
//!   failure: the chunk comes from the store, as on the gRPC path.

pub mod client;
pub mod crypto;
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use quinn::VarInt;
use tokio::task::JoinHandle;

use crate::swarm::chunk_server::ChunkServer;
use crate::swarm::tls::PeerTls;
use crate::swarm::transport::ChunkService;

pub use crypto::QuicCrypto;

/// ALPN protocol id of the chunk transport (versioned: a new wire format is
/// a new id, so old and new nodes fail the handshake and fall back to gRPC).
pub const ALPN: &[u8] = b"ossc-chunk/3";
/// The "method" signed into a QUIC request's HMAC tag (distinct from every
/// gRPC path, so tags cannot be replayed across transports).
pub const QUIC_FETCH_METHOD: &str = "quic:/ossc-chunk/3/FetchChunk";
/// Response header: status (u8), 3 zero bytes, message length (u32 BE),
/// 8 zero bytes, data length (u64 BE).
pub const RESPONSE_HEADER_BYTES: usize = 24;
/// Segment length that ends a chunk; the chunk's CRC-64 (u64 BE) follows.
pub const END_OF_CHUNK: u32 = u32::MAX;
/// Largest accepted request message (a ChunkRequest with key and auth is a
/// few hundred bytes; object keys are at most 1 KiB in S3/OSS).
pub const MAX_REQUEST_BYTES: u32 = 64 << 10;
/// Largest error message sent or accepted after a header.
pub const MAX_MESSAGE_BYTES: u32 = 4 << 10;
/// Per-stream receive window: one whole default (16 MiB) chunk in flight.
pub const STREAM_RECEIVE_WINDOW: u32 = 16 << 20;
/// Per-connection receive window: room for four chunks at full speed.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 64 << 20;
/// Per-connection send window (bytes buffered unacknowledged).
pub const SEND_WINDOW: u64 = 64 << 20;
/// Concurrent chunk streams a peer may open to us (well above the default
/// 16 pulls per node; extra streams wait in quinn, not in our code).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Kernel socket buffer requested for the UDP socket (each direction).
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// A connection with no traffic for this long is closed (keep-alives every
/// [`KEEP_ALIVE`] keep connections to live peers open).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Keep-alive period on idle connections.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// QUIC handshake timeout; past it the peer is pulled from over gRPC.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed handshake, how long that peer is served by gRPC before
/// QUIC is tried again.
pub const QUIC_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Failures setting up the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("QUIC TLS setup: {0}")]
    Tls(String),
    #[error("binding the QUIC endpoint on udp {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// This node's QUIC endpoint: serves chunks and pulls them.
pub struct QuicNode {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    conns: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<client::Slot>>>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    /// Connections peers opened to us, by remote address (for statistics).
    served: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
    /// Verified chunk bytes pulled over QUIC.
    pub bytes_received: AtomicU64,
    /// Pulls handed to the next transport because QUIC could not connect.
    pub unreachable: AtomicU64,
}

/// Asks the kernel for `bytes` of socket buffer in each direction (best
/// effort: the kernel clamps to `net.core.{r,w}mem_max`).
fn set_socket_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: the fd is a valid open socket owned by `socket` for the
        // duration of the call; `value` is a live c_int whose size is passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "setting the QUIC socket buffer size failed"
            );
        }
    }
}

impl QuicNode {
    /// Binds UDP `addr` with this node's certificates and serves `server`'s
    /// chunks; `None` (logged) when that fails, which costs peers only the
    /// gRPC fallback.
    pub fn start(
        addr: SocketAddr,
        tls: &PeerTls,
        server: Arc<ChunkServer>,
    ) -> Option<Arc<QuicNode>> {
        let started = QuicCrypto::from_tls(tls)
            .map_err(|e| e.to_string())
            .and_then(|c| QuicNode::bind(addr, c, server).map_err(|e| e.to_string()));
        match started {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::warn!(error = %e, "QUIC chunk transport unavailable on this node; peers will pull from it over gRPC");
                None
            }
        }
    }

    /// Binds UDP `addr` and starts serving `server`'s chunks (spawns on the
    /// current tokio runtime).
    pub fn bind(
        addr: SocketAddr,
        crypto: QuicCrypto,
        server: Arc<ChunkServer>,
    ) -> Result<Arc<QuicNode>, QuicSetupError> {
        let bind_err = |source| QuicSetupError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
        set_socket_buffers(&socket, UDP_SOCKET_BUFFER_BYTES);
        let (server_config, client_config) = crypto.into_configs();
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let node = Arc::new(QuicNode {
            endpoint: endpoint.clone(),
            client: client_config,
            conns: Mutex::default(),
            accept_task: Mutex::default(),
            served: Arc::default(),
            bytes_received: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
        });
        let task = tokio::spawn(server::accept_loop(endpoint, server, node.served.clone()));
        *node.accept_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(node)
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Statistics of the connection to `addr` (packets, path MTU, RTT),
    /// if one is open.
    pub fn connection_stats(&self, addr: SocketAddr) -> Option<quinn::ConnectionStats> {
        if let Some(c) = self
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
        {
            return Some(c.stats());
        }
        let slot = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)?
            .clone();
        let slot = slot.try_lock().ok()?;
        slot.conn.as_ref().map(|c| c.stats())
    }

    /// Closes every connection and stops serving.
    pub fn close(&self) {
        if let Some(t) = self
            .accept_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
        self.endpoint.close(VarInt::from_u32(0), b"shutdown");
    }
}

impl Drop for QuicNode {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl ChunkService for QuicNode {
    fn name(&self) -> &'static str {
        "quic"
    }

    /// Closes at once: a QUIC stream cut short costs its puller a store
    /// fetch, as when the node dies.
    async fn shutdown(&self, _grace: Duration) {
        self.close();
    }

    fn abort(&self) {
        self.close();
    }
}

//! Bulk chunk data over QUIC (quinn): one bidirectional stream per chunk,
//! raw byte segments after a fixed header. Opt-in (`OSS_CONNECTOR_PEER_TRANSPORT=quic`):
//! gRPC measured faster on the reference test, see [`super`]'s notes.
//!
//! Design decisions:
//! - **Where**: one quinn endpoint per agent, on UDP at the same address and
//!   port number as the gRPC service (TCP), so a peer id (`ip:port`) names
//!   both and no second port needs opening or configuring. The endpoint is
//!   both server (peers pull from us) and client (we pull from peers).
//! - **Security**: the same secret-derived CA and node certificate as the
//!   gRPC path ([`super::tls`]): TLS 1.3 with client certificates required
//!   and verified against the derived CA, server name [`PEER_TLS_NAME`],
//!   ALPN [`ALPN`]. A node without the secret cannot complete a handshake in
//!   either direction. QUIC is always encrypted, so `OSS_CONNECTOR_PEER_TLS=0`
//!   (which only concerns gRPC) does not change it. On top of TLS every
//!   request carries the same HMAC tag as a gRPC call ([`super::auth`]),
//!   bound to [`QUIC_FETCH_METHOD`], and is checked by the same
//!   [`ChunkServer::admit_metadata`].
//! - **Protocol** (also documented in `proto/ossc.proto`): the client opens
//!   a bidirectional stream, writes a u32 big-endian length and a
//!   `QuicChunkRequest` (the `ChunkRequest` plus auth fields), and finishes
//!   its side. The server answers with a [`RESPONSE_HEADER_BYTES`]-byte
//!   header (gRPC status code, message length, data length), then the error
//!   message, or the chunk as segments (u32 BE length + raw bytes; length 0
//!   is a keep-alive) *while it arrives* at the owner (cut-through, see
//!   [`super::chunk_server`]), and finally [`END_OF_CHUNK`] + the chunk's
//!   CRC-64. No per-frame protobuf: the receiver hashes each `read_chunk`
//!   buffer (quinn's own, no copy) and writes it straight into its
//!   `ChunkTarget`; nothing counts as received before the CRC matches. The
//!   server side shares [`ChunkServer::locate`] and
//!   [`Serving::next_segment`] with gRPC FetchChunk, so waiting, keep-alives,
//!   NOT_FOUND for unknown versions and fault injection behave identically.
//! - **Bulk tuning** ([`transport_config`]): a 16 MiB stream receive window
//!   (one whole default chunk in flight per stream), a 64 MiB connection
//!   receive and send window (several concurrent chunks; the default 16
//!   pulls per node share one connection per peer), 4 MiB UDP socket
//!   buffers so bursts are not dropped by the kernel (clamped by
//!   `net.core.rmem_max`/`wmem_max`), and quinn's default MTU discovery
//!   (up to 1452-byte payloads). Probing for jumbo frames (8952 bytes) was
//!   measured and dropped: on a CPU-bound receiver the larger bursts
//!   overflowed the socket buffer, quinn took the losses for an MTU black
//!   hole and fell back to 1200-byte packets (slower than the default).
//! - **Server side** ([`super::quic_server`]): connection and handshake
//!   caps, per-stream request timeout, authentication before decoding.
//! - **Fallback**: a peer whose QUIC handshake fails or times out
//!   ([`CONNECT_TIMEOUT`]) is pulled from over gRPC for
//!   [`QUIC_RETRY_AFTER`]; this is logged once per peer (and again when QUIC
//!   works again). A failure *after* connecting is an ordinary pull failure:
//!   the chunk comes from the store, as on the gRPC path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ossc_core::crc64::Crc64Hasher;
use ossc_proto::v1;
use prost::Message;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::VarInt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use tonic::metadata::MetadataMap;
use tonic::Code;

use super::auth::{body_digest, new_nonce, now_secs, ClusterSecret, AUTH_HEADER, NONCE_HEADER};
use super::chunk_server::ChunkServer;
use super::tls::{PeerTls, PEER_TLS_NAME};
use crate::object_source::ChunkTarget;

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

/// Why a QUIC pull did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum QuicPullError {
    /// No QUIC connection to this peer (handshake failed, timed out, or
    /// failed recently): the caller uses gRPC instead.
    #[error("QUIC unreachable: {0}")]
    Unreachable(String),
    #[error("peer does not hold this object version")]
    NotFound,
    /// The stream or connection broke, stalled or was reset: the peer may
    /// be dying (the caller asks membership before choosing the store).
    #[error("{0}")]
    Lost(String),
    /// The peer sent bytes that are not the chunk (bad framing, a CRC
    /// mismatch): the caller stops trusting it for this object.
    #[error("{0}")]
    Corrupt(String),
    /// Any other wrong answer (an error status, no progress): the chunk goes
    /// to the store.
    #[error("{0}")]
    Failed(String),
}

/// rustls + quinn configuration of both sides.
#[derive(Clone)]
pub struct QuicCrypto {
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
}

impl std::fmt::Debug for QuicCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicCrypto(<derived CA, node certificate; keys hidden>)")
    }
}

fn tls_err(e: impl std::fmt::Display) -> QuicSetupError {
    QuicSetupError::Tls(e.to_string())
}

/// Transport parameters for bulk chunks (see the module docs).
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("20 s is a valid idle timeout"),
        ));
    t
}

impl QuicCrypto {
    /// From this node's TLS material (the derived CA and node certificate).
    pub fn from_tls(tls: &PeerTls) -> Result<QuicCrypto, QuicSetupError> {
        QuicCrypto::from_pems(tls.ca_pem(), tls.cert_pem(), tls.key_pem())
    }

    /// Trust `ca_pem` only; present `cert_pem`/`key_pem` on both sides.
    pub fn from_pems(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<QuicCrypto, QuicSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(tls_err)?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(tls_err)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls_err)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).map_err(tls_err)?;
        let roots = Arc::new(roots);

        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(tls_err)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .map_err(tls_err)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], key)
            .map_err(tls_err)?;
        client.alpn_protocols = vec![ALPN.to_vec()];

        let transport = Arc::new(transport_config());
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server).map_err(tls_err)?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client).map_err(tls_err)?,
        ));
        client.transport_config(transport);
        Ok(QuicCrypto { server, client })
    }
}

/// Client-side state of one peer's connection.
#[derive(Default)]
struct Slot {
    conn: Option<quinn::Connection>,
    /// When the last handshake failed (None once one succeeds).
    failed_at: Option<Instant>,
}

/// This node's QUIC endpoint: serves chunks and pulls them.
pub struct QuicNode {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    conns: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Slot>>>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    /// Connections peers opened to us, by remote address (for statistics).
    served: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
    /// Verified chunk bytes pulled over QUIC.
    pub bytes_received: AtomicU64,
    /// Pulls handed to gRPC because QUIC could not connect.
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
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(crypto.server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let node = Arc::new(QuicNode {
            endpoint: endpoint.clone(),
            client: crypto.client,
            conns: Mutex::default(),
            accept_task: Mutex::default(),
            served: Arc::default(),
            bytes_received: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
        });
        let task = tokio::spawn(super::quic_server::accept_loop(
            endpoint,
            server,
            node.served.clone(),
        ));
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

    /// The connection to `addr`, made if needed; `Unreachable` when the
    /// handshake fails (logged once per peer until QUIC works again).
    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, QuicPullError> {
        let slot = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = &slot.conn {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
            slot.conn = None;
        }
        if slot
            .failed_at
            .is_some_and(|t| t.elapsed() < QUIC_RETRY_AFTER)
        {
            return Err(QuicPullError::Unreachable(
                "handshake failed recently".into(),
            ));
        }
        let attempt = async {
            let connecting = self
                .endpoint
                .connect_with(self.client.clone(), addr, PEER_TLS_NAME)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no handshake within {CONNECT_TIMEOUT:?}")),
            }
        };
        match attempt.await {
            Ok(c) => {
                if slot.failed_at.take().is_some() {
                    tracing::info!(peer = %addr, "QUIC to this peer works again");
                }
                slot.conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                if slot.failed_at.replace(Instant::now()).is_none() {
                    tracing::warn!(
                        peer = %addr,
                        error = %e,
                        retry_after = ?QUIC_RETRY_AFTER,
                        "QUIC connection to peer failed; pulling from it over gRPC"
                    );
                }
                Err(QuicPullError::Unreachable(e))
            }
        }
    }

    /// Pulls one chunk (`range` of the object) from the peer at `addr` into
    /// `target`; returns its CRC-64, verified against the one the owner
    /// recorded. `answer_timeout` bounds the wait for the header and how long
    /// the chunk may go without data (keep-alives do not count), `stall`
    /// every read.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        secret: &ClusterSecret,
        self_id: &str,
        request: v1::ChunkRequest,
        range: Range<u64>,
        target: &dyn ChunkTarget,
        answer_timeout: Duration,
        stall: Duration,
    ) -> Result<u64, QuicPullError> {
        let conn = self.connection(addr).await.inspect_err(|_| {
            self.unreachable.fetch_add(1, Ordering::Relaxed);
        })?;
        let failed =
            |what: &str, e: &dyn std::fmt::Display| QuicPullError::Failed(format!("{what}: {e}"));
        let lost =
            |what: &str, e: &dyn std::fmt::Display| QuicPullError::Lost(format!("{what}: {e}"));
        let stalled = || QuicPullError::Lost("chunk stream stalled".into());
        let (mut send, mut recv) = tokio::time::timeout(stall, conn.open_bi())
            .await
            .map_err(|_| QuicPullError::Lost("opening a stream timed out".into()))?
            .map_err(|e| lost("opening a stream", &e))?;
        let body =
            signed_request(secret, self_id, &request, now_secs(), &new_nonce()).encode_to_vec();
        let mut framed = Vec::with_capacity(4 + body.len());
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        send.write_all(&framed)
            .await
            .map_err(|e| lost("sending the request", &e))?;
        let _ = send.finish();

        let mut header = [0u8; RESPONSE_HEADER_BYTES];
        tokio::time::timeout(answer_timeout, recv.read_exact(&mut header))
            .await
            .map_err(|_| QuicPullError::Lost(format!("no answer within {answer_timeout:?}")))?
            .map_err(|e| lost("reading the answer", &e))?;
        let code = Code::from_i32(i32::from(header[0]));
        let msg_len = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        let len = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        if code != Code::Ok {
            if code == Code::NotFound {
                return Err(QuicPullError::NotFound);
            }
            let mut text = vec![0u8; msg_len.min(MAX_MESSAGE_BYTES) as usize];
            let _ = tokio::time::timeout(stall, recv.read_exact(&mut text)).await;
            let text = format!("{code:?}: {}", String::from_utf8_lossy(&text));
            return Err(if code == Code::Unavailable {
                QuicPullError::Lost(text)
            } else {
                QuicPullError::Failed(text)
            });
        }
        let want = range.end - range.start;
        if len != want {
            return Err(QuicPullError::Corrupt(format!(
                "peer sends {len} bytes for a chunk of {want}"
            )));
        }
        let mut hasher = Crc64Hasher::new();
        let mut pos = 0u64;
        let mut last_data = Instant::now();
        let crc = loop {
            let mut word = [0u8; 4];
            tokio::time::timeout(stall, recv.read_exact(&mut word))
                .await
                .map_err(|_| stalled())?
                .map_err(|e| lost(&format!("reading the chunk at {pos} of {len}"), &e))?;
            let seg = u32::from_be_bytes(word);
            if seg == END_OF_CHUNK {
                let mut crc = [0u8; 8];
                tokio::time::timeout(stall, recv.read_exact(&mut crc))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| lost("reading the chunk CRC", &e))?;
                break u64::from_be_bytes(crc);
            }
            if seg == 0 {
                // Keep-alive: the owner is alive, the chunk has not advanced.
                if last_data.elapsed() > answer_timeout {
                    return Err(QuicPullError::Failed(format!(
                        "chunk made no progress for {answer_timeout:?}"
                    )));
                }
                continue;
            }
            let seg = u64::from(seg);
            if pos + seg > len {
                return Err(QuicPullError::Corrupt(format!(
                    "segment of {seg} bytes at {pos} overruns the chunk of {len}"
                )));
            }
            let end = pos + seg;
            while pos < end {
                let max = usize::try_from(end - pos).unwrap_or(usize::MAX);
                let chunk = tokio::time::timeout(stall, recv.read_chunk(max, true))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| lost("reading the chunk", &e))?
                    .ok_or_else(|| {
                        QuicPullError::Lost(format!("chunk truncated at {pos} of {len}"))
                    })?;
                let bytes: Bytes = chunk.bytes;
                hasher.update(&bytes);
                target
                    .write_at(range.start + pos, &bytes)
                    .map_err(|e| failed("writing chunk", &e))?;
                pos += bytes.len() as u64;
            }
            last_data = Instant::now();
        };
        if pos != len {
            return Err(QuicPullError::Corrupt(format!(
                "chunk ended at {pos} of {len}"
            )));
        }
        let actual = hasher.finish();
        if actual != crc {
            return Err(QuicPullError::Corrupt(format!(
                "chunk CRC-64 mismatch: peer recorded {crc:#018x}, data has {actual:#018x}"
            )));
        }
        self.bytes_received.fetch_add(len, Ordering::Relaxed);
        Ok(actual)
    }
}

impl Drop for QuicNode {
    fn drop(&mut self) {
        self.close();
    }
}

/// A `QuicChunkRequest` carrying `request`, signed at `time` with `nonce`.
fn signed_request(
    secret: &ClusterSecret,
    self_id: &str,
    request: &v1::ChunkRequest,
    time: u64,
    nonce: &str,
) -> v1::QuicChunkRequest {
    let encoded = request.encode_to_vec();
    let mut md = MetadataMap::new();
    secret.sign_at(
        &mut md,
        self_id,
        QUIC_FETCH_METHOD,
        &body_digest(&encoded),
        time,
        nonce,
    );
    let text = |k: &str| {
        md.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    v1::QuicChunkRequest {
        request: encoded,
        node_id: self_id.to_string(),
        time,
        auth: text(AUTH_HEADER),
        nonce: text(NONCE_HEADER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::auth::{AuthError, NonceCache, TEST_SECRET};
    use crate::swarm::quic_server::{auth_metadata, header};

    #[test]
    fn headers_round_trip_and_the_crypto_builds_from_derived_material() {
        let h = header(Code::NotFound, 7, 16 << 20);
        assert_eq!(Code::from_i32(i32::from(h[0])), Code::NotFound);
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 7);
        assert_eq!(&h[8..16], &[0u8; 8]);
        assert_eq!(u64::from_be_bytes(h[16..24].try_into().unwrap()), 16 << 20);
        let s = ClusterSecret::new(TEST_SECRET).unwrap();
        let tls = PeerTls::new(&s, "127.0.0.1:1").unwrap();
        QuicCrypto::from_tls(&tls).unwrap();
        // Garbage PEM is an error, not a panic.
        assert!(QuicCrypto::from_pems("x", tls.cert_pem(), tls.key_pem()).is_err());
        // The request's auth entries become the metadata the HMAC check
        // reads; the tag covers the encoded request and its nonce.
        let request = v1::ChunkRequest {
            wait_ms: 7,
            ..Default::default()
        };
        let req = signed_request(&s, "10.0.0.1:7468", &request, 1_000, &new_nonce());
        let digest = body_digest(&req.request);
        let check = |req: &v1::QuicChunkRequest, method: &str, digest: &[u8; 32]| {
            let nonces = NonceCache::default();
            s.verify_at(&auth_metadata(req), method, digest, &nonces, 1_000)
        };
        assert_eq!(
            check(&req, QUIC_FETCH_METHOD, &digest).unwrap(),
            "10.0.0.1:7468"
        );
        assert!(check(&req, "/ossc.v1.PeerControl/FetchChunk", &digest).is_err());
        let mut altered = req.clone();
        altered.request = v1::ChunkRequest {
            wait_ms: 8,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            check(&altered, QUIC_FETCH_METHOD, &body_digest(&altered.request)),
            Err(AuthError::BadTag)
        );
    }
}

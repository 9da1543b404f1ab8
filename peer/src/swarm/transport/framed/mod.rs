//! Bulk chunk data over TLS 1.3 on plain TCP, in fixed-size frames: no
//! HTTP/2, no protobuf per frame (`OSS_CONNECTOR_PEER_TRANSPORT=framed`).
//!
//! Design decisions:
//! - **Where**: its own TCP port, the peer port + [`PORT_OFFSET`] (7469 by
//!   default), on the listen address's interface. Peers derive it from a
//!   node's id (`ip:port` + 1), so nothing is advertised and no config key
//!   is added; firewalls and NetworkPolicies must open it like the peer
//!   port (a filtered or refused port only costs the gRPC fallback below).
//!   QUIC uses the peer port number on UDP and the metrics exporter its own
//!   port (9469), so nothing else claims it; a node whose peer port is 65535
//!   has no framed port and is pulled from over gRPC.
//! - **Security**: the same secret-derived CA and node certificate as gRPC
//!   and QUIC ([`crate::swarm::tls::rustls_configs`]): TLS 1.3, client
//!   certificates required on both sides, ALPN [`ALPN`], so a node without
//!   the secret, or a server that is not this transport, fails the
//!   handshake. `OSS_CONNECTOR_PEER_TLS=0` makes it plaintext, as it does
//!   gRPC. Every request carries an HMAC tag under the cluster secret
//!   ([`crate::swarm::auth`]) over the caller's node id, time, nonce,
//!   [`FRAMED_FETCH_METHOD`] and the SHA-256 of the request body; the server
//!   checks it ([`ChunkServer::admit_metadata`], the replay cache included)
//!   before the body is decoded.
//! - **Wire** ([`wire`]): after TLS the server sends a greeting; then each
//!   request is a fixed header (lengths, time, nonce, tag), the node id and
//!   the encoded `ChunkRequest`; the answer a fixed header (status, message
//!   or chunk length), then the chunk as length-prefixed segments of raw
//!   bytes (0 = keep-alive), and the chunk's CRC-64 at the end. Segments
//!   are served *while the chunk arrives* at the owner (cut-through), from
//!   the same [`ChunkServer::locate`] and `Serving::next_segment` as gRPC
//!   and QUIC, so waiting, keep-alives, NOT_FOUND and fault injection
//!   behave identically. A failure mid-chunk is an abort segment carrying
//!   the status, so the puller maps it exactly as a gRPC status
//!   ([`grpc::client::from_status`](super::grpc::client::from_status)).
//! - **Records** ([`records`], [`record_stream`]): rustls runs the
//!   handshake (above); then the connection's traffic secrets are taken out
//!   of it and its TLS 1.3 records are sealed and opened here with ring's
//!   AEADs, as kernel TLS would (this kernel has none), so that no record
//!   is copied or allocated on its own: the receiver opens every record in
//!   its read buffer straight after the plaintext of the one before, and
//!   the sender seals records in one outgoing buffer. The server sends no
//!   session tickets and neither side KeyUpdate; a connection is retired
//!   well before its keys' record limit. rustls' own stream interoperates
//!   with it (the tests use it).
//! - **Large writes, no copies per frame**: the server gathers the
//!   1 MiB segments [`ChunkServer`] has ready into one segment of up to
//!   [`MAX_BATCH_BYTES`] and writes its length word and the segment
//!   buffers, read straight from the served target (and given back to be
//!   read into again), with one vectored write (TLS seals them into
//!   records in a buffer of [`SEND_BUFFER_BYTES`], written with one
//!   `write` per buffer; without TLS they reach the socket with one
//!   `writev`). The puller reads the socket through a [`READ_BUFFER_BYTES`]
//!   buffer, and hashes and writes what arrived (with TLS: the plaintext
//!   of every record that buffer held, contiguous) into its `ChunkTarget`
//!   in writes of up to [`WRITE_BATCH_BYTES`] ([`Receiving`](super::Receiving)):
//!   nothing is counted before the CRC matches. These sizes were measured
//!   (`docs/benchmarks.md`).
//! - **Connections** ([`client`]): one request at a time per connection,
//!   persistent. A pull takes an idle connection to the peer or opens one,
//!   and gives it back after a complete answer, so the fetcher's pull limit
//!   (16) bounds the connections to a peer, each pull has its own TCP flow
//!   control, and no pull waits behind another's bytes. A pool of 4
//!   connections, or a single one, that pulls queue for measured the same
//!   CPU per GB on loopback (`docs/benchmarks.md`), so nothing is gained by
//!   sharing. At most [`MAX_IDLE_CONNECTIONS`] stay open between pulls, each
//!   for at most [`CLIENT_IDLE`], well within the server's idle timeout.
//! - **Admission** ([`server`]): every connection passes the peer port's
//!   [`ConnectionGate`](crate::swarm::admission::ConnectionGate), shared
//!   with gRPC (caps per source address and in total, the first
//!   authenticated request within the handshake timeout, the idle
//!   timeout); the TLS handshake has the handshake timeout; a request whose
//!   header is malformed or whose lengths exceed the caps closes the
//!   connection before its body is read; the body must arrive within the
//!   body timeout; an unauthenticated request is answered UNAUTHENTICATED
//!   and its connection closed.
//! - **Fallback**: a peer that cannot be reached (connect refused or timed
//!   out within [`CONNECT_TIMEOUT`], a failed handshake, no greeting) is
//!   answered [`PullError::Unreachable`](super::PullError::Unreachable) and
//!   pulled from over gRPC for [`RETRY_AFTER`], logged once per peer. A
//!   failure after connecting is an ordinary pull failure.

pub mod client;
mod record_stream;
pub mod records;
#[cfg(test)]
mod records_tests;
pub mod server;
#[cfg(test)]
mod tests;
pub mod wire;

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufReader};

use crate::swarm::chunk_server::ChunkServer;
use crate::swarm::tls::{PeerTls, TlsSetupError};
use record_stream::RecordStream;

pub use client::FramedPuller;
pub use server::FramedService;

/// ALPN protocol id (versioned: a new wire format is a new id, so old and
/// new nodes fail the handshake and fall back to gRPC).
pub const ALPN: &[u8] = b"ossc-frame/1";
/// The "method" signed into a request's HMAC tag (distinct from every gRPC
/// path and from QUIC's, so tags cannot be replayed across transports).
pub const FRAMED_FETCH_METHOD: &str = "framed:/ossc-frame/1/FetchChunk";
/// The framed port is the peer port plus this.
pub const PORT_OFFSET: u16 = 1;
/// Most bytes sent as one segment (several of the chunk server's frames).
pub const MAX_BATCH_BYTES: usize = wire::MAX_SEGMENT_BYTES as usize;
/// Read buffer of a pulling connection (with TLS, of either side): one
/// `read` per 256 KiB that arrived.
pub const READ_BUFFER_BYTES: usize = 256 << 10;
/// Most received bytes gathered into one write into the pull's target.
pub const WRITE_BATCH_BYTES: usize = 256 << 10;
/// Read buffer of a serving connection (requests are small).
pub const REQUEST_BUFFER_BYTES: usize = 8 << 10;
/// Sealed TLS records a serving connection gathers before writing them to
/// the socket: one `write` per MiB.
pub const SEND_BUFFER_BYTES: usize = 1 << 20;
/// The same for a pulling connection, which sends only requests.
pub const REQUEST_SEND_BUFFER_BYTES: usize = 16 << 10;
/// Connect, TLS handshake and greeting together; past it the peer is
/// unreachable over this transport.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a peer could not be reached, how long it is pulled from over gRPC
/// before this transport is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// An idle pulling connection is closed after this long (the server closes
/// connections idle for 60 s).
pub const CLIENT_IDLE: Duration = Duration::from_secs(20);
/// Idle connections kept, all peers together (the fetcher's default pull
/// limit): with at most that many pulls in flight, a node holds at most
/// twice as many pulling connections.
pub const MAX_IDLE_CONNECTIONS: usize = 16;

/// The framed port of a node whose peer port is `peer` (None at port 65535).
pub fn framed_addr(peer: SocketAddr) -> Option<SocketAddr> {
    let port = peer.port().checked_add(PORT_OFFSET)?;
    Some(SocketAddr::new(peer.ip(), port))
}

/// A connection either side reads and writes: TLS records or a buffered
/// plain socket.
pub(crate) trait FramedIo: AsyncBufRead + AsyncWrite + Unpin + Send {
    /// Whether the connection's keys are too used to take another pull
    /// (see [`records::RECORD_LIMIT`]).
    fn worn(&self) -> bool {
        false
    }

    /// Whether [`seal_with`](Self::seal_with) works: a TLS record stream.
    fn seals_in_place(&self) -> bool {
        false
    }

    /// Frees what only sending an answer needs (between answers).
    fn release_send_buffer(&mut self) {}

    /// Writes `prefix` and then `len` bytes that `fill` reads straight
    /// into where they are sealed, after a flush (see
    /// [`RecordStream::seal_with`]).
    fn seal_with(
        &mut self,
        _prefix: &[u8],
        _len: usize,
        _fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> FramedIo for BufReader<S> {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> FramedIo for RecordStream<S> {
    fn worn(&self) -> bool {
        RecordStream::worn(self)
    }

    fn seals_in_place(&self) -> bool {
        true
    }

    fn release_send_buffer(&mut self) {
        RecordStream::release_send_buffer(self)
    }

    fn seal_with(
        &mut self,
        prefix: &[u8],
        len: usize,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        RecordStream::seal_with(self, prefix, len, fill)
    }
}

/// Both sides' TLS (None: plaintext, `OSS_CONNECTOR_PEER_TLS=0`).
#[derive(Clone)]
pub struct FramedTls {
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub connector: Option<tokio_rustls::TlsConnector>,
}

impl FramedTls {
    /// This node's certificates with [`ALPN`], or plaintext when `tls` is
    /// None.
    pub fn new(tls: Option<&PeerTls>) -> Result<FramedTls, TlsSetupError> {
        let Some(tls) = tls else {
            return Ok(FramedTls {
                acceptor: None,
                connector: None,
            });
        };
        let (mut server, mut client) = tls.rustls_configs(ALPN)?;
        // Records are protected by `records` after the handshake, which
        // takes the traffic secrets; nothing is sent after the handshake
        // that only rustls could handle (no session tickets).
        server.enable_secret_extraction = true;
        server.send_tls13_tickets = 0;
        client.enable_secret_extraction = true;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(FramedTls {
            acceptor: Some(Arc::new(server).into()),
            connector: Some(Arc::new(client).into()),
        })
    }
}

/// Starts serving `server` on the framed port of `peer_addr` (None, logged,
/// when it cannot be bound: peers then pull from this node over gRPC).
pub(crate) fn serve(
    peer_addr: SocketAddr,
    server: Arc<ChunkServer>,
    tls: &FramedTls,
    gate: Arc<crate::swarm::admission::ConnectionGate>,
) -> Option<Arc<FramedService>> {
    let started = framed_addr(peer_addr)
        .ok_or_else(|| format!("peer port {} has no next port", peer_addr.port()))
        .and_then(|addr| {
            FramedService::start(addr, server, tls.acceptor.clone(), gate)
                .map_err(|e| format!("binding tcp {addr}: {e}"))
        });
    match started {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "framed chunk transport unavailable on this node; peers will pull from it over gRPC");
            None
        }
    }
}

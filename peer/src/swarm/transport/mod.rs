//! How chunk bytes travel between nodes: two traits the rest of the peer
//! layer uses without knowing the wire, and one module per transport.
//!
//! Design decisions:
//! - **Two sides, two traits.** [`ChunkPuller`] is the client side: stream
//!   one chunk from one peer into a [`ChunkTarget`] at the chunk's offset,
//!   and return its CRC-64 only once every byte arrived and the CRC matches
//!   the one the sender recorded from the store (a pull that fails may have
//!   written part of the range; the caller refills it). [`ChunkService`] is
//!   the serving side: answer peers' pulls until shut down. Every transport
//!   answers from the same [`ChunkServer::admit_metadata`],
//!   [`ChunkServer::locate`] and `Serving::next_segment`, so authentication,
//!   waiting, keep-alives, NOT_FOUND and fault injection behave identically
//!   whatever carries the bytes; [`Receiving`] holds what every client
//!   checks on receipt.
//! - **One error, decided by kind.** Every transport reports a failed pull
//!   as a [`PullError`], mapping its own wire answers (a gRPC status, a QUIC
//!   or framed header code, a read error) onto the kinds. The fetcher's retry and
//!   fallback rules (`super::swarm_fetcher`) read the kind alone, so they
//!   hold for every transport.
//! - **One module per transport** ([`grpc`], [`quic`], [`framed`]), each
//!   with its client and server side: framing, flow control and tuning of a
//!   transport stay in one place, and a transport is added without touching
//!   the fetcher or the others. The control plane (Hello, Have) is always
//!   gRPC; its server ([`grpc::GrpcService`]) runs on every node.
//! - **Every node serves every transport it can bind**; [`PeerTransport`]
//!   only picks how this node pulls. A transport that cannot reach a peer
//!   (QUIC: UDP filtered or unbindable; framed: its TCP port refused or
//!   filtered; either: an old node without the ALPN) answers
//!   [`PullError::Unreachable`], and [`FirstReachable`] hands the pull to
//!   the next transport; gRPC, which every node serves, comes last.
//! - **Adding a transport** is a module here whose types implement both
//!   traits, a [`PeerTransport`] variant with its config name, and its lines
//!   in [`start`]. The throughput measurement (`super::transport_bench`)
//!   runs every entry of [`PeerTransport::ALL`]; the cluster tests name each
//!   transport once (`per_transport!` in the fetcher's tests).
//! - **Which is the default** follows the measurement in
//!   `docs/benchmarks.md` (all three side by side, TLS on): see
//!   [`PeerTransport`].

pub mod framed;
pub mod grpc;
pub mod quic;
pub mod reachability;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ossc_core::crc64::Crc64Hasher;
use ossc_proto::v1;
use tokio::net::TcpListener;

use super::admission::{ConnectionGate, ServeLimits};
use super::auth::ClusterSecret;
use super::chunk_server::ChunkServer;
use super::peer_set::Peer;
use super::tls::{PeerTls, TlsSetupError};
use super::SwarmError;
use crate::object_source::ChunkTarget;

/// How this node pulls chunk data from peers (control is always gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerTransport {
    /// QUIC streams ([`quic`]), falling back to gRPC per peer when a
    /// handshake fails.
    Quic,
    /// gRPC server streaming ([`grpc`]) only.
    Grpc,
    /// Fixed frames over TLS on TCP ([`framed`], the peer port + 1), falling
    /// back to gRPC per peer when it cannot connect. The default: it
    /// measured fastest and cheapest per CPU-second of the three (see
    /// [`super`]'s notes) and carries every multi-host (network-namespace)
    /// cluster test.
    #[default]
    Framed,
}

impl PeerTransport {
    /// Every transport (the throughput measurement runs each).
    pub const ALL: [PeerTransport; 3] = [
        PeerTransport::Quic,
        PeerTransport::Grpc,
        PeerTransport::Framed,
    ];

    /// The config name (`OSS_CONNECTOR_PEER_TRANSPORT` / `peer.transport`).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerTransport::Quic => "quic",
            PeerTransport::Grpc => "grpc",
            PeerTransport::Framed => "framed",
        }
    }

    /// Whether `OSS_CONNECTOR_PEER_TLS=0` turns this transport's encryption
    /// off (QUIC is always encrypted).
    pub fn tls_optional(self) -> bool {
        match self {
            PeerTransport::Quic => false,
            PeerTransport::Grpc | PeerTransport::Framed => true,
        }
    }
}

impl std::str::FromStr for PeerTransport {
    type Err = SwarmError;
    fn from_str(s: &str) -> Result<Self, SwarmError> {
        let name = s.trim().to_ascii_lowercase();
        PeerTransport::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| SwarmError::BadTransport(s.to_string()))
    }
}

/// Why a pull did not deliver, whatever the transport. The fetcher decides
/// what happens next from the kind alone (see `super::swarm_fetcher`).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// This transport cannot reach the peer (a QUIC handshake failed, timed
    /// out or failed recently): the next transport is tried.
    #[error("transport unreachable: {0}")]
    Unreachable(String),
    /// The peer does not hold this object version.
    #[error("peer does not hold this object version")]
    NotHeld,
    /// Membership declared the peer dead mid-pull (the fetcher's verdict,
    /// never a transport's).
    #[error("peer declared dead")]
    Dead,
    /// The stream broke, stalled or was refused as unavailable: the peer
    /// may be dying, which membership will tell within its detection delay.
    #[error("{0}")]
    Lost(String),
    /// Bytes that are not the chunk (bad framing, a CRC mismatch): the peer
    /// is no longer trusted for this object.
    #[error("{0}")]
    Corrupt(String),
    /// Any other wrong answer (an error status, no progress, a failed
    /// write): the chunk goes to the store.
    #[error("{0}")]
    Failed(String),
}

impl PullError {
    /// The same failure with `transport: ` before its message.
    pub fn via(self, transport: &str) -> PullError {
        let on = |m: String| format!("{transport}: {m}");
        match self {
            PullError::Unreachable(m) => PullError::Unreachable(on(m)),
            PullError::Lost(m) => PullError::Lost(on(m)),
            PullError::Corrupt(m) => PullError::Corrupt(on(m)),
            PullError::Failed(m) => PullError::Failed(on(m)),
            other => other,
        }
    }
}

/// One chunk to pull, as every transport needs it.
pub struct ChunkPull<'a> {
    /// Signs the request: the cluster secret and this node's id.
    pub secret: &'a ClusterSecret,
    pub self_id: &'a str,
    /// The chunk, and how long the sender may wait for it (`wait_ms`).
    pub request: v1::ChunkRequest,
    /// The chunk's bytes within the object (where they land in the target).
    pub range: Range<u64>,
    /// Bounds the wait for the first answer and how long the chunk may go
    /// without data (keep-alives do not count).
    pub answer_timeout: Duration,
    /// Bounds every read: a stream silent for this long is lost.
    pub stall: Duration,
}

/// The client side of a transport.
#[async_trait]
pub trait ChunkPuller: Send + Sync {
    /// The transport's config name ("grpc", "quic"), shown in STATUS.
    fn name(&self) -> &'static str;

    /// Streams `pull.range` from `peer` into `target`; its CRC-64, verified
    /// against the one the sender recorded. Bytes are written as they
    /// arrive; nothing may be treated as received unless this returns `Ok`.
    async fn pull(
        &self,
        peer: &Peer,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError>;

    /// Completed pulls per transport name, for STATUS: shows whether the
    /// configured transport carried the data or peers were reached only
    /// through the fallback. Empty for a single transport.
    fn pulls_by_transport(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The serving side of a transport. Starting one is the transport's own
/// constructor (what it binds differs: a TCP listener, a UDP socket on the
/// same port number); stopping is common.
#[async_trait]
pub trait ChunkService: Send + Sync {
    /// The transport's config name.
    fn name(&self) -> &'static str;

    /// Stops accepting, gives streams in flight up to `grace`, then ends.
    async fn shutdown(&self, grace: Duration);

    /// Stops at once, ending streams in flight (a dropped node).
    fn abort(&self);
}

/// Pullers tried in order: the next gets a pull only when the one before
/// cannot reach the peer ([`PullError::Unreachable`]). Counts the pulls
/// each one completed.
pub struct FirstReachable {
    pullers: Vec<Arc<dyn ChunkPuller>>,
    completed: Vec<AtomicU64>,
}

impl FirstReachable {
    pub fn new(pullers: Vec<Arc<dyn ChunkPuller>>) -> FirstReachable {
        let completed = pullers.iter().map(|_| AtomicU64::new(0)).collect();
        FirstReachable { pullers, completed }
    }
}

#[async_trait]
impl ChunkPuller for FirstReachable {
    fn name(&self) -> &'static str {
        self.pullers.first().map_or("none", |p| p.name())
    }

    async fn pull(
        &self,
        peer: &Peer,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let mut last = PullError::Unreachable("no transport configured".into());
        for (puller, completed) in self.pullers.iter().zip(&self.completed) {
            match puller.pull(peer, pull, target).await {
                Err(e @ PullError::Unreachable(_)) => last = e,
                done => {
                    if done.is_ok() {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    return done;
                }
            }
        }
        Err(last)
    }

    fn pulls_by_transport(&self) -> Vec<(&'static str, u64)> {
        let counts = self.completed.iter().map(|c| c.load(Ordering::Relaxed));
        self.pullers.iter().map(|p| p.name()).zip(counts).collect()
    }
}

/// STATUS's `pulls_by_transport`: `{"framed": n, "grpc": m}`.
pub fn pulls_by_transport_json(puller: &dyn ChunkPuller) -> serde_json::Value {
    let by_name: serde_json::Map<String, serde_json::Value> = puller
        .pulls_by_transport()
        .into_iter()
        .map(|(name, n)| (name.to_string(), n.into()))
        .collect();
    by_name.into()
}

/// The gRPC puller: the last resort of every configured transport (every
/// node serves gRPC), and the puller of a fetcher built without transports.
pub fn default_puller() -> Arc<dyn ChunkPuller> {
    Arc::new(grpc::GrpcPuller)
}

/// What every client checks while a chunk arrives: progress within the
/// patience, and at the end the length and the sender's CRC-64. (Framing
/// checks, such as offsets and segment bounds, are the transport's.)
pub(crate) struct Receiving<'a> {
    target: &'a dyn ChunkTarget,
    range: Range<u64>,
    pos: u64,
    hasher: Crc64Hasher,
    last_data: Instant,
    patience: Duration,
}

impl<'a> Receiving<'a> {
    /// Receives `range` of the object into `target`; the chunk may go
    /// `patience` without data.
    pub fn new(target: &'a dyn ChunkTarget, range: Range<u64>, patience: Duration) -> Self {
        Receiving {
            target,
            range,
            pos: 0,
            hasher: Crc64Hasher::new(),
            last_data: Instant::now(),
            patience,
        }
    }

    /// The chunk's length.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Bytes received so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Takes the next `bytes` of the chunk: hashed and written in place.
    pub fn take(&mut self, bytes: &[u8]) -> Result<(), PullError> {
        self.hasher.update(bytes);
        self.target
            .write_at(self.range.start + self.pos, bytes)
            .map_err(|e| PullError::Failed(format!("writing chunk: {e}")))?;
        self.pos += bytes.len() as u64;
        self.last_data = Instant::now();
        Ok(())
    }

    /// A keep-alive: the sender lives, the chunk has not advanced. An error
    /// once that has lasted longer than the patience.
    pub fn keep_alive(&self) -> Result<(), PullError> {
        if self.last_data.elapsed() > self.patience {
            return Err(PullError::Failed(format!(
                "chunk made no progress for {:?}",
                self.patience
            )));
        }
        Ok(())
    }

    /// The chunk's CRC-64 if every byte arrived and it matches `claimed`,
    /// the CRC the sender recorded.
    pub fn finish(self, claimed: u64) -> Result<u64, PullError> {
        let (pos, len) = (self.pos, self.len());
        if pos != len {
            return Err(PullError::Corrupt(format!("chunk ended at {pos} of {len}")));
        }
        let actual = self.hasher.finish();
        if actual != claimed {
            return Err(PullError::Corrupt(format!(
                "chunk CRC-64 mismatch: peer recorded {claimed:#018x}, data has {actual:#018x}"
            )));
        }
        Ok(actual)
    }
}

/// What a node's transports serve, where, and how they are secured.
pub(crate) struct ServeSetup {
    /// The chunk logic every transport answers from.
    pub server: Arc<ChunkServer>,
    /// The peer port (TCP); a UDP transport binds the same address, the
    /// framed transport the next port.
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
    /// This node's certificates (QUIC uses them even with TLS off).
    pub node_tls: Arc<PeerTls>,
    /// Mutual TLS on the TCP ports (None: `OSS_CONNECTOR_PEER_TLS=0`).
    pub tls: Option<Arc<PeerTls>>,
    pub limits: ServeLimits,
    /// Admission of TCP connections to the peer port and the framed port.
    pub gate: Arc<ConnectionGate>,
}

/// A node's running transports.
pub(crate) struct Transports {
    /// Every transport serving, stopped together.
    pub services: Vec<Arc<dyn ChunkService>>,
    /// How this node pulls: the configured transport, then its fallback.
    pub puller: Arc<dyn ChunkPuller>,
    /// The QUIC endpoint, if UDP could be bound (statistics, tests).
    pub quic: Option<Arc<quic::QuicNode>>,
    /// The framed puller (statistics, tests; used when configured).
    pub framed: Arc<framed::FramedPuller>,
}

/// Starts every transport on `setup`'s port and picks the puller for
/// `pull_with`. Only gRPC (which carries the control plane) must start; a
/// transport that cannot bind is logged and left out.
pub(crate) fn start(
    setup: ServeSetup,
    pull_with: PeerTransport,
) -> Result<Transports, TlsSetupError> {
    let grpc = grpc::GrpcService::start(
        setup.listener,
        setup.server.clone(),
        setup.tls.as_deref(),
        setup.limits,
        setup.gate.clone(),
    )?;
    // Served whatever this node pulls with, so peers configured for QUIC or
    // framed get it; a bind failure only costs them the gRPC fallback.
    let quic = quic::QuicNode::start(setup.local_addr, &setup.node_tls, setup.server.clone());
    let framed_tls = framed::FramedTls::new(setup.tls.as_deref())?;
    let framed_service = framed::serve(setup.local_addr, setup.server, &framed_tls, setup.gate);
    let framed = Arc::new(framed::FramedPuller::new(framed_tls.connector));
    let mut services: Vec<Arc<dyn ChunkService>> = vec![grpc];
    if let Some(q) = &quic {
        services.push(q.clone());
    }
    if let Some(f) = framed_service {
        services.push(f);
    }
    let puller: Arc<dyn ChunkPuller> = match (pull_with, &quic) {
        (PeerTransport::Quic, Some(q)) => {
            Arc::new(FirstReachable::new(vec![q.clone(), default_puller()]))
        }
        (PeerTransport::Framed, _) => {
            Arc::new(FirstReachable::new(vec![framed.clone(), default_puller()]))
        }
        _ => default_puller(),
    };
    Ok(Transports {
        services,
        puller,
        quic,
        framed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_source::VecTarget;

    #[test]
    fn a_chunk_counts_only_whole_and_with_the_senders_crc() {
        let data: Vec<u8> = (0..100u8).collect();
        let target = VecTarget::with_len(200);
        let crc = ossc_core::crc64::crc64(&data);
        let mut r = Receiving::new(&target, 100..200, Duration::from_secs(5));
        r.take(&data[..40]).unwrap();
        r.take(&data[40..]).unwrap();
        assert_eq!(r.pos(), 100);
        r.keep_alive().unwrap();
        assert_eq!(r.finish(crc).unwrap(), crc);
        assert_eq!(target.contents()[100..], data[..]);

        let mut short = Receiving::new(&target, 100..200, Duration::from_secs(5));
        short.take(&data[..99]).unwrap();
        assert!(matches!(short.finish(crc), Err(PullError::Corrupt(_))));
        let mut wrong = Receiving::new(&target, 100..200, Duration::ZERO);
        wrong.take(&data).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(wrong.keep_alive(), Err(PullError::Failed(_))));
        let err = wrong.finish(crc ^ 1).unwrap_err();
        assert!(err.to_string().contains("CRC-64 mismatch"), "{err}");
    }

    /// Answers every pull with `Ok(0)`, or as unreachable.
    struct Scripted {
        name: &'static str,
        reachable: bool,
    }

    #[async_trait]
    impl ChunkPuller for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }

        async fn pull(
            &self,
            _: &Peer,
            _: &ChunkPull<'_>,
            _: &dyn ChunkTarget,
        ) -> Result<u64, PullError> {
            match self.reachable {
                true => Ok(0),
                false => Err(PullError::Unreachable(self.name.into())),
            }
        }
    }

    #[tokio::test]
    async fn the_first_reachable_transport_pulls_and_each_ones_pulls_are_counted() {
        let puller =
            |name, reachable| -> Arc<dyn ChunkPuller> { Arc::new(Scripted { name, reachable }) };
        let secret = ClusterSecret::new(b"Bv6Nm1Qa8Ws3Ed5Rf7Tg9Yh2Uj4Ik0Ol").unwrap();
        let pull = ChunkPull {
            secret: &secret,
            self_id: "10.0.0.1:7468",
            request: v1::ChunkRequest::default(),
            range: 0..0,
            answer_timeout: Duration::from_secs(1),
            stall: Duration::from_secs(1),
        };
        let peer = Peer::new("10.0.0.2:7468".parse().unwrap(), None);
        let target = VecTarget::with_len(0);

        let both = FirstReachable::new(vec![puller("framed", true), puller("grpc", true)]);
        both.pull(&peer, &pull, &target).await.unwrap();
        assert_eq!(both.pulls_by_transport(), [("framed", 1), ("grpc", 0)]);
        assert_eq!(both.name(), "framed");

        let fallback = FirstReachable::new(vec![puller("framed", false), puller("grpc", true)]);
        fallback.pull(&peer, &pull, &target).await.unwrap();
        fallback.pull(&peer, &pull, &target).await.unwrap();
        assert_eq!(fallback.pulls_by_transport(), [("framed", 0), ("grpc", 2)]);
        let json = pulls_by_transport_json(&fallback);
        assert_eq!(json, serde_json::json!({"framed": 0, "grpc": 2}));

        let none = FirstReachable::new(vec![puller("framed", false)]);
        let err = none.pull(&peer, &pull, &target).await.unwrap_err();
        assert!(matches!(err, PullError::Unreachable(_)), "{err}");
        assert_eq!(none.pulls_by_transport(), [("framed", 0)]);
    }

    #[test]
    fn transports_parse_by_config_name_and_prefix_their_errors() {
        for t in PeerTransport::ALL {
            assert_eq!(t.as_str().parse::<PeerTransport>().unwrap(), t);
        }
        assert!(matches!(
            "tcp".parse::<PeerTransport>(),
            Err(SwarmError::BadTransport(_))
        ));
        let e = PullError::Lost("stalled".into()).via("QUIC");
        assert_eq!(e.to_string(), "QUIC: stalled");
        assert!(matches!(PullError::NotHeld.via("QUIC"), PullError::NotHeld));
    }
}

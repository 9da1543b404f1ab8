//! The peer layer ("swarm"): agents of a multi-node job split each object's
//! chunks by consistent hashing, fetch only their own chunks from the store
//! and pull the rest from peers — the owner, which streams a chunk while it
//! arrives, any holder, weighted by idle upload bandwidth, or a relay: every
//! node serves the chunks it is still receiving.
//!
//! Design decisions:
//! - **Relay** ([`sources`], [`chunk_book`], [`chunk_server`]): each chunk
//!   spreads down a tree of fan-out 2 in its relay order, owner first, so in
//!   a simultaneous start no owner uploads its share N − 1 times and one
//!   model reaches N nodes in about one node's time. A relay forwards bytes
//!   before it verified them, but the chunk's CRC goes out only after, and a
//!   relay whose own pull fails ends its downstream streams; pulls say what
//!   they take the sender for, which keeps relaying free of cycles.
//! - **Have-maps** ([`holders`], [`have_fanout`]): while it fetches an
//!   object a node asks at most [`have_fanout::HAVE_FANOUT`] peers per
//!   500 ms round for their maps of it, the peers its pulls wait on first
//!   (relay parents and owners of chunks waiting for their relay, owners
//!   that answered NOT_FOUND), the rest in rotation:
//!   its metadata calls per round do not grow with N. Maps are hints; bytes
//!   are verified whatever a map claimed.
//! - **Start skew** ([`unheld`]): a node asked for an object version it has
//!   not started asks its agent to start it (a hook the `ossc` commands
//!   wire, [`Swarm::on_unheld_object`]); pullers wait for an owner that has
//!   not started instead of going to the store.
//! - **Chunks of [`DEFAULT_CHUNK_SIZE`] = 16 MiB** (`peer.chunkSizeBytes`),
//!   each fetched by its owner as one ranged GET, so its bytes land in
//!   order and peers are streamed them as they arrive (the store's
//!   parallelism comes from the many chunks in flight); large enough that
//!   per-chunk RPC, hashing and bookkeeping are negligible (a 1 GB shard is ~60 chunks), small enough to
//!   spread a single shard over many nodes. Dragonfly's rule (length / 500,
//!   power of two, 4–64 MiB) gives 16 MiB for shards of 4–8 GB, the common
//!   size of safetensors shards. Measured (docs/benchmarks.md, 534 MB model,
//!   4 nodes, 300 Mbit/s): 4 MiB 0.47×, 16 MiB 0.40×, 64 MiB 0.57× the time
//!   without peers — small chunks pay per-chunk costs, large ones leave too
//!   few chunks to balance the owners.
//! - **Membership** ([`peer_set`], [`membership`]): the static list / DNS
//!   names are seeds; SWIM gossip over UDP (`peer.membership` = `gossip`,
//!   the default) finds every member with O(N) datagrams per 1 s period
//!   and drops a dead one after about 2–3 s, a leaving one at once;
//!   `heartbeat` keeps the all-to-all 1 s Hellos, dead after 3 s.
//!   **Ownership** ([`ring`]): rendezvous hashing over alive ids.
//! - **Transport** ([`transport`]: [`PeerTransport`],
//!   `OSS_CONNECTOR_PEER_TRANSPORT` / `peer.transport` = `framed` | `grpc` |
//!   `quic`): control (Hello, Have) always over gRPC. Bulk chunks over
//!   fixed frames on TLS 1.3 over TCP ([`transport::framed`]:
//!   the peer port + 1, a fixed header, then raw chunk bytes in segments of
//!   up to 4 MiB written with vectored writes, one persistent connection per
//!   pull in flight), over gRPC server streaming (tonic, frames ≤ 1 MiB,
//!   [`transport::grpc`]) or over QUIC ([`transport::quic`]: one stream per
//!   chunk, a fixed header then raw bytes, UDP on the same port number as
//!   the gRPC service). gRPC is the fallback for a peer that framed or QUIC
//!   cannot reach. Every node serves all three, whatever it pulls with; all
//!   answer from [`chunk_server`], and the fetcher pulls through the
//!   [`transport::ChunkPuller`] trait without naming any.
//!   **framed is the default: it measured fastest and cheapest**, and it
//!   carries every multi-host (network-namespace) cluster test:
//!   the `transport_throughput` measurement (1 GiB in 16 MiB chunks, 16
//!   pulls in flight, two in-process nodes on loopback, 2-CPU machine, all
//!   three side by side in one run, mutual TLS, three runs) gave framed
//!   0.45–0.67 GB/s at 1.39–1.44 CPU-s/GB against gRPC 0.36–0.48 GB/s at
//!   1.99–2.02 and QUIC 0.22–0.34 GB/s at 2.85–3.10 (CPU-s per GB counts
//!   sender and receiver; the machine was loaded; docs/benchmarks.md).
//!   gRPC pays HTTP/2 framing and flow control and a protobuf message per
//!   1 MiB frame; framed writes each ready 1–4 MiB run of chunk bytes with
//!   one vectored write into TLS, and the puller hashes and writes the
//!   decrypted bytes in batches of 256 KiB. QUIC pays per ~1.4 KB packet
//!   (AEAD, ACKs, UDP syscalls; no receive offload on loopback). None
//!   reaches 1 GB per CPU-second encrypted on this machine: what remains is
//!   the kernel's copies (reading the held memfd, TCP send and receive,
//!   writing the target memfd), AES-GCM, and rustls' record buffering;
//!   plaintext framed (`OSS_CONNECTOR_PEER_TLS=0`) reaches it. Re-measure on
//!   the target network (`docs/benchmarks.md`) before switching.
//! - **Security** ([`auth`], [`tls`]): every RPC carries an HMAC-SHA256 tag
//!   under the cluster secret, and traffic is mutual TLS under a CA derived
//!   from the same secret; without a secret the peer layer refuses to start.
//!   `OSS_CONNECTOR_PEER_TLS=0` turns TLS off (HMAC only: authenticated but
//!   readable on the wire) for measurements on trusted networks.
//! - **Integrity** ([`swarm_fetcher`]): per-chunk CRC-64 recorded by the node
//!   that fetched from the store, whole-object CRC-64 against the store; a
//!   failed pull is pulled again from the owner or a complete holder, and
//!   what cannot come from peers comes from the store. A load never fails
//!   because a peer did.
//! - **Upload cap** ([`upload_limit`]): `peer.uploadBytesPerSec`, when set,
//!   bounds the bytes this node sends to peers, all transports and pulls
//!   together (a token bucket served first come, first served); unset, no
//!   cap.
//! - **Leaving** ([`leaving`]): stopping first announces that the node
//!   leaves, refuses new pulls and finishes those in flight for up to
//!   `peer.leaveGraceSec`, so peers pulling from it are not dropped midway.
//!
//! Configuration (env wins over the config file's `peer` object):
//! `OSS_CONNECTOR_PEERS` / `peer.peers`, `OSS_CONNECTOR_PEER_LISTEN` /
//! `peer.listen` (default [`DEFAULT_LISTEN`]), `OSS_CONNECTOR_PEER_ADVERTISE`
//! / `peer.advertise`, `OSS_CONNECTOR_CLUSTER_SECRET` / `peer.secretFile`,
//! `peer.chunkSizeBytes`, `OSS_CONNECTOR_PEER_TRANSPORT` / `peer.transport`
//! (default `framed`), `OSS_CONNECTOR_PEER_TLS` (default on),
//! `OSS_CONNECTOR_PEER_MEMBERSHIP` / `peer.membership` (default `gossip`),
//! `OSS_CONNECTOR_GOSSIP_LISTEN` / `peer.gossipListen` (default: the listen
//! address, port + 1), `peer.uploadBytesPerSec`, `peer.leaveGraceSec`; fault
//! injection for tests, compiled in only with the `test-faults` cargo
//! feature (the cluster tests enable it; release builds ignore it):
//! `OSSC_FAULT_PEER_CORRUPT=1`.

pub mod admission;
pub mod auth;
pub mod auth_layer;
pub mod chunk_book;
pub mod chunk_server;
mod end_to_end;
pub mod have_fanout;
pub mod holders;
pub mod leaving;
pub mod membership;
pub mod peer_set;
pub mod ring;
pub mod source_record;
pub mod sources;
pub mod swarm_fetcher;
#[cfg(test)]
mod test_cluster;
pub mod tls;
pub mod transport;
#[cfg(test)]
mod transport_bench;
pub mod unheld;
pub mod upload;
pub mod upload_limit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ossc_core::fetch::FetchEngine;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use auth::ClusterSecret;
pub use chunk_book::{BookRegistry, ChunkBook, ChunkId, ObjectVersion};
pub use chunk_server::ChunkServer;
pub use membership::{MembershipConfig, MembershipMode};
pub use peer_set::{MembershipTiming, PeerSet};
pub use swarm_fetcher::{PullSettings, SwarmFetcher};
pub use transport::PeerTransport;

use crate::object_source::ObjectFetcher;

/// Chunk size (see the module docs for why 16 MiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;
/// Bounds of `peer.chunkSizeBytes`: at least one 1 MiB frame, at most 1 GiB.
pub const MIN_CHUNK_SIZE: u64 = 1 << 20;
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// Default port of the peer service (not registered with IANA; unused by
/// common cluster software).
pub const DEFAULT_PORT: u16 = 7468;
/// Default listen address: every interface, [`DEFAULT_PORT`].
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7468";
/// How long shutdown waits for in-flight chunk streams (a node that leaves
/// waits for them first, see [`leaving`]).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Environment variable names of the peer layer.
pub mod env {
    pub const PEERS: &str = "OSS_CONNECTOR_PEERS";
    pub const LISTEN: &str = "OSS_CONNECTOR_PEER_LISTEN";
    pub const ADVERTISE: &str = "OSS_CONNECTOR_PEER_ADVERTISE";
    pub const SECRET: &str = "OSS_CONNECTOR_CLUSTER_SECRET";
    /// `0` disables TLS on peer traffic (default: on).
    pub const TLS: &str = "OSS_CONNECTOR_PEER_TLS";
    /// `framed` (default), `grpc` or `quic`: how this node pulls chunks.
    pub const TRANSPORT: &str = "OSS_CONNECTOR_PEER_TRANSPORT";
    /// `gossip` (default) or `heartbeat`: how liveness is decided.
    pub const MEMBERSHIP: &str = "OSS_CONNECTOR_PEER_MEMBERSHIP";
    /// `ip:port` of the gossip socket (default: listen port + 1).
    pub const GOSSIP_LISTEN: &str = "OSS_CONNECTOR_GOSSIP_LISTEN";
    /// `1`: serve corrupted chunks (fault injection for cluster tests; only
    /// in builds with the `test-faults` feature).
    pub const FAULT_CORRUPT: &str = "OSSC_FAULT_PEER_CORRUPT";
}

/// Everything the peer layer needs.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// `host:port` entries (a name may resolve to several peers).
    pub peers: Vec<String>,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub secret: ClusterSecret,
    pub chunk_size: u64,
    pub pull_concurrency: usize,
    pub peer_wait: Duration,
    pub timing: MembershipTiming,
    /// Mutual TLS under the secret-derived CA (default true).
    pub tls: bool,
    /// Fault injection: serve corrupted chunks.
    pub corrupt_served_chunks: bool,
    /// How chunks are pulled (default framed).
    pub transport: PeerTransport,
    /// `peer.uploadBytesPerSec`: the cap on bytes sent to peers
    /// ([`upload_limit`]) and the capacity of the idle-bandwidth figure peers
    /// weight their picks by (None: no cap, and the peak observed).
    pub upload_capacity: Option<u64>,
    /// `peer.leaveGraceSec`: how long a leaving node finishes the pulls in
    /// flight ([`leaving::DEFAULT_LEAVE_GRACE`]).
    pub leave_grace: Duration,
    /// Connection caps and timeouts of the peer port.
    pub limits: admission::ServeLimits,
    /// `peer.requireVerifiedObjects`: peer bytes only for objects with a
    /// cryptographic store digest (see `swarm_fetcher`).
    pub require_verified: bool,
    /// `peer.membership`, `peer.gossipListen`.
    pub membership: MembershipConfig,
}

/// Why the peer layer cannot be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("peers are configured ({peers}) but no cluster secret: set OSS_CONNECTOR_CLUSTER_SECRET or peer.secretFile (the peer layer refuses to run unauthenticated)")]
    NoSecret { peers: String },
    #[error("cluster secret: {0}")]
    BadSecret(String),
    #[error("reading peer.secretFile {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid peer listen address {0:?} (expected ip:port)")]
    BadListen(String),
    #[error("peer.chunkSizeBytes {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    BadChunkSize(u64),
    #[error("peer transport {0:?} is not \"grpc\", \"quic\" or \"framed\" (OSS_CONNECTOR_PEER_TRANSPORT / peer.transport)")]
    BadTransport(String),
    #[error(transparent)]
    Membership(#[from] peer_set::MembershipError),
    #[error(transparent)]
    BadMembership(#[from] membership::BadMembershipMode),
    #[error("invalid gossip listen address {0:?} (expected ip:port with a fixed port, by default the peer port + 1; OSS_CONNECTOR_GOSSIP_LISTEN / peer.gossipListen)")]
    BadGossipListen(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("binding the peer service on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding the gossip socket on UDP {addr}: {source} (set OSS_CONNECTOR_GOSSIP_LISTEN / peer.gossipListen, or peer.membership=heartbeat)")]
    GossipBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl SwarmConfig {
    /// From the environment (`lookup`) and the config file's `peer` section;
    /// `Ok(None)` when no peers are configured (the agent runs alone).
    pub fn resolve(
        lookup: &dyn Fn(&str) -> Option<String>,
        file: &ossc_core::config::PeerConfig,
    ) -> Result<Option<SwarmConfig>, SwarmError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let peers: Vec<String> = match get(env::PEERS) {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => file.peers.clone(),
        };
        if peers.is_empty() {
            return Ok(None);
        }
        let secret = match (get(env::SECRET), &file.secret_file) {
            (Some(s), _) => ClusterSecret::new(s.as_bytes()).map_err(SwarmError::BadSecret)?,
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|source| SwarmError::SecretFile {
                    path: path.display().to_string(),
                    source,
                })?;
                ClusterSecret::new(&bytes).map_err(SwarmError::BadSecret)?
            }
            (None, None) => {
                return Err(SwarmError::NoSecret {
                    peers: peers.join(","),
                })
            }
        };
        let listen_text = get(env::LISTEN)
            .or_else(|| file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text
            .trim()
            .parse()
            .map_err(|_| SwarmError::BadListen(listen_text.clone()))?;
        let chunk_size = file.chunk_size_bytes.unwrap_or(DEFAULT_CHUNK_SIZE);
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(SwarmError::BadChunkSize(chunk_size));
        }
        let transport = match get(env::TRANSPORT).or_else(|| file.transport.clone()) {
            Some(t) => t.parse()?,
            None => PeerTransport::default(),
        };
        let mode = match get(env::MEMBERSHIP).or_else(|| file.membership.clone()) {
            Some(m) => m.parse()?,
            None => MembershipMode::default(),
        };
        let gossip_listen = match get(env::GOSSIP_LISTEN).or_else(|| file.gossip_listen.clone()) {
            Some(g) => Some(
                g.trim()
                    .parse()
                    .map_err(|_| SwarmError::BadGossipListen(g.clone()))?,
            ),
            None => None,
        };
        let membership = MembershipConfig {
            mode,
            gossip_listen,
        };
        if mode == MembershipMode::Gossip && membership.gossip_address(listen).is_none() {
            return Err(SwarmError::BadGossipListen(
                gossip_listen.map_or_else(|| listen.to_string(), |g| g.to_string()),
            ));
        }
        Ok(Some(SwarmConfig {
            upload_capacity: file.upload_bytes_per_sec,
            leave_grace: file
                .leave_grace_sec
                .map_or(leaving::DEFAULT_LEAVE_GRACE, Duration::from_secs),
            require_verified: file.require_verified_objects,
            membership,
            transport,
            peers,
            listen,
            advertise: get(env::ADVERTISE).or_else(|| file.advertise.clone()),
            secret,
            chunk_size,
            pull_concurrency: swarm_fetcher::DEFAULT_PULL_CONCURRENCY,
            peer_wait: swarm_fetcher::DEFAULT_PEER_WAIT,
            timing: MembershipTiming::default(),
            limits: admission::ServeLimits::default(),
            tls: get(env::TLS).is_none_or(|v| v.trim() != "0"),
            corrupt_served_chunks: fault_corrupt_requested(&get),
        }))
    }
}

/// `OSSC_FAULT_PEER_CORRUPT=1`, honoured only in builds with the
/// `test-faults` feature (the tests'); other builds log that it is ignored.
fn fault_corrupt_requested(get: &dyn Fn(&str) -> Option<String>) -> bool {
    let requested = get(env::FAULT_CORRUPT).is_some_and(|v| v.trim() == "1");
    if requested && !cfg!(feature = "test-faults") {
        tracing::warn!(
            "{} is ignored: this build has no test fault injection",
            env::FAULT_CORRUPT
        );
    }
    requested && cfg!(feature = "test-faults")
}

/// A running peer layer: chunk server, transports, membership and the
/// fetcher.
pub struct Swarm {
    fetcher: Arc<SwarmFetcher>,
    server: Arc<ChunkServer>,
    peers: Arc<PeerSet>,
    local_addr: SocketAddr,
    transports: transport::Transports,
    heartbeat_task: JoinHandle<()>,
    gossip: Option<membership::GossipMembership>,
    gate: Arc<admission::ConnectionGate>,
    upload_limit: Arc<upload_limit::UploadLimit>,
    leave_grace: Duration,
}

impl Swarm {
    /// Binds `config.listen` and starts.
    pub async fn start(
        config: SwarmConfig,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> Result<Swarm, SwarmError> {
        let listen = config.listen;
        let listener =
            admission::bind_when_free("peer port", admission::BIND_RETRY_FOR, || async {
                admission::bind_listener(listen)
            })
            .await
            .map_err(|source| SwarmError::Bind {
                addr: config.listen,
                source,
            })?;
        Swarm::start_with_listener(config, listener, engine, bucket).await
    }

    /// Starts on an already bound listener (tests bind port 0 first).
    pub async fn start_with_listener(
        config: SwarmConfig,
        listener: TcpListener,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> Result<Swarm, SwarmError> {
        let local_addr = listener.local_addr().map_err(|source| SwarmError::Bind {
            addr: config.listen,
            source,
        })?;
        let listed = peer_set::resolve(&config.peers).await?;
        let me = peer_set::identify_self(
            &listed,
            &config.peers,
            local_addr,
            config.advertise.as_deref(),
        )
        .await?;
        // QUIC is always encrypted: it uses the derived certificates even
        // when TLS is off for gRPC.
        let node_tls = Arc::new(tls::PeerTls::new(&config.secret, &me.to_string())?);
        let tls = config.tls.then(|| node_tls.clone());
        let peers = Arc::new(PeerSet::new(
            me,
            &listed,
            config.peers.clone(),
            config.secret.clone(),
            config.timing,
            tls.clone(),
            config.membership.mode,
        ));
        let gossip = match config.membership.mode {
            MembershipMode::Gossip => Some(start_gossip(&config, local_addr, &peers).await?),
            MembershipMode::Heartbeat => None,
        };
        let books = Arc::new(BookRegistry::default());
        let upload_limit = Arc::new(upload_limit::UploadLimit::new(config.upload_capacity));
        let server = Arc::new(
            ChunkServer::new(
                books.clone(),
                peers.clone(),
                Arc::new(upload::UploadMeter::new(config.upload_capacity)),
            )
            .with_upload_limit(upload_limit.clone()),
        );
        server.inject_corruption(config.corrupt_served_chunks);
        if config.corrupt_served_chunks {
            tracing::warn!("fault injection: this node serves corrupted chunks to peers");
        }
        let gate = admission::ConnectionGate::new(config.limits, {
            let peers = peers.clone();
            Arc::new(move |ip| peers.lists_ip(ip))
        });
        let transports = transport::start(
            transport::ServeSetup {
                server: server.clone(),
                listener,
                local_addr,
                node_tls,
                tls,
                limits: config.limits,
                gate: gate.clone(),
            },
            config.transport,
        )?;
        let heartbeat_task = tokio::spawn({
            let heartbeats = {
                let peers = peers.clone();
                async move {
                    if peers.membership() == MembershipMode::Heartbeat {
                        peers.heartbeat_loop().await
                    }
                }
            };
            let meter = server.upload_meter().clone();
            async move {
                let sampling = async {
                    let mut tick = tokio::time::interval(upload::SAMPLE_EVERY);
                    loop {
                        tick.tick().await;
                        meter.sample(std::time::Instant::now());
                    }
                };
                tokio::join!(heartbeats, sampling);
            }
        });
        let fetcher = Arc::new(SwarmFetcher::with_transport(
            engine,
            peers.clone(),
            books,
            bucket,
            PullSettings {
                chunk_size: config.chunk_size,
                pull_concurrency: config.pull_concurrency,
                peer_wait: config.peer_wait,
                require_verified: config.require_verified,
            },
            transports.puller.clone(),
        ));
        tracing::info!(
            node = %peers.self_id(),
            listen = %local_addr,
            peers = ?config.peers,
            chunk_size = config.chunk_size,
            tls = config.tls,
            transport = config.transport.as_str(),
            membership = config.membership.mode.as_str(),
            gossip = ?gossip.as_ref().map(|g| g.local_addr()),
            upload_limit = ?config.upload_capacity,
            quic_serving = transports.quic.is_some(),
            serving = ?transports.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "peer layer started"
        );
        Ok(Swarm {
            fetcher,
            server,
            peers,
            local_addr,
            transports,
            heartbeat_task,
            gossip,
            gate,
            upload_limit,
            leave_grace: config.leave_grace,
        })
    }

    /// The cap on bytes sent to peers, and the streams in flight.
    pub fn upload_limit(&self) -> &Arc<upload_limit::UploadLimit> {
        &self.upload_limit
    }

    /// The fetcher's STATUS section (`peers`) with this node's upload cap
    /// and throttling (`upload`).
    pub fn status(&self) -> Option<serde_json::Value> {
        let mut v = self.fetcher.status()?;
        if let Some(o) = v.as_object_mut() {
            o.insert("upload".into(), self.upload_limit.status_json());
        }
        Some(v)
    }

    /// The peer port's connection gate (open connections, refusals).
    pub fn connections(&self) -> &Arc<admission::ConnectionGate> {
        &self.gate
    }

    pub fn fetcher(&self) -> Arc<dyn ObjectFetcher> {
        self.fetcher.clone()
    }

    pub fn swarm_fetcher(&self) -> &Arc<SwarmFetcher> {
        &self.fetcher
    }

    pub fn server(&self) -> &Arc<ChunkServer> {
        &self.server
    }

    pub fn peers(&self) -> &Arc<PeerSet> {
        &self.peers
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asked whether this node will fetch an object version a peer named
    /// that it does not hold (start skew, see [`unheld`]).
    pub fn on_unheld_object(&self, hook: unheld::UnheldObjectHook) {
        self.server.on_unheld_object(hook);
    }

    /// This node's QUIC endpoint (None if UDP could not be bound).
    pub fn quic(&self) -> Option<&Arc<transport::quic::QuicNode>> {
        self.transports.quic.as_ref()
    }

    /// This node's framed puller (its counters).
    pub fn framed(&self) -> &Arc<transport::framed::FramedPuller> {
        &self.transports.framed
    }

    /// Stops serving (refusing new requests at once), then membership,
    /// without a word to the peers: they detect it as they detect a crash
    /// (use [`Swarm::leave`] to tell them). Streams in flight get
    /// [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        self.stop(SHUTDOWN_GRACE).await;
    }

    /// Stops serving, heartbeats and gossip; streams in flight get `grace`,
    /// then whatever a transport still holds open ends at its next segment.
    async fn stop(&self, grace: Duration) {
        self.server.stop();
        self.heartbeat_task.abort();
        let stopping = self.transports.services.iter();
        futures::future::join_all(stopping.map(|s| s.shutdown(grace))).await;
        self.upload_limit.close();
        if let Some(g) = &self.gossip {
            g.stop();
        }
    }
}

/// Binds the gossip socket and starts SWIM for `peers`.
async fn start_gossip(
    config: &SwarmConfig,
    local_addr: SocketAddr,
    peers: &Arc<PeerSet>,
) -> Result<membership::GossipMembership, SwarmError> {
    let at = config
        .membership
        .gossip_address(local_addr)
        .ok_or_else(|| SwarmError::BadGossipListen(local_addr.to_string()))?;
    let bind = |source| SwarmError::GossipBind {
        addr: at.bind,
        source,
    };
    let socket = admission::bind_when_free("gossip port", admission::BIND_RETRY_FOR, || {
        tokio::net::UdpSocket::bind(at.bind)
    })
    .await
    .map_err(bind)?;
    let timing = membership::GossipTiming::from(&config.timing);
    membership::GossipMembership::start(peers.clone(), socket, at.port_offset, timing).map_err(bind)
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.server.stop();
        self.upload_limit.close();
        self.heartbeat_task.abort();
        for service in &self.transports.services {
            service.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP listener on 127.0.0.1 whose port and port + 1 are free on UDP
    /// (QUIC and gossip).
    async fn listener_with_free_udp_ports() -> TcpListener {
        loop {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let free = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok();
            if port < u16::MAX && free(port) && free(port + 1) {
                return l;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_drop_a_swarm_that_leaves_at_once() {
        let listeners = [
            listener_with_free_udp_ports().await,
            listener_with_free_udp_ports().await,
        ];
        let list: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let mut nodes = Vec::new();
        for l in listeners {
            let listen = l.local_addr().unwrap().to_string();
            let lookup = |k: &str| match k {
                env::PEERS => Some(list.join(",")),
                env::LISTEN => Some(listen.clone()),
                env::SECRET => Some(String::from_utf8(auth::TEST_SECRET.to_vec()).unwrap()),
                _ => None,
            };
            // The default timing: a silent exit is seen after 1–3 s.
            let config = SwarmConfig::resolve(&lookup, &Default::default())
                .unwrap()
                .unwrap();
            assert_eq!(config.membership.mode, MembershipMode::Gossip);
            let store = Arc::new(ossc_core::object_client::mock::MockObjectClient::new("b"));
            let engine = Arc::new(FetchEngine::new(store, Default::default()));
            let node = Swarm::start_with_listener(config, l, engine, "b".into())
                .await
                .unwrap();
            nodes.push(node);
        }
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while nodes.iter().any(|n| n.peers().alive_ids().len() != 2) {
            assert!(std::time::Instant::now() < until, "never converged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let leaver = nodes.pop().unwrap();
        let id = leaver.peers().self_id().to_string();
        let started = std::time::Instant::now();
        let leaving = tokio::spawn(leaver.leave());
        while nodes[0].peers().is_alive(&id) {
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "the leave was not seen at once"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        leaving.await.unwrap();
        assert_eq!(nodes[0].peers().alive_ids(), [nodes[0].peers().self_id()]);
    }

    #[test]
    fn membership_comes_from_env_then_file_and_defaults_to_gossip() {
        let file = ossc_core::config::PeerConfig {
            peers: vec!["127.0.0.1:7468".into()],
            membership: Some("heartbeat".into()),
            ..Default::default()
        };
        let secret =
            |k: &str| (k == env::SECRET).then(|| "Bv6Nm1Qa8Ws3Ed5Rf7Tg9Yh2Uj4Ik0Ol".to_string());
        let c = SwarmConfig::resolve(&secret, &file).unwrap().unwrap();
        assert_eq!(c.membership.mode, MembershipMode::Heartbeat);
        let env_gossip = |k: &str| match k {
            env::MEMBERSHIP => Some("gossip".to_string()),
            env::GOSSIP_LISTEN => Some("0.0.0.0:9000".to_string()),
            _ => secret(k),
        };
        let c = SwarmConfig::resolve(&env_gossip, &file).unwrap().unwrap();
        assert_eq!(c.membership.mode, MembershipMode::Gossip);
        assert_eq!(
            c.membership.gossip_listen,
            Some("0.0.0.0:9000".parse().unwrap())
        );
        let plain = ossc_core::config::PeerConfig {
            membership: None,
            ..file.clone()
        };
        let c = SwarmConfig::resolve(&secret, &plain).unwrap().unwrap();
        assert_eq!(c.membership, MembershipConfig::default());
        for bad in ["swim", "0.0.0.0:0", "nowhere"] {
            let key = if bad == "swim" {
                env::MEMBERSHIP
            } else {
                env::GOSSIP_LISTEN
            };
            let lookup = |k: &str| {
                if k == key {
                    Some(bad.to_string())
                } else {
                    secret(k)
                }
            };
            let err = SwarmConfig::resolve(&lookup, &plain).unwrap_err();
            assert!(
                matches!(
                    err,
                    SwarmError::BadMembership(_) | SwarmError::BadGossipListen(_)
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_transport_comes_from_env_then_file_and_defaults_to_framed() {
        let file = ossc_core::config::PeerConfig {
            peers: vec!["127.0.0.1:7468".into()],
            transport: Some("quic".into()),
            ..Default::default()
        };
        let secret =
            |k: &str| (k == env::SECRET).then(|| "Bv6Nm1Qa8Ws3Ed5Rf7Tg9Yh2Uj4Ik0Ol".to_string());
        let c = SwarmConfig::resolve(&secret, &file).unwrap().unwrap();
        assert_eq!(c.transport, PeerTransport::Quic);
        let env_grpc = |k: &str| match k {
            env::TRANSPORT => Some(" GRPC ".to_string()),
            _ => secret(k),
        };
        let c = SwarmConfig::resolve(&env_grpc, &file).unwrap().unwrap();
        assert_eq!(c.transport, PeerTransport::Grpc);
        let none = ossc_core::config::PeerConfig {
            transport: None,
            ..file.clone()
        };
        let c = SwarmConfig::resolve(&secret, &none).unwrap().unwrap();
        assert_eq!(c.transport, PeerTransport::Framed);
        let bad = ossc_core::config::PeerConfig {
            transport: Some("tcp".into()),
            ..file
        };
        assert!(matches!(
            SwarmConfig::resolve(&secret, &bad),
            Err(SwarmError::BadTransport(_))
        ));
    }

    #[test]
    fn the_corruption_fault_works_only_in_builds_with_test_faults() {
        let file = ossc_core::config::PeerConfig {
            peers: vec!["127.0.0.1:7468".into()],
            ..Default::default()
        };
        let lookup = |k: &str| match k {
            env::SECRET => Some(String::from_utf8(auth::TEST_SECRET.to_vec()).unwrap()),
            env::FAULT_CORRUPT => Some("1".to_string()),
            _ => None,
        };
        let c = SwarmConfig::resolve(&lookup, &file).unwrap().unwrap();
        // `cargo test -p ossc-peer --lib` runs the build without the
        // feature; workspace builds (the cluster tests') have it.
        assert_eq!(c.corrupt_served_chunks, cfg!(feature = "test-faults"));
    }

    #[test]
    fn a_weak_secret_stops_the_peer_layer_with_a_clear_error() {
        let file = ossc_core::config::PeerConfig {
            peers: vec!["127.0.0.1:7468".into()],
            ..Default::default()
        };
        let weak = |k: &str| (k == env::SECRET).then(|| "my-cluster-secret-2024!".to_string());
        let err = SwarmConfig::resolve(&weak, &file).unwrap_err().to_string();
        assert!(err.contains("ossc secret generate"), "{err}");
    }
}

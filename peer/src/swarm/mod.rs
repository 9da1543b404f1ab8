//! The peer layer ("swarm"): agents of a multi-node job split each object's
//! chunks by consistent hashing, fetch only their own chunks from the store
//! and pull the rest from peers — the owner, which streams a chunk while it
//! arrives, or any holder, weighted by idle upload bandwidth (issue 4).
//!
//! Design decisions:
//! - **Chunks of [`DEFAULT_CHUNK_SIZE`] = 16 MiB** (`peer.chunkSizeBytes`):
//!   two store parts of 8 MiB, so an owner's chunk arrives with the store's
//!   normal parallelism; large enough that per-chunk RPC, hashing and
//!   bookkeeping are negligible (a 1 GB shard is ~60 chunks), small enough to
//!   spread a single shard over many nodes. Dragonfly's rule (length / 500,
//!   power of two, 4–64 MiB) gives 16 MiB for shards of 4–8 GB, the common
//!   size of safetensors shards. Measured (docs/benchmarks.md, 534 MB model,
//!   4 nodes, 300 Mbit/s): 4 MiB 0.47×, 16 MiB 0.40×, 64 MiB 0.57× the time
//!   without peers — small chunks pay per-chunk costs, large ones leave too
//!   few chunks to balance the owners.
//! - **Membership** ([`peer_set`]): static list / DNS + 1 s heartbeats, dead
//!   after 3 s. **Ownership** ([`ring`]): rendezvous hashing over alive ids.
//! - **Transport** ([`transport`]: [`PeerTransport`],
//!   `OSS_CONNECTOR_PEER_TRANSPORT` / `peer.transport` = `framed` | `grpc` |
//!   `quic`): control (Hello, Have) always over gRPC. Bulk chunks over
//!   fixed frames on TLS 1.3 over TCP ([`transport::framed`], the default:
//!   the peer port + 1, a fixed header, then raw chunk bytes in segments of
//!   up to 4 MiB written with vectored writes, one persistent connection per
//!   pull in flight), over gRPC server streaming (tonic, frames ≤ 1 MiB,
//!   [`transport::grpc`]) or over QUIC ([`transport::quic`]: one stream per
//!   chunk, a fixed header then raw bytes, UDP on the same port number as
//!   the gRPC service). gRPC is the fallback for a peer that framed or QUIC
//!   cannot reach. Every node serves all three, whatever it pulls with; all
//!   answer from [`chunk_server`], and the fetcher pulls through the
//!   [`transport::ChunkPuller`] trait without naming any.
//!   **framed is the default because it measured fastest and cheapest**:
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
//!   that fetched from the store, whole-object CRC-64 against the store; any
//!   failure falls back to the store. A load never fails because a peer did.
//!
//! Configuration (env wins over the config file's `peer` object):
//! `OSS_CONNECTOR_PEERS` / `peer.peers`, `OSS_CONNECTOR_PEER_LISTEN` /
//! `peer.listen` (default [`DEFAULT_LISTEN`]), `OSS_CONNECTOR_PEER_ADVERTISE`
//! / `peer.advertise`, `OSS_CONNECTOR_CLUSTER_SECRET` / `peer.secretFile`,
//! `peer.chunkSizeBytes`, `OSS_CONNECTOR_PEER_TRANSPORT` / `peer.transport`
//! (default `framed`), `OSS_CONNECTOR_PEER_TLS` (default on); fault
//! injection for tests, compiled in only with the `test-faults` cargo
//! feature (the cluster tests enable it; release builds ignore it):
//! `OSSC_FAULT_PEER_CORRUPT=1`.

pub mod admission;
pub mod auth;
pub mod auth_layer;
pub mod chunk_book;
pub mod chunk_server;
mod end_to_end;
pub mod holders;
pub mod peer_set;
pub mod ring;
pub mod swarm_fetcher;
#[cfg(test)]
mod test_cluster;
pub mod tls;
pub mod transport;
#[cfg(test)]
mod transport_bench;
pub mod upload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ossc_core::fetch::FetchEngine;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use auth::ClusterSecret;
pub use chunk_book::{BookRegistry, ChunkBook, ChunkId, ObjectVersion};
pub use chunk_server::ChunkServer;
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
/// How long shutdown waits for in-flight chunk streams.
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
    /// How chunks are pulled (default gRPC).
    pub transport: PeerTransport,
    /// `peer.uploadBytesPerSec`: upload capacity for the idle-bandwidth
    /// figure peers weight their picks by (None: the peak observed).
    pub upload_capacity: Option<u64>,
    /// Connection caps and timeouts of the peer port.
    pub limits: admission::ServeLimits,
    /// `peer.requireVerifiedObjects`: peer bytes only for objects with a
    /// cryptographic store digest (see `swarm_fetcher`).
    pub require_verified: bool,
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
    Tls(#[from] tls::TlsSetupError),
    #[error("binding the peer service on {addr}: {source}")]
    Bind {
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
        Ok(Some(SwarmConfig {
            upload_capacity: file.upload_bytes_per_sec,
            require_verified: file.require_verified_objects,
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

/// A running peer layer: chunk server, transports, heartbeats and the
/// fetcher.
pub struct Swarm {
    fetcher: Arc<SwarmFetcher>,
    server: Arc<ChunkServer>,
    peers: Arc<PeerSet>,
    local_addr: SocketAddr,
    transports: transport::Transports,
    heartbeat_task: JoinHandle<()>,
    gate: Arc<admission::ConnectionGate>,
}

impl Swarm {
    /// Binds `config.listen` and starts.
    pub async fn start(
        config: SwarmConfig,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> Result<Swarm, SwarmError> {
        let listener =
            admission::bind_listener(config.listen).map_err(|source| SwarmError::Bind {
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
        ));
        let books = Arc::new(BookRegistry::default());
        let server = Arc::new(ChunkServer::new(
            books.clone(),
            peers.clone(),
            Arc::new(upload::UploadMeter::new(config.upload_capacity)),
        ));
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
            let heartbeats = peers.clone().heartbeat_loop();
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
            gate,
        })
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

    /// This node's QUIC endpoint (None if UDP could not be bound).
    pub fn quic(&self) -> Option<&Arc<transport::quic::QuicNode>> {
        self.transports.quic.as_ref()
    }

    /// This node's framed puller (its counters).
    pub fn framed(&self) -> &Arc<transport::framed::FramedPuller> {
        &self.transports.framed
    }

    /// Stops serving (refusing new requests at once) and heartbeating;
    /// streams in flight get [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        self.server.stop();
        self.heartbeat_task.abort();
        let stopping = self.transports.services.iter();
        futures::future::join_all(stopping.map(|s| s.shutdown(SHUTDOWN_GRACE))).await;
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.server.stop();
        self.heartbeat_task.abort();
        for service in &self.transports.services {
            service.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

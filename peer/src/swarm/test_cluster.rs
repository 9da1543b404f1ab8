//! Whole clusters in one test process, shared by the swarm's cluster tests
//! and the transport measurement: every node on 127.0.0.1 with its own
//! port (TCP, the same number on UDP, the next one on TCP for the framed
//! transport), all listed, membership timing shortened so a cluster meets
//! within a second.

use std::sync::Arc;
use std::time::Duration;

use ossc_core::fetch::{FetchConfig, FetchEngine};
use ossc_core::object_client::ObjectClient;
use tokio::net::TcpListener;

use super::{ClusterSecret, MembershipTiming, ObjectVersion, PeerTransport, Swarm, SwarmConfig};
use crate::object_source::{ChunkTarget, VecTarget};

/// Chunk size of test clusters (small: objects of a few MiB have dozens).
pub(crate) const CHUNK: u64 = 64 * 1024;
/// The cluster secret of test clusters.
pub(crate) const SECRET: &[u8] = super::auth::TEST_SECRET;

/// The config of node `me` of `peers`, with short timeouts.
pub(crate) fn config(
    peers: &[String],
    me: &str,
    secret: &[u8],
    tls: bool,
    transport: PeerTransport,
) -> SwarmConfig {
    SwarmConfig {
        peers: peers.to_vec(),
        listen: me.parse().unwrap(),
        advertise: None,
        secret: ClusterSecret::new(secret).unwrap(),
        chunk_size: CHUNK,
        pull_concurrency: 4,
        peer_wait: Duration::from_secs(3),
        timing: MembershipTiming {
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(400),
            hello_timeout: Duration::from_millis(300),
            startup_wait: Duration::from_millis(500),
        },
        tls,
        corrupt_served_chunks: false,
        limits: Default::default(),
        transport,
        upload_capacity: None,
        leave_grace: Duration::from_secs(2),
        require_verified: false,
        membership: Default::default(),
    }
}

/// A fetch engine over `client` with two store parts per chunk.
pub(crate) fn engine(client: Arc<dyn ObjectClient>) -> Arc<FetchEngine> {
    Arc::new(FetchEngine::new(
        client,
        FetchConfig {
            part_size: CHUNK / 2,
            max_in_flight: 8,
            ..FetchConfig::default()
        },
    ))
}

/// A TCP listener on 127.0.0.1 whose port number is also free on UDP
/// (the QUIC endpoint binds the same number) and whose next port is free
/// on TCP (the framed transport binds it), neither next to a port in
/// `taken`.
async fn listener_with_free_neighbours(taken: &[u16]) -> TcpListener {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let adjacent = taken.iter().any(|p| p.abs_diff(addr.port()) <= 1);
        let framed = super::transport::framed::framed_addr(addr);
        if !adjacent
            && std::net::UdpSocket::bind(addr).is_ok()
            && framed.is_some_and(|f| std::net::TcpListener::bind(f).is_ok())
        {
            return l;
        }
    }
}

/// `n` free ports (TCP, UDP and the next on TCP), none adjacent.
pub(crate) async fn listeners(n: usize) -> Vec<TcpListener> {
    let mut out: Vec<TcpListener> = Vec::new();
    for _ in 0..n {
        let taken: Vec<u16> = out.iter().map(|l| l.local_addr().unwrap().port()).collect();
        out.push(listener_with_free_neighbours(&taken).await);
    }
    out
}

/// The peer list of `listeners`.
pub(crate) fn addrs(listeners: &[TcpListener]) -> Vec<String> {
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// One node per listener, all listed: node `i` fetches through
/// `clients[i]` and holds `secrets[i]`; `tweak(i, config)` adjusts its
/// config before it starts.
pub(crate) async fn start_nodes(
    listeners: Vec<TcpListener>,
    clients: Vec<Arc<dyn ObjectClient>>,
    secrets: &[&[u8]],
    tls: bool,
    t: PeerTransport,
    tweak: impl Fn(usize, &mut SwarmConfig),
) -> Vec<Swarm> {
    let peers = addrs(&listeners);
    let mut nodes = Vec::new();
    for (i, (l, c)) in listeners.into_iter().zip(clients).enumerate() {
        let mut cfg = config(&peers, &peers[i], secrets[i], tls, t);
        tweak(i, &mut cfg);
        nodes.push(
            Swarm::start_with_listener(cfg, l, engine(c), "b".into())
                .await
                .unwrap(),
        );
    }
    nodes
}

/// [`start_nodes`] on fresh ports.
pub(crate) async fn cluster_with(
    clients: Vec<Arc<dyn ObjectClient>>,
    secrets: &[&[u8]],
    tls: bool,
    t: PeerTransport,
    tweak: impl Fn(usize, &mut SwarmConfig),
) -> Vec<Swarm> {
    let listeners = listeners(clients.len()).await;
    start_nodes(listeners, clients, secrets, tls, t, tweak).await
}

/// Waits (at most 5 s) until every node sees `n` alive peers.
pub(crate) async fn wait_alive(nodes: &[Swarm], n: usize) {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while nodes.iter().any(|s| s.peers().alive_ids().len() != n) {
        assert!(
            std::time::Instant::now() < until,
            "peers never became alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The version of `meta` in bucket `b` (the test clusters' bucket).
pub(crate) fn version_of(meta: &ossc_core::object_client::ObjectMeta) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: meta.key.clone(),
        etag: meta.etag.clone(),
        size: meta.size,
    }
}

/// `node` holds `d` as `version` in chunks of `chunk_size`, every chunk
/// recorded, while the returned target lives.
pub(crate) fn hold(
    node: &Swarm,
    version: &ObjectVersion,
    d: &[u8],
    chunk_size: u64,
) -> Arc<dyn ChunkTarget> {
    let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(d.len()));
    target.write_at(0, d).unwrap();
    let book = node
        .swarm_fetcher()
        .books()
        .open(version.clone(), chunk_size, &target);
    for i in 0..book.n_chunks() {
        let r = book.range(i);
        let crc = ossc_core::crc64::crc64(&d[r.start as usize..r.end as usize]);
        book.record(i, crc);
    }
    target
}

//! The swarm as a whole: clusters of in-process nodes sharing a mock
//! store, checking what each node receives, what the store serves and how
//! failures are routed. Most scenarios run once per transport
//! (`by_transport::<name>::{quic,grpc,framed}`, see `per_transport!`).

use super::*;
use crate::object_source::memfd::Memfd;
use crate::object_source::{StoreFetcher, VecTarget};
use crate::swarm::ring;
use crate::swarm::test_cluster::{
    addrs, cluster_with, engine, listeners, start_nodes, version_of, wait_alive, CHUNK, SECRET,
};
use crate::swarm::transport::grpc::FETCH_CHUNK_METHOD;
use crate::swarm::{PeerTransport, Swarm};
use ossc_core::object_client::mock::MockObjectClient;
use ossc_core::object_client::{ObjectClient, RangeSink};

pub(super) fn data(n: u64, seed: u64) -> Vec<u8> {
    ossc_core::object_client::mock::pseudo_random_bytes(n as usize, seed)
}

/// `clients.len()` nodes on 127.0.0.1 with TLS, all listed; `secrets[i]`
/// per node.
async fn cluster(
    clients: Vec<Arc<dyn ObjectClient>>,
    secrets: &[&[u8]],
    t: PeerTransport,
) -> Vec<Swarm> {
    cluster_tls(clients, secrets, true, t).await
}

async fn cluster_tls(
    clients: Vec<Arc<dyn ObjectClient>>,
    secrets: &[&[u8]],
    tls: bool,
    t: PeerTransport,
) -> Vec<Swarm> {
    cluster_with(clients, secrets, tls, t, |_, _| {}).await
}

async fn fetch_all(
    nodes: &[&Swarm],
    meta: &ObjectMeta,
) -> Vec<(Result<FetchOutcome, ObjectClientError>, Vec<u8>)> {
    let each: Vec<(&Swarm, ObjectMeta)> = nodes.iter().map(|n| (*n, meta.clone())).collect();
    fetch_each(&each).await
}

/// Each node fetches its `ObjectMeta` concurrently.
pub(super) async fn fetch_each(
    nodes: &[(&Swarm, ObjectMeta)],
) -> Vec<(Result<FetchOutcome, ObjectClientError>, Vec<u8>)> {
    // Every target stays alive until all nodes finish, as in the agent's
    // cache (a node serves chunks only while it holds the object).
    let futs = nodes.iter().map(|(s, meta)| {
        let f = s.fetcher();
        let meta = meta.clone();
        async move {
            let memfd = Arc::new(Memfd::create(&meta.key, meta.size).unwrap());
            let target: Arc<dyn ChunkTarget> = memfd.clone();
            let r = f.fetch(&meta, target, Arc::default()).await;
            (r, memfd)
        }
    });
    let done = futures::future::join_all(futs).await;
    done.into_iter()
        .map(|(r, memfd)| {
            let mut out = vec![0u8; memfd.size() as usize];
            memfd.read_at(0, &mut out).unwrap();
            (r, out)
        })
        .collect()
}

/// Three live nodes sharing one store that holds a `size`-byte object
/// (pseudo-random from `seed`): the store, the object's bytes and meta.
async fn three_nodes_one_store(
    size: u64,
    seed: u64,
    t: PeerTransport,
) -> (Arc<MockObjectClient>, Vec<u8>, ObjectMeta, Vec<Swarm>) {
    let (mock, d) = mock_with(size, seed);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
    let nodes = cluster(clients, &[SECRET, SECRET, SECRET], t).await;
    wait_alive(&nodes, 3).await;
    (mock, d, meta, nodes)
}

pub(super) fn mock_with(size: u64, seed: u64) -> (Arc<MockObjectClient>, Vec<u8>) {
    let mock = Arc::new(MockObjectClient::new("b"));
    let d = data(size, seed);
    mock.put_object("model/shard-1.safetensors", d.clone());
    (mock, d)
}

async fn three_nodes_get_exact_bytes_for_about_one_object_of_store_egress(t: PeerTransport) {
    let size = 40 * CHUNK + 1234;
    let (mock, d) = mock_with(size, 1);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    // Without peers: every node pulls the whole object from the store.
    for _ in 0..3 {
        let t = Arc::new(VecTarget::with_len(size as usize));
        StoreFetcher::new(engine(mock.clone()))
            .fetch(&meta, t.clone(), Arc::default())
            .await
            .unwrap();
        assert_eq!(t.contents(), d);
    }
    assert_eq!(mock.bytes_served(), 3 * size);
    mock.reset_stats();

    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
    let nodes = cluster(clients, &[SECRET, SECRET, SECRET], t).await;
    wait_alive(&nodes, 3).await;
    let refs: Vec<&Swarm> = nodes.iter().collect();
    let results = fetch_all(&refs, &meta).await;
    let mut store_total = 0;
    let mut peer_total = 0;
    for (r, out) in results {
        let o = r.unwrap();
        assert_eq!(out, d);
        assert!(o.fetched.crc64_verified);
        assert_eq!(o.fetched.crc64, ossc_core::crc64::crc64(&d));
        assert_eq!(o.bytes_store + o.bytes_peer, size);
        assert!(o.bytes_peer > size / 3, "{o:?}");
        assert_eq!(o.by_peer.values().sum::<u64>(), o.bytes_peer);
        store_total += o.bytes_store;
        peer_total += o.bytes_peer;
    }
    let served = mock.bytes_served();
    assert_eq!(served, store_total);
    // The configured transport carried the peer bytes.
    let quic_bytes: u64 = nodes
        .iter()
        .map(|n| n.quic().unwrap().bytes_received.load(Ordering::Relaxed))
        .sum();
    let unreachable: u64 = nodes
        .iter()
        .map(|n| n.quic().unwrap().unreachable.load(Ordering::Relaxed))
        .sum();
    assert_eq!(unreachable, 0);
    let framed_bytes: u64 = nodes
        .iter()
        .map(|n| n.framed().bytes_received.load(Ordering::Relaxed))
        .sum();
    let framed_unreachable: u64 = nodes
        .iter()
        .map(|n| n.framed().unreachable.load(Ordering::Relaxed))
        .sum();
    assert_eq!(framed_unreachable, 0);
    match t {
        PeerTransport::Quic => assert_eq!((quic_bytes, framed_bytes), (peer_total, 0)),
        PeerTransport::Grpc => assert_eq!((quic_bytes, framed_bytes), (0, 0)),
        PeerTransport::Framed => assert_eq!((quic_bytes, framed_bytes), (0, peer_total)),
    }
    assert_eq!(
        nodes[0].swarm_fetcher().status().unwrap()["transport"],
        t.as_str()
    );
    assert!(served * 10 <= size * 11, "store served {served} for {size}");
    // Traffic per peer is visible in the status section.
    let status = nodes[0].swarm_fetcher().status().unwrap();
    assert_eq!(status["alive"].as_array().unwrap().len(), 3);
    let sent: u64 = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_sent"].as_u64().unwrap())
        .sum();
    assert!(sent > 0, "{status}");
    for n in nodes {
        n.shutdown().await;
    }
}

async fn a_node_with_the_wrong_secret_gets_nothing_and_injects_nothing(t: PeerTransport) {
    // Without TLS the HMAC refuses it (UNAUTHENTICATED); with TLS it
    // cannot even complete a handshake.
    wrong_secret_case(false, t).await;
    wrong_secret_case(true, t).await;
}

async fn wrong_secret_case(tls: bool, t: PeerTransport) {
    let size = 12 * CHUNK + 5;
    let (mock, d) = mock_with(size, 2);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
    let wrong: &[u8] = b"Wx3Lr8Tq1Nz6Vb0Kf5Hd9Pj2Mc7Gs4Ya";
    let nodes = cluster_tls(clients, &[SECRET, SECRET, wrong], tls, t).await;
    wait_alive(&nodes[..2], 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        nodes[2].peers().alive_ids().len(),
        1,
        "intruder sees no one"
    );
    assert_eq!(
        nodes[0].peers().alive_ids().len(),
        2,
        "members ignore intruder"
    );

    // A direct FetchChunk signed with the wrong secret is refused.
    let good = nodes[0].peers().self_id().to_string();
    let intruder = nodes[2].peers();
    let peer = intruder.peer(&good).unwrap();
    let mut req = tonic::Request::new(v1::ChunkRequest {
        chunk: Some(v1::ChunkId {
            object: Some(v1::ObjectVersion {
                bucket: "b".into(),
                key: meta.key.clone(),
                etag: meta.etag.clone(),
                size,
            }),
            chunk_size: CHUNK,
            index: 0,
        }),
        wait_ms: 0,
        ..Default::default()
    });
    intruder
        .secret()
        .sign_request(&mut req, intruder.self_id(), FETCH_CHUNK_METHOD);
    let status = peer.client().fetch_chunk(req).await.unwrap_err();
    let refused = if tls {
        tonic::Code::Unavailable // the TLS handshake fails
    } else {
        tonic::Code::Unauthenticated
    };
    assert_eq!(status.code(), refused, "{status}");
    // Unsigned requests too.
    let unsigned = tonic::Request::new(v1::HelloRequest::default());
    let status = peer.client().hello(unsigned).await.unwrap_err();
    assert_eq!(status.code(), refused, "{status}");

    let results = fetch_all(&[&nodes[0], &nodes[1], &nodes[2]], &meta).await;
    for (i, (r, out)) in results.into_iter().enumerate() {
        let o = r.unwrap();
        assert_eq!(out, d, "node {i}");
        if i == 2 {
            assert_eq!(o.bytes_peer, 0);
            assert_eq!(o.bytes_store, size);
        }
    }
    for n in &nodes[..2] {
        let st = n.swarm_fetcher().status().unwrap();
        for p in st["peers"].as_array().unwrap() {
            if p["id"] == intruder.self_id() {
                assert_eq!(p["bytes_sent"], 0, "{st}");
                assert_eq!(p["bytes_received"], 0, "{st}");
            }
        }
    }
}

async fn corrupted_chunks_from_a_peer_are_detected_and_bypassed(t: PeerTransport) {
    let size = 16 * CHUNK + 77;
    let (mock, d) = mock_with(size, 3);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let nodes = cluster(vec![mock.clone(), mock.clone()], &[SECRET, SECRET], t).await;
    wait_alive(&nodes, 2).await;
    nodes[1].server().inject_corruption(true);
    let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
    let (r0, out0) = &results[0];
    let o0 = r0.as_ref().unwrap();
    assert_eq!(*out0, d);
    assert_eq!(o0.bytes_peer, 0, "no corrupted chunk may be kept");
    assert_eq!(o0.bytes_store, size);
    let (r1, out1) = &results[1];
    assert_eq!(*out1, d);
    assert!(r1.as_ref().unwrap().bytes_peer > 0);
    let st = nodes[0].swarm_fetcher().status().unwrap();
    let failures: u64 = st["peers"][0]["failures"].as_u64().unwrap();
    assert!(failures > 0, "{st}");
}

async fn bad_bytes_behind_a_consistent_chunk_crc_are_caught_end_to_end(t: PeerTransport) {
    let size = 16 * CHUNK + 9;
    let (mock, d) = mock_with(size, 4);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    // Node 1 sees an inconsistent store (same ETag, one byte different,
    // no CRC header): it records chunk CRCs that match its bad bytes, so
    // only node 0's whole-object check against its store can catch them.
    let bad_store = Arc::new(MockObjectClient::new("b").with_crc64_headers(false));
    let nodes = cluster(vec![mock.clone(), bad_store.clone()], &[SECRET, SECRET], t).await;
    wait_alive(&nodes, 2).await;
    let alive = nodes[0].peers().alive_ids();
    let index = *chunks_owned_by(&alive, nodes[1].peers().self_id(), &version_of(&meta))
        .first()
        .expect("node 1 owns a chunk");
    let mut bad = d.clone();
    bad[(index * CHUNK + 100) as usize] ^= 0x5a;
    bad_store.put_object_with_etag(meta.key.clone(), bad, meta.etag.clone());
    // Node 1 knows no CRC (a listing's meta, a store without the header).
    let unknown = ObjectMeta {
        crc64: None,
        ..meta.clone()
    };
    let results = fetch_each(&[(&nodes[0], meta.clone()), (&nodes[1], unknown)]).await;
    let (r0, out0) = &results[0];
    let o0 = r0.as_ref().unwrap();
    assert_eq!(*out0, d);
    assert!(o0.fetched.crc64_verified);
    assert_eq!(o0.bytes_peer, 0, "every peer chunk was refetched: {o0:?}");
    assert_eq!(o0.bytes_store, size);
    // Node 0 did receive node 1's chunks (then threw them away).
    let st = nodes[1].swarm_fetcher().status().unwrap();
    assert!(st["peers"][0]["bytes_sent"].as_u64().unwrap() > 0, "{st}");
    // Node 1 cannot know better than its store: unverified, not failed.
    assert!(!results[1].0.as_ref().unwrap().fetched.crc64_verified);
}

async fn a_dead_peer_falls_back_to_the_store_and_leaves_the_ring(t: PeerTransport) {
    let size = 24 * CHUNK + 1;
    let (mock, d, meta, mut nodes) = three_nodes_one_store(size, 5, t).await;
    let dead = nodes.pop().unwrap();
    let dead_id = dead.peers().self_id().to_string();
    dead.shutdown().await;
    // Still believed alive: pulls to it fail and fall back.
    assert!(nodes[0].peers().is_alive(&dead_id));
    let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
    for (r, out) in &results {
        r.as_ref().unwrap();
        assert_eq!(*out, d);
    }
    // Suspected, then down: it leaves the ring (a suspected member keeps
    // its place until it is down).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while nodes[0].peers().is_up(&dead_id) {
        assert!(std::time::Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes[0].peers().alive_ids().len(), 2);
    // A second object now splits between the two survivors only.
    mock.put_object("model/shard-2.safetensors", d.clone());
    let meta2 = mock.head("model/shard-2.safetensors").await.unwrap();
    mock.reset_stats();
    let results = fetch_all(&[&nodes[0], &nodes[1]], &meta2).await;
    for (r, out) in &results {
        assert!(r.as_ref().unwrap().bytes_peer > 0);
        assert_eq!(*out, d);
    }
    assert!(mock.bytes_served() * 10 <= size * 11);
}

/// Node 0 holds `d` (all chunks recorded) as object `version`, kept alive
/// by the returned target.
pub(super) fn hold(node: &Swarm, version: &ObjectVersion, d: &[u8]) -> Arc<dyn ChunkTarget> {
    crate::swarm::test_cluster::hold(node, version, d, CHUNK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_secret_node_cannot_complete_a_quic_handshake_and_gets_nothing() {
    use crate::swarm::tls::PeerTls;
    use crate::swarm::transport::quic::{QuicCrypto, QuicNode};
    use crate::swarm::ClusterSecret;
    let size = 4 * CHUNK;
    let d = data(size, 6);
    let mock = Arc::new(MockObjectClient::new("b"));
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock];
    let nodes = cluster(clients, &[SECRET, SECRET], PeerTransport::Quic).await;
    wait_alive(&nodes, 2).await;
    let version = test_version(size);
    let _held = hold(&nodes[0], &version, &d);
    let id = ChunkId {
        object: version.clone(),
        index: 1,
    };
    let range = CHUNK..2 * CHUNK;
    // A member pulls the chunk over QUIC.
    let got = VecTarget::with_len(size as usize);
    let crc = nodes[1]
        .swarm_fetcher()
        .pull_chunk(nodes[0].peers().self_id(), &id, &got)
        .await
        .unwrap();
    assert_eq!(
        crc,
        ossc_core::crc64::crc64(&d[range.start as usize..range.end as usize])
    );
    assert_eq!(
        got.contents()[range.start as usize..range.end as usize],
        d[range.start as usize..range.end as usize]
    );
    assert_eq!(
        nodes[1]
            .quic()
            .unwrap()
            .bytes_received
            .load(Ordering::Relaxed),
        CHUNK
    );

    let good = nodes[0].local_addr();
    let wrong = ClusterSecret::new(b"Wx3Lr8Tq1Nz6Vb0Kf5Hd9Pj2Mc7Gs4Ya").unwrap();
    let right = ClusterSecret::new(SECRET).unwrap();
    let wrong_tls = PeerTls::new(&wrong, "127.0.0.1:9").unwrap();
    let right_tls = PeerTls::new(&right, "127.0.0.1:9").unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let timeout = Duration::from_secs(2);
    // Every attempt signs with the wrong secret.
    let pull = ChunkPull {
        secret: &wrong,
        self_id: "127.0.0.1:9",
        request: v1::ChunkRequest {
            chunk: Some(v1::ChunkId {
                object: Some((&version).into()),
                chunk_size: CHUNK,
                index: 1,
            }),
            wait_ms: 0,
            ..Default::default()
        },
        range,
        answer_timeout: timeout,
        stall: timeout,
    };
    let server = nodes[1].server().clone();
    let out = VecTarget::with_len(size as usize);
    // 1. Wrong secret throughout: neither side trusts the other's CA.
    let intruder = QuicNode::bind(
        any,
        QuicCrypto::from_tls(&wrong_tls).unwrap(),
        server.clone(),
    )
    .unwrap();
    let r = intruder.fetch(good, &pull, &out).await;
    assert!(matches!(r, Err(PullError::Unreachable(_))), "{r:?}");
    // 2. Trusting our CA does not help: it can only present a certificate
    // from its own CA, which the server refuses.
    let crypto = QuicCrypto::from_pems(
        right_tls.ca_pem(),
        wrong_tls.cert_pem(),
        wrong_tls.key_pem(),
    )
    .unwrap();
    let half = QuicNode::bind(any, crypto, server.clone()).unwrap();
    let r = half.fetch(good, &pull, &out).await;
    assert!(r.is_err(), "{r:?}");
    // 3. Valid certificates but a tag under the wrong secret: refused.
    let forged = QuicNode::bind(any, QuicCrypto::from_tls(&right_tls).unwrap(), server).unwrap();
    let r = forged.fetch(good, &pull, &out).await;
    match r {
        Err(PullError::Failed(m)) => assert!(m.contains("Unauthenticated"), "{m}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    assert!(out.contents().iter().all(|b| *b == 0), "nothing written");
    for q in [&intruder, &half, &forged] {
        assert_eq!(q.bytes_received.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_without_quic_is_pulled_from_over_grpc() {
    let size = 12 * CHUNK + 3;
    let (mock, d) = mock_with(size, 7);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let listeners = listeners(2).await;
    let peers = addrs(&listeners);
    // Something else holds node 1's UDP port (and swallows datagrams):
    // node 1 runs without QUIC, node 0's handshakes time out.
    let _squatter = std::net::UdpSocket::bind(&peers[1]).unwrap();
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone()];
    let nodes = start_nodes(
        listeners,
        clients,
        &[SECRET, SECRET],
        true,
        PeerTransport::Quic,
        |_, _| {},
    )
    .await;
    assert!(nodes[0].quic().is_some());
    assert!(nodes[1].quic().is_none(), "node 1 could not bind UDP");
    wait_alive(&nodes, 2).await;
    let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
    for (r, out) in &results {
        assert_eq!(*out, d);
        assert!(r.as_ref().unwrap().bytes_peer > 0, "{r:?}");
    }
    // Node 0 tried QUIC, gave up on node 1 and used gRPC for its pulls.
    let q = nodes[0].quic().unwrap();
    assert!(q.unreachable.load(Ordering::Relaxed) > 0);
    assert_eq!(q.bytes_received.load(Ordering::Relaxed), 0);
    // Node 1 (QUIC configured but unbound) pulled over gRPC too.
    assert_eq!(nodes[1].swarm_fetcher().transport(), "grpc");
}

/// Object version `b/k` with ETag `"e"` and `size` bytes.
fn test_version(size: u64) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: "k".into(),
        etag: "\"e\"".into(),
        size,
    }
}

/// The chunks of `version` (at [`CHUNK`]) that the ring over `alive`
/// gives to `owner`.
fn chunks_owned_by(alive: &[String], owner: &str, version: &ObjectVersion) -> Vec<u64> {
    (0..version.size.div_ceil(CHUNK))
        .filter(|i| {
            let id = ChunkId {
                object: version.clone(),
                index: *i,
            };
            ring::owner(alive.iter().map(String::as_str), &id) == Some(owner)
        })
        .collect()
}

/// `puller` pulls chunk `index` of `version` from `from` into `into`, in
/// the background.
fn spawn_pull(
    puller: &Swarm,
    from: &Swarm,
    version: &ObjectVersion,
    index: u64,
    into: &Arc<VecTarget>,
) -> tokio::task::JoinHandle<Result<u64, String>> {
    let fetcher = puller.swarm_fetcher().clone();
    let from = from.peers().self_id().to_string();
    let into = into.clone();
    let id = ChunkId {
        object: version.clone(),
        index,
    };
    tokio::spawn(async move { fetcher.pull_chunk(&from, &id, &*into).await })
}

async fn a_chunk_is_streamed_to_peers_while_it_arrives(t: PeerTransport) {
    let size = 4 * CHUNK;
    let d = data(size, 8);
    let mock = Arc::new(MockObjectClient::new("b"));
    let nodes = cluster(vec![mock.clone(), mock], &[SECRET, SECRET], t).await;
    wait_alive(&nodes, 2).await;
    let version = test_version(size);
    // Node 0 is "downloading" the object: chunk 1 lands in two halves.
    let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(size as usize));
    let book = nodes[0]
        .swarm_fetcher()
        .books()
        .open(version.clone(), CHUNK, &target);
    let sink = RecordingSink {
        target: target.clone(),
        book: book.clone(),
    };
    let (a, mid, b) = (
        CHUNK as usize,
        (CHUNK + CHUNK / 2) as usize,
        2 * CHUNK as usize,
    );
    sink.write_at(a as u64, &d[a..mid]).unwrap();
    let got = Arc::new(VecTarget::with_len(size as usize));
    let pull = spawn_pull(&nodes[1], &nodes[0], &version, 1, &got);
    // The first half reaches the puller before the chunk is complete.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while got.contents()[a..mid] != d[a..mid] {
        assert!(
            std::time::Instant::now() < until,
            "the first half never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing more arrives for a while (keep-alives hold the stream open).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pull.is_finished(), "the pull ended before the chunk did");
    assert!(got.contents()[mid..b].iter().all(|x| *x == 0));
    sink.write_at(mid as u64, &d[mid..b]).unwrap();
    book.record(1, ossc_core::crc64::crc64(&d[a..b]));
    let crc = pull.await.unwrap().unwrap();
    assert_eq!(crc, ossc_core::crc64::crc64(&d[a..b]));
    assert_eq!(got.contents()[a..b], d[a..b]);

    // A chunk whose recorded CRC disagrees with the streamed bytes (the
    // owner refetched different bytes) is rejected, not kept.
    sink.write_at(b as u64, &d[b..b + CHUNK as usize]).unwrap();
    let other = Arc::new(VecTarget::with_len(size as usize));
    let pull = spawn_pull(&nodes[1], &nodes[0], &version, 2, &other);
    tokio::time::sleep(Duration::from_millis(300)).await;
    book.record(2, 0x1234);
    let err = pull.await.unwrap().unwrap_err();
    assert!(err.contains("CRC-64 mismatch"), "{err}");
    drop(target);
}

async fn holders_serve_the_chunks_their_owners_lack(t: PeerTransport) {
    let size = 12 * CHUNK + 11;
    let (mock, d, meta, nodes) = three_nodes_one_store(size, 9, t).await;
    // Node 1 holds the object; node 0 (owner of about a third of the
    // chunks) knows nothing of it; node 2 (owner of another third) loads.
    let _held = hold(&nodes[1], &version_of(&meta), &d);
    mock.reset_stats();
    let results = fetch_each(&[(&nodes[2], meta.clone())]).await;
    let (r, out) = &results[0];
    let o = r.as_ref().unwrap();
    assert_eq!(*out, d);
    assert!(o.fetched.crc64_verified);
    assert_eq!(o.bytes_store, 0, "every chunk had a holder: {o:?}");
    assert_eq!(mock.bytes_served(), 0);
    assert_eq!(
        o.by_peer.keys().collect::<Vec<_>>(),
        [nodes[1].peers().self_id()],
        "{o:?}"
    );
    assert_eq!(o.bytes_peer, size);
    // Node 1 answers Have with its bitmap and its idle upload figure.
    let have = nodes[1].server().have(&[(&version_of(&meta)).into()]);
    assert_eq!(have.maps.len(), 1);
    assert!(have.maps[0].bitmap.iter().all(|b| *b != 0));
    assert!(have.idle_upload_bytes_per_sec > 0);
}

async fn pulls_avoid_a_holder_without_idle_upload_bandwidth(t: PeerTransport) {
    let size = 16 * CHUNK + 5;
    let (mock, d) = mock_with(size, 10);
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
    // Node 0's upload is "saturated" (capacity 1 byte/s: it reports the
    // floor, 1 MB/s); node 1 has bandwidth to spare (it reports 10^15
    // bytes/s, believed up to 100 Gbit/s).
    let nodes = cluster_with(clients, &[SECRET, SECRET, SECRET], true, t, |i, c| {
        c.upload_capacity = match i {
            0 => Some(1),
            1 => Some(1_000_000_000_000_000),
            _ => None,
        };
    })
    .await;
    wait_alive(&nodes, 3).await;
    // The ring follows the nodes' ports: the first key of which node 0 owns
    // chunks (a key misses with odds (2/3)^17, about 0.1 %).
    let alive = nodes[2].peers().alive_ids();
    let mut meta = mock.head("model/shard-1.safetensors").await.unwrap();
    for k in 2.. {
        let owned = chunks_owned_by(&alive, nodes[0].peers().self_id(), &version_of(&meta));
        if !owned.is_empty() {
            break;
        }
        let key = format!("model/shard-{k}.safetensors");
        mock.put_object(&key, d.clone());
        meta = mock.head(&key).await.unwrap();
    }
    let version = version_of(&meta);
    let _h0 = hold(&nodes[0], &version, &d);
    let _h1 = hold(&nodes[1], &version, &d);
    // Node 0 weighs 1 in 12 501 of every pick (odds of 12 500 to 1, the
    // most the 100 Gbit/s clamp allows), at the start or the end of [0, 1)
    // by address order. Node 2 draws from the first seed whose first 200
    // draws (more than its 17 chunks' picks) all keep clear of both ends,
    // so the outcome does not rest on luck.
    let clear = |seed: u64| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..200).all(|_| (1e-3..1.0 - 1e-3).contains(&rng.gen::<f64>()))
    };
    let seed = (0..).find(|s| clear(*s)).unwrap();
    nodes[2].swarm_fetcher().seed_picks(seed);
    mock.reset_stats();
    let results = fetch_each(&[(&nodes[2], meta.clone())]).await;
    let (r, out) = &results[0];
    let o = r.as_ref().unwrap();
    assert_eq!(*out, d);
    assert_eq!(o.bytes_store, 0);
    // Even the chunks node 0 owns came from node 1.
    assert_eq!(
        o.by_peer.get(nodes[1].peers().self_id()).copied(),
        Some(size),
        "{o:?}"
    );
    let st = nodes[2].swarm_fetcher().status().unwrap();
    assert_eq!(
        st["peer_idle_upload_bytes_per_sec"][nodes[0].peers().self_id()],
        crate::swarm::upload::IDLE_FLOOR,
        "{st}"
    );
}

async fn a_dead_owners_chunks_are_fetched_once_by_their_new_owners(t: PeerTransport) {
    let size = 30 * CHUNK + 3;
    let (mock, d, meta, mut nodes) = three_nodes_one_store(size, 11, t).await;
    // Node 0 has started the object but its download hangs: pulls of its
    // chunks wait on it (keep-alives), until it dies.
    let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(size as usize));
    let _book = nodes[0]
        .swarm_fetcher()
        .books()
        .open(version_of(&meta), CHUNK, &target);
    mock.reset_stats();
    let dying = nodes.remove(0);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(dying);
    });
    let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
    killer.await.unwrap();
    let mut peer_bytes = 0;
    for (r, out) in &results {
        let o = r.as_ref().unwrap();
        assert_eq!(*out, d);
        assert!(o.fetched.crc64_verified);
        peer_bytes += o.bytes_peer;
    }
    // The dead owner's chunks were reassigned to the survivors, not fetched
    // by each of them: every byte left the store once, but for at most one
    // chunk. The survivors learn of the death at slightly different times
    // (a broken stream plus a suspicion on one, the down verdict on the
    // other), and a chunk pulled in that window can be taken from the store
    // by both (seen under full-suite load, in the framed and QUIC variants).
    let served = mock.bytes_served();
    assert!(
        (size..=size + CHUNK).contains(&served),
        "the store served {served} bytes for an object of {size}"
    );
    // Each survivor got the whole object, from the store or from its peer.
    assert_eq!(served + peer_bytes, 2 * size);
}

async fn a_corrupting_peers_chunks_are_refetched_once_for_the_swarm(t: PeerTransport) {
    let size = 24 * CHUNK + 17;
    let (mock, d, meta, nodes) = three_nodes_one_store(size, 12, t).await;
    nodes[2].server().inject_corruption(true);
    let version = version_of(&meta);
    let alive = nodes[0].peers().alive_ids();
    let share_of_2: u64 = chunks_owned_by(&alive, nodes[2].peers().self_id(), &version)
        .into_iter()
        .map(|i| super::super::chunk_book::chunk_range(size, CHUNK, i))
        .map(|r| r.end - r.start)
        .sum();
    assert!(share_of_2 > 0);
    mock.reset_stats();
    let results = fetch_all(&[&nodes[0], &nodes[1], &nodes[2]], &meta).await;
    for (i, (r, out)) in results.iter().enumerate() {
        let o = r.as_ref().unwrap();
        assert_eq!(*out, d, "node {i}");
        assert!(o.fetched.crc64_verified);
        if i < 2 {
            assert!(
                !o.by_peer.contains_key(nodes[2].peers().self_id()),
                "node {i} kept bytes from the corrupting peer: {o:?}"
            );
        }
    }
    // The corrupting node's share left the store twice (once to it, once
    // to its chunks' next owners), everything else once.
    assert_eq!(mock.bytes_served(), size + share_of_2);
}

/// Node 1 forges a chunk: its bytes differ from the store's, and the
/// chunk CRC it sends matches them. The store declares no CRC-64 (an S3
/// store) but a SHA-256: node 0 catches the forgery with it and takes the
/// chunk from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_chunks_behind_matching_crcs_are_caught_by_the_store_sha256() {
    let size = 16 * CHUNK + 9;
    let key = "model/shard-1.safetensors";
    let store = Arc::new(
        MockObjectClient::new("b")
            .with_crc64_headers(false)
            .with_sha256_headers(true),
    );
    let d = data(size, 4);
    store.put_object(key, d.clone());
    let meta = store.head(key).await.unwrap();
    assert_eq!(meta.crc64, None);
    let forger = Arc::new(MockObjectClient::new("b").with_crc64_headers(false));
    let nodes = cluster(
        vec![store.clone(), forger.clone()],
        &[SECRET, SECRET],
        PeerTransport::Grpc,
    )
    .await;
    wait_alive(&nodes, 2).await;
    let alive = nodes[0].peers().alive_ids();
    let owned = chunks_owned_by(&alive, nodes[1].peers().self_id(), &version_of(&meta));
    assert!(!owned.is_empty(), "node 1 owns a chunk");
    let mut forged = d.clone();
    for index in &owned {
        forged[(index * CHUNK) as usize] ^= 0x5a;
    }
    forger.put_object_with_etag(key, forged, meta.etag.clone());
    // As listed: neither a CRC-64 nor other digests.
    let listed = ObjectMeta {
        crc64: None,
        checksums: Default::default(),
        ..meta.clone()
    };
    let results = fetch_each(&[(&nodes[0], listed.clone()), (&nodes[1], listed)]).await;
    let (r0, out0) = &results[0];
    let o0 = r0.as_ref().unwrap();
    assert!(*out0 == d, "node 0 kept forged bytes");
    assert_eq!(o0.verified_by, Some("sha256"));
    assert!(!o0.fetched.crc64_verified);
    assert_eq!(o0.bytes_peer, 0, "every peer chunk was refetched: {o0:?}");
    assert_eq!(o0.bytes_store, size);
    let st = nodes[1].swarm_fetcher().status().unwrap();
    assert!(st["peers"][0]["bytes_sent"].as_u64().unwrap() > 0, "{st}");
    // The forger's own store declares nothing: it cannot know better.
    assert_eq!(results[1].0.as_ref().unwrap().verified_by, None);
}

/// With `peer.requireVerifiedObjects`, an object without a cryptographic
/// store digest comes from the store alone; one with a SHA-256 is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_verified_objects_keeps_unverifiable_objects_off_peers() {
    let size = 12 * CHUNK + 3;
    let key = "model/shard-1.safetensors";
    for sha256 in [false, true] {
        let store = Arc::new(
            MockObjectClient::new("b")
                .with_crc64_headers(true)
                .with_sha256_headers(sha256),
        );
        let d = data(size, 6);
        store.put_object(key, d.clone());
        let mut meta = store.head(key).await.unwrap();
        meta.checksums = Default::default();
        let clients: Vec<Arc<dyn ObjectClient>> = vec![store.clone(), store.clone()];
        let nodes = cluster_with(
            clients,
            &[SECRET, SECRET],
            true,
            PeerTransport::Grpc,
            |_, c| c.require_verified = true,
        )
        .await;
        wait_alive(&nodes, 2).await;
        let results = fetch_all(&[&nodes[0], &nodes[1]], &meta).await;
        let mut from_peers = 0;
        for (r, out) in &results {
            let o = r.as_ref().unwrap();
            assert!(*out == d);
            from_peers += o.bytes_peer;
            if sha256 {
                assert_eq!(o.verified_by, Some("sha256"), "{o:?}");
            } else {
                assert_eq!(o.bytes_peer, 0, "{o:?}");
                assert_eq!(o.bytes_store, size);
                assert_eq!(o.verified_by, Some("crc64"));
            }
        }
        if sha256 {
            assert!(from_peers > 0, "peers were used for a verifiable object");
        }
    }
}

/// A store whose bytes trickle in: each GET writes its range in pieces of
/// `piece` bytes, `pause` apart (a slow owner's download, seen by the
/// chunk server as a prefix that grows).
struct TricklingStore {
    inner: Arc<MockObjectClient>,
    piece: usize,
    pause: Duration,
}

#[async_trait]
impl ObjectClient for TricklingStore {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> ossc_core::object_client::Result<ossc_core::object_client::ListPage> {
        self.inner
            .list_page(prefix, continuation_token, max_keys)
            .await
    }

    async fn head(&self, key: &str) -> ossc_core::object_client::Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> ossc_core::object_client::Result<ossc_core::object_client::GetRangeMeta> {
        let whole = ossc_core::object_client::mock::VecSink::new();
        let meta = self
            .inner
            .get_range(key, range.clone(), if_match, &whole)
            .await?;
        let bytes = whole.contents();
        let mut at = range.start as usize;
        for piece in bytes[range.start as usize..range.end as usize].chunks(self.piece) {
            tokio::time::sleep(self.pause).await;
            sink.write_at(at as u64, piece)
                .map_err(|e| ClientError::Sink(e.to_string()))?;
            at += piece.len();
        }
        Ok(meta)
    }
}

/// Five nodes load one object at once; node 0's store trickles, so its
/// chunks are still arriving while the others want them. The relay order
/// gives each such chunk two direct pullers; the others stream it from
/// those two while it arrives (`tweak` adjusts each node's config).
async fn five_nodes_with_a_slow_owner(
    t: PeerTransport,
    seed: u64,
) -> (Arc<MockObjectClient>, Vec<u8>, ObjectMeta, Vec<Swarm>, u64) {
    let size = 24 * CHUNK + 7;
    let (mock, mut d) = mock_with(size, seed);
    let slow: Arc<dyn ObjectClient> = Arc::new(TricklingStore {
        inner: mock.clone(),
        piece: (CHUNK / 32) as usize,
        pause: Duration::from_millis(250),
    });
    let mut clients: Vec<Arc<dyn ObjectClient>> = vec![slow];
    clients.extend((1..5).map(|_| mock.clone() as Arc<dyn ObjectClient>));
    // A long peer wait: the relays' children must not give up on them on
    // a loaded test machine.
    let nodes = cluster_with(clients, &[SECRET; 5], true, t, |_, c| {
        c.peer_wait = Duration::from_secs(10)
    })
    .await;
    wait_alive(&nodes, 5).await;
    // The ring follows the nodes' random ports: node 0 owns none of the 25
    // chunks about once in 260 clusters, so other contents (another ETag)
    // are tried until it owns some.
    let mut attempt = 0;
    let (meta, share_of_0) = loop {
        let meta = mock.head("model/shard-1.safetensors").await.unwrap();
        let share: u64 = chunks_owned_by(
            &nodes[0].peers().alive_ids(),
            nodes[0].peers().self_id(),
            &version_of(&meta),
        )
        .into_iter()
        .map(|i| super::super::chunk_book::chunk_range(size, CHUNK, i))
        .map(|r| r.end - r.start)
        .sum();
        if share > 0 {
            break (meta, share);
        }
        attempt += 1;
        assert!(attempt < 64, "node 0 owns no chunk of 64 contents");
        d = data(size, seed + 1000 * attempt);
        mock.put_object("model/shard-1.safetensors", d.clone());
    };
    mock.reset_stats();
    (mock, d, meta, nodes, share_of_0)
}

/// Bytes a node pulled from peers it took for relays (STATUS).
fn relayed_to(node: &Swarm) -> u64 {
    let st = node.swarm_fetcher().status().unwrap();
    st["bytes_pulled_by_source"]["relay"].as_u64().unwrap()
}

async fn a_slow_owners_chunks_reach_the_others_through_relays(t: PeerTransport) {
    let (mock, d, meta, nodes, share_of_0) = five_nodes_with_a_slow_owner(t, 13).await;
    let refs: Vec<&Swarm> = nodes.iter().collect();
    let results = fetch_all(&refs, &meta).await;
    for (i, (r, out)) in results.iter().enumerate() {
        let o = r.as_ref().unwrap();
        assert!(*out == d, "node {i} got wrong bytes");
        assert!(o.fetched.crc64_verified);
    }
    // Every chunk left the store once, and no pull fell back to it.
    assert_eq!(mock.bytes_served(), d.len() as u64);
    // The slow owner's chunks were still arriving when the others wanted
    // them: two of its four pullers took them from a relay (about 2 × its
    // share when the relays attach in time, which a loaded test machine
    // does not promise), the others from the owner.
    let relayed: u64 = nodes.iter().map(relayed_to).sum();
    let sent: Vec<u64> = nodes
        .iter()
        .map(|n| n.server().upload_meter().total())
        .collect();
    eprintln!("relayed {relayed} bytes; node 0's share {share_of_0}; sent by node {sent:?}");
    assert!(relayed > 0, "no chunk came from a relay");
    // Nodes other than the owners served chunks: every node uploaded.
    for (i, n) in sent.iter().enumerate() {
        assert!(*n > 0, "node {i} sent nothing");
    }
}

async fn a_corrupting_relay_costs_a_re_pull_never_a_wrong_byte(t: PeerTransport) {
    let (_mock, d, meta, nodes, _) = five_nodes_with_a_slow_owner(t, 14).await;
    nodes[1].server().inject_corruption(true);
    let liar = nodes[1].peers().self_id().to_string();
    let refs: Vec<&Swarm> = nodes.iter().collect();
    let results = fetch_all(&refs, &meta).await;
    for (i, (r, out)) in results.iter().enumerate() {
        let o = r.as_ref().unwrap();
        assert!(*out == d, "node {i} got wrong bytes");
        if i != 1 {
            assert!(
                !o.by_peer.contains_key(&liar),
                "node {i} kept bytes from the corrupting node: {o:?}"
            );
        }
    }
    let failures: u64 = nodes
        .iter()
        .filter_map(|n| n.peers().peer(&liar))
        .map(|p| p.failures.load(Ordering::Relaxed))
        .sum();
    assert!(failures > 0, "nobody noticed the corruption");
}

async fn a_relay_that_dies_mid_stream_costs_a_re_pull(t: PeerTransport) {
    let (_mock, d, meta, mut nodes, _) = five_nodes_with_a_slow_owner(t, 15).await;
    let dying = nodes.remove(1);
    let dying_fetcher = dying.fetcher();
    // The dying node loads too, and is dropped while the slow owner's
    // chunks still stream through the relays.
    let meta_for_dying = meta.clone();
    let victim = tokio::spawn(async move {
        let target: Arc<dyn ChunkTarget> =
            Arc::new(VecTarget::with_len(meta_for_dying.size as usize));
        let fetch = dying_fetcher.fetch(&meta_for_dying, target, Arc::default());
        let _ = tokio::time::timeout(Duration::from_millis(1200), fetch).await;
        drop(dying);
    });
    let refs: Vec<&Swarm> = nodes.iter().collect();
    let results = fetch_all(&refs, &meta).await;
    victim.await.unwrap();
    for (i, (r, out)) in results.iter().enumerate() {
        let o = r.as_ref().unwrap();
        assert!(*out == d, "survivor {i} got wrong bytes");
        assert!(o.fetched.crc64_verified);
    }
}

/// Node 1 starts the object 1.5 s after node 0 asks it for chunks: its
/// unheld-object hook starts its fetch, and node 0 waits for it instead of
/// going to the store. Every byte leaves the store once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_skew_costs_no_store_egress() {
    let size = 24 * CHUNK + 9;
    let (mock, d) = mock_with(size, 16);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone()];
    // Patient membership: on a loaded test machine a missed heartbeat
    // must not pass for a death while node 0 waits for node 1.
    let nodes = cluster_with(
        clients,
        &[SECRET, SECRET],
        true,
        PeerTransport::Grpc,
        |_, c| {
            c.peer_wait = Duration::from_secs(6);
            c.timing.dead_after = Duration::from_secs(3);
        },
    )
    .await;
    wait_alive(&nodes, 2).await;
    let late = nodes[1].fetcher();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    nodes[1].on_unheld_object({
        let (meta, asked) = (meta.clone(), asked.clone());
        Arc::new(move |v: &ObjectVersion| {
            asked.fetch_add(1, Ordering::Relaxed);
            if v.key != meta.key || v.etag != meta.etag {
                return false;
            }
            let Some(tx) = tx.lock().unwrap().take() else {
                return true;
            };
            let (late, meta) = (late.clone(), meta.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                // Node 1 holds (and serves) the object as long as the test
                // keeps this target, as its cache would.
                let memfd = Arc::new(Memfd::create(&meta.key, meta.size).unwrap());
                let r = late.fetch(&meta, memfd.clone(), Arc::default()).await;
                let _ = tx.send((r, memfd));
            });
            true
        })
    });
    // Node 0 keeps the object (and serves it) until node 1 is done too.
    let held = Arc::new(VecTarget::with_len(size as usize));
    let o0 = nodes[0]
        .fetcher()
        .fetch(&meta, held.clone(), Arc::default())
        .await
        .unwrap();
    assert!(held.contents() == d);
    assert!(o0.bytes_peer > 0, "node 0 pulled nothing: {o0:?}");
    let (r1, memfd1) = rx.await.unwrap();
    r1.unwrap();
    let mut out1 = vec![0u8; size as usize];
    memfd1.read_at(0, &mut out1).unwrap();
    assert!(out1 == d);
    assert!(asked.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        mock.bytes_served(),
        size,
        "a chunk left the store twice; node 0: {o0:?}"
    );
}

/// `n` nodes load one object at once from a slow store (so the load spans
/// several have-map rounds): every node gets every byte, the object leaves
/// the store about once, and no node asks more than `HAVE_FANOUT` peers per
/// round, against `n` − 1 when every round asks every peer.
/// Prints the Have calls made and answered per node and round.
async fn have_rounds_ask_a_bounded_number_of_peers(n: usize) {
    use crate::swarm::holders::HAVE_FANOUT;
    let size = 48 * CHUNK + 5;
    let (mock, d) = mock_with(size, 17 + n as u64);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let slow: Arc<dyn ObjectClient> = Arc::new(TricklingStore {
        inner: mock.clone(),
        piece: (CHUNK / 8) as usize,
        pause: Duration::from_millis(100),
    });
    let secrets = vec![SECRET; n];
    let nodes = cluster_with(
        vec![slow; n],
        &secrets,
        true,
        PeerTransport::Grpc,
        |_, c| c.peer_wait = Duration::from_secs(10),
    )
    .await;
    wait_alive(&nodes, n).await;
    mock.reset_stats();
    let refs: Vec<&Swarm> = nodes.iter().collect();
    let began = std::time::Instant::now();
    let results = fetch_all(&refs, &meta).await;
    let took = began.elapsed();
    for (i, (r, out)) in results.iter().enumerate() {
        let o = r.as_ref().unwrap();
        assert!(*out == d, "node {i} got wrong bytes");
        assert!(o.fetched.crc64_verified);
    }
    // Relay parents are asked first: chunks still spread through relays.
    let relayed: u64 = nodes.iter().map(relayed_to).sum();
    assert!(relayed > 0, "no chunk came from a relay");
    // About once (each node alone: n times). A loaded machine sometimes
    // sends a pull that waits too long to the store, whatever the rounds.
    let served = mock.bytes_served();
    assert!(served <= 2 * size, "store served {served} for {size}");
    let traffic: Vec<_> = nodes
        .iter()
        .map(|s| s.swarm_fetcher().shared.holders.traffic())
        .collect();
    let answered: Vec<u64> = nodes.iter().map(|s| s.server().have_answers()).collect();
    let rounds: u64 = traffic.iter().map(|t| t.rounds).sum();
    let asks: u64 = traffic.iter().map(|t| t.asks).sum();
    let per_round = |x: u64| x as f64 / (rounds as f64 / n as f64);
    eprintln!(
        "N = {n}: load {took:.2?}, {relayed} bytes relayed, {rounds} rounds; Have calls per node and round: made {:.2}, answered {:.2} on average, at most {:.2} by one node",
        asks as f64 / rounds as f64,
        per_round(answered.iter().sum::<u64>()) / n as f64,
        per_round(*answered.iter().max().unwrap()),
    );
    for (i, t) in traffic.iter().enumerate() {
        assert!(t.rounds >= 2, "node {i} made {} rounds", t.rounds);
        assert!(
            t.asks <= HAVE_FANOUT as u64 * t.rounds,
            "node {i} asked {} peers in {} rounds",
            t.asks,
            t.rounds
        );
    }
    assert!(answered.iter().sum::<u64>() <= asks);
    // Fewer than every other peer per round, asked and answered (no node
    // is asked by much more than HAVE_FANOUT peers per round either).
    assert!(asks < (n as u64 - 1) * rounds || n - 1 <= HAVE_FANOUT);
    let most = *answered.iter().max().unwrap();
    assert!(
        most * n as u64 <= 2 * HAVE_FANOUT as u64 * rounds,
        "one node answered {most} Have calls in {rounds} rounds of {n} nodes"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn have_rounds_ask_a_bounded_number_of_peers_at_8() {
    have_rounds_ask_a_bounded_number_of_peers(8).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn have_rounds_ask_a_bounded_number_of_peers_at_14() {
    have_rounds_ask_a_bounded_number_of_peers(14).await
}

/// Runs each scenario once per transport, as
/// `by_transport::<name>::<transport>`.
macro_rules! per_transport {
    ($($name:ident),* $(,)?) => {
        mod by_transport {
            $(pub mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn quic() {
                    super::super::$name(crate::swarm::PeerTransport::Quic).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn grpc() {
                    super::super::$name(crate::swarm::PeerTransport::Grpc).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn framed() {
                    super::super::$name(crate::swarm::PeerTransport::Framed).await
                }
            })*
        }
    };
}

per_transport!(
    three_nodes_get_exact_bytes_for_about_one_object_of_store_egress,
    a_node_with_the_wrong_secret_gets_nothing_and_injects_nothing,
    corrupted_chunks_from_a_peer_are_detected_and_bypassed,
    bad_bytes_behind_a_consistent_chunk_crc_are_caught_end_to_end,
    a_dead_peer_falls_back_to_the_store_and_leaves_the_ring,
    a_chunk_is_streamed_to_peers_while_it_arrives,
    holders_serve_the_chunks_their_owners_lack,
    pulls_avoid_a_holder_without_idle_upload_bandwidth,
    a_dead_owners_chunks_are_fetched_once_by_their_new_owners,
    a_corrupting_peers_chunks_are_refetched_once_for_the_swarm,
    a_slow_owners_chunks_reach_the_others_through_relays,
    a_corrupting_relay_costs_a_re_pull_never_a_wrong_byte,
    a_relay_that_dies_mid_stream_costs_a_re_pull,
);

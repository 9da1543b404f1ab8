//! Peer transport throughput: QUIC vs gRPC on loopback (an `#[ignore]`d
//! measurement, not a unit test).
//!
//! Run:
//! `cargo test --release -p ossc-peer --lib -- --ignored transport_throughput --nocapture`
//! (`OSSC_BENCH_BYTES` overrides the volume, default 1 GiB;
//! `OSSC_BENCH_ROUNDS` the measured rounds per transport, default 3).
//!
//! Design decision: measure the real pull path and nothing else. Two
//! in-process nodes; node A holds one object of [`DEFAULT_BYTES`] in a memfd
//! (every chunk recorded, as after its own store fetch); node B pulls every
//! 16 MiB chunk from A with [`SwarmFetcher::pull_chunk`] under the default
//! 16-pull limit into its own memfd: TLS, auth, framing, CRC-64 check and
//! `write_at` included, the object store excluded. Both sides run in this
//! process, so the CPU time (getrusage, user + system) is the cost of
//! sending *and* receiving; "GB/s per CPU-second" = bytes / CPU seconds.
//! One warm-up round per transport opens connections and faults the
//! receiver's pages in. GB = 10^9 bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossc_core::fetch::{FetchConfig, FetchEngine};
use ossc_core::object_client::mock::MockObjectClient;
use tokio::net::TcpListener;

use super::chunk_book::{ChunkId, ObjectVersion};
use super::{ClusterSecret, MembershipTiming, PeerTransport, Swarm, SwarmConfig};
use crate::object_source::memfd::Memfd;
use crate::object_source::ChunkTarget;

/// Bytes moved per round (1 GiB).
const DEFAULT_BYTES: u64 = 1 << 30;
/// Measured rounds per transport.
const DEFAULT_ROUNDS: usize = 3;
/// The production chunk size and pull concurrency.
const CHUNK: u64 = super::DEFAULT_CHUNK_SIZE;
const PULLS: usize = super::swarm_fetcher::DEFAULT_PULL_CONCURRENCY;
const SECRET: &[u8] = crate::swarm::auth::TEST_SECRET;

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call's duration.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TCP listener on 127.0.0.1 whose port number is free on UDP too.
async fn listener() -> TcpListener {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        if std::net::UdpSocket::bind(l.local_addr().unwrap()).is_ok() {
            return l;
        }
    }
}

async fn two_nodes(transport: PeerTransport, tls: bool) -> (Swarm, Swarm) {
    let (la, lb) = (listener().await, listener().await);
    let addrs: Vec<SocketAddr> = vec![la.local_addr().unwrap(), lb.local_addr().unwrap()];
    let peers: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let mut nodes = Vec::new();
    for (l, addr) in [la, lb].into_iter().zip(&addrs) {
        let config = SwarmConfig {
            peers: peers.clone(),
            listen: *addr,
            advertise: None,
            secret: ClusterSecret::new(SECRET).unwrap(),
            chunk_size: CHUNK,
            pull_concurrency: PULLS,
            peer_wait: Duration::from_secs(10),
            timing: MembershipTiming {
                heartbeat: Duration::from_millis(100),
                dead_after: Duration::from_secs(3),
                hello_timeout: Duration::from_millis(500),
                startup_wait: Duration::from_millis(500),
            },
            tls,
            corrupt_served_chunks: false,
            limits: Default::default(),
            transport,
            upload_capacity: None,
            require_verified: false,
            membership: Default::default(),
        };
        let engine = Arc::new(FetchEngine::new(
            Arc::new(MockObjectClient::new("b")),
            FetchConfig::default(),
        ));
        nodes.push(
            Swarm::start_with_listener(config, l, engine, "b".into())
                .await
                .unwrap(),
        );
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    (a, b)
}

/// Pulls every chunk of `version` from `a` into `into` (all at once; the
/// fetcher's limit keeps [`PULLS`] in flight).
async fn pull_all(b: &Swarm, a_id: &str, version: &ObjectVersion, into: &Arc<Memfd>, n: u64) {
    let fetcher = b.swarm_fetcher().clone();
    let mut set = tokio::task::JoinSet::new();
    for index in 0..n {
        let (fetcher, a_id, into) = (fetcher.clone(), a_id.to_string(), into.clone());
        let id = ChunkId {
            object: version.clone(),
            index,
        };
        set.spawn(async move {
            let target: &dyn ChunkTarget = &*into;
            fetcher.pull_chunk(&a_id, &id, target).await
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().expect("chunk pulled");
    }
}

struct Row {
    name: &'static str,
    secs: Vec<f64>,
    cpu: Vec<f64>,
}

async fn measure(
    name: &'static str,
    transport: PeerTransport,
    tls: bool,
    data: &Arc<Memfd>,
    crcs: &[u64],
    bytes: u64,
    rounds: usize,
) -> Row {
    let (a, b) = two_nodes(transport, tls).await;
    let until = Instant::now() + Duration::from_secs(5);
    while b.peers().alive_ids().len() != 2 {
        assert!(Instant::now() < until, "peers never met");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let version = ObjectVersion {
        bucket: "b".into(),
        key: "bench/object".into(),
        etag: "\"bench\"".into(),
        size: bytes,
    };
    let held: Arc<dyn ChunkTarget> = data.clone();
    let book = a
        .swarm_fetcher()
        .books()
        .open(version.clone(), CHUNK, &held);
    for (i, crc) in crcs.iter().enumerate() {
        book.record(i as u64, *crc);
    }
    let n = crcs.len() as u64;
    let into = Arc::new(Memfd::create("bench-received", bytes).unwrap());
    let a_id = a.peers().self_id().to_string();
    pull_all(&b, &a_id, &version, &into, n).await; // warm-up
    let mut row = Row {
        name,
        secs: Vec::new(),
        cpu: Vec::new(),
    };
    for _ in 0..rounds {
        let (t0, c0) = (Instant::now(), cpu_time());
        pull_all(&b, &a_id, &version, &into, n).await;
        row.secs.push(t0.elapsed().as_secs_f64());
        row.cpu.push((cpu_time() - c0).as_secs_f64());
    }
    // The received object is exact.
    let (mut x, mut y) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
    for i in 0..n {
        let r = super::chunk_book::chunk_range(bytes, CHUNK, i);
        let len = (r.end - r.start) as usize;
        data.read_at(r.start, &mut x[..len]).unwrap();
        into.read_at(r.start, &mut y[..len]).unwrap();
        assert!(x[..len] == y[..len], "chunk {i} differs");
    }
    if transport == PeerTransport::Quic {
        let q = b.quic().expect("QUIC endpoint");
        // The sender's side of the connection B opened.
        if let Some(st) = a.quic().unwrap().connection_stats(b.local_addr()) {
            println!(
                "quic sender: {} datagrams in {} sends, path MTU {} B, {} lost packets, {} congestion events",
                st.udp_tx.datagrams,
                st.udp_tx.ios,
                st.path.current_mtu,
                st.path.lost_packets,
                st.path.congestion_events
            );
        }
        assert_eq!(
            q.unreachable.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "QUIC was not used"
        );
    }
    drop(book);
    a.shutdown().await;
    b.shutdown().await;
    row
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

#[test]
#[ignore = "measurement: run with --release -- --ignored transport_throughput --nocapture"]
fn transport_throughput() {
    let bytes: u64 = env_or("OSSC_BENCH_BYTES", DEFAULT_BYTES).max(CHUNK);
    let rounds: usize = env_or("OSSC_BENCH_ROUNDS", DEFAULT_ROUNDS).max(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let data = Arc::new(Memfd::create("bench-held", bytes).unwrap());
        let mut crcs = Vec::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; CHUNK as usize];
        for i in 0..bytes.div_ceil(CHUNK) {
            let r = super::chunk_book::chunk_range(bytes, CHUNK, i);
            let chunk = &mut buf[..(r.end - r.start) as usize];
            for w in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
            }
            use ossc_core::object_client::RangeSink;
            data.write_at(r.start, chunk).unwrap();
            crcs.push(ossc_core::crc64::crc64(chunk));
        }
        let cases = [
            ("quic (TLS 1.3)", PeerTransport::Quic, true),
            ("grpc (mTLS)", PeerTransport::Grpc, true),
            ("grpc (plaintext, TLS=0)", PeerTransport::Grpc, false),
        ];
        let mut rows = Vec::new();
        for (name, t, tls) in cases {
            rows.push(measure(name, t, tls, &data, &crcs, bytes, rounds).await);
        }
        println!(
            "\ntransport_throughput: {} MiB per round in {} MiB chunks, {} pulls in flight, {} rounds, {} runtime threads, {} CPUs",
            bytes >> 20,
            CHUNK >> 20,
            PULLS,
            rounds,
            threads,
            threads
        );
        println!(
            "| transport | GB/s (median) | GB/s (best) | CPU-s per GB (sender + receiver) | GB/s per CPU-second |"
        );
        println!("|---|---|---|---|---|");
        for r in &rows {
            let gb = bytes as f64 / 1e9;
            let secs = median(&r.secs);
            let best = r.secs.iter().copied().fold(f64::MAX, f64::min);
            let cpu = median(&r.cpu);
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.name,
                gb / secs,
                gb / best,
                cpu / gb,
                gb / cpu
            );
            assert!(secs > 0.0 && cpu > 0.0);
        }
    });
}

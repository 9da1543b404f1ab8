//! Peer transport throughput: every transport side by side on loopback (an
//! `#[ignore]`d measurement, not a unit test).
//!
//! Run:
//! `cargo test --release -p ossc-peer --lib -- --ignored transport_throughput --nocapture`
//! (`OSSC_BENCH_BYTES` overrides the volume, default 1 GiB;
//! `OSSC_BENCH_ROUNDS` the measured rounds per transport, default 3;
//! `OSSC_BENCH_TRANSPORTS` a comma-separated subset, default all).
//!
//! Design decision: measure the real pull path and nothing else. Two
//! in-process nodes; node A holds one object of [`DEFAULT_BYTES`] in a memfd
//! (every chunk recorded, as after its own store fetch); node B pulls every
//! 16 MiB chunk from A with
//! [`SwarmFetcher::pull_chunk`](super::SwarmFetcher::pull_chunk) under the
//! default 16-pull limit into its own memfd: TLS, auth, framing, CRC-64
//! check and `write_at` included, the object store excluded. Every
//! transport of [`PeerTransport::ALL`] is measured through the same seam
//! (the fetcher's [`ChunkPuller`](super::transport::ChunkPuller)), with TLS,
//! and once more without it where TLS can be turned off. Both sides run in
//! this process, so the CPU time (getrusage, user + system) is the cost of
//! sending *and* receiving; "GB/s per CPU-second" = bytes / CPU seconds.
//! One warm-up round per transport opens connections and faults the
//! receiver's pages in. GB = 10^9 bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ossc_core::object_client::mock::MockObjectClient;
use ossc_core::object_client::ObjectClient;

use super::chunk_book::{ChunkId, ObjectVersion};
use super::test_cluster::{cluster_with, wait_alive, SECRET};
use super::{PeerTransport, Swarm};
use crate::object_source::memfd::Memfd;
use crate::object_source::ChunkTarget;

/// Bytes moved per round (1 GiB).
const DEFAULT_BYTES: u64 = 1 << 30;
/// Measured rounds per transport.
const DEFAULT_ROUNDS: usize = 3;
/// The production chunk size and pull concurrency.
const CHUNK: u64 = super::DEFAULT_CHUNK_SIZE;
const PULLS: usize = super::swarm_fetcher::DEFAULT_PULL_CONCURRENCY;

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

/// Two nodes pulling over `transport`, at the production chunk size and
/// pull limit.
async fn two_nodes(transport: PeerTransport, tls: bool) -> (Swarm, Swarm) {
    let store = Arc::new(MockObjectClient::new("b"));
    let clients: Vec<Arc<dyn ObjectClient>> = vec![store.clone(), store];
    let mut nodes = cluster_with(clients, &[SECRET, SECRET], tls, transport, |_, c| {
        c.chunk_size = CHUNK;
        c.pull_concurrency = PULLS;
        c.peer_wait = Duration::from_secs(10);
        c.timing.dead_after = Duration::from_secs(3);
        c.timing.hello_timeout = Duration::from_millis(500);
    })
    .await;
    wait_alive(&nodes, 2).await;
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
    name: String,
    secs: Vec<f64>,
    cpu: Vec<f64>,
}

async fn measure(
    name: String,
    transport: PeerTransport,
    tls: bool,
    data: &Arc<Memfd>,
    crcs: &[u64],
    bytes: u64,
    rounds: usize,
) -> Row {
    let (a, b) = two_nodes(transport, tls).await;
    assert_eq!(b.swarm_fetcher().transport(), transport.as_str());
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
        // QUIC falls back to gRPC per peer: it must not have here.
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
    if transport == PeerTransport::Framed {
        // Framed falls back to gRPC per peer too: it must not have here.
        let f = b.framed();
        let opened = f
            .connections_opened
            .load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "framed: {opened} connections opened for {} pulls",
            n * (rounds as u64 + 1)
        );
        assert_eq!(
            f.unreachable.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "framed was not used"
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
        let mut rows = Vec::new();
        let only = std::env::var("OSSC_BENCH_TRANSPORTS").unwrap_or_default();
        let picked = |t: &PeerTransport| only.is_empty() || only.split(',').any(|n| n == t.as_str());
        for t in PeerTransport::ALL.into_iter().filter(picked) {
            let plaintext = t.tls_optional().then_some(false);
            for tls in std::iter::once(true).chain(plaintext) {
                let name = match tls {
                    true => format!("{} (mutual TLS)", t.as_str()),
                    false => format!("{} (plaintext, TLS=0)", t.as_str()),
                };
                rows.push(measure(name, t, tls, &data, &crcs, bytes, rounds).await);
            }
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

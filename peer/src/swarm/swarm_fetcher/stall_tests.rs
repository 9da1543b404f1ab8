//! Peers that claim more than they deliver: a liar that advertises
//! 100 Gbit/s of idle upload and every chunk but stalls or trickles is paid
//! for a bounded number of times per object, and a slow source that is the
//! only peer source is not abandoned to the store.

use std::time::Instant;

use super::tests::{fetch_each, hold, mock_with};
use super::*;
use crate::swarm::chunk_server::Trickle;
use crate::swarm::source_record::Patience;
use crate::swarm::sources::Candidate;
use crate::swarm::test_cluster::{cluster_with, version_of, wait_alive, CHUNK, SECRET};
use crate::swarm::upload_limit::MAX_IDLE_UPLOAD;
use crate::swarm::{PeerTransport, Swarm};
use ossc_core::object_client::ObjectClient;

/// The test clusters' pull concurrency and peer wait (`test_cluster`).
const PULLS: u64 = 4;
const PEER_WAIT: Duration = Duration::from_secs(3);

/// How the liar misserves.
#[derive(Debug, Clone, Copy)]
enum Lie {
    /// Keep-alives, never a byte (its upload cap grants nothing).
    Stall,
    /// 1 KiB every 200 ms: always progressing, never stalled, 12.8 s a
    /// chunk, far below its claim.
    Trickle,
}

/// Node 0 claims 100 Gbit/s of idle upload and every chunk of a 32-chunk
/// object, and serves them as `lie` says; nodes 1 and 2 hold the object
/// honestly; node 3 loads it. The load is byte-exact, takes no store
/// egress, picks the liar at most once per pull slot, and ends within a
/// bound far below (chunks × patience).
async fn a_liar_cannot_capture_the_pulls(t: PeerTransport, lie: Lie) {
    let chunks = 32;
    let size = chunks * CHUNK + 5;
    let (mock, d) = mock_with(size, 21);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let clients: Vec<Arc<dyn ObjectClient>> = (0..4).map(|_| mock.clone() as _).collect();
    let nodes = cluster_with(clients, &[SECRET; 4], true, t, |i, c| {
        assert_eq!((c.pull_concurrency as u64, c.peer_wait), (PULLS, PEER_WAIT));
        if i == 0 {
            c.upload_capacity = Some(1_000_000_000_000_000);
        }
    })
    .await;
    wait_alive(&nodes, 4).await;
    let version = version_of(&meta);
    let _held: Vec<_> = nodes[..3].iter().map(|n| hold(n, &version, &d)).collect();
    match lie {
        Lie::Stall => nodes[0].upload_limit().stall(),
        Lie::Trickle => nodes[0].server().inject_trickle(Some(Trickle {
            bytes: 1024,
            pause: Duration::from_millis(200),
        })),
    }
    let liar = nodes[0].peers().self_id().to_string();
    mock.reset_stats();
    let started = Instant::now();
    let results = fetch_each(&[(&nodes[3], meta.clone())]).await;
    let took = started.elapsed();
    let picked = nodes[3]
        .peers()
        .peer(&liar)
        .unwrap()
        .failures
        .load(Ordering::Relaxed);
    eprintln!("{lie:?}: {took:?}, liar picked {picked} times");
    let (r, out) = &results[0];
    let o = r.as_ref().unwrap();
    assert!(*out == d, "wrong bytes");
    assert!(o.fetched.crc64_verified);
    assert!(!o.by_peer.contains_key(&liar), "{o:?}");
    assert_eq!(o.bytes_store, 0, "every chunk had honest holders: {o:?}");
    assert_eq!(mock.bytes_served(), 0);
    // Node 3 believed the liar's claim (so it won nearly every pick)...
    let st = nodes[3].swarm_fetcher().status().unwrap();
    assert_eq!(
        st["peer_idle_upload_bytes_per_sec"][&liar], MAX_IDLE_UPLOAD,
        "{st}"
    );
    // ...but paid for it at most once per pull slot: every pull of the
    // liar failed, so its failures count its picks.
    assert!(picked >= 1, "the liar was never picked");
    assert!(picked <= PULLS, "the liar was picked {picked} times");
    // One round of stalled pulls, not one per chunk (32 × 3 s), nor one per
    // wave of pull slots (8 × 3 s).
    let bound = 2 * PEER_WAIT + Duration::from_secs(2);
    assert!(took < bound, "the load took {took:?} (bound {bound:?})");
    shut(nodes).await;
}

async fn shut(nodes: Vec<Swarm>) {
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalling_liar_cannot_capture_the_pulls_quic() {
    a_liar_cannot_capture_the_pulls(PeerTransport::Quic, Lie::Stall).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalling_liar_cannot_capture_the_pulls_grpc() {
    a_liar_cannot_capture_the_pulls(PeerTransport::Grpc, Lie::Stall).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalling_liar_cannot_capture_the_pulls_framed() {
    a_liar_cannot_capture_the_pulls(PeerTransport::Framed, Lie::Stall).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickling_liar_cannot_capture_the_pulls() {
    a_liar_cannot_capture_the_pulls(PeerTransport::Framed, Lie::Trickle).await
}

/// Node 1 holds the object and trickles it (4 KiB every 250 ms: 4 s a
/// chunk, past the short patience of a holder with an alternative); it is
/// the only peer source of the chunks node 0 owns, and the owner of the
/// others. Node 0 takes every chunk from it: none goes to the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_but_progressing_only_source_is_not_abandoned_to_the_store() {
    let size = 4 * CHUNK + 3;
    let (mock, d) = mock_with(size, 22);
    let meta = mock.head("model/shard-1.safetensors").await.unwrap();
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone()];
    let nodes = cluster_with(clients, &[SECRET; 2], true, PeerTransport::Grpc, |_, _| {}).await;
    wait_alive(&nodes, 2).await;
    let version = version_of(&meta);
    let _held = hold(&nodes[1], &version, &d);
    nodes[1].server().inject_trickle(Some(Trickle {
        bytes: 4096,
        pause: Duration::from_millis(250),
    }));
    mock.reset_stats();
    let started = Instant::now();
    let results = fetch_each(&[(&nodes[0], meta.clone())]).await;
    let took = started.elapsed();
    let (r, out) = &results[0];
    let o = r.as_ref().unwrap();
    assert!(*out == d, "wrong bytes");
    assert_eq!(o.bytes_store, 0, "a slow chunk went to the store: {o:?}");
    assert_eq!(mock.bytes_served(), 0);
    assert_eq!(
        o.by_peer.get(nodes[1].peers().self_id()).copied(),
        Some(size)
    );
    // It was slow: longer than a holder with an alternative may take.
    let holder = Candidate {
        peer: nodes[1].peers().self_id().to_string(),
        kind: SourceKind::Holder,
        prefix: CHUNK,
    };
    let short = Patience::of(&holder, true, CHUNK, PEER_WAIT);
    assert!(took > short.whole.unwrap(), "{took:?}");
    shut(nodes).await;
}

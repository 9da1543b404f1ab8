//! The bucket on its own (grants, turns, keep-alives, give-backs), then
//! whole nodes: a capped node serving two pullers, and a peer that claims
//! every chunk and unbounded upload but delivers nothing.

use std::sync::atomic::Ordering;

use super::*;
use crate::object_source::{ChunkTarget, ObjectFetcher, VecTarget};
use crate::swarm::chunk_book::{chunk_range, ChunkId, ObjectVersion};
use crate::swarm::swarm_fetcher::RESPONSE_MARGIN;
use crate::swarm::test_cluster::{cluster_with, hold, version_of, wait_alive, CHUNK, SECRET};
use crate::swarm::{PeerTransport, Swarm};
use ossc_core::object_client::mock::{pseudo_random_bytes, MockObjectClient};
use ossc_core::object_client::ObjectClient;

const MIB: u64 = 1 << 20;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn without_a_cap_everything_goes_at_once_and_streams_are_counted() {
    let limit = Arc::new(UploadLimit::new(None));
    assert_eq!(limit.rate(), None);
    let mut s = limit.stream();
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(s.clear(MIB, far()).await.unwrap(), Some(MIB));
    }
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(limit.throttled_bytes(), 0);
    let other = limit.stream();
    assert_eq!(limit.in_flight(), 2);
    assert!(
        !limit
            .drained(Instant::now() + Duration::from_millis(30))
            .await
    );
    drop((s, other));
    assert!(limit.drained(Instant::now()).await);
    assert_eq!(limit.in_flight(), 0);
}

#[tokio::test]
async fn a_burst_goes_at_once_then_the_cap_holds_and_streams_take_turns() {
    // 10 MB/s: the burst is one frame (1 MiB > 50 ms × 10 MB/s).
    let limit = Arc::new(UploadLimit::new(Some(10_000_000)));
    let order = Arc::new(Mutex::new(Vec::new()));
    let t = Instant::now();
    let streams = (0..2).map(|who| {
        let (limit, order) = (limit.clone(), order.clone());
        async move {
            let mut s = limit.stream();
            for _ in 0..4 {
                assert_eq!(s.clear(MIB, far()).await.unwrap(), Some(MIB));
                order.lock().unwrap().push(who);
            }
        }
    });
    futures::future::join_all(streams).await;
    let took = t.elapsed().as_secs_f64();
    // 8 MiB, one of them free: 7 MiB at 10 MB/s.
    let expected = 7.0 * MIB as f64 / 10e6;
    assert!(took >= expected * 0.95, "{took} s");
    assert!(took < expected + 0.3, "{took} s");
    // First come, first served: neither stream ever gets two turns ahead.
    let order = order.lock().unwrap().clone();
    for n in 1..=order.len() {
        let first = order[..n].iter().filter(|w| **w == 0).count() as i64;
        assert!((2 * first - n as i64).abs() <= 2, "{order:?}");
    }
    assert_eq!(limit.throttled_bytes(), 7 * MIB);
    assert!(limit.waited() > Duration::from_secs_f64(expected));
}

#[tokio::test]
async fn a_stream_keeps_its_place_over_keep_alives_and_gives_back_its_turn_when_dropped() {
    let limit = Arc::new(UploadLimit::new(Some(10_000_000)));
    let turn = Duration::from_secs_f64(MIB as f64 / 10e6);
    let mut first = limit.stream();
    assert_eq!(
        first.clear(MIB, far()).await.unwrap(),
        Some(MIB),
        "the burst"
    );
    // The next frame is ~105 ms away: a keep-alive first, then the frame.
    let t = Instant::now();
    let soon = t + Duration::from_millis(20);
    assert_eq!(first.clear(MIB, soon).await.unwrap(), None);
    assert!(t.elapsed() < turn / 2);
    // Fewer bytes ready than granted: only those go.
    assert_eq!(first.clear(MIB / 2, far()).await.unwrap(), Some(MIB / 2));
    assert!(t.elapsed() >= turn / 2 - Duration::from_millis(5));
    assert!(t.elapsed() < turn + Duration::from_millis(60));
    // A stream dropped while it waits gives its turn back: the one behind
    // it goes when it would have.
    let mut quitter = limit.stream();
    let t = Instant::now();
    let soon = t + Duration::from_millis(10);
    assert_eq!(quitter.clear(4 * MIB, soon).await.unwrap(), None);
    drop(quitter);
    let mut next = limit.stream();
    assert_eq!(next.clear(MIB, far()).await.unwrap(), Some(MIB));
    assert!(t.elapsed() < turn * 2, "{:?}", t.elapsed());
    // Once the node stops, a stream ends at its next segment.
    limit.close();
    let err = next.clear(1, far()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

#[test]
fn claims_of_idle_upload_are_believed_up_to_100_gbit_per_second() {
    assert_eq!(believed_idle_upload(1_000_000), 1_000_000);
    assert_eq!(believed_idle_upload(MAX_IDLE_UPLOAD), MAX_IDLE_UPLOAD);
    assert_eq!(believed_idle_upload(u64::MAX), MAX_IDLE_UPLOAD);
    assert_eq!(MAX_IDLE_UPLOAD * 8, 100_000_000_000);
}

/// Object version `b/<key>` of `size` bytes.
fn version(key: &str, size: u64) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: key.into(),
        etag: "\"e\"".into(),
        size,
    }
}

fn mocks(n: usize) -> Vec<Arc<dyn ObjectClient>> {
    let mock: Arc<dyn ObjectClient> = Arc::new(MockObjectClient::new("b"));
    vec![mock; n]
}

/// Nodes 1 and 2 each pull every chunk of a 20 MB object from node 0,
/// capped at `cap`: how long each took, and what node 0 sent to each of
/// them one second in (or at the end, if sooner).
async fn two_pullers(t: PeerTransport, cap: Option<u64>) -> (Vec<Duration>, [u64; 2], Swarm) {
    const CHUNK_SIZE: u64 = 4 * MIB;
    let size = 20_000_000;
    let nodes = cluster_with(mocks(3), &[SECRET; 3], false, t, |i, c| {
        c.chunk_size = CHUNK_SIZE;
        c.upload_capacity = cap.filter(|_| i == 0);
    })
    .await;
    wait_alive(&nodes, 3).await;
    let v = version("k", size);
    let d = pseudo_random_bytes(size as usize, 21);
    let _held = hold(&nodes[0], &v, &d, CHUNK_SIZE);
    let server = nodes[0].peers().self_id().to_string();
    let start = Instant::now();
    let pullers = nodes[1..].iter().map(|n| {
        let (v, d, server) = (v.clone(), &d, &server);
        async move {
            let got = VecTarget::with_len(size as usize);
            let chunks = (0..size.div_ceil(CHUNK_SIZE)).map(|index| {
                let id = ChunkId {
                    object: v.clone(),
                    index,
                };
                let got = &got;
                async move { n.swarm_fetcher().pull_chunk(server, &id, got).await }
            });
            for r in futures::future::join_all(chunks).await {
                r.unwrap();
            }
            assert!(got.contents() == *d, "the bytes arrived exactly");
            start.elapsed()
        }
    });
    let sent_to = |i: usize| {
        let id = nodes[i].peers().self_id();
        let p = nodes[0].peers().peer(id).unwrap();
        p.bytes_sent.load(Ordering::Relaxed)
    };
    let (took, midway) = {
        let pulls = futures::future::join_all(pullers);
        tokio::pin!(pulls);
        tokio::select! {
            took = &mut pulls => (took, [sent_to(1), sent_to(2)]),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let midway = [sent_to(1), sent_to(2)];
                (pulls.await, midway)
            }
        }
    };
    assert_eq!(sent_to(1), size);
    assert_eq!(sent_to(2), size);
    assert_eq!(nodes[0].server().upload_meter().total(), 2 * size);
    let mut nodes = nodes;
    (took, midway, nodes.swap_remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capped_node_serves_two_pullers_at_the_cap_taking_turns() {
    for t in PeerTransport::ALL {
        capped_pulls(t).await;
    }
}

async fn capped_pulls(t: PeerTransport) {
    let cap = 20_000_000;
    let (took, midway, server) = two_pullers(t, Some(cap)).await;
    // 40 MB at 20 MB/s, one frame free: about 2 s, for both pullers.
    for took in &took {
        let s = took.as_secs_f64();
        assert!((1.6..=2.4).contains(&s), "{took:?} ({t:?})");
    }
    // Both progressed all along: a second in, each had about half.
    let [a, b] = midway;
    assert!(a.min(b) * 10 >= (a + b) * 3, "{midway:?} ({t:?})");
    let limit = server.upload_limit();
    assert!(limit.throttled_bytes() > 30_000_000, "{t:?}");
    assert!(limit.waited() > Duration::from_secs(1));
    let status = limit.status_json();
    assert_eq!(status["limit_bytes_per_sec"], cap);
    assert_eq!(status["streams_in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_cap_the_same_pulls_are_not_delayed() {
    for t in PeerTransport::ALL {
        let (took, _, server) = two_pullers(t, None).await;
        for took in took {
            assert!(took < Duration::from_secs(1), "{took:?} ({t:?})");
        }
        let limit = server.upload_limit();
        assert_eq!(limit.throttled_bytes(), 0);
        assert!(limit.status_json()["limit_bytes_per_sec"].is_null());
    }
}

/// Node 2 holds the object, claims far more idle upload than any link has
/// (2^63 bytes/s), and sends nothing: its streams only keep alive. Node 0
/// holds the object too and reports 100 Gbit/s. Node 1 loads the object:
/// the claim is cut to 100 Gbit/s, so node 0 still gets picks, and every
/// chunk picked from node 2 goes elsewhere within the puller's patience.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_claiming_everything_that_stalls_does_not_capture_a_load() {
    let size = 16 * CHUNK;
    let key = "model/shard-1.safetensors";
    let mock = Arc::new(MockObjectClient::new("b"));
    let d = pseudo_random_bytes(size as usize, 22);
    mock.put_object(key, d.clone());
    let meta = mock.head(key).await.unwrap();
    let peer_wait = Duration::from_secs(1);
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
    let nodes = cluster_with(
        clients,
        &[SECRET; 3],
        true,
        PeerTransport::Grpc,
        |i, c| match i {
            0 => c.upload_capacity = Some(MAX_IDLE_UPLOAD),
            1 => {
                c.pull_concurrency = 16;
                c.peer_wait = peer_wait;
            }
            _ => c.upload_capacity = Some(u64::MAX >> 1),
        },
    )
    .await;
    wait_alive(&nodes, 3).await;
    let v = version_of(&meta);
    let _h0 = hold(&nodes[0], &v, &d, CHUNK);
    let _h2 = hold(&nodes[2], &v, &d, CHUNK);
    nodes[2].upload_limit().stall();
    let (honest, liar) = (nodes[0].peers().self_id(), nodes[2].peers().self_id());
    let target = Arc::new(VecTarget::with_len(size as usize));
    let t = Instant::now();
    let o = nodes[1]
        .fetcher()
        .fetch(
            &meta,
            target.clone() as Arc<dyn ChunkTarget>,
            Arc::default(),
        )
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(target.contents() == d);
    assert!(o.fetched.crc64_verified);
    assert!(!o.by_peer.contains_key(liar), "{o:?}");
    assert!(o.by_peer.get(honest).is_some_and(|b| *b > 0), "{o:?}");
    assert_eq!(o.bytes_peer + o.bytes_store, size);
    // Chunks picked from the liar waited at most the patience (and the
    // keep-alive that tells it), all at once.
    let patience = peer_wait + RESPONSE_MARGIN;
    assert!(
        took < patience + crate::swarm::chunk_server::KEEPALIVE_EVERY + Duration::from_secs(2),
        "{took:?}"
    );
    let per_chunk = chunk_range(size, CHUNK, 0);
    assert_eq!(o.bytes_store % (per_chunk.end - per_chunk.start), 0);
    let status = nodes[1].swarm_fetcher().status().unwrap();
    assert_eq!(
        status["peer_idle_upload_bytes_per_sec"][liar], MAX_IDLE_UPLOAD,
        "{status}"
    );
}

//! A node leaving in the middle of pulls, in a cluster of three: the pulls
//! in flight finish from it, new ones go elsewhere, and it stops within its
//! grace even though one pull would outlast it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ossc_core::object_client::mock::{pseudo_random_bytes, MockObjectClient};
use ossc_core::object_client::{ObjectClient, ObjectMeta};
use tokio::time::Instant;

use crate::object_source::{ChunkTarget, VecTarget};
use crate::swarm::chunk_book::{ChunkId, ObjectVersion};
use crate::swarm::ring;
use crate::swarm::test_cluster::{cluster_with, hold, version_of, wait_alive, SECRET};
use crate::swarm::{MembershipMode, PeerTransport};

const MIB: u64 = 1 << 20;
/// One chunk of the objects below is all of them.
const CHUNK_SIZE: u64 = 16 * MIB;

/// Stores `size` pseudo-random bytes (from `seed`) under fresh keys until
/// the object's first chunk is one `wanted` accepts.
async fn object_where(
    mock: &MockObjectClient,
    size: u64,
    seed: u64,
    wanted: impl Fn(&ChunkId) -> bool,
) -> (ObjectMeta, Vec<u8>) {
    let d = pseudo_random_bytes(size as usize, seed);
    let mut i = 0;
    loop {
        let key = format!("model/{seed}-{i}.safetensors");
        mock.put_object(key.clone(), d.clone());
        let meta = mock.head(&key).await.unwrap();
        let id = ChunkId {
            object: version_of(&meta),
            index: 0,
        };
        if wanted(&id) {
            return (meta, d);
        }
        i += 1;
    }
}

/// Waits (at most 5 s) until `done`.
async fn until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_node_finishes_pulls_in_flight_takes_no_new_ones_and_stops_within_its_grace() {
    for t in PeerTransport::ALL {
        for m in [MembershipMode::Gossip, MembershipMode::Heartbeat] {
            leave_mid_pull(t, m).await;
        }
    }
}

/// Nodes A, B, C; C sends at most 4 MB/s and leaves with a 2 s grace while
/// A pulls a 16 MiB chunk from it (4 s at that rate) and B loads a 2 MiB
/// object whose only source is C.
async fn leave_mid_pull(t: PeerTransport, m: MembershipMode) {
    let mock = Arc::new(MockObjectClient::new("b"));
    let clients: Vec<Arc<dyn ObjectClient>> = vec![mock.clone(), mock.clone(), mock.clone()];
    let grace = Duration::from_secs(2);
    let mut nodes = cluster_with(clients, &[SECRET; 3], true, t, |i, c| {
        c.chunk_size = CHUNK_SIZE;
        c.leave_grace = grace;
        c.membership.mode = m;
        if i == 2 {
            c.upload_capacity = Some(4_000_000);
        }
    })
    .await;
    wait_alive(&nodes, 3).await;
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n.peers().self_id().to_string())
        .collect();
    let (b, c) = (ids[1].as_str(), ids[2].as_str());
    let all = || ids.iter().map(String::as_str);
    // B's first object: C owns it, so C is its only source.
    let (meta1, d1) = object_where(&mock, 2 * MIB, 1, |id| ring::owner(all(), id) == Some(c)).await;
    // B's second object: C owns it while C is in, B once C has left.
    let (meta2, d2) = object_where(&mock, 2 * MIB, 2, |id| {
        ring::owner(all(), id) == Some(c) && ring::owner(all().take(2), id) == Some(b)
    })
    .await;
    let big = ObjectVersion {
        bucket: "b".into(),
        key: "big".into(),
        etag: "\"e\"".into(),
        size: CHUNK_SIZE,
    };
    let d_big = pseudo_random_bytes(CHUNK_SIZE as usize, 3);
    let _held = [
        hold(&nodes[2], &version_of(&meta1), &d1, CHUNK_SIZE),
        hold(&nodes[2], &version_of(&meta2), &d2, CHUNK_SIZE),
        hold(&nodes[2], &big, &d_big, CHUNK_SIZE),
    ];
    mock.reset_stats();
    let node_c = nodes.pop().unwrap();
    let (c_peers, c_limit) = (node_c.peers().clone(), node_c.upload_limit().clone());

    let a_pull = {
        let (fetcher, c) = (nodes[0].swarm_fetcher().clone(), c.to_string());
        let id = ChunkId {
            object: big,
            index: 0,
        };
        tokio::spawn(async move {
            let got = VecTarget::with_len(CHUNK_SIZE as usize);
            fetcher.pull_chunk(&c, &id, &got).await
        })
    };
    let b_load = {
        let (fetcher, meta) = (nodes[1].fetcher(), meta1.clone());
        tokio::spawn(async move {
            let got = Arc::new(VecTarget::with_len(meta.size as usize));
            let target: Arc<dyn ChunkTarget> = got.clone();
            let outcome = fetcher.fetch(&meta, target, Arc::default()).await;
            (outcome, got.contents())
        })
    };
    until(|| c_limit.in_flight() == 2, "both pulls reach C").await;
    let started = Instant::now();
    let leaving = tokio::spawn(async move {
        node_c.leave().await;
        started.elapsed()
    });

    // B hears it at once: C owns nothing and takes no new pull from B, but
    // stays alive for the pull in flight.
    let b_peers = nodes[1].peers().clone();
    until(
        || !b_peers.alive_ids().iter().any(|p| p == c),
        "B hears C leave",
    )
    .await;
    assert!(b_peers.is_alive(c));
    assert!(b_peers.peer(c).unwrap().is_leaving());
    let status = b_peers.status_json();
    let seen = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == c);
    assert_eq!(seen.unwrap()["leaving"], true, "{status}");

    // B's load completed from C within the grace: not a byte from the store.
    let (outcome, got) = b_load.await.unwrap();
    let o = outcome.unwrap();
    assert!(got == d1, "{t:?} {m:?}");
    assert_eq!(o.bytes_store, 0, "{o:?}");
    assert_eq!(o.by_peer.get(c), Some(&meta1.size), "{o:?}");
    assert_eq!(mock.bytes_served(), 0);
    assert!(started.elapsed() < grace, "{:?}", started.elapsed());

    // A new pull is refused as "not held", and B's next load leaves C out.
    let again = ChunkId {
        object: version_of(&meta1),
        index: 0,
    };
    let scratch = VecTarget::with_len(meta1.size as usize);
    let err = nodes[1]
        .swarm_fetcher()
        .pull_chunk(c, &again, &scratch)
        .await
        .unwrap_err();
    assert!(err.contains("does not hold"), "{err}");
    let got2 = Arc::new(VecTarget::with_len(meta2.size as usize));
    let target: Arc<dyn ChunkTarget> = got2.clone();
    let o2 = nodes[1]
        .fetcher()
        .fetch(&meta2, target, Arc::default())
        .await
        .unwrap();
    assert!(got2.contents() == d2);
    assert!(!o2.by_peer.contains_key(c), "{o2:?}");
    assert_eq!(o2.bytes_store, meta2.size);
    let sent_to_b = c_peers.peer(b).unwrap().bytes_sent.load(Ordering::Relaxed);
    assert_eq!(sent_to_b, meta1.size, "C sent B nothing after it left");

    // A's pull outlasts the grace: C stops on time and cuts it.
    let took = leaving.await.unwrap();
    assert!(took >= grace - Duration::from_millis(100), "{took:?}");
    assert!(took < grace + Duration::from_secs(1), "{took:?}");
    assert!(a_pull.await.unwrap().is_err(), "{t:?} {m:?}");
    until(|| c_limit.in_flight() == 0, "C's streams end").await;
}

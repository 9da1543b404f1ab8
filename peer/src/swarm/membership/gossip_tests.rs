//! Gossip clusters of in-process nodes on loopback UDP.

use std::future::Future;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::*;
use crate::swarm::auth::{ClusterSecret, TEST_SECRET};
use crate::swarm::membership::datagram::MAX_PAYLOAD;
use crate::swarm::membership::{MembershipMode, MAX_MEMBERS};
use crate::swarm::peer_set::MembershipTiming;

fn timing(period_ms: u64) -> MembershipTiming {
    MembershipTiming {
        heartbeat: Duration::from_millis(period_ms),
        dead_after: Duration::from_millis(4 * period_ms),
        hello_timeout: Duration::from_millis(3 * period_ms),
        startup_wait: Duration::from_millis(500),
    }
}

/// A UDP socket on 127.0.0.1 and the peer id whose port + 1 it is.
async fn gossip_socket() -> (UdpSocket, SocketAddr) {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = s.local_addr().unwrap().port();
        if port > 1 {
            return (s, SocketAddr::from(([127, 0, 0, 1], port - 1)));
        }
    }
}

struct Node {
    id: SocketAddr,
    peers: Arc<PeerSet>,
    gossip: GossipMembership,
}

fn start(socket: UdpSocket, id: SocketAddr, seeds: &[SocketAddr], t: &MembershipTiming) -> Node {
    let entries = seeds.iter().map(|s| s.to_string()).collect();
    let peers = Arc::new(PeerSet::new(
        id,
        seeds,
        entries,
        ClusterSecret::new(TEST_SECRET).unwrap(),
        *t,
        None,
        MembershipMode::Gossip,
    ));
    let gossip = GossipMembership::start(peers.clone(), socket, 1, GossipTiming::from(t)).unwrap();
    Node { id, peers, gossip }
}

/// `n` nodes whose peer lists name only the first `seeds` of them.
async fn cluster(n: usize, seeds: usize, t: &MembershipTiming) -> Vec<Node> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(gossip_socket().await);
    }
    let seed_ids: Vec<SocketAddr> = sockets.iter().take(seeds).map(|(_, id)| *id).collect();
    sockets
        .into_iter()
        .map(|(s, id)| start(s, id, &seed_ids, t))
        .collect()
}

fn converged(nodes: &[Node]) -> bool {
    nodes
        .iter()
        .all(|n| n.peers.alive_ids().len() == nodes.len())
}

/// Waits until every node sees every node alive; returns how long it took.
async fn converge(nodes: &[Node], limit: Duration) -> Duration {
    let what = format!("{} nodes converge", nodes.len());
    within(limit, &what, || async { converged(nodes) }).await
}

/// Polls `done` every 10 ms; returns how long it took, failing after `limit`.
async fn within<F: Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn sent(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|n| n.gossip.counters().sent.load(Ordering::Relaxed))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_and_members_found_by_gossip_become_peers() {
    let t = timing(100);
    // Only node 0 is listed: nodes 1 and 2 find each other through it.
    let nodes = cluster(3, 1, &t).await;
    let took = converge(&nodes, Duration::from_secs(5)).await;
    eprintln!("3 nodes converged in {took:?}");
    let peer = nodes[1].peers.peer(&nodes[2].id.to_string()).unwrap();
    assert_eq!(peer.addr, nodes[2].id);
    assert!(nodes[1].peers.is_alive(&nodes[2].id.to_string()));
    let status = nodes[1].peers.status_json();
    assert_eq!(status["membership"], "gossip");
    assert!(
        status["gossip"]["accepted"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_converge_in_bounded_time() {
    let t = timing(200);
    let nodes = cluster(50, 2, &t).await;
    let took = converge(&nodes, Duration::from_secs(20)).await;
    eprintln!("50 nodes converged in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_per_period_grow_linearly_with_the_cluster() {
    let n = 20;
    let t = timing(100);
    let nodes = cluster(n, 1, &t).await;
    converge(&nodes, Duration::from_secs(10)).await;
    // Let the join updates finish spreading, then count.
    tokio::time::sleep(t.heartbeat * 30).await;
    let before = sent(&nodes);
    let periods = 20;
    tokio::time::sleep(t.heartbeat * periods).await;
    let per_period = (sent(&nodes) - before) as f64 / f64::from(periods);
    eprintln!(
        "{per_period:.1} datagrams per period for {n} nodes (heartbeats: {})",
        n * (n - 1)
    );
    assert!(per_period <= 4.0 * n as f64, "{per_period} per period");
    assert!(converged(&nodes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_declared_dead_within_the_detection_bound() {
    let t = timing(100);
    let nodes = cluster(4, 1, &t).await;
    converge(&nodes, Duration::from_secs(5)).await;
    let gone = nodes[3].id.to_string();
    nodes[3].gossip.stop();
    let took = within(Duration::from_secs(5), "stopped node dead", || async {
        nodes[..3].iter().all(|n| !n.peers.is_alive(&gone))
    })
    .await;
    eprintln!("a stopped node was dead for everyone after {took:?}");
    // Probed within about a period, suspected a period later: the same
    // bound as heartbeats (dead_after) plus a period of slack.
    assert!(took <= t.dead_after + t.heartbeat * 3, "{took:?}");
    within(Duration::from_secs(5), "stopped node down", || async {
        nodes[..3].iter().all(|n| {
            n.peers.status_json()["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == gone.as_str() && p["state"] == "down")
        })
    })
    .await;
    assert!(nodes[..3].iter().all(|n| n.peers.alive_ids().len() == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_at_once() {
    // A 1 s period: detecting a silent node would take seconds.
    let t = timing(1000);
    let mut nodes = cluster(4, 1, &t).await;
    converge(&nodes, Duration::from_secs(10)).await;
    let leaver = nodes.pop().unwrap();
    let gone = leaver.id.to_string();
    leaver.gossip.leave().await;
    let took = within(Duration::from_secs(5), "leave seen", || async {
        nodes.iter().all(|n| !n.peers.is_alive(&gone))
    })
    .await;
    eprintln!("a leave was seen by everyone after {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_the_same_id_rejoins() {
    let t = timing(100);
    let mut nodes = cluster(3, 1, &t).await;
    converge(&nodes, Duration::from_secs(5)).await;
    let old = nodes.pop().unwrap();
    let (id, gossip_addr) = (old.id, old.gossip.local_addr());
    drop(old);
    let gone = id.to_string();
    within(Duration::from_secs(5), "stopped node dead", || async {
        nodes.iter().all(|n| !n.peers.is_alive(&gone))
    })
    .await;
    // Same peer id, same gossip port, a fresh process state.
    let socket = loop {
        match UdpSocket::bind(gossip_addr).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    nodes.push(start(socket, id, &[nodes[0].id], &t));
    let took = converge(&nodes, Duration::from_secs(5)).await;
    eprintln!("a restarted node was back for everyone after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_oversized_replayed_and_stale_datagrams_are_dropped_unparsed() {
    let t = timing(100);
    // A lone node: nothing else sends to it.
    let (socket, id) = gossip_socket().await;
    let node = start(socket, id, &[], &t);
    let to = node.gossip.local_addr();
    let c = node.gossip.counters().clone();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let key = DatagramKey::new(&ClusterSecret::new(TEST_SECRET).unwrap());
    let wrong = DatagramKey::new(&ClusterSecret::new(b"Zr4Wq8Ne2Ty6Ui0Op3As7Df1").unwrap());
    let now = now_secs();
    let valid = key.seal(b"not swim", now, [1; NONCE_BYTES]).unwrap();
    let send = |d: Vec<u8>| {
        let attacker = &attacker;
        async move { attacker.send_to(&d, to).await.unwrap() }
    };
    send(wrong.seal(b"forged", now, [2; NONCE_BYTES]).unwrap()).await;
    send(vec![0x01; MAX_DATAGRAM + 1]).await;
    send(vec![0x01; 9000]).await;
    send(key.seal(b"stale", now - 31, [3; NONCE_BYTES]).unwrap()).await;
    send(key.seal(b"future", now + 31, [4; NONCE_BYTES]).unwrap()).await;
    send(valid.clone()).await;
    send(valid).await;
    send(vec![0x01; 10]).await;
    within(Duration::from_secs(5), "all 8 received", || async {
        c.received.load(Ordering::Relaxed) == 8
    })
    .await;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(get(&c.bad_tag), 1);
    assert_eq!(get(&c.oversized), 2);
    assert_eq!(get(&c.stale), 2);
    assert_eq!(get(&c.replayed), 1);
    assert_eq!(get(&c.truncated), 1);
    assert_eq!(c.dropped(), 7);
    // Only the one authentic, fresh, first-seen datagram reached SWIM
    // (which could not use it).
    assert_eq!(get(&c.accepted), 1);
    assert_eq!(get(&c.unusable), 1);
    assert_eq!(node.peers.alive_ids().len(), 1);
}

#[tokio::test]
async fn random_datagrams_never_panic_the_handler() {
    let (socket, id) = gossip_socket().await;
    let peers = Arc::new(PeerSet::new(
        id,
        &[],
        Vec::new(),
        ClusterSecret::new(TEST_SECRET).unwrap(),
        timing(100),
        None,
        MembershipMode::Gossip,
    ));
    let mut handler = GossipLoop::new(peers, socket, 1, GossipTiming::from(&timing(100))).unwrap();
    let key = handler.key.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for round in 0..20_000u32 {
        let len = rng.gen_range(0..=MAX_DATAGRAM + 10);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if round % 2 == 1 {
            // Authentic but random: reaches the SWIM decoder.
            bytes.truncate(MAX_PAYLOAD);
            bytes = key.seal(&bytes, now_secs(), rng.gen()).unwrap();
        }
        handler.on_datagram(&bytes, from);
    }
    let c = &handler.counters;
    assert_eq!(c.received.load(Ordering::Relaxed), 20_000);
    assert_eq!(c.accepted.load(Ordering::Relaxed), 10_000);
    assert!(handler.swim.table_len() <= MAX_MEMBERS);
}

#[test]
fn a_thousand_members_cost_a_few_megabytes_at_most() {
    use crate::swarm::membership::alloc_meter::held_bytes;
    use crate::swarm::membership::swim::SwimNode;
    // One thread, so the meter sees every allocation (tasks included).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = timing(1000);
        let before = held_bytes();
        let me: SocketAddr = "10.0.0.1:7468".parse().unwrap();
        let peers = PeerSet::new(
            me,
            &[],
            Vec::new(),
            ClusterSecret::new(TEST_SECRET).unwrap(),
            t,
            None,
            MembershipMode::Gossip,
        );
        let mut swim = SwimNode::new(MemberId::starting_now(me, 7469), (&t).into(), 1);
        let members: Vec<foca::Member<MemberId>> = (1..=1000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a01_0000 + i);
                foca::Member::alive(MemberId::starting_now((ip, 7468).into(), 7469))
            })
            .collect();
        swim.apply(members, Instant::now());
        let swim_bytes = held_bytes() - before;
        peers.apply_gossip_view(&swim.members());
        let peer_bytes = held_bytes() - before - swim_bytes;
        // The replay cache at its cap, whatever the traffic.
        let nonces = NonceCache::with_capacity(REPLAY_CAPACITY);
        let now = now_secs();
        for i in 0..REPLAY_CAPACITY as u128 {
            nonces.remember(i.to_le_bytes(), now, now).unwrap();
        }
        let held = held_bytes() - before;
        eprintln!(
            "1,000 members: {held} bytes (SWIM {swim_bytes}, peers {peer_bytes}, full replay cache {})",
            held - swim_bytes - peer_bytes
        );
        assert_eq!(peers.alive_ids().len(), 1001);
        assert!(held < 4 << 20, "{held} bytes");
        drop((peers, swim, nonces));
    });
}

//! Node agents with the peer layer: three `run_agent`s on 127.0.0.1 share one
//! in-memory store; each prefetches the model, splitting the large objects'
//! chunks, and serves exact bytes over its Unix socket; STATUS shows the
//! peers and bytes by source.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{data, free_port, read_fd, request_blocking, status_once_listening};
use ossc_core::fetch::FetchConfig;
use ossc_core::object_client::mock::MockObjectClient;
use ossc_peer::agent::{run_agent, AgentOptions};
use ossc_peer::swarm::{ClusterSecret, MembershipTiming, SwarmConfig};
use tokio::sync::watch;

const PREFIX: &str = "models/m/";
const CHUNK: u64 = 64 << 10;
const NODES: usize = 3;

/// The peer layer of the node listening on `port`, among `peers`.
fn peer_layer(peers: &[String], port: u16) -> SwarmConfig {
    SwarmConfig {
        peers: peers.to_vec(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        advertise: None,
        secret: ClusterSecret::new(b"Hn4Qe7Rw2Ty5Ui8Op1As3Df6Gh9Jk0Lz").unwrap(),
        chunk_size: CHUNK,
        pull_concurrency: 4,
        peer_wait: Duration::from_secs(5),
        timing: MembershipTiming {
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(500),
            hello_timeout: Duration::from_millis(300),
            startup_wait: Duration::from_secs(2),
        },
        tls: true,
        corrupt_served_chunks: false,
        limits: Default::default(),
        transport: Default::default(),
        upload_capacity: None,
        leave_grace: Duration::from_secs(2),
        require_verified: false,
        membership: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_split_the_model_and_serve_exact_bytes() {
    let mock = Arc::new(MockObjectClient::new("bucket"));
    let large: Vec<(String, Vec<u8>)> = vec![
        (
            "model-00001-of-00002.safetensors".into(),
            data(1, 40 * CHUNK as usize + 5),
        ),
        (
            "model-00002-of-00002.safetensors".into(),
            data(2, 30 * CHUNK as usize),
        ),
    ];
    for (rel, bytes) in &large {
        mock.put_object(format!("{PREFIX}{rel}"), bytes.clone());
    }
    mock.put_object(format!("{PREFIX}config.json"), br#"{"a":1}"#.to_vec());
    let large_total: u64 = large.iter().map(|(_, b)| b.len() as u64).sum();

    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let mut sockets: Vec<PathBuf> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let socket = dir.path().join(format!("n{i}/agent.sock"));
        let mut opts = AgentOptions::new(
            &socket,
            dir.path().join(format!("n{i}/model")),
            PREFIX,
            mock.clone(),
        );
        opts.fetch = FetchConfig {
            part_size: CHUNK / 2,
            max_in_flight: 8,
            ..FetchConfig::default()
        };
        opts.small_file_bytes = 4096;
        opts.memory_limit_bytes = 64 << 20;
        opts.idle_exit = false;
        opts.shutdown = Some(stop_rx.clone());
        opts.fetcher = Some(Box::new(peer_layer(&peers, *port)));
        sockets.push(socket);
        tasks.push(tokio::spawn(run_agent(opts)));
    }

    // Wait until every agent holds every large file.
    let deadline = Instant::now() + Duration::from_secs(20);
    let statuses = loop {
        let statuses: Vec<serde_json::Value> = {
            let sockets = sockets.clone();
            tokio::task::spawn_blocking(move || {
                sockets
                    .iter()
                    .filter_map(|s| status_once_listening(s))
                    .collect()
            })
            .await
            .unwrap()
        };
        let ready = statuses.len() == NODES
            && statuses.iter().all(|st| {
                let files = st["files"].as_array();
                files.is_some_and(|f| f.len() == 2 && f.iter().all(|f| f["state"] == "ready"))
            });
        if ready {
            break statuses;
        }
        assert!(Instant::now() < deadline, "not ready: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut peer_bytes = 0;
    for st in &statuses {
        let by = &st["bytes_by_source"];
        peer_bytes += by["peer"].as_u64().unwrap();
        let p = &st["peers"];
        assert_eq!(p["alive"].as_array().unwrap().len(), NODES, "{p}");
        assert_eq!(p["peers"].as_array().unwrap().len(), NODES - 1, "{p}");
    }
    assert!(
        peer_bytes > large_total,
        "peers carried most bytes: {peer_bytes}"
    );
    let served = mock.bytes_served();
    let small = 7 * NODES as u64; // config.json on every node
    assert!(
        (served - small) * 10 <= large_total * 11,
        "store served {served} for {large_total} of large objects"
    );

    // Every agent hands out exact bytes.
    for socket in &sockets {
        for (rel, bytes) in &large {
            let socket = socket.clone();
            let line = format!("OPEN {} {rel}", std::process::id());
            let (resp, fd) = tokio::task::spawn_blocking(move || request_blocking(&socket, &line))
                .await
                .unwrap();
            assert!(resp.starts_with("FD "), "{resp}");
            let got = read_fd(&fd.unwrap());
            assert_eq!(&got, bytes, "{rel}");
        }
    }

    // A second agent for a socket that is already served exits at once and
    // starts nothing: its peer layer (on the same port) never binds.
    let mut second = AgentOptions::new(
        &sockets[0],
        dir.path().join("n0/model"),
        PREFIX,
        mock.clone(),
    );
    second.fetcher = Some(Box::new(peer_layer(&peers, ports[0])));
    tokio::time::timeout(Duration::from_secs(10), run_agent(second))
        .await
        .unwrap()
        .unwrap();

    stop.send_replace(true);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    // An agent's exit stops its peer layer: every peer port is free again.
    for port in ports {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "peer port {port} still bound");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn peers_without_a_secret_refuse_to_start() {
    let file = ossc_core::config::PeerConfig::default();
    let env =
        |k: &str| (k == "OSS_CONNECTOR_PEERS").then(|| "10.0.0.1:7468,10.0.0.2:7468".to_string());
    let err = SwarmConfig::resolve(&env, &file).unwrap_err().to_string();
    assert!(err.contains("OSS_CONNECTOR_CLUSTER_SECRET"), "{err}");
    // No peers: no peer layer at all (today's behaviour).
    assert!(SwarmConfig::resolve(&|_| None, &file).unwrap().is_none());
    // Env wins over the file; defaults are documented values.
    let env = |k: &str| match k {
        "OSS_CONNECTOR_PEERS" => Some(" a:1 , b:2 ".to_string()),
        "OSS_CONNECTOR_CLUSTER_SECRET" => Some("Sx5Dc8Fv1Gb4Hn7Jm0Kq3Lw6Ze9Ra2Ty".to_string()),
        _ => None,
    };
    let file = ossc_core::config::PeerConfig {
        peers: vec!["c:3".into()],
        ..Default::default()
    };
    let c = SwarmConfig::resolve(&env, &file).unwrap().unwrap();
    assert_eq!(c.peers, ["a:1", "b:2"]);
    assert_eq!(c.listen, "0.0.0.0:7468".parse().unwrap());
    assert_eq!(c.chunk_size, 16 << 20);
    assert!(!c.corrupt_served_chunks);
    assert!(c.tls, "TLS is on by default");
    // The secret file form.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "Fk2Lp5Mq8Nr1Os4Pt7Qu0Rv3Sw6Tx9Uy\n").unwrap();
    let file = ossc_core::config::PeerConfig {
        peers: vec!["c:3".into()],
        secret_file: Some(path),
        listen: Some("127.0.0.1:9000".into()),
        ..Default::default()
    };
    let c = SwarmConfig::resolve(&|_| None, &file).unwrap().unwrap();
    assert_eq!(c.peers, ["c:3"]);
    assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("Fk2Lp5Mq8"),
        "secret never printed: {shown}"
    );
}

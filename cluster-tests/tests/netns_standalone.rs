//! Standalone peer mode. `ossc peer` runs on every
//! node as a long-lived daemon (as a DaemonSet would run it), prefetching the
//! model and splitting it with its peers; applications attach to it with
//! `ENABLE_CONNECTOR=2` through its socket, with no store credentials of
//! their own.
//!
//! Needs root, `ip netns` and `tc` (see `ossc_cluster_tests::netns`): without
//! them it prints a loud skip message and passes, except when env `CI` is set.
//!
//! Design decision: the consumers start the moment the daemons' sockets
//! exist, so they attach while the daemons are still mirroring and
//! prefetching (checked through STATUS) and must wait for the data instead of
//! failing. A second round of consumers, after the first exited, must be
//! served entirely from the daemons' memory (`--expire-time-sec 0`): the
//! daemons neither exited nor dropped the model when their clients left. The
//! peer settings are passed as flags and the secret as a file, the way a
//! DaemonSet would pass them. (ENABLE_CONNECTOR=2 with no daemon at all is
//! also covered at the process level by `preload/tests/preload.rs`,
//! `missing_agent_gives_eio`.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ossc_cluster_tests::netns::{self, ClusterSpec, Rate};
use ossc_cluster_tests::note;
use ossc_cluster_tests::ossc_cluster::{
    self, Binaries, ConsumerOutcome, Model, PeerDaemon, RunningConsumer, CONSUMER_TIMEOUT,
    PEER_PORT,
};
use ossc_cluster_tests::testbed::{serial, Testbed};

const NODES: usize = 4;
/// Node links and store uplink: slow enough that prefetching takes seconds,
/// so the consumers really attach mid-prefetch.
const RATE: Rate = Rate::mbit(200);
const MODEL_MB: u64 = 128;
const MODEL_SHARDS: u32 = 4;
/// ~80 chunks for this model, so every daemon owns several.
const CHUNK_BYTES: u64 = 2 << 20;
/// Store egress with peers ≤ 1.1 × the model.
const PEERS_MAX_FACTOR: f64 = 1.1;
/// How long a consumer without a daemon may take to fail.
const NO_DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// The other user the second round of applications runs as.
const NOBODY: u32 = 65534;

/// The binaries under test, linked (or copied) into `work/bin` (mode 0755) for the applications
/// of another user: the checkout and its build directory may sit in a private directory (0700,
/// like `/root` or a `mktemp -d`) that user cannot traverse.
fn staged_for_other_users(bins: &Binaries, work: &Path) -> std::io::Result<Binaries> {
    let dir = work.join("bin");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let stage = |from: &Path, name: &str, mode: u32| -> std::io::Result<std::path::PathBuf> {
        let to = dir.join(name);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to)?;
        }
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
        Ok(to)
    };
    Ok(Binaries {
        ossc: stage(&bins.ossc, "ossc", 0o755)?,
        preload: stage(&bins.preload, "libossc_preload.so", 0o644)?,
    })
}

/// Large-file bytes the daemon holds in memory vs. the large files' total.
fn prefetched(status: &serde_json::Value, model: &Model) -> (u64, u64) {
    let small = status["catalog"]["small_bytes"].as_u64().unwrap_or(0);
    let resident = status["bytes_resident"].as_u64().unwrap_or(0);
    (resident, model.total_bytes.saturating_sub(small))
}

#[test]
fn peer_daemons_on_every_node_serve_attached_applications() {
    if !netns::available_or_skip("peer_daemons_on_every_node_serve_attached_applications") {
        return;
    }
    let _serial = serial();
    let spec = ClusterSpec::capped(NODES, RATE);
    let bed = Testbed::start(&spec, MODEL_MB, MODEL_SHARDS).expect("testbed");
    let (bins, model, cluster, store) = (&bed.bins, &bed.model, &bed.cluster, &bed.store);
    let work = bed.work.as_path();

    // The cluster secret lives in a file only root can read.
    let secret_file = work.join("cluster-secret");
    std::fs::write(
        &secret_file,
        format!("{}\n", ossc_cluster::new_cluster_secret()),
    )
    .expect("secret file");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let peers: Vec<String> = cluster.nodes().iter().map(ossc_cluster::peer_id).collect();
    let peers = peers.join(",");
    let listen = format!("0.0.0.0:{PEER_PORT}");
    let secret_arg = secret_file.to_string_lossy().into_owned();
    let config = serde_json::json!({"peer": {"chunkSizeBytes": CHUNK_BYTES}});
    // Applications of another user (a non-root application container that
    // mounts the daemon's directories) must be able to attach.
    let settings = ossc_cluster::DaemonSettings {
        env: vec![("OSS_CONNECTOR_SOCKET_MODE".into(), "0666".into())],
        args: [
            "--peers",
            peers.as_str(),
            "--listen",
            listen.as_str(),
            "--secret-file",
            secret_arg.as_str(),
            "--expire-time-sec",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        config,
    };

    store.reset_stats().expect("reset");
    let mut daemons: Vec<PeerDaemon> = cluster
        .nodes()
        .iter()
        .map(|n| {
            ossc_cluster::start_peer_daemon(n, bins, store, model, &work.join(&n.name), &settings)
                .unwrap_or_else(|e| panic!("{}: {e:#}", n.name))
        })
        .collect();

    // Applications attach at once, while the daemons are still prefetching.
    let first: Vec<RunningConsumer> = daemons
        .iter()
        .map(|d| ossc_cluster::start_attached_consumer(d.node(), bins, model, d.dir()))
        .collect::<anyhow::Result<_>>()
        .expect("attached consumers");
    let early = daemons
        .iter()
        .filter(|d| match d.status(bins) {
            Some(st) => {
                let (resident, large) = prefetched(&st, model);
                resident < large
            }
            None => true, // not even answering yet: certainly not done
        })
        .count();
    note!("{early} of {NODES} daemons were still prefetching when their application attached");
    assert!(
        early > 0,
        "every daemon had finished prefetching before the applications attached"
    );
    let first: Vec<ConsumerOutcome> = first
        .into_iter()
        .map(|c| c.expect_finished(bins, model, CONSUMER_TIMEOUT))
        .collect();
    let stats = store.stats().expect("stats");
    let factor = stats.bytes_served as f64 / model.total_bytes as f64;
    note!(
        "standalone: model {} bytes; store served {factor:.3} x model",
        model.total_bytes
    );
    for c in &first {
        note!(
            "  {}: {:.2} s; daemon bytes store {} / peer {}",
            c.node,
            c.wall.as_secs_f64(),
            c.bytes_from("store"),
            c.bytes_from("peer")
        );
        assert!(c.bytes_from("peer") > 0, "{}: no bytes from peers", c.node);
    }
    assert!(
        factor <= PEERS_MAX_FACTOR,
        "the store served {factor:.3} x the model (limit {PEERS_MAX_FACTOR})"
    );

    // The applications are gone; the daemons stay, with the model in memory.
    std::thread::sleep(Duration::from_secs(1));
    for d in daemons.iter_mut() {
        assert!(d.is_running(), "{}: ossc peer exited", d.node().name);
        let st = d.status(bins).expect("daemon status");
        let (resident, large) = prefetched(&st, model);
        assert_eq!(resident, large, "{}: model not resident", d.node().name);
    }
    store.reset_stats().expect("reset");
    // The second round runs as another user (nobody), as an application
    // container of a non-root user would: the socket's mode lets it in.
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755)).expect("chmod work dir");
    let other_bins = staged_for_other_users(bins, work).expect("binaries for the other user");
    for d in &daemons {
        let mode =
            std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(d.socket()).expect("socket"))
                & 0o777;
        assert_eq!(mode, 0o666, "{}: socket mode {mode:o}", d.node().name);
    }
    let second: Vec<ConsumerOutcome> = daemons
        .iter()
        .map(|d| {
            ossc_cluster::start_attached_consumer_as(
                d.node(),
                &other_bins,
                model,
                d.dir(),
                Some(NOBODY),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .expect("second consumers")
        .into_iter()
        .map(|c| c.expect_finished(bins, model, CONSUMER_TIMEOUT))
        .collect();
    let again = store.stats().expect("stats").bytes_served;
    // The audit log says who read: root first, then the other user.
    for d in &daemons {
        let audit = std::fs::read_to_string(d.dir().join("audit.log")).expect("audit log");
        let uids: std::collections::BTreeSet<u64> = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| r["uid"].as_u64())
            .collect();
        assert_eq!(
            uids,
            [0, u64::from(NOBODY)].into(),
            "{}: audit uids",
            d.node().name
        );
    }
    for c in &second {
        note!("  again {}: {:.2} s", c.node, c.wall.as_secs_f64());
    }
    assert_eq!(
        again, 0,
        "the second round fetched {again} bytes from the store"
    );

    // Without a daemon behind the socket, ENABLE_CONNECTOR=2 fails opens with
    // EIO instead of handing out the mirror's size-exact placeholders (zeros).
    let orphan = work.join("orphan");
    std::fs::create_dir_all(&orphan).expect("orphan dir");
    std::os::unix::fs::symlink(daemons[0].dir().join("model"), orphan.join("model"))
        .expect("symlink");
    let out = ossc_cluster::start_attached_consumer(cluster.node(0), bins, model, &orphan)
        .expect("orphan consumer");
    let err = match out.finish(bins, model, NO_DAEMON_TIMEOUT) {
        Ok(c) => panic!("a consumer without a daemon succeeded: {:?}", c.report),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("os error 5") || err.contains("Input/output error"),
        "expected EIO, got: {err}"
    );
}

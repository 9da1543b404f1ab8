//! ossc on a [`Cluster`]: a generated model served by `ossc serve-store` on
//! the store host, and on every node host a consumer (`ossc load-model
//! --manifest`, which maps every file and checks every file's and tensor's
//! SHA-256) running under `libossc_preload.so`, which starts that node's
//! agent. The store's egress comes from its `GET /_ossc/stats`, queried from
//! inside the store's namespace.
//!
//! Design decision: consumers get a cleared environment with exactly the
//! variables a user would set (plus `PATH`/`HOME`), so nothing from the test
//! runner's environment (a stray `OSS_*`, `LD_PRELOAD`) leaks into a node, and
//! each node has its own MODEL_DIR, agent socket, config and logs under the
//! test's work directory. Between phases every node's processes (the
//! self-daemonising agents included) are killed through the namespace, so a
//! phase never reuses the previous phase's cache.
//!
//! Rooms: this file (the binaries, the work directory, the model, the peer
//! settings every node shares), `store` (`ossc serve-store` and its
//! counters), `node` (one node's files, config and agent STATUS), `consumer`
//! (consumers under the hook, started or attached), `daemon` (`ossc peer`),
//! `phase` (one consumer per node at once, measured) and `staggered`
//! (daemons at the bucket root, consumers opening the model at seeded
//! offsets).

mod consumer;
mod daemon;
mod node;
mod phase;
mod staggered;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::netns::{process_alive, Cluster, Host};

pub use consumer::{
    start_attached_consumer, start_attached_consumer_as, start_attached_consumer_in,
    start_consumer_with_config, Consumer, ConsumerOutcome, RunningConsumer,
};
pub use daemon::{start_peer_daemon, Daemon, DaemonSettings, PeerDaemon, DAEMON_START_TIMEOUT};
pub use node::{
    bytes_pulled_from_relays, bytes_sent_to_peers, log_tail, merge_config, peer_counter,
    peer_entry, pulls_over_transport, query_agent_status, store_fallbacks, write_node_config,
    NodeProcess, STORE_FALLBACK_LOG,
};
pub use phase::{run_phase_with_config, PhaseOutcome};
pub use staggered::{run_staggered_phase, StartSchedule, JOIN_TIMEOUT};
pub use store::{store_env, Store};

/// Key id the store requires (requests are signed, as against real OSS).
pub const ACCESS_KEY_ID: &str = "cluster-ak";
/// Secret of [`ACCESS_KEY_ID`].
pub const ACCESS_KEY_SECRET: &str = "cluster-sk-secret";
/// Region the store signs for.
pub const REGION: &str = "cn-cluster";
/// Bucket (a subdirectory of the store root) holding the model.
pub const BUCKET: &str = "models";
/// Key prefix of the model inside [`BUCKET`].
pub const PREFIX: &str = "m1";
/// Port of `ossc serve-store` on the store host (the namespace is ours alone).
pub const STORE_PORT: u16 = 9000;
/// Port every agent's peer layer listens on (each node is its own host).
pub const PEER_PORT: u16 = 7468;
/// How long one phase's consumers may take in all.
pub const CONSUMER_TIMEOUT: Duration = Duration::from_secs(150);

/// The `ossc` binary and the preload library under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub ossc: PathBuf,
    pub preload: PathBuf,
}

impl Binaries {
    /// From env `OSSC_BIN` / `OSSC_PRELOAD_LIB`, else the profile directory of
    /// the running test executable (`target/<profile>/deps/..`).
    pub fn locate() -> Result<Binaries> {
        let exe = std::env::current_exe().context("locating the test executable")?;
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .context("test executable has no profile directory")?
            .to_path_buf();
        let pick = |var: &str, name: &str| -> Result<PathBuf> {
            let p = std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| profile.join(name));
            ensure!(
                p.is_file(),
                "{} not found (set {var}, or build it first: `cargo build --workspace`)",
                p.display()
            );
            Ok(p)
        };
        Ok(Binaries {
            ossc: pick("OSSC_BIN", "ossc")?,
            preload: pick("OSSC_PRELOAD_LIB", "libossc_preload.so")?,
        })
    }
}

/// Work directories are `<tmp>/ossc-netns-<pid>-XXXXXX`.
const WORK_DIR_PREFIX: &str = "ossc-netns-";

/// A fresh work directory (removed on drop) for one test; first removes the
/// work directories of test runs that died without cleaning up (they hold a
/// whole model each).
pub fn work_dir() -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(WORK_DIR_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !process_alive(pid) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    Ok(tempfile::Builder::new()
        .prefix(&format!("{WORK_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(tmp)?)
}

/// A synthetic safetensors model inside a store root (`<root>/models/m1/`).
#[derive(Debug)]
pub struct Model {
    pub store_root: PathBuf,
    pub manifest_path: PathBuf,
    /// Sum of all file sizes.
    pub total_bytes: u64,
    pub files: usize,
}

impl Model {
    /// `ossc gen-model` into `work/store/models/m1` (manifest next to it).
    pub fn generate(bins: &Binaries, work: &Path, size_mb: u64, shards: u32) -> Result<Model> {
        let store_root = work.join("store");
        let dir = store_root.join(BUCKET).join(PREFIX);
        let manifest_path = work.join("manifest.json");
        let out = std::process::Command::new(&bins.ossc)
            .arg("gen-model")
            .arg(&dir)
            .args([
                "--size-mb",
                &size_mb.to_string(),
                "--shards",
                &shards.to_string(),
            ])
            .arg("--manifest")
            .arg(&manifest_path)
            .output()
            .context("running ossc gen-model")?;
        ensure!(
            out.status.success(),
            "ossc gen-model failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
        let files = manifest["files"]
            .as_object()
            .context("manifest has no files")?;
        let total_bytes = files.values().filter_map(|f| f["size"].as_u64()).sum();
        Ok(Model {
            store_root,
            manifest_path,
            total_bytes,
            files: files.len(),
        })
    }

    /// `oss://models/m1/`.
    pub fn oss_path(&self) -> String {
        format!("oss://{BUCKET}/{PREFIX}/")
    }

    /// `oss://models/`: the bucket root, as the vendor's guides set `OSS_PATH`
    /// (the model is then `MODEL_DIR/m1`).
    pub fn bucket_root(&self) -> String {
        format!("oss://{BUCKET}/")
    }

    /// The model's files as the store serves them (`<store root>/models/m1`).
    pub fn store_dir(&self) -> PathBuf {
        self.store_root.join(BUCKET).join(PREFIX)
    }
}

/// A fresh random cluster secret (32 bytes from the kernel, hex), as
/// `ossc secret generate --hex` prints.
pub fn new_cluster_secret() -> String {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
        &mut bytes,
    )
    .expect("reading /dev/urandom");
    hex::encode(bytes)
}

/// The peer layer's environment for every node of `cluster`: the static peer
/// list (every node's agent), the listen address and the cluster secret.
pub fn peer_env(cluster: &Cluster, secret: &str) -> Vec<(String, String)> {
    let peers: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.addr(PEER_PORT).to_string())
        .collect();
    vec![
        ("OSS_CONNECTOR_PEERS".into(), peers.join(",")),
        (
            "OSS_CONNECTOR_PEER_LISTEN".into(),
            format!("0.0.0.0:{PEER_PORT}"),
        ),
        ("OSS_CONNECTOR_CLUSTER_SECRET".into(), secret.into()),
    ]
}

/// The peer id (`ip:port`) of `node`'s agent, as the other agents know it.
pub fn peer_id(node: &Host) -> String {
    node.addr(PEER_PORT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dirs_of_dead_runs_are_removed() {
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .expect("pid_max")
            .trim()
            .parse()
            .expect("number");
        let stale = std::env::temp_dir().join(format!("{WORK_DIR_PREFIX}{pid_max}-unit"));
        std::fs::create_dir_all(stale.join("store")).expect("stale dir");
        let fresh = work_dir().expect("work dir");
        assert!(!stale.exists(), "{} survived", stale.display());
        let name = fresh
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(&format!("{WORK_DIR_PREFIX}{}-", std::process::id())));
    }

    #[test]
    fn oss_path_names_bucket_and_prefix() {
        let m = Model {
            store_root: "/x".into(),
            manifest_path: "/x/m.json".into(),
            total_bytes: 1,
            files: 1,
        };
        assert_eq!(m.oss_path(), "oss://models/m1/");
    }
}

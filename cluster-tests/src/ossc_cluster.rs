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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ossc_core::store_server::StoreStats;

use crate::netns::{http_request_with, process_alive, Cluster, Host, HostProcess, ProcessOutput};

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
/// How long the store may take to accept connections.
const STORE_START_TIMEOUT: Duration = Duration::from_secs(30);
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

/// `ossc serve-store` running on the store host.
#[derive(Debug)]
pub struct Store {
    process: HostProcess,
    host: Host,
    addr: SocketAddr,
}

impl Store {
    /// Starts the store on the cluster's store host, serving `model`'s root
    /// with signed requests required.
    pub fn start(cluster: &Cluster, bins: &Binaries, model: &Model) -> Result<Store> {
        let host = cluster.store().clone();
        let addr = host.addr(STORE_PORT);
        let mut cmd = host.command(&bins.ossc);
        cmd.arg("serve-store")
            .arg("--root")
            .arg(&model.store_root)
            .args(["--addr", &addr.to_string(), "--region", REGION])
            .args([
                "--access-key-id",
                ACCESS_KEY_ID,
                "--access-key-secret",
                ACCESS_KEY_SECRET,
            ])
            .env("RUST_LOG", "warn");
        let process = host.spawn(cmd)?;
        host.wait_for_port(addr, STORE_START_TIMEOUT)?;
        Ok(Store {
            process,
            host,
            addr,
        })
    }

    /// `http://<store ip>:<port>`, as nodes reach it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /_ossc/stats`, from inside the store's namespace.
    pub fn stats(&self) -> Result<StoreStats> {
        let r = self.control("GET", "stats")?;
        ensure!(r.status == 200, "stats: HTTP {}", r.status);
        serde_json::from_slice(&r.body).context("parsing /_ossc/stats")
    }

    /// `POST /_ossc/reset`: zeroes the counters.
    pub fn reset_stats(&self) -> Result<()> {
        let r = self.control("POST", "reset")?;
        ensure!(r.status / 100 == 2, "reset: HTTP {}", r.status);
        Ok(())
    }

    /// A body-less control-plane request, signed (OSS V1) as the store
    /// requires of a store with credentials.
    fn control(&self, method: &str, name: &str) -> Result<crate::netns::HttpResponse> {
        use ossc_core::sign::{sign, Credentials, RequestToSign, SignatureVersion};
        let path = format!("/_ossc/{name}");
        let host = self.addr.to_string();
        let signed = sign(
            SignatureVersion::OssV1,
            &Credentials::new(ACCESS_KEY_ID, ACCESS_KEY_SECRET),
            REGION,
            &RequestToSign {
                method,
                host: &host,
                bucket: "_ossc",
                key: name,
                path: &path,
                query: &[],
                headers: &[],
            },
            std::time::SystemTime::now(),
        );
        Ok(http_request_with(
            &self.host,
            self.addr,
            method,
            &path,
            &signed.headers,
            b"",
        )?)
    }

    /// Whether the store process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
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

/// What one node's consumer did.
#[derive(Debug, Clone)]
pub struct ConsumerOutcome {
    pub node: String,
    /// The consumer's `--json` report (files, bytes, load_seconds, ...).
    pub report: serde_json::Value,
    /// From spawn to exit (agent start, listing, fetch, load, verify).
    pub wall: Duration,
    /// The node agent's `STATUS` (bytes by source, peers), if it answered.
    pub agent_status: Option<serde_json::Value>,
    /// Where this node's logs are.
    pub dir: PathBuf,
}

impl ConsumerOutcome {
    /// `bytes_by_source.<source>` from the agent's status (0 when unknown).
    pub fn bytes_from(&self, source: &str) -> u64 {
        self.agent_status
            .as_ref()
            .and_then(|s| s["bytes_by_source"][source].as_u64())
            .unwrap_or(0)
    }
}

/// Everything one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    pub consumers: Vec<ConsumerOutcome>,
    /// Store stats after the phase (counters reset before it).
    pub store: StoreStats,
    /// From the first spawn to the last consumer's exit.
    pub wall: Duration,
}

/// Runs one consumer per node at once (fresh MODEL_DIR, socket and config per
/// node under `work/<phase>/node<i>`), with `extra_env` on every node. Each
/// consumer must exit 0 (it verified every byte) and report the model's full
/// size. Afterwards every node's processes are killed.
pub fn run_phase(
    cluster: &Cluster,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    work: &Path,
    phase: &str,
    extra_env: &[(String, String)],
) -> Result<PhaseOutcome> {
    run_phase_with_config(
        cluster,
        bins,
        store,
        model,
        work,
        phase,
        extra_env,
        &serde_json::Value::Null,
        CONSUMER_TIMEOUT,
    )
}

/// [`run_phase`] with `config_extra` (a JSON object, e.g. `{"peer":
/// {"chunkSizeBytes": 4194304}}`) merged into every node's config file, and
/// `timeout` for each consumer (counted from its own start).
#[allow(clippy::too_many_arguments)]
pub fn run_phase_with_config(
    cluster: &Cluster,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    work: &Path,
    phase: &str,
    extra_env: &[(String, String)],
    config_extra: &serde_json::Value,
    timeout: Duration,
) -> Result<PhaseOutcome> {
    store.reset_stats()?;
    let t0 = Instant::now();
    let mut running = Vec::new();
    for node in cluster.nodes() {
        let dir = work.join(phase).join(&node.name);
        running.push(start_consumer_with_config(
            node,
            bins,
            store,
            model,
            &dir,
            extra_env,
            config_extra,
        )?);
    }
    // Each wait's deadline counts from that consumer's own start, so they all
    // get the full `timeout` (they run side by side).
    let results: Vec<Result<ConsumerOutcome>> = running
        .into_iter()
        .map(|c| c.finish(bins, model, timeout))
        .collect();
    let wall = t0.elapsed();
    let stats = store.stats()?;
    for node in cluster.nodes() {
        node.kill_all()?;
    }
    Ok(PhaseOutcome {
        consumers: results.into_iter().collect::<Result<_>>()?,
        store: stats,
        wall,
    })
}

/// A consumer started on one node by [`start_consumer`].
#[derive(Debug)]
pub struct RunningConsumer {
    node: Host,
    dir: PathBuf,
    process: HostProcess,
}

/// Starts one consumer (and through the preload library, that node's agent)
/// on `node`, with its MODEL_DIR, socket, config and logs under `dir`.
/// Lets tests start nodes late, kill them mid-load, etc.
pub fn start_consumer(
    node: &Host,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    dir: &Path,
    extra_env: &[(String, String)],
) -> Result<RunningConsumer> {
    start_consumer_with_config(
        node,
        bins,
        store,
        model,
        dir,
        extra_env,
        &serde_json::Value::Null,
    )
}

/// [`start_consumer`] with `config_extra` merged into the node's config file
/// (see [`run_phase_with_config`]).
pub fn start_consumer_with_config(
    node: &Host,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    dir: &Path,
    extra_env: &[(String, String)],
    config_extra: &serde_json::Value,
) -> Result<RunningConsumer> {
    let cmd = consumer_command(node, bins, store, model, dir, extra_env, config_extra)?;
    Ok(RunningConsumer {
        node: node.clone(),
        dir: dir.to_path_buf(),
        process: node.spawn(cmd)?,
    })
}

impl RunningConsumer {
    pub fn node(&self) -> &Host {
        &self.node
    }

    /// This node's work directory (model/, agent/, connector.log, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent").join("connector.sock")
    }

    /// Waits for the consumer (until `timeout` after its start), asks the
    /// agent for its status, and checks that the consumer succeeded with the
    /// whole model.
    pub fn finish(
        self,
        bins: &Binaries,
        model: &Model,
        timeout: Duration,
    ) -> Result<ConsumerOutcome> {
        let socket = self.socket();
        let out = self.process.wait(timeout);
        let agent_status = agent_status(bins, &socket);
        let out = out.with_context(|| format!("{}: consumer", self.node.name))?;
        let report = check_consumer(&self.node, &self.dir, &out, model)?;
        Ok(ConsumerOutcome {
            node: self.node.name.clone(),
            report,
            wall: out.elapsed,
            agent_status,
            dir: self.dir,
        })
    }
}

fn consumer_command(
    node: &Host,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    dir: &Path,
    extra_env: &[(String, String)],
    config_extra: &serde_json::Value,
) -> Result<std::process::Command> {
    let config_path = write_node_config(dir, config_extra)?;
    let model_dir = dir.join("model");
    let mut cmd = node.command(&bins.ossc);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .env("LD_PRELOAD", &bins.preload)
        .env("ENABLE_CONNECTOR", "1")
        .env("MODEL_DIR", &model_dir)
        .envs(store_env(store, &model.oss_path()))
        .env("OSS_CONNECTOR_CONFIG", &config_path)
        .env(
            "CONNECTOR_UDS_PATH",
            dir.join("agent").join("connector.sock"),
        )
        .env("OSSC_AGENT_BIN", &bins.ossc)
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .arg("load-model")
        .arg(&model_dir)
        .arg("--manifest")
        .arg(&model.manifest_path)
        .arg("--json");
    Ok(cmd)
}

/// Writes a node's connector config file, `dir/config.json` (log and audit
/// log in `dir`, the vendor's defaults otherwise, `config_extra` merged in;
/// see [`merge_config`]), creating `dir`. Returns the file's path, for
/// `OSS_CONNECTOR_CONFIG`.
pub fn write_node_config(dir: &Path, config_extra: &serde_json::Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut config = serde_json::json!({
        "logLevel": 1,
        "logPath": dir.join("connector.log"),
        "auditPath": dir.join("audit.log"),
        "expireTimeSec": 120,
        "prefetch": {"vcpus": 4, "workers": 8},
    });
    merge_config(&mut config, config_extra);
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    Ok(config_path)
}

/// The store variables a main process (or daemon) needs: `OSS_PATH` (`oss_path`),
/// `OSS_ENDPOINT`, `OSS_REGION` and the signing credentials.
pub fn store_env(store: &Store, oss_path: &str) -> Vec<(String, String)> {
    [
        ("OSS_PATH", oss_path.to_string()),
        ("OSS_ENDPOINT", store.endpoint()),
        ("OSS_REGION", REGION.to_string()),
        ("OSS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
        ("OSS_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn check_consumer(
    node: &Host,
    dir: &Path,
    out: &ProcessOutput,
    model: &Model,
) -> Result<serde_json::Value> {
    if !out.status.success() {
        let log = std::fs::read_to_string(dir.join("connector.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "{}: consumer failed ({}): {}\n--- connector.log (tail) ---\n{tail}",
            node.name,
            out.status,
            out.stderr_text()
        );
    }
    let stdout = out.stdout_text();
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{}: no JSON report in {stdout:?}", node.name))?;
    let report: serde_json::Value = serde_json::from_str(line)?;
    ensure!(
        report["bytes"].as_u64() == Some(model.total_bytes),
        "{}: loaded {} bytes, the model has {}",
        node.name,
        report["bytes"],
        model.total_bytes
    );
    ensure!(
        report["files"].as_u64() == Some(model.files as u64),
        "{}: loaded {} files, the model has {}",
        node.name,
        report["files"],
        model.files
    );
    Ok(report)
}

/// `ossc status --json` for the agent at `socket` (a path, so reachable from
/// any namespace).
fn agent_status(bins: &Binaries, socket: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(&bins.ossc)
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .env_remove("LD_PRELOAD")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Merges the keys of JSON object `extra` into `config` (one level deep for
/// nested objects, so `{"peer": {...}}` adds a section); `null` merges nothing.
pub fn merge_config(config: &mut serde_json::Value, extra: &serde_json::Value) {
    let (Some(dst), Some(src)) = (config.as_object_mut(), extra.as_object()) else {
        return;
    };
    for (k, v) in src {
        match (
            dst.get_mut(k).and_then(|d| d.as_object_mut()),
            v.as_object(),
        ) {
            (Some(d), Some(v)) => d.extend(v.iter().map(|(a, b)| (a.clone(), b.clone()))),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The peer id (`ip:port`) of `node`'s agent, as the other agents know it.
pub fn peer_id(node: &Host) -> String {
    node.addr(PEER_PORT).to_string()
}

/// `ossc status --json` of the agent at `socket` (`None` when none answers).
pub fn query_agent_status(bins: &Binaries, socket: &Path) -> Option<serde_json::Value> {
    agent_status(bins, socket)
}

/// From an agent's STATUS: its `peers.peers[]` entry for peer `id`.
pub fn peer_entry<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["peers"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_str() == Some(id))
}

/// The tail (last `lines` lines) of a node's `connector.log`.
pub fn log_tail(dir: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(dir.join("connector.log")).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl RunningConsumer {
    /// Whether the consumer is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The node agent's STATUS now (`None` while none answers).
    pub fn agent_status(&self, bins: &Binaries) -> Option<serde_json::Value> {
        agent_status(bins, &self.socket())
    }
}

/// How long `ossc peer` may take to create its socket.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// `ossc peer` (the standalone node daemon) running on one node, with its
/// MODEL_DIR, socket, config and log under `dir` in the same layout as a
/// consumer's (`model/`, `agent/connector.sock`, `connector.log`), so
/// [`start_attached_consumer`] with the same `dir` attaches to it.
#[derive(Debug)]
pub struct PeerDaemon {
    node: Host,
    dir: PathBuf,
    process: HostProcess,
}

/// What a test adds to `ossc peer`'s defaults.
#[derive(Debug, Clone, Default)]
pub struct DaemonSettings {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra command-line flags.
    pub args: Vec<String>,
    /// Merged into the daemon's config file (see [`merge_config`]).
    pub config: serde_json::Value,
}

/// Starts `ossc peer` on `node` for `model` (credentials, endpoint and
/// OSS_PATH in its environment, `extra` on top) and waits until its socket
/// exists.
pub fn start_peer_daemon(
    node: &Host,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    dir: &Path,
    extra: &DaemonSettings,
) -> Result<PeerDaemon> {
    let config_path = write_node_config(dir, &extra.config)?;
    let socket = dir.join("agent").join("connector.sock");
    let mut cmd = node.command(&bins.ossc);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .envs(store_env(store, &model.oss_path()))
        .env("OSS_CONNECTOR_CONFIG", &config_path)
        .envs(extra.env.iter().map(|(k, v)| (k, v)))
        .arg("peer")
        .arg("--socket")
        .arg(&socket)
        .arg("--model-dir")
        .arg(dir.join("model"))
        .args(&extra.args);
    let mut process = node.spawn(cmd)?;
    let deadline = Instant::now() + DAEMON_START_TIMEOUT;
    while !socket.exists() {
        if !process.is_running() {
            bail!(
                "{}: ossc peer exited at start\n--- connector.log (tail) ---\n{}",
                node.name,
                log_tail(dir, 20)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "{}: ossc peer did not create {} within {DAEMON_START_TIMEOUT:?}",
            node.name,
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(PeerDaemon {
        node: node.clone(),
        dir: dir.to_path_buf(),
        process,
    })
}

impl PeerDaemon {
    pub fn node(&self) -> &Host {
        &self.node
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent").join("connector.sock")
    }

    /// The daemon's STATUS (`None` while it does not answer).
    pub fn status(&self, bins: &Binaries) -> Option<serde_json::Value> {
        agent_status(bins, &self.socket())
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// Starts a consumer on `node` that attaches to the agent already serving
/// `dir/agent/connector.sock` (a [`PeerDaemon`]) with `ENABLE_CONNECTOR=2`.
/// It gets no store credentials, endpoint or OSS_PATH: everything comes
/// through the daemon.
pub fn start_attached_consumer(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
) -> Result<RunningConsumer> {
    start_attached_consumer_as(node, bins, model, dir, None)
}

/// [`start_attached_consumer`], run as user and group `uid` when given (an
/// application container of another, non-root user that mounts the daemon's
/// directories): it drops root after entering the node's namespace.
pub fn start_attached_consumer_as(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
    uid: Option<u32>,
) -> Result<RunningConsumer> {
    let model_dir = dir.join("model");
    let mut cmd = node.command(&bins.ossc);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child after the namespace hook (hooks
        // run in order) and only makes async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .env("LD_PRELOAD", &bins.preload)
        .env("ENABLE_CONNECTOR", "2")
        .env("MODEL_DIR", &model_dir)
        .env(
            "CONNECTOR_UDS_PATH",
            dir.join("agent").join("connector.sock"),
        )
        .arg("load-model")
        .arg(&model_dir)
        .arg("--manifest")
        .arg(&model.manifest_path)
        .arg("--json");
    Ok(RunningConsumer {
        node: node.clone(),
        dir: dir.to_path_buf(),
        process: node.spawn(cmd)?,
    })
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

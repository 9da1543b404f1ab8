//! The node agent: one process per node (per socket) that mirrors `OSS_PATH`
//! into MODEL_DIR, keeps large objects in sealed memory files and hands them
//! to preloaded processes over a Unix socket (protocol: docs/dev/contracts.md).
//!
//! Design decision: the agent is a small set of independent tasks sharing one
//! [`Agent`] value: the accept loop (one task per connection, one request per
//! connection), the mirror-then-prefetch task, and a maintenance ticker
//! (expiry, idle exit). Everything a request needs is reached through a
//! `watch` of the mirror state, so a request that arrives while the mirror is
//! still being built simply waits for it, and a listing failure is reported to
//! every READY/OPEN with a clear message instead of killing the agent.
//!
//! Module map: [`keys`] (key validation, natural sort), [`mirror`] (MODEL_DIR),
//! [`manifest`] (what the agent created there, validated on load),
//! [`cache`] (memfds, state machine, memory cap, expiry),
//! [`idle`] (when a spawned agent exits),
//! [`crate::object_source`] (where large objects' bytes come from: the store
//! by default, or whatever fetcher the caller hands in),
//! [`order`] (prefetch order), [`preheat`] (PREFETCH/EVICT of a path), [`server`] (the socket),
//! [`socket_dir`] (who may write where the socket lives), [`sys`] (memfd,
//! flock, SCM_RIGHTS), [`procscan`] (`/proc` references), [`audit`],
//! [`metrics`], [`protocol`].

pub mod audit;
pub mod cache;
pub mod idle;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod mirror;
pub mod order;
pub mod preheat;
pub mod procscan;
pub mod protocol;
pub mod server;
pub mod socket_dir;
pub mod sys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ossc_core::fetch::{FetchConfig, FetchEngine};
use ossc_core::object_client::{self, ObjectClient};
use tokio::sync::watch;

use crate::object_source::{FetcherSpec, ObjectFetcher, StoreFetcher};
use cache::{Cache, LargeFile};
use metrics::Metrics;
use mirror::{Catalog, Entry, MirrorParams};
pub use preheat::PrefetchHandle;

/// Objects up to this size become real files unless configured otherwise.
pub const DEFAULT_SMALL_FILE_BYTES: u64 = 16 << 20;
/// The vendor's default `expireTimeSec`.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(120);
/// Share of the cgroup limit (or MemTotal) used when the memory limit is 0.
pub const AUTO_MEMORY_PERCENT: u64 = ossc_core::config::AUTO_MEMORY_LIMIT_PERCENT;
/// cgroup v1 reports "no limit" as a huge number; anything above this is none.
const CGROUP_UNLIMITED_THRESHOLD: u64 = 1 << 60;
/// Bounds of the maintenance tick (a quarter of the expiry time, clamped).
const MIN_TICK: Duration = Duration::from_millis(100);
const MAX_TICK: Duration = Duration::from_secs(5);
/// How long `ossc status` waits for the agent's answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `run_agent` needs. Build with [`AgentOptions::new`] and adjust.
pub struct AgentOptions {
    pub socket_path: PathBuf,
    pub model_dir: PathBuf,
    /// Key prefix of `OSS_PATH` ("" for the bucket root; otherwise a trailing
    /// `/` is implied).
    pub prefix: String,
    /// The store; tests inject a mock.
    pub client: Arc<dyn ObjectClient>,
    /// Part size and `max_in_flight` (= prefetch.vcpus × prefetch.workers).
    pub fetch: FetchConfig,
    /// `cache.smallFileBytes`.
    pub small_file_bytes: u64,
    /// `cache.memoryLimitBytes`; 0 = 80 % of the cgroup limit or MemTotal.
    pub memory_limit_bytes: u64,
    /// `expireTimeSec`.
    pub expire: Duration,
    /// `auditPath`; `None` disables the audit log.
    pub audit_path: Option<PathBuf>,
    /// Reported to clients in the HELLO answer.
    pub log_path: PathBuf,
    /// Spawned mode: exit once no registered process has been alive for
    /// `expire`. False in daemon mode.
    pub idle_exit: bool,
    /// Stop on SIGTERM / SIGINT (removing the socket).
    pub handle_signals: bool,
    /// Stop when this becomes `true` (tests, embedding).
    pub shutdown: Option<watch::Receiver<bool>>,
    /// Where large objects come from, started once the agent holds its
    /// socket's lock and stopped when it exits (the `ossc` commands hand in
    /// the peer layer when peers are configured). `None`: the store alone
    /// ([`StoreFetcher`]).
    pub fetcher: Option<Box<dyn FetcherSpec>>,
    /// File mode of the socket (`OSS_CONNECTOR_SOCKET_MODE`, e.g. `0o666` so
    /// applications of other users, or in other containers that mount the
    /// socket's directory, can connect). `None`: whatever the umask gives.
    pub socket_mode: Option<u32>,
    /// Lets whoever runs the agent prefetch one object by key once it runs
    /// ([`PrefetchHandle`]).
    pub prefetch_handle: Option<PrefetchHandle>,
}

/// Env var: octal file mode of the agent's socket ([`AgentOptions::socket_mode`]).
pub const SOCKET_MODE_ENV: &str = "OSS_CONNECTOR_SOCKET_MODE";

/// Parses an octal socket mode such as `0666` or `660` (at most `0777`).
pub fn parse_socket_mode(text: &str) -> anyhow::Result<u32> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => anyhow::bail!(
            "{SOCKET_MODE_ENV}={text:?} is not an octal file mode from 0 to 0777 (e.g. 0666)"
        ),
    }
}

impl AgentOptions {
    pub fn new(
        socket_path: impl Into<PathBuf>,
        model_dir: impl Into<PathBuf>,
        prefix: impl Into<String>,
        client: Arc<dyn ObjectClient>,
    ) -> AgentOptions {
        AgentOptions {
            socket_path: socket_path.into(),
            model_dir: model_dir.into(),
            prefix: prefix.into(),
            client,
            fetch: FetchConfig::default(),
            small_file_bytes: DEFAULT_SMALL_FILE_BYTES,
            memory_limit_bytes: 0,
            expire: DEFAULT_EXPIRE,
            audit_path: None,
            log_path: PathBuf::new(),
            idle_exit: true,
            handle_signals: false,
            shutdown: None,
            fetcher: None,
            socket_mode: None,
            prefetch_handle: None,
        }
    }
}

/// Where the mirror stands.
#[derive(Clone)]
enum MirrorState {
    Mirroring,
    Ready(Arc<Mirrored>),
    Failed { errno: i32, message: String },
}

/// The finished mirror: catalog plus the cache of its large files.
struct Mirrored {
    catalog: Catalog,
    cache: Arc<Cache>,
    /// Large files per directory, in prefetch order (bucket-root lazy prefetch).
    by_dir: HashMap<String, Vec<Arc<LargeFile>>>,
    /// `(st_dev, st_ino)` of each placeholder, for `IDENT`.
    placeholders: HashMap<(u64, u64), String>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Registered {
    role: u8,
    comm: String,
}

/// Shared state of a running agent.
struct Agent {
    socket_path: PathBuf,
    model_dir: PathBuf,
    prefix: String,
    bucket: String,
    log_path: PathBuf,
    small_file_bytes: u64,
    memory_limit: u64,
    expire: Duration,
    prefetch_window: u64,
    idle_exit: bool,
    engine: Arc<FetchEngine>,
    fetcher: Arc<dyn ObjectFetcher>,
    mirror: watch::Sender<MirrorState>,
    metrics: Arc<Metrics>,
    audit: audit::AuditLog,
    pids: Mutex<BTreeMap<u32, Registered>>,
    /// Whether any process has said HELLO (idle exit waits for the first one).
    registered_once: AtomicBool,
    lazy_dirs: Mutex<HashSet<String>>,
    shutdown: watch::Sender<bool>,
}

/// Runs the agent until shutdown (signal, `opts.shutdown`, idle exit).
/// Returns `Ok(())` at once when another live agent holds the socket's lock.
pub async fn run_agent(opts: AgentOptions) -> anyhow::Result<()> {
    let socket_path = opts.socket_path.clone();
    if let Some(dir) = socket_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        socket_dir::prepare(dir, opts.socket_mode.is_some())?;
    }
    let lock_path = lock_path(&socket_path);
    let Some(lock) = sys::FileLock::try_acquire(&lock_path)
        .with_context(|| format!("failed to acquire uds lock {}", lock_path.display()))?
    else {
        tracing::info!(socket = %socket_path.display(), "another agent serves this socket; exiting");
        return Ok(());
    };
    let memory_limit = if opts.memory_limit_bytes == 0 {
        auto_memory_limit()
    } else {
        opts.memory_limit_bytes
    };
    let prefix = normalize_prefix(&opts.prefix);
    let prefetch_window = (opts.fetch.max_in_flight as u64)
        .saturating_mul(opts.fetch.part_size)
        .saturating_mul(cache::PREFETCH_WINDOW_FACTOR);
    let bucket = opts.client.bucket().to_string();
    let engine = Arc::new(FetchEngine::new(opts.client.clone(), opts.fetch));
    // The fetcher starts before the socket exists, so a failure (a peer port
    // in use, a bad peer list) leaves no socket behind.
    let fetcher: Arc<dyn ObjectFetcher> = match opts.fetcher {
        Some(spec) => spec.start(engine.clone(), bucket.clone()).await?,
        None => Arc::new(StoreFetcher::new(engine.clone())),
    };
    // We hold the lock: any socket file left is stale.
    match std::fs::remove_file(&socket_path) {
        Ok(()) => tracing::info!(socket = %socket_path.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("removing stale socket {}", socket_path.display()))
        }
    }
    let listener = tokio::net::UnixListener::bind(&socket_path)
        .with_context(|| format!("binding {}", socket_path.display()))?;
    if let Some(mode) = opts.socket_mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode {mode:#o} on {}", socket_path.display()))?;
    }

    let audit = audit::AuditLog::open(opts.audit_path.as_deref()).unwrap_or_else(|e| {
        tracing::warn!(path = ?opts.audit_path, error = %e, "audit log unavailable; OPENs are not audited");
        audit::AuditLog::open(None).expect("a disabled audit log cannot fail")
    });
    let (shutdown_tx, _) = watch::channel(false);
    let agent = Arc::new(Agent {
        socket_path: socket_path.clone(),
        model_dir: opts.model_dir.clone(),
        prefix,
        bucket,
        log_path: opts.log_path.clone(),
        small_file_bytes: opts.small_file_bytes,
        memory_limit,
        expire: opts.expire,
        prefetch_window,
        idle_exit: opts.idle_exit,
        engine,
        fetcher,
        mirror: watch::channel(MirrorState::Mirroring).0,
        metrics: Arc::new(Metrics::default()),
        audit,
        pids: Mutex::default(),
        registered_once: AtomicBool::new(false),
        lazy_dirs: Mutex::default(),
        shutdown: shutdown_tx,
    });
    if let Some(handle) = &opts.prefetch_handle {
        handle.attach(&agent);
    }
    tracing::info!(
        socket = %socket_path.display(),
        model_dir = %agent.model_dir.display(),
        bucket = %agent.bucket,
        prefix = %agent.prefix,
        memory_limit,
        pid = std::process::id(),
        "agent started"
    );

    let mirror_task = tokio::spawn(agent.clone().mirror_and_prefetch());
    let maintenance_task = tokio::spawn(agent.clone().maintenance());
    if let Some(mut ext) = opts.shutdown {
        let agent = agent.clone();
        tokio::spawn(async move {
            while !*ext.borrow_and_update() {
                if ext.changed().await.is_err() {
                    return;
                }
            }
            agent.shutdown.send_replace(true);
        });
    }
    if opts.handle_signals {
        let agent = agent.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("signal received; shutting down");
            agent.shutdown.send_replace(true);
        });
    }

    let result = server::accept_loop(agent.clone(), listener).await;
    mirror_task.abort();
    maintenance_task.abort();
    agent.fetcher.shutdown().await;
    if let Err(e) = std::fs::remove_file(&socket_path) {
        tracing::warn!(socket = %socket_path.display(), error = %e, "removing socket failed");
    }
    drop(lock);
    tracing::info!(socket = %socket_path.display(), "agent stopped");
    result
}

/// Asks the agent at `socket` for its STATUS JSON (`ossc status`).
pub fn query_status(socket: &Path) -> anyhow::Result<serde_json::Value> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("no agent answers at {}", socket.display()))?;
    s.set_read_timeout(Some(STATUS_TIMEOUT))?;
    s.write_all(b"STATUS\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .context("reading STATUS answer")?;
    let line = text.lines().next().unwrap_or("");
    if let Some(err) = line.strip_prefix("ERR ") {
        anyhow::bail!("agent answered an error: {err}");
    }
    serde_json::from_str(line).with_context(|| format!("agent answered non-JSON: {line:?}"))
}

/// `<socket>.lock`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// "" stays ""; anything else gets a trailing `/`.
fn normalize_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// 80 % of the tightest of: this cgroup's memory limit (v2 or v1) and MemTotal.
pub fn auto_memory_limit() -> u64 {
    let mut limit = mem_total().unwrap_or(u64::MAX);
    if let Some(c) = cgroup_memory_limit() {
        limit = limit.min(c);
    }
    if limit == u64::MAX {
        return u64::MAX;
    }
    limit / 100 * AUTO_MEMORY_PERCENT
}

fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cgroup_memory_limit() -> Option<u64> {
    let parse = |p: &str| -> Option<u64> {
        let v: u64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        (v < CGROUP_UNLIMITED_THRESHOLD).then_some(v)
    };
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        });
    let mut candidates = Vec::new();
    if let Some(p) = own {
        candidates.push(format!(
            "/sys/fs/cgroup{}/memory.max",
            p.trim_end_matches('/')
        ));
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates.iter().filter_map(|p| parse(p)).min()
}

impl Agent {
    /// Lists, mirrors, then prefetches (unless bucket root: lazily per dir).
    async fn mirror_and_prefetch(self: Arc<Self>) {
        let started = Instant::now();
        let listing = match object_client::list_all(self.engine.client().as_ref(), &self.prefix)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                let errno = cache::errno_for(&e);
                let message = format!("listing oss://{}/{} failed: {e}", self.bucket, self.prefix);
                tracing::error!("{message}");
                self.mirror
                    .send_replace(MirrorState::Failed { errno, message });
                return;
            }
        };
        let params = MirrorParams {
            model_dir: &self.model_dir,
            bucket: &self.bucket,
            prefix: &self.prefix,
            small_file_bytes: self.small_file_bytes,
            engine: &self.engine,
        };
        let catalog = match mirror::mirror(&params, &listing).await {
            Ok(c) => c,
            Err(e) => {
                let message = format!("mirroring into {} failed: {e}", self.model_dir.display());
                tracing::error!("{message}");
                self.mirror.send_replace(MirrorState::Failed {
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    message,
                });
                return;
            }
        };
        Metrics::add(&self.metrics.bytes_store, catalog.small_bytes);
        let large: Vec<String> = catalog.large().map(|(p, _)| p.clone()).collect();
        let indexes: Vec<String> = catalog
            .entries
            .iter()
            .filter(|(p, e)| p.ends_with(order::INDEX_SUFFIX) && matches!(e, Entry::Small { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        let ordered = order::prefetch_order(&self.model_dir, &large, &indexes);
        let files: Vec<Arc<LargeFile>> = ordered
            .iter()
            .filter_map(|p| match catalog.entries.get(p) {
                Some(Entry::Large { meta }) => {
                    Some(Arc::new(LargeFile::new(p.clone(), meta.clone())))
                }
                _ => None,
            })
            .collect();
        let mut by_dir: HashMap<String, Vec<Arc<LargeFile>>> = HashMap::new();
        for f in &files {
            by_dir
                .entry(parent_dir(&f.rel_path).to_string())
                .or_default()
                .push(f.clone());
        }
        let cache = Arc::new(Cache::new(
            files.clone(),
            self.fetcher.clone(),
            self.memory_limit,
            self.prefetch_window,
            self.expire,
            self.metrics.clone(),
        ));
        tracing::info!(
            objects = listing.len(),
            large = files.len(),
            small_bytes = catalog.small_bytes,
            rejected = catalog.rejected.len(),
            foreign = catalog.foreign.len(),
            secs = format!("{:.2}", started.elapsed().as_secs_f64()),
            "mirror ready"
        );
        let placeholders = placeholder_ids(&self.model_dir, &files);
        self.mirror
            .send_replace(MirrorState::Ready(Arc::new(Mirrored {
                catalog,
                cache: cache.clone(),
                by_dir,
                placeholders,
            })));
        if !self.prefix.is_empty() {
            cache.prefetch(files).await;
        }
    }

    /// Waits for the mirror; `Err((errno, message))` if it failed.
    async fn mirrored(&self) -> Result<Arc<Mirrored>, (i32, String)> {
        let mut rx = self.mirror.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                MirrorState::Ready(m) => return Ok(m.clone()),
                MirrorState::Failed { errno, message } => return Err((*errno, message.clone())),
                MirrorState::Mirroring => {}
            }
            if rx.changed().await.is_err() {
                return Err((libc::EIO, "agent shutting down".into()));
            }
        }
    }

    /// Bucket-root mode: the first OPEN in a directory prefetches its files.
    fn trigger_lazy_prefetch(&self, m: &Arc<Mirrored>, rel: &str) {
        if !self.prefix.is_empty() {
            return;
        }
        let dir = parent_dir(rel).to_string();
        let Some(files) = m.by_dir.get(&dir) else {
            return;
        };
        if !self
            .lazy_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.clone())
        {
            return;
        }
        tracing::info!(dir = %dir, files = files.len(), "prefetching directory on first open");
        let cache = m.cache.clone();
        let files = files.clone();
        tokio::spawn(async move { cache.prefetch(files).await });
    }

    /// Expiry and idle exit.
    async fn maintenance(self: Arc<Self>) {
        let tick = (self.expire / 4).clamp(MIN_TICK, MAX_TICK);
        let started = Instant::now();
        let mut idle_since = Some(started);
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let now = Instant::now();
            if let MirrorState::Ready(m) = &*self.mirror.borrow() {
                m.cache.expire_idle(now);
            }
            let alive = {
                let mut pids = self.pids.lock().unwrap_or_else(|p| p.into_inner());
                pids.retain(|pid, _| procscan::pid_alive(*pid));
                !pids.is_empty()
            };
            if alive {
                idle_since = None;
            } else if self.idle_exit {
                let since = *idle_since.get_or_insert(now);
                let registered_once = self.registered_once.load(Ordering::Relaxed);
                if idle::exit_due(registered_once, started, since, now, self.expire) {
                    tracing::info!(
                        idle_secs = now.duration_since(since).as_secs(),
                        "no registered process alive; agent exiting"
                    );
                    self.shutdown.send_replace(true);
                    return;
                }
            }
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let (mirror_state, files, resident, reserved, entries) = match &*self.mirror.borrow() {
            MirrorState::Mirroring => (
                "mirroring".to_string(),
                Vec::new(),
                0,
                0,
                serde_json::Value::Null,
            ),
            MirrorState::Failed { message, .. } => (
                format!("failed: {message}"),
                Vec::new(),
                0,
                0,
                serde_json::Value::Null,
            ),
            MirrorState::Ready(m) => {
                let mut rejected: Vec<&(String, String)> = m.catalog.rejected.iter().collect();
                rejected.sort();
                let mut foreign: Vec<&String> = m.catalog.foreign.iter().collect();
                foreign.sort();
                (
                    "ready".to_string(),
                    m.cache.status(now),
                    m.cache.resident_bytes(),
                    m.cache.reserved_bytes(),
                    serde_json::json!({
                        "objects": m.catalog.entries.len(),
                        "small_bytes": m.catalog.small_bytes,
                        "rejected": rejected,
                        "foreign": foreign,
                    }),
                )
            }
        };
        let metrics = self.metrics.snapshot();
        let pids = self.pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        serde_json::json!({
            "agent_pid": std::process::id(),
            "socket": self.socket_path,
            "model_dir": self.model_dir,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "mirror": mirror_state,
            "catalog": entries,
            "files": files,
            "bytes_resident": resident,
            "bytes_reserved": reserved,
            "memory_limit": self.memory_limit,
            "expire_time_sec": self.expire.as_secs(),
            "bytes_by_source": {
                "store": metrics.bytes_store,
                "peer": metrics.bytes_peer,
                "local": metrics.bytes_local,
            },
            "metrics": metrics,
            "peers": self.fetcher.status(),
            "registered_pids": pids,
        })
    }
}

/// `(st_dev, st_ino)` -> path below MODEL_DIR of the placeholders of `files`.
fn placeholder_ids(model_dir: &Path, files: &[Arc<LargeFile>]) -> HashMap<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .filter_map(|f| {
            let m = std::fs::symlink_metadata(model_dir.join(&f.rel_path)).ok()?;
            Some(((m.dev(), m.ino()), f.rel_path.clone()))
        })
        .collect()
}

/// Directory part of a relative path ("" at the top).
fn parent_dir(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes_are_octal_and_at_most_0777() {
        assert_eq!(parse_socket_mode("0666").unwrap(), 0o666);
        assert_eq!(parse_socket_mode(" 660 ").unwrap(), 0o660);
        assert_eq!(parse_socket_mode("0o600").unwrap(), 0o600);
        for bad in ["", "rw-rw-rw-", "0888", "01777", "-1"] {
            let e = parse_socket_mode(bad).unwrap_err().to_string();
            assert!(e.contains(SOCKET_MODE_ENV), "{bad}: {e}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("a/b"), "a/b/");
        assert_eq!(normalize_prefix("a/b/"), "a/b/");
        assert_eq!(
            lock_path(Path::new("/tmp/x.sock")),
            PathBuf::from("/tmp/x.sock.lock")
        );
        assert_eq!(parent_dir("a/b/c.bin"), "a/b");
        assert_eq!(parent_dir("c.bin"), "");
        let auto = auto_memory_limit();
        assert!(auto > 0 && auto <= mem_total().unwrap());
    }
}

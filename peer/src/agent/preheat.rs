//! `PREFETCH` and `EVICT`: operators preheat a node before a rollout, or free
//! its memory after one (`ossc prefetch PATH`, `ossc evict PATH`).
//!
//! Design decisions:
//! - A PATH names a file or a directory of the mirror, given relative to
//!   MODEL_DIR, as an absolute path inside MODEL_DIR, or as an
//!   `oss://`/`s3://` URL under `OSS_PATH`; "" (or MODEL_DIR itself) is the
//!   whole model. Anything outside is refused with EINVAL, a PATH that names
//!   nothing with ENOENT.
//! - Prefetch goes through the cache's own prefetch (same window, same memory
//!   rules as the start-up prefetch), so a preheat can never take memory from
//!   a file a process is using.
//! - Evict releases only files no process references (the same `/proc` check
//!   as the memory cap); the others are reported, never forced out.
//! - Both are operator requests: only root or the agent's own user may send
//!   them (EPERM otherwise), even when the socket is open to every user.
//! - Whoever runs the agent may also prefetch one object by key through a
//!   [`PrefetchHandle`] (the peer layer does when a peer asks for an object
//!   this node has not started): only an object the mirror lists with the
//!   same ETag and size, through the same cache prefetch.

use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use super::cache::{EvictOutcome, FileState, LargeFile};
use super::keys::normalize_request_path;
use super::mirror::Entry;
use super::protocol::Response;
use super::{Agent, MirrorState, Mirrored};

/// Bytes per gigabyte for the reported rate (decimal, like link rates).
const BYTES_PER_GB: f64 = 1e9;

/// Maps PATH to a path relative to MODEL_DIR ("" for all of it).
pub fn relative_path(
    path: &str,
    model_dir: &Path,
    bucket: &str,
    prefix: &str,
) -> Result<String, String> {
    let rel = if let Some(url) = path
        .strip_prefix("oss://")
        .or_else(|| path.strip_prefix("s3://"))
    {
        let (b, key) = url.split_once('/').unwrap_or((url, ""));
        if b != bucket {
            return Err(format!("{path} is not in this agent's bucket ({bucket})"));
        }
        let under = key
            .strip_prefix(prefix)
            .or_else(|| (format!("{key}/") == prefix).then_some(""))
            .ok_or_else(|| format!("{path} is not under OSS_PATH oss://{bucket}/{prefix}"))?;
        under.to_string()
    } else if path.starts_with('/') {
        let p = Path::new(path);
        let under = p
            .strip_prefix(model_dir)
            .map_err(|_| format!("{path} is not inside MODEL_DIR {}", model_dir.display()))?;
        under
            .to_str()
            .ok_or_else(|| format!("{path} is not UTF-8"))?
            .to_string()
    } else {
        path.to_string()
    };
    normalize_request_path(&rel).ok_or_else(|| format!("{path} leaves MODEL_DIR"))
}

/// Whether `candidate` is `rel` or lies under the directory `rel`.
fn is_under(candidate: &str, rel: &str) -> bool {
    rel.is_empty()
        || candidate == rel
        || candidate
            .strip_prefix(rel)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Agent {
    /// The large files under PATH, in prefetch order, and how many small
    /// (already on-disk) files it names too.
    async fn select(
        &self,
        path: &str,
    ) -> Result<(Arc<super::Mirrored>, Vec<Arc<LargeFile>>, usize), (i32, String)> {
        let rel = relative_path(path, &self.model_dir, &self.bucket, &self.prefix)
            .map_err(|m| (libc::EINVAL, m))?;
        let m = self.mirrored().await?;
        let files: Vec<Arc<LargeFile>> = m
            .cache
            .files()
            .iter()
            .filter(|f| is_under(&f.rel_path, &rel))
            .cloned()
            .collect();
        let small = m
            .catalog
            .entries
            .iter()
            .filter(|(p, e)| matches!(e, Entry::Small { .. }) && is_under(p, &rel))
            .count();
        if files.is_empty() && small == 0 {
            return Err((
                libc::ENOENT,
                format!(
                    "nothing under {path:?} in the mirror of oss://{}/{}",
                    self.bucket, self.prefix
                ),
            ));
        }
        Ok((m, files, small))
    }

    /// `PREFETCH`: starts fetching; with `wait`, reports once every file is
    /// in memory or failed.
    pub(super) async fn prefetch_path(&self, uid: Option<u32>, path: &str, wait: bool) -> Response {
        if !is_operator(uid) {
            return not_operator("PREFETCH");
        }
        let (m, files, small) = match self.select(path).await {
            Ok(s) => s,
            Err((errno, message)) => return Response::err(errno, message),
        };
        let bytes: u64 = files.iter().map(|f| f.meta.size).sum();
        tracing::info!(path, files = files.len(), bytes, wait, "prefetch requested");
        let started = Instant::now();
        if !wait {
            let cache = m.cache.clone();
            let queued = files.clone();
            tokio::spawn(async move { cache.prefetch(queued).await });
            return report(serde_json::json!({
                "path": path,
                "files": files.len(),
                "bytes": bytes,
                "small_files": small,
                "waited": false,
            }));
        }
        m.cache.prefetch(files.clone()).await;
        let (mut ready, mut ready_bytes, mut store, mut peer) = (0usize, 0u64, 0u64, 0u64);
        let mut failed = Vec::new();
        for f in &files {
            match m.cache.settled(f).await {
                FileState::Ready { .. } => {
                    ready += 1;
                    ready_bytes += f.meta.size;
                }
                FileState::Failed { errno, error } => failed.push(serde_json::json!({
                    "path": f.rel_path, "errno": errno, "error": error,
                })),
                FileState::Pending | FileState::Fetching { .. } => failed.push(serde_json::json!({
                    "path": f.rel_path, "errno": libc::EAGAIN,
                    "error": "released again before the prefetch finished (memory cap)",
                })),
            }
        }
        for s in m.cache.status(Instant::now()) {
            if let Some(from) = s.fetched_from.filter(|_| is_selected(&files, &s.path)) {
                store += from.store;
                peer += from.peer;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        report(serde_json::json!({
            "path": path,
            "files": files.len(),
            "bytes": bytes,
            "small_files": small,
            "waited": true,
            "ready": ready,
            "ready_bytes": ready_bytes,
            "failed": failed,
            "seconds": seconds,
            "gb_per_s": ready_bytes as f64 / BYTES_PER_GB / seconds.max(1e-9),
            "bytes_by_source": {"store": store, "peer": peer},
        }))
    }

    /// `EVICT`: releases the unreferenced files under PATH, reports the rest.
    pub(super) async fn evict_path(&self, uid: Option<u32>, path: &str) -> Response {
        if !is_operator(uid) {
            return not_operator("EVICT");
        }
        let (m, files, _) = match self.select(path).await {
            Ok(s) => s,
            Err((errno, message)) => return Response::err(errno, message),
        };
        let mut evicted = Vec::new();
        let mut in_use = Vec::new();
        let mut fetching = Vec::new();
        let mut freed = 0u64;
        let mut not_resident = 0usize;
        for (f, outcome) in m.cache.evict(&files) {
            match outcome {
                EvictOutcome::Evicted => {
                    freed += f.meta.size;
                    evicted.push(f.rel_path.clone());
                }
                EvictOutcome::InUse => in_use.push(f.rel_path.clone()),
                EvictOutcome::Fetching => fetching.push(f.rel_path.clone()),
                EvictOutcome::NotResident => not_resident += 1,
            }
        }
        tracing::info!(
            path,
            evicted = evicted.len(),
            freed,
            in_use = in_use.len(),
            "evict requested"
        );
        report(serde_json::json!({
            "path": path,
            "evicted": evicted,
            "bytes_freed": freed,
            "in_use": in_use,
            "fetching": fetching,
            "not_resident": not_resident,
        }))
    }
}

/// Asks a running agent to prefetch one object by key; handed to
/// [`super::run_agent`] in its options, it reaches the agent once started.
#[derive(Clone, Default)]
pub struct PrefetchHandle(Arc<OnceLock<Weak<Agent>>>);

impl PrefetchHandle {
    pub(super) fn attach(&self, agent: &Arc<Agent>) {
        let _ = self.0.set(Arc::downgrade(agent));
    }

    /// Prefetches the object `key` (a key of the agent's bucket) if the
    /// mirror lists it with `etag` and `size`. True when it does, or may
    /// (the agent is still starting or listing: it is prefetched then if
    /// listed); false when it does not, or the agent stopped. Returns at
    /// once; call it inside the agent's runtime.
    pub fn prefetch_object(&self, key: &str, etag: &str, size: u64) -> bool {
        let Some(agent) = self.0.get() else {
            return true;
        };
        let Some(agent) = agent.upgrade() else {
            return false;
        };
        let Some(rel) = key.strip_prefix(agent.prefix.as_str()) else {
            return false;
        };
        let (rel, etag) = (rel.to_string(), etag.to_string());
        let state = agent.mirror.borrow().clone();
        match state {
            MirrorState::Ready(m) => agent.prefetch_listed(&m, &rel, &etag, size),
            MirrorState::Failed { .. } => false,
            MirrorState::Mirroring => {
                tokio::spawn(async move {
                    if let Ok(m) = agent.mirrored().await {
                        agent.prefetch_listed(&m, &rel, &etag, size);
                    }
                });
                true
            }
        }
    }
}

impl Agent {
    /// Starts prefetching `rel` if the mirror lists it as a large object
    /// with `etag` and `size`; whether it does.
    fn prefetch_listed(&self, m: &Arc<Mirrored>, rel: &str, etag: &str, size: u64) -> bool {
        let Some(file) = m.cache.get(rel) else {
            return false;
        };
        if file.meta.etag != etag || file.meta.size != size {
            return false;
        }
        if matches!(file.state(), FileState::Pending | FileState::Failed { .. }) {
            tracing::info!(path = rel, "a peer asked for this object; prefetching it");
            let cache = m.cache.clone();
            let file = file.clone();
            tokio::spawn(async move { cache.prefetch(vec![file]).await });
        }
        true
    }
}

/// Root or the agent's own user (kernel-reported peer credentials).
fn is_operator(uid: Option<u32>) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    matches!(uid, Some(u) if u == 0 || u == own)
}

fn not_operator(verb: &str) -> Response {
    Response::err(
        libc::EPERM,
        format!("{verb} is for root or the agent's own user"),
    )
}

fn is_selected(files: &[Arc<LargeFile>], rel: &str) -> bool {
    files.iter().any(|f| f.rel_path == rel)
}

fn report(v: serde_json::Value) -> Response {
    Response::Report(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_mirror_only() {
        let md = Path::new("/models/q");
        let rel = |p: &str| relative_path(p, md, "bkt", "m/q/");
        assert_eq!(rel("a/b.safetensors").unwrap(), "a/b.safetensors");
        assert_eq!(rel("./a/").unwrap(), "a");
        assert_eq!(rel("").unwrap(), "");
        assert_eq!(rel("/models/q").unwrap(), "");
        assert_eq!(rel("/models/q/a/x.bin").unwrap(), "a/x.bin");
        assert_eq!(rel("oss://bkt/m/q/a/x.bin").unwrap(), "a/x.bin");
        assert_eq!(rel("s3://bkt/m/q/").unwrap(), "");
        assert_eq!(rel("oss://bkt/m/q").unwrap(), "");
        for bad in [
            "/models/other/x",
            "/models/qq/x",
            "oss://other/m/q/x",
            "oss://bkt/m/x",
            "../x",
            "a/../../x",
        ] {
            assert!(rel(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn selection_is_by_whole_path_segments() {
        assert!(is_under("a/b.bin", ""));
        assert!(is_under("a/b.bin", "a"));
        assert!(is_under("a/b.bin", "a/b.bin"));
        assert!(!is_under("ab/c.bin", "a"));
        assert!(!is_under("a.bin", "a"));
    }
}

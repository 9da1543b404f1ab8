//! `ossc cp`: download every object under a prefix into a local directory.
//!
//! All objects go through one [`FetchEngine`], so the engine-wide in-flight
//! limit (`prefetch.vcpus × prefetch.workers`) governs the whole copy and
//! earlier objects finish first. Each file is created at its final size and
//! filled with positional writes straight from the response bodies (no
//! intermediate buffers); it is renamed into place only after its CRC-64 has
//! been checked, so an interrupted copy never leaves a complete-looking file
//! with wrong bytes.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::{list_all, ObjectMeta, RangeSink};

/// How often the progress line is refreshed.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopySummary {
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub requests: u64,
    pub retries: u64,
    pub crc64_verified: usize,
}

impl CopySummary {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e9
    }
}

impl std::fmt::Display for CopySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files, {} bytes in {:.2} s = {:.2} GB/s ({} requests, {} retries, CRC-64 verified on {} files; source: store)",
            self.files,
            self.bytes,
            self.seconds,
            self.gbps(),
            self.requests,
            self.retries,
            self.crc64_verified
        )
    }
}

/// Maps an object key under `prefix` to a safe relative path, or explains why not.
pub fn local_relative_path(key: &str, prefix: &str) -> Result<PathBuf> {
    let rel = key.strip_prefix(prefix).unwrap_or(key);
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\0') {
        bail!("object key {key:?} has no safe local name");
    }
    let mut out = PathBuf::new();
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            bail!("object key {key:?} would escape the destination (segment {seg:?})");
        }
        out.push(seg);
    }
    Ok(out)
}

/// Downloads every object under `prefix` into `dest`. `show_progress` draws a
/// progress bar on stderr.
pub async fn copy_prefix(
    engine: Arc<FetchEngine>,
    prefix: &str,
    dest: &Path,
    show_progress: bool,
) -> Result<CopySummary> {
    let client = engine.client().clone();
    let objects: Vec<ObjectMeta> = list_all(client.as_ref(), prefix)
        .await
        .with_context(|| format!("listing s3://{}/{prefix}", client.bucket()))?
        .into_iter()
        .filter(|o| !o.key.ends_with('/'))
        .collect();
    let mut plan = Vec::new();
    for o in objects {
        match local_relative_path(&o.key, prefix) {
            Ok(rel) => plan.push((o, dest.join(rel))),
            Err(e) => tracing::warn!("skipping: {e:#}"),
        }
    }
    let total: u64 = plan.iter().map(|(o, _)| o.size).sum();
    let progress = Arc::new(FetchProgress::default());
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar
    });

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (meta, path) in plan {
        let engine = engine.clone();
        let progress = progress.clone();
        tasks.spawn(async move { fetch_one(&engine, meta, &path, progress).await });
    }
    let mut summary = CopySummary::default();
    let mut ticker = tokio::time::interval(PROGRESS_TICK);
    let mut first_error: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                None => break,
                Some(Ok(Ok(verified))) => {
                    summary.files += 1;
                    summary.crc64_verified += usize::from(verified);
                }
                Some(Ok(Err(e))) => { first_error.get_or_insert(e); }
                Some(Err(e)) => { first_error.get_or_insert(e.into()); }
            },
            _ = ticker.tick() => {
                if let Some(bar) = &bar { bar.set_position(progress.bytes_done.load(Ordering::Relaxed)); }
            }
        }
    }
    if let Some(bar) = &bar {
        bar.set_position(progress.bytes_done.load(Ordering::Relaxed));
        bar.finish_and_clear();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summary.seconds = start.elapsed().as_secs_f64();
    summary.bytes = total;
    summary.requests = progress.requests.load(Ordering::Relaxed);
    summary.retries = progress.retries.load(Ordering::Relaxed);
    Ok(summary)
}

async fn fetch_one(
    engine: &FetchEngine,
    meta: ObjectMeta,
    path: &Path,
    progress: Arc<FetchProgress>,
) -> Result<bool> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension(format!(
        "{}ossc-partial",
        path.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.set_len(meta.size)?;
    let sink: Arc<dyn RangeSink> = Arc::new(file);
    let fetched = match engine.fetch_object(&meta, sink, progress).await {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(anyhow::Error::new(e).context(format!("downloading {}", meta.key)));
        }
    };
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(fetched.crc64_verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_keys_never_escape_the_destination() {
        assert_eq!(
            local_relative_path("m/a/b.json", "m/").unwrap(),
            PathBuf::from("a/b.json")
        );
        for bad in [
            "m/../etc/passwd",
            "m/a/../../x",
            "m//x",
            "m/",
            "m/./x",
            "m/a\0b",
        ] {
            assert!(local_relative_path(bad, "m/").is_err(), "{bad:?} accepted");
        }
    }
}

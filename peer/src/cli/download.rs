//! `ossc cp`: download every object under a prefix into a local directory.
//!
//! All objects go through one [`FetchEngine`], so the engine-wide in-flight
//! limit (`prefetch.vcpus × prefetch.workers`) governs the whole copy and
//! earlier objects finish first. Each file is written into its own randomly
//! named hidden temp file (`safe_dir`: `O_EXCL | O_NOFOLLOW`, so no temp name
//! can collide with a key or another download, or follow a planted symlink),
//! created at its final size and filled with positional writes straight from
//! the response bodies (no intermediate buffers). It is renamed into place
//! only after the bytes *on disk* have been read back and match the CRC-64 of
//! the bytes received (itself checked against the store's), so an
//! interrupted or racing copy never leaves a complete-looking file with wrong
//! bytes. Unlike the agent's mirror, the copy does not fsync (a crash of the
//! machine may lose recently copied files, as with `cp`). Directories under the destination are created and
//! walked without following symlinks.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::{list_all, ObjectMeta, RangeSink};

use crate::safe_dir::{Replace, SafeDir};

/// Mode of the files and directories `ossc cp` creates.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

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
    let root = Arc::new(
        SafeDir::open_root(dest, DIR_MODE)
            .with_context(|| format!("creating {}", dest.display()))?,
    );
    let mut plan = Vec::new();
    for o in objects {
        match local_relative_path(&o.key, prefix) {
            Ok(rel) => plan.push((o, rel)),
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
    for (meta, rel) in plan {
        let engine = engine.clone();
        let progress = progress.clone();
        let root = root.clone();
        tasks.spawn(async move { fetch_one(&engine, meta, &root, &rel, progress).await });
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
    root: &SafeDir,
    rel: &Path,
    progress: Arc<FetchProgress>,
) -> Result<bool> {
    let rel = rel.to_str().context("local name is not UTF-8")?;
    let (parent, leaf) = rel.rsplit_once('/').unwrap_or(("", rel));
    let dir = root
        .mkdir_all(parent, DIR_MODE)
        .with_context(|| format!("creating directory {parent:?}"))?;
    // No fsync: a copy is not a durability point (neither is `cp` nor
    // s5cmd), and it measured as the largest cost of publishing.
    let tmp = dir
        .create_temp("", FILE_MODE)
        .with_context(|| format!("creating a temp file for {rel:?}"))?
        .without_fsync();
    tmp.file().set_len(meta.size)?;
    let sink: Arc<dyn RangeSink> = Arc::new(tmp.file().try_clone()?);
    let fetched = engine
        .fetch_object(&meta, sink, progress)
        .await
        .with_context(|| format!("downloading {}", meta.key))?;
    let (leaf, size, crc64) = (leaf.to_string(), meta.size, fetched.crc64);
    tokio::task::spawn_blocking(move || tmp.publish(&leaf, size, Some(crc64), Replace::Entry))
        .await?
        .with_context(|| format!("verifying and publishing {rel:?}"))?;
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

    use ossc_core::fetch::FetchConfig;
    use ossc_core::object_client::mock::{pseudo_random_bytes, MockObjectClient};

    fn engine(objects: &[(&str, Vec<u8>)]) -> Arc<FetchEngine> {
        let mock = Arc::new(MockObjectClient::new("b").with_chunk_size(1 << 10));
        for (key, data) in objects {
            mock.put_object(*key, data.clone());
        }
        Arc::new(FetchEngine::new(
            mock,
            FetchConfig {
                part_size: 4 << 10,
                max_in_flight: 16,
                ..Default::default()
            },
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_named_like_a_temp_file_is_copied_exactly() {
        // `a.json` takes many parts; the key named like its old temp file
        // lands while `a.json` is still downloading.
        let objects = [
            ("m/a.json", pseudo_random_bytes(1 << 20, 1)),
            ("m/a.json.ossc-partial", b"tiny".to_vec()),
            ("m/.ossc-tmp.0123456789abcdef", b"also tiny".to_vec()),
            ("m/sub/b.bin", pseudo_random_bytes(10_000, 2)),
        ];
        let dest = tempfile::tempdir().unwrap();
        let summary = copy_prefix(engine(&objects), "m/", dest.path(), false)
            .await
            .unwrap();
        assert_eq!(summary.files, objects.len());
        for (key, data) in &objects {
            let got = std::fs::read(dest.path().join(key.strip_prefix("m/").unwrap())).unwrap();
            assert!(got == *data, "{key}: wrong bytes");
        }
        let mut names: Vec<String> = std::fs::read_dir(dest.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ".ossc-tmp.0123456789abcdef",
                "a.json",
                "a.json.ossc-partial",
                "sub"
            ],
            "no temp file left"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_directory_in_the_destination_is_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        let objects = [("m/sub/b.bin", b"payload".to_vec())];
        let err = copy_prefix(engine(&objects), "m/", &dest, false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("sub"), "{err:#}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}

//! Mirroring a listing into MODEL_DIR.
//!
//! Design decisions:
//! - The agent never destroys what it did not create. Every path it writes is
//!   recorded in `MODEL_DIR/.ossc-manifest.json` (see `manifest`); at startup a
//!   path that exists but is not in the previous manifest is *foreign*: it is
//!   left byte-for-byte intact, reported with an error naming it, and OPENs of
//!   it are answered `ERR EEXIST`. The manifest is written twice: once before
//!   touching the tree (old ∪ new entries, so a crash mid-mirror leaves nothing
//!   that would later look foreign) and once at the end (new entries only).
//! - Nothing in MODEL_DIR is followed: every create, replace and delete goes
//!   through `safe_dir` (directory fds, `O_NOFOLLOW`, `O_EXCL`), so a symlink
//!   planted anywhere inside MODEL_DIR cannot redirect a write or a delete
//!   outside it.
//! - No wrong byte is published. Small objects become real files: each is
//!   downloaded into its own randomly named temp file, read back and checked
//!   against the CRC-64 of the bytes received (which the fetch engine checked
//!   against the store's), fsynced and only then renamed into place; the CRC-64
//!   goes into the manifest. On restart a small file is reused only if its
//!   content still hashes to that CRC (and to the listing's, when the store
//!   gives one); otherwise it is refetched. Large objects become sparse
//!   placeholders of the exact size, so `stat`/`ls`/`glob` work without the
//!   hook.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::ObjectMeta;

use super::keys::{self, KeyKind};
use super::manifest::MANIFEST_VERSION;
pub use super::manifest::{Manifest, ManifestFile, ManifestKind};
use crate::safe_dir::{Kind, Replace, SafeDir, Stat};

/// Small files downloaded concurrently (each is one or a few ranged GETs; the
/// engine's in-flight limit still applies across all of them).
pub const SMALL_FILE_CONCURRENCY: usize = 64;

/// Mode of files the agent creates (read-only models; owner may replace).
const FILE_MODE: u32 = 0o644;
/// Mode of directories the agent creates.
const DIR_MODE: u32 = 0o755;

/// How an OPEN of a mirrored path is answered.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A real file on disk: PASS.
    Small { key: String, size: u64 },
    /// A placeholder whose bytes the agent serves from memory.
    Large { meta: ObjectMeta },
    /// A pre-existing file not created by the agent sits where the object goes.
    Foreign { key: String, what: String },
    /// The key could not be mirrored (validation).
    Rejected { key: String, reason: String },
    /// Creating or downloading it failed.
    Failed {
        key: String,
        errno: i32,
        error: String,
    },
}

/// The result of mirroring: every relative path that corresponds to an object.
#[derive(Debug, Default)]
pub struct Catalog {
    pub entries: HashMap<String, Entry>,
    pub rejected: Vec<(String, String)>,
    pub foreign: Vec<String>,
    pub small_bytes: u64,
}

impl Catalog {
    pub fn large(&self) -> impl Iterator<Item = (&String, &ObjectMeta)> {
        self.entries.iter().filter_map(|(p, e)| match e {
            Entry::Large { meta } => Some((p, meta)),
            _ => None,
        })
    }
}

/// The lexical plan: which files and directories the listing asks for.
#[derive(Debug, Default)]
pub struct Plan {
    pub files: BTreeMap<String, ObjectMeta>,
    pub dirs: BTreeSet<String>,
    /// (key, reason); keys that cannot be expressed as a path are included.
    pub rejected: Vec<(String, String)>,
}

/// Validates every key (see `keys`), logging each rejection.
pub fn plan(prefix: &str, listing: &[ObjectMeta]) -> Plan {
    let mut plan = Plan::default();
    let mut marker_dirs = BTreeSet::new();
    for meta in listing {
        match keys::classify_key(prefix, &meta.key, meta.size) {
            Ok(KeyKind::File(rel)) => {
                plan.files.insert(rel, meta.clone());
            }
            Ok(KeyKind::Directory(dir)) => {
                if !dir.is_empty() {
                    marker_dirs.insert(dir);
                }
            }
            Err(reason) => {
                tracing::warn!(key = %meta.key.escape_debug(), %reason, "object key rejected");
                plan.rejected.push((meta.key.clone(), reason.to_string()));
            }
        }
    }
    let conflicts = keys::file_dir_conflicts(
        plan.files.keys().map(String::as_str),
        marker_dirs.iter().map(String::as_str),
    );
    for rel in conflicts {
        let meta = plan.files.remove(&rel).expect("conflict comes from files");
        let reason = keys::KeyRejection::FileAndDirectory.to_string();
        tracing::warn!(key = %meta.key.escape_debug(), %reason, "object key rejected");
        plan.rejected.push((meta.key, reason));
    }
    for rel in plan.files.keys() {
        plan.dirs.extend(keys::ancestors(rel).map(str::to_string));
    }
    for d in &marker_dirs {
        plan.dirs.extend(keys::ancestors(d).map(str::to_string));
    }
    plan.dirs.extend(marker_dirs);
    plan
}

/// Settings the mirror needs.
pub struct MirrorParams<'a> {
    pub model_dir: &'a Path,
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub small_file_bytes: u64,
    pub engine: &'a FetchEngine,
}

/// One small file to publish: reuse what is on disk if its content checks out,
/// else download it.
struct SmallJob {
    rel: String,
    meta: ObjectMeta,
    /// CRC-64 the manifest recorded for the file on disk, if it may be reused.
    reuse_crc64: Option<u64>,
    /// Whether an entry of ours is at the path (replaced, not refused).
    replace: Replace,
}

/// Creates directories, downloads small files, creates placeholders.
pub async fn mirror(params: &MirrorParams<'_>, listing: &[ObjectMeta]) -> io::Result<Catalog> {
    let model_dir = params.model_dir;
    let root = Arc::new(SafeDir::open_root(model_dir, DIR_MODE)?);
    let plan = plan(params.prefix, listing);
    let old = Manifest::load(&root);
    let mut catalog = Catalog {
        rejected: plan.rejected.clone(),
        ..Default::default()
    };
    for (key, reason) in &plan.rejected {
        // A rejected file key whose path is a directory of the mirror stays a
        // plain directory (PASS), not an error.
        if let Some(rel) = key
            .strip_prefix(params.prefix)
            .filter(|r| !plan.dirs.contains(*r))
        {
            catalog.entries.insert(
                rel.to_string(),
                Entry::Rejected {
                    key: key.clone(),
                    reason: reason.clone(),
                },
            );
        }
    }

    let mut new = Manifest {
        version: MANIFEST_VERSION,
        bucket: params.bucket.to_string(),
        prefix: params.prefix.to_string(),
        ..Default::default()
    };
    for (rel, meta) in &plan.files {
        let kind = if meta.size <= params.small_file_bytes {
            ManifestKind::Small
        } else {
            ManifestKind::Placeholder
        };
        new.files.insert(
            rel.clone(),
            ManifestFile {
                key: meta.key.clone(),
                size: meta.size,
                etag: meta.etag.clone(),
                kind,
                crc64: None,
            },
        );
    }
    // Phase 1 (read-only but for emptied directories of ours): which
    // directories are blocked by foreign entries, which files collide with them.
    let mut blocked_dirs: BTreeMap<String, String> = BTreeMap::new();
    let mut dirs_to_create = Vec::new();
    let mut dirs_to_replace = Vec::new();
    for dir in &plan.dirs {
        if keys::ancestors(dir).any(|a| blocked_dirs.contains_key(a)) {
            continue;
        }
        match root.lstat(dir) {
            Ok(Some(Stat {
                kind: Kind::Dir, ..
            })) => {
                if old.dirs.contains(dir) {
                    new.dirs.insert(dir.clone());
                }
            }
            // Ours from an earlier listing: a file became a directory.
            Ok(Some(Stat {
                kind: Kind::File, ..
            })) if old.files.contains_key(dir) => dirs_to_replace.push(dir.clone()),
            Ok(Some(st)) => {
                let what = st.kind.describe().to_string();
                tracing::error!(path = %model_dir.join(dir).display(), "foreign {what} blocks a directory of the mirror; left intact");
                blocked_dirs.insert(dir.clone(), what);
            }
            Ok(None) => dirs_to_create.push(dir.clone()),
            Err(e) => {
                let what = format!("unusable path ({e})");
                tracing::error!(path = %model_dir.join(dir).display(), "{what} blocks a directory of the mirror; left intact");
                blocked_dirs.insert(dir.clone(), what);
            }
        }
    }
    let mut actions = Vec::new();
    for (rel, meta) in &plan.files {
        let foreign = |what: String, catalog: &mut Catalog, new: &mut Manifest| {
            catalog.foreign.push(rel.clone());
            new.files.remove(rel);
            catalog.entries.insert(
                rel.clone(),
                Entry::Foreign {
                    key: meta.key.clone(),
                    what,
                },
            );
        };
        if let Some((dir, what)) = keys::ancestors(rel).find_map(|a| blocked_dirs.get_key_value(a))
        {
            foreign(format!("{what} at {dir}"), &mut catalog, &mut new);
            continue;
        }
        let ours = old.files.get(rel);
        let on_disk_size = match root.lstat(rel) {
            Ok(Some(st)) if ours.is_some() && st.kind == Kind::File => Some(st.size),
            Ok(Some(st))
                if ours.is_some() && st.kind == Kind::Dir && root.remove_dir(rel).is_ok() =>
            {
                // Ours from an earlier listing: an empty directory became a file.
                None
            }
            Ok(Some(st)) => {
                let what = st.kind.describe().to_string();
                tracing::error!(path = %model_dir.join(rel).display(), key = %meta.key, "foreign {what} collides with an object; left intact, OPENs of it fail with EEXIST");
                foreign(what, &mut catalog, &mut new);
                continue;
            }
            Ok(None) => None,
            Err(e) => {
                let what = format!("unusable path ({e})");
                tracing::error!(path = %model_dir.join(rel).display(), key = %meta.key, "{what}; left intact, OPENs of it fail with EEXIST");
                foreign(what, &mut catalog, &mut new);
                continue;
            }
        };
        actions.push((rel.clone(), meta.clone(), ours.cloned(), on_disk_size));
    }

    // Phase 2: the intent record (old ∪ new, foreign paths excluded) before
    // anything is created.
    let mut intent = new.clone();
    for (rel, f) in &old.files {
        intent.files.entry(rel.clone()).or_insert_with(|| f.clone());
    }
    intent.dirs.extend(old.dirs.iter().cloned());
    intent.dirs.extend(dirs_to_create.iter().cloned());
    intent.dirs.extend(dirs_to_replace.iter().cloned());
    intent.store(&root)?;

    // Phase 3: create.
    for dir in dirs_to_replace {
        root.remove_file(&dir)?;
        root.mkdir(&dir, DIR_MODE)?;
        new.dirs.insert(dir);
    }
    for dir in dirs_to_create {
        root.mkdir(&dir, DIR_MODE)?;
        new.dirs.insert(dir);
    }
    let mut small_jobs = Vec::new();
    for (rel, meta, ours, on_disk_size) in actions {
        let replace = if on_disk_size.is_some() {
            Replace::Entry
        } else {
            Replace::Never
        };
        if meta.size <= params.small_file_bytes {
            let reuse_crc64 = ours
                .as_ref()
                .filter(|o| {
                    o.kind == ManifestKind::Small
                        && o.etag == meta.etag
                        && o.size == meta.size
                        && on_disk_size == Some(meta.size)
                })
                .and_then(|o| o.crc64);
            catalog.entries.insert(
                rel.clone(),
                Entry::Small {
                    key: meta.key.clone(),
                    size: meta.size,
                },
            );
            small_jobs.push(SmallJob {
                rel,
                meta,
                reuse_crc64,
                replace,
            });
        } else {
            let unchanged = ours
                .as_ref()
                .is_some_and(|o| o.kind == ManifestKind::Placeholder)
                && on_disk_size == Some(meta.size);
            if !unchanged {
                write_placeholder(&root, &rel, meta.size, replace)?;
            }
            catalog.entries.insert(rel, Entry::Large { meta });
        }
    }

    // Small files, concurrently.
    let results: Vec<(String, ObjectMeta, io::Result<u64>)> =
        futures::stream::iter(small_jobs.into_iter().map(|job| {
            let root = root.clone();
            async move {
                let res = publish_small(params.engine, root, &job).await;
                (job.rel, job.meta, res)
            }
        }))
        .buffer_unordered(SMALL_FILE_CONCURRENCY)
        .collect()
        .await;
    for (rel, meta, res) in results {
        match res {
            Ok(crc64) => {
                catalog.small_bytes += meta.size;
                if let Some(f) = new.files.get_mut(&rel) {
                    f.crc64 = Some(crc64);
                }
            }
            Err(e) => {
                tracing::error!(key = %meta.key, error = %e, "downloading small file failed");
                new.files.remove(&rel);
                let errno = match e.raw_os_error() {
                    Some(libc::EEXIST) => libc::EEXIST,
                    _ => libc::EIO,
                };
                catalog.entries.insert(
                    rel,
                    Entry::Failed {
                        key: meta.key.clone(),
                        errno,
                        error: e.to_string(),
                    },
                );
            }
        }
    }

    // Remove what we created earlier and the listing no longer has.
    for (rel, f) in &old.files {
        if new.files.contains_key(rel) || catalog.entries.contains_key(rel) {
            continue;
        }
        let is_ours = matches!(
            root.lstat(rel),
            Ok(Some(Stat { kind: Kind::File, size })) if size == f.size
        );
        if is_ours {
            if let Err(e) = root.remove_file(rel) {
                tracing::warn!(path = %model_dir.join(rel).display(), error = %e, "removing stale mirrored file failed");
            }
        }
    }
    for dir in old.dirs.iter().rev() {
        if !plan.dirs.contains(dir) {
            // Only succeeds when empty: never removes anything else.
            let _ = root.remove_dir(dir);
        }
    }
    new.store(&root)?;
    Ok(catalog)
}

/// Splits a relative path into its directory (empty for the top) and name.
fn split_parent(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// A sparse file of exactly `size` bytes, created atomically.
fn write_placeholder(root: &SafeDir, rel: &str, size: u64, replace: Replace) -> io::Result<()> {
    let (parent, leaf) = split_parent(rel);
    let tmp = root.create_temp(parent, FILE_MODE)?;
    tmp.file().set_len(size)?;
    tmp.publish(leaf, size, None, replace)?;
    Ok(())
}

/// Keeps the file on disk if its content still hashes to what the manifest
/// (and the listing, when it has a CRC) says; else downloads it. Returns the
/// CRC-64 of the file now published.
async fn publish_small(
    engine: &FetchEngine,
    root: Arc<SafeDir>,
    job: &SmallJob,
) -> io::Result<u64> {
    let meta = &job.meta;
    let mut replace = job.replace;
    if let Some(recorded) = job.reuse_crc64 {
        let (dir, rel, size) = (root.clone(), job.rel.clone(), meta.size);
        let on_disk = tokio::task::spawn_blocking(move || dir.crc64_of(&rel, size))
            .await
            .map_err(io::Error::other)?;
        let listed = meta.crc64.unwrap_or(recorded);
        match on_disk {
            Ok(crc) if crc == recorded && crc == listed => return Ok(crc),
            Ok(crc) => {
                tracing::warn!(key = %meta.key, on_disk = format_args!("{crc:#018x}"), recorded = format_args!("{recorded:#018x}"), "mirrored file's content changed; refetching")
            }
            Err(e) => {
                tracing::warn!(key = %meta.key, error = %e, "mirrored file unreadable; refetching")
            }
        }
        replace = Replace::Entry;
    }
    let (parent, leaf) = split_parent(&job.rel);
    let tmp = root.create_temp(parent, FILE_MODE)?;
    let received_crc64 = if meta.size == 0 {
        ossc_core::crc64::crc64(&[])
    } else {
        let sink = Arc::new(tmp.file().try_clone()?);
        engine
            .fetch_object(meta, sink, Arc::new(FetchProgress::default()))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
            .crc64
    };
    let (leaf, size) = (leaf.to_string(), meta.size);
    tokio::task::spawn_blocking(move || tmp.publish(&leaf, size, Some(received_crc64), replace))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            etag: format!("etag-{key}"),
            last_modified: None,
            crc64: None,
            checksums: Default::default(),
        }
    }

    #[test]
    fn plan_validates_keys_and_derives_directories() {
        let listing = [
            meta("p/", 0),
            meta("p/a/b/c.bin", 5),
            meta("p/a/", 0),
            meta("p/empty-dir/", 0),
            meta("p/x", 1),
            meta("p/x/y", 1),
            meta("p/../evil", 1),
        ];
        let plan = plan("p/", &listing);
        let files: Vec<&str> = plan.files.keys().map(String::as_str).collect();
        assert_eq!(files, vec!["a/b/c.bin", "x/y"]);
        let dirs: Vec<&str> = plan.dirs.iter().map(String::as_str).collect();
        assert_eq!(dirs, vec!["a", "a/b", "empty-dir", "x"]);
        let rejected: Vec<&str> = plan.rejected.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(rejected, vec!["p/../evil", "p/x"]);
    }

    #[test]
    fn placeholders_are_sparse_and_exact() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = SafeDir::open_root(dir.path(), DIR_MODE).unwrap();
        let p = dir.path().join("big.bin");
        write_placeholder(&root, "big.bin", 10 << 20, Replace::Never).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 10 << 20);
        assert!(m.blocks() * 512 < m.len());
        assert_eq!(m.mode() & 0o777, FILE_MODE);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    use ossc_core::fetch::FetchConfig;
    use ossc_core::object_client::list_all;
    use ossc_core::object_client::mock::{pseudo_random_bytes, MockObjectClient};

    /// A mock bucket `b`, an engine with small parts (many concurrent GETs
    /// per file) and the listing of prefix `p/`.
    struct Bucket {
        mock: Arc<MockObjectClient>,
        engine: FetchEngine,
    }

    impl Bucket {
        fn new(objects: &[(String, Vec<u8>)]) -> Bucket {
            let mock = Arc::new(MockObjectClient::new("b").with_chunk_size(7));
            for (key, data) in objects {
                mock.put_object(key.clone(), data.clone());
            }
            let engine = FetchEngine::new(
                mock.clone(),
                FetchConfig {
                    part_size: 61,
                    max_in_flight: 64,
                    ..Default::default()
                },
            );
            Bucket { mock, engine }
        }

        async fn mirror(&self, model_dir: &Path, small_file_bytes: u64) -> Catalog {
            let listing = list_all(self.mock.as_ref(), "p/").await.unwrap();
            let params = MirrorParams {
                model_dir,
                bucket: "b",
                prefix: "p/",
                small_file_bytes,
                engine: &self.engine,
            };
            mirror(&params, &listing).await.unwrap()
        }
    }

    /// Names that break naive temp naming: a long shared prefix, the old
    /// temp-name shapes, unicode, a name that is all prefix.
    fn hostile_small_files() -> Vec<(String, Vec<u8>)> {
        let long = "x".repeat(64);
        let mut names: Vec<String> = (0..40).map(|i| format!("{long}_{i:02}.json")).collect();
        names.push(format!(".{long}.ossc-tmp.{}", std::process::id()));
        names.push(TEMP_NAME_EXAMPLE.into());
        names.push("日本語_модель_🙂.json".into());
        names.push(format!("{}a", "y".repeat(240)));
        names.push(format!("{}b", "y".repeat(240)));
        names.push("config.json.ossc-partial".into());
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("p/{n}"),
                    pseudo_random_bytes(100 + 37 * i, i as u64),
                )
            })
            .collect()
    }

    const TEMP_NAME_EXAMPLE: &str = ".ossc-tmp.0123456789abcdef";

    fn assert_mirrored(model_dir: &Path, objects: &[(String, Vec<u8>)]) {
        let manifest = Manifest::parse(&std::fs::read(Manifest::path(model_dir)).unwrap()).unwrap();
        for (key, data) in objects {
            let rel = key.strip_prefix("p/").unwrap();
            let got = std::fs::read(model_dir.join(rel)).unwrap();
            assert!(got == *data, "{rel}: wrong bytes");
            assert_eq!(
                manifest.files[rel].crc64,
                Some(ossc_core::crc64::crc64(data)),
                "{rel}"
            );
        }
        let names: Vec<String> = std::fs::read_dir(model_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            objects.len() + 1,
            "no temp file left: {names:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn small_files_with_a_shared_name_prefix_each_get_their_own_bytes() {
        let objects = hostile_small_files();
        let bucket = Bucket::new(&objects);
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("model");
        let catalog = bucket.mirror(&model_dir, 1 << 20).await;
        let failed: Vec<_> = catalog
            .entries
            .values()
            .filter(|e| !matches!(e, Entry::Small { .. }))
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert_mirrored(&model_dir, &objects);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reuse_checks_content_and_refetches_a_changed_file() {
        let objects: Vec<(String, Vec<u8>)> = (0..10)
            .map(|i| {
                (
                    format!("p/f{i}.json"),
                    pseudo_random_bytes(100 + i, i as u64),
                )
            })
            .collect();
        let bucket = Bucket::new(&objects);
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("model");
        bucket.mirror(&model_dir, 1 << 20).await;
        // Same size, same manifest entry, other bytes.
        let (victim_key, victim_data) = &objects[3];
        let victim = model_dir.join(victim_key.strip_prefix("p/").unwrap());
        let mut wrong = victim_data.clone();
        wrong[0] ^= 0xff;
        std::fs::write(&victim, &wrong).unwrap();

        bucket.mock.reset_stats();
        bucket.mirror(&model_dir, 1 << 20).await;
        assert_mirrored(&model_dir, &objects);
        let refetched: BTreeSet<String> =
            bucket.mock.get_log().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            refetched,
            BTreeSet::from([victim_key.clone()]),
            "only the changed file is refetched"
        );

        // A manifest without CRCs (older agent): everything is refetched once.
        let mut m = Manifest::parse(&std::fs::read(Manifest::path(&model_dir)).unwrap()).unwrap();
        m.files.values_mut().for_each(|f| f.crc64 = None);
        m.store(&SafeDir::open_root(&model_dir, DIR_MODE).unwrap())
            .unwrap();
        bucket.mock.reset_stats();
        bucket.mirror(&model_dir, 1 << 20).await;
        assert!(bucket.mock.get_log().len() >= objects.len());
        assert_mirrored(&model_dir, &objects);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn planted_symlinks_and_manifests_never_reach_outside_model_dir() {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("model");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::create_dir_all(outside.join("empty")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        let victims = [
            "victim",
            "abs-victim",
            "tmp-victim",
            "big-victim",
            "manifest-victim",
            "target-victim",
        ];
        for v in victims {
            std::fs::write(outside.join(v), format!("precious {v}")).unwrap();
        }
        let pid = std::process::id();
        let link = |name: String, to: &str| {
            std::os::unix::fs::symlink(outside.join(to), model_dir.join(name)).unwrap()
        };
        // Every predictable name: temp names, the manifest's temp, a target,
        // a directory component.
        link(format!(".config.json.ossc-tmp.{pid}"), "tmp-victim");
        link(format!(".big.bin.ossc-tmp.{pid}"), "big-victim");
        link(format!(".ossc-manifest.json.tmp.{pid}"), "manifest-victim");
        link("link.json".into(), "target-victim");
        link("sub".into(), "sub");
        // A planted manifest claiming files and directories outside MODEL_DIR.
        let size = |v: &str| std::fs::metadata(outside.join(v)).unwrap().len();
        let entry = |size| ManifestFile {
            key: "p/x".into(),
            size,
            etag: "e".into(),
            kind: ManifestKind::Small,
            crc64: None,
        };
        let mut planted = Manifest {
            version: MANIFEST_VERSION,
            ..Default::default()
        };
        planted
            .files
            .insert("../outside/victim".into(), entry(size("victim")));
        let abs = outside.join("abs-victim").to_string_lossy().into_owned();
        planted.files.insert(abs, entry(size("abs-victim")));
        planted.dirs.insert("../outside/empty".into());
        std::fs::write(
            Manifest::path(&model_dir),
            serde_json::to_vec(&planted).unwrap(),
        )
        .unwrap();

        let objects = vec![
            ("p/config.json".to_string(), b"{\"a\": 1}".to_vec()),
            ("p/link.json".to_string(), b"{}".to_vec()),
            ("p/sub/inner.json".to_string(), b"{}".to_vec()),
            ("p/big.bin".to_string(), pseudo_random_bytes(5000, 1)),
        ];
        let bucket = Bucket::new(&objects);
        let catalog = bucket.mirror(&model_dir, 1000).await;

        for v in victims {
            assert_eq!(
                std::fs::read_to_string(outside.join(v)).unwrap(),
                format!("precious {v}"),
                "{v} changed"
            );
        }
        assert!(outside.join("empty").is_dir(), "outside directory removed");
        assert_eq!(std::fs::read_dir(outside.join("sub")).unwrap().count(), 0);
        assert_eq!(
            std::fs::read(model_dir.join("config.json")).unwrap(),
            objects[0].1
        );
        assert_eq!(
            std::fs::metadata(model_dir.join("big.bin")).unwrap().len(),
            5000
        );
        for rel in ["link.json", "sub/inner.json"] {
            assert!(
                matches!(catalog.entries[rel], Entry::Foreign { .. }),
                "{rel}: {:?}",
                catalog.entries[rel]
            );
        }
        // The planted manifest was not acted on; ours replaced it.
        let m = Manifest::parse(&std::fs::read(Manifest::path(&model_dir)).unwrap()).unwrap();
        let files: Vec<&str> = m.files.keys().map(String::as_str).collect();
        assert_eq!(files, vec!["big.bin", "config.json"]);
    }
}

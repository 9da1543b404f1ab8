//! Mirroring a listing into MODEL_DIR.
//!
//! Design decision: the agent never destroys what it did not create. Every path
//! it writes is recorded in `MODEL_DIR/.ossc-manifest.json`; at startup a path
//! that exists but is not in the previous manifest is *foreign*: it is left
//! byte-for-byte intact, reported with an error naming it, and OPENs of it are
//! answered `ERR EEXIST`. The manifest is written twice: once before touching
//! the tree (old ∪ new entries, so a crash mid-mirror leaves nothing that would
//! later look foreign) and once at the end (new entries only). Small objects
//! become real files (downloaded to a hidden temp name, CRC-checked by the fetch
//! engine, renamed into place); large objects become sparse placeholders of the
//! exact size, so `stat`/`ls`/`glob` work without the hook.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::keys::{self, KeyKind, MANIFEST_NAME};

/// Small files downloaded concurrently (each is one or a few ranged GETs; the
/// engine's in-flight limit still applies across all of them).
pub const SMALL_FILE_CONCURRENCY: usize = 64;

/// Mode of files the agent creates (read-only models; owner may replace).
const FILE_MODE: u32 = 0o644;
/// Mode of directories the agent creates.
const DIR_MODE: u32 = 0o755;
/// Manifest format version.
const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    Small,
    Placeholder,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub kind: ManifestKind,
}

/// What the agent created in MODEL_DIR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub bucket: String,
    pub prefix: String,
    pub files: BTreeMap<String, ManifestFile>,
    pub dirs: BTreeSet<String>,
}

impl Manifest {
    pub fn path(model_dir: &Path) -> PathBuf {
        model_dir.join(MANIFEST_NAME)
    }

    /// The previous manifest, or an empty one (missing or unreadable: then every
    /// existing path counts as foreign, the safe side).
    pub fn load(model_dir: &Path) -> Manifest {
        match std::fs::read(Self::path(model_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring unreadable {MANIFEST_NAME}");
                Manifest::default()
            }),
            Err(_) => Manifest::default(),
        }
    }

    pub fn store(&self, model_dir: &Path) -> io::Result<()> {
        let tmp = model_dir.join(format!("{MANIFEST_NAME}.tmp.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, Self::path(model_dir))
    }
}

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

/// Creates directories, downloads small files, creates placeholders.
pub async fn mirror(params: &MirrorParams<'_>, listing: &[ObjectMeta]) -> io::Result<Catalog> {
    let model_dir = params.model_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(model_dir)?;
    let plan = plan(params.prefix, listing);
    let old = Manifest::load(model_dir);
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
            },
        );
    }
    // Phase 1 (read-only): which directories are blocked by foreign entries,
    // which files collide with foreign entries.
    let mut blocked_dirs: BTreeMap<String, String> = BTreeMap::new();
    let mut dirs_to_create = Vec::new();
    let mut dirs_to_replace = Vec::new();
    for dir in &plan.dirs {
        if keys::ancestors(dir).any(|a| blocked_dirs.contains_key(a)) {
            continue;
        }
        let path = model_dir.join(dir);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {
                if old.dirs.contains(dir) {
                    new.dirs.insert(dir.clone());
                }
            }
            // Ours from an earlier listing: a file became a directory.
            Ok(m) if m.file_type().is_file() && old.files.contains_key(dir) => {
                dirs_to_replace.push(dir.clone())
            }
            Ok(m) => {
                let what = describe(&m);
                tracing::error!(path = %path.display(), "foreign {what} blocks a directory of the mirror; left intact");
                blocked_dirs.insert(dir.clone(), what);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => dirs_to_create.push(dir.clone()),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
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
        let path = model_dir.join(rel);
        let ours = old.files.get(rel);
        let on_disk_size = match std::fs::symlink_metadata(&path) {
            Ok(m) if ours.is_some() && m.file_type().is_file() => Some(m.len()),
            Ok(m) if ours.is_some() && m.file_type().is_dir() && is_empty_dir(&path) => {
                // Ours from an earlier listing: an empty directory became a file.
                std::fs::remove_dir(&path)?;
                None
            }
            Ok(m) => {
                let what = describe(&m);
                tracing::error!(path = %path.display(), key = %meta.key, "foreign {what} collides with an object; left intact, OPENs of it fail with EEXIST");
                foreign(what, &mut catalog, &mut new);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
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
    intent.store(model_dir)?;

    // Phase 3: create.
    for dir in dirs_to_replace {
        std::fs::remove_file(model_dir.join(&dir))?;
        create_dir(&model_dir.join(&dir))?;
        new.dirs.insert(dir);
    }
    for dir in dirs_to_create {
        create_dir(&model_dir.join(&dir))?;
        new.dirs.insert(dir);
    }
    let mut small_jobs = Vec::new();
    for (rel, meta, ours, on_disk_size) in actions {
        let path = model_dir.join(&rel);
        if meta.size <= params.small_file_bytes {
            let unchanged = ours.as_ref().is_some_and(|o| {
                o.kind == ManifestKind::Small && o.etag == meta.etag && o.size == meta.size
            }) && on_disk_size == Some(meta.size);
            catalog.entries.insert(
                rel.clone(),
                Entry::Small {
                    key: meta.key.clone(),
                    size: meta.size,
                },
            );
            if !unchanged {
                small_jobs.push((rel, meta));
            }
        } else {
            let unchanged = ours
                .as_ref()
                .is_some_and(|o| o.kind == ManifestKind::Placeholder)
                && on_disk_size == Some(meta.size);
            if !unchanged {
                write_placeholder(&path, meta.size)?;
            }
            catalog.entries.insert(rel, Entry::Large { meta });
        }
    }

    // Small files, concurrently.
    let results: Vec<(String, ObjectMeta, io::Result<()>)> =
        futures::stream::iter(small_jobs.into_iter().map(|(rel, meta)| async move {
            let res = download_small(params.engine, &model_dir.join(&rel), &meta).await;
            (rel, meta, res)
        }))
        .buffer_unordered(SMALL_FILE_CONCURRENCY)
        .collect()
        .await;
    for (rel, meta, res) in results {
        match res {
            Ok(()) => catalog.small_bytes += meta.size,
            Err(e) => {
                tracing::error!(key = %meta.key, error = %e, "downloading small file failed");
                new.files.remove(&rel);
                catalog.entries.insert(
                    rel,
                    Entry::Failed {
                        key: meta.key.clone(),
                        errno: libc::EIO,
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
        let path = model_dir.join(rel);
        if std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_file() && m.len() == f.size)
        {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "removing stale mirrored file failed");
            }
        }
    }
    for dir in old.dirs.iter().rev() {
        if !plan.dirs.contains(dir) {
            // Only succeeds when empty: never removes anything else.
            let _ = std::fs::remove_dir(model_dir.join(dir));
        }
    }
    new.store(model_dir)?;
    Ok(catalog)
}

fn create_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(DIR_MODE).create(path)
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

fn describe(m: &std::fs::Metadata) -> String {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink".into()
    } else if t.is_dir() {
        "directory".into()
    } else if t.is_file() {
        "file".into()
    } else {
        "special file".into()
    }
}

/// Hidden temp name next to `path` (same filesystem, so rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short: String = name.chars().take(64).collect();
    path.with_file_name(format!(".{short}.ossc-tmp.{}", std::process::id()))
}

/// A sparse file of exactly `size` bytes, created atomically.
fn write_placeholder(path: &Path, size: u64) -> io::Result<()> {
    let tmp = temp_path(path);
    let f = std::fs::File::create(&tmp)?;
    f.set_len(size)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    drop(f);
    std::fs::rename(&tmp, path)
}

async fn download_small(engine: &FetchEngine, path: &Path, meta: &ObjectMeta) -> io::Result<()> {
    let tmp = temp_path(path);
    let file = std::fs::File::create(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    let result = if meta.size == 0 {
        Ok(())
    } else {
        let sink = Arc::new(file.try_clone()?);
        engine
            .fetch_object(meta, sink, Arc::new(FetchProgress::default()))
            .await
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()))
    };
    drop(file);
    let result = result.and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
    fn manifest_round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()), Manifest::default());
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            bucket: "b".into(),
            ..Default::default()
        };
        m.files.insert(
            "a.bin".into(),
            ManifestFile {
                key: "a.bin".into(),
                size: 3,
                etag: "e".into(),
                kind: ManifestKind::Small,
            },
        );
        m.dirs.insert("d".into());
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()), m);
        std::fs::write(Manifest::path(dir.path()), b"not json").unwrap();
        assert_eq!(
            Manifest::load(dir.path()),
            Manifest::default(),
            "unreadable = nothing is ours"
        );
    }

    #[test]
    fn placeholders_are_sparse_and_exact() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        write_placeholder(&p, 10 << 20).unwrap();
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
}

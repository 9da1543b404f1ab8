//! Buckets and objects on disk: key -> path mapping, mmap-backed object
//! bodies, ETags, lazily computed CRC-64s, the listing walk, and the
//! `replace_key` rewrite.
//!
//! Design decisions:
//! - Bodies are `Bytes::from_owner(Mmap)`: every response is a refcounted slice
//!   of one mapping, so serving a multi-GB model from tmpfs copies nothing in
//!   user space and never reads a whole file per request.
//! - By default the ETag is derived from `(dev, inode, size, mtime)` (SHA-256,
//!   first 16 bytes, uppercase hex, quoted, with a `-1` suffix: the shape of a
//!   multipart ETag, so no client mistakes it for the MD5 of the content). It
//!   changes whenever the file is rewritten or replaced (a rename gives a new
//!   inode), costs no read of the data, and is stable across restarts. A
//!   `touch` without content change also changes it, which only costs a
//!   re-download. With `md5_etags` the ETag is the MD5 of the content (an S3
//!   single-part upload), computed once per file version.
//! - S3 additional checksums (SHA-256, CRC-32C) are computed once per file
//!   version, on the first request that asks for them (checksum mode).
//! - The CRC-64 is computed once per file version (the same tuple), on first
//!   use, in parallel chunks combined with `crc64::combine`.
//! - The store treats `root` as read-only while serving (apart from its own
//!   atomic-rename replacement). Truncating a file in place while it is mapped
//!   would fault the server (SIGBUS); replacing files by rename is safe.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// Below this many bytes per thread a parallel CRC is not worth the threads.
const CRC_MIN_CHUNK: usize = 64 << 20;
/// Upper bound on CRC threads (the machine's cores are also serving).
const CRC_MAX_THREADS: usize = 8;
/// Directory depth limit of the listing walk (guards against symlink loops).
const MAX_WALK_DEPTH: usize = 64;
/// Buffer size of the `replace_key` rewrite.
const REPLACE_CHUNK: usize = 1 << 20;

/// Identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

impl Version {
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_s: meta.mtime(),
            mtime_ns: meta.mtime_nsec(),
        }
    }

    /// Quoted OSS-shaped ETag of this version (see the module note).
    pub fn etag(&self) -> String {
        let mut h = Sha256::new();
        for v in [self.dev, self.ino, self.size] {
            h.update(v.to_le_bytes());
        }
        h.update(self.mtime_s.to_le_bytes());
        h.update(self.mtime_ns.to_le_bytes());
        let digest = h.finalize();
        format!("\"{}-1\"", hex::encode_upper(&digest[..16]))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn modified(&self) -> SystemTime {
        let secs = Duration::new(
            self.mtime_s.unsigned_abs(),
            u32::try_from(self.mtime_ns).unwrap_or(0),
        );
        if self.mtime_s >= 0 {
            UNIX_EPOCH + secs
        } else {
            UNIX_EPOCH - secs
        }
    }
}

/// One version of one object, mapped.
pub(crate) struct ObjectFile {
    pub version: Version,
    /// The whole file; responses are slices of it.
    pub data: Bytes,
    pub etag: String,
    crc: OnceCell<u64>,
    /// SHA-256 and CRC-32C of the whole object (S3 checksum mode).
    s3_checksums: OnceCell<S3Checksums>,
}

/// The S3 additional checksums the store declares, as raw digest bytes.
#[derive(Debug, Clone)]
pub(crate) struct S3Checksums {
    pub sha256: Vec<u8>,
    pub crc32c: Vec<u8>,
}

impl ObjectFile {
    pub fn size(&self) -> u64 {
        self.version.size
    }

    /// CRC-64/XZ of the whole object, computed on first call.
    pub async fn crc64(&self) -> io::Result<u64> {
        self.crc
            .get_or_try_init(|| {
                let data = self.data.clone();
                async move {
                    tokio::task::spawn_blocking(move || parallel_crc64(&data))
                        .await
                        .map_err(|e| io::Error::other(format!("CRC-64 task failed: {e}")))
                }
            })
            .await
            .copied()
    }

    /// SHA-256 and CRC-32C of the whole object, computed on first call.
    pub async fn s3_checksums(&self) -> io::Result<S3Checksums> {
        use crate::checksums::{digest_bytes, DigestKind};
        self.s3_checksums
            .get_or_try_init(|| {
                let data = self.data.clone();
                async move {
                    tokio::task::spawn_blocking(move || S3Checksums {
                        sha256: digest_bytes(DigestKind::Sha256, &data),
                        crc32c: digest_bytes(DigestKind::Crc32c, &data),
                    })
                    .await
                    .map_err(|e| io::Error::other(format!("checksum task failed: {e}")))
                }
            })
            .await
            .cloned()
    }
}

/// The quoted MD5 ETag of `data` (lower-case hex, as S3 sends it).
fn md5_etag(data: &[u8]) -> String {
    let md5 = crate::checksums::digest_bytes(crate::checksums::DigestKind::Md5Etag, data);
    format!("\"{}\"", hex::encode(md5))
}

/// CRC-64/XZ of `data` in up to [`CRC_MAX_THREADS`] chunks, combined.
pub(crate) fn parallel_crc64(data: &[u8]) -> u64 {
    chunked_crc64(data, CRC_MIN_CHUNK)
}

/// CRC-64/XZ of `data` with at least `min_chunk` bytes per thread.
pub(crate) fn chunked_crc64(data: &[u8], min_chunk: usize) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores
        .min(CRC_MAX_THREADS)
        .min(data.len() / min_chunk)
        .max(1);
    if threads == 1 {
        return crate::crc64::crc64(data);
    }
    let chunk = data.len().div_ceil(threads);
    let parts: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .chunks(chunk)
            .map(|c| s.spawn(move || (crate::crc64::crc64(c), c.len() as u64)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("CRC-64 worker panicked"))
            .collect()
    });
    let mut parts = parts.into_iter();
    let (first, _) = parts.next().expect("at least one chunk");
    parts.fold(first, |acc, (crc, len)| {
        crate::crc64::combine(acc, crc, len)
    })
}

/// Mapped files by path, revalidated with one `stat` per request.
#[derive(Default)]
pub(crate) struct FileCache {
    entries: Mutex<HashMap<PathBuf, Arc<ObjectFile>>>,
    /// ETags are the MD5 of the content (see the module note).
    md5_etags: bool,
}

impl FileCache {
    pub fn new(md5_etags: bool) -> FileCache {
        FileCache {
            entries: Mutex::default(),
            md5_etags,
        }
    }

    pub fn md5_etags(&self) -> bool {
        self.md5_etags
    }

    /// The current version of the regular file at `path`, or `None` when there
    /// is no regular file there.
    #[allow(unsafe_code)] // memory-maps the file (see the SAFETY note below)
    pub fn open(&self, path: &Path) -> io::Result<Option<Arc<ObjectFile>>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let version = Version::of(&meta);
        if let Some(hit) = self.lock().get(path) {
            if hit.version == version {
                return Ok(Some(hit.clone()));
            }
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Describe what was actually opened (it may have been replaced since the stat).
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let version = Version::of(&meta);
        let data = if version.size == 0 {
            Bytes::new()
        } else {
            // SAFETY: the mapping is read-only and private to this process; the
            // store never writes to served files in place (replacement is by
            // rename, which leaves this inode intact). Another process
            // truncating the file would be a violation of the documented
            // contract that `root` is read-only while serving.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Bytes::from_owner(map)
        };
        let etag = if self.md5_etags {
            md5_etag(&data)
        } else {
            version.etag()
        };
        let entry = Arc::new(ObjectFile {
            version,
            data,
            etag,
            crc: OnceCell::new(),
            s3_checksums: OnceCell::new(),
        });
        self.lock().insert(path.to_path_buf(), entry.clone());
        Ok(Some(entry))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<ObjectFile>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ENAMETOOLONG))
}

/// Whether `name` can name a bucket directory (no separators, not hidden).
fn valid_bucket_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// The directory of bucket `name`, if it exists.
pub(crate) fn bucket_dir(root: &Path, name: &str) -> Option<PathBuf> {
    if !valid_bucket_name(name) {
        return None;
    }
    let dir = root.join(name);
    dir.is_dir().then_some(dir)
}

/// Every bucket under `root`, sorted.
pub(crate) fn list_buckets(root: &Path) -> io::Result<Vec<(String, SystemTime)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_bucket_name(&name) {
            continue;
        }
        let meta = std::fs::metadata(entry.path())?;
        if meta.is_dir() {
            out.push((name, meta.modified().unwrap_or(UNIX_EPOCH)));
        }
    }
    out.sort();
    Ok(out)
}

/// Path of `key` inside `bucket`, or `None` when no file can have that key:
/// empty, `.` or `..` segments (which would also escape the bucket), NUL.
pub(crate) fn object_path(bucket: &Path, key: &str) -> Option<PathBuf> {
    if key.is_empty() || key.contains('\0') {
        return None;
    }
    let mut path = bucket.to_path_buf();
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return None;
        }
        path.push(seg);
    }
    Some(path)
}

/// One object as a listing sees it.
#[derive(Debug, Clone)]
pub(crate) struct ListedObject {
    pub key: String,
    pub version: Version,
    /// The quoted ETag, as HEAD and GET send it.
    pub etag: String,
}

/// Every object under `prefix`, sorted by key bytes. Walks only the
/// directory that contains the prefix; follows symlinks (Hugging Face caches
/// link snapshots to blobs); skips names that are not UTF-8.
pub(crate) fn walk_prefix(bucket: &Path, prefix: &str) -> io::Result<Vec<ListedObject>> {
    let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let start = if dir_part.is_empty() {
        bucket.to_path_buf()
    } else {
        match object_path(bucket, dir_part) {
            Some(p) => p,
            None => return Ok(Vec::new()),
        }
    };
    let key_base = if dir_part.is_empty() {
        String::new()
    } else {
        format!("{dir_part}/")
    };
    let mut out = Vec::new();
    walk(&start, &key_base, prefix, 0, &mut out)?;
    out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    Ok(out)
}

fn walk(
    dir: &Path,
    key_base: &str,
    prefix: &str,
    depth: usize,
    out: &mut Vec<ListedObject>,
) -> io::Result<()> {
    if depth > MAX_WALK_DEPTH {
        tracing::warn!(dir = %dir.display(), "listing depth limit reached; not descending");
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::debug!(dir = %dir.display(), "skipping a name that is not UTF-8");
            continue;
        };
        let key = format!("{key_base}{name}");
        let meta = match std::fs::metadata(entry.path()) {
            Ok(m) => m,
            // A dangling symlink or a file removed meanwhile is not an object.
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            let sub = format!("{key}/");
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                walk(&entry.path(), &sub, prefix, depth + 1, out)?;
            }
        } else if meta.is_file() && key.starts_with(prefix) {
            let version = Version::of(&meta);
            out.push(ListedObject {
                key,
                version,
                etag: version.etag(),
            });
        }
    }
    Ok(())
}

/// Replaces the file at `path` by the byte-wise complement of `old` (same
/// size), atomically via a temporary file in `tmp_dir` and a rename.
pub(crate) fn replace_with_complement(path: &Path, tmp_dir: &Path, old: &[u8]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!(".ossc-replace-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let mut buf = Vec::with_capacity(REPLACE_CHUNK.min(old.len()));
        for chunk in old.chunks(REPLACE_CHUNK) {
            buf.clear();
            buf.extend(chunk.iter().map(|b| !b));
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

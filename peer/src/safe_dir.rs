//! File operations under one directory that never follow a symlink, and
//! verified publishing of new files into it.
//!
//! Design decisions:
//! - **Everything is relative to a directory fd.** A [`SafeDir`] holds an open
//!   directory; a relative path is walked one segment at a time with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)`, and the last segment is acted on with
//!   the `*at` call (`fstatat(AT_SYMLINK_NOFOLLOW)`, `mkdirat`, `unlinkat`,
//!   `renameat2`). Segments must be plain names (no `.`, `..` or empty ones),
//!   so no path, symlink or directory swapped in by another user can lead an
//!   operation outside the directory: a symlinked component fails with
//!   `ELOOP`/`ENOTDIR`, and a symlink at the last segment is only ever
//!   looked at, replaced or unlinked itself, never followed.
//! - **New files appear only complete and verified.** [`SafeDir::create_temp`]
//!   makes a file under a random hidden name with `O_CREAT | O_EXCL |
//!   O_NOFOLLOW` (no two writers ever share one, a planted name is never
//!   opened); [`TempFile::publish`] reads the file back and checks the CRC-64
//!   of what is *on disk*, fsyncs it (unless told not to), checks the temp
//!   name still refers to the inode it wrote, and only then renames it into
//!   place. A temp file that is dropped unpublished is unlinked.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use ossc_core::crc64::Crc64Hasher;

/// Prefix of the random hidden names temp files get.
pub const TEMP_PREFIX: &str = ".ossc-tmp.";
/// Attempts at finding an unused random temp name.
const TEMP_NAME_ATTEMPTS: usize = 16;
/// Buffer used to read a file back for its CRC-64.
const READ_BACK_CHUNK: usize = 1 << 20;

/// What is at a path (the path itself, never a symlink's target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Other => "special file",
        }
    }
}

/// `lstat` result for a path under a [`SafeDir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
}

/// How [`TempFile::publish`] treats an existing entry at the target name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// The name must be free (`RENAME_NOREPLACE`); `EEXIST` otherwise.
    Never,
    /// Replace whatever entry is there (never following it).
    Entry,
}

/// An open directory; every operation stays beneath it.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
}

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Splits a relative path into plain segments; `EINVAL` for anything else.
fn segments(rel: &str) -> io::Result<Vec<&str>> {
    let segs: Vec<&str> = rel.split('/').collect();
    if segs
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\0'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{rel:?} is not a plain relative path"),
        ));
    }
    Ok(segs)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn kind_of(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl SafeDir {
    /// Opens `path` as the root, creating it (and its parents) with `mode`
    /// when missing. The root path itself is the operator's choice and is
    /// resolved normally; everything beneath it is not.
    pub fn open_root(path: &Path, mode: u32) -> io::Result<SafeDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)?;
        Self::open(path)
    }

    /// Opens the existing directory `path` as the root (resolved normally).
    pub fn open(path: &Path) -> io::Result<SafeDir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by open (cvt rejected -1) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SafeDir { fd })
    }

    fn open_child_dir(&self, name: &str) -> io::Result<SafeDir> {
        let c = cstr(name)?;
        // SAFETY: valid dirfd and NUL-terminated name; O_NOFOLLOW makes a
        // symlink fail instead of being followed.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by openat (cvt rejected -1) and is owned by nobody
        // else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SafeDir { fd })
    }

    fn try_clone(&self) -> io::Result<SafeDir> {
        Ok(SafeDir {
            fd: self.fd.try_clone()?,
        })
    }

    /// Opens the directory `rel` (empty: this one), never following a symlink.
    pub fn open_dir(&self, rel: &str) -> io::Result<SafeDir> {
        if rel.is_empty() {
            return self.try_clone();
        }
        let mut dir = self.try_clone()?;
        for seg in segments(rel)? {
            dir = dir.open_child_dir(seg)?;
        }
        Ok(dir)
    }

    /// The directory holding `rel` and `rel`'s last segment.
    fn parent_of<'a>(&self, rel: &'a str) -> io::Result<(SafeDir, &'a str)> {
        segments(rel)?;
        match rel.rsplit_once('/') {
            Some((parent, leaf)) => Ok((self.open_dir(parent)?, leaf)),
            None => Ok((self.try_clone()?, rel)),
        }
    }

    /// What is at `rel`, `None` when nothing is (or a parent is missing).
    /// A parent that is not a real directory is an error (`ELOOP`/`ENOTDIR`).
    pub fn lstat(&self, rel: &str) -> io::Result<Option<Stat>> {
        let (dir, leaf) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        dir.lstat_leaf(leaf)
    }

    fn lstat_leaf(&self, leaf: &str) -> io::Result<Option<Stat>> {
        let c = cstr(leaf)?;
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid dirfd, NUL-terminated name, `st` is writable.
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(r) {
            Ok(_) => Ok(Some(Stat {
                kind: kind_of(st.st_mode),
                size: st.st_size as u64,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the directory `rel` (its parent must exist).
    pub fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let (dir, leaf) = self.parent_of(rel)?;
        let c = cstr(leaf)?;
        // SAFETY: valid dirfd and NUL-terminated name.
        cvt(unsafe { libc::mkdirat(dir.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
        Ok(())
    }

    /// Creates `rel` and every missing directory above it.
    pub fn mkdir_all(&self, rel: &str, mode: u32) -> io::Result<SafeDir> {
        let mut dir = self.try_clone()?;
        if rel.is_empty() {
            return Ok(dir);
        }
        for seg in segments(rel)? {
            dir = match dir.open_child_dir(seg) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let c = cstr(seg)?;
                    // SAFETY: valid dirfd and NUL-terminated name.
                    let r = unsafe {
                        libc::mkdirat(dir.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t)
                    };
                    match cvt(r) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                    dir.open_child_dir(seg)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    fn unlink(&self, rel: &str, flags: libc::c_int) -> io::Result<()> {
        let (dir, leaf) = self.parent_of(rel)?;
        let c = cstr(leaf)?;
        // SAFETY: valid dirfd and NUL-terminated name; unlinkat never
        // follows a symlink at the last segment.
        cvt(unsafe { libc::unlinkat(dir.fd.as_raw_fd(), c.as_ptr(), flags) })?;
        Ok(())
    }

    /// Unlinks the entry `rel` (a symlink itself, never its target).
    pub fn remove_file(&self, rel: &str) -> io::Result<()> {
        self.unlink(rel, 0)
    }

    /// Removes the directory `rel` if it is empty.
    pub fn remove_dir(&self, rel: &str) -> io::Result<()> {
        self.unlink(rel, libc::AT_REMOVEDIR)
    }

    /// Opens the regular file `rel` for reading; a symlink or anything else
    /// that is not a regular file is an error.
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let (dir, leaf) = self.parent_of(rel)?;
        let c = cstr(leaf)?;
        // SAFETY: valid dirfd and NUL-terminated name; O_NONBLOCK keeps a
        // planted FIFO from blocking the open.
        let fd = cvt(unsafe {
            libc::openat(
                dir.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by openat (cvt rejected -1) and is owned by nobody
        // else.
        let file = unsafe { File::from_raw_fd(fd) };
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{rel:?} is not a regular file"),
            ));
        }
        Ok(file)
    }

    /// Reads the regular file `rel`, refusing one longer than `max` bytes.
    pub fn read_bounded(&self, rel: &str, max: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let file = self.open_file(rel)?;
        let mut out = Vec::new();
        file.take(max + 1).read_to_end(&mut out)?;
        if out.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{rel:?} is larger than {max} bytes"),
            ));
        }
        Ok(out)
    }

    /// CRC-64 of the regular file `rel` if it is exactly `size` bytes long.
    pub fn crc64_of(&self, rel: &str, size: u64) -> io::Result<u64> {
        let file = self.open_file(rel)?;
        let len = file.metadata()?.len();
        if len != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{rel:?} is {len} bytes, expected {size}"),
            ));
        }
        crc64_of_file(&file, size)
    }

    /// A new empty file under a random hidden name in directory `parent`
    /// (which must exist), created with `O_EXCL | O_NOFOLLOW` and `mode`.
    pub fn create_temp(&self, parent: &str, mode: u32) -> io::Result<TempFile> {
        let dir = self.open_dir(parent)?;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
            let c = cstr(&name)?;
            // SAFETY: valid dirfd and NUL-terminated name; O_EXCL fails on
            // any existing entry, symlinks included.
            let r = unsafe {
                libc::openat(
                    dir.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDWR
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    mode as libc::c_uint,
                )
            };
            match cvt(r) {
                Ok(fd) => {
                    // SAFETY: `fd` was just returned by openat and is owned
                    // by nobody else.
                    let file = unsafe { File::from_raw_fd(fd) };
                    // The umask may have narrowed the mode.
                    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
                    return Ok(TempFile {
                        dir,
                        name,
                        file,
                        linked: true,
                        fsync: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temp file name",
        ))
    }
}

/// CRC-64 of the first `size` bytes of `file`, read back with bounded buffers.
pub fn crc64_of_file(file: &File, size: u64) -> io::Result<u64> {
    let mut hasher = Crc64Hasher::new();
    let mut buf = vec![0u8; READ_BACK_CHUNK.min(size as usize).max(1)];
    let mut offset = 0u64;
    while offset < size {
        let want = buf.len().min((size - offset) as usize);
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends at {offset} of {size} bytes"),
            ));
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finish())
}

/// A file being written under a random hidden name; see the module note.
#[derive(Debug)]
pub struct TempFile {
    dir: SafeDir,
    name: String,
    file: File,
    linked: bool,
    /// Whether `publish` fsyncs before renaming (the default).
    fsync: bool,
}

impl TempFile {
    /// Publish without an fsync: for copies that are not a durability point
    /// (like `cp`); readers still only ever see verified bytes.
    pub fn without_fsync(mut self) -> Self {
        self.fsync = false;
        self
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The temp file's name in its directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that the file is exactly `size` bytes whose CRC-64 is
    /// `expected_crc64` (when given), fsyncs it and renames it to `leaf` in
    /// the same directory. Returns the CRC-64 of the published bytes. On
    /// error the temp file is removed and nothing is published.
    pub fn publish(
        mut self,
        leaf: &str,
        size: u64,
        expected_crc64: Option<u64>,
        replace: Replace,
    ) -> io::Result<u64> {
        segments(leaf)?;
        if leaf.contains('/') {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let meta = self.file.metadata()?;
        if meta.len() != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("wrote {} bytes, expected {size}", meta.len()),
            ));
        }
        let crc = match expected_crc64 {
            Some(want) => {
                let got = crc64_of_file(&self.file, size)?;
                if got != want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bytes on disk have CRC-64 {got:#018x}, expected {want:#018x}"),
                    ));
                }
                got
            }
            None => 0,
        };
        if self.fsync {
            self.file.sync_all()?;
        }
        self.check_name_is_ours(&meta)?;
        let from = cstr(&self.name)?;
        let to = cstr(leaf)?;
        let flags = match replace {
            Replace::Never => libc::RENAME_NOREPLACE,
            Replace::Entry => 0,
        };
        match self.rename(&from, &to, flags) {
            // File systems (some network ones) or kernels without
            // RENAME_NOREPLACE: check, then rename (a narrow window, still
            // never following).
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) && flags != 0 =>
            {
                if self.dir.lstat_leaf(leaf)?.is_some() {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                self.rename(&from, &to, 0)?;
            }
            r => r?,
        }
        self.linked = false;
        Ok(crc)
    }

    fn rename(&self, from: &CString, to: &CString, flags: libc::c_uint) -> io::Result<()> {
        let dirfd = self.dir.fd.as_raw_fd();
        // SAFETY: valid dirfds and NUL-terminated names; renameat2 renames
        // entries and never follows a symlink at either name.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                dirfd,
                from.as_ptr(),
                dirfd,
                to.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) || flags != 0 {
            return Err(e);
        }
        // SAFETY: the same open dirfd and NUL-terminated `CString` names as the renameat2 call
        // above; plain renameat, for kernels without renameat2 (only with `flags == 0`).
        cvt(unsafe { libc::renameat(dirfd, from.as_ptr(), dirfd, to.as_ptr()) })?;
        Ok(())
    }

    /// Fails unless the temp name still refers to the inode this file is.
    fn check_name_is_ours(&self, meta: &std::fs::Metadata) -> io::Result<()> {
        let c = cstr(&self.name)?;
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid dirfd, NUL-terminated name, `st` is writable.
        cvt(unsafe {
            libc::fstatat(
                self.dir.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        if st.st_ino != meta.ino() || st.st_dev != meta.dev() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("temp name {} was replaced by another file", self.name),
            ));
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.linked {
            return;
        }
        let Ok(c) = cstr(&self.name) else { return };
        // Only unlink the name while it is still our inode.
        if let Ok(meta) = self.file.metadata() {
            if self.check_name_is_ours(&meta).is_ok() {
                // SAFETY: valid dirfd and NUL-terminated name.
                unsafe { libc::unlinkat(self.dir.fd.as_raw_fd(), c.as_ptr(), 0) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, SafeDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SafeDir::open_root(&tmp.path().join("root"), 0o755).unwrap();
        (tmp, dir)
    }

    fn entries(path: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_names_are_random_hidden_and_never_shared() {
        let (tmp, dir) = root();
        let a = dir.create_temp("", 0o644).unwrap();
        let b = dir.create_temp("", 0o644).unwrap();
        assert_ne!(a.name(), b.name());
        for t in [&a, &b] {
            let suffix = t.name().strip_prefix(TEMP_PREFIX).expect("hidden prefix");
            assert_eq!(suffix.len(), 16);
            assert!(suffix.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        a.file().write_all_at(b"aaaa", 0).unwrap();
        b.file().write_all_at(b"bb", 0).unwrap();
        a.publish(
            "x",
            4,
            Some(ossc_core::crc64::crc64(b"aaaa")),
            Replace::Never,
        )
        .unwrap();
        b.publish("y", 2, Some(ossc_core::crc64::crc64(b"bb")), Replace::Never)
            .unwrap();
        let root = tmp.path().join("root");
        assert_eq!(std::fs::read(root.join("x")).unwrap(), b"aaaa");
        assert_eq!(std::fs::read(root.join("y")).unwrap(), b"bb");
        assert_eq!(entries(&root), vec!["x", "y"], "no temp file left");
    }

    #[test]
    fn publish_verifies_the_bytes_on_disk_before_renaming() {
        let (tmp, dir) = root();
        let root = tmp.path().join("root");
        let t = dir.create_temp("", 0o644).unwrap();
        t.file().write_all_at(b"good", 0).unwrap();
        let good = ossc_core::crc64::crc64(b"good");
        // Someone else's bytes land in the file after it was received.
        t.file().write_all_at(b"evil", 0).unwrap();
        let e = t.publish("f", 4, Some(good), Replace::Never).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(entries(&root), Vec::<String>::new(), "nothing published");

        let t = dir.create_temp("", 0o644).unwrap();
        t.file().write_all_at(b"goo", 0).unwrap();
        assert!(
            t.publish("f", 4, Some(good), Replace::Never).is_err(),
            "short file"
        );
        assert_eq!(entries(&root), Vec::<String>::new());

        // The temp name now refers to another inode: nothing is published.
        let t = dir.create_temp("", 0o644).unwrap();
        t.file().write_all_at(b"good", 0).unwrap();
        std::fs::write(root.join("other"), b"good").unwrap();
        std::fs::rename(root.join("other"), root.join(t.name())).unwrap();
        let name = t.name().to_string();
        assert!(t.publish("f", 4, Some(good), Replace::Never).is_err());
        assert_eq!(entries(&root), vec![name.clone()], "the other file is kept");
        std::fs::remove_file(root.join(name)).unwrap();

        let t = dir.create_temp("", 0o600).unwrap();
        t.file().write_all_at(b"good", 0).unwrap();
        assert_eq!(t.publish("f", 4, Some(good), Replace::Never).unwrap(), good);
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"good");
        assert_eq!(
            std::fs::metadata(root.join("f")).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn publish_never_replaces_unless_asked_and_never_follows() {
        let (tmp, dir) = root();
        let root = tmp.path().join("root");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("link")).unwrap();
        std::fs::write(root.join("taken"), b"keep").unwrap();
        for name in ["link", "taken"] {
            let t = dir.create_temp("", 0o644).unwrap();
            t.file().write_all_at(b"new", 0).unwrap();
            let e = t.publish(name, 3, None, Replace::Never).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{name}");
        }
        assert_eq!(std::fs::read(root.join("taken")).unwrap(), b"keep");
        let t = dir.create_temp("", 0o644).unwrap();
        t.file().write_all_at(b"new", 0).unwrap();
        t.publish("link", 3, None, Replace::Entry).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert_eq!(std::fs::read(root.join("link")).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(root.join("link"))
            .unwrap()
            .file_type()
            .is_file());
    }

    #[test]
    fn symlinked_components_are_never_walked_through() {
        let (tmp, dir) = root();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), root.join("lf")).unwrap();

        assert!(dir.lstat("d/f").is_err());
        assert!(dir.create_temp("d", 0o644).is_err());
        assert!(dir.mkdir("d/new", 0o755).is_err());
        assert!(dir.mkdir_all("d/new/deeper", 0o755).is_err());
        assert!(dir.remove_file("d/f").is_err());
        assert!(dir.open_file("d/f").is_err());
        assert!(
            dir.open_file("lf").is_err(),
            "a symlinked file is not opened"
        );
        assert!(dir.read_bounded("lf", 100).is_err());
        assert_eq!(
            dir.lstat("lf").unwrap().map(|s| s.kind),
            Some(Kind::Symlink)
        );
        assert_eq!(entries(&outside), vec!["f"], "nothing created outside");
        // Unlinking the symlink removes the link, never its target.
        dir.remove_file("lf").unwrap();
        dir.remove_file("d").unwrap();
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"outside");

        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "",
            "a//b",
            "./a",
            "a\0b",
        ] {
            assert!(dir.lstat(bad).is_err(), "{bad:?}");
            assert!(dir.mkdir(bad, 0o755).is_err(), "{bad:?}");
            assert!(dir.remove_file(bad).is_err(), "{bad:?}");
        }
        dir.mkdir_all("a/b/c", 0o755).unwrap();
        assert_eq!(dir.lstat("a/b/c").unwrap().map(|s| s.kind), Some(Kind::Dir));
        assert_eq!(dir.lstat("a/missing/x").unwrap(), None);
    }

    #[test]
    fn unpublished_temp_files_are_removed() {
        let (tmp, dir) = root();
        dir.mkdir("sub", 0o755).unwrap();
        let t = dir.create_temp("sub", 0o644).unwrap();
        t.file().write_all_at(b"partial", 0).unwrap();
        assert_eq!(entries(&tmp.path().join("root/sub")).len(), 1);
        drop(t);
        assert_eq!(entries(&tmp.path().join("root/sub")), Vec::<String>::new());
    }
}

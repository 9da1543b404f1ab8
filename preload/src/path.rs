//! Lexical path normalisation and MODEL_DIR matching, on fixed-size stack buffers.
//!
//! Design decision: every `open` of every process that inherits `LD_PRELOAD` goes through this
//! code, so it never allocates and never touches the file system: `.` and `..` are resolved
//! lexically (like Python's `os.path.normpath`), not through symlinks. The kernel's answer can
//! differ only when a `..` follows a symlink inside the path, which inference servers don't do
//! for model files; the MODEL_DIR realpath is matched as a second prefix to cover a symlinked
//! MODEL_DIR.

/// Capacity of a path buffer: Linux `PATH_MAX` (longer paths fail in the kernel anyway).
pub const PATH_CAP: usize = libc::PATH_MAX as usize;

/// A normalised absolute path held inline (no heap).
///
/// Invariant: the content is either empty (meaning `/`) or starts with `/`, has no trailing
/// `/`, no empty, `.` or `..` components.
pub struct PathBuffer {
    buf: [u8; PATH_CAP],
    len: usize,
}

impl Default for PathBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl PathBuffer {
    /// An empty buffer, i.e. the root directory.
    pub const fn new() -> Self {
        Self {
            buf: [0; PATH_CAP],
            len: 0,
        }
    }

    /// Resets the buffer to the root directory.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The normalised path (`/` for the root).
    pub fn as_bytes(&self) -> &[u8] {
        if self.len == 0 {
            b"/"
        } else {
            &self.buf[..self.len]
        }
    }

    /// Raw mutable storage, used to let `getcwd`/`readlink` write a base directory in place.
    /// Follow with [`PathBuffer::set_raw_len`].
    pub fn raw_mut(&mut self) -> &mut [u8; PATH_CAP] {
        &mut self.buf
    }

    /// Adopts the first `n` bytes written through [`PathBuffer::raw_mut`] as an absolute base
    /// path, re-normalising it in place. Returns false if it is not absolute.
    pub fn set_raw_len(&mut self, n: usize) -> bool {
        let n = n.min(PATH_CAP);
        if n == 0 || self.buf[0] != b'/' {
            self.len = 0;
            return false;
        }
        // Re-normalise in place: copying components leftwards never overtakes the reader.
        let mut read = 0;
        self.len = 0;
        while read < n {
            while read < n && self.buf[read] == b'/' {
                read += 1;
            }
            let start = read;
            while read < n && self.buf[read] != b'/' {
                read += 1;
            }
            let comp_len = read - start;
            if comp_len == 0 {
                continue;
            }
            if comp_len == 1 && self.buf[start] == b'.' {
                continue;
            }
            if comp_len == 2 && self.buf[start] == b'.' && self.buf[start + 1] == b'.' {
                self.pop();
                continue;
            }
            self.buf[self.len] = b'/';
            self.buf.copy_within(start..read, self.len + 1);
            self.len += 1 + comp_len;
        }
        true
    }

    fn pop(&mut self) {
        while self.len > 0 {
            self.len -= 1;
            if self.buf[self.len] == b'/' {
                break;
            }
        }
    }

    /// Appends the components of `rel` (an absolute `rel` restarts at the root), resolving `.`
    /// and `..` lexically. Returns false when the result would not fit.
    pub fn push(&mut self, rel: &[u8]) -> bool {
        if rel.first() == Some(&b'/') {
            self.len = 0;
        }
        for comp in rel.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => self.pop(),
                _ => {
                    if self.len + 1 + comp.len() > PATH_CAP {
                        return false;
                    }
                    self.buf[self.len] = b'/';
                    self.buf[self.len + 1..self.len + 1 + comp.len()].copy_from_slice(comp);
                    self.len += 1 + comp.len();
                }
            }
        }
        true
    }
}

/// If the normalised absolute `path` is `dir` or lies below it, the part below it (empty for
/// `dir` itself). `dir` must be normalised too.
pub fn relative_to<'a>(path: &'a [u8], dir: &[u8]) -> Option<&'a [u8]> {
    if dir == b"/" {
        return path.strip_prefix(b"/");
    }
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(b"/")
    }
}

/// True when an `open` with these flags is a plain read that the agent should serve.
///
/// Write access, `O_TRUNC`, `O_CREAT|O_EXCL` (creation), `O_DIRECTORY`/`O_TMPFILE` (directories)
/// and `O_PATH` (no data access) pass through to the real call.
pub fn is_read_candidate(flags: libc::c_int) -> bool {
    if flags & libc::O_ACCMODE != libc::O_RDONLY {
        return false;
    }
    if flags & (libc::O_DIRECTORY | libc::O_PATH | libc::O_TRUNC | libc::O_TMPFILE) != 0 {
        return false;
    }
    !(flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0)
}

/// Translates an `fopen` mode string into open flags, or `None` unless it is read-only
/// (`r` without `+`). `e` adds `O_CLOEXEC` like glibc does.
pub fn fopen_read_flags(mode: &[u8]) -> Option<libc::c_int> {
    if mode.first() != Some(&b'r') || mode.contains(&b'+') {
        return None;
    }
    let mut flags = libc::O_RDONLY;
    if mode.contains(&b'e') {
        flags |= libc::O_CLOEXEC;
    }
    Some(flags)
}

/// True for an absolute path that lexical normalisation would not change:
/// no empty, `.` or `..` segments and no trailing `/`. Such a path can be
/// compared with MODEL_DIR as it is, which keeps non-model opens off the
/// slower normalising path.
pub fn is_normalized_absolute(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') || p.len() < 2 || p.last() == Some(&b'/') {
        return false;
    }
    p[1..]
        .split(|&b| b == b'/')
        .all(|seg| !seg.is_empty() && seg != b"." && seg != b"..")
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalized_absolute_paths_are_recognised() {
        for p in [
            "/etc/hostname",
            "/a",
            "/tmp/model/x.safetensors",
            "/a/.hidden",
            "/a/..b",
        ] {
            assert!(super::is_normalized_absolute(p.as_bytes()), "{p}");
        }
        for p in [
            "", "/", "rel/x", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/a/.", "/a/..", "/.",
        ] {
            assert!(!super::is_normalized_absolute(p.as_bytes()), "{p}");
        }
    }

    use super::*;

    fn norm(base: &str, rel: &str) -> String {
        let mut b = PathBuffer::new();
        b.raw_mut()[..base.len()].copy_from_slice(base.as_bytes());
        assert!(b.set_raw_len(base.len()));
        assert!(b.push(rel.as_bytes()));
        String::from_utf8(b.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn normalises_dots_and_slashes() {
        assert_eq!(norm("/", "a/./b//c/"), "/a/b/c");
        assert_eq!(norm("/x/y", "../z"), "/x/z");
        assert_eq!(norm("/x/y", "../../../../z"), "/z");
        assert_eq!(norm("/x/y", "/abs/./p/../q"), "/abs/q");
        assert_eq!(norm("/x/y", ".."), "/x");
        assert_eq!(norm("/x", "../.."), "/");
        assert_eq!(norm("/x/y", ""), "/x/y");
        assert_eq!(norm("/x/y", "...//..a"), "/x/y/.../..a");
    }

    #[test]
    fn base_is_renormalised_in_place() {
        assert_eq!(norm("//m/./n/../o/", "f"), "/m/o/f");
        let mut b = PathBuffer::new();
        b.raw_mut()[..3].copy_from_slice(b"rel");
        assert!(!b.set_raw_len(3), "a relative base is refused");
    }

    #[test]
    fn overlong_path_is_refused() {
        let mut b = PathBuffer::new();
        let long = "a".repeat(PATH_CAP);
        assert!(!b.push(long.as_bytes()));
        let ok = "b".repeat(PATH_CAP - 1);
        b.clear();
        assert!(b.push(ok.as_bytes()));
        assert_eq!(b.as_bytes().len(), PATH_CAP);
    }

    #[test]
    fn matches_model_dir_prefix_on_component_boundary() {
        assert_eq!(relative_to(b"/m/x/f.bin", b"/m/x"), Some(&b"f.bin"[..]));
        assert_eq!(relative_to(b"/m/x/s/f", b"/m/x"), Some(&b"s/f"[..]));
        assert_eq!(relative_to(b"/m/x", b"/m/x"), Some(&b""[..]));
        assert_eq!(relative_to(b"/m/xy/f", b"/m/x"), None);
        assert_eq!(relative_to(b"/m", b"/m/x"), None);
        assert_eq!(relative_to(b"/etc/passwd", b"/m/x"), None);
        assert_eq!(relative_to(b"/a/b", b"/"), Some(&b"a/b"[..]));
    }

    #[test]
    fn escape_via_dotdot_does_not_match() {
        let mut b = PathBuffer::new();
        assert!(b.push(b"/m/x/../outside.txt"));
        assert_eq!(relative_to(b.as_bytes(), b"/m/x"), None);
        b.clear();
        assert!(b.push(b"/m/other/../x/./w.bin"));
        assert_eq!(relative_to(b.as_bytes(), b"/m/x"), Some(&b"w.bin"[..]));
    }

    #[test]
    fn read_candidates() {
        assert!(is_read_candidate(libc::O_RDONLY));
        assert!(is_read_candidate(libc::O_RDONLY | libc::O_CLOEXEC));
        assert!(is_read_candidate(libc::O_RDONLY | libc::O_CREAT));
        assert!(!is_read_candidate(
            libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL
        ));
        assert!(!is_read_candidate(libc::O_WRONLY));
        assert!(!is_read_candidate(libc::O_RDWR));
        assert!(!is_read_candidate(libc::O_RDONLY | libc::O_DIRECTORY));
        assert!(!is_read_candidate(libc::O_RDONLY | libc::O_PATH));
        assert!(!is_read_candidate(libc::O_RDONLY | libc::O_TRUNC));
        assert!(!is_read_candidate(libc::O_RDWR | libc::O_TMPFILE));
    }

    #[test]
    fn fopen_modes() {
        assert_eq!(fopen_read_flags(b"r"), Some(libc::O_RDONLY));
        assert_eq!(fopen_read_flags(b"rb"), Some(libc::O_RDONLY));
        assert_eq!(
            fopen_read_flags(b"rbe"),
            Some(libc::O_RDONLY | libc::O_CLOEXEC)
        );
        assert_eq!(fopen_read_flags(b"r+"), None);
        assert_eq!(fopen_read_flags(b"rb+"), None);
        assert_eq!(fopen_read_flags(b"w"), None);
        assert_eq!(fopen_read_flags(b"a"), None);
        assert_eq!(fopen_read_flags(b""), None);
    }
}

//! Identity of the fds the library hands out: which placeholder file a memfd-backed fd stands
//! for, so the fd-stat hooks can report the placeholder's `(st_dev, st_ino)`.
//!
//! Design decision: a fixed table of atomics indexed by fd number ([`TRACKED_FDS`] slots, in
//! `.bss`, so untouched pages cost nothing), each slot a small seqlock. No allocation, no lock,
//! nothing a `fork` could leave held: a child inherits both the fds and the table. `close` and
//! `dup2` are *not* hooked; instead each slot also remembers the memfd's own identity, and the
//! stat hooks only rewrite a result whose `(dev, ino)` is exactly that memfd — an fd number that
//! was closed and reused for another file reports that file's real identity. Fds above the
//! table, `dup`s and fds inherited across `execve` are simply not tracked (they report the
//! memfd's identity, as they did before this module existed).

use core::sync::atomic::{fence, AtomicU64, Ordering};

use libc::c_int;

use crate::real;

/// Number of fd numbers tracked (0 .. TRACKED_FDS). 64 Ki fds is the usual hard `RLIMIT_NOFILE`
/// of inference servers; each slot is 40 bytes, 2.5 MiB of zero pages until touched.
pub const TRACKED_FDS: usize = 65536;

/// A file's identity as `stat(2)` reports it: `st_dev` (glibc `makedev` encoding, which equals
/// the kernel's for every device number the kernel can produce) and `st_ino`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// From the `stx_dev_major`/`stx_dev_minor`/`stx_ino` fields of a `struct statx`.
    pub fn from_statx(major: u32, minor: u32, ino: u64) -> Self {
        Self {
            dev: libc::makedev(major, minor),
            ino,
        }
    }

    /// `(stx_dev_major, stx_dev_minor)` of `dev`.
    pub fn dev_major_minor(&self) -> (u32, u32) {
        (libc::major(self.dev), libc::minor(self.dev))
    }
}

/// One fd's record. `seq` is 0 while the slot was never written, odd while a writer is in the
/// middle of an update, even otherwise. `served_ino == 0` means "nothing recorded" (no inode of
/// a memfd is 0).
struct Slot {
    seq: AtomicU64,
    served_dev: AtomicU64,
    served_ino: AtomicU64,
    placeholder_dev: AtomicU64,
    placeholder_ino: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            served_dev: AtomicU64::new(0),
            served_ino: AtomicU64::new(0),
            placeholder_dev: AtomicU64::new(0),
            placeholder_ino: AtomicU64::new(0),
        }
    }

    /// Seqlock write. Writers never wait: a slot left odd (a fork child of a process whose
    /// other thread was mid-update) is repaired by the next write, because the new sequence is
    /// derived from whatever value is there. Two writers on one fd number at once would need
    /// the fd to be closed and reopened concurrently; even then a torn record can only rewrite
    /// results that match the recorded memfd.
    fn write(&self, served: FileId, placeholder: FileId) {
        let odd = (self.seq.load(Ordering::Relaxed) | 1).wrapping_add(2);
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        self.served_dev.store(served.dev, Ordering::Relaxed);
        self.served_ino.store(served.ino, Ordering::Relaxed);
        self.placeholder_dev
            .store(placeholder.dev, Ordering::Relaxed);
        self.placeholder_ino
            .store(placeholder.ino, Ordering::Relaxed);
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Seqlock read: `(served, placeholder)` if a consistent record is there.
    fn read(&self) -> Option<(FileId, FileId)> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 == 0 || s1 & 1 == 1 {
            return None;
        }
        let served = FileId {
            dev: self.served_dev.load(Ordering::Relaxed),
            ino: self.served_ino.load(Ordering::Relaxed),
        };
        let placeholder = FileId {
            dev: self.placeholder_dev.load(Ordering::Relaxed),
            ino: self.placeholder_ino.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 || served.ino == 0 {
            return None;
        }
        Some((served, placeholder))
    }
}

static SLOTS: [Slot; TRACKED_FDS] = [const { Slot::new() }; TRACKED_FDS];

fn slot(fd: c_int) -> Option<&'static Slot> {
    usize::try_from(fd).ok().and_then(|i| SLOTS.get(i))
}

/// Records that `fd` serves the placeholder `placeholder` through the file `served`.
pub fn record(fd: c_int, served: FileId, placeholder: FileId) {
    if let Some(s) = slot(fd) {
        s.write(served, placeholder);
    }
}

/// Drops whatever was recorded for `fd`.
pub fn forget(fd: c_int) {
    if let Some(s) = slot(fd) {
        if s.seq.load(Ordering::Acquire) != 0 {
            s.write(FileId { dev: 0, ino: 0 }, FileId { dev: 0, ino: 0 });
        }
    }
}

/// `(served, placeholder)` recorded for `fd`, if any. One atomic load for an fd that was never
/// tracked.
#[inline]
pub fn lookup(fd: c_int) -> Option<(FileId, FileId)> {
    slot(fd)?.read()
}

/// The identity to report for a successful fd-stat of `fd` that returned `actual`: the
/// placeholder's when `fd` is tracked and `actual` is the recorded memfd, else `None` (report
/// `actual` unchanged).
pub fn substitute(fd: c_int, actual: FileId) -> Option<FileId> {
    let (served, placeholder) = lookup(fd)?;
    (served == actual).then_some(placeholder)
}

/// The identity `st` describes.
pub fn id_of(st: &libc::stat) -> FileId {
    FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

/// Called for every fd the `open` hooks return from the agent: one raw `stat` of the caller's
/// `path` (relative to `dirfd`, following symlinks like `stat(2)`, which is what `cp` compares
/// with) and one raw `fstat` of `fd`, then [`record`]. Without both identities the slot is
/// cleared, so the fd reports the memfd's identity. Clobbers errno; never re-enters a hook.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
pub unsafe fn record_open(fd: c_int, dirfd: c_int, path: *const libc::c_char) {
    // SAFETY: this function's contract makes `path` a NUL-terminated string and the empty
    // path is a NUL-terminated literal: all `sys_fstatat` requires; bad fds come back as errno.
    let (placeholder, served) = unsafe {
        (
            real::sys_fstatat(dirfd, path, 0),
            real::sys_fstatat(fd, c"".as_ptr(), libc::AT_EMPTY_PATH),
        )
    };
    match (placeholder, served) {
        (Ok(p), Ok(s)) if id_of(&p) != id_of(&s) => record(fd, id_of(&s), id_of(&p)),
        _ => forget(fd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVED: FileId = FileId { dev: 14, ino: 9001 };
    const PLACEHOLDER: FileId = FileId {
        dev: 2049,
        ino: 1234,
    };

    #[test]
    fn substitutes_only_the_recorded_memfd() {
        let fd = 4000;
        assert_eq!(substitute(fd, SERVED), None, "never recorded");
        record(fd, SERVED, PLACEHOLDER);
        assert_eq!(substitute(fd, SERVED), Some(PLACEHOLDER));
        let reused = FileId { dev: 2049, ino: 77 };
        assert_eq!(substitute(fd, reused), None, "fd number reused");
        assert_eq!(substitute(fd + 1, SERVED), None, "other fd");
        forget(fd);
        assert_eq!(substitute(fd, SERVED), None, "forgotten");
        record(fd, SERVED, PLACEHOLDER);
        assert_eq!(substitute(fd, SERVED), Some(PLACEHOLDER), "recorded again");
    }

    #[test]
    fn out_of_range_fds_are_ignored() {
        let last = (TRACKED_FDS - 1) as c_int;
        for fd in [-1, libc::AT_FDCWD, TRACKED_FDS as c_int, c_int::MAX] {
            record(fd, SERVED, PLACEHOLDER);
            assert_eq!(substitute(fd, SERVED), None, "fd {fd}");
            forget(fd);
        }
        record(last, SERVED, PLACEHOLDER);
        assert_eq!(substitute(last, SERVED), Some(PLACEHOLDER));
    }

    #[test]
    fn a_slot_left_mid_update_is_repaired_by_the_next_write() {
        let fd = 4100;
        let s = slot(fd).unwrap();
        s.seq.store(7, Ordering::Relaxed);
        assert_eq!(
            substitute(fd, SERVED),
            None,
            "odd sequence reads as untracked"
        );
        record(fd, SERVED, PLACEHOLDER);
        assert_eq!(s.seq.load(Ordering::Relaxed) % 2, 0);
        assert_eq!(substitute(fd, SERVED), Some(PLACEHOLDER));
    }

    #[test]
    fn concurrent_readers_never_see_a_torn_record() {
        // The reader decides when to stop (after a fixed number of reads), so
        // the check does not depend on how the two threads are scheduled.
        const READS: u32 = 200_000;
        let fd = 4200;
        let other = FileId { dev: 3, ino: 5 };
        record(fd, SERVED, PLACEHOLDER);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if i.is_multiple_of(2) {
                        record(fd, other, other);
                    } else {
                        record(fd, SERVED, PLACEHOLDER);
                    }
                    i += 1;
                }
            })
        };
        let mut seen = 0u32;
        for _ in 0..READS {
            if let Some((served, placeholder)) = slot(fd).unwrap().read() {
                let consistent = (served == SERVED && placeholder == PLACEHOLDER)
                    || (served == other && placeholder == other);
                assert!(consistent, "torn: {served:?} {placeholder:?}");
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        // A read only fails while a write is in progress; most must succeed.
        assert!(seen > 0, "no consistent read in {READS} attempts");
    }

    #[test]
    fn statx_device_numbers_round_trip() {
        let id = FileId::from_statx(259, 70_000, 42);
        assert_eq!(id.dev_major_minor(), (259, 70_000));
        // The kernel's stat encoding of (8, 1) is 0x801.
        assert_eq!(FileId::from_statx(8, 1, 1).dev, 0x801);
    }

    #[test]
    fn record_open_compares_path_and_fd_identities() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("ossc-fdtrack-{}", std::process::id()));
        std::fs::write(&path, b"placeholder").unwrap();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: the name is a NUL-terminated literal, the only memory memfd_create reads;
        // the fd it returns is this test's and is closed at the end.
        let memfd = unsafe { libc::memfd_create(c"fdtrack-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(memfd >= 0);
        // SAFETY: `c` is a NUL-terminated `CString`, all `record_open` requires.
        unsafe { record_open(memfd, libc::AT_FDCWD, c.as_ptr()) };
        let placeholder = std::fs::metadata(&path).unwrap();
        let mut st = real::sys_fstatat_fd(memfd).unwrap();
        let served = id_of(&st);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            substitute(memfd, served),
            Some(FileId {
                dev: placeholder.dev(),
                ino: placeholder.ino()
            })
        );
        // The same file on both sides records nothing.
        // SAFETY: `c` is a NUL-terminated `CString` that outlives the call; open only reads it.
        let same = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(same >= 0);
        // SAFETY: `c` is a NUL-terminated `CString`, all `record_open` requires.
        unsafe { record_open(same, libc::AT_FDCWD, c.as_ptr()) };
        st = real::sys_fstatat_fd(same).unwrap();
        assert_eq!(substitute(same, id_of(&st)), None);
        // SAFETY: both fds were opened by this test (checked `>= 0`) and are not used after
        // these closes.
        unsafe {
            libc::close(memfd);
            libc::close(same);
        }
        std::fs::remove_file(&path).unwrap();
    }
}

//! Placeholders reached without the MODEL_DIR path: through a symlink or a bind mount, or
//! opened for writing (numpy `memmap(mode="r+")`). Either would otherwise see the sparse
//! placeholder's zeros.
//!
//! Design decision: the file itself tells: after every open that the hooks passed through, one
//! raw `fstat` of the new fd. Only a regular file on MODEL_DIR's device that is non-empty and
//! has no blocks allocated (the agent's placeholders are sparse) can be a placeholder; for
//! those rare files the agent is asked (`IDENT <dev> <ino>`), since it alone knows which
//! inodes it created. A placeholder opened read-only is then served like a MODEL_DIR path; one
//! opened for writing fails with `EROFS` and one log line. If the agent cannot be asked, a
//! candidate fails with `EIO`: a sparse file on MODEL_DIR's file system is refused rather than
//! risk handing out zeros. Every other open costs the one `fstat` and nothing else.

use libc::c_int;

use crate::client::{self, Opened};
use crate::fdtrack::{self, FileId};
use crate::log::{Bytes, Level};
use crate::path::PATH_CAP;
use crate::plog;
use crate::real;
use crate::state::{self, ReentryGuard};

/// Records MODEL_DIR's device (once the agent has mirrored it), which enables the check.
pub fn note_model_dir(dir: &[u8]) {
    let Ok(c) = std::ffi::CString::new(dir) else {
        return;
    };
    // SAFETY: `c` is a NUL-terminated `CString`, the only thing `sys_fstatat` requires.
    if let Ok(st) = unsafe { real::sys_fstatat(libc::AT_FDCWD, c.as_ptr(), 0) } {
        state::MODEL_DEV.store(st.st_dev + 1, core::sync::atomic::Ordering::Release);
    }
}

/// Whether a file with this metadata could be one of the agent's placeholders.
pub fn could_be_placeholder(st: &libc::stat, model_dev: u64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
        && st.st_dev == model_dev
        && st.st_size > 0
        && st.st_blocks == 0
}

/// Whether the open flags ask for data access at all (not `O_PATH`, not a directory).
fn opens_data(flags: c_int) -> bool {
    flags & (libc::O_PATH | libc::O_DIRECTORY) == 0
}

/// What to do with an fd a passed-through open returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Give it to the caller.
    Keep,
    /// It opened a placeholder: give the caller `fd` (served from the agent) instead, whose
    /// `fstat` must report `placeholder`.
    Replace { fd: c_int, placeholder: FileId },
    /// It opened a placeholder that cannot be served: fail with this errno.
    Fail(c_int),
}

/// Checks `fd`, just returned by a passed-through open of `path` with `flags`. Never closes
/// `fd`; preserves errno.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
pub unsafe fn check(fd: c_int, flags: c_int, path: *const libc::c_char) -> Checked {
    if fd < 0 || !opens_data(flags) {
        return Checked::Keep;
    }
    let Some(model_dev) = state::model_dev() else {
        return Checked::Keep;
    };
    let Some(_guard) = ReentryGuard::enter() else {
        return Checked::Keep;
    };
    let saved = state::errno();
    let st = real::sys_fstatat_fd(fd);
    let checked = match st {
        Ok(st) if could_be_placeholder(&st, model_dev) => {
            // SAFETY: this function's contract makes `path` a NUL-terminated string that
            // outlives the call, and `shown` does not escape it.
            let shown = Bytes(unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes());
            let mut rel = [0u8; PATH_CAP];
            match client::identify(st.st_dev, st.st_ino, &mut rel) {
                Ok(None) => Checked::Keep,
                Ok(Some(len)) => serve(flags, &rel[..len], &st, shown),
                Err(e) => {
                    plog!(
                        Level::Error,
                        "open {shown}: a sparse file on MODEL_DIR's file system, and the agent cannot tell whether it is a placeholder (errno {e}); failing with EIO"
                    );
                    Checked::Fail(libc::EIO)
                }
            }
        }
        _ => Checked::Keep,
    };
    state::set_errno(saved);
    checked
}

/// The open hooks' use of [`check`]: returns the fd for the caller or -1 with errno set,
/// closing the passed-through `fd` when it is not returned.
///
/// # Safety
/// As [`check`]; `fd` is owned by the caller of the hook.
pub unsafe fn after_open(fd: c_int, flags: c_int, path: *const libc::c_char) -> c_int {
    // SAFETY: this function's contract is `check`'s: `path` is a NUL-terminated string.
    match unsafe { check(fd, flags, path) } {
        Checked::Keep => fd,
        Checked::Replace { fd: served, .. } => {
            // SAFETY: `fd` is the passed-through fd this function owns (its contract); the
            // caller gets `served` instead, so `fd` is closed once and never used again.
            unsafe { libc::close(fd) };
            served
        }
        Checked::Fail(e) => {
            // SAFETY: `fd` is the passed-through fd this function owns; the open fails, so
            // nobody else ever sees it, and it is closed once.
            unsafe { libc::close(fd) };
            state::set_errno(e);
            -1
        }
    }
}

/// Serves the placeholder `rel` (metadata `st`) or refuses a write open.
fn serve(flags: c_int, rel: &[u8], st: &libc::stat, shown: Bytes<'_>) -> Checked {
    if !crate::path::is_read_candidate(flags) {
        plog!(
            Level::Error,
            "open {shown}: it is the placeholder of {} (its bytes live in the agent's memory); opening it for writing fails with EROFS",
            Bytes(rel)
        );
        return Checked::Fail(libc::EROFS);
    }
    match client::open_model_file(rel, flags) {
        Ok(Opened::Fd(served)) => {
            let placeholder = fdtrack::id_of(st);
            if let Ok(s) = real::sys_fstatat_fd(served) {
                fdtrack::record(served, fdtrack::id_of(&s), placeholder);
            }
            plog!(
                Level::Debug,
                "open {shown}: placeholder of {} served as fd {served}",
                Bytes(rel)
            );
            Checked::Replace {
                fd: served,
                placeholder,
            }
        }
        // The agent has a real file there now: the passed-through fd reads it.
        Ok(Opened::Pass) => Checked::Keep,
        Err(e) => Checked::Fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mode: u32, dev: u64, size: i64, blocks: i64) -> libc::stat {
        // SAFETY: `struct stat` is plain old data (integers only); all-zero is a valid value.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        st.st_mode = mode;
        st.st_dev = dev;
        st.st_size = size;
        st.st_blocks = blocks;
        st
    }

    #[test]
    fn only_sparse_regular_files_on_the_model_device_are_candidates() {
        assert!(could_be_placeholder(
            &stat(libc::S_IFREG | 0o644, 7, 10 << 20, 0),
            7
        ));
        assert!(!could_be_placeholder(
            &stat(libc::S_IFREG | 0o644, 8, 10 << 20, 0),
            7
        ));
        assert!(!could_be_placeholder(
            &stat(libc::S_IFREG | 0o644, 7, 10 << 20, 8),
            7
        ));
        assert!(!could_be_placeholder(
            &stat(libc::S_IFREG | 0o644, 7, 0, 0),
            7
        ));
        assert!(!could_be_placeholder(
            &stat(libc::S_IFDIR | 0o755, 7, 4096, 0),
            7
        ));
    }

    #[test]
    fn path_and_directory_opens_are_not_checked() {
        assert!(opens_data(libc::O_RDONLY));
        assert!(opens_data(libc::O_RDWR | libc::O_CREAT));
        assert!(!opens_data(libc::O_PATH));
        assert!(!opens_data(libc::O_RDONLY | libc::O_DIRECTORY));
    }
}

//! Remembering a failed agent start, within the process and across processes.
//!
//! Design decision: an agent that exits at start (a bad configuration) exits the same way for
//! every process that tries again, and each try costs the start grace of [`crate::spawn`].
//! So a failure is remembered for [`state::COOL_DOWN`]: in this process by a static (opens then
//! fail at once with `EIO`, without a log line each), and for other processes by a small file
//! `<socket>.agent-failed` holding the agent's last words. A main process that finds a fresh
//! one of these (owned by us or root, younger than the cool-down) does not start the agent;
//! its first open below MODEL_DIR logs one line quoting the file (a launcher script's helper
//! processes that open no model file log nothing). A successful start removes the file.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use crate::real::sys_openat;
use crate::state;

/// Suffix of the file that remembers a failed start next to the socket.
pub const MARKER_SUFFIX: &str = ".agent-failed";
/// Longest message kept in the file.
const MARKER_CAP: usize = 1024;
/// Mode of the file (readable by the other processes of a shared socket directory).
const MARKER_MODE: libc::mode_t = 0o644;

fn marker_path(socket: &[u8]) -> Option<CString> {
    let mut name = socket.to_vec();
    name.extend_from_slice(MARKER_SUFFIX.as_bytes());
    CString::new(name).ok()
}

/// Records a failed start with `message` (in this process and in the marker file).
pub fn remember(socket: &[u8], message: &str) {
    state::note_start_failure();
    let Some(path) = marker_path(socket) else {
        return;
    };
    // SAFETY: `path` is a NUL-terminated `CString`, the only thing `sys_openat` requires.
    let fd = unsafe {
        sys_openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            MARKER_MODE,
        )
    };
    if fd < 0 {
        return;
    }
    let bytes = message.as_bytes();
    let n = bytes.len().min(MARKER_CAP);
    // SAFETY: `bytes` is readable for `n <= bytes.len()` bytes; `fd` was opened above (checked
    // `>= 0`), is ours alone and is not used after the close.
    unsafe {
        libc::write(fd, bytes.as_ptr().cast(), n);
        libc::close(fd);
    }
}

/// Forgets a failed start (the agent is up now).
pub fn forget(socket: &[u8]) {
    if let Some(path) = marker_path(socket) {
        // SAFETY: `path` is a NUL-terminated `CString` that outlives the call; unlink only
        // reads it.
        unsafe { libc::unlink(path.as_ptr()) };
    }
}

/// A failure another process (or this one) recorded less than the cool-down ago, described
/// for a log line.
pub fn recent(socket: &[u8]) -> Option<String> {
    let path = marker_path(socket)?;
    // SAFETY: `path` is a NUL-terminated `CString`, the only thing `sys_fstatat` requires.
    let st = unsafe {
        crate::real::sys_fstatat(libc::AT_FDCWD, path.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    }
    .ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || !crate::trust::trusted_uid(st.st_uid) {
        return None;
    }
    // SAFETY: with a null argument `time` writes nothing and only returns the clock.
    let now = unsafe { libc::time(core::ptr::null_mut()) };
    let age = now.checked_sub(st.st_mtime)?;
    if !(0..state::COOL_DOWN.as_secs() as libc::time_t).contains(&age) {
        return None;
    }
    let text = std::fs::read(std::ffi::OsStr::from_bytes(path.as_bytes())).ok()?;
    let text = String::from_utf8_lossy(&text[..text.len().min(MARKER_CAP)]);
    Some(format!(
        "a start of the agent {age} s ago failed: {}; not starting it again for {} s",
        text.trim(),
        state::COOL_DOWN.as_secs()
    ))
}

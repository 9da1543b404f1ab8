//! The exported libc entry points: the `open` family and `fopen`.
//!
//! Design decision: every hook first asks [`decide`], which is allocation-free and lock-free
//! and, for anything that is not a read-only open below MODEL_DIR, returns
//! [`Decision::Pass`] (connector off) or [`Decision::PassAndCheck`] after a few atomic loads;
//! the real function is then called with the caller's exact arguments, and with the connector
//! on its fd gets one `fstat` to catch a placeholder opened by another name or for writing
//! ([`crate::placeholder`]). Matching opens are answered with a *real* kernel fd re-opened
//! from the agent's memfd, so every later call (read, mmap, sendfile, dup, fork) works
//! natively without more hooks; only the fd-stat calls are hooked too ([`crate::stat_hooks`]),
//! so that `fstat(fd)` reports the same `(st_dev, st_ino)` as `stat(path)`. A fixed three-argument `open` signature is used: on x86-64 and
//! aarch64 SysV the variadic `mode` travels in the same register, and it is only forwarded when
//! `O_CREAT`/`O_TMPFILE` says it is meaningful.

use core::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{c_char, c_int, mode_t, FILE};

use crate::client::{self, Opened};
use crate::fdtrack;
use crate::path::{self, PathBuffer};
use crate::placeholder::{self, Checked};
use crate::real;
use crate::state::{self, ReentryGuard};

/// What a hook should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Call the real function unchanged.
    Pass,
    /// Call the real function, then check that it did not open a placeholder by another name
    /// or for writing ([`placeholder::check`]).
    PassAndCheck,
    /// Return this fd (already opened for the caller).
    Fd(c_int),
    /// Return failure with this errno.
    Fail(c_int),
}

/// Resolves `path` against `dirfd` and returns the offset of the part below MODEL_DIR in
/// `buf`, if the path lies strictly inside MODEL_DIR.
fn match_model_path(buf: &mut PathBuffer, dirfd: c_int, path: &[u8]) -> Option<usize> {
    // "" is ENOENT and "x/" must be a directory: leave both to the kernel.
    if path.is_empty() || path.last() == Some(&b'/') {
        return None;
    }
    if !state::absolutise(buf, dirfd, path) {
        return None;
    }
    let abs = buf.as_bytes();
    let rel = state::model_relpath(abs)?;
    if rel.is_empty() {
        return None;
    }
    Some(abs.len() - rel.len())
}

/// Decides how to serve an open of `path` (relative to `dirfd`) with `flags`. Preserves errno
/// unless it returns [`Decision::Fail`].
///
/// # Safety
/// `path` must be null or a valid NUL-terminated string.
pub unsafe fn decide(dirfd: c_int, path: *const c_char, flags: c_int) -> Decision {
    if path.is_null() {
        return Decision::Pass;
    }
    let Some(_guard) = ReentryGuard::enter() else {
        return Decision::Pass;
    };
    if !state::active() {
        return Decision::Pass;
    }
    if !path::is_read_candidate(flags) {
        return Decision::PassAndCheck;
    }
    let saved = state::errno();
    let path_ptr = path;
    // SAFETY: `path` is non-null (checked above) and, by this function's contract, a
    // NUL-terminated string that outlives this call; the borrow ends before we return.
    let path = unsafe { CStr::from_ptr(path) }.to_bytes();
    // Fast path for the common non-model open: an already-normal absolute path
    // outside MODEL_DIR needs no buffer and no normalisation.
    if path::is_normalized_absolute(path) && state::model_relpath(path).is_none() {
        return Decision::PassAndCheck;
    }
    let mut buf = PathBuffer::new();
    // A panic while classifying means we don't know it is a model file: let the kernel answer.
    let offset =
        catch_unwind(AssertUnwindSafe(|| match_model_path(&mut buf, dirfd, path))).unwrap_or(None);
    let Some(offset) = offset else {
        state::set_errno(saved);
        return Decision::PassAndCheck;
    };
    let rel = &buf.as_bytes()[offset..];
    // A panic after that must not fall back to the placeholder file: fail with EIO.
    let decision = match catch_unwind(AssertUnwindSafe(|| client::open_model_file(rel, flags))) {
        Ok(Ok(Opened::Pass)) => Decision::Pass,
        Ok(Ok(Opened::Fd(fd))) => Decision::Fd(fd),
        Ok(Err(e)) => Decision::Fail(e),
        Err(_) => Decision::Fail(libc::EIO),
    };
    if let Decision::Fd(fd) = decision {
        // `stat(path)` names the placeholder, `fstat(fd)` the memfd: remember both so the
        // stat hooks can make them agree.
        // SAFETY: `path_ptr` is the non-null, NUL-terminated string read above, which is all
        // `record_open` requires; `fd` is the fd just opened for the caller.
        unsafe { fdtrack::record_open(fd, dirfd, path_ptr) };
    }
    if !matches!(decision, Decision::Fail(_)) {
        state::set_errno(saved);
    }
    decision
}

/// `mode` is only defined for `O_CREAT` / `O_TMPFILE`; otherwise pass 0 rather than whatever
/// the register held.
#[inline]
fn mode_arg(flags: c_int, mode: mode_t) -> mode_t {
    if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        mode
    } else {
        0
    }
}

/// Carries out `decision` for an open of `path` with `flags`; `real` makes the real call.
///
/// # Safety
/// `path` must be a valid NUL-terminated string (it is, whenever `decision` is not `Pass`).
#[inline]
unsafe fn finish(
    decision: Decision,
    flags: c_int,
    path: *const c_char,
    real: impl FnOnce() -> c_int,
) -> c_int {
    match decision {
        Decision::Pass => real(),
        // SAFETY: `decide` answers `PassAndCheck` only for a non-null `path`, which this
        // function's contract then makes a NUL-terminated string (all `after_open` needs); the
        // fd `real()` returns belongs to the hook's caller, for `after_open` to keep or close.
        Decision::PassAndCheck => unsafe { placeholder::after_open(real(), flags, path) },
        Decision::Fd(fd) => fd,
        Decision::Fail(e) => {
            state::set_errno(e);
            -1
        }
    }
}

macro_rules! open_hook {
    ($(#[$doc:meta])* $name:ident, $real:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
            let mode = mode_arg(flags, mode);
            // SAFETY: libc's contract for this function makes `path` null or a NUL-terminated
            // string, which is all `decide` requires.
            let d = unsafe { decide(libc::AT_FDCWD, path, flags) };
            let call_real = || match real::$real() {
                // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`,
                // typed by its C signature); it gets the caller's arguments under their contract.
                Some(f) => unsafe { f(path, flags, mode) },
                // SAFETY: `sys_openat` needs only a NUL-terminated `path`, which the caller's
                // contract already demands; the kernel reports a bad fd or flag as errno.
                None => unsafe { real::sys_openat(libc::AT_FDCWD, path, flags, mode) },
            };
            // SAFETY: `d` is `Pass` for a null `path`; otherwise the caller's contract makes
            // `path` a NUL-terminated string, as `finish` requires.
            unsafe { finish(d, flags, path, call_real) }
        }
    };
}

macro_rules! openat_hook {
    ($(#[$doc:meta])* $name:ident, $real:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: mode_t,
        ) -> c_int {
            let mode = mode_arg(flags, mode);
            // SAFETY: libc's contract for this function makes `path` null or a NUL-terminated
            // string, which is all `decide` requires.
            let d = unsafe { decide(dirfd, path, flags) };
            let call_real = || match real::$real() {
                // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`,
                // typed by its C signature); it gets the caller's arguments under their contract.
                Some(f) => unsafe { f(dirfd, path, flags, mode) },
                // SAFETY: `sys_openat` needs only a NUL-terminated `path`, which the caller's
                // contract already demands; the kernel reports a bad fd or flag as errno.
                None => unsafe { real::sys_openat(dirfd, path, flags, mode) },
            };
            // SAFETY: `d` is `Pass` for a null `path`; otherwise the caller's contract makes
            // `path` a NUL-terminated string, as `finish` requires.
            unsafe { finish(d, flags, path, call_real) }
        }
    };
}

macro_rules! open2_hook {
    ($(#[$doc:meta])* $name:ident, $real:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            // SAFETY: libc's contract for this function makes `path` null or a NUL-terminated
            // string, which is all `decide` requires.
            let d = unsafe { decide(libc::AT_FDCWD, path, flags) };
            let call_real = || match real::$real() {
                // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`,
                // typed by its C signature); it gets the caller's arguments under their contract.
                Some(f) => unsafe { f(path, flags) },
                // SAFETY: `sys_openat` needs only a NUL-terminated `path`, which the caller's
                // contract already demands; the kernel reports a bad fd or flag as errno.
                None => unsafe { real::sys_openat(libc::AT_FDCWD, path, flags, 0) },
            };
            // SAFETY: `d` is `Pass` for a null `path`; otherwise the caller's contract makes
            // `path` a NUL-terminated string, as `finish` requires.
            unsafe { finish(d, flags, path, call_real) }
        }
    };
}

macro_rules! openat2_hook {
    ($(#[$doc:meta])* $name:ident, $real:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
            // SAFETY: libc's contract for this function makes `path` null or a NUL-terminated
            // string, which is all `decide` requires.
            let d = unsafe { decide(dirfd, path, flags) };
            let call_real = || match real::$real() {
                // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`,
                // typed by its C signature); it gets the caller's arguments under their contract.
                Some(f) => unsafe { f(dirfd, path, flags) },
                // SAFETY: `sys_openat` needs only a NUL-terminated `path`, which the caller's
                // contract already demands; the kernel reports a bad fd or flag as errno.
                None => unsafe { real::sys_openat(dirfd, path, flags, 0) },
            };
            // SAFETY: `d` is `Pass` for a null `path`; otherwise the caller's contract makes
            // `path` a NUL-terminated string, as `finish` requires.
            unsafe { finish(d, flags, path, call_real) }
        }
    };
}

open_hook!(
    /// Hooked `open(2)`.
    open,
    open
);
open_hook!(
    /// Hooked `open64` (what CPython and Rust std call).
    open64,
    open64
);
openat_hook!(
    /// Hooked `openat(2)`.
    openat,
    openat
);
openat_hook!(
    /// Hooked `openat64`.
    openat64,
    openat64
);
open2_hook!(
    /// Hooked fortified `__open_2`.
    __open_2,
    open_2
);
open2_hook!(
    /// Hooked fortified `__open64_2`.
    __open64_2,
    open64_2
);
openat2_hook!(
    /// Hooked fortified `__openat_2`.
    __openat_2,
    openat_2
);
openat2_hook!(
    /// Hooked fortified `__openat64_2`.
    __openat64_2,
    openat64_2
);

/// Shared body of `fopen`/`fopen64`: glibc's `fopen` opens through an internal `__open` that
/// the `open` hooks never see, so read-only model files are opened here and wrapped with
/// `fdopen`.
///
/// # Safety
/// `path` and `mode` must be null or valid NUL-terminated strings.
unsafe fn fopen_common(
    path: *const c_char,
    mode: *const c_char,
    real_fn: fn() -> Option<real::FopenFn>,
) -> *mut FILE {
    let flags = if mode.is_null() {
        None
    } else {
        // SAFETY: `mode` is non-null (checked above) and, by this function's contract, a
        // NUL-terminated string; the borrow ends within this statement.
        path::fopen_read_flags(unsafe { CStr::from_ptr(mode) }.to_bytes())
    };
    let decision = match flags {
        // SAFETY: this function's contract makes `path` null or a NUL-terminated string,
        // which is all `decide` requires.
        Some(f) => unsafe { decide(libc::AT_FDCWD, path, f) },
        // A write mode: the stream may still have opened a placeholder.
        None if !path.is_null() && !mode.is_null() && state::active() => Decision::PassAndCheck,
        None => Decision::Pass,
    };
    let check = matches!(decision, Decision::PassAndCheck);
    match decision {
        Decision::Pass | Decision::PassAndCheck => match real_fn() {
            Some(f) => {
                // SAFETY: `f` is the next `fopen` in the link chain, and `path`/`mode`
                // are the caller's arguments, passed on unchanged under its contract.
                let fp = unsafe { f(path, mode) };
                if check && !fp.is_null() {
                    // SAFETY: `fp` is the non-null stream just opened; `decide` (or the check
                    // above) answered `PassAndCheck` only for non-null `path` and `mode`, which
                    // this function's contract makes NUL-terminated strings.
                    unsafe { check_stream(fp, path, mode) }
                } else {
                    fp
                }
            }
            None => {
                state::set_errno(libc::ENOSYS);
                core::ptr::null_mut()
            }
        },
        Decision::Fd(fd) => {
            let saved = state::errno();
            // SAFETY: `fd` is the fd `decide` just opened and nobody else holds; `mode` was
            // non-null to reach `Fd` (a null mode gives `Pass`), so it is a NUL-terminated string.
            let fp = unsafe { libc::fdopen(fd, mode) };
            if fp.is_null() {
                let e = state::errno();
                fdtrack::forget(fd);
                // SAFETY: `fdopen` failed, so no stream adopted `fd`: it is still ours alone,
                // and is not used after this close.
                unsafe { libc::close(fd) };
                state::set_errno(e);
            } else {
                state::set_errno(saved);
            }
            fp
        }
        Decision::Fail(e) => {
            state::set_errno(e);
            core::ptr::null_mut()
        }
    }
}

/// [`placeholder::check`] for a stream: a served placeholder's fd is moved under the stream's
/// fd number (keeping its close-on-exec flag); a refused one closes the stream and fails.
///
/// # Safety
/// `fp` must be an open stream; `path` and `mode` valid NUL-terminated strings.
unsafe fn check_stream(fp: *mut FILE, path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: `fp` is an open stream (this function's contract); fileno only reads it.
    let fd = unsafe { libc::fileno(fp) };
    // SAFETY: this function's contract makes `mode` a NUL-terminated string; the borrow ends
    // before `flags` is computed.
    let mode_bytes = unsafe { CStr::from_ptr(mode) }.to_bytes();
    let flags = path::fopen_read_flags(mode_bytes).unwrap_or(libc::O_RDWR);
    // SAFETY: this function's contract makes `path` a NUL-terminated string, which is all
    // `check` requires.
    match unsafe { placeholder::check(fd, flags, path) } {
        Checked::Keep => fp,
        Checked::Replace {
            fd: served,
            placeholder,
        } => {
            let saved = state::errno();
            // SAFETY: `fd` is the open stream's fd and `served` the fd the agent just sent, both
            // open; fcntl(F_GETFD) and dup3 take plain ints and touch no memory. dup3 puts the
            // served file under the stream's fd number, then our copy `served` is closed and
            // not used again. On failure `fp`, open and not yet returned, is closed and null
            // is returned instead.
            unsafe {
                let cloexec = libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0;
                let dup_flags = if cloexec { libc::O_CLOEXEC } else { 0 };
                let r = libc::dup3(served, fd, dup_flags);
                libc::close(served);
                if r < 0 {
                    let e = state::errno();
                    libc::fclose(fp);
                    state::set_errno(e);
                    return core::ptr::null_mut();
                }
            }
            if let Ok(s) = real::sys_fstatat_fd(fd) {
                fdtrack::record(fd, fdtrack::id_of(&s), placeholder);
            }
            state::set_errno(saved);
            fp
        }
        Checked::Fail(e) => {
            // SAFETY: `fp` is the open stream made in `fopen_common` and not yet handed to the
            // caller; it is not used after this fclose (null is returned instead).
            unsafe { libc::fclose(fp) };
            state::set_errno(e);
            core::ptr::null_mut()
        }
    }
}

/// Hooked `fopen(3)`.
///
/// # Safety
/// Same contract as libc `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: libc's `fopen` contract makes `path` and `mode` null or NUL-terminated strings,
    // which is all `fopen_common` requires.
    unsafe { fopen_common(path, mode, real::fopen) }
}

/// Hooked `fopen64`.
///
/// # Safety
/// Same contract as libc `fopen64`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: libc's `fopen64` contract makes `path` and `mode` null or NUL-terminated
    // strings, which is all `fopen_common` requires.
    unsafe { fopen_common(path, mode, real::fopen64) }
}

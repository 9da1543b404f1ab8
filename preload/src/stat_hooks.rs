//! The exported fd-stat entry points: `fstat`, `fstat64`, `fstatat`, `fstatat64`, `statx` and
//! the pre-2.33 glibc ABI `__fxstat`, `__fxstat64`, `__fxstatat`, `__fxstatat64`.
//!
//! Design decision: the open hooks return a memfd-backed fd for a model file, so without these
//! hooks `fstat(fd)` names the memfd while `stat(path)` names the placeholder, and tools that
//! compare the two (coreutils `cp`: "replaced while being copied"; rsync, tar) refuse the file.
//! Each hook calls the real function with the caller's exact arguments and, only when it
//! succeeded on an fd recorded in [`fdtrack`] *and* returned exactly the recorded memfd's
//! `(dev, ino)`, rewrites `(dev, ino)` to the placeholder's; every other field (size is already
//! exact), every error and errno are left as they are. The `*at` and `statx` variants are only
//! considered for `AT_EMPTY_PATH` with an empty path (a stat of the fd itself). Both symbol sets
//! are exported: glibc >= 2.33 programs import `fstat`/`fstatat`, older ones `__fxstat*`. For an
//! fd that was never tracked the cost is one atomic load after the real call; no allocation, no
//! lock, no re-entry guard needed (nothing here calls back into libc except the real function).

use libc::{c_char, c_int, c_uint};

use crate::fdtrack::{self, FileId};
use crate::real;

/// A stat result buffer whose identity fields can be read and rewritten in place.
trait StatBuf {
    /// # Safety
    /// `p` must point at a buffer filled by a successful stat call.
    unsafe fn id(p: *const Self) -> FileId;
    /// # Safety
    /// As for [`StatBuf::id`], and writable.
    unsafe fn set_id(p: *mut Self, id: FileId);
}

macro_rules! stat_buf {
    ($ty:ty) => {
        impl StatBuf for $ty {
            unsafe fn id(p: *const Self) -> FileId {
                // SAFETY: the trait's contract makes `p` point at a filled stat buffer of this
                // type; only the two fields are read through the raw pointer, no reference to the
                // whole buffer is formed.
                unsafe {
                    FileId {
                        dev: (*p).st_dev,
                        ino: (*p).st_ino,
                    }
                }
            }
            unsafe fn set_id(p: *mut Self, id: FileId) {
                // SAFETY: the trait's contract makes `p` point at a filled, writable stat
                // buffer of this type; only the two fields are written through the raw pointer.
                unsafe {
                    (*p).st_dev = id.dev;
                    (*p).st_ino = id.ino;
                }
            }
        }
    };
}

stat_buf!(libc::stat);
stat_buf!(libc::stat64);

impl StatBuf for libc::statx {
    unsafe fn id(p: *const Self) -> FileId {
        // SAFETY: the trait's contract makes `p` point at a filled `struct statx` (256 bytes in
        // the kernel and glibc); only three fields are read through the raw pointer, no
        // reference to the whole (possibly shorter-declared) buffer is formed.
        unsafe { FileId::from_statx((*p).stx_dev_major, (*p).stx_dev_minor, (*p).stx_ino) }
    }
    unsafe fn set_id(p: *mut Self, id: FileId) {
        let (major, minor) = id.dev_major_minor();
        // SAFETY: the trait's contract makes `p` point at a filled, writable `struct statx`;
        // only these three fields are written through the raw pointer.
        unsafe {
            (*p).stx_dev_major = major;
            (*p).stx_dev_minor = minor;
            (*p).stx_ino = id.ino;
        }
    }
}

/// Applies the placeholder identity to a successful (`r == 0`) stat of `fd` into `buf`.
/// Returns `r`.
///
/// # Safety
/// When `r == 0`, `buf` is null or points at the buffer the real call filled.
#[inline]
unsafe fn fix<T: StatBuf>(r: c_int, fd: c_int, buf: *mut T) -> c_int {
    if r != 0 || buf.is_null() {
        return r;
    }
    let Some((served, placeholder)) = fdtrack::lookup(fd) else {
        return r;
    };
    // SAFETY: `r == 0` and `buf` is non-null (both checked above), so by this function's
    // contract `buf` is the buffer the real call just filled.
    if unsafe { T::id(buf) } == served {
        // SAFETY: the same filled buffer, which the caller passed to a stat call to be written.
        unsafe { T::set_id(buf, placeholder) };
    }
    r
}

/// True for `AT_EMPTY_PATH` with `""` (or, since Linux 6.11, a null path): the call stats
/// `dirfd` itself.
///
/// # Safety
/// `path` must be null or a valid C string.
#[inline]
unsafe fn stats_the_fd(path: *const c_char, flags: c_int) -> bool {
    // SAFETY: `path` is non-null here (short-circuit), so by this function's contract it is a
    // NUL-terminated string, whose first byte is always readable.
    flags & libc::AT_EMPTY_PATH != 0 && (path.is_null() || unsafe { *path } == 0)
}

/// Raw-syscall stand-in for a missing real `fstat`-like function.
///
/// # Safety
/// `buf` must be valid for writing a `struct stat` (or the same-layout `struct stat64`).
unsafe fn sys_fstat<T>(fd: c_int, buf: *mut T) -> c_int {
    // SAFETY: the path is a NUL-terminated literal; this function's contract makes `buf`
    // writable for a `struct stat` (the same size and alignment as `struct stat64`, checked at
    // compile time in `real`).
    unsafe { real::sys_fstatat_into(fd, c"".as_ptr(), buf.cast(), libc::AT_EMPTY_PATH) }
}

/// Hooked `fstat` (glibc >= 2.33).
///
/// # Safety
/// Same contract as libc `fstat`.
#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int {
    let r = match real::fstat() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(fd, buf) },
        // SAFETY: the caller's contract makes `buf` writable for the stat buffer it names,
        // which is all `sys_fstat` requires.
        None => unsafe { sys_fstat(fd, buf) },
    };
    // SAFETY: when `r == 0` the call above succeeded on the caller's `buf`, so `buf` is null
    // or the buffer it filled, as `fix` requires.
    unsafe { fix(r, fd, buf) }
}

/// Hooked `fstat64` (glibc >= 2.33; what CPython calls).
///
/// # Safety
/// Same contract as libc `fstat64`.
#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, buf: *mut libc::stat64) -> c_int {
    let r = match real::fstat64() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(fd, buf) },
        // SAFETY: the caller's contract makes `buf` writable for the stat buffer it names,
        // which is all `sys_fstat` requires.
        None => unsafe { sys_fstat(fd, buf) },
    };
    // SAFETY: when `r == 0` the call above succeeded on the caller's `buf`, so `buf` is null
    // or the buffer it filled, as `fix` requires.
    unsafe { fix(r, fd, buf) }
}

/// Hooked `__fxstat` (what programs built against glibc < 2.33 import for `fstat`).
///
/// # Safety
/// Same contract as glibc `__fxstat`.
#[no_mangle]
pub unsafe extern "C" fn __fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    let r = match real::fxstat() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(ver, fd, buf) },
        // SAFETY: the caller's contract makes `buf` writable for a `struct stat`, which is all
        // `sys_fstat` requires (`ver` names the kernel's own layout on these 64-bit targets).
        None => unsafe { sys_fstat(fd, buf) },
    };
    // SAFETY: when `r == 0` the call above succeeded on the caller's `buf`, so `buf` is null
    // or the buffer it filled, as `fix` requires.
    unsafe { fix(r, fd, buf) }
}

/// Hooked `__fxstat64`.
///
/// # Safety
/// Same contract as glibc `__fxstat64`.
#[no_mangle]
pub unsafe extern "C" fn __fxstat64(ver: c_int, fd: c_int, buf: *mut libc::stat64) -> c_int {
    let r = match real::fxstat64() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(ver, fd, buf) },
        // SAFETY: the caller's contract makes `buf` writable for a `struct stat64`, the same
        // layout as `struct stat` (checked in `real`), which is all `sys_fstat` requires.
        None => unsafe { sys_fstat(fd, buf) },
    };
    // SAFETY: when `r == 0` the call above succeeded on the caller's `buf`, so `buf` is null
    // or the buffer it filled, as `fix` requires.
    unsafe { fix(r, fd, buf) }
}

/// Hooked `fstatat` (glibc >= 2.33). Only `(fd, "", AT_EMPTY_PATH)` can be rewritten.
///
/// # Safety
/// Same contract as libc `fstatat`.
#[no_mangle]
pub unsafe extern "C" fn fstatat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    let r = match real::fstatat() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(dirfd, path, buf, flags) },
        // SAFETY: the caller's contract makes `path` a NUL-terminated string and `buf`
        // writable for a `struct stat`, as `sys_fstatat_into` requires.
        None => unsafe { real::sys_fstatat_into(dirfd, path, buf, flags) },
    };
    // SAFETY: the call succeeded, so `path` is null (Linux >= 6.11 with AT_EMPTY_PATH) or the
    // NUL-terminated string the caller's contract promises, as `stats_the_fd` requires.
    if r == 0 && unsafe { stats_the_fd(path, flags) } {
        // SAFETY: `r == 0`: the call succeeded on the caller's `buf`, so `buf` is the buffer
        // it filled, as `fix` requires.
        return unsafe { fix(r, dirfd, buf) };
    }
    r
}

/// Hooked `fstatat64` (glibc >= 2.33; what CPython calls).
///
/// # Safety
/// Same contract as libc `fstatat64`.
#[no_mangle]
pub unsafe extern "C" fn fstatat64(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat64,
    flags: c_int,
) -> c_int {
    let r = match real::fstatat64() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(dirfd, path, buf, flags) },
        // SAFETY: the caller's contract makes `path` a NUL-terminated string and `buf`
        // writable for a `struct stat64`, the same layout as `struct stat` (checked in `real`).
        None => unsafe { real::sys_fstatat_into(dirfd, path, buf.cast(), flags) },
    };
    // SAFETY: the call succeeded, so `path` is null (Linux >= 6.11 with AT_EMPTY_PATH) or the
    // NUL-terminated string the caller's contract promises, as `stats_the_fd` requires.
    if r == 0 && unsafe { stats_the_fd(path, flags) } {
        // SAFETY: `r == 0`: the call succeeded on the caller's `buf`, so `buf` is the buffer
        // it filled, as `fix` requires.
        return unsafe { fix(r, dirfd, buf) };
    }
    r
}

/// Hooked `__fxstatat` (glibc < 2.33 ABI of `fstatat`).
///
/// # Safety
/// Same contract as glibc `__fxstatat`.
#[no_mangle]
pub unsafe extern "C" fn __fxstatat(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    let r = match real::fxstatat() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(ver, dirfd, path, buf, flags) },
        // SAFETY: the caller's contract makes `path` a NUL-terminated string and `buf`
        // writable for a `struct stat`, as `sys_fstatat_into` requires.
        None => unsafe { real::sys_fstatat_into(dirfd, path, buf, flags) },
    };
    // SAFETY: the call succeeded, so `path` is null (Linux >= 6.11 with AT_EMPTY_PATH) or the
    // NUL-terminated string the caller's contract promises, as `stats_the_fd` requires.
    if r == 0 && unsafe { stats_the_fd(path, flags) } {
        // SAFETY: `r == 0`: the call succeeded on the caller's `buf`, so `buf` is the buffer
        // it filled, as `fix` requires.
        return unsafe { fix(r, dirfd, buf) };
    }
    r
}

/// Hooked `__fxstatat64`.
///
/// # Safety
/// Same contract as glibc `__fxstatat64`.
#[no_mangle]
pub unsafe extern "C" fn __fxstatat64(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat64,
    flags: c_int,
) -> c_int {
    let r = match real::fxstatat64() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(ver, dirfd, path, buf, flags) },
        // SAFETY: the caller's contract makes `path` a NUL-terminated string and `buf`
        // writable for a `struct stat64`, the same layout as `struct stat` (checked in `real`).
        None => unsafe { real::sys_fstatat_into(dirfd, path, buf.cast(), flags) },
    };
    // SAFETY: the call succeeded, so `path` is null (Linux >= 6.11 with AT_EMPTY_PATH) or the
    // NUL-terminated string the caller's contract promises, as `stats_the_fd` requires.
    if r == 0 && unsafe { stats_the_fd(path, flags) } {
        // SAFETY: `r == 0`: the call succeeded on the caller's `buf`, so `buf` is the buffer
        // it filled, as `fix` requires.
        return unsafe { fix(r, dirfd, buf) };
    }
    r
}

/// Hooked `statx` (glibc >= 2.28). Only `(fd, "", AT_EMPTY_PATH, ...)` can be rewritten.
///
/// # Safety
/// Same contract as libc `statx`.
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    let r = match real::statx() {
        // SAFETY: `f` is the next definition of this very symbol (`dlsym(RTLD_NEXT)`, typed by
        // its C signature); it gets the caller's arguments under their contract.
        Some(f) => unsafe { f(dirfd, path, flags, mask, buf) },
        // SAFETY: the caller's contract makes `path` a NUL-terminated string and `buf`
        // writable for a `struct statx`, as `sys_statx` requires.
        None => unsafe { real::sys_statx(dirfd, path, flags, mask, buf) },
    };
    // SAFETY: the call succeeded, so `path` is null (Linux >= 6.11 with AT_EMPTY_PATH) or the
    // NUL-terminated string the caller's contract promises, as `stats_the_fd` requires.
    if r == 0 && unsafe { stats_the_fd(path, flags) } {
        // SAFETY: `r == 0`: the call succeeded on the caller's `buf`, so `buf` is the buffer
        // it filled, as `fix` requires.
        return unsafe { fix(r, dirfd, buf) };
    }
    r
}

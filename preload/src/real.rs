//! The real libc functions behind the hooks, resolved with `dlsym(RTLD_NEXT, …)`.
//!
//! Design decision: each pointer is cached in its own `AtomicPtr` (resolution is idempotent, so
//! a race only resolves twice; no lock, no `Once` that a fork could leave held). When a symbol
//! cannot be resolved (for instance `dlsym` re-entered while it initialises, or `fstat` on a
//! glibc older than 2.33, which does not export it), the hooks fall back to the raw system
//! call that glibc itself makes underneath (`openat`, `newfstatat`, `statx`).
//!
//! The stat fallbacks write the kernel's `struct stat` into the caller's `struct stat` /
//! `struct stat64`: the same layout on the 64-bit Linux targets this library is built for
//! (x86-64, aarch64), which the compile-time checks below pin down.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};
use libc::{c_char, c_int, mode_t, FILE};

/// `open`, `open64`.
pub type OpenFn = unsafe extern "C" fn(*const c_char, c_int, mode_t) -> c_int;
/// `openat`, `openat64`.
pub type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, mode_t) -> c_int;
/// `__open_2`, `__open64_2`.
pub type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `__openat_2`, `__openat64_2`.
pub type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
/// `fopen`, `fopen64`.
pub type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut FILE;
/// `fstat`.
pub type FstatFn = unsafe extern "C" fn(c_int, *mut libc::stat) -> c_int;
/// `fstat64`.
pub type Fstat64Fn = unsafe extern "C" fn(c_int, *mut libc::stat64) -> c_int;
/// `__fxstat` (glibc < 2.33 ABI: `ver` first).
pub type FxstatFn = unsafe extern "C" fn(c_int, c_int, *mut libc::stat) -> c_int;
/// `__fxstat64`.
pub type Fxstat64Fn = unsafe extern "C" fn(c_int, c_int, *mut libc::stat64) -> c_int;
/// `fstatat`.
pub type FstatatFn = unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
/// `fstatat64`.
pub type Fstatat64Fn =
    unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat64, c_int) -> c_int;
/// `__fxstatat`.
pub type FxstatatFn =
    unsafe extern "C" fn(c_int, c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
/// `__fxstatat64`.
pub type Fxstatat64Fn =
    unsafe extern "C" fn(c_int, c_int, *const c_char, *mut libc::stat64, c_int) -> c_int;
/// `statx`.
pub type StatxFn =
    unsafe extern "C" fn(c_int, *const c_char, c_int, libc::c_uint, *mut libc::statx) -> c_int;

// The raw `newfstatat` fallbacks fill a `struct stat64` through a `struct stat` pointer.
const _: () = assert!(core::mem::size_of::<libc::stat>() == core::mem::size_of::<libc::stat64>());
const _: () = assert!(core::mem::align_of::<libc::stat>() == core::mem::align_of::<libc::stat64>());

fn resolve(cache: &AtomicPtr<c_void>, name: &core::ffi::CStr) -> *mut c_void {
    let p = cache.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT lookups have no other preconditions.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if !p.is_null() {
        cache.store(p, Ordering::Release);
    }
    p
}

macro_rules! real_fn {
    ($(#[$doc:meta])* $fn_name:ident, $sym:literal, $ty:ty) => {
        $(#[$doc])*
        pub fn $fn_name() -> Option<$ty> {
            static CACHE: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
            let p = resolve(&CACHE, $sym);
            if p.is_null() {
                None
            } else {
                // SAFETY: the symbol named `$sym` in libc has exactly the C signature `$ty`.
                Some(unsafe { core::mem::transmute::<*mut c_void, $ty>(p) })
            }
        }
    };
}

real_fn!(
    /// Real `open`.
    open,
    c"open",
    OpenFn
);
real_fn!(
    /// Real `open64`.
    open64,
    c"open64",
    OpenFn
);
real_fn!(
    /// Real `openat`.
    openat,
    c"openat",
    OpenatFn
);
real_fn!(
    /// Real `openat64`.
    openat64,
    c"openat64",
    OpenatFn
);
real_fn!(
    /// Real `__open_2`.
    open_2,
    c"__open_2",
    Open2Fn
);
real_fn!(
    /// Real `__open64_2`.
    open64_2,
    c"__open64_2",
    Open2Fn
);
real_fn!(
    /// Real `__openat_2`.
    openat_2,
    c"__openat_2",
    Openat2Fn
);
real_fn!(
    /// Real `__openat64_2`.
    openat64_2,
    c"__openat64_2",
    Openat2Fn
);
real_fn!(
    /// Real `fopen`.
    fopen,
    c"fopen",
    FopenFn
);
real_fn!(
    /// Real `fopen64`.
    fopen64,
    c"fopen64",
    FopenFn
);

real_fn!(
    /// Real `fstat` (exported since glibc 2.33).
    fstat,
    c"fstat",
    FstatFn
);
real_fn!(
    /// Real `fstat64` (exported since glibc 2.33).
    fstat64,
    c"fstat64",
    Fstat64Fn
);
real_fn!(
    /// Real `__fxstat`.
    fxstat,
    c"__fxstat",
    FxstatFn
);
real_fn!(
    /// Real `__fxstat64`.
    fxstat64,
    c"__fxstat64",
    Fxstat64Fn
);
real_fn!(
    /// Real `fstatat` (exported since glibc 2.33).
    fstatat,
    c"fstatat",
    FstatatFn
);
real_fn!(
    /// Real `fstatat64` (exported since glibc 2.33).
    fstatat64,
    c"fstatat64",
    Fstatat64Fn
);
real_fn!(
    /// Real `__fxstatat`.
    fxstatat,
    c"__fxstatat",
    FxstatatFn
);
real_fn!(
    /// Real `__fxstatat64`.
    fxstatat64,
    c"__fxstatat64",
    Fxstatat64Fn
);
real_fn!(
    /// Real `statx` (exported since glibc 2.28).
    statx,
    c"statx",
    StatxFn
);

/// Raw `newfstatat(2)` into `buf`. Returns 0 or -1 with errno set; never re-enters a hook.
///
/// # Safety
/// `path` must be a valid NUL-terminated string and `buf` valid for writing a `struct stat`.
pub unsafe fn sys_fstatat_into(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded contract; the kernel validates the rest.
    unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::c_long::from(dirfd),
            path,
            buf,
            libc::c_long::from(flags),
        ) as c_int
    }
}

/// Raw `newfstatat(2)`, returning the result or the errno.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
pub unsafe fn sys_fstatat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> Result<libc::stat, c_int> {
    // SAFETY: `struct stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: forwarded contract for `path`; `st` is a valid out-buffer.
    if unsafe { sys_fstatat_into(dirfd, path, &mut st, flags) } == 0 {
        Ok(st)
    } else {
        Err(crate::state::errno())
    }
}

/// Raw `fstat(2)` of `fd` (as `newfstatat(fd, "", AT_EMPTY_PATH)`).
pub fn sys_fstatat_fd(fd: c_int) -> Result<libc::stat, c_int> {
    // SAFETY: literal empty path.
    unsafe { sys_fstatat(fd, c"".as_ptr(), libc::AT_EMPTY_PATH) }
}

/// Raw `statx(2)` into `buf`. Returns 0 or -1 with errno set.
///
/// # Safety
/// `path` must be a valid NUL-terminated string and `buf` valid for writing a `struct statx`.
pub unsafe fn sys_statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: libc::c_uint,
    buf: *mut libc::statx,
) -> c_int {
    // SAFETY: forwarded contract; the kernel validates the rest.
    unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::c_long::from(dirfd),
            path,
            libc::c_long::from(flags),
            libc::c_long::from(mask),
            buf,
        ) as c_int
    }
}

/// Raw `openat(2)`: never re-enters any hook. Returns the fd or -1 with errno set.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
pub unsafe fn sys_openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: forwarded contract; the kernel validates the rest.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::c_long::from(dirfd),
            path,
            libc::c_long::from(flags),
            libc::c_long::from(mode),
        ) as c_int
    }
}

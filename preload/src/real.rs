//! The real libc functions behind the hooks, resolved with `dlsym(RTLD_NEXT, …)`.
//!
//! Design decision: every pointer is resolved once, by the library's constructor
//! ([`resolve_all`]), and cached in its own `AtomicPtr` (no lock, no `Once` that a fork could
//! leave held), so no hook calls `dlsym` — which may allocate or take the loader's lock —
//! once the constructor ran. A hook that runs before it (another library's constructor opening
//! a file) uses the raw system call that glibc itself makes underneath (`openat`,
//! `newfstatat`, `statx`); only `fopen`, which has no such equivalent, resolves lazily then.
//! A symbol the constructor could not resolve (`fstat` on a glibc older than 2.33, which does
//! not export it) takes the raw system call for good.
//!
//! The stat fallbacks write the kernel's `struct stat` into the caller's `struct stat` /
//! `struct stat64`: the same layout on the 64-bit Linux targets this library is built for
//! (x86-64, aarch64), which the compile-time checks below pin down.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
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

/// Set once [`resolve_all`] has run: from then on no hook calls `dlsym`.
static RESOLVED: AtomicBool = AtomicBool::new(false);

fn lookup(cache: &AtomicPtr<c_void>, name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: `name` is a NUL-terminated `CStr` that outlives the call; RTLD_NEXT needs no
    // handle of ours, and dlsym only reads the name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if !p.is_null() {
        cache.store(p, Ordering::Release);
    }
    p
}

/// The cached pointer; before [`resolve_all`] ran, a lookup only when `lazy` (no raw system
/// call can stand in for the function).
fn resolve(cache: &AtomicPtr<c_void>, name: &core::ffi::CStr, lazy: bool) -> *mut c_void {
    let p = cache.load(Ordering::Acquire);
    if !p.is_null() || RESOLVED.load(Ordering::Acquire) || !lazy {
        return p;
    }
    lookup(cache, name)
}

macro_rules! real_fn {
    ($(#[$doc:meta])* $fn_name:ident, $sym:literal, $ty:ty) => {
        real_fn!($(#[$doc])* $fn_name, $sym, $ty, false);
    };
    ($(#[$doc:meta])* $fn_name:ident, $sym:literal, $ty:ty, $lazy:expr) => {
        $(#[$doc])*
        pub fn $fn_name() -> Option<$ty> {
            let p = resolve(&caches::$fn_name, $sym, $lazy);
            if p.is_null() {
                None
            } else {
                // SAFETY: `p` is non-null and is the address of the next definition of `$sym`,
                // whose C signature `$ty` spells out; a function pointer and a data pointer
                // have the same size and representation on the Linux targets built for.
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
    FopenFn,
    true
);
real_fn!(
    /// Real `fopen64`.
    fopen64,
    c"fopen64",
    FopenFn,
    true
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

/// One cache per real function.
#[allow(non_upper_case_globals)]
mod caches {
    use core::ffi::c_void;
    use core::sync::atomic::AtomicPtr;

    pub static open: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static open64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static openat: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static openat64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static open_2: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static open64_2: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static openat_2: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static openat64_2: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fopen: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fopen64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fstat: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fstat64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fxstat: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fxstat64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fstatat: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fstatat64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fxstatat: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static fxstatat64: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    pub static statx: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
}

/// Resolves every real function (the library's constructor calls this first).
pub fn resolve_all() {
    lookup(&caches::open, c"open");
    lookup(&caches::open64, c"open64");
    lookup(&caches::openat, c"openat");
    lookup(&caches::openat64, c"openat64");
    lookup(&caches::open_2, c"__open_2");
    lookup(&caches::open64_2, c"__open64_2");
    lookup(&caches::openat_2, c"__openat_2");
    lookup(&caches::openat64_2, c"__openat64_2");
    lookup(&caches::fopen, c"fopen");
    lookup(&caches::fopen64, c"fopen64");
    lookup(&caches::fstat, c"fstat");
    lookup(&caches::fstat64, c"fstat64");
    lookup(&caches::fxstat, c"__fxstat");
    lookup(&caches::fxstat64, c"__fxstat64");
    lookup(&caches::fstatat, c"fstatat");
    lookup(&caches::fstatat64, c"fstatat64");
    lookup(&caches::fxstatat, c"__fxstatat");
    lookup(&caches::fxstatat64, c"__fxstatat64");
    lookup(&caches::statx, c"statx");
    RESOLVED.store(true, Ordering::Release);
}

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
    // SAFETY: this function's contract makes `path` a NUL-terminated string and `buf`
    // writable for a `struct stat`, the kernel's layout on these targets, which is all the
    // kernel reads and writes; a bad `dirfd` or `flags` comes back as errno.
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
    // SAFETY: this function's contract makes `path` a NUL-terminated string; `st` is a
    // local `struct stat`, writable for its whole size.
    if unsafe { sys_fstatat_into(dirfd, path, &mut st, flags) } == 0 {
        Ok(st)
    } else {
        Err(crate::state::errno())
    }
}

/// Raw `fstat(2)` of `fd` (as `newfstatat(fd, "", AT_EMPTY_PATH)`).
pub fn sys_fstatat_fd(fd: c_int) -> Result<libc::stat, c_int> {
    // SAFETY: the path is a NUL-terminated literal (empty, with AT_EMPTY_PATH stating `fd`
    // itself); a closed or bad `fd` comes back as errno.
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
    // SAFETY: this function's contract makes `path` a NUL-terminated string and `buf`
    // writable for a `struct statx`, all the kernel reads and writes; a bad `dirfd`,
    // `flags` or `mask` comes back as errno.
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
    // SAFETY: this function's contract makes `path` a NUL-terminated string, the only memory
    // the kernel reads; a bad `dirfd`, `flags` or `mode` comes back as errno.
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

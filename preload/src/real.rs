//! The real libc functions behind the hooks, resolved with `dlsym(RTLD_NEXT, …)`.
//!
//! Design decision: each pointer is cached in its own `AtomicPtr` (resolution is idempotent, so
//! a race only resolves twice; no lock, no `Once` that a fork could leave held). When a symbol
//! cannot be resolved (for instance `dlsym` re-entered while it initialises), the `open`
//! family falls back to the raw `openat` system call, which is what glibc does underneath.

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

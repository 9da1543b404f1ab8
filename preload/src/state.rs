//! Process-wide configuration (role, MODEL_DIR, socket path, log path), the re-entry guard and
//! errno helpers.
//!
//! Design decision: the environment is read lazily by the first hooked call (or the
//! constructor, whichever comes first) and published through atomics into static buffers, so
//! the hot path is a couple of atomic loads with no lock, no allocation and nothing a `fork` or
//! `vfork` child could find half-held. Each value is written exactly once (a claim flag picks
//! the single writer) and becomes visible with a release store of its length.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;
use std::ffi::CStr;

use crate::path::{PathBuffer, PATH_CAP};

/// `ENABLE_CONNECTOR` unset or any other value: pure pass-through.
pub const ROLE_OFF: u8 = 0;
/// `ENABLE_CONNECTOR=1`: the main process, which starts the agent if none answers.
pub const ROLE_MAIN: u8 = 1;
/// `ENABLE_CONNECTOR=2`: a secondary process that only uses an existing agent.
pub const ROLE_SECONDARY: u8 = 2;

/// Socket path used when `CONNECTOR_UDS_PATH` is unset.
pub const DEFAULT_SOCKET_PATH: &[u8] = ossc_wire::DEFAULT_SOCKET_PATH.as_bytes();

/// After a failed agent start, opens fail at once (no new start, no new log line) this long.
pub const COOL_DOWN: Duration = Duration::from_secs(30);
/// Default deadline of a READY answer (`OSS_CONNECTOR_READY_TIMEOUT_SEC`): the agent lists
/// OSS_PATH and downloads the small files before it answers.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// Default deadline of an OPEN answer (`OSS_CONNECTOR_OPEN_TIMEOUT_SEC`): the agent answers
/// once the whole file is in memory, which for a multi-GB shard on a slow link or under memory
/// pressure takes minutes.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(1800);

const INIT_NONE: u8 = 0;
const INIT_RUNNING: u8 = 1;
const INIT_DONE: u8 = 2;

/// A byte string published once, readable lock-free afterwards.
pub struct Published {
    claimed: AtomicBool,
    len: AtomicUsize,
    buf: UnsafeCell<[u8; PATH_CAP]>,
}

// SAFETY: `buf` is written only by the single thread that won `claimed`, before the release
// store of a non-zero `len`; readers only read `buf[..len]` after an acquire load of `len`.
unsafe impl Sync for Published {}

impl Published {
    const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            len: AtomicUsize::new(0),
            buf: UnsafeCell::new([0; PATH_CAP]),
        }
    }

    /// The value, if published.
    pub fn get(&self) -> Option<&[u8]> {
        let n = self.len.load(Ordering::Acquire);
        if n == 0 {
            return None;
        }
        // SAFETY: see the `Sync` impl: `buf[..n]` was fully written before `len` was released
        // and is never written again.
        Some(unsafe { &(&*self.buf.get())[..n] })
    }

    /// Publishes `data` unless something was already published (or it is empty / too long).
    /// Returns whether this call published it.
    pub fn publish(&self, data: &[u8]) -> bool {
        if data.is_empty() || data.len() > PATH_CAP {
            return false;
        }
        if self.claimed.swap(true, Ordering::AcqRel) {
            return false;
        }
        // SAFETY: we won the claim, so no other thread writes `buf`, and no reader looks at it
        // before the release store of `len` below.
        unsafe { (&mut *self.buf.get())[..data.len()].copy_from_slice(data) };
        self.len.store(data.len(), Ordering::Release);
        true
    }
}

static INIT: AtomicU8 = AtomicU8::new(INIT_NONE);
static ROLE: AtomicU8 = AtomicU8::new(ROLE_OFF);
static DEBUG: AtomicBool = AtomicBool::new(false);
/// Lexically normalised absolute MODEL_DIR.
pub static MODEL_DIR: Published = Published::new();
/// `realpath(MODEL_DIR)`, published by the constructor once the agent mirrored the directory.
pub static MODEL_DIR_REAL: Published = Published::new();
/// Agent socket path.
pub static SOCKET_PATH: Published = Published::new();
/// Log file path returned by the agent in `HELLO`.
pub static LOG_PATH: Published = Published::new();
/// The pid that last said HELLO (0: none yet); a different `getpid()` means we are a fork child.
pub static HELLO_PID: AtomicU32 = AtomicU32::new(0);
/// READY deadline in seconds (0: none).
pub static READY_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(DEFAULT_READY_TIMEOUT.as_secs());
/// OPEN deadline in seconds (0: none).
pub static OPEN_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(DEFAULT_OPEN_TIMEOUT.as_secs());
/// `st_dev` of MODEL_DIR plus one (0: not known yet), set once the agent mirrored it.
pub static MODEL_DEV: AtomicU64 = AtomicU64::new(0);
/// Monotonic second (plus one) at which starting or reaching the agent last failed (0: never).
static START_FAILED_AT: AtomicU64 = AtomicU64::new(0);
/// Why the agent could not be started (quoted by the first open that fails because of it).
pub static START_FAILURE: Published = Published::new();
/// Rate limit of the log line of an open that fails because the agent could not be started.
pub static START_FAILURE_LOG: LogGate = LogGate::new();
/// Rate limit of "agent unreachable" log lines.
pub static UNREACHABLE_LOG: LogGate = LogGate::new();
/// Rate limit of "socket not trusted" log lines.
pub static TRUST_LOG: LogGate = LogGate::new();

/// Seconds on the monotonic clock.
pub fn monotonic_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a local `timespec`, writable for its whole size, and the only memory
    // clock_gettime touches; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec.max(0) as u64
}

/// Lets one log line through per [`COOL_DOWN`], process-wide, so a failure that every open
/// meets is logged once, not once per open.
pub struct LogGate(AtomicU64);

impl LogGate {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// True for the first caller in each window.
    pub fn should_log(&self) -> bool {
        let now = monotonic_secs() + 1;
        let last = self.0.load(Ordering::Relaxed);
        if last != 0 && now < last + COOL_DOWN.as_secs() {
            return false;
        }
        self.0
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Remembers that the agent could not be started (or reached) now.
pub fn note_start_failure() {
    START_FAILED_AT.store(monotonic_secs() + 1, Ordering::Release);
}

/// True within [`COOL_DOWN`] of [`note_start_failure`].
pub fn start_failed_recently() -> bool {
    let at = START_FAILED_AT.load(Ordering::Acquire);
    at != 0 && monotonic_secs() + 1 < at + COOL_DOWN.as_secs()
}

/// A configured deadline, `None` for 0.
pub fn timeout(secs: &AtomicU64) -> Option<Duration> {
    match secs.load(Ordering::Relaxed) {
        0 => None,
        s => Some(Duration::from_secs(s)),
    }
}

/// MODEL_DIR's device, once known.
pub fn model_dev() -> Option<u64> {
    match MODEL_DEV.load(Ordering::Acquire) {
        0 => None,
        d => Some(d - 1),
    }
}

fn parse_secs(v: &[u8]) -> Option<u64> {
    core::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn env(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns a pointer into the environment block,
    // which lives for the process (we never call setenv).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        None
    } else {
        // SAFETY: `p` is non-null, so it points at the NUL-terminated value in the environment
        // block, which stays in place for the process (see above).
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// Reads the environment once. Cheap after the first call (one acquire load).
pub fn ensure_init() {
    if INIT.load(Ordering::Acquire) == INIT_DONE {
        return;
    }
    if INIT
        .compare_exchange(INIT_NONE, INIT_RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        init_from_env();
        INIT.store(INIT_DONE, Ordering::Release);
        return;
    }
    // Another thread is reading the environment (a few microseconds, no blocking calls).
    while INIT.load(Ordering::Acquire) != INIT_DONE {
        core::hint::spin_loop();
        // SAFETY: sched_yield takes no arguments and touches no memory of ours.
        unsafe { libc::sched_yield() };
    }
}

fn init_from_env() {
    let role = match env(c"ENABLE_CONNECTOR") {
        Some(b"1") => ROLE_MAIN,
        Some(b"2") => ROLE_SECONDARY,
        _ => ROLE_OFF,
    };
    if role == ROLE_OFF {
        return;
    }
    DEBUG.store(
        matches!(env(c"OSSC_PRELOAD_DEBUG"), Some(v) if !v.is_empty() && v != b"0"),
        Ordering::Relaxed,
    );
    SOCKET_PATH.publish(match env(c"CONNECTOR_UDS_PATH") {
        Some(p) if !p.is_empty() => p,
        _ => DEFAULT_SOCKET_PATH,
    });
    for (name, slot) in [
        (c"OSS_CONNECTOR_READY_TIMEOUT_SEC", &READY_TIMEOUT_SECS),
        (c"OSS_CONNECTOR_OPEN_TIMEOUT_SEC", &OPEN_TIMEOUT_SECS),
    ] {
        if let Some(secs) = env(name).and_then(parse_secs) {
            slot.store(secs, Ordering::Relaxed);
        }
    }
    if let Some(dir) = env(c"MODEL_DIR").filter(|d| !d.is_empty()) {
        let mut buf = PathBuffer::new();
        if absolutise(&mut buf, libc::AT_FDCWD, dir) && buf.as_bytes() != b"/" {
            MODEL_DIR.publish(buf.as_bytes());
        }
    }
    ROLE.store(role, Ordering::Release);
}

/// Resolves `path` (absolute, or relative to `dirfd` / the cwd for `AT_FDCWD`) into a lexically
/// normalised absolute path in `out`. Returns false if that is impossible (bad dirfd, too long).
pub fn absolutise(out: &mut PathBuffer, dirfd: libc::c_int, path: &[u8]) -> bool {
    out.clear();
    if path.first() != Some(&b'/') {
        let raw = out.raw_mut();
        let n = if dirfd == libc::AT_FDCWD {
            // SAFETY: `raw` is writable for `raw.len()` bytes, the size passed, and getcwd
            // writes at most that many (NUL included) or fails with null.
            let p = unsafe { libc::getcwd(raw.as_mut_ptr().cast(), raw.len()) };
            if p.is_null() {
                return false;
            }
            raw.iter().position(|&b| b == 0).unwrap_or(raw.len())
        } else {
            let mut link = crate::proto::LineBuf::<32>::new();
            link.push(b"/proc/self/fd/");
            link.push_u64(u64::from(dirfd as u32));
            link.push(b"\0");
            // SAFETY: `link` ends in the NUL pushed above; `raw` is writable for `raw.len()`
            // bytes, the size passed, and readlink writes no more than that.
            let n = unsafe {
                libc::readlink(
                    link.as_bytes().as_ptr().cast(),
                    raw.as_mut_ptr().cast(),
                    raw.len(),
                )
            };
            if n <= 0 || n as usize >= raw.len() {
                return false;
            }
            n as usize
        };
        if !out.set_raw_len(n) {
            return false;
        }
    }
    out.push(path)
}

/// The configured role (after [`ensure_init`]).
pub fn role() -> u8 {
    ensure_init();
    ROLE.load(Ordering::Acquire)
}

/// True when hooks should look at paths at all: a role is set and MODEL_DIR is usable.
pub fn active() -> bool {
    role() != ROLE_OFF && MODEL_DIR.get().is_some()
}

/// Whether debug log lines are wanted (`OSSC_PRELOAD_DEBUG`).
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// The path below MODEL_DIR (or its realpath) that `abs` names, if any.
pub fn model_relpath(abs: &[u8]) -> Option<&[u8]> {
    [&MODEL_DIR, &MODEL_DIR_REAL]
        .into_iter()
        .filter_map(|d| d.get())
        .find_map(|dir| crate::path::relative_to(abs, dir))
}

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside the library; calls made meanwhile (by libc internals, signal
/// handlers, our own I/O) pass straight through.
pub struct ReentryGuard(());

impl ReentryGuard {
    /// `None` when this thread is already inside the library (or its TLS is gone).
    pub fn enter() -> Option<Self> {
        IN_HOOK
            .try_with(|f| {
                if f.get() {
                    None
                } else {
                    f.set(true);
                    Some(ReentryGuard(()))
                }
            })
            .ok()
            .flatten()
    }
}

impl Drop for ReentryGuard {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|f| f.set(false));
    }
}

/// Current errno.
pub fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns a non-null, aligned pointer to this thread's errno,
    // valid for the thread's lifetime; reading an int from it is what `errno` means in C.
    unsafe { *libc::__errno_location() }
}

/// Sets errno.
pub fn set_errno(v: libc::c_int) {
    // SAFETY: __errno_location returns a non-null, aligned pointer to this thread's errno,
    // which no other thread touches, so writing an int through it races with nothing.
    unsafe { *libc::__errno_location() = v };
}

//! `libossc_preload.so`: an `LD_PRELOAD` library that serves reads of model files below
//! `MODEL_DIR` from the ossc node agent's memory, transparently to the inference server.
//!
//! Design decision: the library is a thin, synchronous client of the agent — libc only, no
//! async runtime, no thread, no allocation on the path every other `open` takes. Roles come from
//! `ENABLE_CONNECTOR` (`1` main: starts the agent if needed; `2` secondary; anything else:
//! pure pass-through), read lazily and cached in atomics. The constructor says HELLO and READY
//! (so the inference server's first `stat` of `config.json` sees the mirrored directory); each
//! read-only open below MODEL_DIR then asks the agent with `OPEN` and returns a private,
//! real kernel fd over the agent's sealed memfd. Any failure is logged and surfaces as an
//! errno on that open — never as zeros from a placeholder, never as a crash.
//!
//! Modules: [`state`] (configuration, re-entry guard), [`path`] (normalisation, matching),
//! [`proto`] (line protocol), [`client`] (socket requests), [`spawn`] (starting the agent),
//! [`hooks`] (exported `open` entry points), [`stat_hooks`] (exported fd-stat entry points that
//! report the placeholder's identity for served fds, see [`fdtrack`]), [`log`], [`real`] (the
//! next definitions of the hooks), [`trust`] (who may serve us), [`start_failure`] (the
//! cool-down after a failed agent start), [`placeholder`] (placeholders reached by another
//! name or opened for writing).

pub mod client;
pub mod fdtrack;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod log;
pub mod path;
pub mod placeholder;
pub mod proto;
pub mod real;
pub mod spawn;
pub mod start_failure;
pub mod stat_hooks;
pub mod state;
pub mod trust;

use crate::log::{Bytes, Level};

/// NUL-terminated version string, exported as the symbol `version`.
const VERSION_STR: &str = concat!("ossc-preload ", env!("CARGO_PKG_VERSION"), "\0");

const fn version_bytes<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// `ossc-preload <crate version>\0`, so `nm -D libossc_preload.so | grep version` and
/// `strings` identify the build.
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static version: [u8; VERSION_STR.len()] = version_bytes(VERSION_STR);

/// The version in a symbol's name, so `nm -D libossc_preload.so | grep version` prints it
/// without reading the data: `ossc_preload_version_<crate version>`. Its value is the version
/// string too.
#[export_name = concat!("ossc_preload_version_", env!("CARGO_PKG_VERSION"))]
pub static VERSION_SYMBOL: [u8; VERSION_STR.len()] = version_bytes(VERSION_STR);

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = preload_constructor;

/// Runs when the library is loaded: for roles 1 and 2 with MODEL_DIR set, connect to (or start)
/// the agent, HELLO, READY. Never fails the process.
extern "C" fn preload_constructor() {
    let Some(_guard) = state::ReentryGuard::enter() else {
        return;
    };
    real::resolve_all();
    if !state::active() {
        return;
    }
    let saved = state::errno();
    if std::panic::catch_unwind(constructor_body).is_err() {
        plog!(
            Level::Error,
            "panic in the preload constructor; continuing without the agent"
        );
    }
    state::set_errno(saved);
}

fn constructor_body() {
    let role = state::role();
    let socket = Bytes(state::SOCKET_PATH.get().unwrap_or_default());
    let hello = match client::connect(Some(client::HELLO_TIMEOUT)) {
        Ok(conn) => {
            let r = client::hello_on(&conn, state::ROLE_SECONDARY);
            if let Ok(agent) = r {
                if role == state::ROLE_MAIN {
                    plog!(
                        Level::Info,
                        "ENABLE_CONNECTOR=1 but agent pid {agent} already serves {socket}; working as secondary"
                    );
                } else {
                    plog!(Level::Info, "connected to agent pid {agent} on {socket}");
                }
            }
            r
        }
        Err(e) if role == state::ROLE_MAIN && matches!(e, libc::ENOENT | libc::ECONNREFUSED) => {
            if let Some(words) = start_failure::recent(socket.0) {
                // Logged by the first open that fails because of it: the many short-lived
                // processes of a launcher script that never open a model file stay quiet.
                state::START_FAILURE.publish(words.as_bytes());
                state::note_start_failure();
                return;
            }
            match spawn::start_agent_and_connect() {
                Ok(conn) => {
                    start_failure::forget(socket.0);
                    let r = client::hello_on(&conn, state::ROLE_MAIN);
                    if let Ok(agent) = r {
                        plog!(Level::Info, "agent pid {agent} is up on {socket}");
                    }
                    r
                }
                Err(msg) => {
                    start_failure::remember(socket.0, &msg);
                    // This line is the one that quotes the agent: opens stay quiet.
                    state::START_FAILURE_LOG.should_log();
                    plog!(
                        Level::Error,
                        "could not start the agent: {msg}; opens below MODEL_DIR fail with EIO"
                    );
                    return;
                }
            }
        }
        Err(e) => {
            plog!(
                Level::Error,
                "no agent on {socket} (errno {e}); opens below MODEL_DIR fail with EIO"
            );
            return;
        }
    };
    if hello.is_err() {
        return;
    }
    let dir = state::MODEL_DIR.get().unwrap_or_default();
    match client::ready() {
        Ok(()) => plog!(
            Level::Info,
            "{} role {role}: MODEL_DIR {} ready",
            Bytes(&VERSION_STR.as_bytes()[..VERSION_STR.len() - 1]),
            Bytes(dir)
        ),
        Err(e) => plog!(
            Level::Error,
            "MODEL_DIR {} not ready (errno {e}); opens below it may fail",
            Bytes(dir)
        ),
    }
    publish_model_dir_realpath(dir);
    placeholder::note_model_dir(dir);
}

/// Publishes `realpath(MODEL_DIR)` as a second prefix when it differs (a symlinked MODEL_DIR).
fn publish_model_dir_realpath(dir: &[u8]) {
    let Ok(c) = std::ffi::CString::new(dir) else {
        return;
    };
    let mut out = [0 as libc::c_char; path::PATH_CAP];
    // SAFETY: `c` is a NUL-terminated `CString`; `out` holds `PATH_CAP` (= PATH_MAX) bytes,
    // the most realpath writes into a caller's buffer.
    let r = unsafe { libc::realpath(c.as_ptr(), out.as_mut_ptr()) };
    if r.is_null() {
        return;
    }
    // SAFETY: realpath succeeded (non-null), so it wrote a NUL-terminated string into `out`,
    // which outlives the borrow.
    let real = unsafe { core::ffi::CStr::from_ptr(out.as_ptr()) }.to_bytes();
    if real != dir && real != b"/" {
        state::MODEL_DIR_REAL.publish(real);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_symbol_is_nul_terminated() {
        assert_eq!(version.last(), Some(&0));
        let s = core::ffi::CStr::from_bytes_with_nul(&version).unwrap();
        assert_eq!(
            s.to_str().unwrap(),
            format!("ossc-preload {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

//! Whether this machine can build clusters (root, `ip netns`, veth, bridges,
//! tbf), probed once per process, and the loud skip of tests where it cannot.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use super::links::{ip, set_tbf};
use super::{NetnsError, Rate, Result, NAME_PREFIX, NEXT_CLUSTER};

/// Whether this process can build clusters: root, and `ip netns add` works.
/// The probe runs once per process (tests calling this concurrently share it).
pub fn check_available() -> Result<()> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(probe)
        .clone()
        .map_err(NetnsError::Unavailable)
}

/// Why clusters can't be built here, if they can't.
fn probe() -> Result<(), String> {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
    let probe = format!("{NAME_PREFIX}{}-{n}-probe", std::process::id());
    ip(&format!("netns add {probe}")).map_err(|e| e.to_string())?;
    // Everything a cluster needs: veth pairs, bridges and tbf (kernel modules
    // that a stripped-down kernel may lack).
    let result = (|| -> Result<()> {
        ip(&format!("-n {probe} link add p0 type veth peer name p1"))?;
        ip(&format!("-n {probe} link add b0 type bridge"))?;
        set_tbf(&probe, "p0", Rate::mbit(1), false)
    })();
    let _ = ip(&format!("netns del {probe}"));
    result.map_err(|e| e.to_string())
}

/// For tests: `true` when clusters can be built. Otherwise prints a loud skip
/// message and returns `false` — or panics when env `CI` is set (CI runs as
/// root, so a missing capability there is a failure, not a skip).
pub fn available_or_skip(test: &str) -> bool {
    match check_available() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set but {e}")
        }
        Err(e) => {
            let bar = "!".repeat(78);
            // Straight to the process's stderr: the test harness captures
            // `eprintln!` of passing tests, and a skip must not go unseen.
            let _ = writeln!(
                std::io::stderr(),
                "\n{bar}\n!!! SKIPPED {test}: {e}.\n!!! These tests need root and network \
                 namespaces (ip netns, tc); they run in CI.\n{bar}\n"
            );
            false
        }
    }
}

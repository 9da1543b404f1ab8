//! Teardown: every process inside a cluster's namespaces is killed before the
//! namespaces are deleted, on drop and for runs that died without unwinding
//! (their namespaces name their creator's pid).

use std::time::{Duration, Instant};

use super::links::ip;
use super::{netns_path, Cluster, NetnsError, Result, NAME_PREFIX, NETNS_DIR, POLL};

/// How long cleanup waits for killed processes to leave a namespace.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Drop for Cluster {
    fn drop(&mut self) {
        // Hosts first (killing processes), the switch last.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = remove_netns(ns) {
                eprintln!("netns cleanup: {ns}: {e}");
            }
        }
    }
}

/// Pids whose network namespace is `ns` (our own process never counts).
pub(super) fn netns_pids(ns: &str) -> Result<Vec<i32>> {
    let me = std::process::id() as i32;
    Ok(ip(&format!("netns pids {ns}"))?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != me)
        .collect())
}

pub(super) fn kill_netns_processes(ns: &str) -> Result<usize> {
    let pids = netns_pids(ns)?;
    for &pid in &pids {
        // SAFETY: kill(2) on a pid that `ip netns pids` just reported as living
        // in a namespace this harness created; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + KILL_WAIT;
    while !netns_pids(ns)?.is_empty() {
        if Instant::now() >= deadline {
            return Err(NetnsError::Timeout(
                format!("killing processes in {ns}"),
                KILL_WAIT,
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(pids.len())
}

fn remove_netns(ns: &str) -> Result<()> {
    if !netns_path(ns).exists() {
        return Ok(());
    }
    let killed = kill_netns_processes(ns);
    ip(&format!("netns del {ns}"))?;
    killed.map(|_| ())
}

/// Removes namespaces (and their processes) left by test runs whose process
/// is gone (killed without unwinding). Returns how many were removed.
pub fn cleanup_stale() -> usize {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        match remove_netns(&name) {
            Ok(()) => removed += 1,
            Err(e) => eprintln!("netns stale cleanup: {name}: {e}"),
        }
    }
    removed
}

/// Whether `pid` is a running process (a zombie is a dead run too).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_of_pids() {
        assert!(process_alive(std::process::id()));
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .expect("pid_max")
            .trim()
            .parse()
            .expect("number");
        assert!(!process_alive(pid_max));
    }

    #[test]
    fn stale_cleanup_ignores_foreign_and_live_names() {
        // Only names with our prefix and a dead pid are touched; with none of
        // those present this is a no-op that must not fail (also without root).
        let before: Vec<_> = std::fs::read_dir(NETNS_DIR)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        cleanup_stale();
        for name in before {
            let name = name.to_string_lossy().into_owned();
            if !name.starts_with(NAME_PREFIX) {
                assert!(netns_path(&name).exists(), "{name} must survive");
            }
        }
    }
}

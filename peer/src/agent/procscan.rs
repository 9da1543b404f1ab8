//! Which of the agent's memory files are still used by some process.
//!
//! Design decision: references are matched by inode number, not by name. A
//! memfd's name (`ossc:<key>`) may be truncated and two agents may cache the same
//! key, but its inode is unique on the kernel's internal shmem mount. Open fds are
//! found through `/proc/<pid>/fd/*` (readlink first, so only `/memfd:ossc:` links
//! are stat'ed) and mappings through `/proc/<pid>/maps` (whose inode column
//! survives the fd being closed after `mmap`). The agent's own cache descriptors
//! are excluded by fd number, so an fd received by a client in the agent's own
//! process (tests) still counts as a reference.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use crate::object_source::memfd::MEMFD_NAME_PREFIX;

/// Inodes of `ossc:` memory files referenced by any process, ignoring the
/// agent's own descriptors listed in `own_fds`.
pub fn referenced_memfd_inodes(own_fds: &HashSet<i32>) -> HashSet<u64> {
    let marker = format!("/memfd:{MEMFD_NAME_PREFIX}");
    let self_pid = std::process::id();
    let mut out = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                if !target.to_string_lossy().starts_with(&marker) {
                    continue;
                }
                if pid == self_pid {
                    let own = fd.file_name().to_str().and_then(|s| s.parse::<i32>().ok());
                    if own.is_some_and(|n| own_fds.contains(&n)) {
                        continue;
                    }
                }
                if let Ok(meta) = std::fs::metadata(fd.path()) {
                    out.insert(meta.ino());
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(base.join("maps")) {
            out.extend(
                maps.lines()
                    .filter(|l| l.contains(&marker))
                    .filter_map(map_inode),
            );
        }
    }
    out
}

/// The inode column (5th field) of one `/proc/<pid>/maps` line.
fn map_inode(line: &str) -> Option<u64> {
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised comm, which may itself contain ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// `/proc/<pid>/comm` without its newline; `?` when unreadable.
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_source::memfd::Memfd;

    #[test]
    fn own_fds_are_excluded_and_other_references_found() {
        let m = Memfd::create("procscan/test.bin", 4096).unwrap();
        let own: HashSet<i32> = [m.as_raw_fd()].into();
        assert!(!referenced_memfd_inodes(&own).contains(&m.ino()));
        // A second descriptor (what a client would hold) is a reference.
        let dup = std::fs::File::open(format!("/proc/self/fd/{}", m.as_raw_fd())).unwrap();
        assert!(referenced_memfd_inodes(&own).contains(&m.ino()));
        // A mapping survives closing the descriptor.
        // SAFETY: the memfd is not resized while mapped (it is only dropped later).
        let map = unsafe { memmap2::Mmap::map(&dup) };
        drop(dup);
        let map = map.unwrap();
        assert!(referenced_memfd_inodes(&own).contains(&m.ino()));
        drop(map);
        assert!(!referenced_memfd_inodes(&own).contains(&m.ino()));
    }

    #[test]
    fn map_lines_parse() {
        let l = "7f00-7f10 r--s 00000000 00:01 123456   /memfd:ossc:a.bin (deleted)";
        assert_eq!(map_inode(l), Some(123456));
        assert!(pid_alive(std::process::id()));
        assert!(!process_name(std::process::id()).is_empty());
    }
}

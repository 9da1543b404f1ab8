//! Who the library trusts: the socket's directory, the process behind the socket and the
//! memory files it hands over.
//!
//! Design decision: three independent checks, each cheap and allocation-free, so a local user
//! who gets to a shared path first (for instance by creating `/tmp/oss-connector` before the
//! agent did) can neither serve bytes nor stall the application:
//! - the socket's directory must be owned by us or root and must not be writable by group or
//!   others; a sticky directory (like `/tmp`) is accepted when the socket in it is ours or
//!   root's, since nobody else can then rename or replace it;
//! - after `connect`, the peer's kernel-reported uid (`SO_PEERCRED`) must be ours (real or
//!   effective) or root's: this is the check that holds even if the directory is swapped between
//!   the first check and the connect;
//! - every received fd must carry `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK`, so its bytes
//!   cannot change under the application after the agent verified them.
//!
//! A refusal is an errno (`EACCES` for identity, `EIO` for an unsealed fd) and one log line.

use core::ffi::CStr;
use core::mem::size_of;

use crate::log::{Bytes, Level};
use crate::path::PATH_CAP;
use crate::plog;
use crate::state;

/// Seals every received memory file must carry.
pub const REQUIRED_SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

/// Why a socket directory or peer is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The directory (or the socket in a sticky directory) belongs to another user.
    ForeignOwner { uid: u32 },
    /// The directory is writable by group or others and not sticky.
    Writable { mode: u32 },
    /// The socket's parent is not a directory.
    NotADirectory,
    /// The process behind the socket runs as another user.
    ForeignPeer { uid: u32, pid: i32 },
}

/// True for uids this process trusts: its own (real or effective) and root.
pub fn trusted_uid(uid: u32) -> bool {
    // SAFETY: getuid and geteuid take no arguments, touch no memory and cannot fail.
    let (ruid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    uid == 0 || uid == ruid || uid == euid
}

/// The directory part of `socket` into `out` (NUL-terminated); `.` for a bare name.
fn parent_dir_cstr(socket: &[u8], out: &mut [u8; PATH_CAP + 1]) -> bool {
    let dir: &[u8] = match socket.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &socket[..i],
        None => b".",
    };
    if dir.len() >= out.len() || dir.contains(&0) {
        return false;
    }
    out[..dir.len()].copy_from_slice(dir);
    out[dir.len()] = 0;
    true
}

/// Raw `stat` of the string that starts `buf` and ends at its first NUL (`ENAMETOOLONG`
/// when there is none).
fn stat_path(buf: &[u8], flags: libc::c_int) -> Result<libc::stat, libc::c_int> {
    let path = CStr::from_bytes_until_nul(buf).map_err(|_| libc::ENAMETOOLONG)?;
    // SAFETY: `path` is a NUL-terminated `CStr` borrowed from `buf` for the whole call, the
    // only thing `sys_fstatat` requires.
    unsafe { crate::real::sys_fstatat(libc::AT_FDCWD, path.as_ptr(), flags) }
}

/// Decides whether a directory with `dir` metadata (and, for a sticky directory, the socket's
/// owner `socket_uid`, `None` when there is no socket yet) may hold our agent's socket.
pub fn judge_dir(
    dir_mode: u32,
    dir_uid: u32,
    socket_uid: Option<u32>,
    trusted: impl Fn(u32) -> bool,
) -> Result<(), Refusal> {
    if dir_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Refusal::NotADirectory);
    }
    if !trusted(dir_uid) {
        return Err(Refusal::ForeignOwner { uid: dir_uid });
    }
    if dir_mode & 0o022 == 0 {
        return Ok(());
    }
    if dir_mode & libc::S_ISVTX == 0 {
        return Err(Refusal::Writable { mode: dir_mode });
    }
    match socket_uid {
        Some(uid) if !trusted(uid) => Err(Refusal::ForeignOwner { uid }),
        _ => Ok(()),
    }
}

/// Checks the directory that holds `socket` (see the module note). Logs one line and returns
/// `EACCES` when it is refused.
pub fn check_socket_dir(socket: &[u8]) -> Result<(), libc::c_int> {
    let mut dir = [0u8; PATH_CAP + 1];
    if !parent_dir_cstr(socket, &mut dir) {
        return Err(libc::ENAMETOOLONG);
    }
    let st = match stat_path(&dir, 0) {
        Ok(st) => st,
        // No directory: nothing to connect to either; connect reports it.
        Err(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let socket_uid = if st.st_mode & libc::S_ISVTX != 0 {
        let mut sock = [0u8; PATH_CAP + 1];
        if socket.len() >= sock.len() {
            return Err(libc::ENAMETOOLONG);
        }
        sock[..socket.len()].copy_from_slice(socket);
        stat_path(&sock, libc::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|s| s.st_uid)
    } else {
        None
    };
    judge_dir(st.st_mode, st.st_uid, socket_uid, trusted_uid).map_err(|r| refuse(socket, r))
}

/// Checks the kernel-reported identity of the process at the other end of `fd`.
pub fn check_peer(fd: libc::c_int, socket: &[u8]) -> Result<(), libc::c_int> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes a `ucred`; `cred` is a live local one and `len` (a live
    // local the kernel updates) holds exactly its size. `fd` is the caller's connected socket;
    // a bad one comes back as errno.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        let e = state::errno();
        plog!(
            Level::Error,
            "agent socket {}: SO_PEERCRED failed (errno {e}); refusing it",
            Bytes(socket)
        );
        return Err(libc::EACCES);
    }
    if trusted_uid(cred.uid) {
        Ok(())
    } else {
        Err(refuse(
            socket,
            Refusal::ForeignPeer {
                uid: cred.uid,
                pid: cred.pid,
            },
        ))
    }
}

/// Logs why `socket` is refused (once per [`state::COOL_DOWN`] window) and returns `EACCES`.
fn refuse(socket: &[u8], why: Refusal) -> libc::c_int {
    if !state::TRUST_LOG.should_log() {
        return libc::EACCES;
    }
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    let me = unsafe { libc::geteuid() };
    let s = Bytes(socket);
    match why {
        Refusal::ForeignOwner { uid } => plog!(
            Level::Error,
            "refusing agent socket {s}: its directory (or the socket) belongs to uid {uid}, not to uid {me} or root; set CONNECTOR_UDS_PATH to a directory of your own"
        ),
        Refusal::Writable { mode } => plog!(
            Level::Error,
            "refusing agent socket {s}: its directory has mode {:o}, writable by group or others; set CONNECTOR_UDS_PATH to a directory of your own",
            mode & 0o7777
        ),
        Refusal::NotADirectory => plog!(
            Level::Error,
            "refusing agent socket {s}: its parent is not a directory"
        ),
        Refusal::ForeignPeer { uid, pid } => plog!(
            Level::Error,
            "refusing agent socket {s}: the process behind it (pid {pid}) runs as uid {uid}, not as uid {me} or root"
        ),
    }
    libc::EACCES
}

/// Whether a received memory file is sealed against every change of its bytes; `Err` carries
/// the seals it has (-1: `F_GET_SEALS` failed, e.g. not a memfd).
pub fn check_sealed(fd: libc::c_int) -> Result<(), libc::c_int> {
    // SAFETY: F_GET_SEALS takes no argument and touches no memory; `fd` is the received fd
    // the caller holds, and anything else (closed, not a memfd) comes back as -1.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals >= 0 && seals & REQUIRED_SEALS == REQUIRED_SEALS {
        Ok(())
    } else {
        Err(seals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;
    fn trusted(uid: u32) -> bool {
        uid == ME || uid == 0
    }
    const DIR: u32 = libc::S_IFDIR;

    #[test]
    fn private_directories_of_ours_or_roots_are_trusted() {
        assert_eq!(judge_dir(DIR | 0o700, ME, None, trusted), Ok(()));
        assert_eq!(judge_dir(DIR | 0o755, 0, None, trusted), Ok(()));
    }

    #[test]
    fn foreign_or_writable_directories_are_refused() {
        assert_eq!(
            judge_dir(DIR | 0o700, 65534, None, trusted),
            Err(Refusal::ForeignOwner { uid: 65534 })
        );
        assert_eq!(
            judge_dir(DIR | 0o777, ME, None, trusted),
            Err(Refusal::Writable { mode: DIR | 0o777 })
        );
        assert_eq!(
            judge_dir(DIR | 0o775, 0, None, trusted),
            Err(Refusal::Writable { mode: DIR | 0o775 })
        );
        assert_eq!(
            judge_dir(libc::S_IFREG | 0o700, ME, None, trusted),
            Err(Refusal::NotADirectory)
        );
    }

    #[test]
    fn sticky_directories_need_a_socket_of_ours() {
        let tmp = DIR | libc::S_ISVTX | 0o777;
        assert_eq!(judge_dir(tmp, 0, Some(ME), trusted), Ok(()));
        assert_eq!(judge_dir(tmp, 0, None, trusted), Ok(()));
        assert_eq!(
            judge_dir(tmp, 0, Some(65534), trusted),
            Err(Refusal::ForeignOwner { uid: 65534 })
        );
    }

    #[test]
    fn parent_directories() {
        let mut out = [0u8; PATH_CAP + 1];
        assert!(parent_dir_cstr(b"/tmp/oss/c.sock", &mut out));
        assert_eq!(&out[..9], b"/tmp/oss\0");
        assert!(parent_dir_cstr(b"/c.sock", &mut out));
        assert_eq!(&out[..2], b"/\0");
        assert!(parent_dir_cstr(b"c.sock", &mut out));
        assert_eq!(&out[..2], b".\0");
    }

    #[test]
    fn unsealed_memfds_are_refused() {
        // SAFETY: the name is a NUL-terminated literal, the only memory memfd_create reads;
        // the fd it returns is this test's and is closed below.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        assert!(check_sealed(fd).is_err());
        // SAFETY: `fd` is the memfd created above, open and owned by this test;
        // F_ADD_SEALS takes an int argument and touches no memory.
        let rc = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, REQUIRED_SEALS) };
        assert_eq!(rc, 0);
        assert_eq!(check_sealed(fd), Ok(()));
        // SAFETY: `fd` is this test's memfd, not used after this close.
        unsafe { libc::close(fd) };
    }
}

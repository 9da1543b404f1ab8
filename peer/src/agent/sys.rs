//! Thin, safe wrappers over the Linux calls the agent needs and std lacks:
//! `flock` and fd passing over a Unix socket (sealed memory files live in
//! `crate::object_source::memfd`).
//!
//! Design decision: plain `libc` instead of a crate. Each wrapper is a few lines,
//! owns its descriptors through `OwnedFd` (so nothing leaks on an error path),
//! and the fd-passing pair is shared by the agent (send) and by tests and
//! `ossc status` (receive), so both ends are exercised by the same tests.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// An exclusive `flock` held for the life of the value.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Tries to take the lock without blocking; `Ok(None)` when another open
    /// file description (another live agent) holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: the fd is open and owned by `file`, which outlives the call; flock takes
        // plain ints and touches no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(FileLock { _file: file }));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(err)
        }
    }
}

/// Space for one `SCM_RIGHTS` control message carrying one fd, aligned for
/// `cmsghdr` (CMSG_SPACE(sizeof(int)) is 24 bytes on 64-bit Linux).
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// `sendmsg` of `data` with `fd` attached (`SCM_RIGHTS`). Returns bytes sent;
/// the fd travels with the first byte.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: an all-zero msghdr is a valid "empty" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    assert!(space <= cbuf.0.len(), "control buffer too small");
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` writable, aligned bytes, so the first
    // header and its data area are in bounds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    }
    // SAFETY: every pointer in `msg` refers to live locals of this frame: `iov` covers
    // `data` (read only), the control header was filled above within `space` bytes of
    // `cbuf`; `fd` is sent as a number and stays the caller's.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recvmsg` into `buf`, returning the byte count and the fd received, if any.
/// Received fds are close-on-exec.
pub fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: an all-zero msghdr is a valid "empty" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.0.len() as _;
    // SAFETY: `msg` points at live, writable buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of control data; the
    // CMSG_* macros walk only within them, and each SCM_RIGHTS fd is new and ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if received.is_none() {
                        received = Some(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, received))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_source::memfd::Memfd;
    use ossc_core::object_client::RangeSink;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn memfd_is_filled_sealed_and_passed() {
        let m = Memfd::create("dir/model.safetensors", 10).unwrap();
        assert_eq!(m.name(), "ossc:dir/model.safetensors");
        m.write_at(0, b"hello").unwrap();
        m.write_at(5, b"world").unwrap();
        assert!(
            m.write_at(8, b"xyz").is_err(),
            "write past the end must fail"
        );
        m.seal().unwrap();
        assert!(
            m.write_at(0, b"H").is_err(),
            "sealed memfd must reject writes"
        );

        let (a, b) = UnixStream::pair().unwrap();
        let sent = send_with_fd(a.as_raw_fd(), b"FD 10 store\n", m.as_raw_fd()).unwrap();
        assert_eq!(sent, 12);
        let mut buf = [0u8; 64];
        let (n, fd) = recv_with_fd(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"FD 10 store\n");
        let mut f = File::from(fd.expect("fd attached"));
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "helloworld");
    }

    #[test]
    fn flock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.lock");
        let first = FileLock::try_acquire(&p).unwrap();
        assert!(first.is_some());
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(FileLock::try_acquire(&p).unwrap().is_some());
    }
}

//! Unix-socket requests to the node agent: HELLO, READY and OPEN (with SCM_RIGHTS fd passing).
//!
//! Design decision: one short-lived connection per request (the protocol contract). Nothing is
//! shared between requests, so a fork in the middle of another thread's request leaves the
//! child nothing half-used, and a dead agent shows up as a connect error or EOF on the next
//! request rather than as a stale socket. All buffers are on the stack.

use core::mem::{size_of, zeroed};
use core::time::Duration;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use crate::log::{Bytes, Level};
use crate::plog;
use crate::proto::{self, IdentReply, LineBuf, OkReply, OpenReply, REPLY_CAP, REQUEST_CAP};
use crate::real::sys_openat;
use crate::state;
use crate::trust;

/// Send/receive timeout for HELLO: the agent answers it without doing any I/O.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Control-message buffer size: a 16-byte header plus room for 28 fds. OPEN attaches exactly
/// one; we keep the first and close any others.
const CMSG_BUF_LEN: usize = 128;

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

/// One connection to the agent.
pub struct Conn {
    fd: OwnedFd,
    /// When the request on this connection must have been answered.
    deadline: Option<Instant>,
}

/// Connects to the agent socket after checking its directory, then checks who answers (see
/// [`crate::trust`]). `timeout` bounds the whole request on this connection (`None`: no bound).
pub fn connect(timeout: Option<Duration>) -> Result<Conn, libc::c_int> {
    let path = state::SOCKET_PATH
        .get()
        .unwrap_or(state::DEFAULT_SOCKET_PATH);
    trust::check_socket_dir(path)?;
    // SAFETY: socket takes plain ints and touches no memory; a failure is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(state::errno());
    }
    // SAFETY: `fd` is the socket just created (checked `>= 0`); nothing else holds it, so
    // the `OwnedFd` is its only owner and closes it once.
    let fd_owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let conn = Conn {
        fd: fd_owned,
        deadline: timeout.map(|t| Instant::now() + t),
    };
    // SAFETY: `sockaddr_un` is plain old data (a family and a byte array); all-zero is a
    // valid value, and leaves `sun_path` NUL-terminated after the shorter path copied in.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= addr.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(path) {
        *dst = src as libc::c_char;
    }
    if let Some(t) = timeout {
        conn.set_timeout(t);
    }
    loop {
        // SAFETY: `addr` is a live local `sockaddr_un` and the length passed is exactly its
        // size; connect only reads it. `fd` is the socket `conn` owns, still open.
        let r = unsafe {
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if r != 0 {
            match state::errno() {
                libc::EISCONN => {}
                libc::EINTR => continue,
                libc::EINPROGRESS | libc::EAGAIN => return Err(libc::ETIMEDOUT),
                e => return Err(e),
            }
        }
        trust::check_peer(fd, path)?;
        return Ok(conn);
    }
}

impl Conn {
    fn set_timeout(&self, t: Duration) {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(t.subsec_micros()),
        };
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: SO_RCVTIMEO/SO_SNDTIMEO read a `timeval`; `tv` is a live local one and
            // the length passed is exactly its size. The fd is the open socket `self` owns.
            unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
        }
    }

    /// Sends a whole request (no SIGPIPE if the agent went away).
    pub fn send(&self, mut data: &[u8]) -> Result<(), libc::c_int> {
        while !data.is_empty() {
            // SAFETY: `data` is a live slice, readable for the `data.len()` bytes passed; the
            // fd is the open socket `self` owns.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                match state::errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => return Err(libc::ETIMEDOUT),
                    e => return Err(e),
                }
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Receives one reply line into `buf` (returns its length including the newline) and the
    /// first fd attached to it, if any (received close-on-exec; extra fds are closed).
    pub fn recv_line(&self, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>), libc::c_int> {
        let mut len = 0;
        let mut fd: Option<OwnedFd> = None;
        loop {
            if len == buf.len() {
                return Err(libc::EMSGSIZE);
            }
            let mut iov = libc::iovec {
                iov_base: buf[len..].as_mut_ptr().cast(),
                iov_len: buf.len() - len,
            };
            let mut cmsg = CmsgBuf([0; CMSG_BUF_LEN]);
            // SAFETY: `msghdr` is plain old data (pointers, lengths, flags); all-zero is a valid
            // value (no name, no buffers) until the fields below are set.
            let mut msg: libc::msghdr = unsafe { zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            msg.msg_controllen = CMSG_BUF_LEN as _;
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(libc::ETIMEDOUT);
                }
                // The socket timeout is per call: shrink it to what is left of the deadline.
                self.set_timeout(left.max(Duration::from_millis(1)));
            }
            // SAFETY: `msg` points at `iov` (the unread tail of `buf`, `iov_len` bytes) and at
            // `cmsg` (`CMSG_BUF_LEN` bytes), both live locals for this call; recvmsg writes
            // only within them. The fd is the open socket `self` owns.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n < 0 {
                match state::errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => return Err(libc::ETIMEDOUT),
                    e => return Err(e),
                }
            }
            collect_fds(&msg, &mut fd);
            if n == 0 {
                return Err(libc::ECONNRESET);
            }
            let new = &buf[len..len + n as usize];
            if let Some(i) = new.iter().position(|&b| b == b'\n') {
                return Ok((len + i + 1, fd));
            }
            len += n as usize;
        }
    }
}

/// Takes ownership of every fd in the control messages: the first is kept in `slot`, the
/// others are closed at once.
fn collect_fds(msg: &libc::msghdr, slot: &mut Option<OwnedFd>) {
    // SAFETY: `msg` was filled by recvmsg and its control buffer is still live; CMSG_FIRSTHDR
    // and CMSG_NXTHDR return null rather than a header past `msg_controllen`, so every `c`
    // dereferenced is a complete header inside it. An SCM_RIGHTS payload is `cmsg_len` minus
    // the header of ints, read unaligned; each is an fd the kernel just installed in this
    // process for us, owned by nothing else, so wrapping it in `OwnedFd` once is sound.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = payload / size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..count {
                    let raw = data.add(i).read_unaligned();
                    let owned = OwnedFd::from_raw_fd(raw);
                    if slot.is_none() {
                        *slot = Some(owned);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
}

/// Reads `/proc/self/comm` (the process name) into `out`; returns its length.
fn read_comm(out: &mut [u8]) -> usize {
    // SAFETY: the path is a NUL-terminated literal, the only thing `sys_openat` requires.
    let fd = unsafe {
        sys_openat(
            libc::AT_FDCWD,
            c"/proc/self/comm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return 0;
    }
    // SAFETY: `out` is writable for the `out.len()` bytes passed; `fd` was opened above
    // (checked `>= 0`) and is ours alone.
    let n = unsafe { libc::read(fd, out.as_mut_ptr().cast(), out.len()) };
    // SAFETY: `fd` is ours alone and not used after this close.
    unsafe { libc::close(fd) };
    let n = n.max(0) as usize;
    out[..n].iter().position(|&b| b == b'\n').unwrap_or(n)
}

fn getpid() -> u32 {
    // SAFETY: getpid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// Says HELLO on an open connection with `role`; records the agent's log path and our pid.
/// Returns the agent's pid.
pub fn hello_on(conn: &Conn, role: u8) -> Result<u32, libc::c_int> {
    let mut comm = [0u8; 64];
    let comm_len = read_comm(&mut comm);
    let pid = getpid();
    let mut req = LineBuf::<256>::new();
    proto::encode_hello(&mut req, pid, role, &comm[..comm_len]);
    conn.send(req.as_bytes())?;
    let mut buf = [0u8; REPLY_CAP];
    let (n, _) = conn.recv_line(&mut buf)?;
    match proto::parse_ok(&buf[..n]) {
        Ok(OkReply::Ok(rest)) => match proto::parse_hello_ok(rest) {
            Ok((agent_pid, log)) => {
                let mut path = [0u8; crate::path::PATH_CAP];
                if let Some(len) = proto::unescape_into(log, &mut path) {
                    state::LOG_PATH.publish(&path[..len]);
                }
                state::HELLO_PID.store(pid, core::sync::atomic::Ordering::Release);
                Ok(agent_pid)
            }
            Err(e) => {
                plog!(Level::Error, "HELLO: {e}: {}", Bytes(&buf[..n]));
                Err(libc::EPROTO)
            }
        },
        Ok(OkReply::Err { errno, msg }) => {
            plog!(
                Level::Error,
                "HELLO refused by agent: errno {errno}: {}",
                Bytes(msg)
            );
            Err(errno)
        }
        Err(e) => {
            plog!(Level::Error, "HELLO: {e}: {}", Bytes(&buf[..n]));
            Err(libc::EPROTO)
        }
    }
}

/// Sends READY and waits until the agent has mirrored MODEL_DIR.
pub fn ready() -> Result<(), libc::c_int> {
    let conn = connect(state::timeout(&state::READY_TIMEOUT_SECS))?;
    let mut req = LineBuf::<16>::new();
    proto::encode_ready(&mut req);
    conn.send(req.as_bytes())?;
    let mut buf = [0u8; REPLY_CAP];
    let (n, _) = conn.recv_line(&mut buf).inspect_err(|&e| {
        if e == libc::ETIMEDOUT {
            plog!(
                Level::Error,
                "READY: no answer from the agent within {} s (OSS_CONNECTOR_READY_TIMEOUT_SEC)",
                state::READY_TIMEOUT_SECS.load(core::sync::atomic::Ordering::Relaxed)
            );
        }
    })?;
    match proto::parse_ok(&buf[..n]) {
        Ok(OkReply::Ok(_)) => Ok(()),
        Ok(OkReply::Err { errno, msg }) => {
            plog!(Level::Error, "READY failed: errno {errno}: {}", Bytes(msg));
            Err(errno)
        }
        Err(e) => {
            plog!(Level::Error, "READY: {e}: {}", Bytes(&buf[..n]));
            Err(libc::EPROTO)
        }
    }
}

/// Asks the agent whether `(dev, ino)` is one of its placeholders; on `Some(len)` the path
/// below MODEL_DIR is `rel[..len]`.
pub fn identify(dev: u64, ino: u64, rel: &mut [u8]) -> Result<Option<usize>, libc::c_int> {
    let conn = connect(Some(HELLO_TIMEOUT))?;
    let mut req = LineBuf::<64>::new();
    proto::encode_ident(&mut req, dev, ino);
    conn.send(req.as_bytes())?;
    let mut buf = [0u8; REPLY_CAP];
    let (n, _) = conn.recv_line(&mut buf)?;
    match proto::parse_ident(&buf[..n]) {
        Ok(IdentReply::Pass) => Ok(None),
        Ok(IdentReply::Placeholder(field)) => proto::unescape_into(field, rel)
            .map(Some)
            .ok_or(libc::ENAMETOOLONG),
        Ok(IdentReply::Err { errno, msg }) => {
            plog!(Level::Error, "IDENT failed: errno {errno}: {}", Bytes(msg));
            Err(errno)
        }
        Err(e) => {
            plog!(Level::Error, "IDENT: {e}: {}", Bytes(&buf[..n]));
            Err(libc::EPROTO)
        }
    }
}

/// Re-registers with the agent when the pid changed since the last HELLO (a fork child).
fn hello_if_forked() {
    let pid = getpid();
    let last = state::HELLO_PID.load(core::sync::atomic::Ordering::Acquire);
    if last == 0 || last == pid {
        return;
    }
    // Mark first, so a failing agent isn't asked again on every open of this child.
    state::HELLO_PID.store(pid, core::sync::atomic::Ordering::Release);
    match connect(Some(HELLO_TIMEOUT)).and_then(|c| hello_on(&c, state::ROLE_SECONDARY)) {
        Ok(_) => plog!(
            Level::Debug,
            "fork child of {last} registered with the agent"
        ),
        Err(e) => plog!(Level::Warn, "HELLO from fork child failed: errno {e}"),
    }
}

/// What an OPEN resolved to.
pub enum Opened {
    /// Call the real open.
    Pass,
    /// A fresh read-only fd over the agent's memory file.
    Fd(libc::c_int),
}

/// Flags of the caller kept when re-opening the agent's memfd (everything else — creation,
/// `O_DIRECT`, `O_NOATIME`, `O_NOFOLLOW` on the magic link — would fail or mean nothing there).
const KEPT_FLAGS: libc::c_int = libc::O_CLOEXEC | libc::O_NONBLOCK;

/// Asks the agent for `rel` (a path below MODEL_DIR). `Err` carries the errno to fail with.
pub fn open_model_file(rel: &[u8], flags: libc::c_int) -> Result<Opened, libc::c_int> {
    hello_if_forked();
    let mut req = LineBuf::<REQUEST_CAP>::new();
    proto::encode_open(&mut req, getpid(), rel);
    if req.overflowed() {
        return Err(libc::ENAMETOOLONG);
    }
    let fail = |what: &str, e: libc::c_int| {
        plog!(
            Level::Error,
            "open {} via agent at {}: {what} (errno {e}); failing with EIO",
            Bytes(rel),
            Bytes(state::SOCKET_PATH.get().unwrap_or_default())
        );
        libc::EIO
    };
    if state::start_failed_recently() {
        if state::START_FAILURE_LOG.should_log() {
            plog!(
                Level::Error,
                "open {}: {}; failing with EIO",
                Bytes(rel),
                Bytes(
                    state::START_FAILURE
                        .get()
                        .unwrap_or(b"the agent could not be started")
                )
            );
        }
        return Err(libc::EIO);
    }
    let conn = connect(state::timeout(&state::OPEN_TIMEOUT_SECS)).map_err(|e| {
        if state::UNREACHABLE_LOG.should_log() {
            fail("agent unreachable", e)
        } else {
            libc::EIO
        }
    })?;
    conn.send(req.as_bytes())
        .map_err(|e| fail("send failed", e))?;
    let mut buf = [0u8; REPLY_CAP];
    let (n, fd) = conn.recv_line(&mut buf).map_err(|e| {
        if e == libc::ETIMEDOUT {
            fail(
                "no answer within OSS_CONNECTOR_OPEN_TIMEOUT_SEC",
                libc::ETIMEDOUT,
            )
        } else {
            fail("no reply", e)
        }
    })?;
    drop(conn);
    match proto::parse_open(&buf[..n]) {
        Ok(OpenReply::Pass) => Ok(Opened::Pass),
        Ok(OpenReply::Err { errno, msg }) => {
            plog!(
                Level::Warn,
                "open {}: agent error errno {errno}: {}",
                Bytes(rel),
                Bytes(msg)
            );
            Err(errno)
        }
        Ok(OpenReply::Fd { size, source }) => {
            let Some(fd) = fd else {
                return Err(fail("FD reply without an attached fd", libc::EPROTO));
            };
            if let Err(seals) = trust::check_sealed(fd.as_raw_fd()) {
                plog!(
                    Level::Error,
                    "open {}: the agent's file is not sealed against writes (seals {seals:#x}); failing with EIO",
                    Bytes(rel)
                );
                return Err(libc::EIO);
            }
            // The raw system call: `fstat` is hooked in this library.
            let st = crate::real::sys_fstatat_fd(fd.as_raw_fd())
                .map_err(|e| fail("fstat of received fd failed", e))?;
            if st.st_size as u64 != size {
                plog!(
                    Level::Error,
                    "open {}: agent announced {size} bytes but the file has {}; failing with EIO",
                    Bytes(rel),
                    st.st_size
                );
                return Err(libc::EIO);
            }
            let mut proc_path = LineBuf::<32>::new();
            proc_path.push(b"/proc/self/fd/");
            proc_path.push_u64(fd.as_raw_fd() as u64);
            proc_path.push(b"\0");
            // SAFETY: `proc_path` ends in the NUL pushed above, the only thing `sys_openat`
            // requires.
            let own = unsafe {
                sys_openat(
                    libc::AT_FDCWD,
                    proc_path.as_bytes().as_ptr().cast(),
                    libc::O_RDONLY | (flags & KEPT_FLAGS),
                    0,
                )
            };
            if own < 0 {
                return Err(fail("re-open of the received fd failed", state::errno()));
            }
            plog!(
                Level::Debug,
                "open {} -> fd {own} ({size} bytes from {})",
                Bytes(rel),
                Bytes(source)
            );
            Ok(Opened::Fd(own))
        }
        Err(e) => Err(fail("bad reply", {
            plog!(Level::Error, "{e}: {}", Bytes(&buf[..n]));
            libc::EPROTO
        })),
    }
}

//! Starting the node agent from the main process (role 1) when none answers.
//!
//! Design decision: the agent becomes a daemon through double fork + `setsid` + `execve`, so it
//! is re-parented away from the inference server (which may reap or kill its own children) and
//! has no controlling terminal. Everything the children need (argv, the filtered environment,
//! the fds for stdio) is prepared before the first fork, so the children only make
//! async-signal-safe calls. `LD_PRELOAD` and `ENABLE_CONNECTOR` are removed from the agent's
//! environment, otherwise it would hook itself.

use core::time::Duration;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::log::{Bytes, Level};
use crate::plog;
use crate::real::sys_openat;
use crate::state;

/// How long the main process waits for a freshly spawned agent to answer HELLO. The agent only
/// has to parse its configuration and bind the socket; mirroring happens later, under READY.
pub const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between connection attempts while the agent starts.
const AGENT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After our agent exited (e.g. it lost the `<socket>.lock` race to an agent another process
/// started at the same moment), keep trying to connect this long before giving up.
const AGENT_EXITED_GRACE: Duration = Duration::from_secs(3);
/// Name of the agent binary, and its sub-command.
const AGENT_BIN_NAME: &str = "ossc";
const AGENT_SUBCOMMAND: &CStr = c"agent";
/// Suffix appended to the socket path for the file that receives the agent's stdout/stderr
/// (startup errors before its own log is set up).
const AGENT_STDIO_SUFFIX: &str = ".agent-stdio.log";
/// Mode of the socket's directory if we have to create it: private, unless
/// `OSS_CONNECTOR_SOCKET_MODE` shares the socket with other users (the agent uses the same rule).
const DIR_MODE: libc::mode_t = 0o700;
const SHARED_DIR_MODE: libc::mode_t = 0o755;
/// Mode of the stdio file.
const FILE_MODE: libc::mode_t = 0o644;
/// Upper bound for the fd-closing fallback when `close_range` is unavailable.
const MAX_FD_TO_CLOSE: libc::c_int = 65_536;
/// Exit status of the grandchild when `execve` fails.
const EXEC_FAILED_STATUS: libc::c_int = 127;

extern "C" {
    static environ: *const *const libc::c_char;
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated `CString` that outlives the call; access only reads it.
    let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    executable && p.metadata().map(|m| m.is_file()).unwrap_or(false)
}

/// Path of this shared object, via `dladdr` on one of our own functions.
fn own_library_path() -> Option<PathBuf> {
    // SAFETY: `Dl_info` is plain old data (pointers and an address); all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let addr = own_library_path as *const libc::c_void;
    // SAFETY: dladdr only compares `addr` (a function of this library) with the loaded
    // objects' ranges; `info` is a local `Dl_info`, writable for its whole size.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr succeeded and `dli_fname` is non-null (both checked above): it points at
    // the NUL-terminated name the loader keeps while this library stays loaded.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
}

/// Where the packages install the agent binary (scripts/package.sh).
const INSTALLED_AGENT_BIN: &str = "/usr/local/bin/ossc";

/// Finds the agent binary: `$OSSC_AGENT_BIN`, else `ossc` next to this library, else
/// `../bin/ossc` relative to it (the packages' `/usr/local/lib` + `/usr/local/bin`), else
/// [`INSTALLED_AGENT_BIN`] (the library copied elsewhere), else the first `ossc` on `$PATH`.
pub fn find_agent_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OSSC_AGENT_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Some(p);
        }
        plog!(
            Level::Error,
            "OSSC_AGENT_BIN={} is not an executable file",
            p.display()
        );
        return None;
    }
    if let Some(lib) = own_library_path() {
        if let Some(dir) = lib.parent() {
            for cand in [
                dir.join(AGENT_BIN_NAME),
                dir.join("..").join("bin").join(AGENT_BIN_NAME),
            ] {
                if is_executable(&cand) {
                    return Some(cand);
                }
            }
        }
    }
    let installed = PathBuf::from(INSTALLED_AGENT_BIN);
    if is_executable(&installed) {
        return Some(installed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(AGENT_BIN_NAME))
        .find(|c| is_executable(c))
}

/// The environment without `LD_PRELOAD` and `ENABLE_CONNECTOR`.
fn filtered_environment() -> Vec<CString> {
    let mut out = Vec::new();
    // SAFETY: `environ` is this process's NULL-terminated array of NUL-terminated
    // `NAME=value` strings; the walk stops at the terminating null and only reads, and the
    // constructor runs before the program could change the environment concurrently. Each
    // entry is copied (`to_owned`) before the next step.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p);
            let b = entry.to_bytes();
            if !b.starts_with(b"LD_PRELOAD=") && !b.starts_with(b"ENABLE_CONNECTOR=") {
                out.push(entry.to_owned());
            }
            p = p.add(1);
        }
    }
    out
}

fn open_raw(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> libc::c_int {
    // SAFETY: `path` is a NUL-terminated `CStr`, the only thing `sys_openat` requires.
    unsafe { sys_openat(libc::AT_FDCWD, path.as_ptr(), flags | libc::O_CLOEXEC, mode) }
}

/// Most agent start-up failures (a malformed config.json, a missing OSS_PATH)
/// are printed by the agent on stderr just before it exits: quote the last
/// line of its stdio file so the application's log says why.
fn agent_last_words(socket: &[u8]) -> String {
    /// How much of the file's end is read.
    const TAIL: usize = 2048;
    let mut name = socket.to_vec();
    name.extend_from_slice(AGENT_STDIO_SUFFIX.as_bytes());
    let Ok(c) = CString::new(name) else {
        return String::from("(no agent output)");
    };
    let fd = open_raw(&c, libc::O_RDONLY, 0);
    if fd < 0 {
        return String::from("(no agent output)");
    }
    let mut buf = vec![0u8; TAIL];
    // SAFETY: `fd` was opened above (checked `>= 0`) and is ours alone; pread writes at most
    // `TAIL` bytes into `buf`, which holds exactly `TAIL`; `fd` is not used after the close.
    let n = unsafe {
        let size = libc::lseek(fd, 0, libc::SEEK_END);
        let start = (size - TAIL as libc::off_t).max(0);
        let n = libc::pread(fd, buf.as_mut_ptr().cast(), TAIL, start);
        libc::close(fd);
        n
    };
    let text = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| String::from("(no agent output)"))
}

/// File for the agent's stdout/stderr: `<socket>.agent-stdio.log` (creating the socket's
/// directory if needed), else `/dev/null`.
fn open_stdio_file(socket: &[u8]) -> libc::c_int {
    let sock = Path::new(std::ffi::OsStr::from_bytes(socket));
    if let Some(dir) = sock.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(c) = CString::new(dir.as_os_str().as_bytes()) {
            let shared =
                std::env::var_os("OSS_CONNECTOR_SOCKET_MODE").is_some_and(|m| !m.is_empty());
            let mode = if shared { SHARED_DIR_MODE } else { DIR_MODE };
            // SAFETY: `c` is a NUL-terminated `CString` that outlives the call; mkdir only
            // reads it. Failure (EEXIST and the like) is fine: the open below then decides.
            unsafe { libc::mkdir(c.as_ptr(), mode) };
        }
    }
    let mut name = socket.to_vec();
    name.extend_from_slice(AGENT_STDIO_SUFFIX.as_bytes());
    if let Ok(c) = CString::new(name) {
        let fd = open_raw(
            &c,
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
            FILE_MODE,
        );
        if fd >= 0 {
            return fd;
        }
    }
    open_raw(c"/dev/null", libc::O_WRONLY, 0)
}

/// Runs in the grandchild: set up stdio, close everything else, exec. Never returns.
///
/// # Safety
/// Must only be called in a freshly forked child; only async-signal-safe calls are made.
unsafe fn exec_agent(
    stdin_fd: libc::c_int,
    out_fd: libc::c_int,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: this is the freshly forked, single-threaded grandchild (this function's
    // contract), so only async-signal-safe calls are made: `set` is a local zeroed sigset_t
    // (plain old data) written by sigemptyset; dup2/close_range/close take plain ints;
    // `argv` and `envp` are null-terminated arrays of NUL-terminated strings that the parent
    // built before forking, still mapped in this copy of its memory.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
        if stdin_fd >= 0 {
            libc::dup2(stdin_fd, 0);
        }
        if out_fd >= 0 {
            libc::dup2(out_fd, 1);
            libc::dup2(out_fd, 2);
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..MAX_FD_TO_CLOSE {
                libc::close(fd);
            }
        }
        libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        libc::_exit(EXEC_FAILED_STATUS)
    }
}

/// Double-forks and execs `bin agent`. Returns the daemon's pid.
fn spawn(bin: &Path) -> Result<libc::pid_t, String> {
    let bin_c = CString::new(bin.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let argv: [*const libc::c_char; 3] =
        [bin_c.as_ptr(), AGENT_SUBCOMMAND.as_ptr(), core::ptr::null()];
    let env = filtered_environment();
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(core::ptr::null());
    let socket = state::SOCKET_PATH
        .get()
        .unwrap_or(state::DEFAULT_SOCKET_PATH);
    let stdin_fd = open_raw(c"/dev/null", libc::O_RDONLY, 0);
    let out_fd = open_stdio_file(socket);
    let mut pipe_fds = [-1; 2];
    // SAFETY: `pipe_fds` is a local array of two ints, exactly what pipe2 writes.
    if unsafe { libc::pipe2(pipe_fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = state::errno();
        close_all(&[stdin_fd, out_fd]);
        return Err(format!("pipe2 failed: errno {e}"));
    }
    // SAFETY: fork takes no arguments; the child it makes may be running in a multi-threaded
    // process's copy, so it only makes async-signal-safe calls (setsid, fork, write, execve,
    // _exit) and never returns into Rust code that could take a lock.
    let child = unsafe { libc::fork() };
    if child < 0 {
        let e = state::errno();
        close_all(&[stdin_fd, out_fd, pipe_fds[0], pipe_fds[1]]);
        return Err(format!("fork failed: errno {e}"));
    }
    if child == 0 {
        // SAFETY: we are the first child: become a session leader, fork the daemon, report its
        // pid through the pipe and exit. All calls are async-signal-safe; `bytes` is a local
        // 4-byte array written from in full; `pipe_fds[1]` is the pipe's open write end and
        // `exec_agent` runs only in the fresh grandchild, as it requires.
        unsafe {
            libc::setsid();
            let grandchild = libc::fork();
            if grandchild == 0 {
                exec_agent(stdin_fd, out_fd, &argv, &envp);
            }
            let bytes = grandchild.to_ne_bytes();
            libc::write(pipe_fds[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    // SAFETY: `pipe_fds[1]` is our open copy of the write end, not used after this; closing it
    // lets the read below see EOF if the child dies.
    unsafe { libc::close(pipe_fds[1]) };
    let mut bytes = [0u8; 4];
    let n = loop {
        // SAFETY: `bytes` is writable for `bytes.len()` bytes, and `pipe_fds[0]` is the
        // read end of the pipe created above, still open.
        let n = unsafe { libc::read(pipe_fds[0], bytes.as_mut_ptr().cast(), bytes.len()) };
        if n < 0 && state::errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    loop {
        // SAFETY: `child` is the pid fork returned to us; a null status pointer asks waitpid
        // to write nothing.
        let r = unsafe { libc::waitpid(child, core::ptr::null_mut(), 0) };
        if r >= 0 || state::errno() != libc::EINTR {
            break;
        }
    }
    close_all(&[stdin_fd, out_fd, pipe_fds[0]]);
    let pid = libc::pid_t::from_ne_bytes(bytes);
    if n != 4 || pid <= 0 {
        return Err("the intermediate child could not fork the agent".to_string());
    }
    Ok(pid)
}

fn close_all(fds: &[libc::c_int]) {
    for &fd in fds.iter().filter(|&&fd| fd >= 0) {
        // SAFETY: callers pass fds this module opened and no longer uses (negative ones are
        // filtered out); each is closed once.
        unsafe { libc::close(fd) };
    }
}

/// True while `pid` exists and is not a zombie (read from `/proc/<pid>/stat`).
fn process_alive(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the field after the parenthesised command name.
    match stat.iter().rposition(|&b| b == b')') {
        Some(i) => !matches!(stat.get(i + 2), Some(b'Z' | b'X' | b'x')),
        None => true,
    }
}

/// Starts the agent and waits until it accepts connections. Returns a connected socket.
pub fn start_agent_and_connect() -> Result<crate::client::Conn, String> {
    let bin = find_agent_binary().ok_or_else(|| {
        format!("no agent binary: set OSSC_AGENT_BIN or install `{AGENT_BIN_NAME}` next to libossc_preload.so or on PATH")
    })?;
    let pid = spawn(&bin)?;
    plog!(
        Level::Info,
        "no agent answered on {}; started {} {} as pid {pid}",
        Bytes(state::SOCKET_PATH.get().unwrap_or_default()),
        bin.display(),
        Bytes(AGENT_SUBCOMMAND.to_bytes())
    );
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    let mut exited_at: Option<Instant> = None;
    loop {
        match crate::client::connect(Some(crate::client::HELLO_TIMEOUT)) {
            Ok(c) => return Ok(c),
            Err(e) => {
                if exited_at.is_none() && !process_alive(pid) {
                    exited_at = Some(Instant::now());
                }
                if exited_at.is_some_and(|t| t.elapsed() >= AGENT_EXITED_GRACE) {
                    let socket = state::SOCKET_PATH.get().unwrap_or_default();
                    return Err(format!(
                        "the agent (pid {pid}) exited before accepting connections (last connect errno {e}): {}; see {}{AGENT_STDIO_SUFFIX}",
                        agent_last_words(socket),
                        Bytes(socket)
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the agent (pid {pid}) did not accept connections within {} s (errno {e})",
                        AGENT_START_TIMEOUT.as_secs()
                    ));
                }
                std::thread::sleep(AGENT_POLL_INTERVAL);
            }
        }
    }
}

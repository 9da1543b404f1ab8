//! End-to-end tests of `libossc_preload.so` against a fake agent.
//!
//! Design decision: the real agent is not needed. A small UDS server thread in this test binary
//! implements the agent side of the protocol (memfd contents for some paths, PASS for real
//! files, ERR for others) and records every request; real programs (`cat`, `sha256sum`, `cp`,
//! `tar`, `python3`, a small C program) run as children with `LD_PRELOAD` pointing at the
//! cdylib that cargo builds next to this test executable. MODEL_DIR holds size-exact *zero-filled* placeholders, like the
//! agent's mirror, so any request that wrongly passes through shows up as wrong bytes.
//! This binary deliberately does not link the `ossc_preload` rlib, so its own libc calls are
//! not hooked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Size of the main served file: several MiB and deliberately not page-aligned.
const WEIGHTS_SIZE: usize = 3 * 1024 * 1024 + 123;
/// Errno the fake agent answers for `denied.bin`.
const DENIED_ERRNO: i32 = libc::EACCES;

/// `libossc_preload.so` built by cargo for this test run. This executable lives in
/// `<target>/<profile>/deps/`; cargo builds the package's cdylib there too when it builds the
/// tests (it is uplifted to `<target>/<profile>/` only by `cargo build`), so look in `deps/`
/// first, then one level up.
fn preload_so() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a directory");
    let candidates = [
        deps.to_path_buf(),
        deps.parent().unwrap_or(deps).to_path_buf(),
    ];
    candidates
        .iter()
        .map(|d| d.join("libossc_preload.so"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libossc_preload.so not found in {candidates:?}"))
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn sealed_memfd(content: &[u8]) -> OwnedFd {
    let owned = memfd_with(content);
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: `owned` is the open memfd made just above; F_ADD_SEALS takes an int
    // argument and touches no memory.
    let rc = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(rc, 0);
    owned
}

/// A memfd holding `content`, without seals.
fn memfd_with(content: &[u8]) -> OwnedFd {
    // SAFETY: the name is a NUL-terminated literal, the only memory memfd_create reads.
    let fd = unsafe {
        libc::memfd_create(
            c"fake-agent".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` was just returned by memfd_create (checked `>= 0`) and nothing else owns
    // it, so the `OwnedFd` is its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(owned.try_clone().unwrap());
    f.write_all(content).unwrap();
    owned
}

/// How the fake agent answers `OPEN` for one path.
enum Entry {
    /// `FD <announced> memory` with the memfd attached (if `attach`).
    Serve {
        fd: OwnedFd,
        announced: u64,
        attach: bool,
    },
    /// `ERR <errno> <msg>`.
    Err(i32, &'static str),
}

struct Shared {
    entries: HashMap<String, Entry>,
    /// `(st_dev, st_ino)` of each placeholder -> its path below MODEL_DIR, for `IDENT`.
    placeholders: HashMap<(u64, u64), String>,
    requests: Mutex<Vec<String>>,
    log_path: PathBuf,
    /// When set, READY and OPEN are never answered (a hung agent).
    hang: AtomicBool,
}

/// The fake agent plus a model directory layout:
/// `root/model/{weights.bin (served), sub/shard.bin (served), config.json (real, PASS),
/// denied.bin (ERR), liar.bin (FD with a wrong size), nofd.bin (FD without fd),
/// unsealed.bin (FD of a memfd without seals)}`,
/// `root/outside.txt`, `root/out/` for results.
struct Fixture {
    root: tempfile::TempDir,
    shared: Arc<Shared>,
    weights: Vec<u8>,
    shard: Vec<u8>,
    config: Vec<u8>,
}

fn unescape(s: &str) -> String {
    s.replace("%0A", "\n").replace("%25", "%")
}

fn send_with_fd(stream: &UnixStream, line: &[u8], fd: Option<&OwnedFd>) {
    let mut iov = libc::iovec {
        iov_base: line.as_ptr() as *mut _,
        iov_len: line.len(),
    };
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut cbuf = Cmsg([0; 64]);
    // SAFETY: `msghdr` is plain old data (pointers, lengths, flags); all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: `cbuf` is 64 bytes, aligned for `cmsghdr`, and CMSG_SPACE(4) (24 bytes) fits
        // in it, so CMSG_FIRSTHDR returns a header inside `cbuf` whose data area holds one int,
        // written unaligned.
        unsafe {
            msg.msg_control = cbuf.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            libc::CMSG_DATA(c)
                .cast::<libc::c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
    }
    // SAFETY: `msg` points at `iov` (covering `line`, read only) and, with an fd, at the
    // control message built in `cbuf`; all are live locals for this call.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    assert_eq!(n as usize, line.len(), "fake agent sendmsg");
}

fn serve_conn(shared: &Shared, stream: UnixStream) {
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let line = line.trim_end_matches('\n').to_string();
    shared.requests.lock().unwrap().push(line.clone());
    let reply = |s: String| send_with_fd(&stream, s.as_bytes(), None);
    let hangs = line == "READY" || line.starts_with("OPEN ");
    if hangs && shared.hang.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    if let Some(rest) = line.strip_prefix("IDENT ") {
        let (dev, ino) = rest.split_once(' ').unwrap();
        let id = (dev.parse().unwrap(), ino.parse().unwrap());
        match shared.placeholders.get(&id) {
            Some(rel) => reply(format!("PLACEHOLDER {rel}\n")),
            None => reply("PASS\n".to_string()),
        }
    } else if line.starts_with("HELLO ") {
        reply(format!(
            "OK {} {}\n",
            std::process::id(),
            shared.log_path.display()
        ));
    } else if line == "READY" {
        reply("OK\n".to_string());
    } else if let Some(rest) = line.strip_prefix("OPEN ") {
        let rel = unescape(rest.split_once(' ').map(|x| x.1).unwrap_or(""));
        match shared.entries.get(&rel) {
            Some(Entry::Serve {
                fd,
                announced,
                attach,
            }) => send_with_fd(
                &stream,
                format!("FD {announced} memory\n").as_bytes(),
                attach.then_some(fd),
            ),
            Some(Entry::Err(errno, msg)) => reply(format!("ERR {errno} {msg}\n")),
            None => reply("PASS\n".to_string()),
        }
    } else {
        reply("ERR 22 unknown request\n".to_string());
    }
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::create_dir_all(root.path().join("out")).unwrap();
        let weights = pattern(WEIGHTS_SIZE, 1);
        let shard = pattern(100_001, 2);
        let config = b"{\"architectures\": [\"FakeForCausalLM\"]}\n".to_vec();
        // Placeholders like the agent's: right size, sparse, wrong (zero) bytes.
        let mut placeholders = HashMap::new();
        for (name, len) in [
            ("weights.bin", weights.len()),
            ("sub/shard.bin", shard.len()),
            ("denied.bin", 10),
            ("liar.bin", 10),
            ("nofd.bin", 10),
            ("unsealed.bin", 10),
        ] {
            let file = std::fs::File::create(model.join(name)).unwrap();
            file.set_len(len as u64).unwrap();
            let meta = file.metadata().unwrap();
            placeholders.insert((meta.dev(), meta.ino()), name.to_string());
        }
        std::fs::write(model.join("config.json"), &config).unwrap();
        std::fs::write(root.path().join("outside.txt"), b"outside the model dir\n").unwrap();

        let mut entries = HashMap::new();
        entries.insert(
            "weights.bin".to_string(),
            Entry::Serve {
                fd: sealed_memfd(&weights),
                announced: weights.len() as u64,
                attach: true,
            },
        );
        entries.insert(
            "sub/shard.bin".to_string(),
            Entry::Serve {
                fd: sealed_memfd(&shard),
                announced: shard.len() as u64,
                attach: true,
            },
        );
        entries.insert(
            "denied.bin".to_string(),
            Entry::Err(DENIED_ERRNO, "denied by the fake agent"),
        );
        entries.insert(
            "liar.bin".to_string(),
            Entry::Serve {
                fd: sealed_memfd(b"0123456789"),
                announced: 11,
                attach: true,
            },
        );
        entries.insert(
            "nofd.bin".to_string(),
            Entry::Serve {
                fd: sealed_memfd(b"0123456789"),
                announced: 10,
                attach: false,
            },
        );
        entries.insert(
            "unsealed.bin".to_string(),
            Entry::Serve {
                fd: memfd_with(b"0123456789"),
                announced: 10,
                attach: true,
            },
        );
        let shared = Arc::new(Shared {
            entries,
            placeholders,
            requests: Mutex::new(Vec::new()),
            log_path: root.path().join("agent.log"),
            hang: AtomicBool::new(false),
        });
        let f = Self {
            root,
            shared,
            weights,
            shard,
            config,
        };
        f.serve_at(&f.sock());
        f
    }

    /// Serves this fake agent on (another) socket at `path`.
    fn serve_at(&self, path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        let s = Arc::clone(&self.shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve_conn(&s, stream));
            }
        });
    }

    fn model(&self) -> PathBuf {
        self.root.path().join("model")
    }
    fn out(&self) -> PathBuf {
        self.root.path().join("out")
    }
    fn sock(&self) -> PathBuf {
        self.root.path().join("agent.sock")
    }

    /// A command with the preload in secondary mode pointed at this fixture.
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", preload_so())
            .env("ENABLE_CONNECTOR", "2")
            .env("MODEL_DIR", self.model())
            .env("CONNECTOR_UDS_PATH", self.sock())
            .env_remove("OSSC_AGENT_BIN");
        c
    }

    fn opens(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("OPEN "))
            .map(|r| r.splitn(3, ' ').nth(2).unwrap().to_string())
            .collect()
    }

    fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn run_ok(c: &mut Command) -> Output {
    let out = c.output().expect("spawn child");
    assert!(
        out.status.success(),
        "child failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn python(f: &Fixture, script: &str, args: &[&Path]) -> Output {
    run_ok(f.cmd("python3").arg("-c").arg(script).args(args))
}

#[test]
fn cdylib_exports_hooks_and_version() {
    let data = std::fs::read(preload_so()).unwrap();
    let needle = format!("ossc-preload {}\0", env!("CARGO_PKG_VERSION"));
    assert!(
        data.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "version string present in the .so"
    );
    let nm = Command::new("nm").arg("-D").arg(preload_so()).output();
    if let Ok(nm) = nm {
        let syms = String::from_utf8_lossy(&nm.stdout);
        for s in [
            "version",
            "open",
            "open64",
            "openat",
            "openat64",
            "__open_2",
            "__open64_2",
            "__openat_2",
            "__openat64_2",
            "fopen",
            "fopen64",
            "fstat",
            "fstat64",
            "__fxstat",
            "__fxstat64",
            "fstatat",
            "fstatat64",
            "__fxstatat",
            "__fxstatat64",
            "statx",
        ] {
            assert!(
                syms.lines().any(|l| l.split_whitespace().last() == Some(s)
                    && l.split_whitespace().nth(1).is_some_and(|t| t != "U")),
                "{s} exported:\n{syms}"
            );
        }
    }
}

#[test]
fn cat_sha256sum_and_cp_are_byte_exact() {
    let f = Fixture::new();
    let w = f.model().join("weights.bin");
    let out = run_ok(f.cmd("cat").arg(&w));
    assert!(
        out.stdout == f.weights,
        "cat output differs from served content"
    );

    // sha256sum reads through fopen; compare with the digest of the expected bytes.
    let expected = f.out().join("expected.bin");
    std::fs::write(&expected, &f.weights).unwrap();
    let reference = run_ok(Command::new("sha256sum").arg(&expected));
    let hooked = run_ok(f.cmd("sha256sum").arg(&w));
    let digest = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest(&hooked), digest(&reference));

    // cp compares the (dev, ino) of its stat(2) of the path (the placeholder) with fstat(2) of
    // the opened fd (the agent's memfd); the stat hooks make them agree, so cp copies.
    let copy = f.out().join("copy.bin");
    run_ok(f.cmd("cp").arg(&w).arg(&copy));
    assert!(
        std::fs::read(&copy).unwrap() == f.weights,
        "cp copy differs"
    );
    // cp -a (lstat, fstatat) as well.
    let copy_a = f.out().join("copy-a.bin");
    run_ok(f.cmd("cp").arg("-a").arg(&w).arg(&copy_a));
    assert!(
        std::fs::read(&copy_a).unwrap() == f.weights,
        "cp -a copy differs"
    );
    // tar also compares what it stat'ed with what it opened.
    let tarball = f.out().join("w.tar");
    run_ok(
        f.cmd("tar")
            .arg("cf")
            .arg(&tarball)
            .arg("-C")
            .arg(f.model())
            .arg("weights.bin"),
    );
    let untar = f.out().join("untar");
    std::fs::create_dir_all(&untar).unwrap();
    run_ok(
        Command::new("tar")
            .arg("xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&untar),
    );
    assert!(
        std::fs::read(untar.join("weights.bin")).unwrap() == f.weights,
        "tar round trip differs"
    );
    // Copying through a plain read (cp reading from stdin) is byte-exact.
    let copy2 = f.out().join("copy2.bin");
    run_ok(
        f.cmd("sh")
            .arg("-c")
            .arg("cp /dev/stdin \"$2\" < \"$1\"")
            .arg("sh")
            .arg(&w)
            .arg(&copy2),
    );
    assert!(
        std::fs::read(&copy2).unwrap() == f.weights,
        "cp from stdin differs"
    );

    // Relative to the cwd, and a nested path.
    let out = run_ok(f.cmd("cat").arg("sub/shard.bin").current_dir(f.model()));
    assert!(out.stdout == f.shard);
    let opens = f.opens();
    assert_eq!(
        opens.iter().filter(|o| *o == "weights.bin").count(),
        6,
        "{opens:?}"
    );
    assert!(opens.contains(&"sub/shard.bin".to_string()));
}

#[test]
fn python_read_mmap_copyfile_pread_dirfd_fopen_are_byte_exact() {
    let f = Fixture::new();
    let script = r#"
import ctypes, mmap, os, shutil, sys
model, out = sys.argv[1], sys.argv[2]
w = os.path.join(model, "weights.bin")
def put(name, data):
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(data)
with open(w, "rb") as fh:
    put("read", fh.read())
with open(w, "rb") as fh:
    st = os.fstat(fh.fileno())
    assert st.st_size == os.path.getsize(w), (st.st_size, os.path.getsize(w))
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        put("mmap", m[:])
shutil.copyfile(w, os.path.join(out, "copyfile"))
fd = os.open(w, os.O_RDONLY | os.O_CLOEXEC)
size = os.fstat(fd).st_size
chunks, off = [], 0
while off < size:
    b = os.pread(fd, 65536, off)
    assert b
    chunks.append(b)
    off += len(b)
# A private offset: seeking this fd does not move another one.
fd2 = os.open(w, os.O_RDONLY)
os.lseek(fd, 100, os.SEEK_SET)
assert os.read(fd2, 3) == b"".join(chunks)[:3]
os.close(fd); os.close(fd2)
put("pread", b"".join(chunks))
d = os.open(os.path.join(model, "sub"), os.O_RDONLY | os.O_DIRECTORY)
fd = os.open("shard.bin", os.O_RDONLY, dir_fd=d)
put("dirfd", os.read(fd, 1 << 20))
os.close(fd); os.close(d)
libc = ctypes.CDLL(None, use_errno=True)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(w.encode(), b"rbe")
assert fp, ctypes.get_errno()
buf = ctypes.create_string_buffer(size)
n = libc.fread(buf, 1, size, fp)
libc.fclose(fp)
put("fopen", buf.raw[:n])
put("config", open(os.path.join(model, "config.json"), "rb").read())
"#;
    python(&f, script, &[&f.model(), &f.out()]);
    for name in ["read", "mmap", "copyfile", "pread", "fopen"] {
        let got = std::fs::read(f.out().join(name)).unwrap();
        assert!(got == f.weights, "{name}: {} bytes differ", got.len());
    }
    assert!(std::fs::read(f.out().join("dirfd")).unwrap() == f.shard);
    assert_eq!(std::fs::read(f.out().join("config")).unwrap(), f.config);
    let opens = f.opens();
    assert!(opens.contains(&"config.json".to_string()), "{opens:?}");
    assert!(opens.contains(&"sub/shard.bin".to_string()), "{opens:?}");
    assert!(
        !opens.iter().any(|o| o.is_empty() || o == "sub"),
        "{opens:?}"
    );
}

#[test]
fn fstat_of_a_served_fd_reports_the_placeholder_identity() {
    let f = Fixture::new();
    let script = r#"
import os, sys
model, outside = sys.argv[1], sys.argv[2]
w = os.path.join(model, "weights.bin")
s = os.path.join(model, "sub", "shard.bin")
ps, ss, os_ = os.stat(w), os.stat(s), os.stat(outside)
ident = lambda st: (st.st_dev, st.st_ino)
fd = os.open(w, os.O_RDONLY)
# Served from the agent's memfd, not the placeholder...
print("memfd", os.readlink("/proc/self/fd/%d" % fd).startswith("/memfd:"))
print("first-bytes-served", os.pread(fd, 16, 0) != bytes(16))
# ...but fstat (fstat64 in CPython) agrees with stat(path).
fs = os.fstat(fd)
print("fstat", ident(fs) == ident(ps), fs.st_size == ps.st_size)
print("stat-of-fd", ident(os.stat(fd)) == ident(ps))
with open(w, "rb") as fh:
    print("file-object", ident(os.fstat(fh.fileno())) == ident(ps))
# A closed fd number reused for a real file reports that file.
os.close(fd)
fd2 = os.open(outside, os.O_RDONLY)
print("reused-real", fd2 == fd, ident(os.fstat(fd2)) == ident(os_))
os.close(fd2)
# Reused for another served file: that file's placeholder.
fd3 = os.open(s, os.O_RDONLY)
print("reused-served", fd3 == fd, ident(os.fstat(fd3)) == ident(ss))
os.close(fd3)
"#;
    let out = python(
        &f,
        script,
        &[&f.model(), &f.root.path().join("outside.txt")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            "memfd True",
            "first-bytes-served True",
            "fstat True True",
            "stat-of-fd True",
            "file-object True",
            "reused-real True True",
            "reused-served True True",
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opens = f.opens();
    assert_eq!(
        opens.iter().filter(|o| *o == "weights.bin").count(),
        2,
        "{opens:?}"
    );
}

/// A C program calling every fd-stat entry point, the glibc < 2.33 `__fxstat*` ABI included.
/// Prints `<call> placeholder|other|error` per call: `placeholder` when the result's
/// `(dev, ino)` equals that of `stat(argv[1])`, or of `stat(argv[2])` for the `reused-` lines
/// (argv[2] is opened after closing the first fd, so it gets the same number).
const STAT_PROBE_C: &str = r#"
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

extern int __fxstat(int, int, struct stat *);
extern int __fxstat64(int, int, struct stat64 *);
extern int __fxstatat(int, int, const char *, struct stat *, int);
extern int __fxstatat64(int, int, const char *, struct stat64 *, int);
#if defined(__x86_64__)
#define VER 1
#else
#define VER 0
#endif

static struct stat want;
static void report(const char *what, int r, unsigned long long dev, unsigned long long ino) {
    printf("%s %s\n", what, r != 0 ? "error"
           : (dev == want.st_dev && ino == want.st_ino) ? "placeholder" : "other");
}
#define R(what, call, buf) do { int r_ = (call); report(what, r_, (buf).st_dev, (buf).st_ino); } while (0)
#define RX(what, call) do { int r_ = (call);     report(what, r_, makedev(sx.stx_dev_major, sx.stx_dev_minor), sx.stx_ino); } while (0)

int main(int argc, char **argv) {
    struct stat st;
    struct stat64 st64;
    struct statx sx;
    if (argc != 3 || stat(argv[1], &want) != 0) return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) return 3;
    R("raw-syscall", (int)syscall(SYS_fstat, fd, &st), st);
    R("fstat", fstat(fd, &st), st);
    printf("size %d\n", st.st_size == want.st_size);
    R("fstat64", fstat64(fd, &st64), st64);
    R("__fxstat", __fxstat(VER, fd, &st), st);
    R("__fxstat64", __fxstat64(VER, fd, &st64), st64);
    R("fstatat", fstatat(fd, "", &st, AT_EMPTY_PATH), st);
    R("fstatat64", fstatat64(fd, "", &st64, AT_EMPTY_PATH), st64);
    R("__fxstatat", __fxstatat(VER, fd, "", &st, AT_EMPTY_PATH), st);
    R("__fxstatat64", __fxstatat64(VER, fd, "", &st64, AT_EMPTY_PATH), st64);
    RX("statx", statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx));
    printf("statx-size %d\n", sx.stx_size == (unsigned long long)want.st_size);
    RX("statx-path", statx(AT_FDCWD, argv[1], 0, STATX_BASIC_STATS, &sx));
    close(fd);
    if (stat(argv[2], &want) != 0) return 4;
    int fd2 = open(argv[2], O_RDONLY);
    printf("reused %d\n", fd2 == fd);
    R("reused-fstat", fstat(fd2, &st), st);
    R("reused-__fxstat64", __fxstat64(VER, fd2, &st64), st64);
    R("reused-fstatat", fstatat(fd2, "", &st, AT_EMPTY_PATH), st);
    RX("reused-statx", statx(fd2, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx));
    return 0;
}
"#;

#[test]
fn every_fd_stat_entry_point_reports_the_placeholder_identity() {
    let f = Fixture::new();
    let src = f.out().join("stat_probe.c");
    let bin = f.out().join("stat_probe");
    std::fs::write(&src, STAT_PROBE_C).unwrap();
    let cc = match Command::new("cc").arg("-o").arg(&bin).arg(&src).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("no C compiler ({e}); fd-stat ABI probe skipped");
            return;
        }
    };
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let w = f.model().join("weights.bin");
    let outside = f.root.path().join("outside.txt");
    let lines = |out: &Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let calls = [
        "fstat",
        "fstat64",
        "__fxstat",
        "__fxstat64",
        "fstatat",
        "fstatat64",
        "__fxstatat",
        "__fxstatat64",
        "statx",
        "statx-path",
    ];
    let expected = |raw: &str| -> Vec<String> {
        let mut v = vec![format!("raw-syscall {raw}")];
        for c in calls {
            v.push(format!("{c} placeholder"));
            if c == "fstat" {
                v.push("size 1".into());
            }
            if c == "statx" {
                v.push("statx-size 1".into());
            }
        }
        v.push("reused 1".into());
        for c in ["fstat", "__fxstat64", "fstatat", "statx"] {
            v.push(format!("reused-{c} placeholder"));
        }
        v
    };
    // Served: the raw system call shows the memfd; every libc entry point the placeholder.
    let hooked = run_ok(f.cmd(bin.to_str().unwrap()).arg(&w).arg(&outside));
    assert_eq!(lines(&hooked), expected("other"));
    assert_eq!(f.opens(), vec!["weights.bin".to_string()]);
    // Without ENABLE_CONNECTOR the placeholder itself is opened: identical answers everywhere.
    let mut off = f.cmd(bin.to_str().unwrap());
    off.env_remove("ENABLE_CONNECTOR");
    let plain = run_ok(off.arg(&w).arg(&outside));
    assert_eq!(lines(&plain), expected("placeholder"));
    assert_eq!(f.opens().len(), 1, "no OPEN without ENABLE_CONNECTOR");
}

#[test]
fn agent_errors_become_errno_without_crash() {
    let f = Fixture::new();
    let script = r#"
import errno, os, sys
model = sys.argv[1]
def code(name):
    try:
        open(os.path.join(model, name), "rb").read()
    except OSError as e:
        return e.errno
    return 0
print(code("denied.bin"), code("liar.bin"), code("nofd.bin"))
"#;
    let out = python(&f, script, &[&f.model()]);
    let codes: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(codes, vec![DENIED_ERRNO, libc::EIO, libc::EIO]);

    let out = f
        .cmd("cat")
        .arg(f.model().join("denied.bin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no placeholder bytes leak out");

    // Log lines went to the path from HELLO, formatted `time level pid message`.
    let log = std::fs::read_to_string(&f.shared.log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("denied by the fake agent")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains("announced 11 bytes")),
        "{log}"
    );
    for l in &lines {
        let mut it = l.split(' ');
        let (ts, level, pid) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{l}"
        );
        assert!(["DEBUG", "INFO", "WARN", "ERROR"].contains(&level), "{l}");
        assert!(pid.parse::<u32>().is_ok(), "{l}");
    }
}

#[test]
fn missing_agent_gives_eio() {
    let f = Fixture::new();
    let script = r#"
import os, sys
try:
    open(os.path.join(sys.argv[1], "weights.bin"), "rb").read()
    print("opened")
except OSError as e:
    print(e.errno)
print(open(sys.argv[2]).read().strip())
"#;
    let out = run_ok(
        f.cmd("python3")
            .env("CONNECTOR_UDS_PATH", f.root.path().join("nobody.sock"))
            .arg("-c")
            .arg(script)
            .arg(f.model())
            .arg(f.root.path().join("outside.txt")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![libc::EIO.to_string().as_str(), "outside the model dir"]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERROR"));
}

#[test]
fn outside_paths_writes_and_directories_pass_through() {
    let f = Fixture::new();
    let script = r#"
import os, sys
model, outside = sys.argv[1], sys.argv[2]
print(open(os.path.join(model, "..", "outside.txt")).read().strip())
print(open(outside).read().strip())
with open(os.path.join(model, "new.txt"), "w") as fh:
    fh.write("written")
with open(os.path.join(model, "config.json"), "a") as fh:
    pass
print(sorted(os.listdir(model)))
print(sorted(os.listdir(os.path.join(model, "sub"))))
print(os.path.getsize(os.path.join(model, "weights.bin")))
"#;
    let out = python(
        &f,
        script,
        &[&f.model(), &f.root.path().join("outside.txt")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "outside the model dir");
    assert_eq!(lines[1], "outside the model dir");
    assert!(lines[2].contains("'new.txt'") && lines[2].contains("'weights.bin'"));
    assert_eq!(lines[3], "['shard.bin']");
    assert_eq!(lines[4], WEIGHTS_SIZE.to_string());
    assert_eq!(
        std::fs::read_to_string(f.model().join("new.txt")).unwrap(),
        "written"
    );
    assert!(f.opens().is_empty(), "{:?}", f.opens());
    // The constructor registered and waited for READY.
    let reqs = f.requests();
    assert!(
        reqs[0].starts_with("HELLO ") && reqs[0].ends_with(" 2 python3"),
        "{reqs:?}"
    );
    assert_eq!(reqs[1], "READY");
}

#[test]
fn without_enable_connector_behaviour_is_identical() {
    let f = Fixture::new();
    let script = r#"
import hashlib, os, shutil, subprocess, sys
model, out = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
for root, dirs, files in sorted(os.walk(model)):
    for n in sorted(files):
        p = os.path.join(root, n)
        h.update(p.encode()); h.update(open(p, "rb").read())
print(h.hexdigest())
print(open("/etc/passwd").read()[:40])
shutil.copyfile(os.path.join(model, "config.json"), os.path.join(out, "c-" + str(os.getpid())))
print(subprocess.run(["cat", os.path.join(model, "config.json")], capture_output=True).stdout)
w = os.path.join(model, "weights.bin")
fd = os.open(w, os.O_RDONLY)
fs, ps = os.fstat(fd), os.stat(w)
print(fs.st_dev, fs.st_ino, fs.st_size, fs.st_mode, ps.st_dev, ps.st_ino, os.pread(fd, 8, 0))
os.close(fd)
fd = os.open("/etc/passwd", os.O_RDONLY)
print(os.fstat(fd).st_ino == os.stat("/etc/passwd").st_ino)
os.close(fd)
try:
    open("/nonexistent/file")
except OSError as e:
    print(e.errno)
"#;
    let plain = run_ok(
        Command::new("python3")
            .env_remove("LD_PRELOAD")
            .env_remove("ENABLE_CONNECTOR")
            .arg("-c")
            .arg(script)
            .arg(f.model())
            .arg(f.out()),
    );
    let mut hooked_cmd = f.cmd("python3");
    hooked_cmd.env_remove("ENABLE_CONNECTOR");
    let hooked = run_ok(hooked_cmd.arg("-c").arg(script).arg(f.model()).arg(f.out()));
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&hooked.stdout)
    );
    assert_eq!(plain.stderr, hooked.stderr);
    assert!(f.requests().is_empty(), "{:?}", f.requests());
    // ENABLE_CONNECTOR set to something else is also pass-through.
    let other = run_ok(
        f.cmd("python3")
            .env("ENABLE_CONNECTOR", "yes")
            .arg("-c")
            .arg(script)
            .arg(f.model())
            .arg(f.out()),
    );
    assert_eq!(plain.stdout, other.stdout);
    assert!(f.requests().is_empty());
}

#[test]
fn fork_children_and_threads_read_correctly() {
    let f = Fixture::new();
    let script = r#"
import os, sys, threading
model, out = sys.argv[1], sys.argv[2]
w = os.path.join(model, "weights.bin")
pre = open(w, "rb")          # opened before fork: a real fd the child inherits
pids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        data = open(w, "rb").read()
        open(os.path.join(out, "child%d" % i), "wb").write(data)
        open(os.path.join(out, "inherited%d" % i), "wb").write(os.pread(pre.fileno(), 1 << 30, 0))
        os._exit(0)
    pids.append(pid)
for pid in pids:
    _, st = os.waitpid(pid, 0)
    assert st == 0, st
results = [None] * 8
def work(i):
    results[i] = open(w, "rb").read()
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
assert all(r == results[0] for r in results)
open(os.path.join(out, "threads"), "wb").write(results[0])
print(" ".join(str(p) for p in pids))
"#;
    let out = python(&f, script, &[&f.model(), &f.out()]);
    for i in 0..3 {
        for name in [format!("child{i}"), format!("inherited{i}")] {
            assert!(
                std::fs::read(f.out().join(&name)).unwrap() == f.weights,
                "{name} differs"
            );
        }
    }
    assert!(std::fs::read(f.out().join("threads")).unwrap() == f.weights);
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let reqs = f.requests();
    for pid in &pids {
        assert!(
            reqs.iter()
                .any(|r| r.starts_with(&format!("HELLO {pid} 2 "))),
            "fork child {pid} said HELLO: {reqs:?}"
        );
        assert!(
            reqs.contains(&format!("OPEN {pid} weights.bin")),
            "fork child {pid} opened: {reqs:?}"
        );
    }
}

/// A fake agent *binary* (Python) for the spawn path: it records its environment, serves
/// `weights.bin` from a memfd, PASSes everything else and exits when idle.
const PY_AGENT: &str = r#"#!/usr/bin/env python3
import fcntl, json, os, socket, sys, time
state = os.environ["FAKE_AGENT_STATE"]
content = open(os.environ["FAKE_AGENT_CONTENT"], "rb").read()
json.dump({"argv": sys.argv, "env": dict(os.environ)}, open(os.path.join(state, "agent.json"), "w"))
open(os.path.join(state, "agent.pid"), "w").write(str(os.getpid()))
mfd = os.memfd_create("w", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
os.write(mfd, content)
fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
time.sleep(0.3)   # make the preload wait for the socket
srv = socket.socket(socket.AF_UNIX)
srv.bind(os.environ["CONNECTOR_UDS_PATH"])
srv.listen(64)
srv.settimeout(20)
while True:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        break
    line = c.makefile("rb").readline().decode().rstrip("\n")
    with open(os.path.join(state, "requests"), "a") as fh:
        fh.write(line + "\n")
    if line.startswith("HELLO"):
        c.sendall(("OK %d %s\n" % (os.getpid(), os.path.join(state, "agent.log"))).encode())
    elif line == "READY":
        c.sendall(b"OK\n")
    elif line.startswith("OPEN") and line.split(" ", 2)[2] == "weights.bin":
        socket.send_fds(c, [("FD %d store\n" % len(content)).encode()], [mfd])
    else:
        c.sendall(b"PASS\n")
    c.close()
"#;

#[test]
fn main_role_spawns_agent_without_preload_env_and_second_main_is_secondary() {
    let f = Fixture::new();
    let state = f.root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let agent = f.root.path().join("fake-agent.py");
    std::fs::write(&agent, PY_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let content = f.out().join("content.bin");
    std::fs::write(&content, &f.weights).unwrap();
    let sock = f.root.path().join("spawned").join("agent.sock");
    let main = |f: &Fixture| {
        let mut c = f.cmd("cat");
        c.env("ENABLE_CONNECTOR", "1")
            .env("CONNECTOR_UDS_PATH", &sock)
            .env("OSSC_AGENT_BIN", &agent)
            .env("FAKE_AGENT_STATE", &state)
            .env("FAKE_AGENT_CONTENT", &content)
            .arg(f.model().join("weights.bin"));
        c
    };
    let started = Instant::now();
    let out = run_ok(&mut main(&f));
    let pid: i32 = std::fs::read_to_string(state.join("agent.pid"))
        .unwrap()
        .parse()
        .unwrap();
    let kill = KillOnDrop(pid);
    assert!(out.stdout == f.weights, "served through the spawned agent");
    assert!(started.elapsed() < Duration::from_secs(15));

    let info = std::fs::read_to_string(state.join("agent.json")).unwrap();
    assert!(
        info.contains("\"argv\": [") && info.contains("\"agent\"]"),
        "{info}"
    );
    assert!(!info.contains("\"LD_PRELOAD\""), "{info}");
    assert!(!info.contains("\"ENABLE_CONNECTOR\""), "{info}");
    assert!(info.contains("\"FAKE_AGENT_STATE\""), "{info}");
    // The agent's stdio went to the file next to the socket (created with its directory).
    assert!(f
        .root
        .path()
        .join("spawned/agent.sock.agent-stdio.log")
        .exists());

    // A second main process finds the agent alive and works as secondary.
    let out = run_ok(&mut main(&f));
    assert!(out.stdout == f.weights);
    let reqs = std::fs::read_to_string(state.join("requests")).unwrap();
    let hellos: Vec<&str> = reqs.lines().filter(|l| l.starts_with("HELLO")).collect();
    assert_eq!(hellos.len(), 2, "{reqs}");
    assert!(hellos[0].contains(" 1 cat"), "{reqs}");
    assert!(hellos[1].contains(" 2 cat"), "{reqs}");
    let log = std::fs::read_to_string(state.join("agent.log")).unwrap();
    assert!(log.contains("working as secondary"), "{log}");
    drop(kill);
}

struct KillOnDrop(i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill takes plain ints and touches no memory; the pid is the fake agent this
        // test started.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
    }
}

/// Child side of the micro-benchmark: `open`+`close` a path in a loop, print ns per pair.
#[test]
#[ignore = "run by bench_open_close_overhead in a child process"]
fn bench_child_open_close_loop() {
    let Ok(path) = std::env::var("OSSC_BENCH_PATH") else {
        return;
    };
    let iters: u32 = std::env::var("OSSC_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let c = std::ffi::CString::new(path).unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        // SAFETY: `c` is a NUL-terminated `CString` that outlives the call; open only reads it.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` was opened just above (checked `>= 0`) and is not used after this close.
        unsafe { libc::close(fd) };
    }
    let ns = start.elapsed().as_nanos() / u128::from(iters);
    println!("OSSC_BENCH ns_per_open_close={ns}");
}

/// `cargo test -p ossc-preload --test preload -- --ignored bench_open_close --nocapture`
#[test]
#[ignore = "micro-benchmark; prints numbers"]
fn bench_open_close_overhead() {
    let f = Fixture::new();
    let exe = std::env::current_exe().unwrap();
    let run = |label: &str, preload: bool, role: Option<&str>, path: &str, cwd: &Path| {
        let mut c = Command::new(&exe);
        c.args([
            "--ignored",
            "--exact",
            "bench_child_open_close_loop",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OSSC_BENCH_PATH", path)
        .env("MODEL_DIR", f.model())
        .env("CONNECTOR_UDS_PATH", f.sock())
        .env_remove("ENABLE_CONNECTOR")
        .env_remove("LD_PRELOAD")
        .current_dir(cwd);
        if preload {
            c.env("LD_PRELOAD", preload_so());
        }
        if let Some(r) = role {
            c.env("ENABLE_CONNECTOR", r);
        }
        let out = run_ok(&mut c);
        let text = String::from_utf8_lossy(&out.stdout);
        let ns: u64 = text
            .lines()
            .find_map(|l| l.split_once("OSSC_BENCH ns_per_open_close=").map(|x| x.1))
            .expect("bench output")
            .trim()
            .parse()
            .unwrap();
        println!("{label:<52} {ns:>6} ns per open+close");
        ns
    };
    let etc = Path::new("/etc");
    let base = run(
        "no LD_PRELOAD, /etc/hostname",
        false,
        None,
        "/etc/hostname",
        etc,
    );
    let off = run(
        "LD_PRELOAD, no ENABLE_CONNECTOR",
        true,
        None,
        "/etc/hostname",
        etc,
    );
    let abs = run(
        "LD_PRELOAD, role 2, absolute non-model path",
        true,
        Some("2"),
        "/etc/hostname",
        etc,
    );
    let rel = run(
        "LD_PRELOAD, role 2, relative non-model path",
        true,
        Some("2"),
        "hostname",
        etc,
    );
    assert!(base > 0 && off > 0 && abs > 0 && rel > 0);
    assert!(f.opens().is_empty());
}

/// The uid of `nobody`, the other user of the trust tests.
const NOBODY: u32 = 65534;

/// The Python interpreter itself, not a launcher script (such as a pyenv shim) whose helper
/// processes would load the library too.
fn real_python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = run_ok(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Python: read the file in argv[1]; print `ok <len>` and write the bytes to argv[2], or print
/// the errno.
const READ_OR_ERRNO: &str = r#"
import sys
try:
    data = open(sys.argv[1], "rb").read()
except OSError as e:
    print(e.errno)
else:
    open(sys.argv[2], "wb").write(data)
    print("ok", len(data))
"#;

#[test]
fn a_socket_directory_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("!!! SKIPPED: giving a directory to another user needs root");
        return;
    }
    let f = Fixture::new();
    // Another user created the socket directory first (as with /tmp/oss-connector) and a
    // socket in it answers with the right protocol.
    let squat = f.root.path().join("squat");
    std::fs::create_dir(&squat).unwrap();
    std::os::unix::fs::chown(&squat, Some(NOBODY), Some(NOBODY)).unwrap();
    let sock = squat.join("agent.sock");
    f.serve_at(&sock);
    let copy = f.out().join("copy.bin");
    let out = run_ok(
        f.cmd("python3")
            .env("CONNECTOR_UDS_PATH", &sock)
            .arg("-c")
            .arg(READ_OR_ERRNO)
            .arg(f.model().join("weights.bin"))
            .arg(&copy),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), libc::EIO.to_string(), "{stderr}");
    assert!(
        stderr.contains("refusing agent socket") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    assert!(f.requests().is_empty(), "{:?}", f.requests());
    // The same socket in a directory of ours is used.
    let ok = run_ok(
        f.cmd("python3")
            .arg("-c")
            .arg(READ_OR_ERRNO)
            .arg(f.model().join("weights.bin"))
            .arg(&copy),
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok "));
    assert!(std::fs::read(&copy).unwrap() == f.weights);
}

#[test]
fn an_agent_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("!!! SKIPPED: running a fake agent as another user needs root");
        return;
    }
    let f = Fixture::new();
    std::fs::set_permissions(f.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The fake agent runs as nobody in a directory of nobody's ...
    let theirs = f.root.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let agent = theirs.join("fake-agent.py");
    std::fs::write(&agent, PY_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let content = theirs.join("content.bin");
    std::fs::write(&content, &f.weights).unwrap();
    std::os::unix::fs::chown(&content, Some(NOBODY), Some(NOBODY)).unwrap();
    let their_sock = theirs.join("agent.sock");
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&agent)
            .uid(NOBODY)
            .gid(NOBODY)
            .env("FAKE_AGENT_STATE", &theirs)
            .env("FAKE_AGENT_CONTENT", &content)
            .env("CONNECTOR_UDS_PATH", &their_sock)
            .spawn()
            .unwrap()
    };
    let kill = KillOnDrop(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !their_sock.exists() {
        assert!(Instant::now() < deadline, "fake agent never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... and its socket ends up in a directory we trust (moved there, as a mount could).
    let ours = f.root.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let sock = ours.join("agent.sock");
    std::fs::rename(&their_sock, &sock).unwrap();
    let out = f
        .cmd("cat")
        .env("CONNECTOR_UDS_PATH", &sock)
        .arg(f.model().join("weights.bin"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no bytes from another user's agent");
    assert!(
        stderr.contains("runs as uid 65534") && stderr.contains("Input/output error"),
        "{stderr}"
    );
    // It saw connections (refused after connect) but never a request line.
    let reqs = std::fs::read_to_string(theirs.join("requests")).unwrap_or_default();
    assert!(
        reqs.lines().all(str::is_empty),
        "no request reached it: {reqs:?}"
    );
    drop(kill);
    let _ = child.wait();
}

#[test]
fn an_unsealed_memory_file_is_refused() {
    let f = Fixture::new();
    let copy = f.out().join("copy.bin");
    let out = python(&f, READ_OR_ERRNO, &[&f.model().join("unsealed.bin"), &copy]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        libc::EIO.to_string()
    );
    let log = std::fs::read_to_string(&f.shared.log_path).unwrap();
    assert!(log.contains("not sealed against writes"), "{log}");
}

#[test]
fn a_hung_agent_fails_ready_and_open_after_the_configured_deadlines() {
    let f = Fixture::new();
    f.shared.hang.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let out = run_ok(
        f.cmd(real_python().to_str().unwrap())
            .env("OSS_CONNECTOR_READY_TIMEOUT_SEC", "1")
            .env("OSS_CONNECTOR_OPEN_TIMEOUT_SEC", "1")
            .arg("-c")
            .arg(READ_OR_ERRNO)
            .arg(f.model().join("weights.bin"))
            .arg(f.out().join("copy.bin")),
    );
    let took = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        libc::EIO.to_string()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let log = std::fs::read_to_string(&f.shared.log_path).unwrap();
    assert!(
        log.contains("READY: no answer from the agent within 1 s"),
        "{log}"
    );
    assert!(
        log.contains("no answer within OSS_CONNECTOR_OPEN_TIMEOUT_SEC"),
        "{log}"
    );
}

#[test]
fn a_failed_agent_start_is_remembered_and_opens_fail_at_once() {
    let f = Fixture::new();
    let agent = f.root.path().join("broken-agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\necho 'error: OSS_REGION is required for endpoint http://store.test' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = f.root.path().join("spawned").join("agent.sock");
    let main = |prog: &str| {
        let mut c = f.cmd(prog);
        c.env("ENABLE_CONNECTOR", "1")
            .env("CONNECTOR_UDS_PATH", &sock)
            .env("OSSC_AGENT_BIN", &agent);
        c
    };
    let script = r#"
import os, sys
codes = []
for i in range(40):
    try:
        open(os.path.join(sys.argv[1], "f%02d.bin" % i), "rb").read()
        codes.append(0)
    except OSError as e:
        codes.append(e.errno)
print(" ".join(map(str, sorted(set(codes)))))
"#;
    let started = Instant::now();
    let out = run_ok(
        main(real_python().to_str().unwrap())
            .arg("-c")
            .arg(script)
            .arg(f.model()),
    );
    let python_took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        libc::EIO.to_string()
    );
    let quoted = stderr.matches("OSS_REGION is required").count();
    assert_eq!(quoted, 1, "one line quotes the agent: {stderr}");
    let errors = stderr.lines().filter(|l| l.contains(" ERROR ")).count();
    assert_eq!(errors, 1, "{stderr}");
    // Other processes within the cool-down don't start the agent again.
    let started = Instant::now();
    for _ in 0..5 {
        let out = main("cat")
            .arg(f.model().join("weights.bin"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("not starting it again") && stderr.contains("OSS_REGION is required"),
            "{stderr}"
        );
    }
    let cats_took = started.elapsed();
    let stdio =
        std::fs::read_to_string(f.root.path().join("spawned/agent.sock.agent-stdio.log")).unwrap();
    assert_eq!(
        stdio.matches("OSS_REGION").count(),
        1,
        "started once: {stdio}"
    );
    assert!(
        python_took < Duration::from_secs(8) && cats_took < Duration::from_secs(5),
        "python {python_took:?}, 5 cats {cats_took:?}"
    );
}

#[test]
fn placeholders_reached_by_another_name_are_served_or_refused() {
    let f = Fixture::new();
    let link = f.out().join("link.bin");
    std::os::unix::fs::symlink(f.model().join("weights.bin"), &link).unwrap();
    let script = r#"
import ctypes, errno, os, sys
link, placeholder, copy = sys.argv[1], sys.argv[2], sys.argv[3]
open(copy, "wb").write(open(link, "rb").read())
libc = ctypes.CDLL(None, use_errno=True)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(link.encode(), b"rb")
buf = ctypes.create_string_buffer(64)
n = libc.fread(buf, 1, 64, fp)
libc.fclose(fp)
print("fopen", buf.raw[:n] == open(copy, "rb").read(64))
for name, path in (("rdwr-link", link), ("rdwr", placeholder)):
    try:
        os.open(path, os.O_RDWR)
        print(name, "opened")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
fp = libc.fopen(placeholder.encode(), b"r+")
print("fopen-r+", "opened" if fp else errno.errorcode[ctypes.get_errno()])
"#;
    let copy = f.out().join("copy.bin");
    let out = python(&f, script, &[&link, &f.model().join("weights.bin"), &copy]);
    assert!(
        std::fs::read(&copy).unwrap() == f.weights,
        "served through the link"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "fopen True",
            "rdwr-link EROFS",
            "rdwr EROFS",
            "fopen-r+ EROFS"
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        f.opens().iter().all(|o| o == "weights.bin"),
        "{:?}",
        f.opens()
    );
    let log = std::fs::read_to_string(&f.shared.log_path).unwrap();
    assert!(
        log.contains("opening it for writing fails with EROFS"),
        "{log}"
    );
    // The placeholder was not touched.
    let meta = std::fs::metadata(f.model().join("weights.bin")).unwrap();
    assert_eq!((meta.len(), meta.blocks()), (WEIGHTS_SIZE as u64, 0));
}

#[test]
fn a_placeholder_reached_through_a_bind_mount_is_served() {
    if !is_root() {
        eprintln!("!!! SKIPPED: a bind mount needs root");
        return;
    }
    let f = Fixture::new();
    let bind = f.out().join("bind");
    std::fs::create_dir(&bind).unwrap();
    // In a private mount namespace, so nothing is left mounted on the host.
    let script = format!(
        "mount --bind {} {} && cat {}/weights.bin",
        f.model().display(),
        bind.display(),
        bind.display()
    );
    let out = run_ok(
        f.cmd("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script),
    );
    assert!(
        out.stdout == f.weights,
        "served through the bind mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(f.opens().contains(&"weights.bin".to_string()));
}

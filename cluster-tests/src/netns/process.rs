//! Running inside a host: code on a short-lived thread that joined the
//! host's namespace, and programs whose output is collected while they run
//! and which are killed (and reaped) when dropped.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{netns_path, NetnsError, Result, POLL};

/// After a process exits, how long to wait for its output pipes to close
/// (a daemon it started might keep them open).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Runs `f` on a fresh thread that has joined network namespace `ns`; the
/// thread ends with `f`, so no other code ever runs in that namespace by
/// accident. Sockets `f` creates belong to `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let handle = File::open(netns_path(ns))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd we hold open; it only changes
            // this (dedicated, about-to-exit) thread's network namespace.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Io(std::io::Error::last_os_error()));
            }
            drop(handle);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Output of a finished [`HostProcess`].
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl ProcessOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A process started inside a host; killed (and reaped) on drop.
pub struct HostProcess {
    label: String,
    child: Child,
    started: Instant,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for HostProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProcess")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl HostProcess {
    pub(super) fn spawn(label: String, mut cmd: Command) -> Result<HostProcess> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, stderr.clone()));
        }
        Ok(HostProcess {
            label,
            child,
            started: Instant::now(),
            stdout,
            stderr,
            readers,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit until `timeout` after the process *started*; then kills
    /// it and returns a Timeout error carrying what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<ProcessOutput> {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.output_so_far();
                return Err(NetnsError::Timeout(
                    format!(
                        "{} (stdout: {:?}, stderr: {:?})",
                        self.label,
                        String::from_utf8_lossy(&out.0),
                        String::from_utf8_lossy(&out.1)
                    ),
                    timeout,
                ));
            }
            std::thread::sleep(POLL);
        };
        let elapsed = self.started.elapsed();
        let drain = Instant::now() + OUTPUT_DRAIN;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < drain {
            std::thread::sleep(POLL);
        }
        let (stdout, stderr) = self.output_so_far();
        Ok(ProcessOutput {
            status,
            stdout,
            stderr,
            elapsed,
        })
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    fn output_so_far(&self) -> (Vec<u8>, Vec<u8>) {
        let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
        (take(&self.stdout), take(&self.stderr))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = into.lock() {
                v.extend_from_slice(&buf[..n]);
            }
        }
    })
}

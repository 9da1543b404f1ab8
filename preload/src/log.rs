//! Log lines `time level pid message`, appended to the agent's log file (stderr until HELLO
//! told us where it is).
//!
//! Design decision: a line is formatted into a stack buffer and written with one raw
//! `openat(O_APPEND)` + `write` + `close`, so logging never allocates, never holds a lock or an
//! fd across a fork, and never re-enters the hooks. `O_APPEND` writes of one short line are
//! atomic enough that concurrent processes don't interleave within a line.

use core::fmt;

use crate::proto::LineBuf;
use crate::real::sys_openat;
use crate::state;

/// Longest log line; longer messages are truncated.
const LINE_CAP: usize = 1024;
/// Mode of a log file we create.
const LOG_FILE_MODE: libc::mode_t = 0o644;
/// Seconds per day, for the UTC calendar conversion.
const SECS_PER_DAY: i64 = 86_400;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Per-open details; only with `OSSC_PRELOAD_DEBUG=1`.
    Debug,
    /// Lifecycle events.
    Info,
    /// Degraded but working.
    Warn,
    /// An open failed or the agent is unusable.
    Error,
}

impl Level {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Level::Debug => b"DEBUG",
            Level::Info => b"INFO",
            Level::Warn => b"WARN",
            Level::Error => b"ERROR",
        }
    }
}

/// Displays bytes as UTF-8, escaping invalid sequences as `\xNN`, without allocating.
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Converts days since 1970-01-01 to (year, month, day) (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time.
fn push_timestamp<const N: usize>(out: &mut LineBuf<N>, secs: i64, nanos: i64) {
    let (y, mo, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let sod = secs.rem_euclid(SECS_PER_DAY);
    out.push_padded(y.max(0) as u64, 4);
    out.push(b"-");
    out.push_padded(mo.into(), 2);
    out.push(b"-");
    out.push_padded(d.into(), 2);
    out.push(b"T");
    out.push_padded((sod / 3600) as u64, 2);
    out.push(b":");
    out.push_padded((sod / 60 % 60) as u64, 2);
    out.push(b":");
    out.push_padded((sod % 60) as u64, 2);
    out.push(b".");
    out.push_padded((nanos / 1_000_000) as u64, 3);
    out.push(b"Z");
}

/// Formats one line (without writing it).
fn format_line(
    level: Level,
    pid: u32,
    secs: i64,
    nanos: i64,
    args: fmt::Arguments<'_>,
) -> LineBuf<LINE_CAP> {
    let mut line = LineBuf::<LINE_CAP>::new();
    push_timestamp(&mut line, secs, nanos);
    line.push(b" ");
    line.push(level.as_bytes());
    line.push(b" ");
    line.push_u64(pid.into());
    line.push(b" ");
    let _ = fmt::write(&mut line, args);
    if line.overflowed() {
        // Keep room for the newline.
        let mut trimmed = LineBuf::<LINE_CAP>::new();
        trimmed.push(&line.as_bytes()[..LINE_CAP - 1]);
        line = trimmed;
    }
    line.push(b"\n");
    line
}

fn write_all(fd: libc::c_int, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: `data` is a live slice, readable for the `data.len()` bytes passed; a bad
        // `fd` comes back as errno.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if state::errno() == libc::EINTR {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

/// Writes one log line. Preserves errno.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if level == Level::Debug && !state::debug_enabled() {
        return;
    }
    let saved = state::errno();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a local `timespec`, writable for its whole size and the only memory
    // clock_gettime touches; CLOCK_REALTIME exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    // SAFETY: getpid takes no arguments, touches no memory and cannot fail.
    let pid = unsafe { libc::getpid() } as u32;
    let line = format_line(level, pid, ts.tv_sec, ts.tv_nsec, args);
    let mut wrote = false;
    if let Some(path) = state::LOG_PATH.get() {
        let mut cpath = LineBuf::<{ crate::path::PATH_CAP + 1 }>::new();
        cpath.push(path);
        cpath.push(b"\0");
        if !cpath.overflowed() {
            // SAFETY: `cpath` ends in the NUL pushed above (it did not overflow), the only
            // thing `sys_openat` requires.
            let fd = unsafe {
                sys_openat(
                    libc::AT_FDCWD,
                    cpath.as_bytes().as_ptr().cast(),
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
                    LOG_FILE_MODE,
                )
            };
            if fd >= 0 {
                write_all(fd, line.as_bytes());
                // SAFETY: `fd` was opened above (checked `>= 0`), is ours alone and is not used
                // after this close.
                unsafe { libc::close(fd) };
                wrote = true;
            }
        }
    }
    if !wrote {
        write_all(libc::STDERR_FILENO, line.as_bytes());
    }
    state::set_errno(saved);
}

/// `plog!(Level::Info, "fmt", args…)`: writes a log line (see [`log`]).
#[macro_export]
#[doc(hidden)]
macro_rules! plog {
    ($level:expr, $($arg:tt)*) => {
        $crate::log::log($level, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_conversion() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn line_format() {
        // 2024-02-29T12:34:56.789Z
        let secs = 19_782 * SECS_PER_DAY + 12 * 3600 + 34 * 60 + 56;
        let line = format_line(
            Level::Warn,
            4321,
            secs,
            789_000_000,
            format_args!("open {} failed: errno {}", Bytes(b"a\xffb"), 5),
        );
        assert_eq!(
            line.as_bytes(),
            b"2024-02-29T12:34:56.789Z WARN 4321 open a\\xffb failed: errno 5\n"
        );
    }

    #[test]
    fn long_lines_are_truncated_with_newline() {
        let long = "x".repeat(3 * LINE_CAP);
        let line = format_line(Level::Info, 1, 0, 0, format_args!("{long}"));
        assert_eq!(line.as_bytes().len(), LINE_CAP);
        assert_eq!(line.as_bytes().last(), Some(&b'\n'));
    }
}

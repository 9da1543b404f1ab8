//! Client side of the node-agent line protocol (see docs/dev/contracts.md, "node agent protocol").
//!
//! Design decision: requests are encoded into and replies parsed from fixed-size stack buffers
//! ([`LineBuf`]), so the hook path never allocates — it may run inside a `vfork` child or while
//! an allocator is itself initialising. Fields are separated by one space, the last field is
//! the rest of the line, and in paths `%` is written `%25` and newline `%0A`.

use core::fmt;

/// Largest reply line accepted from the agent (a log path or an error message plus header).
pub const REPLY_CAP: usize = 8192;
/// Largest request line (an `OPEN` of a `PATH_MAX` path, every byte escaped, plus header).
pub const REQUEST_CAP: usize = 3 * crate::path::PATH_CAP + 64;

/// A line being built in a fixed buffer. Overflow is remembered, never a panic: protocol
/// encoders check [`LineBuf::overflowed`], log lines are silently truncated.
pub struct LineBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuf<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// True if some write did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Appends raw bytes (as many as fit).
    pub fn push(&mut self, bytes: &[u8]) {
        let room = N - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.overflow = true;
        }
    }

    /// Appends a decimal number.
    pub fn push_u64(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// Appends a decimal number padded with zeros to `width` digits.
    pub fn push_padded(&mut self, v: u64, width: usize) {
        let mut digits = LineBuf::<20>::new();
        digits.push_u64(v);
        for _ in digits.len..width {
            self.push(b"0");
        }
        self.push(digits.as_bytes());
    }

    /// Appends a path field with `%`, newline and carriage return escaped (the agent strips a
    /// `\r` that ends a line, so a name ending in one must not end the line raw).
    pub fn push_escaped(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'%' => self.push(b"%25"),
                b'\n' => self.push(b"%0A"),
                b'\r' => self.push(b"%0D"),
                _ => self.push(&[b]),
            }
        }
    }
}

impl<const N: usize> fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// A malformed or unexpected reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

/// `HELLO <pid> <role> <comm>`.
pub fn encode_hello<const N: usize>(out: &mut LineBuf<N>, pid: u32, role: u8, comm: &[u8]) {
    out.push(b"HELLO ");
    out.push_u64(pid.into());
    out.push(b" ");
    out.push_u64(role.into());
    out.push(b" ");
    out.push_escaped(comm);
    out.push(b"\n");
}

/// `READY`.
pub fn encode_ready<const N: usize>(out: &mut LineBuf<N>) {
    out.push(b"READY\n");
}

/// `OPEN <pid> <path relative to MODEL_DIR>`.
pub fn encode_open<const N: usize>(out: &mut LineBuf<N>, pid: u32, rel: &[u8]) {
    out.push(b"OPEN ");
    out.push_u64(pid.into());
    out.push(b" ");
    out.push_escaped(rel);
    out.push(b"\n");
}

/// `IDENT <st_dev> <st_ino>`: which placeholder, if any, has this identity.
pub fn encode_ident<const N: usize>(out: &mut LineBuf<N>, dev: u64, ino: u64) {
    out.push(b"IDENT ");
    out.push_u64(dev);
    out.push(b" ");
    out.push_u64(ino);
    out.push(b"\n");
}

/// Reply to `IDENT`.
#[derive(Debug, PartialEq, Eq)]
pub enum IdentReply<'a> {
    /// `PLACEHOLDER <path below MODEL_DIR>` (escaped).
    Placeholder(&'a [u8]),
    /// `PASS`: not a placeholder of this agent.
    Pass,
    /// `ERR <errno> <msg>`.
    Err { errno: i32, msg: &'a [u8] },
}

/// Parses an `IDENT` reply.
pub fn parse_ident(line: &[u8]) -> Result<IdentReply<'_>, ProtoError> {
    let (head, rest) = split_field(trim_line(line));
    match head {
        b"PASS" => Ok(IdentReply::Pass),
        b"PLACEHOLDER" if !rest.is_empty() => Ok(IdentReply::Placeholder(rest)),
        b"ERR" => {
            let (errno, msg) = parse_err(rest);
            Ok(IdentReply::Err { errno, msg })
        }
        _ => Err(ProtoError("expected PLACEHOLDER, PASS or ERR")),
    }
}

/// Reply to `HELLO` or `READY`.
#[derive(Debug, PartialEq, Eq)]
pub enum OkReply<'a> {
    /// `OK` with the rest of the line (may be empty).
    Ok(&'a [u8]),
    /// `ERR <errno> <msg>`.
    Err { errno: i32, msg: &'a [u8] },
}

/// Reply to `OPEN`.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenReply<'a> {
    /// `FD <size> <source>`: an fd is attached.
    Fd { size: u64, source: &'a [u8] },
    /// `PASS`: open the real file.
    Pass,
    /// `ERR <errno> <msg>`.
    Err { errno: i32, msg: &'a [u8] },
}

/// Splits off the first space-separated field; the rest (possibly empty) is the last field.
fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Strips one trailing newline (and a `\r` before it).
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_err(rest: &[u8]) -> (i32, &[u8]) {
    let (code, msg) = split_field(rest);
    let errno = parse_u64(code)
        .and_then(|v| i32::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(libc::EIO);
    (errno, msg)
}

/// Parses `OK [rest]` / `ERR <errno> <msg>`.
pub fn parse_ok(line: &[u8]) -> Result<OkReply<'_>, ProtoError> {
    let (head, rest) = split_field(trim_line(line));
    match head {
        b"OK" => Ok(OkReply::Ok(rest)),
        b"ERR" => {
            let (errno, msg) = parse_err(rest);
            Ok(OkReply::Err { errno, msg })
        }
        _ => Err(ProtoError("expected OK or ERR")),
    }
}

/// Parses the `rest` of a HELLO `OK`: `<agent_pid> <log_path>` (escaped).
pub fn parse_hello_ok(rest: &[u8]) -> Result<(u32, &[u8]), ProtoError> {
    let (pid, log) = split_field(rest);
    let pid = parse_u64(pid)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(ProtoError("bad agent pid in HELLO reply"))?;
    Ok((pid, log))
}

/// Parses an `OPEN` reply.
pub fn parse_open(line: &[u8]) -> Result<OpenReply<'_>, ProtoError> {
    let (head, rest) = split_field(trim_line(line));
    match head {
        b"PASS" => Ok(OpenReply::Pass),
        b"FD" => {
            let (size, source) = split_field(rest);
            let size = parse_u64(size).ok_or(ProtoError("bad size in FD reply"))?;
            Ok(OpenReply::Fd { size, source })
        }
        b"ERR" => {
            let (errno, msg) = parse_err(rest);
            Ok(OpenReply::Err { errno, msg })
        }
        _ => Err(ProtoError("expected FD, PASS or ERR")),
    }
}

/// Decodes `%XX` escapes of a field into `out`; returns the decoded length, or `None` when it
/// does not fit. Malformed escapes are kept literally.
pub fn unescape_into(field: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut i = 0;
    while i < field.len() {
        let mut b = field[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(&h), Some(&l)) = (field.get(i + 1), field.get(i + 2)) {
                if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                    b = (h * 16 + l) as u8;
                    i += 2;
                }
            }
        }
        *out.get_mut(n)? = b;
        n += 1;
        i += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let mut l = LineBuf::<256>::new();
        encode_hello(&mut l, 42, 1, b"python3");
        assert_eq!(l.as_bytes(), b"HELLO 42 1 python3\n");
        let mut l = LineBuf::<256>::new();
        encode_ready(&mut l);
        assert_eq!(l.as_bytes(), b"READY\n");
        let mut l = LineBuf::<256>::new();
        encode_open(&mut l, 7, b"sub dir/100%\nx.safetensors");
        assert_eq!(l.as_bytes(), b"OPEN 7 sub dir/100%25%0Ax.safetensors\n");
        assert!(!l.overflowed());
    }

    #[test]
    fn ident_round_trip() {
        let mut l = LineBuf::<64>::new();
        encode_ident(&mut l, 2049, 77);
        assert_eq!(l.as_bytes(), b"IDENT 2049 77\n");
        assert_eq!(
            parse_ident(b"PLACEHOLDER sub/a%25b.bin\n"),
            Ok(IdentReply::Placeholder(b"sub/a%25b.bin"))
        );
        assert_eq!(parse_ident(b"PASS\n"), Ok(IdentReply::Pass));
        assert!(parse_ident(b"PLACEHOLDER\n").is_err());
        assert!(parse_ident(b"FD 1 x\n").is_err());
    }

    #[test]
    fn overflow_is_flagged() {
        let mut l = LineBuf::<8>::new();
        encode_open(&mut l, 1, b"abcdef");
        assert!(l.overflowed());
        assert_eq!(l.as_bytes().len(), 8);
    }

    #[test]
    fn numbers() {
        let mut l = LineBuf::<64>::new();
        l.push_u64(0);
        l.push(b" ");
        l.push_u64(u64::MAX);
        l.push(b" ");
        l.push_padded(7, 3);
        l.push(b" ");
        l.push_padded(1234, 2);
        assert_eq!(l.as_bytes(), b"0 18446744073709551615 007 1234");
    }

    #[test]
    fn parses_open_replies() {
        assert_eq!(
            parse_open(b"FD 1234 store\n"),
            Ok(OpenReply::Fd {
                size: 1234,
                source: b"store"
            })
        );
        assert_eq!(
            parse_open(b"FD 0\n"),
            Ok(OpenReply::Fd {
                size: 0,
                source: b""
            })
        );
        assert_eq!(parse_open(b"PASS\n"), Ok(OpenReply::Pass));
        assert_eq!(
            parse_open(b"ERR 5 CRC-64 mismatch on x\r\n"),
            Ok(OpenReply::Err {
                errno: 5,
                msg: b"CRC-64 mismatch on x"
            })
        );
        assert_eq!(
            parse_open(b"ERR nonsense\n"),
            Ok(OpenReply::Err {
                errno: libc::EIO,
                msg: b""
            })
        );
        assert!(parse_open(b"FD abc store\n").is_err());
        assert!(parse_open(b"FD 99999999999999999999999 store\n").is_err());
        assert!(parse_open(b"HUH\n").is_err());
    }

    #[test]
    fn parses_ok_replies() {
        assert_eq!(parse_ok(b"OK\n"), Ok(OkReply::Ok(b"")));
        let Ok(OkReply::Ok(rest)) = parse_ok(b"OK 99 /var/log/ossc%25.log\n") else {
            panic!("expected OK");
        };
        let (pid, log) = parse_hello_ok(rest).unwrap();
        assert_eq!(pid, 99);
        let mut out = [0u8; 64];
        let n = unescape_into(log, &mut out).unwrap();
        assert_eq!(&out[..n], b"/var/log/ossc%.log");
        assert_eq!(
            parse_ok(b"ERR 2 no such bucket\n"),
            Ok(OkReply::Err {
                errno: 2,
                msg: b"no such bucket"
            })
        );
        assert!(parse_ok(b"NOPE\n").is_err());
        assert!(parse_hello_ok(b"x /log").is_err());
    }

    #[test]
    fn unescape_edge_cases() {
        let mut out = [0u8; 16];
        let n = unescape_into(b"a%0Ab%2", &mut out).unwrap();
        assert_eq!(&out[..n], b"a\nb%2");
        let n = unescape_into(b"%zz%", &mut out).unwrap();
        assert_eq!(&out[..n], b"%zz%");
        let mut small = [0u8; 2];
        assert_eq!(unescape_into(b"abc", &mut small), None);
    }

    #[test]
    fn a_name_ending_in_a_carriage_return_is_escaped() {
        // The agent strips a `\r` before the newline; sent raw, `x\r` would name `x`.
        let mut line = LineBuf::<64>::new();
        encode_open(&mut line, 1, b"x\r");
        assert_eq!(line.as_bytes(), b"OPEN 1 x%0D\n");
    }
}

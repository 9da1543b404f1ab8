//! Replies: the agent's encoders and the clients' parsers, one pair per reply.
//!
//! Design decision: each client parser accepts exactly the replies its request can get (`OPEN`:
//! `FD`, `PASS`, `ERR`; `IDENT`: `PLACEHOLDER`, `PASS`, `ERR`; `HELLO`/`READY`: `OK`, `ERR`;
//! `STATUS`/`PREFETCH`/`EVICT`: `ERR`, else a JSON document); anything else is a [`ReplyError`].
//! An `ERR` whose errno is not a positive number reads as [`crate::FALLBACK_ERRNO`], so a client
//! always has an errno to fail with.

use core::fmt;

use crate::field::{parse_number, split_field, trim_line};
use crate::line::LineSink;
use crate::FALLBACK_ERRNO;

/// `OK <agent_pid> <log_path>`: the answer to `HELLO`.
pub fn encode_hello_ok<S: LineSink + ?Sized>(out: &mut S, agent_pid: u32, log_path: &[u8]) {
    out.push(b"OK ");
    out.push_u64(agent_pid.into());
    out.push(b" ");
    out.push_escaped(log_path);
    out.push(b"\n");
}

/// `OK`: the answer to `READY`.
pub fn encode_ok<S: LineSink + ?Sized>(out: &mut S) {
    out.push(b"OK\n");
}

/// `FD <size> <source>`: the answer to `OPEN` that comes with an fd.
pub fn encode_fd<S: LineSink + ?Sized>(out: &mut S, size: u64, source: &[u8]) {
    out.push(b"FD ");
    out.push_u64(size);
    out.push(b" ");
    out.push(source);
    out.push(b"\n");
}

/// `PASS`: open the real file (`OPEN`), or not a placeholder (`IDENT`).
pub fn encode_pass<S: LineSink + ?Sized>(out: &mut S) {
    out.push(b"PASS\n");
}

/// `ERR <errno> <message>`, the message kept on one line.
pub fn encode_err<S: LineSink + ?Sized>(out: &mut S, errno: i32, message: &[u8]) {
    out.push(b"ERR ");
    out.push_i64(errno.into());
    out.push(b" ");
    out.push_one_line(message);
    out.push(b"\n");
}

/// A JSON document as one line: the answer to `STATUS`, `PREFETCH` and `EVICT`.
pub fn encode_document<S: LineSink + ?Sized>(out: &mut S, json: &[u8]) {
    out.push_one_line(json);
    out.push(b"\n");
}

/// `PLACEHOLDER <path below MODEL_DIR>`: the answer to `IDENT` for one of the agent's inodes.
pub fn encode_placeholder<S: LineSink + ?Sized>(out: &mut S, rel: &[u8]) {
    out.push(b"PLACEHOLDER ");
    out.push_escaped(rel);
    out.push(b"\n");
}

/// A malformed or unexpected reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyError(pub &'static str);

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
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

/// Reply to `STATUS`, `PREFETCH` or `EVICT`.
#[derive(Debug, PartialEq, Eq)]
pub enum DocumentReply<'a> {
    /// One JSON document.
    Document(&'a [u8]),
    /// `ERR <errno> <msg>`.
    Err { errno: i32, msg: &'a [u8] },
}

/// The errno and message of an `ERR` line's rest.
fn parse_err(rest: &[u8]) -> (i32, &[u8]) {
    let (code, msg) = split_field(rest);
    let errno = parse_number::<i32>(code)
        .filter(|&v| v > 0)
        .unwrap_or(FALLBACK_ERRNO);
    (errno, msg)
}

/// Parses `OK [rest]` / `ERR <errno> <msg>`.
pub fn parse_ok(line: &[u8]) -> Result<OkReply<'_>, ReplyError> {
    let (head, rest) = split_field(trim_line(line));
    match head {
        b"OK" => Ok(OkReply::Ok(rest)),
        b"ERR" => {
            let (errno, msg) = parse_err(rest);
            Ok(OkReply::Err { errno, msg })
        }
        _ => Err(ReplyError("expected OK or ERR")),
    }
}

/// Parses the `rest` of a HELLO `OK`: `<agent_pid> <log_path>` (escaped).
pub fn parse_hello_ok(rest: &[u8]) -> Result<(u32, &[u8]), ReplyError> {
    let (pid, log) = split_field(rest);
    let pid = parse_number(pid).ok_or(ReplyError("bad agent pid in HELLO reply"))?;
    Ok((pid, log))
}

/// Parses an `OPEN` reply.
pub fn parse_open(line: &[u8]) -> Result<OpenReply<'_>, ReplyError> {
    let (head, rest) = split_field(trim_line(line));
    match head {
        b"PASS" => Ok(OpenReply::Pass),
        b"FD" => {
            let (size, source) = split_field(rest);
            let size = parse_number(size).ok_or(ReplyError("bad size in FD reply"))?;
            Ok(OpenReply::Fd { size, source })
        }
        b"ERR" => {
            let (errno, msg) = parse_err(rest);
            Ok(OpenReply::Err { errno, msg })
        }
        _ => Err(ReplyError("expected FD, PASS or ERR")),
    }
}

/// Parses an `IDENT` reply.
pub fn parse_ident(line: &[u8]) -> Result<IdentReply<'_>, ReplyError> {
    let (head, rest) = split_field(trim_line(line));
    match head {
        b"PASS" => Ok(IdentReply::Pass),
        b"PLACEHOLDER" if !rest.is_empty() => Ok(IdentReply::Placeholder(rest)),
        b"ERR" => {
            let (errno, msg) = parse_err(rest);
            Ok(IdentReply::Err { errno, msg })
        }
        _ => Err(ReplyError("expected PLACEHOLDER, PASS or ERR")),
    }
}

/// Parses the reply to `STATUS`, `PREFETCH` or `EVICT`: an `ERR` line, else the document (which
/// the caller then parses as JSON).
pub fn parse_document(line: &[u8]) -> DocumentReply<'_> {
    let line = trim_line(line);
    match split_field(line) {
        (b"ERR", rest) => {
            let (errno, msg) = parse_err(rest);
            DocumentReply::Err { errno, msg }
        }
        _ => DocumentReply::Document(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{unescape_into, LineBuf};

    #[test]
    fn encodes_replies() {
        let mut l = LineBuf::<128>::new();
        encode_hello_ok(&mut l, 9, b"/tmp/a%b");
        encode_ok(&mut l);
        encode_fd(&mut l, 10, b"cache");
        encode_pass(&mut l);
        encode_err(&mut l, 5, b"CRC-64\nmismatch");
        encode_err(&mut l, -1, b"");
        encode_document(&mut l, b"{\"a\":\r\n1}");
        encode_placeholder(&mut l, b"a/100%.bin");
        assert_eq!(
            l.as_bytes(),
            &b"OK 9 /tmp/a%25b\nOK\nFD 10 cache\nPASS\nERR 5 CRC-64 mismatch\nERR -1 \n\
               {\"a\":  1}\nPLACEHOLDER a/100%25.bin\n"[..]
        );
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
                errno: FALLBACK_ERRNO,
                msg: b""
            })
        );
        for errno in ["0", "-2", "2147483648"] {
            let line = [b"ERR ", errno.as_bytes(), b" x\n"].concat();
            assert_eq!(
                parse_open(&line),
                Ok(OpenReply::Err {
                    errno: FALLBACK_ERRNO,
                    msg: b"x"
                }),
                "{errno}"
            );
        }
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
    fn parses_ident_replies() {
        assert_eq!(
            parse_ident(b"PLACEHOLDER sub/a%25b.bin\n"),
            Ok(IdentReply::Placeholder(b"sub/a%25b.bin"))
        );
        assert_eq!(parse_ident(b"PASS\n"), Ok(IdentReply::Pass));
        assert!(parse_ident(b"PLACEHOLDER\n").is_err());
        assert!(parse_ident(b"FD 1 x\n").is_err());
    }

    #[test]
    fn parses_document_replies() {
        assert_eq!(
            parse_document(b"{\"files\": []}\n"),
            DocumentReply::Document(b"{\"files\": []}")
        );
        assert_eq!(
            parse_document(b"ERR 22 outside MODEL_DIR\n"),
            DocumentReply::Err {
                errno: 22,
                msg: b"outside MODEL_DIR"
            }
        );
        assert_eq!(
            parse_document(b"ERR\n"),
            DocumentReply::Err {
                errno: FALLBACK_ERRNO,
                msg: b""
            }
        );
        assert_eq!(
            parse_document(b"ERRATA\n"),
            DocumentReply::Document(b"ERRATA")
        );
        assert_eq!(parse_document(b""), DocumentReply::Document(b""));
    }
}

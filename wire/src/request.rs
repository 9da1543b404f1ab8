//! Requests: the encoders clients use (the hook: HELLO, READY, OPEN, IDENT; the `ossc` commands:
//! STATUS, PREFETCH, EVICT) and the agent's parser.
//!
//! Design decision: the parser borrows. Path fields come back as they were sent, escapes
//! included, and the caller decodes them ([`crate::Unescape`]) into whatever it owns; so the
//! grammar lives here while the agent keeps its `String`s.

use crate::field::{parse_number, split_field, split_once, trim_line};
use crate::line::LineSink;

/// `HELLO <pid> <role> <comm>`: registers `pid` as a user of the agent.
pub fn encode_hello<S: LineSink + ?Sized>(out: &mut S, pid: u32, role: u8, comm: &[u8]) {
    out.push(b"HELLO ");
    out.push_u64(pid.into());
    out.push(b" ");
    out.push_u64(role.into());
    out.push(b" ");
    out.push_escaped(comm);
    out.push(b"\n");
}

/// `READY`: waits until MODEL_DIR's mirror is complete.
pub fn encode_ready<S: LineSink + ?Sized>(out: &mut S) {
    out.push(b"READY\n");
}

/// `OPEN <pid> <path relative to MODEL_DIR>`.
pub fn encode_open<S: LineSink + ?Sized>(out: &mut S, pid: u32, rel: &[u8]) {
    out.push(b"OPEN ");
    out.push_u64(pid.into());
    out.push(b" ");
    out.push_escaped(rel);
    out.push(b"\n");
}

/// `IDENT <st_dev> <st_ino>`: which placeholder, if any, has this identity.
pub fn encode_ident<S: LineSink + ?Sized>(out: &mut S, dev: u64, ino: u64) {
    out.push(b"IDENT ");
    out.push_u64(dev);
    out.push(b" ");
    out.push_u64(ino);
    out.push(b"\n");
}

/// `STATUS`: one JSON document about the agent.
pub fn encode_status<S: LineSink + ?Sized>(out: &mut S) {
    out.push(b"STATUS\n");
}

/// `PREFETCH <0|1> <path>`: fetch every large file under `path`; with `wait`, answer once they
/// are all in memory or failed.
pub fn encode_prefetch<S: LineSink + ?Sized>(out: &mut S, wait: bool, path: &[u8]) {
    out.push(if wait { b"PREFETCH 1 " } else { b"PREFETCH 0 " });
    out.push_escaped(path);
    out.push(b"\n");
}

/// `EVICT <path>`: release the memory of every unreferenced large file under `path`.
pub fn encode_evict<S: LineSink + ?Sized>(out: &mut S, path: &[u8]) {
    out.push(b"EVICT ");
    out.push_escaped(path);
    out.push(b"\n");
}

/// One request as read, its path fields still escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestLine<'a> {
    Hello { pid: u32, role: u8, comm: &'a [u8] },
    Ready,
    Open { pid: u32, path: &'a [u8] },
    Status,
    Ident { dev: u64, ino: u64 },
    Prefetch { wait: bool, path: &'a [u8] },
    Evict { path: &'a [u8] },
}

/// Why a request line was refused: which part was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestError(pub &'static str);

/// Parses one request line (its newline, and a `\r` before it, are optional).
pub fn parse_request(line: &[u8]) -> Result<RequestLine<'_>, RequestError> {
    let line = trim_line(line);
    let (verb, rest) = split_field(line);
    let bad = RequestError;
    match verb {
        b"HELLO" => {
            let (pid, rest) = split_field(rest);
            let (role, comm) = split_field(rest);
            Ok(RequestLine::Hello {
                pid: parse_number(pid).ok_or(bad("pid"))?,
                role: parse_number(role).ok_or(bad("role"))?,
                comm,
            })
        }
        b"IDENT" => {
            let (dev, ino) = split_once(rest).ok_or(bad("IDENT needs dev and inode"))?;
            Ok(RequestLine::Ident {
                dev: parse_number(dev).ok_or(bad("dev"))?,
                ino: parse_number(ino).ok_or(bad("inode"))?,
            })
        }
        b"READY" if rest.is_empty() => Ok(RequestLine::Ready),
        b"STATUS" if rest.is_empty() => Ok(RequestLine::Status),
        b"OPEN" => {
            let (pid, path) = split_once(rest).ok_or(bad("OPEN needs pid and path"))?;
            Ok(RequestLine::Open {
                pid: parse_number(pid).ok_or(bad("pid"))?,
                path,
            })
        }
        b"PREFETCH" => {
            let (wait, path) = split_field(rest);
            let wait = match wait {
                b"0" => false,
                b"1" => true,
                _ => return Err(bad("PREFETCH needs 0 or 1 (wait) and a path")),
            };
            Ok(RequestLine::Prefetch { wait, path })
        }
        b"EVICT" => Ok(RequestLine::Evict { path: rest }),
        _ => Err(bad("unknown verb")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LineBuf;

    fn encoded(encode: impl FnOnce(&mut LineBuf<256>)) -> LineBuf<256> {
        let mut l = LineBuf::new();
        encode(&mut l);
        l
    }

    #[test]
    fn encodes_requests() {
        let l = encoded(|l| encode_hello(l, 42, 1, b"python3"));
        assert_eq!(l.as_bytes(), b"HELLO 42 1 python3\n");
        assert_eq!(encoded(encode_ready).as_bytes(), b"READY\n");
        let l = encoded(|l| encode_open(l, 7, b"sub dir/100%\nx.safetensors"));
        assert_eq!(l.as_bytes(), b"OPEN 7 sub dir/100%25%0Ax.safetensors\n");
        assert!(!l.overflowed());
        assert_eq!(
            encoded(|l| encode_ident(l, 2049, 77)).as_bytes(),
            b"IDENT 2049 77\n"
        );
        assert_eq!(encoded(encode_status).as_bytes(), b"STATUS\n");
        assert_eq!(
            encoded(|l| encode_prefetch(l, true, b"a b%")).as_bytes(),
            b"PREFETCH 1 a b%25\n"
        );
        assert_eq!(
            encoded(|l| encode_prefetch(l, false, b"")).as_bytes(),
            b"PREFETCH 0 \n"
        );
        assert_eq!(
            encoded(|l| encode_evict(l, b"oss://b/k\r")).as_bytes(),
            b"EVICT oss://b/k%0D\n"
        );
    }

    #[test]
    fn a_name_ending_in_a_carriage_return_is_escaped() {
        // A reader strips a `\r` before the newline; sent raw, `x\r` would name `x`.
        let l = encoded(|l| encode_open(l, 1, b"x\r"));
        assert_eq!(l.as_bytes(), b"OPEN 1 x%0D\n");
    }

    #[test]
    fn overflow_is_flagged() {
        let mut l = LineBuf::<8>::new();
        encode_open(&mut l, 1, b"abcdef");
        assert!(l.overflowed());
        assert_eq!(l.as_bytes().len(), 8);
    }

    #[test]
    fn requests_parse_with_fields_still_escaped() {
        assert_eq!(
            parse_request(b"HELLO 42 1 python3 -m vllm"),
            Ok(RequestLine::Hello {
                pid: 42,
                role: 1,
                comm: b"python3 -m vllm"
            })
        );
        assert_eq!(
            parse_request(b"HELLO 42 2"),
            Ok(RequestLine::Hello {
                pid: 42,
                role: 2,
                comm: b""
            })
        );
        assert_eq!(parse_request(b"READY\n"), Ok(RequestLine::Ready));
        assert_eq!(parse_request(b"READY "), Ok(RequestLine::Ready));
        assert_eq!(parse_request(b"STATUS\r\n"), Ok(RequestLine::Status));
        assert_eq!(
            parse_request(b"OPEN 7 dir/a b%25c%0Ad.bin"),
            Ok(RequestLine::Open {
                pid: 7,
                path: b"dir/a b%25c%0Ad.bin"
            })
        );
        assert_eq!(
            parse_request(b"OPEN 7 "),
            Ok(RequestLine::Open { pid: 7, path: b"" })
        );
        assert_eq!(
            parse_request(b"IDENT 2049 77"),
            Ok(RequestLine::Ident { dev: 2049, ino: 77 })
        );
        assert_eq!(
            parse_request(b"PREFETCH 0"),
            Ok(RequestLine::Prefetch {
                wait: false,
                path: b""
            })
        );
        assert_eq!(
            parse_request(b"EVICT x y"),
            Ok(RequestLine::Evict { path: b"x y" })
        );
    }

    #[test]
    fn refusals_name_the_part_that_was_wrong() {
        for (line, why) in [
            (&b""[..], "unknown verb"),
            (b"OPEN", "OPEN needs pid and path"),
            (b"OPEN x a", "pid"),
            (b"OPEN +1 a", "pid"),
            (b"HELLO x 1 c", "pid"),
            (b"HELLO 1 256 c", "role"),
            (b"HELLO 1", "role"),
            (b"READY now", "unknown verb"),
            (b"ready", "unknown verb"),
            (b"IDENT 1", "IDENT needs dev and inode"),
            (b"IDENT a 2", "dev"),
            (b"IDENT 1 2 3", "inode"),
            (b"PREFETCH", "PREFETCH needs 0 or 1 (wait) and a path"),
            (b"PREFETCH yes a", "PREFETCH needs 0 or 1 (wait) and a path"),
        ] {
            assert_eq!(parse_request(line), Err(RequestError(why)), "{line:?}");
        }
    }
}

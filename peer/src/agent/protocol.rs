//! The agent's side of the node-agent line protocol (docs/dev/contracts.md, "node agent
//! protocol"): owned [`Request`]s and [`Response`]s over the one grammar in [`ossc_wire`].
//!
//! Design decision: requests parse into a closed enum and responses are built only through
//! [`Response::line`], both by way of `ossc_wire`'s parser and encoders, so the bytes the agent
//! reads and writes are the bytes the hook's encoders and parsers are tested against. This file
//! only turns borrowed, escaped fields into `String`s and back: a decoded field that is not
//! UTF-8 is read lossily.

use ossc_wire::{RequestLine, Unescape};

/// Longest request line accepted (a path of `PATH_MAX` bytes, fully escaped,
/// plus the verb and pid).
pub const MAX_REQUEST_LINE: usize = ossc_wire::REQUEST_CAP;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        pid: u32,
        role: u8,
        comm: String,
    },
    Ready,
    Open {
        pid: u32,
        path: String,
    },
    Status,
    /// Which placeholder, if any, has this `(st_dev, st_ino)` (a client that opened a file by
    /// another name: a symlink or a bind mount).
    Ident {
        dev: u64,
        ino: u64,
    },
    /// Fetch every large file under `path` (operators preheating a node);
    /// with `wait`, answer once they are all in memory or failed.
    Prefetch {
        wait: bool,
        path: String,
    },
    /// Release the memory of every unreferenced large file under `path`.
    Evict {
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad request: {0}")]
pub struct ParseError(pub String);

impl Request {
    /// Parses one line (its newline, and a `\r` before it, are optional).
    pub fn parse(line: &str) -> Result<Request, ParseError> {
        let parsed = ossc_wire::parse_request(line.as_bytes()).map_err(|e| {
            // Only ASCII is trimmed, so the cut is on a character boundary.
            let line = &line[..ossc_wire::trim_line(line.as_bytes()).len()];
            ParseError(format!("{}: {line:?}", e.0))
        })?;
        Ok(match parsed {
            RequestLine::Hello { pid, role, comm } => Request::Hello {
                pid,
                role,
                comm: decode_bytes(comm),
            },
            RequestLine::Ready => Request::Ready,
            RequestLine::Open { pid, path } => Request::Open {
                pid,
                path: decode_bytes(path),
            },
            RequestLine::Status => Request::Status,
            RequestLine::Ident { dev, ino } => Request::Ident { dev, ino },
            RequestLine::Prefetch { wait, path } => Request::Prefetch {
                wait,
                path: decode_bytes(path),
            },
            RequestLine::Evict { path } => Request::Evict {
                path: decode_bytes(path),
            },
        })
    }

    /// The wire form, newline included (what a client sends; the `ossc` commands use it).
    pub fn line(&self) -> String {
        let mut out = Vec::new();
        match self {
            Request::Hello { pid, role, comm } => {
                ossc_wire::encode_hello(&mut out, *pid, *role, comm.as_bytes())
            }
            Request::Ready => ossc_wire::encode_ready(&mut out),
            Request::Open { pid, path } => ossc_wire::encode_open(&mut out, *pid, path.as_bytes()),
            Request::Status => ossc_wire::encode_status(&mut out),
            Request::Ident { dev, ino } => ossc_wire::encode_ident(&mut out, *dev, *ino),
            Request::Prefetch { wait, path } => {
                ossc_wire::encode_prefetch(&mut out, *wait, path.as_bytes())
            }
            Request::Evict { path } => ossc_wire::encode_evict(&mut out, path.as_bytes()),
        }
        lossy_string(out)
    }
}

/// The source of the bytes behind an `FD` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Store,
    Peer,
    Cache,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Store => "store",
            Source::Peer => "peer",
            Source::Cache => "cache",
        }
    }
}

/// One response line (the fd of `Fd` is attached by the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    HelloOk {
        agent_pid: u32,
        log_path: String,
    },
    Ok,
    Fd {
        size: u64,
        source: Source,
    },
    Pass,
    Err {
        errno: i32,
        message: String,
    },
    Status(String),
    /// Answer to `IDENT`: the placeholder's path below MODEL_DIR.
    Placeholder(String),
    /// A PREFETCH or EVICT report: one JSON document.
    Report(String),
}

impl Response {
    pub fn err(errno: i32, message: impl Into<String>) -> Response {
        Response::Err {
            errno,
            message: message.into(),
        }
    }

    /// The wire form, newline included.
    pub fn line(&self) -> String {
        let mut out = Vec::new();
        match self {
            Response::HelloOk {
                agent_pid,
                log_path,
            } => ossc_wire::encode_hello_ok(&mut out, *agent_pid, log_path.as_bytes()),
            Response::Ok => ossc_wire::encode_ok(&mut out),
            Response::Fd { size, source } => {
                ossc_wire::encode_fd(&mut out, *size, source.as_str().as_bytes())
            }
            Response::Pass => ossc_wire::encode_pass(&mut out),
            Response::Err { errno, message } => {
                ossc_wire::encode_err(&mut out, *errno, message.as_bytes())
            }
            Response::Status(json) | Response::Report(json) => {
                ossc_wire::encode_document(&mut out, json.as_bytes())
            }
            Response::Placeholder(rel) => ossc_wire::encode_placeholder(&mut out, rel.as_bytes()),
        }
        lossy_string(out)
    }
}

/// Decodes an escaped field; bytes that are not UTF-8 are replaced.
fn decode_bytes(field: &[u8]) -> String {
    lossy_string(Unescape::new(field).collect())
}

/// `bytes` as a `String`, replacing what is not UTF-8 (an encoded line of `String` fields is
/// always UTF-8: the encoders only insert or replace ASCII).
fn lossy_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(
            Request::parse("HELLO 42 1 python3 -m vllm").unwrap(),
            Request::Hello {
                pid: 42,
                role: 1,
                comm: "python3 -m vllm".into()
            }
        );
        assert_eq!(Request::parse("READY").unwrap(), Request::Ready);
        assert_eq!(Request::parse("STATUS\r").unwrap(), Request::Status);
        assert_eq!(
            Request::parse("OPEN 7 dir/a b%25c%0Ad.bin").unwrap(),
            Request::Open {
                pid: 7,
                path: "dir/a b%c\nd.bin".into()
            }
        );
        assert_eq!(
            Request::parse("IDENT 2049 77").unwrap(),
            Request::Ident { dev: 2049, ino: 77 }
        );
        assert_eq!(
            Response::Placeholder("a/100%.bin".into()).line(),
            "PLACEHOLDER a/100%25.bin\n"
        );
        assert_eq!(
            Request::parse("PREFETCH 1 dir/a%25b").unwrap(),
            Request::Prefetch {
                wait: true,
                path: "dir/a%b".into()
            }
        );
        assert_eq!(
            Request::parse("PREFETCH 0").unwrap(),
            Request::Prefetch {
                wait: false,
                path: String::new()
            }
        );
        assert_eq!(
            Request::parse("EVICT oss://b/p/x y").unwrap(),
            Request::Evict {
                path: "oss://b/p/x y".into()
            }
        );
        for bad in [
            "",
            "OPEN",
            "OPEN x a",
            "HELLO x 1 c",
            "READY now",
            "NOPE",
            "IDENT 1",
            "IDENT a 2",
            "PREFETCH",
            "PREFETCH yes a",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn responses_format() {
        assert_eq!(
            Response::Fd {
                size: 10,
                source: Source::Cache
            }
            .line(),
            "FD 10 cache\n"
        );
        assert_eq!(Response::Pass.line(), "PASS\n");
        assert_eq!(Response::Ok.line(), "OK\n");
        assert_eq!(
            Response::err(5, "CRC-64\nmismatch").line(),
            "ERR 5 CRC-64 mismatch\n"
        );
        assert_eq!(
            Response::HelloOk {
                agent_pid: 9,
                log_path: "/tmp/a%b".into()
            }
            .line(),
            "OK 9 /tmp/a%25b\n"
        );
    }

    #[test]
    fn field_escaping_round_trips() {
        for s in [
            "plain",
            "a%b",
            "new\nline",
            "%0A literal",
            "trailing%",
            "%2",
            "ünï",
            "%é%",
        ] {
            let evict = Request::Evict { path: s.into() };
            assert_eq!(Request::parse(&evict.line()).unwrap(), evict);
        }
    }

    #[test]
    fn carriage_returns_travel_escaped_both_ways() {
        assert_eq!(
            Request::parse("OPEN 1 x%0D").unwrap(),
            Request::Open {
                pid: 1,
                path: "x\r".into()
            }
        );
        let open = |path: &str| Request::Open {
            pid: 1,
            path: path.into(),
        };
        assert_eq!(open("a\r").line(), "OPEN 1 a%0D\n");
        assert_eq!(
            Request::parse(&open("a\r\n%").line()).unwrap(),
            open("a\r\n%")
        );
    }
}

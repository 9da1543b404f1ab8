//! The agent's line protocol (server side). See docs/dev/contracts.md, "node agent
//! protocol": one request line per connection, one response line (+ an fd).
//!
//! Design decision: requests parse into a closed enum and responses are built
//! only through [`Response::line`], so the wire format lives in this one file.
//! Fields are split on single spaces with the last field taking the rest of the
//! line; paths escape `%` as `%25` and newline as `%0A` (any other `%XX` is
//! decoded too, so a client that escapes more is still understood).

/// Longest request line accepted (a path of `PATH_MAX` bytes, fully escaped,
/// plus the verb and pid).
pub const MAX_REQUEST_LINE: usize = 3 * 4096 + 64;

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
    /// Parses one line (without its trailing newline).
    pub fn parse(line: &str) -> Result<Request, ParseError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let bad = |m: &str| ParseError(format!("{m}: {line:?}"));
        match verb {
            "HELLO" => {
                let mut it = rest.splitn(3, ' ');
                let pid = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("pid"))?;
                let role = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("role"))?;
                let comm = decode_field(it.next().unwrap_or(""));
                Ok(Request::Hello { pid, role, comm })
            }
            "IDENT" => {
                let (dev, ino) = rest
                    .split_once(' ')
                    .ok_or_else(|| bad("IDENT needs dev and inode"))?;
                Ok(Request::Ident {
                    dev: dev.parse().map_err(|_| bad("dev"))?,
                    ino: ino.parse().map_err(|_| bad("inode"))?,
                })
            }
            "READY" if rest.is_empty() => Ok(Request::Ready),
            "STATUS" if rest.is_empty() => Ok(Request::Status),
            "OPEN" => {
                let (pid, path) = rest
                    .split_once(' ')
                    .ok_or_else(|| bad("OPEN needs pid and path"))?;
                let pid = pid.parse().map_err(|_| bad("pid"))?;
                Ok(Request::Open {
                    pid,
                    path: decode_field(path),
                })
            }
            "PREFETCH" => {
                let (wait, path) = rest.split_once(' ').unwrap_or((rest, ""));
                let wait = match wait {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad("PREFETCH needs 0 or 1 (wait) and a path")),
                };
                Ok(Request::Prefetch {
                    wait,
                    path: decode_field(path),
                })
            }
            "EVICT" => Ok(Request::Evict {
                path: decode_field(rest),
            }),
            _ => Err(bad("unknown verb")),
        }
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
        match self {
            Response::HelloOk {
                agent_pid,
                log_path,
            } => {
                format!("OK {agent_pid} {}\n", encode_field(log_path))
            }
            Response::Ok => "OK\n".to_string(),
            Response::Fd { size, source } => format!("FD {size} {}\n", source.as_str()),
            Response::Pass => "PASS\n".to_string(),
            Response::Err { errno, message } => format!("ERR {errno} {}\n", one_line(message)),
            Response::Status(json) | Response::Report(json) => format!("{}\n", one_line(json)),
            Response::Placeholder(rel) => format!("PLACEHOLDER {}\n", encode_field(rel)),
        }
    }
}

/// `%` -> `%25`, newline -> `%0A`, carriage return -> `%0D` (a `\r` that ends a line is stripped).
pub fn encode_field(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
}

/// Inverse of [`encode_field`]; also decodes any other valid `%XX` escape.
pub fn decode_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Messages must stay on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
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
            assert_eq!(decode_field(&encode_field(s)), s);
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
        assert_eq!(encode_field("a\r"), "a%0D");
        assert_eq!(decode_field(&encode_field("a\r\n%")), "a\r\n%");
    }
}

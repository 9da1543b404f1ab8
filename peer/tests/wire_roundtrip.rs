//! The two sides of the node-agent protocol against each other: every request a client encodes
//! (the hook's fixed-buffer encoders, which `ossc_preload::proto` re-exports from `ossc_wire`,
//! and the `ossc` commands' [`Request::line`]) parses in the agent into the request meant, and
//! every [`Response`] the agent writes parses in the client into the reply meant. Paths are
//! hostile on purpose: spaces, `%`, escapes that look decoded, newlines, carriage returns,
//! unicode, and paths of `PATH_MAX` bytes.

use ossc_peer::agent::protocol::{Request, Response, Source, MAX_REQUEST_LINE};
use ossc_wire::{
    DocumentReply, IdentReply, LineBuf, OkReply, OpenReply, FALLBACK_ERRNO, PATH_MAX, REPLY_CAP,
    REQUEST_CAP,
};
use rand::{Rng, SeedableRng};

/// Paths no encoder may lose a byte of.
fn hostile_paths() -> Vec<Vec<u8>> {
    let mut paths: Vec<Vec<u8>> = [
        "",
        "model-00001-of-00002.safetensors",
        "sub dir/a b.bin",
        " leading and trailing ",
        "100%",
        "%",
        "%%",
        "%2",
        "%zz",
        "%25",
        "%0A literal",
        "%0d%0D",
        "new\nline",
        "ends in cr\r",
        "\r\n",
        "\n\n\r\r",
        "tab\there",
        "ünïcødé/模型/😀.bin",
        "%é%",
        "PASS",
        "ERR 5 x",
        "OPEN 1 x",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for fill in ["a", "%", "\n", "\r", "é"] {
        let n = PATH_MAX / fill.len();
        paths.push(fill.repeat(n).into_bytes());
    }
    paths
}

/// A path as the agent's `String` fields hold it.
fn text(path: &[u8]) -> String {
    String::from_utf8(path.to_vec()).expect("hostile paths are UTF-8")
}

fn parse_line(line: &[u8]) -> Request {
    let line = std::str::from_utf8(line).expect("request lines of UTF-8 paths are UTF-8");
    assert!(line.len() <= MAX_REQUEST_LINE, "{} bytes", line.len());
    let (body, end) = line.split_at(line.len() - 1);
    assert_eq!(end, "\n");
    assert!(!body.contains('\n'), "one line: {line:?}");
    Request::parse(body).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn every_request_the_hook_encodes_parses_into_the_request_meant() {
    // The hook's buffers: 256 bytes for HELLO (it reads at most 64 bytes of comm), 16 for READY, 64 for
    // IDENT, REQUEST_CAP for OPEN.
    let mut hello = LineBuf::<256>::new();
    ossc_wire::encode_hello(&mut hello, u32::MAX, 2, b"python3 -m vllm%\n");
    assert_eq!(
        parse_line(hello.as_bytes()),
        Request::Hello {
            pid: u32::MAX,
            role: 2,
            comm: "python3 -m vllm%\n".into()
        }
    );
    let mut ready = LineBuf::<16>::new();
    ossc_wire::encode_ready(&mut ready);
    assert_eq!(parse_line(ready.as_bytes()), Request::Ready);
    let mut ident = LineBuf::<64>::new();
    ossc_wire::encode_ident(&mut ident, u64::MAX, 0);
    assert!(!ident.overflowed());
    assert_eq!(
        parse_line(ident.as_bytes()),
        Request::Ident {
            dev: u64::MAX,
            ino: 0
        }
    );
    for path in hostile_paths() {
        let mut open = LineBuf::<REQUEST_CAP>::new();
        ossc_wire::encode_open(&mut open, u32::MAX, &path);
        assert!(!open.overflowed(), "{} bytes fit", path.len());
        let expected = Request::Open {
            pid: u32::MAX,
            path: text(&path),
        };
        assert_eq!(parse_line(open.as_bytes()), expected);
        assert_eq!(expected.line().as_bytes(), open.as_bytes());
    }
}

#[test]
fn every_request_the_commands_encode_parses_into_the_request_meant() {
    let mut requests = vec![Request::Status, Request::Ready];
    for path in hostile_paths() {
        let path = text(&path);
        requests.push(Request::Prefetch {
            wait: false,
            path: path.clone(),
        });
        requests.push(Request::Prefetch {
            wait: true,
            path: path.clone(),
        });
        requests.push(Request::Evict { path: path.clone() });
        requests.push(Request::Hello {
            pid: 1,
            role: 1,
            comm: path,
        });
    }
    for request in requests {
        assert_eq!(parse_line(request.line().as_bytes()), request);
    }
}

#[test]
fn a_request_that_does_not_fit_is_flagged_not_cut_silently() {
    // The hook's paths are at most PATH_MAX bytes; this one could not be sent escaped.
    let path = vec![b'%'; PATH_MAX + 64];
    let mut open = LineBuf::<REQUEST_CAP>::new();
    ossc_wire::encode_open(&mut open, u32::MAX, &path);
    assert!(open.overflowed());
    assert_eq!(open.as_bytes().len(), REQUEST_CAP);
    // The agent refuses what the hook would not send.
    assert_eq!(MAX_REQUEST_LINE, REQUEST_CAP);
}

#[test]
fn every_response_parses_into_the_reply_meant() {
    let ok = Response::Ok.line();
    assert_eq!(ossc_wire::parse_ok(ok.as_bytes()), Ok(OkReply::Ok(b"")));
    let pass = Response::Pass.line();
    assert_eq!(ossc_wire::parse_open(pass.as_bytes()), Ok(OpenReply::Pass));
    assert_eq!(
        ossc_wire::parse_ident(pass.as_bytes()),
        Ok(IdentReply::Pass)
    );
    for source in [Source::Store, Source::Peer, Source::Cache] {
        for size in [0, 1, u64::MAX] {
            let fd = Response::Fd { size, source }.line();
            assert_eq!(
                ossc_wire::parse_open(fd.as_bytes()),
                Ok(OpenReply::Fd {
                    size,
                    source: source.as_str().as_bytes()
                })
            );
        }
    }
    for errno in [
        libc::EIO,
        libc::ENOENT,
        libc::EEXIST,
        libc::EINVAL,
        i32::MAX,
    ] {
        let err = Response::err(errno, "CRC-64 mismatch\r\non x").line();
        let msg = &b"CRC-64 mismatch  on x"[..];
        assert_eq!(
            ossc_wire::parse_ok(err.as_bytes()),
            Ok(OkReply::Err { errno, msg })
        );
        assert_eq!(
            ossc_wire::parse_open(err.as_bytes()),
            Ok(OpenReply::Err { errno, msg })
        );
        assert_eq!(
            ossc_wire::parse_ident(err.as_bytes()),
            Ok(IdentReply::Err { errno, msg })
        );
        assert_eq!(
            ossc_wire::parse_document(err.as_bytes()),
            DocumentReply::Err { errno, msg }
        );
    }
    for errno in [0, -1, i32::MIN] {
        let err = Response::err(errno, "").line();
        assert_eq!(
            ossc_wire::parse_open(err.as_bytes()),
            Ok(OpenReply::Err {
                errno: FALLBACK_ERRNO,
                msg: b""
            }),
            "{err:?}"
        );
    }
    let json = serde_json::json!({"files": [{"path": "a\nb%", "bytes": 1}], "note": "x\r\ny"});
    for response in [
        Response::Status(json.to_string()),
        Response::Report(json.to_string()),
    ] {
        let line = response.line();
        let DocumentReply::Document(doc) = ossc_wire::parse_document(line.as_bytes()) else {
            panic!("{line:?}");
        };
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(doc).unwrap(),
            json
        );
    }
}

#[test]
fn every_path_the_agent_sends_reaches_the_hook_unchanged() {
    // The hook decodes into buffers of PATH_MAX bytes.
    let mut out = vec![0u8; PATH_MAX];
    for path in hostile_paths() {
        let log = Response::HelloOk {
            agent_pid: u32::MAX,
            log_path: text(&path),
        }
        .line();
        let Ok(OkReply::Ok(rest)) = ossc_wire::parse_ok(log.as_bytes()) else {
            panic!("{log:?}");
        };
        let (pid, field) = ossc_wire::parse_hello_ok(rest).unwrap();
        assert_eq!(pid, u32::MAX);
        let n = ossc_wire::unescape_into(field, &mut out).unwrap();
        assert_eq!(out[..n], path);

        let placeholder = Response::Placeholder(text(&path)).line();
        match ossc_wire::parse_ident(placeholder.as_bytes()) {
            Ok(IdentReply::Placeholder(field)) => {
                let n = ossc_wire::unescape_into(field, &mut out).unwrap();
                assert_eq!(out[..n], path);
            }
            // The agent names no placeholder by the empty path (that is MODEL_DIR itself).
            other => assert!(path.is_empty() && other.is_err(), "{other:?}"),
        }
    }
}

#[test]
fn a_placeholder_of_any_object_key_fits_the_hooks_reply_buffer() {
    // Object keys are at most 1024 bytes (S3 and OSS); even fully escaped, its placeholder
    // reply fits. A longer reply would be refused by the hook (EMSGSIZE, the open fails with
    // EIO), never cut.
    let worst = Response::Placeholder("%".repeat(1024)).line();
    assert!(worst.len() <= REPLY_CAP, "{} bytes", worst.len());
    let beyond = Response::Placeholder("%".repeat(PATH_MAX)).line();
    assert!(beyond.len() > REPLY_CAP);
}

#[test]
fn random_bytes_round_trip_both_ways() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let alphabet = b"%0aAdD \n\r/.\xc3\xa9\xff";
    for round in 0..2_000 {
        let len = if round % 100 == 0 {
            rng.gen_range(PATH_MAX - 8..=PATH_MAX + 8)
        } else {
            rng.gen_range(0..64)
        };
        let data: Vec<u8> = (0..len)
            .map(|_| {
                if rng.gen_bool(0.7) {
                    alphabet[rng.gen_range(0..alphabet.len())]
                } else {
                    rng.gen()
                }
            })
            .collect();
        ossc_peer::fuzzing::protocol_roundtrip(&data);
    }
}

//! Fuzz entry points for what the agent and the peer layer parse from others:
//! the agent's request line (any local process), object keys (the store),
//! `.ossc-manifest.json` (whoever can write MODEL_DIR) and the QUIC chunk
//! request (anyone who reaches the peer port); and the round trip of the
//! node-agent protocol between the hook's side and the agent's.
//!
//! Design decision: as in `ossc_core::fuzzing`, each entry point takes raw
//! bytes, never panics, and asserts the property that keeps the boundary
//! safe: whatever a client or the store names, the path it becomes stays
//! inside MODEL_DIR. The `fuzz/` crate calls these; the tests below replay
//! the committed corpora on stable.

use std::path::{Component, Path};

use prost::Message;

use crate::agent::keys::{classify_key, normalize_request_path, KeyKind, MANIFEST_NAME};
use crate::agent::manifest::Manifest;
use crate::agent::protocol::{Request, Response};
use ossc_wire::{DocumentReply, IdentReply, LineBuf, OkReply, OpenReply, RequestLine, Unescape};

/// A relative path that would be joined onto MODEL_DIR stays inside it:
/// only plain components.
fn assert_stays_inside(rel: &str, source: &dyn std::fmt::Debug) {
    let model_dir = Path::new("/models/m");
    let joined = model_dir.join(rel);
    assert!(
        joined.starts_with(model_dir),
        "{source:?}: {rel:?} leaves MODEL_DIR as {joined:?}"
    );
    for c in Path::new(rel).components() {
        assert!(
            matches!(c, Component::Normal(_)),
            "{source:?}: {rel:?} has component {c:?}"
        );
    }
}

/// One request line from a local client: parses or is refused, and an
/// OPEN's path normalises to somewhere inside MODEL_DIR or is refused.
pub fn agent_request(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Ok(Request::Open { path, .. }) = Request::parse(&line) {
        if let Some(rel) = normalize_request_path(&path) {
            assert_stays_inside(&rel, &line);
        }
    }
}

/// A listed object key under a prefix: what the mirror would create stays
/// inside MODEL_DIR. The first byte splits the prefix from the key.
pub fn object_key(data: &[u8]) {
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len().saturating_sub(1));
    let body = data.get(1..).unwrap_or_default();
    let (prefix, key) = body.split_at(split.min(body.len()));
    let (prefix, key) = (
        String::from_utf8_lossy(prefix),
        String::from_utf8_lossy(key),
    );
    match classify_key(&prefix, &key, u64::from(data.len() as u32 % 2)) {
        Ok(KeyKind::File(rel)) => assert_stays_inside(&rel, &key),
        Ok(KeyKind::Directory(rel)) if !rel.is_empty() => assert_stays_inside(&rel, &key),
        _ => {}
    }
}

/// A manifest found in MODEL_DIR: one that [`Manifest::parse`] accepts names
/// only paths inside MODEL_DIR (and never the manifest itself).
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
    };
    for rel in manifest.files.keys().chain(manifest.dirs.iter()) {
        assert_stays_inside(rel, rel);
        assert_ne!(rel, MANIFEST_NAME, "the manifest names itself");
    }
}

/// A QUIC chunk request body (after its length prefix): decoding is bounded
/// and never panics.
pub fn quic_request(data: &[u8]) {
    if let Ok(req) = ossc_proto::v1::QuicChunkRequest::decode(data) {
        let _ = req.encode_to_vec();
    }
}

/// Any path field a client sends (`HELLO`'s comm, `OPEN`, `PREFETCH`,
/// `EVICT`) reaches the agent unchanged, the agent's owned encoder writes the
/// bytes the hook's borrowed one does, and any field the agent sends
/// (`PLACEHOLDER`, `HELLO`'s log path, an `ERR` message, a document) reaches
/// the client's parser unchanged.
pub fn protocol_roundtrip(data: &[u8]) {
    requests_reach_the_agent(data);
    replies_reach_the_client(&String::from_utf8_lossy(data));
}

fn decoded(field: &[u8]) -> Vec<u8> {
    Unescape::new(field).collect()
}

fn requests_reach_the_agent(data: &[u8]) {
    // How the hook encodes a request with this path field, and the request the agent must read.
    type Case = (
        fn(&mut LineBuf<{ ossc_wire::REQUEST_CAP }>, &[u8]),
        fn(String) -> Request,
    );
    let cases: [Case; 4] = [
        (
            |l, f| ossc_wire::encode_hello(l, 42, 1, f),
            |comm| Request::Hello {
                pid: 42,
                role: 1,
                comm,
            },
        ),
        (
            |l, f| ossc_wire::encode_open(l, 42, f),
            |path| Request::Open { pid: 42, path },
        ),
        (
            |l, f| ossc_wire::encode_prefetch(l, true, f),
            |path| Request::Prefetch { wait: true, path },
        ),
        (ossc_wire::encode_evict, |path| Request::Evict { path }),
    ];
    for (encode, owned) in cases {
        let mut line = Box::new(LineBuf::new());
        encode(&mut line, data);
        if line.overflowed() {
            assert!(
                data.len() > ossc_wire::PATH_MAX,
                "a path of PATH_MAX bytes fits a request"
            );
            continue;
        }
        let bytes = line.as_bytes();
        assert_eq!(
            bytes.iter().position(|&b| b == b'\n'),
            Some(bytes.len() - 1)
        );
        let field = match ossc_wire::parse_request(bytes) {
            Ok(RequestLine::Hello {
                pid: 42,
                role: 1,
                comm,
            }) => comm,
            Ok(RequestLine::Open { pid: 42, path })
            | Ok(RequestLine::Prefetch { wait: true, path })
            | Ok(RequestLine::Evict { path }) => path,
            other => panic!("{bytes:?} parsed as {other:?}"),
        };
        assert_eq!(decoded(field), data);
        if let Ok(text) = std::str::from_utf8(data) {
            let line = std::str::from_utf8(bytes).expect("escaped UTF-8 stays UTF-8");
            let expected = owned(text.to_string());
            assert_eq!(Request::parse(line), Ok(expected.clone()));
            assert_eq!(expected.line(), line);
        }
    }
}

fn replies_reach_the_client(text: &str) {
    let placeholder = Response::Placeholder(text.to_string()).line();
    match ossc_wire::parse_ident(placeholder.as_bytes()) {
        Ok(IdentReply::Placeholder(field)) => assert_eq!(decoded(field), text.as_bytes()),
        other => assert!(
            text.is_empty() && other.is_err(),
            "{placeholder:?}: {other:?}"
        ),
    }

    let hello = Response::HelloOk {
        agent_pid: 7,
        log_path: text.to_string(),
    }
    .line();
    let Ok(OkReply::Ok(rest)) = ossc_wire::parse_ok(hello.as_bytes()) else {
        panic!("{hello:?} is not OK");
    };
    let (pid, log) = ossc_wire::parse_hello_ok(rest).expect("HELLO reply");
    assert_eq!((pid, decoded(log)), (7, text.as_bytes().to_vec()));

    let errno = i32::from(text.bytes().next().unwrap_or(0)) - 64;
    let err = Response::err(errno, text).line();
    let expected_errno = if errno > 0 {
        errno
    } else {
        ossc_wire::FALLBACK_ERRNO
    };
    let one_line = text.replace(['\n', '\r'], " ");
    let expected_msg = one_line.as_bytes();
    assert_eq!(
        ossc_wire::parse_open(err.as_bytes()),
        Ok(OpenReply::Err {
            errno: expected_errno,
            msg: expected_msg
        })
    );
    assert_eq!(
        ossc_wire::parse_document(err.as_bytes()),
        DocumentReply::Err {
            errno: expected_errno,
            msg: expected_msg
        }
    );

    let json = serde_json::Value::String(text.to_string());
    let report = Response::Report(json.to_string()).line();
    let DocumentReply::Document(doc) = ossc_wire::parse_document(report.as_bytes()) else {
        panic!("{report:?} is not a document");
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(doc).ok(),
        Some(json)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_core::fuzzing::replay_corpus;

    #[test]
    fn the_committed_corpora_replay_cleanly() {
        let here = env!("CARGO_MANIFEST_DIR");
        replay_corpus(here, "agent_request", agent_request);
        replay_corpus(here, "object_key", object_key);
        replay_corpus(here, "manifest", manifest);
        replay_corpus(here, "quic_request", quic_request);
        replay_corpus(here, "protocol_roundtrip", protocol_roundtrip);
    }

    #[test]
    #[should_panic(expected = "leaves MODEL_DIR")]
    fn the_inside_check_catches_an_escape() {
        assert_stays_inside("/etc/passwd", &"absolute");
    }
}

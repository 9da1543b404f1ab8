//! Fuzz entry points for what the agent and the peer layer parse from others:
//! the agent's request line (any local process), object keys (the store),
//! `.ossc-manifest.json` (whoever can write MODEL_DIR) and the QUIC chunk
//! request (anyone who reaches the peer port).
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
use crate::agent::protocol::Request;

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
    }

    #[test]
    #[should_panic(expected = "leaves MODEL_DIR")]
    fn the_inside_check_catches_an_escape() {
        assert_stays_inside("/etc/passwd", &"absolute");
    }
}

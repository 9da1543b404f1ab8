//! Fuzz entry points for the two parsers of the preload library: the agent's
//! reply lines and the lexical path normalisation every hooked `open` runs.
//!
//! Design decision: each entry point takes raw bytes, never panics, and checks
//! the invariant the hook relies on: a normalised path has only plain
//! components, the fast path (`is_normalized_absolute`) agrees with the slow
//! one, and a path found under MODEL_DIR is really below it. The `fuzz/` crate
//! calls these; the tests below replay the committed corpora on stable.

use crate::path::{is_normalized_absolute, relative_to, PathBuffer, PATH_CAP};
use crate::proto::{parse_hello_ok, parse_ok, parse_open, unescape_into, OkReply};

/// Reply lines from the agent (or from whoever holds the socket).
pub fn agent_reply(data: &[u8]) {
    if let Ok(OkReply::Ok(rest)) = parse_ok(data) {
        let _ = parse_hello_ok(rest);
    }
    let _ = parse_open(data);
    let mut out = [0u8; 256];
    if let Some(n) = unescape_into(data, &mut out) {
        assert!(n <= data.len() && n <= out.len());
    }
}

fn assert_normalised(p: &[u8]) {
    assert!(p.first() == Some(&b'/'), "{p:?} is not absolute");
    if p != b"/" {
        assert!(
            is_normalized_absolute(p),
            "{:?} is not normalised",
            String::from_utf8_lossy(p)
        );
    }
}

/// A base directory and a path as an application passes it to `open`: the
/// first byte splits them.
pub fn path_normalisation(data: &[u8]) {
    let split = usize::from(data.first().copied().unwrap_or(0));
    let body = data.get(1..).unwrap_or_default();
    let (base, rel) = body.split_at(split.min(body.len()));

    let mut path = Box::new(PathBuffer::new());
    let n = base.len().min(PATH_CAP);
    path.raw_mut()[..n].copy_from_slice(&base[..n]);
    if path.set_raw_len(n) {
        assert_normalised(path.as_bytes());
    }
    if path.push(rel) {
        assert_normalised(path.as_bytes());
        // The fast path must agree with the slow one: a path it calls
        // normalised comes out of normalisation unchanged.
        if is_normalized_absolute(rel) {
            let mut again = Box::new(PathBuffer::new());
            assert!(again.push(rel));
            assert_eq!(again.as_bytes(), rel);
        }
        let dir = b"/models/m";
        if let Some(below) = relative_to(path.as_bytes(), dir) {
            let p = path.as_bytes();
            assert!(p.starts_with(dir));
            assert!(below.is_empty() || p[dir.len()] == b'/');
            assert!(!below.split(|&b| b == b'/').any(|c| c == b".." || c == b"."));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir).expect("corpus directory");
        let files: Vec<_> = entries.map(|e| e.expect("corpus entry").path()).collect();
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        files
            .iter()
            .for_each(|f| run(&std::fs::read(f).expect("corpus file")));
    }

    #[test]
    fn the_committed_corpora_replay_cleanly() {
        replay("agent_reply", agent_reply);
        replay("path_normalisation", path_normalisation);
    }
}

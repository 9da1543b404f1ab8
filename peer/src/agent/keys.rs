//! Object-key validation: which keys may become paths under MODEL_DIR.
//!
//! Design decision: validation is purely lexical and runs on the key *relative
//! to the prefix*, before anything touches the filesystem. A key is accepted only
//! if every `/`-separated segment is a plain file name (non-empty, not `.` or
//! `..`, no NUL or control characters, at most `NAME_MAX` bytes), so joining it
//! onto MODEL_DIR can never leave MODEL_DIR. Symlinks that already exist inside
//! MODEL_DIR are handled later by the mirror (a symlinked component is a foreign
//! collision), not here. Keys that are both a file and a directory prefix
//! (`a` and `a/b`) are ambiguous on a POSIX filesystem: the file key is rejected,
//! the keys beneath it are kept.

use std::collections::BTreeSet;

/// Longest file-name segment Linux accepts (`NAME_MAX`).
pub const NAME_MAX_BYTES: usize = 255;

/// Name of the manifest the agent keeps in MODEL_DIR.
pub const MANIFEST_NAME: &str = ".ossc-manifest.json";

/// Why a key was not mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("key is not under the prefix")]
    OutsidePrefix,
    #[error("empty key")]
    Empty,
    #[error("absolute key")]
    Absolute,
    #[error("empty path segment")]
    EmptySegment,
    #[error("`.` or `..` path segment")]
    DotSegment,
    #[error("NUL or control character in key")]
    ControlChar,
    #[error("path segment longer than {NAME_MAX_BYTES} bytes")]
    SegmentTooLong,
    #[error("key collides with the agent's manifest file")]
    Reserved,
    #[error("key is both a file and a directory prefix of other keys")]
    FileAndDirectory,
    #[error("directory marker with a non-empty body")]
    NonEmptyDirectoryMarker,
}

/// What a listed key turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// A regular object at this relative path.
    File(String),
    /// A zero-byte "directory marker" (`a/b/`); the relative directory path,
    /// empty for the prefix itself.
    Directory(String),
}

/// Strips `prefix` from `key` and validates the rest (see the module note).
pub fn classify_key(prefix: &str, key: &str, size: u64) -> Result<KeyKind, KeyRejection> {
    let rel = key
        .strip_prefix(prefix)
        .ok_or(KeyRejection::OutsidePrefix)?;
    if rel.chars().any(|c| c.is_control()) {
        return Err(KeyRejection::ControlChar);
    }
    if rel.is_empty() {
        // The prefix itself, as a directory marker.
        return if size == 0 {
            Ok(KeyKind::Directory(String::new()))
        } else {
            Err(KeyRejection::NonEmptyDirectoryMarker)
        };
    }
    if let Some(dir) = rel.strip_suffix('/') {
        if size != 0 {
            return Err(KeyRejection::NonEmptyDirectoryMarker);
        }
        if dir.is_empty() {
            return Ok(KeyKind::Directory(String::new()));
        }
        validate_relative(dir)?;
        return Ok(KeyKind::Directory(dir.to_string()));
    }
    validate_relative(rel)?;
    if rel == MANIFEST_NAME {
        return Err(KeyRejection::Reserved);
    }
    Ok(KeyKind::File(rel.to_string()))
}

/// Validates a relative path made of plain segments.
pub fn validate_relative(rel: &str) -> Result<(), KeyRejection> {
    if rel.is_empty() {
        return Err(KeyRejection::Empty);
    }
    if rel.starts_with('/') {
        return Err(KeyRejection::Absolute);
    }
    if rel.chars().any(|c| c.is_control()) {
        return Err(KeyRejection::ControlChar);
    }
    for seg in rel.split('/') {
        if seg.is_empty() {
            return Err(KeyRejection::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(KeyRejection::DotSegment);
        }
        if seg.len() > NAME_MAX_BYTES {
            return Err(KeyRejection::SegmentTooLong);
        }
    }
    Ok(())
}

/// All proper ancestor directories of a relative path (`a/b/c` -> `a`, `a/b`).
pub fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// Returns the file paths that are also directory prefixes of other paths.
pub fn file_dir_conflicts<'a>(
    files: impl IntoIterator<Item = &'a str> + Clone,
    marker_dirs: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut dirs: BTreeSet<&str> = marker_dirs.into_iter().collect();
    for f in files.clone() {
        dirs.extend(ancestors(f));
    }
    files
        .into_iter()
        .filter(|f| dirs.contains(f))
        .map(str::to_string)
        .collect()
}

/// Normalizes a relative path sent by a client lexically: drops empty and `.`
/// segments and resolves `..` (MODEL_DIR holds no symlinks of ours). Returns
/// `None` for absolute paths, NUL bytes, or a path that climbs out of MODEL_DIR.
pub fn normalize_request_path(path: &str) -> Option<String> {
    if path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    Some(out.join("/"))
}

/// Compares names the way people (and vLLM's shard loader) expect:
/// digit runs compare by value, so `model-2` sorts before `model-10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let ord = na
                .len()
                .cmp(&nb.len())
                .then_with(|| na.cmp(nb))
                .then_with(|| (i - si).cmp(&(j - sj)));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            let ord = ab[i].cmp(&bb[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_validation_table() {
        let p = "models/qwen/";
        let cases: &[(&str, u64, Result<KeyKind, KeyRejection>)] = &[
            (
                "models/qwen/config.json",
                10,
                Ok(KeyKind::File("config.json".into())),
            ),
            (
                "models/qwen/sub/a.bin",
                10,
                Ok(KeyKind::File("sub/a.bin".into())),
            ),
            ("models/qwen/", 0, Ok(KeyKind::Directory(String::new()))),
            ("models/qwen/sub/", 0, Ok(KeyKind::Directory("sub".into()))),
            (
                "models/qwen/sub/",
                5,
                Err(KeyRejection::NonEmptyDirectoryMarker),
            ),
            ("models/other/x", 1, Err(KeyRejection::OutsidePrefix)),
            ("models/qwen//x", 1, Err(KeyRejection::Absolute)),
            ("models/qwen/a//b", 1, Err(KeyRejection::EmptySegment)),
            (
                "models/qwen/../etc/passwd",
                1,
                Err(KeyRejection::DotSegment),
            ),
            ("models/qwen/a/../../x", 1, Err(KeyRejection::DotSegment)),
            ("models/qwen/./x", 1, Err(KeyRejection::DotSegment)),
            ("models/qwen/..", 1, Err(KeyRejection::DotSegment)),
            ("models/qwen/a\0b", 1, Err(KeyRejection::ControlChar)),
            ("models/qwen/a\nb", 1, Err(KeyRejection::ControlChar)),
            ("models/qwen/a\x7fb", 1, Err(KeyRejection::ControlChar)),
            (
                "models/qwen/.ossc-manifest.json",
                1,
                Err(KeyRejection::Reserved),
            ),
            (
                "models/qwen/sub/.ossc-manifest.json",
                1,
                Ok(KeyKind::File("sub/.ossc-manifest.json".into())),
            ),
            (
                "models/qwen/..hidden",
                1,
                Ok(KeyKind::File("..hidden".into())),
            ),
            (
                "models/qwen/日本語.bin",
                1,
                Ok(KeyKind::File("日本語.bin".into())),
            ),
        ];
        for (key, size, want) in cases {
            assert_eq!(&classify_key(p, key, *size), want, "key {key:?}");
        }
        let long = format!("models/qwen/{}", "x".repeat(NAME_MAX_BYTES + 1));
        assert_eq!(classify_key(p, &long, 1), Err(KeyRejection::SegmentTooLong));
        let ok = format!("models/qwen/{}", "x".repeat(NAME_MAX_BYTES));
        assert!(classify_key(p, &ok, 1).is_ok());
        // Bucket root: an absolute-looking key is rejected.
        assert_eq!(
            classify_key("", "/etc/passwd", 1),
            Err(KeyRejection::Absolute)
        );
        assert_eq!(classify_key("", "a/b", 1), Ok(KeyKind::File("a/b".into())));
    }

    #[test]
    fn file_and_directory_conflicts_reject_only_the_file() {
        let files = ["a", "a/b", "c/d", "e", "f"];
        let conflicts = file_dir_conflicts(files.iter().copied(), ["f"]);
        let want: BTreeSet<String> = ["a".to_string(), "f".to_string()].into();
        assert_eq!(conflicts, want);
    }

    #[test]
    fn ancestors_lists_every_parent() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn request_paths_normalize() {
        assert_eq!(normalize_request_path("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize_request_path("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize_request_path("a/../../b"), None);
        assert_eq!(normalize_request_path("/a"), None);
        assert_eq!(normalize_request_path("").as_deref(), Some(""));
    }

    #[test]
    fn natural_sort_orders_shards_by_number() {
        let mut v = vec![
            "model-00010-of-00012.safetensors",
            "model-00002-of-00012.safetensors",
            "b10.bin",
            "b9.bin",
            "a.bin",
            "b09.bin",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "a.bin",
                "b9.bin",
                "b09.bin",
                "b10.bin",
                "model-00002-of-00012.safetensors",
                "model-00010-of-00012.safetensors",
            ]
        );
    }
}

//! Prefetch order: the order inference servers read a model.
//!
//! Design decision: shards named by any `*.index.json` (`weight_map` values,
//! relative to the index's directory) come first, in natural order, because
//! vLLM/SGLang load exactly those and skip unlisted ones; all other large files
//! follow in natural order of their paths. Indexes are read from the mirrored
//! small files on disk, so ordering costs no extra request.

use std::collections::BTreeSet;
use std::path::Path;

use super::keys::natural_cmp;
use crate::safe_dir::SafeDir;

/// Suffix of the shard index files that name the weight shards.
pub const INDEX_SUFFIX: &str = ".index.json";
/// Largest shard index read (real ones are well under 1 MiB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Orders `large` (relative paths) for prefetch. `index_files` are relative
/// paths of `*.index.json` files present under `model_dir`.
pub fn prefetch_order(model_dir: &Path, large: &[String], index_files: &[String]) -> Vec<String> {
    let known: BTreeSet<&str> = large.iter().map(String::as_str).collect();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for index in index_files {
        let dir = index.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        for shard in index_shards(model_dir, index) {
            let rel = if dir.is_empty() {
                shard
            } else {
                format!("{dir}/{shard}")
            };
            if known.contains(rel.as_str()) {
                listed.insert(rel);
            }
        }
    }
    let mut first: Vec<String> = listed.iter().cloned().collect();
    first.sort_by(|a, b| natural_cmp(a, b));
    let mut rest: Vec<String> = large
        .iter()
        .filter(|p| !listed.contains(*p))
        .cloned()
        .collect();
    rest.sort_by(|a, b| natural_cmp(a, b));
    first.extend(rest);
    first
}

/// The distinct `weight_map` values of one index file (empty if unreadable).
/// The file is read without following a symlink and at most
/// [`MAX_INDEX_BYTES`] of it: MODEL_DIR may hold what others put there.
fn index_shards(model_dir: &Path, index: &str) -> Vec<String> {
    let path = model_dir.join(index);
    let Ok(bytes) = SafeDir::open(model_dir).and_then(|d| d.read_bounded(index, MAX_INDEX_BYTES))
    else {
        tracing::warn!(path = %path.display(), "unreadable shard index; ignored for ordering");
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        tracing::warn!(path = %path.display(), "unparseable shard index; ignored for ordering");
        return Vec::new();
    };
    let mut out: BTreeSet<String> = BTreeSet::new();
    if let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) {
        out.extend(map.values().filter_map(|s| s.as_str()).map(str::to_string));
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_shards_first_then_natural_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"a":"m-10.safetensors","b":"m-2.safetensors","c":"m-2.safetensors","d":"missing.bin"}}"#,
        )
        .unwrap();
        let large: Vec<String> = [
            "z-1.bin",
            "sub/m-10.safetensors",
            "a-10.bin",
            "sub/m-2.safetensors",
            "a-9.bin",
            "sub/unlisted.safetensors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let order = prefetch_order(
            dir.path(),
            &large,
            &["sub/model.safetensors.index.json".to_string()],
        );
        assert_eq!(
            order,
            vec![
                "sub/m-2.safetensors",
                "sub/m-10.safetensors",
                "a-9.bin",
                "a-10.bin",
                "sub/unlisted.safetensors",
                "z-1.bin",
            ]
        );
        // No index: plain natural order, nothing lost.
        let order = prefetch_order(dir.path(), &large, &[]);
        assert_eq!(order.len(), large.len());
        assert_eq!(order[0], "a-9.bin");
    }

    #[test]
    fn a_symlinked_index_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let outside = dir.path().join("outside.index.json");
        std::fs::write(&outside, r#"{"weight_map":{"a":"b.bin"}}"#).unwrap();
        std::os::unix::fs::symlink(&outside, model.join("m.index.json")).unwrap();
        let large = vec!["a.bin".to_string(), "b.bin".to_string()];
        let order = prefetch_order(&model, &large, &["m.index.json".to_string()]);
        assert_eq!(
            order,
            vec!["a.bin", "b.bin"],
            "index outside MODEL_DIR was read"
        );
        std::fs::remove_file(model.join("m.index.json")).unwrap();
        std::fs::copy(&outside, model.join("m.index.json")).unwrap();
        let order = prefetch_order(&model, &large, &["m.index.json".to_string()]);
        assert_eq!(order, vec!["b.bin", "a.bin"]);
    }
}

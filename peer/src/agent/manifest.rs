//! `MODEL_DIR/.ossc-manifest.json`: what the agent created in MODEL_DIR.
//!
//! Design decision: the manifest lives in a directory other users may be able
//! to write, so it is input, not truth. [`Manifest::parse`] (a pure function)
//! accepts it only if every path in it passes the same validation as object
//! keys (`keys::validate_relative`: plain segments, no `..`, not absolute, no
//! control characters) and never names the manifest itself; one bad path
//! rejects the whole manifest, which then counts as missing (every existing
//! path is foreign: nothing is replaced or deleted). Reading is bounded by
//! [`MAX_MANIFEST_BYTES`] and never follows a symlink. Each small file's entry
//! records the CRC-64 of the bytes published, so a file is reused on restart
//! only if its content still hashes to it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::{self, MANIFEST_NAME};
use crate::safe_dir::{Replace, SafeDir};

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest read (about 200 bytes per entry: room for ~300k files).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Mode of the manifest file.
const MANIFEST_MODE: u32 = 0o644;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    Small,
    Placeholder,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub kind: ManifestKind,
    /// CRC-64/XZ of the published bytes (small files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64: Option<u64>,
}

/// What the agent created in MODEL_DIR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub bucket: String,
    pub prefix: String,
    pub files: BTreeMap<String, ManifestFile>,
    pub dirs: BTreeSet<String>,
}

/// Why a manifest was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported manifest version {0}")]
    Version(u32),
    #[error("manifest path {path:?} rejected: {reason}")]
    BadPath { path: String, reason: String },
}

/// Checks one path the manifest claims as the agent's.
fn validate_path(path: &str) -> Result<(), ManifestError> {
    let bad = |reason: String| ManifestError::BadPath {
        path: path.to_string(),
        reason,
    };
    keys::validate_relative(path).map_err(|r| bad(r.to_string()))?;
    if path == MANIFEST_NAME {
        return Err(bad("names the manifest itself".into()));
    }
    Ok(())
}

impl Manifest {
    pub fn path(model_dir: &Path) -> PathBuf {
        model_dir.join(MANIFEST_NAME)
    }

    /// Parses and validates a manifest (see the module note).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let m: Manifest = serde_json::from_slice(bytes)?;
        if m.version != MANIFEST_VERSION {
            return Err(ManifestError::Version(m.version));
        }
        for path in m.files.keys().chain(m.dirs.iter()) {
            validate_path(path)?;
        }
        Ok(m)
    }

    /// The previous manifest, or an empty one when it is missing, unreadable
    /// or rejected (then every existing path counts as foreign, the safe side).
    pub fn load(dir: &SafeDir) -> Manifest {
        let bytes = match dir.read_bounded(MANIFEST_NAME, MAX_MANIFEST_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Manifest::default(),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring unreadable {MANIFEST_NAME}");
                return Manifest::default();
            }
        };
        Manifest::parse(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring {MANIFEST_NAME}: nothing in MODEL_DIR counts as the agent's");
            Manifest::default()
        })
    }

    /// Writes the manifest atomically (unique temp file, fsync, rename).
    pub fn store(&self, dir: &SafeDir) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let bytes = serde_json::to_vec_pretty(self)?;
        let tmp = dir.create_temp("", MANIFEST_MODE)?;
        tmp.file().write_all_at(&bytes, 0)?;
        tmp.publish(
            MANIFEST_NAME,
            bytes.len() as u64,
            Some(ossc_core::crc64::crc64(&bytes)),
            Replace::Entry,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            bucket: "b".into(),
            ..Default::default()
        };
        m.files.insert(
            "a.bin".into(),
            ManifestFile {
                key: "a.bin".into(),
                size: 3,
                etag: "e".into(),
                kind: ManifestKind::Small,
                crc64: Some(7),
            },
        );
        m.dirs.insert("d".into());
        m
    }

    #[test]
    fn manifest_round_trips_and_missing_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SafeDir::open_root(tmp.path(), 0o755).unwrap();
        assert_eq!(Manifest::load(&dir), Manifest::default());
        let m = sample();
        m.store(&dir).unwrap();
        assert_eq!(Manifest::load(&dir), m);
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![MANIFEST_NAME], "no temp file left");
        std::fs::write(Manifest::path(tmp.path()), b"not json").unwrap();
        assert_eq!(
            Manifest::load(&dir),
            Manifest::default(),
            "unreadable = nothing is ours"
        );
    }

    #[test]
    fn manifests_naming_paths_outside_model_dir_are_rejected() {
        for bad in [
            "../victim",
            "/abs/victim",
            "a/../../victim",
            "a//b",
            "./a",
            "a/.",
            "",
            "a\nb",
            MANIFEST_NAME,
        ] {
            let mut m = sample();
            m.files.insert(
                bad.into(),
                ManifestFile {
                    key: "k".into(),
                    size: 1,
                    etag: "e".into(),
                    kind: ManifestKind::Small,
                    crc64: None,
                },
            );
            let bytes = serde_json::to_vec(&m).unwrap();
            assert!(
                matches!(Manifest::parse(&bytes), Err(ManifestError::BadPath { .. })),
                "file {bad:?} accepted"
            );
            let mut m = sample();
            m.dirs.insert(bad.into());
            let bytes = serde_json::to_vec(&m).unwrap();
            assert!(Manifest::parse(&bytes).is_err(), "dir {bad:?} accepted");
        }
        let good = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(Manifest::parse(&good).unwrap(), sample());
        let mut v2 = sample();
        v2.version = 2;
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v2).unwrap()),
            Err(ManifestError::Version(2))
        ));
    }

    #[test]
    fn oversized_and_symlinked_manifests_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SafeDir::open_root(&tmp.path().join("model"), 0o755).unwrap();
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(
            Manifest::parse(&big),
            Err(ManifestError::TooLarge)
        ));
        // A sparse file far over the cap is refused without reading it all.
        let f = std::fs::File::create(Manifest::path(&tmp.path().join("model"))).unwrap();
        f.set_len(1 << 30).unwrap();
        assert_eq!(Manifest::load(&dir), Manifest::default());
        // A symlink to a valid manifest elsewhere is not followed.
        let elsewhere = tmp.path().join("elsewhere.json");
        std::fs::write(&elsewhere, serde_json::to_vec(&sample()).unwrap()).unwrap();
        std::fs::remove_file(Manifest::path(&tmp.path().join("model"))).unwrap();
        std::os::unix::fs::symlink(&elsewhere, Manifest::path(&tmp.path().join("model"))).unwrap();
        assert_eq!(Manifest::load(&dir), Manifest::default());
    }

    #[test]
    fn old_manifests_without_crc_still_parse() {
        let json = br#"{"version":1,"bucket":"b","prefix":"p/","files":{"a":{"key":"p/a","size":1,"etag":"e","kind":"small"}},"dirs":[]}"#;
        let m = Manifest::parse(json).unwrap();
        assert_eq!(m.files["a"].crc64, None);
    }

    /// Property: whatever key or manifest path is accepted, joining it onto
    /// MODEL_DIR gives a path made only of plain names beneath MODEL_DIR, and
    /// the manifest accepts exactly the paths key validation accepts.
    #[test]
    fn accepted_paths_always_stay_inside_model_dir() {
        use rand::{Rng, SeedableRng};
        use std::path::Component;
        let pieces = [
            "..",
            ".",
            "",
            "a",
            "b.json",
            "日本",
            "\0",
            "\n",
            "\u{7f}",
            " ",
            "..a",
            "a..",
            "~",
            "\\..",
            "...",
            "%2e%2e",
            "\u{202e}",
            ".ossc-manifest.json",
            ".ossc-tmp.1",
        ];
        let long = "x".repeat(keys::NAME_MAX_BYTES + 1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0550_c0de);
        let model_dir = Path::new("/srv/model");
        let mut accepted = 0;
        for _ in 0..20_000 {
            let n = rng.gen_range(1..6);
            let mut segs: Vec<&str> = (0..n)
                .map(|_| {
                    if rng.gen_ratio(1, 50) {
                        long.as_str()
                    } else {
                        pieces[rng.gen_range(0..pieces.len())]
                    }
                })
                .collect();
            if rng.gen_ratio(1, 10) {
                segs.insert(0, "");
            }
            let rel = segs.join("/");
            let as_key = keys::classify_key("p/", &format!("p/{rel}"), 1);
            let as_manifest = validate_path(&rel);
            assert_eq!(
                matches!(as_key, Ok(keys::KeyKind::File(_))),
                as_manifest.is_ok(),
                "key and manifest validation disagree on {rel:?}"
            );
            if as_manifest.is_err() {
                continue;
            }
            accepted += 1;
            let joined = model_dir.join(&rel);
            assert!(joined.starts_with(model_dir), "{rel:?}");
            let below: Vec<Component> = joined
                .strip_prefix(model_dir)
                .unwrap()
                .components()
                .collect();
            assert_eq!(below.len(), rel.split('/').count(), "{rel:?}");
            assert!(
                below.iter().all(|c| matches!(c, Component::Normal(_))),
                "{rel:?} escapes: {below:?}"
            );
        }
        assert!(
            accepted > 1000,
            "the generator mostly produced rejects ({accepted})"
        );
    }
}

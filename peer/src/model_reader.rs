//! The demo's consumer: reads a model directory the way safetensors does
//! (`open`, `fstat`, `mmap(PROT_READ, MAP_PRIVATE)`, touch every page) and
//! verifies every file against a [`ModelManifest`].
//!
//! Load time and verification time are measured apart: the load phase only
//! touches every page (summing one word per 4 KiB page), so the reported GB/s
//! is what an inference server would see, not SHA-256's speed. Verification
//! then hashes every file and every safetensors tensor.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::synthetic_model::ModelManifest;

/// Page size used to touch mapped memory.
const PAGE: usize = 4096;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    pub files: usize,
    pub bytes: u64,
    pub load_seconds: f64,
    pub verify_seconds: f64,
    pub tensors_verified: usize,
}

impl LoadReport {
    pub fn load_gbps(&self) -> f64 {
        self.bytes as f64 / self.load_seconds.max(1e-9) / 1e9
    }
}

/// Opens `path`, maps it like safetensors does and touches every page.
fn map_and_touch(path: &Path) -> Result<Option<memmap2::Mmap>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the file is opened read-only and mapped private; nobody
    // truncates it while we hold the mapping (it is our own model copy).
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let mut acc = 0u64;
    for page in map.chunks(PAGE) {
        acc = acc.wrapping_add(u64::from(page[0]));
    }
    std::hint::black_box(acc);
    Ok(Some(map))
}

/// Loads every regular file directly in `dir` (no verification possible).
pub fn load_only(dir: &Path) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let t0 = Instant::now();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let map = map_and_touch(&entry.path())?;
        report.bytes += map.as_ref().map_or(0, |m| m.len() as u64);
        report.files += 1;
    }
    report.load_seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Opens and maps every file of `manifest` under `dir`, touching every page,
/// then verifies sizes, file digests and per-tensor digests.
pub fn load_and_verify(dir: &Path, manifest: &ModelManifest) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut maps = Vec::new();
    let t0 = Instant::now();
    for (name, digest) in &manifest.files {
        let map = map_and_touch(&dir.join(name))?;
        let len = map.as_ref().map_or(0, |m| m.len() as u64);
        ensure!(
            len == digest.size,
            "{name}: size {len}, expected {}",
            digest.size
        );
        report.bytes += len;
        report.files += 1;
        maps.push((name, map));
    }
    report.load_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    for (name, map) in &maps {
        let data: &[u8] = map.as_deref().unwrap_or(&[]);
        let want = &manifest.files[*name].sha256;
        let got = hex::encode(Sha256::digest(data));
        if &got != want {
            bail!("{name}: SHA-256 {got}, expected {want}: WRONG BYTES");
        }
        if name.ends_with(".safetensors") {
            report.tensors_verified += verify_tensors(name, data, manifest)?;
        }
    }
    report.verify_seconds = t1.elapsed().as_secs_f64();
    Ok(report)
}

fn verify_tensors(name: &str, data: &[u8], manifest: &ModelManifest) -> Result<usize> {
    ensure!(data.len() >= 8, "{name}: too short for safetensors");
    let n = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
    ensure!(
        8 + n <= data.len(),
        "{name}: header length {n} past end of file"
    );
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&data[8..8 + n]).with_context(|| format!("{name}: header"))?;
    let body = &data[8 + n..];
    let mut count = 0;
    for (tensor, meta) in &header {
        if tensor == "__metadata__" {
            continue;
        }
        let offs = meta["data_offsets"].as_array().context("data_offsets")?;
        let (a, b) = (
            offs[0].as_u64().context("offset")? as usize,
            offs[1].as_u64().context("offset")? as usize,
        );
        let want = &manifest
            .tensors
            .get(tensor)
            .context("tensor not in manifest")?
            .sha256;
        ensure!(
            &hex::encode(Sha256::digest(&body[a..b])) == want,
            "{name}: tensor {tensor} has wrong bytes"
        );
        count += 1;
    }
    Ok(count)
}

pub fn format_duration(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic_model::{generate, ModelSpec};

    #[test]
    fn verifies_a_good_model_and_rejects_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec {
            total_bytes: 32 << 20,
            shards: 2,
            seed: 1,
        };
        let m = generate(dir.path(), &spec).unwrap();
        let r = load_and_verify(dir.path(), &m).unwrap();
        assert_eq!(r.files, m.files.len());
        assert_eq!(r.tensors_verified, m.tensors.len());
        assert_eq!(r.bytes, m.files.values().map(|f| f.size).sum::<u64>());

        let shard = m
            .files
            .keys()
            .find(|k| k.ends_with(".safetensors"))
            .unwrap();
        let path = dir.path().join(shard);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let err = load_and_verify(dir.path(), &m).unwrap_err().to_string();
        assert!(err.contains("WRONG BYTES"), "{err}");
    }
}

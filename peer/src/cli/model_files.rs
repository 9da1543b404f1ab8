//! `ossc gen-model` and `ossc load-model`: the synthetic safetensors models
//! of the demo, the tests and the benchmarks, written and read back.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{model_reader, synthetic_model};

/// `ossc gen-model`: a model of `size_mb` MiB in `shards` shards under `dir`,
/// and its manifest.
pub fn gen_model(dir: &Path, size_mb: u64, shards: u32, seed: u64, manifest: &Path) -> Result<()> {
    let spec = synthetic_model::ModelSpec {
        total_bytes: size_mb << 20,
        shards,
        seed,
    };
    let m = synthetic_model::generate(dir, &spec)?;
    synthetic_model::write_manifest(manifest, &m)?;
    let bytes: u64 = m.files.values().map(|f| f.size).sum();
    println!(
        "generated {} files, {} tensors, {} bytes in {}",
        m.files.len(),
        m.tensors.len(),
        bytes,
        dir.display()
    );
    Ok(())
}

/// `ossc load-model`: reads `dir` like safetensors does, verified against
/// `manifest` when there is one.
pub fn load_model(dir: &Path, manifest: Option<PathBuf>, json: bool) -> Result<()> {
    let r = match manifest {
        Some(manifest) => {
            let m = synthetic_model::read_manifest(&manifest)?;
            model_reader::load_and_verify(dir, &m)?
        }
        None => model_reader::load_only(dir)?,
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "loaded {} files, {} bytes in {:.2} s ({:.2} GB/s); verified {} tensors in {:.2} s: all bytes exact",
            r.files, r.bytes, r.load_seconds, r.load_gbps(), r.tensors_verified, r.verify_seconds
        );
    }
    Ok(())
}

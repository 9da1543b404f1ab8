//! A synthetic, deterministic Hugging Face–style model directory for demos,
//! tests and benchmarks: sharded `*.safetensors` files with a
//! `model.safetensors.index.json`, plus `config.json`, `generation_config.json`
//! and tokenizer files, laid out the way vLLM and SGLang expect.
//!
//! Design: tensor bytes come from a seeded xorshift generator (several GB/s, so
//! a multi-GB model is generated in seconds) and every file's SHA-256 is
//! computed while writing, so consumers can verify what they read without a
//! second pass over the source. Only `F16` and `F32` dtypes are used so that
//! `safetensors.safe_open(..., framework="np")` can read every tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Hidden size of the generated layers. 1024 gives 2 MiB attention matrices
/// and 8 MiB MLP matrices in F16: big enough to look like real weights,
/// small enough that a few-hundred-MB model still has many layers.
const HIDDEN: u64 = 1024;
/// Vocabulary size of the embedding and LM head (Llama-2's).
const VOCAB: u64 = 32000;
/// MLP width multiplier (Llama uses ~2.7–4).
const MLP_MULT: u64 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Approximate total size of the weights in bytes.
    pub total_bytes: u64,
    /// Number of `*.safetensors` shards (at least 1).
    pub shards: u32,
    /// Seed for tensor contents.
    pub seed: u64,
}

/// What was generated: every file with its size and SHA-256, and every
/// tensor with its shard, dtype, shape and SHA-256 of its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ModelManifest {
    pub files: BTreeMap<String, FileDigest>,
    pub tensors: BTreeMap<String, TensorDigest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TensorDigest {
    pub shard: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub sha256: String,
}

struct TensorPlan {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
}

impl TensorPlan {
    fn elem_size(&self) -> u64 {
        match self.dtype {
            "F32" => 4,
            _ => 2,
        }
    }
    fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.elem_size()
    }
}

fn plan_tensors(total_bytes: u64) -> Vec<TensorPlan> {
    let mat = |name: String, rows: u64, cols: u64| TensorPlan {
        name,
        dtype: "F16",
        shape: vec![rows, cols],
    };
    let norm = |name: String| TensorPlan {
        name,
        dtype: "F32",
        shape: vec![HIDDEN],
    };
    let embed_bytes = VOCAB * HIDDEN * 2;
    let per_layer = 4 * HIDDEN * HIDDEN * 2 + 3 * HIDDEN * HIDDEN * MLP_MULT * 2 + 2 * HIDDEN * 4;
    let layers = total_bytes.saturating_sub(2 * embed_bytes) / per_layer;
    let layers = layers.max(1);

    let mut out = vec![mat("model.embed_tokens.weight".into(), VOCAB, HIDDEN)];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            out.push(mat(format!("{p}.self_attn.{proj}.weight"), HIDDEN, HIDDEN));
        }
        out.push(mat(
            format!("{p}.mlp.gate_proj.weight"),
            HIDDEN * MLP_MULT,
            HIDDEN,
        ));
        out.push(mat(
            format!("{p}.mlp.up_proj.weight"),
            HIDDEN * MLP_MULT,
            HIDDEN,
        ));
        out.push(mat(
            format!("{p}.mlp.down_proj.weight"),
            HIDDEN,
            HIDDEN * MLP_MULT,
        ));
        out.push(norm(format!("{p}.input_layernorm.weight")));
        out.push(norm(format!("{p}.post_attention_layernorm.weight")));
    }
    out.push(norm("model.norm.weight".into()));
    out.push(mat("lm_head.weight".into(), VOCAB, HIDDEN));
    out
}

/// xorshift64* stream: deterministic filler for tensor bytes.
struct Filler(u64);

impl Filler {
    fn new(seed: u64, name: &str) -> Self {
        // FNV-1a of the tensor name mixed with the seed: every tensor differs.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Filler(h | 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A writer that hashes everything it writes.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Shard file name in the Hugging Face convention.
pub fn shard_name(index: u32, count: u32) -> String {
    format!("model-{:05}-of-{:05}.safetensors", index + 1, count)
}

/// Generates the model into `dir` (created if missing) and returns its manifest.
pub fn generate(dir: &Path, spec: &ModelSpec) -> Result<ModelManifest> {
    ensure!(spec.shards >= 1, "a model needs at least one shard");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tensors = plan_tensors(spec.total_bytes);
    let total: u64 = tensors.iter().map(TensorPlan::bytes).sum();
    let shards = spec.shards.min(tensors.len() as u32);

    // Greedy split into `shards` groups of roughly equal bytes, in order.
    let target = total.div_ceil(u64::from(shards));
    let mut groups: Vec<Vec<&TensorPlan>> = vec![Vec::new()];
    let mut acc = 0;
    for (i, t) in tensors.iter().enumerate() {
        let remaining_groups = shards as usize - groups.len();
        let remaining_tensors = tensors.len() - i;
        let current_is_empty = groups.last().is_some_and(Vec::is_empty);
        // Start the next shard when this one is full, or when only just enough
        // tensors are left to give every remaining shard one.
        if remaining_groups > 0
            && !current_is_empty
            && (acc >= target || remaining_tensors <= remaining_groups)
        {
            groups.push(Vec::new());
            acc = 0;
        }
        groups.last_mut().expect("non-empty").push(t);
        acc += t.bytes();
    }
    let shards = groups.len() as u32;

    let mut manifest = ModelManifest::default();
    let mut weight_map = BTreeMap::new();
    let mut buf = vec![0u8; (HIDDEN * HIDDEN * MLP_MULT * 2) as usize];
    for (i, group) in groups.iter().enumerate() {
        let name = shard_name(i as u32, shards);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut off = 0u64;
        for t in group {
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.bytes()]}),
            );
            off += t.bytes();
            weight_map.insert(t.name.clone(), name.clone());
        }
        let mut header = serde_json::to_vec(&header)?;
        // safetensors pads the header with spaces to an 8-byte boundary.
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let path = dir.join(&name);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = HashingWriter {
            inner: BufWriter::with_capacity(4 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        };
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for t in group {
            let n = t.bytes() as usize;
            if buf.len() < n {
                buf.resize(n, 0);
            }
            Filler::new(spec.seed, &t.name).fill(&mut buf[..n]);
            w.write_all(&buf[..n])?;
            manifest.tensors.insert(
                t.name.clone(),
                TensorDigest {
                    shard: name.clone(),
                    dtype: t.dtype.to_string(),
                    shape: t.shape.clone(),
                    sha256: hex::encode(Sha256::digest(&buf[..n])),
                },
            );
        }
        w.flush()?;
        manifest.files.insert(
            name,
            FileDigest {
                size: w.written,
                sha256: hex::encode(w.hasher.finalize()),
            },
        );
    }

    let layers = tensors
        .iter()
        .filter(|t| t.name.ends_with("q_proj.weight"))
        .count();
    let small_files: Vec<(&str, serde_json::Value)> = vec![
        (
            "model.safetensors.index.json",
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        ),
        (
            "config.json",
            serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": HIDDEN, "intermediate_size": HIDDEN * MLP_MULT,
                "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 16,
                "vocab_size": VOCAB, "torch_dtype": "float16", "rms_norm_eps": 1e-5,
                "max_position_embeddings": 4096, "tie_word_embeddings": false
            }),
        ),
        (
            "generation_config.json",
            serde_json::json!({"bos_token_id": 1, "eos_token_id": 2, "do_sample": true, "temperature": 0.7}),
        ),
        (
            "tokenizer_config.json",
            serde_json::json!({"model_max_length": 4096, "tokenizer_class": "LlamaTokenizer",
                               "bos_token": "<s>", "eos_token": "</s>"}),
        ),
        (
            "special_tokens_map.json",
            serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
        ),
        ("tokenizer.json", synthetic_tokenizer()),
    ];
    for (name, value) in small_files {
        let bytes = serde_json::to_vec_pretty(&value)?;
        let path = dir.join(name);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        manifest.files.insert(
            name.to_string(),
            FileDigest {
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
        );
    }
    Ok(manifest)
}

/// A tokenizer.json with a byte-level vocabulary: a few hundred KB, the size
/// class of real tokenizers (big enough that OSS would gzip it, see field notes).
fn synthetic_tokenizer() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..VOCAB.min(8000))
        .map(|i| (format!("tok_{i:05x}"), serde_json::json!(i)))
        .collect();
    serde_json::json!({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}})
}

/// Loads a manifest written by [`write_manifest`].
pub fn read_manifest(path: &Path) -> Result<ModelManifest> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

pub fn write_manifest(path: &Path, manifest: &ModelManifest) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(manifest)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// All files of a manifest as paths under `dir`.
pub fn manifest_paths(dir: &Path, manifest: &ModelManifest) -> Vec<PathBuf> {
    manifest.files.keys().map(|k| dir.join(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_model_matches_its_manifest_and_is_valid_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec {
            total_bytes: 64 << 20,
            shards: 3,
            seed: 7,
        };
        let m = generate(dir.path(), &spec).unwrap();
        let shards: Vec<_> = m
            .files
            .keys()
            .filter(|k| k.ends_with(".safetensors"))
            .collect();
        assert_eq!(shards.len(), 3, "{shards:?}");
        for (name, d) in &m.files {
            let bytes = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(bytes.len() as u64, d.size, "{name}");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), d.sha256, "{name}");
        }
        // Parse one shard's header and check every tensor's bytes.
        let shard = shards[0];
        let bytes = std::fs::read(dir.path().join(shard)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let mut seen = 0;
        for (name, t) in header.as_object().unwrap() {
            if name == "__metadata__" {
                continue;
            }
            let offs = t["data_offsets"].as_array().unwrap();
            let (a, b) = (
                offs[0].as_u64().unwrap() as usize,
                offs[1].as_u64().unwrap() as usize,
            );
            let data = &bytes[8 + n + a..8 + n + b];
            assert_eq!(hex::encode(Sha256::digest(data)), m.tensors[name].sha256);
            seen += 1;
        }
        assert!(seen > 0);
        // Deterministic: the same spec gives the same bytes.
        let dir2 = tempfile::tempdir().unwrap();
        let m2 = generate(dir2.path(), &spec).unwrap();
        assert_eq!(m.files, m2.files);
    }
}

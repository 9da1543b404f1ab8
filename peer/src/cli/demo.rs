//! `ossc demo`: the README's first command.
//!
//! With no `OSS_PATH` in the environment it generates a sharded safetensors
//! model (cached between runs under the work directory), serves it from the
//! embedded object store on loopback with signed requests, and runs a consumer
//! process (`ossc load-model`, which opens and mmaps like safetensors) under
//! `LD_PRELOAD=libossc_preload.so ENABLE_CONNECTOR=1`. The consumer verifies
//! every file and tensor against the generator's SHA-256 manifest. The summary
//! gives end-to-end time and GB/s, and bytes by source from both the store's
//! counters and the agent's. With `OSS_PATH` set, the same consumer loads
//! from that store instead (no manifest, so only the agent's CRC-64 checks apply).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use ossc_core::sign::Credentials;
use ossc_core::store_server::{EmbeddedStore, FaultConfig, StoreServerConfig};

use crate::model_reader::LoadReport;
use crate::synthetic_model::{self, ModelSpec};

/// Credentials of the demo's embedded store (loopback only).
const DEMO_KEY_ID: &str = "ossc-demo-key";
const DEMO_SECRET: &str = "ossc-demo-secret";
const DEMO_REGION: &str = "cn-demo";
const DEMO_BUCKET: &str = "models";
const DEMO_PREFIX: &str = "demo-llama/";
/// Marks a work directory as the demo's, so it may be cleaned.
const MARKER: &str = ".ossc-demo";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Size of the generated model in MiB.
    #[arg(long, default_value_t = 768)]
    pub size_mb: u64,
    /// Number of safetensors shards.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Work directory (store root, MODEL_DIR, socket, logs).
    #[arg(long, default_value = "/tmp/ossc-demo")]
    pub workdir: PathBuf,
    /// How the model reaches the consumer: through the preload library (default)
    /// or `ossc cp` into a local directory first.
    #[arg(long, value_enum, default_value_t = Via::Preload)]
    pub via: Via,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Preload,
    Cp,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let exe = std::env::current_exe().context("locating the ossc binary")?;
    let preload = exe.with_file_name("libossc_preload.so");
    if args.via == Via::Preload {
        ensure!(
            preload.exists(),
            "{} not found: build it with `cargo build --release -p ossc-preload`",
            preload.display()
        );
    }
    let work = &args.workdir;
    prepare_workdir(work)?;

    if std::env::var_os("OSS_PATH").is_some_and(|v| !v.is_empty()) {
        println!("demo: OSS_PATH is set: loading from the real store");
        let report = run_consumer(&exe, &preload, work, None, &[], args.via)?;
        print_summary(&report, None, work);
        return Ok(());
    }

    let spec = ModelSpec {
        total_bytes: args.size_mb << 20,
        shards: args.shards,
        seed: 42,
    };
    let store_root = work.join("store");
    let manifest_path = work.join("manifest.json");
    let model_src = store_root.join(DEMO_BUCKET).join(DEMO_PREFIX);
    let spec_path = work.join("spec.json");
    let spec_json = serde_json::to_string(&spec)?;
    if std::fs::read_to_string(&spec_path).ok().as_deref() != Some(spec_json.as_str())
        || !manifest_path.exists()
    {
        println!(
            "demo: generating a {} MiB model with {} shards in {}",
            args.size_mb,
            args.shards,
            model_src.display()
        );
        let _ = std::fs::remove_dir_all(&store_root);
        let t = Instant::now();
        let m = synthetic_model::generate(&model_src, &spec)?;
        synthetic_model::write_manifest(&manifest_path, &m)?;
        std::fs::write(&spec_path, &spec_json)?;
        println!(
            "demo: generated {} files in {:.1} s",
            m.files.len(),
            t.elapsed().as_secs_f64()
        );
    }

    let runtime = tokio::runtime::Runtime::new()?;
    let store = runtime.block_on(async {
        EmbeddedStore::start(StoreServerConfig {
            root: store_root.clone(),
            addr: "127.0.0.1:0".parse().expect("valid address"),
            credentials: vec![Credentials {
                access_key_id: DEMO_KEY_ID.into(),
                access_key_secret: DEMO_SECRET.into(),
                security_token: None,
            }],
            region: DEMO_REGION.into(),
            faults: FaultConfig::default(),

            range_behavior: Default::default(),
            checksums: Default::default(),
        })
    })?;
    println!(
        "demo: embedded object store at {} (OSS V4 signatures required)",
        store.endpoint_url()
    );
    let env = [
        ("OSS_ENDPOINT", store.endpoint_url()),
        ("OSS_PATH", format!("oss://{DEMO_BUCKET}/{DEMO_PREFIX}")),
        ("OSS_ACCESS_KEY_ID", DEMO_KEY_ID.to_string()),
        ("OSS_ACCESS_KEY_SECRET", DEMO_SECRET.to_string()),
        ("OSS_REGION", DEMO_REGION.to_string()),
    ];
    let report = run_consumer(&exe, &preload, work, Some(&manifest_path), &env, args.via);
    let stats = store.stats();
    store.shutdown();
    drop(runtime);
    let report = report?;
    print_summary(&report, Some(&stats), work);
    Ok(())
}

fn prepare_workdir(work: &Path) -> Result<()> {
    if work.exists() && !work.join(MARKER).exists() && std::fs::read_dir(work)?.next().is_some() {
        bail!(
            "{} exists and is not a demo work directory; choose another --workdir",
            work.display()
        );
    }
    std::fs::create_dir_all(work)?;
    std::fs::write(work.join(MARKER), b"")?;
    for sub in ["model", "cp-model"] {
        let _ = std::fs::remove_dir_all(work.join(sub));
    }
    for f in ["connector.log", "audit.log"] {
        let _ = std::fs::remove_file(work.join(f));
    }
    let config = serde_json::json!({
        "logLevel": 1,
        "logPath": work.join("connector.log"),
        "auditPath": work.join("audit.log"),
        "expireTimeSec": 120,
        "prefetch": {"vcpus": 16, "workers": 16}
    });
    std::fs::write(
        work.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(())
}

struct DemoReport {
    load: LoadReport,
    wall_seconds: f64,
    agent: Option<serde_json::Value>,
}

fn run_consumer(
    exe: &Path,
    preload: &Path,
    work: &Path,
    manifest: Option<&Path>,
    env: &[(&str, String)],
    via: Via,
) -> Result<DemoReport> {
    let socket = work.join("agent").join("connector.sock");
    let model_dir = match via {
        Via::Preload => work.join("model"),
        Via::Cp => work.join("cp-model"),
    };
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.env("OSS_CONNECTOR_CONFIG", work.join("config.json"))
        .env("CONNECTOR_UDS_PATH", &socket)
        .env("MODEL_DIR", &model_dir)
        .env("OSSC_AGENT_BIN", exe)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if via == Via::Cp {
        let oss_path = env
            .iter()
            .find(|(k, _)| *k == "OSS_PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("OSS_PATH").ok())
            .context("OSS_PATH")?;
        let status = Command::new(exe)
            .args(["cp", &oss_path])
            .arg(&model_dir)
            .env("OSS_CONNECTOR_CONFIG", work.join("config.json"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()?;
        ensure!(status.success(), "ossc cp failed");
    } else {
        cmd.env("LD_PRELOAD", preload).env("ENABLE_CONNECTOR", "1");
    }
    cmd.arg("load-model").arg(&model_dir).arg("--json");
    match manifest {
        Some(m) => cmd.arg("--manifest").arg(m),
        None => cmd.arg("--no-manifest"),
    };
    let out = cmd.output().context("running the consumer")?;
    let wall_seconds = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "the consumer failed ({}):\n{}\nsee the connector log: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            work.join("connector.log").display()
        );
    }
    let load: LoadReport = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .unwrap_or_default(),
    )
    .context("parsing the consumer's report")?;
    let agent = (via == Via::Preload)
        .then(|| crate::agent::query_status(&socket).ok())
        .flatten();
    if let Some(pid) = agent.as_ref().and_then(|a| a["agent_pid"].as_i64()) {
        // SAFETY: plain kill(2) on the agent's pid, which it reported itself.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    Ok(DemoReport {
        load,
        wall_seconds,
        agent,
    })
}

fn print_summary(r: &DemoReport, stats: Option<&ossc_core::store_server::StoreStats>, work: &Path) {
    let gb = r.load.bytes as f64 / 1e9;
    println!("demo: ---------------------------------------------------------------");
    println!(
        "demo: {} files, {} bytes, end to end {:.2} s = {:.2} GB/s (agent start, listing, fetch, open, mmap, touch)",
        r.load.files, r.load.bytes, r.wall_seconds, gb / r.wall_seconds.max(1e-9)
    );
    println!(
        "demo: consumer's own load phase {:.2} s ({:.2} GB/s); verified {} tensors (SHA-256) in {:.2} s: all bytes exact",
        r.load.load_seconds, r.load.load_gbps(), r.load.tensors_verified, r.load.verify_seconds
    );
    if let Some(s) = stats {
        println!(
            "demo: store served {} object bytes in {} GETs",
            s.bytes_served, s.requests.get
        );
    }
    if let Some(a) = &r.agent {
        let b = &a["bytes_by_source"];
        println!(
            "demo: bytes by source: store {} (fetched from the object store), peer {} (from other nodes), \
             local {} (opens served from node memory that was already prefetched)",
            b["store"], b["peer"], b["local"]
        );
    }
    println!(
        "demo: logs: {} and {}",
        work.join("connector.log").display(),
        work.join("audit.log").display()
    );
}

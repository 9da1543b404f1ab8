//! Glue between the `ossc` subcommands and the libraries: building a store
//! client from the vendor's environment and config, logging setup, and
//! rendering agent status for people.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ossc_core::config::{ConnectorConfig, StoreSettings};
use ossc_core::fetch::{FetchConfig, FetchEngine};
use ossc_core::http_client::{HttpClientOptions, HttpObjectClient};
use ossc_core::object_client::{list_all, ObjectClient};
use ossc_core::sign::Credentials;
use ossc_core::store_server::{EmbeddedStore, FaultConfig, RangeBehavior, StoreServerConfig};

/// The agent socket when `CONNECTOR_UDS_PATH` is unset (the preload library uses the same).
pub use ossc_wire::DEFAULT_SOCKET_PATH as DEFAULT_SOCKET;

pub fn default_socket() -> PathBuf {
    std::env::var_os("CONNECTOR_UDS_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Human-facing commands log warnings and errors to stderr (`RUST_LOG` overrides).
pub fn init_logging_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The vendor config file (or defaults), with its warnings printed to stderr.
pub fn load_config() -> Result<ConnectorConfig> {
    let loaded = ConnectorConfig::load()?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.config)
}

/// Resolves the store from `OSS_*` env + config; `path` overrides `OSS_PATH`.
pub fn store_settings(config: &ConnectorConfig, path: Option<&str>) -> Result<StoreSettings> {
    let lookup = |name: &str| -> Option<String> {
        if name == "OSS_PATH" {
            if let Some(p) = path {
                return Some(p.to_string());
            }
        }
        std::env::var(name).ok()
    };
    let env = ossc_core::config::StoreEnv::from_lookup(lookup);
    Ok(ossc_core::config::resolve_store(&env, config)?)
}

/// The store client: credentials from the provider chain, TLS roots and
/// proxies from the environment (`ossc_core::credentials`, `ossc_core::transport`).
pub fn http_client(settings: &StoreSettings) -> Result<Arc<dyn ObjectClient>> {
    let client =
        HttpObjectClient::from_environment(settings, HttpClientOptions::default(), &|name| {
            std::env::var(name).ok()
        })
        .context("building the store client")?;
    Ok(Arc::new(client))
}

pub fn fetch_config(config: &ConnectorConfig) -> FetchConfig {
    FetchConfig {
        part_size: config.part_size_bytes,
        max_in_flight: config.max_in_flight(),
        ..FetchConfig::default()
    }
}

/// `ossc ls`: one line per object and a total, or with `json` one document
/// (`bucket`, `prefix`, `objects` with key/size/etag/last_modified, `count`, `bytes`).
pub async fn ls(path: &str, json: bool) -> Result<()> {
    let config = load_config()?;
    let settings = store_settings(&config, Some(path))?;
    let client = http_client(&settings)?;
    let objects = list_all(client.as_ref(), &settings.prefix)
        .await
        .with_context(|| format!("listing {path}"))?;
    let total: u64 = objects.iter().map(|o| o.size).sum();
    if json {
        let list: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "key": o.key,
                    "size": o.size,
                    "etag": o.etag,
                    "last_modified": o.last_modified.map(|t| {
                        chrono::DateTime::<chrono::Utc>::from(t)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    }),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "bucket": settings.bucket,
            "prefix": settings.prefix,
            "objects": list,
            "count": objects.len(),
            "bytes": total,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for o in &objects {
        println!("{:>14}  {}", o.size, o.key);
    }
    println!("{} objects, {} bytes", objects.len(), total);
    Ok(())
}

/// `ossc cp`: the summary line, or with `json` one document (the
/// [`CopySummary`](crate::cli::download::CopySummary) fields plus `gb_per_s` and
/// `bytes_by_source`).
pub async fn cp(path: &str, dest: &Path, show_progress: bool, json: bool) -> Result<()> {
    let config = load_config()?;
    let settings = store_settings(&config, Some(path))?;
    let engine = Arc::new(FetchEngine::new(
        http_client(&settings)?,
        fetch_config(&config),
    ));
    let summary =
        crate::cli::download::copy_prefix(engine, &settings.prefix, dest, show_progress).await?;
    if json {
        println!("{}", copy_summary_json(&summary));
    } else {
        println!("ossc cp: {summary}");
    }
    Ok(())
}

/// The `ossc cp --json` document. `ossc cp` reads only from the store.
pub fn copy_summary_json(summary: &crate::cli::download::CopySummary) -> serde_json::Value {
    serde_json::json!({
        "files": summary.files,
        "bytes": summary.bytes,
        "seconds": summary.seconds,
        "gb_per_s": summary.gbps(),
        "requests": summary.requests,
        "retries": summary.retries,
        "crc64_verified": summary.crc64_verified,
        "bytes_by_source": {"store": summary.bytes, "peer": 0},
    })
}

/// `ossc serve-store`: one argument per command-line flag.
#[allow(clippy::too_many_arguments)]
pub async fn serve_store(
    root: PathBuf,
    addr: SocketAddr,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    region: String,
    faults: Option<String>,
    range_behavior: &str,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<()> {
    let range_behavior = match range_behavior {
        "oss" => RangeBehavior::Oss,
        "s3" => RangeBehavior::S3,
        other => anyhow::bail!("--range-behavior must be oss or s3, not {other:?}"),
    };
    let credentials = match (access_key_id, access_key_secret) {
        (Some(id), Some(secret)) if !id.is_empty() => vec![Credentials {
            access_key_id: id,
            access_key_secret: secret,
            security_token: None,
        }],
        (None, None) => Vec::new(),
        _ => anyhow::bail!("--access-key-id and --access-key-secret go together"),
    };
    let faults: FaultConfig = match faults {
        Some(json) => serde_json::from_str(&json).context("parsing --faults")?,
        None => FaultConfig::default(),
    };
    let anonymous = credentials.is_empty();
    let config = StoreServerConfig {
        root: root.clone(),
        addr,
        credentials,
        region,
        faults,
        range_behavior,
        checksums: Default::default(),
    };
    let store = match tls {
        None => EmbeddedStore::start(config),
        Some((cert, key)) => {
            let identity = ossc_core::store_server::tls::TlsIdentity::from_files(&cert, &key)
                .context("reading --tls-cert/--tls-key")?;
            EmbeddedStore::start_tls(config, &identity)
        }
    }
    .with_context(|| format!("starting the store on {addr}"))?;
    eprintln!(
        "ossc serve-store: serving {} at {} ({}); stats at {}/_ossc/stats",
        root.display(),
        store.endpoint_url(),
        if anonymous {
            "anonymous"
        } else {
            "signed requests required"
        },
        store.endpoint_url()
    );
    tokio::signal::ctrl_c().await?;
    store.shutdown();
    Ok(())
}

pub fn query_status(socket: &Path) -> Result<serde_json::Value> {
    crate::agent::query_status(socket)
}

/// `1536` -> `1.5 KiB`: binary units, one decimal, plain bytes below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A person-readable rendering of the agent's STATUS JSON (sizes in binary
/// units; `--json` keeps exact byte counts).
pub fn render_status(status: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let size = |v: &serde_json::Value| human_bytes(num(v));
    let _ = writeln!(
        out,
        "agent pid {}  model_dir {}  resident {}  memory limit {}",
        status["agent_pid"],
        status["model_dir"].as_str().unwrap_or("?"),
        size(&status["bytes_resident"]),
        size(&status["memory_limit"])
    );
    if let Some(src) = status["bytes_by_source"].as_object() {
        let parts: Vec<String> = src
            .iter()
            .map(|(k, v)| format!("{k} {}", size(v)))
            .collect();
        let _ = writeln!(out, "bytes by source: {}", parts.join(", "));
    }
    if let Some(peers) = status["peers"].as_object() {
        let alive = peers["alive"].as_array().map_or(0, |a| a.len());
        let _ = writeln!(
            out,
            "peer layer: this node {}  alive {alive} (itself included)",
            peers["self"].as_str().unwrap_or("?")
        );
        for p in peers["peers"].as_array().into_iter().flatten() {
            let id = p["id"].as_str().unwrap_or("?");
            let idle = peers["peer_idle_upload_bytes_per_sec"][id]
                .as_u64()
                .map(|b| format!("  idle upload {:.1} MB/s", b as f64 / 1e6))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  peer {:<24} {:<5} sent {}  received {}  failures {}{idle}",
                id,
                if p["alive"] == true { "alive" } else { "dead" },
                size(&p["bytes_sent"]),
                size(&p["bytes_received"]),
                num(&p["failures"])
            );
        }
    }
    if let Some(files) = status["files"].as_array() {
        let _ = writeln!(
            out,
            "{:<48} {:>10} {:>7} {:<10} {:>8} {:>10} {:>10} {:>8}",
            "file", "size", "done", "state", "source", "from store", "from peers", "expires"
        );
        for f in files {
            let total = num(&f["size"]);
            let done = num(&f["bytes_done"]);
            let pct = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            let from = |k: &str| {
                f["fetched_from"][k]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), human_bytes)
            };
            let _ = writeln!(
                out,
                "{:<48} {:>10} {:>6.1}% {:<10} {:>8} {:>10} {:>10} {:>8}",
                f["path"].as_str().unwrap_or("?"),
                human_bytes(total),
                pct,
                f["state"].as_str().unwrap_or("?"),
                f["source"].as_str().unwrap_or("-"),
                from("store"),
                from("peer"),
                f["seconds_to_expiry"]
                    .as_u64()
                    .map(|s| format!("{s}s"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    out
}

/// A person-readable rendering of a PREFETCH report.
pub fn render_prefetch(report: &serde_json::Value) -> String {
    use std::fmt::Write;
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    if report["waited"] != true {
        let _ = writeln!(
            out,
            "prefetch started: {} large files, {} (ossc status shows progress)",
            num(&report["files"]),
            human_bytes(num(&report["bytes"]))
        );
        return out;
    }
    let _ = writeln!(
        out,
        "prefetched {} of {} large files, {} in {:.2} s ({:.2} GB/s); from store {}, from peers {}",
        num(&report["ready"]),
        num(&report["files"]),
        human_bytes(num(&report["ready_bytes"])),
        report["seconds"].as_f64().unwrap_or(0.0),
        report["gb_per_s"].as_f64().unwrap_or(0.0),
        human_bytes(num(&report["bytes_by_source"]["store"])),
        human_bytes(num(&report["bytes_by_source"]["peer"])),
    );
    for f in report["failed"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  failed: {}: {}",
            f["path"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("?")
        );
    }
    out
}

/// A person-readable rendering of an EVICT report.
pub fn render_evict(report: &serde_json::Value) -> String {
    use std::fmt::Write;
    let list = |k: &str| -> Vec<&str> {
        report[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect()
    };
    let mut out = String::new();
    let evicted = list("evicted");
    let _ = writeln!(
        out,
        "evicted {} files, {} freed",
        evicted.len(),
        human_bytes(report["bytes_freed"].as_u64().unwrap_or(0))
    );
    for (key, what) in [
        ("in_use", "in use, kept"),
        ("fetching", "still fetching, kept"),
    ] {
        for p in list(key) {
            let _ = writeln!(out, "  {what}: {p}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rendering_shows_the_peer_set_and_traffic() {
        let status = serde_json::json!({
            "agent_pid": 7,
            "model_dir": "/m",
            "bytes_resident": 10,
            "memory_limit": 3u64 << 30,
            "bytes_by_source": {"store": 4, "peer": 6, "local": 0},
            "peers": {
                "self": "10.0.0.1:7468",
                "alive": ["10.0.0.1:7468", "10.0.0.2:7468"],
                "peers": [{"id": "10.0.0.2:7468", "alive": true, "bytes_sent": 5,
                           "bytes_received": 6, "failures": 0}],
                "peer_idle_upload_bytes_per_sec": {"10.0.0.2:7468": 2500000}
            },
            "files": [{"path": "m.safetensors", "size": 1288490189u64, "bytes_done": 1288490189u64,
                       "state": "ready", "source": "peer",
                       "fetched_from": {"store": 4, "peer": 1288490185u64, "by_peer": {}}}]
        });
        let text = render_status(&status);
        assert!(
            text.contains("peer layer: this node 10.0.0.1:7468  alive 2"),
            "{text}"
        );
        assert!(
            text.contains("peer 10.0.0.2:7468            alive sent 5 B  received 6 B"),
            "{text}"
        );
        assert!(text.contains("idle upload 2.5 MB/s"), "{text}");
        assert!(
            text.contains("resident 10 B  memory limit 3.0 GiB"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("m.safetensors"))
            .expect("file row");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols[1..],
            ["1.2", "GiB", "100.0%", "ready", "peer", "4", "B", "1.2", "GiB", "-"],
            "{row}"
        );
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        let alone = render_status(&serde_json::json!({"peers": null, "files": []}));
        assert!(!alone.contains("peer layer"), "{alone}");
    }
}

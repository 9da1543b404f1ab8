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
pub const DEFAULT_SOCKET: &str = "/tmp/oss-connector/connector.sock";

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

pub fn http_client(settings: &StoreSettings) -> Result<Arc<dyn ObjectClient>> {
    let client = HttpObjectClient::new(settings, HttpClientOptions::default())
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

pub async fn ls(path: &str) -> Result<()> {
    let config = load_config()?;
    let settings = store_settings(&config, Some(path))?;
    let client = http_client(&settings)?;
    let objects = list_all(client.as_ref(), &settings.prefix).await?;
    let mut total = 0u64;
    for o in &objects {
        println!("{:>14}  {}", o.size, o.key);
        total += o.size;
    }
    println!("{} objects, {} bytes", objects.len(), total);
    Ok(())
}

pub async fn cp(path: &str, dest: &Path, show_progress: bool) -> Result<()> {
    let config = load_config()?;
    let settings = store_settings(&config, Some(path))?;
    let engine = Arc::new(FetchEngine::new(
        http_client(&settings)?,
        fetch_config(&config),
    ));
    let summary =
        crate::download::copy_prefix(engine, &settings.prefix, dest, show_progress).await?;
    println!("ossc cp: {summary}");
    Ok(())
}

pub async fn serve_store(
    root: PathBuf,
    addr: SocketAddr,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    region: String,
    faults: Option<String>,
    range_behavior: &str,
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
    let store = EmbeddedStore::start(StoreServerConfig {
        root: root.clone(),
        addr,
        credentials,
        region,
        faults,
        range_behavior,
        checksums: Default::default(),
    })
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

/// A person-readable rendering of the agent's STATUS JSON.
pub fn render_status(status: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "agent pid {}  model_dir {}  resident {} bytes  memory limit {} bytes",
        status["agent_pid"],
        status["model_dir"].as_str().unwrap_or("?"),
        num(&status["bytes_resident"]),
        num(&status["memory_limit"])
    );
    if let Some(src) = status["bytes_by_source"].as_object() {
        let parts: Vec<String> = src.iter().map(|(k, v)| format!("{k} {}", num(v))).collect();
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
                "  peer {:<24} {:<5} sent {} bytes  received {} bytes  failures {}{idle}",
                id,
                if p["alive"] == true { "alive" } else { "dead" },
                num(&p["bytes_sent"]),
                num(&p["bytes_received"]),
                num(&p["failures"])
            );
        }
    }
    if let Some(files) = status["files"].as_array() {
        let _ = writeln!(
            out,
            "{:<48} {:>14} {:>7} {:<10} {:>8} {:>14} {:>14} {:>10}",
            "file", "size", "done", "state", "source", "from store", "from peers", "expires"
        );
        for f in files {
            let size = num(&f["size"]);
            let done = num(&f["bytes_done"]);
            let pct = if size == 0 {
                100.0
            } else {
                done as f64 * 100.0 / size as f64
            };
            let from = |k: &str| {
                f["fetched_from"][k]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), |b| b.to_string())
            };
            let _ = writeln!(
                out,
                "{:<48} {:>14} {:>6.1}% {:<10} {:>8} {:>14} {:>14} {:>10}",
                f["path"].as_str().unwrap_or("?"),
                size,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rendering_shows_the_peer_set_and_traffic() {
        let status = serde_json::json!({
            "agent_pid": 7,
            "model_dir": "/m",
            "bytes_resident": 10,
            "memory_limit": 20,
            "bytes_by_source": {"store": 4, "peer": 6, "local": 0},
            "peers": {
                "self": "10.0.0.1:7468",
                "alive": ["10.0.0.1:7468", "10.0.0.2:7468"],
                "peers": [{"id": "10.0.0.2:7468", "alive": true, "bytes_sent": 5,
                           "bytes_received": 6, "failures": 0}],
                "peer_idle_upload_bytes_per_sec": {"10.0.0.2:7468": 2500000}
            },
            "files": [{"path": "m.safetensors", "size": 10, "bytes_done": 10, "state": "ready",
                       "source": "peer", "fetched_from": {"store": 4, "peer": 6, "by_peer": {}}}]
        });
        let text = render_status(&status);
        assert!(
            text.contains("peer layer: this node 10.0.0.1:7468  alive 2"),
            "{text}"
        );
        assert!(
            text.contains("peer 10.0.0.2:7468            alive sent 5 bytes  received 6 bytes"),
            "{text}"
        );
        assert!(text.contains("idle upload 2.5 MB/s"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("m.safetensors"))
            .expect("file row");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols[1..],
            ["10", "100.0%", "ready", "peer", "4", "6", "-"],
            "{row}"
        );
        let alone = render_status(&serde_json::json!({"peers": null, "files": []}));
        assert!(!alone.contains("peer layer"), "{alone}");
    }
}

//! Prometheus exposition of the node agent's state.
//!
//! Design: the exporter reads the agent's own `STATUS` over its Unix socket
//! and renders it as Prometheus text format (version 0.0.4). The agent's
//! internals stay private, and the same numbers feed `ossc status` and
//! `/metrics`, so the two can never disagree. It is off by default: several
//! agents may run side by side on one node (`CONNECTOR_UDS_PATH`), and each
//! needs its own port. Enable it with `ossc agent --metrics-listen ADDR` or
//! `OSS_CONNECTOR_METRICS_LISTEN=ADDR`.
//! Metric names are documented constants in [`render`].

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

/// Renders an agent STATUS document as Prometheus text.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let by_source = ["store", "peer", "local"]
        .iter()
        .map(|s| {
            (
                format!("{{source=\"{s}\"}}"),
                num(&status["bytes_by_source"][s]),
            )
        })
        .collect();
    metric(
        "ossc_bytes_total",
        "counter",
        "Bytes of model data obtained, by source (store: object store, peer: other agents, local: served from this node).",
        by_source,
    );
    metric(
        "ossc_bytes_resident",
        "gauge",
        "Bytes of model data held in node memory.",
        vec![(String::new(), num(&status["bytes_resident"]))],
    );
    metric(
        "ossc_memory_limit_bytes",
        "gauge",
        "The agent's memory cap for cached data.",
        vec![(String::new(), num(&status["memory_limit"]))],
    );
    let m = &status["metrics"];
    for (key, name, help) in [
        ("opens", "ossc_opens_total", "Opens handled by the agent."),
        (
            "opens_fd",
            "ossc_opens_served_total",
            "Opens answered with a memory-backed fd.",
        ),
        (
            "opens_pass",
            "ossc_opens_passthrough_total",
            "Opens of real (small) files passed through.",
        ),
        (
            "opens_err",
            "ossc_opens_failed_total",
            "Opens answered with an error.",
        ),
        ("fetches", "ossc_fetches_total", "Object fetches started."),
        (
            "fetch_errors",
            "ossc_fetch_errors_total",
            "Object fetches that failed.",
        ),
        (
            "evictions",
            "ossc_evictions_total",
            "Files released to stay under the memory cap.",
        ),
        (
            "expirations",
            "ossc_expirations_total",
            "Files released after expireTimeSec without use.",
        ),
    ] {
        metric(name, "counter", help, vec![(String::new(), num(&m[key]))]);
    }
    let files = status["files"].as_array().cloned().unwrap_or_default();
    let mut by_state: std::collections::BTreeMap<String, u64> = Default::default();
    for f in &files {
        *by_state
            .entry(f["state"].as_str().unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    metric(
        "ossc_files",
        "gauge",
        "Large files known to the agent, by state.",
        by_state
            .into_iter()
            .map(|(s, n)| (format!("{{state=\"{s}\"}}"), n))
            .collect(),
    );
    metric(
        "ossc_file_bytes_done",
        "gauge",
        "Bytes of each large file fetched so far.",
        files
            .iter()
            .map(|f| {
                (
                    format!(
                        "{{path=\"{}\"}}",
                        escape_label(f["path"].as_str().unwrap_or(""))
                    ),
                    num(&f["bytes_done"]),
                )
            })
            .collect(),
    );
    let path_label = |f: &Value| escape_label(f["path"].as_str().unwrap_or(""));
    let mut object_samples = Vec::new();
    let mut object_peer_samples = Vec::new();
    let mut unverified_samples = Vec::new();
    for f in &files {
        let from = &f["fetched_from"];
        if from.is_null() {
            continue;
        }
        unverified_samples.push((
            format!("{{path=\"{}\"}}", path_label(f)),
            u64::from(from["verified_by"].is_null()),
        ));
        for source in ["store", "peer"] {
            object_samples.push((
                format!("{{path=\"{}\",source=\"{source}\"}}", path_label(f)),
                num(&from[source]),
            ));
        }
        if let Some(by_peer) = from["by_peer"].as_object() {
            for (peer, bytes) in by_peer {
                object_peer_samples.push((
                    format!(
                        "{{path=\"{}\",peer=\"{}\"}}",
                        path_label(f),
                        escape_label(peer)
                    ),
                    num(bytes),
                ));
            }
        }
    }
    metric(
        "ossc_file_fetched_bytes",
        "gauge",
        "Bytes of each large file's last fetch, by source (store or peer).",
        object_samples,
    );
    metric(
        "ossc_file_fetched_from_peer_bytes",
        "gauge",
        "Bytes of each large file's last fetch that came from each peer.",
        object_peer_samples,
    );
    metric(
        "ossc_file_unverified",
        "gauge",
        "1 when a large file's last fetch could not be verified end to end (the store declared no checksum).",
        unverified_samples,
    );
    let peers = status["peers"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let per_peer = |key: &str| -> Vec<(String, u64)> {
        peers
            .iter()
            .map(|p| {
                (
                    format!(
                        "{{peer=\"{}\"}}",
                        escape_label(p["id"].as_str().unwrap_or(""))
                    ),
                    if key == "alive" {
                        u64::from(p["alive"].as_bool().unwrap_or(false))
                    } else {
                        num(&p[key])
                    },
                )
            })
            .collect()
    };
    if !status["peers"].is_null() {
        metric(
            "ossc_peer_up",
            "gauge",
            "1 while the peer answers heartbeats, else 0.",
            per_peer("alive"),
        );
        metric(
            "ossc_peer_sent_bytes_total",
            "counter",
            "Chunk bytes this node served to each peer.",
            per_peer("bytes_sent"),
        );
        metric(
            "ossc_peer_received_bytes_total",
            "counter",
            "Verified chunk bytes this node kept from each peer.",
            per_peer("bytes_received"),
        );
        metric(
            "ossc_peer_failures_total",
            "counter",
            "Failed heartbeats and pulls, per peer (bad chunks included).",
            per_peer("failures"),
        );
        let idle = status["peers"]["peer_idle_upload_bytes_per_sec"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (format!("{{peer=\"{}\"}}", escape_label(k)), num(v)))
                    .collect()
            })
            .unwrap_or_default();
        metric(
            "ossc_peer_idle_upload_bytes_per_second",
            "gauge",
            "Spare upload bandwidth each peer last reported (pulls are weighted by it).",
            idle,
        );
    }
    let pids = status["registered_pids"]
        .as_object()
        .map_or(0, |o| o.len() as u64);
    metric(
        "ossc_registered_processes",
        "gauge",
        "Processes registered with the agent.",
        vec![(String::new(), pids)],
    );
    out
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `addr` until the process exits.
pub async fn serve(addr: SocketAddr, socket: PathBuf) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    tracing::info!(%addr, "Prometheus metrics at /metrics");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let socket = socket.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics") {
                match tokio::task::spawn_blocking(move || crate::agent::query_status(&socket)).await
                {
                    Ok(Ok(s)) => ("200 OK", render(&s)),
                    Ok(Err(e)) => (
                        "503 Service Unavailable",
                        format!("agent status unavailable: {e:#}\n"),
                    ),
                    Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                }
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_as_prometheus_text() {
        let status = serde_json::json!({
            "bytes_by_source": {"store": 100, "peer": 20, "local": 3},
            "bytes_resident": 64, "memory_limit": 1000,
            "metrics": {"opens": 5, "opens_fd": 2, "opens_pass": 3, "opens_err": 0, "fetches": 2,
                        "fetch_errors": 1, "evictions": 0, "expirations": 4},
            "files": [{"path": "a\"b.safetensors", "state": "ready", "bytes_done": 64,
                       "fetched_from": {"store": 16, "peer": 48, "by_peer": {"10.0.0.2:7468": 48}, "verified_by": "sha256"}},
                      {"path": "c.safetensors", "state": "fetching", "bytes_done": 7},
                      {"path": "d.bin", "state": "ready", "bytes_done": 1,
                       "fetched_from": {"store": 1, "peer": 0, "by_peer": {}, "verified_by": null}}],
            "registered_pids": {"10": {}, "11": {}},
            "peers": {"peers": [
                {"id": "10.0.0.2:7468", "alive": true, "bytes_sent": 5, "bytes_received": 48, "failures": 0},
                {"id": "10.0.0.3:7468", "alive": false, "bytes_sent": 0, "bytes_received": 0, "failures": 3}],
                "peer_idle_upload_bytes_per_sec": {"10.0.0.2:7468": 1000000}},
        });
        let text = render(&status);
        for line in [
            "ossc_bytes_total{source=\"store\"} 100",
            "ossc_bytes_total{source=\"peer\"} 20",
            "ossc_bytes_resident 64",
            "ossc_memory_limit_bytes 1000",
            "ossc_fetch_errors_total 1",
            "ossc_expirations_total 4",
            "ossc_files{state=\"ready\"} 2",
            "ossc_file_unverified{path=\"a\\\"b.safetensors\"} 0",
            "ossc_file_unverified{path=\"d.bin\"} 1",
            "ossc_files{state=\"fetching\"} 1",
            "ossc_file_bytes_done{path=\"a\\\"b.safetensors\"} 64",
            "ossc_registered_processes 2",
            "ossc_file_fetched_bytes{path=\"a\\\"b.safetensors\",source=\"peer\"} 48",
            "ossc_file_fetched_bytes{path=\"a\\\"b.safetensors\",source=\"store\"} 16",
            "ossc_file_fetched_from_peer_bytes{path=\"a\\\"b.safetensors\",peer=\"10.0.0.2:7468\"} 48",
            "ossc_peer_up{peer=\"10.0.0.2:7468\"} 1",
            "ossc_peer_up{peer=\"10.0.0.3:7468\"} 0",
            "ossc_peer_sent_bytes_total{peer=\"10.0.0.2:7468\"} 5",
            "ossc_peer_received_bytes_total{peer=\"10.0.0.2:7468\"} 48",
            "ossc_peer_failures_total{peer=\"10.0.0.3:7468\"} 3",
            "ossc_peer_idle_upload_bytes_per_second{peer=\"10.0.0.2:7468\"} 1000000",
            "# TYPE ossc_bytes_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "bad sample {l:?}");
        }
    }
}

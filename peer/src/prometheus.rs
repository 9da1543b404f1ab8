//! Prometheus exposition of the node agent's state, served over HTTP.
//!
//! Design decisions:
//! - The exporter reads the agent's own `STATUS` over its Unix socket and
//!   renders it with the `prometheus-client` crate (OpenMetrics text). The
//!   agent's internals stay private, and the same numbers feed `ossc status`
//!   and `/metrics`, so the two can never disagree. A fresh registry is built
//!   per scrape: every value is a snapshot of STATUS, nothing accumulates here.
//! - HTTP is hyper's HTTP/1 server: `GET`/`HEAD` of `/metrics` and `/healthz`
//!   (200 `ok` while the agent answers and its mirror has not failed), 404
//!   elsewhere, 405 for other methods. Each connection must send its headers
//!   within [`HEADER_READ_TIMEOUT`] and is closed after one request or
//!   [`CONNECTION_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once
//!   (more wait in the listen backlog).
//! - Off by default: several agents may run side by side on one node
//!   (`CONNECTOR_UDS_PATH`), and each needs its own port. Enable it with
//!   `--metrics-listen` / `OSS_CONNECTOR_METRICS_LISTEN`; a bare port binds
//!   127.0.0.1, any other interface must be named (`0.0.0.0:9469`).
//!   Metric names are documented in [`render`].

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

/// A client must send its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, whatever it is doing.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// Bounds on the endpoint's clients (defaults: the constants above).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub connection_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            connection_timeout: CONNECTION_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}
/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type U64Gauge = Gauge<u64, AtomicU64>;

/// `--metrics-listen`: `PORT` (binds 127.0.0.1) or `IP:PORT`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    t.parse().map_err(|_| {
        format!("{text:?} is neither a port (binds 127.0.0.1) nor ip:port (e.g. 0.0.0.0:9469)")
    })
}

/// One family per metric name, registered on first use.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str, samples: Vec<(Labels, u64)>) {
        // The encoder adds the `_total` suffix of counters.
        let base = name.strip_suffix("_total").unwrap_or(name);
        let family = Family::<Labels, Counter>::default();
        for (labels, v) in samples {
            family.get_or_create(&labels).inc_by(v);
        }
        self.registry.register(base, help, family);
    }

    /// An unlabelled counter.
    fn counter_value(&mut self, name: &str, help: &str, value: u64) {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        self.registry.register(base, help, counter);
    }

    /// An unlabelled counter of seconds.
    fn counter_seconds(&mut self, name: &str, help: &str, secs: f64) {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let counter = Counter::<f64, AtomicU64>::default();
        counter.inc_by(secs.max(0.0));
        self.registry.register(base, help, counter);
    }

    fn gauge(&mut self, name: &str, help: &str, samples: Vec<(Labels, u64)>) {
        let family = Family::<Labels, U64Gauge>::default();
        for (labels, v) in samples {
            family.get_or_create(&labels).set(v);
        }
        self.registry.register(name, help, family);
    }

    /// An unlabelled gauge.
    fn gauge_value(&mut self, name: &str, help: &str, value: u64) {
        let gauge = U64Gauge::default();
        gauge.set(value);
        self.registry.register(name, help, gauge);
    }
}

/// One label; the value escaped as the text format requires (the encoder
/// writes label values verbatim).
fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), escape_label(v))]
}

fn labels2(k1: &str, v1: &str, k2: &str, v2: &str) -> Labels {
    let mut l = label(k1, v1);
    l.extend(label(k2, v2));
    l
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders an agent STATUS document as OpenMetrics text.
pub fn render(status: &Value) -> Result<String> {
    let mut b = Builder {
        registry: Registry::default(),
    };
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let by_source = ["store", "peer", "local"]
        .iter()
        .map(|s| (label("source", s), num(&status["bytes_by_source"][s])))
        .collect();
    b.counter(
        "ossc_bytes_total",
        "Bytes of model data obtained, by source (store: object store, peer: other agents, local: served from this node)",
        by_source,
    );
    b.gauge_value(
        "ossc_bytes_resident",
        "Bytes of model data held in node memory",
        num(&status["bytes_resident"]),
    );
    b.gauge_value(
        "ossc_memory_limit_bytes",
        "The agent's memory cap for cached data",
        num(&status["memory_limit"]),
    );
    let m = &status["metrics"];
    for (key, name, help) in [
        ("opens", "ossc_opens_total", "Opens handled by the agent"),
        (
            "opens_fd",
            "ossc_opens_served_total",
            "Opens answered with a memory-backed fd",
        ),
        (
            "opens_pass",
            "ossc_opens_passthrough_total",
            "Opens of real (small) files passed through",
        ),
        (
            "opens_err",
            "ossc_opens_failed_total",
            "Opens answered with an error",
        ),
        ("fetches", "ossc_fetches_total", "Object fetches started"),
        (
            "fetch_errors",
            "ossc_fetch_errors_total",
            "Object fetches that failed",
        ),
        (
            "evictions",
            "ossc_evictions_total",
            "Files released to stay under the memory cap",
        ),
        (
            "expirations",
            "ossc_expirations_total",
            "Files released after expireTimeSec without use",
        ),
    ] {
        b.counter_value(name, help, num(&m[key]));
    }
    let files = status["files"].as_array().cloned().unwrap_or_default();
    let mut by_state: std::collections::BTreeMap<String, u64> = Default::default();
    for f in &files {
        *by_state
            .entry(f["state"].as_str().unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    b.gauge(
        "ossc_files",
        "Large files known to the agent, by state",
        by_state
            .into_iter()
            .map(|(s, n)| (label("state", &s), n))
            .collect(),
    );
    let path_of = |f: &Value| f["path"].as_str().unwrap_or("").to_string();
    b.gauge(
        "ossc_file_bytes_done",
        "Bytes of each large file fetched so far",
        files
            .iter()
            .map(|f| (label("path", &path_of(f)), num(&f["bytes_done"])))
            .collect(),
    );
    let mut object_samples = Vec::new();
    let mut object_peer_samples = Vec::new();
    let mut unverified_samples = Vec::new();
    for f in &files {
        let from = &f["fetched_from"];
        if from.is_null() {
            continue;
        }
        unverified_samples.push((
            label("path", &path_of(f)),
            u64::from(from["verified_by"].is_null()),
        ));
        for source in ["store", "peer"] {
            object_samples.push((
                labels2("path", &path_of(f), "source", source),
                num(&from[source]),
            ));
        }
        if let Some(by_peer) = from["by_peer"].as_object() {
            for (peer, bytes) in by_peer {
                object_peer_samples.push((labels2("path", &path_of(f), "peer", peer), num(bytes)));
            }
        }
    }
    b.gauge(
        "ossc_file_fetched_bytes",
        "Bytes of each large file's last fetch, by source (store or peer)",
        object_samples,
    );
    b.gauge(
        "ossc_file_fetched_from_peer_bytes",
        "Bytes of each large file's last fetch that came from each peer",
        object_peer_samples,
    );
    b.gauge(
        "ossc_file_unverified",
        "1 when a large file's last fetch could not be verified end to end (the store declared no checksum)",
        unverified_samples,
    );
    if !status["peers"].is_null() {
        let peers = status["peers"]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let per_peer = |key: &str| -> Vec<(Labels, u64)> {
            peers
                .iter()
                .map(|p| {
                    let v = if key == "alive" {
                        u64::from(p["alive"].as_bool().unwrap_or(false))
                    } else {
                        num(&p[key])
                    };
                    (label("peer", p["id"].as_str().unwrap_or("")), v)
                })
                .collect()
        };
        b.gauge(
            "ossc_peer_up",
            "1 while the peer answers heartbeats, else 0",
            per_peer("alive"),
        );
        b.counter(
            "ossc_peer_sent_bytes_total",
            "Chunk bytes this node served to each peer",
            per_peer("bytes_sent"),
        );
        b.counter(
            "ossc_peer_received_bytes_total",
            "Verified chunk bytes this node kept from each peer",
            per_peer("bytes_received"),
        );
        b.counter(
            "ossc_peer_failures_total",
            "Failed heartbeats and pulls, per peer (bad chunks included)",
            per_peer("failures"),
        );
        let idle = status["peers"]["peer_idle_upload_bytes_per_sec"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (label("peer", k), num(v))).collect())
            .unwrap_or_default();
        b.gauge(
            "ossc_peer_idle_upload_bytes_per_second",
            "Spare upload bandwidth each peer last reported (pulls are weighted by it)",
            idle,
        );
        let by_transport = status["peers"]["pulls_by_transport"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (label("transport", k), num(v)))
                    .collect()
            })
            .unwrap_or_default();
        b.counter(
            "ossc_peer_pulls_total",
            "Chunk pulls completed per transport (pulls over grpc while framed or quic is configured: fallbacks)",
            by_transport,
        );
        let upload = &status["peers"]["upload"];
        if let Some(cap) = upload["limit_bytes_per_sec"].as_u64() {
            b.gauge_value(
                "ossc_peer_upload_limit_bytes_per_second",
                "The cap on bytes this node sends to peers (peer.uploadBytesPerSec)",
                cap,
            );
        }
        if upload.is_object() {
            b.counter_value(
                "ossc_peer_upload_throttled_bytes_total",
                "Chunk bytes sent to peers that waited for their turn under the upload cap",
                num(&upload["throttled_bytes"]),
            );
            b.counter_seconds(
                "ossc_peer_upload_throttle_wait_seconds_total",
                "How long chunk frames waited for their turn under the upload cap, summed",
                upload["throttle_wait_secs"].as_f64().unwrap_or(0.0),
            );
        }
    }
    let pids = status["registered_pids"]
        .as_object()
        .map_or(0, |o| o.len() as u64);
    b.gauge_value(
        "ossc_registered_processes",
        "Processes registered with the agent",
        pids,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &b.registry).context("encoding metrics")?;
    Ok(out)
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))
}

/// Serves `/metrics` and `/healthz` on `addr` until the process exits.
pub async fn serve(addr: SocketAddr, socket: PathBuf) -> Result<()> {
    let listener = bind(addr).await?;
    tracing::info!(%addr, "Prometheus metrics at /metrics, health at /healthz");
    serve_on(listener, socket, Limits::default()).await
}

/// Serves `/metrics` and `/healthz` for the agent at `socket` on `listener`.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    socket: PathBuf,
    limits: Limits,
) -> Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let socket = socket.clone();
                async move { Ok::<_, Infallible>(respond(method, &path, socket).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}

type HttpResponse = hyper::Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &str, body: String) -> HttpResponse {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn respond(method: Method, path: &str, socket: PathBuf) -> HttpResponse {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    if path != "/metrics" && path != "/healthz" {
        return text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics or /healthz\n".into(),
        );
    }
    let status =
        match tokio::task::spawn_blocking(move || crate::agent::query_status(&socket)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("agent not serving: {e:#}\n"),
                )
            }
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n")),
        };
    if path == "/healthz" {
        let mirror = status["mirror"].as_str().unwrap_or("");
        return if mirror.starts_with("failed") {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("mirror {mirror}\n"),
            )
        } else {
            text(StatusCode::OK, PLAIN, "ok\n".into())
        };
    }
    match render(&status) {
        Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e:#}\n")),
    }
}

/// A strict check of OpenMetrics text as this exporter writes it (the tests'
/// parser): `# HELP` / `# TYPE` lines, samples `name{label="value",...} number`
/// that belong to the last declared family (`name_total` for counters), quoted
/// and escaped label values, and a final `# EOF`. Returns the samples as
/// (name, labels text, value).
pub fn check_exposition(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut family: Option<(String, String)> = None;
    let mut samples = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            return match lines.next() {
                None => Ok(samples),
                Some(_) => Err("text after # EOF".into()),
            };
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE {line:?}"))?;
            if !valid_metric_name(name) || !["counter", "gauge"].contains(&kind) {
                return Err(format!("bad TYPE {line:?}"));
            }
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if !valid_metric_name(rest.split(' ').next().unwrap_or("")) {
                return Err(format!("bad HELP {line:?}"));
            }
            continue;
        }
        let (family_name, kind) = family
            .as_ref()
            .ok_or(format!("sample before TYPE: {line:?}"))?;
        let (name, labels, value) = parse_sample(line)?;
        let expected = match kind.as_str() {
            "counter" => format!("{family_name}_total"),
            _ => family_name.clone(),
        };
        if name != expected {
            return Err(format!("sample {line:?} outside family {family_name}"));
        }
        samples.push((name, labels, value));
    }
    Err("missing # EOF".into())
}

fn valid_metric_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars().enumerate().all(|(i, c)| {
            c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
        })
}

/// `name{a="x",b="y"} value` -> (name, `a="x",b="y"`, value).
fn parse_sample(line: &str) -> Result<(String, String, f64), String> {
    let bad = |what: &str| format!("{what} in {line:?}");
    let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(bad("bad metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = "";
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            let eq = rest.find('=').ok_or_else(|| bad("label without ="))?;
            if !valid_metric_name(&rest[..eq]) || rest[..eq].contains(':') {
                return Err(bad("bad label name"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| bad("unquoted label value"))?;
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(bad("unterminated label value")),
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\' | '"' | 'n')) => {}
                        _ => return Err(bad("bad escape")),
                    },
                    Some((i, '"')) => break i,
                    Some(_) => {}
                }
            };
            rest = &rest[close + 1..];
            if let Some(more) = rest.strip_prefix(',') {
                rest = more;
                continue;
            }
            rest = rest
                .strip_prefix('}')
                .ok_or_else(|| bad("bad label list"))?;
            break;
        }
        labels = &line[name_end + 1..line.len() - rest.len() - 1];
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| bad("no space before the value"))?
        .parse::<f64>()
        .map_err(|_| bad("bad value"))?;
    Ok((name.to_string(), labels.to_string(), value))
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
                "peer_idle_upload_bytes_per_sec": {"10.0.0.2:7468": 1000000},
                "pulls_by_transport": {"framed": 12, "grpc": 1},
                "upload": {"limit_bytes_per_sec": 20000000, "throttled_bytes": 7340032,
                           "throttle_wait_secs": 1.5, "streams_in_flight": 2}},
        });
        let text = render(&status).unwrap();
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
            "ossc_peer_pulls_total{transport=\"framed\"} 12",
            "ossc_peer_pulls_total{transport=\"grpc\"} 1",
            "ossc_peer_upload_limit_bytes_per_second 20000000",
            "ossc_peer_upload_throttled_bytes_total 7340032",
            "ossc_peer_upload_throttle_wait_seconds_total 1.5",
            "# TYPE ossc_bytes counter",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        check_exposition(&text).unwrap();
    }

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(
            parse_listen("9469").unwrap(),
            "127.0.0.1:9469".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:9469").unwrap(),
            "0.0.0.0:9469".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:1").unwrap(), "[::1]:1".parse().unwrap());
        for bad in ["", "host:9469", "70000", "0.0.0.0"] {
            assert!(parse_listen(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Reads until the server closes; the bytes and when it closed.
    async fn read_to_close(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, std::time::Instant) {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
        (got, std::time::Instant::now())
    }

    #[tokio::test]
    async fn silent_clients_are_cut_off_and_connections_are_capped() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            connection_timeout: Duration::from_secs(5),
            max_connections: 1,
        };
        let server = tokio::spawn(serve_on(listener, dir.path().join("no.sock"), limits));
        let start = std::time::Instant::now();
        // A client that connects and says nothing holds the only slot...
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so this request is answered only after the header timeout frees it.
        let mut asking = tokio::net::TcpStream::connect(addr).await.unwrap();
        asking
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, answered) = read_to_close(&mut asking).await;
        let (_, cut) = read_to_close(&mut silent).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("agent not serving"), "{answer}");
        assert!(
            cut.duration_since(start) < Duration::from_secs(4),
            "the silent client was cut off by the header timeout, not the connection timeout"
        );
        assert!(
            answered.duration_since(start) >= Duration::from_millis(250),
            "the second connection waited for the slot"
        );
        server.abort();
    }

    #[test]
    fn the_checker_rejects_malformed_text() {
        for bad in [
            "x 1\n# EOF\n",
            "# TYPE x gauge\nx{a=\"b} 1\n# EOF\n",
            "# TYPE x gauge\nx one\n# EOF\n",
            "# TYPE x gauge\nx 1\n",
            "# TYPE x counter\nx 1\n# EOF\n",
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! The "raw ceiling" for benchmarks: the same ranged GETs `ossc cp` issues
//! (same part size, same concurrency, anonymous), with every body byte
//! discarded and no client logic (no signing, no CRC, no retries, no writes).
//! Whatever `ossc cp` reaches relative to this is the cost of its logic.
//!
//! With WRITE_DIR, every body byte is also written (pwrite) into a file of
//! the object's size under that directory: the ceiling for a client that must
//! store what it downloads (`ossc cp`), still without any client logic.
//!
//! usage: ossc-raw-get ENDPOINT BUCKET PREFIX PART_SIZE CONCURRENCY [WRITE_DIR]

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use ossc_core::config::StoreSettings;
use ossc_core::http_client::{HttpClientOptions, HttpObjectClient};
use ossc_core::object_client::{list_all, ObjectClient};
use ossc_core::sign::SignatureVersion;
use ossc_core::store_url::AddressingStyle;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6 || args.len() == 7,
        "usage: ossc-raw-get ENDPOINT BUCKET PREFIX PART_SIZE CONCURRENCY [WRITE_DIR]"
    );
    let write_dir = args.get(6).map(std::path::PathBuf::from);
    let (endpoint, bucket, prefix) = (&args[1], &args[2], &args[3]);
    let part: u64 = args[4].parse()?;
    let concurrency: usize = args[5].parse()?;
    // Listing is not measured; reuse the real client for it.
    let settings = StoreSettings {
        endpoint: url::Url::parse(endpoint)?,
        region: "us-east-1".into(),
        bucket: bucket.clone(),
        prefix: prefix.clone(),
        credentials: None,
        signature_version: SignatureVersion::S3V4,
        addressing: AddressingStyle::Path,
    };
    let lister = HttpObjectClient::new(&settings, HttpClientOptions::default())?;
    let objects = list_all(&lister as &dyn ObjectClient, prefix).await?;
    let start = Instant::now();
    let mut ranges = Vec::new();
    for o in &objects {
        let file = match &write_dir {
            Some(dir) => {
                let path = dir.join(o.key.replace('/', "_"));
                let f = std::fs::File::create(&path)?;
                f.set_len(o.size)?;
                Some(Arc::new(f))
            }
            None => None,
        };
        let mut off = 0;
        while off < o.size {
            let end = (off + part).min(o.size);
            ranges.push((o.key.clone(), off, end, file.clone()));
            off = end;
        }
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let base = endpoint.trim_end_matches('/').to_string();
    let bucket = Arc::new(bucket.clone());
    let bytes: u64 = futures::stream::iter(ranges)
        .map(|(key, a, b, file)| {
            let http = http.clone();
            let url = format!("{base}/{bucket}/{key}");
            async move {
                let resp = http
                    .get(url)
                    .header("Range", format!("bytes={}-{}", a, b - 1))
                    .send()
                    .await?
                    .error_for_status()?;
                let mut n = 0u64;
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    if let Some(f) = &file {
                        std::os::unix::fs::FileExt::write_all_at(f.as_ref(), &chunk, a + n)?;
                    }
                    n += chunk.len() as u64;
                }
                anyhow::ensure!(n == b - a, "short body");
                Ok::<u64, anyhow::Error>(n)
            }
        })
        .buffer_unordered(concurrency)
        .fold(Ok(0u64), |acc: anyhow::Result<u64>, r| async move {
            Ok(acc? + r?)
        })
        .await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\": {bytes}, \"seconds\": {secs:.4}, \"gbps\": {:.4}}}",
        bytes as f64 / secs / 1e9
    );
    Ok(())
}

//! The real HTTP client and fetch engine against the embedded store, over
//! 127.0.0.1: every operation, every signature scheme, every injected fault.
//!
//! Design: each test starts its own store on an ephemeral port over its own
//! temp directory, so tests run in parallel without sharing state. Downloads
//! are always compared byte for byte with the file on disk: a fault may make
//! a load fail with a typed error, never deliver different bytes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{put, store_config, BUCKET};
use ossc_core::config::StoreSettings;
use ossc_core::fetch::{FetchConfig, FetchEngine, FetchProgress};
use ossc_core::http_client::{HttpClientOptions, HttpObjectClient};
use ossc_core::object_client::mock::VecSink;
use ossc_core::object_client::{
    list_all, ClientError, ObjectClient, ObjectClientError, ServiceErrorKind,
};
use ossc_core::retry::RetryPolicy;
use ossc_core::sign::{Credentials, SignatureVersion};
use ossc_core::store_server::{
    ChecksumConfig, EmbeddedStore, FaultConfig, RunningStore, StoreServerConfig,
};

const MIB: u64 = 1024 * 1024;

fn data(n: u64, seed: u64) -> Vec<u8> {
    ossc_core::object_client::mock::pseudo_random_bytes(n as usize, seed)
}

fn start(root: &Path, credentials: Vec<Credentials>, faults: FaultConfig) -> RunningStore {
    EmbeddedStore::start(StoreServerConfig {
        faults,
        ..store_config(root, credentials)
    })
    .unwrap()
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
    }
}

fn settings(
    store: &RunningStore,
    bucket: &str,
    credentials: Option<Credentials>,
    version: SignatureVersion,
) -> StoreSettings {
    common::store_settings(&store.endpoint_url(), bucket, credentials, version)
}

fn client_for(settings: &StoreSettings) -> Arc<HttpObjectClient> {
    let options = HttpClientOptions {
        retry: fast_retry(3),
        read_timeout: Duration::from_secs(5),
        ..HttpClientOptions::default()
    };
    Arc::new(HttpObjectClient::new(settings, options).unwrap())
}

fn anonymous(store: &RunningStore) -> Arc<HttpObjectClient> {
    client_for(&settings(store, BUCKET, None, SignatureVersion::OssV4))
}

fn creds() -> Credentials {
    Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
}

/// Every signature scheme the client speaks.
const SIGNED_VERSIONS: [SignatureVersion; 3] = [
    SignatureVersion::OssV1,
    SignatureVersion::OssV4,
    SignatureVersion::S3V4,
];

/// A store requiring [`creds`] and holding the 4-byte object `k`.
fn signed_store_with_k(root: &Path) -> RunningStore {
    put(root, "k", b"data");
    start(root, vec![creds()], FaultConfig::default())
}

async fn fetch_all(
    client: Arc<HttpObjectClient>,
    key: &str,
    part_size: u64,
    max_in_flight: usize,
    retry: RetryPolicy,
) -> (
    Result<ossc_core::fetch::FetchedObject, ObjectClientError>,
    Vec<u8>,
    Arc<FetchProgress>,
) {
    let meta = client.head(key).await.unwrap();
    let engine = FetchEngine::new(
        client,
        FetchConfig {
            part_size,
            max_in_flight,
            retry,
        },
    );
    let sink = Arc::new(VecSink::with_len(meta.size as usize));
    let progress = Arc::new(FetchProgress::default());
    let r = engine
        .fetch_object(&meta, sink.clone(), progress.clone())
        .await;
    (r, sink.contents(), progress)
}

#[tokio::test]
async fn every_operation_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(100_000, 1);
    put(dir.path(), "models/a.bin", &d);
    put(dir.path(), "models/empty", b"");
    put(dir.path(), "other.txt", b"hello");
    let store = start(dir.path(), Vec::new(), FaultConfig::default());
    let c = anonymous(&store);

    let meta = c.head("models/a.bin").await.unwrap();
    assert_eq!(meta.size, 100_000);
    assert!(!meta.etag.is_empty() && !meta.etag.contains('"'));
    assert_eq!(meta.crc64, Some(ossc_core::crc64::crc64(&d)));
    assert!(meta.last_modified.is_some());

    let sink = VecSink::new();
    let g = c
        .get_range("models/a.bin", 1000..50_000, Some(&meta.etag), &sink)
        .await
        .unwrap();
    assert_eq!(g.object_size, 100_000);
    assert_eq!(g.etag, meta.etag);
    assert_eq!(g.object_crc64, meta.crc64);
    assert_eq!(g.range_crc64, ossc_core::crc64::crc64(&d[1000..50_000]));
    assert_eq!(&sink.contents()[1000..50_000], &d[1000..50_000]);

    // An end past the object is clamped to it (206 with what exists).
    let sink = VecSink::new();
    let g = c
        .get_range("models/a.bin", 99_990..200_000, None, &sink)
        .await
        .unwrap();
    assert_eq!(g.range_crc64, ossc_core::crc64::crc64(&d[99_990..]));
    // A start past it is the store's InvalidRange, not retried.
    let e = c
        .get_range("models/a.bin", 100_000..100_001, None, &sink)
        .await
        .unwrap_err();
    assert_eq!(e.service_code(), Some("InvalidRange"));

    let all = list_all(&*c, "").await.unwrap();
    let keys: Vec<&str> = all.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["models/a.bin", "models/empty", "other.txt"]);
    assert_eq!(all[0].size, 100_000);
    assert_eq!(all[0].etag, meta.etag);
    let models = list_all(&*c, "models/").await.unwrap();
    assert_eq!(models.len(), 2);

    let e = c.head("missing").await.unwrap_err();
    assert_eq!(e.service_code(), Some("NoSuchKey"));
    assert_eq!(e.service_kind(), Some(ServiceErrorKind::NotFound));
    let e = c.get_range("missing", 0..1, None, &sink).await.unwrap_err();
    assert_eq!(e.service_code(), Some("NoSuchKey"));
    assert_eq!(e.service_kind(), Some(ServiceErrorKind::NotFound));
    match e {
        ObjectClientError::Service(s) => {
            assert_eq!(s.status, 404);
            assert!(!s.request_id.is_empty());
        }
        other => panic!("expected a service error, got {other:?}"),
    }

    // Wrong If-Match: 412 -> ObjectChanged.
    let e = c
        .get_range("models/a.bin", 0..10, Some("not-the-etag"), &sink)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        ObjectClientError::Client(ClientError::ObjectChanged { .. })
    ));

    // Zero-size objects download through the engine.
    let (r, bytes, _) = fetch_all(c.clone(), "models/empty", MIB, 4, fast_retry(3)).await;
    assert_eq!(r.unwrap().size, 0);
    assert!(bytes.is_empty());
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn pagination_across_more_than_1000_keys() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..1234 {
        put(dir.path(), &format!("many/{i:05}"), &[i as u8]);
    }
    put(dir.path(), "z-after", b"x");
    let store = start(dir.path(), Vec::new(), FaultConfig::default());
    let c = anonymous(&store);
    let page = c.list_page("many/", None, 1000).await.unwrap();
    assert_eq!(page.objects.len(), 1000);
    let token = page.next_continuation_token.clone().expect("truncated");
    let page2 = c.list_page("many/", Some(&token), 1000).await.unwrap();
    assert_eq!(page2.objects.len(), 234);
    assert_eq!(page2.next_continuation_token, None);
    assert_eq!(page2.objects[0].key, "many/01000");

    let all = list_all(&*c, "many/").await.unwrap();
    assert_eq!(all.len(), 1234);
    let expected: Vec<String> = (0..1234).map(|i| format!("many/{i:05}")).collect();
    let got: Vec<String> = all.into_iter().map(|o| o.key).collect();
    assert_eq!(got, expected);

    // Small pages too.
    let small = c.list_page("many/", None, 7).await.unwrap();
    assert_eq!(small.objects.len(), 7);
    assert_eq!(store.stats().requests.list, 5);
}

const SPECIAL_KEYS: &[&str] = &[
    "dir with space/file name.bin",
    "plus+sign/a+b=c.bin",
    "unicode/模型-权重 ключ.safetensors",
    "punct/~tilde!$&'()*,;=@%25.bin",
];

async fn check_special_keys(c: &HttpObjectClient, dir: &Path) {
    let listed = list_all(c, "").await.unwrap();
    let mut expected: Vec<&str> = SPECIAL_KEYS.to_vec();
    expected.sort();
    let got: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(got, expected);
    for key in SPECIAL_KEYS {
        let on_disk = std::fs::read(dir.join(BUCKET).join(key)).unwrap();
        let meta = c.head(key).await.unwrap();
        assert_eq!(meta.size, on_disk.len() as u64, "{key}");
        let sink = VecSink::new();
        c.get_range(key, 0..meta.size, Some(&meta.etag), &sink)
            .await
            .unwrap();
        assert_eq!(sink.contents(), on_disk, "{key}");
        let prefix: String = key.chars().take(8).collect();
        let under = list_all(c, &prefix).await.unwrap();
        assert!(under.iter().any(|o| o.key == *key), "prefix {prefix:?}");
    }
}

fn special_store(dir: &Path, credentials: Vec<Credentials>) -> RunningStore {
    for (i, key) in SPECIAL_KEYS.iter().enumerate() {
        put(dir, key, &data(1000 + i as u64 * 17, i as u64));
    }
    start(dir, credentials, FaultConfig::default())
}

#[tokio::test]
async fn special_keys_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let store = special_store(dir.path(), Vec::new());
    check_special_keys(&anonymous(&store), dir.path()).await;
}

#[tokio::test]
async fn signed_requests_all_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let token = creds().with_token("STS-token/with+chars==");
    let store = special_store(
        dir.path(),
        vec![creds(), Credentials::new("OTHER", "s3cr3t")],
    );
    for version in SIGNED_VERSIONS {
        let c = client_for(&settings(&store, BUCKET, Some(creds()), version));
        check_special_keys(&c, dir.path()).await;
        assert_eq!(c.stats().retries, 0, "{version:?}");
    }
    assert_eq!(store.stats().auth_failures, 0);

    // A token the store does not know is rejected, typed, not retried.
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(token),
        SignatureVersion::OssV4,
    ));
    let e = c.head(SPECIAL_KEYS[0]).await.unwrap_err();
    assert!(e.service_code().is_some(), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn wrong_secret_and_missing_bucket_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let store = signed_store_with_k(dir.path());
    for version in SIGNED_VERSIONS {
        let bad = Credentials::new("AKIDEXAMPLE", "wrong-secret");
        let c = client_for(&settings(&store, BUCKET, Some(bad), version));
        let e = c.list_page("", None, 10).await.unwrap_err();
        match &e {
            ObjectClientError::Service(s) => {
                assert_eq!(s.code, "SignatureDoesNotMatch", "{version:?}");
                assert_eq!(s.status, 403);
                assert!(s.string_to_sign.is_some(), "server echoes StringToSign");
            }
            other => panic!("{version:?}: expected SignatureDoesNotMatch, got {other:?}"),
        }
        let sink = VecSink::new();
        let e = c.get_range("k", 0..4, None, &sink).await.unwrap_err();
        assert_eq!(e.service_code(), Some("SignatureDoesNotMatch"));
        let e = c.head("k").await.unwrap_err();
        assert_eq!(
            e.service_code(),
            Some("SignatureDoesNotMatch"),
            "HEAD via x-oss-err"
        );
        assert_eq!(c.stats().requests, 3, "403 is never retried");

        let unknown = Credentials::new("NOBODY", "x");
        let c = client_for(&settings(&store, BUCKET, Some(unknown), version));
        let e = c.list_page("", None, 10).await.unwrap_err();
        assert_eq!(e.service_code(), Some("InvalidAccessKeyId"));

        let c = client_for(&settings(&store, "no-such-bucket", Some(creds()), version));
        let e = c.list_page("", None, 10).await.unwrap_err();
        assert_eq!(e.service_code(), Some("NoSuchBucket"), "{version:?}");
        let e = c.get_range("k", 0..4, None, &sink).await.unwrap_err();
        assert_eq!(e.service_code(), Some("NoSuchBucket"));
    }
}

#[tokio::test]
async fn clock_skew_is_corrected_from_date() {
    let dir = tempfile::tempdir().unwrap();
    let store = signed_store_with_k(dir.path());
    for version in SIGNED_VERSIONS {
        let c = client_for(&settings(&store, BUCKET, Some(creds()), version));
        c.set_clock_offset_ms(-40 * 60 * 1000);
        let meta = c.head("k").await.unwrap();
        assert_eq!(meta.size, 4);
        assert!(
            c.clock_offset_ms().abs() < 5_000,
            "offset {}",
            c.clock_offset_ms()
        );
        assert_eq!(c.stats().retries, 1, "{version:?}");
    }
}

async fn big_object_store(
    size: u64,
    faults: FaultConfig,
) -> (tempfile::TempDir, RunningStore, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let d = data(size, 42);
    put(dir.path(), "big.bin", &d);
    let store = start(dir.path(), vec![creds()], faults);
    (dir, store, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_download_is_byte_exact() {
    let (_dir, store, d) = big_object_store(24 * MIB + 12345, FaultConfig::default()).await;
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(creds()),
        SignatureVersion::OssV4,
    ));
    let (r, bytes, progress) = fetch_all(c.clone(), "big.bin", MIB, 32, fast_retry(5)).await;
    let f = r.unwrap();
    assert!(f.crc64_verified);
    assert_eq!(f.crc64, ossc_core::crc64::crc64(&d));
    assert!(bytes == d, "content differs");
    assert_eq!(
        progress.requests.load(std::sync::atomic::Ordering::Relaxed),
        25
    );
    assert_eq!(
        progress
            .bytes_done
            .load(std::sync::atomic::Ordering::Relaxed),
        d.len() as u64
    );
    assert_eq!(store.stats().bytes_served, d.len() as u64);
}

/// Runs a faulted download; it must either be exact or fail typed.
async fn faulted_download(
    faults: FaultConfig,
) -> (Vec<u8>, Vec<u8>, Arc<HttpObjectClient>, RunningStore) {
    let (_dir, store, d) = big_object_store(6 * MIB + 7, FaultConfig::default()).await;
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(creds()),
        SignatureVersion::S3V4,
    ));
    store.set_faults(faults);
    let (r, bytes, _) = fetch_all(c.clone(), "big.bin", 256 * 1024, 8, fast_retry(10)).await;
    r.unwrap_or_else(|e| panic!("download failed: {e}"));
    (d, bytes, c, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_503_is_retried() {
    let (d, bytes, c, store) = faulted_download(FaultConfig {
        seed: Some(7),
        error_rate: 0.3,
        ..FaultConfig::default()
    })
    .await;
    assert!(bytes == d);
    let faults = store.stats().faults.errors;
    assert!(faults > 0);
    assert!(c.stats().retries >= faults.min(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_truncations_are_retried() {
    let (d, bytes, c, store) = faulted_download(FaultConfig {
        seed: Some(11),
        reset_rate: 0.2,
        truncate_rate: 0.2,
        ..FaultConfig::default()
    })
    .await;
    assert!(bytes == d);
    let f = store.stats().faults;
    assert!(f.resets + f.truncations > 0);
    assert!(c.stats().retries > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_throttling_fails_typed() {
    let (_dir, store, _) = big_object_store(MIB, FaultConfig::default()).await;
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(creds()),
        SignatureVersion::OssV4,
    ));
    let meta = c.head("big.bin").await.unwrap();
    store.set_faults(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    let engine = FetchEngine::new(
        c.clone(),
        FetchConfig {
            part_size: MIB,
            max_in_flight: 4,
            retry: fast_retry(2),
        },
    );
    let e = engine
        .fetch_object(
            &meta,
            Arc::new(VecSink::new()),
            Arc::new(FetchProgress::default()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.service_code(), Some("DownloadTrafficRateLimitExceeded"));
    // 2 engine attempts x 3 client attempts.
    assert_eq!(store.stats().requests.get, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_bandwidth_are_felt() {
    let (_dir, store, d) = big_object_store(2 * MIB, FaultConfig::default()).await;
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(creds()),
        SignatureVersion::OssV4,
    ));
    store.set_faults(FaultConfig {
        latency_ms: 50,
        ..FaultConfig::default()
    });
    let t = Instant::now();
    c.head("big.bin").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(50));

    store.set_faults(FaultConfig {
        bandwidth_bytes_per_sec: 4 * MIB,
        ..FaultConfig::default()
    });
    let t = Instant::now();
    let (r, bytes, _) = fetch_all(c, "big.bin", 256 * 1024, 16, fast_retry(3)).await;
    r.unwrap();
    let elapsed = t.elapsed();
    assert!(bytes == d);
    // 2 MiB at 4 MiB/s: about 0.5 s whatever the parallelism.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_object_is_detected_not_spliced() {
    let (_dir, store, _) = big_object_store(4 * MIB, FaultConfig::default()).await;
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(creds()),
        SignatureVersion::OssV1,
    ));
    store.set_faults(FaultConfig {
        replace_key: Some("big.bin".into()),
        ..FaultConfig::default()
    });
    // One part at a time: the store finishes the rewrite before answering the
    // first GET, so the second part is the first to see the new version.
    let (r, _, progress) = fetch_all(c.clone(), "big.bin", 256 * 1024, 1, fast_retry(3)).await;
    assert_eq!(
        progress.requests.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    match r.unwrap_err() {
        ObjectClientError::Client(ClientError::ObjectChanged { key, .. }) => {
            assert_eq!(key, "big.bin")
        }
        other => panic!("expected ObjectChanged, got {other}"),
    }
    assert_eq!(store.stats().faults.replacements, 1);
    // A fresh HEAD sees the new version and downloads it exactly.
    let (r, bytes, _) = fetch_all(c, "big.bin", 256 * 1024, 2, fast_retry(3)).await;
    r.unwrap();
    let on_disk = std::fs::read(_dir.path().join(BUCKET).join("big.bin")).unwrap();
    assert!(bytes == on_disk);
}

/// Throughput of the fetch engine against a raw parallel-GET ceiling (same
/// part size and concurrency, body drained and dropped, no signing, no sink),
/// with and without computing the CRC-64 the engine must verify. Run with
/// `cargo test --release -p ossc-core --test client_vs_embedded_store -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn bench_fetch_vs_raw_parallel_get() {
    use futures::StreamExt;
    const SIZE: u64 = 512 * MIB;
    const PART: u64 = 8 * MIB;
    const IN_FLIGHT: usize = 16;
    const ROUNDS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "big.bin", &data(SIZE, 42));
    let store = start(dir.path(), Vec::new(), FaultConfig::default());
    let url = format!("{}/{BUCKET}/big.bin", store.endpoint_url());
    let raw = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .unwrap();
    let c = anonymous(&store);
    let meta = c.head("big.bin").await.unwrap();
    let engine = FetchEngine::new(
        c.clone(),
        FetchConfig {
            part_size: PART,
            max_in_flight: IN_FLIGHT,
            retry: fast_retry(3),
        },
    );
    let gib = |d: Duration| SIZE as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
    let (mut best_raw, mut best_raw_crc, mut best_fetch) = (0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        for with_crc in [false, true] {
            let t = Instant::now();
            let parts = (0..SIZE / PART).map(|i| {
                let (raw, url) = (raw.clone(), url.clone());
                async move {
                    let r = raw
                        .get(&url)
                        .header(
                            "Range",
                            format!("bytes={}-{}", i * PART, (i + 1) * PART - 1),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 206);
                    let mut n = 0u64;
                    let mut hasher = ossc_core::crc64::Crc64Hasher::new();
                    let mut body = r.bytes_stream();
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.unwrap();
                        if with_crc {
                            hasher.update(&chunk);
                        }
                        n += chunk.len() as u64;
                    }
                    std::hint::black_box(hasher.finish());
                    n
                }
            });
            let total: u64 = futures::stream::iter(parts)
                .buffer_unordered(IN_FLIGHT)
                .fold(0, |a, n| async move { a + n })
                .await;
            assert_eq!(total, SIZE);
            let rate = gib(t.elapsed());
            if with_crc {
                best_raw_crc = best_raw_crc.max(rate);
            } else {
                best_raw = best_raw.max(rate);
            }
        }

        let t = Instant::now();
        let f = engine
            .fetch_object(
                &meta,
                Arc::new(ossc_core::object_client::DiscardSink),
                Arc::new(FetchProgress::default()),
            )
            .await
            .unwrap();
        assert!(f.crc64_verified);
        best_fetch = best_fetch.max(gib(t.elapsed()));
    }
    eprintln!(
        "raw parallel GET {best_raw:.2} GiB/s, raw + CRC-64 {best_raw_crc:.2} GiB/s, \
         fetch engine {best_fetch:.2} GiB/s; ratio {:.2} (vs raw + CRC {:.2})",
        best_fetch / best_raw,
        best_fetch / best_raw_crc
    );
}

fn start_with_checksums(root: &Path, checksums: ChecksumConfig) -> RunningStore {
    EmbeddedStore::start(StoreServerConfig {
        checksums,
        ..store_config(root, vec![creds()])
    })
    .unwrap()
}

#[tokio::test]
async fn head_declares_what_the_store_offers_to_verify_with() {
    use ossc_core::checksums::{digest_bytes, DigestKind};
    let dir = tempfile::tempdir().unwrap();
    let d = data(3 * MIB + 5, 31);
    put(dir.path(), "m/a.bin", &d);
    let kinds = |c: &ossc_core::checksums::StoreChecksums| -> Vec<DigestKind> {
        c.digests.iter().map(|x| x.kind).collect()
    };

    // Default (OSS-like): CRC-64, plus the S3 checksums asked for with
    // checksum mode; the ETag is not an MD5 (it has a multipart shape).
    let store = start_with_checksums(dir.path(), ChecksumConfig::default());
    for version in [SignatureVersion::OssV4, SignatureVersion::S3V4] {
        let c = client_for(&settings(&store, BUCKET, Some(creds()), version));
        let meta = c.head("m/a.bin").await.unwrap();
        assert_eq!(meta.crc64, Some(ossc_core::crc64::crc64(&d)));
        assert_eq!(
            kinds(&meta.checksums),
            [DigestKind::Sha256, DigestKind::Crc32c]
        );
        assert_eq!(
            meta.checksums.digests[0].value,
            digest_bytes(DigestKind::Sha256, &d)
        );
        assert_eq!(
            meta.checksums.digests[1].value,
            digest_bytes(DigestKind::Crc32c, &d)
        );
        assert!(meta.etag.ends_with("-1"), "{}", meta.etag);
    }

    // An S3 store without CRC-64, with single-part MD5 ETags: the listing's
    // ETag is the same MD5, and HEAD declares it.
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "m/a.bin", &d);
    let store = start_with_checksums(
        dir.path(),
        ChecksumConfig {
            no_crc64: true,
            md5_etags: true,
        },
    );
    let c = client_for(&settings(
        &store,
        BUCKET,
        Some(creds()),
        SignatureVersion::S3V4,
    ));
    let meta = c.head("m/a.bin").await.unwrap();
    assert_eq!(meta.crc64, None);
    let md5 = digest_bytes(DigestKind::Md5Etag, &d);
    assert_eq!(meta.etag, hex::encode(&md5));
    assert_eq!(
        kinds(&meta.checksums),
        [DigestKind::Sha256, DigestKind::Md5Etag, DigestKind::Crc32c]
    );
    assert_eq!(meta.checksums.digests[1].value, md5);
    let listed = list_all(&*c, "m/").await.unwrap();
    assert_eq!(listed[0].etag, meta.etag);
    // The fetch engine has no CRC to check here: it says so.
    let (r, got, _) = fetch_all(c.clone(), "m/a.bin", MIB, 4, fast_retry(3)).await;
    assert_eq!(got, d);
    assert!(!r.unwrap().crc64_verified);
}

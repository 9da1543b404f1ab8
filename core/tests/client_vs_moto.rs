//! The store client against moto, a widely used third-party S3 server
//! (`moto_server` from PyPI, started here on a loopback port): list with
//! pagination, HEAD, ranged GET, and a full parallel download compared byte
//! for byte. Needs the test venv (`scripts/setup-env.sh`), found through
//! `OSSC_TEST_PYTHON`; without it the test skips loudly, except in CI where
//! it fails.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use ossc_core::config::StoreSettings;
use ossc_core::fetch::{FetchConfig, FetchEngine, FetchProgress};
use ossc_core::http_client::{HttpClientOptions, HttpObjectClient};
use ossc_core::object_client::mock::VecSink;
use ossc_core::object_client::{list_all, ObjectClient, ServiceErrorKind};
use ossc_core::sign::{Credentials, SignatureVersion};
use ossc_core::store_url::AddressingStyle;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> Option<PathBuf> {
    let py = std::env::var_os("OSSC_TEST_PYTHON").map(PathBuf::from)?;
    let ok = Command::new(&py)
        .args(["-c", "import moto.server, boto3"])
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then_some(py)
}

/// Starts `moto_server` on a free loopback port and waits for it: the venv's
/// Python, the server's guard and its endpoint. Without the venv the test
/// fails in CI and is skipped loudly elsewhere.
fn start_moto(test: &str) -> Option<(PathBuf, Moto, String)> {
    let Some(py) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("moto is required in CI: run scripts/setup-env.sh and set OSSC_TEST_PYTHON");
        }
        eprintln!("\n!!!!! SKIPPED {test}: no OSSC_TEST_PYTHON venv with moto (run scripts/test.sh) !!!!!\n");
        return None;
    };
    let port = free_port();
    let moto = Moto(
        Command::new(&py)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((py, moto, format!("http://127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_works_against_moto() {
    let Some((py, _moto, endpoint)) = start_moto("client_works_against_moto") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/moto_seed.py");
    let status = Command::new(&py)
        .args([seed, &endpoint, "mbucket"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "seeding moto failed");

    let settings = StoreSettings {
        endpoint: url::Url::parse(&endpoint).unwrap(),
        region: "us-east-1".into(),
        bucket: "mbucket".into(),
        prefix: String::new(),
        credentials: Some(Credentials {
            access_key_id: "moto-ak".into(),
            access_key_secret: "moto-sk".into(),
            security_token: None,
        }),
        signature_version: SignatureVersion::S3V4,
        addressing: AddressingStyle::Path,
    };
    let client: Arc<dyn ObjectClient> =
        Arc::new(HttpObjectClient::new(&settings, HttpClientOptions::default()).unwrap());

    // Pagination: 1050 keys need two pages of 1000.
    let many = list_all(client.as_ref(), "many/").await.unwrap();
    assert_eq!(many.len(), 1050);
    assert!(many.windows(2).all(|w| w[0].key < w[1].key));
    let page = client.list_page("many/", None, 1000).await.unwrap();
    assert_eq!(page.objects.len(), 1000);
    assert!(page.next_continuation_token.is_some());

    // Awkward keys come back decoded.
    let model = list_all(client.as_ref(), "model/").await.unwrap();
    let keys: Vec<&str> = model.iter().map(|o| o.key.as_str()).collect();
    assert!(
        keys.contains(&"model/dir with space/plus+sign ü.txt"),
        "{keys:?}"
    );

    // HEAD and ranged GET.
    for o in &model {
        let want = std::fs::read(out.path().join(&o.key)).unwrap();
        let head = client.head(&o.key).await.unwrap();
        assert_eq!(head.size, want.len() as u64, "{}", o.key);
        if want.is_empty() {
            continue;
        }
        let sink = VecSink::new();
        let end = (want.len() as u64).min(1000);
        let meta = client
            .get_range(&o.key, 1..end, Some(&head.etag), &sink)
            .await
            .unwrap();
        assert_eq!(meta.object_size, want.len() as u64);
        assert_eq!(&sink.contents()[1..end as usize], &want[1..end as usize]);
    }
    // What moto declares to verify with: the MD5 ETag of a single-part
    // upload, and the SHA-256 an upload carried (asked with checksum mode).
    use ossc_core::checksums::{digest_bytes, DigestKind};
    let digest = |m: &ossc_core::object_client::ObjectMeta, kind| {
        m.checksums
            .digests
            .iter()
            .find(|d| d.kind == kind)
            .map(|d| d.value.clone())
    };
    let want = std::fs::read(out.path().join("model/weights.bin")).unwrap();
    let head = client.head("model/weights.bin").await.unwrap();
    assert_eq!(
        digest(&head, DigestKind::Md5Etag),
        Some(digest_bytes(DigestKind::Md5Etag, &want)),
        "{:?}",
        head.checksums
    );
    let want = std::fs::read(out.path().join("checks/sha256.bin")).unwrap();
    let head = client.head("checks/sha256.bin").await.unwrap();
    assert_eq!(
        digest(&head, DigestKind::Sha256),
        Some(digest_bytes(DigestKind::Sha256, &want)),
        "{:?}",
        head.checksums
    );
    assert_eq!(
        head.checksums.strongest().map(|d| d.kind),
        Some(DigestKind::Sha256)
    );

    let missing = client.head("model/nope").await.unwrap_err();
    // S3 answers a HEAD without a body: the status alone says "not found".
    assert_eq!(
        missing.service_kind(),
        Some(ServiceErrorKind::NotFound),
        "{missing}"
    );

    // Full parallel download, byte for byte.
    let engine = FetchEngine::new(
        client.clone(),
        FetchConfig {
            part_size: 1 << 20,
            max_in_flight: 16,
            ..FetchConfig::default()
        },
    );
    let weights = model.iter().find(|o| o.key == "model/weights.bin").unwrap();
    let sink = Arc::new(VecSink::new());
    let progress = Arc::new(FetchProgress::default());
    let fetched = engine
        .fetch_object(weights, sink.clone(), progress)
        .await
        .unwrap();
    assert_eq!(fetched.size, weights.size);
    let want = std::fs::read(out.path().join("model/weights.bin")).unwrap();
    assert!(
        sink.contents() == want,
        "parallel download differs from the uploaded bytes"
    );
}

/// Web identity (IRSA) against moto's STS, a third-party implementation of
/// `AssumeRoleWithWebIdentity`: our form request is accepted and its XML
/// answer parsed into temporary credentials.
#[tokio::test]
async fn web_identity_credentials_from_motos_sts() {
    use ossc_core::credentials::sts::{AssumeRoleProvider, Flavor};
    use ossc_core::credentials::CredentialProvider;
    let Some((_py, _moto, endpoint)) = start_moto("web_identity_credentials_from_motos_sts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.sig").unwrap();
    let provider = AssumeRoleProvider {
        flavor: Flavor::AwsWebIdentity,
        endpoint,
        role_arn: "arn:aws:iam::123456789012:role/model-reader".into(),
        oidc_provider_arn: None,
        token_file,
        session_name: "ossc-test".into(),
        ca_certificates: Vec::new(),
    };
    let got = provider.fetch().await.unwrap();
    assert!(
        got.credentials.access_key_id.starts_with("ASIA"),
        "{:?}",
        got.credentials
    );
    assert!(!got.credentials.access_key_secret.is_empty());
    assert!(got
        .credentials
        .security_token
        .as_deref()
        .is_some_and(|t| !t.is_empty()));
    let expiry = got.expires_at.expect("STS credentials expire");
    assert!(expiry > std::time::SystemTime::now());
}

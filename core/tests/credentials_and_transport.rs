//! Credential providers, TLS trust and proxies, end to end: the real HTTP
//! client and fetch engine against the embedded store (HTTP and HTTPS), with
//! fake metadata and STS servers and a counting proxy started by each test.
//!
//! Every download is compared byte for byte with what the store holds.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{store_config, BUCKET};
use ossc_core::config::StoreSettings;
use ossc_core::credentials::providers::FileProvider;
use ossc_core::credentials::{format_time, CredentialSource};
use ossc_core::fetch::{FetchConfig, FetchEngine, FetchProgress};
use ossc_core::http_client::{HttpClientOptions, HttpObjectClient};
use ossc_core::object_client::mock::VecSink;
use ossc_core::object_client::ObjectClient;
use ossc_core::retry::RetryPolicy;
use ossc_core::sign::{Credentials, SignatureVersion};
use ossc_core::store_server::tls::TlsIdentity;
use ossc_core::store_server::{EmbeddedStore, RunningStore};
use ossc_core::transport::ProxySettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "model/weights.bin";
/// A name no resolver knows: only the test proxy or a pinned address reach it.
const STORE_HOST: &str = "store.ossc.test";

fn put_object(root: &Path, len: usize) -> Vec<u8> {
    let bytes = ossc_core::object_client::mock::pseudo_random_bytes(len, 7);
    common::put(root, KEY, &bytes);
    bytes
}

fn settings(endpoint: &str, credentials: Option<Credentials>) -> StoreSettings {
    common::store_settings(endpoint, BUCKET, credentials, SignatureVersion::OssV4)
}

fn options() -> HttpClientOptions {
    HttpClientOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        },
        read_timeout: Duration::from_secs(10),
        ca_certificates: Some(Vec::new()),
        proxy: Some(ProxySettings::default()),
        ..HttpClientOptions::default()
    }
}

/// Loads [`KEY`] through the fetch engine and returns its bytes.
async fn load(client: Arc<HttpObjectClient>, part_size: u64, in_flight: usize) -> Vec<u8> {
    let meta = client.head(KEY).await.unwrap();
    let engine = FetchEngine::new(
        client,
        FetchConfig {
            part_size,
            max_in_flight: in_flight,
            ..FetchConfig::default()
        },
    );
    let sink = Arc::new(VecSink::with_len(meta.size as usize));
    let fetched = engine
        .fetch_object(&meta, sink.clone(), Arc::new(FetchProgress::default()))
        .await
        .unwrap();
    assert!(fetched.crc64_verified);
    sink.contents()
}

fn write_credentials_file(
    path: &Path,
    id: &str,
    secret: &str,
    token: &str,
    expires_in: Option<Duration>,
) {
    let expiration = expires_in.map_or(String::new(), |d| format_time(SystemTime::now() + d));
    let doc = serde_json::json!({
        "AccessKeyId": id, "AccessKeySecret": secret, "SecurityToken": token, "Expiration": expiration,
    });
    // Replace atomically, as a credential agent does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn key(id: &str, token: &str) -> Credentials {
    Credentials::new(id, format!("secret-of-{id}")).with_token(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_spanning_credential_rotations_finishes_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 12 * 1024 * 1024);
    let mut config = store_config(dir.path(), vec![key("one", "t1")]);
    // 100 ms per request, 96 parts two at a time: the load takes about 5 s.
    config.faults.latency_ms = 100;
    let store = Arc::new(EmbeddedStore::start(config).unwrap());
    let file = dir.path().join("credentials");
    write_credentials_file(
        &file,
        "one",
        "secret-of-one",
        "t1",
        Some(Duration::from_secs(3)),
    );
    let source = Arc::new(CredentialSource::new(Box::new(FileProvider::new(&file))));
    let client = Arc::new(
        HttpObjectClient::with_credentials(
            &settings(&store.endpoint_url(), None),
            options(),
            Some(source.clone()),
        )
        .unwrap(),
    );

    let started = Instant::now();
    let rotate = {
        let (store, file) = (store.clone(), file.clone());
        tokio::spawn(async move {
            // Revoked before its expiry: in-flight requests are rejected and
            // re-sent with the re-read file.
            tokio::time::sleep(Duration::from_millis(800)).await;
            write_credentials_file(
                &file,
                "two",
                "secret-of-two",
                "t2",
                Some(Duration::from_secs(2)),
            );
            store.set_credentials(vec![key("two", "t2")]);
            // A regular rotation: the next key is valid before the old one expires,
            // the old one is dropped at its expiry.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            write_credentials_file(&file, "three", "secret-of-three", "t3", None);
            store.set_credentials(vec![key("two", "t2"), key("three", "t3")]);
            tokio::time::sleep(Duration::from_millis(1000)).await;
            store.set_credentials(vec![key("three", "t3")]);
        })
    };
    let got = load(client.clone(), 128 * 1024, 2).await;
    let elapsed = started.elapsed();
    rotate.await.unwrap();
    assert!(got == expected, "bytes differ");
    assert!(
        elapsed > Duration::from_millis(2800),
        "the load must span the last switch ({elapsed:?})"
    );
    assert_eq!(
        source.current().await.unwrap().credentials.access_key_id,
        "three"
    );
    let stats = store.stats();
    assert!(
        stats.auth_failures >= 1,
        "the revoked key was never rejected: {stats:?}"
    );
    // The old keys are refused by the store now.
    let old = HttpObjectClient::new(
        &settings(&store.endpoint_url(), Some(key("one", "t1"))),
        options(),
    )
    .unwrap();
    let e = old.head(KEY).await.unwrap_err();
    assert_eq!(e.service_code(), Some("InvalidAccessKeyId"), "{e}");
}

#[tokio::test]
async fn expired_and_invalid_credentials_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    put_object(dir.path(), 1000);
    let store = EmbeddedStore::start(store_config(dir.path(), vec![key("good", "tok")])).unwrap();
    let file = dir.path().join("credentials");
    let client_for = |file: &Path| {
        let source = CredentialSource::new(Box::new(FileProvider::new(file)));
        HttpObjectClient::with_credentials(
            &settings(&store.endpoint_url(), None),
            options(),
            Some(Arc::new(source)),
        )
        .unwrap()
    };

    let doc = r#"{"AccessKeyId":"good","AccessKeySecret":"secret-of-good","SecurityToken":"tok","Expiration":"2020-01-01T00:00:00Z"}"#;
    std::fs::write(&file, doc).unwrap();
    let e = client_for(&file).head(KEY).await.unwrap_err().to_string();
    assert!(
        e.contains("expired at 2020-01-01T00:00:00Z") && e.contains(&file.display().to_string()),
        "{e}"
    );
    assert!(!e.contains("secret-of-good"), "{e}");

    write_credentials_file(&file, "wrong", "secret-of-wrong", "tok", None);
    let e = client_for(&file).head(KEY).await.unwrap_err();
    assert_eq!(e.service_code(), Some("InvalidAccessKeyId"), "{e}");

    write_credentials_file(&file, "good", "secret-of-good", "stale-token", None);
    let e = client_for(&file).head(KEY).await.unwrap_err();
    assert_eq!(e.service_code(), Some("InvalidSecurityToken"), "{e}");

    let e = client_for(&dir.path().join("missing"))
        .head(KEY)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot open"), "{e}");
}

// ---------------------------------------------------------------------------
// Fake metadata and STS servers.

/// One request as a fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

type Responder = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A tiny HTTP/1.1 server answering each request with `respond`.
struct FakeServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(respond: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::new(respond);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (seen, respond) = (seen.clone(), respond.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (seen, respond) = (seen.clone(), respond.clone());
                                async move {
                                    use http_body_util::BodyExt;
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let request = Seen {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_owned(),
                                        headers: parts
                                            .headers
                                            .iter()
                                            .map(|(k, v)| {
                                                (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                            })
                                            .collect(),
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                    };
                                    let (status, text) = respond(&request);
                                    seen.lock().unwrap().push(request);
                                    Ok::<_, std::convert::Infallible>(
                                        hyper::Response::builder()
                                            .status(status)
                                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                                text,
                                            )))
                                            .unwrap(),
                                    )
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds a client for `store` through the provider chain with `env`.
fn chain_client(
    store: &RunningStore,
    signature: SignatureVersion,
    env: &[(&str, String)],
) -> HttpObjectClient {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut s = settings(&store.endpoint_url(), None);
    s.signature_version = signature;
    HttpObjectClient::from_environment(&s, options(), &|k| env.get(k).cloned()).unwrap()
}

fn in_an_hour() -> String {
    format_time(SystemTime::now() + Duration::from_secs(3600))
}

#[tokio::test]
async fn ecs_ram_role_uses_the_hardened_token_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 300_000);
    let store =
        EmbeddedStore::start(store_config(dir.path(), vec![key("STS.ecs", "ecs-token")])).unwrap();
    let expiry = in_an_hour();
    let metadata = FakeServer::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token") if r.headers.contains_key("x-aliyun-ecs-metadata-token-ttl-seconds") => {
            (200, "md-token".into())
        }
        ("GET", "/latest/meta-data/ram/security-credentials/my-role")
            if r.headers.get("x-aliyun-ecs-metadata-token").map(String::as_str) == Some("md-token") =>
        {
            (200, format!(r#"{{"AccessKeyId":"STS.ecs","AccessKeySecret":"secret-of-STS.ecs","SecurityToken":"ecs-token","Expiration":"{expiry}","Code":"Success"}}"#))
        }
        _ => (403, "denied".into()),
    })
    .await;
    let client = chain_client(
        &store,
        SignatureVersion::OssV4,
        &[
            ("ALIBABA_CLOUD_ECS_METADATA", "my-role".into()),
            ("OSS_CONNECTOR_ECS_METADATA_ENDPOINT", metadata.url()),
        ],
    );
    let got = load(Arc::new(client), 64 * 1024, 4).await;
    assert!(got == expected);
    let seen = metadata.seen();
    assert_eq!(seen[0].method, "PUT", "the token comes first: {seen:?}");
    // Credentials valid for an hour are fetched once for the whole load.
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn rrsa_exchanges_the_oidc_token_with_sts() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 200_000);
    let store = EmbeddedStore::start(store_config(
        dir.path(),
        vec![key("STS.rrsa", "rrsa-token")],
    ))
    .unwrap();
    let token_file = dir.path().join("oidc-token");
    std::fs::write(&token_file, "eyJ.oidc.jwt\n").unwrap();
    let expiry = in_an_hour();
    let sts = FakeServer::start(move |r| {
        let ok = r.method == "POST"
            && r.body.contains("Action=AssumeRoleWithOIDC")
            && r.body.contains("OIDCToken=eyJ.oidc.jwt")
            && r.body.contains("RoleArn=acs%3Aram%3A%3A1%3Arole%2Fr")
            && r.body.contains("OIDCProviderArn=acs%3Aram%3A%3A1%3Aoidc-provider%2Fp");
        if ok {
            (200, format!(r#"{{"RequestId":"x","Credentials":{{"AccessKeyId":"STS.rrsa","AccessKeySecret":"secret-of-STS.rrsa","SecurityToken":"rrsa-token","Expiration":"{expiry}"}}}}"#))
        } else {
            (400, r#"{"Code":"InvalidParameter","Message":"bad request"}"#.into())
        }
    })
    .await;
    let env = [
        ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r".to_owned()),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::1:oidc-provider/p".to_owned(),
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("ALIBABA_CLOUD_STS_ENDPOINT", sts.url()),
    ];
    let got = load(
        Arc::new(chain_client(&store, SignatureVersion::OssV4, &env)),
        64 * 1024,
        4,
    )
    .await;
    assert!(got == expected);
    assert_eq!(sts.seen().len(), 1);

    // An STS refusal is reported with its answer.
    std::fs::write(&token_file, "other-token").unwrap();
    let e = chain_client(&store, SignatureVersion::OssV4, &env)
        .head(KEY)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("STS: HTTP 400") && e.contains("InvalidParameter"),
        "{e}"
    );
}

#[tokio::test]
async fn aws_web_identity_and_imds_v2_sign_s3_requests() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 150_000);
    let store = EmbeddedStore::start(store_config(
        dir.path(),
        vec![key("ASIAWEB", "web-token"), key("ASIAIMDS", "imds-token")],
    ))
    .unwrap();
    let expiry = in_an_hour();
    let sts = {
        let expiry = expiry.clone();
        FakeServer::start(move |r| {
            if r.body.contains("Action=AssumeRoleWithWebIdentity") && r.body.contains("WebIdentityToken=k8s-sa-token") {
                (200, format!("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>secret-of-ASIAWEB</SecretAccessKey><SessionToken>web-token</SessionToken><Expiration>{expiry}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"))
            } else {
                (403, "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>".into())
            }
        })
        .await
    };
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, "k8s-sa-token").unwrap();
    let web = chain_client(
        &store,
        SignatureVersion::S3V4,
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
            ("AWS_ENDPOINT_URL_STS", sts.url()),
        ],
    );
    assert!(load(Arc::new(web), 64 * 1024, 4).await == expected);

    let imds = FakeServer::start(move |r| {
        let token_ok = r.headers.get("x-aws-ec2-metadata-token").map(String::as_str) == Some("imds-session");
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/latest/api/token") if r.headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") => {
                (200, "imds-session".into())
            }
            ("GET", "/latest/meta-data/iam/security-credentials/") if token_ok => (200, "node-role\n".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/node-role") if token_ok => (
                200,
                format!(r#"{{"Code":"Success","AccessKeyId":"ASIAIMDS","SecretAccessKey":"secret-of-ASIAIMDS","Token":"imds-token","Expiration":"{expiry}"}}"#),
            ),
            _ => (401, String::new()),
        }
    })
    .await;
    let client = chain_client(
        &store,
        SignatureVersion::S3V4,
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())],
    );
    assert!(load(Arc::new(client), 64 * 1024, 4).await == expected);
    assert_eq!(imds.seen().len(), 3);
}

#[tokio::test]
async fn credential_process_output_signs_requests() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 100_000);
    let store =
        EmbeddedStore::start(store_config(dir.path(), vec![key("proc", "proc-token")])).unwrap();
    let command = r#"printf '{"AccessKeyId":"proc","AccessKeySecret":"secret-of-proc","SecurityToken":"proc-token"}'"#;
    let client = chain_client(
        &store,
        SignatureVersion::OssV4,
        &[("OSS_CONNECTOR_CREDENTIAL_PROCESS", command.into())],
    );
    assert!(load(Arc::new(client), 64 * 1024, 4).await == expected);
}

// ---------------------------------------------------------------------------
// TLS and proxies.

/// A private CA and a server identity it signed for `localhost`,
/// `127.0.0.1` and [`STORE_HOST`]; returns the CA's PEM too.
fn private_ca() -> (TlsIdentity, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ossc test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec![
        "localhost".into(),
        "127.0.0.1".into(),
        STORE_HOST.into(),
    ])
    .unwrap();
    let server = server_params.signed_by(&server_key, &issuer).unwrap();
    (
        TlsIdentity::from_pem(server.pem(), server_key.serialize_pem()),
        ca.pem(),
    )
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn https_store_is_trusted_through_the_ca_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 500_000);
    let (identity, ca_pem) = private_ca();
    let store = EmbeddedStore::start_tls(store_config(dir.path(), vec![key("ak", "t")]), &identity)
        .unwrap();
    assert!(store.endpoint_url().starts_with("https://127.0.0.1:"));
    let ca_file = write_pem(dir.path(), "ca.pem", &ca_pem);
    let s = settings(&store.endpoint_url(), Some(key("ak", "t")));
    let env = |pairs: Vec<(&'static str, String)>| {
        let map: HashMap<&str, String> = pairs.into_iter().collect();
        move |k: &str| map.get(k).cloned()
    };
    let with_ca = HttpObjectClient::from_environment(
        &s,
        HttpClientOptions {
            ca_certificates: None,
            ..options()
        },
        &env(vec![(
            "OSS_CONNECTOR_CA_FILE",
            ca_file.display().to_string(),
        )]),
    )
    .unwrap();
    assert!(load(Arc::new(with_ca), 128 * 1024, 4).await == expected);

    let without = HttpObjectClient::from_environment(
        &s,
        HttpClientOptions {
            ca_certificates: None,
            ..options()
        },
        &env(vec![]),
    )
    .unwrap();
    let e = without.head(KEY).await.unwrap_err().to_string();
    assert!(
        e.contains("certificate") && e.to_lowercase().contains("unknown"),
        "{e}"
    );
    // SSL_CERT_FILE replaces the system bundle and is trusted as well.
    let via_ssl_cert_file = HttpObjectClient::from_environment(
        &s,
        HttpClientOptions {
            ca_certificates: None,
            ..options()
        },
        &env(vec![("SSL_CERT_FILE", ca_file.display().to_string())]),
    )
    .unwrap();
    assert_eq!(
        via_ssl_cert_file.head(KEY).await.unwrap().size,
        expected.len() as u64
    );
}

/// A forward (absolute-URI) and `CONNECT` proxy that sends every connection
/// to `target`, whatever host it names, and records each first line.
struct CountingProxy {
    addr: SocketAddr,
    first_lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = first_lines.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let lines = lines.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let first = text.lines().next().unwrap_or("").to_owned();
                    lines.lock().unwrap().push(first.clone());
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if first.starts_with("CONNECT ") {
                        let _ = client
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await;
                    } else if upstream.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Self {
            addr,
            first_lines,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn first_lines(&self) -> Vec<String> {
        self.first_lines.lock().unwrap().clone()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn proxy_from(pairs: &[(&str, String)]) -> ProxySettings {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    ProxySettings::from_lookup(&|k| map.get(k).cloned())
}

#[tokio::test]
async fn http_and_https_proxies_carry_the_load_and_no_proxy_bypasses_them() {
    let dir = tempfile::tempdir().unwrap();
    let expected = put_object(dir.path(), 400_000);
    let creds = key("ak", "t");
    let plain = EmbeddedStore::start(store_config(dir.path(), vec![creds.clone()])).unwrap();
    let (identity, ca_pem) = private_ca();
    let tls =
        EmbeddedStore::start_tls(store_config(dir.path(), vec![creds.clone()]), &identity).unwrap();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();

    // http:// through HTTP_PROXY: absolute-URI requests naming the store host.
    let proxy = CountingProxy::start(plain.addr()).await;
    let endpoint = format!("http://{STORE_HOST}:{}", plain.addr().port());
    let client = HttpObjectClient::new(
        &settings(&endpoint, Some(creds.clone())),
        HttpClientOptions {
            proxy: Some(proxy_from(&[("HTTP_PROXY", proxy.url())])),
            ..options()
        },
    )
    .unwrap();
    assert!(load(Arc::new(client), 128 * 1024, 2).await == expected);
    let lines = proxy.first_lines();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("HEAD {endpoint}/{BUCKET}/"))
                || l.starts_with(&format!("GET {endpoint}/{BUCKET}/"))),
        "{lines:?}"
    );

    // https:// through HTTPS_PROXY: a CONNECT tunnel, TLS verified end to end.
    let proxy = CountingProxy::start(tls.addr()).await;
    let endpoint = format!("https://{STORE_HOST}:{}", tls.addr().port());
    let client = HttpObjectClient::new(
        &settings(&endpoint, Some(creds.clone())),
        HttpClientOptions {
            proxy: Some(proxy_from(&[("https_proxy", proxy.url())])),
            ca_certificates: Some(vec![ca.clone()]),
            ..options()
        },
    )
    .unwrap();
    assert!(load(Arc::new(client), 128 * 1024, 2).await == expected);
    let lines = proxy.first_lines();
    assert!(!lines.is_empty());
    let connect = format!("CONNECT {STORE_HOST}:{} ", tls.addr().port());
    assert!(lines.iter().all(|l| l.starts_with(&connect)), "{lines:?}");

    // NO_PROXY names the store: the proxy sees nothing, the load still works
    // (the name is pinned to the store's address for this client).
    let proxy = CountingProxy::start(plain.addr()).await;
    let endpoint = format!("http://{STORE_HOST}:{}", plain.addr().port());
    let client = HttpObjectClient::new(
        &settings(&endpoint, Some(creds.clone())),
        HttpClientOptions {
            proxy: Some(proxy_from(&[
                ("HTTP_PROXY", proxy.url()),
                ("NO_PROXY", "example.com, .ossc.test".into()),
            ])),
            resolve: vec![(STORE_HOST.into(), plain.addr())],
            ..options()
        },
    )
    .unwrap();
    assert!(load(Arc::new(client), 128 * 1024, 2).await == expected);
    assert_eq!(proxy.first_lines(), Vec::<String>::new());
}

//! Tests of the embedded store over real HTTP (reqwest, or raw TCP where a
//! client library would normalise the request or hide the wire behaviour).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handler::{resolve_range, RangeOutcome};
use super::*;
use crate::crc64::crc64;
use crate::sign::{sign, Credentials, RequestToSign, SignatureVersion};

const BUCKET: &str = "bkt";
const REGION: &str = "cn-beijing";
const OBJ: &str = "dir/obj.bin";
const OBJ_LEN: usize = 1000;

/// Deterministic, non-repeating-looking content.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + (i >> 8) * 7) as u8).wrapping_add(salt))
        .collect()
}

fn put_file(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: RunningStore,
    http: reqwest::Client,
}

impl Fixture {
    fn start(credentials: Vec<Credentials>) -> Self {
        Self::start_with(credentials, RangeBehavior::Oss)
    }

    fn start_with(credentials: Vec<Credentials>, range_behavior: RangeBehavior) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        put_file(&root, &format!("{BUCKET}/{OBJ}"), &pattern(OBJ_LEN, 0));
        let store = EmbeddedStore::start(StoreServerConfig {
            root: root.clone(),
            addr: "127.0.0.1:0".parse().unwrap(),
            credentials,
            region: REGION.to_string(),
            faults: FaultConfig::default(),
            range_behavior,
            checksums: Default::default(),
        })
        .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            _dir: dir,
            root,
            store,
            http,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.store.endpoint_url())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = self.http.get(self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.unwrap()
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn hdr(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Text of every `<tag>` element (no nesting of the same tag).
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let j = after.find(&close).expect("closed tag");
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

fn tag(xml: &str, name: &str) -> Option<String> {
    tags(xml, name).into_iter().next()
}

fn common_prefixes(xml: &str) -> Vec<String> {
    tags(xml, "CommonPrefixes")
        .iter()
        .map(|cp| tag(cp, "Prefix").unwrap())
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8().unwrap().into_owned()
}

/// One raw HTTP/1.1 exchange with `Connection: close`; returns the head and
/// the body bytes read until EOF, or the read error.
async fn raw_exchange(
    addr: std::net::SocketAddr,
    request: &str,
) -> (String, Result<Vec<u8>, std::io::Error>) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let result = loop {
        match sock.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break Err(e),
        }
    };
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    (head, result.map(|()| body))
}

async fn raw_get(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (head, body) = raw_exchange(addr, &req).await;
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, String::from_utf8_lossy(&body.unwrap()).into_owned())
}

fn head_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[tokio::test]
async fn path_style_and_virtual_hosted_serve_the_same_object() {
    let fx = Fixture::start(vec![]);
    let want = pattern(OBJ_LEN, 0);

    let resp = fx
        .get_with(&format!("/{BUCKET}/{OBJ}"), &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(resp.status(), 200);
    let etag = hdr(&resp, "etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with("-1\"") && etag.len() == 36,
        "{etag}"
    );
    assert!(hdr(&resp, "last-modified").is_some());
    assert_eq!(hdr(&resp, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(hdr(&resp, "content-encoding"), None);
    assert_eq!(
        hdr(&resp, "x-oss-hash-crc64ecma").unwrap(),
        crc64(&want).to_string()
    );
    assert_eq!(hdr(&resp, "x-oss-request-id").unwrap().len(), 24);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &want[..]);

    // Virtual-hosted: the first label of the Host names the bucket.
    let addr = fx.store.addr();
    let vhost = reqwest::Client::builder()
        .no_proxy()
        .resolve("bkt.oss-test.example", addr)
        .resolve("nobucket.oss-test.example", addr)
        .build()
        .unwrap();
    let resp = vhost
        .get(format!("http://bkt.oss-test.example:{}/{OBJ}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(hdr(&resp, "etag").unwrap(), etag);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &want[..]);

    // A host whose first label is no bucket falls back to path style.
    let resp = vhost
        .get(format!(
            "http://nobucket.oss-test.example:{}/{BUCKET}/{OBJ}",
            addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &want[..]);
}

#[tokio::test]
async fn s3_range_behavior_clamps_past_the_end_ranges() {
    // What the AWS SDK downloaders (s5cmd) rely on: a last part that asks for
    // more than exists gets the bytes that exist, as a 206.
    let oss = Fixture::start(Vec::new());
    let s3 = Fixture::start_with(Vec::new(), RangeBehavior::S3);
    let path = format!("/{BUCKET}/{OBJ}");
    let end = OBJ_LEN as u64 + 5000;
    let range = format!("bytes=100-{end}");
    let r = oss.get_with(&path, &[("range", &range)]).await;
    assert_eq!(
        r.status(),
        200,
        "OSS answers an out-of-bounds range with the whole object"
    );
    assert_eq!(r.bytes().await.unwrap().len(), OBJ_LEN);
    let r = s3.get_with(&path, &[("range", &range)]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-{}/{OBJ_LEN}", OBJ_LEN - 1)
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &pattern(OBJ_LEN, 0)[100..]
    );
}

#[tokio::test]
async fn range_forms_and_the_oss_whole_object_quirk() {
    let fx = Fixture::start(vec![]);
    let want = pattern(OBJ_LEN, 0);
    // (range, standard behaviour, expected: Some(slice) = 206, None = 200 whole, 416 when `Err`)
    type Expect = Result<Option<std::ops::Range<usize>>, ()>;
    let cases: Vec<(&str, bool, Expect)> = vec![
        ("bytes=0-9", false, Ok(Some(0..10))),
        ("bytes=0-9", true, Ok(Some(0..10))),
        ("bytes=990-", false, Ok(Some(990..1000))),
        ("bytes=-10", false, Ok(Some(990..1000))),
        ("bytes=0-999", false, Ok(Some(0..1000))),
        ("bytes=500-2000", false, Ok(None)),
        ("bytes=500-2000", true, Ok(Some(500..1000))),
        ("bytes=1000-2000", false, Ok(None)),
        ("bytes=1000-2000", true, Err(())),
        ("bytes=1000-", true, Err(())),
        ("bytes=-2000", false, Ok(None)),
        ("bytes=-2000", true, Ok(Some(0..1000))),
        ("bytes=5-2", false, Ok(None)),
        ("bytes=5-2", true, Err(())),
        ("byte=0-9", false, Ok(None)),
        ("byte=0-9", true, Err(())),
        ("bytes=0-1,5-6", false, Ok(None)),
        ("bytes=0-1,5-6", true, Err(())),
        ("bytes=-0", true, Err(())),
    ];
    for (range, standard, expect) in cases {
        let mut headers = vec![("range", range)];
        if standard {
            headers.push(("x-oss-range-behavior", "standard"));
        }
        let resp = fx.get_with(&format!("/{BUCKET}/{OBJ}"), &headers).await;
        let status = resp.status().as_u16();
        let content_range = hdr(&resp, "content-range");
        let len: usize = hdr(&resp, "content-length").unwrap().parse().unwrap();
        let body = resp.bytes().await.unwrap();
        let ctx = format!("{range} standard={standard}");
        match expect {
            Ok(Some(r)) => {
                assert_eq!(status, 206, "{ctx}");
                assert_eq!(
                    content_range.unwrap(),
                    format!("bytes {}-{}/{OBJ_LEN}", r.start, r.end - 1),
                    "{ctx}"
                );
                assert_eq!(len, r.len(), "{ctx}");
                assert_eq!(&body[..], &want[r], "{ctx}");
            }
            Ok(None) => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(content_range, None, "{ctx}");
                assert_eq!(&body[..], &want[..], "{ctx}");
            }
            Err(()) => {
                assert_eq!(status, 416, "{ctx}");
                let xml = String::from_utf8(body.to_vec()).unwrap();
                assert_eq!(tag(&xml, "Code").as_deref(), Some("InvalidRange"), "{ctx}");
            }
        }
    }
}

#[test]
fn ranges_of_an_empty_object_are_never_partial() {
    assert_eq!(resolve_range("bytes=0-0", 0, false), RangeOutcome::Whole);
    assert_eq!(
        resolve_range("bytes=0-", 0, true),
        RangeOutcome::Unsatisfiable
    );
    assert_eq!(
        resolve_range("bytes=-1", 0, true),
        RangeOutcome::Unsatisfiable
    );
    assert_eq!(
        resolve_range("bytes=0-0", 1, true),
        RangeOutcome::Partial(0, 0)
    );
}

#[tokio::test]
async fn if_match_mismatch_is_412_and_if_none_match_is_304() {
    let fx = Fixture::start(vec![]);
    let path = format!("/{BUCKET}/{OBJ}");
    let etag = hdr(&fx.get(&path).await, "etag").unwrap();
    let bare = etag.trim_matches('"').to_string();

    for good in [etag.as_str(), bare.as_str(), "*"] {
        let resp = fx
            .get_with(&path, &[("if-match", good), ("range", "bytes=0-3")])
            .await;
        assert_eq!(resp.status(), 206, "If-Match {good}");
    }
    let resp = fx
        .get_with(
            &path,
            &[("if-match", "\"0123456789ABCDEF0123456789ABCDEF\"")],
        )
        .await;
    assert_eq!(resp.status(), 412);
    let xml = resp.text().await.unwrap();
    assert_eq!(tag(&xml, "Code").as_deref(), Some("PreconditionFailed"));

    let resp = fx.get_with(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), 304);
}

#[tokio::test]
async fn head_reports_metadata_and_errors_in_headers() {
    let fx = Fixture::start(vec![]);
    let want = pattern(OBJ_LEN, 0);
    let resp = fx
        .http
        .head(fx.url(&format!("/{BUCKET}/{OBJ}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(hdr(&resp, "content-length").unwrap(), OBJ_LEN.to_string());
    assert_eq!(
        hdr(&resp, "x-oss-hash-crc64ecma").unwrap(),
        crc64(&want).to_string()
    );
    assert!(hdr(&resp, "etag").is_some() && hdr(&resp, "last-modified").is_some());

    for (path, code, ec) in [
        (format!("/{BUCKET}/missing"), "NoSuchKey", "0026-00000001"),
        ("/nobucket/x".to_string(), "NoSuchBucket", "0015-00000101"),
    ] {
        let resp = fx.http.head(fx.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(hdr(&resp, "x-oss-ec").as_deref(), Some(ec));
        let err = base64::engine::general_purpose::STANDARD
            .decode(hdr(&resp, "x-oss-err").unwrap())
            .unwrap();
        let xml = String::from_utf8(err).unwrap();
        assert_eq!(tag(&xml, "Code").as_deref(), Some(code));
        assert_eq!(
            tag(&xml, "RequestId"),
            hdr(&resp, "x-oss-request-id"),
            "{path}"
        );
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn errors_are_oss_xml_documents_with_the_right_status() {
    let fx = Fixture::start(vec![]);
    let cases = [
        (
            reqwest::Method::GET,
            format!("/{BUCKET}/nope"),
            404,
            "NoSuchKey",
        ),
        (
            reqwest::Method::GET,
            "/nobucket/x".to_string(),
            404,
            "NoSuchBucket",
        ),
        (
            reqwest::Method::GET,
            "/nobucket?list-type=2".to_string(),
            404,
            "NoSuchBucket",
        ),
        (
            reqwest::Method::PUT,
            format!("/{BUCKET}/{OBJ}"),
            405,
            "MethodNotAllowed",
        ),
        (
            reqwest::Method::DELETE,
            format!("/{BUCKET}/{OBJ}"),
            405,
            "MethodNotAllowed",
        ),
        (
            reqwest::Method::GET,
            format!("/{BUCKET}?list-type=2&max-keys=lots"),
            400,
            "InvalidArgument",
        ),
        (
            reqwest::Method::GET,
            format!("/{BUCKET}?list-type=2&continuation-token=%25%25"),
            400,
            "InvalidArgument",
        ),
    ];
    for (method, path, status, code) in cases {
        let resp = fx
            .http
            .request(method.clone(), fx.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let request_id = hdr(&resp, "x-oss-request-id").unwrap();
        let xml = resp.text().await.unwrap();
        assert_eq!(tag(&xml, "Code").as_deref(), Some(code), "{xml}");
        assert!(tag(&xml, "Message").is_some_and(|m| !m.is_empty()));
        assert_eq!(tag(&xml, "RequestId"), Some(request_id));
        assert!(tag(&xml, "HostId").is_some() && tag(&xml, "EC").is_some());
    }
}

#[tokio::test]
async fn dot_dot_keys_never_escape_the_bucket() {
    let fx = Fixture::start(vec![]);
    const SECRET: &str = "top-secret-content";
    put_file(&fx.root, "secret.txt", SECRET.as_bytes());
    put_file(&fx.root, "other/secret.txt", SECRET.as_bytes());
    let addr = fx.store.addr();
    let paths = [
        format!("/{BUCKET}/../other/secret.txt"),
        format!("/{BUCKET}/../secret.txt"),
        format!("/{BUCKET}/%2E%2E/other/secret.txt"),
        format!("/{BUCKET}/..%2Fsecret.txt"),
        format!("/{BUCKET}/dir/../../secret.txt"),
        format!("/{BUCKET}/./{OBJ}"),
        format!("/{BUCKET}//{OBJ}"),
        format!("/{BUCKET}/dir/"),
        "/../secret.txt".to_string(),
        "/%2E%2E/secret.txt".to_string(),
    ];
    for path in &paths {
        let (status, body) = raw_get(addr, "127.0.0.1", path).await;
        assert!(matches!(status, 400 | 404), "{path}: {status}");
        assert!(!body.contains(SECRET), "{path} leaked the secret");
        if status == 404 {
            assert!(
                tag(&body, "Code").is_some_and(|c| c.starts_with("NoSuch")),
                "{body}"
            );
        }
    }
    // Virtual-hosted style too.
    for path in [
        "/../secret.txt",
        "/..%2F..%2Fsecret.txt",
        "/dir/../../other/secret.txt",
    ] {
        let (status, body) = raw_get(addr, "bkt.store.example", path).await;
        assert!(matches!(status, 400 | 404), "{path}: {status}");
        assert!(!body.contains(SECRET), "{path} leaked the secret");
    }
    // A listing prefix with `..` lists nothing.
    let xml = fx
        .get(&format!("/{BUCKET}?list-type=2&prefix=../"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tag(&xml, "KeyCount").as_deref(), Some("0"), "{xml}");
}

#[tokio::test]
async fn list_v2_paginates_over_1200_keys() {
    let fx = Fixture::start(vec![]);
    let mut expected: Vec<String> = (0..1200)
        .map(|i| format!("many/{:04}-{}", (i * 7919) % 1200, i % 3))
        .collect();
    for key in &expected {
        put_file(&fx.root, &format!("{BUCKET}/{key}"), key.as_bytes());
    }
    expected.sort();

    // max-keys=1000 (and anything larger is clamped to it).
    for max in ["1000", "5000"] {
        let xml = fx
            .get(&format!(
                "/{BUCKET}?list-type=2&prefix=many/&max-keys={max}"
            ))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(tag(&xml, "MaxKeys").as_deref(), Some("1000"));
        assert_eq!(tag(&xml, "KeyCount").as_deref(), Some("1000"));
        assert_eq!(tag(&xml, "IsTruncated").as_deref(), Some("true"));
        let token = tag(&xml, "NextContinuationToken").unwrap();
        assert_eq!(tags(&xml, "Key"), expected[..1000]);
        let sizes: Vec<u64> = tags(&xml, "Size")
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(sizes.iter().all(|&s| s == 11));
        assert!(tags(&xml, "LastModified")
            .iter()
            .all(|t| t.len() == 24 && t.ends_with('Z')));
        assert!(tags(&xml, "StorageClass").iter().all(|c| c == "Standard"));

        let mut url = url::Url::parse(&fx.url(&format!("/{BUCKET}"))).unwrap();
        url.query_pairs_mut()
            .append_pair("list-type", "2")
            .append_pair("prefix", "many/")
            .append_pair("max-keys", "1000")
            .append_pair("continuation-token", &token);
        let xml = fx.http.get(url).send().await.unwrap().text().await.unwrap();
        assert_eq!(tag(&xml, "KeyCount").as_deref(), Some("200"));
        assert_eq!(tag(&xml, "IsTruncated").as_deref(), Some("false"));
        assert_eq!(tag(&xml, "NextContinuationToken"), None);
        assert_eq!(tag(&xml, "ContinuationToken"), Some(token));
        assert_eq!(tags(&xml, "Key"), expected[1000..]);
    }

    // Default page size is 100: following tokens yields every key once, in order.
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = url::Url::parse(&fx.url(&format!("/{BUCKET}"))).unwrap();
        url.query_pairs_mut()
            .append_pair("list-type", "2")
            .append_pair("prefix", "many/");
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("continuation-token", t);
        }
        let xml = fx.http.get(url).send().await.unwrap().text().await.unwrap();
        assert_eq!(tag(&xml, "MaxKeys").as_deref(), Some("100"));
        all.extend(tags(&xml, "Key"));
        pages += 1;
        match tag(&xml, "NextContinuationToken") {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 12);
    assert_eq!(all, expected);
}

#[tokio::test]
async fn list_delimiter_start_after_and_url_encoding() {
    let fx = Fixture::start(vec![]);
    let keys = [
        "d/a b.txt",
        "d/c+d.txt",
        "d/sub/x.txt",
        "d/sub/y.txt",
        "d/zz/q",
        "d/ünï.txt",
        "e.txt",
    ];
    for k in keys {
        put_file(&fx.root, &format!("{BUCKET}/{k}"), b"x");
    }
    let list = |query: Vec<(&str, String)>| {
        let mut url = url::Url::parse(&fx.url(&format!("/{BUCKET}"))).unwrap();
        url.query_pairs_mut().append_pair("list-type", "2");
        for (k, v) in &query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let http = fx.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };

    // Delimiter: sub-directories roll up into CommonPrefixes.
    let xml = list(vec![("prefix", "d/".into()), ("delimiter", "/".into())]).await;
    assert_eq!(tags(&xml, "Key"), ["d/a b.txt", "d/c+d.txt", "d/ünï.txt"]);
    assert_eq!(common_prefixes(&xml), ["d/sub/", "d/zz/"]);
    assert_eq!(tag(&xml, "KeyCount").as_deref(), Some("5"));

    // Pages of 2 items (keys and prefixes count alike), in byte order.
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut q = vec![
            ("prefix", "d/".to_string()),
            ("delimiter", "/".to_string()),
            ("max-keys", "2".to_string()),
            ("encoding-type", "url".to_string()),
        ];
        if let Some(t) = &token {
            q.push(("continuation-token", decode(t)));
        }
        let xml = list(q).await;
        assert_eq!(tag(&xml, "EncodingType").as_deref(), Some("url"));
        let mut items: Vec<String> = tags(&xml, "Key").iter().map(|k| decode(k)).collect();
        items.extend(common_prefixes(&xml).iter().map(|p| decode(p)));
        pages.push(items);
        token = tag(&xml, "NextContinuationToken");
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        pages,
        [
            vec!["d/a b.txt", "d/c+d.txt"],
            vec!["d/sub/", "d/zz/"],
            vec!["d/ünï.txt"]
        ]
    );

    // encoding-type=url percent-encodes keys (space, '+', UTF-8), keeps '/'.
    let xml = list(vec![
        ("prefix", "d/".into()),
        ("encoding-type", "url".into()),
    ])
    .await;
    let raw = tags(&xml, "Key");
    assert_eq!(
        raw,
        [
            "d/a%20b.txt",
            "d/c%2Bd.txt",
            "d/sub/x.txt",
            "d/sub/y.txt",
            "d/zz/q",
            "d/%C3%BCn%C3%AF.txt",
        ]
    );
    let decoded: Vec<String> = raw.iter().map(|k| decode(k)).collect();
    assert_eq!(decoded, keys[..6]);

    // start-after is exclusive; a key can be fetched back by its decoded name.
    let xml = list(vec![("start-after", "d/c+d.txt".into())]).await;
    let mut after: Vec<&str> = keys[2..6].to_vec();
    after.extend([OBJ, "e.txt"]);
    assert_eq!(tags(&xml, "Key"), after);
    assert_eq!(tag(&xml, "StartAfter").as_deref(), Some("d/c+d.txt"));
    let resp = fx.get(&format!("/{BUCKET}/d/c%2Bd.txt")).await;
    assert_eq!(resp.status(), 200);
    let resp = fx.get(&format!("/{BUCKET}/d/%C3%BCn%C3%AF.txt")).await;
    assert_eq!(resp.status(), 200);

    // ListObjects V1: marker / NextMarker.
    let xml = fx
        .get(&format!("/{BUCKET}?prefix=d/&max-keys=3"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tags(&xml, "Key"), keys[..3]);
    assert_eq!(tag(&xml, "NextMarker").as_deref(), Some("d/sub/x.txt"));
    let xml = fx
        .get(&format!("/{BUCKET}?prefix=d/&marker=d/sub/x.txt"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tags(&xml, "Key"), keys[3..6]);
}

#[tokio::test]
async fn service_listing_names_every_bucket() {
    let fx = Fixture::start(vec![]);
    std::fs::create_dir_all(fx.root.join("second")).unwrap();
    let xml = fx.get("/").await.text().await.unwrap();
    assert_eq!(tags(&xml, "Name"), [BUCKET, "second"]);
}

fn creds() -> Credentials {
    Credentials::new("LTAI-test-key", "test-secret-0123456789")
}

/// Sends GET `path_and_query` (path style) signed with `version`.
async fn signed_get(
    fx: &Fixture,
    version: SignatureVersion,
    credentials: &Credentials,
    region: &str,
    path_and_query: &str,
    extra: &[(&str, &str)],
    now: SystemTime,
) -> reqwest::Response {
    let url = url::Url::parse(&fx.url(path_and_query)).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let path = url.path().to_string();
    let trimmed = path.trim_start_matches('/');
    let (bucket, key_raw) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let key = decode(key_raw);
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let headers: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let to_sign = RequestToSign {
        method: "GET",
        host: &host,
        bucket,
        key: &key,
        path: &path,
        query: &query,
        headers: &headers,
    };
    let signed = sign(version, credentials, region, &to_sign, now);
    let mut rb = fx.http.get(url.clone());
    for (k, v) in headers.iter().chain(signed.headers.iter()) {
        rb = rb.header(k, v);
    }
    rb.send().await.unwrap()
}

const VERSIONS: [SignatureVersion; 3] = [
    SignatureVersion::OssV1,
    SignatureVersion::OssV4,
    SignatureVersion::S3V4,
];

#[tokio::test]
async fn valid_signatures_of_every_scheme_are_accepted() {
    let fx = Fixture::start(vec![creds()]);
    put_file(&fx.root, &format!("{BUCKET}/sp ace+plus.bin"), b"hello");
    let want = pattern(OBJ_LEN, 0);
    let now = SystemTime::now();
    for v in VERSIONS {
        let resp = signed_get(
            &fx,
            v,
            &creds(),
            REGION,
            &format!("/{BUCKET}/{OBJ}"),
            &[("range", "bytes=10-19")],
            now,
        )
        .await;
        assert_eq!(resp.status(), 206, "{v}: {:?}", resp.text().await);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &want[10..20]);

        let resp = signed_get(
            &fx,
            v,
            &creds(),
            REGION,
            &format!("/{BUCKET}/sp%20ace%2Bplus.bin"),
            &[],
            now,
        )
        .await;
        assert_eq!(resp.status(), 200, "{v}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hello");

        let resp = signed_get(
            &fx,
            v,
            &creds(),
            REGION,
            &format!("/{BUCKET}?list-type=2&prefix=dir%2F&max-keys=1&encoding-type=url"),
            &[],
            now,
        )
        .await;
        assert_eq!(resp.status(), 200, "{v}");
        let xml = resp.text().await.unwrap();
        assert_eq!(tags(&xml, "Key"), [OBJ]);
    }
    assert_eq!(fx.store.stats().auth_failures, 0);
}

#[tokio::test]
async fn bad_signatures_are_rejected_with_the_right_code() {
    let fx = Fixture::start(vec![creds()]);
    let path = format!("/{BUCKET}/{OBJ}");
    let now = SystemTime::now();
    let wrong_secret = Credentials::new(creds().access_key_id, "not-the-secret");
    let unknown = Credentials::new("LTAI-unknown", "whatever");
    let mut failures = 0;
    for v in VERSIONS {
        let resp = signed_get(&fx, v, &wrong_secret, REGION, &path, &[], now).await;
        assert_eq!(resp.status(), 403, "{v}");
        let xml = resp.text().await.unwrap();
        assert_eq!(
            tag(&xml, "Code").as_deref(),
            Some("SignatureDoesNotMatch"),
            "{v}"
        );
        assert!(
            tag(&xml, "StringToSign").is_some_and(|s| !s.is_empty()),
            "{v}: {xml}"
        );

        let resp = signed_get(&fx, v, &unknown, REGION, &path, &[], now).await;
        assert_eq!(resp.status(), 403, "{v}");
        let xml = resp.text().await.unwrap();
        assert_eq!(
            tag(&xml, "Code").as_deref(),
            Some("InvalidAccessKeyId"),
            "{v}"
        );

        let skewed = now - Duration::from_secs(3600);
        let resp = signed_get(&fx, v, &creds(), REGION, &path, &[], skewed).await;
        assert_eq!(resp.status(), 403, "{v}");
        let xml = resp.text().await.unwrap();
        assert_eq!(
            tag(&xml, "Code").as_deref(),
            Some("RequestTimeTooSkewed"),
            "{v}"
        );
        failures += 3;
    }
    for v in [SignatureVersion::OssV4, SignatureVersion::S3V4] {
        let resp = signed_get(&fx, v, &creds(), "us-east-1", &path, &[], now).await;
        assert_eq!(resp.status(), 400, "{v}");
        let xml = resp.text().await.unwrap();
        assert_eq!(
            tag(&xml, "Code").as_deref(),
            Some("AuthorizationHeaderMalformed")
        );
        failures += 1;
    }

    // Anonymous requests are denied, and a HEAD says so in headers.
    let resp = fx.get(&path).await;
    assert_eq!(resp.status(), 403);
    let xml = resp.text().await.unwrap();
    assert_eq!(tag(&xml, "Code").as_deref(), Some("AccessDenied"));
    let resp = fx.http.head(fx.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(hdr(&resp, "x-oss-err").is_some());
    failures += 2;

    // A valid signature over different content (tampered Range) fails.
    let url = fx.url(&path);
    let host = format!("127.0.0.1:{}", fx.store.addr().port());
    let headers = vec![("range".to_string(), "bytes=0-1".to_string())];
    let to_sign = RequestToSign {
        method: "GET",
        host: &host,
        bucket: BUCKET,
        key: OBJ,
        path: &path,
        query: &[],
        headers: &headers,
    };
    let signed = sign(SignatureVersion::S3V4, &creds(), REGION, &to_sign, now);
    let mut rb = fx.http.get(url).header("range", "bytes=0-999");
    for (k, v) in &signed.headers {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 403);
    failures += 1;

    // The control plane reports them (signed: the store has credentials),
    // and its own refusals are not counted as bucket-request failures.
    assert_eq!(fx.get("/_ossc/stats").await.status(), 403);
    let resp = signed_get(
        &fx,
        SignatureVersion::OssV4,
        &creds(),
        REGION,
        "/_ossc/stats",
        &[],
        now,
    )
    .await;
    let stats: StoreStats = json(resp).await;
    assert_eq!(stats.auth_failures, failures);
    assert_eq!(fx.store.stats().auth_failures, failures);
}

#[tokio::test]
async fn injected_errors_answer_the_configured_code() {
    let fx = Fixture::start(vec![]);
    let path = format!("/{BUCKET}/{OBJ}");
    fx.store.set_faults(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    let resp = fx.get(&path).await;
    assert_eq!(resp.status(), 503);
    let xml = resp.text().await.unwrap();
    assert_eq!(
        tag(&xml, "Code").as_deref(),
        Some("DownloadTrafficRateLimitExceeded")
    );

    fx.store.set_faults(FaultConfig {
        error_rate: 1.0,
        error_status: 503,
        error_code: "SlowDown".into(),
        ..FaultConfig::default()
    });
    let resp = fx.get(&path).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        tag(&resp.text().await.unwrap(), "Code").as_deref(),
        Some("SlowDown")
    );
    // HEAD and listings are not faulted.
    let resp = fx.http.head(fx.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let stats = fx.store.stats();
    assert_eq!(stats.faults.errors, 2);
    assert_eq!(stats.bytes_served, 0);

    assert!(fx
        .store
        .try_set_faults(FaultConfig {
            error_rate: 0.7,
            reset_rate: 0.7,
            ..FaultConfig::default()
        })
        .is_err());
}

#[tokio::test]
async fn injected_reset_and_truncation_cut_the_body() {
    let fx = Fixture::start(vec![]);
    const SIZE: usize = 3 << 20;
    put_file(&fx.root, &format!("{BUCKET}/big.bin"), &pattern(SIZE, 3));
    let request = format!("GET /{BUCKET}/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

    fx.store.set_faults(FaultConfig {
        truncate_rate: 1.0,
        seed: Some(1),
        ..FaultConfig::default()
    });
    let (head, body) = raw_exchange(fx.store.addr(), &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        head_value(&head, "content-length").unwrap(),
        SIZE.to_string()
    );
    let body = body.expect("truncation closes cleanly");
    assert!(body.len() < SIZE, "got {} of {SIZE}", body.len());
    assert_eq!(&body[..], &pattern(SIZE, 3)[..body.len()]);
    assert_eq!(fx.store.stats().faults.truncations, 1);

    fx.store.set_faults(FaultConfig {
        reset_rate: 1.0,
        seed: Some(2),
        ..FaultConfig::default()
    });
    let (head, body) = raw_exchange(fx.store.addr(), &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let err = body.expect_err("reset must surface as an error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(fx.store.stats().faults.resets, 1);

    // A client library sees both as failed bodies.
    let resp = fx.get(&format!("/{BUCKET}/big.bin")).await;
    assert!(resp.bytes().await.is_err());
}

#[tokio::test]
async fn seeded_faults_repeat_exactly() {
    let fx = Fixture::start(vec![]);
    let path = format!("/{BUCKET}/{OBJ}");
    let faults = FaultConfig {
        seed: Some(7),
        error_rate: 0.5,
        ..FaultConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        fx.store.set_faults(faults.clone());
        let mut statuses = Vec::new();
        for _ in 0..24 {
            statuses.push(fx.get(&path).await.status().as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&200) && runs[0].contains(&503),
        "{:?}",
        runs[0]
    );
}

#[tokio::test]
async fn latency_and_shared_bandwidth_cap() {
    let fx = Fixture::start(vec![]);
    const SIZE: usize = 512 << 10;
    const RATE: u64 = 1 << 20;
    put_file(&fx.root, &format!("{BUCKET}/half.bin"), &pattern(SIZE, 5));

    fx.store.set_faults(FaultConfig {
        latency_ms: 150,
        ..FaultConfig::default()
    });
    let t = Instant::now();
    let resp = fx
        .http
        .head(fx.url(&format!("/{BUCKET}/{OBJ}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(fx.store.stats().faults.delayed, 1);

    fx.store.set_faults(FaultConfig {
        bandwidth_bytes_per_sec: RATE,
        ..FaultConfig::default()
    });
    let t = Instant::now();
    let path = format!("/{BUCKET}/half.bin");
    let (a, b) = tokio::join!(
        async { fx.get(&path).await.bytes().await.unwrap() },
        async { fx.get(&path).await.bytes().await.unwrap() }
    );
    let elapsed = t.elapsed();
    assert_eq!(a.len() + b.len(), 2 * SIZE);
    // 1 MiB at 1 MiB/s shared by two connections: about a second.
    assert!(elapsed >= Duration::from_millis(850), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[tokio::test]
async fn control_plane_sets_faults_and_reports_stats() {
    let fx = Fixture::start(vec![]);
    let resp = fx
        .http
        .put(fx.url("/_ossc/faults"))
        .body(r#"{"error_rate": 1.0, "error_code": "SlowDown"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fx.store.faults().error_code, "SlowDown");
    let got: FaultConfig = json(fx.get("/_ossc/faults").await).await;
    assert_eq!(got.error_rate, 1.0);
    let resp = fx.get(&format!("/{BUCKET}/{OBJ}")).await;
    assert_eq!(resp.status(), 503);

    for bad in [r#"{"error_rate": 2}"#, r#"{"nope": 1}"#, "not json"] {
        let resp = fx
            .http
            .put(fx.url("/_ossc/faults"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(fx.store.faults().error_code, "SlowDown");

    let stats: StoreStats = json(fx.get("/_ossc/stats").await).await;
    assert_eq!(stats.requests.get, 1);
    assert_eq!(stats.faults.errors, 1);
    let resp = fx.http.post(fx.url("/_ossc/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let stats: StoreStats = json(fx.get("/_ossc/stats").await).await;
    assert_eq!(stats, StoreStats::default());
}

#[tokio::test]
async fn control_plane_needs_a_signature_when_the_store_has_credentials() {
    let fx = Fixture::start(vec![creds()]);
    let resp = fx
        .http
        .put(fx.url("/_ossc/faults"))
        .body(r#"{"error_rate": 1.0, "replace_key": "dir/obj.bin"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(fx.store.faults(), FaultConfig::default(), "nothing changed");
    for path in ["/_ossc/stats", "/_ossc/faults"] {
        assert_eq!(fx.get(path).await.status(), 403, "{path}");
    }
    let resp = fx.http.post(fx.url("/_ossc/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let now = SystemTime::now();
    for v in VERSIONS {
        let resp = signed_get(&fx, v, &creds(), REGION, "/_ossc/stats", &[], now).await;
        assert_eq!(resp.status(), 200, "{v:?}");
        let _: StoreStats = json(resp).await;
    }
    let wrong = Credentials::new("LTAI-test-key", "not-the-secret");
    let resp = signed_get(&fx, VERSIONS[0], &wrong, REGION, "/_ossc/stats", &[], now).await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn idle_and_slow_header_connections_are_closed() {
    let fx = Fixture::start(vec![]);
    let started = Instant::now();
    let close_of = |head: &'static [u8]| {
        let addr = fx.store.addr();
        async move {
            let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            sock.write_all(head).await.unwrap();
            let mut buf = [0u8; 512];
            let limit = HEADER_READ_TIMEOUT + Duration::from_secs(10);
            tokio::time::timeout(limit, async {
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await
            .expect("the store closes the connection");
            started.elapsed()
        }
    };
    let (idle, partial) = tokio::join!(close_of(b""), close_of(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    for t in [idle, partial] {
        assert!(
            t >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
            "{t:?}"
        );
    }
    // The store still serves.
    assert_eq!(fx.get(&format!("/{BUCKET}/{OBJ}")).await.status(), 200);
}

#[tokio::test]
async fn stats_count_operations_and_bytes() {
    let fx = Fixture::start(vec![]);
    let path = format!("/{BUCKET}/{OBJ}");
    let body = fx
        .get_with(&path, &[("range", "bytes=0-9")])
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 10);
    let body = fx.get(&path).await.bytes().await.unwrap();
    assert_eq!(body.len(), OBJ_LEN);
    let _ = fx.get(&format!("/{BUCKET}/missing")).await.bytes().await;
    fx.http.head(fx.url(&path)).send().await.unwrap();
    fx.get(&format!("/{BUCKET}?list-type=2"))
        .await
        .text()
        .await
        .unwrap();
    fx.http.put(fx.url(&path)).send().await.unwrap();
    let stats = fx.store.stats();
    assert_eq!(
        stats.requests,
        RequestCounts {
            get: 3,
            head: 1,
            list: 1,
            other: 1
        }
    );
    assert_eq!(stats.bytes_served, (OBJ_LEN + 10) as u64);
    fx.store.reset_stats();
    assert_eq!(fx.store.stats(), StoreStats::default());
}

#[tokio::test]
async fn replace_key_rewrites_the_object_after_its_first_get() {
    let fx = Fixture::start(vec![]);
    const SIZE: usize = 4096;
    let old = pattern(SIZE, 9);
    let new: Vec<u8> = old.iter().map(|b| !b).collect();
    put_file(&fx.root, &format!("{BUCKET}/r.bin"), &old);
    let path = format!("/{BUCKET}/r.bin");
    fx.store.set_faults(FaultConfig {
        replace_key: Some("r.bin".into()),
        ..FaultConfig::default()
    });

    let first = fx.get_with(&path, &[("range", "bytes=0-99")]).await;
    assert_eq!(first.status(), 206);
    let old_etag = hdr(&first, "etag").unwrap();
    assert_eq!(first.bytes().await.unwrap().as_ref(), &old[..100]);
    assert_eq!(fx.store.stats().faults.replacements, 1);

    let pinned = fx
        .get_with(
            &path,
            &[("range", "bytes=100-199"), ("if-match", &old_etag)],
        )
        .await;
    assert_eq!(pinned.status(), 412);

    for _ in 0..2 {
        let resp = fx.get_with(&path, &[("range", "bytes=100-199")]).await;
        assert_eq!(resp.status(), 206);
        assert_ne!(hdr(&resp, "etag").unwrap(), old_etag);
        assert_eq!(
            hdr(&resp, "x-oss-hash-crc64ecma").unwrap(),
            crc64(&new).to_string()
        );
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &new[100..200]);
    }
    assert_eq!(fx.store.stats().faults.replacements, 1);
    // The temporary file of the rewrite is not left in the bucket.
    let xml = fx
        .get(&format!("/{BUCKET}?list-type=2"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tags(&xml, "Key"), [OBJ, "r.bin"]);
}

#[tokio::test]
async fn large_objects_stream_intact_across_frames() {
    let fx = Fixture::start(vec![]);
    const SIZE: usize = (3 << 20) + 12345;
    let want = pattern(SIZE, 11);
    put_file(&fx.root, &format!("{BUCKET}/large.bin"), &want);
    let path = format!("/{BUCKET}/large.bin");
    let resp = fx.get(&path).await;
    assert_eq!(
        hdr(&resp, "x-oss-hash-crc64ecma").unwrap(),
        crc64(&want).to_string()
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &want[..]);
    let (a, z) = ((1 << 20) - 7, (2 << 20) + 7);
    let resp = fx
        .get_with(&path, &[("range", &format!("bytes={a}-{z}"))])
        .await;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &want[a..=z]);
}

#[tokio::test]
async fn a_rewritten_file_gets_a_new_etag_and_crc() {
    let fx = Fixture::start(vec![]);
    let path = format!("/{BUCKET}/{OBJ}");
    let first = fx.get(&path).await;
    let (etag1, crc1) = (hdr(&first, "etag"), hdr(&first, "x-oss-hash-crc64ecma"));
    // Same size, new content, replaced by rename as the store expects.
    let tmp = fx.root.join("tmp-upload");
    let new = pattern(OBJ_LEN, 77);
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, fx.root.join(BUCKET).join(OBJ)).unwrap();
    let second = fx.get(&path).await;
    assert_ne!(hdr(&second, "etag"), etag1);
    assert_ne!(hdr(&second, "x-oss-hash-crc64ecma"), crc1);
    assert_eq!(second.bytes().await.unwrap().as_ref(), &new[..]);
}

#[test]
fn parallel_crc_matches_the_sequential_one() {
    let data = pattern((1 << 20) + 4321, 13);
    for min_chunk in [1000, 64 << 10, 1 << 20, 2 << 20] {
        assert_eq!(
            files::chunked_crc64(&data, min_chunk),
            crc64(&data),
            "{min_chunk}"
        );
    }
}

#[test]
fn config_round_trips_through_json() {
    let json = r#"{
        "root": "/srv/store",
        "addr": "127.0.0.1:9000",
        "credentials": [{"access_key_id": "ak", "access_key_secret": "sk"}],
        "faults": {"error_rate": 0.25, "seed": 3}
    }"#;
    let config: StoreServerConfig = serde_json::from_str(json).unwrap();
    assert_eq!(config.region, DEFAULT_REGION);
    assert_eq!(config.credentials, vec![Credentials::new("ak", "sk")]);
    assert_eq!(config.faults.error_rate, 0.25);
    assert_eq!(config.faults.error_status, DEFAULT_FAULT_STATUS);
    assert_eq!(config.faults.error_code, DEFAULT_FAULT_CODE);
    let again: StoreServerConfig =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
    assert!(FaultConfig {
        truncate_rate: -0.1,
        ..FaultConfig::default()
    }
    .validate()
    .is_err());
    assert!(FaultConfig {
        error_status: 200,
        ..FaultConfig::default()
    }
    .validate()
    .is_err());
}

#[tokio::test]
async fn start_rejects_a_missing_root_and_shutdown_stops_serving() {
    let missing = EmbeddedStore::start(StoreServerConfig {
        root: PathBuf::from("/nonexistent/ossc-store-root"),
        addr: "127.0.0.1:0".parse().unwrap(),
        credentials: vec![],
        region: REGION.into(),
        faults: FaultConfig::default(),

        range_behavior: Default::default(),
        checksums: Default::default(),
    });
    assert_eq!(missing.err().unwrap().kind(), std::io::ErrorKind::NotFound);

    let fx = Fixture::start(vec![]);
    assert_eq!(fx.get(&format!("/{BUCKET}/{OBJ}")).await.status(), 200);
    fx.store.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(fresh
        .get(fx.url(&format!("/{BUCKET}/{OBJ}")))
        .send()
        .await
        .is_err());
}

/// Throughput sanity check (release build): parallel 8 MiB ranged GETs of a
/// 256 MiB object. Run with
/// `cargo test --release -p ossc-core --lib store_server::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, run by hand in release mode"]
async fn throughput_of_parallel_ranged_gets() {
    const SIZE: usize = 256 << 20;
    const PART: usize = 8 << 20;
    const IN_FLIGHT: usize = 16;
    let fx = Fixture::start(vec![]);
    put_file(&fx.root, &format!("{BUCKET}/model.bin"), &vec![7u8; SIZE]);
    let url = fx.url(&format!("/{BUCKET}/model.bin"));
    // Warm the CRC and the mapping.
    fx.http.head(&url).send().await.unwrap();
    for round in 0..3 {
        let t = Instant::now();
        let parts: Vec<usize> = (0..SIZE / PART).collect();
        let total: usize = futures::stream::iter(parts)
            .map(|i| {
                let (http, url) = (fx.http.clone(), url.clone());
                async move {
                    let range = format!("bytes={}-{}", i * PART, (i + 1) * PART - 1);
                    let mut resp = http.get(&url).header("range", range).send().await.unwrap();
                    let mut n = 0;
                    while let Some(chunk) = resp.chunk().await.unwrap() {
                        n += chunk.len();
                    }
                    n
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .fold(0, |acc, n| async move { acc + n })
            .await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(total, SIZE);
        println!(
            "round {round}: {:.2} GB/s ({} MiB in {secs:.3}s)",
            SIZE as f64 / secs / 1e9,
            SIZE >> 20
        );
    }
}

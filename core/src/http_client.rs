//! The real S3/OSS client: reqwest over rustls, signed requests, ranged GETs
//! streamed straight into a [`RangeSink`].
//!
//! Design decisions:
//! - **Many HTTP/1.1 connections, not one HTTP/2 connection.** Object stores
//!   scale per connection (roughly 0.4 Gbit/s each on AWS), and one h2
//!   connection would funnel every part through one TCP window. The pool keeps
//!   up to [`DEFAULT_POOL_MAX_IDLE_PER_HOST`] idle connections so hundreds of
//!   concurrent parts reuse warm connections; HTTP/2 is opt-in.
//! - **Trust nothing about a ranged answer, and copy once** (`operations`).
//! - **Clock skew is corrected, not reported** (`clock`).
//! - **Credentials are looked up per request** and re-read once when the
//!   store rejects them (`request`, `crate::credentials`). TLS roots and
//!   proxies come from `crate::transport`.
//! - **Store errors keep their raw code and are classified by kind**
//!   (`error_answer`, [`crate::object_client::ServiceErrorKind`]).
//! - **HEAD asks for every digest.** It sends `x-amz-checksum-mode: ENABLED`
//!   and reads S3 additional checksums, `Content-MD5` and MD5 ETags into
//!   [`ObjectMeta::checksums`] (see [`crate::checksums`]). Ranged GETs do
//!   not: stores declare full-object checksums on HEAD and whole GETs only.
//! - Each operation retries with its own small budget
//!   ([`DEFAULT_INNER_MAX_ATTEMPTS`]); callers such as the fetch engine add
//!   their own outer budget on top.

mod clock;
mod error_answer;
mod operations;
mod request;
mod response;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::StoreSettings;
use crate::credentials::chain::{self, Family};
use crate::credentials::CredentialSource;
use crate::object_client::{
    ClientError, GetRangeMeta, ListPage, ObjectClient, ObjectMeta, RangeSink, Result,
};
use crate::retry::{retry, RetryPolicy};
use crate::sign::SignatureVersion;
use crate::store_url::AddressingStyle;
use crate::transport::ProxySettings;

pub(crate) use error_answer::parse_error_xml;
pub(crate) use response::{parse_content_range, strip_etag};

/// Default TCP connect timeout: 10 s (a store that does not accept within
/// that is down or unreachable, not slow).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default read inactivity timeout: 30 s without a single byte on a
/// connection fails that request (retryable), so a stuck download surfaces.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default idle connections kept per host: enough for the fetch engine's
/// default 256 parts in flight with headroom.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 1024;
/// Default time an idle pooled connection is kept: 90 s (below the usual 120 s
/// server-side keep-alive, so we close first).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probe interval on pooled connections.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Attempts per operation inside the client (first try included).
pub const DEFAULT_INNER_MAX_ATTEMPTS: u32 = 3;
/// Largest listing page we accept. 1000 keys of 1 KiB each with their
/// metadata stay far below it; a bigger body is a broken or hostile store.
pub const MAX_LIST_BODY: usize = 16 << 20;
/// The whole-object CRC-64 header.
pub const CRC64_HEADER: &str = "x-oss-hash-crc64ecma";

/// Transport knobs of [`HttpObjectClient`].
#[derive(Debug, Clone)]
pub struct HttpClientOptions {
    /// Default [`DEFAULT_CONNECT_TIMEOUT`] (10 s).
    pub connect_timeout: Duration,
    /// Per-read inactivity timeout, default [`DEFAULT_READ_TIMEOUT`] (30 s).
    pub read_timeout: Duration,
    /// Default [`DEFAULT_POOL_MAX_IDLE_PER_HOST`] (1024).
    pub pool_max_idle_per_host: usize,
    /// Default [`DEFAULT_POOL_IDLE_TIMEOUT`] (90 s).
    pub pool_idle_timeout: Duration,
    /// Retries inside each operation; default [`DEFAULT_INNER_MAX_ATTEMPTS`]
    /// attempts with the default backoff.
    pub retry: RetryPolicy,
    /// Allow HTTP/2 via ALPN (default `false`: HTTP/1.1 connection pool).
    pub allow_http2: bool,
    /// Honour `HTTP(S)_PROXY` (default `true`; always off for loopback).
    pub use_env_proxy: bool,
    /// TLS roots added to the built-in ones; `None` (default) reads the
    /// system store, `SSL_CERT_FILE` and `OSS_CONNECTOR_CA_FILE`.
    pub ca_certificates: Option<Vec<reqwest::Certificate>>,
    /// Proxies; `None` (default) reads `HTTP(S)_PROXY`/`NO_PROXY` from the
    /// process environment.
    pub proxy: Option<ProxySettings>,
    /// Host names pinned to addresses, like `curl --resolve` (default none).
    pub resolve: Vec<(String, SocketAddr)>,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            retry: RetryPolicy {
                max_attempts: DEFAULT_INNER_MAX_ATTEMPTS,
                ..RetryPolicy::default()
            },
            allow_http2: false,
            use_env_proxy: true,
            ca_certificates: None,
            proxy: None,
            resolve: Vec::new(),
        }
    }
}

/// Counters of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpClientStats {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Body bytes written into sinks.
    pub bytes_received: u64,
}

/// An [`ObjectClient`] for one bucket of an S3-compatible store.
pub struct HttpObjectClient {
    http: reqwest::Client,
    settings: StoreSettings,
    /// `scheme://host[:port]` requests go to.
    origin: String,
    /// `Host` header value (what is signed).
    host: String,
    /// Wire path prefix before the key: `/bucket/` or `/`.
    path_prefix: String,
    /// `None`: anonymous requests.
    credentials: Option<Arc<CredentialSource>>,
    retry: RetryPolicy,
    clock_offset_ms: AtomicI64,
    requests: AtomicU64,
    retries: AtomicU64,
    bytes_received: AtomicU64,
}

impl std::fmt::Debug for HttpObjectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpObjectClient")
            .field("origin", &self.origin)
            .field("bucket", &self.settings.bucket)
            .finish_non_exhaustive()
    }
}

/// Warned about once per process.
static PLAIN_HTTP_WARNED: AtomicBool = AtomicBool::new(false);

impl HttpObjectClient {
    /// A client signing with `settings.credentials` (fixed) or anonymous.
    pub fn new(settings: &StoreSettings, options: HttpClientOptions) -> Result<Self, ClientError> {
        let source = settings
            .credentials
            .clone()
            .map(|c| Arc::new(CredentialSource::fixed(c)));
        Self::with_credentials(settings, options, source)
    }

    /// A client whose credentials come from the provider chain
    /// (`crate::credentials::chain`), TLS roots and proxies from `lookup`
    /// (normally the process environment) unless `options` sets them.
    pub fn from_environment(
        settings: &StoreSettings,
        mut options: HttpClientOptions,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientError> {
        let roots = match options.ca_certificates.take() {
            Some(roots) => roots,
            None => crate::transport::extra_roots(lookup).map_err(ClientError::InvalidRequest)?,
        };
        if options.proxy.is_none() {
            options.proxy = Some(ProxySettings::from_lookup(lookup));
        }
        let family = match settings.signature_version {
            SignatureVersion::S3V4 => Family::Aws,
            SignatureVersion::OssV1 | SignatureVersion::OssV4 => Family::Alibaba,
        };
        let source = chain::resolve(family, settings.credentials.as_ref(), lookup, &roots)
            .map_err(|e| ClientError::InvalidRequest(format!("credentials: {e}")))?;
        options.ca_certificates = Some(roots);
        Self::with_credentials(settings, options, source.map(Arc::new))
    }

    /// A client signing with `credentials` (`None`: anonymous).
    pub fn with_credentials(
        settings: &StoreSettings,
        options: HttpClientOptions,
        credentials: Option<Arc<CredentialSource>>,
    ) -> Result<Self, ClientError> {
        let endpoint = &settings.endpoint;
        let scheme = endpoint.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(ClientError::InvalidRequest(format!(
                "endpoint {endpoint} must be http or https"
            )));
        }
        let host = endpoint.host_str().ok_or_else(|| {
            ClientError::InvalidRequest(format!("endpoint {endpoint} has no host"))
        })?;
        if settings.bucket.is_empty() {
            return Err(ClientError::InvalidRequest("bucket name is empty".into()));
        }
        let port = endpoint.port().map(|p| format!(":{p}")).unwrap_or_default();
        let (host_header, path_prefix) = match settings.addressing {
            AddressingStyle::Path => (format!("{host}{port}"), format!("/{}/", settings.bucket)),
            AddressingStyle::VirtualHosted => {
                (format!("{}.{host}{port}", settings.bucket), "/".to_string())
            }
        };
        let loopback = crate::transport::is_loopback(endpoint);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .pool_idle_timeout(options.pool_idle_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(TCP_KEEPALIVE)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ossc/", env!("CARGO_PKG_VERSION")));
        if !options.allow_http2 {
            builder = builder.http1_only();
        }
        let roots = match options.ca_certificates {
            Some(roots) => roots,
            None => crate::transport::extra_roots(&|name| std::env::var(name).ok())
                .map_err(ClientError::InvalidRequest)?,
        };
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        if loopback || !options.use_env_proxy {
            builder = builder.no_proxy();
        } else {
            let proxy = options
                .proxy
                .unwrap_or_else(ProxySettings::from_process_env);
            builder = proxy.apply(builder).map_err(ClientError::InvalidRequest)?;
        }
        for (name, addr) in &options.resolve {
            builder = builder.resolve(name, *addr);
        }
        if crate::transport::exposes_signatures(endpoint, credentials.is_some())
            && !PLAIN_HTTP_WARNED.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                %endpoint,
                "signed requests go over plain HTTP to a non-loopback host: the signatures and security tokens can be read on the network; use https://"
            );
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::InvalidRequest(format!("building HTTP client: {e}")))?;
        Ok(Self {
            http,
            origin: format!("{scheme}://{host_header}"),
            host: host_header,
            path_prefix,
            credentials,
            settings: settings.clone(),
            retry: options.retry,
            clock_offset_ms: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    pub fn stats(&self) -> HttpClientStats {
        HttpClientStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }

    fn count_attempt(&self, attempt: u32) {
        if attempt > 0 {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl ObjectClient for HttpObjectClient {
    fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        retry(&self.retry, "list", |attempt| {
            self.count_attempt(attempt);
            self.list_once(prefix, continuation_token, max_keys)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        retry(&self.retry, "head", |attempt| {
            self.count_attempt(attempt);
            self.head_once(key)
        })
        .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        if range.start >= range.end {
            return Err(ClientError::InvalidRequest(format!("empty range {range:?}")).into());
        }
        retry(&self.retry, "get", |attempt| {
            self.count_attempt(attempt);
            self.get_once(key, range.clone(), if_match, sink)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign;

    pub(super) fn settings(addressing: AddressingStyle) -> StoreSettings {
        StoreSettings {
            endpoint: url::Url::parse("http://127.0.0.1:9000").unwrap(),
            region: "cn-beijing".into(),
            bucket: "bkt".into(),
            prefix: String::new(),
            credentials: None,
            signature_version: sign::SignatureVersion::OssV4,
            addressing,
        }
    }

    /// An unsigned path-style client of bucket `bkt` at `endpoint`.
    pub(super) fn client_at(endpoint: &str) -> HttpObjectClient {
        let mut s = settings(AddressingStyle::Path);
        s.endpoint = url::Url::parse(endpoint).unwrap();
        HttpObjectClient::new(&s, HttpClientOptions::default()).unwrap()
    }

    #[test]
    fn addressing_styles() {
        let c = client_at("http://127.0.0.1:9000");
        assert_eq!(c.origin, "http://127.0.0.1:9000");
        assert_eq!(c.host, "127.0.0.1:9000");
        assert_eq!(c.path_prefix, "/bkt/");
        let mut s = settings(AddressingStyle::VirtualHosted);
        s.endpoint = url::Url::parse("https://oss-cn-beijing.aliyuncs.com").unwrap();
        let c = HttpObjectClient::new(&s, HttpClientOptions::default()).unwrap();
        assert_eq!(c.origin, "https://bkt.oss-cn-beijing.aliyuncs.com");
        assert_eq!(c.host, "bkt.oss-cn-beijing.aliyuncs.com");
        assert_eq!(c.path_prefix, "/");
        assert_eq!(c.bucket(), "bkt");

        s.endpoint = url::Url::parse("ftp://x").unwrap();
        assert!(HttpObjectClient::new(&s, HttpClientOptions::default()).is_err());
        let mut s = settings(AddressingStyle::Path);
        s.bucket.clear();
        assert!(HttpObjectClient::new(&s, HttpClientOptions::default()).is_err());
    }

    /// Serves every connection `response_head` followed by `body_len` bytes
    /// of `<` (optionally without a Content-Length, chunked by the close).
    pub(super) async fn raw_server(response_head: String, body_len: usize) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let head = response_head.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock.write_all(head.as_bytes()).await;
                    let block = vec![b'<'; 64 << 10];
                    let mut left = body_len;
                    while left > 0 {
                        let n = left.min(block.len());
                        if sock.write_all(&block[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        addr
    }
}

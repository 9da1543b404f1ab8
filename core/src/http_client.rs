//! The real S3/OSS client: reqwest over rustls, signed requests, ranged GETs
//! streamed straight into a [`RangeSink`].
//!
//! Design decisions:
//! - **Many HTTP/1.1 connections, not one HTTP/2 connection.** Object stores
//!   scale per connection (roughly 0.4 Gbit/s each on AWS), and one h2
//!   connection would funnel every part through one TCP window. The pool keeps
//!   up to [`DEFAULT_POOL_MAX_IDLE_PER_HOST`] idle connections so hundreds of
//!   concurrent parts reuse warm connections; HTTP/2 is opt-in.
//! - **Trust nothing about a ranged answer.** A GET must be a 206 whose
//!   `Content-Range` is the requested range (clamped only at the object's
//!   end), whose `Content-Length` is that range's length and whose ETag is the
//!   pinned one; otherwise it is an error before any byte reaches the sink
//!   (`412`/different ETag: [`ClientError::ObjectChanged`]; anything else:
//!   [`ClientError::BadResponse`]). The one tolerated 200 is a whole-object
//!   answer to a request for exactly the whole object.
//! - **One copy.** Body chunks go from hyper's buffer into the sink at their
//!   absolute offsets while the range's CRC-64 is computed on the same bytes;
//!   there is no per-part buffer. A short body is [`ClientError::Truncated`]
//!   (retryable: the retry rewrites the whole range).
//! - **Clock skew is corrected, not reported.** On `RequestTimeTooSkewed`, or
//!   any error answer whose `Date` is more than 15 minutes from our clock, the
//!   offset to the store's clock is stored and used for every later signature,
//!   so the built-in retry succeeds.
//! - **Credentials are looked up per request.** Each request signs with what
//!   the client's [`CredentialSource`] holds at send time, so a refresh never
//!   interrupts a load; a request the store rejects with
//!   `InvalidAccessKeyId`, `SecurityTokenExpired` or `InvalidSecurityToken`
//!   is sent once more after the source re-read its provider
//!   (`crate::credentials`). TLS roots and proxies come from
//!   `crate::transport`.
//! - **HEAD asks for every digest.** It sends `x-amz-checksum-mode: ENABLED`
//!   and reads S3 additional checksums, `Content-MD5` and MD5 ETags into
//!   [`ObjectMeta::checksums`] (see [`crate::checksums`]). Ranged GETs do
//!   not: stores declare full-object checksums on HEAD and whole GETs only.
//! - Each operation retries with its own small budget
//!   ([`DEFAULT_INNER_MAX_ATTEMPTS`]); callers such as the fetch engine add
//!   their own outer budget on top.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::checksums::{StoreChecksums, CHECKSUM_MODE_HEADER};
use crate::config::StoreSettings;
use crate::crc64::Crc64Hasher;
use crate::credentials::chain::{self, Family};
use crate::credentials::{CredentialError, CredentialSource, TimedCredentials};
use crate::object_client::{
    ClientError, GetRangeMeta, ListPage, ObjectClient, ObjectMeta, RangeSink, Result, ServiceError,
};
use crate::retry::{retry, RetryPolicy};
use crate::sign::{self, uri_encode, RequestToSign, SignatureVersion};
use crate::store_url::AddressingStyle;
use crate::transport::ProxySettings;

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
/// Largest error body we read and parse; error XML is a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest listing page we accept. 1000 keys of 1 KiB each with their
/// metadata stay far below it; a bigger body is a broken or hostile store.
pub const MAX_LIST_BODY: usize = 16 << 20;
/// Skew beyond which the store rejects signatures (and we resync).
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
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

/// Store codes that mean "these credentials are not (or no longer) valid".
const REJECTED_CREDENTIAL_CODES: &[&str] = &[
    sign::codes::INVALID_ACCESS_KEY_ID,
    sign::codes::INVALID_SECURITY_TOKEN,
    "SecurityTokenExpired",
];

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

    /// Milliseconds to add to the local clock when signing (store minus local).
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Overrides the clock offset (tests, or a known-skewed host).
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.clock_offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    fn now(&self) -> SystemTime {
        shift(SystemTime::now(), self.clock_offset_ms())
    }

    /// Sends one request signed with the current credentials; when the store
    /// rejects them, sends it once more with re-read ones.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        headers: Vec<(String, String)>,
    ) -> Result<reqwest::Response> {
        let Some(source) = &self.credentials else {
            return self.send_once(method, key, query, headers, None).await;
        };
        let current = source.current().await.map_err(credential_error)?;
        let first = self
            .send_once(method.clone(), key, query, headers.clone(), Some(&current))
            .await;
        let rejected = matches!(&first, Err(e) if e.service_code().is_some_and(|code| REJECTED_CREDENTIAL_CODES.contains(&code)));
        if !rejected || !source.refreshes() {
            return first;
        }
        let fresh = source
            .refresh_after_rejection(&current)
            .await
            .map_err(credential_error)?;
        if fresh.credentials == current.credentials {
            return first;
        }
        tracing::info!(provider = %source.provider_name(), "retrying with refreshed credentials");
        self.send_once(method, key, query, headers, Some(&fresh))
            .await
    }

    /// Builds, signs and sends one request; error statuses become errors.
    async fn send_once(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        headers: Vec<(String, String)>,
        credentials: Option<&TimedCredentials>,
    ) -> Result<reqwest::Response> {
        let path = format!("{}{}", self.path_prefix, uri_encode(key, true));
        let mut url = format!("{}{}", self.origin, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&uri_encode(k, false));
            if !v.is_empty() {
                url.push('=');
                url.push_str(&uri_encode(v, false));
            }
        }
        let mut all_headers = headers;
        let mut string_to_sign = None;
        if let Some(creds) = credentials.map(|c| &c.credentials) {
            let signed = sign::sign(
                self.settings.signature_version,
                creds,
                &self.settings.region,
                &RequestToSign {
                    method: method.as_str(),
                    host: &self.host,
                    bucket: &self.settings.bucket,
                    key,
                    path: &path,
                    query,
                    headers: &all_headers,
                },
                self.now(),
            );
            all_headers.extend(signed.headers);
            string_to_sign = Some(signed.string_to_sign);
        }
        let mut header_map = HeaderMap::with_capacity(all_headers.len());
        for (name, value) in &all_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::InvalidRequest(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value).map_err(|e| {
                ClientError::InvalidRequest(format!("header value for {name}: {e}"))
            })?;
            header_map.insert(name, value);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let is_head = method == reqwest::Method::HEAD;
        let response = self
            .http
            .request(method, &url)
            .headers(header_map)
            .send()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::PRECONDITION_FAILED {
            return Ok(response);
        }
        let error = self.service_error(response, is_head).await;
        if error.code == sign::codes::SIGNATURE_DOES_NOT_MATCH {
            let token = self
                .settings
                .credentials
                .as_ref()
                .and_then(|c| c.security_token.as_deref());
            tracing::debug!(
                server_string_to_sign =
                    redact_token(error.string_to_sign.as_deref().unwrap_or(""), token),
                client_string_to_sign =
                    redact_token(string_to_sign.as_deref().unwrap_or(""), token),
                "SignatureDoesNotMatch"
            );
        }
        Err(error.into())
    }

    /// Decodes an error answer and resyncs the clock when it calls for it.
    async fn service_error(&self, response: reqwest::Response, is_head: bool) -> ServiceError {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let parsed = if is_head {
            header_str(&headers, "x-oss-err").and_then(|b64| {
                let xml = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()?;
                parse_error_xml(&String::from_utf8_lossy(&xml))
            })
        } else {
            let body = read_limited(response, MAX_ERROR_BODY).await;
            parse_error_xml(&String::from_utf8_lossy(&body))
        };
        let mut error = parsed.unwrap_or_else(|| ServiceError {
            status,
            code: String::new(),
            message: String::new(),
            request_id: String::new(),
            string_to_sign: None,
        });
        if error.code.is_empty() {
            // No parseable body: a body-less HEAD 404 is the missing key.
            if is_head && status == 404 {
                error.code = "NoSuchKey".to_string();
            }
            if error.message.is_empty() {
                error.message = match header_str(&headers, "x-oss-ec") {
                    Some(ec) => format!("no error body (EC {ec})"),
                    None => "no error body".to_string(),
                };
            }
        }
        if error.request_id.is_empty() {
            error.request_id = header_str(&headers, "x-oss-request-id")
                .or_else(|| header_str(&headers, "x-amz-request-id"))
                .unwrap_or_default()
                .to_string();
        }
        error.status = status;
        if let Some(date) =
            header_str(&headers, "date").and_then(|d| httpdate::parse_http_date(d).ok())
        {
            let local = SystemTime::now();
            let skew_ms = signed_millis(date, local);
            let corrected = skew_ms - self.clock_offset_ms();
            if error.code == sign::codes::REQUEST_TIME_TOO_SKEWED
                || corrected.unsigned_abs() > MAX_CLOCK_SKEW.as_millis() as u64
            {
                tracing::warn!(
                    offset_ms = skew_ms,
                    code = %error.code,
                    "correcting clock skew from the store's Date header"
                );
                self.set_clock_offset_ms(skew_ms);
            }
        }
        error
    }

    async fn list_once(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        let mut query = vec![
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), max_keys.to_string()),
            ("prefix".to_string(), prefix.to_string()),
            ("encoding-type".to_string(), "url".to_string()),
        ];
        if let Some(t) = continuation_token {
            query.push(("continuation-token".to_string(), t.to_string()));
        }
        let response = self
            .send(reqwest::Method::GET, "", &query, Vec::new())
            .await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(ClientError::BadResponse(format!(
                "listing answered {}",
                response.status()
            ))
            .into());
        }
        let body = read_capped(response, MAX_LIST_BODY, "listing page").await?;
        crate::list_xml::parse_list(&String::from_utf8_lossy(&body)).map_err(Into::into)
    }

    async fn head_once(&self, key: &str) -> Result<ObjectMeta> {
        let checksum_mode = vec![(CHECKSUM_MODE_HEADER.to_string(), "ENABLED".to_string())];
        let response = self
            .send(reqwest::Method::HEAD, key, &[], checksum_mode)
            .await?;
        let headers = response.headers();
        if response.status() != reqwest::StatusCode::OK {
            return Err(
                ClientError::BadResponse(format!("HEAD answered {}", response.status())).into(),
            );
        }
        let size = header_str(headers, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ClientError::BadResponse("HEAD without Content-Length".into()))?;
        let etag = etag_of(headers);
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            last_modified: header_str(headers, "last-modified")
                .and_then(|d| httpdate::parse_http_date(d).ok()),
            crc64: crc64_of(headers)?,
            checksums: StoreChecksums::from_headers(|n| header_str(headers, n), &etag),
            etag,
        })
    }

    async fn get_once(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        let mut headers = vec![
            (
                "Range".to_string(),
                format!("bytes={}-{}", range.start, range.end - 1),
            ),
            ("x-oss-range-behavior".to_string(), "standard".to_string()),
            ("Accept-Encoding".to_string(), "identity".to_string()),
        ];
        if let Some(etag) = if_match {
            headers.push(("If-Match".to_string(), format!("\"{etag}\"")));
        }
        let mut response = self.send(reqwest::Method::GET, key, &[], headers).await?;
        let status = response.status();
        let etag = etag_of(response.headers());
        let changed = |found: &str| ClientError::ObjectChanged {
            key: key.to_string(),
            expected: if_match.unwrap_or_default().to_string(),
            found: found.to_string(),
        };
        if status == reqwest::StatusCode::PRECONDITION_FAILED {
            return Err(changed(if etag.is_empty() { "?" } else { &etag }).into());
        }
        if if_match.is_some_and(|p| p != etag) {
            return Err(changed(&etag).into());
        }
        let content_length = response.content_length();
        let (start, end, total) = match status {
            reqwest::StatusCode::PARTIAL_CONTENT => {
                let cr = header_str(response.headers(), "content-range")
                    .ok_or_else(|| ClientError::BadResponse("206 without Content-Range".into()))?;
                parse_content_range(cr).ok_or_else(|| {
                    ClientError::BadResponse(format!("unparseable Content-Range {cr:?}"))
                })?
            }
            // A whole-object answer is fine for a whole-object request only.
            reqwest::StatusCode::OK if range.start == 0 && content_length == Some(range.end) => {
                (0, range.end, range.end)
            }
            other => {
                return Err(ClientError::BadResponse(format!(
                    "ranged GET of {key} {range:?} answered {other}, not 206"
                ))
                .into())
            }
        };
        if start != range.start || end != range.end.min(total) || end <= start {
            return Err(ClientError::BadResponse(format!(
                "asked for bytes {range:?}, store sent {start}..{end} of {total}"
            ))
            .into());
        }
        let expected = end - start;
        if content_length != Some(expected) {
            return Err(ClientError::BadResponse(format!(
                "Content-Length {content_length:?} for a {expected}-byte range"
            ))
            .into());
        }
        let object_crc64 = crc64_of(response.headers())?;
        let mut hasher = Crc64Hasher::new();
        let mut received = 0u64;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(
                        key,
                        received,
                        expected,
                        "body stream failed: {}",
                        error_chain(&e)
                    );
                    break;
                }
            };
            let len = chunk.len() as u64;
            if received + len > expected {
                return Err(ClientError::BadResponse(format!(
                    "body longer than its {expected}-byte range"
                ))
                .into());
            }
            sink.write_at(start + received, &chunk)
                .map_err(|e| ClientError::Sink(e.to_string()))?;
            hasher.update(&chunk);
            received += len;
            self.bytes_received.fetch_add(len, Ordering::Relaxed);
        }
        if received < expected {
            return Err(ClientError::Truncated { expected, received }.into());
        }
        Ok(GetRangeMeta {
            object_size: total,
            etag,
            object_crc64,
            range_crc64: hasher.finish(),
        })
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

/// `t + offset_ms` (offset may be negative).
/// A provider failure as a client error: retryable when the provider may
/// answer later, otherwise a configuration error.
fn credential_error(e: CredentialError) -> crate::object_client::ObjectClientError {
    if e.is_transient() {
        ClientError::Transport(format!("credentials: {e}")).into()
    } else {
        ClientError::InvalidRequest(format!("credentials: {e}")).into()
    }
}

fn shift(t: SystemTime, offset_ms: i64) -> SystemTime {
    let d = Duration::from_millis(offset_ms.unsigned_abs());
    if offset_ms >= 0 {
        t + d
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

/// `a - b` in milliseconds, signed.
fn signed_millis(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The error and its sources, one line (reqwest's Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn etag_of(headers: &HeaderMap) -> String {
    header_str(headers, "etag")
        .map(strip_etag)
        .unwrap_or_default()
        .to_string()
}

/// An ETag with its quotes and weak marker stripped.
pub(crate) fn strip_etag(etag: &str) -> &str {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"')
}

fn crc64_of(headers: &HeaderMap) -> Result<Option<u64>, ClientError> {
    match header_str(headers, CRC64_HEADER) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ClientError::BadResponse(format!("bad {CRC64_HEADER} {v:?}"))),
    }
}

/// `bytes a-b/total` -> `(a, b + 1, total)`.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < total).then_some((a, b + 1, total))
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body
}

/// The whole body, or an error once it exceeds `limit` bytes (checked
/// against `Content-Length` first, then while reading).
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, ClientError> {
    let too_big = || ClientError::BadResponse(format!("{what} is larger than {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ClientError::Transport(error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` with every occurrence of the STS token replaced, so that a logged
/// string-to-sign (which carries `x-oss-security-token`) leaks no credential.
fn redact_token(text: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() => text.replace(t, "<redacted security token>"),
        _ => text.to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorXml {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    string_to_sign: Option<String>,
    #[serde(default, rename = "EC")]
    ec: Option<String>,
}

pub(crate) fn parse_error_xml(xml: &str) -> Option<ServiceError> {
    let e: ErrorXml = quick_xml::de::from_str(xml).ok()?;
    if e.code.is_empty() {
        return None;
    }
    let message = match e.ec {
        Some(ec) if !ec.is_empty() => format!("{} (EC {ec})", e.message),
        _ => e.message,
    };
    Some(ServiceError {
        status: 0,
        code: e.code,
        message,
        request_id: e.request_id,
        string_to_sign: e.string_to_sign,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_xml() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message>
<RequestId>RID1</RequestId><HostId>h</HostId><StringToSign>GET&#10;x</StringToSign><EC>0002-00000040</EC></Error>"#;
        let e = parse_error_xml(xml).unwrap();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert_eq!(e.request_id, "RID1");
        assert_eq!(e.string_to_sign.as_deref(), Some("GET\nx"));
        assert!(e.message.contains("bad sig") && e.message.contains("0002-00000040"));
        assert!(parse_error_xml("not xml").is_none());
        assert!(parse_error_xml("<Error><Message>m</Message></Error>").is_none());
    }

    #[test]
    fn content_range_and_etag_parsing() {
        assert_eq!(parse_content_range("bytes 0-99/200"), Some((0, 100, 200)));
        assert_eq!(
            parse_content_range("bytes 199-199/200"),
            Some((199, 200, 200))
        );
        assert_eq!(parse_content_range("bytes 5-4/200"), None);
        assert_eq!(parse_content_range("bytes 0-200/200"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(strip_etag("\"abc\""), "abc");
        assert_eq!(strip_etag("W/\"abc\""), "abc");
        assert_eq!(strip_etag("abc"), "abc");
    }

    #[test]
    fn clock_helpers_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(signed_millis(shift(t, 1500), t), 1500);
        assert_eq!(signed_millis(shift(t, -1500), t), -1500);
    }

    fn settings(addressing: AddressingStyle) -> StoreSettings {
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

    #[test]
    fn addressing_styles() {
        let c = HttpObjectClient::new(
            &settings(AddressingStyle::Path),
            HttpClientOptions::default(),
        )
        .unwrap();
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

    #[test]
    fn logged_string_to_sign_hides_the_sts_token() {
        let token = "STS.NUp9Secret/Token+Value==";
        let creds = sign::Credentials {
            access_key_id: "ak".into(),
            access_key_secret: "sk".into(),
            security_token: Some(token.into()),
        };
        let signed = sign::sign(
            sign::SignatureVersion::OssV1,
            &creds,
            "cn-beijing",
            &RequestToSign {
                method: "GET",
                host: "bkt.oss-cn-beijing.aliyuncs.com",
                bucket: "bkt",
                key: "k",
                path: "/k",
                query: &[],
                headers: &[],
            },
            SystemTime::now(),
        );
        assert!(signed.string_to_sign.contains(token), "the token is signed");
        let logged = redact_token(&signed.string_to_sign, Some(token));
        assert!(!logged.contains(token), "{logged}");
        assert!(logged.contains("x-oss-security-token:<redacted security token>"));
        assert_eq!(redact_token("GET\nx", None), "GET\nx");
        assert_eq!(redact_token("GET\nx", Some("")), "GET\nx");
    }

    /// Serves every connection `response_head` followed by `body_len` bytes
    /// of `<` (optionally without a Content-Length, chunked by the close).
    async fn raw_server(response_head: String, body_len: usize) -> std::net::SocketAddr {
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

    #[tokio::test]
    async fn an_oversized_listing_page_fails_clearly() {
        let n = MAX_LIST_BODY + 1;
        for head in [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n"),
            // No length up front: the cap applies while reading.
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string(),
        ] {
            let addr = raw_server(head.clone(), n).await;
            let mut s = settings(AddressingStyle::Path);
            s.endpoint = url::Url::parse(&format!("http://{addr}")).unwrap();
            let c = HttpObjectClient::new(&s, HttpClientOptions::default()).unwrap();
            let e = c.list_page("", None, 1000).await.unwrap_err();
            assert!(
                matches!(&e, crate::object_client::ObjectClientError::Client(ClientError::BadResponse(m)) if m.contains("larger than")),
                "{head:?}: {e}"
            );
        }
    }
}

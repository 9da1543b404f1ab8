//! Embedded object store: a small, faithful OSS/S3 server over a directory,
//! used by demos, tests and benchmarks.
//!
//! Each subdirectory of `root` is a bucket; each regular file below it is an
//! object whose key is its '/'-separated relative path. The server speaks
//! HTTP/1.1 with keep-alive (hyper 1) and implements what the ossc client
//! relies on, with OSS's real behaviour rather than an idealised one:
//! - path-style (`/bucket/key`) and virtual-hosted (`Host: bucket.example`)
//!   addressing;
//! - OSS V1, OSS V4 and AWS SigV4 signatures (via [`crate::sign::verify`]) when
//!   credentials are configured, anonymous access otherwise;
//! - GET with `Range` (`a-b`, `a-`, `-n`), including OSS's quirk of answering
//!   an invalid range with 200 and the whole object unless the request carries
//!   `x-oss-range-behavior: standard`; `If-Match` (412) and `If-None-Match`
//!   (304); HEAD with errors in `x-oss-err`/`x-oss-ec`; `ETag`,
//!   `Last-Modified`, `x-oss-hash-crc64ecma` on every object answer (unless
//!   configured as an S3 store without it); never compressed;
//! - S3 additional checksums (SHA-256, CRC-32C, full-object) on HEAD and
//!   whole-object GET with `x-amz-checksum-mode: ENABLED`; MD5 ETags when
//!   configured ([`ChecksumConfig`]);
//! - ListObjects V2 (and V1) with prefix, delimiter, max-keys, continuation
//!   tokens, start-after and `encoding-type=url`;
//! - OSS error documents with the right statuses.
//!
//! Design decision: it must never be the bottleneck of a benchmark, so object
//! bodies are zero-copy slices of an mmap (see [`files`]) streamed in 1 MiB
//! frames, and the CRC-64 is computed once per file version. Faults
//! ([`FaultConfig`]) and counters ([`StoreStats`]) are built in, controllable
//! at runtime through [`RunningStore`] or the HTTP control plane on the same
//! port (not faulted, not counted): `GET /_ossc/stats`, `POST /_ossc/reset`,
//! `GET|PUT /_ossc/faults` (JSON). When the store has credentials, control
//! requests must be signed like a request to bucket `_ossc` (path-style, key
//! `stats`, `reset` or `faults`), since a fault can rewrite a file on disk.
//! Every connection must send its request head within
//! [`HEADER_READ_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are served at once.
//! The accepted credentials can be replaced at runtime
//! ([`RunningStore::set_credentials`]), as a key rotation would, and
//! [`EmbeddedStore::start_tls`] serves HTTPS ([`tls`]).

mod config;
mod control;
mod faults;
pub(crate) mod files;
pub(crate) mod handler;
mod listing;
mod stats;
pub mod tls;
mod xml;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::task::{AbortHandle, JoinSet};

pub use config::{
    ChecksumConfig, FaultConfig, RangeBehavior, StoreServerConfig, DEFAULT_FAULT_CODE,
    DEFAULT_FAULT_STATUS, DEFAULT_REGION,
};
pub use stats::{FaultCounts, RequestCounts, StoreStats};

use crate::sign::Credentials;
use faults::FaultState;
use files::FileCache;
use handler::ConnInfo;
use stats::Counters;

/// Pause after a failed `accept` (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// A connection that has not sent a complete request head within this time
/// (a new connection, or a kept-alive one between requests) is closed, so
/// idle or slow-header clients cannot hold connections forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;

/// An OSS error answer on its way out.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub string_to_sign: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            string_to_sign: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub fn no_such_key() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )
    }

    pub fn no_such_bucket() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
}

/// Everything the request handlers share.
pub(crate) struct State {
    root: PathBuf,
    region: String,
    range_behavior: RangeBehavior,
    /// Accepted credentials; empty means anonymous access.
    credentials: RwLock<Arc<Vec<Credentials>>>,
    /// Leave out the CRC-64 header (an S3-like store).
    no_crc64: bool,
    files: FileCache,
    counters: Counters,
    faults: Mutex<FaultState>,
    request_seq: AtomicU64,
    /// High part of request ids: the start time, so ids differ across restarts.
    id_prefix: u32,
}

impl State {
    fn credentials(&self) -> Arc<Vec<Credentials>> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn faults(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_set_faults(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        *self.faults() = FaultState::new(config);
        Ok(())
    }

    /// 24 uppercase hex digits, like OSS request ids.
    fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08X}{n:016X}", self.id_prefix)
    }
}

/// Starts embedded stores.
pub struct EmbeddedStore;

impl EmbeddedStore {
    /// Binds `config.addr` and serves on the current tokio runtime (must be
    /// called from within one). Fails if `root` is not a directory, the fault
    /// config is invalid, or the address cannot be bound.
    pub fn start(config: StoreServerConfig) -> io::Result<RunningStore> {
        Self::start_with(config, None)
    }

    /// Like [`EmbeddedStore::start`], serving HTTPS with `identity`.
    pub fn start_tls(
        config: StoreServerConfig,
        identity: &tls::TlsIdentity,
    ) -> io::Result<RunningStore> {
        let acceptor = identity.acceptor()?;
        Self::start_with(config, Some(acceptor))
    }

    fn start_with(
        config: StoreServerConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> io::Result<RunningStore> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            io::Error::other(format!("EmbeddedStore::start needs a tokio runtime: {e}"))
        })?;
        if !config.root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("store root {} is not a directory", config.root.display()),
            ));
        }
        config
            .faults
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let std_listener = std::net::TcpListener::bind(config.addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let id_prefix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let state = Arc::new(State {
            root: config.root,
            region: config.region,
            range_behavior: config.range_behavior,
            credentials: RwLock::new(Arc::new(config.credentials)),
            no_crc64: config.checksums.no_crc64,
            files: FileCache::new(config.checksums.md5_etags),
            counters: Counters::default(),
            faults: Mutex::new(FaultState::new(config.faults)),
            request_seq: AtomicU64::new(0),
            id_prefix,
        });
        tracing::info!(%addr, root = %state.root.display(), anonymous = state.credentials().is_empty(), tls = tls.is_some(), "embedded store listening");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = runtime.spawn(serve(listener, state.clone(), tls));
        Ok(RunningStore {
            state,
            addr,
            scheme,
            task: task.abort_handle(),
        })
    }
}

/// Accepts connections until aborted; dropping the `JoinSet` on abort also
/// aborts every connection.
async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "TCP_NODELAY failed");
                    }
                    let conn = Arc::new(ConnInfo { fd: stream.as_raw_fd() });
                    let state = state.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        let service = hyper::service::service_fn(move |req| {
                            handler::handle(state.clone(), conn.clone(), req)
                        });
                        let mut builder = hyper::server::conn::http1::Builder::new();
                        builder
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .keep_alive(true);
                        let served = match tls {
                            None => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Some(acceptor) => match tls::handshake(&acceptor, stream).await {
                                Ok(stream) => {
                                    builder
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await
                                }
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                            },
                        };
                        if let Err(e) = served {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => drop(slot),
        }
    }
}

/// A store being served. Dropping it shuts the server down.
pub struct RunningStore {
    state: Arc<State>,
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    task: AbortHandle,
}

impl RunningStore {
    /// The bound address (with the real port when `:0` was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port` (`https://` when serving TLS), with loopback in place
    /// of an unspecified bind address.
    pub fn endpoint_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "{}://{}",
            self.scheme,
            SocketAddr::new(ip, self.addr.port())
        )
    }

    /// Replaces the accepted credentials; requests signed with a key no
    /// longer in the set fail with `InvalidAccessKeyId` from now on.
    /// An empty set turns on anonymous access.
    pub fn set_credentials(&self, credentials: Vec<Credentials>) {
        *self
            .state
            .credentials
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(credentials);
    }

    pub fn stats(&self) -> StoreStats {
        self.state.counters.snapshot()
    }

    pub fn reset_stats(&self) {
        self.state.counters.reset();
    }

    /// Replaces the fault config (reseeding the generator and re-arming
    /// `replace_key`). An invalid config is logged and ignored; use
    /// [`RunningStore::try_set_faults`] to see why.
    pub fn set_faults(&self, faults: FaultConfig) {
        if let Err(e) = self.state.try_set_faults(faults) {
            tracing::error!(error = %e, "invalid fault config ignored");
        }
    }

    /// Like [`RunningStore::set_faults`], reporting an invalid config.
    pub fn try_set_faults(&self, faults: FaultConfig) -> Result<(), String> {
        self.state.try_set_faults(faults)
    }

    /// The fault config in force.
    pub fn faults(&self) -> FaultConfig {
        self.state.faults().config().clone()
    }

    /// Stops accepting and aborts every connection. Idempotent; the port is
    /// released once the runtime drops the aborted task.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for RunningStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

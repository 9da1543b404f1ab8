//! The agent's socket: accept loop and request handling.
//!
//! Design decision: one task per connection and one request per connection, as
//! the protocol says, so a slow OPEN (waiting for a 10 GB shard) never delays a
//! HELLO or STATUS. After an `FD` answer the task keeps its handle on the memfd
//! until the client closes the connection (bounded by [`HANDOFF_TIMEOUT`]): while
//! the descriptor is in flight in the socket buffer it is invisible in `/proc`,
//! and this handle is what stops eviction from racing the hand-over.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

use super::audit::{now_rfc3339, AuditRecord};
use super::keys::normalize_request_path;
use super::metrics::Metrics;
use super::mirror::Entry;
use super::protocol::{Request, Response, MAX_REQUEST_LINE};
use super::sys::send_with_fd;
use super::{procscan, Agent};
use crate::object_source::memfd::Memfd;

/// A client must send its request line within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the memfd handle is held after an FD answer, waiting for the
/// client to close.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer for request lines.
const READ_CHUNK: usize = 4096;

pub(super) async fn accept_loop(agent: Arc<Agent>, listener: UnixListener) -> anyhow::Result<()> {
    let mut shutdown = agent.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = agent.clone();
                    tokio::spawn(async move { handle_connection(agent, stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

async fn handle_connection(agent: Arc<Agent>, mut stream: UnixStream) {
    let line = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut stream)).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading request failed");
            return;
        }
        Err(_) => {
            tracing::debug!("client sent no request in time");
            return;
        }
    };
    let peer = Peer::of(&stream);
    let (response, memfd) = match Request::parse(&line) {
        Ok(req) => agent.handle(req, peer).await,
        Err(e) => (Response::err(libc::EINVAL, e.to_string()), None),
    };
    let text = response.line();
    let sent = match &memfd {
        Some(m) => send_line_with_fd(&mut stream, text.as_bytes(), m).await,
        None => stream.write_all(text.as_bytes()).await,
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, request = %line, "sending response failed");
        return;
    }
    if memfd.is_some() {
        // Hold the handle until the client has taken the fd and hung up.
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(HANDOFF_TIMEOUT, async {
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Reads up to the first newline; `None` on EOF before any byte.
async fn read_line(stream: &mut UnixStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(pos);
            break;
        }
        if buf.len() > MAX_REQUEST_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request line too long",
            ));
        }
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "request is not UTF-8"))
}

async fn send_line_with_fd(
    stream: &mut UnixStream,
    line: &[u8],
    memfd: &Memfd,
) -> std::io::Result<()> {
    let sent = loop {
        stream.writable().await?;
        let fd = stream.as_raw_fd();
        match stream.try_io(Interest::WRITABLE, || {
            send_with_fd(fd, line, memfd.as_raw_fd())
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    stream.write_all(&line[sent..]).await
}

/// The client as the kernel reports it (`SO_PEERCRED`), which it cannot forge.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Peer {
    pub uid: Option<u32>,
    /// In the agent's pid namespace; `None` when the kernel could not map it (a client in a
    /// sibling namespace).
    pub pid: Option<u32>,
}

impl Peer {
    fn of(stream: &UnixStream) -> Peer {
        match stream.peer_cred() {
            Ok(c) => Peer {
                uid: Some(c.uid()),
                pid: c
                    .pid()
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|&p| p > 0),
            },
            Err(_) => Peer::default(),
        }
    }

    /// The kernel's pid, else the one the client declared.
    fn pid_or(&self, declared: u32) -> u32 {
        self.pid.unwrap_or(declared)
    }
}

impl Agent {
    /// Answers one request from `peer`; the memfd (if any) is attached to the answer.
    pub(super) async fn handle(&self, req: Request, peer: Peer) -> (Response, Option<Arc<Memfd>>) {
        match req {
            Request::Hello { pid, role, comm } => {
                tracing::info!(pid, kernel_pid = ?peer.pid, role, comm = %comm, "process registered");
                self.registered_once
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.pids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pid, super::Registered { role, comm });
                let log_path = self.log_path.display().to_string();
                (
                    Response::HelloOk {
                        agent_pid: std::process::id(),
                        log_path,
                    },
                    None,
                )
            }
            Request::Ready => match self.mirrored().await {
                Ok(_) => (Response::Ok, None),
                Err((errno, message)) => (Response::err(errno, message), None),
            },
            Request::Status => (Response::Status(self.status_json().to_string()), None),
            Request::Ident { dev, ino } => match self.mirrored().await {
                Ok(m) => match m.placeholders.get(&(dev, ino)) {
                    Some(rel) => (Response::Placeholder(rel.clone()), None),
                    None => (Response::Pass, None),
                },
                Err((errno, message)) => (Response::err(errno, message), None),
            },
            Request::Prefetch { wait, path } => {
                (self.prefetch_path(peer.uid, &path, wait).await, None)
            }
            Request::Evict { path } => (self.evict_path(peer.uid, &path).await, None),
            Request::Open { pid, path } => {
                Metrics::add(&self.metrics.opens, 1);
                let (resp, memfd) = self.open(pid, peer, &path).await;
                let counter = match &resp {
                    Response::Fd { .. } => &self.metrics.opens_fd,
                    Response::Pass => &self.metrics.opens_pass,
                    _ => &self.metrics.opens_err,
                };
                Metrics::add(counter, 1);
                (resp, memfd)
            }
        }
    }

    async fn open(
        &self,
        declared_pid: u32,
        peer: Peer,
        path: &str,
    ) -> (Response, Option<Arc<Memfd>>) {
        let pid = peer.pid_or(declared_pid);
        let m = match self.mirrored().await {
            Ok(m) => m,
            Err((errno, message)) => return (Response::err(errno, message), None),
        };
        let Some(rel) = normalize_request_path(path) else {
            // Outside MODEL_DIR: not ours to serve.
            return (Response::Pass, None);
        };
        self.trigger_lazy_prefetch(&m, &rel);
        let audit = |key: &str, bytes: u64, source: &str, verified_by: Option<String>| {
            self.audit.record(&AuditRecord {
                time: now_rfc3339(),
                pid,
                declared_pid: (declared_pid != pid).then_some(declared_pid),
                uid: peer.uid,
                comm: procscan::process_name(pid),
                path: rel.clone(),
                key: key.to_string(),
                bytes,
                source: source.to_string(),
                verified_by,
            });
        };
        match m.catalog.entries.get(&rel) {
            None => (Response::Pass, None),
            Some(Entry::Small { key, size }) => {
                audit(key, *size, "local", None);
                (Response::Pass, None)
            }
            Some(Entry::Large { meta }) => {
                let Some(file) = m.cache.get(&rel) else {
                    return (Response::err(libc::EIO, format!("{rel}: not in cache index")), None);
                };
                match m.cache.open(file).await {
                    Ok((memfd, source)) => {
                        if source == super::protocol::Source::Cache {
                            Metrics::add(&self.metrics.bytes_local, meta.size);
                        }
                        let verified_by = file
                            .verified_by()
                            .map(|v| v.unwrap_or("unverified").to_string());
                        audit(&meta.key, meta.size, source.as_str(), verified_by);
                        (Response::Fd { size: meta.size, source }, Some(memfd))
                    }
                    Err(e) => (Response::err(e.errno, e.message), None),
                }
            }
            Some(Entry::Foreign { key, what }) => (
                Response::err(
                    libc::EEXIST,
                    format!(
                        "{}: a pre-existing {what} not created by ossc occupies the path of object {key}; \
                         it was left intact (move it away and restart the agent)",
                        self.model_dir.join(&rel).display()
                    ),
                ),
                None,
            ),
            Some(Entry::Rejected { key, reason }) => (
                Response::err(libc::ENOENT, format!("object key {key:?} was not mirrored: {reason}")),
                None,
            ),
            Some(Entry::Failed { key, errno, error }) => {
                (Response::err(*errno, format!("object {key}: {error}")), None)
            }
        }
    }
}

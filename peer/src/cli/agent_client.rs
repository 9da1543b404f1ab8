//! The `ossc` commands' side of the agent protocol (`status`, `prefetch`,
//! `evict`): one request line on a fresh connection, one answer line.
//!
//! Design decision: failures come back as typed errors, [`AgentUnreachable`]
//! (nothing listens on the socket) and [`AgentError`] (the agent answered
//! `ERR errno message`), so the exit code follows from the type
//! (`crate::cli::exit_code`). Every wait is bounded by the caller's timeout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use ossc_wire::DocumentReply;

use crate::agent::protocol::{Request, MAX_REQUEST_LINE};

/// Longest answer accepted (a STATUS of a model with many files fits easily).
pub const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// Nothing answers on the agent's socket.
#[derive(Debug, thiserror::Error)]
#[error("no agent answers at {}: {reason}", socket.display())]
pub struct AgentUnreachable {
    pub socket: PathBuf,
    pub reason: String,
}

/// The agent answered `ERR errno message`.
#[derive(Debug, thiserror::Error)]
#[error("agent answered an error: {message} (errno {errno})")]
pub struct AgentError {
    pub errno: i32,
    pub message: String,
}

/// Sends `req` and returns the answer line (without its newline), waiting at
/// most `timeout` for it.
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<String> {
    let line = req.line();
    anyhow::ensure!(line.len() <= MAX_REQUEST_LINE, "request too long");
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| AgentUnreachable {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(line.as_bytes())
        .context("sending the request")?;
    let mut text = String::new();
    s.take(MAX_ANSWER_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("no answer from the agent within {timeout:?}"))?;
    let answer = text.lines().next().unwrap_or("");
    match ossc_wire::parse_document(answer.as_bytes()) {
        DocumentReply::Document(_) => Ok(answer.to_string()),
        DocumentReply::Err { errno, msg } => Err(AgentError {
            errno,
            message: String::from_utf8_lossy(msg).into_owned(),
        }
        .into()),
    }
}

/// A request whose answer is one JSON document.
pub fn request_json(socket: &Path, req: &Request, timeout: Duration) -> Result<serde_json::Value> {
    let answer = request(socket, req, timeout)?;
    serde_json::from_str(&answer).with_context(|| format!("agent answered non-JSON: {answer:?}"))
}

/// `STATUS`.
pub fn status(socket: &Path) -> Result<serde_json::Value> {
    request_json(socket, &Request::Status, crate::agent::STATUS_TIMEOUT)
}

/// `PREFETCH <wait> <path>`: starts (and with `wait`, finishes) fetching every
/// large file under `path`.
pub fn prefetch(
    socket: &Path,
    path: &str,
    wait: bool,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let path = path.to_string();
    request_json(socket, &Request::Prefetch { wait, path }, timeout)
}

/// `EVICT <path>`: drops the memory of every unreferenced large file under `path`.
pub fn evict(socket: &Path, path: &str, timeout: Duration) -> Result<serde_json::Value> {
    let path = path.to_string();
    request_json(socket, &Request::Evict { path }, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_agent_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let e = status(&dir.path().join("none.sock")).unwrap_err();
        assert!(e.is::<AgentUnreachable>(), "{e:#}");
        assert!(e.to_string().contains("none.sock"), "{e:#}");
    }
}

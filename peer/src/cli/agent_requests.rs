//! `ossc status`, `ossc prefetch` and `ossc evict`: one request to a running
//! agent (or `ossc peer` daemon), its answer printed for people or as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{agent_client, cli_support};

/// How long `ossc evict` waits for the agent's answer.
pub const EVICT_TIMEOUT: Duration = Duration::from_secs(30);

/// `ossc status`: the agent's state.
pub fn status(socket: Option<PathBuf>, json: bool) -> Result<()> {
    let status = agent_client::status(&socket_or_default(socket))?;
    print(&status, json, cli_support::render_status)
}

/// `ossc prefetch`: an error when any file could not be prefetched.
pub fn prefetch(
    path: &str,
    wait: bool,
    timeout: Duration,
    socket: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let report = agent_client::prefetch(&socket_or_default(socket), path, wait, timeout)?;
    print(&report, json, cli_support::render_prefetch)?;
    let failed = report["failed"].as_array().map_or(0, |f| f.len());
    anyhow::ensure!(failed == 0, "{failed} file(s) could not be prefetched");
    Ok(())
}

/// `ossc evict`.
pub fn evict(path: &str, socket: Option<PathBuf>, json: bool) -> Result<()> {
    let report = agent_client::evict(&socket_or_default(socket), path, EVICT_TIMEOUT)?;
    print(&report, json, cli_support::render_evict)
}

fn socket_or_default(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(cli_support::default_socket)
}

/// Pretty JSON, or `render`'s text.
fn print(
    answer: &serde_json::Value,
    json: bool,
    render: fn(&serde_json::Value) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        print!("{}", render(answer));
    }
    Ok(())
}

//! What the peer crate's integration tests share: deterministic data, the
//! agent's line protocol spoken as a client (one request per connection, at
//! most one fd with the answer), a received fd read the way the preload reads
//! it, a free loopback port, and an embedded store over a directory.

// Each test crate uses only part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ossc_core::object_client::mock::{MockObject, MockObjectClient};
use ossc_core::sign::Credentials;
use ossc_core::store_server::{EmbeddedStore, RunningStore, StoreServerConfig};
use ossc_peer::agent::sys::recv_with_fd;

/// Region of every embedded store these tests start.
pub const REGION: &str = "cn-test";

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    ossc_core::object_client::mock::pseudo_random_bytes(len, seed)
}

/// One request on a fresh connection; the answer line (without newline) and
/// the fd that came with it.
pub fn request_blocking(socket: &Path, line: &str) -> (String, Option<OwnedFd>) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = Vec::new();
    let mut fd = None;
    loop {
        let (n, f) = recv_with_fd(s.as_raw_fd(), &mut buf).unwrap();
        if f.is_some() {
            assert!(fd.is_none(), "at most one fd per answer");
            fd = f;
        }
        got.extend_from_slice(&buf[..n]);
        if n == 0 || got.contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8(got).unwrap();
    assert!(text.ends_with('\n'), "answer is one full line: {text:?}");
    (text.trim_end_matches('\n').to_string(), fd)
}

/// The agent's STATUS, or `None` while its socket does not accept yet (the
/// socket file exists from `bind`, before `listen`).
pub fn status_once_listening(socket: &Path) -> Option<serde_json::Value> {
    match UnixStream::connect(socket) {
        Ok(_) => Some(serde_json::from_str(&request_blocking(socket, "STATUS").0).unwrap()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            None
        }
        Err(e) => panic!("{}: {e}", socket.display()),
    }
}

/// [`request_blocking`] off the runtime's workers.
pub async fn request(socket: &Path, line: &str) -> (String, Option<OwnedFd>) {
    let socket = socket.to_path_buf();
    let line = line.to_string();
    tokio::task::spawn_blocking(move || request_blocking(&socket, &line))
        .await
        .unwrap()
}

/// What the preload does: re-open `/proc/self/fd/N` read-only, close N, read.
pub fn read_fd(fd: &OwnedFd) -> Vec<u8> {
    let mut f = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Puts `bytes` at `key` with a CRC-64 they do not have: every fetch of it
/// fails the integrity check.
pub fn put_with_wrong_crc(mock: &MockObjectClient, key: String, bytes: Vec<u8>) {
    mock.put_raw(
        key,
        MockObject {
            data: bytes.into(),
            etag: "bad-etag".into(),
            last_modified: std::time::SystemTime::now(),
            crc64: Some(12345),
        },
    );
}

/// Writes each `(relative path, bytes)` of `files` below `dir`.
pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, bytes) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// An embedded store serving the buckets under `root` on an ephemeral
/// loopback port, in [`REGION`]; anonymous when `credentials` is empty,
/// signed requests required otherwise.
pub fn start_store(root: &Path, credentials: Vec<Credentials>) -> RunningStore {
    EmbeddedStore::start(StoreServerConfig {
        root: root.to_path_buf(),
        addr: "127.0.0.1:0".parse().unwrap(),
        credentials,
        region: REGION.into(),
        faults: Default::default(),
        range_behavior: Default::default(),
        checksums: Default::default(),
    })
    .unwrap()
}

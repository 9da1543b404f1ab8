//! `ossc serve-store` on the store host: started with signed requests
//! required, its counters read and reset through its signed control plane
//! from inside the store's namespace.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ossc_core::store_server::StoreStats;

use super::{Binaries, Model, ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION, STORE_PORT};
use crate::netns::{http_request_with, Cluster, Host, HostProcess, HttpResponse};

/// How long the store may take to accept connections.
const STORE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// `ossc serve-store` running on the store host.
#[derive(Debug)]
pub struct Store {
    process: HostProcess,
    host: Host,
    addr: SocketAddr,
}

impl Store {
    /// Starts the store on the cluster's store host, serving `model`'s root
    /// with signed requests required.
    pub fn start(cluster: &Cluster, bins: &Binaries, model: &Model) -> Result<Store> {
        let host = cluster.store().clone();
        let addr = host.addr(STORE_PORT);
        let mut cmd = host.command(&bins.ossc);
        cmd.arg("serve-store")
            .arg("--root")
            .arg(&model.store_root)
            .args(["--addr", &addr.to_string(), "--region", REGION])
            .args([
                "--access-key-id",
                ACCESS_KEY_ID,
                "--access-key-secret",
                ACCESS_KEY_SECRET,
            ])
            .env("RUST_LOG", "warn");
        let process = host.spawn(cmd)?;
        host.wait_for_port(addr, STORE_START_TIMEOUT)?;
        Ok(Store {
            process,
            host,
            addr,
        })
    }

    /// `http://<store ip>:<port>`, as nodes reach it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /_ossc/stats`, from inside the store's namespace.
    pub fn stats(&self) -> Result<StoreStats> {
        let r = self.control("GET", "stats")?;
        ensure!(r.status == 200, "stats: HTTP {}", r.status);
        serde_json::from_slice(&r.body).context("parsing /_ossc/stats")
    }

    /// `POST /_ossc/reset`: zeroes the counters.
    pub fn reset_stats(&self) -> Result<()> {
        let r = self.control("POST", "reset")?;
        ensure!(r.status / 100 == 2, "reset: HTTP {}", r.status);
        Ok(())
    }

    /// A body-less control-plane request, signed (OSS V1) as the store
    /// requires of a store with credentials.
    fn control(&self, method: &str, name: &str) -> Result<HttpResponse> {
        use ossc_core::sign::{sign, Credentials, RequestToSign, SignatureVersion};
        let path = format!("/_ossc/{name}");
        let host = self.addr.to_string();
        let signed = sign(
            SignatureVersion::OssV1,
            &Credentials::new(ACCESS_KEY_ID, ACCESS_KEY_SECRET),
            REGION,
            &RequestToSign {
                method,
                host: &host,
                bucket: "_ossc",
                key: name,
                path: &path,
                query: &[],
                headers: &[],
            },
            std::time::SystemTime::now(),
        );
        Ok(http_request_with(
            &self.host,
            self.addr,
            method,
            &path,
            &signed.headers,
            b"",
        )?)
    }

    /// Whether the store process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// The store variables a main process (or daemon) needs: `OSS_PATH` (`oss_path`),
/// `OSS_ENDPOINT`, `OSS_REGION` and the signing credentials.
pub fn store_env(store: &Store, oss_path: &str) -> Vec<(String, String)> {
    [
        ("OSS_PATH", oss_path.to_string()),
        ("OSS_ENDPOINT", store.endpoint()),
        ("OSS_REGION", REGION.to_string()),
        ("OSS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
        ("OSS_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

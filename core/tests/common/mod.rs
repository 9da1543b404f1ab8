//! What the core crate's integration tests share: the embedded store over a
//! temp directory (bucket, region, objects written as files), client settings
//! for it, and a free loopback port.

// Each test crate uses only part of this module.
#![allow(dead_code)]

use std::path::Path;

use ossc_core::config::StoreSettings;
use ossc_core::sign::{Credentials, SignatureVersion};
use ossc_core::store_server::{FaultConfig, StoreServerConfig};
use ossc_core::store_url::AddressingStyle;

/// The bucket every embedded store of these tests serves.
pub const BUCKET: &str = "bkt";
/// The region those stores sign for.
pub const REGION: &str = "cn-beijing";

/// Writes `bytes` as object `key` of [`BUCKET`] in the store root `root`.
pub fn put(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(BUCKET).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// An embedded store over `root` (with [`BUCKET`] created) on an ephemeral
/// loopback port in [`REGION`]: anonymous when `credentials` is empty, no
/// faults, the default range behaviour and checksums.
pub fn store_config(root: &Path, credentials: Vec<Credentials>) -> StoreServerConfig {
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    StoreServerConfig {
        root: root.to_path_buf(),
        addr: "127.0.0.1:0".parse().unwrap(),
        credentials,
        region: REGION.into(),
        faults: FaultConfig::default(),
        range_behavior: Default::default(),
        checksums: Default::default(),
    }
}

/// Client settings for `bucket` at `endpoint` in [`REGION`], path-style.
pub fn store_settings(
    endpoint: &str,
    bucket: &str,
    credentials: Option<Credentials>,
    version: SignatureVersion,
) -> StoreSettings {
    StoreSettings {
        endpoint: url::Url::parse(endpoint).unwrap(),
        region: REGION.into(),
        bucket: bucket.into(),
        prefix: String::new(),
        credentials,
        signature_version: version,
        addressing: AddressingStyle::Path,
    }
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

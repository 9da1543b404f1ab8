//! `ossc-core`: everything a node needs to talk to an object store, with no
//! knowledge of peers or of the preload hook.
//!
//! Layering (one way only):
//! - [`config`]: the vendor's `config.json` contract plus the `OSS_*` environment.
//! - [`sign`], [`crc64`]: pure functions with known-answer tests.
//! - [`checksums`]: the whole-object digests a store declares (S3 additional
//!   checksums, `Content-MD5`, MD5 ETags) and the pass that checks them.
//! - [`object_client`]: the [`object_client::ObjectClient`] trait, its two-level
//!   errors classified by kind, and (feature `test-doubles`, and this crate's
//!   tests) the in-memory / throughput-limited / failure-injecting clients
//!   that tests use in place of a real store.
//! - [`credentials`]: the provider chain and the refreshing credential cache;
//!   [`transport`]: TLS roots and proxies.
//! - [`http_client`]: the real S3/OSS client (reqwest + rustls); `list_xml`
//!   parses its listing pages.
//! - [`fetch`]: the parallel ranged-GET engine that writes into caller memory.
//! - [`store_server`]: the embedded object store used by demos, tests and
//!   benchmarks (faithful signatures, ranges, pagination, CRC-64, faults).

// Two items need `unsafe` and opt out with `#[allow(unsafe_code)]`: mapping a served file
// (`store_server::files::FileCache::open`) and `SO_LINGER` for an injected reset
// (`store_server::handler::ConnInfo::arm_reset`).
#![deny(unsafe_code)]

pub mod checksums;
pub mod config;
pub mod crc64;
pub mod credentials;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod http_client;
mod list_xml;
pub mod object_client;
pub mod retry;
pub mod sign;
pub mod store_server;
pub mod store_url;
pub mod transport;

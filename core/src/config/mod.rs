//! Configuration: the vendor's `config.json` contract plus the `OSS_*`
//! environment.
//!
//! Rooms:
//! - `file`: where the file is found, its schema, defaults and derived
//!   values ([`ConnectorConfig`]);
//! - `walker`: the key-by-key walk over the parsed JSON that names every bad
//!   key by its dotted path and warns about unknown ones;
//! - [`env`]: the `OSS_*` / `MODEL_DIR` variables ([`StoreEnv`]) and their
//!   resolution, with the file's `store.*`, into [`StoreSettings`].
//!
//! Precedence everywhere: environment > config file > built-in defaults.

pub mod env;
mod file;
mod walker;

pub use env::{resolve_store, resolve_store_for, EnvError, StoreEnv, StoreSettings};
pub use file::{
    ConfigError, ConnectorConfig, LoadedConfig, PeerConfig, StoreConfig, AUTO_MEMORY_LIMIT_PERCENT,
    CONFIG_PATH_ENV, DEFAULT_AUDIT_PATH, DEFAULT_CACHE_MEMORY_LIMIT_BYTES, DEFAULT_CONFIG_PATH,
    DEFAULT_EXPIRE_TIME_SEC, DEFAULT_LOG_LEVEL, DEFAULT_LOG_PATH, DEFAULT_PART_SIZE_BYTES,
    DEFAULT_PREFETCH_VCPUS, DEFAULT_PREFETCH_WORKERS, DEFAULT_SMALL_FILE_BYTES, MAX_LOG_LEVEL,
    MAX_PART_SIZE_BYTES, MAX_PREFETCH_FACTOR, MIN_PART_SIZE_BYTES,
};

/// Parsing helpers the file and walker tests share.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::{ConfigError, ConnectorConfig, LoadedConfig};

    pub(super) fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
        ConnectorConfig::parse(text, Path::new("/etc/oss-connector/config.json"))
    }

    pub(super) fn err(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }
}

//! The vendor's `config.json`: where it is found, its schema (the vendor's
//! keys `logLevel`, `logPath`, `auditPath`, `expireTimeSec`, `prefetch.*`,
//! and the ossc extensions `prefetch.partSizeBytes`, `cache.*`, `store.*`,
//! `peer.*`), its defaults and the values derived from it.
//!
//! Design decision: every default lives in a documented `DEFAULT_*`
//! constant, and a test parses the vendor's documented sample
//! (`deploy/config.json`) and re-serialises the defaults to the same bytes,
//! so docs, sample and code cannot drift apart. The file is found at
//! `$OSS_CONNECTOR_CONFIG` (which must then exist), else at
//! [`DEFAULT_CONFIG_PATH`]; with neither, the defaults apply. Reading the
//! keys is the walker's job (`config/walker.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::walker;
use crate::sign::SignatureVersion;
use crate::store_url::AddressingPreference;

/// Where the vendor connector reads its configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/oss-connector/config.json";
/// Environment variable naming another config file (must exist if set).
pub const CONFIG_PATH_ENV: &str = "OSS_CONNECTOR_CONFIG";

/// Vendor default: 1 = info.
pub const DEFAULT_LOG_LEVEL: u8 = 1;
/// Highest vendor log level (3 = error).
pub const MAX_LOG_LEVEL: u8 = 3;
/// Vendor default log file.
pub const DEFAULT_LOG_PATH: &str = "/var/log/oss-connector/connector.log";
/// Vendor default audit log file.
pub const DEFAULT_AUDIT_PATH: &str = "/var/log/oss-connector/audit.log";
/// Vendor default: free a model's memory 120 s after its last user exits.
pub const DEFAULT_EXPIRE_TIME_SEC: u64 = 120;
/// Vendor default `prefetch.vcpus`.
pub const DEFAULT_PREFETCH_VCPUS: u32 = 16;
/// Vendor default `prefetch.workers`.
pub const DEFAULT_PREFETCH_WORKERS: u32 = 16;
/// Upper bound for `prefetch.vcpus` and `prefetch.workers` each: beyond this
/// the product (requests in flight) exceeds a million, surely a typo.
pub const MAX_PREFETCH_FACTOR: u32 = 1024;
/// Default ranged-GET part size: 8 MiB, the AWS CRT S3 client's part size,
/// big enough to amortise request overhead, small enough to retry cheaply.
pub const DEFAULT_PART_SIZE_BYTES: u64 = 8 * 1024 * 1024;
/// Smallest accepted part size (64 KiB): below it per-request overhead
/// dominates any store's throughput.
pub const MIN_PART_SIZE_BYTES: u64 = 64 * 1024;
/// Largest accepted part size (1 GiB): a part is the unit of retry, so a
/// bigger one re-downloads too much after a single reset.
pub const MAX_PART_SIZE_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `cache.memoryLimitBytes`: 0 = automatic.
pub const DEFAULT_CACHE_MEMORY_LIMIT_BYTES: u64 = 0;
/// With an automatic memory limit, the agent may use this percentage of the
/// cgroup (or physical) memory, leaving the rest to the inference server.
pub const AUTO_MEMORY_LIMIT_PERCENT: u64 = 80;
/// Default `cache.smallFileBytes`: objects up to 16 MiB (configs,
/// tokenizers) become real files in MODEL_DIR; bigger ones live in memory.
pub const DEFAULT_SMALL_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// `store.*` in the config file; every field optional (environment wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    pub endpoint: Option<url::Url>,
    pub region: Option<String>,
    pub signature_version: Option<SignatureVersion>,
    pub addressing_style: AddressingPreference,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// `logLevel`: 0 debug, 1 info, 2 warn, 3 error.
    pub log_level: u8,
    /// `logPath`.
    pub log_path: PathBuf,
    /// `auditPath`.
    pub audit_path: PathBuf,
    /// `expireTimeSec`: how long memory stays after the last user exits.
    pub expire_time_sec: u64,
    /// `prefetch.vcpus`.
    pub prefetch_vcpus: u32,
    /// `prefetch.workers` (per vCPU).
    pub prefetch_workers: u32,
    /// `prefetch.partSizeBytes` (ossc extension).
    pub part_size_bytes: u64,
    /// `cache.memoryLimitBytes` (ossc extension); 0 = automatic.
    pub cache_memory_limit_bytes: u64,
    /// `cache.smallFileBytes` (ossc extension).
    pub cache_small_file_bytes: u64,
    /// `store.*` (ossc extension).
    pub store: StoreConfig,
    /// `peer.*` (ossc extension): the peer layer; env vars override it.
    pub peer: PeerConfig,
}

/// The `peer` section (ossc extension). Each key has an environment variable
/// that wins over it (see `ossc_peer::swarm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerConfig {
    /// `peer.peers`: `host:port` entries (`OSS_CONNECTOR_PEERS`).
    pub peers: Vec<String>,
    /// `peer.listen`: `ip:port` (`OSS_CONNECTOR_PEER_LISTEN`).
    pub listen: Option<String>,
    /// `peer.advertise`: the address peers know this node by
    /// (`OSS_CONNECTOR_PEER_ADVERTISE`).
    pub advertise: Option<String>,
    /// `peer.secretFile`: file holding the cluster secret
    /// (`OSS_CONNECTOR_CLUSTER_SECRET` gives the secret itself).
    pub secret_file: Option<PathBuf>,
    /// `peer.chunkSizeBytes`.
    pub chunk_size_bytes: Option<u64>,
    /// `peer.transport`: `framed`, `grpc` or `quic` (`OSS_CONNECTOR_PEER_TRANSPORT`);
    /// validated by the peer layer.
    pub transport: Option<String>,
    /// `peer.uploadBytesPerSec`: the most bytes per second this node sends
    /// to peers (all transports, all pulls together), also the capacity its
    /// reported idle upload bandwidth is computed from (unset: no cap, and
    /// the peak rate observed).
    pub upload_bytes_per_sec: Option<u64>,
    /// `peer.leaveGraceSec`: how long a node leaving the swarm keeps serving
    /// the pulls in flight (unset: the peer layer's default).
    pub leave_grace_sec: Option<u64>,
    /// `peer.requireVerifiedObjects` (default false): accept peer bytes only
    /// for objects whose store declares a cryptographic digest (SHA-256,
    /// SHA-1, Content-MD5 or an MD5 ETag); everything else comes from the
    /// store.
    pub require_verified_objects: bool,
    /// `peer.membership`: `gossip` or `heartbeat`
    /// (`OSS_CONNECTOR_PEER_MEMBERSHIP`); validated by the peer layer.
    pub membership: Option<String>,
    /// `peer.gossipListen`: `ip:port` of the gossip socket
    /// (`OSS_CONNECTOR_GOSSIP_LISTEN`); validated by the peer layer.
    pub gossip_listen: Option<String>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            log_level: DEFAULT_LOG_LEVEL,
            log_path: PathBuf::from(DEFAULT_LOG_PATH),
            audit_path: PathBuf::from(DEFAULT_AUDIT_PATH),
            expire_time_sec: DEFAULT_EXPIRE_TIME_SEC,
            prefetch_vcpus: DEFAULT_PREFETCH_VCPUS,
            prefetch_workers: DEFAULT_PREFETCH_WORKERS,
            part_size_bytes: DEFAULT_PART_SIZE_BYTES,
            cache_memory_limit_bytes: DEFAULT_CACHE_MEMORY_LIMIT_BYTES,
            cache_small_file_bytes: DEFAULT_SMALL_FILE_BYTES,
            store: StoreConfig::default(),
            peer: PeerConfig::default(),
        }
    }
}

/// A parsed config and the warnings (unknown keys) found on the way.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: ConnectorConfig,
    pub warnings: Vec<String>,
    /// The file read, or `None` when the defaults were used.
    pub source: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} named by {CONFIG_PATH_ENV} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid JSON: {message} at line {line}, column {column}")]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config file {path}: key `{key}` must be {expected}, found {found}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
    #[error("config file {path}: key `{key}` has invalid value {value}: expected {expected}")]
    InvalidValue {
        path: PathBuf,
        key: String,
        value: String,
        expected: String,
    },
}

impl ConnectorConfig {
    /// Loads from the process environment: `$OSS_CONNECTOR_CONFIG`, else
    /// [`DEFAULT_CONFIG_PATH`], else defaults.
    pub fn load() -> Result<LoadedConfig, ConfigError> {
        Self::load_with(&|name| std::env::var(name).ok())
    }

    /// As [`ConnectorConfig::load`] with a custom environment lookup.
    pub fn load_with(lookup: &dyn Fn(&str) -> Option<String>) -> Result<LoadedConfig, ConfigError> {
        Self::load_with_default_path(lookup, Path::new(DEFAULT_CONFIG_PATH))
    }

    fn load_with_default_path(
        lookup: &dyn Fn(&str) -> Option<String>,
        default_path: &Path,
    ) -> Result<LoadedConfig, ConfigError> {
        if let Some(path) = lookup(CONFIG_PATH_ENV).filter(|p| !p.trim().is_empty()) {
            return Self::load_from_path(Path::new(&path));
        }
        match std::fs::read_to_string(default_path) {
            Ok(text) => Self::parse(&text, default_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoadedConfig {
                config: ConnectorConfig::default(),
                warnings: Vec::new(),
                source: None,
            }),
            Err(source) => Err(ConfigError::Read {
                path: default_path.to_owned(),
                source,
            }),
        }
    }

    /// Reads `path`, which must exist.
    pub fn load_from_path(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<LoadedConfig, ConfigError> {
        let root: Value = serde_json::from_str(text).map_err(|e| {
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let full = e.to_string();
            ConfigError::Malformed {
                path: path.to_owned(),
                line: e.line(),
                column: e.column(),
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
            }
        })?;
        let (config, warnings) = walker::walk(&root, path)?;
        Ok(LoadedConfig {
            config,
            warnings,
            source: Some(path.to_owned()),
        })
    }

    /// Ranged GETs in flight across the node: `vcpus * workers`.
    pub fn max_in_flight(&self) -> usize {
        self.prefetch_vcpus as usize * self.prefetch_workers as usize
    }

    /// `expireTimeSec` as a duration.
    pub fn expire_time(&self) -> Duration {
        Duration::from_secs(self.expire_time_sec)
    }

    /// The vendor log level as a `tracing` level.
    pub fn tracing_level(&self) -> tracing::Level {
        match self.log_level {
            0 => tracing::Level::DEBUG,
            1 => tracing::Level::INFO,
            2 => tracing::Level::WARN,
            _ => tracing::Level::ERROR,
        }
    }

    /// The memory budget given `available` bytes (cgroup limit or physical
    /// memory): the configured limit, or [`AUTO_MEMORY_LIMIT_PERCENT`] of
    /// `available` when automatic.
    pub fn effective_memory_limit(&self, available: u64) -> u64 {
        if self.cache_memory_limit_bytes == 0 {
            (u128::from(available) * u128::from(AUTO_MEMORY_LIMIT_PERCENT) / 100) as u64
        } else {
            self.cache_memory_limit_bytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{err, parse};

    /// The vendor's documented sample, shipped in `deploy/config.json`.
    const VENDOR_SAMPLE: &str = include_str!("../../../deploy/config.json");

    #[test]
    fn vendor_sample_parses_to_every_documented_value() {
        let loaded = parse(VENDOR_SAMPLE).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = &loaded.config;
        assert_eq!(c.log_level, 1);
        assert_eq!(
            c.log_path,
            Path::new("/var/log/oss-connector/connector.log")
        );
        assert_eq!(c.audit_path, Path::new("/var/log/oss-connector/audit.log"));
        assert_eq!(c.expire_time_sec, 120);
        assert_eq!(c.prefetch_vcpus, 16);
        assert_eq!(c.prefetch_workers, 16);
        assert_eq!(c.max_in_flight(), 256);
        assert_eq!(c.expire_time(), Duration::from_secs(120));
        assert_eq!(c.tracing_level(), tracing::Level::INFO);
        // Keys the sample omits keep their defaults.
        assert_eq!(c.part_size_bytes, 8 * 1024 * 1024);
        assert_eq!(c.cache_memory_limit_bytes, 0);
        assert_eq!(c.cache_small_file_bytes, 16 * 1024 * 1024);
        assert_eq!(c.store, StoreConfig::default());
        // The sample states exactly the defaults.
        assert_eq!(c, &ConnectorConfig::default());
    }

    #[test]
    fn defaults_serialise_to_the_vendor_sample_byte_for_byte() {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Prefetch {
            vcpus: u32,
            workers: u32,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct VendorFile {
            log_level: u8,
            log_path: String,
            audit_path: String,
            expire_time_sec: u64,
            prefetch: Prefetch,
        }
        let d = ConnectorConfig::default();
        let file = VendorFile {
            log_level: d.log_level,
            log_path: d.log_path.display().to_string(),
            audit_path: d.audit_path.display().to_string(),
            expire_time_sec: d.expire_time_sec,
            prefetch: Prefetch {
                vcpus: d.prefetch_vcpus,
                workers: d.prefetch_workers,
            },
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        serde::Serialize::serialize(&file, &mut ser).unwrap();
        out.push(b'\n');
        assert_eq!(String::from_utf8(out).unwrap(), VENDOR_SAMPLE);
    }
    #[test]
    fn memory_limit_auto_and_explicit() {
        let mut c = ConnectorConfig::default();
        assert_eq!(c.effective_memory_limit(100 << 30), 80 << 30);
        // No overflow at the top of the range.
        let huge = c.effective_memory_limit(u64::MAX);
        assert!(huge < u64::MAX && huge > u64::MAX / 2, "{huge}");
        c.cache_memory_limit_bytes = 1 << 30;
        assert_eq!(c.effective_memory_limit(100 << 30), 1 << 30);
    }

    #[test]
    fn malformed_json_reports_path_line_and_column() {
        let e = parse("{\n    \"logLevel\": 1,\n    \"logPath\": \n}").unwrap_err();
        match &e {
            ConfigError::Malformed { line, column, .. } => {
                assert_eq!(*line, 4);
                assert_eq!(*column, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("/etc/oss-connector/config.json"), "{msg}");
        assert!(msg.contains("line 4, column 1"), "{msg}");
        assert!(err("").contains("line 1"), "empty file");
        assert!(err("{\"logLevel\": 1,}").contains("not valid JSON"));
    }
    #[test]
    fn file_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let missing_default = dir.path().join("absent.json");
        let no_env = |_: &str| None;

        // Default path missing: defaults, no source.
        let loaded = ConnectorConfig::load_with_default_path(&no_env, &missing_default).unwrap();
        assert_eq!(loaded.config, ConnectorConfig::default());
        assert!(loaded.source.is_none());

        // Default path present.
        let default_file = dir.path().join("config.json");
        std::fs::write(&default_file, r#"{"logLevel": 2}"#).unwrap();
        let loaded = ConnectorConfig::load_with_default_path(&no_env, &default_file).unwrap();
        assert_eq!(loaded.config.log_level, 2);
        assert_eq!(loaded.source.as_deref(), Some(default_file.as_path()));

        // Override present wins over the default path.
        let override_file = dir.path().join("override.json");
        std::fs::write(&override_file, r#"{"logLevel": 3}"#).unwrap();
        let path_text = override_file.display().to_string();
        let env = |k: &str| (k == CONFIG_PATH_ENV).then(|| path_text.clone());
        let loaded = ConnectorConfig::load_with_default_path(&env, &default_file).unwrap();
        assert_eq!(loaded.config.log_level, 3);

        // Override naming a missing file is an error naming the file and variable.
        let gone = dir.path().join("gone.json").display().to_string();
        let env = |k: &str| (k == CONFIG_PATH_ENV).then(|| gone.clone());
        let e = ConnectorConfig::load_with_default_path(&env, &default_file).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains(&gone) && msg.contains(CONFIG_PATH_ENV),
            "{msg}"
        );

        // An unreadable path (a directory) is a read error, not "defaults".
        let e = ConnectorConfig::load_with_default_path(&no_env, dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    }
}

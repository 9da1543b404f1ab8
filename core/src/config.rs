//! Configuration: the vendor's `config.json` contract plus the `OSS_*`
//! environment.
//!
//! Design decision: the file is parsed into a `serde_json::Value` and walked
//! by hand instead of being deserialised into a struct with
//! `#[serde(default)]`. The walk knows the dotted name of every key, so each
//! error names the file, the key (`prefetch.vcpus`) and what was expected,
//! and unknown keys become warnings rather than errors (the vendor file may
//! grow keys we do not know; a typo should be visible, not fatal). Every
//! default lives in a documented `DEFAULT_*` constant, and a test parses the
//! vendor's documented sample (`deploy/config.json`) and re-serialises the
//! defaults to the same bytes, so docs, sample and code cannot drift apart.
//!
//! Environment resolution ([`StoreEnv`]) takes a lookup closure instead of
//! reading `std::env` directly, so tests never mutate the process
//! environment. Precedence: environment > config file `store.*` > built-in
//! defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::sign::{Credentials, SignatureVersion};
use crate::store_url::{
    infer_region, parse_endpoint, resolve_region, AddressingPreference, AddressingStyle, Scheme,
    StoreUrl, StoreUrlError, S3_DEFAULT_REGION,
};

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

/// Environment variable names read by [`StoreEnv`].
pub mod env {
    pub const ACCESS_KEY_ID: &str = "OSS_ACCESS_KEY_ID";
    pub const ACCESS_KEY_SECRET: &str = "OSS_ACCESS_KEY_SECRET";
    pub const SESSION_TOKEN: &str = "OSS_SESSION_TOKEN";
    pub const ENDPOINT: &str = "OSS_ENDPOINT";
    pub const REGION: &str = "OSS_REGION";
    pub const PATH: &str = "OSS_PATH";
    pub const MODEL_DIR: &str = "MODEL_DIR";
    pub const SIGNATURE_VERSION: &str = "OSS_SIGNATURE_VERSION";
}

/// Fully resolved settings for one bucket's client.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Scheme + host (+ port), no path: `https://oss-cn-beijing.aliyuncs.com`.
    pub endpoint: url::Url,
    /// Signing region (`cn-beijing`, `us-east-1`); empty if unknown (V1 only).
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    /// `None` means anonymous.
    pub credentials: Option<Credentials>,
    pub signature_version: SignatureVersion,
    pub addressing: AddressingStyle,
}

impl StoreSettings {
    /// `Host` header value for requests to this bucket (`bucket.host` for
    /// virtual-hosted style), with `:port` only when not the scheme default.
    pub fn bucket_host(&self) -> String {
        let host = self.endpoint.host_str().unwrap_or_default();
        let host = match self.addressing {
            AddressingStyle::VirtualHosted => format!("{}.{host}", self.bucket),
            AddressingStyle::Path => host.to_owned(),
        };
        match self.endpoint.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// Wire path (percent-encoded) of `key`, or of the bucket when `key` is
    /// empty: `/key` virtual-hosted, `/bucket/key` path style.
    pub fn object_path(&self, key: &str) -> String {
        let encoded = crate::sign::uri_encode(key, true);
        match self.addressing {
            AddressingStyle::VirtualHosted => format!("/{encoded}"),
            AddressingStyle::Path => format!("/{}/{encoded}", self.bucket),
        }
    }

    /// Absolute URL (no query) of `key` in this bucket.
    pub fn object_url(&self, key: &str) -> url::Url {
        let text = format!(
            "{}://{}{}",
            self.endpoint.scheme(),
            self.bucket_host(),
            self.object_path(key)
        );
        url::Url::parse(&text).expect("scheme, validated host and encoded path form a URL")
    }
}

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
    /// `peer.transport`: `quic` or `grpc` (`OSS_CONNECTOR_PEER_TRANSPORT`);
    /// validated by the peer layer.
    pub transport: Option<String>,
    /// `peer.uploadBytesPerSec`: this node's upload capacity to peers, used
    /// to compute the idle upload bandwidth it reports (unset: the peak rate
    /// observed).
    pub upload_bytes_per_sec: Option<u64>,
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
        let mut walker = Walker {
            path,
            warnings: Vec::new(),
        };
        let config = walker.config(&root)?;
        Ok(LoadedConfig {
            config,
            warnings: walker.warnings,
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

/// Keys known at each level, for unknown-key warnings.
const TOP_LEVEL_KEYS: &[&str] = &[
    "logLevel",
    "logPath",
    "auditPath",
    "expireTimeSec",
    "prefetch",
    "cache",
    "store",
    "peer",
];
const PREFETCH_KEYS: &[&str] = &["vcpus", "workers", "partSizeBytes"];
const CACHE_KEYS: &[&str] = &["memoryLimitBytes", "smallFileBytes"];
const STORE_KEYS: &[&str] = &["endpoint", "region", "signatureVersion", "addressingStyle"];
const PEER_KEYS: &[&str] = &[
    "peers",
    "listen",
    "advertise",
    "secretFile",
    "chunkSizeBytes",
    "transport",
    "uploadBytesPerSec",
    "requireVerifiedObjects",
    "membership",
    "gossipListen",
];

type Object = serde_json::Map<String, Value>;

/// Walks the JSON tree, tracking dotted key names for messages.
struct Walker<'a> {
    path: &'a Path,
    warnings: Vec<String>,
}

impl Walker<'_> {
    fn config(&mut self, root: &Value) -> Result<ConnectorConfig, ConfigError> {
        let mut config = ConnectorConfig::default();
        let root = self.object(root, "<root>")?;
        self.warn_unknown(root, "", TOP_LEVEL_KEYS);

        if let Some(v) = root.get("logLevel") {
            config.log_level = self.integer(
                v,
                "logLevel",
                0,
                u64::from(MAX_LOG_LEVEL),
                "an integer from 0 to 3 (0=debug, 1=info, 2=warn, 3=error)",
            )? as u8;
        }
        if let Some(v) = root.get("logPath") {
            config.log_path = PathBuf::from(self.non_empty_string(v, "logPath", "a file path")?);
        }
        if let Some(v) = root.get("auditPath") {
            config.audit_path =
                PathBuf::from(self.non_empty_string(v, "auditPath", "a file path")?);
        }
        if let Some(v) = root.get("expireTimeSec") {
            config.expire_time_sec = self.integer(
                v,
                "expireTimeSec",
                0,
                u64::MAX,
                "a non-negative integer number of seconds",
            )?;
        }

        if let Some(v) = root.get("prefetch") {
            let prefetch = self.object(v, "prefetch")?;
            self.warn_unknown(prefetch, "prefetch.", PREFETCH_KEYS);
            let factor_expected = format!("an integer from 1 to {MAX_PREFETCH_FACTOR}");
            if let Some(v) = prefetch.get("vcpus") {
                config.prefetch_vcpus = self.integer(
                    v,
                    "prefetch.vcpus",
                    1,
                    u64::from(MAX_PREFETCH_FACTOR),
                    &factor_expected,
                )? as u32;
            }
            if let Some(v) = prefetch.get("workers") {
                config.prefetch_workers = self.integer(
                    v,
                    "prefetch.workers",
                    1,
                    u64::from(MAX_PREFETCH_FACTOR),
                    &factor_expected,
                )? as u32;
            }
            if let Some(v) = prefetch.get("partSizeBytes") {
                config.part_size_bytes = self.integer(
                    v,
                    "prefetch.partSizeBytes",
                    MIN_PART_SIZE_BYTES,
                    MAX_PART_SIZE_BYTES,
                    &format!(
                        "an integer number of bytes from {MIN_PART_SIZE_BYTES} (64 KiB) to {MAX_PART_SIZE_BYTES} (1 GiB)"
                    ),
                )?;
            }
        }

        if let Some(v) = root.get("cache") {
            let cache = self.object(v, "cache")?;
            self.warn_unknown(cache, "cache.", CACHE_KEYS);
            if let Some(v) = cache.get("memoryLimitBytes") {
                config.cache_memory_limit_bytes = self.integer(
                    v,
                    "cache.memoryLimitBytes",
                    0,
                    u64::MAX,
                    "a non-negative integer number of bytes (0 = automatic)",
                )?;
            }
            if let Some(v) = cache.get("smallFileBytes") {
                config.cache_small_file_bytes = self.integer(
                    v,
                    "cache.smallFileBytes",
                    0,
                    u64::MAX,
                    "a non-negative integer number of bytes",
                )?;
            }
        }

        if let Some(v) = root.get("store") {
            let store = self.object(v, "store")?;
            self.warn_unknown(store, "store.", STORE_KEYS);
            if let Some(v) = store.get("endpoint") {
                let text = self.non_empty_string(v, "store.endpoint", "an endpoint such as \"oss-cn-beijing-internal.aliyuncs.com\" or \"http://127.0.0.1:9000\"")?;
                let url = parse_endpoint(&text).map_err(|e| {
                    let reason = match e {
                        StoreUrlError::InvalidEndpoint { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    self.invalid(
                        v,
                        "store.endpoint",
                        &format!("an http(s) endpoint; {reason}"),
                    )
                })?;
                config.store.endpoint = Some(url);
            }
            if let Some(v) = store.get("region") {
                config.store.region = Some(self.non_empty_string(
                    v,
                    "store.region",
                    "a region such as \"cn-beijing\"",
                )?);
            }
            if let Some(v) = store.get("signatureVersion") {
                let expected = "one of \"v1\", \"v4\", \"s3v4\"";
                let text = self.non_empty_string(v, "store.signatureVersion", expected)?;
                config.store.signature_version = Some(
                    text.parse()
                        .map_err(|_| self.invalid(v, "store.signatureVersion", expected))?,
                );
            }
            if let Some(v) = store.get("addressingStyle") {
                let expected = "one of \"auto\", \"path\", \"virtual-hosted\"";
                let text = self.non_empty_string(v, "store.addressingStyle", expected)?;
                config.store.addressing_style = text
                    .parse()
                    .map_err(|_| self.invalid(v, "store.addressingStyle", expected))?;
            }
        }
        if let Some(v) = root.get("peer") {
            let peer = self.object(v, "peer")?;
            self.warn_unknown(peer, "peer.", PEER_KEYS);
            if let Some(v) = peer.get("peers") {
                let expected = "an array of \"host:port\" strings";
                let items = v
                    .as_array()
                    .ok_or_else(|| self.wrong_type(v, "peer.peers", expected))?;
                config.peer.peers = items
                    .iter()
                    .map(|item| self.non_empty_string(item, "peer.peers", expected))
                    .collect::<Result<_, _>>()?;
            }
            if let Some(v) = peer.get("listen") {
                config.peer.listen = Some(self.non_empty_string(
                    v,
                    "peer.listen",
                    "an ip:port such as \"0.0.0.0:7468\"",
                )?);
            }
            if let Some(v) = peer.get("advertise") {
                config.peer.advertise =
                    Some(self.non_empty_string(v, "peer.advertise", "a host:port")?);
            }
            if let Some(v) = peer.get("secretFile") {
                config.peer.secret_file = Some(PathBuf::from(self.non_empty_string(
                    v,
                    "peer.secretFile",
                    "a file path",
                )?));
            }
            if let Some(v) = peer.get("transport") {
                config.peer.transport =
                    Some(self.non_empty_string(v, "peer.transport", "\"quic\" or \"grpc\"")?);
            }
            if let Some(v) = peer.get("membership") {
                config.peer.membership = Some(self.non_empty_string(
                    v,
                    "peer.membership",
                    "\"gossip\" or \"heartbeat\"",
                )?);
            }
            if let Some(v) = peer.get("gossipListen") {
                config.peer.gossip_listen = Some(self.non_empty_string(
                    v,
                    "peer.gossipListen",
                    "an ip:port such as \"0.0.0.0:7469\"",
                )?);
            }
            if let Some(v) = peer.get("chunkSizeBytes") {
                config.peer.chunk_size_bytes = Some(self.integer(
                    v,
                    "peer.chunkSizeBytes",
                    1 << 20,
                    1 << 30,
                    "an integer number of bytes from 1048576 (1 MiB) to 1073741824 (1 GiB)",
                )?);
            }
            if let Some(v) = peer.get("uploadBytesPerSec") {
                config.peer.upload_bytes_per_sec = Some(self.integer(
                    v,
                    "peer.uploadBytesPerSec",
                    1,
                    u64::MAX >> 1,
                    "a positive integer number of bytes per second",
                )?);
            }
            if let Some(v) = peer.get("requireVerifiedObjects") {
                config.peer.require_verified_objects = v.as_bool().ok_or_else(|| {
                    self.wrong_type(v, "peer.requireVerifiedObjects", "true or false")
                })?;
            }
        }
        Ok(config)
    }

    fn warn_unknown(&mut self, object: &Object, prefix: &str, known: &[&str]) {
        for key in object.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let mut warning = format!(
                "config file {}: unknown key `{prefix}{key}` ignored",
                self.path.display()
            );
            if let Some(near) = known.iter().find(|k| is_near_miss(key, k)) {
                warning.push_str(&format!(" (did you mean `{prefix}{near}`?)"));
            }
            tracing::warn!("{warning}");
            self.warnings.push(warning);
        }
    }

    fn object<'v>(&self, value: &'v Value, key: &str) -> Result<&'v Object, ConfigError> {
        value
            .as_object()
            .ok_or_else(|| self.wrong_type(value, key, "a JSON object"))
    }

    fn integer(
        &self,
        value: &Value,
        key: &str,
        min: u64,
        max: u64,
        expected: &str,
    ) -> Result<u64, ConfigError> {
        let Value::Number(number) = value else {
            return Err(self.wrong_type(value, key, expected));
        };
        if let Some(n) = number.as_u64() {
            if (min..=max).contains(&n) {
                return Ok(n);
            }
            return Err(self.invalid(value, key, expected));
        }
        if number.as_i64().is_some() {
            // Negative integer: right type, impossible value.
            return Err(self.invalid(value, key, expected));
        }
        Err(self.wrong_type(value, key, expected))
    }

    fn non_empty_string(
        &self,
        value: &Value,
        key: &str,
        expected: &str,
    ) -> Result<String, ConfigError> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Value::String(_) => {
                Err(self.invalid(value, key, &format!("a non-empty string: {expected}")))
            }
            _ => Err(self.wrong_type(value, key, &format!("a string: {expected}"))),
        }
    }

    fn wrong_type(&self, value: &Value, key: &str, expected: &str) -> ConfigError {
        ConfigError::WrongType {
            path: self.path.to_owned(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            found: describe(value),
        }
    }

    fn invalid(&self, value: &Value, key: &str, expected: &str) -> ConfigError {
        ConfigError::InvalidValue {
            path: self.path.to_owned(),
            key: key.to_owned(),
            value: value.to_string(),
            expected: expected.to_owned(),
        }
    }
}

/// "string \"x\"", "number 1.5", "boolean true", "null", "an array", "an object".
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Same key modulo case, `_`/`-`, or a single-character edit.
fn is_near_miss(key: &str, known: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<Vec<char>>()
    };
    let (a, b) = (norm(key), norm(known));
    if a == b {
        return true;
    }
    edit_distance(&a, &b) <= 1
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// Environment.

/// The `OSS_*` / `MODEL_DIR` environment; an empty value counts as unset.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreEnv {
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<String>,
    pub session_token: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path: Option<String>,
    pub model_dir: Option<String>,
    pub signature_version: Option<String>,
}

impl std::fmt::Debug for StoreEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoreEnv")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &redacted(&self.access_key_secret))
            .field("session_token", &redacted(&self.session_token))
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path", &self.path)
            .field("model_dir", &self.model_dir)
            .field("signature_version", &self.signature_version)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{set} is set but {missing} is not: set both for signed access, or neither for anonymous access")]
    IncompleteCredentials {
        set: &'static str,
        missing: &'static str,
    },
    #[error("OSS_SESSION_TOKEN is set but OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET are not: an STS token needs its temporary key pair")]
    TokenWithoutCredentials,
    #[error("OSS_PATH is not set: expected oss://bucket/prefix/ or s3://bucket/prefix/")]
    MissingPath,
    #[error("OSS_PATH: {0}")]
    Path(#[source] StoreUrlError),
    #[error("{origin}: {error}")]
    Endpoint {
        origin: &'static str,
        #[source]
        error: StoreUrlError,
    },
    #[error("no endpoint for {bucket_url}: set OSS_ENDPOINT (e.g. oss-cn-beijing-internal.aliyuncs.com), store.endpoint in the config file, or OSS_REGION")]
    MissingEndpoint { bucket_url: String },
    #[error("OSS_SIGNATURE_VERSION: {0}")]
    SignatureVersion(String),
    #[error(transparent)]
    Region(StoreUrlError),
    #[error("MODEL_DIR must be an absolute path, got {0:?}")]
    RelativeModelDir(String),
}

impl StoreEnv {
    /// Reads every variable through `lookup` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            access_key_id: get(env::ACCESS_KEY_ID),
            access_key_secret: get(env::ACCESS_KEY_SECRET),
            session_token: get(env::SESSION_TOKEN),
            endpoint: get(env::ENDPOINT),
            region: get(env::REGION),
            path: get(env::PATH),
            model_dir: get(env::MODEL_DIR),
            signature_version: get(env::SIGNATURE_VERSION),
        }
    }

    /// Reads the process environment.
    pub fn from_process_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Credentials: both key id and secret, or neither (anonymous).
    pub fn credentials(&self) -> Result<Option<Credentials>, EnvError> {
        match (&self.access_key_id, &self.access_key_secret) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                access_key_id: id.clone(),
                access_key_secret: secret.clone(),
                security_token: self.session_token.clone(),
            })),
            (Some(_), None) => Err(EnvError::IncompleteCredentials {
                set: env::ACCESS_KEY_ID,
                missing: env::ACCESS_KEY_SECRET,
            }),
            (None, Some(_)) => Err(EnvError::IncompleteCredentials {
                set: env::ACCESS_KEY_SECRET,
                missing: env::ACCESS_KEY_ID,
            }),
            (None, None) if self.session_token.is_some() => Err(EnvError::TokenWithoutCredentials),
            (None, None) => Ok(None),
        }
    }

    /// `MODEL_DIR`, which must be absolute when set.
    pub fn model_dir(&self) -> Result<Option<PathBuf>, EnvError> {
        match &self.model_dir {
            None => Ok(None),
            Some(dir) if Path::new(dir).is_absolute() => Ok(Some(PathBuf::from(dir))),
            Some(dir) => Err(EnvError::RelativeModelDir(dir.clone())),
        }
    }

    /// `OSS_PATH` parsed.
    pub fn store_url(&self) -> Result<StoreUrl, EnvError> {
        let path = self.path.as_deref().ok_or(EnvError::MissingPath)?;
        StoreUrl::parse(path).map_err(EnvError::Path)
    }
}

/// Resolves the store for `OSS_PATH`; see [`resolve_store_for`].
pub fn resolve_store(env: &StoreEnv, config: &ConnectorConfig) -> Result<StoreSettings, EnvError> {
    resolve_store_for(&env.store_url()?, env, config)
}

/// Combines a store path, the environment and the config file's `store.*`
/// (environment wins) into [`StoreSettings`]:
/// - signature: `OSS_SIGNATURE_VERSION` > `store.signatureVersion` > v4 for
///   `oss://`, s3v4 for `s3://`;
/// - endpoint: `OSS_ENDPOINT` > `store.endpoint` > derived from the region
///   (`oss-<region>.aliyuncs.com`, `s3.<region>.amazonaws.com`); a leading
///   `bucket.` label on a vendor endpoint is dropped (it is re-added for
///   virtual-hosted requests);
/// - region: `OSS_REGION` > `store.region` > inferred from the endpoint >
///   `us-east-1` for `s3://` or SigV4; OSS V4 without one is an error;
/// - addressing: `store.addressingStyle`, `auto` by default.
pub fn resolve_store_for(
    url: &StoreUrl,
    env: &StoreEnv,
    config: &ConnectorConfig,
) -> Result<StoreSettings, EnvError> {
    let credentials = env.credentials()?;
    let signature_version = match &env.signature_version {
        Some(text) => text.parse().map_err(EnvError::SignatureVersion)?,
        None => config
            .store
            .signature_version
            .unwrap_or_else(|| url.scheme.default_signature_version()),
    };
    let explicit_region = env
        .region
        .as_deref()
        .or(config.store.region.as_deref())
        .map(str::trim);
    let endpoint = match (&env.endpoint, &config.store.endpoint) {
        (Some(text), _) => parse_endpoint(text).map_err(|error| EnvError::Endpoint {
            origin: env::ENDPOINT,
            error,
        })?,
        (None, Some(url)) => url.clone(),
        (None, None) => default_endpoint(url, explicit_region)?,
    };
    let endpoint = strip_bucket_label(endpoint, &url.bucket);
    let region = match resolve_region(explicit_region, &endpoint, signature_version) {
        Err(StoreUrlError::RegionNotInferred { .. }) if url.scheme == Scheme::S3 => {
            S3_DEFAULT_REGION.to_owned()
        }
        other => other.map_err(EnvError::Region)?,
    };
    let addressing = config.store.addressing_style.resolve(&endpoint);
    Ok(StoreSettings {
        endpoint,
        region,
        bucket: url.bucket.clone(),
        prefix: url.prefix.clone(),
        credentials,
        signature_version,
        addressing,
    })
}

/// The vendor's public endpoint for a region when none is configured.
fn default_endpoint(url: &StoreUrl, region: Option<&str>) -> Result<url::Url, EnvError> {
    let text = match (url.scheme, region.filter(|r| !r.is_empty())) {
        (Scheme::Oss, Some(region)) => format!("https://oss-{region}.aliyuncs.com"),
        (Scheme::Oss, None) => {
            return Err(EnvError::MissingEndpoint {
                bucket_url: url.to_string(),
            })
        }
        (Scheme::S3, Some(region)) => format!("https://s3.{region}.amazonaws.com"),
        (Scheme::S3, None) => format!("https://s3.{S3_DEFAULT_REGION}.amazonaws.com"),
    };
    parse_endpoint(&text).map_err(|error| EnvError::Endpoint {
        origin: env::REGION,
        error,
    })
}

/// `bucket.oss-cn-beijing.aliyuncs.com` -> `oss-cn-beijing.aliyuncs.com`,
/// only when what remains is a recognisable vendor endpoint (a custom host
/// such as `models.example.com` is left alone).
fn strip_bucket_label(mut endpoint: url::Url, bucket: &str) -> url::Url {
    let Some(host) = endpoint.host_str() else {
        return endpoint;
    };
    let Some(rest) = host
        .strip_prefix(bucket)
        .and_then(|r| r.strip_prefix('.'))
        .map(str::to_owned)
    else {
        return endpoint;
    };
    let is_vendor = infer_region(&rest).is_some()
        || rest.ends_with(".aliyuncs.com")
        || rest.ends_with(".amazonaws.com");
    if is_vendor && endpoint.set_host(Some(&rest)).is_err() {
        tracing::debug!(host = %rest, "could not strip bucket label from endpoint");
    }
    endpoint
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The vendor's documented sample, shipped in `deploy/config.json`.
    const VENDOR_SAMPLE: &str = include_str!("../../deploy/config.json");

    fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
        ConnectorConfig::parse(text, Path::new("/etc/oss-connector/config.json"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn peer_section_is_parsed_and_checked() {
        let c = parse(
            r#"{"peer": {"peers": ["10.0.0.1:7468", "peers.ns.svc:7468"], "listen": "0.0.0.0:7000",
                 "advertise": "10.0.0.1:7000", "secretFile": "/etc/ossc/secret", "chunkSizeBytes": 8388608,
                 "transport": "quic", "uploadBytesPerSec": 1250000000}}"#,
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let p = c.config.peer;
        assert_eq!(p.peers, ["10.0.0.1:7468", "peers.ns.svc:7468"]);
        assert_eq!(p.listen.as_deref(), Some("0.0.0.0:7000"));
        assert_eq!(p.advertise.as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(p.secret_file, Some(PathBuf::from("/etc/ossc/secret")));
        assert_eq!(p.chunk_size_bytes, Some(8 << 20));
        assert_eq!(p.transport.as_deref(), Some("quic"));
        assert_eq!(p.upload_bytes_per_sec, Some(1_250_000_000));
        assert_eq!(parse("{}").unwrap().config.peer, PeerConfig::default());
        assert!(err(r#"{"peer": {"uploadBytesPerSec": 0}}"#).contains("peer.uploadBytesPerSec"));
        assert!(err(r#"{"peer": {"peers": "a:1"}}"#).contains("peer.peers"));
        assert!(err(r#"{"peer": {"chunkSizeBytes": 5}}"#).contains("peer.chunkSizeBytes"));
        assert!(err(r#"{"peer": {"transport": 4}}"#).contains("peer.transport"));
    }

    #[test]
    fn membership_keys_are_strings_checked_by_the_peer_layer() {
        let c = parse(r#"{"peer": {"membership": "heartbeat", "gossipListen": "0.0.0.0:9000"}}"#)
            .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.config.peer.membership.as_deref(), Some("heartbeat"));
        assert_eq!(c.config.peer.gossip_listen.as_deref(), Some("0.0.0.0:9000"));
        assert!(err(r#"{"peer": {"membership": 1}}"#).contains("peer.membership"));
        assert!(err(r#"{"peer": {"gossipListen": ""}}"#).contains("peer.gossipListen"));
    }

    #[test]
    fn require_verified_objects_is_a_boolean_off_by_default() {
        assert!(!parse("{}").unwrap().config.peer.require_verified_objects);
        let c = parse(r#"{"peer": {"requireVerifiedObjects": true}}"#).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.config.peer.require_verified_objects);
        let e = err(r#"{"peer": {"requireVerifiedObjects": "yes"}}"#);
        assert!(
            e.contains("peer.requireVerifiedObjects") && e.contains("true or false"),
            "{e}"
        );
    }

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
    fn extensions_parse() {
        let text = r#"{
            "logLevel": 0,
            "expireTimeSec": 0,
            "prefetch": {"vcpus": 4, "workers": 8, "partSizeBytes": 16777216},
            "cache": {"memoryLimitBytes": 68719476736, "smallFileBytes": 0},
            "store": {"endpoint": "http://127.0.0.1:9000", "region": "cn-beijing",
                      "signatureVersion": "s3v4", "addressingStyle": "virtual-hosted"}
        }"#;
        let c = parse(text).unwrap().config;
        assert_eq!(c.tracing_level(), tracing::Level::DEBUG);
        assert_eq!(c.expire_time_sec, 0);
        assert_eq!(c.max_in_flight(), 32);
        assert_eq!(c.part_size_bytes, 16 << 20);
        assert_eq!(c.cache_memory_limit_bytes, 64 << 30);
        assert_eq!(c.cache_small_file_bytes, 0);
        assert_eq!(c.store.endpoint.unwrap().as_str(), "http://127.0.0.1:9000/");
        assert_eq!(c.store.region.as_deref(), Some("cn-beijing"));
        assert_eq!(c.store.signature_version, Some(SignatureVersion::S3V4));
        assert_eq!(
            c.store.addressing_style,
            AddressingPreference::VirtualHosted
        );
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
    fn wrong_types_name_key_and_expectation() {
        let cases: &[(&str, &str, &str)] = &[
            ("[]", "`<root>`", "a JSON object"),
            (
                r#"{"logLevel": "info"}"#,
                "`logLevel`",
                "found string \"info\"",
            ),
            (r#"{"logLevel": 1.5}"#, "`logLevel`", "found number 1.5"),
            (r#"{"logPath": 3}"#, "`logPath`", "must be a string"),
            (
                r#"{"expireTimeSec": true}"#,
                "`expireTimeSec`",
                "found boolean true",
            ),
            (
                r#"{"expireTimeSec": null}"#,
                "`expireTimeSec`",
                "found null",
            ),
            (r#"{"prefetch": 16}"#, "`prefetch`", "a JSON object"),
            (
                r#"{"prefetch": {"vcpus": "16"}}"#,
                "`prefetch.vcpus`",
                "an integer from 1 to 1024",
            ),
            (
                r#"{"prefetch": {"workers": [1]}}"#,
                "`prefetch.workers`",
                "found an array",
            ),
            (
                r#"{"cache": {"memoryLimitBytes": "8G"}}"#,
                "`cache.memoryLimitBytes`",
                "integer number of bytes",
            ),
            (r#"{"store": {"region": 1}}"#, "`store.region`", "a string"),
            (r#"{"store": []}"#, "`store`", "a JSON object"),
        ];
        for (text, key, needle) in cases {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, ConfigError::WrongType { .. }), "{text}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains("/etc/oss-connector/config.json"), "{msg}");
            assert!(msg.contains(key), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }

    #[test]
    fn impossible_values_name_key_and_expectation() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"logLevel": 7}"#, "`logLevel`", "0 to 3"),
            (r#"{"logLevel": -1}"#, "`logLevel`", "invalid value -1"),
            (r#"{"logPath": ""}"#, "`logPath`", "non-empty"),
            (r#"{"auditPath": "  "}"#, "`auditPath`", "non-empty"),
            (
                r#"{"expireTimeSec": -5}"#,
                "`expireTimeSec`",
                "non-negative",
            ),
            (
                r#"{"prefetch": {"vcpus": 0}}"#,
                "`prefetch.vcpus`",
                "from 1 to 1024",
            ),
            (
                r#"{"prefetch": {"workers": 0}}"#,
                "`prefetch.workers`",
                "from 1 to 1024",
            ),
            (
                r#"{"prefetch": {"workers": 5000}}"#,
                "`prefetch.workers`",
                "from 1 to 1024",
            ),
            (
                r#"{"prefetch": {"partSizeBytes": 0}}"#,
                "`prefetch.partSizeBytes`",
                "64 KiB",
            ),
            (
                r#"{"prefetch": {"partSizeBytes": 2147483648}}"#,
                "`prefetch.partSizeBytes`",
                "1 GiB",
            ),
            (
                r#"{"cache": {"memoryLimitBytes": -1}}"#,
                "`cache.memoryLimitBytes`",
                "non-negative",
            ),
            (
                r#"{"store": {"signatureVersion": "v2"}}"#,
                "`store.signatureVersion`",
                "\"v1\", \"v4\", \"s3v4\"",
            ),
            (
                r#"{"store": {"addressingStyle": "dns"}}"#,
                "`store.addressingStyle`",
                "\"auto\", \"path\", \"virtual-hosted\"",
            ),
            (
                r#"{"store": {"endpoint": "ftp://x"}}"#,
                "`store.endpoint`",
                "http or https",
            ),
            (
                r#"{"store": {"endpoint": "https://h/bucket"}}"#,
                "`store.endpoint`",
                "without a path",
            ),
            (
                r#"{"store": {"region": ""}}"#,
                "`store.region`",
                "non-empty",
            ),
        ];
        for (text, key, needle) in cases {
            let e = parse(text).unwrap_err();
            assert!(
                matches!(e, ConfigError::InvalidValue { .. }),
                "{text}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("/etc/oss-connector/config.json"), "{msg}");
            assert!(msg.contains(key), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }

    #[test]
    fn unknown_keys_are_warnings_with_suggestions() {
        let loaded = parse(
            r#"{"loglevel": 2, "future": {"x": 1}, "prefetch": {"vcpu": 2, "workers": 3},
                "cache": {"smallFileByte": 1}, "store": {"bucket": "b"}}"#,
        )
        .unwrap();
        assert_eq!(loaded.config.prefetch_workers, 3);
        // The misspelt key does not take effect.
        assert_eq!(loaded.config.log_level, DEFAULT_LOG_LEVEL);
        let w = loaded.warnings.join("\n");
        assert_eq!(loaded.warnings.len(), 5, "{w}");
        assert!(
            w.contains("unknown key `loglevel` ignored (did you mean `logLevel`?)"),
            "{w}"
        );
        assert!(
            w.contains("unknown key `future` ignored\n")
                || w.ends_with("unknown key `future` ignored"),
            "{w}"
        );
        assert!(
            w.contains("`prefetch.vcpu` ignored (did you mean `prefetch.vcpus`?)"),
            "{w}"
        );
        assert!(
            w.contains("`cache.smallFileByte` ignored (did you mean `cache.smallFileBytes`?)"),
            "{w}"
        );
        assert!(w.contains("`store.bucket` ignored"), "{w}");
        assert!(loaded
            .warnings
            .iter()
            .all(|w| w.contains("/etc/oss-connector/config.json")));
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

    // ---- Environment ---------------------------------------------------

    fn env_of(pairs: &[(&str, &str)]) -> StoreEnv {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        StoreEnv::from_lookup(|k| map.get(k).cloned())
    }

    fn resolve(pairs: &[(&str, &str)]) -> Result<StoreSettings, EnvError> {
        resolve_store(&env_of(pairs), &ConnectorConfig::default())
    }

    #[test]
    fn oss_defaults_v4_region_from_endpoint_virtual_hosted() {
        let s = resolve(&[
            ("OSS_PATH", "oss://my-models/qwen/"),
            ("OSS_ENDPOINT", "oss-cn-beijing-internal.aliyuncs.com"),
            ("OSS_ACCESS_KEY_ID", "ak"),
            ("OSS_ACCESS_KEY_SECRET", "sk"),
            ("OSS_SESSION_TOKEN", "tok"),
        ])
        .unwrap();
        assert_eq!(
            s.endpoint.as_str(),
            "https://oss-cn-beijing-internal.aliyuncs.com/"
        );
        assert_eq!(s.region, "cn-beijing");
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("my-models", "qwen/")
        );
        assert_eq!(s.signature_version, SignatureVersion::OssV4);
        assert_eq!(s.addressing, AddressingStyle::VirtualHosted);
        assert_eq!(
            s.credentials,
            Some(Credentials::new("ak", "sk").with_token("tok"))
        );
        assert_eq!(
            s.bucket_host(),
            "my-models.oss-cn-beijing-internal.aliyuncs.com"
        );
        assert_eq!(s.object_path("qwen/a b+.json"), "/qwen/a%20b%2B.json");
        assert_eq!(
            s.object_url("qwen/x").as_str(),
            "https://my-models.oss-cn-beijing-internal.aliyuncs.com/qwen/x"
        );
    }

    #[test]
    fn bucket_prefixed_endpoint_is_normalised() {
        let s = resolve(&[
            ("OSS_PATH", "oss://my-models/"),
            (
                "OSS_ENDPOINT",
                "https://my-models.oss-cn-hangzhou.aliyuncs.com",
            ),
        ])
        .unwrap();
        assert_eq!(s.endpoint.host_str(), Some("oss-cn-hangzhou.aliyuncs.com"));
        assert_eq!(s.region, "cn-hangzhou");
        assert_eq!(s.bucket_host(), "my-models.oss-cn-hangzhou.aliyuncs.com");
        // A custom domain that merely starts with the bucket name is kept.
        let s = resolve(&[
            ("OSS_PATH", "oss://models/"),
            ("OSS_ENDPOINT", "models.example.com"),
            ("OSS_REGION", "cn-beijing"),
        ])
        .unwrap();
        assert_eq!(s.endpoint.host_str(), Some("models.example.com"));
    }

    #[test]
    fn s3_defaults_sigv4_us_east_1_and_path_style_for_ip() {
        let s = resolve(&[
            ("OSS_PATH", "s3://bucket/p"),
            ("OSS_ENDPOINT", "http://127.0.0.1:9000"),
        ])
        .unwrap();
        assert_eq!(s.signature_version, SignatureVersion::S3V4);
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.addressing, AddressingStyle::Path);
        assert_eq!(s.credentials, None);
        assert_eq!(s.bucket_host(), "127.0.0.1:9000");
        assert_eq!(s.object_path("p/k"), "/bucket/p/k");
        assert_eq!(s.object_path(""), "/bucket/");

        // No endpoint at all: AWS regional endpoint.
        let s = resolve(&[("OSS_PATH", "s3://bucket/")]).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");
        let s = resolve(&[("OSS_PATH", "s3://bucket/"), ("OSS_REGION", "eu-west-1")]).unwrap();
        assert_eq!(s.endpoint.host_str(), Some("s3.eu-west-1.amazonaws.com"));
        assert_eq!(s.region, "eu-west-1");
    }

    #[test]
    fn oss_without_endpoint_uses_region_or_fails_clearly() {
        let s = resolve(&[("OSS_PATH", "oss://bucket/"), ("OSS_REGION", "cn-shanghai")]).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://oss-cn-shanghai.aliyuncs.com/");
        let e = resolve(&[("OSS_PATH", "oss://bucket/")]).unwrap_err();
        assert!(matches!(e, EnvError::MissingEndpoint { .. }));
        assert!(e.to_string().contains("set OSS_ENDPOINT"), "{e}");
    }

    #[test]
    fn v4_without_inferable_region_is_the_vendor_error() {
        let e = resolve(&[
            ("OSS_PATH", "oss://bucket/"),
            ("OSS_ENDPOINT", "http://127.0.0.1:9000"),
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("failed to infer region from endpoint"),
            "{e}"
        );
        // V1 does not need a region.
        let s = resolve(&[
            ("OSS_PATH", "oss://bucket/"),
            ("OSS_ENDPOINT", "http://127.0.0.1:9000"),
            ("OSS_SIGNATURE_VERSION", "V1"),
        ])
        .unwrap();
        assert_eq!(
            (s.signature_version, s.region.as_str()),
            (SignatureVersion::OssV1, "")
        );
    }

    #[test]
    fn credential_combinations() {
        let base = [("OSS_PATH", "oss://bucket/"), ("OSS_REGION", "cn-beijing")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            resolve(&v)
        };
        assert_eq!(with(&[]).unwrap().credentials, None);
        // Empty values count as unset.
        assert_eq!(
            with(&[("OSS_ACCESS_KEY_ID", ""), ("OSS_ACCESS_KEY_SECRET", "")])
                .unwrap()
                .credentials,
            None
        );
        let e = with(&[("OSS_ACCESS_KEY_ID", "ak")]).unwrap_err();
        assert_eq!(
            e,
            EnvError::IncompleteCredentials {
                set: "OSS_ACCESS_KEY_ID",
                missing: "OSS_ACCESS_KEY_SECRET"
            }
        );
        assert!(e.to_string().contains("set both"), "{e}");
        let e = with(&[("OSS_ACCESS_KEY_SECRET", "sk")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("OSS_ACCESS_KEY_SECRET is set but OSS_ACCESS_KEY_ID"),
            "{e}"
        );
        let e = with(&[("OSS_SESSION_TOKEN", "t")]).unwrap_err();
        assert_eq!(e, EnvError::TokenWithoutCredentials);
        let s = with(&[("OSS_ACCESS_KEY_ID", "ak"), ("OSS_ACCESS_KEY_SECRET", "sk")]).unwrap();
        assert_eq!(s.credentials, Some(Credentials::new("ak", "sk")));
    }

    #[test]
    fn environment_wins_over_config_store_section() {
        let mut config = ConnectorConfig {
            store: StoreConfig {
                endpoint: Some(parse_endpoint("http://10.0.0.5:9000").unwrap()),
                region: Some("cfg-region".into()),
                signature_version: Some(SignatureVersion::OssV1),
                addressing_style: AddressingPreference::VirtualHosted,
            },
            ..ConnectorConfig::default()
        };
        // Config only.
        let s = resolve_store(&env_of(&[("OSS_PATH", "oss://bucket/")]), &config).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://10.0.0.5:9000/");
        assert_eq!(s.region, "cfg-region");
        assert_eq!(s.signature_version, SignatureVersion::OssV1);
        assert_eq!(s.addressing, AddressingStyle::VirtualHosted);
        // Environment overrides each.
        let s = resolve_store(
            &env_of(&[
                ("OSS_PATH", "oss://bucket/"),
                ("OSS_ENDPOINT", "oss-cn-beijing.aliyuncs.com"),
                ("OSS_REGION", "env-region"),
                ("OSS_SIGNATURE_VERSION", "s3v4"),
            ]),
            &config,
        )
        .unwrap();
        assert_eq!(s.endpoint.host_str(), Some("oss-cn-beijing.aliyuncs.com"));
        assert_eq!(s.region, "env-region");
        assert_eq!(s.signature_version, SignatureVersion::S3V4);
        // Addressing has no env override; forced path style applies.
        config.store.addressing_style = AddressingPreference::Path;
        let s = resolve_store(&env_of(&[("OSS_PATH", "oss://bucket/")]), &config).unwrap();
        assert_eq!(s.addressing, AddressingStyle::Path);
    }

    #[test]
    fn env_errors_are_specific() {
        assert_eq!(resolve(&[]).unwrap_err(), EnvError::MissingPath);
        let e = resolve(&[("OSS_PATH", "/models")]).unwrap_err();
        assert!(
            e.to_string().starts_with("OSS_PATH: invalid store path"),
            "{e}"
        );
        let e = resolve(&[("OSS_PATH", "oss://Bad_Bucket/")]).unwrap_err();
        assert!(e.to_string().contains("invalid bucket name"), "{e}");
        let e = resolve(&[("OSS_PATH", "oss://bucket/"), ("OSS_ENDPOINT", "ftp://x")]).unwrap_err();
        assert!(
            e.to_string().starts_with("OSS_ENDPOINT: invalid endpoint"),
            "{e}"
        );
        let e = resolve(&[
            ("OSS_PATH", "oss://bucket/"),
            ("OSS_REGION", "cn-beijing"),
            ("OSS_SIGNATURE_VERSION", "v3"),
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("OSS_SIGNATURE_VERSION: unknown signature version"),
            "{e}"
        );
    }

    #[test]
    fn model_dir_and_redacted_debug() {
        let env = env_of(&[
            ("MODEL_DIR", "/models/qwen"),
            ("OSS_ACCESS_KEY_SECRET", "very-secret"),
            ("OSS_SESSION_TOKEN", "token-secret"),
        ]);
        assert_eq!(
            env.model_dir().unwrap(),
            Some(PathBuf::from("/models/qwen"))
        );
        assert_eq!(env_of(&[]).model_dir().unwrap(), None);
        assert_eq!(
            env_of(&[("MODEL_DIR", "models")]).model_dir().unwrap_err(),
            EnvError::RelativeModelDir("models".into())
        );
        let debug = format!("{env:?}");
        assert!(
            !debug.contains("very-secret") && !debug.contains("token-secret"),
            "{debug}"
        );
        assert!(debug.contains("/models/qwen"));
    }
}

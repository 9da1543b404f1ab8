//! The walk over a parsed `config.json` that turns it into a
//! [`ConnectorConfig`], key by key.
//!
//! Design decision: the file is parsed into a `serde_json::Value` and walked
//! by hand instead of being deserialised into a struct with
//! `#[serde(default)]`. The walk knows the dotted name of every key, so each
//! error names the file, the key (`prefetch.vcpus`) and what was expected,
//! and unknown keys become warnings rather than errors (the vendor file may
//! grow keys we do not know; a typo should be visible, not fatal), with a
//! suggestion when the key is one edit away from a known one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::file::{
    ConfigError, ConnectorConfig, MAX_LOG_LEVEL, MAX_PART_SIZE_BYTES, MAX_PREFETCH_FACTOR,
    MIN_PART_SIZE_BYTES,
};
use crate::store_url::{parse_endpoint, StoreUrlError};

/// Reads `root`, the parsed file at `path` (named in messages), into a
/// config, with one warning per unknown key.
pub(super) fn walk(
    root: &Value,
    path: &Path,
) -> Result<(ConnectorConfig, Vec<String>), ConfigError> {
    let mut walker = Walker {
        path,
        warnings: Vec::new(),
    };
    let config = walker.config(root)?;
    Ok((config, walker.warnings))
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
    "leaveGraceSec",
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
                config.peer.transport = Some(self.non_empty_string(
                    v,
                    "peer.transport",
                    "\"framed\", \"grpc\" or \"quic\"",
                )?);
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
            if let Some(v) = peer.get("leaveGraceSec") {
                config.peer.leave_grace_sec = Some(self.integer(
                    v,
                    "peer.leaveGraceSec",
                    0,
                    3600,
                    "an integer number of seconds from 0 to 3600",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{err, parse};
    use crate::config::{PeerConfig, DEFAULT_LOG_LEVEL};
    use crate::sign::SignatureVersion;
    use crate::store_url::AddressingPreference;

    #[test]
    fn peer_section_is_parsed_and_checked() {
        let c = parse(
            r#"{"peer": {"peers": ["10.0.0.1:7468", "peers.ns.svc:7468"], "listen": "0.0.0.0:7000",
                 "advertise": "10.0.0.1:7000", "secretFile": "/etc/ossc/secret", "chunkSizeBytes": 8388608,
                 "transport": "quic", "uploadBytesPerSec": 1250000000, "leaveGraceSec": 45}}"#,
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
        assert_eq!(p.leave_grace_sec, Some(45));
        assert_eq!(parse("{}").unwrap().config.peer, PeerConfig::default());
        assert!(err(r#"{"peer": {"uploadBytesPerSec": 0}}"#).contains("peer.uploadBytesPerSec"));
        assert!(err(r#"{"peer": {"peers": "a:1"}}"#).contains("peer.peers"));
        assert!(err(r#"{"peer": {"chunkSizeBytes": 5}}"#).contains("peer.chunkSizeBytes"));
        assert!(err(r#"{"peer": {"transport": 4}}"#).contains("peer.transport"));
        assert!(err(r#"{"peer": {"leaveGraceSec": -1}}"#).contains("peer.leaveGraceSec"));
        assert!(err(r#"{"peer": {"leaveGraceSec": 3601}}"#).contains("peer.leaveGraceSec"));
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
}

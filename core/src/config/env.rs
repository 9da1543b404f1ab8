//! The `OSS_*` / `MODEL_DIR` environment, and how it combines with the
//! config file's `store.*` section into the settings of one bucket's client.
//!
//! Design decision: [`StoreEnv`] takes a lookup closure instead of reading
//! `std::env` directly, so tests never mutate the process environment, and
//! an empty value counts as unset. Precedence: environment > config file
//! `store.*` > built-in defaults. Values are checked where they are read
//! ([`StoreEnv::credentials`], [`StoreEnv::model_dir`],
//! [`StoreEnv::store_url`]), so each error names its variable.

use std::path::{Path, PathBuf};

use super::file::ConnectorConfig;
use crate::sign::{uri_encode, Credentials, SignatureVersion};
use crate::store_url::{
    infer_region, parse_endpoint, resolve_region, AddressingStyle, Scheme, StoreUrl, StoreUrlError,
    S3_DEFAULT_REGION,
};

// The names of the variables `StoreEnv` reads.
pub const ACCESS_KEY_ID: &str = "OSS_ACCESS_KEY_ID";
pub const ACCESS_KEY_SECRET: &str = "OSS_ACCESS_KEY_SECRET";
pub const SESSION_TOKEN: &str = "OSS_SESSION_TOKEN";
pub const ENDPOINT: &str = "OSS_ENDPOINT";
pub const REGION: &str = "OSS_REGION";
pub const PATH: &str = "OSS_PATH";
pub const MODEL_DIR: &str = "MODEL_DIR";
pub const SIGNATURE_VERSION: &str = "OSS_SIGNATURE_VERSION";

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
        let encoded = uri_encode(key, true);
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
            access_key_id: get(ACCESS_KEY_ID),
            access_key_secret: get(ACCESS_KEY_SECRET),
            session_token: get(SESSION_TOKEN),
            endpoint: get(ENDPOINT),
            region: get(REGION),
            path: get(PATH),
            model_dir: get(MODEL_DIR),
            signature_version: get(SIGNATURE_VERSION),
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
                set: ACCESS_KEY_ID,
                missing: ACCESS_KEY_SECRET,
            }),
            (None, Some(_)) => Err(EnvError::IncompleteCredentials {
                set: ACCESS_KEY_SECRET,
                missing: ACCESS_KEY_ID,
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
            origin: ENDPOINT,
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
        origin: REGION,
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
    use std::collections::HashMap;

    use super::*;
    use crate::config::StoreConfig;
    use crate::store_url::AddressingPreference;

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

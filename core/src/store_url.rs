//! `OSS_PATH` / `OSS_ENDPOINT` parsing, region inference and addressing style.
//!
//! Design decision: `OSS_PATH` is split by hand rather than through
//! `url::Url`, because the prefix is an object-key prefix, not a URL path:
//! `?`, `#`, `%` and spaces are legal key characters and must survive
//! untouched (`oss://b/a%20b/` names the key prefix `a%20b/`, not `a b/`).
//! The endpoint, on the other hand, *is* a URL and goes through `url::Url`.
//!
//! Region inference recognises the public endpoint shapes of both vendors:
//! `oss-<region>[-internal].aliyuncs.com` (optionally behind `bucket.`), and
//! `s3[.-]<region>.amazonaws.com` / `s3.dualstack.<region>.amazonaws.com`.
//! Anything else (MinIO, the embedded store, a CNAME) needs an explicit
//! region for V4, and the error says so with the vendor's wording
//! ("failed to infer region from endpoint").

use std::net::IpAddr;

use crate::sign::SignatureVersion;

/// Shortest and longest bucket names OSS and S3 accept.
const BUCKET_NAME_LEN: std::ops::RangeInclusive<usize> = 3..=63;

/// Region S3 uses for the global endpoint and when none is configured.
pub const S3_DEFAULT_REGION: &str = "us-east-1";

/// Suffix of OSS intranet (VPC) endpoints: `oss-cn-beijing-internal`.
const OSS_INTERNAL_SUFFIX: &str = "-internal";

/// OSS endpoint labels that look like `oss-<region>` but are global.
const OSS_GLOBAL_LABELS: &[&str] = &["oss-accelerate", "oss-accelerate-overseas"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Oss,
    S3,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Oss => "oss",
            Scheme::S3 => "s3",
        }
    }

    /// The signature a path of this scheme uses unless told otherwise.
    pub fn default_signature_version(self) -> SignatureVersion {
        match self {
            Scheme::Oss => SignatureVersion::OssV4,
            Scheme::S3 => SignatureVersion::S3V4,
        }
    }
}

/// `oss://bucket/prefix/` or `s3://bucket/prefix/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub scheme: Scheme,
    pub bucket: String,
    /// "" or a prefix ending in '/' (or an exact key prefix as given).
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressingStyle {
    Path,
    VirtualHosted,
}

impl AddressingStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingStyle::Path => "path",
            AddressingStyle::VirtualHosted => "virtual-hosted",
        }
    }
}

/// The configured addressing choice: `auto` resolves per endpoint through
/// [`AddressingPreference::resolve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressingPreference {
    /// Path style for IP addresses and `localhost`, virtual-hosted otherwise.
    #[default]
    Auto,
    Path,
    VirtualHosted,
}

impl AddressingPreference {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingPreference::Auto => "auto",
            AddressingPreference::Path => "path",
            AddressingPreference::VirtualHosted => "virtual-hosted",
        }
    }

    /// The style to use against `endpoint`.
    pub fn resolve(self, endpoint: &url::Url) -> AddressingStyle {
        match self {
            AddressingPreference::Path => AddressingStyle::Path,
            AddressingPreference::VirtualHosted => AddressingStyle::VirtualHosted,
            AddressingPreference::Auto => {
                if host_needs_path_style(endpoint) {
                    AddressingStyle::Path
                } else {
                    AddressingStyle::VirtualHosted
                }
            }
        }
    }
}

impl std::str::FromStr for AddressingPreference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AddressingPreference::Auto),
            "path" => Ok(AddressingPreference::Path),
            "virtual-hosted" | "virtual" => Ok(AddressingPreference::VirtualHosted),
            _ => Err(format!(
                "unknown addressing style {s:?}: expected one of \"auto\", \"path\", \"virtual-hosted\""
            )),
        }
    }
}

/// Errors from parsing store paths and endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    #[error("invalid store path {input:?}: expected oss://bucket/prefix/ or s3://bucket/prefix/")]
    UnsupportedScheme { input: String },
    #[error("invalid store path {input:?}: the bucket name is empty")]
    EmptyBucket { input: String },
    #[error("invalid bucket name {bucket:?} in {input:?}: {reason}")]
    InvalidBucket {
        input: String,
        bucket: String,
        reason: String,
    },
    #[error("invalid endpoint {input:?}: {reason}")]
    InvalidEndpoint { input: String, reason: String },
    #[error("failed to infer region from endpoint {endpoint:?}; set OSS_REGION (or store.region in the config file)")]
    RegionNotInferred { endpoint: String },
}

impl StoreUrl {
    /// Parses `oss://bucket[/prefix]` or `s3://bucket[/prefix]`.
    pub fn parse(input: &str) -> Result<Self, StoreUrlError> {
        let trimmed = input.trim();
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(trimmed, "oss://") {
            (Scheme::Oss, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(trimmed, "s3://") {
            (Scheme::S3, rest)
        } else {
            return Err(StoreUrlError::UnsupportedScheme {
                input: input.to_owned(),
            });
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreUrlError::EmptyBucket {
                input: input.to_owned(),
            });
        }
        validate_bucket_name(scheme, bucket).map_err(|reason| StoreUrlError::InvalidBucket {
            input: input.to_owned(),
            bucket: bucket.to_owned(),
            reason,
        })?;
        Ok(StoreUrl {
            scheme,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The key of `relative` under this prefix (no separator is inserted:
    /// a prefix not ending in `/` is a plain key prefix).
    pub fn key_for(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}/{}",
            self.scheme.as_str(),
            self.bucket,
            self.prefix
        )
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// OSS: 3–63 of `[a-z0-9-]`, starting and ending with a letter or digit.
/// S3 additionally allows `.` (not doubled, not next to `-`, not an IPv4
/// address), which MinIO and older AWS buckets use.
fn validate_bucket_name(scheme: Scheme, bucket: &str) -> Result<(), String> {
    if !BUCKET_NAME_LEN.contains(&bucket.len()) {
        return Err(format!(
            "must be {} to {} characters long (got {})",
            BUCKET_NAME_LEN.start(),
            BUCKET_NAME_LEN.end(),
            bucket.len()
        ));
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || (scheme == Scheme::S3 && c == '.')
    };
    if let Some(bad) = bucket.chars().find(|&c| !allowed(c)) {
        let allowed_text = match scheme {
            Scheme::Oss => "lowercase letters, digits and '-'",
            Scheme::S3 => "lowercase letters, digits, '-' and '.'",
        };
        return Err(format!(
            "character {bad:?} is not allowed (only {allowed_text})"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err("must start and end with a lowercase letter or digit".to_owned());
    }
    if scheme == Scheme::S3 {
        if bucket.contains("..") || bucket.contains(".-") || bucket.contains("-.") {
            return Err("'.' must not be doubled or next to '-'".to_owned());
        }
        if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err("must not be formatted as an IP address".to_owned());
        }
    }
    Ok(())
}

/// Parses an endpoint: no scheme means `https://`; an explicit `http://`
/// and port are kept. The result has no path, query or credentials.
pub fn parse_endpoint(input: &str) -> Result<url::Url, StoreUrlError> {
    let trimmed = input.trim();
    let invalid = |reason: &str| StoreUrlError::InvalidEndpoint {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in the endpoint"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "it must be scheme://host[:port] without a path or query (put the bucket and prefix in OSS_PATH)",
        ));
    }
    Ok(url)
}

/// Whether `auto` addressing must use path style: IP literals and
/// `localhost` cannot carry a bucket sub-domain.
pub fn host_needs_path_style(endpoint: &url::Url) -> bool {
    match endpoint.host() {
        Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost") || d.parse::<IpAddr>().is_ok()
        }
        None => true,
    }
}

/// The signing region encoded in a well-known endpoint host, if any:
/// `oss-cn-beijing[-internal].aliyuncs.com` (optionally `bucket.`-prefixed)
/// gives `cn-beijing`; `s3.us-west-2.amazonaws.com`, `s3-us-west-2...`,
/// `bucket.s3.dualstack.eu-west-1.amazonaws.com` give theirs, and the
/// global `s3.amazonaws.com` gives `us-east-1`.
pub fn infer_region(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if host.ends_with(".aliyuncs.com") {
        let label = labels.iter().find(|l| l.starts_with("oss-"))?;
        if OSS_GLOBAL_LABELS.contains(label) {
            return None;
        }
        let region = label
            .strip_prefix("oss-")?
            .trim_end_matches(OSS_INTERNAL_SUFFIX);
        return (!region.is_empty()).then(|| region.to_owned());
    }
    if host.ends_with(".amazonaws.com") {
        // Labels before "amazonaws.com"; find the s3 label and read the region after it.
        let n = labels.len();
        let service_labels = &labels[..n.saturating_sub(2)];
        let s3_pos = service_labels
            .iter()
            .position(|l| *l == "s3" || l.starts_with("s3-"))?;
        let s3_label = service_labels[s3_pos];
        if let Some(region) = s3_label.strip_prefix("s3-") {
            if region != "external-1" && !region.is_empty() {
                return Some(region.to_owned());
            }
            return Some(S3_DEFAULT_REGION.to_owned());
        }
        let after: Vec<&str> = service_labels[s3_pos + 1..]
            .iter()
            .copied()
            .filter(|l| *l != "dualstack")
            .collect();
        return Some(
            after
                .first()
                .map(|r| (*r).to_owned())
                .unwrap_or_else(|| S3_DEFAULT_REGION.to_owned()),
        );
    }
    None
}

/// The signing region: an explicit one wins; else inferred from the
/// endpoint; else `""` for V1 (which signs without one), `us-east-1` for
/// SigV4 (what S3-compatible servers such as MinIO default to), and an
/// error for OSS V4.
pub fn resolve_region(
    explicit: Option<&str>,
    endpoint: &url::Url,
    version: SignatureVersion,
) -> Result<String, StoreUrlError> {
    if let Some(region) = explicit.map(str::trim).filter(|r| !r.is_empty()) {
        return Ok(region.to_owned());
    }
    if let Some(region) = endpoint.host_str().and_then(infer_region) {
        return Ok(region);
    }
    match version {
        SignatureVersion::OssV1 => Ok(String::new()),
        SignatureVersion::S3V4 => Ok(S3_DEFAULT_REGION.to_owned()),
        SignatureVersion::OssV4 => Err(StoreUrlError::RegionNotInferred {
            endpoint: endpoint.as_str().trim_end_matches('/').to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oss_and_s3_paths() {
        let u = StoreUrl::parse("oss://my-bucket/models/qwen/").unwrap();
        assert_eq!(
            u,
            StoreUrl {
                scheme: Scheme::Oss,
                bucket: "my-bucket".into(),
                prefix: "models/qwen/".into()
            }
        );
        assert_eq!(u.to_string(), "oss://my-bucket/models/qwen/");
        assert_eq!(u.key_for("config.json"), "models/qwen/config.json");

        let u: StoreUrl = "s3://data.lake-01".parse().unwrap();
        assert_eq!(
            (u.scheme, u.bucket.as_str(), u.prefix.as_str()),
            (Scheme::S3, "data.lake-01", "")
        );

        let u = StoreUrl::parse("OSS://abc/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("abc", ""));

        // The prefix is a key prefix: special characters are kept verbatim.
        let u = StoreUrl::parse("oss://abc/a%20b/c?d#e f").unwrap();
        assert_eq!(u.prefix, "a%20b/c?d#e f");
        let u = StoreUrl::parse("oss://abc/exact-key-prefix").unwrap();
        assert_eq!(u.prefix, "exact-key-prefix");
    }

    #[test]
    fn rejects_bad_paths_with_clear_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "http://bucket/x",
                "expected oss://bucket/prefix/ or s3://bucket/prefix/",
            ),
            ("/models/qwen", "expected oss://bucket/prefix/"),
            ("gs://bucket", "expected oss://"),
            ("oss://", "bucket name is empty"),
            ("oss:///prefix", "bucket name is empty"),
            ("oss://ab", "3 to 63 characters"),
            ("oss://My-Bucket/x", "character 'M' is not allowed"),
            ("oss://my_bucket", "character '_' is not allowed"),
            (
                "oss://my.bucket",
                "character '.' is not allowed (only lowercase letters, digits and '-')",
            ),
            ("oss://-bucket", "start and end"),
            ("s3://bucket-", "start and end"),
            ("s3://a..b", "doubled"),
            ("s3://192.168.1.10", "IP address"),
        ];
        for (input, needle) in cases {
            let err = StoreUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
        let long = format!("oss://{}", "a".repeat(64));
        assert!(StoreUrl::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("got 64"));
        assert!(StoreUrl::parse(&format!("oss://{}", "a".repeat(63))).is_ok());
    }

    #[test]
    fn endpoint_parsing() {
        let e = parse_endpoint("oss-cn-beijing.aliyuncs.com").unwrap();
        assert_eq!(e.as_str(), "https://oss-cn-beijing.aliyuncs.com/");
        let e = parse_endpoint("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (e.scheme(), e.host_str(), e.port()),
            ("http", Some("127.0.0.1"), Some(9000))
        );
        let e = parse_endpoint(" https://minio.local:9443/ ").unwrap();
        assert_eq!(e.port(), Some(9443));
        let e = parse_endpoint("localhost:8080").unwrap();
        assert_eq!(
            (e.scheme(), e.host_str(), e.port()),
            ("https", Some("localhost"), Some(8080))
        );

        for (bad, needle) in [
            ("", "empty"),
            ("ftp://host", "http or https"),
            ("https://host/bucket", "without a path"),
            ("https://host?x=1", "without a path or query"),
            ("https://user:pw@host", "credentials"),
            ("https://", "empty host"),
        ] {
            let err = parse_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn region_inference() {
        let cases = [
            ("oss-cn-beijing.aliyuncs.com", Some("cn-beijing")),
            ("oss-cn-beijing-internal.aliyuncs.com", Some("cn-beijing")),
            ("bucket.oss-cn-beijing.aliyuncs.com", Some("cn-beijing")),
            (
                "my-bucket.oss-cn-hangzhou-internal.aliyuncs.com",
                Some("cn-hangzhou"),
            ),
            ("OSS-AP-SOUTHEAST-1.ALIYUNCS.COM", Some("ap-southeast-1")),
            ("oss-accelerate.aliyuncs.com", None),
            ("s3.us-west-2.amazonaws.com", Some("us-west-2")),
            ("bucket.s3.eu-central-1.amazonaws.com", Some("eu-central-1")),
            ("s3-ap-northeast-1.amazonaws.com", Some("ap-northeast-1")),
            ("s3.dualstack.eu-west-1.amazonaws.com", Some("eu-west-1")),
            ("s3.amazonaws.com", Some("us-east-1")),
            ("s3-external-1.amazonaws.com", Some("us-east-1")),
            ("minio.local", None),
            ("127.0.0.1", None),
            ("ec2.us-east-1.amazonaws.com", None),
        ];
        for (host, expected) in cases {
            assert_eq!(infer_region(host).as_deref(), expected, "{host}");
        }
    }

    #[test]
    fn region_resolution_per_signature_version() {
        let oss = parse_endpoint("oss-cn-beijing-internal.aliyuncs.com").unwrap();
        let minio = parse_endpoint("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            resolve_region(None, &oss, SignatureVersion::OssV4).unwrap(),
            "cn-beijing"
        );
        assert_eq!(
            resolve_region(Some("cn-shanghai"), &oss, SignatureVersion::OssV4).unwrap(),
            "cn-shanghai"
        );
        assert_eq!(
            resolve_region(Some("  "), &oss, SignatureVersion::OssV4).unwrap(),
            "cn-beijing"
        );
        assert_eq!(
            resolve_region(None, &minio, SignatureVersion::OssV1).unwrap(),
            ""
        );
        assert_eq!(
            resolve_region(None, &minio, SignatureVersion::S3V4).unwrap(),
            "us-east-1"
        );
        let err = resolve_region(None, &minio, SignatureVersion::OssV4).unwrap_err();
        assert_eq!(
            err,
            StoreUrlError::RegionNotInferred {
                endpoint: "http://127.0.0.1:9000".into()
            }
        );
        assert!(
            err.to_string()
                .contains("failed to infer region from endpoint"),
            "{err}"
        );
    }

    #[test]
    fn addressing_resolution() {
        let auto = AddressingPreference::Auto;
        for (endpoint, expected) in [
            ("http://127.0.0.1:9000", AddressingStyle::Path),
            ("http://[::1]:9000", AddressingStyle::Path),
            ("http://localhost:9000", AddressingStyle::Path),
            (
                "oss-cn-beijing.aliyuncs.com",
                AddressingStyle::VirtualHosted,
            ),
            (
                "https://s3.us-west-2.amazonaws.com",
                AddressingStyle::VirtualHosted,
            ),
        ] {
            let url = parse_endpoint(endpoint).unwrap();
            assert_eq!(auto.resolve(&url), expected, "{endpoint}");
            assert_eq!(
                AddressingPreference::Path.resolve(&url),
                AddressingStyle::Path
            );
            assert_eq!(
                AddressingPreference::VirtualHosted.resolve(&url),
                AddressingStyle::VirtualHosted
            );
        }
        assert_eq!(
            "Virtual-Hosted".parse(),
            Ok(AddressingPreference::VirtualHosted)
        );
        assert_eq!("auto".parse(), Ok(AddressingPreference::Auto));
        let err = "sideways".parse::<AddressingPreference>().unwrap_err();
        assert!(err.contains("\"auto\", \"path\", \"virtual-hosted\""));
        assert_eq!(
            serde_json::to_string(&AddressingStyle::VirtualHosted).unwrap(),
            "\"virtual-hosted\""
        );
        assert_eq!(
            Scheme::S3.default_signature_version(),
            SignatureVersion::S3V4
        );
        assert_eq!(
            Scheme::Oss.default_signature_version(),
            SignatureVersion::OssV4
        );
    }
}

//! TLS trust and proxies for the HTTP clients that talk to stores and STS.
//!
//! Design decisions:
//! - **Trust = built-in roots + the system store + named files.** The
//!   Mozilla roots compiled into the binary stay trusted (a container without
//!   `ca-certificates` still reaches public endpoints). On top come the
//!   system bundle (the first of [`SYSTEM_BUNDLES`] that exists, or
//!   `SSL_CERT_FILE` in its place, as OpenSSL does) and
//!   `OSS_CONNECTOR_CA_FILE` (a private CA). A named file that cannot be read
//!   or holds no certificate is an error, never silently skipped.
//! - **Proxies are read once, explicitly.** `HTTPS_PROXY`/`https_proxy` for
//!   `https://` endpoints, `HTTP_PROXY`/`http_proxy` for `http://` ones (with
//!   `ALL_PROXY` as the fallback for both) and `NO_PROXY`/`no_proxy` for
//!   exceptions, read through a lookup function so tests need not change the
//!   process environment. Loopback endpoints never use a proxy.

use std::path::{Path, PathBuf};

/// Private CA bundle (PEM), trusted in addition to everything else.
pub const CA_FILE_ENV: &str = "OSS_CONNECTOR_CA_FILE";
/// OpenSSL's variable: replaces the system bundle.
pub const SSL_CERT_FILE_ENV: &str = "SSL_CERT_FILE";
/// Where distributions keep their CA bundle; the first that exists is used.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
/// Largest bundle file read.
const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

fn get(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The roots to add to the built-in ones, read from the system bundle,
/// `SSL_CERT_FILE` and `OSS_CONNECTOR_CA_FILE` as `lookup` reports them.
pub fn extra_roots(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<reqwest::Certificate>, String> {
    let mut roots = Vec::new();
    match get(lookup, SSL_CERT_FILE_ENV) {
        Some(path) => roots.extend(read_bundle(Path::new(&path), SSL_CERT_FILE_ENV)?),
        None => {
            if let Some(path) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
                match read_bundle(path, "system CA bundle") {
                    Ok(certs) => roots.extend(certs),
                    Err(e) => tracing::warn!(error = %e, "system CA bundle skipped"),
                }
            }
        }
    }
    if let Some(path) = get(lookup, CA_FILE_ENV) {
        roots.extend(read_bundle(Path::new(&path), CA_FILE_ENV)?);
    }
    Ok(roots)
}

/// Every certificate of a PEM bundle.
pub fn read_bundle(path: &Path, origin: &str) -> Result<Vec<reqwest::Certificate>, String> {
    use std::io::Read;
    let describe = |e: String| format!("{origin} {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| describe(e.to_string()))?;
    let mut pem = Vec::new();
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| describe(e.to_string()))?;
    if pem.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(describe(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| describe(e.to_string()))?;
    if certs.is_empty() {
        return Err(describe("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Proxy settings as the usual variables give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Proxy for `http://` endpoints.
    pub http: Option<String>,
    /// Proxy for `https://` endpoints (tunnelled with `CONNECT`).
    pub https: Option<String>,
    /// Comma-separated exceptions: host names (suffix match), IPs, CIDRs, `*`.
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper case first,
    /// then lower case.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        let either =
            |upper: &str| get(lookup, upper).or_else(|| get(lookup, &upper.to_ascii_lowercase()));
        let all = either("ALL_PROXY");
        Self {
            http: either("HTTP_PROXY").or_else(|| all.clone()),
            https: either("HTTPS_PROXY").or(all),
            no_proxy: either("NO_PROXY"),
        }
    }

    pub fn from_process_env() -> Self {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Installs these proxies on `builder` (and nothing else: the builder's
    /// own reading of the environment is turned off).
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        builder = builder.no_proxy();
        let no_proxy = || {
            self.no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string)
        };
        if let Some(url) = &self.http {
            let proxy = reqwest::Proxy::http(url.as_str())
                .map_err(|e| format!("HTTP_PROXY {url:?}: {e}"))?
                .no_proxy(no_proxy());
            builder = builder.proxy(proxy);
        }
        if let Some(url) = &self.https {
            let proxy = reqwest::Proxy::https(url.as_str())
                .map_err(|e| format!("HTTPS_PROXY {url:?}: {e}"))?
                .no_proxy(no_proxy());
            builder = builder.proxy(proxy);
        }
        Ok(builder)
    }
}

/// Whether `endpoint` names this host (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(endpoint: &url::Url) -> bool {
    match endpoint.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether signed requests to `endpoint` would cross a network in clear
/// text (plain HTTP to another host): worth one warning.
pub fn exposes_signatures(endpoint: &url::Url, signed: bool) -> bool {
    signed && endpoint.scheme() == "http" && !is_loopback(endpoint)
}

/// A path from an environment variable, if set.
pub fn path_from(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    get(lookup, name).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn proxy_variables_upper_case_first_all_proxy_as_fallback() {
        let p = ProxySettings::from_lookup(&lookup_of(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
            ("all_proxy", "http://all:3"),
            ("no_proxy", "internal.example, 10.0.0.0/8"),
        ]));
        assert_eq!(p.https.as_deref(), Some("http://upper:2"));
        assert_eq!(p.http.as_deref(), Some("http://all:3"));
        assert_eq!(p.no_proxy.as_deref(), Some("internal.example, 10.0.0.0/8"));
        assert_eq!(
            ProxySettings::from_lookup(&lookup_of(&[])),
            ProxySettings::default()
        );
        let bad = ProxySettings {
            http: Some("::not a url".into()),
            ..ProxySettings::default()
        };
        let e = bad.apply(reqwest::Client::builder()).unwrap_err();
        assert!(e.contains("HTTP_PROXY"), "{e}");
    }

    #[test]
    fn only_signed_plain_http_to_other_hosts_exposes_signatures() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(exposes_signatures(&url("http://10.0.0.5:9000"), true));
        assert!(exposes_signatures(
            &url("http://oss-cn-beijing.aliyuncs.com"),
            true
        ));
        assert!(!exposes_signatures(&url("http://10.0.0.5:9000"), false));
        assert!(!exposes_signatures(&url("https://10.0.0.5:9000"), true));
        for local in [
            "http://127.0.0.1:9000",
            "http://127.8.0.1",
            "http://[::1]:80",
            "http://LocalHost:1",
        ] {
            assert!(is_loopback(&url(local)), "{local}");
            assert!(!exposes_signatures(&url(local), true), "{local}");
        }
    }

    #[test]
    fn named_ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = extra_roots(&lookup_of(&[(
            "OSS_CONNECTOR_CA_FILE",
            empty.to_str().unwrap(),
        )]))
        .unwrap_err();
        assert!(
            e.contains("OSS_CONNECTOR_CA_FILE") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = extra_roots(&lookup_of(&[("SSL_CERT_FILE", "/nonexistent/ca.pem")])).unwrap_err();
        assert!(e.starts_with("SSL_CERT_FILE /nonexistent/ca.pem"), "{e}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        let only_named = extra_roots(&lookup_of(&[
            ("SSL_CERT_FILE", good.to_str().unwrap()),
            ("OSS_CONNECTOR_CA_FILE", good.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(only_named.len(), 2);
    }
}

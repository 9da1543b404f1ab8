//! Role assumption with a token file: Alibaba Cloud ACK RRSA
//! (`AssumeRoleWithOIDC`) and AWS web identity / IRSA
//! (`AssumeRoleWithWebIdentity`).
//!
//! The token file is re-read on every fetch (the platform rotates it). Both
//! calls are unsigned: the token is the proof. They go through the same TLS
//! roots and proxy settings as store requests.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::remote::body_of;
use super::{
    credentials_from_json, parse_expiration, CredentialError, CredentialProvider, TimedCredentials,
    MAX_DOCUMENT_BYTES,
};
use crate::sign::Credentials;

/// Alibaba Cloud's STS endpoint.
pub const ALIBABA_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";
/// AWS's global STS endpoint.
pub const AWS_STS_ENDPOINT: &str = "https://sts.amazonaws.com";
/// Session name when none is configured.
pub const DEFAULT_SESSION_NAME: &str = "ossc";
/// Lifetime asked for assumed-role credentials.
const DURATION_SECONDS: &str = "3600";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which role assumption to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Alibaba Cloud `AssumeRoleWithOIDC` (ACK RRSA).
    AlibabaOidc,
    /// AWS `AssumeRoleWithWebIdentity` (IRSA).
    AwsWebIdentity,
}

/// Exchanges a token file for role credentials.
#[derive(Debug, Clone)]
pub struct AssumeRoleProvider {
    pub flavor: Flavor,
    pub endpoint: String,
    pub role_arn: String,
    /// Alibaba only: the OIDC provider's ARN.
    pub oidc_provider_arn: Option<String>,
    pub token_file: PathBuf,
    pub session_name: String,
    /// Extra PEM roots (the store client's).
    pub ca_certificates: Vec<reqwest::Certificate>,
}

#[async_trait]
impl CredentialProvider for AssumeRoleProvider {
    fn name(&self) -> String {
        match self.flavor {
            Flavor::AlibabaOidc => format!("RRSA role {}", self.role_arn),
            Flavor::AwsWebIdentity => format!("web identity role {}", self.role_arn),
        }
    }

    async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
        let name = self.name();
        let path = self.token_file.clone();
        let token = tokio::task::spawn_blocking(move || std::fs::read(&path))
            .await
            .map_err(|e| CredentialError::unavailable(&name, e.to_string()))?
            .map_err(|e| {
                CredentialError::config(
                    &name,
                    format!("cannot read token file {}: {e}", self.token_file.display()),
                )
            })?;
        if token.len() > MAX_DOCUMENT_BYTES {
            return Err(CredentialError::config(
                &name,
                "the token file is too large",
            ));
        }
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        if token.is_empty() {
            return Err(CredentialError::config(&name, "the token file is empty"));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        for cert in &self.ca_certificates {
            builder = builder.add_root_certificate(cert.clone());
        }
        let client = builder.build().map_err(|e| {
            CredentialError::config(&name, format!("building the HTTP client: {e}"))
        })?;
        let mut form: Vec<(&str, String)> = vec![
            ("RoleArn", self.role_arn.clone()),
            ("RoleSessionName", self.session_name.clone()),
            ("DurationSeconds", DURATION_SECONDS.to_owned()),
        ];
        match self.flavor {
            Flavor::AlibabaOidc => {
                form.extend([
                    ("Action", "AssumeRoleWithOIDC".to_owned()),
                    ("Format", "JSON".to_owned()),
                    ("Version", "2015-04-01".to_owned()),
                    (
                        "Timestamp",
                        super::format_time(std::time::SystemTime::now()),
                    ),
                    (
                        "OIDCProviderArn",
                        self.oidc_provider_arn.clone().unwrap_or_default(),
                    ),
                    ("OIDCToken", token),
                ]);
            }
            Flavor::AwsWebIdentity => {
                form.extend([
                    ("Action", "AssumeRoleWithWebIdentity".to_owned()),
                    ("Version", "2011-06-15".to_owned()),
                    ("WebIdentityToken", token),
                ]);
            }
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::sign::uri_encode(v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let request = client
            .post(format!("{}/", self.endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "accept",
                match self.flavor {
                    Flavor::AlibabaOidc => "application/json",
                    Flavor::AwsWebIdentity => "application/xml",
                },
            )
            .body(body);
        let answer = body_of(request)
            .await
            .map_err(|e| CredentialError::unavailable(&name, format!("STS: {e}")))?;
        let parsed = match self.flavor {
            Flavor::AlibabaOidc => parse_alibaba(&answer),
            Flavor::AwsWebIdentity => parse_aws(&answer),
        };
        parsed.map_err(|e| CredentialError::unavailable(&name, format!("STS answer: {e}")))
    }
}

/// `{"Credentials": {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}}`.
fn parse_alibaba(body: &[u8]) -> Result<TimedCredentials, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let credentials = value.get("Credentials").ok_or("no Credentials object")?;
    credentials_from_json(credentials)
}

/// `<Credentials><AccessKeyId/><SecretAccessKey/><SessionToken/><Expiration/></Credentials>`.
fn parse_aws(body: &[u8]) -> Result<TimedCredentials, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
    let credentials = xml_element(text, "Credentials").ok_or("no Credentials element")?;
    let field = |tag: &str| {
        xml_element(credentials, tag)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("no {tag}"))
    };
    let mut creds = Credentials::new(field("AccessKeyId")?, field("SecretAccessKey")?);
    creds.security_token = Some(field("SessionToken")?);
    Ok(TimedCredentials {
        credentials: creds,
        expires_at: parse_expiration(&field("Expiration")?)?,
    })
}

/// The text between `<tag>` and `</tag>` (no attributes, no nesting of the
/// same tag: enough for STS answers, whose values hold no markup).
fn xml_element<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_answers() {
        let alibaba = parse_alibaba(
            br#"{"RequestId":"r","Credentials":{"AccessKeyId":"STS.a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            alibaba.credentials,
            Credentials::new("STS.a", "s").with_token("t")
        );
        let aws = parse_aws(
            br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><SessionToken>tok</SessionToken><SecretAccessKey>sec</SecretAccessKey><Expiration>2030-01-01T00:00:00.000Z</Expiration><AccessKeyId>ASIA</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#,
        )
        .unwrap();
        assert_eq!(
            aws.credentials,
            Credentials::new("ASIA", "sec").with_token("tok")
        );
        assert!(aws.expires_at.is_some());
        assert!(parse_aws(b"<Error><Code>AccessDenied</Code></Error>")
            .unwrap_err()
            .contains("no Credentials"));
        assert!(parse_alibaba(br#"{"Code":"InvalidParameter"}"#)
            .unwrap_err()
            .contains("no Credentials"));
    }
}

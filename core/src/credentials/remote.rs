//! Instance metadata services: the Alibaba Cloud ECS RAM role and AWS IMDSv2.
//!
//! Both first ask for a session token with a `PUT` (ECS "hardened mode",
//! IMDSv2) and send it with the credential request. ECS falls back to the
//! plain request when the token `PUT` fails, unless
//! `ALIBABA_CLOUD_IMDSV1_DISABLED` is set; IMDSv2 has no fallback. Metadata
//! addresses are link-local, so these requests never use a proxy. Every
//! request has a short timeout and every body is capped.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    parse_credentials_json, CredentialError, CredentialProvider, TimedCredentials,
    MAX_DOCUMENT_BYTES,
};

/// The ECS metadata service.
pub const ECS_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// The EC2 instance metadata service.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Lifetime asked for metadata session tokens.
const TOKEN_TTL_SECONDS: &str = "21600";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for metadata servers: no proxy, short timeouts.
pub(crate) fn metadata_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Sends `request`, and returns the body of a 2xx answer (capped) or an error
/// naming the status.
pub(crate) async fn body_of(request: reqwest::RequestBuilder) -> Result<Vec<u8>, String> {
    let mut response = request.send().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    })?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("answer larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    Ok(body)
}

/// ECS RAM role credentials from the metadata service.
#[derive(Debug, Clone)]
pub struct EcsRamRoleProvider {
    endpoint: String,
    role: String,
    allow_without_token: bool,
}

impl EcsRamRoleProvider {
    /// `endpoint` like [`ECS_METADATA_ENDPOINT`]; `allow_without_token`
    /// allows the plain request when the token `PUT` fails.
    pub fn new(
        endpoint: impl Into<String>,
        role: impl Into<String>,
        allow_without_token: bool,
    ) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
            role: role.into(),
            allow_without_token,
        }
    }
}

#[async_trait]
impl CredentialProvider for EcsRamRoleProvider {
    fn name(&self) -> String {
        format!("ECS RAM role {}", self.role)
    }

    async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
        let name = self.name();
        let client = metadata_client().map_err(|e| CredentialError::config(&name, e))?;
        let token = body_of(
            client
                .put(format!("{}/latest/api/token", self.endpoint))
                .header("X-aliyun-ecs-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS),
        )
        .await;
        let mut request = client.get(format!(
            "{}/latest/meta-data/ram/security-credentials/{}",
            self.endpoint,
            crate::sign::uri_encode(&self.role, false)
        ));
        match token {
            Ok(token) => {
                let token = String::from_utf8_lossy(&token).trim().to_owned();
                request = request.header("X-aliyun-ecs-metadata-token", token);
            }
            Err(e) if self.allow_without_token => {
                tracing::debug!(error = %e, "ECS metadata token unavailable; using the plain request");
            }
            Err(e) => {
                return Err(CredentialError::unavailable(
                    &name,
                    format!("metadata token request failed: {e}"),
                ))
            }
        }
        let body = body_of(request)
            .await
            .map_err(|e| CredentialError::unavailable(&name, e))?;
        parse_credentials_json(&body).map_err(|e| CredentialError::unavailable(&name, e))
    }
}

/// EC2 instance profile credentials through IMDSv2.
#[derive(Debug, Clone)]
pub struct ImdsProvider {
    endpoint: String,
}

impl ImdsProvider {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
        }
    }
}

#[async_trait]
impl CredentialProvider for ImdsProvider {
    fn name(&self) -> String {
        "EC2 instance metadata (IMDSv2)".to_owned()
    }

    async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
        let name = self.name();
        let unavailable = |e: String| CredentialError::unavailable(&name, e);
        let client = metadata_client().map_err(|e| CredentialError::config(&name, e))?;
        let token = body_of(
            client
                .put(format!("{}/latest/api/token", self.endpoint))
                .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS),
        )
        .await
        .map_err(|e| unavailable(format!("token request failed: {e}")))?;
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        let base = format!(
            "{}/latest/meta-data/iam/security-credentials/",
            self.endpoint
        );
        let roles = body_of(client.get(&base).header("X-aws-ec2-metadata-token", &token))
            .await
            .map_err(|e| unavailable(format!("listing the instance profile: {e}")))?;
        let role = String::from_utf8_lossy(&roles)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| unavailable("no instance profile is attached".into()))?;
        let body = body_of(
            client
                .get(format!("{base}{}", crate::sign::uri_encode(&role, false)))
                .header("X-aws-ec2-metadata-token", &token),
        )
        .await
        .map_err(|e| unavailable(format!("role {role}: {e}")))?;
        parse_credentials_json(&body).map_err(unavailable)
    }
}

//! Building, signing and sending one request.
//!
//! Design: every request is signed at send time with what the client's
//! [`crate::credentials::CredentialSource`] holds then, and with the clock
//! corrected by the offset learnt from the store (`clock.rs`). A request the
//! store answers with [`ServiceErrorKind::InvalidCredentials`] is sent once
//! more after the source re-read its provider, and only when that produced
//! different credentials, so a rotation or an expired token costs one round
//! trip and a wrong secret costs one re-read. Error statuses become
//! [`crate::object_client::ServiceError`]s here (decoded in
//! `error_answer.rs`), except 412, which the ranged GET turns into
//! [`ClientError::ObjectChanged`] itself. On rejected credentials the
//! server's and our string-to-sign are logged at debug level with the STS
//! token redacted.

use std::sync::atomic::Ordering;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::response::error_chain;
use super::HttpObjectClient;
use crate::credentials::{CredentialError, TimedCredentials};
use crate::object_client::{ClientError, ObjectClientError, Result, ServiceErrorKind};
use crate::sign::{self, uri_encode, RequestToSign};

impl HttpObjectClient {
    /// Sends one request signed with the current credentials; when the store
    /// rejects them, sends it once more with re-read ones.
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        headers: Vec<(String, String)>,
    ) -> Result<reqwest::Response> {
        let Some(source) = &self.credentials else {
            return self.send_once(method, key, query, headers, None).await;
        };
        let current = source.current().await.map_err(credential_error)?;
        let first = self
            .send_once(method.clone(), key, query, headers.clone(), Some(&current))
            .await;
        let rejected = matches!(&first, Err(e) if e.service_kind() == Some(ServiceErrorKind::InvalidCredentials));
        if !rejected || !source.refreshes() {
            return first;
        }
        let fresh = source
            .refresh_after_rejection(&current)
            .await
            .map_err(credential_error)?;
        if fresh.credentials == current.credentials {
            return first;
        }
        tracing::info!(provider = %source.provider_name(), "retrying with refreshed credentials");
        self.send_once(method, key, query, headers, Some(&fresh))
            .await
    }

    /// Builds, signs and sends one request; error statuses become errors.
    async fn send_once(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        headers: Vec<(String, String)>,
        credentials: Option<&TimedCredentials>,
    ) -> Result<reqwest::Response> {
        let path = format!("{}{}", self.path_prefix, uri_encode(key, true));
        let mut url = format!("{}{}", self.origin, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&uri_encode(k, false));
            if !v.is_empty() {
                url.push('=');
                url.push_str(&uri_encode(v, false));
            }
        }
        let mut all_headers = headers;
        let mut string_to_sign = None;
        if let Some(creds) = credentials.map(|c| &c.credentials) {
            let signed = sign::sign(
                self.settings.signature_version,
                creds,
                &self.settings.region,
                &RequestToSign {
                    method: method.as_str(),
                    host: &self.host,
                    bucket: &self.settings.bucket,
                    key,
                    path: &path,
                    query,
                    headers: &all_headers,
                },
                self.now(),
            );
            all_headers.extend(signed.headers);
            string_to_sign = Some(signed.string_to_sign);
        }
        let mut header_map = HeaderMap::with_capacity(all_headers.len());
        for (name, value) in &all_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::InvalidRequest(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value).map_err(|e| {
                ClientError::InvalidRequest(format!("header value for {name}: {e}"))
            })?;
            header_map.insert(name, value);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let is_head = method == reqwest::Method::HEAD;
        let response = self
            .http
            .request(method, &url)
            .headers(header_map)
            .send()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::PRECONDITION_FAILED {
            return Ok(response);
        }
        let error = self.service_error(response, is_head).await;
        if error.kind() == ServiceErrorKind::InvalidCredentials {
            let token = self
                .settings
                .credentials
                .as_ref()
                .and_then(|c| c.security_token.as_deref());
            tracing::debug!(
                server_string_to_sign =
                    redact_token(error.string_to_sign.as_deref().unwrap_or(""), token),
                client_string_to_sign =
                    redact_token(string_to_sign.as_deref().unwrap_or(""), token),
                code = %error.code,
                "credentials rejected"
            );
        }
        Err(error.into())
    }
}

/// A provider failure as a client error: retryable when the provider may
/// answer later, otherwise a configuration error.
fn credential_error(e: CredentialError) -> ObjectClientError {
    if e.is_transient() {
        ClientError::Transport(format!("credentials: {e}")).into()
    } else {
        ClientError::InvalidRequest(format!("credentials: {e}")).into()
    }
}

/// `text` with every occurrence of the STS token replaced, so that a logged
/// string-to-sign (which carries `x-oss-security-token`) leaks no credential.
fn redact_token(text: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() => text.replace(t, "<redacted security token>"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn logged_string_to_sign_hides_the_sts_token() {
        let token = "STS.NUp9Secret/Token+Value==";
        let creds = sign::Credentials {
            access_key_id: "ak".into(),
            access_key_secret: "sk".into(),
            security_token: Some(token.into()),
        };
        let signed = sign::sign(
            sign::SignatureVersion::OssV1,
            &creds,
            "cn-beijing",
            &RequestToSign {
                method: "GET",
                host: "bkt.oss-cn-beijing.aliyuncs.com",
                bucket: "bkt",
                key: "k",
                path: "/k",
                query: &[],
                headers: &[],
            },
            SystemTime::now(),
        );
        assert!(signed.string_to_sign.contains(token), "the token is signed");
        let logged = redact_token(&signed.string_to_sign, Some(token));
        assert!(!logged.contains(token), "{logged}");
        assert!(logged.contains("x-oss-security-token:<redacted security token>"));
        assert_eq!(redact_token("GET\nx", None), "GET\nx");
        assert_eq!(redact_token("GET\nx", Some("")), "GET\nx");
    }
}

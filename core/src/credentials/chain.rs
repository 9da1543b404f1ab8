//! Which provider a client uses: the first one, in a fixed documented order,
//! that the environment configures (docs/configuration.md, "Credentials").
//!
//! The family follows the signature: OSS V1/V4 requests use the Alibaba
//! Cloud variables, SigV4 (`s3://`) requests the AWS ones. Resolution only
//! looks at variables and at whether the default credentials file exists; no
//! network request is made until the first signed request needs credentials.

use std::path::Path;

use super::providers::{FileProvider, ProcessProvider, DEFAULT_PROCESS_TIMEOUT};
use super::remote::{EcsRamRoleProvider, ImdsProvider, ECS_METADATA_ENDPOINT, IMDS_ENDPOINT};
use super::sts::{AssumeRoleProvider, Flavor, ALIBABA_STS_ENDPOINT, AWS_STS_ENDPOINT};
use super::{CredentialError, CredentialProvider, CredentialSource, StaticProvider};
use crate::config;
use crate::sign::Credentials;

/// The vendor's credentials file.
pub const DEFAULT_CREDENTIALS_FILE: &str = "/root/.alibabacloud/credentials";

/// Variable names the chain reads.
pub mod vars {
    pub const CREDENTIALS_FILE: &str = "OSS_CONNECTOR_CREDENTIALS_FILE";
    pub const CREDENTIAL_PROCESS: &str = "OSS_CONNECTOR_CREDENTIAL_PROCESS";
    pub const ALIBABA_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
    pub const ALIBABA_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
    pub const ALIBABA_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
    pub const ALIBABA_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
    pub const ALIBABA_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
    pub const ALIBABA_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
    pub const ALIBABA_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
    pub const ALIBABA_STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
    pub const ECS_ROLE: &str = "ALIBABA_CLOUD_ECS_METADATA";
    pub const ECS_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";
    pub const ECS_IMDSV1_DISABLED: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";
    pub const ECS_ENDPOINT: &str = "OSS_CONNECTOR_ECS_METADATA_ENDPOINT";
    pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
    pub const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
    pub const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
    pub const AWS_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";
    pub const AWS_STS_ENDPOINT: &str = "AWS_ENDPOINT_URL_STS";
    pub const AWS_IMDS_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
    pub const AWS_IMDS_ENABLED: &str = "OSS_CONNECTOR_AWS_IMDS";
    pub const AWS_IMDS_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";
}

/// Whose variables apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Alibaba,
    Aws,
}

/// Picks the provider. `oss_env` is `OSS_ACCESS_KEY_ID`/`_SECRET`/
/// `OSS_SESSION_TOKEN` as already resolved into the store settings; `ca` are
/// the extra TLS roots for STS calls. `Ok(None)` means anonymous access.
pub fn resolve(
    family: Family,
    oss_env: Option<&Credentials>,
    lookup: &dyn Fn(&str) -> Option<String>,
    ca: &[reqwest::Certificate],
) -> Result<Option<CredentialSource>, CredentialError> {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let is_true = |name: &str| {
        get(name).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    };
    let source = |p: Box<dyn CredentialProvider>| {
        tracing::info!(provider = %p.name(), "credential provider");
        Ok(Some(CredentialSource::new(p)))
    };

    if let Some(c) = oss_env {
        return source(Box::new(StaticProvider::new(
            config::env::ACCESS_KEY_ID,
            c.clone(),
        )));
    }
    let (id_var, secret_var, token_var) = match family {
        Family::Alibaba => (
            vars::ALIBABA_ACCESS_KEY_ID,
            vars::ALIBABA_ACCESS_KEY_SECRET,
            vars::ALIBABA_SECURITY_TOKEN,
        ),
        Family::Aws => (
            vars::AWS_ACCESS_KEY_ID,
            vars::AWS_SECRET_ACCESS_KEY,
            vars::AWS_SESSION_TOKEN,
        ),
    };
    match (get(id_var), get(secret_var)) {
        (Some(id), Some(secret)) => {
            let mut c = Credentials::new(id, secret);
            c.security_token = get(token_var);
            return source(Box::new(StaticProvider::new(id_var, c)));
        }
        (Some(_), None) => return Err(missing(id_var, secret_var)),
        (None, Some(_)) => return Err(missing(secret_var, id_var)),
        (None, None) => {}
    }
    match get(vars::CREDENTIALS_FILE) {
        Some(path) => return source(Box::new(FileProvider::new(path))),
        None if Path::new(DEFAULT_CREDENTIALS_FILE).is_file() => {
            return source(Box::new(FileProvider::new(DEFAULT_CREDENTIALS_FILE)))
        }
        None => {}
    }
    if let Some(command) = get(vars::CREDENTIAL_PROCESS) {
        return source(Box::new(ProcessProvider::new(
            command,
            DEFAULT_PROCESS_TIMEOUT,
        )));
    }
    match family {
        Family::Alibaba => {
            let rrsa = [
                vars::ALIBABA_ROLE_ARN,
                vars::ALIBABA_OIDC_PROVIDER_ARN,
                vars::ALIBABA_OIDC_TOKEN_FILE,
            ]
            .map(|name| (name, get(name)));
            if rrsa.iter().any(|(_, v)| v.is_some()) {
                if let Some((name, _)) = rrsa.iter().find(|(_, v)| v.is_none()) {
                    return Err(CredentialError::config(
                        "RRSA",
                        format!("{name} is not set; RRSA needs ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
                    ));
                }
                let [(_, role), (_, provider), (_, token)] = rrsa;
                return source(Box::new(AssumeRoleProvider {
                    flavor: Flavor::AlibabaOidc,
                    endpoint: get(vars::ALIBABA_STS_ENDPOINT)
                        .unwrap_or_else(|| ALIBABA_STS_ENDPOINT.into()),
                    role_arn: role.unwrap_or_default(),
                    oidc_provider_arn: provider,
                    token_file: token.unwrap_or_default().into(),
                    session_name: get(vars::ALIBABA_ROLE_SESSION_NAME)
                        .unwrap_or_else(|| super::sts::DEFAULT_SESSION_NAME.into()),
                    ca_certificates: ca.to_vec(),
                }));
            }
            if let Some(role) = get(vars::ECS_ROLE).filter(|_| !is_true(vars::ECS_DISABLED)) {
                return source(Box::new(EcsRamRoleProvider::new(
                    get(vars::ECS_ENDPOINT).unwrap_or_else(|| ECS_METADATA_ENDPOINT.into()),
                    role,
                    !is_true(vars::ECS_IMDSV1_DISABLED),
                )));
            }
        }
        Family::Aws => {
            match (
                get(vars::AWS_WEB_IDENTITY_TOKEN_FILE),
                get(vars::AWS_ROLE_ARN),
            ) {
                (Some(token), Some(role)) => {
                    return source(Box::new(AssumeRoleProvider {
                        flavor: Flavor::AwsWebIdentity,
                        endpoint: get(vars::AWS_STS_ENDPOINT)
                            .unwrap_or_else(|| AWS_STS_ENDPOINT.into()),
                        role_arn: role,
                        oidc_provider_arn: None,
                        token_file: token.into(),
                        session_name: get(vars::AWS_ROLE_SESSION_NAME)
                            .unwrap_or_else(|| super::sts::DEFAULT_SESSION_NAME.into()),
                        ca_certificates: ca.to_vec(),
                    }))
                }
                (Some(_), None) => {
                    return Err(missing(
                        vars::AWS_WEB_IDENTITY_TOKEN_FILE,
                        vars::AWS_ROLE_ARN,
                    ))
                }
                _ => {}
            }
            let endpoint = get(vars::AWS_IMDS_ENDPOINT);
            let wanted = endpoint.is_some() || is_true(vars::AWS_IMDS_ENABLED);
            if wanted && !is_true(vars::AWS_IMDS_DISABLED) {
                return source(Box::new(ImdsProvider::new(
                    endpoint.unwrap_or_else(|| IMDS_ENDPOINT.into()),
                )));
            }
        }
    }
    Ok(None)
}

fn missing(set: &str, unset: &str) -> CredentialError {
    CredentialError::config(
        "environment",
        format!("{set} is set but {unset} is not: set both, or neither"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pick(family: Family, pairs: &[(&str, &str)]) -> Result<Option<String>, CredentialError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        resolve(family, None, &lookup, &[]).map(|s| s.map(|s| s.provider_name()))
    }

    #[test]
    fn first_configured_provider_wins_in_the_documented_order() {
        use Family::*;
        let all_alibaba = [
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ak"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "sk"),
            ("OSS_CONNECTOR_CREDENTIALS_FILE", "/run/creds.json"),
            ("OSS_CONNECTOR_CREDENTIAL_PROCESS", "mint"),
            ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r"),
            (
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                "acs:ram::1:oidc-provider/p",
            ),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "/var/run/token"),
            ("ALIBABA_CLOUD_ECS_METADATA", "role1"),
        ];
        let expected = [
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "credentials file /run/creds.json",
            "credential_process",
            "RRSA role acs:ram::1:role/r",
            "ECS RAM role role1",
        ];
        // Dropping the winner's variables each time reveals the next provider.
        let mut env = all_alibaba.to_vec();
        for want in expected {
            assert_eq!(pick(Alibaba, &env).unwrap().as_deref(), Some(want));
            let drop = match want {
                "ALIBABA_CLOUD_ACCESS_KEY_ID" => 2,
                "RRSA role acs:ram::1:role/r" => 3,
                _ => 1,
            };
            env.drain(..drop);
        }
        assert_eq!(pick(Alibaba, &env).unwrap(), None);
        // The AWS variables mean nothing to OSS signatures, and vice versa.
        assert_eq!(
            pick(
                Alibaba,
                &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]
            )
            .unwrap(),
            None
        );
        assert_eq!(pick(Aws, &all_alibaba[..2]).unwrap(), None);
        assert_eq!(
            pick(
                Aws,
                &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]
            )
            .unwrap()
            .as_deref(),
            Some("AWS_ACCESS_KEY_ID")
        );
        assert_eq!(
            pick(
                Aws,
                &[
                    ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
                    ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r")
                ]
            )
            .unwrap()
            .as_deref(),
            Some("web identity role arn:aws:iam::1:role/r")
        );
        // IMDS is opt-in, so anonymous s3:// access never waits on it.
        assert_eq!(pick(Aws, &[]).unwrap(), None);
        assert_eq!(
            pick(Aws, &[("OSS_CONNECTOR_AWS_IMDS", "1")])
                .unwrap()
                .as_deref(),
            Some("EC2 instance metadata (IMDSv2)")
        );
        assert_eq!(
            pick(
                Aws,
                &[
                    ("OSS_CONNECTOR_AWS_IMDS", "1"),
                    ("AWS_EC2_METADATA_DISABLED", "true")
                ]
            )
            .unwrap(),
            None
        );
        assert_eq!(
            pick(
                Alibaba,
                &[
                    ("ALIBABA_CLOUD_ECS_METADATA", "r"),
                    ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
                ]
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn oss_variables_come_first_and_incomplete_settings_are_errors() {
        let lookup = |k: &str| (k == "ALIBABA_CLOUD_ECS_METADATA").then(|| "r".to_owned());
        let oss = Credentials::new("ak", "sk");
        let s = resolve(Family::Alibaba, Some(&oss), &lookup, &[])
            .unwrap()
            .unwrap();
        assert_eq!(s.provider_name(), "OSS_ACCESS_KEY_ID");
        assert!(!s.refreshes());

        let e = pick(Family::Alibaba, &[("ALIBABA_CLOUD_ACCESS_KEY_ID", "a")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"),
            "{e}"
        );
        let e = pick(Family::Alibaba, &[("ALIBABA_CLOUD_ROLE_ARN", "r")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN is not set"),
            "{e}"
        );
        let e = pick(Family::Aws, &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")]).unwrap_err();
        assert!(e.to_string().contains("AWS_ROLE_ARN is not"), "{e}");
    }
}

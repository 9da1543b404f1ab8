//! Local credential sources: the vendor's JSON credentials file and a
//! `credential_process` command.
//!
//! Both are re-read on every fetch (the cache in `mod.rs` decides when), so a
//! rotated file or a command that mints new keys takes effect at the next
//! refresh. A command runs under `sh -c` with a timeout; its stdout is capped
//! at [`MAX_DOCUMENT_BYTES`] and its stderr goes to our stderr (never into a
//! log line, it may hold secrets).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use super::{
    parse_credentials_json, CredentialError, CredentialProvider, TimedCredentials,
    MAX_DOCUMENT_BYTES,
};

/// How long a `credential_process` command may run.
pub const DEFAULT_PROCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// The vendor's credentials file: JSON with `AccessKeyId`, `AccessKeySecret`,
/// `SecurityToken` and `Expiration`.
#[derive(Debug, Clone)]
pub struct FileProvider {
    path: PathBuf,
}

impl FileProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait]
impl CredentialProvider for FileProvider {
    fn name(&self) -> String {
        format!("credentials file {}", self.path.display())
    }

    async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
        let path = self.path.clone();
        let text = tokio::task::spawn_blocking(move || read_capped(&path))
            .await
            .map_err(|e| CredentialError::unavailable(self.name(), e.to_string()))?
            .map_err(|e| CredentialError::config(self.name(), e))?;
        parse_credentials_json(&text).map_err(|e| CredentialError::config(self.name(), e))
    }
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    Ok(text)
}

/// A command that prints a credentials JSON document on stdout.
#[derive(Debug, Clone)]
pub struct ProcessProvider {
    command: String,
    timeout: Duration,
}

impl ProcessProvider {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self {
            command: command.into(),
            timeout,
        }
    }
}

#[async_trait]
impl CredentialProvider for ProcessProvider {
    fn name(&self) -> String {
        "credential_process".to_owned()
    }

    async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
        let name = self.name();
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CredentialError::config(&name, format!("cannot start /bin/sh: {e}")))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let run = async {
            let mut out = Vec::new();
            (&mut stdout)
                .take(MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .await?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out))
        };
        let (status, out) = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(CredentialError::unavailable(&name, e.to_string())),
            Err(_) => {
                return Err(CredentialError::unavailable(
                    &name,
                    format!("the command did not finish within {:?}", self.timeout),
                ))
            }
        };
        if !status.success() {
            return Err(CredentialError::unavailable(
                &name,
                format!("the command failed ({status})"),
            ));
        }
        if out.len() > MAX_DOCUMENT_BYTES {
            return Err(CredentialError::config(
                &name,
                format!("the command printed more than {MAX_DOCUMENT_BYTES} bytes"),
            ));
        }
        parse_credentials_json(&out).map_err(|e| CredentialError::config(&name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Credentials;
    use std::time::Instant;

    #[tokio::test]
    async fn file_is_read_again_on_every_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let provider = FileProvider::new(&path);
        let e = provider.fetch().await.unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
        std::fs::write(
            &path,
            r#"{"AccessKeyId":"one","AccessKeySecret":"s1","SecurityToken":"t1","Expiration":"2099-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let first = provider.fetch().await.unwrap();
        assert_eq!(
            first.credentials,
            Credentials::new("one", "s1").with_token("t1")
        );
        std::fs::write(&path, r#"{"AccessKeyId":"two","AccessKeySecret":"s2"}"#).unwrap();
        let second = provider.fetch().await.unwrap();
        assert_eq!(
            second,
            TimedCredentials::never_expiring(Credentials::new("two", "s2"))
        );
        std::fs::write(&path, vec![b' '; MAX_DOCUMENT_BYTES + 1]).unwrap();
        let e = provider.fetch().await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[tokio::test]
    async fn process_output_is_parsed_and_failures_are_clear() {
        let ok = ProcessProvider::new(
            r#"printf '{"Version":1,"AccessKeyId":"pk","SecretAccessKey":"ps","SessionToken":"pt"}'"#,
            DEFAULT_PROCESS_TIMEOUT,
        );
        assert_eq!(
            ok.fetch().await.unwrap().credentials,
            Credentials::new("pk", "ps").with_token("pt")
        );
        let failing = ProcessProvider::new("echo oops >&2; exit 3", DEFAULT_PROCESS_TIMEOUT);
        let e = failing.fetch().await.unwrap_err();
        assert!(e.to_string().contains("the command failed"), "{e}");
        let garbage = ProcessProvider::new("echo hello", DEFAULT_PROCESS_TIMEOUT);
        let e = garbage.fetch().await.unwrap_err();
        assert!(e.to_string().contains("not a JSON document"), "{e}");
        let started = Instant::now();
        let slow = ProcessProvider::new("sleep 30", Duration::from_millis(300));
        let e = slow.fetch().await.unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

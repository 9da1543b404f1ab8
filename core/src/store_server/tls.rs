//! HTTPS for the embedded store: a certificate chain and key in PEM, served
//! with rustls (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).
//!
//! The handshake of each connection is bounded by [`HANDSHAKE_TIMEOUT`], so
//! a client that connects and sends nothing holds no task for long.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Longest time a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server certificate chain and its private key, in PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    pub fn from_pem(cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            cert_chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// Reads `--tls-cert` and `--tls-key`.
    pub fn from_files(cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(Self::from_pem(read(cert)?, read(key)?))
    }

    /// A rustls acceptor for this identity.
    pub fn acceptor(&self) -> io::Result<tokio_rustls::TlsAcceptor> {
        let invalid = |what: &str, e: String| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("TLS {what}: {e}"))
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&self.cert_chain_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("certificate", e.to_string()))?;
        if chain.is_empty() {
            return Err(invalid("certificate", "no PEM certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| invalid("key", e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("protocol versions", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid("certificate and key", e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Completes the server side of a handshake within [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

//! Encryption of peer traffic: mutual TLS under a CA derived from the
//! cluster secret.
//!
//! Design decision: no PKI to distribute. Every node derives the same Ed25519
//! CA key from the secret (HKDF-SHA256, fixed salt and info) and builds the CA
//! certificate with a fixed name, so all nodes trust the same anchor; each
//! node then makes a fresh ECDSA P-256 key and a certificate for the fixed
//! name [`PEER_TLS_NAME`] signed by that CA, used both as server and client
//! identity (mutual TLS: a node without the secret cannot even complete a
//! handshake, in either direction). Peers are addressed by IP, so clients
//! verify the fixed name instead of the address; who a peer *is* comes from
//! the HMAC-authenticated node id ([`super::auth`]). Anyone holding the secret
//! can mint certificates: the secret is the single trust root, as it already
//! is for the HMAC.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::auth::ClusterSecret;

/// The name every node certificate carries and every client verifies.
pub const PEER_TLS_NAME: &str = "ossc-peer";
/// HKDF salt and info of the CA key (versioned: changing them is a new CA).
const CA_KEY_SALT: &[u8] = b"ossc peer tls v1";
const CA_KEY_INFO: &[u8] = b"ed25519 ca seed";
/// Common name of the derived CA.
const CA_COMMON_NAME: &str = "ossc cluster CA (derived from the cluster secret)";
/// PKCS#8 v1 DER prefix of an Ed25519 private key (RFC 8410): SEQUENCE {
/// version 0, AlgorithmIdentifier id-Ed25519, OCTET STRING { OCTET STRING
/// (32-byte seed) } }; the seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
#[error("peer TLS setup: {0}")]
pub struct TlsSetupError(String);

impl TlsSetupError {
    pub fn from_display(e: &dyn std::fmt::Display) -> TlsSetupError {
        TlsSetupError(e.to_string())
    }
}

fn err(e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError(e.to_string())
}

/// This node's TLS material: the derived CA and its own certificate.
#[derive(Clone)]
pub struct PeerTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls(<derived CA, node certificate; keys hidden>)")
    }
}

/// The CA's key, derived from the secret.
fn ca_key(secret: &ClusterSecret) -> Result<KeyPair, TlsSetupError> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    let mut seed = [0u8; 32];
    secret.derive(CA_KEY_SALT, CA_KEY_INFO, &mut seed);
    der.extend_from_slice(&seed);
    KeyPair::try_from(der.as_slice()).map_err(err)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl PeerTls {
    /// Derives the CA and issues this node's certificate (`node_id` is
    /// recorded as its common name, for logs).
    pub fn new(secret: &ClusterSecret, node_id: &str) -> Result<PeerTls, TlsSetupError> {
        let ca_key = ca_key(secret)?;
        let ca_cert = ca_params().self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let node_key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(vec![PEER_TLS_NAME.to_string()]).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&node_key, &issuer).map_err(err)?;
        Ok(PeerTls {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: node_key.serialize_pem(),
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Server side: present our certificate, require one from the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Client side: trust only the derived CA, verify [`PEER_TLS_NAME`],
    /// present our certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(PEER_TLS_NAME)
    }

    /// The derived CA certificate (PEM), identical on every node.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// rustls configurations of both sides for a transport with its own
    /// `alpn` (see [`rustls_configs`]).
    pub(crate) fn rustls_configs(
        &self,
        alpn: &[u8],
    ) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsSetupError> {
        rustls_configs(&self.ca_pem, &self.cert_pem, &self.key_pem, alpn)
    }

    /// This node's certificate (PEM), for the QUIC transport's rustls setup.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This node's private key (PEM); never log it.
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// rustls configurations of a transport that runs its own TLS (QUIC, the
/// framed transport): TLS 1.3 only, trust `ca_pem` only, present
/// `cert_pem`/`key_pem` on both sides, require a client certificate, verify
/// [`PEER_TLS_NAME`], and speak only `alpn` (a node without it fails the
/// handshake instead of misreading the stream).
pub(crate) fn rustls_configs(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(err)?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(err)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(err)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(err)?;
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(err)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .map_err(err)?;
    server.alpn_protocols = vec![alpn.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(err)?;
    client.alpn_protocols = vec![alpn.to_vec()];
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_derived_from_the_secret_and_node_certs_are_fresh() {
        let s = ClusterSecret::new(crate::swarm::auth::TEST_SECRET).unwrap();
        let a = PeerTls::new(&s, "10.0.0.1:7468").unwrap();
        let b = PeerTls::new(&s, "10.0.0.2:7468").unwrap();
        // Same secret: same CA key (and so the same anchor), other node keys.
        let key_a = ca_key(&s).unwrap().public_key_pem();
        assert_eq!(key_a, ca_key(&s).unwrap().public_key_pem());
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_ne!(a.key_pem, b.key_pem);
        let other = ClusterSecret::new(b"Zr4Wq8Ne2Ty6Ui0Op3As7Df1Gh5Jk9Lx").unwrap();
        assert_ne!(ca_key(&other).unwrap().public_key_pem(), key_a);
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }
}

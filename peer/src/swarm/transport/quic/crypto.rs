//! TLS and quinn configuration of the QUIC transport: the same
//! secret-derived CA and node certificate as gRPC ([`crate::swarm::tls`]),
//! TLS 1.3 only, client certificates required on both sides, ALPN
//! [`ALPN`], and the bulk tuning of [`super`]'s notes.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::VarInt;

use super::{
    QuicSetupError, ALPN, CONNECTION_RECEIVE_WINDOW, IDLE_TIMEOUT, KEEP_ALIVE,
    MAX_CONCURRENT_STREAMS, SEND_WINDOW, STREAM_RECEIVE_WINDOW,
};
use crate::swarm::tls::PeerTls;

/// rustls + quinn configuration of both sides.
#[derive(Clone)]
pub struct QuicCrypto {
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
}

impl std::fmt::Debug for QuicCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicCrypto(<derived CA, node certificate; keys hidden>)")
    }
}

fn tls_err(e: impl std::fmt::Display) -> QuicSetupError {
    QuicSetupError::Tls(e.to_string())
}

/// Transport parameters for bulk chunks (see [`super`]'s notes).
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("20 s is a valid idle timeout"),
        ));
    t
}

impl QuicCrypto {
    /// From this node's TLS material (the derived CA and node certificate).
    pub fn from_tls(tls: &PeerTls) -> Result<QuicCrypto, QuicSetupError> {
        QuicCrypto::from_pems(tls.ca_pem(), tls.cert_pem(), tls.key_pem())
    }

    /// Trust `ca_pem` only; present `cert_pem`/`key_pem` on both sides.
    pub fn from_pems(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<QuicCrypto, QuicSetupError> {
        let (server, client) =
            crate::swarm::tls::rustls_configs(ca_pem, cert_pem, key_pem, ALPN).map_err(tls_err)?;
        let transport = Arc::new(transport_config());
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server).map_err(tls_err)?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client).map_err(tls_err)?,
        ));
        client.transport_config(transport);
        Ok(QuicCrypto { server, client })
    }

    /// The endpoint's server and client configurations.
    pub(super) fn into_configs(self) -> (quinn::ServerConfig, quinn::ClientConfig) {
        (self.server, self.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::auth::TEST_SECRET;
    use crate::swarm::ClusterSecret;

    #[test]
    fn the_crypto_builds_from_derived_material_and_refuses_garbage() {
        let s = ClusterSecret::new(TEST_SECRET).unwrap();
        let tls = PeerTls::new(&s, "127.0.0.1:1").unwrap();
        QuicCrypto::from_tls(&tls).unwrap();
        // Garbage PEM is an error, not a panic.
        assert!(QuicCrypto::from_pems("x", tls.cert_pem(), tls.key_pem()).is_err());
    }
}

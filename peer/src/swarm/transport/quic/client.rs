//! The pulling side of the QUIC transport: one connection per peer, made
//! on first use and kept while it lives; one stream per chunk (see
//! [`super`] for the protocol and the fallback).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use ossc_proto::v1;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::Code;

use super::{
    QuicNode, CONNECT_TIMEOUT, END_OF_CHUNK, MAX_MESSAGE_BYTES, QUIC_FETCH_METHOD,
    QUIC_RETRY_AFTER, RESPONSE_HEADER_BYTES,
};
use crate::object_source::ChunkTarget;
use crate::swarm::auth::{
    body_digest, new_nonce, now_secs, ClusterSecret, AUTH_HEADER, NONCE_HEADER,
};
use crate::swarm::peer_set::Peer;
use crate::swarm::tls::PEER_TLS_NAME;
use crate::swarm::transport::reachability::PeerReachability;
use crate::swarm::transport::{ChunkPull, ChunkPuller, PullError, Receiving};

/// Client-side state of one peer's connection.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) conn: Option<quinn::Connection>,
    /// Whether handshakes to the peer fail.
    reach: PeerReachability,
}

impl QuicNode {
    /// The connection to `addr`, made if needed; `Unreachable` when the
    /// handshake fails (logged once per peer until QUIC works again).
    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, PullError> {
        let slot = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = &slot.conn {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
            slot.conn = None;
        }
        slot.reach.may_connect(QUIC_RETRY_AFTER)?;
        let attempt = async {
            let connecting = self
                .endpoint
                .connect_with(self.client.clone(), addr, PEER_TLS_NAME)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no handshake within {CONNECT_TIMEOUT:?}")),
            }
        };
        match attempt.await {
            Ok(c) => {
                slot.reach.connected("QUIC", addr);
                slot.conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                slot.reach.failed("QUIC", addr, &e, QUIC_RETRY_AFTER);
                Err(PullError::Unreachable(e))
            }
        }
    }

    /// Pulls one chunk from the peer at `addr` into `target` (see
    /// [`ChunkPuller::pull`]); [`PullError::Unreachable`] when no QUIC
    /// connection to it can be made.
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let conn = self.connection(addr).await.inspect_err(|_| {
            self.unreachable.fetch_add(1, Ordering::Relaxed);
        })?;
        let (stall, answer_timeout) = (pull.stall, pull.answer_timeout);
        let lost = |what: &str, e: &dyn std::fmt::Display| PullError::Lost(format!("{what}: {e}"));
        let stalled = || PullError::Lost("chunk stream stalled".into());
        let (mut send, mut recv) = tokio::time::timeout(stall, conn.open_bi())
            .await
            .map_err(|_| PullError::Lost("opening a stream timed out".into()))?
            .map_err(|e| lost("opening a stream", &e))?;
        let body = signed_request(
            pull.secret,
            pull.self_id,
            &pull.request,
            now_secs(),
            &new_nonce(),
        )
        .encode_to_vec();
        let mut framed = Vec::with_capacity(4 + body.len());
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        send.write_all(&framed)
            .await
            .map_err(|e| lost("sending the request", &e))?;
        let _ = send.finish();

        let mut header = [0u8; RESPONSE_HEADER_BYTES];
        tokio::time::timeout(answer_timeout, recv.read_exact(&mut header))
            .await
            .map_err(|_| PullError::Lost(format!("no answer within {answer_timeout:?}")))?
            .map_err(|e| lost("reading the answer", &e))?;
        let code = Code::from_i32(i32::from(header[0]));
        let msg_len = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        let len = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        if code != Code::Ok {
            // A code here is the server's deliberate answer (a broken
            // stream is a read error above): only UNAVAILABLE means "lost".
            if code == Code::NotFound {
                return Err(PullError::NotHeld);
            }
            let mut text = vec![0u8; msg_len.min(MAX_MESSAGE_BYTES) as usize];
            let _ = tokio::time::timeout(stall, recv.read_exact(&mut text)).await;
            let text = format!("{code:?}: {}", String::from_utf8_lossy(&text));
            return Err(if code == Code::Unavailable {
                PullError::Lost(text)
            } else {
                PullError::Failed(text)
            });
        }
        let mut got = Receiving::new(target, pull.range.clone(), answer_timeout);
        let want = got.len();
        if len != want {
            return Err(PullError::Corrupt(format!(
                "peer sends {len} bytes for a chunk of {want}"
            )));
        }
        let crc = loop {
            let pos = got.pos();
            let mut word = [0u8; 4];
            tokio::time::timeout(stall, recv.read_exact(&mut word))
                .await
                .map_err(|_| stalled())?
                .map_err(|e| lost(&format!("reading the chunk at {pos} of {len}"), &e))?;
            let seg = u32::from_be_bytes(word);
            if seg == END_OF_CHUNK {
                let mut crc = [0u8; 8];
                tokio::time::timeout(stall, recv.read_exact(&mut crc))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| lost("reading the chunk CRC", &e))?;
                break u64::from_be_bytes(crc);
            }
            if seg == 0 {
                got.keep_alive()?;
                continue;
            }
            let seg = u64::from(seg);
            if pos + seg > len {
                return Err(PullError::Corrupt(format!(
                    "segment of {seg} bytes at {pos} overruns the chunk of {len}"
                )));
            }
            let end = pos + seg;
            while got.pos() < end {
                let max = usize::try_from(end - got.pos()).unwrap_or(usize::MAX);
                // quinn's own buffer: hashed and written without a copy.
                let chunk = tokio::time::timeout(stall, recv.read_chunk(max, true))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| lost("reading the chunk", &e))?
                    .ok_or_else(|| {
                        PullError::Lost(format!("chunk truncated at {} of {len}", got.pos()))
                    })?;
                got.take(&chunk.bytes)?;
            }
        };
        let crc = got.finish(crc)?;
        self.bytes_received.fetch_add(len, Ordering::Relaxed);
        Ok(crc)
    }
}

#[async_trait]
impl ChunkPuller for QuicNode {
    fn name(&self) -> &'static str {
        "quic"
    }

    async fn pull(
        &self,
        peer: &Peer,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        self.fetch(peer.addr, pull, target)
            .await
            .map_err(|e| e.via("QUIC"))
    }
}

/// A `QuicChunkRequest` carrying `request`, signed at `time` with `nonce`.
fn signed_request(
    secret: &ClusterSecret,
    self_id: &str,
    request: &v1::ChunkRequest,
    time: u64,
    nonce: &str,
) -> v1::QuicChunkRequest {
    let encoded = request.encode_to_vec();
    let mut md = MetadataMap::new();
    secret.sign_at(
        &mut md,
        self_id,
        QUIC_FETCH_METHOD,
        &body_digest(&encoded),
        time,
        nonce,
    );
    let text = |k: &str| {
        md.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    v1::QuicChunkRequest {
        request: encoded,
        node_id: self_id.to_string(),
        time,
        auth: text(AUTH_HEADER),
        nonce: text(NONCE_HEADER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::auth::{AuthError, NonceCache, TEST_SECRET};
    use crate::swarm::transport::quic::server::auth_metadata;

    #[test]
    fn a_signed_request_authenticates_its_bytes_for_quic_only() {
        let s = ClusterSecret::new(TEST_SECRET).unwrap();
        // The request's auth entries become the metadata the HMAC check
        // reads; the tag covers the encoded request and its nonce.
        let request = v1::ChunkRequest {
            wait_ms: 7,
            ..Default::default()
        };
        let req = signed_request(&s, "10.0.0.1:7468", &request, 1_000, &new_nonce());
        let digest = body_digest(&req.request);
        let check = |req: &v1::QuicChunkRequest, method: &str, digest: &[u8; 32]| {
            let nonces = NonceCache::default();
            s.verify_at(&auth_metadata(req), method, digest, &nonces, 1_000)
        };
        assert_eq!(
            check(&req, QUIC_FETCH_METHOD, &digest).unwrap(),
            "10.0.0.1:7468"
        );
        assert!(check(&req, "/ossc.v1.PeerControl/FetchChunk", &digest).is_err());
        let mut altered = req.clone();
        altered.request = v1::ChunkRequest {
            wait_ms: 8,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            check(&altered, QUIC_FETCH_METHOD, &body_digest(&altered.request)),
            Err(AuthError::BadTag)
        );
    }
}

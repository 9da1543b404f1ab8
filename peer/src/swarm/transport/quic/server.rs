//! The serving side of the QUIC chunk transport ([`super`] has the
//! protocol and the endpoint).
//!
//! Design decisions:
//! - **Bounds**: at most [`MAX_SERVED_CONNECTIONS`] connections served at
//!   once, handshakes in progress included (beyond it new ones are refused
//!   before any crypto), [`HANDSHAKE_TIMEOUT`] per handshake,
//!   [`super::MAX_CONCURRENT_STREAMS`] streams per connection,
//!   [`REQUEST_TIMEOUT`] for a stream's request and
//!   [`super::IDLE_TIMEOUT`] of silence per connection.
//! - Every request is authenticated ([`ChunkServer::admit_metadata`], over
//!   the SHA-256 of the encoded `ChunkRequest`) before that request is
//!   decoded; then it is answered by the same [`ChunkServer::locate`] and
//!   [`Serving::next_segment`] as gRPC FetchChunk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ossc_proto::v1;
use prost::Message;
use quinn::{RecvStream, SendStream, VarInt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use super::{
    END_OF_CHUNK, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, QUIC_FETCH_METHOD, RESPONSE_HEADER_BYTES,
};
use crate::swarm::auth::{body_digest, AUTH_HEADER, NODE_HEADER, NONCE_HEADER, TIME_HEADER};
use crate::swarm::chunk_server::{ChunkServer, Segment, Serving};

/// Most connections peers may hold open to us at once (beyond it new ones
/// are refused before their handshake); a cluster needs one per peer.
pub const MAX_SERVED_CONNECTIONS: usize = 256;
/// How long an incoming connection's handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a request's bytes after a stream opens.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Application error code of a stream reset by the server mid-chunk.
const RESET_CHUNK_LOST: u32 = 1;

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    server: Arc<ChunkServer>,
    served: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
) {
    // Handshakes in progress count too, so a flood of half-open handshakes
    // is bounded like established connections.
    let pending = Arc::new(AtomicU64::new(0));
    while let Some(incoming) = endpoint.accept().await {
        let open = served.lock().unwrap_or_else(|p| p.into_inner()).len()
            + pending.load(Ordering::Relaxed) as usize;
        if open >= MAX_SERVED_CONNECTIONS {
            tracing::debug!(remote = %incoming.remote_address(), "QUIC: connection cap reached, refused");
            incoming.refuse();
            continue;
        }
        let server = server.clone();
        let served = served.clone();
        let pending = pending.clone();
        pending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
            pending.fetch_sub(1, Ordering::Relaxed);
            let conn = match handshake {
                Err(_) => {
                    tracing::debug!(remote = %remote, "QUIC handshake timed out");
                    return;
                }
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    // A wrong-secret node lands here (its certificate does
                    // not chain to our CA, or it rejects ours).
                    tracing::warn!(remote = %remote, error = %e, "QUIC handshake from peer failed");
                    return;
                }
            };
            served
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(remote, conn.clone());
            while let Ok((send, recv)) = conn.accept_bi().await {
                let server = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_stream(&server, send, recv, remote).await {
                        tracing::debug!(remote = %remote, error = %e, "QUIC chunk stream ended early");
                    }
                });
            }
            let mut served = served.lock().unwrap_or_else(|p| p.into_inner());
            if served
                .get(&remote)
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                served.remove(&remote);
            }
        });
    }
}

/// Reads one request: u32 BE length, then a `QuicChunkRequest`.
async fn read_request(recv: &mut RecvStream) -> Result<v1::QuicChunkRequest, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len);
    if len > MAX_REQUEST_BYTES {
        return Err(format!("request of {len} bytes is too large"));
    }
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    v1::QuicChunkRequest::decode(body.as_slice()).map_err(|e| e.to_string())
}

/// The auth entries of a QUIC request as gRPC metadata, for
/// [`ChunkServer::admit_metadata`] (missing or malformed entries are left
/// out and refused there).
pub(crate) fn auth_metadata(req: &v1::QuicChunkRequest) -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(req.node_id.as_str()) {
        md.insert(NODE_HEADER, v);
    }
    md.insert(TIME_HEADER, MetadataValue::from(req.time));
    if let Ok(v) = MetadataValue::try_from(req.nonce.as_str()) {
        md.insert(NONCE_HEADER, v);
    }
    if let Ok(v) = MetadataValue::try_from(req.auth.as_str()) {
        md.insert(AUTH_HEADER, v);
    }
    md
}

pub(crate) fn header(code: Code, msg_len: u32, len: u64) -> [u8; RESPONSE_HEADER_BYTES] {
    let mut h = [0u8; RESPONSE_HEADER_BYTES];
    h[0] = code as i32 as u8;
    h[4..8].copy_from_slice(&msg_len.to_be_bytes());
    h[16..24].copy_from_slice(&len.to_be_bytes());
    h
}

/// Answers one chunk stream.
async fn serve_stream(
    server: &ChunkServer,
    mut send: SendStream,
    mut recv: RecvStream,
    remote: SocketAddr,
) -> Result<(), String> {
    let req = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut recv))
        .await
        .map_err(|_| "no request within the timeout".to_string())??;
    let md = auth_metadata(&req);
    let located: Result<Serving, Status> = async {
        // The tag covers the request's bytes: checked before decoding them.
        let node = server.admit_metadata(
            &md,
            Some(remote),
            QUIC_FETCH_METHOD,
            &body_digest(&req.request),
        )?;
        let request = v1::ChunkRequest::decode(req.request.as_slice())
            .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))?;
        server.locate(&node, request).await
    }
    .await;
    let mut s = match located {
        Ok(s) => s,
        Err(status) => {
            let msg = status.message().as_bytes();
            let msg = &msg[..msg.len().min(MAX_MESSAGE_BYTES as usize)];
            let mut out = header(status.code(), msg.len() as u32, 0).to_vec();
            out.extend_from_slice(msg);
            send.write_all(&out).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            return Ok(());
        }
    };
    send.write_all(&header(Code::Ok, 0, s.len()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match s.next_segment().await {
            Ok(Segment::Data { bytes, .. }) => {
                let seg = u32::try_from(bytes.len()).expect("frames are at most 1 MiB");
                send.write_all(&seg.to_be_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                send.write_chunk(Bytes::from(bytes))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Segment::KeepAlive) => {
                send.write_all(&0u32.to_be_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Segment::End { crc }) => {
                let mut end = END_OF_CHUNK.to_be_bytes().to_vec();
                end.extend_from_slice(&crc.to_be_bytes());
                send.write_all(&end).await.map_err(|e| e.to_string())?;
                let _ = send.finish();
                return Ok(());
            }
            Err(status) => {
                let _ = send.reset(VarInt::from_u32(RESET_CHUNK_LOST));
                return Err(status.message().to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = header(Code::NotFound, 7, 16 << 20);
        assert_eq!(Code::from_i32(i32::from(h[0])), Code::NotFound);
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 7);
        assert_eq!(&h[8..16], &[0u8; 8]);
        assert_eq!(u64::from_be_bytes(h[16..24].try_into().unwrap()), 16 << 20);
    }
}

//! Pulling a chunk over gRPC `FetchChunk` (see [`super`] for the framing).

use async_trait::async_trait;

use super::FETCH_CHUNK_METHOD;
use crate::object_source::ChunkTarget;
use crate::swarm::peer_set::Peer;
use crate::swarm::transport::{ChunkPull, ChunkPuller, PullError, Receiving};

/// Pulls over the peer's shared gRPC channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcPuller;

/// A gRPC status as a pull failure: transport-level codes mean "lost"
/// (also how the framed transport maps the statuses it carries).
pub(crate) fn from_status(s: &tonic::Status) -> PullError {
    let text = format!("{}: {}", s.code(), s.message());
    match s.code() {
        tonic::Code::NotFound => PullError::NotHeld,
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::Aborted => PullError::Lost(text),
        _ => PullError::Failed(text),
    }
}

#[async_trait]
impl ChunkPuller for GrpcPuller {
    fn name(&self) -> &'static str {
        "grpc"
    }

    async fn pull(
        &self,
        peer: &Peer,
        pull: &ChunkPull<'_>,
        target: &dyn ChunkTarget,
    ) -> Result<u64, PullError> {
        let mut req = tonic::Request::new(pull.request.clone());
        pull.secret
            .sign_request(&mut req, pull.self_id, FETCH_CHUNK_METHOD);
        let mut client = peer.client();
        let answer = pull.answer_timeout;
        let resp = tokio::time::timeout(answer, client.fetch_chunk(req))
            .await
            .map_err(|_| PullError::Lost(format!("no answer within {answer:?}")))?
            .map_err(|s| from_status(&s))?;
        let mut stream = resp.into_inner();
        let mut got = Receiving::new(target, pull.range.clone(), answer);
        let len = got.len();
        let claimed = loop {
            let pos = got.pos();
            let frame = tokio::time::timeout(pull.stall, stream.message())
                .await
                .map_err(|_| PullError::Lost("chunk stream stalled".into()))?
                .map_err(|s| from_status(&s))?
                .ok_or_else(|| PullError::Lost(format!("chunk stream ended at {pos} of {len}")))?;
            if frame.last {
                break frame.crc64;
            }
            let n = frame.data.len() as u64;
            if n == 0 {
                got.keep_alive()?;
                continue;
            }
            if frame.offset != pos || pos + n > len {
                return Err(PullError::Corrupt(format!(
                    "frame at {} (+{n}) does not fit chunk at {pos} of {len}",
                    frame.offset
                )));
            }
            got.take(&frame.data)?;
        };
        got.finish(claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_pull_kinds() {
        let kind = |code| from_status(&tonic::Status::new(code, "x"));
        assert!(matches!(kind(tonic::Code::NotFound), PullError::NotHeld));
        for lost in [
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
            tonic::Code::Aborted,
        ] {
            assert!(matches!(kind(lost), PullError::Lost(_)), "{lost:?}");
        }
        assert!(matches!(
            kind(tonic::Code::Unauthenticated),
            PullError::Failed(_)
        ));
    }
}

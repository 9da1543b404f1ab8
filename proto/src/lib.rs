//! Generated protobuf types and tonic services for the ossc peer protocol.
//! The schema lives in `proto/ossc.proto`; `build.rs` compiles it with
//! `protox`, so no system `protoc` is required.

#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ossc.v1");
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn chunk_request_round_trips_through_the_wire_format() {
        let req = ChunkRequest {
            chunk: Some(ChunkId {
                object: Some(ObjectVersion {
                    bucket: "models".into(),
                    key: "qwen/model-00001-of-00004.safetensors".into(),
                    etag: "abc".into(),
                    size: 1 << 33,
                }),
                chunk_size: 16 << 20,
                index: 7,
            }),
            wait_ms: 10_000,
            pull_from: PullFrom::Relay as i32,
        };
        let bytes = req.encode_to_vec();
        let back = ChunkRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.pull_from(), PullFrom::Relay);
        assert_eq!(back.chunk.unwrap().object.unwrap().size, 1 << 33);
    }
}

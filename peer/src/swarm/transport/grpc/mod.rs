//! Chunks over gRPC server streaming (tonic), the transport every node
//! serves and the others fall back to: the
//! `PeerControl` service's `FetchChunk` sends a chunk as `ChunkData` frames
//! of at most [`FRAME_BYTES`](crate::swarm::chunk_server::FRAME_BYTES), then
//! a last frame with the chunk's CRC-64.
//!
//! Design decisions:
//! - **Shared with control.** The same HTTP/2 connection per peer carries
//!   Hello and Have (the control plane, always gRPC) and chunk streams, with
//!   8 MiB stream and 64 MiB connection windows
//!   ([`crate::swarm::peer_set::STREAM_WINDOW_BYTES`]) so a stream keeps a
//!   fast link busy. [`server`] runs that service on every node.
//! - **Frames, not segments.** Each frame carries its offset within the
//!   chunk; the receiver ([`client`]) refuses a frame that does not continue
//!   the chunk, and treats an empty frame as a keep-alive.
//! - **Status codes as kinds.** A transport-level failure reaches the
//!   client as UNAVAILABLE, UNKNOWN, CANCELLED or ABORTED ("lost": the peer
//!   may be dying); NOT_FOUND means the peer does not hold the version;
//!   every other status is a failure that sends the chunk to the store.

pub mod client;
pub mod server;

pub use client::GrpcPuller;
pub use server::GrpcService;

/// gRPC path of FetchChunk (signed into the auth tag).
pub const FETCH_CHUNK_METHOD: &str = "/ossc.v1.PeerControl/FetchChunk";

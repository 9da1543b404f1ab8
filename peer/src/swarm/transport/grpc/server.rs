//! The gRPC service of a node: `PeerControl` (Hello and Have for the
//! control plane, FetchChunk for chunks) on the peer port, behind the
//! connection gate ([`crate::swarm::admission`]), mutual TLS and the auth
//! layer ([`crate::swarm::auth_layer`]), which authenticates every request
//! before its body is decoded. The answers come from [`ChunkServer`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use ossc_proto::v1::peer_control_server::{PeerControl, PeerControlServer};
use ossc_proto::v1::{
    ChunkData, ChunkRequest, HaveRequest, HaveResponse, HelloRequest, HelloResponse, PeerInfo,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::swarm::admission::{ConnectionGate, ServeLimits};
use crate::swarm::auth_layer::{AuthLayer, AuthenticatedPeer};
use crate::swarm::chunk_server::{ChunkServer, Segment};
use crate::swarm::peer_set::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES};
use crate::swarm::tls::{PeerTls, TlsSetupError};
use crate::swarm::transport::ChunkService;

/// The running tonic server of a node.
pub struct GrpcService {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl GrpcService {
    /// Serves `server` on `listener` (spawns on the current tokio runtime):
    /// connections admitted by `gate`, mutual TLS under `tls` when given,
    /// HTTP/2 bounded by `limits`.
    pub fn start(
        listener: TcpListener,
        server: Arc<ChunkServer>,
        tls: Option<&PeerTls>,
        limits: ServeLimits,
        gate: Arc<ConnectionGate>,
    ) -> Result<Arc<GrpcService>, TlsSetupError> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let incoming = gate.incoming(listener);
        let mut builder = tonic::transport::Server::builder();
        if let Some(t) = tls {
            builder = builder
                .tls_config(t.server_config().timeout(limits.handshake_timeout))
                .map_err(|e| TlsSetupError::from_display(&e))?;
        }
        let auth = AuthLayer::new(server.clone(), limits);
        let service = PeerControlServer::from_arc(server);
        let task = tokio::spawn(async move {
            let result = builder
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_concurrent_streams(limits.max_concurrent_streams)
                .http2_keepalive_interval(Some(limits.keepalive_interval))
                .http2_keepalive_timeout(Some(limits.keepalive_timeout))
                .http2_max_header_list_size(limits.max_header_list_bytes)
                .layer(auth)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "peer service stopped");
            }
        });
        Ok(Arc::new(GrpcService {
            stop: Mutex::new(Some(stop_tx)),
            task: Mutex::new(Some(task)),
        }))
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait]
impl ChunkService for GrpcService {
    fn name(&self) -> &'static str {
        "grpc"
    }

    async fn shutdown(&self, grace: Duration) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.take_task() else {
            return;
        };
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }

    fn abort(&self) {
        if let Some(task) = self.take_task() {
            task.abort();
        }
    }
}

impl Drop for GrpcService {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The node id [`crate::swarm::auth_layer`] authenticated the request as
/// (before its body was decoded); a request that did not pass through it is
/// refused, as is everything once the server stopped.
fn admit<T>(server: &ChunkServer, req: &Request<T>) -> Result<String, Status> {
    server.refuse_if_stopped()?;
    req.extensions()
        .get::<AuthenticatedPeer>()
        .map(|p| p.0.clone())
        .ok_or_else(|| Status::unauthenticated("peer authentication failed"))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChunkData, Status>> + Send>>;

#[tonic::async_trait]
impl PeerControl for ChunkServer {
    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let node = admit(self, &request)?;
        let peers = self.peers();
        peers.note_seen(&node);
        peers.note_leaving(&node, request.get_ref().leaving);
        let alive = peers
            .alive_ids()
            .into_iter()
            .map(|id| PeerInfo {
                control_addr: id.clone(),
                node_id: id,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(HelloResponse {
            node_id: peers.self_id().to_string(),
            peers: alive,
            leaving: peers.is_leaving(),
        }))
    }

    async fn have(&self, request: Request<HaveRequest>) -> Result<Response<HaveResponse>, Status> {
        admit(self, &request)?;
        Ok(Response::new(self.have(&request.into_inner().objects)))
    }

    type FetchChunkStream = ChunkStream;

    async fn fetch_chunk(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let node = admit(self, &request)?;
        let serving = self.locate(&node, request.into_inner()).await?;
        let stream = futures::stream::unfold(Some(serving), |state| async move {
            let mut serving = state?;
            match serving.next_segment().await {
                Ok(Segment::Data { offset, bytes }) => {
                    let frame = ChunkData {
                        chunk: (offset == 0).then(|| serving.id.clone()),
                        data: bytes,
                        crc64: 0,
                        offset,
                        last: false,
                    };
                    Some((Ok(frame), Some(serving)))
                }
                Ok(Segment::KeepAlive) => {
                    let frame = ChunkData {
                        offset: serving.sent(),
                        ..ChunkData::default()
                    };
                    Some((Ok(frame), Some(serving)))
                }
                Ok(Segment::End { crc }) => {
                    let frame = ChunkData {
                        offset: serving.sent(),
                        crc64: crc,
                        last: true,
                        ..ChunkData::default()
                    };
                    Some((Ok(frame), None))
                }
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

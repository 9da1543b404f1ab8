//! Authentication of gRPC requests before their bodies are decoded.
//!
//! Design decision: a tower layer in front of the whole PeerControl router.
//! For each request it reads the body (at most
//! [`ServeLimits::max_request_body_bytes`], within
//! [`ServeLimits::body_timeout`]), hashes it and checks the HMAC tag over
//! method path, time, nonce and that hash ([`super::auth`]). Only then is
//! the request, with its buffered body, passed to tonic, which decodes it;
//! the caller's authenticated node id travels as the
//! [`AuthenticatedPeer`] extension, which every handler requires. A refused
//! request gets UNAUTHENTICATED (or the size/time error) without its body
//! ever reaching the protobuf decoder, and a connection is only marked
//! active ([`ConnInfo::mark_authenticated`]) by a request that passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TlsConnectInfo;
use tonic::Status;

use super::admission::{ConnInfo, ServeLimits};
use super::auth::body_digest;
use super::chunk_server::ChunkServer;

/// The node id a request was authenticated as (a request extension).
#[derive(Debug, Clone)]
pub struct AuthenticatedPeer(pub String);

/// Wraps the PeerControl router with [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    server: Arc<ChunkServer>,
    limits: ServeLimits,
}

impl AuthLayer {
    pub fn new(server: Arc<ChunkServer>, limits: ServeLimits) -> AuthLayer {
        AuthLayer { server, limits }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            server: self.server.clone(),
            limits: self.limits,
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    server: Arc<ChunkServer>,
    limits: ServeLimits,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower_service::Service<http::Request<Body>> for AuthService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let server = self.server.clone();
        let limits = self.limits;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let conn = parts.extensions.get::<ConnInfo>().cloned().or_else(|| {
                parts
                    .extensions
                    .get::<TlsConnectInfo<ConnInfo>>()
                    .map(|t| t.get_ref().clone())
            });
            let remote = conn.as_ref().map(|c| c.remote);
            let collected = tokio::time::timeout(
                limits.body_timeout,
                Limited::new(body, limits.max_request_body_bytes).collect(),
            )
            .await;
            let bytes = match collected {
                Ok(Ok(c)) => c.to_bytes(),
                Ok(Err(e)) => {
                    tracing::debug!(remote = ?remote, error = %e, "peer request body refused");
                    return Ok(
                        Status::resource_exhausted("request body too large or broken").into_http(),
                    );
                }
                Err(_) => {
                    return Ok(
                        Status::deadline_exceeded("request body not received in time").into_http(),
                    )
                }
            };
            let md = MetadataMap::from_headers(parts.headers.clone());
            let method = parts.uri.path().to_string();
            match server.admit_metadata(&md, remote, &method, &body_digest(&bytes)) {
                Ok(node) => {
                    if let Some(c) = &conn {
                        c.mark_authenticated();
                    }
                    parts.extensions.insert(AuthenticatedPeer(node));
                }
                Err(status) => return Ok(status.into_http()),
            }
            let req = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
            inner.call(req).await
        })
    }
}

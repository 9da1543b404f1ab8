//! The store's HTTP control plane: `GET /_ossc/stats`, `POST /_ossc/reset`,
//! `GET|PUT /_ossc/faults`.
//!
//! Design decision: when the store has credentials, control requests are
//! authenticated like a path-style request to bucket [`CONTROL_BUCKET`] (any
//! signing scheme; the router does it before calling [`control`]), because a
//! fault config can make the store rewrite a file on disk. Control requests
//! are never faulted and never counted.

use std::sync::Arc;

use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::config::FaultConfig;
use super::handler::{empty, full, RespBody};
use super::{ApiError, State};

/// The bucket name control-plane requests are signed for.
pub(crate) const CONTROL_BUCKET: &str = "_ossc";
/// Largest control-plane request body (a JSON `FaultConfig`).
const MAX_CONTROL_BODY: usize = 64 << 10;

/// Serves one (already authenticated) control request for `path`.
pub(crate) async fn control(
    state: &Arc<State>,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<RespBody>, ApiError> {
    let json = |v: String| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(v))
            .expect("valid response")
    };
    match (req.method().clone(), path) {
        (Method::GET, "/_ossc/stats") => Ok(json(
            serde_json::to_string(&state.counters.snapshot()).expect("stats serialize"),
        )),
        (Method::POST, "/_ossc/reset") => {
            state.counters.reset();
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(empty())
                .expect("valid response"))
        }
        (Method::GET, "/_ossc/faults") => Ok(json(
            serde_json::to_string(state.faults().config()).expect("faults serialize"),
        )),
        (Method::PUT, "/_ossc/faults") => {
            let body = Limited::new(req.into_body(), MAX_CONTROL_BODY)
                .collect()
                .await
                .map_err(|e| ApiError::invalid_argument(format!("reading body: {e}")))?
                .to_bytes();
            let config: FaultConfig = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid_argument(format!("FaultConfig JSON: {e}")))?;
            state
                .try_set_faults(config.clone())
                .map_err(ApiError::invalid_argument)?;
            Ok(json(
                serde_json::to_string(&config).expect("faults serialize"),
            ))
        }
        (_, "/_ossc/stats" | "/_ossc/reset" | "/_ossc/faults") => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchControl",
            format!("no control endpoint {path}"),
        )),
    }
}

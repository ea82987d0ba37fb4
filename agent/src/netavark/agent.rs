//! The agent's side of the netavark front end: `POST /netavark/setup` and
//! `POST /netavark/teardown` on the API socket, body a [`Call`], answer the
//! status blocks (setup), nothing (teardown) or a [`Failure`].
use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};

use super::{Call, Failure};
use crate::daemon::Daemon;

/// The answer when the shim runs in another network namespace than the
/// agent: it then works without the agent.
pub const OTHER_NAMESPACE: StatusCode = StatusCode::MISDIRECTED_REQUEST;

async fn verb(
    State(d): State<Arc<Daemon>>,
    UrlPath(verb): UrlPath<String>,
    body: Bytes,
) -> Response {
    let call: Call = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(Failure::new(format!("malformed netavark request: {e}"))),
            )
                .into_response();
        }
    };
    let ours = super::netns_inode(std::path::Path::new("/proc/self/ns/net")).unwrap_or(0);
    if call.host_netns != ours {
        return (
            OTHER_NAMESPACE,
            Json(Failure::new(
                "the pier agent runs in another network namespace",
            )),
        )
            .into_response();
    }
    tracing::debug!("netavark: {verb} {call:?}");
    let res = tokio::task::spawn_blocking(move || match verb.as_str() {
        "setup" => super::setup(&d, &call).map(Some),
        "teardown" => super::teardown(&d, &call).map(|()| None),
        v => Err(Failure::new(format!("unknown netavark command {v:?}"))),
    })
    .await
    .unwrap_or_else(|e| Err(Failure::new(format!("task: {e}"))));
    match res {
        Ok(Some(s)) => (StatusCode::OK, Json(s)).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => {
            tracing::info!("netavark: {f}");
            (StatusCode::BAD_REQUEST, Json(f)).into_response()
        }
    }
}

/// The routes, nested at `/netavark` by the API server.
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new().route("/{verb}", post(verb))
}

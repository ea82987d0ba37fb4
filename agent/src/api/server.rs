//! The API server: axum on a unix socket. Handlers run the daemon's blocking
//! operations on the blocking pool.
use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde_json::{Value, json};

use super::types::*;
use crate::{daemon::Daemon, error::AgentError};

pub struct ApiError(AgentError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                message: self.0.to_string(),
                exit_code: self.0.exit_code(),
            }),
        )
            .into_response()
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        ApiError(e)
    }
}

type ApiResult<T> = Result<T, ApiError>;
type D = State<Arc<Daemon>>;
type Q = Query<HashMap<String, String>>;

async fn blocking<T: Send + 'static>(
    d: Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, AgentError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| ApiError(AgentError::Internal(format!("task: {e}"))))?
        .map_err(ApiError)
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("1" | "true"))
}

async fn networks_list(State(d): D) -> Json<Vec<NetworkSummary>> {
    Json(d.list_networks())
}

async fn network_create(State(d): D, Json(req): Json<NetworkCreate>) -> ApiResult<Response> {
    let id = blocking(d, move |d| d.network_create(req)).await?;
    Ok((StatusCode::CREATED, Json(NetworkCreated { id })).into_response())
}

async fn network_inspect(State(d): D, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(d.inspect_network(&name)?))
}

async fn network_rm(State(d): D, Path(name): Path<String>) -> ApiResult<StatusCode> {
    blocking(d, move |d| d.network_rm(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn network_prune(State(d): D) -> ApiResult<Json<Pruned>> {
    let networks_deleted = blocking(d, |d| d.network_prune()).await?;
    Ok(Json(Pruned { networks_deleted }))
}

async fn network_connect(
    State(d): D,
    Path(name): Path<String>,
    Json(req): Json<NetworkConnect>,
) -> ApiResult<StatusCode> {
    blocking(d, move |d| d.network_connect(&name, req)).await?;
    Ok(StatusCode::OK)
}

async fn network_disconnect(
    State(d): D,
    Path(name): Path<String>,
    Json(req): Json<NetworkDisconnect>,
) -> ApiResult<StatusCode> {
    blocking(d, move |d| {
        d.network_disconnect(&name, &req.container, req.force)
    })
    .await?;
    Ok(StatusCode::OK)
}

async fn containers_list(State(d): D, Query(q): Q) -> Json<Vec<ContainerSummary>> {
    let all = flag(&q, "all");
    Json(
        tokio::task::spawn_blocking(move || d.list_containers(all))
            .await
            .unwrap_or_default(),
    )
}

async fn container_create(State(d): D, Json(req): Json<ContainerCreate>) -> ApiResult<Response> {
    let (id, warnings) = blocking(d, move |d| d.container_create(req)).await?;
    Ok((StatusCode::CREATED, Json(ContainerCreated { id, warnings })).into_response())
}

async fn container_inspect(State(d): D, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(
        blocking(d, move |d| d.inspect_container(&name)).await?,
    ))
}

async fn container_rm(State(d): D, Path(name): Path<String>, Query(q): Q) -> ApiResult<StatusCode> {
    let force = flag(&q, "force");
    blocking(d, move |d| d.container_rm(&name, force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn container_stop(State(d): D, Path(name): Path<String>) -> ApiResult<StatusCode> {
    blocking(d, move |d| d.container_stop(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn container_start(State(d): D, Path(name): Path<String>) -> ApiResult<StatusCode> {
    blocking(d, move |d| d.container_start(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn container_logs(State(d): D, Path(name): Path<String>) -> ApiResult<Vec<u8>> {
    blocking(d, move |d| d.container_logs(&name)).await
}

async fn container_port(
    State(d): D,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<PortMapping>>> {
    Ok(Json(d.container_ports(&name)?))
}

async fn stats_ports(State(d): D) -> ApiResult<Json<Vec<PortStatsRow>>> {
    Ok(Json(blocking(d, |d| d.port_stats()).await?))
}

async fn system_reset(
    State(d): D,
    axum::Extension(shutdown): axum::Extension<Arc<tokio::sync::Notify>>,
) -> ApiResult<Json<Value>> {
    blocking(d, |d| d.system_reset()).await?;
    // The agent exits once the answer is out: nothing of it is left.
    shutdown.notify_one();
    Ok(Json(
        json!({"message": "everything pier made was removed; the agent stops"}),
    ))
}

async fn ping() -> &'static str {
    "OK"
}

pub fn router(d: Arc<Daemon>, shutdown: Arc<tokio::sync::Notify>) -> Router {
    Router::new()
        .route("/_ping", get(ping))
        .route("/networks", get(networks_list))
        .route("/networks/create", post(network_create))
        .route("/networks/prune", post(network_prune))
        .route("/networks/{name}", get(network_inspect).delete(network_rm))
        .route("/networks/{name}/connect", post(network_connect))
        .route("/networks/{name}/disconnect", post(network_disconnect))
        .route("/containers/json", get(containers_list))
        .route("/containers/create", post(container_create))
        .route("/containers/{name}/json", get(container_inspect))
        .route("/containers/{name}", delete(container_rm))
        .route("/containers/{name}/stop", post(container_stop))
        .route("/containers/{name}/start", post(container_start))
        .route("/containers/{name}/logs", get(container_logs))
        .route("/containers/{name}/port", get(container_port))
        .route("/stats/ports", get(stats_ports))
        .route("/system/reset", post(system_reset))
        .nest("/cni", crate::cni::agent::routes())
        .layer(axum::Extension(shutdown))
        .with_state(d)
}

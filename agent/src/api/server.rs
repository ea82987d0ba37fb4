//! The API server: axum on a unix socket. Handlers run the daemon's blocking
//! operations on the blocking pool.
use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde_json::{Value, json};

use super::{compat, types::*};
use crate::{
    daemon::Daemon,
    error::{AgentError, invalid},
};

pub struct ApiError(pub AgentError);

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

pub(crate) async fn blocking<T: Send + 'static>(
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

/// `GET /networks[?filters=…]`: Docker's whole network objects.
async fn networks_list(State(d): D, Query(q): Q) -> ApiResult<Json<Vec<Value>>> {
    let f = compat::parse_filters(
        q.get("filters").map(String::as_str),
        compat::NETWORK_FILTERS,
    )?;
    Ok(Json(d.list_networks_json(&f)?))
}

async fn network_create(State(d): D, body: Bytes) -> ApiResult<Response> {
    let req = compat::network_create(compat::parse_body::<NetworkCreateBody>(&body)?)?;
    let id = blocking(d, move |d| d.network_create(req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreatedBody {
            id,
            warning: String::new(),
        }),
    )
        .into_response())
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
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req = compat::network_connect(compat::parse_body::<NetworkConnectBody>(&body)?)?;
    blocking(d, move |d| d.network_connect(&name, req)).await?;
    Ok(StatusCode::OK)
}

async fn network_disconnect(
    State(d): D,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: NetworkDisconnect = compat::parse_body(&body)?;
    blocking(d, move |d| {
        d.network_disconnect(&name, &req.container, req.force)
    })
    .await?;
    Ok(StatusCode::OK)
}

async fn containers_list(State(d): D, Query(q): Q) -> ApiResult<Json<Vec<ContainerListEntry>>> {
    let all = flag(&q, "all");
    let f = compat::parse_filters(
        q.get("filters").map(String::as_str),
        compat::CONTAINER_FILTERS,
    )?;
    Ok(Json(
        blocking(d, move |d| d.list_containers_filtered(all, &f)).await?,
    ))
}

/// `POST /containers/create[?name=]`: pier's body (strict). Docker's, with
/// an `Image`, is refused with what pier does instead.
async fn container_create(State(d): D, Query(q): Q, body: Bytes) -> ApiResult<Response> {
    if let Ok(v) = serde_json::from_slice::<Value>(&body)
        && v.get("Image")
            .and_then(Value::as_str)
            .is_some_and(|i| !i.is_empty())
    {
        return Err(ApiError(invalid(format!(
            "pier runs no images ({}): it networks namespaces and the commands run in them; use `pier run [OPTIONS] -- COMMAND`, or run images with Docker and `docker network create -d pier`",
            v["Image"].as_str().unwrap_or_default()
        ))));
    }
    let mut req: ContainerCreate = compat::parse_body(&body)?;
    if let Some(n) = q.get("name").filter(|n| !n.is_empty()) {
        match &req.name {
            Some(b) if b != n => {
                return Err(ApiError(invalid(format!(
                    "name {n:?} in the query and Name {b:?} in the body differ"
                ))));
            }
            _ => req.name = Some(n.clone()),
        }
    }
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

async fn container_restart(State(d): D, Path(name): Path<String>) -> ApiResult<StatusCode> {
    blocking(d, move |d| d.container_restart(&name)).await?;
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

async fn policies_list(State(d): D) -> ApiResult<Json<Vec<PolicyRow>>> {
    Ok(Json(d.policy_list()))
}

async fn policy_create(State(d): D, body: Bytes) -> ApiResult<Response> {
    let req: PolicyCreate = compat::parse_body(&body)?;
    let ids = blocking(d, move |d| d.policy_create(req)).await?;
    Ok((StatusCode::CREATED, Json(json!({"Ids": ids}))).into_response())
}

async fn policy_rm(State(d): D, Path(id): Path<String>) -> ApiResult<StatusCode> {
    blocking(d, move |d| d.policy_rm(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policies_prune(State(d): D) -> ApiResult<Json<PoliciesDeleted>> {
    let deleted = blocking(d, |d| d.policy_prune()).await?;
    Ok(Json(PoliciesDeleted { deleted }))
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

/// Docker's `/_ping`: the API version in the headers (the docker CLI
/// negotiates with it).
async fn ping() -> Response {
    (
        [
            ("Api-Version", compat::API_VERSION),
            ("Docker-Experimental", "false"),
            ("OSType", "linux"),
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"),
        ],
        "OK",
    )
        .into_response()
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn version() -> Json<Value> {
    let v = env!("CARGO_PKG_VERSION");
    Json(json!({
        "Platform": {"Name": "pier"},
        "Components": [{"Name": "pier", "Version": v, "Details": {"ApiVersion": compat::API_VERSION}}],
        "Version": v,
        "ApiVersion": compat::API_VERSION,
        "MinAPIVersion": compat::MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
}

async fn info(State(d): D) -> Json<Value> {
    let st = d.snapshot();
    let running = d
        .list_containers(true)
        .iter()
        .filter(|c| c.state == "running")
        .count();
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    Json(json!({
        "ID": "",
        "Name": host,
        "Containers": st.containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": st.containers.len() - running,
        "Images": 0,
        "Driver": "none",
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "OperatingSystem": "pier",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": kernel_version(),
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "Plugins": {"Network": ["bridge", "host", "null"], "Volume": [], "Log": []},
        "SecurityOptions": [],
        "Warnings": [],
    }))
}

pub fn router(d: Arc<Daemon>, shutdown: Arc<tokio::sync::Notify>) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
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
        .route("/containers/{name}/restart", post(container_restart))
        .route("/containers/{name}/logs", get(container_logs))
        .route("/containers/{name}/port", get(container_port))
        .route("/stats/ports", get(stats_ports))
        .route("/stats", get(super::observe::stats))
        .route("/monitor", get(super::observe::monitor))
        .route("/graph", get(super::observe::graph))
        .route("/policies", get(policies_list))
        .route("/policies/create", post(policy_create))
        .route("/policies/prune", post(policies_prune))
        .route("/policies/{id}", delete(policy_rm))
        .route("/system/reset", post(system_reset))
        .route("/_version_error", axum::routing::any(version_error))
        .nest("/cni", crate::cni::agent::routes())
        .nest("/netavark", crate::netavark::agent::routes())
        .route_layer(axum::middleware::from_fn(
            crate::observe::metrics::track_api,
        ))
        .layer(axum::Extension(shutdown))
        .with_state(d)
}

/// Docker's versioned paths (wraps the router: it runs before routing):
/// `/v1.44/networks` is `/networks`; a version outside 1.24–1.44 is
/// answered with Docker's error.
pub fn rewrite_version(mut req: axum::extract::Request) -> axum::extract::Request {
    let path = req.uri().path().to_string();
    match compat::strip_version(&path) {
        Ok(Some(tail)) => {
            let pq = match req.uri().query() {
                Some(q) => format!("{tail}?{q}"),
                None => tail.to_string(),
            };
            if let Ok(uri) = pq.parse() {
                *req.uri_mut() = uri;
            }
        }
        Ok(None) => {}
        Err(msg) => {
            req.extensions_mut().insert(VersionError(msg));
            if let Ok(uri) = "/_version_error".parse() {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

#[derive(Clone)]
struct VersionError(String);

async fn version_error(req: axum::extract::Request) -> ApiResult<()> {
    let msg = req
        .extensions()
        .get::<VersionError>()
        .map(|v| v.0.clone())
        .unwrap_or_else(|| "page not found".into());
    Err(ApiError(invalid(msg)))
}

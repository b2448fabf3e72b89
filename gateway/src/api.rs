//! The dask-gateway REST API (`/api/...`), status codes and bodies as the
//! Python server gives them: the client maps 404/422 to ValueError, 409 to
//! GatewayClusterError and reads `{"error": ...}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::Gateway;
use crate::auth::{AuthError, User};
use crate::backend::{BackendError, Created};
use crate::limits::{self, Clamped};
use crate::models::{Cluster, ClusterStatus, Heartbeat};

/// An error answer: a status and the `{"error": ...}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), challenge: None }
    }
    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    fn unauthorized(challenge: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "Authentication required".into(),
            challenge: Some(challenge),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(scheme) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        response
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            BackendError::NotRunning(_) | BackendError::LimitReached(_) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            BackendError::Refused { status, ref message } => Self::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                message.clone(),
            ),
            BackendError::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            BackendError::Other(e) => {
                // The details (the store's own words) are for the operator's log.
                warn!(error = %e, "backend error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the gateway's log",
                )
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn routes(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    let user_routes = Router::new()
        .route("/api/v1/options", get(options))
        .route("/api/v1/clusters/", get(list_clusters).post(create_cluster))
        .route("/api/v1/clusters", get(list_clusters).post(create_cluster))
        .route("/api/v1/clusters/{name}", get(get_cluster))
        .route("/api/v1/clusters/{name}/scale", post(scale))
        .route("/api/v1/clusters/{name}/adapt", post(adapt))
        .route_layer(middleware::from_fn_with_state(gateway, authenticate));
    Router::new()
        .route("/api/version", get(version))
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .merge(scheduler_routes())
        .merge(user_routes)
}

/// What schedulers call with their cluster token: heartbeats, and DELETE
/// on their idle timeout (users may DELETE too). Also served alone on the
/// heartbeat listener.
pub fn scheduler_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/api/v1/clusters/{name}", axum::routing::delete(delete_cluster))
        .route("/api/v1/clusters/{name}/heartbeat", post(heartbeat))
}

/// Puts the caller's [`User`] in the request, or answers 401 with the
/// challenge that makes the client send its credentials.
async fn authenticate(
    State(gw): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let (user, cookie) = match login(&gw, request.headers()).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(user);
    let mut response = next.run(request).await;
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub(crate) async fn login(gw: &Gateway, headers: &HeaderMap) -> ApiResult<(User, Option<String>)> {
    gw.auth.authenticate(headers).await.map_err(|e| match e {
        AuthError::Required | AuthError::Failed => ApiError::unauthorized(gw.auth.challenge()),
        AuthError::HubUnreachable(m) => ApiError::new(StatusCode::BAD_GATEWAY, m),
        AuthError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        AuthError::HubRateLimited => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, AuthError::HubRateLimited.to_string())
        }
        // An answer the gateway does not understand: the Hub is not usable now.
        AuthError::Hub(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
    })
}

async fn version() -> Json<Value> {
    // The protocol version this server speaks, as the client compares it.
    Json(json!({ "version": crate::PROTOCOL_VERSION }))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "pass" }))
}

async fn options(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    Json(gw.options.to_json())
}

/// Parses a JSON body; a malformed one is a 422 that says what is wrong.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable(format!("Invalid JSON body: {e}")))
}

/// The cluster, if the caller may act on it ("view" or "stop" in messages).
async fn owned_cluster(gw: &Gateway, user: &User, name: &str, verb: &str) -> ApiResult<Cluster> {
    let cluster = gw.backend.get(name).await.ok_or_else(|| BackendError::NotFound(name.into()))?;
    if !user.may_access(&cluster.username) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("User {} lacks permissions to {verb} cluster {name}", user.name),
        ));
    }
    Ok(cluster)
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_clusters(
    State(gw): State<Arc<Gateway>>,
    Extension(user): Extension<User>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let wanted: Option<Vec<ClusterStatus>> = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(list) => Some(
            list.split(',')
                .map(ClusterStatus::parse)
                .collect::<Result<_, _>>()
                .map_err(ApiError::unprocessable)?,
        ),
        None => None,
    };
    let clusters: Map<String, Value> = gw
        .backend
        .list()
        .await
        .into_iter()
        .filter(|c| user.may_access(&c.username))
        .filter(|c| match &wanted {
            Some(statuses) => statuses.contains(&c.status),
            None => c.status.is_active(),
        })
        .map(|c| (c.name.clone(), c.to_json()))
        .collect();
    Ok(Json(Value::Object(clusters)))
}

async fn create_cluster(
    State(gw): State<Arc<Gateway>>,
    Extension(user): Extension<User>,
    body: Bytes,
) -> ApiResult<Response> {
    // An object or nothing, as the Python server: `"x"` or `[1, 2]` is no request.
    let request: Map<String, Value> = if body.is_empty() { Map::new() } else { parse_body(&body)? };
    let requested = match request.get("cluster_options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(options)) => options.clone(),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "cluster_options must be an object, got {other}"
            )));
        }
    };
    let (options, config) =
        gw.options.resolve(&requested, &gw.defaults).map_err(ApiError::unprocessable)?;
    let mine: Vec<Cluster> = gw
        .backend
        .list()
        .await
        .into_iter()
        .filter(|c| c.username == user.name && c.status.is_active())
        .collect();
    limits::check_new_cluster(&gw.limits, &user.name, &mine)
        .map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;

    let cluster = Cluster::fresh(&user.name, options, config)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let Created { name, source } = gw.backend.create(cluster, gw.limits.user_max_clusters).await?;
    gw.metrics.cluster_started(source);
    info!(cluster = %name, user = %user.name, source = source.label(), "cluster created");
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))).into_response())
}

#[derive(Deserialize)]
struct GetQuery {
    wait: Option<String>,
}

/// `?wait`, `?wait=` or a non-zero integer: wait; `?wait=0` or absent: don't.
fn wants_wait(wait: Option<&str>) -> bool {
    match wait {
        None => false,
        Some("") => true,
        Some(v) => v.parse::<i64>().map(|n| n != 0).unwrap_or(true),
    }
}

async fn get_cluster(
    State(gw): State<Arc<Gateway>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
    Query(q): Query<GetQuery>,
) -> ApiResult<Json<Value>> {
    let mut cluster = owned_cluster(&gw, &user, &name, "view").await?;
    if wants_wait(q.wait.as_deref()) {
        // Long poll: up to 20 s for the cluster to leave PENDING.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut changes = gw.backend.changes();
        while cluster.status == ClusterStatus::Pending {
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                break;
            }
            match gw.backend.get(&name).await {
                Some(c) => cluster = c,
                None => break,
            }
        }
    }
    Ok(Json(cluster.to_json()))
}

/// The cluster's token, from `Authorization: token <t>`, compared in constant time.
fn has_cluster_token(headers: &HeaderMap, cluster: &Cluster) -> bool {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "));
    // A failed cluster's record keeps no token: an empty one matches nothing.
    !cluster.token.is_empty()
        && sent.is_some_and(|t| bool::from(t.trim().as_bytes().ct_eq(cluster.token.as_bytes())))
}

async fn delete_cluster(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let cluster = gw.backend.get(&name).await;
    if let Some(cluster) = &cluster
        && has_cluster_token(&headers, cluster)
    {
        info!(cluster = %name, "cluster stopped by its scheduler (idle timeout)");
        gw.backend.stop(&name).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (user, cookie) = login(&gw, &headers).await?;
    if let Some(cluster) = cluster {
        if !user.may_access(&cluster.username) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("User {} lacks permissions to stop cluster {name}", user.name),
            ));
        }
        if cluster.status.is_active() {
            info!(cluster = %name, user = %user.name, "cluster stop requested");
        }
        gw.backend.stop(&name).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// A count in a request: a non-negative integer, or `None` for null.
fn count(value: Option<&Value>, what: &str) -> ApiResult<Option<u32>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= u32::MAX as u64 => Ok(Some(n as u32)),
            _ => Err(ApiError::unprocessable(format!(
                "{what} expects a non-negative integer, got {v}"
            ))),
        },
    }
}

async fn running_cluster(gw: &Gateway, user: &User, name: &str) -> ApiResult<Cluster> {
    let cluster = owned_cluster(gw, user, name, "scale").await?;
    if cluster.status != ClusterStatus::Running || cluster.addresses.is_none() {
        return Err(BackendError::NotRunning(name.into()).into());
    }
    Ok(cluster)
}

/// Sends an order to the scheduler; one that cannot be delivered fails the cluster.
async fn order(gw: &Gateway, cluster: &Cluster, order: Value) -> ApiResult<()> {
    let api = &cluster.addresses.as_ref().expect("a running cluster has addresses").api;
    if let Err(reason) = gw.scheduler.send(api, &cluster.token, &order).await {
        warn!(cluster = %cluster.name, %reason, "the scheduler did not take an order; marking the cluster failed");
        gw.backend.fail(&cluster.name, &reason).await;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("cluster {} is not running", cluster.name),
        ));
    }
    Ok(())
}

async fn scale(
    State(gw): State<Arc<Gateway>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: Map<String, Value> = parse_body(&body)?;
    let n = count(request.get("count"), "Scale")?
        .ok_or_else(|| ApiError::unprocessable("Scale expects a non-negative integer, got null"))?;
    let cluster = running_cluster(&gw, &user, &name).await?;
    let others = others_of(&gw, &cluster).await;
    let Clamped { value, message } = limits::clamp_scale(&gw.limits, &cluster, &others, n);
    order(&gw, &cluster, json!({ "op": "scale", "count": value })).await?;
    info!(cluster = %name, workers = value, "scaled");
    Ok(Json(json!({ "ok": message.is_none(), "msg": message })))
}

async fn adapt(
    State(gw): State<Arc<Gateway>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: Map<String, Value> = parse_body(&body)?;
    let minimum = count(request.get("minimum"), "Adapt minimum")?;
    let maximum = count(request.get("maximum"), "Adapt maximum")?;
    let active = match request.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::unprocessable(format!("active must be a boolean, got {v}")));
        }
    };
    if let (Some(min), Some(max)) = (minimum, maximum)
        && min > max
    {
        return Err(ApiError::unprocessable(format!(
            "minimum ({min}) must be no more than maximum ({max})"
        )));
    }
    let cluster = running_cluster(&gw, &user, &name).await?;
    let others = others_of(&gw, &cluster).await;
    let (minimum, maximum, message) =
        limits::clamp_adapt(&gw.limits, &cluster, &others, minimum, maximum);
    order(
        &gw,
        &cluster,
        json!({ "op": "adapt", "minimum": minimum, "maximum": maximum, "active": active }),
    )
    .await?;
    Ok(Json(json!({ "ok": message.is_none(), "msg": message })))
}

/// The owner's other active clusters, for the per-user limits.
async fn others_of(gw: &Gateway, cluster: &Cluster) -> Vec<Cluster> {
    gw.backend
        .list()
        .await
        .into_iter()
        .filter(|c| {
            c.username == cluster.username && c.name != cluster.name && c.status.is_active()
        })
        .collect()
}

async fn heartbeat(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let unauthorized = || ApiError {
        challenge: Some("token"),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "Authentication required")
    };
    let cluster = gw.backend.for_scheduler(&name).await.ok_or_else(unauthorized)?;
    if !has_cluster_token(&headers, &cluster) {
        return Err(unauthorized());
    }
    // A stopped or failed cluster's scheduler may still be running user
    // code: it gets no say over workers any more.
    if !cluster.status.is_active() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("cluster {name} is {}: heartbeat refused", cluster.status.name()),
        ));
    }
    let mut beat: Heartbeat = parse_body(&body)?;
    let others = others_of(&gw, &cluster).await;
    let count = limits::clamp_heartbeat(&gw.limits, &cluster, &others, beat.count);
    if i64::from(count) != beat.count {
        warn!(cluster = %name, asked = beat.count, allowed = count, "heartbeat count clamped to the limits");
    }
    beat.count = i64::from(count);
    gw.backend.heartbeat(&name, beat).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wait_flag_follows_the_python_server() {
        use super::wants_wait;
        assert!(wants_wait(Some("")) && wants_wait(Some("1")) && wants_wait(Some("true")));
        assert!(!wants_wait(None) && !wants_wait(Some("0")));
    }
}

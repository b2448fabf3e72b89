//! The dask-gateway REST API (`/api/...`), status codes and bodies as the
//! Python server gives them: the client maps 404/422 to ValueError, 409 to
//! GatewayClusterError and reads `{"error": ...}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::bodies::{AdaptRequest, Body, CreateRequest, ScaleRequest};
use super::errors::{ApiError, ApiResult};
use super::extract::{Caller, ClusterCaller, JsonBody, Login};
use super::logs;
use super::owned::{active_clusters_of, may_act_on, owned_cluster};
use crate::auth::User;
use crate::backends::{BackendError, Created};
use crate::domain::forgotten;
use crate::domain::limits::{self, Clamped};
use crate::domain::models::{Cluster, ClusterStatus, Heartbeat, now_ms};
use crate::domain::policy::Policy;
use crate::http::state::Gateway;

/// The dask-gateway protocol version reported at `/api/version`.
pub const PROTOCOL_VERSION: &str = "2026.3.0";

pub fn routes(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    let user_routes = Router::new()
        .route("/api/v1/options", get(options))
        .route("/api/v1/clusters/", get(list_clusters).post(create_cluster))
        .route("/api/v1/clusters", get(list_clusters).post(create_cluster))
        .route("/api/v1/clusters/{name}", get(get_cluster))
        .route("/api/v1/clusters/{name}/scale", post(scale))
        .route("/api/v1/clusters/{name}/adapt", post(adapt))
        .route("/api/v1/clusters/{name}/logs", get(logs::cluster_logs))
        .route_layer(middleware::from_fn_with_state(gateway, authenticate));
    Router::new()
        .route("/api/version", get(version))
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(|| async { Json(crate::http::openapi::document()) }))
        .route("/api/v1/clusters/{name}", axum::routing::delete(delete_cluster))
        .route("/api/v1/clusters/{name}/heartbeat", post(heartbeat))
        .merge(user_routes)
}

/// The heartbeat listener's routes: what schedulers call with their cluster
/// token alone (heartbeats, DELETE on their idle timeout). No user logins
/// there: the pods that reach it run user code, which must not be able to
/// spend the password checks the public port needs.
pub fn scheduler_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/api/v1/clusters/{name}", axum::routing::delete(stop_by_scheduler))
        .route("/api/v1/clusters/{name}/heartbeat", post(heartbeat))
}

/// Puts the caller's [`User`] in the request (and its session cookie in
/// the answer), or answers 401 with the challenge that makes the client send
/// its credentials.
async fn authenticate(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let Login { user, cookie } = match Login::from_request_parts(&mut parts, &gw).await {
        Ok(login) => login,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(user);
    (cookie, next.run(Request::from_parts(parts, body)).await).into_response()
}

async fn version() -> Json<Value> {
    // The protocol version this server speaks, as the client compares it.
    Json(json!({ "version": PROTOCOL_VERSION }))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "pass" }))
}

/// The options the caller is offered: only the profiles their groups allow.
async fn options(State(gw): State<Arc<Gateway>>, Login { user, .. }: Login) -> Response {
    let json = match policy_of(&gw, &user).profiles {
        None => gw.all_options_json.clone(),
        Some(allowed) => gw.options.with_profiles(Some(&allowed)).to_json().to_string().into(),
    };
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// The caller's policy, from their groups.
fn policy_of(gw: &Gateway, user: &User) -> Policy {
    gw.policies.for_groups(&user.groups)
}

/// A cluster owner's policy: the limits of scale, adapt and heartbeats
/// are the owner's, whoever asks (an admin, the scheduler).
fn owner_policy(gw: &Gateway, caller: Option<&User>, owner: &str) -> Policy {
    match caller {
        Some(user) if user.name == owner => policy_of(gw, user),
        _ => gw.policies.for_known(gw.auth.groups_of(owner).as_deref()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_clusters(
    State(gw): State<Arc<Gateway>>,
    Login { user, .. }: Login,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let wanted: Option<Vec<ClusterStatus>> = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(list) => Some(
            list.split(',')
                .map(ClusterStatus::parse)
                .collect::<Result<_, _>>()
                .map_err(ApiError::Unprocessable)?,
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
    Login { user, .. }: Login,
    body: Option<Body<CreateRequest>>,
) -> ApiResult<Response> {
    let requested = body.map(|Body(request)| request).unwrap_or_default().cluster_options;
    let policy = policy_of(&gw, &user);
    if let Some(Value::String(profile)) = requested.get("profile")
        && gw.options.has_profile(profile)
        && !policy.allows_profile(profile)
    {
        return Err(ApiError::Unprocessable(format!(
            "Profile '{profile}' is not allowed for user {} (see the profiles of their groups)",
            user.name
        )));
    }
    let spec = gw.options.with_profiles(policy.profiles.as_deref());
    if !spec.has_profiles() {
        return Err(ApiError::Forbidden(format!("User {} may use no profile", user.name)));
    }
    let (options, config) =
        spec.resolve(&requested, &gw.defaults).map_err(ApiError::Unprocessable)?;
    let mine = active_clusters_of(&gw, &user.name).await;
    limits::check_new_cluster(&policy.limits, &user.name, &mine).map_err(ApiError::Conflict)?;

    let cluster = Cluster::fresh(&user.name, options, config).map_err(ApiError::Internal)?;
    let Created { name, source } =
        gw.backend.create(cluster, policy.limits.user_max_clusters).await?;
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
    Login { user, .. }: Login,
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
        // What the client's wait for a start ends with: its 409 becomes the
        // user's GatewayClusterError, with the reason (a FAILED report would
        // only say "see logs"). Without `?wait` it stays a FAILED report.
        if cluster.status == ClusterStatus::Failed {
            return Err(ApiError::Conflict(failure_message(&cluster)));
        }
    }
    Ok(Json(cluster.to_json()))
}

/// What a user waiting for `cluster` is told of its failure.
fn failure_message(cluster: &Cluster) -> String {
    match &cluster.reason {
        Some(reason) => format!("Cluster '{}' failed to start: {reason}", cluster.name),
        None => format!("Cluster '{}' failed to start; no reason is known", cluster.name),
    }
}

/// DELETE from a cluster's own scheduler (its idle timeout), by its token.
async fn stop_by_scheduler(
    State(gw): State<Arc<Gateway>>,
    ClusterCaller(cluster): ClusterCaller,
) -> ApiResult<Response> {
    info!(cluster = %cluster.name, "cluster stopped by its scheduler (idle timeout)");
    let why = format!("idle for cluster.idle_timeout = {} s", cluster.config.idle_timeout);
    gw.backend.stop(&cluster.name, Some(&why)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_cluster(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    caller: Caller,
) -> ApiResult<Response> {
    let login = match caller {
        Caller::Scheduler(scheduler) => return stop_by_scheduler(State(gw), *scheduler).await,
        Caller::User(login) => login,
    };
    if let Some(cluster) = gw.backend.get(&name).await {
        let user = &login.user;
        may_act_on(user, &cluster, "stop")?;
        if cluster.status.is_active() {
            info!(cluster = %name, user = %user.name, "cluster stop requested");
        }
        // An admin stopping another's cluster says so on it.
        let by_admin = (user.name != cluster.username).then(|| format!("stopped by {}", user.name));
        gw.backend.stop(&name, by_admin.as_deref()).await?;
    }
    Ok((login.cookie, StatusCode::NO_CONTENT).into_response())
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
        return Err(BackendError::NotRunning(cluster.name.clone()).into());
    }
    Ok(())
}

async fn scale(
    State(gw): State<Arc<Gateway>>,
    Login { user, .. }: Login,
    Path(name): Path<String>,
    Body(ScaleRequest { count: n }): Body<ScaleRequest>,
) -> ApiResult<Json<Value>> {
    let cluster = running_cluster(&gw, &user, &name).await?;
    let others = others_of(&gw, &cluster).await;
    let policy = owner_policy(&gw, Some(&user), &cluster.username);
    let Clamped { value, message } = limits::clamp_scale(&policy.limits, &cluster, &others, n);
    order(&gw, &cluster, json!({ "op": "scale", "count": value })).await?;
    info!(cluster = %name, workers = value, "scaled");
    Ok(Json(json!({ "ok": message.is_none(), "msg": message })))
}

async fn adapt(
    State(gw): State<Arc<Gateway>>,
    Login { user, .. }: Login,
    Path(name): Path<String>,
    Body(AdaptRequest { minimum, maximum, active }): Body<AdaptRequest>,
) -> ApiResult<Json<Value>> {
    let cluster = running_cluster(&gw, &user, &name).await?;
    let others = others_of(&gw, &cluster).await;
    let policy = owner_policy(&gw, Some(&user), &cluster.username);
    let (minimum, maximum, message) =
        limits::clamp_adapt(&policy.limits, &cluster, &others, minimum, maximum);
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
    let mut others = active_clusters_of(gw, &cluster.username).await;
    others.retain(|c| c.name != cluster.name);
    others
}

/// Why a heartbeat ends its cluster.
enum Expiry {
    NoClient,
    Lifetime,
}

async fn heartbeat(
    State(gw): State<Arc<Gateway>>,
    ClusterCaller(cluster): ClusterCaller,
    JsonBody(mut beat): JsonBody<Heartbeat>,
) -> ApiResult<StatusCode> {
    let name = &cluster.name;
    // A stopped or failed cluster's scheduler may still be running user
    // code: it gets no say over workers any more.
    if !cluster.status.is_active() {
        return Err(ApiError::Conflict(format!(
            "cluster {name} is {}: heartbeat refused",
            cluster.status.name()
        )));
    }
    let others = others_of(&gw, &cluster).await;
    let policy = owner_policy(&gw, None, &cluster.username);
    let count = limits::clamp_heartbeat(&policy.limits, &cluster, &others, beat.count);
    if i64::from(count) != beat.count {
        warn!(cluster = %name, asked = beat.count, allowed = count, "heartbeat count clamped to the limits");
    }
    beat.count = i64::from(count);
    let claimed_for =
        Duration::from_millis(now_ms().saturating_sub(cluster.start_time).max(0) as u64);
    // Once: a stopping cluster's scheduler may still beat.
    let expired = (cluster.status == ClusterStatus::Running)
        .then(|| {
            let config = &cluster.config;
            forgotten::stop_reason(config.idle_client_timeout, &beat, claimed_for)
                .map(|reason| (reason, Expiry::NoClient))
                .or_else(|| {
                    forgotten::lifetime_reason(config.max_lifetime, claimed_for)
                        .map(|reason| (reason, Expiry::Lifetime))
                })
        })
        .flatten();
    // Unclaimed warm-pool schedulers (which users cannot get) wait alone by design.
    let expired = match expired {
        Some(found) if gw.backend.get(name).await.is_some() => Some(found),
        _ => None,
    };
    if let Some((reason, expiry)) = expired {
        info!(cluster = %name, user = %cluster.username, %reason, "stopping a cluster");
        match expiry {
            Expiry::NoClient => gw.metrics.forgotten_cluster_stopped(),
            Expiry::Lifetime => gw.metrics.lifetime_cluster_stopped(),
        }
        gw.backend.stop(name, Some(&reason)).await?;
        return Ok(StatusCode::OK);
    }
    gw.backend.heartbeat(name, beat).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failure_is_told_with_its_reason() {
        use crate::domain::models::ClusterStatus;
        use crate::domain::models::tests::sample;
        let mut cluster = sample("c1", "alice", ClusterStatus::Failed);
        assert_eq!(
            super::failure_message(&cluster),
            "Cluster 'c1' failed to start; no reason is known"
        );
        cluster.reason = Some("the scheduler exited with status 1".into());
        assert_eq!(
            super::failure_message(&cluster),
            "Cluster 'c1' failed to start: the scheduler exited with status 1"
        );
    }

    #[test]
    fn wait_flag_follows_the_python_server() {
        use super::wants_wait;
        assert!(wants_wait(Some("")) && wants_wait(Some("1")) && wants_wait(Some("true")));
        assert!(!wants_wait(None) && !wants_wait(Some("0")));
    }
}

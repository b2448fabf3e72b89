//! `/api/openapi.json`: the REST API as OpenAPI 3.1, built by `utoipa` from
//! the wire shapes below and one `#[utoipa::path]` per route, kept next to
//! the routes it describes (a test checks that every route is in it).
//!
//! The handlers build their answers with `json!`, so the shapes here are
//! the documented form of those answers, not the types the handlers use;
//! the functions under `paths` only carry the routes' descriptions.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// An error answer.
#[derive(ToSchema, Serialize)]
#[schema(as = Error)]
#[allow(dead_code)]
struct ErrorBody {
    error: String,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
#[schema(rename_all = "UPPERCASE")]
enum Status {
    Pending,
    Running,
    Stopping,
    Stopped,
    Failed,
}

#[derive(ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Cluster {
    name: String,
    /// `/clusters/<name>/status` when running
    #[schema(required = true)]
    dashboard_route: Option<String>,
    status: Status,
    /// milliseconds since the epoch
    start_time: i64,
    #[schema(required = true)]
    stop_time: Option<i64>,
    #[schema(value_type = Object)]
    options: Map<String, Value>,
    /// PEM, when running
    #[schema(required = true)]
    tls_cert: Option<String>,
    /// PEM, when running
    #[schema(required = true)]
    tls_key: Option<String>,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct ClusterLogs {
    name: String,
    status: Status,
    /// why a FAILED cluster failed
    #[schema(required = true)]
    reason: Option<String>,
    /// the scheduler's last lines, oldest first
    scheduler: Vec<String>,
    /// each worker's last lines, by worker name (the pod's name on Kubernetes)
    workers: HashMap<String, Vec<String>>,
    /// workers were left out to keep the answer within 4 MiB
    truncated: bool,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct UserSummary {
    #[serde(default)]
    user: String,
    #[serde(default)]
    clusters: i64,
    #[serde(default)]
    pending: i64,
    #[serde(default)]
    running: i64,
    #[serde(default)]
    workers: i64,
    #[serde(default)]
    cores: f64,
    /// bytes
    #[serde(default)]
    memory: i64,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct ScaleResult {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    msg: Option<String>,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct Heartbeat {
    scheduler_address: String,
    #[serde(default)]
    dashboard_address: String,
    api_address: String,
    count: i64,
    #[serde(default)]
    active_workers: Vec<String>,
    #[serde(default)]
    closing_workers: Vec<String>,
    #[serde(default)]
    closed_workers: Vec<String>,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct Version {
    #[serde(default)]
    version: String,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum Pass {
    Pass,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct Health {
    #[serde(default)]
    #[schema(inline)]
    status: Pass,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct Options {
    #[serde(default)]
    cluster_options: Vec<Value>,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct Created {
    #[serde(default)]
    name: String,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct Summary {
    #[serde(default)]
    users: Vec<UserSummary>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LogsQuery {
    /// lines per process (larger values are capped at 1000); each log is also cut to 64 KiB, the answer to 4 MiB
    #[param(minimum = 0, maximum = 1000, default = 100)]
    lines: Option<i64>,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct CreateBody {
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    cluster_options: Option<Map<String, Value>>,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct ScaleBody {
    #[schema(minimum = 0)]
    count: i64,
}

#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct AdaptBody {
    #[schema(minimum = 0)]
    #[serde(default)]
    minimum: Option<i64>,
    #[schema(minimum = 0)]
    #[serde(default)]
    maximum: Option<i64>,
    #[serde(default)]
    active: bool,
}

// The routes' descriptions: one function per route and method, never called.

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/version", summary = "Protocol version", security(()),
    responses((status = 200, description = "version", body = inline(Version))))]
fn version() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/health", summary = "Health", security(()),
    responses((status = 200, description = "healthy", body = inline(Health))))]
fn health() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/v1/options", summary = "The cluster options users may set",
    responses(
        (status = 200, description = "option fields (only the profiles the caller's groups allow)", body = inline(Options)),
        (status = 401, description = "authentication required", body = ErrorBody),
        (status = 403, description = "a JupyterHub token without the service's access scope", body = ErrorBody),
    ))]
fn options() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/v1/clusters/", summary = "The caller's clusters (all clusters for admins)",
    params(("status" = Option<String>, Query, description = "comma-separated statuses; default: PENDING,RUNNING")),
    responses(
        (status = 200, description = "clusters by name", body = HashMap<String, Cluster>),
        (status = 401, description = "authentication required", body = ErrorBody),
        (status = 403, description = "a JupyterHub token without the service's access scope", body = ErrorBody),
        (status = 422, description = "unknown status", body = ErrorBody),
    ))]
fn list_clusters() {}

#[allow(dead_code)]
#[utoipa::path(post, path = "/api/v1/clusters/", summary = "Create a cluster",
    request_body(content = inline(CreateBody), content_type = "application/json"),
    responses(
        (status = 201, description = "created", body = inline(Created)),
        (status = 401, description = "authentication required", body = ErrorBody),
        (status = 403, description = "a JupyterHub token without the service's access scope, or no profile allowed", body = ErrorBody),
        (status = 409, description = "a per-user limit is reached", body = ErrorBody),
        (status = 422, description = "malformed JSON, unknown or invalid options, a profile the caller's groups do not allow", body = ErrorBody),
    ))]
fn create_cluster() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/v1/clusters/{name}", summary = "One cluster",
    params(("name" = String, Path),
           ("wait" = Option<String>, Query, description = "wait up to 20 s for the cluster to start")),
    responses(
        (status = 200, description = "the cluster", body = Cluster),
        (status = 403, description = "another user's cluster", body = ErrorBody),
        (status = 404, description = "unknown cluster", body = ErrorBody),
        (status = 409, description = "with `wait`: the cluster failed, and why", body = ErrorBody),
    ))]
fn get_cluster() {}

#[allow(dead_code)]
#[utoipa::path(delete, path = "/api/v1/clusters/{name}",
    summary = "Stop a cluster (idempotent); the cluster's own token is accepted",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "stopped or stopping"),
        (status = 403, description = "another user's cluster", body = ErrorBody),
    ))]
fn delete_cluster() {}

#[allow(dead_code)]
#[utoipa::path(post, path = "/api/v1/clusters/{name}/scale", summary = "Scale to a number of workers",
    params(("name" = String, Path)),
    request_body(content = inline(ScaleBody), content_type = "application/json"),
    responses(
        (status = 200, description = "done; msg says how a limit clamped it", body = ScaleResult),
        (status = 403, description = "another user's cluster", body = ErrorBody),
        (status = 404, description = "unknown cluster", body = ErrorBody),
        (status = 409, description = "cluster not running", body = ErrorBody),
        (status = 422, description = "invalid count", body = ErrorBody),
    ))]
fn scale() {}

#[allow(dead_code)]
#[utoipa::path(post, path = "/api/v1/clusters/{name}/adapt", summary = "Adaptive scaling between bounds",
    params(("name" = String, Path)),
    request_body(content = inline(AdaptBody), content_type = "application/json"),
    responses(
        (status = 200, description = "done", body = ScaleResult),
        (status = 403, description = "another user's cluster", body = ErrorBody),
        (status = 404, description = "unknown cluster", body = ErrorBody),
        (status = 409, description = "cluster not running", body = ErrorBody),
        (status = 422, description = "invalid bounds", body = ErrorBody),
    ))]
fn adapt() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/v1/clusters/{name}/logs",
    summary = "Recent log lines of the scheduler and each worker (a finished cluster's as kept in its history)",
    params(("name" = String, Path),
           LogsQuery),
    responses(
        (status = 200, description = "the logs, written one process at a time", body = ClusterLogs),
        (status = 401, description = "authentication required", body = ErrorBody),
        (status = 403, description = "another user's cluster", body = ErrorBody),
        (status = 404, description = "unknown cluster", body = ErrorBody),
        (status = 422, description = "invalid lines", body = ErrorBody),
    ))]
fn logs() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/v1/admin/summary",
    summary = "Everyone's active clusters summed per user (admins only)",
    responses(
        (status = 200, description = "per-user totals", body = inline(Summary)),
        (status = 401, description = "authentication required", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
    ))]
fn admin_summary() {}

#[allow(dead_code)]
#[utoipa::path(get, path = "/api/v1/events",
    summary = "The web page's live view: server-sent events, one `clusters` event (a JSON snapshot of what the caller may see) per change, `signed-out` when the session ends",
    security(("cookie" = [])),
    responses(
        (status = 200, description = "an event stream", body = String, content_type = "text/event-stream"),
        (status = 401, description = "no session", body = ErrorBody),
        (status = 429, description = "too many open streams", body = ErrorBody),
    ))]
fn events() {}

#[allow(dead_code)]
#[utoipa::path(post, path = "/api/v1/clusters/{name}/heartbeat",
    summary = "Scheduler heartbeat (cluster token only)", security(("token" = [])),
    params(("name" = String, Path)),
    request_body(content = Heartbeat, content_type = "application/json"),
    responses(
        (status = 200, description = "accepted"),
        (status = 401, description = "bad cluster token", body = ErrorBody),
        (status = 422, description = "malformed heartbeat", body = ErrorBody),
    ))]
fn heartbeat() {}

/// The security schemes the routes name.
struct Schemes;

impl Modify for Schemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Bearer <token>`, `token <token>` or `jupyterhub <token>`",
            ))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("dask-gateway"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "dask-gateway-rs",
         description = "The dask-gateway REST API, compatible with the dask-gateway Python client."),
    paths(version, health, options, list_clusters, create_cluster,
          get_cluster, delete_cluster, scale, adapt, logs,
          admin_summary, events, heartbeat),
    components(schemas(ErrorBody, Status, Cluster, ClusterLogs, UserSummary, ScaleResult, Heartbeat)),
    security(("basic" = []), ("token" = []), ("cookie" = [])),
    modifiers(&Schemes),
)]
struct ApiDoc;

pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document is JSON")
}

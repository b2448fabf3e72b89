//! A dask-gateway compatible server: the REST API the Python client speaks,
//! authentication, per-user limits, one port for the API, the dashboards and
//! the schedulers' TLS, and backends that run the clusters.

pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
pub mod dashboard;
pub mod events;
pub mod forgotten;
pub mod handoff;
pub mod idle;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod options;
pub mod pods;
pub mod scheduler;
pub mod sni;
pub mod tls;
pub mod ui;
pub mod with_server;

use std::sync::Arc;

use axum::Router;
use axum::routing::any;

use crate::auth::Authenticator;
use crate::auth::policy::Policies;
use crate::backend::Backend;
use crate::config::{AuthKind, ClusterDefaults, Config, Limits};
use crate::options::OptionsSpec;
use crate::scheduler::SchedulerControl;

/// The dask-gateway protocol version reported at `/api/version`.
pub const PROTOCOL_VERSION: &str = "2026.3.0";

/// Everything a request handler needs.
pub struct Gateway {
    pub backend: Arc<dyn Backend>,
    pub auth: Authenticator,
    pub options: OptionsSpec,
    /// `GET /api/v1/options` for a caller offered every profile (all
    /// callers unless group policies restrict profiles), serialised once:
    /// the same bytes for every request.
    pub all_options_json: axum::body::Bytes,
    pub defaults: ClusterDefaults,
    pub limits: Limits,
    /// Per-group limits and profiles over `limits`.
    pub policies: Policies,
    pub scheduler: SchedulerControl,
    pub proxy: dashboard::ProxyClient,
    pub metrics: metrics::Metrics,
    /// The path prefix the gateway is served under (`""` or `/a/b`).
    pub prefix: String,
    /// Which sign-in the page sends a browser to.
    pub auth_kind: AuthKind,
    /// The page's live streams.
    pub events: events::Streams,
}

impl Gateway {
    pub fn new(config: &Config, backend: Arc<dyn Backend>) -> anyhow::Result<Self> {
        let options =
            OptionsSpec::new(config.options.profiles.clone(), config.options.fields.clone());
        Ok(Self {
            backend,
            auth: Authenticator::new(&config.auth, &config.limits)?.under_prefix(&config.prefix),
            all_options_json: options.to_json().to_string().into(),
            options,
            defaults: config.cluster.clone(),
            limits: config.limits.clone(),
            policies: config.policies(),
            scheduler: SchedulerControl::default(),
            proxy: dashboard::client(),
            metrics: metrics::Metrics::default(),
            prefix: config.prefix.clone(),
            auth_kind: config.auth.kind,
            events: events::Streams::new(std::time::Duration::from_secs_f64(
                config.connections.http_idle_timeout,
            )),
        })
    }
}

/// Largest JSON body the API reads (axum's default is 2 MiB): requests are
/// small, and every open connection may hold one.
const API_BODY_LIMIT: usize = 256 * 1024;

/// The HTTP side of the port: API and dashboards under `prefix`, `/metrics` at the root.
pub fn router(gateway: Arc<Gateway>, prefix: &str) -> Router {
    let routes = api::routes(gateway.clone())
        .merge(ui::routes())
        // The API and the page's routes; dashboards have their own rules.
        .layer(axum::middleware::from_fn(ui::csrf::guard))
        .route("/clusters/{name}", any(dashboard::proxy))
        .route("/clusters/{name}/", any(dashboard::proxy))
        .route("/clusters/{name}/{*rest}", any(dashboard::proxy))
        .route(auth::oauth::CALLBACK_PATH, axum::routing::get(auth::oauth::callback));
    let routes = if prefix.is_empty() {
        routes
    } else {
        // A nested "/" is `<prefix>` alone: the page is `<prefix>/`.
        Router::new()
            .nest(prefix, routes)
            .route(&format!("{prefix}/"), axum::routing::get(ui::page::index))
    };
    let routes = routes
        .route("/metrics", axum::routing::get(metrics::render))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), metrics::track))
        .with_state(gateway);
    around_every_request(routes)
}

/// The heartbeat listener's side: the scheduler routes alone, no prefix.
pub fn heartbeat_router(gateway: Arc<Gateway>) -> Router {
    let routes = api::scheduler_routes()
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), metrics::track))
        .with_state(gateway);
    around_every_request(routes)
}

/// What every request passes through, routed or not: the body limit, and
/// an `x-request-id` (the caller's, or a new UUID) that its answer carries
/// back: a server fault is logged under it, and its 500 names it
/// ([`api::opaque_faults`]).
///
/// These wrap the router once, as its fallback, rather than through
/// `Router::layer`: that wraps every route in another boxed service, and
/// axum clones a route's whole stack of boxes on each call, so every layer
/// there cost each request allocations at every depth below it.
fn around_every_request(routes: Router) -> Router {
    use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
    let stack = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(axum::middleware::from_fn(api::opaque_faults))
        .layer(axum::extract::DefaultBodyLimit::max(API_BODY_LIMIT))
        .service(routes);
    Router::new().fallback_service(stack)
}

/// A random UUID (v4) per request, drawn from the thread's generator:
/// `tower_http`'s `MakeRequestUuid` asks the kernel (getrandom(2)) for every
/// request, a syscall on each API call for an id that is a log label, not a
/// secret.
#[derive(Clone, Copy)]
struct NewRequestId;

impl tower_http::request_id::MakeRequestId for NewRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let value = axum::http::HeaderValue::from_str(&id.to_string()).ok()?;
        Some(tower_http::request_id::RequestId::new(value))
    }
}

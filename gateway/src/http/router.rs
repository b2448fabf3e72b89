//! The routers: the main one (API, page, dashboards under the prefix,
//! `/metrics` at the root) and the heartbeat listener's.

use std::sync::Arc;

use axum::Router;
use axum::routing::any;

use super::state::Gateway;
use super::{api, dashboard, errors, events, metrics, oauth, pages};

/// Largest JSON body the API reads (axum's default is 2 MiB): requests are
/// small, and every open connection may hold one.
const API_BODY_LIMIT: usize = 256 * 1024;

/// The HTTP side of the port: API and dashboards under `prefix`, `/metrics` at the root.
pub fn router(gateway: Arc<Gateway>, prefix: &str) -> Router {
    let routes = api::routes(gateway.clone())
        .merge(pages::routes())
        .route("/api/v1/events", axum::routing::get(events::stream))
        // The API and the page's routes; dashboards have their own rules.
        .layer(axum::middleware::from_fn(pages::csrf::guard))
        .route("/clusters/{name}", any(dashboard::proxy))
        .route("/clusters/{name}/", any(dashboard::proxy))
        .route("/clusters/{name}/{*rest}", any(dashboard::proxy))
        .route(oauth::CALLBACK_PATH, axum::routing::get(oauth::callback));
    let routes = if prefix.is_empty() {
        routes
    } else {
        // A nested "/" is `<prefix>` alone: the page is `<prefix>/`.
        Router::new()
            .nest(prefix, routes)
            .route(&format!("{prefix}/"), axum::routing::get(pages::page::index))
    };
    let routes = routes
        .route("/metrics", axum::routing::get(metrics::render))
        .route_layer(axum::middleware::from_fn_with_state(gateway.metrics.clone(), metrics::track))
        .with_state(gateway);
    around_every_request(routes)
}

/// The heartbeat listener's side: the scheduler routes alone, no prefix.
pub fn heartbeat_router(gateway: Arc<Gateway>) -> Router {
    let routes = api::scheduler_routes()
        .route_layer(axum::middleware::from_fn_with_state(gateway.metrics.clone(), metrics::track))
        .with_state(gateway);
    around_every_request(routes)
}

/// What every request passes through, routed or not: the body limit, and
/// an `x-request-id` (the caller's, or a new UUID) that its answer carries
/// back: a server fault is logged under it, and its 500 names it
/// ([`errors::opaque_faults`]).
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
        .layer(axum::middleware::from_fn(errors::opaque_faults))
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

//! `/metrics` in the Prometheus text format: requests by route and status,
//! their latency, and the clusters by status (counted at scrape time).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Gateway;
use crate::models::ClusterStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    clusters: Family<StatusLabels, Gauge>,
    scheduler_connections: Family<RouteLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dask_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        let clusters = Family::<StatusLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("clusters", "Clusters known to the gateway, by status", clusters.clone());
        let scheduler_connections = Family::<RouteLabels, Counter>::default();
        registry.register(
            "scheduler_connections",
            "Client connections to schedulers, by route (handoff: given to a local scheduler; relay: spliced)",
            scheduler_connections.clone(),
        );
        Self { registry, requests, latency, clusters, scheduler_connections }
    }
}

impl Metrics {
    pub fn scheduler_connection(&self, route: &str) {
        self.scheduler_connections.get_or_create(&RouteLabels { route: route.into() }).inc();
    }
}

/// Counts every routed request under its route pattern (never the raw path:
/// cluster names would make the label set unbounded).
pub async fn track(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    gw.metrics
        .latency
        .get_or_create(&RouteLabels { route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    gw.metrics
        .requests
        .get_or_create(&RequestLabels { method, route, status: response.status().as_u16() })
        .inc();
    response
}

pub async fn render(State(gw): State<Arc<Gateway>>) -> Response {
    let clusters = gw.backend.list().await;
    for status in ClusterStatus::ALL {
        let n = clusters.iter().filter(|c| c.status == status).count();
        gw.metrics
            .clusters
            .get_or_create(&StatusLabels { status: status.name().to_lowercase() })
            .set(n as i64);
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &gw.metrics.registry).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

//! `/metrics` in the OpenMetrics text format: requests by route and status,
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
use prometheus_client::registry::{Metric, Registry};

use crate::backends::{Backend, StartSource};
use crate::domain::models::ClusterStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// The method as a label: one of a fixed set, so that clients sending
/// made-up methods cannot grow the label set (and `/metrics`) without end.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map_or("OTHER", |(_, label)| label)
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
    pooled: Family<StatusLabels, Gauge>,
    scheduler_connections: Family<RouteLabels, Counter>,
    open_connections: Family<ListenerLabels, Gauge>,
    refused_connections: Family<ListenerLabels, Counter>,
    cluster_starts: Family<SourceLabels, Counter>,
    forgotten_stops: Counter,
    lifetime_stops: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// Registers `metric` under `name` and hands it back (a family is a shared
/// handle: the registry and the gateway see the same counts).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dask_gateway");
        let r = &mut registry;
        let requests = registered(r, "http_requests", "HTTP requests served", Family::default());
        let latency = registered(
            r,
            "http_request_duration_seconds",
            "HTTP request latency",
            Family::<RouteLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 4.0, 10))
            }),
        );
        let clusters = registered(
            r,
            "clusters",
            "Clusters known to the gateway, by status",
            Family::default(),
        );
        let pooled = registered(
            r,
            "pool_schedulers",
            "Schedulers waiting in the local backend's warm pool, by status (running: ready to claim)",
            Family::default(),
        );
        let scheduler_connections = registered(
            r,
            "scheduler_connections",
            "Client connections to schedulers, by route (handoff: given to a local scheduler; relay: spliced)",
            Family::default(),
        );
        let open_connections = registered(
            r,
            "open_connections",
            "Connections open, by listener (public port or the schedulers' heartbeat port)",
            Family::default(),
        );
        let refused_connections = registered(
            r,
            "refused_connections",
            "Connections closed at once because the listener was at its cap",
            Family::default(),
        );
        let cluster_starts: Family<SourceLabels, Counter> = registered(
            r,
            "cluster_starts",
            "Clusters created, by source (pool: a warm scheduler claimed; cold: started for the request)",
            Family::default(),
        );
        let forgotten_stops = registered(
            r,
            "forgotten_cluster_stops",
            "Clusters stopped because no client was connected for cluster.idle_client_timeout",
            Counter::default(),
        );
        let lifetime_stops = registered(
            r,
            "lifetime_cluster_stops",
            "Clusters stopped because they reached cluster.max_lifetime (or their profile's)",
            Counter::default(),
        );
        for source in [StartSource::Pool, StartSource::Cold] {
            let _ = cluster_starts.get_or_create(&SourceLabels { source: source.label() });
        }
        Self {
            registry,
            requests,
            latency,
            clusters,
            pooled,
            scheduler_connections,
            open_connections,
            refused_connections,
            cluster_starts,
            forgotten_stops,
            lifetime_stops,
        }
    }
}

/// Counts a connection as open for as long as it lives.
pub struct OpenConnection(Gauge);

impl OpenConnection {
    pub fn new(metrics: &Metrics, listener: &'static str) -> Self {
        let gauge = metrics.open_connections.get_or_create(&ListenerLabels { listener }).clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn connection_refused(&self, listener: &'static str) {
        self.refused_connections.get_or_create(&ListenerLabels { listener }).inc();
    }

    pub fn cluster_started(&self, source: StartSource) {
        self.cluster_starts.get_or_create(&SourceLabels { source: source.label() }).inc();
    }

    pub fn forgotten_cluster_stopped(&self) {
        self.forgotten_stops.inc();
    }

    pub fn lifetime_cluster_stopped(&self) {
        self.lifetime_stops.inc();
    }

    pub fn scheduler_connection(&self, route: &str) {
        self.scheduler_connections.get_or_create(&RouteLabels { route: route.into() }).inc();
    }
}

/// Counts every routed request under its route pattern (never the raw path:
/// cluster names would make the label set unbounded).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    let labels = RouteLabels { route };
    metrics.latency.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: labels.route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// What `/metrics` reads: the registry, and the backend for the clusters
/// counted at scrape time.
#[derive(Clone)]
pub struct Scrape {
    pub metrics: Arc<Metrics>,
    pub backend: Arc<dyn Backend>,
}

pub async fn render(State(gw): State<Scrape>) -> Response {
    let clusters = gw.backend.list().await;
    for status in ClusterStatus::ALL {
        let n = clusters.iter().filter(|c| c.status == status).count();
        gw.metrics
            .clusters
            .get_or_create(&StatusLabels { status: status.name().to_lowercase() })
            .set(n as i64);
    }
    let pooled = gw.backend.pooled().await;
    for status in [ClusterStatus::Pending, ClusterStatus::Running] {
        let n = pooled.iter().filter(|s| **s == status).count();
        gw.metrics
            .pooled
            .get_or_create(&StatusLabels { status: status.name().to_lowercase() })
            .set(n as i64);
    }
    dask_common::metrics::render(&gw.metrics.registry).into_response()
}

#[cfg(test)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "OTHER");
        assert_eq!(method_label(&Method::from_bytes(&[b'X'; 200]).unwrap()), "OTHER");
    }
}

//! The operator's HTTP endpoints: `/metrics` and `/healthz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use dask_crds::DaskCluster;
use kube::api::{Api, ListParams};

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
}

/// Probes the API server every 10 s with a cheap list; `/healthz` fails when
/// the operator can no longer see its resources, so a stuck process restarts.
pub fn spawn_health_probe(api: Api<DaskCluster>) -> Arc<AtomicBool> {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    tokio::spawn(async move {
        loop {
            let ok = tokio::time::timeout(
                Duration::from_secs(10),
                api.list_metadata(&ListParams::default().limit(1)),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            flag.store(ok, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    healthy
}

pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|State(s): State<AppState>| async move { s.metrics.encode() }))
        .route(
            "/healthz",
            get(|State(s): State<AppState>| async move {
                if s.healthy.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "API server unreachable")
                }
            }),
        )
        .with_state(AppState { metrics, healthy });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

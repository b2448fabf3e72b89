//! The operator's HTTP endpoints: `/metrics` and `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::progress::WatchProgress;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    progress: Arc<WatchProgress>,
    stall_bound: Duration,
}

/// `/healthz` fails while a watch has made no progress (no event, no
/// bookmark, no successful re-list) for longer than `stall_bound`, so a
/// process whose watches froze is restarted; it recovers on its own once
/// they move again.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    progress: Arc<WatchProgress>,
    stall_bound: Duration,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|State(s): State<AppState>| async move { s.metrics.encode() }))
        .route(
            "/healthz",
            get(|State(s): State<AppState>| async move {
                let stalled = s.progress.stalled(s.stall_bound);
                if stalled.is_empty() {
                    (StatusCode::OK, "ok".to_string())
                } else {
                    let bound = s.stall_bound.as_secs_f64();
                    let note =
                        format!("no watch progress for over {bound}s: {}", stalled.join(", "));
                    (StatusCode::SERVICE_UNAVAILABLE, note)
                }
            }),
        )
        .with_state(AppState { metrics, progress, stall_bound });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
    axum::serve(listener, app).await?;
    Ok(())
}

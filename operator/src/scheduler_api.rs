//! The scheduler's HTTP API (`/api/v1/*`, enabled by the routes the operator
//! injects): plain HTTP instead of version-sensitive Dask RPC.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Clone)]
pub struct SchedulerApi {
    http: reqwest::Client,
}

/// Why a call to the scheduler failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// No answer: the scheduler is not up yet, gone, or unreachable.
    #[error("{method} {url}: no answer: {source}")]
    Unreachable {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An error status, e.g. 404 from a scheduler without the API routes.
    #[error("{method} {url}: HTTP {status}")]
    Status { method: &'static str, url: String, status: StatusCode },
    /// An answer that is not the JSON expected.
    #[error("{method} {url}: unexpected answer: {source}")]
    Body {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

#[derive(Debug, Deserialize, Clone)]
pub struct WorkerInfo {
    pub name: String,
    pub address: String,
}

#[derive(Deserialize)]
struct Workers {
    workers: Vec<WorkerInfo>,
}

#[derive(Deserialize)]
struct Target {
    workers: i32,
}

#[derive(Deserialize)]
struct Idle {
    idle_since: Option<f64>,
}

/// Resolves every host to one address: `--resolve-schedulers-to` for tests,
/// where schedulers run on loopback but are addressed by their Service name.
struct FixedResolver(IpAddr);

impl reqwest::dns::Resolve for FixedResolver {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = SocketAddr::new(self.0, 0);
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

type Result<T> = std::result::Result<T, SchedulerError>;

/// Sends a request; anything but a 2xx answer is an error.
async fn send(method: &'static str, url: &str, request: RequestBuilder) -> Result<Response> {
    let url = || url.to_string();
    let resp = request.send().await.map_err(|source| SchedulerError::Unreachable {
        method,
        url: url(),
        source,
    })?;
    match resp.status() {
        status if status.is_success() => Ok(resp),
        status => Err(SchedulerError::Status { method, url: url(), status }),
    }
}

impl SchedulerApi {
    pub fn new(resolve_to: Option<IpAddr>) -> Self {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(ip) = resolve_to {
            builder = builder.dns_resolver(std::sync::Arc::new(FixedResolver(ip)));
        }
        Self { http: builder.build().expect("a plain HTTP client builds") }
    }

    /// Base URL of a cluster's scheduler HTTP server, through its Service.
    pub fn base_url(cluster: &str, namespace: &str, domain: &str, port: i32) -> String {
        format!("http://{}:{port}", dask_crds::scheduler::service_host(cluster, namespace, domain))
    }

    async fn get<T: DeserializeOwned>(&self, url: String) -> Result<T> {
        let resp = send("GET", &url, self.http.get(&url)).await?;
        resp.json().await.map_err(|source| SchedulerError::Body { method: "GET", url, source })
    }

    pub async fn workers(&self, base: &str) -> Result<Vec<WorkerInfo>> {
        Ok(self.get::<Workers>(format!("{base}/api/v1/get_workers")).await?.workers)
    }

    /// Retires workers by address: their data moves to the others first.
    pub async fn retire(&self, base: &str, addresses: &[String]) -> Result<()> {
        let url = format!("{base}/api/v1/retire_workers");
        let request = self.http.post(&url).json(&json!({ "workers": addresses }));
        send("POST", &url, request).await.map(drop)
    }

    /// The number of workers the scheduler's adaptive logic asks for.
    pub async fn adaptive_target(&self, base: &str) -> Result<i32> {
        Ok(self.get::<Target>(format!("{base}/api/v1/adaptive_target")).await?.workers)
    }

    /// Since when the scheduler has been idle (seconds since the epoch), if it is.
    pub async fn idle_since(&self, base: &str) -> Result<Option<f64>> {
        Ok(self.get::<Idle>(format!("{base}/api/v1/check_idle")).await?.idle_since)
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;

    use super::*;

    /// A stand-in scheduler on loopback: a good, a missing and a garbled route.
    async fn fake_scheduler() -> String {
        let app = Router::new()
            .route("/api/v1/adaptive_target", get(|| async { r#"{"workers": 3}"# }))
            .route("/api/v1/check_idle", get(|| async { "not json" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    #[tokio::test]
    async fn errors_say_what_went_wrong() {
        let api = SchedulerApi::new(None);
        let base = fake_scheduler().await;
        assert_eq!(api.adaptive_target(&base).await.unwrap(), 3);
        let missing = api.workers(&base).await.unwrap_err();
        assert!(
            matches!(missing, SchedulerError::Status { status: StatusCode::NOT_FOUND, .. }),
            "{missing:?}"
        );
        assert!(missing.to_string().starts_with("GET http://127.0.0.1:"), "{missing}");
        let garbled = api.idle_since(&base).await.unwrap_err();
        assert!(matches!(garbled, SchedulerError::Body { .. }), "{garbled:?}");
        // A port nobody listens on: bound, then released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let gone = api.retire(&format!("http://{closed}"), &[]).await.unwrap_err();
        assert!(matches!(gone, SchedulerError::Unreachable { method: "POST", .. }), "{gone:?}");
    }
}

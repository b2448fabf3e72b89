//! The scheduler's HTTP API (`/api/v1/*`, enabled by the routes the operator
//! injects): plain HTTP instead of version-sensitive Dask RPC.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::{Error, Result};

#[derive(Clone)]
pub struct SchedulerApi {
    http: reqwest::Client,
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
        format!("http://{}.{namespace}.svc.{domain}:{port}", crate::build::scheduler_name(cluster))
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, url: String) -> Result<T> {
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Scheduler(format!("GET {url}: {e}")))?;
        let resp =
            resp.error_for_status().map_err(|e| Error::Scheduler(format!("GET {url}: {e}")))?;
        resp.json().await.map_err(|e| Error::Scheduler(format!("GET {url}: {e}")))
    }

    pub async fn workers(&self, base: &str) -> Result<Vec<WorkerInfo>> {
        Ok(self.get::<Workers>(format!("{base}/api/v1/get_workers")).await?.workers)
    }

    /// Retires workers by address: their data moves to the others first.
    pub async fn retire(&self, base: &str, addresses: &[String]) -> Result<()> {
        let url = format!("{base}/api/v1/retire_workers");
        let resp = self.http.post(&url).json(&json!({ "workers": addresses })).send().await;
        resp.and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| Error::Scheduler(format!("POST {url}: {e}")))
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

//! The state the routes share: [`Gateway`], and the smaller views of it
//! that handlers take when they need only a part.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRef;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::metrics::{Metrics, Scrape};
use super::streams::Streams;
use crate::auth::Authenticator;
use crate::backends::Backend;
use crate::backends::scheduler::SchedulerControl;
use crate::config::{AuthKind, ClusterDefaults, Config, Limits};
use crate::domain::options::OptionsSpec;
use crate::domain::policy::Policies;

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
    pub proxy: ProxyClient,
    pub metrics: Arc<Metrics>,
    /// The path prefix the gateway is served under (`""` or `/a/b`).
    pub prefix: String,
    /// Which sign-in the page sends a browser to.
    pub auth_kind: AuthKind,
    /// The page's live streams.
    pub events: Streams,
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
            proxy: proxy_client(),
            metrics: Arc::default(),
            prefix: config.prefix.clone(),
            auth_kind: config.auth.kind,
            events: Streams::new(std::time::Duration::from_secs_f64(
                config.connections.http_idle_timeout,
            )),
        })
    }
}

impl FromRef<Arc<Gateway>> for Scrape {
    fn from_ref(gateway: &Arc<Gateway>) -> Self {
        Scrape { metrics: gateway.metrics.clone(), backend: gateway.backend.clone() }
    }
}

/// The dashboard proxy's client to the schedulers' dashboards.
pub type ProxyClient = Client<HttpConnector, Body>;

fn proxy_client() -> ProxyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

//! A dask-gateway compatible server: the REST API the Python client speaks,
//! authentication, per-user limits, one port for the API, the dashboards and
//! the schedulers' TLS, and backends that run the clusters.
//!
//! The modules are layers, each importing only the ones listed before it
//! (`tests/layers.rs` fails on an import cycle):
//!
//! - [`domain`]: clusters, options, limits, policies, pure decisions;
//! - [`config`]: the TOML configuration;
//! - [`auth`]: who is asking;
//! - [`backends`]: where clusters run;
//! - [`http`]: the routes, the API, the page, the dashboard proxy;
//! - [`proxy`]: the one port (connection caps, SNI, hand-off to schedulers);
//! - [`tasks`]: background sweeps over the whole gateway.

pub mod auth;
pub mod backends;
pub mod config;
pub mod domain;
pub mod http;
pub mod proxy;
pub mod tasks;

pub use http::api::PROTOCOL_VERSION;
pub use http::router::{heartbeat_router, router};
pub use http::state::Gateway;

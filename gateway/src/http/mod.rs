//! The HTTP side: the shared state, the router, the REST API, the web page,
//! the dashboard proxy, `/metrics`. Submodules import their siblings
//! directly, never through this file.

pub mod api;
pub mod bodies;
pub mod dashboard;
pub mod errors;
pub mod events;
pub mod extract;
pub mod logs;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod owned;
pub mod pages;
pub mod router;
pub mod state;
pub mod streams;

//! What both binaries need the same way: their log set-up, their `/metrics`
//! exposition, and their Kubernetes watch caches.

pub mod kube_api;
pub mod logging;
pub mod metrics;

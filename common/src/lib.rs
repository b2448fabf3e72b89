//! What both binaries need the same way: their log set-up, their `/metrics`
//! exposition, their Kubernetes watch caches (which outlive objects
//! that do not read as their kind) and their stop signals.

pub mod kube_api;
pub mod logging;
pub mod metrics;
pub mod readable;
pub mod signals;

//! The dask-rs operator: reconciles `kubernetes.dask.org/v1` resources into
//! scheduler and worker pods.
//!
//! Every controller is level-triggered: `reconcile` compares what should exist
//! (pure builders in [`build`]) with what does, applies the difference with
//! server-side apply under one field manager, and writes a status computed from
//! the real objects. Nothing is kept in memory that a restart would lose.

pub mod applied;
pub mod autoscaler;
pub mod build;
pub mod cluster;
pub mod context;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod scheduler_api;
pub mod server;
pub mod workergroup;

pub use context::{Context, Error, Result};

/// The field manager of every server-side apply this operator makes.
pub const MANAGER: &str = "dask-operator";

/// Every server-side apply this operator makes: its one field manager,
/// taking back fields someone else changed (force), as the owner of children.
pub fn apply_params() -> kube::api::PatchParams {
    kube::api::PatchParams::apply(MANAGER).force()
}

//! The dask-rs operator: reconciles `kubernetes.dask.org/v1` resources into
//! scheduler and worker pods.
//!
//! Every controller is level-triggered and follows one pipeline: read the
//! object whole, [`validate`] it, decide with pure functions (the builders in
//! [`build`], the worker group's plan, the job's transition, the autoscaler's
//! decision, the cluster's status), apply the difference with server-side
//! apply under one field manager, and write a status computed from the real
//! objects. Nothing is kept in memory that a restart would lose. A failed
//! reconcile is retried by its error policy and reported as a Warning Event
//! ([`report`]). An object that does not even read as its kind is left out
//! of the watches and reported on itself ([`unreadable`]).

pub mod adopt;
pub mod api;
pub mod applied;
pub mod autoscaler;
pub mod build;
pub mod cluster;
pub mod config;
pub mod context;
pub mod error;
pub mod events;
pub mod job;
pub mod leader;
pub mod logging;
pub mod metrics;
#[cfg(test)]
pub mod mock_api;
pub mod pace;
pub mod problems;
pub mod progress;
pub mod propagate;
pub mod report;
pub mod scheduler_api;
pub mod server;
pub mod unreadable;
pub mod validate;
pub mod workergroup;

pub use api::{MANAGER, apply_params};
pub use context::Context;
pub use error::{Error, Result};

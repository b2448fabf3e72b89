//! The operator's settings (from its command line) and how its controllers
//! run their reconciles.

use std::time::Duration;

use kube::runtime::controller;

/// What the operator is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// DNS domain of the cluster (for DASK_SCHEDULER_ADDRESS), usually cluster.local.
    pub cluster_domain: String,
    /// The one namespace watched, or all of them.
    pub namespace: Option<String>,
    /// This replica's name (its pod's), in the Events it publishes.
    pub instance: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self { cluster_domain: "cluster.local".into(), namespace: None, instance: None }
    }
}

/// How the cluster and worker-group controllers run their reconciles.
///
/// Triggers are batched: a pod going Pending → Running → Ready, or a
/// Deployment's status settling, fires several watch events within a second;
/// one reconcile after they stop sees the same end state at a fraction of the
/// API server's work. Reconciles are bounded: each holds API connections, and
/// past a few dozen at once the API server, not the operator, is the limit
/// while the operator's memory grows with every connection.
pub fn controller_config() -> controller::Config {
    controller::Config::default().debounce(Duration::from_millis(500)).concurrency(16)
}

//! The operator's settings (from its command line) and how its controllers
//! run their reconciles.

use std::time::Duration;

use kube::runtime::watcher;

use crate::autoscaler::Tuning;

/// The default of [`Config::debounce`].
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// What the operator is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// DNS domain of the cluster (for DASK_SCHEDULER_ADDRESS), usually cluster.local.
    pub cluster_domain: String,
    /// The one namespace watched, or all of them.
    pub namespace: Option<String>,
    /// This replica's name (its pod's), in the Events it publishes.
    pub instance: Option<String>,
    /// Autoscaling defaults, which a DaskAutoscaler's annotations override.
    pub autoscaling: Tuning,
    /// `/healthz` fails when a watch has made no progress for this long.
    pub watch_stall: Duration,
    /// How long the cluster and worker-group controllers gather an object's
    /// triggers into one reconcile ([`crate::pace`]): a pod going Pending →
    /// Running → Ready, or a Deployment's status settling, fires several
    /// watch events within a second; one reconcile after they stop sees the
    /// same end state at a fraction of the API server's work. An object at
    /// rest is reconciled at once.
    pub debounce: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            namespace: None,
            instance: None,
            autoscaling: Tuning::default(),
            watch_stall: Duration::from_secs(120),
            debounce: DEBOUNCE,
        }
    }
}

impl Config {
    /// Every watch the controllers make. The server ends each watch after a
    /// third of the stall bound (a bookmark, then a new watch request), so a
    /// quiet but healthy watch shows progress well within the bound and a
    /// silently dead connection is noticed (and replaced) within it.
    pub fn watch_config(&self) -> watcher::Config {
        let secs = (self.watch_stall.as_secs() / 3).clamp(1, 290);
        watcher::Config::default().timeout(secs as u32)
    }
}

/// Reconciles at once of the cluster and worker-group controllers: each
/// holds API connections, and past a few dozen at once the API server, not
/// the operator, is the limit while the operator's memory grows with every
/// connection.
pub const CONCURRENCY: u16 = 16;

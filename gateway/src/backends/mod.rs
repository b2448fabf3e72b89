//! Where clusters run. The API speaks to one [`Backend`]; each keeps the
//! clusters' state where it belongs (the local backend in this process, the
//! Kubernetes backend in DaskCluster resources).

pub mod forkserver;
pub mod handoff;
pub mod history;
pub mod kubernetes;
pub mod local;
pub mod logs;
pub mod scheduler;
pub mod templates;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::domain::models::{Cluster, Heartbeat};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("Cluster {0} not found")]
    NotFound(String),
    #[error("cluster {0} is not running")]
    NotRunning(String),
    /// A per-user limit (e.g. `user_max_clusters`), checked atomically.
    #[error("{0}")]
    LimitReached(String),
    /// The cluster's resources were refused (invalid, conflicting, over a
    /// quota): `status` is the 4xx the user gets, `message` says why in
    /// words for them (never the store's raw answer).
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// Where clusters are kept cannot be reached now; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// A created cluster, and whether it came warm from a pool or starts cold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub name: String,
    pub source: StartSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSource {
    Pool,
    Cold,
}

impl StartSource {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Cold => "cold",
        }
    }
}

/// The scheduler preload that adds the connected clients, and how long
/// there has been none, to each heartbeat ([`crate::domain::forgotten`]). It must
/// come after `dask_gateway.scheduler_preload`, whose heartbeat it extends.
pub const PRESENCE_PRELOAD: &str = include_str!("presence_preload.py");

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Starts a new cluster (PENDING until its scheduler's first heartbeat),
    /// unless its owner already has `max_clusters` active ones: check and
    /// create are one atomic step, across gateway replicas too.
    /// Returns the cluster's name: a warm pool may hand out a ready
    /// cluster of its own (with its own name and credentials) instead.
    async fn create(
        &self,
        cluster: Cluster,
        max_clusters: Option<u32>,
    ) -> Result<Created, BackendError>;
    async fn get(&self, name: &str) -> Option<Cluster>;
    /// The record a scheduler's heartbeat is checked against: [`Self::get`],
    /// plus clusters that wait in a warm pool, unseen by users.
    async fn for_scheduler(&self, name: &str) -> Option<Cluster> {
        self.get(name).await
    }
    /// Every known cluster, stopped ones included; callers filter.
    async fn list(&self) -> Vec<Cluster>;
    /// Statuses of the schedulers waiting in a warm pool (none by default).
    async fn pooled(&self) -> Vec<crate::domain::models::ClusterStatus> {
        Vec::new()
    }
    /// Stops a cluster; stopping a stopped or unknown one is no error.
    /// `why`, when the gateway stops it on its own (idle, lifetime, the
    /// owner's server gone), is kept with the stopped cluster; `None`: its
    /// user (or an admin) asked.
    async fn stop(&self, name: &str, why: Option<&str>) -> Result<(), BackendError>;
    /// A heartbeat from the cluster's scheduler (already authenticated).
    async fn heartbeat(&self, name: &str, beat: Heartbeat) -> Result<(), BackendError>;
    /// Marks the cluster FAILED and stops it, e.g. when its scheduler stopped answering.
    async fn fail(&self, name: &str, reason: &str);
    /// The channel on which a running cluster's scheduler adopts client
    /// connections handed over as file descriptors ([`crate::backends::handoff`]);
    /// `None`: relay them.
    async fn handoff(&self, _name: &str) -> Option<Arc<tokio::net::UnixDatagram>> {
        None
    }
    /// The recent log lines of `cluster`'s scheduler and workers (already
    /// authorised), each cut to `bounds`; a finished cluster's as kept in
    /// its history record. None by default.
    async fn logs(
        &self,
        _cluster: &Cluster,
        _bounds: logs::LogBounds,
    ) -> Result<logs::LogStream, BackendError> {
        Ok(Box::pin(futures::stream::empty()))
    }
    /// Bumped on every change of any cluster, for the `?wait` long poll.
    fn changes(&self) -> watch::Receiver<u64>;
    /// The gateway is stopping: end what would not outlive it (processes,
    /// keys on disk), within `within`. Clusters kept elsewhere stay.
    async fn shutdown(&self, _within: std::time::Duration) {}
}

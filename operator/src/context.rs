//! State shared by the controllers, and the error type.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::metrics::Metrics;
use crate::scheduler_api::SchedulerApi;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid {kind} {name}: {reason}")]
    Invalid { kind: &'static str, name: String, reason: String },
    #[error("scheduler API: {0}")]
    Scheduler(String),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid { .. } => "invalid",
            Error::Scheduler(_) => "scheduler",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub scheduler: SchedulerApi,
    /// DNS domain of the cluster (for DASK_SCHEDULER_ADDRESS), usually cluster.local.
    pub cluster_domain: String,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, scheduler: SchedulerApi, cluster_domain: String) -> Self {
        let reporter = Reporter { controller: crate::MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self { recorder: Recorder::new(client.clone(), reporter), client, metrics, scheduler, cluster_domain }
    }
}

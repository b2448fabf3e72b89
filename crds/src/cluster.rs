//! DaskCluster: a scheduler plus a default group of workers.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterPhase, DaskScheduler, DaskWorker, WorkloadStatus};

/// Field for field the dask-kubernetes `DaskCluster` spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    doc = "A Dask cluster: one scheduler (Deployment + Service) and a default group of workers.",
    kind = "DaskCluster",
    plural = "daskclusters",
    namespaced,
    status = "WorkloadStatus",
    shortname = "daskcluster",
    shortname = "dsk",
    derive = "Default",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.worker.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.worker.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DaskClusterSpec {
    /// Delete cluster if scheduler is idle for longer than this timeout (seconds). Set to 0 to never auto cleanup.
    #[serde(default)]
    pub idle_timeout: i64,
    pub scheduler: DaskScheduler,
    pub worker: DaskWorker,
}

impl DaskCluster {
    /// The phase the operator last wrote, if any.
    pub fn phase(&self) -> Option<ClusterPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// Its scheduler is ready and reachable: clients, workers and runners can connect.
    pub fn is_running(&self) -> bool {
        self.phase() == Some(ClusterPhase::Running)
    }
}

//! DaskCluster: a scheduler plus a default group of workers.

use crate::common::{ClusterPhase, DaskScheduler, DaskWorker, WorkloadStatus};

dask_kind! {
    workload:
    /// Field for field the dask-kubernetes `DaskCluster` spec.
    #[kube(kind = "DaskCluster", plural = "daskclusters")]
    #[kube(shortname = "daskcluster", shortname = "dsk")]
    #[kube(doc = "A Dask cluster: one scheduler (Deployment + Service) and a default group \
                  of workers.")]
    #[kube(
        printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.worker.replicas"),
        printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
        printcolumn(name = "Status", type_ = "string", json_path = ".status.phase")
    )]
    #[serde(rename_all = "camelCase")]
    pub struct DaskClusterSpec {
        /// Delete cluster if scheduler is idle for longer than this timeout (seconds). Set to 0 to never auto cleanup.
        #[serde(default)]
        pub idle_timeout: i64,
        pub scheduler: DaskScheduler,
        pub worker: DaskWorker,
    }
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

//! DaskWorkerGroup: a set of identical workers attached to a DaskCluster.

use crate::common::{DaskWorker, WorkloadStatus};

dask_kind! {
    workload:
    #[kube(kind = "DaskWorkerGroup", plural = "daskworkergroups", shortname = "daskworkers")]
    #[kube(doc = "A group of identical Dask workers joining a DaskCluster.")]
    #[kube(
        printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
        printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.worker.replicas"),
        printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas")
    )]
    pub struct DaskWorkerGroupSpec {
        /// Name of the DaskCluster these workers join.
        pub cluster: String,
        pub worker: DaskWorker,
    }
}

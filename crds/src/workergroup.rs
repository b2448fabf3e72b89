//! DaskWorkerGroup: a set of identical workers attached to a DaskCluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DaskWorker, WorkloadStatus};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    doc = "A group of identical Dask workers joining a DaskCluster.",
    kind = "DaskWorkerGroup",
    plural = "daskworkergroups",
    namespaced,
    status = "WorkloadStatus",
    shortname = "daskworkers",
    derive = "Default",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.worker.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.worker.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct DaskWorkerGroupSpec {
    /// Name of the DaskCluster these workers join.
    pub cluster: String,
    pub worker: DaskWorker,
}

//! DaskJob: a runner pod with a DaskCluster of its own for its lifetime.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::DaskClusterSpec;
use crate::common::{SimpleObjectMeta, preserve_unknown_object};
pub use crate::phases::JobPhase;

dask_kind! {
    #[kube(kind = "DaskJob", plural = "daskjobs", shortname = "djb", status = "DaskJobStatus")]
    #[kube(doc = "A Dask job: a runner pod with a DaskCluster of its own for its lifetime.")]
    #[kube(
        printcolumn(name = "Status", type_ = "string", json_path = ".status.jobStatus"),
        printcolumn(
            name = "Number Of Workers",
            type_ = "integer",
            json_path = ".spec.cluster.spec.worker.replicas"
        )
    )]
    pub struct DaskJobSpec {
        pub job: DaskJobRunner,
        pub cluster: DaskJobCluster,
    }
}

/// The runner pod's template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DaskJobRunner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    #[schemars(schema_with = "preserve_unknown_object")]
    pub spec: PodSpec,
}

/// The cluster's template. Unlike dask-kubernetes, `metadata` is kept, so the
/// labels and annotations users put there reach the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DaskJobCluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    pub spec: DaskClusterSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskJobStatus {
    /// JobCreated | ClusterCreated | Running | Successful | Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_runner_pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Degraded (an invalid spec) and ClusterReady (whether the job's
    /// cluster runs, so its runner can start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

impl DaskJobStatus {
    pub fn is_finished(&self) -> bool {
        self.job_status.is_some_and(JobPhase::is_finished)
    }
}

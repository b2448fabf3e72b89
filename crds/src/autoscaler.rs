//! DaskAutoscaler: adaptive scaling of a cluster's workers between bounds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

dask_kind! {
    #[kube(kind = "DaskAutoscaler", plural = "daskautoscalers", status = "DaskAutoscalerStatus")]
    #[kube(doc = "Adaptive scaling of a DaskCluster between a minimum and a maximum \
                  number of workers.")]
    #[kube(
        printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
        printcolumn(name = "Minimum", type_ = "integer", json_path = ".spec.minimum"),
        printcolumn(name = "Maximum", type_ = "integer", json_path = ".spec.maximum"),
        printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredWorkers")
    )]
    pub struct DaskAutoscalerSpec {
        /// Name of the DaskCluster to scale.
        pub cluster: String,
        /// Minimum number of workers.
        pub minimum: i32,
        /// Maximum number of workers.
        pub maximum: i32,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskAutoscalerStatus {
    /// The worker count last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_workers: Option<i32>,
    /// When the count last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Degraded (an invalid spec or annotation) and ScalingActive (whether
    /// the cluster runs and its scheduler tells its adaptive target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

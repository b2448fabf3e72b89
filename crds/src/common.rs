//! Pieces shared by the four kinds: pod/service templates, the opaque schema
//! for embedded Kubernetes objects, and status conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Embedded PodSpecs and ServiceSpecs are typed in Rust but opaque in the CRD:
/// dask-kubernetes inlines the whole 1.21 PodSpec (a 471 KB DaskJob CRD, too big
/// for client-side `kubectl apply`, and silently pruning any newer pod field).
/// The API server validates the real Pod and Service when they are created.
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Labels and annotations for the objects made from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SimpleObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

fn one() -> i32 {
    1
}

/// The worker template: `replicas` pods of `spec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DaskWorker {
    /// Number of workers.
    #[serde(default = "one")]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    #[schemars(schema_with = "preserve_unknown_object")]
    pub spec: PodSpec,
}

/// The scheduler template: its pod and the Service in front of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DaskScheduler {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    #[schemars(schema_with = "preserve_unknown_object")]
    pub spec: PodSpec,
    #[schemars(schema_with = "preserve_unknown_object")]
    pub service: ServiceSpec,
}

/// `metav1.Condition`s, one per type (a list-map keyed by `type`).
fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": { "type": "string" },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "reason": { "type": "string" },
                "message": { "type": "string" },
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "observedGeneration": { "type": "integer", "format": "int64" }
            }
        }
    })
}

/// Status common to DaskCluster and DaskWorkerGroup: what exists, computed by
/// the operator from the cluster's real objects on every reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Created | Pending | Running | Error (the values dask-kubernetes uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Worker pods that exist (the scale subresource's status.replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Worker pods that are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the worker pods, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A condition with the given type, status and reason, stamped now.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

//! Pieces shared by the four kinds: pod/service templates, the opaque schema
//! for embedded Kubernetes objects, and status conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub use crate::phases::ClusterPhase;

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
pub(crate) fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
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
    /// Created | Pending | Running | Error (the values dask-kubernetes uses), or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
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
    /// Ready, Progressing, Degraded; SchedulerReady and WorkersReady (with
    /// the reason a pod does not run, e.g. ImagePullBackOff or OOMKilled);
    /// IdleCheck when the scheduler does not answer the idleness check.
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

/// `new` conditions, each keeping the `lastTransitionTime` of its `old`
/// namesake when its status is the same: the time says when the condition
/// last flipped, not when the status was last written.
pub fn keep_transition_times(mut new: Vec<Condition>, old: &[Condition]) -> Vec<Condition> {
    for condition in &mut new {
        let same = old.iter().find(|o| o.type_ == condition.type_ && o.status == condition.status);
        if let Some(same) = same {
            condition.last_transition_time = same.last_transition_time.clone();
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(condition: Condition, seconds: i64) -> Condition {
        let time = k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap();
        Condition { last_transition_time: Time(time), ..condition }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let old = vec![
            at(condition("Ready", false, "SchedulerNotReady", "", Some(1)), 100),
            at(condition("Degraded", false, "Valid", "", Some(1)), 100),
        ];
        let new = vec![
            at(condition("Ready", true, "AllReady", "", Some(2)), 200),
            at(condition("Degraded", false, "Valid", "other message", Some(2)), 200),
            at(condition("Progressing", true, "Reconciling", "", Some(2)), 200),
        ];
        let merged = keep_transition_times(new, &old);
        let time = |t: &str| merged.iter().find(|c| c.type_ == t).unwrap().last_transition_time.0;
        assert_eq!(time("Ready").as_second(), 200, "Ready flipped False -> True");
        assert_eq!(time("Degraded").as_second(), 100, "Degraded stayed False");
        assert_eq!(time("Progressing").as_second(), 200, "a new condition starts now");
        assert_eq!(merged[1].message, "other message", "only the time is carried over");
    }
}

//! The `kubernetes.dask.org/v1` custom resources, schema-compatible with
//! dask-kubernetes (its manifests and `KubeCluster` work unchanged), plus what
//! it lacks: a status subresource with replicas, readiness, a selector and
//! conditions, and a scale subresource that HorizontalPodAutoscalers can use.

// kube's `#[kube(printcolumn(..), printcolumn(..))]` repeats `type_ = ...` by
// design; clippy reads the repeats as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

/// Declares the spec struct of one of the four kinds with what they share:
/// the derives, the API group and version, the namespaced scope, the derives
/// of the generated kind, and the Age column (always the last). The kind's
/// own `#[kube]` attributes (kind, plural, status, columns) come with the
/// struct; kube-derive reads every `#[kube]` attribute of a type, in order.
/// A `workload:` kind (DaskCluster, DaskWorkerGroup) also has a WorkloadStatus
/// and a scale subresource over its workers.
macro_rules! dask_kind {
    (workload: $($kind:tt)*) => {
        dask_kind! {
            #[kube(status = "WorkloadStatus")]
            #[kube(scale(
                spec_replicas_path = ".spec.worker.replicas",
                status_replicas_path = ".status.replicas",
                label_selector_path = ".status.selector"
            ))]
            $($kind)*
        }
    };
    ($(#[$attr:meta])* pub struct $spec:ident $fields:tt) => {
        #[derive(
            kube::CustomResource,
            serde::Serialize,
            serde::Deserialize,
            Clone,
            Debug,
            Default,
            PartialEq,
            schemars::JsonSchema,
        )]
        #[kube(group = "kubernetes.dask.org", version = "v1", namespaced)]
        #[kube(derive = "Default", derive = "PartialEq")]
        $(#[$attr])*
        #[kube(printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        ))]
        pub struct $spec $fields
    };
}

pub mod annotations;
pub mod autoscaler;
pub mod cluster;
pub mod common;
pub mod conditions;
pub mod env;
pub mod gateway;
pub mod job;
pub mod labels;
pub mod phases;
pub mod scheduler;
pub mod workergroup;

pub use autoscaler::{DaskAutoscaler, DaskAutoscalerSpec, DaskAutoscalerStatus};
pub use cluster::{DaskCluster, DaskClusterSpec};
pub use common::{DaskScheduler, DaskWorker, SimpleObjectMeta, WorkloadStatus};
pub use job::{DaskJob, DaskJobCluster, DaskJobRunner, DaskJobSpec, DaskJobStatus};
pub use phases::{ClusterPhase, JobPhase};
pub use workergroup::{DaskWorkerGroup, DaskWorkerGroupSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD with the file name it is written to by `crdgen`.
pub fn all_crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("daskclusters.yaml", DaskCluster::crd()),
        ("daskworkergroups.yaml", DaskWorkerGroup::crd()),
        ("daskautoscalers.yaml", DaskAutoscaler::crd()),
        ("daskjobs.yaml", DaskJob::crd()),
    ]
}

/// The YAML `crdgen` writes for a CRD.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serialises")
}

//! Objects of the four kinds that the API server accepted but that do not
//! read as their kind (see [`dask_common::readable`]): the controllers'
//! watches leave them out, so every other object keeps reconciling, and each
//! is reported on itself once per version of its spec. Only an edit can fix
//! one, so nothing is retried: a Warning Event names the field at fault and,
//! where the kind's status can say so, an Error phase and a Degraded
//! condition say it too, as for any invalid spec.

use std::fmt::Debug;
use std::sync::Arc;

use dask_common::readable::{Guarded, Unreadable};
use dask_crds::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

use crate::validate::Invalid;
use crate::{Context, Error, apply_params, cluster};

/// A kind whose unreadable objects are reported.
pub trait Reported:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The status that says the spec cannot be read, if the kind's can.
    fn unreadable_status(_metadata: &kube::api::ObjectMeta, _invalid: &Invalid) -> Option<Value> {
        None
    }
}

impl Reported for DaskCluster {
    fn unreadable_status(metadata: &kube::api::ObjectMeta, invalid: &Invalid) -> Option<Value> {
        workload_status(metadata, invalid)
    }
}

impl Reported for DaskWorkerGroup {
    fn unreadable_status(metadata: &kube::api::ObjectMeta, invalid: &Invalid) -> Option<Value> {
        workload_status(metadata, invalid)
    }
}

/// Its status also keeps what it last did (a status write replaces the
/// whole status), which an object that does not read cannot carry over: the
/// Warning alone tells it.
impl Reported for DaskAutoscaler {}

/// Its phases are its runner's (Failed would end the job for good, even once
/// its spec is fixed), and like an autoscaler's its status cannot be carried
/// over: the Warning alone tells it.
impl Reported for DaskJob {}

/// An unreadable object as the invalid spec it is, under the path of the
/// field at fault.
pub fn invalid(unreadable: &Unreadable) -> Invalid {
    Invalid::new(&unreadable.field, format!("cannot be read: {}", unreadable.problem))
}

/// The status of an unreadable DaskCluster or DaskWorkerGroup: Error, and why.
fn workload_status(metadata: &kube::api::ObjectMeta, invalid: &Invalid) -> Option<Value> {
    let status = cluster::invalid_workload(metadata.generation, &[], invalid);
    serde_json::to_value(status).ok()
}

/// The sink for a controller's readable cache (`cached_readable`): each
/// unreadable object is reported on a task of the sink's own, so the watch
/// never waits for the API server.
pub fn reporter<K: Reported>(
    ctx: &Arc<Context>,
    kind: &'static str,
) -> impl FnMut(Unreadable) + Send + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Unreadable>();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(unreadable) = rx.recv().await {
            report::<K>(&ctx, kind, unreadable).await;
        }
    });
    move |unreadable| {
        // Only fails when the runtime is going away.
        tx.send(unreadable).ok();
    }
}

async fn report<K: Reported>(ctx: &Context, kind: &'static str, unreadable: Unreadable) {
    let error = Error::from(invalid(&unreadable));
    let status = K::unreadable_status(&unreadable.metadata, &invalid(&unreadable));
    let obj = Guarded::<K>(Err(unreadable));
    ctx.metrics.failure(kind, &error);
    warn!(kind, name = %obj.name_any(), %error, "cannot read it; left alone until its spec is fixed");
    ctx.events.warning(&obj, error.reason(), &error.to_string()).await;
    let Some(status) = status else { return };
    // The status subresource takes a status without the spec.
    let api: Api<Guarded<K>> = ctx.api(&obj.namespace().unwrap_or_default());
    let body = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    if let Err(e) = api.patch_status(&obj.name_any(), &apply_params(), &Patch::Apply(body)).await {
        crate::report::status_not_written(ctx, &obj, &e).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_cluster_is_in_error_with_the_field_at_fault() {
        let unreadable = Unreadable {
            metadata: kube::api::ObjectMeta { generation: Some(4), ..Default::default() },
            field: "spec.worker.spec.containers[0].ports".into(),
            problem: "invalid type: string \"oops\", expected a sequence".into(),
        };
        let invalid = invalid(&unreadable);
        let status = DaskCluster::unreadable_status(&unreadable.metadata, &invalid).unwrap();
        assert_eq!(status["phase"], "Error");
        assert_eq!(status["observedGeneration"], 4);
        let degraded = &status["conditions"][0];
        assert_eq!(
            (degraded["type"].as_str(), degraded["reason"].as_str()),
            (Some("Degraded"), Some("InvalidSpec"))
        );
        assert_eq!(
            degraded["message"],
            "spec.worker.spec.containers[0].ports cannot be read: invalid type: string \"oops\", expected a sequence"
        );
        assert!(DaskJob::unreadable_status(&unreadable.metadata, &invalid).is_none());
    }
}

//! What becomes of a failed reconcile, after controller-rs: the error policy
//! counts and logs it and picks the retry; the controller's stream of results
//! then carries it to a Warning Event on the object, where whoever owns the
//! object sees it (`kubectl describe`), not only whoever reads the logs.
//! An invalid spec is also told by the object's status: a Degraded
//! condition naming the field at fault.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::core::object::HasStatus;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::patch_status;
use crate::validate::Invalid;
use crate::{Context, Error};

/// Failures reported at once; a controller's results wait beyond that.
const REPORTS_AT_ONCE: usize = 16;

/// The shared error policy: count the failure; an invalid spec waits for the
/// user to change it, with no retry storm; anything else is retried after `retry`.
pub fn error_policy<K: Resource>(
    ctx: &Context,
    obj: &K,
    error: &Error,
    kind: &'static str,
    retry: Duration,
) -> Action {
    ctx.metrics.failure(kind, error);
    warn!(kind, name = obj.meta().name.as_deref().unwrap_or_default(), %error, "reconcile failed");
    if error.is_invalid_spec() { Action::await_change() } else { Action::requeue(retry) }
}

type ControllerResult<K> = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>;

/// Runs `report` on each failed reconcile of a controller's `results`, with
/// the object as the controller's cache has it; watch failures (such as a
/// missing permission to list) have no object and are logged.
pub async fn failures<K, F, Fut>(
    results: impl Stream<Item = ControllerResult<K>>,
    store: Store<K>,
    kind: &'static str,
    report: F,
) where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(Arc<K>, Error) -> Fut,
    Fut: Future<Output = ()>,
{
    results
        .filter_map(|result| {
            let failed = match result {
                Err(controller::Error::ReconcilerFailed(error, obj)) => {
                    let mut key = ObjectRef::<K>::new(&obj.name);
                    if let Some(ns) = &obj.namespace {
                        key = key.within(ns);
                    }
                    store.get(&key).map(|obj| (obj, error))
                }
                Err(controller::Error::QueueError(error)) => {
                    warn!(kind, %error, "watch failed; retrying");
                    None
                }
                _ => None,
            };
            futures::future::ready(failed)
        })
        .for_each_concurrent(REPORTS_AT_ONCE, |(obj, error)| report(obj, error))
        .await
}

/// A kind whose status tells that its spec is invalid.
pub trait InvalidStatus:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: Serialize>
    + Clone
    + Debug
    + DeserializeOwned
    + 'static
{
    /// The status that says what is wrong with the spec.
    fn invalid_status(&self, invalid: &Invalid) -> Self::Status;
}

/// [`failures`], each reported by [`report_failed`].
pub async fn warn_failures<K: InvalidStatus>(
    results: impl Stream<Item = ControllerResult<K>>,
    store: Store<K>,
    kind: &'static str,
    ctx: &Context,
) {
    failures(
        results,
        store,
        kind,
        |obj, error| async move { report_failed(ctx, &*obj, &error).await },
    )
    .await
}

/// A Warning Event; for an invalid spec, also the status that says so.
pub async fn report_failed<K: InvalidStatus>(ctx: &Context, obj: &K, error: &Error) {
    warn_failed(ctx, obj, error).await;
    let Error::Invalid(invalid) = error else { return };
    if let Err(e) = patch_status(&ctx.client, obj, &obj.invalid_status(invalid)).await {
        status_not_written(ctx, obj, &e).await;
    }
}

/// The status that tells an invalid spec could not be written: the Event
/// is left to tell it.
pub async fn status_not_written<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    error: &kube::Error,
) {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    warn!(name, %error, "could not write the error status");
    let note = format!("Could not write the status that tells the invalid spec: {error}");
    ctx.events.warning(obj, "StatusNotWritten", &note).await;
}

/// The Warning Event of a failed reconcile: its reason says who has to act.
pub async fn warn_failed<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, error: &Error) {
    ctx.events.warning(obj, error.reason(), &error.to_string()).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use dask_crds::DaskCluster;
    use kube::runtime::reflector;

    use super::*;
    use crate::validate::Invalid;

    fn cluster(name: &str) -> DaskCluster {
        let mut cluster = DaskCluster::new(name, Default::default());
        cluster.metadata.namespace = Some("ns".into());
        cluster
    }

    fn failed(obj: &DaskCluster, error: Error) -> ControllerResult<DaskCluster> {
        let obj_ref = Box::new(ObjectRef::from_obj(obj).erase());
        Err(controller::Error::ReconcilerFailed(error, obj_ref))
    }

    #[tokio::test]
    async fn each_failed_reconcile_is_reported_with_its_cached_object() {
        let (store, mut writer) = reflector::store();
        let (bad, gone, good) = (cluster("bad"), cluster("gone"), cluster("good"));
        writer.apply_watcher_event(&watcher::Event::Apply(bad.clone()));
        writer.apply_watcher_event(&watcher::Event::Apply(good.clone()));
        let invalid = || Error::from(Invalid::new("spec.worker.replicas", "must not be negative"));
        let results = futures::stream::iter(vec![
            Ok((ObjectRef::from_obj(&good), Action::await_change())),
            failed(&bad, invalid()),
            // Deleted since: nothing left to report on.
            failed(&gone, invalid()),
            Err(controller::Error::QueueError(watcher::Error::NoResourceVersion)),
            failed(&bad, invalid()),
        ]);
        let reported = Mutex::new(Vec::new());
        failures(results, store, "DaskCluster", |obj, error| {
            reported.lock().unwrap().push((obj.metadata.name.clone().unwrap(), error.reason()));
            futures::future::ready(())
        })
        .await;
        let reported = reported.into_inner().unwrap();
        assert_eq!(reported, [("bad".into(), "InvalidSpec"), ("bad".into(), "InvalidSpec")]);
    }
}

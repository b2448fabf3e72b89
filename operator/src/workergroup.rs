//! DaskWorkerGroup → worker pods: exactly `spec.worker.replicas` of the current
//! template. Lost pods are replaced, stale ones rolled, and on scale-down the
//! group's own workers are retired through the scheduler before their pods go.
//!
//! Each reconcile: dereference (the group, its cluster's ports, its pods) →
//! validate → [`plan`] (pure) → apply the plan → status.

mod plan;

use std::sync::Arc;
use std::time::Duration;

use dask_crds::labels::*;
use dask_crds::{DaskCluster, DaskWorkerGroup, WorkloadStatus};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, trigger_owners, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

pub use plan::{
    WORKERS_READY, WorkerPlan, WorkerPod, group_conditions, plan, retire_addresses,
    workers_condition,
};

use crate::adopt::adopt;
use crate::api::{
    apply_params, cached_readable, get_readable, ignore_not_found, patch_status, trim_group,
};
use crate::config::CONCURRENCY;
use crate::error::Stage;
use crate::scheduler_api::SchedulerApi;
use crate::validate::Validated;
use crate::{Context, Error, Result, build, pace, report, unreadable};

const KIND: &str = "DaskWorkerGroup";

/// Pod creates one reconcile has in flight (a group of up to this many is
/// created in one round trip; each holds an API connection).
const POD_CREATES_AT_ONCE: usize = 8;

pub async fn run(ctx: Arc<Context>) {
    let worker_pods = ctx.config.watch_config().labels(&format!("{COMPONENT}={COMPONENT_WORKER}"));
    // The cache only triggers reconciles; each reads its group whole.
    let (groups, group_events) = cached_readable(
        ctx.watched(),
        ctx.config.watch_config().any_semantic(),
        trim_group,
        unreadable::reporter::<DaskWorkerGroup>(&ctx, KIND),
    );
    // A cluster that appears (its groups are adopted) or whose labels or
    // annotations change (its groups' pods inherit them) wakes its groups.
    // Their metadata is enough, and always reads.
    let clusters = ctx.watched::<PartialObjectMeta<DaskCluster>>();
    let cluster_changes = watcher(clusters, ctx.config.watch_config())
        .default_backoff()
        .touched_objects()
        .predicate_filter(predicates::labels.combine(predicates::annotations), Default::default());
    // Pods are triggers only: their metadata (owner) is enough.
    let worker_pods = watcher(ctx.watched::<PartialObjectMeta<Pod>>(), worker_pods)
        .default_backoff()
        .touched_objects();
    let store = groups.clone();
    let triggers = vec![
        // A group without a status is new: it has no pods yet.
        pace::own(group_events.applied_objects(), |g: &DaskWorkerGroup| g.status.is_none()),
        pace::related(trigger_owners(worker_pods, (), ())),
        pace::related(trigger_with(cluster_changes, move |c| groups_of(&store, &c))),
    ];
    let results = pace::run(
        groups.clone(),
        triggers,
        ctx.config.debounce,
        CONCURRENCY,
        reconcile,
        error_policy,
        ctx.clone(),
    );
    report::warn_failures(results, groups, KIND, &ctx).await;
}

/// The groups whose `spec.cluster` names `cluster`.
fn groups_of(
    store: &Store<DaskWorkerGroup>,
    cluster: &PartialObjectMeta<DaskCluster>,
) -> Vec<ObjectRef<DaskWorkerGroup>> {
    let (name, ns) = (cluster.name_any(), cluster.namespace());
    store
        .state()
        .iter()
        .filter(|g| g.spec.cluster == name && g.namespace() == ns)
        .map(|g| ObjectRef::from_obj(&**g))
        .collect()
}

#[instrument(skip(cached, ctx), fields(name = %cached.name_any(), namespace = cached.namespace().unwrap_or_default()))]
async fn reconcile(cached: Arc<DaskWorkerGroup>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let name = cached.name_any();
    let ns = cached.namespace().unwrap_or_default();
    // A quorum read: pods are never built from a stale (or trimmed) template.
    let Some(group) = get_readable::<DaskWorkerGroup>(&ctx.client, &ns, &name).await.reading()?
    else {
        return Ok(Action::await_change());
    };
    if group.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let group = Validated::new(group)?;
    // Read whole (not from a trimmed cache): its metadata is inherited, its
    // Service ports make the scheduler's address.
    let cluster = ctx.api::<DaskCluster>(&ns).get_opt(&group.spec.cluster).await.reading()?;
    if let Some(cluster) = &cluster
        && cluster.meta().deletion_timestamp.is_none()
    {
        adopt(&ctx, &*group, cluster).await?;
    }
    let inherited = build::worker_inheritance(cluster.as_ref(), &group);
    let scheduler = cluster.map(|c| c.spec.scheduler).unwrap_or_default();
    let domain = &ctx.config.cluster_domain;
    let address = build::scheduler_address(&group.spec.cluster, &ns, domain, scheduler.comm_port());
    let hash = build::template_hash(&group, &inherited, &address);

    // A quorum list, not a cache: a reconcile never acts on a view older than
    // its own last writes, so it never creates a pod twice.
    let pods: Api<Pod> = ctx.api(&ns);
    let selector = format!("{WORKER_GROUP_NAME}={name},{COMPONENT}={COMPONENT_WORKER}");
    let all = pods.list(&ListParams::default().labels(&selector)).await.reading()?.items;
    let mut plan = plan(&group, &all, &hash);
    // Before the plan deletes finished pods: how they ended is the news.
    let ready = plan.status.ready_replicas.unwrap_or(0);
    let workers = workers_condition(&group, &all, ready, k8s_openapi::jiff::Timestamp::now());
    plan.status.conditions = group_conditions(&group, workers);

    for pod in &plan.finished {
        delete_pod(&pods, pod).await?;
    }
    // Side by side: a new group's pods cost one round trip, not one per pod.
    let creates = (0..plan.create).map(|_| {
        let pod_name = build::new_worker_name(&name);
        let pod = build::worker_pod(&group, &inherited, &pod_name, &address, &hash);
        let pods = &pods;
        async move { pods.patch(&pod_name, &apply_params(), &Patch::Apply(pod)).await.applying() }
    });
    futures::stream::iter(creates)
        .buffer_unordered(POD_CREATES_AT_ONCE)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    if plan.create > 0 {
        info!(created = plan.create, "created worker pods");
        let note = format!("Created {} worker pod(s)", plan.create);
        ctx.events.normal(&*group, "ScaledUp", &note).await;
    }
    if plan.scaled_down() > 0 {
        let port = scheduler.dashboard_port();
        let base = SchedulerApi::base_url(&group.spec.cluster, &ns, domain, port);
        scale_down(&ctx, &group, &pods, &plan, &base).await?;
    }
    if !plan.roll.is_empty() {
        for pod in &plan.roll {
            delete_pod(&pods, pod).await?;
        }
        let note = format!("Replaced {} worker pod(s) of an older template", plan.roll.len());
        ctx.events.normal(&*group, "RolledOut", &note).await;
    }

    if group.status.as_ref() != Some(&plan.status) {
        let old = group.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        for condition in crate::problems::new_problems(old, &plan.status.conditions) {
            ctx.events.warning(&*group, &condition.reason, &condition.message).await;
        }
        patch_status(&ctx.client, &*group, &plan.status).await.writing_status()?;
    }
    Ok(Action::requeue(Duration::from_secs(if plan.settled { 300 } else { 5 })))
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    ignore_not_found(pods.delete(name, &DeleteParams::default()).await).applying()?;
    Ok(())
}

/// Removes the plan's surplus pods: the ready ones are retired through the
/// scheduler first, so their results move to the remaining workers; a failed
/// retirement is reported and the pods go anyway (the count is the user's).
async fn scale_down(
    ctx: &Context,
    group: &DaskWorkerGroup,
    pods: &Api<Pod>,
    plan: &WorkerPlan,
    base: &str,
) -> Result<()> {
    if !plan.retire.is_empty() {
        match retire(ctx, base, &plan.retire).await {
            Ok(n) => info!(retired = n, "retired workers through the scheduler"),
            Err(e) => {
                warn!(error = %e, "could not retire workers; deleting their pods anyway");
                let note = format!("Deleting pods without retirement: {e}");
                ctx.events.warning(group, "RetireFailed", &note).await;
            }
        }
    }
    for pod in plan.delete.iter().chain(plan.retire.iter().map(|p| &p.name)) {
        delete_pod(pods, pod).await?;
    }
    let note = format!("Removed {} worker pod(s)", plan.scaled_down());
    ctx.events.normal(group, "ScaledDown", &note).await;
    Ok(())
}

/// Retires exactly the workers of `pods`; returns how many the scheduler knew.
async fn retire(ctx: &Context, base: &str, pods: &[WorkerPod]) -> Result<usize> {
    let workers = ctx.scheduler.workers(base).await?;
    let addresses = retire_addresses(&workers, pods);
    if !addresses.is_empty() {
        ctx.scheduler.retire(base, &addresses).await?;
    }
    Ok(addresses.len())
}

impl report::InvalidStatus for DaskWorkerGroup {
    fn invalid_status(&self, invalid: &crate::validate::Invalid) -> WorkloadStatus {
        let previous = self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        crate::cluster::invalid_workload(self.metadata.generation, previous, invalid)
    }
}

fn error_policy(group: Arc<DaskWorkerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    report::error_policy(&ctx, &*group, error, KIND, Duration::from_secs(5))
}

/// Reconciles against a mocked API: the requests each path makes.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mock_api::{self, Call, echo, refused, with_status};

    const GROUP: &str = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskworkergroups/g";

    #[tokio::test]
    async fn an_invalid_group_is_one_warning_and_one_status_write() {
        let invalid = json!({
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskWorkerGroup",
            "metadata": { "name": "g", "namespace": "ns", "uid": "g-uid", "generation": 1 },
            "spec": { "cluster": "c", "worker": { "replicas": 1, "spec": { "containers": [] } } },
        });
        let stored = invalid.clone();
        let (ctx, calls) =
            mock_api::context(move |call: &Call| match (call.method.as_str(), call.resource()) {
                ("GET", GROUP) => (200, stored.clone()),
                ("PATCH", path) if path == format!("{GROUP}/status") => with_status(&stored, call),
                ("POST", _) => echo(call),
                _ => refused(404, "NotFound", "not in this test"),
            });
        let obj: DaskWorkerGroup = serde_json::from_value(invalid).unwrap();
        let error = reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap_err();
        report::report_failed(&ctx, &obj, &error).await;
        assert_eq!(calls.events(), [("Warning".into(), "InvalidSpec".into())]);
        let writes = calls.status_writes(GROUP);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0]["status"]["phase"], "Error");
        assert_eq!(writes[0]["status"]["conditions"][0]["reason"], "InvalidSpec");
        // The quorum read, the Event, the status: no pod was listed or made.
        assert_eq!(calls.all().len(), 3, "{:?}", calls.all());
    }
}

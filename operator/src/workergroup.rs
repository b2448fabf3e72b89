//! DaskWorkerGroup → worker pods: exactly `spec.worker.replicas` of the current
//! template. Lost pods are replaced, stale ones rolled, and on scale-down the
//! group's own workers are retired through the scheduler before their pods go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crds::labels::*;
use crds::{DaskCluster, DaskWorkerGroup, WorkloadStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::build::{self, TEMPLATE_HASH};
use crate::context::{cached, controller_config, on_error, publish, trim_group};
use crate::scheduler_api::SchedulerApi;
use crate::{Context, Error, Result, apply_params};

const KIND: &str = "DaskWorkerGroup";

pub async fn run(ctx: Arc<Context>) {
    let worker_pods = watcher::Config::default().labels(&format!("{COMPONENT}={COMPONENT_WORKER}"));
    // The cache only triggers reconciles; each reads its group whole.
    let (groups, group_events) = cached(
        ctx.watched::<DaskWorkerGroup>(),
        watcher::Config::default().any_semantic(),
        trim_group,
    );
    Controller::for_stream(group_events.applied_objects(), groups)
        .owns(ctx.watched::<Pod>(), worker_pods)
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A pod that will never run again: it is replaced, not counted.
fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

#[instrument(skip(cached, ctx), fields(name = %cached.name_any(), namespace = cached.namespace().unwrap_or_default()))]
async fn reconcile(cached: Arc<DaskWorkerGroup>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let name = cached.name_any();
    let ns = cached.namespace().unwrap_or_default();
    // A quorum read: pods are never built from a stale (or trimmed) template.
    let Some(group) =
        Api::<DaskWorkerGroup>::namespaced(ctx.client.clone(), &ns).get_opt(&name).await?
    else {
        return Ok(Action::await_change());
    };
    if group.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Err(reason) = build::validate_worker(&group.spec.worker, "spec.worker") {
        return Err(Error::Invalid { kind: KIND, name, reason });
    }
    // The scheduler's address comes from its cluster's Service ports.
    let cluster = Api::<DaskCluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&group.spec.cluster)
        .await?;
    let (comm_port, dashboard_port) =
        cluster.as_ref().map_or((build::DEFAULT_COMM_PORT, build::DEFAULT_DASHBOARD_PORT), |c| {
            (build::comm_port(c), build::dashboard_port(c))
        });
    let address =
        build::scheduler_address(&group.spec.cluster, &ns, &ctx.cluster_domain, comm_port);
    let hash = build::template_hash(&group, &address);

    // A quorum list, not a cache: a reconcile never acts on a view older than
    // its own last writes, so it never creates a pod twice.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{WORKER_GROUP_NAME}={name},{COMPONENT}={COMPONENT_WORKER}");
    let all = pods.list(&ListParams::default().labels(&selector)).await?.items;
    let (finished, live): (Vec<Pod>, Vec<Pod>) =
        all.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).partition(is_finished);
    let (current, stale): (Vec<Pod>, Vec<Pod>) =
        live.into_iter().partition(|p| p.labels().get(TEMPLATE_HASH) == Some(&hash));
    let desired = group.spec.worker.replicas.max(0) as usize;

    for pod in &finished {
        delete_pod(&pods, pod).await?;
    }
    let mut changed = !finished.is_empty();
    if current.len() < desired {
        let missing = desired - current.len();
        for _ in 0..missing {
            let pod_name = build::new_worker_name(&name);
            let pod = build::worker_pod(&group, &pod_name, &address, &hash);
            pods.patch(&pod_name, &apply_params(), &Patch::Apply(pod)).await?;
        }
        info!(created = missing, "created worker pods");
        publish(
            &ctx,
            &group,
            EventType::Normal,
            "ScaledUp",
            &format!("Created {missing} worker pod(s)"),
        )
        .await;
        changed = true;
    } else if current.len() > desired {
        let base =
            SchedulerApi::base_url(&group.spec.cluster, &ns, &ctx.cluster_domain, dashboard_port);
        scale_down(&ctx, &group, &pods, current.clone(), current.len() - desired, &base).await?;
        changed = true;
    }
    // Roll: stale pods go once the new template's pods are all ready.
    let current_ready = current.iter().filter(|p| is_ready(p)).count();
    if !stale.is_empty() && current_ready >= desired {
        for pod in &stale {
            delete_pod(&pods, pod).await?;
        }
        publish(
            &ctx,
            &group,
            EventType::Normal,
            "RolledOut",
            &format!("Replaced {} worker pod(s) of an older template", stale.len()),
        )
        .await;
        changed = true;
    }

    // Status describes the pods as they are after this pass.
    let rolled = !stale.is_empty() && current_ready >= desired;
    let stale_left = if rolled { 0 } else { stale.len() };
    let stale_ready = if rolled { 0 } else { stale.iter().filter(|p| is_ready(p)).count() };
    let status = WorkloadStatus {
        replicas: Some((desired + stale_left) as i32),
        ready_replicas: Some((current_ready.min(desired) + stale_ready) as i32),
        selector: Some(build::worker_selector(&group)),
        observed_generation: group.metadata.generation,
        ..Default::default()
    };
    if group.status.as_ref() != Some(&status) {
        let body =
            json!({ "apiVersion": "kubernetes.dask.org/v1", "kind": KIND, "status": status });
        Api::<DaskWorkerGroup>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &apply_params(), &Patch::Apply(body))
            .await?;
    }
    let settled = !changed && stale.is_empty() && current_ready >= desired;
    Ok(Action::requeue(Duration::from_secs(if settled { 300 } else { 5 })))
}

async fn delete_pod(pods: &Api<Pod>, pod: &Pod) -> Result<()> {
    match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes `count` of this group's pods: unready ones first (they hold no
/// data), then ready workers, retired through the scheduler so their results
/// move to the remaining workers before the pod is deleted.
async fn scale_down(
    ctx: &Context,
    group: &DaskWorkerGroup,
    pods: &Api<Pod>,
    mut candidates: Vec<Pod>,
    count: usize,
    base: &str,
) -> Result<()> {
    // Unready first, then the youngest.
    candidates.sort_by_key(|p| {
        (is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)))
    });
    let victims: Vec<Pod> = candidates.into_iter().take(count).collect();
    let ready: Vec<&Pod> = victims.iter().filter(|p| is_ready(p)).collect();
    if !ready.is_empty() {
        match retire(ctx, base, &ready).await {
            Ok(n) => info!(retired = n, "retired workers through the scheduler"),
            Err(e) => {
                warn!(error = %e, "could not retire workers; deleting their pods anyway");
                publish(
                    ctx,
                    group,
                    EventType::Warning,
                    "RetireFailed",
                    &format!("Deleting pods without retirement: {e}"),
                )
                .await;
            }
        }
    }
    for pod in &victims {
        delete_pod(pods, pod).await?;
    }
    publish(
        ctx,
        group,
        EventType::Normal,
        "ScaledDown",
        &format!("Removed {} worker pod(s)", victims.len()),
    )
    .await;
    Ok(())
}

/// Maps pods to the scheduler's workers by name (DASK_WORKER_NAME is the pod's
/// name) or by pod IP, and retires exactly those: never another group's.
async fn retire(ctx: &Context, base: &str, pods: &[&Pod]) -> Result<usize> {
    let workers = ctx.scheduler.workers(base).await?;
    let by_name: BTreeMap<&str, &str> =
        workers.iter().map(|w| (w.name.as_str(), w.address.as_str())).collect();
    let addresses: Vec<String> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            if let Some(address) = by_name.get(name.as_str()) {
                return Some(address.to_string());
            }
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            workers
                .iter()
                .find(|w| w.address.contains(&format!("://{ip}:")))
                .map(|w| w.address.clone())
        })
        .collect();
    if !addresses.is_empty() {
        ctx.scheduler.retire(base, &addresses).await?;
    }
    Ok(addresses.len())
}

fn error_policy(group: Arc<DaskWorkerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    on_error(group, error, ctx, KIND, Duration::from_secs(5))
}

//! DaskCluster → scheduler Deployment + Service + default DaskWorkerGroup, and
//! a status computed from them; `spec.idleTimeout` through the scheduler API.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crds::common::condition;
use crds::{DaskCluster, DaskWorkerGroup, WorkloadStatus};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::applied::Applied;
use crate::build;
use crate::context::{cached, controller_config, on_error, publish, strip_bookkeeping, trim_group};
use crate::scheduler_api::SchedulerApi;
use crate::{Context, Error, Result, apply_params};

const KIND: &str = "DaskCluster";

/// What the cluster controller knows of its children: watch caches (which are
/// also its triggers) and what it last applied to them.
struct Children {
    deployments: Store<Deployment>,
    services: Store<Service>,
    groups: Store<DaskWorkerGroup>,
    applied: Arc<Applied>,
}

struct State {
    ctx: Arc<Context>,
    children: Children,
}

pub async fn run(ctx: Arc<Context>) {
    let scheduler_children = watcher::Config::default().labels(crds::labels::CLUSTER_NAME);
    // The caches keep only what reconcile reads: a thousand clusters' pod
    // templates and managed fields would otherwise be most of the memory.
    let (deployments, deployment_events) =
        cached(ctx.watched::<Deployment>(), scheduler_children.clone(), |d: &mut Deployment| {
            strip_bookkeeping(d);
            if let Some(spec) = d.spec.as_mut() {
                spec.template = Default::default();
            }
        });
    let (services, service_events) =
        cached(ctx.watched::<Service>(), scheduler_children, |s: &mut Service| {
            strip_bookkeeping(s);
            s.spec = None;
        });
    let (groups, group_events) =
        cached(ctx.watched::<DaskWorkerGroup>(), watcher::Config::default(), trim_group);
    // Clusters are cached without their pod and Service templates; each
    // reconcile reads its cluster whole (see `reconcile`).
    let (clusters, cluster_events) = cached(
        ctx.watched::<DaskCluster>(),
        watcher::Config::default().any_semantic(),
        |c: &mut DaskCluster| {
            strip_bookkeeping(c);
            c.spec.scheduler.spec = Default::default();
            c.spec.scheduler.service = Default::default();
            c.spec.worker.spec = Default::default();
        },
    );
    let state = Arc::new(State {
        ctx: ctx.clone(),
        children: Children { deployments, services, groups, applied: Arc::default() },
    });
    Controller::for_stream(cluster_events.applied_objects(), clusters)
        .owns_stream(deployment_events.touched_objects())
        .owns_stream(service_events.touched_objects())
        .owns_stream(group_events.touched_objects())
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(reconcile, error_policy, state)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[instrument(skip(cached, state), fields(name = %cached.name_any(), namespace = cached.namespace().unwrap_or_default()))]
async fn reconcile(cached: Arc<DaskCluster>, state: Arc<State>) -> Result<Action> {
    let (ctx, children) = (&state.ctx, &state.children);
    let _timer = ctx.metrics.reconcile(KIND);
    let name = cached.name_any();
    let ns = cached.namespace().unwrap_or_default();
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
    // A quorum read: children are never built from a stale (or trimmed) spec.
    let Some(cluster) = clusters.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if cluster.meta().deletion_timestamp.is_some() {
        // Children go by owner-reference garbage collection; nothing to do.
        return Ok(Action::await_change());
    }

    if let Err(reason) = build::validate_cluster(&cluster) {
        return Err(Error::Invalid { kind: KIND, name, reason });
    }

    let first_time = cluster.status.as_ref().and_then(|s| s.phase.as_deref()).is_none();
    let group_ref = ObjectRef::new(&build::default_group_name(&name)).within(&ns);
    if let Some(existing) = children.groups.get(&group_ref)
        && let Some(replicas) = build::directly_scaled_replicas(&existing, &cluster)
    {
        info!(replicas, "the default worker group was scaled directly; the cluster follows");
        let scale = json!({ "spec": { "replicas": replicas } });
        clusters.patch_scale(&name, &PatchParams::default(), &Patch::Merge(scale)).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The scheduler and the workers are applied together. The Service goes
    // on the side: the API server allocates cluster IPs one at a time, and
    // under load a Service can take seconds that the pods need not wait for;
    // the cluster is Running only once it exists.
    let (applied, client) = (&children.applied, &ctx.client);
    let (deployment, group) = tokio::try_join!(
        applied.ensure(client, &children.deployments, build::scheduler_deployment(&cluster)),
        applied.ensure(client, &children.groups, build::default_worker_group(&cluster)),
    )?;
    let service_exists = applied.ensure_in_background(
        client,
        &children.services,
        build::scheduler_service(&cluster),
    );
    if first_time {
        publish(
            ctx,
            &cluster,
            EventType::Normal,
            "Created",
            "Created the scheduler, its Service and the default worker group",
        )
        .await;
    }

    let scheduler_ready =
        deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1;
    let status = cluster_status(&cluster, &group, scheduler_ready, service_exists);
    let running = status.phase.as_deref() == Some("Running");
    if status_changed(&cluster, &status) {
        let body =
            json!({ "apiVersion": "kubernetes.dask.org/v1", "kind": KIND, "status": status });
        clusters.patch_status(&name, &apply_params(), &Patch::Apply(body)).await?;
    }

    if running && cluster.spec.idle_timeout > 0 {
        return check_idle(&cluster, ctx).await;
    }
    Ok(Action::requeue(Duration::from_secs(if running { 300 } else { 15 })))
}

/// Status from what exists: Running only when the scheduler really is ready
/// and its Service exists.
fn cluster_status(
    cluster: &DaskCluster,
    group: &DaskWorkerGroup,
    scheduler_ready: bool,
    service_exists: bool,
) -> WorkloadStatus {
    let generation = cluster.metadata.generation;
    let group_status = group.status.clone().unwrap_or_default();
    let desired = cluster.spec.worker.replicas;
    let ready = group_status.ready_replicas.unwrap_or(0);
    let replicas = group_status.replicas.unwrap_or(0);
    let reachable = scheduler_ready && service_exists;
    let settled = reachable && ready == desired && replicas == desired;
    let conditions = vec![
        condition(
            "Ready",
            settled,
            if !service_exists {
                "ServicePending"
            } else if !scheduler_ready {
                "SchedulerNotReady"
            } else if settled {
                "AllReady"
            } else {
                "WorkersNotReady"
            },
            format!(
                "scheduler ready: {scheduler_ready}; service: {service_exists}; workers ready: {ready}/{desired}"
            ),
            generation,
        ),
        condition(
            "Progressing",
            !settled,
            if settled { "Settled" } else { "Reconciling" },
            format!("{replicas} worker pods for {desired} wanted"),
            generation,
        ),
        condition("Degraded", false, "Valid", "", generation),
    ];
    WorkloadStatus {
        phase: Some(if reachable { "Running" } else { "Pending" }.into()),
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        selector: Some(build::worker_selector(group)),
        observed_generation: generation,
        conditions,
    }
}

/// Status writes are skipped when nothing but timestamps would change, so a
/// settled cluster costs no writes.
fn status_changed(cluster: &DaskCluster, new: &WorkloadStatus) -> bool {
    let Some(old) = cluster.status.as_ref() else { return true };
    let strip = |s: &WorkloadStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            );
        }
        s
    };
    strip(old) != strip(new)
}

/// Deletes the cluster once its scheduler has been idle for `spec.idleTimeout`.
async fn check_idle(cluster: &DaskCluster, ctx: &Context) -> Result<Action> {
    let ns = cluster.namespace().unwrap_or_default();
    let base = SchedulerApi::base_url(
        &cluster.name_any(),
        &ns,
        &ctx.cluster_domain,
        build::dashboard_port(cluster),
    );
    let timeout = cluster.spec.idle_timeout as f64;
    let poll = Action::requeue(Duration::from_secs_f64(timeout.clamp(1.0, 30.0)));
    let idle_since = match ctx.scheduler.idle_since(&base).await {
        Ok(since) => since,
        Err(e) => {
            warn!(error = %e, "could not ask the scheduler whether it is idle");
            return Ok(poll);
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    match idle_since {
        Some(since) if now - since > timeout => {
            info!(idle_for = now - since, "idle timeout reached; deleting the cluster");
            let note = format!(
                "Scheduler idle for {:.0}s (idleTimeout {}s)",
                now - since,
                cluster.spec.idle_timeout
            );
            publish(ctx, cluster, EventType::Normal, "IdleTimeout", &note).await;
            let api: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
            api.delete(&cluster.name_any(), &DeleteParams::background()).await?;
            Ok(Action::await_change())
        }
        _ => Ok(poll),
    }
}

fn error_policy(cluster: Arc<DaskCluster>, error: &Error, state: Arc<State>) -> Action {
    let ctx = state.ctx.clone();
    if let Error::Invalid { reason, .. } = error {
        // Beyond the Event: the cluster's status says what is wrong.
        let (ctx, cluster, reason) = (ctx.clone(), cluster.clone(), reason.clone());
        tokio::spawn(async move { report_invalid(&ctx, &cluster, &reason).await });
    }
    on_error(cluster, error, ctx, KIND, Duration::from_secs(5))
}

async fn report_invalid(ctx: &Context, cluster: &DaskCluster, reason: &str) {
    let status = WorkloadStatus {
        phase: Some("Error".into()),
        observed_generation: cluster.metadata.generation,
        conditions: vec![condition(
            "Degraded",
            true,
            "InvalidSpec",
            reason,
            cluster.metadata.generation,
        )],
        ..Default::default()
    };
    let body = json!({ "apiVersion": "kubernetes.dask.org/v1", "kind": KIND, "status": status });
    let api: Api<DaskCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    if let Err(e) =
        api.patch_status(&cluster.name_any(), &apply_params(), &Patch::Apply(body)).await
    {
        warn!(error = %e, "could not write the error status");
    }
}

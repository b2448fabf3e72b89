//! DaskCluster → scheduler Deployment + Service + default DaskWorkerGroup, and
//! a status computed from them; `spec.idleTimeout` through the scheduler API.
//!
//! Each reconcile: dereference (the cluster, quorum read) → validate → build
//! (pure, [`build`]) → apply → status ([`status`]) → idle check.

mod status;

pub use status::invalid_workload;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dask_crds::conditions::reason;
use dask_crds::{DaskCluster, DaskWorkerGroup, WorkloadStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, trigger_owners, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::{
    cached, cached_readable, get_readable, patch_status, strip_bookkeeping, trim_group,
};
use crate::applied::{Applied, Background};
use crate::config::CONCURRENCY;
use crate::error::Stage;
use crate::problems::{Problem, new_problems, newly_told, pod_problems};
use crate::scheduler_api::SchedulerApi;
use crate::validate::{Invalid, Validated};
use crate::{Context, Error, Result, build, pace, report, unreadable};

const KIND: &str = "DaskCluster";

/// What the cluster controller knows of its children: watch caches (which are
/// also its triggers) and what it last applied to them.
struct Children {
    deployments: Store<Deployment>,
    services: Store<Service>,
    groups: Store<DaskWorkerGroup>,
    /// Scheduler pods: what they say when they do not run.
    pods: Store<Pod>,
    applied: Arc<Applied>,
}

struct State {
    ctx: Arc<Context>,
    children: Children,
}

pub async fn run(ctx: Arc<Context>) {
    let scheduler_children = ctx.config.watch_config().labels(dask_crds::labels::CLUSTER_NAME);
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
    // Unreadable groups are the worker-group controller's to report.
    let (groups, group_events) =
        cached_readable(ctx.watched(), ctx.config.watch_config(), trim_group, |_| {});
    // Only their status is read (why they do not run).
    let scheduler_pods = ctx.config.watch_config().labels(&format!(
        "{}={}",
        dask_crds::labels::COMPONENT,
        dask_crds::labels::COMPONENT_SCHEDULER
    ));
    let (pods, pod_events) = cached(ctx.watched::<Pod>(), scheduler_pods, |p: &mut Pod| {
        strip_bookkeeping(p);
        p.spec = None;
    });
    // Clusters are cached without their pod and Service templates; each
    // reconcile reads its cluster whole (see `reconcile`).
    let (clusters, cluster_events) = cached_readable(
        ctx.watched(),
        ctx.config.watch_config().any_semantic(),
        |c: &mut DaskCluster| {
            strip_bookkeeping(c);
            c.spec.scheduler.spec = Default::default();
            c.spec.scheduler.service = Default::default();
            c.spec.worker.spec = Default::default();
        },
        unreadable::reporter::<DaskCluster>(&ctx, KIND),
    );
    let state = Arc::new(State {
        ctx: ctx.clone(),
        children: Children { deployments, services, groups, pods, applied: Arc::default() },
    });
    // Scheduler pods belong to a ReplicaSet; their label names the cluster.
    let scheduler_pod_cluster = |pod: Pod| {
        let cluster = pod.labels().get(dask_crds::labels::CLUSTER_NAME)?;
        Some(ObjectRef::<DaskCluster>::new(cluster).within(&pod.namespace()?))
    };
    let triggers = vec![
        // A cluster without a status is new: it has no scheduler or workers yet.
        pace::own(cluster_events.applied_objects(), |c: &DaskCluster| c.status.is_none()),
        pace::related(trigger_owners(deployment_events.touched_objects(), (), ())),
        pace::related(trigger_owners(service_events.touched_objects(), (), ())),
        pace::related(trigger_owners(group_events.touched_objects(), (), ())),
        pace::related(trigger_with(pod_events.touched_objects(), scheduler_pod_cluster)),
    ];
    let results = pace::run(
        clusters.clone(),
        triggers,
        ctx.config.debounce,
        CONCURRENCY,
        reconcile,
        error_policy,
        state,
    );
    let ctx = &ctx;
    report::warn_failures(results, clusters, KIND, ctx).await;
}

impl report::InvalidStatus for DaskCluster {
    fn invalid_status(&self, invalid: &Invalid) -> WorkloadStatus {
        status::invalid(self, invalid)
    }
}

#[instrument(skip(cached, state), fields(name = %cached.name_any(), namespace = cached.namespace().unwrap_or_default()))]
async fn reconcile(cached: Arc<DaskCluster>, state: Arc<State>) -> Result<Action> {
    let (ctx, children) = (&state.ctx, &state.children);
    let _timer = ctx.metrics.reconcile(KIND);
    let name = cached.name_any();
    let ns = cached.namespace().unwrap_or_default();
    let clusters = ctx.api::<DaskCluster>(&ns);
    // A quorum read: children are never built from a stale (or trimmed) spec.
    let Some(cluster) = get_readable::<DaskCluster>(&ctx.client, &ns, &name).await.reading()?
    else {
        return Ok(Action::await_change());
    };
    if cluster.meta().deletion_timestamp.is_some() {
        // Children go by owner-reference garbage collection; nothing to do.
        return Ok(Action::await_change());
    }
    let cluster = Validated::new(cluster)?;

    let group_ref = ObjectRef::new(&build::default_group_name(&name)).within(&ns);
    if let Some(existing) = children.groups.get(&group_ref)
        && let Some(replicas) = build::directly_scaled_replicas(&existing, &cluster)
    {
        info!(replicas, "the default worker group was scaled directly; the cluster follows");
        let scale = json!({ "spec": { "replicas": replicas } });
        clusters
            .patch_scale(&name, &PatchParams::default(), &Patch::Merge(scale))
            .await
            .applying()?;
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
    let service = applied.ensure_in_background(
        client,
        &children.services,
        build::scheduler_service(&cluster),
    );
    let service_exists = service == Background::Applied;
    let service_failure = match service {
        Background::Failed(why) => Some(why),
        Background::Applied | Background::Pending => None,
    };
    if cluster.phase().is_none() {
        let note = "Created the scheduler, its Service and the default worker group";
        ctx.events.normal(&*cluster, "Created", note).await;
    }

    let scheduler_ready =
        deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1;
    let scheduler_problem = scheduler_problem(&children.pods, &name, &ns);
    let troubled = scheduler_problem.is_some();
    let now = k8s_openapi::jiff::Timestamp::now();
    let observed = status::Observed {
        scheduler_ready,
        service_exists,
        scheduler_problem,
        service_failure,
        now,
    };
    let status = status::status(&cluster, &group, observed);
    let running = status.phase == Some(dask_crds::ClusterPhase::Running);
    // A settled cluster costs no writes.
    if cluster.status.as_ref() != Some(&status) {
        warn_of_problems(ctx, &cluster, &status).await;
        patch_status(client, &*cluster, &status).await.writing_status()?;
    }
    if troubled && status.phase == Some(dask_crds::ClusterPhase::Pending) {
        // Again when the grace before Failed is up.
        return Ok(Action::requeue(status::grace_left(&status, now)));
    }

    if running && cluster.spec.idle_timeout > 0 {
        return check_idle(&cluster, &status, ctx).await;
    }
    Ok(Action::requeue(Duration::from_secs(if running { 300 } else { 15 })))
}

/// The first thing wrong with the cluster's scheduler pods (one, but two
/// during a Recreate), if they say.
fn scheduler_problem(pods: &Store<Pod>, cluster: &str, ns: &str) -> Option<Problem> {
    let now = k8s_openapi::jiff::Timestamp::now();
    pods.state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| {
            p.labels().get(dask_crds::labels::CLUSTER_NAME).map(String::as_str) == Some(cluster)
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .flat_map(|p| pod_problems(p))
        .find(|p| p.current(now))
}

/// A Warning Event for each problem the new `status` tells that the
/// cluster's status did not (one per change of reason, not per reconcile),
/// and one when the cluster is Failed.
async fn warn_of_problems(
    ctx: &Context,
    cluster: &DaskCluster,
    status: &dask_crds::WorkloadStatus,
) {
    let old = cluster.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for condition in new_problems(old, &status.conditions) {
        ctx.events.warning(cluster, &condition.reason, &condition.message).await;
    }
    for condition in newly_told(old, &status.conditions, &[reason::APPLY_FAILED]) {
        ctx.events.warning(cluster, &condition.reason, &condition.message).await;
    }
    let failed = Some(dask_crds::ClusterPhase::Failed);
    if status.phase == failed && cluster.phase() != failed {
        let why = status.conditions.iter().find(|c| c.type_ == status::SCHEDULER_READY);
        let note = format!(
            "The scheduler cannot start: {}",
            why.map(|c| c.message.as_str()).unwrap_or("see its pod")
        );
        ctx.events.warning(cluster, "Failed", &note).await;
    }
}

/// Deletes the cluster once its scheduler has been idle for `spec.idleTimeout`.
/// A scheduler that does not answer is told by the IdleCheck condition of
/// `status` (the one just written) and a Warning Event, once.
async fn check_idle(
    cluster: &DaskCluster,
    status: &WorkloadStatus,
    ctx: &Context,
) -> Result<Action> {
    let ns = cluster.namespace().unwrap_or_default();
    let port = cluster.spec.scheduler.dashboard_port();
    let base = SchedulerApi::base_url(&cluster.name_any(), &ns, &ctx.config.cluster_domain, port);
    let timeout = cluster.spec.idle_timeout;
    let poll = Action::requeue(Duration::from_secs_f64((timeout as f64).clamp(1.0, 30.0)));
    let answer = ctx.scheduler.idle_since(&base).await;
    if let Err(e) = &answer {
        warn!(error = %e, "could not ask the scheduler whether it is idle");
    }
    let answered = answer.as_ref().map(|_| ()).map_err(|e| e.to_string());
    if let Some(told) = status::with_idle_check(status, answered, cluster.metadata.generation) {
        if let Err(why) = &answer {
            let note = format!("Cannot check whether the scheduler is idle: {why}");
            ctx.events.warning(cluster, reason::SCHEDULER_UNAVAILABLE, &note).await;
        }
        patch_status(&ctx.client, cluster, &told).await.writing_status()?;
    }
    let Ok(idle_since) = answer else { return Ok(poll) };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let Some(idle_for) = status::idle_past_timeout(idle_since, now, timeout) else {
        return Ok(poll);
    };
    info!(idle_for, "idle timeout reached; deleting the cluster");
    let note = format!("Scheduler idle for {idle_for:.0}s (idleTimeout {timeout}s)");
    ctx.events.normal(cluster, "IdleTimeout", &note).await;
    let clusters = ctx.api::<DaskCluster>(&ns);
    clusters.delete(&cluster.name_any(), &DeleteParams::background()).await.applying()?;
    Ok(Action::await_change())
}

fn error_policy(cluster: Arc<DaskCluster>, error: &Error, state: Arc<State>) -> Action {
    report::error_policy(&state.ctx, &*cluster, error, KIND, Duration::from_secs(5))
}

/// Reconciles against a mocked API: the requests each path makes.
#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use serde_json::{Value, json};

    use super::*;
    use crate::mock_api::{self, Answer, Call, echo, refused, with_status};

    const CLUSTERS: &str = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskclusters/c";
    const SERVICE: &str = "/api/v1/namespaces/ns/services/c-scheduler";

    /// Cluster `c`, whose scheduler's HTTP port (1, on 127.0.0.1) answers nothing.
    fn cluster(idle_timeout: i64) -> Value {
        json!({
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
            "metadata": { "name": "c", "namespace": "ns", "uid": "c-uid", "generation": 1 },
            "spec": {
                "idleTimeout": idle_timeout,
                "worker": { "replicas": 1, "spec": { "containers": [{ "name": "w" }] } },
                "scheduler": {
                    "spec": { "containers": [{ "name": "s" }] },
                    "service": { "ports": [{ "name": "http-dashboard", "port": 1 }] },
                },
            },
        })
    }

    fn state(ctx: Arc<Context>) -> Arc<State> {
        let children = Children {
            deployments: reflector::store().0,
            services: reflector::store().0,
            groups: reflector::store().0,
            pods: reflector::store().0,
            applied: Arc::default(),
        };
        Arc::new(State { ctx, children })
    }

    /// The API server of `cluster`: it takes every apply but the Service's,
    /// which `service` answers.
    fn api(cluster: Value, service: Answer) -> impl Fn(&Call) -> Answer + Send + Sync + 'static {
        move |call| match (call.method.as_str(), call.resource()) {
            ("GET", CLUSTERS) => (200, cluster.clone()),
            ("PATCH", SERVICE) => service.clone(),
            ("PATCH", path) if path == format!("{CLUSTERS}/status") => with_status(&cluster, call),
            ("PATCH", _) | ("POST", _) => echo(call),
            _ => refused(404, "NotFound", "not in this test"),
        }
    }

    fn condition(write: &Value, type_: &str) -> (String, String, String) {
        let conditions = write["status"]["conditions"].as_array().unwrap();
        let c = conditions.iter().find(|c| c["type"] == type_).unwrap();
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (text("status"), text("reason"), text("message"))
    }

    #[tokio::test]
    async fn an_invalid_cluster_is_one_warning_and_one_status_write() {
        let mut invalid = cluster(0);
        invalid["spec"]["worker"]["replicas"] = json!(-1);
        let (ctx, calls) = mock_api::context(api(invalid.clone(), echo_nothing()));
        let obj: DaskCluster = serde_json::from_value(invalid).unwrap();
        let error = reconcile(Arc::new(obj.clone()), state(ctx.clone())).await.unwrap_err();
        assert_eq!(error.metric_label(), "invalid");
        report::report_failed(&ctx, &obj, &error).await;
        assert_eq!(calls.events(), [("Warning".into(), "InvalidSpec".into())]);
        let writes = calls.status_writes(CLUSTERS);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0]["status"]["phase"], "Error");
        let (status, reason, message) = condition(&writes[0], "Degraded");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
        assert!(message.contains("spec.worker.replicas"), "{message}");
        // The quorum read, the Event, the status: nothing was applied.
        assert_eq!(calls.all().len(), 3, "{:?}", calls.all());
    }

    fn echo_nothing() -> Answer {
        refused(500, "InternalError", "unused")
    }

    #[tokio::test]
    async fn a_refused_service_is_a_warning_and_a_degraded_condition() {
        let quota =
            r#"services "c-scheduler" is forbidden: exceeded quota: q, requested: services=1"#;
        let (ctx, calls) = mock_api::context(api(cluster(0), refused(403, "Forbidden", quota)));
        let obj = Arc::new(serde_json::from_value::<DaskCluster>(cluster(0)).unwrap());
        let state = state(ctx);
        // The Service is applied on the side: the first reconcile does not wait for it.
        reconcile(obj.clone(), state.clone()).await.unwrap();
        service_applied(&calls).await;
        // Its answer is recorded once the background apply has read it.
        tokio::time::sleep(Duration::from_millis(50)).await;

        calls.clear();
        reconcile(obj, state).await.unwrap();
        assert!(calls.events().contains(&("Warning".into(), "ApplyFailed".into())));
        let writes = calls.status_writes(CLUSTERS);
        assert_eq!(writes.len(), 1);
        let (status, reason, message) = condition(&writes[0], "Degraded");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "ApplyFailed"));
        assert!(message.contains("exceeded quota"), "{message}");
        assert_eq!(writes[0]["status"]["phase"], "Pending");
        service_applied(&calls).await;
    }

    /// Waits (a second at most) for the background apply of the Service.
    async fn service_applied(calls: &mock_api::Calls) {
        for _ in 0..100 {
            if calls.all().iter().any(|c| c.resource() == SERVICE) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the Service was not applied");
    }

    #[tokio::test]
    async fn an_idle_check_the_scheduler_does_not_answer_is_told_once() {
        let (ctx, calls) = mock_api::context(api(cluster(60), echo_nothing()));
        let mut obj: DaskCluster = serde_json::from_value(cluster(60)).unwrap();
        let running =
            WorkloadStatus { phase: Some(dask_crds::ClusterPhase::Running), ..Default::default() };
        obj.status = Some(running.clone());
        check_idle(&obj, &running, &ctx).await.unwrap();
        assert_eq!(calls.events(), [("Warning".into(), "SchedulerUnavailable".into())]);
        let writes = calls.status_writes(CLUSTERS);
        assert_eq!(writes.len(), 1);
        let (status, reason, _) = condition(&writes[0], "IdleCheck");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "SchedulerUnavailable"));
        assert_eq!(writes[0]["status"]["phase"], "Running", "the rest of the status stays");

        calls.clear();
        let told: WorkloadStatus = serde_json::from_value(writes[0]["status"].clone()).unwrap();
        check_idle(&obj, &told, &ctx).await.unwrap();
        assert!(calls.all().is_empty(), "{:?}", calls.all());
    }
}

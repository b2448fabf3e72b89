//! DaskJob: a DaskCluster of the job's own, then a runner pod once the
//! cluster runs; the job's status follows the runner, and the cluster is
//! deleted when the runner finishes.

use std::sync::Arc;
use std::time::Duration;

use crds::labels::*;
use crds::{DaskCluster, DaskJob, DaskJobStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use crate::build;
use crate::context::{on_error, publish};
use crate::{Context, Error, Result, apply_params};

const KIND: &str = "DaskJob";

pub async fn run(ctx: Arc<Context>) {
    let runners = watcher::Config::default().labels(&format!("{COMPONENT}={COMPONENT_JOB_RUNNER}"));
    Controller::new(ctx.watched::<DaskJob>(), watcher::Config::default().any_semantic())
        .owns(ctx.watched::<Pod>(), runners)
        .owns(ctx.watched::<DaskCluster>(), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn is_finished(status: &DaskJobStatus) -> bool {
    matches!(status.job_status.as_deref(), Some("Successful" | "Failed"))
}

#[instrument(skip(job, ctx), fields(name = %job.name_any(), namespace = job.namespace().unwrap_or_default()))]
async fn reconcile(job: Arc<DaskJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let mut status = job.status.clone().unwrap_or_default();
    if job.meta().deletion_timestamp.is_some() || is_finished(&status) {
        return Ok(Action::await_change());
    }
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_default();
    if job.spec.job.spec.containers.is_empty() {
        let reason = "spec.job.spec.containers must not be empty".to_string();
        return Err(Error::Invalid { kind: KIND, name, reason });
    }
    let cluster = build::job_cluster(&job);
    if let Err(reason) = build::validate_cluster(&cluster) {
        return Err(Error::Invalid { kind: KIND, name, reason: format!("spec.cluster: {reason}") });
    }

    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let cluster = clusters.patch(&name, &apply_params(), &Patch::Apply(&cluster)).await?;
    status.cluster_name = Some(name.clone());
    if status.job_status.is_none() {
        status.job_status = Some("ClusterCreated".into());
        publish(
            &ctx,
            &*job,
            EventType::Normal,
            "ClusterCreated",
            &format!("Created DaskCluster {name}"),
        )
        .await;
    }

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let runner_name = build::runner_name(&job);
    let cluster_running =
        cluster.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let runner = match pods.get_opt(&runner_name).await? {
        Some(pod) => Some(pod),
        // The runner starts once its scheduler is there to connect to.
        None if cluster_running => {
            let address = build::scheduler_address(
                &name,
                &ns,
                &ctx.cluster_domain,
                build::comm_port(&cluster),
            );
            let pod = build::runner_pod(&job, &runner_name, &address);
            info!(runner = %runner_name, "starting the job runner");
            Some(pods.patch(&runner_name, &apply_params(), &Patch::Apply(pod)).await?)
        }
        None => None,
    };
    if let Some(pod) = &runner {
        status.job_runner_pod_name = Some(runner_name.clone());
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") if status.job_status.as_deref() != Some("Running") => {
                status.job_status = Some("Running".into());
                status.start_time = Some(Timestamp::now().to_string());
            }
            Some(phase @ ("Succeeded" | "Failed")) => {
                let outcome = if phase == "Succeeded" { "Successful" } else { "Failed" };
                status.job_status = Some(outcome.into());
                status.start_time.get_or_insert_with(|| Timestamp::now().to_string());
                status.end_time = Some(Timestamp::now().to_string());
                publish(
                    &ctx,
                    &*job,
                    EventType::Normal,
                    outcome,
                    &format!("Runner {runner_name} {phase}; deleting DaskCluster {name}"),
                )
                .await;
                clusters
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .or_else(ignore_not_found)?;
            }
            _ => {}
        }
    }
    if job.status.as_ref() != Some(&status) {
        let body =
            json!({ "apiVersion": "kubernetes.dask.org/v1", "kind": KIND, "status": status });
        Api::<DaskJob>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &apply_params(), &Patch::Apply(body))
            .await?;
    }
    Ok(if is_finished(&status) {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(30))
    })
}

fn ignore_not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(ref s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

fn error_policy(job: Arc<DaskJob>, error: &Error, ctx: Arc<Context>) -> Action {
    on_error(job, error, ctx, KIND, Duration::from_secs(5))
}

//! DaskJob: a DaskCluster of the job's own, then a runner pod once the
//! cluster runs; the job's status follows the runner, and the cluster is
//! deleted when the runner finishes.
//!
//! Each reconcile: validate → build and apply the cluster → dereference the
//! runner → [`job_transition`] (pure) → apply the step → status.

mod transition;

use std::sync::Arc;
use std::time::Duration;

use dask_crds::labels::*;
use dask_crds::{DaskCluster, DaskJob, DaskJobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

pub use transition::{JobStep, Names, Runner, job_transition};

use crate::validate::Invalid;

use crate::api::{apply_params, cached_readable, ignore_not_found, patch_status};
use crate::error::Stage;
use crate::validate::Validated;
use crate::{Context, Error, Result, build, report, unreadable};

const KIND: &str = "DaskJob";

pub async fn run(ctx: Arc<Context>) {
    let runners = ctx.config.watch_config().labels(&format!("{COMPONENT}={COMPONENT_JOB_RUNNER}"));
    let (jobs, events) = cached_readable(
        ctx.watched(),
        ctx.config.watch_config().any_semantic(),
        |_: &mut DaskJob| {},
        unreadable::reporter::<DaskJob>(&ctx, KIND),
    );
    // The jobs' clusters by their metadata, which always reads.
    let clusters =
        watcher(ctx.watched::<PartialObjectMeta<DaskCluster>>(), ctx.config.watch_config())
            .default_backoff()
            .touched_objects();
    let controller = Controller::for_stream(events.applied_objects(), jobs.clone())
        .owns(ctx.watched::<Pod>(), runners)
        .owns_stream(clusters)
        .shutdown_on_signal();
    let results = controller.run(reconcile, error_policy, ctx.clone());
    report::warn_failures(results, jobs, KIND, &ctx).await;
}

#[instrument(skip(job, ctx), fields(name = %job.name_any(), namespace = job.namespace().unwrap_or_default()))]
async fn reconcile(job: Arc<DaskJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let status = job.status.clone().unwrap_or_default();
    if job.meta().deletion_timestamp.is_some() || status.is_finished() {
        return Ok(Action::await_change());
    }
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_default();
    let job = Validated::new(DaskJob::clone(&job))?;

    let clusters: Api<DaskCluster> = ctx.api(&ns);
    let cluster = build::job_cluster(&job);
    let cluster =
        clusters.patch(&name, &apply_params(), &Patch::Apply(&cluster)).await.applying()?;
    let pods: Api<Pod> = ctx.api(&ns);
    let runner_name = build::runner_name(&job);
    let runner = pods.get_opt(&runner_name).await.reading()?;

    let names = Names { cluster: &name, runner: &runner_name };
    let now = Timestamp::now().to_string();
    let step =
        job_transition(&status, Runner::of(runner.as_ref()), cluster.is_running(), names, &now);
    for (reason, note) in &step.events {
        ctx.events.normal(&*job, reason, note).await;
    }
    if step.start_runner {
        let port = cluster.spec.scheduler.comm_port();
        let address = build::scheduler_address(&name, &ns, &ctx.config.cluster_domain, port);
        let pod = build::runner_pod(&job, &runner_name, &address);
        info!(runner = %runner_name, "starting the job runner");
        pods.patch(&runner_name, &apply_params(), &Patch::Apply(pod)).await.applying()?;
    }
    if step.delete_cluster {
        ignore_not_found(clusters.delete(&name, &DeleteParams::background()).await).applying()?;
    }
    let status = transition::with_conditions(&job, step.status, cluster.is_running());
    if job.status.as_ref() != Some(&status) {
        patch_status(&ctx.client, &*job, &status).await.writing_status()?;
    }
    Ok(if status.is_finished() {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(30))
    })
}

impl report::InvalidStatus for DaskJob {
    fn invalid_status(&self, invalid: &Invalid) -> DaskJobStatus {
        transition::invalid(self, invalid)
    }
}

fn error_policy(job: Arc<DaskJob>, error: &Error, ctx: Arc<Context>) -> Action {
    report::error_policy(&ctx, &*job, error, KIND, Duration::from_secs(5))
}

/// Reconciles against a mocked API: the requests each path makes.
#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::mock_api::{self, Call, echo, refused, with_status};

    const JOB: &str = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskjobs/j";

    /// Job `j`, running; `containers` is its runner's.
    fn job(containers: Value) -> Value {
        json!({
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskJob",
            "metadata": { "name": "j", "namespace": "ns", "uid": "j-uid", "generation": 2 },
            "spec": {
                "job": { "spec": { "containers": containers } },
                "cluster": { "spec": {
                    "worker": { "replicas": 1, "spec": { "containers": [{ "name": "w" }] } },
                    "scheduler": { "spec": { "containers": [{ "name": "s" }] }, "service": {} },
                } },
            },
            "status": { "jobStatus": "Running", "clusterName": "j", "startTime": "t0" },
        })
    }

    #[tokio::test]
    async fn an_invalid_job_keeps_its_phase_and_says_why() {
        let invalid = job(json!([]));
        let stored = invalid.clone();
        let (ctx, calls) = mock_api::context(move |call: &Call| match call.method.as_str() {
            "PATCH" if call.resource() == format!("{JOB}/status") => with_status(&stored, call),
            "POST" => echo(call),
            _ => refused(404, "NotFound", "not in this test"),
        });
        let obj: DaskJob = serde_json::from_value(invalid).unwrap();
        let error = reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap_err();
        assert!(calls.all().is_empty(), "nothing is applied for an invalid spec");
        report::report_failed(&ctx, &obj, &error).await;
        assert_eq!(calls.events(), [("Warning".into(), "InvalidSpec".into())]);
        let writes = calls.status_writes(JOB);
        assert_eq!(writes.len(), 1);
        let status = &writes[0]["status"];
        assert_eq!(status["jobStatus"], "Running", "an edit can still fix the job");
        assert_eq!(status["startTime"], "t0");
        let degraded = &status["conditions"][0];
        assert_eq!((&degraded["type"], &degraded["status"]), (&json!("Degraded"), &json!("True")));
        assert!(degraded["message"].as_str().unwrap().contains("spec.job.spec.containers"));
    }
}

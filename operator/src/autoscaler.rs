//! DaskAutoscaler: scales a cluster between `minimum` and `maximum` workers
//! from the scheduler's own adaptive target. Scale-up is immediate; scale-down
//! waits out a stabilisation window and goes at most a quarter at a time, so a
//! cluster never flaps between its bounds (dask-kubernetes #633).
//!
//! Each reconcile: validate → dereference (the cluster, the scheduler's
//! target) → [`decide`] (pure) → apply → status.

mod plan;
mod status;

use std::sync::Arc;
use std::time::Duration;

use dask_crds::conditions::reason;
use dask_crds::{DaskAutoscaler, DaskAutoscalerStatus, DaskCluster};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use serde_json::json;
use tracing::{info, instrument, warn};

pub use plan::{
    Decision, Observed, SCALE_DOWN_WINDOW, Step, Tuning, decide, next_count, parse_seconds,
};
pub use status::Scaling;

use crate::adopt::adopt;
use crate::api::{cached_readable, patch_status};
use crate::error::Stage;
use crate::problems::newly_told;
use crate::scheduler_api::SchedulerApi;
use crate::validate::Validated;
use crate::{Context, Error, Result, report, unreadable};

const KIND: &str = "DaskAutoscaler";
const PERIOD: Duration = Duration::from_secs(5);

pub async fn run(ctx: Arc<Context>) {
    let (scalers, events) = cached_readable(
        ctx.watched(),
        ctx.config.watch_config().any_semantic(),
        |_: &mut DaskAutoscaler| {},
        unreadable::reporter::<DaskAutoscaler>(&ctx, KIND),
    );
    let controller =
        Controller::for_stream(events.applied_objects(), scalers.clone()).shutdown_on_signal();
    let results = controller.run(reconcile, error_policy, ctx.clone());
    report::warn_failures(results, scalers, KIND, &ctx).await;
}

#[instrument(skip(scaler, ctx), fields(name = %scaler.name_any()))]
async fn reconcile(scaler: Arc<DaskAutoscaler>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    Validated::new(DaskAutoscaler::clone(&scaler))?;
    let tuning = ctx.config.autoscaling.with_annotations(scaler.annotations())?;
    let (scaling, done) = scale(&scaler, &ctx, tuning).await?;
    let last = scaler.status.clone().unwrap_or_default();
    let status = status::with_conditions(&scaler, done.unwrap_or(last), &scaling);
    if scaler.status.as_ref() != Some(&status) {
        // A scheduler that stops answering is told once, not every period.
        let old = scaler.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let unavailable = [reason::SCHEDULER_UNAVAILABLE];
        for condition in newly_told(old, &status.conditions, &unavailable) {
            ctx.events.warning(&*scaler, &condition.reason, &condition.message).await;
        }
        patch_status(&ctx.client, &*scaler, &status).await.writing_status()?;
    }
    Ok(Action::requeue(PERIOD))
}

/// Follows the scheduler's adaptive target, if the cluster runs and its
/// scheduler tells it: what it saw, and the status of a change it made.
async fn scale(
    scaler: &DaskAutoscaler,
    ctx: &Context,
    tuning: Tuning,
) -> Result<(Scaling, Option<DaskAutoscalerStatus>)> {
    let ns = scaler.namespace().unwrap_or_default();
    let spec = &scaler.spec;
    let clusters = ctx.api::<DaskCluster>(&ns);
    // A missing cluster is looked for again soon: once it appears, it adopts the scaler.
    let Some(cluster) = clusters.get_opt(&spec.cluster).await.reading()? else {
        return Ok((Scaling::ClusterNotFound, None));
    };
    adopt(ctx, scaler, &cluster).await?;
    if !cluster.is_running() {
        return Ok((Scaling::ClusterNotRunning, None));
    }
    let port = cluster.spec.scheduler.dashboard_port();
    let base = SchedulerApi::base_url(&spec.cluster, &ns, &ctx.config.cluster_domain, port);
    let target = match ctx.scheduler.adaptive_target(&base).await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "could not read the adaptive target");
            return Ok((Scaling::SchedulerUnavailable(e.to_string()), None));
        }
    };
    let status = scaler.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let seen = Observed {
        current: cluster.spec.worker.replicas,
        target,
        now,
        cooldown_until: plan::cooldown_until(scaler.annotations()),
    };
    let done = match decide(spec, &status, tuning, seen) {
        Decision::Scale { from, to } => {
            info!(current = from, target, next = to, "scaling");
            let scale = json!({ "spec": { "replicas": to } });
            clusters
                .patch_scale(&spec.cluster, &PatchParams::default(), &Patch::Merge(scale))
                .await
                .applying()?;
            let note = format!("{from} -> {to} workers (adaptive target {target})");
            ctx.events.normal(&cluster, "Autoscaled", &note).await;
            Some(plan::scaled(to, now))
        }
        Decision::StartWindow(workers) => Some(plan::scaled(workers, now)),
        Decision::Hold => None,
    };
    Ok((Scaling::Active, done))
}

impl report::InvalidStatus for DaskAutoscaler {
    fn invalid_status(&self, invalid: &crate::validate::Invalid) -> DaskAutoscalerStatus {
        status::invalid(self, invalid)
    }
}

fn error_policy(scaler: Arc<DaskAutoscaler>, error: &Error, ctx: Arc<Context>) -> Action {
    report::error_policy(&ctx, &*scaler, error, KIND, PERIOD)
}

/// Reconciles against a mocked API: the requests each path makes.
#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::mock_api::{self, Answer, Call, echo, with_status};

    const SCALER: &str = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskautoscalers/a";
    const CLUSTER: &str = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskclusters/c";

    /// A running cluster whose scheduler's HTTP port (1, on 127.0.0.1) answers nothing.
    fn cluster() -> Value {
        json!({
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
            "metadata": { "name": "c", "namespace": "ns", "uid": "c-uid" },
            "spec": {
                "worker": { "replicas": 1, "spec": { "containers": [{ "name": "w" }] } },
                "scheduler": {
                    "spec": { "containers": [{ "name": "s" }] },
                    "service": { "ports": [{ "name": "http-dashboard", "port": 1 }] },
                },
            },
            "status": { "phase": "Running" },
        })
    }

    /// A scaler of cluster `c`, already adopted by it.
    fn scaler(minimum: i32, maximum: i32) -> Value {
        json!({
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
            "metadata": {
                "name": "a", "namespace": "ns", "uid": "a-uid", "generation": 1,
                "ownerReferences": [{
                    "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
                    "name": "c", "uid": "c-uid", "controller": true,
                }],
            },
            "spec": { "cluster": "c", "minimum": minimum, "maximum": maximum },
        })
    }

    fn answer(call: &Call) -> Answer {
        match (call.method.as_str(), call.resource()) {
            ("GET", CLUSTER) => (200, cluster()),
            ("PATCH", path) if path == format!("{SCALER}/status") => {
                with_status(&scaler(1, 3), call)
            }
            ("POST", path) if path.ends_with("/events") => echo(call),
            _ => mock_api::refused(404, "NotFound", "not in this test"),
        }
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> (&'a str, &'a str) {
        let conditions = status["status"]["conditions"].as_array().unwrap();
        let c = conditions.iter().find(|c| c["type"] == type_).unwrap();
        (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
    }

    #[tokio::test]
    async fn an_invalid_scaler_is_one_warning_and_one_status_write() {
        let (ctx, calls) = mock_api::context(answer);
        let obj: DaskAutoscaler = serde_json::from_value(scaler(3, 2)).unwrap();
        let error = reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap_err();
        assert!(calls.all().is_empty(), "nothing is read for an invalid spec");
        report::report_failed(&ctx, &obj, &error).await;
        assert_eq!(calls.events(), [("Warning".into(), "InvalidSpec".into())]);
        let writes = calls.status_writes(SCALER);
        assert_eq!(writes.len(), 1);
        assert_eq!(condition(&writes[0], "Degraded"), ("True", "InvalidSpec"));
        assert_eq!(calls.all().len(), 2, "{:?}", calls.all());
    }

    #[tokio::test]
    async fn a_scheduler_that_does_not_answer_is_told_once() {
        let (ctx, calls) = mock_api::context(answer);
        let mut obj: DaskAutoscaler = serde_json::from_value(scaler(1, 3)).unwrap();
        reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap();
        assert_eq!(calls.events(), [("Warning".into(), "SchedulerUnavailable".into())]);
        let writes = calls.status_writes(SCALER);
        assert_eq!(writes.len(), 1);
        assert_eq!(condition(&writes[0], "ScalingActive"), ("False", "SchedulerUnavailable"));
        assert_eq!(condition(&writes[0], "Degraded"), ("False", "Valid"));

        // The next period, still unanswered: nothing new to tell or write.
        obj.status = Some(serde_json::from_value(writes[0]["status"].clone()).unwrap());
        calls.clear();
        reconcile(Arc::new(obj), ctx).await.unwrap();
        assert!(calls.events().is_empty(), "{:?}", calls.events());
        assert!(calls.status_writes(SCALER).is_empty());
    }
}

//! DaskAutoscaler: scales a cluster between `minimum` and `maximum` workers
//! from the scheduler's own adaptive target. Scale-up is immediate; scale-down
//! waits out a stabilisation window and goes at most a quarter at a time, so a
//! cluster never flaps between its bounds (dask-kubernetes #633).

use std::sync::Arc;
use std::time::Duration;

use crds::{DaskAutoscaler, DaskAutoscalerStatus, DaskCluster};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::build;
use crate::context::{on_error, publish};
use crate::scheduler_api::SchedulerApi;
use crate::{Context, Error, Result, apply_params};

const KIND: &str = "DaskAutoscaler";
const PERIOD: Duration = Duration::from_secs(5);
/// How long the target must have been lower before workers are removed.
const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(30);

pub async fn run(ctx: Arc<Context>) {
    Controller::new(ctx.watched::<DaskAutoscaler>(), watcher::Config::default().any_semantic())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The next worker count: the target clamped to the bounds; going down, by at
/// most max(1, current/4) per step.
pub fn next_count(current: i32, target: i32, minimum: i32, maximum: i32) -> i32 {
    let wanted = target.clamp(minimum, maximum.max(minimum));
    if wanted >= current { wanted } else { wanted.max(current - (current / 4).max(1)) }
}

#[instrument(skip(scaler, ctx), fields(name = %scaler.name_any()))]
async fn reconcile(scaler: Arc<DaskAutoscaler>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = scaler.namespace().unwrap_or_default();
    let spec = &scaler.spec;
    if spec.minimum < 0 || spec.maximum < spec.minimum {
        let reason = format!(
            "spec.minimum ({}) must be >= 0 and <= spec.maximum ({})",
            spec.minimum, spec.maximum
        );
        return Err(Error::Invalid { kind: KIND, name: scaler.name_any(), reason });
    }
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters.get_opt(&spec.cluster).await? else {
        return Ok(Action::requeue(PERIOD * 6));
    };
    adopt(&ctx, &scaler, &cluster).await?;
    if cluster.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
        return Ok(Action::requeue(PERIOD));
    }
    let base = SchedulerApi::base_url(
        &spec.cluster,
        &ns,
        &ctx.cluster_domain,
        build::dashboard_port(&cluster),
    );
    let target = match ctx.scheduler.adaptive_target(&base).await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "could not read the adaptive target");
            return Ok(Action::requeue(PERIOD));
        }
    };
    let current = cluster.spec.worker.replicas;
    let mut next = next_count(current, target, spec.minimum, spec.maximum);
    let status = scaler.status.clone().unwrap_or_default();
    let last_change = status.last_scale_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let since_change = last_change.map(|t| Timestamp::now().duration_since(t).unsigned_abs());
    if next < current && since_change.is_some_and(|d| d < SCALE_DOWN_WINDOW) {
        next = current; // still inside the stabilisation window
    }
    if next != current {
        info!(current, target, next, "scaling");
        clusters
            .patch_scale(
                &spec.cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": next } })),
            )
            .await?;
        publish(
            &ctx,
            &cluster,
            EventType::Normal,
            "Autoscaled",
            &format!("{current} -> {next} workers (adaptive target {target})"),
        )
        .await;
        record_scale(&ctx, &scaler, next).await?;
    } else if status.last_scale_time.is_none() {
        // Start the window at the first observation, so a fresh scaler does not scale down at once.
        record_scale(&ctx, &scaler, current).await?;
    }
    Ok(Action::requeue(PERIOD))
}

/// Status: the count now wanted, and the time it was set (the window's start).
async fn record_scale(ctx: &Context, scaler: &DaskAutoscaler, workers: i32) -> Result<()> {
    let status = DaskAutoscalerStatus {
        desired_workers: Some(workers),
        last_scale_time: Some(Timestamp::now().to_string()),
    };
    let body = json!({ "apiVersion": "kubernetes.dask.org/v1", "kind": KIND, "status": status });
    Api::<DaskAutoscaler>::namespaced(ctx.client.clone(), &scaler.namespace().unwrap_or_default())
        .patch_status(&scaler.name_any(), &apply_params(), &Patch::Apply(body))
        .await?;
    Ok(())
}

/// The autoscaler goes with its cluster (a plain owner reference, not a controller one).
async fn adopt(ctx: &Context, scaler: &DaskAutoscaler, cluster: &DaskCluster) -> Result<()> {
    let uid = cluster.uid().unwrap_or_default();
    if scaler.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    let mut owner = cluster.controller_owner_ref(&()).expect("a stored cluster has a uid");
    owner.controller = None;
    let patch = json!({ "metadata": { "ownerReferences": [owner] } });
    Api::<DaskAutoscaler>::namespaced(ctx.client.clone(), &scaler.namespace().unwrap_or_default())
        .patch(&scaler.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

fn error_policy(scaler: Arc<DaskAutoscaler>, error: &Error, ctx: Arc<Context>) -> Action {
    on_error(scaler, error, ctx, KIND, PERIOD)
}

#[cfg(test)]
mod tests {
    use super::next_count;

    #[test]
    fn clamps_and_scales_down_gradually() {
        assert_eq!(next_count(2, 10, 1, 5), 5);
        assert_eq!(next_count(2, 0, 1, 5), 1);
        assert_eq!(next_count(20, 0, 0, 40), 15);
        assert_eq!(next_count(3, 3, 0, 5), 3);
        assert_eq!(next_count(0, 0, 2, 5), 2);
    }
}

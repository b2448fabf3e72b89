//! Every kind says in its status conditions what keeps it from doing its
//! job, and each new problem is one Warning Event (sim tier: a real API
//! server, kwok nodes, no scheduler answering on the clusters' ports).

mod common;

use common::*;
use dask_crds::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn from<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn autoscaler(name: &str, cluster: &str, minimum: i32, maximum: i32) -> DaskAutoscaler {
    from(json!({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
        "metadata": { "name": name },
        "spec": { "cluster": cluster, "minimum": minimum, "maximum": maximum },
    }))
}

/// Waits for the condition `type_` with `reason` in what `conditions` reads.
async fn condition<F, Fut>(what: &str, type_: &str, reason: &str, conditions: F) -> Condition
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Vec<Condition>>>,
{
    eventually(60, &format!("{what}: {type_} {reason}"), || async {
        let conditions = conditions().await?;
        conditions.into_iter().find(|c| c.type_ == type_ && c.reason == reason)
    })
    .await
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_autoscaler_says_why_it_does_not_scale() {
    let (w, _operator) = World::with_operator("op-cond-scaler").await;
    let scalers = w.api::<DaskAutoscaler>();
    let conditions = |name: &'static str| {
        let scalers = scalers.clone();
        move || {
            let scalers = scalers.clone();
            async move { Some(scalers.get(name).await.ok()?.status?.conditions) }
        }
    };

    w.create(&autoscaler("lonely", "missing", 1, 2)).await;
    let lonely =
        condition("lonely", "ScalingActive", "ClusterNotFound", conditions("lonely")).await;
    assert_eq!(lonely.status, "False");

    w.create(&autoscaler("bad", "missing", 3, 2)).await;
    let bad = condition("bad", "Degraded", "InvalidSpec", conditions("bad")).await;
    assert_eq!(bad.status, "True");
    assert!(bad.message.contains("spec.maximum"), "{}", bad.message);
    w.warning("DaskAutoscaler", "bad", "InvalidSpec").await;

    // Running (kwok's pods are ready), but nothing answers on its HTTP port.
    w.create(&cluster("quiet", 1, free_port(), free_port())).await;
    w.create(&autoscaler("quiet", "quiet", 1, 2)).await;
    let quiet =
        condition("quiet", "ScalingActive", "SchedulerUnavailable", conditions("quiet")).await;
    assert_eq!(quiet.status, "False");
    let message = w.warning("DaskAutoscaler", "quiet", "SchedulerUnavailable").await;
    assert!(message.contains("adaptive target"), "{message}");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_cluster_says_when_its_scheduler_does_not_answer_the_idle_check() {
    let (w, _operator) = World::with_operator("op-cond-idle").await;
    let mut quiet = cluster("quiet", 1, free_port(), free_port());
    quiet.spec.idle_timeout = 60;
    w.create(&quiet).await;
    let clusters = w.api::<DaskCluster>();
    let check = condition("quiet", "IdleCheck", "SchedulerUnavailable", || async {
        Some(clusters.get("quiet").await.ok()?.status?.conditions)
    })
    .await;
    assert_eq!(check.status, "False");
    w.warning("DaskCluster", "quiet", "SchedulerUnavailable").await;
    assert!(w.get::<DaskCluster>("quiet").await.is_running(), "it is not deleted for it");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_cluster_whose_service_is_refused_is_degraded() {
    let w = World::new("op-cond-quota").await;
    let quota: ResourceQuota = from(json!({
        "metadata": { "name": "no-services" }, "spec": { "hard": { "services": "0" } },
    }));
    w.create(&quota).await;
    let quotas = w.api::<ResourceQuota>();
    // Enforced once the quota controller has counted what the namespace uses.
    eventually(60, "the quota to be counted", || async {
        quotas.get("no-services").await.ok()?.status?.used.map(drop)
    })
    .await;
    let _operator = Operator::start(w.ns());
    w.create(&cluster("refused", 1, 8786, 8787)).await;
    let clusters = w.api::<DaskCluster>();
    let degraded = condition("refused", "Degraded", "ApplyFailed", || async {
        Some(clusters.get("refused").await.ok()?.status?.conditions)
    })
    .await;
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains("exceeded quota"), "{}", degraded.message);
    let message = w.warning("DaskCluster", "refused", "ApplyFailed").await;
    assert!(message.contains("exceeded quota"), "{message}");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_invalid_worker_group_is_in_error() {
    let (w, _operator) = World::with_operator("op-cond-group").await;
    let group: DaskWorkerGroup = from(json!({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskWorkerGroup",
        "metadata": { "name": "empty" },
        "spec": { "cluster": "none", "worker": { "replicas": 1, "spec": { "containers": [] } } },
    }));
    w.create(&group).await;
    let groups = w.api::<DaskWorkerGroup>();
    let degraded = condition("empty", "Degraded", "InvalidSpec", || async {
        Some(groups.get("empty").await.ok()?.status?.conditions)
    })
    .await;
    assert!(degraded.message.contains("spec.worker.spec.containers"), "{}", degraded.message);
    let status = w.get::<DaskWorkerGroup>("empty").await.status.unwrap();
    assert_eq!(status.phase, Some(dask_crds::ClusterPhase::Error));

    // Fixed: no longer in error, and it says so.
    let fix = json!({ "spec": { "worker": { "spec": { "containers": [{ "name": "w", "image": "x" }] } } } });
    groups.patch("empty", &PatchParams::default(), &Patch::Merge(fix)).await.unwrap();
    let valid = condition("empty", "Degraded", "Valid", || async {
        Some(groups.get("empty").await.ok()?.status?.conditions)
    })
    .await;
    assert_eq!(valid.status, "False");
    assert_eq!(w.get::<DaskWorkerGroup>("empty").await.status.unwrap().phase, None);
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_job_says_whether_its_cluster_runs() {
    let (w, _operator) = World::with_operator("op-cond-job").await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/tests/fixtures/simplejob.yaml"
    ))
    .unwrap();
    let mut job: DaskJob = serde_yaml::from_str(&text).unwrap();
    job.metadata.namespace = Some(w.ns().to_string());
    w.create(&job).await;
    let jobs = w.api::<DaskJob>();
    let ready = condition("simple-job", "ClusterReady", "ClusterRunning", || async {
        Some(jobs.get("simple-job").await.ok()?.status?.conditions)
    })
    .await;
    assert_eq!(ready.status, "True");
    let status = w.get::<DaskJob>("simple-job").await.status.unwrap();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("False", "Valid"));
}

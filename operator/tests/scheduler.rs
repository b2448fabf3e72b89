//! Retirement, adaptive scaling and idle timeout against a real `dask
//! scheduler` process on 127.0.0.1 (the operator resolves the scheduler's
//! Service name there), with DaskClusters on the real API server.

mod common;

use std::time::Duration;

use common::*;
use dask_crds::{DaskAutoscaler, DaskCluster};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn scale_down_retires_exactly_the_removed_workers() {
    let (w, _operator) = World::with_operator("op-retire").await;
    let scheduler = Scheduler::start();
    w.create(&scheduler.cluster("rt", 2)).await;
    let pods = w.wait_workers("rt", 2).await;

    // One real Dask worker per pod, named like the pod (as DASK_WORKER_NAME does).
    let _workers: Vec<_> = pods.iter().map(|p| scheduler.start_worker(&p.name_any())).collect();
    eventually(60, "two workers connected to the scheduler", || async {
        (scheduler.workers().await?.len() == 2).then_some(())
    })
    .await;

    w.scale::<DaskCluster>("rt", 1).await;
    let remaining = w.wait_workers("rt", 1).await;
    // The scheduler retired the worker of the deleted pod, and only that one.
    let left = eventually(60, "the scheduler to have retired one worker", || async {
        let workers = scheduler.workers().await?;
        (workers.len() == 1).then_some(workers)
    })
    .await;
    assert_eq!(left[0].0, remaining[0].name_any());
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn autoscaler_follows_the_scheduler_target_within_bounds() {
    let w = World::new("op-adapt").await;
    let scheduler = Scheduler::start();
    // A one-second scale-down window (the default is 30 s), so the test waits seconds.
    let _operator = Operator::start_with(
        w.ns(),
        &["--metrics-addr", "127.0.0.1:0", "--scale-down-window", "1"],
        &[],
    );
    let clusters: Api<DaskCluster> = w.api();
    w.create(&scheduler.cluster("ad", 0)).await;
    eventually(60, "the cluster to run", || async {
        clusters.get("ad").await.ok()?.is_running().then_some(())
    })
    .await;

    // An idle scheduler targets 0 workers; the minimum of 2 wins.
    let scaler: DaskAutoscaler = serde_json::from_value(json!({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
        "metadata": { "name": "ad",
            // A step of every surplus worker at once, instead of a quarter per window.
            "annotations": { "kubernetes.dask.org/scale-down-step": "100%" } },
        "spec": { "cluster": "ad", "minimum": 2, "maximum": 4 }
    }))
    .unwrap();
    let scalers: Api<DaskAutoscaler> = w.api();
    w.create(&scaler).await;
    w.wait_workers("ad", 2).await;
    // Its status tells why it waits (ScalingActive) before it tells a count.
    let status = eventually(30, "the autoscaler's count in its status", || async {
        scalers.get("ad").await.ok()?.status.filter(|s| s.desired_workers.is_some())
    })
    .await;
    assert_eq!(status.desired_workers, Some(2));
    // It is adopted by the cluster (as its controller), so it goes with it.
    let owner = scalers.get("ad").await.unwrap().owner_references()[0].clone();
    assert_eq!((owner.name.as_str(), owner.controller), ("ad", Some(true)));
    // And it holds the cluster there: a manual scale outside the bounds is undone.
    w.scale::<DaskCluster>("ad", 6).await;
    // One step, once the one-second window has passed: 6 -> 2, the minimum (an idle
    // scheduler targets 0); a quarter per 30 s window would be 6 -> 5 -> 4 -> 3 -> 2.
    eventually(20, "the autoscaler to bring 6 workers back to the minimum of 2", || async {
        let replicas = clusters.get("ad").await.ok()?.spec.worker.replicas;
        (replicas == 2).then_some(())
    })
    .await;
    let events: Api<Event> = w.api();
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Autoscaled"))
        .filter_map(|e| e.message)
        .collect();
    assert!(notes.iter().any(|n| n.starts_with("6 -> 2 workers")), "{notes:?}");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn idle_cluster_is_deleted_after_its_timeout() {
    let (w, _operator) = World::with_operator("op-idle").await;
    let scheduler = Scheduler::start();
    let clusters: Api<DaskCluster> = w.api();
    let mut idle = scheduler.cluster("idle", 1);
    idle.spec.idle_timeout = 3;
    w.create(&idle).await;
    let busy = w.create(&scheduler.cluster("busy", 1)).await;
    eventually(90, "the idle cluster to be deleted", || async {
        clusters.get_opt("idle").await.ok()?.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A cluster without idleTimeout stays.
    assert_eq!(clusters.get("busy").await.unwrap().uid(), busy.uid());
}

//! Retirement, adaptive scaling and idle timeout against a real `dask
//! scheduler` process on 127.0.0.1 (the operator resolves the scheduler's
//! Service name there), with DaskClusters on the real API server.

mod common;

use std::time::Duration;

use common::*;
use dask_crds::{DaskAutoscaler, DaskCluster};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn scale_down_retires_exactly_the_removed_workers() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-retire").await;
    let (comm, dashboard) = (free_port(), free_port());
    let _scheduler = start_scheduler(comm, dashboard);
    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster("rt", 2, comm, dashboard)).await.unwrap();
    let pods = wait_workers(&client, &ns.name, "rt", 2).await;

    // One real Dask worker per pod, named like the pod (as DASK_WORKER_NAME does).
    let _workers: Vec<_> = pods.iter().map(|p| start_worker(comm, &p.name_any())).collect();
    eventually(60, "two workers connected to the scheduler", || async {
        (scheduler_workers(dashboard).await?.len() == 2).then_some(())
    })
    .await;

    clusters
        .patch_scale(
            "rt",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    let remaining = wait_workers(&client, &ns.name, "rt", 1).await;
    // The scheduler retired the worker of the deleted pod, and only that one.
    let left = eventually(60, "the scheduler to have retired one worker", || async {
        let workers = scheduler_workers(dashboard).await?;
        (workers.len() == 1).then_some(workers)
    })
    .await;
    assert_eq!(left[0].0, remaining[0].name_any());
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn autoscaler_follows_the_scheduler_target_within_bounds() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-adapt").await;
    let (comm, dashboard) = (free_port(), free_port());
    let _scheduler = start_scheduler(comm, dashboard);
    // A one-second scale-down window (the default is 30 s), so the test waits seconds.
    let _operator = Operator::start_with(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0", "--scale-down-window", "1"],
        &[],
    );
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster("ad", 0, comm, dashboard)).await.unwrap();
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
    let scalers: Api<DaskAutoscaler> = Api::namespaced(client.clone(), &ns.name);
    scalers.create(&PostParams::default(), &scaler).await.unwrap();
    wait_workers(&client, &ns.name, "ad", 2).await;
    let status = eventually(30, "the autoscaler's status", || async {
        scalers.get("ad").await.ok()?.status
    })
    .await;
    assert_eq!(status.desired_workers, Some(2));
    // It is adopted by the cluster (as its controller), so it goes with it.
    let owner = scalers.get("ad").await.unwrap().owner_references()[0].clone();
    assert_eq!((owner.name.as_str(), owner.controller), ("ad", Some(true)));
    // And it holds the cluster there: a manual scale outside the bounds is undone.
    clusters
        .patch_scale(
            "ad",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 6 } })),
        )
        .await
        .unwrap();
    // One step, once the one-second window has passed: 6 -> 2, the minimum (an idle
    // scheduler targets 0); a quarter per 30 s window would be 6 -> 5 -> 4 -> 3 -> 2.
    eventually(20, "the autoscaler to bring 6 workers back to the minimum of 2", || async {
        let replicas = clusters.get("ad").await.ok()?.spec.worker.replicas;
        (replicas == 2).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
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
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-idle").await;
    let (comm, dashboard) = (free_port(), free_port());
    let _scheduler = start_scheduler(comm, dashboard);
    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    let mut idle = cluster("idle", 1, comm, dashboard);
    idle.spec.idle_timeout = 3;
    clusters.create(&PostParams::default(), &idle).await.unwrap();
    let busy = clusters
        .create(&PostParams::default(), &cluster("busy", 1, comm, dashboard))
        .await
        .unwrap();
    eventually(90, "the idle cluster to be deleted", || async {
        clusters.get_opt("idle").await.ok()?.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A cluster without idleTimeout stays.
    assert_eq!(clusters.get("busy").await.unwrap().uid(), busy.uid());
}

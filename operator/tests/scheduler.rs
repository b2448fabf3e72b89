//! Retirement, adaptive scaling and idle timeout against a real `dask
//! scheduler` process on 127.0.0.1 (the operator resolves the scheduler's
//! Service name there), with DaskClusters on the real API server.

mod common;

use std::time::Duration;

use common::*;
use dask_crds::{DaskAutoscaler, DaskCluster};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
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
    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster("ad", 0, comm, dashboard)).await.unwrap();
    eventually(60, "the cluster to run", || async {
        clusters.get("ad").await.ok()?.is_running().then_some(())
    })
    .await;

    // An idle scheduler targets 0 workers; the minimum of 2 wins.
    let scaler: DaskAutoscaler = serde_json::from_value(json!({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
        "metadata": { "name": "ad" }, "spec": { "cluster": "ad", "minimum": 2, "maximum": 4 }
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
    // It is adopted by the cluster, so it goes with it.
    assert_eq!(scalers.get("ad").await.unwrap().owner_references()[0].name, "ad");
    // And it holds the cluster there: a manual scale outside the bounds is undone.
    clusters
        .patch_scale(
            "ad",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 6 } })),
        )
        .await
        .unwrap();
    eventually(60, "the autoscaler to bring 6 workers back within [2, 4]", || async {
        let replicas = clusters.get("ad").await.ok()?.spec.worker.replicas;
        (replicas <= 4).then_some(())
    })
    .await;
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

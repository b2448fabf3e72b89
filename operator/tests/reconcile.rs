//! The operator against a real API server (sim tier: kwok nodes make pods
//! Running/Ready without containers).

mod common;

use std::collections::BTreeSet;

use common::*;
use dask_crds::{DaskCluster, DaskWorkerGroup};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn manifest_becomes_scheduler_service_and_workers() {
    let (w, _operator) = World::with_operator("op-children").await;
    let clusters: Api<DaskCluster> = w.api();
    let created = w.create(&cluster("simple", 2, 8786, 8787)).await;
    let pods = w.wait_workers("simple", 2).await;

    let status = clusters.get("simple").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(dask_crds::ClusterPhase::Running));
    assert_eq!(
        status.selector.as_deref(),
        Some("dask.org/cluster-name=simple,dask.org/workergroup-name=simple-default")
    );
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));

    let deployment = w.api::<Deployment>().get("simple-scheduler").await.unwrap();
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("DaskCluster", created.uid().unwrap().as_str())
    );
    assert_eq!(deployment.labels()["dask.org/component"], "scheduler");
    assert_eq!(deployment.labels()["team"], "tests", "the cluster's labels propagate");
    let service = w.api::<Service>().get("simple-scheduler").await.unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap().len(), 2);
    let group = w.api::<DaskWorkerGroup>().get("simple-default").await.unwrap();
    assert_eq!(group.owner_references()[0].uid, created.uid().unwrap());

    for pod in &pods {
        let labels = pod.labels();
        assert_eq!(labels["dask.org/workergroup-name"], "simple-default");
        assert_eq!(labels["dask.org/cluster-name"], "simple");
        assert_eq!(pod.owner_references()[0].kind, "DaskWorkerGroup");
        let env = pod.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(get("DASK_WORKER_NAME"), Some(pod.name_any()));
        let address = format!("tcp://simple-scheduler.{}.svc.cluster.local:8786", w.ns());
        assert_eq!(get("DASK_SCHEDULER_ADDRESS"), Some(address));
        assert_eq!(get("WORKER_ENV").as_deref(), Some("kept"));
    }

    // Deleted children come back, and one edited by hand is put right.
    let services: Api<Service> = w.api();
    let deployments: Api<Deployment> = w.api();
    let old_service = services.get("simple-scheduler").await.unwrap().uid();
    services.delete("simple-scheduler", &DeleteParams::default()).await.unwrap();
    deployments.delete("simple-scheduler", &DeleteParams::background()).await.unwrap();
    let edit = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "scheduler", "image": "edited:by-hand" }] } } } });
    let groups: Api<DaskWorkerGroup> = w.api();
    eventually(60, "the scheduler Service and Deployment to come back", || async {
        let service = services.get_opt("simple-scheduler").await.ok()??;
        let deployment = deployments.get_opt("simple-scheduler").await.ok()??;
        (service.uid() != old_service && deployment.metadata.deletion_timestamp.is_none())
            .then_some(())
    })
    .await;
    deployments
        .patch("simple-scheduler", &PatchParams::default(), &Patch::Strategic(edit))
        .await
        .unwrap();
    let edit = json!({ "spec": { "worker": { "spec": { "containers": [{ "name": "worker", "image": "edited:by-hand" }] } } } });
    groups.patch("simple-default", &PatchParams::default(), &Patch::Merge(edit)).await.unwrap();
    eventually(60, "the hand-edited Deployment and worker group to be restored", || async {
        let deployment = deployments.get("simple-scheduler").await.ok()?;
        let image = deployment.spec?.template.spec?.containers[0].image.clone()?;
        let group = groups.get("simple-default").await.ok()?;
        let worker_image = group.spec.worker.spec.containers[0].image.clone()?;
        (image != "edited:by-hand" && worker_image != "edited:by-hand").then_some(())
    })
    .await;

    // Deleting the cluster removes everything, by owner references alone.
    clusters.delete("simple", &DeleteParams::foreground()).await.unwrap();
    eventually(60, "the cluster's pods to be garbage-collected", || async {
        let pods: Api<Pod> = w.api();
        let left =
            pods.list(&ListParams::default().labels("dask.org/cluster-name=simple")).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn scales_replaces_and_rolls_workers() {
    let (w, _operator) = World::with_operator("op-scale").await;
    let clusters: Api<DaskCluster> = w.api();
    w.create(&cluster("c", 1, 8786, 8787)).await;
    w.wait_workers("c", 1).await;

    // The scale subresource, as `kubectl scale daskcluster c --replicas=3` uses it.
    w.scale::<DaskCluster>("c", 3).await;
    let pods = w.wait_workers("c", 3).await;
    let scale_status = clusters.get_scale("c").await.unwrap();
    assert_eq!(scale_status.status.unwrap().replicas, 3);
    w.scale::<DaskCluster>("c", 1).await;
    w.wait_workers("c", 1).await;

    // Scaling the default group directly (as KubeCluster.scale does) sticks,
    // and the cluster's own count follows it.
    w.scale::<DaskWorkerGroup>("c-default", 2).await;
    w.wait_workers("c", 2).await;
    assert_eq!(clusters.get("c").await.unwrap().spec.worker.replicas, 2);
    w.scale::<DaskCluster>("c", 1).await;
    w.wait_workers("c", 1).await;

    // A lost worker pod is replaced by a new one.
    let lost = w.worker_pods("c").await.remove(0).name_any();
    w.api::<Pod>().delete(&lost, &DeleteParams::default()).await.unwrap();
    let replaced = eventually(60, "a replacement worker", || async {
        let pods = w.worker_pods("c").await;
        (pods.len() == 1 && pods[0].name_any() != lost).then_some(pods)
    })
    .await;
    assert!(!pods.iter().any(|p| p.name_any() == replaced[0].name_any()));

    // A new worker image rolls out to every worker.
    let patch = json!([{ "op": "replace", "path": "/spec/worker/spec/containers/0/image", "value": "dask:next" }]);
    clusters
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
        )
        .await
        .unwrap();
    eventually(60, "workers running the new image", || async {
        let pods = w.worker_pods("c").await;
        let images: BTreeSet<_> = pods
            .iter()
            .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap())
            .collect();
        (pods.len() == 1 && images == BTreeSet::from(["dask:next".to_string()])).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn invalid_cluster_reports_an_error_and_spares_the_others() {
    let (w, _operator) = World::with_operator("op-invalid").await;
    let clusters: Api<DaskCluster> = w.api();
    let mut bad = cluster("bad", 1, 8786, 8787);
    bad.spec.worker.spec.containers.clear();
    w.create(&bad).await;
    w.create(&cluster("good", 2, 8786, 8787)).await;

    w.wait_workers("good", 2).await;
    let status = eventually(30, "an Error status on the invalid cluster", || async {
        let status = clusters.get("bad").await.ok()?.status?;
        (status.phase == Some(dask_crds::ClusterPhase::Error)).then_some(status)
    })
    .await;
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(degraded.message.contains("spec.worker.spec.containers"), "{}", degraded.message);
    w.warning("DaskCluster", "bad", "InvalidSpec").await;
    assert!(w.worker_pods("bad").await.is_empty());
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn operator_restarts_leave_no_duplicate_or_orphan_pods() {
    let w = World::new("op-restart").await;
    let clusters: Api<DaskCluster> = w.api();
    for i in 0..5 {
        w.create(&cluster(&format!("r{i}"), 3, 8786, 8787)).await;
    }
    // Kill the operator 20 times while it is reconciling, changing replicas in between.
    for round in 0..20 {
        let operator = Operator::start(w.ns());
        tokio::time::sleep(std::time::Duration::from_millis(150 + 40 * (round % 5))).await;
        let replicas = 2 + (round % 3) as i32;
        let name = format!("r{}", round % 5);
        w.scale::<DaskCluster>(&name, replicas).await;
        operator.kill();
    }
    let _operator = Operator::start(w.ns());
    for i in 0..5 {
        let name = format!("r{i}");
        let want = clusters.get(&name).await.unwrap().spec.worker.replicas as usize;
        w.wait_workers(&name, want).await;
    }
    let pods: Api<Pod> = w.api();
    for pod in
        pods.list(&ListParams::default().labels("dask.org/component=worker")).await.unwrap().items
    {
        assert_eq!(pod.owner_references().len(), 1, "{} has no owner", pod.name_any());
    }
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn daskjob_creates_its_cluster_then_a_uniquely_named_runner() {
    let (w, _operator) = World::with_operator("op-job").await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/tests/fixtures/simplejob.yaml"
    ))
    .unwrap();
    let mut job: dask_crds::DaskJob = serde_yaml::from_str(&text).unwrap();
    job.metadata.namespace = Some(w.ns().to_string());
    let jobs: Api<dask_crds::DaskJob> = w.api();
    let created = w.create(&job).await;

    let status = eventually(60, "the job to be Running", || async {
        let status = jobs.get("simple-job").await.ok()?.status?;
        (status.job_status == Some(dask_crds::JobPhase::Running)).then_some(status)
    })
    .await;
    let cluster = w.api::<DaskCluster>().get("simple-job").await.unwrap();
    assert_eq!(cluster.owner_references()[0].uid, created.uid().unwrap());
    let runner = status.job_runner_pod_name.unwrap();
    assert!(runner.starts_with("simple-job-runner-") && runner.len() > "simple-job-runner-".len());
    let pod = w.api::<Pod>().get(&runner).await.unwrap();
    assert_eq!(pod.labels()["dask.org/component"], "job-runner");
    assert!(status.start_time.is_some());
}

//! The operator against a real API server (sim tier: kwok nodes make pods
//! Running/Ready without containers).

mod common;

use std::collections::BTreeSet;

use common::*;
use dask_crds::{DaskCluster, DaskWorkerGroup};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn manifest_becomes_scheduler_service_and_workers() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-children").await;
    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    let created =
        clusters.create(&PostParams::default(), &cluster("simple", 2, 8786, 8787)).await.unwrap();
    let pods = wait_workers(&client, &ns.name, "simple", 2).await;

    let status = clusters.get("simple").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(dask_crds::ClusterPhase::Running));
    assert_eq!(
        status.selector.as_deref(),
        Some("dask.org/cluster-name=simple,dask.org/workergroup-name=simple-default")
    );
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));

    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("simple-scheduler")
        .await
        .unwrap();
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("DaskCluster", created.uid().unwrap().as_str())
    );
    assert_eq!(deployment.labels()["dask.org/component"], "scheduler");
    assert_eq!(deployment.labels()["team"], "tests", "the cluster's labels propagate");
    let service =
        Api::<Service>::namespaced(client.clone(), &ns.name).get("simple-scheduler").await.unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap().len(), 2);
    let group = Api::<DaskWorkerGroup>::namespaced(client.clone(), &ns.name)
        .get("simple-default")
        .await
        .unwrap();
    assert_eq!(group.owner_references()[0].uid, created.uid().unwrap());

    for pod in &pods {
        let labels = pod.labels();
        assert_eq!(labels["dask.org/workergroup-name"], "simple-default");
        assert_eq!(labels["dask.org/cluster-name"], "simple");
        assert_eq!(pod.owner_references()[0].kind, "DaskWorkerGroup");
        let env = pod.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(get("DASK_WORKER_NAME"), Some(pod.name_any()));
        let address = format!("tcp://simple-scheduler.{}.svc.cluster.local:8786", ns.name);
        assert_eq!(get("DASK_SCHEDULER_ADDRESS"), Some(address));
        assert_eq!(get("WORKER_ENV").as_deref(), Some("kept"));
    }

    // Deleted children come back, and one edited by hand is put right.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let old_service = services.get("simple-scheduler").await.unwrap().uid();
    services.delete("simple-scheduler", &DeleteParams::default()).await.unwrap();
    deployments.delete("simple-scheduler", &DeleteParams::background()).await.unwrap();
    let edit = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "scheduler", "image": "edited:by-hand" }] } } } });
    let groups: Api<DaskWorkerGroup> = Api::namespaced(client.clone(), &ns.name);
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
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        let left =
            pods.list(&ListParams::default().labels("dask.org/cluster-name=simple")).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn scales_replaces_and_rolls_workers() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-scale").await;
    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster("c", 1, 8786, 8787)).await.unwrap();
    wait_workers(&client, &ns.name, "c", 1).await;

    // The scale subresource, as `kubectl scale daskcluster c --replicas=3` uses it.
    let scale = |n: i32| {
        let clusters = clusters.clone();
        async move {
            clusters
                .patch_scale(
                    "c",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "replicas": n } })),
                )
                .await
                .unwrap();
        }
    };
    scale(3).await;
    let pods = wait_workers(&client, &ns.name, "c", 3).await;
    let scale_status = clusters.get_scale("c").await.unwrap();
    assert_eq!(scale_status.status.unwrap().replicas, 3);
    scale(1).await;
    wait_workers(&client, &ns.name, "c", 1).await;

    // Scaling the default group directly (as KubeCluster.scale does) sticks,
    // and the cluster's own count follows it.
    let groups: Api<DaskWorkerGroup> = Api::namespaced(client.clone(), &ns.name);
    groups
        .patch_scale(
            "c-default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .unwrap();
    wait_workers(&client, &ns.name, "c", 2).await;
    assert_eq!(clusters.get("c").await.unwrap().spec.worker.replicas, 2);
    scale(1).await;
    wait_workers(&client, &ns.name, "c", 1).await;

    // A lost worker pod is replaced by a new one.
    let lost = worker_pods(&client, &ns.name, "c").await.remove(0).name_any();
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .delete(&lost, &DeleteParams::default())
        .await
        .unwrap();
    let replaced = eventually(60, "a replacement worker", || async {
        let pods = worker_pods(&client, &ns.name, "c").await;
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
        let pods = worker_pods(&client, &ns.name, "c").await;
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
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-invalid").await;
    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    let mut bad = cluster("bad", 1, 8786, 8787);
    bad.spec.worker.spec.containers.clear();
    clusters.create(&PostParams::default(), &bad).await.unwrap();
    clusters.create(&PostParams::default(), &cluster("good", 2, 8786, 8787)).await.unwrap();

    wait_workers(&client, &ns.name, "good", 2).await;
    let status = eventually(30, "an Error status on the invalid cluster", || async {
        let status = clusters.get("bad").await.ok()?.status?;
        (status.phase == Some(dask_crds::ClusterPhase::Error)).then_some(status)
    })
    .await;
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(degraded.message.contains("spec.worker.spec.containers"), "{}", degraded.message);
    eventually(30, "an InvalidSpec event", || async {
        let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidSpec")
                    && e.involved_object.name.as_deref() == Some("bad")
            })
            .then_some(())
    })
    .await;
    assert!(worker_pods(&client, &ns.name, "bad").await.is_empty());
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn operator_restarts_leave_no_duplicate_or_orphan_pods() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-restart").await;
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..5 {
        clusters
            .create(&PostParams::default(), &cluster(&format!("r{i}"), 3, 8786, 8787))
            .await
            .unwrap();
    }
    // Kill the operator 20 times while it is reconciling, changing replicas in between.
    for round in 0..20 {
        let operator = Operator::start(&ns.name);
        tokio::time::sleep(std::time::Duration::from_millis(150 + 40 * (round % 5))).await;
        let replicas = 2 + (round % 3) as i32;
        let name = format!("r{}", round % 5);
        clusters
            .patch_scale(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .unwrap();
        operator.kill();
    }
    let _operator = Operator::start(&ns.name);
    for i in 0..5 {
        let name = format!("r{i}");
        let want = clusters.get(&name).await.unwrap().spec.worker.replicas as usize;
        wait_workers(&client, &ns.name, &name, want).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    for pod in
        pods.list(&ListParams::default().labels("dask.org/component=worker")).await.unwrap().items
    {
        assert_eq!(pod.owner_references().len(), 1, "{} has no owner", pod.name_any());
    }
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn daskjob_creates_its_cluster_then_a_uniquely_named_runner() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-job").await;
    let _operator = Operator::start(&ns.name);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/tests/fixtures/simplejob.yaml"
    ))
    .unwrap();
    let mut job: dask_crds::DaskJob = serde_yaml::from_str(&text).unwrap();
    job.metadata.namespace = Some(ns.name.clone());
    let jobs: Api<dask_crds::DaskJob> = Api::namespaced(client.clone(), &ns.name);
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();

    let status = eventually(60, "the job to be Running", || async {
        let status = jobs.get("simple-job").await.ok()?.status?;
        (status.job_status == Some(dask_crds::JobPhase::Running)).then_some(status)
    })
    .await;
    let cluster =
        Api::<DaskCluster>::namespaced(client.clone(), &ns.name).get("simple-job").await.unwrap();
    assert_eq!(cluster.owner_references()[0].uid, created.uid().unwrap());
    let runner = status.job_runner_pod_name.unwrap();
    assert!(runner.starts_with("simple-job-runner-") && runner.len() > "simple-job-runner-".len());
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name).get(&runner).await.unwrap();
    assert_eq!(pod.labels()["dask.org/component"], "job-runner");
    assert!(status.start_time.is_some());
}

//! dask-kubernetes' behaviour, with its own example manifests applied
//! unchanged (tests/fixtures/dask-kubernetes): additional worker groups and
//! autoscalers adopted by their cluster (and deleted with it), and the
//! cluster's labels and annotations carried to every child (sim tier: a real
//! API server, kwok pods).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use dask_crds::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// The uid of `obj`'s controller owner, if it has one.
fn controller_uid<K: Resource>(obj: &K) -> Option<String> {
    let owners = obj.meta().owner_references.as_deref().unwrap_or_default();
    owners.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
}

/// No key of dask-kubernetes' ignore list (kopf's, kubectl's) got through.
fn assert_no_bookkeeping(what: &str, map: &BTreeMap<String, String>) {
    let leaked: Vec<_> = map
        .keys()
        .filter(|k| k.starts_with("kopf.zalando.org") || k.starts_with("kubectl.kubernetes.io"))
        .collect();
    assert!(leaked.is_empty(), "{what} carries {leaked:?}");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn deleting_a_cluster_deletes_the_worker_groups_and_autoscalers_that_name_it() {
    let (w, _operator) = World::with_operator("op-adopt").await;
    // Created before their cluster: they wait for it.
    w.create_upstream("simpleworkergroup.yaml").await;
    let scalers: Api<DaskAutoscaler> = w.api();
    // Bounds equal to the cluster's count: whatever a scheduler says, nothing scales.
    let scaler: DaskAutoscaler = serde_json::from_value(json!({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
        "metadata": { "name": "simple" }, "spec": { "cluster": "simple", "minimum": 2, "maximum": 2 }
    }))
    .unwrap();
    w.create(&scaler).await;
    let additional = "dask.org/workergroup-name=simple-additional";
    let groups: Api<DaskWorkerGroup> = w.api();
    // Settled (its pod ready, nothing left to do): only the cluster's arrival can wake it now.
    eventually(60, "the orphan group to settle with its one worker", || async {
        let ready = groups.get("simple-additional").await.ok()?.status?.ready_replicas;
        (ready == Some(1) && w.live_pods(additional).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(controller_uid(&groups.get("simple-additional").await.unwrap()), None);

    let cluster = w.create_upstream("simplecluster.yaml").await;
    let uid = cluster.uid();
    eventually(60, "the group and the autoscaler to be adopted by the cluster", || async {
        let group = groups.get("simple-additional").await.ok()?;
        let scaler = scalers.get("simple").await.ok()?;
        (controller_uid(&group) == uid && controller_uid(&scaler) == uid).then_some(())
    })
    .await;
    // Adoption also gives the group's pods the cluster's metadata (a rollout).
    let pods =
        eventually(60, "the additional group's pod to carry the cluster's metadata", || async {
            let pods = w.live_pods(additional).await;
            let inherited = pods.len() == 1
                && pods[0].annotations().get("test-annotation").map(String::as_str)
                    == Some("annotation-value");
            inherited.then_some(pods)
        })
        .await;
    assert_eq!(pods[0].labels()["test-label"], "label-value");
    // The manifest sets DASK_WORKER_NAME itself; the operator injects only what is unset.
    let env = pods[0].spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    let names: Vec<_> = env.iter().filter(|e| e.name == "DASK_WORKER_NAME").collect();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].value.as_deref(), Some("test-worker"));

    // `kubectl delete daskcluster simple`: background propagation.
    let clusters: Api<DaskCluster> = w.api();
    clusters.delete("simple", &DeleteParams::background()).await.unwrap();
    eventually(90, "the group, the autoscaler and every pod of the cluster to go", || async {
        let group = groups.get_opt("simple-additional").await.ok()?;
        let scaler = scalers.get_opt("simple").await.ok()?;
        let pods = w.live_pods("dask.org/cluster-name=simple").await;
        (group.is_none() && scaler.is_none() && pods.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn adoption_never_takes_a_group_from_another_controller() {
    let (w, _operator) = World::with_operator("op-steal").await;
    let keeper: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "keeper" } })).unwrap();
    let keeper = w.api::<ConfigMap>().create(&PostParams::default(), &keeper).await.unwrap();
    let text = include_str!("fixtures/dask-kubernetes/simpleworkergroup.yaml");
    let mut group: DaskWorkerGroup = serde_yaml::from_str(text).unwrap();
    let mut owner = keeper.controller_owner_ref(&()).unwrap();
    owner.block_owner_deletion = None;
    group.metadata.owner_references = Some(vec![owner]);
    let groups: Api<DaskWorkerGroup> = w.api();
    w.create(&group).await;
    w.create_upstream("simplecluster.yaml").await;

    let message = w.warning("DaskWorkerGroup", "simple-additional", "AdoptionRefused").await;
    assert!(message.contains("ConfigMap keeper"), "{message}");
    let group = groups.get("simple-additional").await.unwrap();
    assert_eq!(controller_uid(&group), keeper.uid());
    assert_eq!(group.owner_references().len(), 1);
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn cluster_metadata_reaches_every_child_and_an_edit_rolls_out() {
    let (w, _operator) = World::with_operator("op-meta").await;
    w.create_upstream("simplecluster.yaml").await;
    let pods = w.wait_workers("simple", 2).await;

    let deployment = w.api::<Deployment>().get("simple-scheduler").await.unwrap();
    let template = deployment.spec.clone().unwrap().template.metadata.unwrap();
    let service = w.api::<Service>().get("simple-scheduler").await.unwrap();
    let group = w.api::<DaskWorkerGroup>().get("simple-default").await.unwrap();
    let scheduler_side = [
        ("Deployment", &deployment.metadata),
        ("pod template", &template),
        ("Service", &service.metadata),
    ];
    for (what, meta) in scheduler_side {
        let (labels, annotations) =
            (meta.labels.clone().unwrap(), meta.annotations.clone().unwrap());
        assert_eq!(labels["test-label"], "label-value", "{what}");
        assert_eq!(labels["scheduler-sublabel"], "label-value", "{what}");
        assert_eq!(annotations["test-annotation"], "annotation-value", "{what}");
        assert_eq!(annotations["scheduler-subannotation"], "annotation-value", "{what}");
        assert_no_bookkeeping(what, &annotations);
    }
    assert_eq!(group.labels()["test-label"], "label-value");
    assert_eq!(group.annotations()["test-annotation"], "annotation-value");
    assert_no_bookkeeping("worker group", group.annotations());
    for pod in &pods {
        assert_eq!(pod.labels()["test-label"], "label-value");
        assert_eq!(pod.labels()["worker-sublabel"], "label-value");
        assert_eq!(pod.annotations()["test-annotation"], "annotation-value");
        assert_eq!(pod.annotations()["worker-subannotation"], "annotation-value");
        assert_no_bookkeeping("worker pod", pod.annotations());
    }

    // An edit to the cluster's metadata rolls out like a template change.
    let before: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let edit = json!({ "metadata": {
        "labels": { "test-label": "changed" },
        "annotations": { "sidecar.istio.io/inject": "true" } } });
    w.api::<DaskCluster>()
        .patch("simple", &PatchParams::default(), &Patch::Merge(edit))
        .await
        .unwrap();
    let deployments: Api<Deployment> = w.api();
    eventually(60, "the scheduler's pod template to carry the edit", || async {
        let template = deployments.get("simple-scheduler").await.ok()?.spec?.template.metadata?;
        let annotated = template.annotations?.get("sidecar.istio.io/inject")? == "true";
        (annotated && template.labels?.get("test-label")? == "changed").then_some(())
    })
    .await;
    eventually(90, "two new worker pods carrying the edit, the old ones gone", || async {
        let pods = w.live_pods("dask.org/workergroup-name=simple-default").await;
        let fresh = pods.len() == 2
            && pods.iter().all(|p| {
                !before.contains(&p.name_any())
                    && p.labels().get("test-label").map(String::as_str) == Some("changed")
                    && p.annotations().get("sidecar.istio.io/inject").map(String::as_str)
                        == Some("true")
            });
        fresh.then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_job_passes_its_metadata_to_its_cluster_runner_and_their_children() {
    let (w, _operator) = World::with_operator("op-jobmeta").await;
    w.create_upstream("simplejob.yaml").await;
    let jobs: Api<DaskJob> = w.api();
    let runner = eventually(90, "the job's runner pod", || async {
        jobs.get("simple-job").await.ok()?.status?.job_runner_pod_name
    })
    .await;
    let runner = w.api::<Pod>().get(&runner).await.unwrap();
    let cluster = w.api::<DaskCluster>().get("simple-job").await.unwrap();
    let deployment = w.api::<Deployment>().get("simple-job-scheduler").await.unwrap();
    let workers = w.wait_workers("simple-job", 2).await;
    let children = [
        ("runner", runner.annotations()),
        ("cluster", cluster.annotations()),
        ("scheduler Deployment", deployment.annotations()),
        ("worker pod", workers[0].annotations()),
    ];
    for (what, annotations) in children {
        assert_eq!(
            annotations.get("test-annotation").map(String::as_str),
            Some("annotation-value"),
            "{what}"
        );
        assert_no_bookkeeping(what, annotations);
    }
}

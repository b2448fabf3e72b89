//! One object that the API server accepts but that does not read as its
//! kind (a wrong type where the CRD leaves a pod spec open, a number past
//! `i32`) stalls nothing: the others keep reconciling, and it is reported on
//! itself (sim tier: a real API server, kwok nodes).

mod common;

use common::*;
use dask_crds::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

/// A pod spec the API server takes (the CRD leaves it open) but no PodSpec
/// reads: `ports` must be a list.
fn poison_pod_spec() -> Value {
    json!({ "containers": [{ "name": "w", "image": "x", "ports": "oops" }] })
}

/// The kinds' objects as plain JSON, through the untyped API: the typed one
/// cannot even say them.
fn untyped<K: Resource<DynamicType = ()>>(w: &World) -> Api<DynamicObject> {
    Api::namespaced_with(w.client.clone(), w.ns(), &ApiResource::erase::<K>(&()))
}

async fn create_untyped<K: Resource<DynamicType = ()>>(w: &World, obj: Value) {
    let mut obj: DynamicObject = serde_json::from_value(obj).unwrap();
    obj.types = Some(kube::api::TypeMeta {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
    });
    untyped::<K>(w).create(&PostParams::default(), &obj).await.expect("the API server takes it");
}

/// A good cluster gets its scheduler and workers, first with `poison`
/// there before the operator starts (its first list), then with another
/// made while it runs (its watch); each is reported with `field`.
async fn one_poison_stalls_nothing<K: Resource<DynamicType = ()>>(
    prefix: &str,
    poison: impl Fn(&str) -> Value,
    field: &str,
) -> (World, Operator) {
    let w = World::new(prefix).await;
    create_untyped::<K>(&w, poison("poison")).await;
    let operator = Operator::start(w.ns());
    w.create(&cluster("good", 2, 8786, 8787)).await;
    eventually(60, "the good cluster's scheduler pod", || async {
        let selector = "dask.org/cluster-name=good,dask.org/component=scheduler";
        (!w.live_pods(selector).await.is_empty()).then_some(())
    })
    .await;
    w.wait_workers("good", 2).await;
    let kind = K::kind(&()).to_string();
    let message = w.warning(&kind, "poison", "InvalidSpec").await;
    assert!(message.contains(field), "{message}");

    create_untyped::<K>(&w, poison("poison-late")).await;
    w.scale::<DaskCluster>("good", 3).await;
    w.wait_workers("good", 3).await;
    let message = w.warning(&kind, "poison-late", "InvalidSpec").await;
    assert!(message.contains(field), "{message}");
    (w, operator)
}

/// The status of an unreadable workload says so: Error, Degraded, the field.
async fn assert_error_status<K: Resource<DynamicType = ()>>(w: &World, name: &str, field: &str) {
    let api = untyped::<K>(w);
    eventually(30, &format!("an Error status on {name}"), || async {
        let obj = api.get(name).await.ok()?;
        let status = obj.data.get("status")?;
        let degraded = status["conditions"].as_array()?.iter().find(|c| c["type"] == "Degraded")?;
        let message = degraded["message"].as_str()?;
        (status["phase"] == "Error"
            && degraded["reason"] == "InvalidSpec"
            && message.contains(field))
        .then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_unreadable_cluster_stalls_no_other() {
    let mut spec = serde_json::to_value(cluster("x", 1, 8786, 8787).spec).unwrap();
    spec["worker"]["spec"] = poison_pod_spec();
    let field = "spec.worker.spec.containers[0].ports";
    let (w, _operator) = one_poison_stalls_nothing::<DaskCluster>(
        "op-poison-cluster",
        |name| json!({ "metadata": { "name": name }, "spec": spec }),
        field,
    )
    .await;
    assert_error_status::<DaskCluster>(&w, "poison", field).await;
    assert_error_status::<DaskCluster>(&w, "poison-late", field).await;
    assert!(w.worker_pods("poison").await.is_empty());
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_unreadable_worker_group_stalls_no_other() {
    // Of the good cluster, even: it is still only the group's fault.
    let spec = json!({ "cluster": "good", "worker": { "replicas": 1, "spec": {
        "containers": [{ "name": "w", "image": "x", "resources": { "requests": { "cpu": [1] } } }]
    } } });
    let field = "spec.worker.spec.containers[0].resources.requests.cpu";
    let (w, _operator) = one_poison_stalls_nothing::<DaskWorkerGroup>(
        "op-poison-group",
        |name| json!({ "metadata": { "name": name }, "spec": spec }),
        field,
    )
    .await;
    assert_error_status::<DaskWorkerGroup>(&w, "poison", field).await;
    assert!(w.live_pods("dask.org/workergroup-name=poison").await.is_empty());
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_unreadable_autoscaler_stalls_no_other() {
    // The CRD says int32, which the API server does not enforce.
    let spec = json!({ "cluster": "good", "minimum": 1, "maximum": 4_294_967_296_i64 });
    let _world = one_poison_stalls_nothing::<DaskAutoscaler>(
        "op-poison-scaler",
        |name| json!({ "metadata": { "name": name }, "spec": spec }),
        "spec.maximum",
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_unreadable_job_stalls_no_other() {
    let mut job: Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/tests/fixtures/simplejob.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    job["spec"]["job"]["spec"] = poison_pod_spec();
    let (w, _operator) = one_poison_stalls_nothing::<DaskJob>(
        "op-poison-job",
        |name| json!({ "metadata": { "name": name }, "spec": job["spec"] }),
        "spec.job.spec.containers[0].ports",
    )
    .await;
    // Nothing was made for it.
    assert!(untyped::<DaskCluster>(&w).get_opt("poison").await.unwrap().is_none());
}

//! Why pods do not run, told on the DaskCluster and DaskWorkerGroup, against
//! the real API server (sim tier). The kube-scheduler really refuses an
//! impossible request; kwok runs no containers, so a bad image, a crash and
//! an OOM kill are told to the API server as a kubelet would (a patch of the
//! pod's status, which kwok leaves alone once its pod runs).

mod common;

use common::*;
use dask_crds::{ClusterPhase, DaskCluster, DaskWorkerGroup};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

fn condition(conditions: &[Condition], type_: &str) -> Option<Condition> {
    conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Waits for the cluster's condition `type_` to have `reason`.
async fn cluster_condition(
    w: &World,
    name: &str,
    type_: &str,
    reason: &str,
) -> (DaskCluster, Condition) {
    let clusters: Api<DaskCluster> = w.api();
    eventually(60, &format!("{type_} {reason} on {name}"), || async {
        let cluster = clusters.get(name).await.ok()?;
        let found = condition(&cluster.status.as_ref()?.conditions, type_)?;
        (found.reason == reason).then_some((cluster, found))
    })
    .await
}

/// The one running pod with `selector`, once kwok runs it.
async fn running_pod(w: &World, selector: &str) -> Pod {
    eventually(60, &format!("a running pod {selector}"), || async {
        let pods = w.live_pods(selector).await;
        pods.into_iter().find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
    })
    .await
}

/// What a kubelet would write: the container's status, and the pod unready
/// unless the container is ready.
async fn tell_container(w: &World, pod: &Pod, container: Value) {
    let ready = if container["ready"] == json!(true) { "True" } else { "False" };
    let status = json!({ "status": {
        "conditions": [
            { "type": "Ready", "status": ready },
            { "type": "ContainersReady", "status": ready },
        ],
        "containerStatuses": [container],
    } });
    w.api::<Pod>()
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(status))
        .await
        .expect("the pod's status is patched");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_impossible_request_is_unschedulable_with_the_schedulers_message() {
    let (w, _operator) = World::with_operator("reasons-unsched").await;
    let mut huge = cluster("huge", 0, 8786, 8787);
    huge.spec.scheduler.spec.containers[0].resources =
        Some(serde_json::from_value(json!({ "requests": { "cpu": "1000" } })).unwrap());
    w.create(&huge).await;
    let (cluster, scheduler) =
        cluster_condition(&w, "huge", "SchedulerReady", "Unschedulable").await;
    assert_eq!(scheduler.status, "False");
    assert!(scheduler.message.contains("Insufficient cpu"), "{}", scheduler.message);
    assert_eq!(
        cluster.status.unwrap().phase,
        Some(ClusterPhase::Pending),
        "an autoscaler may add a node"
    );
    let warned = w.warning("DaskCluster", "huge", "Unschedulable").await;
    assert!(warned.contains("Insufficient cpu"), "{warned}");
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_scheduler_that_cannot_pull_its_image_fails_the_cluster() {
    let (w, _operator) = World::with_operator("reasons-image").await;
    w.create(&cluster("badimage", 0, 8786, 8787)).await;
    let pod = running_pod(&w, "dask.org/cluster-name=badimage,dask.org/component=scheduler").await;
    let said = "rpc error: code = NotFound desc = failed to pull and unpack image \"ghcr.io/dask/dask:nope\": not found";
    let pull = |reason: &str, message: &str| {
        json!({
            "name": "scheduler", "image": "ghcr.io/dask/dask:nope", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": reason, "message": message } },
        })
    };
    tell_container(&w, &pod, pull("ErrImagePull", said)).await;
    let (_, scheduler) =
        cluster_condition(&w, "badimage", "SchedulerReady", "ImagePullBackOff").await;
    assert!(
        scheduler.message.contains("ghcr.io/dask/dask:nope")
            && scheduler.message.contains("not found")
    );
    // The kubelet backs off: the registry's answer stays what is told.
    tell_container(
        &w,
        &pod,
        pull("ImagePullBackOff", "Back-off pulling image \"ghcr.io/dask/dask:nope\""),
    )
    .await;
    let clusters: Api<DaskCluster> = w.api();
    let failed = eventually(60, "the cluster Failed", || async {
        let status = clusters.get("badimage").await.ok()?.status?;
        (status.phase == Some(ClusterPhase::Failed)).then_some(status)
    })
    .await;
    let scheduler = condition(&failed.conditions, "SchedulerReady").unwrap();
    assert!(scheduler.message.contains("not found"), "{}", scheduler.message);
    let degraded = condition(&failed.conditions, "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "ImagePullBackOff"));
    let warned = w.warning("DaskCluster", "badimage", "ImagePullBackOff").await;
    assert!(warned.contains("ghcr.io/dask/dask:nope"), "{warned}");
    assert!(w.warning("DaskCluster", "badimage", "Failed").await.contains("not found"));
    // One Event per reason, however often the kubelet says it again.
    let events = w.api::<k8s_openapi::api::core::v1::Event>();
    let pulls = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ImagePullBackOff")
                && e.involved_object.name.as_deref() == Some("badimage")
        })
        .count();
    assert_eq!(pulls, 1);
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_scheduler_that_crashes_at_start_fails_the_cluster_with_its_exit() {
    let (w, _operator) = World::with_operator("reasons-crash").await;
    w.create(&cluster("crash", 0, 8786, 8787)).await;
    let pod = running_pod(&w, "dask.org/cluster-name=crash,dask.org/component=scheduler").await;
    tell_container(&w, &pod, json!({
        "name": "scheduler", "image": "ghcr.io/dask/dask:latest", "imageID": "", "ready": false, "restartCount": 2,
        "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container" } },
        "lastState": { "terminated": { "exitCode": 1, "reason": "Error",
            "message": "ModuleNotFoundError: No module named 'nope'",
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:02Z" } },
    }))
    .await;
    let (_, scheduler) = cluster_condition(&w, "crash", "SchedulerReady", "CrashLoopBackOff").await;
    assert!(
        scheduler
            .message
            .contains("exited with code 1 (ModuleNotFoundError: No module named 'nope')"),
        "{}",
        scheduler.message
    );
    let clusters: Api<DaskCluster> = w.api();
    eventually(60, "the cluster Failed", || async {
        let status = clusters.get("crash").await.ok()?.status?;
        (status.phase == Some(ClusterPhase::Failed)).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn an_oom_killed_worker_is_told_on_its_group_and_cluster() {
    let (w, _operator) = World::with_operator("reasons-oom").await;
    w.create(&cluster("oom", 2, 8786, 8787)).await;
    let pods = w.wait_workers("oom", 2).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    tell_container(&w, &pods[0], json!({
        "name": "worker", "image": "ghcr.io/dask/dask:latest", "imageID": "", "ready": true, "restartCount": 1,
        "state": { "running": { "startedAt": now } },
        "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "startedAt": now, "finishedAt": now } },
    }))
    .await;
    let groups: Api<DaskWorkerGroup> = w.api();
    let workers = eventually(60, "WorkersReady OOMKilled on the group", || async {
        let group = groups.get("oom-default").await.ok()?;
        let found = condition(&group.status?.conditions, "WorkersReady")?;
        (found.reason == "OOMKilled").then_some(found)
    })
    .await;
    assert_eq!(workers.status, "False");
    assert!(
        workers.message.starts_with("1 of 2 worker pods: container worker of pod"),
        "{}",
        workers.message
    );
    assert!(workers.message.contains("exceeding its memory limit"));
    let (cluster, _) = cluster_condition(&w, "oom", "WorkersReady", "OOMKilled").await;
    assert_eq!(
        cluster.status.unwrap().phase,
        Some(ClusterPhase::Running),
        "a worker's kill fails no cluster"
    );
    w.warning("DaskWorkerGroup", "oom-default", "OOMKilled").await;
    w.warning("DaskCluster", "oom", "OOMKilled").await;
}

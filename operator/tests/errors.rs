//! Failures reach whoever owns the object, as Warning Events, not only the
//! operator's log (sim tier: a real API server).

mod common;

use common::*;
use crds::DaskCluster;
use k8s_openapi::api::core::v1::{Event, ResourceQuota};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_quota_that_refuses_worker_pods_is_reported_on_the_worker_group() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "op-quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns.name);
    let quota = serde_json::from_value(json!({
        "metadata": { "name": "pods" }, "spec": { "hard": { "pods": "1" } }
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // Admission enforces a quota once the quota controller has counted its use.
    eventually(30, "the quota to be counted", || async {
        quotas.get("pods").await.ok()?.status?.used.map(drop)
    })
    .await;

    let _operator = Operator::start(&ns.name);
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster("q", 3, 8786, 8787)).await.unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let event = eventually(60, "a QuotaExceeded Warning on the worker group", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("QuotaExceeded")
                && e.involved_object.kind.as_deref() == Some("DaskWorkerGroup")
                && e.involved_object.name.as_deref() == Some("q-default")
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(message.contains("exceeded quota"), "{message}");
    assert!(event.involved_object.uid.is_some(), "kubectl describe finds Events by uid");
}

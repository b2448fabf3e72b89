//! Failures reach whoever owns the object, as Warning Events, not only the
//! operator's log (sim tier: a real API server).

mod common;

use common::*;
use k8s_openapi::api::core::v1::{ResourceQuota, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, Kubeconfig};
use serde_json::json;

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_quota_that_refuses_worker_pods_is_reported_on_the_worker_group() {
    let w = World::new("op-quota").await;
    let quotas: Api<ResourceQuota> = w.api();
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "pods" }, "spec": { "hard": { "pods": "1" } }
    }))
    .unwrap();
    w.create(&quota).await;
    // Admission enforces a quota once the quota controller has counted its use.
    eventually(30, "the quota to be counted", || async {
        quotas.get("pods").await.ok()?.status?.used.map(drop)
    })
    .await;

    let _operator = Operator::start(w.ns());
    w.create(&cluster("q", 3, 8786, 8787)).await;
    let message = w.warning("DaskWorkerGroup", "q-default", "QuotaExceeded").await;
    assert!(message.contains("exceeded quota"), "{message}");
}

/// A kubeconfig for the test control plane that authenticates as `account`
/// of the test's namespace (a ServiceAccount token) instead of as its administrator.
async fn kubeconfig_as(w: &World, account: &str) -> std::path::PathBuf {
    let accounts: Api<ServiceAccount> = w.api();
    w.create::<ServiceAccount>(
        &serde_json::from_value(json!({ "metadata": { "name": account } })).unwrap(),
    )
    .await;
    let request = serde_json::from_value(json!({ "spec": { "audiences": [] } })).unwrap();
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut config = Kubeconfig::read().unwrap();
    for user in &mut config.auth_infos {
        user.auth_info = Some(AuthInfo { token: Some(token.clone().into()), ..Default::default() });
    }
    let path = std::env::temp_dir().join(format!("kubeconfig-{}-{account}", w.ns()));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn a_missing_permission_is_reported_as_forbidden_on_the_object() {
    let w = World::new("op-rbac").await;
    // Everything the operator needs, except creating pods.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "operator" },
        "rules": [
            { "apiGroups": ["kubernetes.dask.org", "apps", "events.k8s.io"], "resources": ["*"], "verbs": ["*"] },
            { "apiGroups": [""], "resources": ["services", "events"], "verbs": ["*"] },
            { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"] }
        ]
    }))
    .unwrap();
    w.create(&role).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "operator" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator" },
        "subjects": [{ "kind": "ServiceAccount", "name": "operator", "namespace": w.ns() }]
    }))
    .unwrap();
    w.create(&binding).await;
    let kubeconfig = kubeconfig_as(&w, "operator").await;

    let _operator =
        Operator::start_with_env(w.ns(), &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    w.create(&cluster("rbac", 1, 8786, 8787)).await;
    let message = w.warning("DaskWorkerGroup", "rbac-default", "Forbidden").await;
    assert!(message.contains("cannot patch resource \"pods\""), "{message}");
    std::fs::remove_file(kubeconfig).ok();
}

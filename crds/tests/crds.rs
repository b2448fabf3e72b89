//! The generated CRDs match the committed YAML, and dask-kubernetes manifests
//! parse into our types unchanged.

use std::path::Path;

use dask_crds::{DaskCluster, DaskJob};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    for dir in ["crds/yaml", "charts/dask-rs/files/crds"] {
        for (file, crd) in dask_crds::all_crds() {
            let path = root().join(dir).join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == dask_crds::to_yaml(&crd),
                "{} is stale: run `cargo run -p dask-crds --bin crdgen` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn crds_fit_the_client_side_apply_annotation() {
    // kubectl's last-applied annotation caps a client-side apply at 256 KiB.
    for (file, crd) in dask_crds::all_crds() {
        assert!(dask_crds::to_yaml(&crd).len() < 64 * 1024, "{file} is too large");
    }
}

#[test]
fn dask_kubernetes_cluster_manifest_parses() {
    let text =
        std::fs::read_to_string(root().join("crds/tests/fixtures/simplecluster.yaml")).unwrap();
    let cluster: DaskCluster = serde_yaml::from_str(&text).unwrap();
    assert_eq!(cluster.spec.worker.replicas, 2);
    assert_eq!(cluster.spec.idle_timeout, 0);
    let worker = &cluster.spec.worker.spec.containers[0];
    assert_eq!(worker.args.as_deref().unwrap()[2], "$(DASK_WORKER_NAME)");
    let service = &cluster.spec.scheduler.service;
    assert_eq!(service.ports.as_ref().unwrap().len(), 2);
    assert_eq!(
        cluster.spec.scheduler.spec.containers[0]
            .readiness_probe
            .as_ref()
            .unwrap()
            .initial_delay_seconds,
        Some(5)
    );
}

#[test]
fn replicas_default_to_one() {
    let cluster: DaskCluster = serde_yaml::from_str(
        "apiVersion: kubernetes.dask.org/v1\nkind: DaskCluster\nmetadata: {name: c}\n\
         spec: {worker: {spec: {containers: []}}, scheduler: {spec: {containers: []}, service: {}}}",
    )
    .unwrap();
    assert_eq!(cluster.spec.worker.replicas, 1);
}

#[test]
fn dask_kubernetes_job_manifest_parses() {
    let text = std::fs::read_to_string(root().join("crds/tests/fixtures/simplejob.yaml")).unwrap();
    let job: DaskJob = serde_yaml::from_str(&text).unwrap();
    assert_eq!(job.spec.cluster.spec.worker.replicas, 2);
    assert_eq!(job.spec.job.spec.containers[0].name, "job");
}

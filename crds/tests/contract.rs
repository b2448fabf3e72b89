//! The strings dask-kubernetes and its users depend on: labels its tooling
//! selects by, annotations it writes, phases `KubeCluster` waits for, the
//! environment its pods read. A rename here breaks them, not a compile.

use dask_crds::{ClusterPhase, JobPhase, annotations, conditions, env, labels, scheduler};

#[test]
fn labels_are_dask_kubernetes_labels() {
    assert_eq!(labels::CLUSTER_NAME, "dask.org/cluster-name");
    assert_eq!(labels::COMPONENT, "dask.org/component");
    assert_eq!(labels::WORKER_GROUP_NAME, "dask.org/workergroup-name");
    assert_eq!(labels::COMPONENT_SCHEDULER, "scheduler");
    assert_eq!(labels::COMPONENT_WORKER, "worker");
    assert_eq!(labels::COMPONENT_WORKER_GROUP, "workergroup");
    assert_eq!(labels::COMPONENT_JOB_RUNNER, "job-runner");
}

#[test]
fn the_cooldown_annotation_is_dask_kubernetes() {
    assert_eq!(annotations::COOLDOWN_UNTIL, "kubernetes.dask.org/cooldown-until");
}

#[test]
fn phases_are_spelled_as_dask_kubernetes_spells_them() {
    let cluster = [
        (ClusterPhase::Created, "Created"),
        (ClusterPhase::Pending, "Pending"),
        (ClusterPhase::Running, "Running"),
        (ClusterPhase::Error, "Error"),
        (ClusterPhase::Failed, "Failed"),
    ];
    for (phase, text) in cluster {
        assert_eq!(serde_json::to_value(phase).unwrap(), text);
        assert_eq!(serde_json::from_value::<ClusterPhase>(text.into()).unwrap(), phase);
    }
    let job = [
        (JobPhase::JobCreated, "JobCreated"),
        (JobPhase::ClusterCreated, "ClusterCreated"),
        (JobPhase::Running, "Running"),
        (JobPhase::Successful, "Successful"),
        (JobPhase::Failed, "Failed"),
    ];
    for (phase, text) in job {
        assert_eq!(serde_json::to_value(phase).unwrap(), text);
        assert_eq!(serde_json::from_value::<JobPhase>(text.into()).unwrap(), phase);
    }
}

#[test]
fn pods_read_the_dask_kubernetes_environment_and_ports() {
    assert_eq!(env::SCHEDULER_ADDRESS, "DASK_SCHEDULER_ADDRESS");
    assert_eq!(env::WORKER_NAME, "DASK_WORKER_NAME");
    assert_eq!(scheduler::COMM_PORT_NAME, "tcp-comm");
    assert_eq!(scheduler::DASHBOARD_PORT_NAME, "http-dashboard");
}

/// Not dask-kubernetes' (it writes no conditions), but read by the gateway
/// and its Python tests, and by `kubectl wait --for=condition=...` scripts.
#[test]
fn condition_types_keep_their_spelling() {
    assert_eq!(conditions::READY, "Ready");
    assert_eq!(conditions::DEGRADED, "Degraded");
    assert_eq!(conditions::SCHEDULER_READY, "SchedulerReady");
    assert_eq!(conditions::WORKERS_READY, "WorkersReady");
    assert_eq!(conditions::reason::INVALID_SPEC, "InvalidSpec");
    assert_eq!(conditions::reason::STARTING, "Starting");
}

#[test]
fn prefixes_cover_their_keys() {
    for key in [labels::CLUSTER_NAME, labels::COMPONENT, labels::WORKER_GROUP_NAME] {
        assert!(key.starts_with(labels::PREFIX), "{key}");
    }
    for key in [
        annotations::CLUSTER_REPLICAS,
        annotations::SCALE_DOWN_WINDOW,
        annotations::SCALE_DOWN_STEP,
        annotations::COOLDOWN_UNTIL,
    ] {
        assert!(key.starts_with(annotations::PREFIX), "{key}");
    }
    use dask_crds::gateway as g;
    for key in [
        g::INSTANCE,
        g::CLUSTER,
        g::USER,
        g::OPTIONS,
        g::CONFIG,
        g::POOL,
        g::CLAIMED,
        g::RECORD,
        g::FAILED,
        g::CREATED,
        g::STOPPED,
    ] {
        assert!(key.starts_with(g::PREFIX), "{key}");
    }
}

//! Pure functions from a resource to the children it should have. No I/O:
//! unit-tested with fixtures, applied by the controllers.

use std::collections::BTreeMap;

use dask_crds::labels::*;
use dask_crds::scheduler::{service_host, service_name};
use dask_crds::{DaskCluster, DaskJob, DaskWorkerGroup, DaskWorkerGroupSpec, env};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodSpec, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::propagate::Inherited;
use crate::validate::Validated;

/// What a cluster's scheduler Deployment, pods and Service carry: the
/// cluster's metadata, overridden by the scheduler template's.
fn scheduler_metadata(cluster: &DaskCluster) -> Inherited {
    Inherited::from_meta(&cluster.metadata).with_template(cluster.spec.scheduler.metadata.as_ref())
}

/// Re-exported for the integration tests, which start real schedulers with it.
pub use dask_crds::env::SCHEDULER_HTTP_ROUTES;

/// Annotation on a default worker group: the cluster's `spec.worker.replicas`
/// last written to it. A group whose replicas differ from it was scaled
/// directly (dask-kubernetes' `KubeCluster.scale` does that), and the cluster
/// takes the new count over instead of undoing it.
pub const PROPAGATED_REPLICAS: &str = dask_crds::annotations::CLUSTER_REPLICAS;

pub fn default_group_name(cluster: &str) -> String {
    format!("{cluster}-default")
}

/// Adds `vars` to every container that does not set them itself.
fn inject_env(spec: &mut PodSpec, vars: &[(&str, String)]) {
    for container in &mut spec.containers {
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in vars {
            if !env.iter().any(|e| e.name == *name) {
                env.push(EnvVar {
                    name: name.to_string(),
                    value: Some(value.clone()),
                    value_from: None,
                });
            }
        }
    }
}

fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    owner.controller_owner_ref(&()).expect("reconciled objects have a name and uid")
}

/// A child's metadata: in its owner's namespace, controlled by it, with
/// `labels` and the annotations it inherits.
fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
    inherited: &Inherited,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: owner.namespace(),
        labels: Some(labels),
        annotations: inherited.annotations(),
        owner_references: Some(vec![owner_ref(owner)]),
        ..Default::default()
    }
}

/// The scheduler's Dask comm address, through its Service (DASK_SCHEDULER_ADDRESS).
pub fn scheduler_address(cluster_name: &str, namespace: &str, domain: &str, port: i32) -> String {
    format!("tcp://{}:{port}", service_host(cluster_name, namespace, domain))
}

fn scheduler_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_NAME.to_string(), cluster.to_string()),
        (COMPONENT.to_string(), COMPONENT_SCHEDULER.to_string()),
    ])
}

/// The scheduler runs as a one-replica Deployment with the Recreate strategy:
/// a lost or evicted pod comes back on its own (workers reconnect through the
/// Service), a changed template rolls out, and there are never two schedulers.
pub fn scheduler_deployment(cluster: &Validated<DaskCluster>) -> Deployment {
    let name = cluster.name_any();
    let inherited = scheduler_metadata(cluster);
    let labels = inherited.labels_with(&[(CLUSTER_NAME, &name), (COMPONENT, COMPONENT_SCHEDULER)]);
    let mut spec = cluster.spec.scheduler.spec.clone();
    inject_env(&mut spec, &[(env::SCHEDULER_HTTP_ROUTES_VAR, SCHEDULER_HTTP_ROUTES.to_string())]);
    Deployment {
        metadata: child_meta(&**cluster, service_name(&name), labels.clone(), &inherited),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // Only our own labels: user labels may change, a selector may not.
            selector: LabelSelector {
                match_labels: Some(scheduler_selector(&name)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: inherited.annotations(),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The user's Service spec, with a selector for the scheduler when it has none.
pub fn scheduler_service(cluster: &Validated<DaskCluster>) -> Service {
    let name = cluster.name_any();
    let inherited = scheduler_metadata(cluster);
    let labels = inherited.labels_with(&[(CLUSTER_NAME, &name), (COMPONENT, COMPONENT_SCHEDULER)]);
    let mut spec = cluster.spec.scheduler.service.clone();
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        spec.selector = Some(scheduler_selector(&name));
    }
    Service {
        metadata: child_meta(&**cluster, service_name(&name), labels, &inherited),
        spec: Some(spec),
        status: None,
    }
}

/// The cluster's default worker group, carrying `spec.worker` (replicas included).
pub fn default_worker_group(cluster: &Validated<DaskCluster>) -> DaskWorkerGroup {
    let name = cluster.name_any();
    let mut group = DaskWorkerGroup::new(
        &default_group_name(&name),
        DaskWorkerGroupSpec { cluster: name.clone(), worker: cluster.spec.worker.clone() },
    );
    group.metadata.namespace = cluster.namespace();
    // The cluster's own metadata; its worker template's stays in the spec
    // and reaches the pods from there (where it wins).
    let inherited = Inherited::from_meta(&cluster.metadata);
    group.metadata.labels =
        Some(inherited.labels_with(&[(CLUSTER_NAME, &name), (COMPONENT, COMPONENT_WORKER_GROUP)]));
    group.metadata.owner_references = Some(vec![owner_ref(&**cluster)]);
    let mut annotations = inherited.annotations;
    annotations.insert(PROPAGATED_REPLICAS.to_string(), cluster.spec.worker.replicas.to_string());
    group.metadata.annotations = Some(annotations);
    group
}

/// The replicas someone set on the default group directly, if they did.
pub fn directly_scaled_replicas(group: &DaskWorkerGroup, cluster: &DaskCluster) -> Option<i32> {
    let propagated: i32 = group.annotations().get(PROPAGATED_REPLICAS)?.parse().ok()?;
    let replicas = group.spec.worker.replicas;
    (replicas != propagated && cluster.spec.worker.replicas == propagated).then_some(replicas)
}

/// Selector of a group's worker pods, as a string (the scale subresource's).
pub fn worker_selector(group: &DaskWorkerGroup) -> String {
    format!("{CLUSTER_NAME}={},{WORKER_GROUP_NAME}={}", group.spec.cluster, group.name_any())
}

/// What a group's worker pods inherit before their template's own metadata:
/// the cluster's labels and annotations, overridden by the group's (an
/// additional group is the user's, a default group carries the cluster's).
pub fn worker_inheritance(cluster: Option<&DaskCluster>, group: &DaskWorkerGroup) -> Inherited {
    let from_cluster = cluster.map(|c| Inherited::from_meta(&c.metadata)).unwrap_or_default();
    from_cluster.overridden_by(Inherited::from_meta(&group.metadata))
}

/// A stable hash (FNV-1a) of what a worker pod is made from, inherited
/// metadata included (a changed cluster annotation rolls like a changed
/// image); stable across operator builds, unlike std's hasher, so an upgrade
/// rolls nothing for a group that inherits nothing.
pub fn template_hash(
    group: &DaskWorkerGroup,
    inherited: &Inherited,
    scheduler_address: &str,
) -> String {
    let (metadata, spec) = (&group.spec.worker.metadata, &group.spec.worker.spec);
    let input = if inherited.is_empty() {
        serde_json::to_string(&(metadata, spec, scheduler_address))
    } else {
        serde_json::to_string(&(metadata, spec, scheduler_address, inherited))
    };
    format!("{:010x}", fnv1a(&input.expect("worker templates serialise")) & 0xff_ffff_ffff)
}

/// FNV-1a of a string: tiny, and the same in every build and process.
pub fn fnv1a(input: &str) -> u64 {
    input.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// One worker pod of a group. Its name is also its Dask worker name
/// (DASK_WORKER_NAME), which is how the operator finds it in the scheduler.
pub fn worker_pod(
    group: &Validated<DaskWorkerGroup>,
    inherited: &Inherited,
    pod_name: &str,
    scheduler_address: &str,
    hash: &str,
) -> Pod {
    let group_name = group.name_any();
    let worker = &group.spec.worker;
    let metadata = inherited.clone().with_template(worker.metadata.as_ref());
    let labels = metadata.labels_with(&[
        (CLUSTER_NAME, &group.spec.cluster),
        (WORKER_GROUP_NAME, &group_name),
        (COMPONENT, COMPONENT_WORKER),
        (TEMPLATE_HASH, hash),
    ]);
    let mut spec = worker.spec.clone();
    inject_env(
        &mut spec,
        &[
            (env::WORKER_NAME, pod_name.to_string()),
            (env::SCHEDULER_ADDRESS, scheduler_address.to_string()),
        ],
    );
    Pod {
        metadata: child_meta(&**group, pod_name.to_string(), labels, &metadata),
        spec: Some(spec),
        status: None,
    }
}

/// A fresh worker pod name: unique, so a re-created group never meets an old pod.
pub fn new_worker_name(group: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{group}-worker-{}", &id[..10])
}

/// A DaskJob's cluster: named like the job (as dask-kubernetes does), owned by it.
pub fn job_cluster(job: &Validated<DaskJob>) -> DaskCluster {
    let mut cluster = DaskCluster::new(&job.name_any(), job.spec.cluster.spec.clone());
    cluster.metadata.namespace = job.namespace();
    let metadata =
        Inherited::from_meta(&job.metadata).with_template(job.spec.cluster.metadata.as_ref());
    cluster.metadata.labels = metadata.labels();
    cluster.metadata.annotations = metadata.annotations();
    cluster.metadata.owner_references = Some(vec![owner_ref(&**job)]);
    cluster
}

/// The runner's name carries the job's uid: a job deleted and created again
/// under the same name never meets its predecessor's pod (dask-kubernetes #829).
pub fn runner_name(job: &DaskJob) -> String {
    let uid = job.uid().unwrap_or_default().replace('-', "");
    format!("{}-runner-{}", job.name_any(), &uid[..uid.len().min(8)])
}

pub fn runner_pod(job: &Validated<DaskJob>, name: &str, scheduler_address: &str) -> Pod {
    let job_name = job.name_any();
    let metadata =
        Inherited::from_meta(&job.metadata).with_template(job.spec.job.metadata.as_ref());
    let mut spec = job.spec.job.spec.clone();
    spec.restart_policy.get_or_insert_with(|| "OnFailure".into());
    inject_env(&mut spec, &[(env::SCHEDULER_ADDRESS, scheduler_address.to_string())]);
    let labels =
        metadata.labels_with(&[(CLUSTER_NAME, &job_name), (COMPONENT, COMPONENT_JOB_RUNNER)]);
    Pod {
        metadata: child_meta(&**job, name.to_string(), labels, &metadata),
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The builders over fixtures that the tests edit freely.
    fn scheduler_deployment(cluster: &DaskCluster) -> Deployment {
        super::scheduler_deployment(&Validated::unchecked(cluster.clone()))
    }

    fn scheduler_service(cluster: &DaskCluster) -> Service {
        super::scheduler_service(&Validated::unchecked(cluster.clone()))
    }

    pub(crate) fn default_worker_group(cluster: &DaskCluster) -> DaskWorkerGroup {
        super::default_worker_group(&Validated::unchecked(cluster.clone()))
    }

    fn worker_pod(
        group: &DaskWorkerGroup,
        inherited: &Inherited,
        name: &str,
        at: &str,
        hash: &str,
    ) -> Pod {
        super::worker_pod(&Validated::unchecked(group.clone()), inherited, name, at, hash)
    }

    fn job_cluster(job: &DaskJob) -> DaskCluster {
        super::job_cluster(&Validated::unchecked(job.clone()))
    }

    fn runner_pod(job: &DaskJob, name: &str, scheduler_address: &str) -> Pod {
        super::runner_pod(&Validated::unchecked(job.clone()), name, scheduler_address)
    }

    fn fixture() -> DaskCluster {
        let text = include_str!("../../crds/tests/fixtures/simplecluster.yaml");
        let mut cluster: DaskCluster = serde_yaml::from_str(text).unwrap();
        cluster.metadata.uid = Some("uid-1".into());
        cluster.metadata.labels = Some(BTreeMap::from([("team".into(), "geo".into())]));
        cluster
    }

    #[test]
    fn scheduler_gets_the_api_routes_and_a_stable_selector() {
        let deployment = scheduler_deployment(&fixture());
        assert_eq!(deployment.metadata.name.as_deref(), Some("simple-scheduler"));
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.selector.match_labels.unwrap(), scheduler_selector("simple"));
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(template_labels["team"], "geo");
        let env = spec.template.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"));
        assert!(env.iter().any(|e| e.name == "SCHEDULER_ENV"), "the user's env is kept");
        let owner = &deployment.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("DaskCluster", Some(true)));
    }

    #[test]
    fn worker_pods_know_their_name_and_scheduler() {
        let mut group = default_worker_group(&fixture());
        group.metadata.uid = Some("uid-2".into());
        let address = scheduler_address("simple", "default", "example.org", 8786);
        assert_eq!(address, "tcp://simple-scheduler.default.svc.example.org:8786");
        let inherited = worker_inheritance(None, &group);
        let pod = worker_pod(&group, &inherited, "simple-default-worker-abc", &address, "h1");
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[WORKER_GROUP_NAME], "simple-default");
        assert_eq!(labels[COMPONENT], "worker");
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(get("DASK_WORKER_NAME").as_deref(), Some("simple-default-worker-abc"));
        assert_eq!(get("DASK_SCHEDULER_ADDRESS").as_deref(), Some(address.as_str()));
    }

    #[test]
    fn template_hash_changes_with_the_image_only() {
        let mut group = default_worker_group(&fixture());
        let none = Inherited::default();
        let before = template_hash(&group, &none, "a");
        group.spec.worker.replicas = 7;
        assert_eq!(before, template_hash(&group, &none, "a"), "scaling must not roll workers");
        group.spec.worker.spec.containers[0].image = Some("dask:new".into());
        assert_ne!(before, template_hash(&group, &none, "a"));
    }

    /// dask-kubernetes' own manifests, unchanged (operator/tests/fixtures).
    fn upstream<K: serde::de::DeserializeOwned + Resource>(text: &str) -> K {
        let mut obj: K = serde_yaml::from_str(text).unwrap();
        obj.meta_mut().namespace = Some("ns".into());
        obj.meta_mut().uid = Some("uid-9".into());
        obj
    }

    fn upstream_cluster() -> DaskCluster {
        upstream(include_str!("../tests/fixtures/dask-kubernetes/simplecluster.yaml"))
    }

    #[test]
    fn cluster_metadata_reaches_every_child_but_bookkeeping_keys() {
        let cluster = upstream_cluster();
        let deployment = scheduler_deployment(&cluster);
        let service = scheduler_service(&cluster);
        let group = default_worker_group(&cluster);
        let template = deployment.spec.as_ref().unwrap().template.metadata.clone().unwrap();
        for meta in [&deployment.metadata, &template, &service.metadata] {
            assert_eq!(meta.labels.as_ref().unwrap()["test-label"], "label-value");
            assert_eq!(meta.labels.as_ref().unwrap()["scheduler-sublabel"], "label-value");
            let annotations = meta.annotations.as_ref().unwrap();
            assert_eq!(annotations["test-annotation"], "annotation-value");
            assert_eq!(annotations["scheduler-subannotation"], "annotation-value");
            assert!(!annotations.keys().any(|k| k.starts_with("kopf") || k.starts_with("kubectl")));
        }
        assert_eq!(group.labels()["test-label"], "label-value");
        assert_eq!(group.annotations()["test-annotation"], "annotation-value");
        assert!(!group.annotations().contains_key("kopf.zalando.org/foobar"));

        let mut group = group;
        group.metadata.uid = Some("uid-2".into());
        let inherited = worker_inheritance(Some(&cluster), &group);
        let pod = worker_pod(&group, &inherited, "p", "tcp://s:8786", "h");
        let (labels, annotations) = (pod.labels(), pod.annotations());
        assert_eq!(labels["test-label"], "label-value");
        assert_eq!(labels["worker-sublabel"], "label-value");
        assert_eq!(annotations["test-annotation"], "annotation-value");
        assert_eq!(annotations["worker-subannotation"], "annotation-value");
        assert!(!annotations.contains_key(PROPAGATED_REPLICAS), "the operator's keys stay");
        assert_eq!(labels[COMPONENT], "worker", "our labels win");
    }

    #[test]
    fn template_metadata_wins_and_an_edit_to_the_cluster_rolls_workers() {
        let mut cluster = upstream_cluster();
        cluster.annotations_mut().insert("scheduler-subannotation".into(), "cluster".into());
        let deployment = scheduler_deployment(&cluster);
        assert_eq!(deployment.annotations()["scheduler-subannotation"], "annotation-value");

        let group = default_worker_group(&cluster);
        let address = "tcp://s:8786";
        let before = template_hash(&group, &worker_inheritance(Some(&cluster), &group), address);
        cluster.annotations_mut().insert("sidecar.istio.io/inject".into(), "true".into());
        let group = default_worker_group(&cluster);
        let after = template_hash(&group, &worker_inheritance(Some(&cluster), &group), address);
        assert_ne!(before, after, "a cluster annotation is part of the worker template");
        let template = scheduler_deployment(&cluster).spec.unwrap().template.metadata.unwrap();
        assert_eq!(template.annotations.unwrap()["sidecar.istio.io/inject"], "true");
    }

    #[test]
    fn an_additional_group_inherits_from_its_cluster_and_its_own_metadata_wins() {
        let cluster = upstream_cluster();
        let mut group: DaskWorkerGroup =
            upstream(include_str!("../tests/fixtures/dask-kubernetes/simpleworkergroup.yaml"));
        group.labels_mut().insert("test-label".into(), "group".into());
        let inherited = worker_inheritance(Some(&cluster), &group);
        let pod = worker_pod(&group, &inherited, "p", "tcp://s:8786", "h");
        assert_eq!(pod.labels()["test-label"], "group");
        assert_eq!(pod.annotations()["test-annotation"], "annotation-value");
    }

    #[test]
    fn a_job_passes_its_metadata_to_its_cluster_and_runner() {
        let job: DaskJob =
            upstream(include_str!("../tests/fixtures/dask-kubernetes/simplejob.yaml"));
        let cluster = job_cluster(&job);
        assert_eq!(cluster.annotations()["test-annotation"], "annotation-value");
        assert_eq!(cluster.annotations().len(), 1, "{:?}", cluster.annotations());
        let runner = runner_pod(&job, "r", "tcp://s:8786");
        assert_eq!(runner.annotations()["test-annotation"], "annotation-value");
        assert_eq!(runner.annotations().len(), 1);
    }

    #[test]
    fn a_directly_scaled_default_group_is_detected() {
        let cluster = fixture();
        let mut group = default_worker_group(&cluster);
        assert_eq!(directly_scaled_replicas(&group, &cluster), None);
        group.spec.worker.replicas = 5;
        assert_eq!(directly_scaled_replicas(&group, &cluster), Some(5));
        let mut rescaled = cluster.clone();
        rescaled.spec.worker.replicas = 3;
        assert_eq!(directly_scaled_replicas(&group, &rescaled), None, "a newer cluster count wins");
    }

    #[test]
    fn job_runner_names_differ_across_recreations() {
        let text = include_str!("../../crds/tests/fixtures/simplejob.yaml");
        let mut job: DaskJob = serde_yaml::from_str(text).unwrap();
        job.metadata.uid = Some("0b1c2d3e-0000-0000-0000-000000000001".into());
        let first = runner_name(&job);
        job.metadata.uid = Some("9f8e7d6c-0000-0000-0000-000000000002".into());
        assert_ne!(first, runner_name(&job));
        assert_eq!(first, "simple-job-runner-0b1c2d3e");
        let pod =
            runner_pod(&job, &first, "tcp://simple-job-scheduler.default.svc.cluster.local:8786");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
        assert!(
            spec.containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "DASK_SCHEDULER_ADDRESS")
        );
        let cluster = job_cluster(&job);
        assert_eq!(cluster.name_any(), "simple-job");
        assert_eq!(cluster.owner_references()[0].kind, "DaskJob");
        // An unlabelled job's cluster carries no empty label map (see `Inherited::annotations`).
        assert!(!serde_json::to_string(&cluster).unwrap().contains("{}"));
    }

    /// Every pod field a template sets reaches the pods as it is: the
    /// gateway's pod keys (node pool, tolerations, affinity, volumes, service
    /// account, pull secrets, resources) and the template's labels and
    /// annotations.
    #[test]
    fn every_pod_field_of_a_template_reaches_its_pods() {
        let shaped = serde_json::json!({
            "nodeSelector": {"pool": "dask-workers"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "type", "operator": "In", "values": ["kwok"]}]}]}}},
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "serviceAccountName": "dask-pods",
            "imagePullSecrets": [{"name": "regcred"}],
            "priorityClassName": "low",
            "containers": [{"name": "dask", "image": "img:1", "imagePullPolicy": "Always",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
        });
        let meta = dask_crds::SimpleObjectMeta {
            labels: Some(BTreeMap::from([("example.com/team".into(), "geo".into())])),
            annotations: Some(BTreeMap::from([("example.com/note".into(), "n".into())])),
        };
        let mut cluster = fixture();
        cluster.spec.scheduler.spec = serde_json::from_value(shaped.clone()).unwrap();
        cluster.spec.worker.spec = serde_json::from_value(shaped.clone()).unwrap();
        cluster.spec.scheduler.metadata = Some(meta.clone());
        cluster.spec.worker.metadata = Some(meta);
        let deployment = scheduler_deployment(&cluster);
        let template = deployment.spec.unwrap().template;
        let mut group = default_worker_group(&cluster);
        group.metadata.uid = Some("uid-2".into());
        let inherited = worker_inheritance(Some(&cluster), &group);
        let pod = worker_pod(&group, &inherited, "p", "tcp://s:8786", "h");
        for (meta, spec) in [
            (template.metadata.unwrap(), template.spec.unwrap()),
            (pod.metadata, pod.spec.unwrap()),
        ] {
            let mut spec = serde_json::to_value(spec).unwrap();
            // The operator adds its own env vars; everything else is the template's.
            spec["containers"][0].as_object_mut().unwrap().remove("env");
            assert_eq!(spec, shaped);
            assert_eq!(meta.labels.unwrap()["example.com/team"], "geo");
            assert_eq!(meta.annotations.unwrap()["example.com/note"], "n");
        }
    }
}

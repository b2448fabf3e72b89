//! The DaskCluster of a gateway cluster, built from the typed `crds` structs:
//! a pure function of the cluster and where the gateway runs, so every field
//! the operator gets is checked here by unit tests.

use std::collections::BTreeMap;

use dask_crds::{DaskCluster, DaskClusterSpec, DaskScheduler, DaskWorker, scheduler};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, Probe, ResourceRequirements,
    SecretVolumeSource, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::backends::PRESENCE_PRELOAD;
use crate::domain::models::Cluster;
use crate::domain::pods::{PodShape, Resources, patched};

pub const INSTANCE: &str = dask_crds::gateway::INSTANCE;
pub const CLUSTER: &str = dask_crds::gateway::CLUSTER;
pub const USER: &str = dask_crds::gateway::USER;
pub const OPTIONS: &str = dask_crds::gateway::OPTIONS;
pub const SETTINGS: &str = dask_crds::gateway::CONFIG;
/// Label of a warm-pool member (a DaskCluster no user has claimed yet): its
/// template's key ([`crate::backends::kubernetes::pool`]).
pub const POOL: &str = dask_crds::gateway::POOL;
/// When a user claimed a pool member (ms since the epoch): its start time.
pub const CLAIMED: &str = dask_crds::gateway::CLAIMED;
/// Where the pods mount their credentials Secret.
const CREDENTIALS: &str = "/etc/dask-credentials";
/// The scheduler preload's HTTP API (heartbeats, orders), beside the two
/// ports of the `dask_crds::scheduler` contract.
pub const API_PORT: i32 = 8788;
const API_PORT_NAME: &str = "http-gateway";
pub const COMM_PORT: i32 = scheduler::DEFAULT_COMM_PORT;
pub const DASHBOARD_PORT: i32 = scheduler::DEFAULT_DASHBOARD_PORT;
/// Seconds between heartbeats: they also report retired workers as gone.
const HEARTBEAT_PERIOD: &str = "5";

/// Where the gateway makes its clusters.
pub struct Site<'a> {
    pub namespace: &'a str,
    pub cluster_domain: &'a str,
    /// The gateway's own label value, so replicas of another gateway keep off.
    pub instance: &'a str,
    /// The image when the cluster's options name none.
    pub image: &'a str,
    /// Where schedulers send heartbeats.
    pub api_url: &'a str,
    pub adaptive_period: f64,
    /// Each profile's pod shape (a cluster of an unknown profile gets the defaults).
    pub shapes: &'a BTreeMap<String, PodShape>,
}

/// The DaskCluster of gateway cluster `<hex>`: `dask-<hex>` (Service names
/// must start with a letter).
pub fn resource_name(cluster: &str) -> String {
    format!("dask-{cluster}")
}

/// The scheduler's Secret: API token and TLS pair, also what the gateway reads back.
pub fn secret_name(cluster: &str) -> String {
    format!("dask-{cluster}-gateway")
}

/// The workers' Secret: the TLS pair alone, never the scheduler's API token
/// (user code runs in workers).
pub fn tls_secret_name(cluster: &str) -> String {
    format!("dask-{cluster}-tls")
}

/// The scheduler Service's DNS name.
pub fn scheduler_host(site: &Site, cluster: &str) -> String {
    scheduler::service_host(&resource_name(cluster), site.namespace, site.cluster_domain)
}

fn env(name: impl Into<String>, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// TLS for the Dask comms (one certificate, also the CA), then the user's variables.
fn container_env(cluster: &Cluster) -> Vec<EnvVar> {
    let (cert, key) = (format!("{CREDENTIALS}/dask.crt"), format!("{CREDENTIALS}/dask.pem"));
    let tls = dask_crds::env::tls(&cert, &key).into_iter().map(|(name, value)| env(name, value));
    tls.chain(cluster.config.environment.iter().map(|(k, v)| env(k, v))).collect()
}

/// The credentials Secret `secret`, mounted read-only, then the shape's
/// volumes and mounts.
fn volumes(secret: String, shape: &PodShape) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (mut volumes, mut mounts) = credentials(secret);
    volumes.extend(shape.volumes.iter().cloned());
    mounts.extend(shape.volume_mounts.iter().cloned());
    (volumes, mounts)
}

fn credentials(secret: String) -> (Vec<Volume>, Vec<VolumeMount>) {
    let volume = Volume {
        name: "dask-credentials".into(),
        secret: Some(SecretVolumeSource { secret_name: Some(secret), ..Default::default() }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "dask-credentials".into(),
        mount_path: CREDENTIALS.into(),
        read_only: Some(true),
        ..Default::default()
    };
    (vec![volume], vec![mount])
}

fn amounts(cores: f64, memory: u64) -> BTreeMap<String, Quantity> {
    [
        ("cpu".to_string(), Quantity(format!("{cores:.3}"))),
        ("memory".to_string(), Quantity(memory.to_string())),
    ]
    .into()
}

fn resources(r: Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(amounts(r.cores, r.memory)),
        limits: Some(amounts(r.cores_limit, r.memory_limit)),
        ..Default::default()
    }
}

/// The options' cores and memory are the requests; the profile's limits
/// (by default the requests: a worker gets what its options promise).
fn worker_resources(cluster: &Cluster, shape: &PodShape) -> Resources {
    let config = &cluster.config;
    Resources {
        cores: config.worker_cores,
        memory: config.worker_memory,
        cores_limit: shape.worker_cores_limit.unwrap_or(config.worker_cores),
        memory_limit: shape.worker_memory_limit.unwrap_or(config.worker_memory),
    }
}

/// A pod of one Dask process, shaped by the profile, then its extra patches.
fn dask_pod(
    container: Container,
    volumes: Vec<Volume>,
    shape: &PodShape,
    container_patch: &serde_json::Map<String, serde_json::Value>,
    pod_patch: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<PodSpec> {
    let container = Container {
        image_pull_policy: shape.image_pull_policy.map(|p| p.as_str().to_string()),
        ..container
    };
    let container = patched(&container, container_patch)
        .map_err(|e| anyhow::anyhow!("the extra container config: {e}"))?;
    let optional_map = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        // Dask pods never call the Kubernetes API; with a service account
        // of the admin's, its token is mounted as the account says.
        automount_service_account_token: shape.service_account.is_none().then_some(false),
        service_account_name: shape.service_account.clone(),
        node_selector: optional_map(&shape.node_selector),
        tolerations: optional_list(&shape.tolerations),
        affinity: shape.affinity.clone(),
        image_pull_secrets: optional_list(&shape.image_pull_secrets),
        ..Default::default()
    };
    patched(&pod, pod_patch).map_err(|e| anyhow::anyhow!("the extra pod config: {e}"))
}

fn optional_list<T: Clone>(list: &[T]) -> Option<Vec<T>> {
    (!list.is_empty()).then(|| list.to_vec())
}

/// The shape's labels and annotations, for the pods of a template.
fn template_meta(shape: &PodShape) -> Option<dask_crds::SimpleObjectMeta> {
    let optional = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let meta = dask_crds::SimpleObjectMeta {
        labels: optional(&shape.labels),
        annotations: optional(&shape.annotations),
    };
    (meta != Default::default()).then_some(meta)
}

fn worker(
    site: &Site,
    cluster: &Cluster,
    image: &str,
    shape: &PodShape,
) -> anyhow::Result<DaskWorker> {
    let config = &cluster.config;
    let scheduler_address = format!("tls://{}:{COMM_PORT}", scheduler_host(site, &cluster.name));
    let threads = config.worker_threads.to_string();
    let resources_of_worker = worker_resources(cluster, shape);
    // Dask's own memory limit is the pod's: Dask spills and pauses before the kernel kills.
    let memory = resources_of_worker.memory_limit.to_string();
    let (volumes, mounts) = volumes(tls_secret_name(&cluster.name), shape);
    let args = [
        "dask",
        "worker",
        &scheduler_address,
        "--name",
        "$(DASK_WORKER_NAME)",
        "--dashboard-address",
        &format!(":{DASHBOARD_PORT}"),
        "--nthreads",
        &threads,
        "--memory-limit",
        &memory,
    ];
    let container = Container {
        name: "worker".into(),
        image: Some(image.into()),
        env: Some(container_env(cluster)),
        args: Some(strings(args)),
        resources: Some(resources(resources_of_worker)),
        volume_mounts: Some(mounts),
        // Named as the scheduler's, so the chart's worker PodMonitor finds it.
        ports: Some(vec![ContainerPort {
            name: Some(scheduler::DASHBOARD_PORT_NAME.into()),
            container_port: DASHBOARD_PORT,
            ..Default::default()
        }]),
        ..Default::default()
    };
    let spec = dask_pod(
        container,
        volumes,
        shape,
        &shape.worker_extra_container_config,
        &shape.worker_extra_pod_config,
    )
    .map_err(|e| anyhow::anyhow!("worker pod: {e}"))?;
    Ok(DaskWorker { replicas: 0, metadata: template_meta(shape), spec })
}

/// The scheduler's ports, by name: the `dask_crds::scheduler` two and the preload's API.
const SCHEDULER_PORTS: [(&str, i32); 3] = [
    (scheduler::COMM_PORT_NAME, COMM_PORT),
    (scheduler::DASHBOARD_PORT_NAME, DASHBOARD_PORT),
    (API_PORT_NAME, API_PORT),
];

fn dask_scheduler(
    site: &Site,
    cluster: &Cluster,
    image: &str,
    shape: &PodShape,
) -> anyhow::Result<DaskScheduler> {
    let name = &cluster.name;
    let mut env_vars = container_env(cluster);
    env_vars.extend([
        env("DASK_GATEWAY_API_URL", site.api_url),
        env("DASK_GATEWAY_API_TOKEN", format!("{CREDENTIALS}/api-token")),
        env("DASK_GATEWAY_CLUSTER_NAME", name),
    ]);
    let (comm, dashboard, api) =
        (COMM_PORT.to_string(), format!(":{DASHBOARD_PORT}"), format!(":{API_PORT}"));
    let (adaptive, idle) =
        (site.adaptive_period.to_string(), cluster.config.idle_timeout.to_string());
    let args = [
        "dask",
        "scheduler",
        "--protocol",
        "tls",
        "--port",
        &comm,
        "--dashboard-address",
        &dashboard,
        "--preload",
        "dask_gateway.scheduler_preload",
        // Its text: the image need not hold a file of ours.
        "--preload",
        PRESENCE_PRELOAD,
        "--dg-api-address",
        &api,
        "--dg-heartbeat-period",
        HEARTBEAT_PERIOD,
        "--dg-adaptive-period",
        &adaptive,
        "--dg-idle-timeout",
        &idle,
    ];
    let ports = SCHEDULER_PORTS.map(|(name, port)| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        ..Default::default()
    });
    let service_ports = SCHEDULER_PORTS.map(|(name, port)| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    });
    let (volumes, mounts) = volumes(secret_name(name), shape);
    let container = Container {
        name: "scheduler".into(),
        resources: Some(resources(shape.scheduler_resources())),
        image: Some(image.into()),
        env: Some(env_vars),
        args: Some(strings(args)),
        ports: Some(ports.into()),
        // Ready once the preload's API answers: then heartbeats and orders work.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(API_PORT),
                path: Some("/api/health".into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let spec = dask_pod(
        container,
        volumes,
        shape,
        &shape.scheduler_extra_container_config,
        &shape.scheduler_extra_pod_config,
    )
    .map_err(|e| anyhow::anyhow!("scheduler pod: {e}"))?;
    Ok(DaskScheduler {
        metadata: template_meta(shape),
        spec,
        service: ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(service_ports.into()),
            ..Default::default()
        },
    })
}

/// The DaskCluster for `cluster`, with no workers yet (its scheduler's
/// heartbeats set the count). Owner, options and settings ride along as
/// annotations: the gateway keeps no state of its own. Its pods take the
/// shape of the cluster's profile; the image is the options', else the
/// profile's, else the backend's.
pub fn dask_cluster(site: &Site, cluster: &Cluster) -> anyhow::Result<DaskCluster> {
    let image = cluster.config.image.as_deref().unwrap_or(site.image);
    let default_shape = PodShape::default();
    let shape = site.shapes.get(&cluster.config.profile).unwrap_or(&default_shape);
    let labels = [
        ("app.kubernetes.io/name", "dask-gateway"),
        (INSTANCE, site.instance),
        (CLUSTER, cluster.name.as_str()),
    ];
    let annotations = [
        (USER, cluster.username.clone()),
        (OPTIONS, serde_json::to_string(&cluster.options).unwrap_or_default()),
        (SETTINGS, serde_json::to_string(&cluster.config).unwrap_or_default()),
    ];
    Ok(DaskCluster {
        metadata: ObjectMeta {
            name: Some(resource_name(&cluster.name)),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            annotations: Some(annotations.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            ..Default::default()
        },
        spec: DaskClusterSpec {
            idle_timeout: 0,
            worker: worker(site, cluster, image, shape)?,
            scheduler: dask_scheduler(site, cluster, image, shape)?,
        },
        status: None,
    })
}

/// A warm-pool member: the DaskCluster of `cluster` (its template's, with
/// no user), labelled with its template's `key`. A claim changes the
/// DaskCluster's metadata, which the operator passes on to its children;
/// the scheduler's template pins each key a claim changes, so the
/// Deployment's pod template stays the same and the ready scheduler pod is
/// not rolled. That pod (and its Deployment and Service) keep the pool's
/// metadata, without the user; the worker group and the worker pods, all
/// made after the claim, carry the user's as a cold cluster's do.
pub fn pooled_dask_cluster(
    site: &Site,
    cluster: &Cluster,
    key: &str,
) -> anyhow::Result<DaskCluster> {
    let mut dc = dask_cluster(site, cluster)?;
    dc.metadata.labels.get_or_insert_default().insert(POOL.into(), key.into());
    let pinned = dc.metadata.annotations.clone().unwrap_or_default();
    let meta = dc.spec.scheduler.metadata.get_or_insert_default();
    meta.labels.get_or_insert_default().insert(POOL.into(), key.into());
    let annotations = meta.annotations.get_or_insert_default();
    for (k, v) in [(USER, pinned.get(USER)), (OPTIONS, pinned.get(OPTIONS))] {
        annotations.insert(k.into(), v.cloned().unwrap_or_default());
    }
    annotations.insert(CLAIMED.into(), String::new());
    Ok(dc)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Map, json};

    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;

    const SITE: Site = Site {
        namespace: "dask",
        cluster_domain: "cluster.local",
        instance: "gw",
        image: "worker:1",
        api_url: "http://gateway.dask:8000/api",
        adaptive_period: 3.0,
        shapes: &BTreeMap::new(),
    };

    fn cluster() -> Cluster {
        let mut cluster = sample("abc", "alice", ClusterStatus::Pending);
        cluster.config.environment = BTreeMap::from([("EXTRA".into(), "1".into())]);
        cluster.options = Map::from_iter([("worker_cores".into(), json!(1))]);
        cluster
    }

    fn env_of(container: &Container) -> BTreeMap<&str, &str> {
        let env = container.env.as_deref().unwrap_or_default();
        env.iter().map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default())).collect()
    }

    #[test]
    fn the_scheduler_serves_the_contract_ports_with_its_credentials() {
        let dc = dask_cluster(&SITE, &cluster()).unwrap();
        assert_eq!(dc.metadata.name.as_deref(), Some("dask-abc"));
        let pod = &dc.spec.scheduler.spec;
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("worker:1"));
        let env = env_of(container);
        assert_eq!(env["DASK_GATEWAY_API_TOKEN"], "/etc/dask-credentials/api-token");
        assert_eq!(env["DASK_GATEWAY_CLUSTER_NAME"], "abc");
        assert_eq!(env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"], "True");
        assert_eq!(env["EXTRA"], "1");
        let secret = pod.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("dask-abc-gateway"));
        assert_eq!(container.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        let scheduler = &dc.spec.scheduler;
        assert_eq!((scheduler.comm_port(), scheduler.dashboard_port()), (8786, 8787));
        let ports = scheduler.service.ports.as_ref().unwrap();
        assert_eq!(ports[2].name.as_deref(), Some("http-gateway"));
        assert_eq!(ports[2].port, API_PORT);
    }

    #[test]
    fn workers_get_the_tls_pair_alone_and_their_promised_resources() {
        let dc = dask_cluster(&SITE, &cluster()).unwrap();
        assert_eq!(dc.spec.worker.replicas, 0, "heartbeats set the count");
        let pod = &dc.spec.worker.spec;
        assert_eq!(pod.automount_service_account_token, Some(false));
        let secret = pod.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("dask-abc-tls"));
        let container = &pod.containers[0];
        let env = env_of(container);
        assert!(!env.contains_key("DASK_GATEWAY_API_TOKEN"), "user code runs in workers");
        assert_eq!(
            env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"],
            "/etc/dask-credentials/dask.pem"
        );
        let args = container.args.as_ref().unwrap();
        assert_eq!(args[2], "tls://dask-abc-scheduler.dask.svc.cluster.local:8786");
        assert_eq!(args[6], ":8787");
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("http-dashboard"), 8787));
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.requests, resources.limits);
        let limits = resources.limits.as_ref().unwrap();
        assert_eq!(
            (limits["cpu"].0.as_str(), limits["memory"].0.as_str()),
            ("1.000", "1073741824")
        );
    }

    #[test]
    fn owner_and_settings_are_labels_and_annotations() {
        let dc = dask_cluster(&SITE, &cluster()).unwrap();
        let labels = dc.metadata.labels.as_ref().unwrap();
        assert_eq!((labels[INSTANCE].as_str(), labels[CLUSTER].as_str()), ("gw", "abc"));
        let annotations = dc.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[USER], "alice");
        assert_eq!(annotations[OPTIONS], r#"{"worker_cores":1}"#);
        let settings: crate::domain::options::ClusterConfig =
            serde_json::from_str(&annotations[SETTINGS]).unwrap();
        assert_eq!(settings.environment["EXTRA"], "1");
    }

    /// A config that sets every pod key, globally and in a profile.
    const SHAPED: &str = r#"
        [cluster]
        environment = {GLOBAL = "g", SHARED = "global"}
        [backend]
        type = "kubernetes"
        image = "global:1"
        image_pull_policy = "IfNotPresent"
        image_pull_secrets = [{name = "regcred"}]
        node_selector = {zone = "a"}
        tolerations = [{key = "everyone", operator = "Exists"}]
        affinity = {nodeAffinity = {requiredDuringSchedulingIgnoredDuringExecution = {nodeSelectorTerms = [{matchExpressions = [{key = "kubernetes.io/arch", operator = "In", values = ["amd64"]}]}]}}}
        volumes = [{name = "data", persistentVolumeClaim = {claimName = "shared-data", readOnly = true}}]
        volume_mounts = [{name = "data", mountPath = "/data", readOnly = true}]
        service_account = "dask-pods"
        labels = {"example.com/team" = "geo"}
        annotations = {"example.com/cost-centre" = "42"}
        scheduler_cores = 0.25
        scheduler_memory = "2 GiB"
        scheduler_extra_pod_config = {priorityClassName = "dask-scheduler"}
        scheduler_extra_container_config = {env = [{name = "SCHEDULER_ONLY", value = "1"}]}
        worker_extra_pod_config = {priorityClassName = "dask-worker", terminationGracePeriodSeconds = 60}

        [[options.profiles]]
        name = "plain"
        worker_cores = 1
        worker_memory = "1 GiB"

        [[options.profiles]]
        name = "pool"
        worker_cores = 0.5
        worker_memory = "1 GiB"
        worker_cores_limit = 1
        worker_memory_limit = "2 GiB"
        image = "profile:2"
        image_pull_policy = "Always"
        environment = {SHARED = "profile"}
        node_selector = {pool = "dask-workers"}
        tolerations = [{key = "dedicated", operator = "Equal", value = "dask", effect = "NoSchedule"}]
        labels = {tier = "pool"}
        worker_extra_container_config = {resources = {limits = {"nvidia.com/gpu" = 1}}, securityContext = {runAsUser = 1000}}
        worker_extra_pod_config = {hostAliases = [{ip = "10.0.0.9", hostnames = ["data.local"]}]}
    "#;

    fn shaped(profile: &str) -> DaskCluster {
        let config = crate::config::Config::parse(SHAPED).unwrap();
        let crate::config::BackendConfig::Kubernetes(k8s) = &config.backend else { panic!() };
        let shapes = crate::domain::pods::resolve_all(&k8s.pods, &config.options.profiles).unwrap();
        let spec =
            crate::domain::options::OptionsSpec::new(config.options.profiles.clone(), vec![]);
        let requested = json!({ "profile": profile });
        let (options, settings) =
            spec.resolve(requested.as_object().unwrap(), &config.cluster).unwrap();
        let mut cluster = sample("abc", "alice", ClusterStatus::Pending);
        (cluster.options, cluster.config) = (options, settings);
        let site = Site { image: &k8s.image, shapes: &shapes, ..SITE };
        dask_cluster(&site, &cluster).unwrap()
    }

    fn quantities(r: &Option<BTreeMap<String, Quantity>>) -> BTreeMap<&str, &str> {
        r.iter().flatten().map(|(k, v)| (k.as_str(), v.0.as_str())).collect()
    }

    #[test]
    fn every_global_and_profile_knob_reaches_the_dask_cluster() {
        let dc = shaped("pool");
        let (scheduler, worker) = (&dc.spec.scheduler, &dc.spec.worker);
        for (role, meta, pod) in [
            ("scheduler", &scheduler.metadata, &scheduler.spec),
            ("worker", &worker.metadata, &worker.spec),
        ] {
            let container = &pod.containers[0];
            assert_eq!(container.image.as_deref(), Some("profile:2"), "{role}");
            assert_eq!(container.image_pull_policy.as_deref(), Some("Always"), "{role}");
            let env = env_of(container);
            assert_eq!((env["GLOBAL"], env["SHARED"]), ("g", "profile"), "{role}");
            assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
            let selector = pod.node_selector.as_ref().unwrap();
            assert_eq!(
                (selector["zone"].as_str(), selector["pool"].as_str()),
                ("a", "dask-workers")
            );
            let [toleration] = pod.tolerations.as_deref().unwrap() else { panic!("{role}") };
            assert_eq!(
                (
                    toleration.key.as_deref(),
                    toleration.value.as_deref(),
                    toleration.effect.as_deref()
                ),
                (Some("dedicated"), Some("dask"), Some("NoSchedule")),
                "a profile's tolerations replace the global ones"
            );
            let affinity = pod.affinity.as_ref().unwrap().node_affinity.as_ref().unwrap();
            assert!(affinity.required_during_scheduling_ignored_during_execution.is_some());
            let volumes: Vec<_> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
            assert_eq!(volumes, ["dask-credentials", "data"], "{role}");
            let claim = pod.volumes.as_ref().unwrap()[1].persistent_volume_claim.as_ref().unwrap();
            assert_eq!(claim.claim_name, "shared-data");
            let mounts: Vec<_> =
                container.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
            assert_eq!(mounts, ["/etc/dask-credentials", "/data"], "{role}");
            assert_eq!(pod.service_account_name.as_deref(), Some("dask-pods"));
            assert_eq!(pod.automount_service_account_token, None, "the account decides");
            let meta = meta.as_ref().unwrap();
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(
                (labels["example.com/team"].as_str(), labels["tier"].as_str()),
                ("geo", "pool")
            );
            assert_eq!(meta.annotations.as_ref().unwrap()["example.com/cost-centre"], "42");
        }

        let resources = scheduler.spec.containers[0].resources.as_ref().unwrap();
        assert_eq!(
            quantities(&resources.requests),
            [("cpu", "0.250"), ("memory", "2147483648")].into()
        );
        assert_eq!(
            quantities(&resources.limits),
            [("cpu", "1.000"), ("memory", "2147483648")].into()
        );
        assert_eq!(scheduler.spec.priority_class_name.as_deref(), Some("dask-scheduler"));
        let env = env_of(&scheduler.spec.containers[0]);
        assert_eq!(env["SCHEDULER_ONLY"], "1");
        assert!(
            env.contains_key("DASK_GATEWAY_API_TOKEN"),
            "a patch adds to the list, never replaces it"
        );

        let container = &worker.spec.containers[0];
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(
            quantities(&resources.requests),
            [("cpu", "0.500"), ("memory", "1073741824")].into()
        );
        assert_eq!(
            quantities(&resources.limits),
            [("cpu", "1.000"), ("memory", "2147483648"), ("nvidia.com/gpu", "1")].into()
        );
        let args = container.args.as_ref().unwrap();
        let at = args.iter().position(|a| a == "--memory-limit").unwrap();
        assert_eq!(args[at + 1], "2147483648", "Dask's memory limit is the pod's");
        assert_eq!(container.security_context.as_ref().unwrap().run_as_user, Some(1000));
        assert!(!env_of(container).contains_key("SCHEDULER_ONLY"));
        let pod = &worker.spec;
        assert_eq!(pod.priority_class_name.as_deref(), Some("dask-worker"), "the global patch");
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
        assert_eq!(pod.host_aliases.as_ref().unwrap()[0].ip, "10.0.0.9", "the profile's patch");
    }

    #[test]
    fn a_profile_without_keys_gets_the_global_ones_and_requests_as_limits() {
        let dc = shaped("plain");
        let worker = &dc.spec.worker.spec;
        let container = &worker.containers[0];
        assert_eq!(container.image.as_deref(), Some("global:1"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(env_of(container)["SHARED"], "global");
        assert_eq!(worker.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("everyone"));
        assert_eq!(worker.node_selector.as_ref().unwrap().len(), 1);
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.requests, resources.limits);
        assert!(worker.host_aliases.is_none());
        let labels = dc.spec.worker.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert!(!labels.contains_key("tier"));
    }

    #[test]
    fn a_claim_changes_no_metadata_the_scheduler_pod_inherits() {
        let mut cluster = cluster();
        cluster.username = String::new();
        let dc = pooled_dask_cluster(&SITE, &cluster, "k1").unwrap();
        assert_eq!(dc.metadata.labels.as_ref().unwrap()[POOL], "k1");
        assert_eq!(dc.metadata.annotations.as_ref().unwrap()[USER], "");
        // The operator gives the scheduler's Deployment the DaskCluster's
        // metadata overridden by the scheduler template's: every key a
        // claim writes is pinned there, so the Deployment does not roll.
        let pinned = dc.spec.scheduler.metadata.as_ref().unwrap();
        let patch = super::super::pool::claim_patch("1", "alice", &cluster.options, 5);
        let changed = &patch["metadata"];
        for key in changed["labels"].as_object().unwrap().keys() {
            assert!(pinned.labels.as_ref().unwrap().contains_key(key), "label {key}");
        }
        for key in changed["annotations"].as_object().unwrap().keys() {
            assert!(pinned.annotations.as_ref().unwrap().contains_key(key), "annotation {key}");
        }
        assert_eq!(pinned.annotations.as_ref().unwrap()[USER], "", "the pod never had a user");
        // The workers' template pins nothing: pods made after the claim are the user's.
        assert_eq!(
            dc.spec.worker.metadata,
            dask_cluster(&SITE, &cluster).unwrap().spec.worker.metadata
        );
        assert_eq!(dc.spec.worker.spec, dask_cluster(&SITE, &cluster).unwrap().spec.worker.spec);
    }

    #[test]
    fn with_no_pod_keys_the_scheduler_still_has_requests_and_pods_no_token() {
        let dc = dask_cluster(&SITE, &cluster()).unwrap();
        let scheduler = &dc.spec.scheduler.spec.containers[0];
        let resources = scheduler.resources.as_ref().unwrap();
        assert_eq!(
            quantities(&resources.requests),
            [("cpu", "0.500"), ("memory", "1073741824")].into()
        );
        assert_eq!(
            quantities(&resources.limits),
            [("cpu", "1.000"), ("memory", "1073741824")].into()
        );
        for pod in [&dc.spec.scheduler.spec, &dc.spec.worker.spec] {
            assert_eq!(pod.automount_service_account_token, Some(false));
            assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
            assert!(pod.image_pull_secrets.is_none() && pod.service_account_name.is_none());
        }
        assert!(dc.spec.worker.metadata.is_none() && dc.spec.scheduler.metadata.is_none());
    }
}

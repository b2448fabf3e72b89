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

use crate::backend::PRESENCE_PRELOAD;
use crate::models::Cluster;

pub const INSTANCE: &str = "gateway.dask.org/instance";
pub const CLUSTER: &str = "gateway.dask.org/cluster";
pub const USER: &str = "gateway.dask.org/user";
pub const OPTIONS: &str = "gateway.dask.org/options";
pub const SETTINGS: &str = "gateway.dask.org/config";
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

/// The credentials Secret `secret`, mounted read-only.
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

/// Requests equal to limits: a worker gets what its options promise.
fn worker_resources(cluster: &Cluster) -> ResourceRequirements {
    let amounts: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(format!("{:.3}", cluster.config.worker_cores))),
        ("memory".to_string(), Quantity(cluster.config.worker_memory.to_string())),
    ]
    .into();
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..Default::default()
    }
}

/// A pod of one Dask process.
fn dask_pod(container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        // Dask pods never call the Kubernetes API.
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn worker(site: &Site, cluster: &Cluster, image: &str) -> DaskWorker {
    let config = &cluster.config;
    let scheduler_address = format!("tls://{}:{COMM_PORT}", scheduler_host(site, &cluster.name));
    let threads = config.worker_threads.to_string();
    let memory = config.worker_memory.to_string();
    let (volumes, mounts) = credentials(tls_secret_name(&cluster.name));
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
        resources: Some(worker_resources(cluster)),
        volume_mounts: Some(mounts),
        // Named as the scheduler's, so the chart's worker PodMonitor finds it.
        ports: Some(vec![ContainerPort {
            name: Some(scheduler::DASHBOARD_PORT_NAME.into()),
            container_port: DASHBOARD_PORT,
            ..Default::default()
        }]),
        ..Default::default()
    };
    DaskWorker { replicas: 0, metadata: None, spec: dask_pod(container, volumes) }
}

/// The scheduler's ports, by name: the `dask_crds::scheduler` two and the preload's API.
const SCHEDULER_PORTS: [(&str, i32); 3] = [
    (scheduler::COMM_PORT_NAME, COMM_PORT),
    (scheduler::DASHBOARD_PORT_NAME, DASHBOARD_PORT),
    (API_PORT_NAME, API_PORT),
];

fn dask_scheduler(site: &Site, cluster: &Cluster, image: &str) -> DaskScheduler {
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
    let (volumes, mounts) = credentials(secret_name(name));
    let container = Container {
        name: "scheduler".into(),
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
    DaskScheduler {
        metadata: None,
        spec: dask_pod(container, volumes),
        service: ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(service_ports.into()),
            ..Default::default()
        },
    }
}

/// The DaskCluster for `cluster`, with no workers yet (its scheduler's
/// heartbeats set the count). Owner, options and settings ride along as
/// annotations: the gateway keeps no state of its own.
pub fn dask_cluster(site: &Site, cluster: &Cluster) -> DaskCluster {
    let image = cluster.config.image.as_deref().unwrap_or(site.image);
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
    DaskCluster {
        metadata: ObjectMeta {
            name: Some(resource_name(&cluster.name)),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            annotations: Some(annotations.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            ..Default::default()
        },
        spec: DaskClusterSpec {
            idle_timeout: 0,
            worker: worker(site, cluster, image),
            scheduler: dask_scheduler(site, cluster, image),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Map, json};

    use super::*;
    use crate::models::ClusterStatus;
    use crate::models::tests::sample;

    const SITE: Site = Site {
        namespace: "dask",
        cluster_domain: "cluster.local",
        instance: "gw",
        image: "worker:1",
        api_url: "http://gateway.dask:8000/api",
        adaptive_period: 3.0,
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
        let dc = dask_cluster(&SITE, &cluster());
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
        let dc = dask_cluster(&SITE, &cluster());
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
        let dc = dask_cluster(&SITE, &cluster());
        let labels = dc.metadata.labels.as_ref().unwrap();
        assert_eq!((labels[INSTANCE].as_str(), labels[CLUSTER].as_str()), ("gw", "abc"));
        let annotations = dc.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[USER], "alice");
        assert_eq!(annotations[OPTIONS], r#"{"worker_cores":1}"#);
        let settings: crate::options::ClusterConfig =
            serde_json::from_str(&annotations[SETTINGS]).unwrap();
        assert_eq!(settings.environment["EXTRA"], "1");
    }
}

//! Harness for the operator's integration tests: a real API server (the test
//! control plane, `tests/k8s/cluster up sim`), the operator binary as a child
//! process, a namespace per test, and real `dask scheduler` processes.
//!
//! The tests that use it are `#[ignore]`d so that `cargo test` passes on a
//! fresh clone; `tests/run` runs them (`-- --include-ignored`) on the sim tier.
//! By hand: `eval "$(tests/k8s/cluster env)"` then
//! `cargo test -p dask-operator -- --include-ignored`.

#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dask_crds::DaskCluster;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub async fn client() -> Client {
    let client = Client::try_default().await.expect(
        "no Kubernetes API: run `tests/k8s/cluster up sim` and `eval \"$(tests/k8s/cluster env)\"`",
    );
    install_crds(&client).await;
    client
}

async fn install_crds(client: &Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (_, crd) in dask_crds::all_crds() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("dask-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRDs apply");
    }
    for (_, crd) in dask_crds::all_crds() {
        let name = crd.name_any();
        eventually(30, "CRDs established", || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// A fresh namespace, deleted when the guard drops.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread and runtime of its own, with a client of its own: the
        // test's client belongs to the test's runtime, which is blocked here.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = Client::try_default().await.ok()?;
                Api::<Namespace>::all(client).delete(&name, &DeleteParams::default()).await.ok()
            });
        })
        .join()
        .ok();
    }
}

/// What every test starts from: an administrator's client and a namespace of
/// the test's own (deleted when the world drops), with the test's lookups.
pub struct World {
    pub client: Client,
    namespace: TestNamespace,
}

/// A namespaced kind the tests read and write.
pub trait Kind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Kind for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned
{
}

impl World {
    /// A fresh namespace named `<prefix>-<random>`.
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let namespace = TestNamespace::new(&client, prefix).await;
        Self { client, namespace }
    }

    /// A fresh namespace with the operator watching it.
    pub async fn with_operator(prefix: &str) -> (Self, Operator) {
        let world = Self::new(prefix).await;
        let operator = Operator::start(world.ns());
        (world, operator)
    }

    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// The `K`s of the test's namespace.
    pub fn api<K: Kind>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub async fn create<K: Kind>(&self, obj: &K) -> K {
        self.api().create(&PostParams::default(), obj).await.expect("the object is created")
    }

    pub async fn get<K: Kind>(&self, name: &str) -> K {
        self.api().get(name).await.expect("the object exists")
    }

    /// Sets `name`'s replicas through its scale subresource, as `kubectl scale` does.
    pub async fn scale<K: Kind>(&self, name: &str, replicas: i32) {
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        self.api::<K>().patch_scale(name, &PatchParams::default(), &patch).await.unwrap();
    }

    /// One of dask-kubernetes' own example manifests (operator/tests/fixtures/
    /// dask-kubernetes, unchanged), created as it is.
    pub async fn create_upstream(&self, file: &str) -> DynamicObject {
        let path = format!("{}/tests/fixtures/dask-kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("the upstream manifest");
        let obj: DynamicObject = serde_yaml::from_str(&text).expect("the upstream manifest parses");
        let types = obj.types.clone().expect("a manifest has apiVersion and kind");
        let (group, version) = types.api_version.split_once('/').expect("a grouped kind");
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let resource =
            ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", types.kind.to_lowercase()));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.ns(), &resource);
        api.create(&PostParams::default(), &obj).await.expect("the upstream manifest is accepted")
    }

    /// Waits for a Warning with `reason` on the `kind` named `name`; its message.
    pub async fn warning(&self, kind: &str, name: &str, reason: &str) -> String {
        let events: Api<Event> = self.api();
        let event = eventually(60, &format!("a {reason} Warning on {kind} {name}"), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.kind.as_deref() == Some(kind)
                    && e.involved_object.name.as_deref() == Some(name)
            })
        })
        .await;
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert!(event.involved_object.uid.is_some(), "kubectl describe finds Events by uid");
        event.message.unwrap_or_default()
    }

    /// The pods matching `selector`, not being deleted.
    pub async fn live_pods(&self, selector: &str) -> Vec<Pod> {
        let list = self.api::<Pod>().list(&ListParams::default().labels(selector)).await.unwrap();
        list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
    }

    pub async fn worker_pods(&self, cluster: &str) -> Vec<Pod> {
        self.live_pods(&format!("dask.org/cluster-name={cluster},dask.org/component=worker")).await
    }

    /// Waits until the cluster has exactly `n` live worker pods and reports them.
    pub async fn wait_workers(&self, cluster: &str, n: usize) -> Vec<Pod> {
        let api: Api<DaskCluster> = self.api();
        eventually(60, &format!("{n} worker pods and status.replicas={n}"), || async {
            let pods = self.worker_pods(cluster).await;
            let status = api.get(cluster).await.ok()?.status?;
            (pods.len() == n
                && status.replicas == Some(n as i32)
                && status.ready_replicas == Some(n as i32))
            .then_some(pods)
        })
        .await
    }
}

/// The operator binary, watching the test's namespace only (so tests that
/// run side by side never act on each other's clusters), running until
/// dropped. Its log goes to a file, printed if the test fails.
pub struct Operator {
    child: Child,
    log: std::path::PathBuf,
}

impl Operator {
    pub fn start(namespace: &str) -> Self {
        Self::start_with_env(namespace, &[])
    }

    /// The operator with extra environment variables (e.g. its own KUBECONFIG).
    pub fn start_with_env(namespace: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(namespace, &["--metrics-addr", "127.0.0.1:0"], env)
    }

    /// The operator with extra arguments (which must include `--metrics-addr`)
    /// and environment variables.
    pub fn start_with(namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_dask-operator");
        let log = std::env::temp_dir()
            .join(format!("dask-operator-{namespace}-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("the operator's log file");
        let child = Command::new(bin)
            .args(["--namespace", namespace, "--resolve-schedulers-to", "127.0.0.1"])
            .args(args)
            .env("RUST_LOG", "warn,dask_operator=info")
            .envs(env.iter().copied())
            // The operator logs to stdout; its stderr has what main returns.
            .stdout(file.try_clone().expect("the operator's log file"))
            .stderr(file)
            .spawn()
            .expect("the operator binary starts");
        Operator { child, log }
    }

    /// Stops the operator now (as a crash would: no graceful shutdown).
    pub fn kill(self) {
        drop(self)
    }

    /// Sends SIGTERM (what Kubernetes does to a pod it stops) and waits
    /// for the operator to exit; returns how it exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success(), "SIGTERM to the operator");
        self.child.wait().expect("the operator exits")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- operator log ({}), last lines ---", self.log.display());
            tail.iter().rev().for_each(|line| eprintln!("{line}"));
        } else {
            std::fs::remove_file(&self.log).ok();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 250 ms until it yields a value or `secs` pass.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A DaskCluster in the shape of dask-kubernetes' simplecluster.yaml.
pub fn cluster(name: &str, replicas: i32, comm_port: u16, dashboard_port: u16) -> DaskCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": { "name": name, "labels": { "team": "tests" } },
        "spec": {
            "worker": { "replicas": replicas, "spec": { "containers": [{
                "name": "worker", "image": "ghcr.io/dask/dask:latest",
                "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)"],
                "env": [{ "name": "WORKER_ENV", "value": "kept" }] }] } },
            "scheduler": {
                "spec": { "containers": [{ "name": "scheduler", "image": "ghcr.io/dask/dask:latest", "args": ["dask", "scheduler"] }] },
                "service": { "type": "ClusterIP",
                    "selector": { "dask.org/cluster-name": name, "dask.org/component": "scheduler" },
                    "ports": [
                        { "name": "tcp-comm", "port": comm_port, "targetPort": "tcp-comm" },
                        { "name": "http-dashboard", "port": dashboard_port, "targetPort": "http-dashboard" } ] }
            }
        }
    }))
    .unwrap()
}

/// A real `dask scheduler` on 127.0.0.1 with the HTTP API routes the operator
/// injects in pods, from the test venv ($DASK_RS_VENV or tests/python/env).
pub struct DaskProcess(Child);

impl Drop for DaskProcess {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

pub fn dask_bin() -> String {
    let venv = std::env::var("DASK_RS_VENV").unwrap_or_else(|_| {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/env"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    });
    format!("{venv}/bin/dask")
}

/// A real scheduler on free loopback ports, stopped when dropped.
pub struct Scheduler {
    pub comm: u16,
    pub dashboard: u16,
    _process: DaskProcess,
}

impl Scheduler {
    pub fn start() -> Self {
        let (comm, dashboard) = (free_port(), free_port());
        Self { comm, dashboard, _process: start_scheduler(comm, dashboard) }
    }

    /// A DaskCluster whose scheduler Service has this scheduler's ports.
    pub fn cluster(&self, name: &str, replicas: i32) -> DaskCluster {
        cluster(name, replicas, self.comm, self.dashboard)
    }

    pub fn start_worker(&self, name: &str) -> DaskProcess {
        start_worker(self.comm, name)
    }

    /// Its view of its workers: (name, address).
    pub async fn workers(&self) -> Option<Vec<(String, String)>> {
        scheduler_workers(self.dashboard).await
    }
}

fn start_scheduler(comm_port: u16, dashboard_port: u16) -> DaskProcess {
    let child = Command::new(dask_bin())
        .args(["scheduler", "--host", "127.0.0.1", "--port", &comm_port.to_string()])
        .args(["--dashboard-address", &format!("127.0.0.1:{dashboard_port}"), "--no-show"])
        .env(
            "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES",
            dask_operator::build::SCHEDULER_HTTP_ROUTES,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dask scheduler starts");
    DaskProcess(child)
}

fn start_worker(comm_port: u16, name: &str) -> DaskProcess {
    let child = Command::new(dask_bin())
        .args([
            "worker",
            &format!("tcp://127.0.0.1:{comm_port}"),
            "--name",
            name,
            "--host",
            "127.0.0.1",
        ])
        .args(["--nthreads", "1", "--no-dashboard", "--memory-limit", "256MiB"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dask worker starts");
    DaskProcess(child)
}

/// The scheduler's view of its workers: (name, address).
async fn scheduler_workers(dashboard_port: u16) -> Option<Vec<(String, String)>> {
    let url = format!("http://127.0.0.1:{dashboard_port}/api/v1/get_workers");
    let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
    Some(
        body["workers"]
            .as_array()?
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap_or_default().to_string(),
                    w["address"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

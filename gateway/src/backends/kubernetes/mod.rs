//! Clusters as `kubernetes.dask.org/v1` DaskClusters for the operator. The
//! gateway keeps no state of its own: owner, options and settings are
//! annotations on the DaskCluster, token and TLS pair a Secret it owns, and
//! both are read from watch caches (never one API call per request), so a
//! restarted gateway serves every cluster again.
//!
//! A cluster named `<hex>` by the gateway is the DaskCluster `dask-<hex>`
//! (Service names must start with a letter); its scheduler runs the
//! dask-gateway preload and reports to `api_url`.
//!
//! With `pool_size`, ready DaskClusters wait unclaimed for creates that
//! match their profile (see `pool.rs`); users never see them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dask_common::kube_api::{cached, cached_readable};
use dask_common::readable::{Guarded, Unreadable};
use dask_crds::DaskCluster;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use self::records::{Ending, Retirer, record_of};
use super::history::Retention;
use super::logs::{LogBounds, LogStream};
use super::{Backend, BackendError, Created, StartSource};
use crate::config::{Config, KubernetesConfig};
use crate::domain::models::{Addresses, Cluster, ClusterStatus, Heartbeat, now_ms};

mod build;
mod pod_logs;
mod pool;
mod records;

use self::build::{
    API_PORT, CLAIMED, CLUSTER, COMM_PORT, DASHBOARD_PORT, INSTANCE, OPTIONS, POOL, SETTINGS, Site,
    USER, resource_name, secret_name,
};

const MANAGER: &str = "dask-gateway";
/// Why the cluster failed: on the DaskCluster, then on its record.
const FAILED: &str = dask_crds::gateway::FAILED;
const CREATED: &str = dask_crds::gateway::CREATED;
const STOPPED: &str = dask_crds::gateway::STOPPED;
/// A cluster whose record was written this long ago but whose DaskCluster
/// is still there was left half-retired (the gateway stopped meanwhile).
const RETIRE_GRACE_MS: i64 = 60_000;
/// A slot Lease younger than this counts as taken even before its
/// DaskCluster exists (that create is in flight on some replica).
const SLOT_GRACE_SECONDS: i64 = 60;

/// A refusal of the API server in words for the user; its raw answer (which
/// names objects and the gateway's service account) goes to the log.
fn api_error(e: kube::Error, doing: &str) -> BackendError {
    warn!(error = %e, "Kubernetes API error while {doing}");
    match e {
        kube::Error::Api(status) => match status.code {
            400 | 422 => BackendError::Refused {
                status: 422,
                message: format!(
                    "Kubernetes refused the cluster's resources as invalid ({}) while {doing}; check the cluster options",
                    status.reason
                ),
            },
            409 => BackendError::Refused {
                status: 409,
                message: format!("a conflicting change was made while {doing}; retry"),
            },
            403 => BackendError::Unavailable(format!(
                "Kubernetes did not allow {doing} (a resource quota or the gateway's permissions); ask an administrator"
            )),
            404 => {
                BackendError::Unavailable(format!("Kubernetes has no such resource while {doing}"))
            }
            _ => BackendError::Unavailable(format!(
                "the Kubernetes API is not available ({} {}) while {doing}; retry later",
                status.code, status.reason
            )),
        },
        _ => BackendError::Unavailable(format!(
            "the Kubernetes API is not reachable while {doing}; retry later"
        )),
    }
}

#[derive(Clone)]
pub struct KubernetesBackend {
    client: Client,
    namespace: String,
    settings: KubernetesConfig,
    /// Each profile's pod shape, resolved (and checked) once.
    shapes: std::collections::BTreeMap<String, crate::domain::pods::PodShape>,
    adaptive_period: f64,
    clusters: Store<DaskCluster>,
    secrets: Store<Secret>,
    changed: Arc<watch::Sender<u64>>,
    /// How long stopped and failed clusters' records are kept.
    retention: Retention,
    /// The warm pool's templates and size (size 0: every start is cold).
    pool: Arc<pool::Pool>,
    /// How long a cluster may take to become RUNNING.
    start_timeout: Duration,
}

impl KubernetesBackend {
    /// Starts the watch caches and waits until they have listed once.
    pub async fn start(
        client: Client,
        settings: &KubernetesConfig,
        config: &Config,
    ) -> anyhow::Result<Self> {
        let namespace = settings
            .namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let (changed, _) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let selector = format!("{INSTANCE}={}", settings.instance);
        let clusters = readable_cache(
            Api::<Guarded<DaskCluster>>::namespaced(client.clone(), &namespace),
            &selector,
            changed.clone(),
        );
        let secrets = cache(
            Api::<Secret>::namespaced(client.clone(), &namespace),
            &selector,
            changed.clone(),
        );
        clusters.wait_until_ready().await?;
        secrets.wait_until_ready().await?;
        info!(%namespace, instance = %settings.instance, clusters = clusters.state().len(), "kubernetes backend ready");
        let backend = Self {
            client,
            namespace,
            settings: settings.clone(),
            shapes: crate::domain::pods::resolve_all(&settings.pods, &config.options.profiles)?,
            adaptive_period: config.cluster.adaptive_period,
            clusters,
            secrets,
            changed,
            retention: Retention::from_seconds(config.cluster.completed_cluster_max_age),
            pool: Arc::new(pool::Pool::new(config, settings)),
            start_timeout: Duration::from_secs_f64(config.cluster.start_timeout),
        };
        backend.spawn_start_timeout(backend.start_timeout);
        tokio::spawn(pool::refill(backend.clone()));
        records::spawn_sweep(
            backend.secrets.clone(),
            Api::namespaced(backend.client.clone(), &backend.namespace),
            backend.retention,
        );
        Ok(backend)
    }

    fn api(&self) -> Api<DaskCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn site(&self) -> Site<'_> {
        Site {
            namespace: &self.namespace,
            cluster_domain: &self.settings.cluster_domain,
            instance: &self.settings.instance,
            image: &self.settings.image,
            api_url: &self.settings.api_url,
            adaptive_period: self.adaptive_period,
            shapes: &self.shapes,
        }
    }

    /// The cluster's credentials Secret (or its record), from the cache.
    fn secret_of(&self, dc: &DaskCluster) -> Option<Arc<Secret>> {
        let name = dc.labels().get(CLUSTER)?;
        self.secrets.get(&reflector::ObjectRef::new(&secret_name(name)).within(&self.namespace))
    }

    /// The gateway's view of a DaskCluster and its Secret.
    fn to_cluster(&self, dc: &DaskCluster) -> Option<Cluster> {
        let name = dc.labels().get(CLUSTER)?.clone();
        let annotations = dc.annotations();
        let secret = self.secret_of(dc);
        let data = |key: &str| {
            let bytes = secret.as_ref()?.data.as_ref()?.get(key)?;
            String::from_utf8(bytes.0.clone()).ok()
        };
        let status = if dc.meta().deletion_timestamp.is_some() {
            ClusterStatus::Stopping
        } else if secret.as_deref().is_some_and(records::is_record) {
            // Being retired: its record is written, the DaskCluster goes next.
            ClusterStatus::Stopping
        } else if annotations.contains_key(FAILED) || failed_by_operator(dc) {
            ClusterStatus::Failed
        } else if dc.is_running() && secret.is_some() {
            ClusterStatus::Running
        } else {
            ClusterStatus::Pending
        };
        let host = build::scheduler_host(&self.site(), &name);
        Some(Cluster {
            username: annotations.get(USER).cloned().unwrap_or_default(),
            token: data("api-token").unwrap_or_default(),
            options: annotations
                .get(OPTIONS)
                .and_then(|o| serde_json::from_str(o).ok())
                .unwrap_or_default(),
            config: annotations.get(SETTINGS).and_then(|c| serde_json::from_str(c).ok())?,
            status,
            start_time: start_time(dc),
            stop_time: None,
            reason: scheduler_problem(dc).or_else(|| annotations.get(FAILED).cloned()),
            tls_cert: data("dask.crt").unwrap_or_default(),
            tls_key: data("dask.pem").unwrap_or_default(),
            addresses: Some(Addresses {
                scheduler: format!("tls://{host}:{COMM_PORT}"),
                dashboard: format!("http://{host}:{DASHBOARD_PORT}"),
                api: format!("http://{host}:{API_PORT}"),
            }),
            workers: dc.spec.worker.replicas.max(0) as u32,
            name,
        })
    }

    /// A finished cluster's record, while [`Self::retention`] keeps it.
    fn record_to_cluster(&self, secret: &Secret) -> Option<Cluster> {
        let record = record_of(secret)?;
        self.retention
            .keeps(record.status, Some(record.stop_time), now_ms())
            .then(|| record.to_cluster())
    }

    fn find_record(&self, name: &str) -> Option<Arc<Secret>> {
        self.secrets
            .get(&reflector::ObjectRef::new(&secret_name(name)).within(&self.namespace))
            .filter(|s| records::is_record(s))
    }

    /// PENDING clusters past the start timeout, and those the operator
    /// found cannot start (phase Failed: a bad image, a crash at start),
    /// become FAILED, with the reason on their record and in the log; their
    /// pods go. Looked at on every change of the caches (the operator's
    /// verdict is acted on at once) and every 5 s (for the timeout).
    fn spawn_start_timeout(&self, timeout: Duration) {
        let (store, secrets, failer) = (self.clusters.clone(), self.secrets.clone(), self.failer());
        let namespace = self.namespace.clone();
        let record_ref = move |dc: &DaskCluster| {
            let name = dc.labels().get(CLUSTER).cloned().unwrap_or_default();
            reflector::ObjectRef::new(&secret_name(&name)).within(&namespace)
        };
        let mut changes = self.changed.subscribe();
        tokio::spawn(async move {
            // Failed already, until the cache sees their DaskCluster go.
            let mut failed = std::collections::HashSet::new();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let now = k8s_openapi::jiff::Timestamp::now();
                let clusters = store.state();
                failed.retain(|uid| clusters.iter().any(|dc| dc.uid().as_ref() == Some(uid)));
                for dc in clusters {
                    // The pool replaces its own failed members, without records.
                    if dc.meta().deletion_timestamp.is_some() || is_pooled(&dc) {
                        continue;
                    }
                    if let Some(record) =
                        secrets.get(&record_ref(&dc)).filter(|s| records::is_record(s))
                    {
                        // A retirement cut short (a gateway restart): finish it,
                        // unless it may still be under way (capturing logs).
                        let retired = record_of(&record).map(|r| r.stop_time).unwrap_or_default();
                        if now_ms().saturating_sub(retired) > RETIRE_GRACE_MS {
                            failer.retire(&dc, Ending::of(record.annotations())).await;
                        }
                        continue;
                    }
                    // Retired just now: the caches have not seen its record yet.
                    if dc.uid().is_some_and(|uid| failed.contains(&uid)) {
                        continue;
                    }
                    let started = dc.creation_timestamp().map(|t| t.0).unwrap_or(now);
                    let age = now.duration_since(started).as_secs_f64();
                    if let Some(reason) = start_failure(&dc, age, timeout) {
                        failer.retire(&dc, Ending::Failed(&reason)).await;
                        failed.extend(dc.uid());
                    }
                }
            }
        });
    }

    fn failer(&self) -> Retirer {
        Retirer {
            clusters: self.api(),
            secrets: Api::namespaced(self.client.clone(), &self.namespace),
            pods: self.pods(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Takes one of `user`'s `max` cluster slots for `cluster`: a Lease with
    /// a name derived from the user and the slot number, whose create the
    /// API server arbitrates (409 when taken). So parallel creates, on any
    /// number of gateway replicas, never overshoot the limit; nothing here
    /// trusts the watch cache.
    async fn reserve_slot(
        &self,
        user: &str,
        cluster: &str,
        max: u32,
    ) -> Result<String, BackendError> {
        let leases = self.leases();
        for i in 0..max {
            let name = slot_name(&self.settings.instance, user, i);
            // Twice: once more after releasing a stale holder.
            for _ in 0..2 {
                let lease = self.slot_lease(&name, user, cluster)?;
                match leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => return Ok(name),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        if !self.release_if_stale(&leases, &name).await? {
                            break;
                        }
                    }
                    Err(e) => return Err(anyhow::Error::from(e).into()),
                }
            }
        }
        Err(BackendError::LimitReached(format!(
            "User {user} already has {max} active clusters, the limit is {max}; stop one first"
        )))
    }

    fn slot_lease(&self, name: &str, user: &str, cluster: &str) -> Result<Lease, BackendError> {
        let lease = json!({
            "metadata": {
                "name": name,
                "labels": { INSTANCE: self.settings.instance, "app.kubernetes.io/component": "cluster-slot" },
                "annotations": { USER: user },
            },
            "spec": { "holderIdentity": cluster },
        });
        Ok(serde_json::from_value(lease).map_err(anyhow::Error::from)?)
    }

    /// Deletes slot `name` when its cluster no longer counts (gone, failed,
    /// stopping) and no create is in flight for it; true when the slot is free.
    async fn release_if_stale(
        &self,
        leases: &Api<Lease>,
        name: &str,
    ) -> Result<bool, BackendError> {
        let Some(lease) = leases.get_opt(name).await.map_err(anyhow::Error::from)? else {
            return Ok(true);
        };
        let holder =
            lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
        // A quorum read of the holder, not the cache, which may lag. Its
        // metadata is enough: a DaskCluster that does not read still counts.
        let clusters: Api<Guarded<DaskCluster>> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let dc = clusters.get_opt(&resource_name(&holder)).await.map_err(anyhow::Error::from)?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let young = lease
            .creation_timestamp()
            .is_some_and(|t| now.duration_since(t.0).as_secs() < SLOT_GRACE_SECONDS);
        let live = match dc {
            Some(dc) => {
                dc.meta().deletion_timestamp.is_none() && !dc.annotations().contains_key(FAILED)
            }
            None => young,
        };
        if live {
            return Ok(false);
        }
        // Only the version we judged: a concurrent re-take is left alone.
        let preconditions =
            Preconditions { resource_version: lease.resource_version(), uid: lease.uid() };
        let params = DeleteParams { preconditions: Some(preconditions), ..Default::default() };
        match leases.delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(true),
            Err(e) => Err(anyhow::Error::from(e).into()),
        }
    }

    /// The slot goes with its cluster: owned by the DaskCluster, so that
    /// deleting the cluster frees it. Its holder becomes the cluster's name
    /// (a pooled cluster claimed has a name of its own).
    async fn bind_slot(&self, slot: &str, owner: &DaskCluster) {
        let Some(reference) = owner_reference(owner) else { return };
        let holder = owner.labels().get(CLUSTER);
        let patch = json!({
            "metadata": { "ownerReferences": [reference] },
            "spec": { "holderIdentity": holder },
        });
        if let Err(e) =
            self.leases().patch(slot, &PatchParams::default(), &Patch::Merge(patch)).await
        {
            // Not fatal: a slot whose cluster is gone is reclaimed on the next create.
            warn!(%slot, error = %e, "could not bind the cluster slot to its cluster");
        }
    }

    async fn release_slot(&self, slot: &str) {
        if let Err(e) = self.leases().delete(slot, &DeleteParams::default()).await {
            warn!(%slot, error = %e, "could not release a cluster slot");
        }
    }

    /// The scheduler's Secret (API token and TLS pair, also what the gateway
    /// reads back) and the workers' (TLS pair only), both owned by the cluster.
    fn secrets(&self, cluster: &Cluster, owner: &DaskCluster) -> anyhow::Result<[Secret; 2]> {
        let owner_ref =
            owner_reference(owner).ok_or_else(|| anyhow::anyhow!("the DaskCluster has no uid"))?;
        let scheduler = serde_json::from_value(json!({
            "metadata": {
                "name": secret_name(&cluster.name),
                "labels": { INSTANCE: self.settings.instance, CLUSTER: cluster.name, "app.kubernetes.io/component": "credentials" },
                "ownerReferences": [owner_ref],
            },
            "type": "Opaque",
            "stringData": { "api-token": cluster.token, "dask.crt": cluster.tls_cert, "dask.pem": cluster.tls_key },
        }))?;
        // Without the instance label: the gateway's cache of Secrets does not need it.
        let workers = serde_json::from_value(json!({
            "metadata": {
                "name": build::tls_secret_name(&cluster.name),
                "labels": { CLUSTER: cluster.name, "app.kubernetes.io/component": "worker-credentials" },
                "ownerReferences": [owner_ref],
            },
            "type": "Opaque",
            "stringData": { "dask.crt": cluster.tls_cert, "dask.pem": cluster.tls_key },
        }))?;
        Ok([scheduler, workers])
    }

    /// Lets the cluster's pods (scheduler and workers, labelled by the
    /// operator with the DaskCluster's name) reach each other on every port.
    /// The chart's policy admits the gateway; nothing else gets in.
    fn network_policy(&self, owner: &DaskCluster) -> anyhow::Result<NetworkPolicy> {
        let pods = json!({ "matchLabels": { dask_crds::labels::CLUSTER_NAME: owner.name_any() } });
        Ok(serde_json::from_value(json!({
            "metadata": {
                "name": owner.name_any(),
                "labels": { INSTANCE: self.settings.instance, CLUSTER: owner.labels().get(CLUSTER) },
                "ownerReferences": [owner.controller_owner_ref(&()).ok_or_else(|| anyhow::anyhow!("the DaskCluster has no uid"))?],
            },
            "spec": {
                "podSelector": pods,
                "policyTypes": ["Ingress"],
                "ingress": [{ "from": [{ "podSelector": pods }] }],
            },
        }))?)
    }

    /// The DaskCluster and its Secret; never one without the other. With
    /// `pool`: a warm-pool member of the template with that key.
    async fn create_resources(
        &self,
        cluster: &Cluster,
        pool: Option<&str>,
    ) -> Result<DaskCluster, BackendError> {
        let dc = match pool {
            Some(key) => build::pooled_dask_cluster(&self.site(), cluster, key)?,
            None => build::dask_cluster(&self.site(), cluster)?,
        };
        let created = self
            .api()
            .create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &dc)
            .await;
        let created = created.map_err(|e| api_error(e, "creating the cluster"))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for secret in self.secrets(cluster, &created)? {
            if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
                // No half-created cluster: without its credentials it could never
                // start. Its owner reference takes a Secret already made with it.
                self.api().delete(&created.name_any(), &DeleteParams::background()).await.ok();
                return Err(api_error(e, "creating the cluster's credentials"));
            }
        }
        if self.settings.network_policy {
            let policies: Api<NetworkPolicy> =
                Api::namespaced(self.client.clone(), &self.namespace);
            let policy = self.network_policy(&created)?;
            if let Err(e) = policies.create(&PostParams::default(), &policy).await {
                self.api().delete(&created.name_any(), &DeleteParams::background()).await.ok();
                return Err(api_error(e, "creating the cluster's network policy"));
            }
        }
        Ok(created)
    }

    /// The DaskCluster of cluster `name`, pool members included.
    fn find(&self, name: &str) -> Option<Arc<DaskCluster>> {
        self.clusters.get(&reflector::ObjectRef::new(&resource_name(name)).within(&self.namespace))
    }

    /// The DaskCluster of a user's cluster `name` (not a pool member).
    fn find_claimed(&self, name: &str) -> Option<Arc<DaskCluster>> {
        self.find(name).filter(|dc| !is_pooled(dc))
    }
}

/// A warm-pool member no user has claimed (unseen by users).
fn is_pooled(dc: &DaskCluster) -> bool {
    dc.labels().contains_key(POOL)
}

/// When the cluster became its user's: its claim, if it waited in the
/// warm pool (that time does not count), else its creation.
fn start_time(dc: &DaskCluster) -> i64 {
    let claimed = dc.annotations().get(CLAIMED).and_then(|t| t.parse::<i64>().ok());
    claimed.or_else(|| dc.creation_timestamp().map(|t| t.0.as_millisecond())).unwrap_or_default()
}

/// What holds a DaskCluster's scheduler up, as the operator says in its
/// `SchedulerReady` condition (a bad image, Unschedulable, a crash loop).
fn scheduler_problem(dc: &DaskCluster) -> Option<String> {
    let status = dc.status.as_ref()?;
    let condition =
        status.conditions.iter().find(|c| c.type_ == dask_crds::conditions::SCHEDULER_READY)?;
    let problem = condition.status == "False"
        && !matches!(condition.reason.as_str(), dask_crds::conditions::reason::STARTING | "");
    problem.then(|| format!("{}: {}", condition.reason, condition.message))
}

/// The operator found that the scheduler cannot start.
fn failed_by_operator(dc: &DaskCluster) -> bool {
    dc.phase() == Some(dask_crds::ClusterPhase::Failed)
}

/// Why a cluster `age` seconds old has failed to start, if it has: the
/// operator says it cannot (at once), or it is not running after `timeout`
/// (with what holds it up, if the operator knows: an Unschedulable
/// scheduler is left to the timeout, as an autoscaler may add a node).
fn start_failure(dc: &DaskCluster, age: f64, timeout: Duration) -> Option<String> {
    if dc.is_running() {
        return None;
    }
    let problem = scheduler_problem(dc);
    if failed_by_operator(dc) {
        return Some(problem.unwrap_or_else(|| "the scheduler cannot start".into()));
    }
    if age <= timeout.as_secs_f64() {
        return None;
    }
    let late = format!("the scheduler did not become ready within {}s", timeout.as_secs());
    Some(match problem {
        Some(problem) => format!("{late}: {problem}"),
        None => late,
    })
}

fn owner_reference(owner: &DaskCluster) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: DaskCluster::api_version(&()).into(),
        kind: DaskCluster::kind(&()).into(),
        name: owner.name_any(),
        uid: owner.uid()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The Lease for slot `i` of `user` (names are any bytes: hashed into a
/// valid object name).
fn slot_name(instance: &str, user: &str, i: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{instance}\0{user}").as_bytes());
    format!("dask-gateway-slot-{}-{i}", hex::encode(&digest[..10]))
}

/// Worker pods for a heartbeat: the (already clamped) count plus the
/// workers being retired, which keep their pods until they have left. The
/// retiring ones can only be pods that exist, so a forged list of names
/// cannot raise the count; never negative, never a wrapped `i32`.
fn worker_replicas(count: i64, closing: usize, current: i32) -> i32 {
    let closing = closing.min(current.max(0) as usize) as i64;
    i32::try_from(count.max(0).saturating_add(closing)).unwrap_or(i32::MAX)
}

/// A watch cache of `api` (objects with `selector`) that bumps `changed` on every event.
fn cache<K>(api: Api<K>, selector: &str, changed: Arc<watch::Sender<u64>>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, stream) = cached(api, watcher::Config::default().labels(selector), |_| {});
    tokio::spawn(bump_on_change(stream, changed));
    reader
}

/// [`cache`] for DaskClusters, which may not read as such (their pod specs
/// are open in the CRD): those are left out, and logged once per version of
/// their spec, so one cannot stop the gateway seeing every other.
fn readable_cache(
    api: Api<Guarded<DaskCluster>>,
    selector: &str,
    changed: Arc<watch::Sender<u64>>,
) -> Store<DaskCluster> {
    let config = watcher::Config::default().labels(selector);
    let skip = |unreadable: Unreadable| {
        let name = unreadable.metadata.name.as_deref().unwrap_or_default().to_string();
        warn!(daskcluster = %name, error = %unreadable, "skipping a DaskCluster that cannot be read");
    };
    let (reader, stream) = cached_readable(api, config, |_| {}, skip);
    tokio::spawn(bump_on_change(stream, changed));
    reader
}

/// Drives a cache's watch, bumping `changed` on every event.
async fn bump_on_change<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    changed: Arc<watch::Sender<u64>>,
) {
    stream
        .for_each(move |event| {
            if let Err(e) = event {
                warn!(error = %e, "watch error (retrying)");
            }
            changed.send_modify(|n| *n += 1);
            futures::future::ready(())
        })
        .await
}

#[async_trait]
impl Backend for KubernetesBackend {
    async fn create(
        &self,
        cluster: Cluster,
        max_clusters: Option<u32>,
    ) -> Result<Created, BackendError> {
        // The slot first (held by the fresh name until bound): a claim
        // counts against the limit as a cold start does.
        let slot = match max_clusters {
            Some(max) => Some(self.reserve_slot(&cluster.username, &cluster.name, max).await?),
            None => None,
        };
        let claimed = match self.pool.template_for(&cluster.config) {
            Some(template) => self.claim(template, &cluster).await,
            None => None,
        };
        let (created, source) = match claimed {
            Some(dc) => (Ok(dc), StartSource::Pool),
            None => (self.create_resources(&cluster, None).await, StartSource::Cold),
        };
        match (&slot, &created) {
            (Some(slot), Ok(dc)) => self.bind_slot(slot, dc).await,
            // A failed create gives its slot back at once.
            (Some(slot), Err(_)) => self.release_slot(slot).await,
            (None, _) => {}
        }
        let dc = created?;
        let name = dc.labels().get(CLUSTER).cloned().unwrap_or(cluster.name);
        Ok(Created { name, source })
    }

    async fn get(&self, name: &str) -> Option<Cluster> {
        match self.find(name) {
            Some(dc) if is_pooled(&dc) => None,
            Some(dc) => self.to_cluster(&dc),
            None => self.find_record(name).and_then(|s| self.record_to_cluster(&s)),
        }
    }

    async fn for_scheduler(&self, name: &str) -> Option<Cluster> {
        match self.find(name) {
            Some(dc) => self.to_cluster(&dc),
            None => self.get(name).await,
        }
    }

    async fn pooled(&self) -> Vec<ClusterStatus> {
        let members = self.clusters.state().into_iter().filter(|dc| is_pooled(dc));
        members.filter_map(|dc| self.to_cluster(&dc)).map(|c| c.status).collect()
    }

    async fn list(&self) -> Vec<Cluster> {
        let mut clusters: Vec<Cluster> = self
            .clusters
            .state()
            .iter()
            .filter(|dc| !is_pooled(dc))
            .filter_map(|dc| self.to_cluster(dc))
            .collect();
        let live: std::collections::HashSet<String> =
            clusters.iter().map(|c| c.name.clone()).collect();
        clusters.extend(
            self.secrets
                .state()
                .iter()
                .filter_map(|s| self.record_to_cluster(s))
                .filter(|c| !live.contains(&c.name)),
        );
        clusters
    }

    async fn stop(&self, name: &str, why: Option<&str>) -> Result<(), BackendError> {
        let dc = match self.find(name) {
            Some(dc) => dc,
            // A finished cluster's record stays for its history period.
            None if self.find_record(name).is_some() => return Ok(()),
            // Created a moment ago, maybe not in the cache yet: ask the API server.
            None => match self.api().get_opt(&resource_name(name)).await {
                Ok(Some(dc)) if dc.labels().get(INSTANCE) == Some(&self.settings.instance) => {
                    Arc::new(dc)
                }
                Ok(_) => return Ok(()),
                Err(e) => return Err(api_error(e, "stopping the cluster")),
            },
        };
        // Being retired already (its record is written, e.g. FAILED and the
        // client's DELETE after its failed start): that retirement ends it,
        // and its record keeps saying FAILED.
        if dc.meta().deletion_timestamp.is_some() || self.find_record(name).is_some() {
            return Ok(());
        }
        // A pool member (its own scheduler asking): it leaves no record.
        if is_pooled(&dc) {
            self.delete_member(&dc).await;
            return Ok(());
        }
        // The record first, then the DaskCluster, whose owner references take
        // the scheduler, workers and slot with it. One the operator found
        // cannot start is recorded FAILED, with why.
        let reason = dc.annotations().get(FAILED).cloned().or_else(|| {
            failed_by_operator(&dc).then(|| {
                scheduler_problem(&dc).unwrap_or_else(|| "the scheduler cannot start".into())
            })
        });
        let ending = reason.as_deref().map_or(Ending::Stopped(why), Ending::Failed);
        self.failer().retire(&dc, ending).await;
        Ok(())
    }

    async fn heartbeat(&self, name: &str, beat: Heartbeat) -> Result<(), BackendError> {
        let dc = self.find(name).ok_or_else(|| BackendError::NotFound(name.into()))?;
        // Workers the scheduler is retiring keep their pods until they have
        // left: lowering replicas at once would make the operator retire
        // workers of its own choosing as well.
        let wanted =
            worker_replicas(beat.count, beat.closing_workers.len(), dc.spec.worker.replicas);
        if dc.spec.worker.replicas != wanted {
            info!(cluster = name, workers = wanted, "the scheduler asks for a new worker count");
            let patch = json!({ "spec": { "replicas": wanted } });
            self.api()
                .patch_scale(&dc.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| api_error(e, "scaling the cluster"))?;
        }
        Ok(())
    }

    async fn fail(&self, name: &str, reason: &str) {
        if let Some(dc) = self.find_claimed(name) {
            self.failer().retire(&dc, Ending::Failed(reason)).await;
        }
    }

    async fn logs(&self, cluster: &Cluster, bounds: LogBounds) -> Result<LogStream, BackendError> {
        let read = match self.find_claimed(&cluster.name) {
            Some(dc) => pod_logs::cluster_logs(self.pods(), &dc.name_any(), |_| bounds).await,
            None => {
                let secrets = Api::namespaced(self.client.clone(), &self.namespace);
                records::captured_logs(&secrets, &cluster.name, bounds).await
            }
        };
        read.map_err(|e| api_error(e, "reading the cluster's logs"))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dask_cluster(
        phase: Option<dask_crds::ClusterPhase>,
        reason: &str,
        message: &str,
    ) -> DaskCluster {
        let mut dc = DaskCluster::new("dask-x", Default::default());
        let condition =
            dask_crds::common::condition("SchedulerReady", false, reason, message, None);
        dc.status = Some(dask_crds::WorkloadStatus {
            phase,
            conditions: vec![condition],
            ..Default::default()
        });
        dc
    }

    #[test]
    fn a_cluster_fails_at_once_when_the_operator_says_so_else_at_its_timeout() {
        use dask_crds::ClusterPhase::{Failed, Pending, Running};
        let timeout = Duration::from_secs(60);
        let pull = dask_cluster(Some(Failed), "ImagePullBackOff", "cannot pull image \"x:nope\"");
        assert_eq!(
            start_failure(&pull, 1.0, timeout).as_deref(),
            Some("ImagePullBackOff: cannot pull image \"x:nope\"")
        );
        let full = dask_cluster(Some(Pending), "Unschedulable", "0/3 nodes are available");
        assert_eq!(start_failure(&full, 30.0, timeout), None, "an autoscaler may add a node");
        assert_eq!(
            start_failure(&full, 61.0, timeout).as_deref(),
            Some(
                "the scheduler did not become ready within 60s: Unschedulable: 0/3 nodes are available"
            )
        );
        let starting = dask_cluster(Some(Pending), "Starting", "the scheduler pod is starting");
        assert_eq!(
            start_failure(&starting, 61.0, timeout).as_deref(),
            Some("the scheduler did not become ready within 60s")
        );
        let running = dask_cluster(Some(Running), "Starting", "");
        assert_eq!(start_failure(&running, 1_000.0, timeout), None);
    }

    #[test]
    fn a_claimed_cluster_starts_at_its_claim_and_pool_members_are_told_apart() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut dc = DaskCluster::new("dask-x", Default::default());
        let created = k8s_openapi::jiff::Timestamp::from_millisecond(1_000_000).unwrap();
        dc.metadata.creation_timestamp = Some(Time(created));
        assert_eq!(start_time(&dc), 1_000_000);
        assert!(!is_pooled(&dc));
        dc.metadata.labels = Some([(POOL.to_string(), "k".to_string())].into());
        assert!(is_pooled(&dc));
        dc.metadata.annotations = Some([(CLAIMED.to_string(), "1500000".to_string())].into());
        assert_eq!(start_time(&dc), 1_500_000, "time in the pool is not the user's");
        // A pinned empty value (the scheduler template's) is no claim time.
        dc.metadata.annotations = Some([(CLAIMED.to_string(), String::new())].into());
        assert_eq!(start_time(&dc), 1_000_000);
    }

    #[test]
    fn heartbeat_replicas_never_overflow_or_go_negative() {
        assert_eq!(worker_replicas(2, 1, 3), 3);
        assert_eq!(worker_replicas(-7, 0, 0), 0);
        assert_eq!(worker_replicas(i64::MAX, 5, 5), i32::MAX);
        assert_eq!(worker_replicas(4_294_967_295, 0, 0), i32::MAX);
        // Forged closing names beyond the pods that exist do not count.
        assert_eq!(worker_replicas(2, 1_000_000, 3), 5);
    }
}

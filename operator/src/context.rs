//! State shared by the controllers, and the error type.

use std::sync::Arc;

use std::fmt::Debug;

use futures::Stream;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crds::DaskWorkerGroup;

use crate::metrics::Metrics;
use crate::scheduler_api::SchedulerApi;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid {kind} {name}: {reason}")]
    Invalid { kind: &'static str, name: String, reason: String },
    #[error("scheduler API: {0}")]
    Scheduler(String),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid { .. } => "invalid",
            Error::Scheduler(_) => "scheduler",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Context {
    pub client: Client,
    /// Who this operator says it is in the Events it publishes.
    pub reporter: Reporter,
    /// Publishes Warnings, folding repeats of one into a series.
    pub warnings: Recorder,
    pub metrics: Arc<Metrics>,
    pub scheduler: SchedulerApi,
    /// DNS domain of the cluster (for DASK_SCHEDULER_ADDRESS), usually cluster.local.
    pub cluster_domain: String,
    /// The one namespace watched, or all of them.
    pub namespace: Option<String>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        scheduler: SchedulerApi,
        cluster_domain: String,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            metrics,
            scheduler,
            cluster_domain,
            namespace: None,
        }
    }

    /// Limits the operator to one namespace (a namespaced install, and tests
    /// that run side by side without seeing each other's clusters).
    pub fn watching(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// The API the controllers watch: every namespace, or the one watched.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// How the cluster and worker-group controllers run their reconciles.
///
/// Triggers are batched: a pod going Pending → Running → Ready, or a
/// Deployment's status settling, fires several watch events within a second;
/// one reconcile after they stop sees the same end state at a fraction of the
/// API server's work. Reconciles are bounded: each holds API connections, and
/// past a few dozen at once the API server, not the operator, is the limit
/// while the operator's memory grows with every connection.
pub fn controller_config() -> controller::Config {
    controller::Config::default().debounce(std::time::Duration::from_millis(500)).concurrency(16)
}

/// A watch cache of `api`'s objects, each trimmed by `trim` before it is
/// kept, and the stream of changes that feeds it as a controller consumes it.
pub fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    (store, reflector(writer, watcher(api, config).default_backoff().modify(trim)))
}

/// Managed fields and `kubectl apply`'s copy of the whole manifest: read by
/// nobody here, and often the largest part of an object.
pub fn strip_bookkeeping<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A DaskWorkerGroup as the controllers cache it: without its pod template,
/// most of its memory; a reconcile that builds pods reads the group whole.
pub fn trim_group(group: &mut DaskWorkerGroup) {
    strip_bookkeeping(group);
    group.spec.worker.spec = Default::default();
}

/// Publishes a Kubernetes Event about `obj`; a failure to do so is logged, never fatal.
///
/// Only Warnings go through the shared recorder, which folds a repeat into a
/// series of the first Event. Normal Events each record one action and keep
/// their own note (a series would show the first "Created 4 worker pod(s)"
/// for a later "Created 1"); and the shared recorder keeps every Event it made
/// for six minutes, which for a thousand clusters is megabytes.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.into(),
        secondary: None,
    };
    let published = match type_ {
        EventType::Warning => ctx.warnings.publish(&event, &obj.object_ref(&())).await,
        EventType::Normal => {
            Recorder::new(ctx.client.clone(), ctx.reporter.clone())
                .publish(&event, &obj.object_ref(&()))
                .await
        }
    };
    if let Err(e) = published {
        warn!(error = %e, "could not publish an event");
    }
}

/// The shared part of every controller's error policy: count the failure; an
/// invalid spec is reported (Event) and waits for the user to change it, with
/// no retry storm; anything else is retried after `retry`.
pub fn on_error<K>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
    kind: &'static str,
    retry: std::time::Duration,
) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    ctx.metrics.failure(kind, error);
    warn!(kind, name = obj.meta().name.as_deref().unwrap_or_default(), %error, "reconcile failed");
    match error {
        Error::Invalid { reason, .. } => {
            let reason = reason.clone();
            tokio::spawn(async move {
                publish(&ctx, &*obj, EventType::Warning, "InvalidSpec", &reason).await
            });
            Action::await_change()
        }
        _ => Action::requeue(retry),
    }
}

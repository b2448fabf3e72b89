//! Server-side applies that would change nothing are skipped.
//!
//! The API server turns an unchanged apply into a no-op, but only after
//! decoding, merging and comparing managed fields; when every reconcile
//! re-applied a cluster's children, those no-ops were the largest part of the
//! API server's CPU at a few hundred clusters. A child is re-applied only when
//! what we want changed, or when the child did: it is gone, or someone edited
//! its spec (its generation moved; resourceVersion for kinds without one).
//!
//! Memory only: a restarted operator has no records and re-applies each child
//! once, which is exactly what it did before this existed.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::Result;
use crate::api::apply_params;
use crate::build::fnv1a;
use crate::error::Stage;

/// Records beyond this are dropped wholesale: forgetting costs one re-apply
/// per child, and keeps children of long-deleted clusters from piling up.
const MAX_RECORDS: usize = 100_000;

/// Background applies at once (each holds an API connection while it waits).
const BACKGROUND_APPLIES: usize = 8;

/// Where a child applied in the background stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Background {
    /// The watch cache shows our last apply of exactly this.
    Applied,
    /// Not yet: an apply is under way.
    Pending,
    /// The last apply failed (how); another is under way.
    Failed(String),
}

pub struct Applied {
    /// kind/namespace/name → (hash of what we applied, the child's version right after).
    records: Mutex<HashMap<String, (u64, String)>>,
    /// kind/namespace/name → how its last background apply failed, until one succeeds.
    failures: Mutex<HashMap<String, String>>,
    /// Keys with a background apply under way, so a reconcile never starts a second.
    in_flight: Mutex<HashSet<String>>,
    background: Arc<Semaphore>,
}

impl Default for Applied {
    fn default() -> Self {
        Self {
            records: Default::default(),
            failures: Default::default(),
            in_flight: Default::default(),
            background: Arc::new(Semaphore::new(BACKGROUND_APPLIES)),
        }
    }
}

impl Applied {
    /// Makes `desired` (namespaced) exist, applying it only when `store` (the
    /// watch cache) does not already show our last apply of exactly this;
    /// returns the child as the API server or the cache has it.
    pub async fn ensure<K>(&self, client: &Client, store: &Store<K>, desired: K) -> Result<Arc<K>>
    where
        K: Child,
    {
        let (key, hash) = identify(&desired);
        if let Some(current) = self.current(store, &desired, &key, hash) {
            return Ok(current);
        }
        let applied = apply(client, &desired).await?;
        self.record(key, hash, version(applied.meta()));
        Ok(Arc::new(applied))
    }

    /// Like [`ensure`](Self::ensure), for a child the reconcile need not wait
    /// for: Applied when the cache shows it applied; otherwise one apply is
    /// started in the background (its arrival in the watch cache triggers the
    /// next reconcile; a failure is kept for the owner's next reconcile to
    /// tell, and retried by its requeue).
    pub fn ensure_in_background<K>(
        self: &Arc<Self>,
        client: &Client,
        store: &Store<K>,
        desired: K,
    ) -> Background
    where
        K: Child + Send + Sync + 'static,
    {
        let (key, hash) = identify(&desired);
        if self.current(store, &desired, &key, hash).is_some() {
            return Background::Applied;
        }
        let failed = self.failures.lock().expect("failures lock").get(&key).cloned();
        let standing = failed.map_or(Background::Pending, Background::Failed);
        if !self.in_flight.lock().expect("in-flight lock").insert(key.clone()) {
            return standing;
        }
        let (this, client) = (self.clone(), client.clone());
        tokio::spawn(async move {
            let _permit = this.background.clone().acquire_owned().await;
            match apply(&client, &desired).await {
                Ok(applied) => {
                    this.record(key.clone(), hash, version(applied.meta()));
                    this.failures.lock().expect("failures lock").remove(&key);
                }
                Err(e) => {
                    warn!(child = key, error = %e, "could not apply; the next reconcile retries");
                    let mut failures = this.failures.lock().expect("failures lock");
                    if failures.len() >= MAX_RECORDS {
                        failures.clear();
                    }
                    failures.insert(key.clone(), e.to_string());
                }
            }
            this.in_flight.lock().expect("in-flight lock").remove(&key);
        });
        standing
    }

    /// The cached child, if it still carries our last apply of `hash`.
    fn current<K: Child>(
        &self,
        store: &Store<K>,
        desired: &K,
        key: &str,
        hash: u64,
    ) -> Option<Arc<K>> {
        let current = store.get(
            &ObjectRef::new(&desired.name_any()).within(&desired.namespace().unwrap_or_default()),
        )?;
        (self.lookup(key) == Some((hash, version(current.meta())))).then_some(current)
    }

    fn lookup(&self, key: &str) -> Option<(u64, String)> {
        self.records.lock().expect("applied records lock").get(key).cloned()
    }

    fn record(&self, key: String, hash: u64, version: String) {
        let mut records = self.records.lock().expect("applied records lock");
        if records.len() >= MAX_RECORDS {
            records.clear();
        }
        records.insert(key, (hash, version));
    }
}

/// A namespaced child resource the operator applies.
pub trait Child:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}
impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// The record key of a child and the hash of its desired form.
fn identify<K: Child>(desired: &K) -> (String, u64) {
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        desired.namespace().unwrap_or_default(),
        desired.name_any()
    );
    (key, fnv1a(&serde_json::to_string(desired).expect("children serialise")))
}

async fn apply<K: Child>(client: &Client, desired: &K) -> Result<K> {
    let api: Api<K> = Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
    api.patch(&desired.name_any(), &apply_params(), &Patch::Apply(desired)).await.applying()
}

/// What moves when a child's spec is changed by anyone: its generation, or
/// for kinds without one (Services), its resourceVersion.
fn version(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(generation) => format!("g{generation}"),
        None => format!("rv{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

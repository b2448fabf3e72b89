//! What every controller shares: the client, settings, Events, metrics and
//! the scheduler client (controller-rs' `Context`).

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};

use crate::config::Config;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::scheduler_api::SchedulerApi;

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub scheduler: SchedulerApi,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        scheduler: SchedulerApi,
    ) -> Self {
        let events = Events::new(client.clone(), config.instance.clone());
        Self { client, config, events, metrics, scheduler }
    }

    /// The API the controllers watch: every namespace, or the one watched (a
    /// namespaced install, and tests that run side by side without seeing
    /// each other's clusters).
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.config.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The API of one namespace's objects of a kind.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }
}

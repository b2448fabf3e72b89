//! Kubernetes Events about the objects the operator reconciles: what it did
//! (Normal) and what went wrong (Warning), where `kubectl describe` shows them.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use crate::api::MANAGER;

pub struct Events {
    client: Client,
    /// Who this operator says it is in the Events it publishes.
    reporter: Reporter,
    /// Publishes Warnings, folding repeats of one into a series.
    warnings: Recorder,
}

impl Events {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: MANAGER.into(), instance };
        Self { warnings: Recorder::new(client.clone(), reporter.clone()), reporter, client }
    }

    /// Records an action the operator took.
    pub async fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: &str) {
        self.publish(obj, EventType::Normal, reason, note).await
    }

    /// Records a problem someone should look at.
    pub async fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: &str) {
        self.publish(obj, EventType::Warning, reason, note).await
    }

    /// A failure to publish is logged, never fatal.
    ///
    /// Only Warnings go through the shared recorder, which folds a repeat into a
    /// series of the first Event. Normal Events each record one action and keep
    /// their own note (a series would show the first "Created 4 worker pod(s)"
    /// for a later "Created 1"); and the shared recorder keeps every Event it made
    /// for six minutes, which for a thousand clusters is megabytes.
    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
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
        let reference = obj.object_ref(&());
        let published = match type_ {
            EventType::Warning => self.warnings.publish(&event, &reference).await,
            EventType::Normal => {
                Recorder::new(self.client.clone(), self.reporter.clone())
                    .publish(&event, &reference)
                    .await
            }
        };
        if let Err(e) = published {
            warn!(error = %e, "could not publish an event");
        }
    }
}

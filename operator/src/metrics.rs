//! Prometheus metrics: reconciles, failures and durations by kind.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub kind: &'static str,
    pub error: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<FailureLabel, Counter>,
    duration: Family<KindLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dask_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations",
            duration.clone(),
        );
        Self { registry, reconciles, failures, duration }
    }
}

impl Metrics {
    /// Counts a reconcile; the returned guard records its duration when dropped.
    pub fn reconcile(&self, kind: &'static str) -> DurationGuard<'_> {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        DurationGuard { metrics: self, kind, start: Instant::now() }
    }

    pub fn failure(&self, kind: &'static str, error: &crate::Error) {
        self.failures.get_or_create(&FailureLabel { kind, error: error.metric_label() }).inc();
    }

    /// `/metrics`: the same exposition and content type as the gateway's.
    pub fn encode(&self) -> dask_common::metrics::Exposition {
        dask_common::metrics::render(&self.registry)
    }
}

pub struct DurationGuard<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for DurationGuard<'_> {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.metrics.duration.get_or_create(&KindLabel { kind: self.kind }).observe(elapsed);
    }
}

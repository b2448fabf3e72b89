//! The warm pool: for each pooled profile, `size` schedulers started ahead
//! of time, each with its own name, API token and TLS pair, already
//! heartbeating. A create whose options make exactly a pooled profile's
//! cluster claims one (the cluster takes its name and credentials) and is
//! RUNNING at once; the pool refills in the background. Anything else (other
//! environment, threads, idle timeout...) starts cold, as without a pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Entry, Settings, Table, launch};
use crate::backends::templates::{self, Backoff, Template};
use crate::config::{Config, LocalConfig};
use crate::domain::models::{Cluster, ClusterStatus};
use crate::domain::options::ClusterConfig;

#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Ready (or starting) schedulers kept per template.
    size: usize,
    templates: Vec<Template>,
}

/// How often the pool looks at the table at most (and at least, idle).
const REFILL_DEBOUNCE: Duration = Duration::from_millis(200);
const REFILL_IDLE: Duration = Duration::from_secs(2);

impl Pool {
    pub fn new(config: &Config, local: &LocalConfig) -> Self {
        let templates = templates::pooled(config, local.pool_profiles.as_deref());
        Self { size: local.pool_size as usize, templates }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0 || self.templates.is_empty()
    }

    /// The template that makes exactly this cluster, if any.
    fn template_for(&self, config: &ClusterConfig) -> Option<usize> {
        if self.size == 0 {
            return None;
        }
        self.templates.iter().position(|t| &t.config == config)
    }

    /// How many schedulers each template lacks, given the template of each
    /// live pooled one.
    fn missing(&self, live: &[usize]) -> Vec<(usize, usize)> {
        (0..self.templates.len())
            .map(|t| (t, self.size.saturating_sub(live.iter().filter(|l| **l == t).count())))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Hands a ready pooled cluster to `request`'s owner, if one matches: it
/// keeps its name, token, TLS pair, processes and addresses, and takes the
/// request's owner, options and start time. Returns its name.
pub(super) fn claim(
    pool: &Pool,
    clusters: &mut HashMap<String, Entry>,
    request: &Cluster,
) -> Option<String> {
    let template = pool.template_for(&request.config)?;
    let entry = clusters
        .values_mut()
        .filter(|e| e.pooled == Some(template) && e.cluster.status == ClusterStatus::Running)
        .min_by_key(|e| e.cluster.start_time)?;
    entry.pooled = None;
    entry.cluster.username = request.username.clone();
    entry.cluster.options = request.options.clone();
    entry.cluster.start_time = request.start_time;
    Some(entry.cluster.name.clone())
}

/// Keeps the pool full for as long as the gateway runs; its schedulers
/// stop with the gateway (or, after a crash, at the next start).
pub(super) async fn refill(settings: Arc<Settings>, table: Table) {
    let pool = &settings.pool;
    let mut backoff: Vec<Backoff> = pool.templates.iter().map(|_| Backoff::default()).collect();
    let mut changes = table.changed.subscribe();
    loop {
        {
            let mut clusters = table.clusters.write().await;
            if table.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            // Finished pooled schedulers leave the table; a failure backs off.
            let finished: Vec<(String, usize, ClusterStatus)> = clusters
                .values()
                .filter(|e| e.cluster.stop_time.is_some())
                .filter_map(|e| Some((e.cluster.name.clone(), e.pooled?, e.cluster.status)))
                .collect();
            for (name, template, status) in finished {
                super::retention::forget(&settings, &mut clusters, std::slice::from_ref(&name));
                if status == ClusterStatus::Failed {
                    backoff[template].failed();
                }
            }
            let mut live = Vec::new();
            for entry in clusters.values() {
                if let Some(template) = entry.pooled {
                    live.push(template);
                    if entry.cluster.status == ClusterStatus::Running {
                        backoff[template].reset();
                    }
                }
            }
            for (template, missing) in pool.missing(&live) {
                if !backoff[template].ready() {
                    continue;
                }
                let t = &pool.templates[template];
                for _ in 0..missing {
                    match Cluster::fresh("", t.options.clone(), t.config.clone()) {
                        Ok(cluster) => {
                            info!(cluster = %cluster.name, profile = %t.profile, "starting a pooled scheduler");
                            launch(&settings, &table, &mut clusters, cluster, Some(template));
                        }
                        Err(e) => warn!(error = %e, "no credentials for a pooled scheduler"),
                    }
                }
            }
        }
        tokio::time::sleep(REFILL_DEBOUNCE).await;
        tokio::time::timeout(REFILL_IDLE, changes.changed()).await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::tests::sample;
    use serde_json::Map;

    fn pool(size: usize) -> (Pool, ClusterConfig) {
        let config = sample("x", "", ClusterStatus::Pending).config;
        let template =
            Template { profile: "small".into(), options: Map::new(), config: config.clone() };
        (Pool { size, templates: vec![template] }, config)
    }

    fn entry(name: &str, status: ClusterStatus, pooled: Option<usize>) -> (String, Entry) {
        let cluster = sample(name, "", status);
        let commands = tokio::sync::mpsc::unbounded_channel().0;
        (
            name.into(),
            Entry { cluster, commands, handoff: None, pooled, processes: Default::default() },
        )
    }

    #[test]
    fn only_the_same_cluster_config_is_served_from_the_pool() {
        let (pool, config) = pool(1);
        assert_eq!(pool.template_for(&config), Some(0));
        let mut other = config.clone();
        other.environment.insert("A".into(), "1".into());
        assert_eq!(pool.template_for(&other), None);
        assert_eq!(pool.template_for(&ClusterConfig { worker_threads: 2, ..config.clone() }), None);
        let (empty, config) = self::pool(0);
        assert_eq!(empty.template_for(&config), None);
        assert!(empty.is_empty());
    }

    #[test]
    fn missing_counts_what_each_template_lacks() {
        let (pool, _) = pool(2);
        assert_eq!(pool.missing(&[]), [(0, 2)]);
        assert_eq!(pool.missing(&[0]), [(0, 1)]);
        assert!(pool.missing(&[0, 0]).is_empty());
    }

    #[test]
    fn a_claim_takes_a_running_pooled_cluster_and_gives_it_an_owner() {
        let (pool, _) = pool(1);
        let mut clusters: HashMap<String, Entry> = [
            entry("starting", ClusterStatus::Pending, Some(0)),
            entry("ready", ClusterStatus::Running, Some(0)),
            entry("users", ClusterStatus::Running, None),
        ]
        .into_iter()
        .collect();
        let mut request = sample("asked", "alice", ClusterStatus::Pending);
        request.start_time = 42;
        assert_eq!(claim(&pool, &mut clusters, &request).as_deref(), Some("ready"));
        let claimed = &clusters["ready"];
        assert_eq!((claimed.pooled, claimed.cluster.username.as_str()), (None, "alice"));
        assert_eq!(claimed.cluster.start_time, 42);
        // Only a starting one is left: the next create starts cold.
        assert_eq!(claim(&pool, &mut clusters, &request), None);
    }
}

//! The local backend's finished clusters: each stays in the table (and its
//! directory, with its logs but no keys, on disk) while the history
//! [`Retention`] keeps it and it is among the newest [`MAX_FINISHED`]; then
//! both are forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::debug;

use super::{Entry, Settings, Table, cluster_dir};
use crate::backends::history::Retention;
use crate::domain::models::now_ms;

/// Finished clusters kept at most, whatever their age: a loop of create and
/// delete must not grow the table (or the disk) without end.
pub(super) const MAX_FINISHED: usize = 1000;

/// The finished clusters to forget at `now`: those `retention` no longer
/// keeps, and the oldest beyond the newest `keep`. Pooled schedulers are
/// the pool's to forget.
pub(super) fn to_forget(
    clusters: &HashMap<String, Entry>,
    retention: &Retention,
    now: i64,
    keep: usize,
) -> Vec<String> {
    let mut finished: Vec<(i64, &String)> = clusters
        .values()
        .filter(|e| e.pooled.is_none() && !e.cluster.status.is_active())
        .filter_map(|e| Some((e.cluster.stop_time?, &e.cluster.name)))
        .collect();
    finished.sort();
    let beyond = finished.len().saturating_sub(keep);
    finished
        .iter()
        .enumerate()
        .filter(|(i, (stopped, _))| *i < beyond || !retention.keeps_at(*stopped, now))
        .map(|(_, (_, name))| (*name).clone())
        .collect()
}

/// Removes the clusters from the table and their directories from disk.
pub(super) fn forget(settings: &Settings, clusters: &mut HashMap<String, Entry>, names: &[String]) {
    for name in names {
        if clusters.remove(name).is_some() {
            debug!(cluster = %name, "finished cluster forgotten");
            let dir = cluster_dir(settings, name);
            tokio::spawn(async move { tokio::fs::remove_dir_all(dir).await.ok() });
        }
    }
}

/// Forgets expired clusters every sweep period, so memory and disk are
/// freed even when nobody creates clusters (lists hide them at once).
pub(super) async fn sweep(settings: Arc<Settings>, table: Table) {
    loop {
        tokio::time::sleep(settings.retention.sweep_period()).await;
        let mut clusters = table.clusters.write().await;
        let names = to_forget(&clusters, &settings.retention, now_ms(), MAX_FINISHED);
        if names.is_empty() {
            continue;
        }
        forget(&settings, &mut clusters, &names);
        drop(clusters);
        table.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;

    fn table(stops: &[(ClusterStatus, Option<i64>)]) -> HashMap<String, Entry> {
        stops
            .iter()
            .enumerate()
            .map(|(i, (status, stop_time))| {
                let mut cluster = sample(&format!("c{i}"), "alice", *status);
                cluster.stop_time = *stop_time;
                let commands = mpsc::unbounded_channel().0;
                (
                    cluster.name.clone(),
                    Entry {
                        cluster,
                        commands,
                        handoff: None,
                        pooled: None,
                        processes: Default::default(),
                    },
                )
            })
            .collect()
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[test]
    fn only_the_newest_finished_clusters_are_kept() {
        use ClusterStatus::*;
        let clusters =
            table(&[(Stopped, Some(0)), (Failed, Some(1)), (Stopped, Some(2)), (Running, None)]);
        let forever = Retention::from_seconds(1e9);
        assert_eq!(sorted(to_forget(&clusters, &forever, 3, 1)), ["c0", "c1"]);
    }

    #[test]
    fn finished_clusters_go_after_the_max_age() {
        use ClusterStatus::*;
        let clusters = table(&[
            (Stopped, Some(1_000)),
            (Failed, Some(5_000)),
            (Running, None),
            // Still stopping: no stop time yet, never forgotten.
            (Stopped, None),
        ]);
        let ten_seconds = Retention::from_seconds(10.0);
        assert!(to_forget(&clusters, &ten_seconds, 10_999, 1000).is_empty());
        assert_eq!(to_forget(&clusters, &ten_seconds, 11_000, 1000), ["c0"]);
        assert_eq!(sorted(to_forget(&clusters, &ten_seconds, 15_000, 1000)), ["c0", "c1"]);
    }
}

//! A gateway that starts where another one ran (same state directory)
//! finds that one's clusters in the store: those whose scheduler still runs
//! and answers are adopted (listed, proxied, heartbeating, stoppable, with
//! the same credentials); everything else recorded is stopped, process
//! groups and keys, so nothing is left orphaned.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::process::TERMINATE_GRACE;
use super::store::ClusterRecord;
use super::{Adopted, Settings, Table, cluster_dir, start_supervisor};
use crate::domain::models::ClusterStatus;

/// How long a recorded scheduler gets to answer its health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What happens to one recorded cluster at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Adopt,
    /// Its processes are stopped and its record and keys removed, because…
    Stop(&'static str),
}

/// What a recorded scheduler looks like now.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The recorded process (pid and start time) still runs.
    pub alive: bool,
    /// Its API answers `/api/health`.
    pub answers: bool,
}

/// The pure decision for one record.
pub fn decide(record: &ClusterRecord, probe: Probe) -> Decision {
    if record.pooled {
        // Cheap to replace, and the pool's templates may have changed.
        return Decision::Stop("a pooled scheduler");
    }
    if record.status != ClusterStatus::Running {
        return Decision::Stop(match record.status {
            ClusterStatus::Pending => "it had not started yet",
            _ => "it was stopping",
        });
    }
    if record.addresses.is_none() || record.processes.scheduler.is_none() {
        return Decision::Stop("its record has no scheduler");
    }
    if !probe.alive {
        return Decision::Stop("its scheduler is gone");
    }
    if !probe.answers {
        return Decision::Stop("its scheduler does not answer");
    }
    Decision::Adopt
}

async fn probe(record: &ClusterRecord, http: &reqwest::Client) -> Probe {
    let alive = record.processes.scheduler.is_some_and(|s| s.is_alive());
    let answers = match (&record.addresses, alive) {
        (Some(addresses), true) => {
            let url = format!("{}/api/health", addresses.api.trim_end_matches('/'));
            http.get(url).send().await.is_ok_and(|r| r.status().is_success())
        }
        _ => false,
    };
    Probe { alive, answers }
}

/// Adopts or stops every recorded cluster; returns once adopted ones are
/// in the table (stops go on in the background).
pub(super) async fn recover(settings: &Arc<Settings>, table: &Table) {
    let records: Vec<(String, ClusterRecord)> = table.store.load_all();
    if records.is_empty() {
        return;
    }
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("a plain HTTP client builds");
    let probes = futures::future::join_all(records.iter().map(|(_, r)| probe(r, &http))).await;
    let mut clusters = table.clusters.write().await;
    for ((file, record), probe) in records.into_iter().zip(probes) {
        match decide(&record, probe) {
            Decision::Adopt => {
                let workers = record
                    .processes
                    .workers
                    .iter()
                    .filter(|(_, id)| id.is_alive())
                    .map(|(n, id)| (n.clone(), *id))
                    .collect();
                let scheduler = record.processes.scheduler.expect("decided on a scheduler");
                info!(cluster = %record.name, user = %record.username, scheduler = scheduler.pid, "adopted a running cluster");
                let adopted = Adopted { scheduler, workers };
                start_supervisor(
                    settings,
                    table,
                    &mut clusters,
                    record.cluster(),
                    None,
                    Some(adopted),
                );
            }
            Decision::Stop(why) => {
                warn!(cluster = %record.name, why, "stopping a cluster left by the previous gateway");
                let (table, dir) = (table.clone(), cluster_dir(settings, &record.name));
                tokio::spawn(async move {
                    let groups = record.processes.all().map(|p| p.stop_group(TERMINATE_GRACE));
                    futures::future::join_all(groups).await;
                    tokio::fs::remove_dir_all(dir).await.ok();
                    table.store.remove(&file).await.ok();
                });
            }
        }
    }
    drop(clusters);
    table.changed.send_modify(|n| *n += 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::local::process::ProcessId;
    use crate::backends::local::store::Processes;
    use crate::domain::models::Addresses;
    use crate::domain::models::tests::sample;

    fn record(status: ClusterStatus, pooled: bool) -> ClusterRecord {
        let mut cluster = sample("c", "alice", status);
        cluster.addresses = Some(Addresses {
            scheduler: "tls://127.0.0.1:1".into(),
            dashboard: String::new(),
            api: "http://127.0.0.1:2".into(),
        });
        let processes =
            Processes { scheduler: Some(ProcessId { pid: 1, start: 1 }), ..Default::default() };
        ClusterRecord::new(&cluster, pooled, processes)
    }

    const UP: Probe = Probe { alive: true, answers: true };

    #[test]
    fn only_a_running_users_cluster_whose_scheduler_answers_is_adopted() {
        assert_eq!(decide(&record(ClusterStatus::Running, false), UP), Decision::Adopt);
        let dead = Probe { alive: false, answers: false };
        assert!(matches!(decide(&record(ClusterStatus::Running, false), dead), Decision::Stop(_)));
        let mute = Probe { alive: true, answers: false };
        assert!(matches!(decide(&record(ClusterStatus::Running, false), mute), Decision::Stop(_)));
        assert!(matches!(decide(&record(ClusterStatus::Running, true), UP), Decision::Stop(_)));
        for status in [ClusterStatus::Pending, ClusterStatus::Stopping, ClusterStatus::Failed] {
            assert!(matches!(decide(&record(status, false), UP), Decision::Stop(_)), "{status:?}");
        }
        let mut no_pid = record(ClusterStatus::Running, false);
        no_pid.processes.scheduler = None;
        assert!(matches!(decide(&no_pid, UP), Decision::Stop(_)));
    }
}

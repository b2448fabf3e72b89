//! Stopped and failed clusters stay listed for `completed_cluster_max_age`
//! (as in dask-gateway-server), then are dropped. What is kept is a small
//! [`Record`], never the cluster's processes or pods; both backends decide
//! what to keep with the same pure [`Retention`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::models::{Cluster, ClusterStatus};
use crate::domain::options::ClusterConfig;

/// What is left of a stopped or failed cluster: enough to list it and to say
/// why it ended. Serialisable, so a backend can keep it outside the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub username: String,
    /// `STOPPED` or `FAILED`.
    pub status: ClusterStatus,
    /// Why it failed (none for a requested stop).
    #[serde(default)]
    pub reason: Option<String>,
    /// Milliseconds since the epoch.
    pub start_time: i64,
    pub stop_time: i64,
    pub options: Map<String, Value>,
    pub config: ClusterConfig,
}

impl Record {
    /// The cluster as users see it: no credentials, no addresses, no workers.
    pub fn to_cluster(&self) -> Cluster {
        Cluster {
            name: self.name.clone(),
            username: self.username.clone(),
            token: String::new(),
            options: self.options.clone(),
            config: self.config.clone(),
            status: self.status,
            start_time: self.start_time,
            stop_time: Some(self.stop_time),
            tls_cert: String::new(),
            tls_key: String::new(),
            addresses: None,
            workers: 0,
            reason: self.reason.clone(),
        }
    }
}

/// How long finished clusters are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    max_age: Duration,
}

/// Bounds of the sweep that forgets expired records: often enough that a
/// short max age (tests) is honoured promptly, rarely enough to cost nothing.
const MIN_SWEEP: Duration = Duration::from_secs(1);
const MAX_SWEEP: Duration = Duration::from_secs(60);

impl Retention {
    pub fn new(max_age: Duration) -> Self {
        Self { max_age }
    }

    /// From `[cluster] completed_cluster_max_age` (seconds).
    pub fn from_seconds(seconds: f64) -> Self {
        Self::new(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
    }

    /// Whether a cluster with this status and stop time is still listed at
    /// `now` (milliseconds). Active and stopping clusters always are; a
    /// finished one without a stop time is still stopping, so it is too.
    pub fn keeps(&self, status: ClusterStatus, stop_time: Option<i64>, now: i64) -> bool {
        if status <= ClusterStatus::Stopping {
            return true;
        }
        let Some(stopped) = stop_time else { return true };
        self.keeps_at(stopped, now)
    }

    /// Whether a cluster that finished at `stopped` is still listed at `now`.
    pub fn keeps_at(&self, stopped: i64, now: i64) -> bool {
        let age = u128::try_from(now.saturating_sub(stopped)).unwrap_or(0);
        age < self.max_age.as_millis()
    }

    pub fn keeps_cluster(&self, cluster: &Cluster, now: i64) -> bool {
        self.keeps(cluster.status, cluster.stop_time, now)
    }

    /// How often to look for records to forget: a tenth of the max age,
    /// between 1 s and 60 s.
    pub fn sweep_period(&self) -> Duration {
        (self.max_age / 10).clamp(MIN_SWEEP, MAX_SWEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::tests::sample;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn finished_clusters_are_kept_for_the_max_age_then_dropped() {
        let day = Retention::from_seconds(86_400.0);
        for status in [ClusterStatus::Stopped, ClusterStatus::Failed] {
            assert!(day.keeps(status, Some(1_000), 1_000));
            assert!(day.keeps(status, Some(1_000), 1_000 + DAY_MS - 1));
            assert!(!day.keeps(status, Some(1_000), 1_000 + DAY_MS));
        }
    }

    #[test]
    fn active_and_still_stopping_clusters_are_always_kept() {
        let none = Retention::from_seconds(0.0);
        for status in [ClusterStatus::Pending, ClusterStatus::Running, ClusterStatus::Stopping] {
            assert!(none.keeps(status, Some(0), i64::MAX));
        }
        // Stopped, but the stop time is not written yet: still being stopped.
        assert!(none.keeps(ClusterStatus::Stopped, None, i64::MAX));
        assert!(!none.keeps(ClusterStatus::Failed, Some(5), 5));
    }

    #[test]
    fn clock_skew_and_huge_ages_do_not_wrap() {
        let day = Retention::from_seconds(86_400.0);
        // A stop time in the future (another replica's clock): kept.
        assert!(day.keeps(ClusterStatus::Stopped, Some(10 * DAY_MS), 0));
        assert!(!day.keeps(ClusterStatus::Stopped, Some(i64::MIN), i64::MAX));
        let forever = Retention::from_seconds(f64::MAX);
        assert!(forever.keeps(ClusterStatus::Failed, Some(0), i64::MAX));
        assert!(Retention::from_seconds(-1.0).sweep_period() >= Duration::from_secs(1));
    }

    #[test]
    fn the_sweep_follows_the_max_age_within_bounds() {
        assert_eq!(Retention::from_seconds(86_400.0).sweep_period(), Duration::from_secs(60));
        assert_eq!(Retention::from_seconds(30.0).sweep_period(), Duration::from_secs(3));
        assert_eq!(Retention::from_seconds(2.0).sweep_period(), Duration::from_secs(1));
    }

    #[test]
    fn a_record_round_trips_and_lists_without_credentials() {
        let mut cluster = sample("c1", "alice", ClusterStatus::Failed);
        cluster.stop_time = Some(7);
        let record = Record {
            name: "c1".into(),
            username: "alice".into(),
            status: ClusterStatus::Failed,
            reason: Some("the scheduler exited (exit status: 1)".into()),
            start_time: 1,
            stop_time: 7,
            options: Map::new(),
            config: cluster.config.clone(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
        let listed = record.to_cluster();
        assert!(listed.token.is_empty() && listed.tls_key.is_empty() && listed.addresses.is_none());
        assert_eq!((listed.status, listed.stop_time), (ClusterStatus::Failed, Some(7)));
        assert_eq!(listed.to_json()["tls_key"], Value::Null);
    }
}

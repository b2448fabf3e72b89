//! Per-cluster and per-user limits. Going over a worker limit is not an
//! error: the request is clamped and the client shows the message as a
//! warning, as dask-gateway does for `cluster_max_workers`.

use serde::Deserialize;

use super::models::Cluster;
use super::options::Memory;

/// Per-user and per-cluster limits, enforced wherever workers are started
/// (scale, adapt, heartbeats) on both backends. Unset keys are unlimited;
/// the worker, core and memory caps have defaults so that one request
/// cannot ask a shared machine for four billion workers. TOML has no null:
/// `"unlimited"` lifts a limit, defaults included.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    #[serde(deserialize_with = "limit")]
    pub user_max_clusters: Option<u32>,
    #[serde(deserialize_with = "limit")]
    pub user_max_cores: Option<f64>,
    #[serde(deserialize_with = "limit")]
    pub user_max_memory: Option<Memory>,
    #[serde(deserialize_with = "limit")]
    pub cluster_max_workers: Option<u32>,
    #[serde(deserialize_with = "limit")]
    pub cluster_max_cores: Option<f64>,
    #[serde(deserialize_with = "limit")]
    pub cluster_max_memory: Option<Memory>,
    /// Local backend: worker processes that may be starting at once, over
    /// all clusters (a big scale starts in batches of this size).
    pub local_max_starting_workers: u32,
    /// Open sessions (cookies) kept; past this, logins still work but get no cookie.
    pub max_sessions: usize,
    /// Password checks (argon2) running at once, on blocking threads.
    pub max_concurrent_password_checks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            user_max_clusters: None,
            user_max_cores: Some(DEFAULT_USER_MAX_CORES),
            user_max_memory: Some(Memory(DEFAULT_USER_MAX_MEMORY_GIB << 30)),
            cluster_max_workers: Some(DEFAULT_CLUSTER_MAX_WORKERS),
            cluster_max_cores: None,
            cluster_max_memory: None,
            local_max_starting_workers: 4,
            max_sessions: 10_000,
            max_concurrent_password_checks: 4,
        }
    }
}

/// A limit's value, or `"unlimited"` for none.
fn limit<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<T> {
        Unlimited(Unlimited),
        Value(T),
    }
    #[derive(Deserialize)]
    enum Unlimited {
        #[serde(rename = "unlimited")]
        Unlimited,
    }
    match Raw::<T>::deserialize(deserializer) {
        Ok(Raw::Unlimited(_)) => Ok(None),
        Ok(Raw::Value(value)) => Ok(Some(value)),
        Err(_) => Err(serde::de::Error::custom(
            "expected a number (memory: bytes or a string such as \"4 GiB\") or \"unlimited\"",
        )),
    }
}

pub const DEFAULT_CLUSTER_MAX_WORKERS: u32 = 32;
pub const DEFAULT_USER_MAX_CORES: f64 = 64.0;
pub const DEFAULT_USER_MAX_MEMORY_GIB: u64 = 256;

pub struct Clamped {
    pub value: u32,
    pub message: Option<String>,
}

/// A new cluster is refused only for the number of clusters (it starts with no workers).
pub fn check_new_cluster(limits: &Limits, user: &str, active: &[Cluster]) -> Result<(), String> {
    match limits.user_max_clusters {
        Some(max) if active.len() as u32 >= max => Err(format!(
            "User {user} already has {} active clusters, the limit is {max}; stop one first",
            active.len()
        )),
        _ => Ok(()),
    }
}

/// The most workers `cluster` may have, and the limit that sets it.
fn worker_limit(limits: &Limits, cluster: &Cluster, others: &[Cluster]) -> Option<(u32, String)> {
    let mut best: Option<(u32, String)> =
        limits.cluster_max_workers.map(|max| (max, format!("resource limit of {max} workers")));
    let mut consider = |workers: u32, why: String| {
        if best.as_ref().is_none_or(|(b, _)| workers < *b) {
            best = Some((workers, why));
        }
    };
    let cores = cluster.config.worker_cores.max(f64::MIN_POSITIVE);
    let memory = cluster.config.worker_memory.max(1);
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    if let Some(max) = limits.cluster_max_cores {
        // `as u32` saturates: a huge quotient is u32::MAX, never a wrap.
        consider((max / cores).floor().max(0.0) as u32, format!("resource limit of {max} cores"));
    }
    if let Some(max) = limits.cluster_max_memory {
        let room = u32::try_from(max.0 / memory).unwrap_or(u32::MAX);
        consider(room, format!("resource limit of {} GiB of memory", gib(max.0)));
    }
    if let Some(max) = limits.user_max_cores {
        let used: f64 = others.iter().map(|c| c.workers as f64 * c.config.worker_cores).sum();
        let room = ((max - used) / cores).floor().max(0.0) as u32;
        consider(room, format!("the limit of {max} cores for user {}", cluster.username));
    }
    if let Some(max) = limits.user_max_memory {
        let used: u64 = others
            .iter()
            .map(|c| (c.workers as u64).saturating_mul(c.config.worker_memory))
            .fold(0, u64::saturating_add);
        let room = u32::try_from(max.0.saturating_sub(used) / memory).unwrap_or(u32::MAX);
        consider(
            room,
            format!("the limit of {} GiB of memory for user {}", gib(max.0), cluster.username),
        );
    }
    best
}

/// The worker count a scheduler's heartbeat may have, whatever it asks
/// for: heartbeats come from code the user controls (the token is readable
/// in the scheduler), so they get the same limits as `scale`.
pub fn clamp_heartbeat(limits: &Limits, cluster: &Cluster, others: &[Cluster], count: i64) -> u32 {
    let asked = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
    clamp_scale(limits, cluster, others, asked).value
}

pub fn clamp_scale(limits: &Limits, cluster: &Cluster, others: &[Cluster], count: u32) -> Clamped {
    match worker_limit(limits, cluster, others) {
        Some((max, why)) if count > max => Clamped {
            value: max,
            message: Some(format!(
                "Scale request of {count} workers would exceed {why}. Scaling to {max} instead."
            )),
        },
        _ => Clamped { value: count, message: None },
    }
}

/// With a limit, an open maximum becomes the limit and an open minimum 0.
pub fn clamp_adapt(
    limits: &Limits,
    cluster: &Cluster,
    others: &[Cluster],
    minimum: Option<u32>,
    maximum: Option<u32>,
) -> (Option<u32>, Option<u32>, Option<String>) {
    let Some((max, why)) = worker_limit(limits, cluster, others) else {
        return (minimum, maximum, None);
    };
    let (lo, hi) = (minimum.unwrap_or(0), maximum.unwrap_or(max));
    let (new_lo, new_hi) = (lo.min(max), hi.min(max));
    let message = (new_lo != lo || new_hi != hi).then(|| {
        format!(
            "Adapt with `maximum={hi}, minimum={lo}` workers would exceed {why}. Using `maximum={new_hi}, minimum={new_lo}` instead."
        )
    });
    (Some(new_lo), Some(new_hi), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::ClusterStatus;
    use crate::domain::models::tests::sample;
    use crate::domain::options::Memory;

    fn unlimited() -> Limits {
        Limits {
            user_max_cores: None,
            user_max_memory: None,
            cluster_max_workers: None,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_clamp_a_four_billion_worker_request() {
        let c = sample("a", "alice", ClusterStatus::Running);
        let clamped = clamp_scale(&Limits::default(), &c, &[], u32::MAX);
        assert_eq!(clamped.value, DEFAULT_CLUSTER_MAX_WORKERS);
        assert!(clamped.message.unwrap().starts_with("Scale request of 4294967295 workers"));
        assert_eq!(clamp_heartbeat(&Limits::default(), &c, &[], i64::MAX), 32);
        assert_eq!(clamp_heartbeat(&Limits::default(), &c, &[], -5), 0);
        assert_eq!(clamp_heartbeat(&unlimited(), &c, &[], i64::MAX), u32::MAX);
    }

    #[test]
    fn cluster_cores_and_memory_caps() {
        let c = sample("a", "alice", ClusterStatus::Running); // 1 core, 1 GiB per worker
        let limits = Limits { cluster_max_cores: Some(2.5), ..unlimited() };
        assert_eq!(clamp_scale(&limits, &c, &[], 10).value, 2);
        let limits = Limits { cluster_max_memory: Some(Memory(3 << 30)), ..unlimited() };
        assert_eq!(clamp_scale(&limits, &c, &[], 10).value, 3);
    }

    #[test]
    fn cluster_max_workers_clamps_with_the_reference_message() {
        let limits = Limits { cluster_max_workers: Some(3), ..unlimited() };
        let c = sample("a", "alice", ClusterStatus::Running);
        let clamped = clamp_scale(&limits, &c, &[], 5);
        assert_eq!(clamped.value, 3);
        assert_eq!(
            clamped.message.unwrap(),
            "Scale request of 5 workers would exceed resource limit of 3 workers. Scaling to 3 instead."
        );
        assert!(clamp_scale(&limits, &c, &[], 2).message.is_none());
        let (lo, hi, msg) = clamp_adapt(&limits, &c, &[], Some(1), Some(10));
        assert_eq!((lo, hi), (Some(1), Some(3)));
        assert_eq!(
            msg.unwrap(),
            "Adapt with `maximum=10, minimum=1` workers would exceed resource limit of 3 workers. Using `maximum=3, minimum=1` instead."
        );
    }

    #[test]
    fn user_cores_and_memory_count_the_other_clusters() {
        let limits = Limits {
            user_max_cores: Some(4.0),
            user_max_memory: Some(Memory(8 << 30)),
            ..unlimited()
        };
        let c = sample("a", "alice", ClusterStatus::Running); // 1 core, 1 GiB per worker
        let mut other = sample("b", "alice", ClusterStatus::Running);
        other.workers = 3;
        let clamped = clamp_scale(&limits, &c, &[other], 4);
        assert_eq!(clamped.value, 1);
        assert!(clamped.message.unwrap().contains("the limit of 4 cores for user alice"));
    }

    #[test]
    fn cluster_count_is_limited_per_user() {
        let limits = Limits { user_max_clusters: Some(1), ..unlimited() };
        assert!(check_new_cluster(&limits, "alice", &[]).is_ok());
        let err =
            check_new_cluster(&limits, "alice", &[sample("a", "alice", ClusterStatus::Running)])
                .unwrap_err();
        assert!(err.contains("limit is 1"), "{err}");
    }
}

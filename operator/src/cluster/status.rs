//! A DaskCluster's status, computed from what exists; no I/O.

use dask_crds::common::{condition, keep_transition_times};
use dask_crds::conditions::{DEGRADED, IDLE_CHECK, PROGRESSING, READY, reason};
use dask_crds::{ClusterPhase, DaskCluster, DaskWorkerGroup, WorkloadStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::build;
use crate::problems::{Problem, problem_condition};
use crate::validate::Invalid;

/// How long a lasting scheduler problem holds before the cluster is Failed.
/// The kubelet's first back-off is 10 s: by then a pull or a start has been
/// tried again and failed again, so one registry hiccup fails no cluster,
/// while a bad tag or a crash at start is told within seconds, not after a
/// start timeout. An Unschedulable scheduler never fails the cluster here: a
/// cluster autoscaler may add a node (the gateway's start timeout bounds it).
pub const FAILED_AFTER_SECONDS: i64 = 15;

/// What the cluster's children show.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The scheduler Deployment has a ready pod.
    pub scheduler_ready: bool,
    /// The scheduler Service exists (the API server may still be allocating it).
    pub service_exists: bool,
    /// Why the scheduler pod does not run, if it says.
    pub scheduler_problem: Option<Problem>,
    /// How the last apply of the Service failed, if it did.
    pub service_failure: Option<String>,
    pub now: Timestamp,
}

pub use dask_crds::conditions::{SCHEDULER_READY, WORKERS_READY};

/// Running only when the scheduler really is ready and its Service exists;
/// worker counts from the default group's status.
pub fn status(cluster: &DaskCluster, group: &DaskWorkerGroup, seen: Observed) -> WorkloadStatus {
    let Observed { scheduler_ready, service_exists, scheduler_problem, service_failure, now } =
        seen;
    let previous = previous_conditions(cluster);
    // Ready wins: a restarted scheduler that runs again has recovered.
    let problem = scheduler_problem.filter(|_| !scheduler_ready);
    let starting = (false, reason::STARTING, "the scheduler pod is starting".to_string());
    let ok =
        if scheduler_ready { (true, "Ready", "the scheduler is ready".into()) } else { starting };
    let scheduler = problem_condition(
        SCHEDULER_READY,
        problem.as_ref(),
        ok,
        previous,
        cluster.metadata.generation,
        now,
    );
    let failed = problem.as_ref().is_some_and(|p| {
        p.lasting
            && now.duration_since(scheduler.last_transition_time.0).as_secs()
                >= FAILED_AFTER_SECONDS
    });
    // The default group's view of its workers, told on the cluster too.
    let workers = group
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == WORKERS_READY))
        .cloned();
    let generation = cluster.metadata.generation;
    let group_status = group.status.clone().unwrap_or_default();
    let desired = cluster.spec.worker.replicas;
    let ready = group_status.ready_replicas.unwrap_or(0);
    let replicas = group_status.replicas.unwrap_or(0);
    let reachable = scheduler_ready && service_exists;
    let settled = reachable && ready == desired && replicas == desired;
    let ready_reason = if failed {
        "SchedulerFailed"
    } else if !service_exists {
        "ServicePending"
    } else if !scheduler_ready {
        "SchedulerNotReady"
    } else if settled {
        "AllReady"
    } else {
        "WorkersNotReady"
    };
    let degraded = if failed {
        condition(DEGRADED, true, &scheduler.reason, scheduler.message.clone(), generation)
    } else if let Some(why) = &service_failure {
        let message = format!("the scheduler's Service cannot be applied: {why}");
        condition(DEGRADED, true, reason::APPLY_FAILED, message, generation)
    } else {
        condition(DEGRADED, false, reason::VALID, "", generation)
    };
    let conditions = vec![
        condition(
            READY,
            settled,
            ready_reason,
            format!(
                "scheduler ready: {scheduler_ready}; service: {service_exists}; workers ready: {ready}/{desired}"
            ),
            generation,
        ),
        condition(
            PROGRESSING,
            !settled,
            if settled { "Settled" } else { "Reconciling" },
            format!("{replicas} worker pods for {desired} wanted"),
            generation,
        ),
        degraded,
    ];
    let mut conditions = keep_transition_times(conditions, previous);
    conditions.push(scheduler);
    conditions.extend(workers);
    // Told by the idleness check, which runs after the status is written.
    if cluster.spec.idle_timeout > 0 {
        conditions.extend(previous.iter().find(|c| c.type_ == IDLE_CHECK).cloned());
    }
    let phase = if reachable {
        ClusterPhase::Running
    } else if failed {
        ClusterPhase::Failed
    } else {
        ClusterPhase::Pending
    };
    WorkloadStatus {
        phase: Some(phase),
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        selector: Some(build::worker_selector(group)),
        observed_generation: generation,
        conditions,
    }
}

/// How long the scheduler's present problem has left before it fails the
/// cluster (if it lasts): at least a second, at most the whole grace.
pub fn grace_left(status: &WorkloadStatus, now: Timestamp) -> std::time::Duration {
    let since = status.conditions.iter().find(|c| c.type_ == SCHEDULER_READY);
    let held = since.map(|c| now.duration_since(c.last_transition_time.0).as_secs()).unwrap_or(0);
    std::time::Duration::from_secs(
        (FAILED_AFTER_SECONDS - held).clamp(1, FAILED_AFTER_SECONDS) as u64
    )
}

/// `status` with the IdleCheck condition `answered` makes, when that is
/// news: the scheduler stopped answering, or answers again. A scheduler that
/// always answered has no IdleCheck condition (no write per check).
pub fn with_idle_check(
    status: &WorkloadStatus,
    answered: Result<(), String>,
    generation: Option<i64>,
) -> Option<WorkloadStatus> {
    let old = status.conditions.iter().find(|c| c.type_ == IDLE_CHECK);
    let new = match answered {
        Ok(()) if old.is_some_and(|c| c.status == "False") => {
            condition(IDLE_CHECK, true, "SchedulerAnswered", "", generation)
        }
        Ok(()) => return None,
        // Told once: how it fails may vary from check to check.
        Err(_) if old.is_some_and(|c| c.status == "False") => return None,
        Err(why) => condition(IDLE_CHECK, false, reason::SCHEDULER_UNAVAILABLE, why, generation),
    };
    let mut conditions: Vec<Condition> =
        status.conditions.iter().filter(|c| c.type_ != IDLE_CHECK).cloned().collect();
    conditions.extend(keep_transition_times(vec![new], &status.conditions));
    Some(WorkloadStatus { conditions, ..status.clone() })
}

/// The status of a cluster whose spec is invalid: Error, and why.
pub fn invalid(cluster: &DaskCluster, invalid: &Invalid) -> WorkloadStatus {
    invalid_workload(cluster.metadata.generation, previous_conditions(cluster), invalid)
}

/// The status of a DaskCluster or DaskWorkerGroup whose spec at `generation`
/// is invalid: Error, and a Degraded condition that says why.
pub fn invalid_workload(
    generation: Option<i64>,
    previous: &[Condition],
    invalid: &Invalid,
) -> WorkloadStatus {
    let degraded = condition(DEGRADED, true, reason::INVALID_SPEC, invalid.to_string(), generation);
    WorkloadStatus {
        phase: Some(ClusterPhase::Error),
        observed_generation: generation,
        conditions: keep_transition_times(vec![degraded], previous),
        ..Default::default()
    }
}

fn previous_conditions(cluster: &DaskCluster) -> &[Condition] {
    cluster.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
}

/// How long the scheduler has been idle past `timeout` seconds, if it has.
pub fn idle_past_timeout(idle_since: Option<f64>, now: f64, timeout: i64) -> Option<f64> {
    let idle_for = now - idle_since?;
    (timeout > 0 && idle_for > timeout as f64).then_some(idle_for)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::validate::Validated;

    fn cluster(replicas: i32) -> DaskCluster {
        let mut cluster: DaskCluster =
            serde_yaml::from_str(include_str!("../../../crds/tests/fixtures/simplecluster.yaml"))
                .unwrap();
        cluster.metadata.uid = Some("uid".into());
        cluster.metadata.generation = Some(3);
        cluster.spec.worker.replicas = replicas;
        cluster
    }

    fn group(cluster: &DaskCluster, replicas: i32, ready: i32) -> DaskWorkerGroup {
        let mut group = build::default_worker_group(&Validated::unchecked(cluster.clone()));
        group.status = Some(WorkloadStatus {
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            ..Default::default()
        });
        group
    }

    fn seen(scheduler_ready: bool, service_exists: bool) -> Observed {
        Observed {
            scheduler_ready,
            service_exists,
            scheduler_problem: None,
            service_failure: None,
            now: Timestamp::now(),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn troubled(problem: Problem, now: Timestamp) -> Observed {
        Observed { scheduler_problem: Some(problem), now, ..seen(false, true) }
    }

    fn problem(reason: &'static str, message: &str, lasting: bool) -> Problem {
        Problem { reason, message: message.into(), lasting, vague: false, at: None }
    }

    fn get<'a>(status: &'a WorkloadStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn running_needs_a_ready_scheduler_and_its_service() {
        let c = cluster(2);
        let g = group(&c, 2, 2);
        let cases = [
            (seen(true, false), ClusterPhase::Pending, "ServicePending"),
            (seen(false, true), ClusterPhase::Pending, "SchedulerNotReady"),
            (seen(true, true), ClusterPhase::Running, "AllReady"),
        ];
        for (observed, phase, reason) in cases {
            let s = status(&c, &g, observed.clone());
            assert_eq!(s.phase, Some(phase), "{observed:?}");
            assert_eq!(get(&s, "Ready").reason, reason);
        }
    }

    #[test]
    fn counts_come_from_the_default_group() {
        let c = cluster(3);
        let s = status(&c, &group(&c, 3, 1), seen(true, true));
        assert_eq!((s.replicas, s.ready_replicas), (Some(3), Some(1)));
        assert_eq!(s.phase, Some(ClusterPhase::Running), "Running does not wait for workers");
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Ready").reason, "WorkersNotReady");
        assert_eq!(get(&s, "Progressing").status, "True");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            s.selector.as_deref(),
            Some("dask.org/cluster-name=simple,dask.org/workergroup-name=simple-default")
        );
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_times() {
        let mut c = cluster(1);
        let g = group(&c, 1, 1);
        let mut first = status(&c, &g, seen(true, true));
        let long_ago = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        for condition in &mut first.conditions {
            condition.last_transition_time = long_ago.clone();
        }
        c.status = Some(first.clone());
        assert_eq!(status(&c, &g, seen(true, true)), first, "nothing to write");
        // The scheduler goes: Ready and Progressing flip, Degraded does not.
        let second = status(&c, &g, seen(false, true));
        assert_ne!(get(&second, "Ready").last_transition_time, long_ago);
        assert_ne!(get(&second, "Progressing").last_transition_time, long_ago);
        assert_eq!(get(&second, "Degraded").last_transition_time, long_ago);
    }

    #[test]
    fn a_lasting_scheduler_problem_fails_the_cluster_after_the_grace() {
        let mut c = cluster(1);
        let g = group(&c, 1, 0);
        let pull = problem(crate::problems::IMAGE_PULL, "cannot pull image \"x:nope\"", true);
        let first = status(&c, &g, troubled(pull.clone(), at(100)));
        assert_eq!(first.phase, Some(ClusterPhase::Pending), "not at once: it may be a hiccup");
        let scheduler = get(&first, SCHEDULER_READY);
        assert_eq!(
            (scheduler.status.as_str(), scheduler.reason.as_str()),
            ("False", "ImagePullBackOff")
        );
        assert_eq!(scheduler.message, "cannot pull image \"x:nope\"");
        c.status = Some(first);
        let later = status(&c, &g, troubled(pull.clone(), at(100 + FAILED_AFTER_SECONDS - 1)));
        assert_eq!(later.phase, Some(ClusterPhase::Pending));
        let left = grace_left(&later, at(100 + FAILED_AFTER_SECONDS - 1));
        assert_eq!(left, std::time::Duration::from_secs(1), "looked at again when the grace is up");
        assert_eq!(grace_left(&later, at(100)).as_secs(), FAILED_AFTER_SECONDS as u64);
        c.status = Some(later);
        let failed = status(&c, &g, troubled(pull, at(100 + FAILED_AFTER_SECONDS)));
        assert_eq!(failed.phase, Some(ClusterPhase::Failed));
        assert_eq!(get(&failed, "Ready").reason, "SchedulerFailed");
        let degraded = get(&failed, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ImagePullBackOff")
        );
        // Fixed (say, the image now exists): the scheduler runs, so does the cluster.
        c.status = Some(failed);
        let fixed = status(&c, &g, seen(true, true));
        assert_eq!(fixed.phase, Some(ClusterPhase::Running));
        assert_eq!(get(&fixed, SCHEDULER_READY).status, "True");
    }

    #[test]
    fn an_unschedulable_scheduler_is_reported_but_stays_pending() {
        let mut c = cluster(1);
        let g = group(&c, 1, 0);
        let full = problem(crate::problems::UNSCHEDULABLE, "0/3 nodes are available", false);
        c.status = Some(status(&c, &g, troubled(full.clone(), at(100))));
        let s = status(&c, &g, troubled(full, at(100_000)));
        assert_eq!(s.phase, Some(ClusterPhase::Pending), "an autoscaler may add a node");
        assert_eq!(get(&s, SCHEDULER_READY).reason, "Unschedulable");
    }

    #[test]
    fn the_default_groups_worker_condition_is_told_on_the_cluster() {
        let c = cluster(1);
        let mut g = group(&c, 1, 0);
        let oom = condition(WORKERS_READY, false, "OOMKilled", "worker killed", Some(1));
        g.status.as_mut().unwrap().conditions = vec![oom.clone()];
        assert_eq!(get(&status(&c, &g, seen(true, true)), WORKERS_READY), &oom);
    }

    #[test]
    fn an_invalid_cluster_says_which_field() {
        let c = cluster(1);
        let s = invalid(&c, &Invalid::new("spec.worker.replicas", "must not be negative"));
        assert_eq!(s.phase, Some(ClusterPhase::Error));
        let degraded = get(&s, "Degraded");
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "InvalidSpec"));
        assert_eq!(degraded.message, "spec.worker.replicas must not be negative");
    }

    #[test]
    fn idle_timeout() {
        assert_eq!(idle_past_timeout(None, 100.0, 10), None, "busy");
        assert_eq!(idle_past_timeout(Some(95.0), 100.0, 10), None, "not yet");
        assert_eq!(idle_past_timeout(Some(80.0), 100.0, 10), Some(20.0));
        assert_eq!(idle_past_timeout(Some(0.0), 100.0, 0), None, "0 never times out");
    }

    #[test]
    fn a_service_the_api_server_refuses_degrades_the_cluster() {
        let c = cluster(2);
        let refused = Some("services \"x\" is forbidden: exceeded quota".to_string());
        let s = status(
            &c,
            &group(&c, 2, 2),
            Observed { service_failure: refused, ..seen(true, false) },
        );
        let degraded = get(&s, DEGRADED);
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "ApplyFailed"));
        assert!(degraded.message.contains("exceeded quota"), "{}", degraded.message);
        assert_eq!(s.phase, Some(ClusterPhase::Pending));
    }

    #[test]
    fn an_idle_check_failure_is_told_once_and_its_recovery_once() {
        let mut c = cluster(1);
        c.spec.idle_timeout = 60;
        let running = status(&c, &group(&c, 1, 1), seen(true, true));
        assert_eq!(with_idle_check(&running, Ok(()), Some(3)), None, "no news, no write");
        let down = with_idle_check(&running, Err("HTTP 404".into()), Some(3)).unwrap();
        let check = get(&down, IDLE_CHECK);
        assert_eq!(
            (check.status.as_str(), check.reason.as_str()),
            ("False", "SchedulerUnavailable")
        );
        assert_eq!(with_idle_check(&down, Err("timed out".into()), Some(3)), None);
        // The next reconcile's status keeps it, so it is not told again.
        c.status = Some(down.clone());
        let next = status(&c, &group(&c, 1, 1), seen(true, true));
        assert_eq!(get(&next, IDLE_CHECK), check);
        let up = with_idle_check(&next, Ok(()), Some(3)).unwrap();
        assert_eq!(get(&up, IDLE_CHECK).status, "True");
    }
}

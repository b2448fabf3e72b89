//! The DaskJob state machine, as a pure function of what exists:
//! (none) → ClusterCreated → Running → Successful | Failed.

use dask_crds::common::{condition, keep_transition_times};
use dask_crds::conditions::{CLUSTER_READY, DEGRADED, reason};
use dask_crds::{DaskJob, DaskJobStatus, JobPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::validate::Invalid;
use k8s_openapi::api::core::v1::Pod;

/// The runner pod as the job sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// Not created (yet).
    Absent,
    /// Created, not running yet (Pending, or a phase not reported yet).
    Starting,
    Running,
    Succeeded,
    Failed,
}

impl Runner {
    pub fn of(pod: Option<&Pod>) -> Self {
        let Some(pod) = pod else { return Runner::Absent };
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Runner::Running,
            Some("Succeeded") => Runner::Succeeded,
            Some("Failed") => Runner::Failed,
            _ => Runner::Starting,
        }
    }
}

/// What one reconcile of a job does.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStep {
    /// The job's status after this step.
    pub status: DaskJobStatus,
    /// Create the runner pod (its cluster is running and it does not exist).
    pub start_runner: bool,
    /// The runner finished: its cluster goes.
    pub delete_cluster: bool,
    /// Normal Events to publish: (reason, note).
    pub events: Vec<(&'static str, String)>,
}

/// The names a job's status records.
pub struct Names<'a> {
    pub cluster: &'a str,
    pub runner: &'a str,
}

/// The next step of a job whose cluster exists (it was just applied): the
/// runner starts once the cluster runs, and the job follows the runner.
/// `now` stamps `startTime` and `endTime`.
pub fn job_transition(
    status: &DaskJobStatus,
    runner: Runner,
    cluster_running: bool,
    names: Names,
    now: &str,
) -> JobStep {
    let mut status = status.clone();
    let mut events = Vec::new();
    status.cluster_name = Some(names.cluster.into());
    if status.job_status.is_none() {
        status.job_status = Some(JobPhase::ClusterCreated);
        events.push(("ClusterCreated", format!("Created DaskCluster {}", names.cluster)));
    }
    // The runner starts once its scheduler is there to connect to.
    let start_runner = runner == Runner::Absent && cluster_running;
    let runner = if start_runner { Runner::Starting } else { runner };
    if runner != Runner::Absent {
        status.job_runner_pod_name = Some(names.runner.into());
    }
    let mut delete_cluster = false;
    match runner {
        Runner::Running if status.job_status != Some(JobPhase::Running) => {
            status.job_status = Some(JobPhase::Running);
            status.start_time = Some(now.into());
        }
        Runner::Succeeded | Runner::Failed => {
            let (outcome, reason, phase) = match runner {
                Runner::Succeeded => (JobPhase::Successful, "Successful", "Succeeded"),
                _ => (JobPhase::Failed, "Failed", "Failed"),
            };
            status.job_status = Some(outcome);
            status.start_time.get_or_insert_with(|| now.into());
            status.end_time = Some(now.into());
            let note =
                format!("Runner {} {phase}; deleting DaskCluster {}", names.runner, names.cluster);
            events.push((reason, note));
            delete_cluster = true;
        }
        _ => {}
    }
    JobStep { status, start_runner, delete_cluster, events }
}

/// `status` with the conditions of a valid job whose cluster is (or is not)
/// running: ClusterReady says why its runner waits, or that it is done.
pub fn with_conditions(
    job: &DaskJob,
    status: DaskJobStatus,
    cluster_running: bool,
) -> DaskJobStatus {
    let generation = job.metadata.generation;
    let cluster = job.name_any();
    let (ready, why, message) = if status.is_finished() {
        (false, "JobFinished", format!("the runner finished; DaskCluster {cluster} is deleted"))
    } else if cluster_running {
        (true, "ClusterRunning", format!("DaskCluster {cluster} is running"))
    } else {
        (false, "ClusterNotRunning", format!("DaskCluster {cluster} is not running yet"))
    };
    let conditions = vec![
        condition(DEGRADED, false, reason::VALID, "", generation),
        condition(CLUSTER_READY, ready, why, message, generation),
    ];
    DaskJobStatus { conditions: keep_transition_times(conditions, previous(job)), ..status }
}

/// The status of a job whose spec is invalid: its phase is its runner's and
/// stays (Failed would end it for good, even once fixed); Degraded says why.
pub fn invalid(job: &DaskJob, invalid: &Invalid) -> DaskJobStatus {
    let generation = job.metadata.generation;
    let degraded = condition(DEGRADED, true, reason::INVALID_SPEC, invalid.to_string(), generation);
    let mut conditions = keep_transition_times(vec![degraded], previous(job));
    conditions.extend(previous(job).iter().filter(|c| c.type_ != DEGRADED).cloned());
    DaskJobStatus { conditions, ..job.status.clone().unwrap_or_default() }
}

fn previous(job: &DaskJob) -> &[Condition] {
    job.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:10Z";
    const EARLIER: &str = "2026-01-01T00:00:00Z";

    fn step(status: &DaskJobStatus, runner: Runner, cluster_running: bool) -> JobStep {
        job_transition(
            status,
            runner,
            cluster_running,
            Names { cluster: "j", runner: "j-runner-1" },
            NOW,
        )
    }

    fn at(phase: JobPhase) -> DaskJobStatus {
        DaskJobStatus {
            job_status: Some(phase),
            cluster_name: Some("j".into()),
            job_runner_pod_name: Some("j-runner-1".into()),
            start_time: (phase == JobPhase::Running).then(|| EARLIER.into()),
            end_time: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_new_job_records_its_cluster() {
        let s = step(&DaskJobStatus::default(), Runner::Absent, false);
        assert_eq!(s.status.job_status, Some(JobPhase::ClusterCreated));
        assert_eq!(s.status.cluster_name.as_deref(), Some("j"));
        assert_eq!(s.status.job_runner_pod_name, None);
        assert!(!s.start_runner && !s.delete_cluster);
        assert_eq!(s.events, [("ClusterCreated", "Created DaskCluster j".to_string())]);
    }

    #[test]
    fn the_runner_waits_for_a_running_cluster() {
        let created = step(&DaskJobStatus::default(), Runner::Absent, false).status;
        let waiting = step(&created, Runner::Absent, false);
        assert!(!waiting.start_runner);
        assert_eq!(waiting.status, created, "nothing to write while the cluster starts");
        assert!(waiting.events.is_empty());

        let starting = step(&created, Runner::Absent, true);
        assert!(starting.start_runner);
        assert_eq!(starting.status.job_runner_pod_name.as_deref(), Some("j-runner-1"));
        assert_eq!(starting.status.job_status, Some(JobPhase::ClusterCreated));
    }

    #[test]
    fn a_starting_runner_changes_nothing() {
        let created = at(JobPhase::ClusterCreated);
        let s = step(&created, Runner::Starting, true);
        assert_eq!(s.status, created);
        assert!(!s.start_runner && !s.delete_cluster && s.events.is_empty());
    }

    #[test]
    fn the_clock_starts_once_when_the_runner_is_first_seen_running_or_done() {
        // Done already: it ran and finished between two looks (the cluster may be gone).
        let seen = [
            (Runner::Running, true, JobPhase::Running),
            (Runner::Succeeded, false, JobPhase::Successful),
        ];
        for (runner, cluster_running, phase) in seen {
            let s = step(&at(JobPhase::ClusterCreated), runner, cluster_running);
            assert_eq!(s.status.job_status, Some(phase));
            assert_eq!(s.status.start_time.as_deref(), Some(NOW), "{runner:?}");
        }
        let again = step(&at(JobPhase::Running), Runner::Running, true);
        assert_eq!(again.status, at(JobPhase::Running), "startTime is not moved");
    }

    #[test]
    fn a_finished_runner_ends_the_job_and_deletes_the_cluster() {
        for (runner, phase, reason) in [
            (Runner::Succeeded, JobPhase::Successful, "Successful"),
            (Runner::Failed, JobPhase::Failed, "Failed"),
        ] {
            let s = step(&at(JobPhase::Running), runner, true);
            assert_eq!(s.status.job_status, Some(phase));
            assert_eq!(s.status.start_time.as_deref(), Some(EARLIER));
            assert_eq!(s.status.end_time.as_deref(), Some(NOW));
            assert!(s.delete_cluster && !s.start_runner);
            assert_eq!(s.events.len(), 1);
            assert_eq!(s.events[0].0, reason);
            assert!(s.events[0].1.starts_with("Runner j-runner-1 "), "{}", s.events[0].1);
            assert!(phase.is_finished());
        }
    }

    #[test]
    fn phases_before_the_end_are_not_finished() {
        for phase in [JobPhase::JobCreated, JobPhase::ClusterCreated, JobPhase::Running] {
            assert!(!phase.is_finished(), "{phase:?}");
        }
    }
}

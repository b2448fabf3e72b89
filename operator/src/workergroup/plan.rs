//! What a worker group's reconcile should do, decided from its pods alone:
//! no I/O, so every subtle case is a fixture test.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use dask_crds::common::{condition, keep_transition_times};
use dask_crds::conditions::{DEGRADED, reason};
use dask_crds::labels::TEMPLATE_HASH;
use dask_crds::{DaskWorkerGroup, WorkloadStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::build;
use crate::problems::{Problem, pod_problems, problem_condition};

use crate::scheduler_api::WorkerInfo;
/// The condition on a group (and its cluster) telling why workers do not run.
pub use dask_crds::conditions::WORKERS_READY;

/// A worker pod the plan acts on: its name, and its IP for finding its
/// worker in the scheduler when the names do not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPod {
    pub name: String,
    pub ip: Option<String>,
}

/// One reconcile's actions, in the order they are applied, and the status
/// the pods will have after them.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerPlan {
    /// Finished pods (Succeeded or Failed): they never run again, so they
    /// are deleted, and `create` replaces them.
    pub finished: Vec<String>,
    /// Pods to create from the current template.
    pub create: usize,
    /// Surplus pods that are not ready: deleted at once (they hold no data).
    pub delete: Vec<String>,
    /// Surplus ready pods: retired through the scheduler (their results move
    /// to the remaining workers), then deleted.
    pub retire: Vec<WorkerPod>,
    /// Pods of an older template, deleted once the current template's pods
    /// are all ready.
    pub roll: Vec<String>,
    pub status: WorkloadStatus,
    /// Nothing to do and nothing under way: the next look can wait.
    pub settled: bool,
}

impl WorkerPlan {
    /// Pods removed by scaling down.
    pub fn scaled_down(&self) -> usize {
        self.delete.len() + self.retire.len()
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A pod that will never run again: it is replaced, not counted.
fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn worker_pod(pod: &Pod) -> WorkerPod {
    WorkerPod { name: pod.name_any(), ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()) }
}

/// The plan for `group`, whose pods are `pods` (all of them, as listed) and
/// whose current template hashes to `template_hash`.
pub fn plan(group: &DaskWorkerGroup, pods: &[Pod], template_hash: &str) -> WorkerPlan {
    let desired = group.spec.worker.replicas.max(0) as usize;
    // Pods already being deleted are gone as far as the plan is concerned.
    let (finished, live): (Vec<&Pod>, Vec<&Pod>) = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .partition(|p| is_finished(p));
    let (current, stale): (Vec<&Pod>, Vec<&Pod>) = live
        .into_iter()
        .partition(|p| p.labels().get(TEMPLATE_HASH).map(String::as_str) == Some(template_hash));
    let current_ready = current.iter().filter(|p| is_ready(p)).count();

    // Scale down: unready pods first (they hold no data), then the youngest.
    let mut surplus = current.clone();
    surplus.sort_by_key(|p| {
        (is_ready(p), Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)))
    });
    surplus.truncate(current.len().saturating_sub(desired));
    let (retire, delete): (Vec<&Pod>, Vec<&Pod>) = surplus.into_iter().partition(|p| is_ready(p));

    // Roll: stale pods go once the new template's pods are all ready.
    let rolled = !stale.is_empty() && current_ready >= desired;
    let (stale_left, stale_ready) =
        if rolled { (0, 0) } else { (stale.len(), stale.iter().filter(|p| is_ready(p)).count()) };
    let status = WorkloadStatus {
        replicas: Some((desired + stale_left) as i32),
        ready_replicas: Some((current_ready.min(desired) + stale_ready) as i32),
        selector: Some(build::worker_selector(group)),
        observed_generation: group.metadata.generation,
        ..Default::default()
    };
    let create = desired.saturating_sub(current.len());
    let acts = !finished.is_empty() || create > 0 || current.len() > desired || rolled;
    WorkerPlan {
        finished: finished.iter().map(|p| p.name_any()).collect(),
        create,
        delete: delete.iter().map(|p| p.name_any()).collect(),
        retire: retire.into_iter().map(worker_pod).collect(),
        roll: if rolled { stale.iter().map(|p| p.name_any()).collect() } else { Vec::new() },
        status,
        settled: !acts && stale.is_empty() && current_ready >= desired,
    }
}

/// The group's `WorkersReady` condition: the commonest problem of its
/// pods (an OOM kill counts for a while after the worker restarted), or
/// whether the wanted workers are ready.
pub fn workers_condition(
    group: &DaskWorkerGroup,
    pods: &[Pod],
    ready: i32,
    now: Timestamp,
) -> Condition {
    let desired = group.spec.worker.replicas.max(0);
    let problems: Vec<Problem> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| pod_problems(p).into_iter().find(|p| p.current(now)))
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &problems {
        *counts.entry(p.reason).or_default() += 1;
    }
    let commonest = counts.iter().max_by_key(|(_, n)| **n).map(|(reason, n)| (*reason, *n));
    let told = commonest.and_then(|(reason, n)| {
        let example = problems.iter().find(|p| p.reason == reason)?;
        let message = format!("{n} of {} worker pods: {}", pods.len(), example.message);
        Some(Problem { message, ..example.clone() })
    });
    let ok = if ready >= desired {
        (true, "AllReady", format!("{ready}/{desired} workers ready"))
    } else {
        (false, dask_crds::conditions::reason::STARTING, format!("{ready}/{desired} workers ready"))
    };
    let old = group.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    problem_condition(WORKERS_READY, told.as_ref(), ok, old, group.metadata.generation, now)
}

/// A valid group's conditions: its workers', and Degraded False (an invalid
/// group is told by [`crate::report::InvalidStatus`] instead).
pub fn group_conditions(group: &DaskWorkerGroup, workers: Condition) -> Vec<Condition> {
    let old = group.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let valid = condition(DEGRADED, false, reason::VALID, "", group.metadata.generation);
    let mut conditions = vec![workers];
    conditions.extend(keep_transition_times(vec![valid], old));
    conditions
}

/// The scheduler addresses of `pods`' workers: by worker name (DASK_WORKER_NAME
/// is the pod's name) or by pod IP. Only these are retired, never another
/// group's workers.
pub fn retire_addresses(workers: &[WorkerInfo], pods: &[WorkerPod]) -> Vec<String> {
    let by_name: BTreeMap<&str, &str> =
        workers.iter().map(|w| (w.name.as_str(), w.address.as_str())).collect();
    pods.iter()
        .filter_map(|pod| {
            if let Some(address) = by_name.get(pod.name.as_str()) {
                return Some(address.to_string());
            }
            let ip = pod.ip.as_deref()?;
            let host = format!("://{ip}:");
            workers.iter().find(|w| w.address.contains(&host)).map(|w| w.address.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const HASH: &str = "current";

    fn group(replicas: i32) -> DaskWorkerGroup {
        let mut group = DaskWorkerGroup::new("g", Default::default());
        group.spec.cluster = "c".into();
        group.spec.worker.replicas = replicas;
        group.metadata.generation = Some(4);
        group
    }

    /// A pod of template `hash`, created `age` seconds after the epoch.
    fn pod(name: &str, hash: &str, age: i64, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.labels = Some([(TEMPLATE_HASH.to_string(), hash.to_string())].into());
        pod.metadata.creation_timestamp = Some(Time(Timestamp::from_second(age).unwrap()));
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(format!("10.0.0.{age}")),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    fn with_phase(mut pod: Pod, phase: &str) -> Pod {
        pod.status.as_mut().unwrap().phase = Some(phase.into());
        pod
    }

    fn counts(plan: &WorkerPlan) -> (Option<i32>, Option<i32>) {
        (plan.status.replicas, plan.status.ready_replicas)
    }

    #[test]
    fn an_empty_group_is_created() {
        let plan = plan(&group(3), &[], HASH);
        assert_eq!(plan.create, 3);
        assert!(plan.delete.is_empty() && plan.retire.is_empty() && plan.roll.is_empty());
        assert_eq!(counts(&plan), (Some(3), Some(0)), "status counts the pods being created");
        assert_eq!(
            plan.status.selector.as_deref(),
            Some("dask.org/cluster-name=c,dask.org/workergroup-name=g")
        );
        assert_eq!(plan.status.observed_generation, Some(4));
        assert!(!plan.settled);
    }

    #[test]
    fn a_group_at_its_count_is_settled() {
        let pods = [pod("a", HASH, 1, true), pod("b", HASH, 2, true)];
        let plan = plan(&group(2), &pods, HASH);
        assert_eq!(plan.create, 0);
        assert_eq!(plan.scaled_down(), 0);
        assert_eq!(counts(&plan), (Some(2), Some(2)));
        assert!(plan.settled);
        let unready = [pod("a", HASH, 1, true), pod("b", HASH, 2, false)];
        let plan = super::plan(&group(2), &unready, HASH);
        assert_eq!(counts(&plan), (Some(2), Some(1)));
        assert!(!plan.settled, "an unready pod is looked at again soon");
    }

    #[test]
    fn finished_pods_are_deleted_and_replaced() {
        let pods = [pod("a", HASH, 1, true), with_phase(pod("b", HASH, 2, false), "Failed")];
        let plan = plan(&group(2), &pods, HASH);
        assert_eq!(plan.finished, ["b"]);
        assert_eq!(plan.create, 1);
        assert_eq!(counts(&plan), (Some(2), Some(1)));
        let succeeded = [with_phase(pod("a", HASH, 1, false), "Succeeded")];
        assert_eq!(super::plan(&group(1), &succeeded, HASH).finished, ["a"]);
    }

    #[test]
    fn pods_being_deleted_are_replaced_not_counted() {
        let mut leaving = pod("a", HASH, 1, true);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(9).unwrap()));
        let plan = plan(&group(1), &[leaving], HASH);
        assert_eq!(plan.create, 1);
        assert!(plan.finished.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn scale_down_takes_unready_pods_first_then_the_youngest() {
        let pods = [
            pod("old-ready", HASH, 1, true),
            pod("young-ready", HASH, 5, true),
            pod("mid-ready", HASH, 3, true),
            pod("unready", HASH, 2, false),
        ];
        let plan = plan(&group(2), &pods, HASH);
        assert_eq!(plan.delete, ["unready"], "an unready pod holds no data: deleted, not retired");
        let retired: Vec<&str> = plan.retire.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(retired, ["young-ready"]);
        assert_eq!(plan.retire[0].ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(plan.create, 0);
        assert_eq!(plan.scaled_down(), 2);
        assert_eq!(counts(&plan), (Some(2), Some(2)));
        assert!(!plan.settled);
    }

    #[test]
    fn scale_down_of_ready_pods_retires_them_youngest_first() {
        let pods = [pod("a", HASH, 1, true), pod("b", HASH, 2, true), pod("c", HASH, 3, true)];
        let plan = plan(&group(1), &pods, HASH);
        assert!(plan.delete.is_empty());
        let retired: Vec<&str> = plan.retire.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(retired, ["c", "b"]);
        let to_zero = super::plan(&group(0), &pods, HASH);
        assert_eq!(to_zero.retire.len(), 3);
        assert_eq!(counts(&to_zero), (Some(0), Some(0)));
    }

    #[test]
    fn a_roll_waits_for_the_new_template_to_be_ready() {
        // Step 1: two stale pods, none of the new template: create two, keep the old.
        let stale = [pod("old-1", "old", 1, true), pod("old-2", "old", 2, true)];
        let plan1 = plan(&group(2), &stale, HASH);
        assert_eq!(plan1.create, 2);
        assert!(plan1.roll.is_empty(), "the old pods serve until the new ones are ready");
        assert_eq!(counts(&plan1), (Some(4), Some(2)));

        // Step 2: the new pods exist but one is not ready yet: still no roll.
        let mut pods = stale.to_vec();
        pods.extend([pod("new-1", HASH, 3, true), pod("new-2", HASH, 4, false)]);
        let plan2 = plan(&group(2), &pods, HASH);
        assert_eq!(plan2.create, 0);
        assert!(plan2.roll.is_empty());
        assert_eq!(counts(&plan2), (Some(4), Some(3)));
        assert!(!plan2.settled);

        // Step 3: all new pods ready: every stale pod goes at once.
        pods[3] = pod("new-2", HASH, 4, true);
        let plan3 = plan(&group(2), &pods, HASH);
        assert_eq!(plan3.roll, ["old-1", "old-2"]);
        assert_eq!(counts(&plan3), (Some(2), Some(2)), "status after the roll");
        assert!(!plan3.settled, "a roll is a change: look again soon");

        // Step 4: only the new template's pods are left.
        let plan4 = plan(&group(2), &pods[2..], HASH);
        assert!(plan4.settled);
    }

    #[test]
    fn a_roll_and_a_scale_down_together() {
        let pods =
            [pod("old", "old", 1, true), pod("new-1", HASH, 2, true), pod("new-2", HASH, 3, true)];
        let plan = plan(&group(1), &pods, HASH);
        let retired: Vec<&str> = plan.retire.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(retired, ["new-2"]);
        assert_eq!(plan.roll, ["old"]);
        assert_eq!(counts(&plan), (Some(1), Some(1)));
    }

    #[test]
    fn retirement_finds_workers_by_name_then_by_ip_and_never_another_groups() {
        let workers = [
            WorkerInfo { name: "g-worker-a".into(), address: "tcp://10.0.0.1:4000".into() },
            WorkerInfo { name: "renamed".into(), address: "tcp://10.0.0.2:4000".into() },
            WorkerInfo { name: "other-group".into(), address: "tcp://10.0.0.3:4000".into() },
        ];
        let pods = [
            WorkerPod { name: "g-worker-a".into(), ip: Some("10.0.0.9".into()) },
            WorkerPod { name: "g-worker-b".into(), ip: Some("10.0.0.2".into()) },
            WorkerPod { name: "g-worker-c".into(), ip: None },
        ];
        assert_eq!(
            retire_addresses(&workers, &pods),
            ["tcp://10.0.0.1:4000", "tcp://10.0.0.2:4000"]
        );
        // 10.0.0.2 must not match 10.0.0.20.
        let pod = [WorkerPod { name: "x".into(), ip: Some("10.0.0.2".into()) }];
        let similar = [WorkerInfo { name: "y".into(), address: "tcp://10.0.0.20:1".into() }];
        assert!(retire_addresses(&similar, &pod).is_empty());
    }

    #[test]
    fn the_worker_condition_tells_the_commonest_problem() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus,
        };
        let now = Timestamp::from_second(10_000).unwrap();
        let oom = |name: &str| {
            let mut p = pod(name, HASH, 1, true);
            let killed = ContainerStateTerminated {
                exit_code: 137,
                reason: Some("OOMKilled".into()),
                finished_at: Some(Time(Timestamp::from_second(9_990).unwrap())),
                ..Default::default()
            };
            p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
                name: "worker".into(),
                ready: true,
                restart_count: 1,
                last_state: Some(ContainerState { terminated: Some(killed), ..Default::default() }),
                ..Default::default()
            }]);
            p
        };
        let pods = [oom("a"), oom("b"), pod("c", HASH, 3, true)];
        let c = workers_condition(&group(3), &pods, 3, now);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "OOMKilled"));
        assert!(
            c.message.starts_with("2 of 3 worker pods: container worker of pod a was killed"),
            "{}",
            c.message
        );
        // Long after the kill, the restarted workers are fine.
        let later = Timestamp::from_second(9_990 + crate::problems::RECENT_SECONDS).unwrap();
        let c = workers_condition(&group(3), &pods, 3, later);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "AllReady"));
        let c = workers_condition(&group(3), &[], 0, now);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Starting"));
    }
}

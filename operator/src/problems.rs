//! Why a pod is not running, read from its status alone (no I/O): what the
//! kubelet and the kube-scheduler say, turned into a reason and a message a
//! user can act on. The cluster and worker-group controllers make conditions
//! and Warning Events of them.

use dask_crds::common::condition;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Longest message kept of what the kubelet or the scheduler said: enough
/// for a registry's or a node filter's answer, bounded for conditions.
const MAX_DETAIL: usize = 600;

/// The condition reasons, as `kubectl describe` shows them.
pub const UNSCHEDULABLE: &str = "Unschedulable";
pub const IMAGE_PULL: &str = "ImagePullBackOff";
pub const INVALID_IMAGE: &str = "InvalidImageName";
pub const CONTAINER_CONFIG: &str = "CreateContainerConfigError";
pub const INIT_FAILED: &str = "InitContainerFailed";
pub const CRASH_LOOP: &str = "CrashLoopBackOff";
pub const OOM_KILLED: &str = "OOMKilled";
pub const EXITED: &str = "ContainerExited";

/// Every reason above: a condition that takes one of them is news (a
/// Warning Event), once per change of reason.
pub const REASONS: [&str; 8] = [
    UNSCHEDULABLE,
    IMAGE_PULL,
    INVALID_IMAGE,
    CONTAINER_CONFIG,
    INIT_FAILED,
    CRASH_LOOP,
    OOM_KILLED,
    EXITED,
];

/// How long a past OOM kill of a container that runs again is reported.
pub const RECENT_SECONDS: i64 = 600;

/// One thing wrong with a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// One of the reasons above.
    pub reason: &'static str,
    /// What happened, naming the pod, the container and (for pulls) the image.
    pub message: String,
    /// Waiting does not help: a bad image, a crashing or killed container, a
    /// failed init. Unschedulable is not: an autoscaler may add a node.
    pub lasting: bool,
    /// The message says less than an earlier one of the same reason may have
    /// (the kubelet's "Back-off pulling image" after the pull's real error).
    pub vague: bool,
    /// When a container that has since restarted stopped: a past problem
    /// (an OOM kill of a worker that runs again) matters for a while only.
    pub at: Option<Timestamp>,
}

impl Problem {
    fn new(reason: &'static str, message: String, lasting: bool) -> Self {
        Self { reason, message, lasting, vague: false, at: None }
    }
}

impl Problem {
    /// Still worth reporting at `now`: a past kill only for [`RECENT_SECONDS`].
    pub fn current(&self, now: Timestamp) -> bool {
        self.at.is_none_or(|at| now.duration_since(at).as_secs() < RECENT_SECONDS)
    }
}

/// A condition of `type_` telling `problem` (status False), or else `ok`
/// (status, reason, message). Against the `old` conditions: the same reason
/// keeps its time, so `lastTransitionTime` says since when this reason holds
/// (the grace before a cluster is Failed counts from it); a vague message
/// keeps the better one said before under the same reason.
pub fn problem_condition(
    type_: &str,
    problem: Option<&Problem>,
    ok: (bool, &str, String),
    old: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (status, reason, mut message) = match problem {
        Some(p) => (false, p.reason, p.message.clone()),
        None => ok,
    };
    let mut condition = condition(type_, status, reason, String::new(), generation);
    condition.last_transition_time = Time(now);
    let same = old.iter().find(|o| {
        o.type_ == condition.type_ && o.status == condition.status && o.reason == condition.reason
    });
    if let Some(same) = same {
        condition.last_transition_time = same.last_transition_time.clone();
        if problem.is_some_and(|p| p.vague) {
            message = same.message.clone();
        }
    }
    condition.message = message;
    condition
}

/// The conditions of `new` that have just taken a problem reason (their
/// `old` namesake had another one, or none): each is one Warning Event, so
/// a crash loop or a pull that keeps failing is one Event, not a storm.
pub fn new_problems<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|c| c.status == "False" && REASONS.contains(&c.reason.as_str()))
        .filter(|c| !old.iter().any(|o| o.type_ == c.type_ && o.reason == c.reason))
        .collect()
}

/// The conditions of `new` that have just taken one of `reasons` (their
/// `old` namesake had another reason, or there was none): news worth one
/// Warning Event each, not one per reconcile.
pub fn newly_told<'a>(
    old: &[Condition],
    new: &'a [Condition],
    reasons: &[&str],
) -> Vec<&'a Condition> {
    new.iter()
        .filter(|c| reasons.contains(&c.reason.as_str()))
        .filter(|c| !old.iter().any(|o| o.type_ == c.type_ && o.reason == c.reason))
        .collect()
}

/// Everything wrong with `pod`, most telling first: scheduling, then init
/// containers (nothing else starts before them), then containers.
pub fn pod_problems(pod: &Pod) -> Vec<Problem> {
    let name = pod.name_any();
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let mut problems = Vec::new();
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        let said = detail(condition.message.as_deref().unwrap_or("no node fits it"));
        problems.push(Problem::new(
            UNSCHEDULABLE,
            format!("pod {name} cannot be scheduled: {said}"),
            false,
        ));
    }
    for container in status.init_container_statuses.iter().flatten() {
        // An init container's crash loop is its failure, told as one.
        let cannot_start = waiting_problem(&name, container)
            .filter(|p| ![CRASH_LOOP, OOM_KILLED, EXITED].contains(&p.reason));
        if let Some(problem) = cannot_start {
            problems.push(problem);
        } else if let Some((code, why)) = failed_exit(container) {
            problems.push(Problem::new(
                INIT_FAILED,
                format!(
                    "init container {} of pod {name} failed: {}",
                    container.name,
                    exit_text(code, &why)
                ),
                true,
            ));
        }
    }
    for container in status.container_statuses.iter().flatten() {
        if let Some(problem) = waiting_problem(&name, container) {
            problems.push(problem);
        } else if let Some(problem) = exit_problem(&name, container) {
            problems.push(problem);
        }
    }
    problems
}

/// A container the kubelet cannot start: its image, or its configuration.
fn waiting_problem(pod: &str, container: &ContainerStatus) -> Option<Problem> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let said = detail(waiting.message.as_deref().unwrap_or_default());
    let (c, image) = (&container.name, &container.image);
    let with = |text: String| if said.is_empty() { text } else { format!("{text}: {said}") };
    let problem = match waiting.reason.as_deref()? {
        "ErrImagePull" | "ImagePullBackOff" => Problem {
            vague: waiting.reason.as_deref() == Some("ImagePullBackOff"),
            ..Problem::new(
                IMAGE_PULL,
                with(format!("cannot pull image \"{image}\" for container {c} of pod {pod}")),
                true,
            )
        },
        "InvalidImageName" | "ErrImageNeverPull" => Problem::new(
            INVALID_IMAGE,
            with(format!("cannot use image \"{image}\" for container {c} of pod {pod}")),
            true,
        ),
        "CreateContainerConfigError" | "CreateContainerError" => Problem::new(
            CONTAINER_CONFIG,
            with(format!("cannot create container {c} of pod {pod}")),
            true,
        ),
        // The back-off after a crash: what the crash was is its last state.
        "CrashLoopBackOff" => {
            return exit_problem(pod, container).or_else(|| {
                Some(Problem::new(
                    CRASH_LOOP,
                    with(format!("container {c} of pod {pod} keeps exiting")),
                    true,
                ))
            });
        }
        _ => return None,
    };
    Some(problem)
}

/// A container that stopped: killed for its memory, exited with an error
/// (and is restarted: a crash loop), or exited for good.
fn exit_problem(pod: &str, container: &ContainerStatus) -> Option<Problem> {
    let c = &container.name;
    let state = container.state.as_ref();
    let (terminated, restarted) = match state.and_then(|s| s.terminated.as_ref()) {
        Some(now) => (now, false),
        None => (container.last_state.as_ref()?.terminated.as_ref()?, true),
    };
    let at = terminated.finished_at.as_ref().map(|t| t.0);
    let restarts = container.restart_count;
    let again = if restarted { format!(" (restarted {restarts} times)") } else { String::new() };
    if terminated.reason.as_deref() == Some("OOMKilled") {
        let message = format!(
            "container {c} of pod {pod} was killed for exceeding its memory limit (OOMKilled){again}"
        );
        return Some(Problem {
            at: restarted.then_some(at).flatten(),
            ..Problem::new(OOM_KILLED, message, true)
        });
    }
    let waiting_crash = state
        .and_then(|s| s.waiting.as_ref())
        .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
    // A clean exit is a problem only when the kubelet calls it a crash loop
    // (a worker retired by its scheduler exits 0 and is done).
    if terminated.exit_code == 0 && !waiting_crash {
        return None;
    }
    // A restarted container that runs and is ready again has recovered.
    if restarted && !waiting_crash && container.ready {
        return None;
    }
    let why = terminated.message.as_deref().or(terminated.reason.as_deref()).unwrap_or_default();
    let exit = exit_text(terminated.exit_code, why);
    Some(if restarted {
        Problem::new(CRASH_LOOP, format!("container {c} of pod {pod} {exit}{again}"), true)
    } else {
        Problem::new(EXITED, format!("container {c} of pod {pod} {exit}"), true)
    })
}

/// An init container's failed exit: its code and why.
fn failed_exit(container: &ContainerStatus) -> Option<(i32, String)> {
    let state = container.state.as_ref();
    let terminated = state
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| container.last_state.as_ref()?.terminated.as_ref())?;
    let why = terminated.message.as_deref().or(terminated.reason.as_deref()).unwrap_or_default();
    (terminated.exit_code != 0).then(|| (terminated.exit_code, why.to_string()))
}

fn exit_text(code: i32, why: &str) -> String {
    let why = detail(why);
    if why.is_empty() {
        format!("exited with code {code}")
    } else {
        format!("exited with code {code} ({why})")
    }
}

/// `text` on one line, bounded.
fn detail(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_DETAIL {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_DETAIL).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodCondition, PodStatus,
    };

    fn pod(status: PodStatus) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.status = Some(status);
        pod
    }

    fn container(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: "ghcr.io/dask/dask:nope".into(),
            state: Some(state),
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: (!message.is_empty()).then(|| message.into()),
            }),
            ..Default::default()
        }
    }

    fn terminated(code: i32, reason: &str) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            finished_at: Some(Time(Timestamp::from_second(1_000).unwrap())),
            ..Default::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }
    }

    fn containers(statuses: Vec<ContainerStatus>) -> Pod {
        pod(PodStatus { container_statuses: Some(statuses), ..Default::default() })
    }

    #[test]
    fn a_healthy_or_starting_pod_has_none() {
        assert!(pod_problems(&Pod::default()).is_empty());
        let mut ready = container("scheduler", running());
        ready.ready = true;
        assert!(pod_problems(&containers(vec![ready])).is_empty());
        let creating = container("scheduler", waiting("ContainerCreating", ""));
        assert!(pod_problems(&containers(vec![creating])).is_empty());
    }

    #[test]
    fn a_bad_image_names_the_image_and_the_registrys_answer() {
        let pull = container(
            "scheduler",
            waiting("ErrImagePull", "rpc error: code = NotFound\n desc = manifest unknown"),
        );
        let problems = pod_problems(&containers(vec![pull]));
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.reason, p.lasting, p.vague), (IMAGE_PULL, true, false));
        assert_eq!(
            p.message,
            "cannot pull image \"ghcr.io/dask/dask:nope\" for container scheduler of pod p: rpc error: code = NotFound desc = manifest unknown"
        );
        let backoff = container("scheduler", waiting("ImagePullBackOff", "Back-off pulling image"));
        let p = &pod_problems(&containers(vec![backoff]))[0];
        assert_eq!((p.reason, p.vague), (IMAGE_PULL, true), "same reason, less said");
        let invalid = container("scheduler", waiting("InvalidImageName", ""));
        assert_eq!(pod_problems(&containers(vec![invalid]))[0].reason, INVALID_IMAGE);
    }

    #[test]
    fn unschedulable_carries_the_schedulers_message_and_may_resolve() {
        let status = PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let problems = pod_problems(&pod(status));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, UNSCHEDULABLE);
        assert!(!problems[0].lasting, "an autoscaler may add a node");
        assert_eq!(
            problems[0].message,
            "pod p cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu."
        );
    }

    #[test]
    fn a_crash_loop_says_how_the_container_exited() {
        let mut crashing = container("scheduler", waiting("CrashLoopBackOff", "back-off 10s"));
        crashing.restart_count = 2;
        crashing.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                message: Some("ImportError: no module named nope".into()),
                ..terminated(1, "Error")
            }),
            ..Default::default()
        });
        let p = &pod_problems(&containers(vec![crashing.clone()]))[0];
        assert_eq!(p.reason, CRASH_LOOP);
        assert_eq!(
            p.message,
            "container scheduler of pod p exited with code 1 (ImportError: no module named nope) (restarted 2 times)"
        );
        assert_eq!(p.at, None, "a crash loop is now, not past");
        // Between two crashes it runs, not ready: still the same crash loop.
        crashing.state = Some(running());
        assert_eq!(pod_problems(&containers(vec![crashing.clone()]))[0].reason, CRASH_LOOP);
        // Ready again: recovered.
        crashing.ready = true;
        assert!(pod_problems(&containers(vec![crashing])).is_empty());
    }

    #[test]
    fn an_oom_kill_is_reported_even_after_the_restart() {
        let mut killed = container("worker", running());
        killed.ready = true;
        killed.restart_count = 1;
        killed.last_state = Some(ContainerState {
            terminated: Some(terminated(137, "OOMKilled")),
            ..Default::default()
        });
        let p = &pod_problems(&containers(vec![killed]))[0];
        assert_eq!(p.reason, OOM_KILLED);
        assert_eq!(
            p.message,
            "container worker of pod p was killed for exceeding its memory limit (OOMKilled) (restarted 1 times)"
        );
        assert_eq!(
            p.at,
            Some(Timestamp::from_second(1_000).unwrap()),
            "a past kill matters for a while"
        );
        // A pod that is not restarted (restartPolicy Never) shows it as its state.
        let gone = container(
            "worker",
            ContainerState { terminated: Some(terminated(137, "OOMKilled")), ..Default::default() },
        );
        let p = &pod_problems(&containers(vec![gone]))[0];
        assert_eq!((p.reason, p.at), (OOM_KILLED, None));
    }

    #[test]
    fn a_finished_container_is_a_problem_only_when_it_failed() {
        let done = container(
            "worker",
            ContainerState { terminated: Some(terminated(0, "Completed")), ..Default::default() },
        );
        assert!(pod_problems(&containers(vec![done])).is_empty());
        let failed = container(
            "worker",
            ContainerState { terminated: Some(terminated(2, "Error")), ..Default::default() },
        );
        let p = &pod_problems(&containers(vec![failed]))[0];
        assert_eq!(
            (p.reason, p.message.as_str()),
            (EXITED, "container worker of pod p exited with code 2 (Error)")
        );
    }

    #[test]
    fn a_failed_init_container_is_named() {
        let mut init = container("fetch-env", waiting("CrashLoopBackOff", ""));
        init.last_state =
            Some(ContainerState { terminated: Some(terminated(3, "Error")), ..Default::default() });
        let waiting_main = container("scheduler", waiting("PodInitializing", ""));
        let status = PodStatus {
            init_container_statuses: Some(vec![init]),
            container_statuses: Some(vec![waiting_main]),
            ..Default::default()
        };
        let problems = pod_problems(&pod(status));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].reason, problems[0].message.as_str()),
            (INIT_FAILED, "init container fetch-env of pod p failed: exited with code 3 (Error)")
        );
        let failed_init = container(
            "fetch-env",
            ContainerState { terminated: Some(terminated(3, "Error")), ..Default::default() },
        );
        let status =
            PodStatus { init_container_statuses: Some(vec![failed_init]), ..Default::default() };
        let p = &pod_problems(&pod(status))[0];
        assert_eq!(
            (p.reason, p.message.as_str()),
            (INIT_FAILED, "init container fetch-env of pod p failed: exited with code 3 (Error)")
        );
    }

    #[test]
    fn long_messages_are_bounded() {
        let long = "x".repeat(5_000);
        let pull = container("scheduler", waiting("ErrImagePull", &long));
        let p = &pod_problems(&containers(vec![pull]))[0];
        assert!(p.message.chars().count() < MAX_DETAIL + 200);
    }

    fn problem(reason: &'static str, message: &str, vague: bool) -> Problem {
        Problem { vague, ..Problem::new(reason, message.into(), true) }
    }

    #[test]
    fn a_condition_keeps_the_time_and_the_better_message_of_its_reason() {
        let (t0, t1) = (Timestamp::from_second(100).unwrap(), Timestamp::from_second(130).unwrap());
        let ok = || (true, "Ready", "ready".to_string());
        let pull = problem(IMAGE_PULL, "cannot pull: manifest unknown", false);
        let first = problem_condition("SchedulerReady", Some(&pull), ok(), &[], Some(1), t0);
        assert_eq!((first.status.as_str(), first.reason.as_str()), ("False", IMAGE_PULL));
        assert_eq!(first.last_transition_time, Time(t0));
        let backoff = problem(IMAGE_PULL, "Back-off pulling image", true);
        let old = [first.clone()];
        let second = problem_condition("SchedulerReady", Some(&backoff), ok(), &old, Some(1), t1);
        assert_eq!(second, first, "same reason: since t0, the registry's answer kept");
        let crash = problem(CRASH_LOOP, "exited with code 1", false);
        let third = problem_condition("SchedulerReady", Some(&crash), ok(), &old, Some(1), t1);
        assert_eq!(third.last_transition_time, Time(t1), "a new reason starts now");
        let fine = problem_condition("SchedulerReady", None, ok(), &[third], Some(1), t1);
        assert_eq!((fine.status.as_str(), fine.reason.as_str()), ("True", "Ready"));
    }

    #[test]
    fn only_a_new_problem_reason_is_news() {
        let at = |reason: &str, status: bool| condition("WorkersReady", status, reason, "", None);
        let starting = [at("Starting", false)];
        let oom = [at(OOM_KILLED, false)];
        assert_eq!(new_problems(&starting, &oom).len(), 1);
        assert!(new_problems(&oom, &oom).is_empty(), "the same problem again: no Event");
        assert!(new_problems(&oom, &starting).is_empty(), "no problem: no Event");
        assert_eq!(new_problems(&[], &oom).len(), 1);
    }

    #[test]
    fn a_past_oom_kill_is_reported_for_a_while() {
        let mut p = problem(OOM_KILLED, "killed", false);
        p.at = Some(Timestamp::from_second(1_000).unwrap());
        assert!(p.current(Timestamp::from_second(1_000 + RECENT_SECONDS - 1).unwrap()));
        assert!(!p.current(Timestamp::from_second(1_000 + RECENT_SECONDS).unwrap()));
        p.at = None;
        assert!(p.current(Timestamp::from_second(1_000_000).unwrap()));
    }
}

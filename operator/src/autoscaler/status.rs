//! A DaskAutoscaler's conditions, from what its reconcile saw; no I/O.

use dask_crds::common::{condition, keep_transition_times};
use dask_crds::conditions::{DEGRADED, SCALING_ACTIVE, reason};
use dask_crds::{DaskAutoscaler, DaskAutoscalerStatus};

use crate::validate::Invalid;

/// ScalingActive reasons of a scaler that cannot scale yet.
pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
pub const CLUSTER_NOT_RUNNING: &str = "ClusterNotRunning";

/// Whether the scaler could follow its scheduler's adaptive target.
#[derive(Clone, Debug, PartialEq)]
pub enum Scaling {
    /// The scheduler told its target; the scaler follows it.
    Active,
    /// `spec.cluster` names no DaskCluster (yet).
    ClusterNotFound,
    /// The cluster's scheduler is not running yet.
    ClusterNotRunning,
    /// The scheduler's HTTP API did not answer: how it failed.
    SchedulerUnavailable(String),
}

impl Scaling {
    fn condition_parts(&self, cluster: &str) -> (bool, &'static str, String) {
        match self {
            Scaling::Active => {
                (true, "AdaptiveTarget", format!("following the adaptive target of {cluster}"))
            }
            Scaling::ClusterNotFound => {
                (false, CLUSTER_NOT_FOUND, format!("DaskCluster {cluster} does not exist"))
            }
            Scaling::ClusterNotRunning => {
                (false, CLUSTER_NOT_RUNNING, format!("DaskCluster {cluster} is not running yet"))
            }
            Scaling::SchedulerUnavailable(why) => (
                false,
                reason::SCHEDULER_UNAVAILABLE,
                format!("cannot read the adaptive target of {cluster}: {why}"),
            ),
        }
    }
}

/// `status` (the scaler's last, or the one a scale just wrote) with the
/// conditions of a valid scaler that saw `scaling`.
pub fn with_conditions(
    scaler: &DaskAutoscaler,
    status: DaskAutoscalerStatus,
    scaling: &Scaling,
) -> DaskAutoscalerStatus {
    let generation = scaler.metadata.generation;
    let (active, why, message) = scaling.condition_parts(&scaler.spec.cluster);
    let conditions = vec![
        condition(DEGRADED, false, reason::VALID, "", generation),
        condition(SCALING_ACTIVE, active, why, message, generation),
    ];
    DaskAutoscalerStatus {
        conditions: keep_transition_times(conditions, previous(scaler)),
        ..status
    }
}

/// The status of a scaler whose spec (or a tuning annotation) is invalid:
/// what it last did, Degraded, and not scaling.
pub fn invalid(scaler: &DaskAutoscaler, invalid: &Invalid) -> DaskAutoscalerStatus {
    let generation = scaler.metadata.generation;
    let conditions = vec![
        condition(DEGRADED, true, reason::INVALID_SPEC, invalid.to_string(), generation),
        condition(SCALING_ACTIVE, false, reason::INVALID_SPEC, "the spec is invalid", generation),
    ];
    DaskAutoscalerStatus {
        conditions: keep_transition_times(conditions, previous(scaler)),
        ..scaler.status.clone().unwrap_or_default()
    }
}

fn previous(
    scaler: &DaskAutoscaler,
) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    scaler.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use dask_crds::DaskAutoscalerSpec;

    use super::*;

    fn scaler() -> DaskAutoscaler {
        let spec = DaskAutoscalerSpec { cluster: "c".into(), minimum: 1, maximum: 3 };
        let mut scaler = DaskAutoscaler::new("a", spec);
        scaler.status =
            Some(DaskAutoscalerStatus { desired_workers: Some(2), ..Default::default() });
        scaler
    }

    fn get<'a>(status: &'a DaskAutoscalerStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_scheduler_that_does_not_answer_stops_scaling_and_says_why() {
        let scaler = scaler();
        let down = Scaling::SchedulerUnavailable("HTTP 404".into());
        let status = with_conditions(&scaler, scaler.status.clone().unwrap(), &down);
        assert_eq!(get(&status, SCALING_ACTIVE), ("False", "SchedulerUnavailable"));
        assert_eq!(get(&status, DEGRADED), ("False", "Valid"));
        assert_eq!(status.desired_workers, Some(2), "what it did is kept");
        let active = with_conditions(&scaler, status, &Scaling::Active);
        assert_eq!(get(&active, SCALING_ACTIVE), ("True", "AdaptiveTarget"));
    }

    #[test]
    fn an_unchanged_view_is_an_unchanged_status() {
        let mut scaler = scaler();
        let first = with_conditions(&scaler, scaler.status.clone().unwrap(), &Scaling::Active);
        scaler.status = Some(first.clone());
        let again = with_conditions(&scaler, first.clone(), &Scaling::Active);
        assert_eq!(again, first, "no status write when nothing changed");
    }

    #[test]
    fn an_invalid_scaler_is_degraded_and_keeps_what_it_did() {
        let status = invalid(&scaler(), &Invalid::new("spec.maximum", "is too small"));
        assert_eq!(get(&status, DEGRADED), ("True", "InvalidSpec"));
        assert_eq!(get(&status, SCALING_ACTIVE), ("False", "InvalidSpec"));
        assert_eq!(status.desired_workers, Some(2));
    }
}

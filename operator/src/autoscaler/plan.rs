//! The autoscaler's decision, from the scheduler's target and the scaler's
//! last change, and its tuning, from the operator's flags and the scaler's
//! annotations; no I/O.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use dask_crds::{DaskAutoscalerSpec, DaskAutoscalerStatus, annotations};
use k8s_openapi::jiff::Timestamp;

use crate::validate::Invalid;

/// How long the target must have been lower before workers are removed, by default.
pub const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(30);

/// Annotation on a DaskAutoscaler: its scale-down window in seconds ("5", "0.5").
pub const WINDOW_ANNOTATION: &str = annotations::SCALE_DOWN_WINDOW;
/// Annotation on a DaskAutoscaler: its scale-down step, a share of the
/// current workers ("25%") or a count ("2").
pub const STEP_ANNOTATION: &str = annotations::SCALE_DOWN_STEP;
/// dask-kubernetes' annotation: no change before this time (epoch seconds).
/// It writes one after each change; a scaler it managed keeps its cooldown here.
pub const COOLDOWN_ANNOTATION: &str = annotations::COOLDOWN_UNTIL;

/// How many workers one scale-down step removes at most (always at least one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// This share of the current workers, rounded down (dask-kubernetes: 25 %).
    Percent(u32),
    Workers(u32),
}

impl Step {
    fn of(self, current: i32) -> i32 {
        let n = match self {
            Step::Percent(p) => (i64::from(current.max(0)) * i64::from(p) / 100) as i32,
            Step::Workers(n) => n.min(i32::MAX as u32) as i32,
        };
        n.max(1)
    }
}

impl FromStr for Step {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("must be a percentage such as \"25%\" or a worker count, not {s:?}");
        match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse().ok().filter(|p| (1..=100).contains(p)).map(Step::Percent),
            None => s.trim().parse().ok().filter(|n| *n >= 1).map(Step::Workers),
        }
        .ok_or_else(bad)
    }
}

/// Seconds as a duration: a non-negative number, fractions allowed.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("must be a number of seconds such as \"30\", not {s:?}"))
}

/// How an autoscaler scales down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tuning {
    pub window: Duration,
    pub step: Step,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { window: SCALE_DOWN_WINDOW, step: Step::Percent(25) }
    }
}

impl Tuning {
    /// These defaults, overridden by a scaler's annotations; a malformed one
    /// is an error naming it.
    pub fn with_annotations(self, annotations: &BTreeMap<String, String>) -> Result<Self, Invalid> {
        let field = |key: &str| format!("metadata.annotations[{key}]");
        let mut tuning = self;
        if let Some(value) = annotations.get(WINDOW_ANNOTATION) {
            tuning.window =
                parse_seconds(value).map_err(|e| Invalid::new(field(WINDOW_ANNOTATION), e))?;
        }
        if let Some(value) = annotations.get(STEP_ANNOTATION) {
            tuning.step = value.parse().map_err(|e| Invalid::new(field(STEP_ANNOTATION), e))?;
        }
        Ok(tuning)
    }
}

/// The end of a dask-kubernetes cooldown, if the scaler carries one.
pub fn cooldown_until(annotations: &BTreeMap<String, String>) -> Option<Timestamp> {
    let secs: f64 = annotations.get(COOLDOWN_ANNOTATION)?.trim().parse().ok()?;
    Timestamp::from_millisecond((secs * 1000.0) as i64).ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Set the cluster's worker count, and restart the window.
    Scale { from: i32, to: i32 },
    /// The first look: record the count, so a fresh scaler does not scale down at once.
    StartWindow(i32),
    /// Nothing to change.
    Hold,
}

/// The next worker count: the target clamped to the bounds; going down, by at
/// most one `step`.
pub fn next_count(current: i32, target: i32, minimum: i32, maximum: i32, step: Step) -> i32 {
    let wanted = target.clamp(minimum, maximum.max(minimum));
    if wanted >= current { wanted } else { wanted.max(current - step.of(current)) }
}

/// What a scaler sees on one look.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    /// The cluster's workers now.
    pub current: i32,
    /// The scheduler's adaptive target.
    pub target: i32,
    pub now: Timestamp,
    /// A dask-kubernetes cooldown still on the scaler, if any.
    pub cooldown_until: Option<Timestamp>,
}

/// What to do with a cluster of `current` workers whose scheduler asks for
/// `target`: scale up at once; scale down only once the last change is a
/// `tuning.window` old, so a cluster never flaps (dask-kubernetes #633).
pub fn decide(
    spec: &DaskAutoscalerSpec,
    status: &DaskAutoscalerStatus,
    tuning: Tuning,
    seen: Observed,
) -> Decision {
    let Observed { current, target, now, cooldown_until } = seen;
    if cooldown_until.is_some_and(|until| now < until) {
        return Decision::Hold;
    }
    let mut next = next_count(current, target, spec.minimum, spec.maximum, tuning.step);
    let last_change = status.last_scale_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let since_change = last_change.map(|t| now.duration_since(t).unsigned_abs());
    if next < current && since_change.is_some_and(|d| d < tuning.window) {
        next = current; // still inside the stabilisation window
    }
    if next != current {
        Decision::Scale { from: current, to: next }
    } else if status.last_scale_time.is_none() {
        Decision::StartWindow(current)
    } else {
        Decision::Hold
    }
}

/// The status recording a count set `now` (the window's start).
pub fn scaled(workers: i32, now: Timestamp) -> DaskAutoscalerStatus {
    DaskAutoscalerStatus {
        desired_workers: Some(workers),
        last_scale_time: Some(now.to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(minimum: i32, maximum: i32) -> DaskAutoscalerSpec {
        DaskAutoscalerSpec { cluster: "c".into(), minimum, maximum }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    const QUARTER: Step = Step::Percent(25);

    fn decide(
        spec: &DaskAutoscalerSpec,
        status: &DaskAutoscalerStatus,
        current: i32,
        target: i32,
        now: Timestamp,
    ) -> Decision {
        let seen = Observed { current, target, now, cooldown_until: None };
        super::decide(spec, status, Tuning::default(), seen)
    }

    /// The decisions for a scaler of 0 to 10 workers, `seen` at each of `seconds`.
    fn decide_at<const N: usize>(
        status: &DaskAutoscalerStatus,
        tuning: Tuning,
        seen: Observed,
        seconds: [i64; N],
    ) -> [Decision; N] {
        seconds
            .map(|s| super::decide(&spec(0, 10), status, tuning, Observed { now: at(s), ..seen }))
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn annotations_tune_the_window_and_step_and_bad_ones_name_themselves() {
        let tuned = Tuning::default()
            .with_annotations(&annotations(&[(WINDOW_ANNOTATION, "2.5"), (STEP_ANNOTATION, "3")]))
            .unwrap();
        assert_eq!(tuned, Tuning { window: Duration::from_millis(2500), step: Step::Workers(3) });
        assert_eq!("50%".parse::<Step>(), Ok(Step::Percent(50)));
        for bad in ["0", "0%", "150%", "-1", "x"] {
            assert!(bad.parse::<Step>().is_err(), "{bad}");
        }
        let error = Tuning::default()
            .with_annotations(&annotations(&[(WINDOW_ANNOTATION, "soon")]))
            .unwrap_err();
        assert_eq!(error.field, "metadata.annotations[kubernetes.dask.org/scale-down-window]");
        assert!(parse_seconds("-3").is_err());
    }

    #[test]
    fn a_short_window_and_a_larger_step_scale_down_sooner_and_faster() {
        let tuning = Tuning { window: Duration::from_secs(2), step: Step::Workers(3) };
        let seen = Observed { current: 8, target: 0, now: at(0), cooldown_until: None };
        assert_eq!(
            decide_at(&scaled(8, at(0)), tuning, seen, [1, 3]),
            [Decision::Hold, Decision::Scale { from: 8, to: 5 }]
        );
    }

    #[test]
    fn a_dask_kubernetes_cooldown_is_honoured() {
        let cooldown = cooldown_until(&annotations(&[(COOLDOWN_ANNOTATION, "1700000010.5")]));
        assert_eq!(cooldown, Some(Timestamp::from_millisecond(1_700_000_010_500).unwrap()));
        let seen = Observed { current: 2, target: 6, now: at(0), cooldown_until: cooldown };
        assert_eq!(
            decide_at(&scaled(2, at(0)), Tuning::default(), seen, [5, 11]),
            [Decision::Hold, Decision::Scale { from: 2, to: 6 }]
        );
    }

    #[test]
    fn clamps_and_scales_down_gradually() {
        assert_eq!(next_count(2, 10, 1, 5, QUARTER), 5);
        assert_eq!(next_count(2, 0, 1, 5, QUARTER), 1);
        assert_eq!(next_count(20, 0, 0, 40, QUARTER), 15);
        assert_eq!(next_count(3, 3, 0, 5, QUARTER), 3);
        assert_eq!(next_count(0, 0, 2, 5, QUARTER), 2);
        assert_eq!(next_count(20, 0, 0, 40, Step::Percent(100)), 0);
    }

    #[test]
    fn a_fresh_scaler_starts_its_window_before_scaling_down() {
        let fresh = DaskAutoscalerStatus::default();
        assert_eq!(decide(&spec(0, 10), &fresh, 4, 4, at(0)), Decision::StartWindow(4));
        // With no recorded change there is no window yet: a lower target scales down.
        assert_eq!(decide(&spec(0, 10), &fresh, 4, 0, at(0)), Decision::Scale { from: 4, to: 3 });
    }

    #[test]
    fn scale_down_waits_out_the_window_scale_up_does_not() {
        let changed = scaled(8, at(0));
        assert_eq!(decide(&spec(0, 10), &changed, 8, 0, at(29)), Decision::Hold);
        assert_eq!(
            decide(&spec(0, 10), &changed, 8, 0, at(31)),
            Decision::Scale { from: 8, to: 6 }
        );
        assert_eq!(
            decide(&spec(0, 10), &changed, 8, 10, at(1)),
            Decision::Scale { from: 8, to: 10 }
        );
    }

    #[test]
    fn bounds_win_over_the_target_and_over_manual_scaling() {
        let settled = scaled(2, at(0));
        assert_eq!(decide(&spec(2, 4), &settled, 2, 0, at(100)), Decision::Hold);
        // Above the maximum (scaled by hand), it comes down a quarter at a time too.
        let above = decide(&spec(2, 4), &settled, 6, 0, at(100));
        assert_eq!(above, Decision::Scale { from: 6, to: 5 });
        assert_eq!(decide(&spec(2, 4), &settled, 0, 0, at(1)), Decision::Scale { from: 0, to: 2 });
    }

    #[test]
    fn the_status_records_the_count_and_the_time() {
        let status = scaled(3, at(0));
        assert_eq!(status.desired_workers, Some(3));
        assert_eq!(status.last_scale_time.unwrap().parse::<Timestamp>().unwrap(), at(0));
    }
}

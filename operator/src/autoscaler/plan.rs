//! The autoscaler's decision, from the scheduler's target and the scaler's
//! last change; no I/O.

use std::time::Duration;

use dask_crds::{DaskAutoscalerSpec, DaskAutoscalerStatus};
use k8s_openapi::jiff::Timestamp;

/// How long the target must have been lower before workers are removed.
pub const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(30);

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
/// most max(1, current/4) per step.
pub fn next_count(current: i32, target: i32, minimum: i32, maximum: i32) -> i32 {
    let wanted = target.clamp(minimum, maximum.max(minimum));
    if wanted >= current { wanted } else { wanted.max(current - (current / 4).max(1)) }
}

/// What to do with a cluster of `current` workers whose scheduler asks for
/// `target`: scale up at once; scale down only once the last change is
/// [`SCALE_DOWN_WINDOW`] old, so a cluster never flaps (dask-kubernetes #633).
pub fn decide(
    spec: &DaskAutoscalerSpec,
    status: &DaskAutoscalerStatus,
    current: i32,
    target: i32,
    now: Timestamp,
) -> Decision {
    let mut next = next_count(current, target, spec.minimum, spec.maximum);
    let last_change = status.last_scale_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let since_change = last_change.map(|t| now.duration_since(t).unsigned_abs());
    if next < current && since_change.is_some_and(|d| d < SCALE_DOWN_WINDOW) {
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
    DaskAutoscalerStatus { desired_workers: Some(workers), last_scale_time: Some(now.to_string()) }
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

    #[test]
    fn clamps_and_scales_down_gradually() {
        assert_eq!(next_count(2, 10, 1, 5), 5);
        assert_eq!(next_count(2, 0, 1, 5), 1);
        assert_eq!(next_count(20, 0, 0, 40), 15);
        assert_eq!(next_count(3, 3, 0, 5), 3);
        assert_eq!(next_count(0, 0, 2, 5), 2);
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
